"""Top-k selection: the one routine used by exhaustive search and ground truth."""

from __future__ import annotations

import numpy as np


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest scores of each row, best first.

    Returns ``(ids int64[nq, k], scores float32[nq, k])``; when a row has fewer
    than ``k`` columns the missing places hold id -1 and score -inf.

    Examples
    --------
    >>> ids, s = topk(np.array([[0.1, 0.9, 0.5]], np.float32), 2)
    >>> ids.tolist(), s.tolist()
    ([[1, 2]], [[0.8999999761581421, 0.5]])
    """
    nq, n = scores.shape
    kk = min(k, n)
    ids = np.full((nq, k), -1, np.int64)
    out = np.full((nq, k), -np.inf, np.float32)
    if kk == 0:
        return ids, out
    if kk < n:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(n), (nq, n))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    ids[:, :kk] = np.take_along_axis(part, order, axis=1)
    out[:, :kk] = np.take_along_axis(vals, order, axis=1)
    return ids, out


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
