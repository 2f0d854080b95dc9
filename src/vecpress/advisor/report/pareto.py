"""The Pareto frontier of measured configurations (the report's step lines, the
advisor's candidates)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from .values import _num


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
