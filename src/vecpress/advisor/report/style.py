"""How the report looks: plot sizes and resolution, the markers and colours of the
plots, where point labels may go, and the page's inline style sheet."""

from __future__ import annotations

#: Resolution of the embedded plots (dots per inch).
DPI = 110
#: Size of the two trade-off plots, in inches.
TRADEOFF_SIZE = (7.0, 4.8)
#: Size of the spectrum plot, in inches.
SPECTRUM_SIZE = (9.0, 3.6)
#: Labels on the plots are cut to this many characters.
MAX_PLOT_LABEL = 34

_VECPRESS_STYLE = ("o", "#1f77b4")
_PEER_STYLES = (
    ("^", "#ff7f0e"),
    ("s", "#9467bd"),
    ("D", "#8c564b"),
    ("v", "#e377c2"),
    ("P", "#17becf"),
    ("X", "#7f7f7f"),
)
_CHOICE_COLOUR = "#d62728"
# Label positions tried around a point, in points: (dx, dy, ha, va), nearest first.
_DIAGONALS = (
    (1, 1, "left", "bottom"),
    (1, -1, "left", "top"),
    (-1, 1, "right", "bottom"),
    (-1, -1, "right", "top"),
)
_SIDES = ((1, 0, "left", "center"), (-1, 0, "right", "center"))
_VERTICAL = ((0, 1, "center", "bottom"), (0, -1, "center", "top"))
_OFFSETS = tuple(
    (sx * dx, sy * dy, ha, va)
    for dx, dy, around in (
        (6, 4, _DIAGONALS),
        (9, 0, _SIDES),
        (0, 10, _VERTICAL),
        (10, 12, _DIAGONALS),
        (18, 22, _DIAGONALS),
        (26, 0, _SIDES),
        (0, 24, _VERTICAL),
        (30, 34, _DIAGONALS),
    )
    for sx, sy, ha, va in around
)

_CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #fff; color: #1d2430;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 28px 40px; }
h1 { font-size: 1.7em; margin: 0 0 2px; }
h2 { font-size: 1.25em; margin: 30px 0 10px; padding-bottom: 4px;
  border-bottom: 1px solid #dde3ea; }
h3 { font-size: 1em; margin: 14px 0 4px; }
.dataset { color: #4a5565; margin: 0 0 18px; }
.rec { border: 1px solid #c9d9ea; border-left: 6px solid #d62728; background: #fbfcfe;
  border-radius: 6px; padding: 4px 22px 14px; }
.rec h2 { border: none; margin-top: 12px; margin-bottom: 2px; }
.objective { color: #4a5565; margin: 0 0 8px; }
.choice { font-size: 1.45em; font-weight: 650; margin: 4px 0 10px; }
.choice.none { font-size: 1.1em; color: #8b1a1a; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 8px; }
.card { background: #fff; border: 1px solid #e1e6ec; border-radius: 6px; padding: 6px 14px;
  min-width: 120px; }
.card .value { font-size: 1.35em; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .value small { font-size: 0.65em; font-weight: 400; color: #4a5565; }
.card .what { font-size: 0.8em; color: #5b6573; }
.runner-up { margin: 8px 0; }
.note { margin: 10px 0 2px; padding: 6px 10px; background: #fff8e5;
  border-left: 3px solid #e0b030; }
.why { margin: 8px 0 2px; }
pre { background: #1d2430; color: #eef2f6; padding: 9px 12px; border-radius: 4px; margin: 0;
  font-size: 13px; white-space: pre-wrap; overflow-wrap: anywhere; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono",
  monospace; }
code.spec { font-size: 0.8em; color: #4a5565; font-weight: 400; }
.plots { display: flex; flex-wrap: wrap; gap: 18px 24px; margin-top: 24px; }
figure { margin: 0; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { max-width: 770px; font-size: 0.85em; color: #4a5565; margin-top: 2px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 6px; border-bottom: 1px solid #e6eaef; vertical-align: top; }
#results thead th { background: #eef1f5; text-align: right; vertical-align: bottom;
  position: sticky; top: 0; }
#results td.label { min-width: 150px; }
#results thead th:first-child { text-align: left; }
#results tbody tr:nth-child(even) td { background: #f8f9fb; }
#results tr.chosen td { background: #fdeaea; font-weight: 600; }
#results tr.peer td.label { font-style: italic; }
td.num { text-align: right; white-space: nowrap; }
td.na { color: #a0a8b2; }
td.mark { text-align: center; color: #2a7a2a; font-weight: 700; }
.kv th { text-align: left; font-weight: 500; color: #4a5565; background: none; }
.small { font-size: 0.85em; color: #5b6573; }
footer { margin-top: 36px; font-size: 0.8em; color: #8a939e; }
"""
