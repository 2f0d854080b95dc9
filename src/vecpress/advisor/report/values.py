"""The report's values: numbers as finite floats or "–", their formatting and
escaping, configuration labels, and the checks of :func:`write_report`'s arguments."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

#: Shown for every value that was not measured.
MISSING = "–"


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
