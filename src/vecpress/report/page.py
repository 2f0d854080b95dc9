"""A self-contained HTML report of the advisor's measurements.

:func:`write_report` renders one HTML file that needs nothing else to be read:
the plots are PNG images embedded as ``data:`` URIs, the style sheet is inline
and there is no JavaScript. The page holds, in order:

* the title and a line describing the data set;
* the recommendation (``id="recommendation"``): the chosen configuration, its
  bytes per vector, compression ratio against float32 (``4 d / bytes``),
  recall@k with its standard error and speed, the runner-up, the build and
  search commands and the advisor's note;
* recall@k against bytes per vector (``id="plot-bytes"``) and against
  queries/s on one thread (``id="plot-speed"``), both on a log x axis, with the
  Pareto frontier of all the points shown (:func:`pareto_front`) as a step
  line, the chosen configuration starred, the runner-up ringed and the target
  recall (or the byte budget) as a dashed line;
* the covariance spectrum and the recall after PCA to fewer dimensions
  (``id="plot-spectrum"``), when diagnostics are given;
* every measured configuration (``id="results"``), sorted by bytes per vector;
* the diagnostics of :func:`vecpress.diagnostics.inspect` and its advice
  (``id="diagnostics"``).

Missing values (``None``, NaN, absent keys) are shown as "–". The plots need
matplotlib, an optional dependency (``pip install "vecpress[report]"``); it is
imported only by :func:`write_report`, which draws on
:class:`matplotlib.figure.Figure` with the Agg canvas directly, so neither
pyplot nor the user's chosen backend is touched.
"""

from __future__ import annotations

import base64
import errno
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..atomic import write_bytes

__all__ = ["pareto_front", "write_report"]

#: Shown for every value that was not measured.
MISSING = "–"
#: Resolution of the embedded plots (dots per inch).
DPI = 110
#: Size of the two trade-off plots, in inches.
TRADEOFF_SIZE = (7.0, 4.8)
#: Size of the spectrum plot, in inches.
SPECTRUM_SIZE = (9.0, 3.6)
#: Labels on the plots are cut to this many characters.
MAX_PLOT_LABEL = 34

_NEEDS_MATPLOTLIB = 'the HTML report needs matplotlib: pip install "vecpress[report]"'
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


def pareto_front(
    records: Sequence[Mapping], x: str, y: str, *, minimise_x: bool = True
) -> list[Mapping]:
    """The records that no other record beats on both ``x`` and ``y``.

    ``y`` is maximised; ``x`` is minimised (bytes, latency) or, with
    ``minimise_x=False``, maximised (queries/s). A record is dominated when
    another is at least as good on both and strictly better on one, so records
    with equal values are all kept. Records whose ``x`` or ``y`` is missing,
    None or not finite are left out.

    Parameters
    ----------
    records : sequence of mapping
        The records, e.g. the advisor's result dicts.
    x, y : str
        The keys compared.
    minimise_x : bool
        Whether a smaller ``x`` is better.

    Returns
    -------
    list of mapping
        The non-dominated records themselves (not copies), by increasing ``x``
        (then decreasing ``y``).

    Examples
    --------
    >>> pts = [{"b": 16, "r": 0.80}, {"b": 32, "r": 0.90}, {"b": 32, "r": 0.85},
    ...        {"b": 64, "r": 0.88}, {"b": 128, "r": 0.99}]
    >>> [(p["b"], p["r"]) for p in pareto_front(pts, "b", "r")]
    [(16, 0.8), (32, 0.9), (128, 0.99)]
    >>> [(p["b"], p["r"]) for p in pareto_front(pts, "b", "r", minimise_x=False)]
    [(128, 0.99)]
    """
    sign = 1.0 if minimise_x else -1.0
    points = [
        (sign * xv, -yv, i, r)
        for i, r in enumerate(records)
        if (xv := _num(r.get(x))) is not None and (yv := _num(r.get(y))) is not None
    ]
    points.sort(key=lambda p: p[:3])  # best x first, then best y
    front = []
    best_before = -math.inf  # best y among strictly better x
    group_x, group_best = None, -math.inf
    for sx, neg_y, _, r in points:
        yv = -neg_y
        if sx != group_x:
            best_before = max(best_before, group_best)
            group_x, group_best = sx, yv  # first of its group has the group's best y
        if yv > best_before and yv == group_best:
            front.append((sign * sx, neg_y, r))
    front.sort(key=lambda p: p[:2])
    return [r for _, _, r in front]


def write_report(
    path: str | os.PathLike,
    *,
    results: Sequence[Mapping],
    recommendation: Mapping | None = None,
    diagnostics: Mapping | None = None,
    dataset: Mapping | None = None,
    title: str = "vecpress report",
) -> Path:
    """Write the advisor's results as one self-contained HTML file.

    Parameters
    ----------
    path : str or os.PathLike
        The HTML file to write. Its directory must exist; an existing file is
        replaced atomically (a temp file in the same directory, then
        ``os.replace``), so the path always holds a complete page.
    results : sequence of mapping
        One record per measured configuration, with the keys ``label``,
        ``spec``, ``peer`` (None for vecpress), ``rerank_spec``, ``rerank``,
        ``ivf``, ``nprobe``, ``code_size``, ``bytes_per_vector``,
        ``shared_bytes``, ``recall_at_k``, ``recall_se``, ``recall_k_at_r``,
        ``graph_recall``, ``mse``, ``ip_bias``, ``ip_spread``, ``encode_us``,
        ``qps_1t``, ``qps``, ``threads``, ``peak_rss_mb``, ``k`` and optionally
        ``on_frontier``. Absent keys and None are shown as "–".
    recommendation : mapping, optional
        The advisor's choice: ``objective`` (``"target_recall"`` or
        ``"budget_bytes"``), ``target``, ``choice`` and ``runner_up`` (records
        as above, the latter possibly None), ``build_command``,
        ``search_command``, ``evaluated``, ``space_size`` and ``note``. Without
        it the page has no recommendation box.
    diagnostics : mapping, optional
        The dict of :func:`vecpress.diagnostics.inspect`; absent keys are
        skipped. Without it the page has no spectrum plot and no diagnostics.
    dataset : mapping, optional
        ``name``, ``n``, ``d``, ``queries``, ``metric`` and ``k`` of the data
        set (any may be absent). ``d`` (or the diagnostics' ``d``) gives the
        compression ratios.
    title : str
        The page title.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    TypeError
        If ``results`` is not a sequence of mappings, or another argument is
        not a mapping or None.
    FileNotFoundError
        If the directory of ``path`` does not exist (the message names
        ``path``); other ``OSError`` of the write also name ``path``.

    Examples
    --------
    >>> import os, tempfile
    >>> rows = [{"label": "center,hd2,rq4", "bytes_per_vector": 29, "recall_at_k": 0.93,
    ...          "recall_se": 0.004, "qps_1t": 4100.0, "k": 10},
    ...         {"label": "int8", "bytes_per_vector": 54, "recall_at_k": 0.99,
    ...          "recall_se": 0.001, "qps_1t": 2600.0, "k": 10}]
    >>> out = write_report(os.path.join(tempfile.mkdtemp(), "report.html"), results=rows,
    ...                    dataset={"name": "toy", "d": 50, "k": 10})
    >>> page = out.read_text(encoding="utf-8")
    >>> page.count("data:image/png;base64,"), 'id="results"' in page
    (2, True)
    """
    results = _check_results(results)
    recommendation = _check_mapping(recommendation, "recommendation")
    diagnostics = _check_mapping(diagnostics, "diagnostics")
    dataset = _check_mapping(dataset, "dataset") or {}
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, f"cannot write the report: directory {folder} does not exist", str(path)
        )
    page = _Page(results, recommendation, diagnostics, dataset, str(title))
    text = page.render(_plots(page))
    _write_atomic(path, text.encode("utf-8"))
    return path


# -- values ------------------------------------------------------------------


def _num(v: object) -> float | None:
    """``v`` as a finite float, or None (None, bools, strings, NaN and Inf)."""
    if v is None or isinstance(v, (bool, str, bytes)):
        return None
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt(v: object, spec: str) -> str:
    f = _num(v)
    return MISSING if f is None else format(f, spec)


def _fmt_int(v: object) -> str:
    f = _num(v)
    if f is None:
        return MISSING
    return f"{f:,.0f}" if f == round(f) else f"{f:,.1f}"


def _fmt_qps(v: object) -> str:
    f = _num(v)
    if f is None:
        return MISSING
    return f"{f:,.0f}" if f >= 100 else f"{f:.3g}"


def _fmt_rss(v: object) -> str:
    f = _num(v)
    if f is None:
        return MISSING
    return f"{f:,.0f}" if f >= 100 else f"{f:.1f}"


def _fmt_ratio(raw_bytes: float | None, v: object) -> str:
    b = _num(v)
    if raw_bytes is None or b is None or b <= 0:
        return MISSING
    return f"{raw_bytes / b:.1f}×"


def _si(v: float) -> str:
    """1500 -> '1.5k', 2e6 -> '2M' (axis ticks)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def _esc(v: object) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _label(r: Mapping) -> str:
    for key in ("label", "spec"):
        if r.get(key) not in (None, ""):
            return str(r[key])
    return "?"


def _key(r: Mapping) -> tuple:
    """What identifies a configuration (the recommendation's records may be copies)."""
    return tuple(
        str(r.get(k)) for k in ("label", "spec", "peer", "rerank_spec", "rerank", "ivf", "nprobe")
    )


def _check_results(results: object) -> list[Mapping]:
    if isinstance(results, (str, bytes, Mapping)) or not isinstance(results, Sequence):
        raise TypeError(f"results must be a list of dicts, found {type(results).__name__}")
    for i, r in enumerate(results):
        if not isinstance(r, Mapping):
            raise TypeError(f"results[{i}] must be a dict, found {type(r).__name__}")
    return list(results)


def _check_mapping(v: object, name: str) -> Mapping | None:
    if v is not None and not isinstance(v, Mapping):
        raise TypeError(f"{name} must be a dict or None, found {type(v).__name__}")
    return v


# -- the page ------------------------------------------------------------------


class _Page:
    """The inputs and what every part of the page derives from them."""

    def __init__(self, results, recommendation, diagnostics, dataset, title):
        self.results = results
        self.recommendation = recommendation
        self.diagnostics = diagnostics
        self.dataset = dataset
        self.title = title
        d = _num(dataset.get("d"))
        if d is None and diagnostics is not None:
            d = _num(diagnostics.get("d"))
        self.d = d
        self.raw_bytes = 4.0 * d if d else None
        ks = {r.get("k") for r in results if r.get("k") is not None}
        k = dataset.get("k")
        if k is None and len(ks) == 1:
            k = ks.pop()
        self.k = k
        self.recall_name = f"recall@{k}" if k is not None else "recall@k"
        rec = recommendation or {}
        self.choice = rec.get("choice") if isinstance(rec.get("choice"), Mapping) else None
        self.runner_up = rec.get("runner_up") if isinstance(rec.get("runner_up"), Mapping) else None
        self.rows = sorted(
            results,
            key=lambda r: (
                _num(r.get("bytes_per_vector")) is None,
                _num(r.get("bytes_per_vector")) or 0.0,
                -(_num(r.get("recall_at_k")) or 0.0),
                _label(r),
            ),
        )
        self.front_bytes = pareto_front(results, "bytes_per_vector", "recall_at_k")
        self.front_speed = pareto_front(results, "qps_1t", "recall_at_k", minimise_x=False)

    def is_choice(self, r: Mapping) -> bool:
        return self.choice is not None and _key(r) == _key(self.choice)

    def on_frontier(self, r: Mapping) -> bool:
        if "on_frontier" in r and r["on_frontier"] is not None:
            return bool(r["on_frontier"])
        return any(r is f for f in self.front_bytes)

    # -- rendering ----------------------------------------------------------------

    def render(self, plots: dict[str, tuple[str, str, int, int]]) -> str:
        from .. import __version__

        parts = [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<meta name="generator" content="vecpress {_esc(__version__)}">',
            f"<title>{_esc(self.title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            "<main>",
            "<header>",
            f"<h1>{_esc(self.title)}</h1>",
            self._dataset_line(),
            "</header>",
            self._recommendation(),
            '<section class="plots">',
            *(
                self._figure(name, plots[name], caption)
                for name, caption in (
                    ("plot-bytes", self._bytes_caption()),
                    ("plot-speed", self._speed_caption()),
                    ("plot-spectrum", self._spectrum_caption()),
                )
                if name in plots
            ),
            "</section>",
            self._results_table(),
            self._diagnostics(),
            f"<footer>Generated by vecpress {_esc(__version__)}.</footer>",
            "</main>",
            "</body>",
            "</html>",
            "",
        ]
        return "\n".join(p for p in parts if p)

    def _dataset_line(self) -> str:
        ds = self.dataset
        bits = []
        if ds.get("name") not in (None, ""):
            bits.append(f"<strong>{_esc(ds['name'])}</strong>")
        n, d = _num(ds.get("n")), _num(ds.get("d"))
        if n is not None and d is not None:
            bits.append(f"{n:,.0f} vectors × {d:.0f} dimensions")
        elif n is not None:
            bits.append(f"{n:,.0f} vectors")
        elif d is not None:
            bits.append(f"{d:.0f} dimensions")
        if _num(ds.get("queries")) is not None:
            bits.append(f"{_num(ds['queries']):,.0f} queries")
        if ds.get("metric") not in (None, ""):
            bits.append(f"metric {_esc(ds['metric'])}")
        if ds.get("k") is not None:
            bits.append(f"k = {_esc(ds['k'])}")
        known = {"name", "n", "d", "queries", "metric", "k"}
        for key, v in ds.items():
            if key not in known and isinstance(v, (str, int, float)) and not isinstance(v, bool):
                bits.append(f"{_esc(key)} {_esc(v)}")
        bits.append(f"{len(self.results)} configurations measured")
        return f'<p class="dataset">{" · ".join(bits)}</p>'

    def _recommendation(self) -> str:
        rec = self.recommendation
        if rec is None:
            return ""
        out = ['<section id="recommendation" class="rec">', "<h2>Recommendation</h2>"]
        objective = rec.get("objective")
        target = rec.get("target")
        if objective == "target_recall":
            goal = f"{self.recall_name} ≥ {_fmt(target, 'g')}"
        elif objective == "budget_bytes":
            goal = f"at most {_fmt_int(target)} bytes per vector"
        else:
            goal = _esc(objective) if objective is not None else ""
        facts = []
        if goal:
            facts.append(f"objective: {goal}")
        if rec.get("evaluated") is not None:
            space = (
                f" (search space: {_fmt_int(rec['space_size'])})"
                if rec.get("space_size") is not None
                else ""
            )
            facts.append(f"{_fmt_int(rec['evaluated'])} configurations measured{space}")
        if facts:
            out.append(f'<p class="objective">{" · ".join(facts)}</p>')
        c = self.choice
        if c is None:
            out.append('<p class="choice none">No configuration meets the objective.</p>')
        else:
            spec = c.get("spec")
            spec_html = (
                f' <code class="spec">{_esc(spec)}</code>'
                if spec not in (None, "") and str(spec) != _label(c)
                else ""
            )
            out.append(f'<p class="choice">{_esc(_label(c))}{spec_html}</p>')
            se = _num(c.get("recall_se"))
            cards = [
                (f"{_fmt_int(c.get('bytes_per_vector'))} B", "bytes per vector"),
                (_fmt_ratio(self.raw_bytes, c.get("bytes_per_vector")), "smaller than float32"),
                (
                    _fmt(c.get("recall_at_k"), ".4f")
                    + (f" <small>± {se:.4f}</small>" if se is not None else ""),
                    self.recall_name,
                ),
                (_fmt_qps(c.get("qps_1t")), "queries/s, 1 thread"),
            ]
            if _num(c.get("qps")) is not None:
                threads = _num(c.get("threads"))
                cards.append(
                    (
                        _fmt_qps(c.get("qps")),
                        f"queries/s, {threads:.0f} threads"
                        if threads
                        else "queries/s, all threads",
                    )
                )
            out.append('<div class="cards">')
            out.extend(
                f'<div class="card"><div class="value">{value}</div>'
                f'<div class="what">{_esc(what)}</div></div>'
                for value, what in cards
            )
            out.append("</div>")
        r = self.runner_up
        if r is not None:
            out.append(
                f'<p class="runner-up">Runner-up: <strong>{_esc(_label(r))}</strong> — '
                f"{_fmt_int(r.get('bytes_per_vector'))} B/vector "
                f"({_fmt_ratio(self.raw_bytes, r.get('bytes_per_vector'))}), "
                f"{self.recall_name} {_fmt(r.get('recall_at_k'), '.4f')}"
                f" ± {_fmt(r.get('recall_se'), '.4f')}, "
                f"{_fmt_qps(r.get('qps_1t'))} queries/s on 1 thread</p>"
            )
        for key, name in (("build_command", "Build"), ("search_command", "Search")):
            if rec.get(key) not in (None, ""):
                out.append(f"<h3>{name}</h3>\n<pre>{_esc(rec[key])}</pre>")
        if rec.get("why") not in (None, ""):
            out.append(f'<p class="why">Why: {_esc(rec["why"])}</p>')
        if rec.get("note") not in (None, ""):
            out.append(f'<p class="note">{_esc(rec["note"])}</p>')
        if rec.get("seconds") is not None:
            budget = rec.get("max_seconds")
            out.append(
                f'<p class="time">Measured {_fmt_int(rec.get("evaluated"))} of '
                f"{_fmt_int(rec.get('space_size'))} configurations in {rec['seconds']:.0f} s"
                + (f" (time budget {budget:.0f} s)" if budget is not None else "")
                + ".</p>"
            )
        skipped = rec.get("skipped") or []
        if skipped:
            items = "".join(
                f"<li>{_esc(x.get('label', ''))}: {_esc(x.get('reason', ''))}</li>" for x in skipped
            )
            out.append(
                f'<details class="skipped"><summary>Skipped for time: {len(skipped)} '
                f"configuration{'s' if len(skipped) != 1 else ''}</summary><ul>{items}</ul>"
                "</details>"
            )
        out.append("</section>")
        return "\n".join(out)

    def _figure(self, name: str, plot: tuple[str, str, int, int], caption: str) -> str:
        data, alt, width, height = plot
        return (
            "<figure>"
            f'<img id="{name}" src="data:image/png;base64,{data}" alt="{_esc(alt)}" '
            f'width="{width}" height="{height}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )

    def _bytes_caption(self) -> str:
        return (
            f"{self.recall_name} against the bytes stored per vector (log scale). The line is "
            "the Pareto frontier: no other configuration has both fewer bytes and a higher "
            "recall. Bars: ± one standard error."
        )

    def _speed_caption(self) -> str:
        return (
            f"{self.recall_name} against queries per second on one thread (log scale). The "
            "line is the Pareto frontier: no other configuration is both faster and more "
            "accurate."
        )

    def _spectrum_caption(self) -> str:
        return (
            "Eigenvalues of the data's covariance, largest first (log scale), and the recall "
            "of exact search after projecting onto the top d′ principal directions."
        )

    def _results_table(self) -> str:
        threads = {r.get("threads") for r in self.results if r.get("qps") is not None}
        t = _num(threads.pop()) if len(threads) == 1 else None
        qps_all = f"q/s {t:.0f}T" if t else "q/s all"
        head = [
            ("label", "configuration (spec under the label when it differs)"),
            ("bytes/vector", "bytes stored per vector, all per-vector parts included"),
            ("ratio", "float32 size (4·d bytes) / bytes per vector"),
            (self.recall_name, "fraction of the exact top-k found"),
            ("±", "standard error of the recall over the queries"),
            ("k@R", "recall_k_at_r"),
            ("graph recall", "graph_recall"),
            ("MSE", "mean squared reconstruction error"),
            ("IP bias", "mean error of the estimated inner products"),
            ("IP spread", "spread of the error of the estimated inner products"),
            ("encode µs", "microseconds to encode one vector"),
            ("q/s 1T", "queries per second, 1 thread"),
            (qps_all, "queries per second, all threads"),
            ("peak RSS MB", "peak resident memory, MB"),
            ("frontier", "on the Pareto frontier"),
        ]
        out = [
            '<section class="results">',
            "<h2>All measured configurations</h2>",
            '<div class="table-wrap">',
            '<table id="results">',
            "<thead><tr>"
            + "".join(f'<th title="{_esc(tip)}">{_esc(name)}</th>' for name, tip in head)
            + "</tr></thead>",
            "<tbody>",
        ]
        for r in self.rows:
            cls = []
            if self.is_choice(r):
                cls.append("chosen")
            if r.get("peer") not in (None, ""):
                cls.append("peer")
            spec = r.get("spec")
            label = _esc(_label(r))
            if spec not in (None, "") and str(spec) != _label(r):
                label += f'<br><code class="spec">{_esc(spec)}</code>'
            cells = [
                _fmt_int(r.get("bytes_per_vector")),
                _fmt_ratio(self.raw_bytes, r.get("bytes_per_vector")),
                _fmt(r.get("recall_at_k"), ".4f"),
                _fmt(r.get("recall_se"), ".4f"),
                _fmt(r.get("recall_k_at_r"), ".4f"),
                _fmt(r.get("graph_recall"), ".4f"),
                _fmt(r.get("mse"), ".2e"),
                _fmt(r.get("ip_bias"), ".2e"),
                _fmt(r.get("ip_spread"), ".2e"),
                _fmt(r.get("encode_us"), ".3g"),
                _fmt_qps(r.get("qps_1t")),
                _fmt_qps(r.get("qps")),
                _fmt_rss(r.get("peak_rss_mb")),
            ]
            row = [f'<td class="label">{label}</td>']
            row += [
                f'<td class="num na">{MISSING}</td>'
                if v == MISSING
                else f'<td class="num">{v}</td>'
                for v in cells
            ]
            row.append(f'<td class="mark">{"✓" if self.on_frontier(r) else ""}</td>')
            attr = f' class="{" ".join(cls)}"' if cls else ""
            out.append(f"<tr{attr}>{''.join(row)}</tr>")
        out += ["</tbody>", "</table>", "</div>"]
        notes = ["sorted by bytes per vector"]
        if self.choice is not None:
            notes.append("the chosen configuration is highlighted")
        if any(r.get("peer") not in (None, "") for r in self.results):
            notes.append("other libraries' rows are in italics")
        notes.append(f"{MISSING} = not measured")
        out.append(f'<p class="small">{"; ".join(notes).capitalize()}.</p>')
        out.append("</section>")
        return "\n".join(out)

    def _diagnostics(self) -> str:
        dg = self.diagnostics
        if dg is None:
            return ""
        rows: list[tuple[str, str]] = []
        if dg.get("n") is not None:
            rows.append(("vectors", _fmt_int(dg["n"])))
        if dg.get("d") is not None:
            rows.append(("dimensions", _fmt_int(dg["d"])))
        if dg.get("metric") is not None:
            rows.append(("metric", _esc(dg["metric"])))
        if dg.get("sample") is not None:
            rows.append(("rows sampled for the spectrum", _fmt_int(dg["sample"])))
        norms = dg.get("norms")
        if isinstance(norms, Mapping) and norms:
            names = (("min", "min"), ("p01", "1%"), ("p50", "median"), ("p99", "99%"))
            names += (("max", "max"), ("mean", "mean"))
            rows.append(
                (
                    "row norms",
                    " · ".join(
                        f"{what} {_fmt(norms[key], '.4g')}" for key, what in names if key in norms
                    ),
                )
            )
        if "anisotropy" in dg:
            rows.append(("anisotropy (|mean| / mean norm)", _fmt(dg["anisotropy"], ".3f")))
        if "effective_rank" in dg:
            of = f" of {_fmt_int(dg['d'])}" if dg.get("d") is not None else ""
            rows.append(("effective rank", _fmt(dg["effective_rank"], ".1f") + of))
        if "coding_gain_db" in dg or "coding_gain_bits" in dg:
            gain = []
            if "coding_gain_db" in dg:
                gain.append(f"{_fmt(dg['coding_gain_db'], '.2f')} dB")
            if "coding_gain_bits" in dg:
                gain.append(f"{_fmt(dg['coding_gain_bits'], '.2f')} bits per dimension")
            rows.append(("transform coding gain over a random rotation", " · ".join(gain)))
        g = dg.get("gaussianity")
        if isinstance(g, Mapping) and g:
            names = (("raw", "raw axes"), ("rotated", "after hd2"))
            names += (("random_directions", "random directions"),)
            value = " · ".join(f"{what} {_fmt(g[key], '.3g')}" for key, what in names if key in g)
            if dg.get("gaussian_reference") is not None:
                value += f" (Gaussian samples: {_fmt(dg['gaussian_reference'], '.3g')})"
            rows.append(("Epps–Pulley statistic (lower = more Gaussian)", value))
        pca = dg.get("pca_recall")
        if isinstance(pca, Sequence) and pca:
            rows.append(
                (
                    f"{self.recall_name} after PCA to d′",
                    " · ".join(
                        f"d′={_fmt_int(p.get('d'))}: {_fmt(p.get('recall_at_k'), '.3f')}"
                        for p in pca
                        if isinstance(p, Mapping)
                    ),
                )
            )
        known = {"n", "d", "metric", "sample", "norms", "anisotropy", "effective_rank"}
        known |= {"coding_gain_db", "coding_gain_bits", "gaussianity", "gaussian_reference"}
        known |= {"pca_recall", "spectrum", "advice"}
        for key, v in dg.items():
            if key not in known and isinstance(v, (str, int, float)) and not isinstance(v, bool):
                value = _fmt(v, ".4g") if isinstance(v, (int, float)) else _esc(v)
                rows.append((str(key), value))
        out = ['<section id="diagnostics">', "<h2>Data diagnostics</h2>"]
        if rows:
            out.append('<table class="kv">')
            out.extend(f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
            out.append("</table>")
        advice = dg.get("advice")
        if isinstance(advice, Sequence) and not isinstance(advice, str) and advice:
            out.append("<h3>Advice</h3>")
            out.append("<ul>" + "".join(f"<li>{_esc(a)}</li>" for a in advice) + "</ul>")
        out.append("</section>")
        return "\n".join(out)


# -- plots ---------------------------------------------------------------------


def _matplotlib():
    """``(matplotlib, Figure, FigureCanvasAgg)``, or ImportError with the install hint."""
    try:
        import matplotlib
        import matplotlib.style
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(_NEEDS_MATPLOTLIB) from e
    return matplotlib, Figure, FigureCanvasAgg


def _plots(page: _Page) -> dict[str, tuple[str, str, int, int]]:
    """``{img id: (base64 PNG, alt text, width px, height px)}`` of the plots that have data."""
    matplotlib, Figure, FigureCanvasAgg = _matplotlib()
    out = {}
    # The default style, whatever the user's rcParams: the report looks the same everywhere.
    with matplotlib.style.context("default"):
        rec = page.recommendation or {}
        hline = vline = None
        if rec.get("objective") == "target_recall":
            hline = _num(rec.get("target"))
        elif rec.get("objective") == "budget_bytes":
            vline = _num(rec.get("target"))
        fig = _tradeoff(
            page,
            Figure,
            FigureCanvasAgg,
            x="bytes_per_vector",
            minimise_x=True,
            front=page.front_bytes,
            title=f"{page.recall_name} vs bytes per vector",
            xlabel="bytes per vector (log scale)",
            hline=hline,
            vline=vline,
        )
        if fig is not None:
            out["plot-bytes"] = _png(fig, _alt(page, "bytes per vector", page.front_bytes))
        fig = _tradeoff(
            page,
            Figure,
            FigureCanvasAgg,
            x="qps_1t",
            minimise_x=False,
            front=page.front_speed,
            title=f"{page.recall_name} vs queries/s (1 thread)",
            xlabel="queries per second, 1 thread (log scale)",
            hline=hline,
            vline=None,
        )
        if fig is not None:
            out["plot-speed"] = _png(fig, _alt(page, "queries per second", page.front_speed))
        if page.diagnostics is not None:
            spec = _spectrum(page, Figure, FigureCanvasAgg)
            if spec is not None:
                out["plot-spectrum"] = _png(*spec)
    return out


def _png(fig, alt: str) -> tuple[str, str, int, int]:
    """``(base64 PNG, alt, width px, height px)`` of a figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    width, height = (round(v * DPI) for v in fig.get_size_inches())
    return base64.b64encode(buf.getvalue()).decode("ascii"), alt, width, height


def _alt(page: _Page, what: str, front: list[Mapping]) -> str:
    labels = ", ".join(_label(r) for r in front[:12]) + (", …" if len(front) > 12 else "")
    text = f"Scatter plot of {page.recall_name} against {what}; Pareto frontier: {labels}"
    if page.choice is not None:
        text += f"; chosen: {_label(page.choice)}"
    return text + "."


def _mpl_text(s: str) -> str:
    """A label as matplotlib text: '$' would start mathtext; long labels are cut."""
    s = s if len(s) <= MAX_PLOT_LABEL else s[: MAX_PLOT_LABEL - 1] + "…"
    return s.replace("$", r"\$")


def _tradeoff(page, Figure, FigureCanvasAgg, *, x, minimise_x, front, title, xlabel, hline, vline):
    """Recall against ``x`` (log scale): points by library, frontier, choice, target."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    y = "recall_at_k"

    def point(r):
        xv, yv = _num(r.get(x)), _num(r.get(y))
        return (xv, yv) if xv is not None and yv is not None and xv > 0 else None

    shown = [r for r in page.results if point(r) is not None]
    if not shown:
        return None
    fig = Figure(figsize=TRADEOFF_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs_all = [point(r)[0] for r in shown] + ([vline] if vline and vline > 0 else [])
    span = max(xs_all) / min(xs_all)
    if x == "bytes_per_vector":
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(LogLocator(base=2, subs=(1.0,) if span > 12 else (1.0, 1.5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(
            LogLocator(base=10, subs=(1.0,) if span > 300 else (1.0, 2.0, 5.0))
        )
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _si(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    # Limits first, never singular, before any artist: 8% of the log range each side (at
    # least x1.4) and 10% of the recall range (at least 0.02).
    lo, hi = math.log(min(xs_all)), math.log(max(xs_all))
    pad = max(0.08 * (hi - lo), math.log(1.4))
    ax.set_xlim(math.exp(lo - pad), math.exp(hi + pad))
    ys = [point(r)[1] for r in shown] + ([hline] if hline is not None else [])
    pad = max(0.1 * (max(ys) - min(ys)), 0.02)
    ax.set_ylim(min(ys) - pad, max(ys) + pad)

    groups: dict[str | None, list[Mapping]] = {}
    for r in shown:
        peer = r.get("peer")
        groups.setdefault(None if peer in (None, "") else str(peer), []).append(r)
    peers = sorted(k for k in groups if k is not None)
    styles = {None: _VECPRESS_STYLE}
    styles.update((name, _PEER_STYLES[i % len(_PEER_STYLES)]) for i, name in enumerate(peers))
    for name in ([None] if None in groups else []) + peers:
        marker, colour = styles[name]
        pts = [point(r) for r in groups[name]]
        se = [_num(r.get("recall_se")) or 0.0 for r in groups[name]]
        ax.errorbar(
            [p[0] for p in pts],
            [p[1] for p in pts],
            yerr=se,
            fmt=marker,
            color=colour,
            ms=6,
            mec="white",
            mew=0.6,
            elinewidth=0.9,
            capsize=0,
            alpha=0.9,
            zorder=3,
            label="vecpress" if name is None else _mpl_text(name),
        )
    fp = [point(r) for r in front if point(r) is not None]
    if fp:
        ax.step(
            [p[0] for p in fp],
            [p[1] for p in fp],
            where="post" if minimise_x else "pre",
            color="0.3",
            lw=1.3,
            zorder=2,
            label="Pareto frontier",
        )
    for rec, style in (
        (page.runner_up, dict(marker="o", ms=14, mfc="none", mec=_CHOICE_COLOUR, mew=1.5)),
        (page.choice, dict(marker="*", ms=18, mfc=_CHOICE_COLOUR, mec="black", mew=0.8)),
    ):
        p = point(rec) if rec is not None else None
        if p is not None:
            which = "chosen" if rec is page.choice else "runner-up"
            ax.plot(*p, ls="none", zorder=5, label=f"{which}: {_mpl_text(_label(rec))}", **style)
    if hline is not None:
        ax.axhline(
            hline,
            ls="--",
            lw=1.1,
            color=_CHOICE_COLOUR,
            zorder=1,
            label=f"target {page.recall_name} = {hline:g}",
        )
    if vline is not None:
        ax.axvline(
            vline, ls="--", lw=1.1, color=_CHOICE_COLOUR, zorder=1, label=f"budget {vline:g} B"
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{page.recall_name} (fraction of the true {_topk(page)} found)")
    ax.set_title(title, fontsize=12)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    if x == "bytes_per_vector" and page.raw_bytes:
        raw = page.raw_bytes

        def ratio(v):
            import numpy as np

            v = np.asarray(v, dtype=float)
            return raw / np.where(v > 0, v, np.nan)

        top = ax.secondary_xaxis("top", functions=(ratio, ratio))
        top.set_xlabel("compression ratio vs float32", fontsize=9)
        top.xaxis.set_major_locator(LogLocator(base=2, subs=(1.0,) if span > 12 else (1.0, 1.5)))
        top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        top.xaxis.set_minor_formatter(NullFormatter())
        top.tick_params(labelsize=8)
    handles, labels = ax.get_legend_handles_labels()
    first = ("vecpress", *sorted(peers))
    rank = {name: i for i, name in enumerate(first)}
    order = sorted(range(len(labels)), key=lambda i: rank.get(labels[i], len(first) + i))
    fig.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="outside lower center",
        ncols=min(len(labels), 3 if max(map(len, labels), default=0) <= 28 else 2),
        fontsize=8,
        frameon=False,
    )
    fig.draw_without_rendering()  # fixes the layout before placing labels
    labelled = []
    if page.choice is not None and point(page.choice) is not None:
        labelled.append((page.choice, True))
    labelled += [(r, False) for r in front if not page.is_choice(r)]
    markers = [(point(r), 3.5) for r in shown]
    markers += [(point(r), 7.5) for r in (page.choice, page.runner_up) if r and point(r)]
    _place_labels(fig, ax, [(point(r), _label(r), forced) for r, forced in labelled], markers)
    return fig


def _topk(page: _Page) -> str:
    return f"top-{page.k}" if page.k is not None else "top-k"


def _place_labels(fig, ax, items, markers) -> None:
    """Annotate each ``(xy, text, forced)`` where it overlaps no marker and no other label.

    ``markers`` are ``(xy, radius in points)``. Positions around the point are
    tried nearest first; a label that fits nowhere inside the axes is dropped
    unless ``forced``.
    """
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    px_per_pt = fig.dpi / 72.0
    obstacles = []
    for xy, radius in markers:
        (px, py), r = ax.transData.transform(xy), radius * px_per_pt
        obstacles.append(Bbox.from_extents(px - r, py - r, px + r, py + r))
    placed: list = []
    for xy, text, forced in items:
        chosen = None
        for dx, dy, ha, va in _OFFSETS:
            ann = _annotate(ax, xy, text, dx, dy, ha, va, forced)
            box = ann.get_window_extent(renderer).padded(2)
            inside = (
                box.x0 >= frame.x0
                and box.x1 <= frame.x1
                and box.y0 >= frame.y0
                and box.y1 <= frame.y1
            )
            clear = not any(box.overlaps(b) for b in placed + obstacles)
            if inside and clear:
                chosen = box
                break
            ann.remove()
        if chosen is None and forced:
            dx, dy, ha, va = _OFFSETS[0]
            chosen = _annotate(ax, xy, text, dx, dy, ha, va, forced).get_window_extent(renderer)
        if chosen is not None:
            placed.append(chosen)


def _annotate(ax, xy, text, dx, dy, ha, va, bold):
    far = abs(dx) > 11 or abs(dy) > 11
    ann = ax.annotate(
        _mpl_text(text),
        xy,
        xytext=(dx, dy),
        textcoords="offset points",
        ha=ha,
        va=va,
        fontsize=7.5,
        fontweight="bold" if bold else "normal",
        color="#8b1a1a" if bold else "0.15",
        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.75),
        arrowprops=dict(arrowstyle="-", lw=0.6, color="0.45", shrinkA=0, shrinkB=4)
        if far
        else None,
        zorder=6,
        annotation_clip=False,
    )
    ann.set_in_layout(False)
    return ann


def _spectrum(page: _Page, Figure, FigureCanvasAgg):
    """Eigenvalues (log y) and recall after PCA, side by side; None without either."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    dg = page.diagnostics
    spectrum = dg.get("spectrum")
    eig = (
        [(i + 1, v) for i, v in enumerate(_num(s) for s in spectrum) if v is not None and v > 0]
        if isinstance(spectrum, Sequence)
        else []
    )
    pca = dg.get("pca_recall")
    pca = (
        [
            (dd, rr)
            for p in pca
            if isinstance(p, Mapping)
            and (dd := _num(p.get("d"))) is not None
            and (rr := _num(p.get("recall_at_k"))) is not None
        ]
        if isinstance(pca, Sequence)
        else []
    )
    if not eig and not pca:
        return None
    panels = int(bool(eig)) + int(bool(pca))
    fig = Figure(
        figsize=SPECTRUM_SIZE if panels == 2 else (6.0, 3.6), dpi=DPI, layout="constrained"
    )
    FigureCanvasAgg(fig)
    axes = list(
        fig.subplots(1, panels, width_ratios=[3, 2] if panels == 2 else None, squeeze=False)[0]
    )
    alt = []
    if eig:
        ax = axes.pop(0)
        n = len(eig)
        ax.semilogy(
            [i for i, _ in eig],
            [v for _, v in eig],
            marker="o" if n <= 100 else None,
            ms=3,
            lw=1.2,
            color="#1f77b4",
        )
        er = _num(dg.get("effective_rank"))
        if er is not None:
            ax.axvline(er, ls="--", lw=1, color=_CHOICE_COLOUR, label=f"effective rank {er:.1f}")
            ax.legend(fontsize=8, loc="upper right")
        ax.set_xlabel("principal component (largest variance first)")
        ax.set_ylabel("eigenvalue (variance)")
        ax.set_title("covariance spectrum", fontsize=11)
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", axis="y", alpha=0.12)
        ax.set_xlim(0, n + 1)
        alt.append(
            f"Covariance spectrum: {n} eigenvalues from {eig[0][1]:.3g} down to {eig[-1][1]:.3g}"
            + (f", effective rank {er:.1f}" if er is not None else "")
        )
    if pca:
        ax = axes.pop(0)
        pca.sort()
        ax.plot([d for d, _ in pca], [r for _, r in pca], "o-", color="#2ca02c", ms=5, lw=1.4)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator([d for d, _ in pca]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("d′ (principal directions kept)")
        ax.set_ylabel(page.recall_name)
        ax.set_title("exact search after PCA to d′", fontsize=11)
        ax.grid(True, alpha=0.35)
        ax.set_ylim(min(0.0, min(r for _, r in pca) - 0.05), 1.02)
        ax.margins(x=0.12)
        alt.append(
            f"{page.recall_name} after PCA: " + ", ".join(f"d′={d:g}: {r:.3f}" for d, r in pca)
        )
    return fig, "; ".join(alt) + "."


# -- writing -------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    """:func:`vecpress.atomic.write_bytes`, with errors that name the report."""
    try:
        write_bytes(path, data)
    except OSError as e:
        if str(path) in str(e):
            raise
        raise type(e)(e.errno, f"writing the report {path} failed: {e.strerror or e}") from e


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
