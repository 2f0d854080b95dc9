"""The HTML page of the report: :func:`write_report` and what the page shows.

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
* the diagnostics of :func:`vecpress.advisor.diagnostics.inspect` and its advice
  (``id="diagnostics"``).

Missing values (``None``, NaN, absent keys) are shown as "–". The plots need
matplotlib, an optional dependency (``pip install "vecpress[report]"``); it is
imported only by :func:`write_report`, which draws on
:class:`matplotlib.figure.Figure` with the Agg canvas directly, so neither
pyplot nor the user's chosen backend is touched.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ...atomic import write_bytes
from .pareto import pareto_front
from .plots import _plots
from .style import _CSS
from .values import (
    MISSING,
    _check_mapping,
    _check_results,
    _esc,
    _fmt,
    _fmt_int,
    _fmt_qps,
    _fmt_ratio,
    _fmt_rss,
    _key,
    _label,
    _num,
)


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
        The dict of :func:`vecpress.advisor.diagnostics.inspect`; absent keys are
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
        from ..._version import __version__

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


def _write_atomic(path: Path, data: bytes) -> None:
    """:func:`vecpress.atomic.write_bytes`, with errors that name the report."""
    try:
        write_bytes(path, data)
    except OSError as e:
        if str(path) in str(e):
            raise
        raise type(e)(e.errno, f"writing the report {path} failed: {e.strerror or e}") from e
