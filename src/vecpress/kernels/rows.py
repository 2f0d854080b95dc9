"""Row-wise reductions on the entry path of every call that takes vectors."""

from __future__ import annotations

import numba as nb
import numpy as np

_CHUNK = 1024


@nb.njit(cache=True, fastmath={"reassoc", "contract"}, parallel=True)
def _squares_into(x, out):
    n, d = x.shape
    for ch in nb.prange((n + _CHUNK - 1) // _CHUNK):
        for j in range(ch * _CHUNK, min(n, (ch + 1) * _CHUNK)):
            s = 0.0
            for i in range(d):
                v = np.float64(x[j, i])
                s += v * v
            out[j] = s


@nb.njit(cache=True, fastmath={"reassoc", "contract"})
def _squares_serial(x, out):
    n, d = x.shape
    for j in range(n):
        s = 0.0
        for i in range(d):
            v = np.float64(x[j, i])
            s += v * v
        out[j] = s


def row_squares(x: np.ndarray) -> np.ndarray:
    """``sum_i x[j, i]**2`` of every row of the float32 matrix ``x``, in float64.

    The squares of float32 values cannot overflow float64, so a non-finite sum
    means a NaN or an infinity in the row. The compiler may reorder the sum
    (vector lanes) but not assume finite values: a NaN or an infinity in a row
    always reaches its sum.

    Examples
    --------
    >>> row_squares(np.array([[3.0, 4.0], [np.nan, 0.0]], np.float32)).tolist()
    [25.0, nan]
    """
    out = np.empty(x.shape[0], np.float64)
    # a few rows (one query): no parallel launch, which costs ~1 ms from a thread whose
    # numba thread pool is not warm (a server's request threads)
    (_squares_into if x.shape[0] > 2 * _CHUNK else _squares_serial)(x, out)
    return out


@nb.njit(cache=True)
def _ids_into(rows, ids, out):
    nq, width = rows.shape
    for i in range(nq):
        for j in range(width):
            r = rows[i, j]
            out[i, j] = ids[r] if r >= 0 else -1


def result_ids(rows: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """The stored ids of result ``rows`` (``int64[nq, width]``, ``-1``: none), padded with
    ``-1`` to ``k`` columns: ``int64[nq, k]`` in one compiled pass (a single query's
    result is a handful of values, and numpy's masked indexing costs several calls).

    Examples
    --------
    >>> result_ids(np.array([[2, 0, -1]]), np.array([10, 11, 12]), 4).tolist()
    [[12, 10, -1, -1]]
    """
    out = np.full((rows.shape[0], k), -1, np.int64)
    _ids_into(np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(ids, np.int64), out)
    return out
