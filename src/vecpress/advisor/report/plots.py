"""The report's plots, PNG images drawn with matplotlib's Agg canvas: recall against
bytes per vector and against queries/s (with the Pareto frontier, the choice and the
target), and the covariance spectrum with the recall after PCA.

matplotlib is imported only when a report is written (:func:`_matplotlib`), and
neither pyplot nor the user's backend or rcParams are touched.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .style import (
    _CHOICE_COLOUR,
    _OFFSETS,
    _PEER_STYLES,
    _VECPRESS_STYLE,
    DPI,
    MAX_PLOT_LABEL,
    SPECTRUM_SIZE,
    TRADEOFF_SIZE,
)
from .values import _label, _num, _si

if TYPE_CHECKING:
    from .page import _Page

_NEEDS_MATPLOTLIB = 'the HTML report needs matplotlib: pip install "vecpress[report]"'


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
        plots = (  # (key, x, minimise x, front, what x is, axis label, vertical line)
            ("bytes", "bytes_per_vector", True, page.front_bytes, "bytes per vector",
             "bytes per vector (log scale)", vline),
            ("speed", "qps_1t", False, page.front_speed, "queries/s (1 thread)",
             "queries per second, 1 thread (log scale)", None),
        )  # fmt: skip
        for key, x, minimise, front, what, xlabel, v in plots:
            fig = _tradeoff(
                page, Figure, FigureCanvasAgg, x=x, minimise_x=minimise, front=front,
                title=f"{page.recall_name} vs {what}", xlabel=xlabel, hline=hline, vline=v,
            )  # fmt: skip
            if fig is not None:
                alt = "bytes per vector" if key == "bytes" else "queries per second"
                out[f"plot-{key}"] = _png(fig, _alt(page, alt, front))
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
