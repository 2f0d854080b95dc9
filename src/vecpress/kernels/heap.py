"""A bounded result heap for compiled kernels: the ``k`` best ``(score, id)`` pairs.

The heap lives in two caller-owned arrays (``scores float32[k]``, ``ids int64[k]``)
plus a count, so kernels keep one per query (or per work item) without
allocating. Order: a larger score is better; among equal scores the smaller id
is better, so results do not depend on scan order or thread count. The root
(index 0) is the *worst* kept pair, which makes the common case -- a score that
does not enter -- one comparison.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, inline="always")
def _worse(sa, ia, sb, ib) -> bool:
    """Whether pair a ranks below pair b."""
    return sa < sb or (sa == sb and ia > ib)


@nb.njit(cache=True, inline="always")
def _sift_down(hs, hi, m, pos):
    s, i = hs[pos], hi[pos]
    while True:
        c = 2 * pos + 1
        if c >= m:
            break
        if c + 1 < m and _worse(hs[c + 1], hi[c + 1], hs[c], hi[c]):
            c += 1
        if not _worse(hs[c], hi[c], s, i):
            break
        hs[pos], hi[pos] = hs[c], hi[c]
        pos = c
    hs[pos], hi[pos] = s, i


@nb.njit(cache=True)
def heap_push(hs, hi, m, s, i) -> int:
    """Offer ``(s, i)`` to a heap holding ``m`` pairs (capacity ``len(hs)``); returns
    the new count. NaN scores never enter a full heap."""
    k = hs.shape[0]
    if m < k:
        pos = m
        while pos > 0:  # sift up: the new pair rises while it is worse than its parent
            parent = (pos - 1) // 2
            if not _worse(s, i, hs[parent], hi[parent]):
                break
            hs[pos], hi[pos] = hs[parent], hi[parent]
            pos = parent
        hs[pos], hi[pos] = s, i
        return m + 1
    if _worse(hs[0], hi[0], s, i):
        hs[0], hi[0] = s, i
        _sift_down(hs, hi, m, 0)
    return m


@nb.njit(cache=True)
def heap_sort(hs, hi, m) -> None:
    """Sort the ``m`` heap pairs best first, in place (positions ``m..`` untouched)."""
    for end in range(m - 1, 0, -1):
        hs[0], hs[end] = hs[end], hs[0]
        hi[0], hi[end] = hi[end], hi[0]
        _sift_down(hs, hi, end, 0)


@nb.njit(cache=True, inline="always")
def heap_pad(hs, hi, m) -> None:
    """Fill places ``m..`` with id -1 and score -inf."""
    for p in range(m, hs.shape[0]):
        hs[p] = -np.inf
        hi[p] = -1
