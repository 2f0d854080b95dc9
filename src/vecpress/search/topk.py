"""Top-k selection: the one routine used by search, merging and ground truth.

:func:`topk` is a compiled bounded-heap selection (:mod:`vecpress.kernels.heap`),
parallel over rows. Ties are broken by the smaller id, so every caller -- flat
scan, IVF, re-ranking, block merges, exact ground truth -- ranks equal scores the
same way.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..kernels.heap import heap_pad, heap_push, heap_sort


@nb.njit(cache=True, parallel=True)
def _topk_positions(scores, k, out_ids, out_scores):
    nq, n = scores.shape
    for r in nb.prange(nq):
        hs = out_scores[r]
        hi = out_ids[r]
        m = 0
        row = scores[r]
        for j in range(n):
            v = np.float32(row[j])
            if m < k or v > hs[0]:  # ties at the root keep the smaller (earlier) id
                m = heap_push(hs, hi, m, v, j)
        heap_sort(hs, hi, m)
        heap_pad(hs, hi, m)


@nb.njit(cache=True, parallel=True)
def _topk_labelled(scores, labels, k, out_ids, out_scores):
    nq, n = scores.shape
    for r in nb.prange(nq):
        hs = out_scores[r]
        hi = out_ids[r]
        m = 0
        for j in range(n):
            if labels[r, j] >= 0:
                m = heap_push(hs, hi, m, np.float32(scores[r, j]), labels[r, j])
        heap_sort(hs, hi, m)
        heap_pad(hs, hi, m)


def topk(
    scores: np.ndarray, k: int, ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest scores of each row, best first; ties go to the smaller id.

    Parameters
    ----------
    scores : numpy.ndarray
        ``(nq, n)`` float scores (larger is better).
    k : int
        Results per row.
    ids : numpy.ndarray, optional
        ``int64[nq, n]`` labels of the scores (e.g. candidate ids being merged);
        entries with a negative label are ignored. Without it the labels are
        the column positions.

    Returns
    -------
    (ids int64[nq, k], scores float32[nq, k])
        Where a row has fewer than ``k`` entries the missing places hold id -1
        and score -inf.

    Examples
    --------
    >>> ids, s = topk(np.array([[0.1, 0.9, 0.5]], np.float32), 2)
    >>> ids.tolist(), s.tolist()
    ([[1, 2]], [[0.8999999761581421, 0.5]])
    >>> topk(np.array([[1.0, 3.0, 2.0]]), 2, ids=np.array([[7, -1, 4]]))[0].tolist()
    [[4, 7]]
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D, found shape {scores.shape}")
    nq = scores.shape[0]
    out_ids = np.empty((nq, k), np.int64)
    out_scores = np.empty((nq, k), np.float32)
    if k == 0 or nq == 0:
        return out_ids, out_scores
    if ids is None:
        _topk_positions(scores, k, out_ids, out_scores)
    else:
        ids = np.asarray(ids, np.int64)
        if ids.shape != scores.shape:
            raise ValueError(f"ids must have the shape of scores {scores.shape}, found {ids.shape}")
        _topk_labelled(scores, ids, k, out_ids, out_scores)
    return out_ids, out_scores


def exact_search(
    queries: np.ndarray, base: np.ndarray, k: int, *, block: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Exact maximum-inner-product top-k by blocked float32 BLAS products."""
    ids = np.empty((queries.shape[0], k), np.int64)
    scores = np.empty((queries.shape[0], k), np.float32)
    for s in range(0, queries.shape[0], block):
        ids[s : s + block], scores[s : s + block] = topk(queries[s : s + block] @ base.T, k)
    return ids, scores


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean fraction of the true top-``k`` ids found among the returned top-``k``."""
    hits = sum(len(np.intersect1d(f[:k], t[:k])) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth))
