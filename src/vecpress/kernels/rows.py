"""Row-wise reductions on the entry path of every call that takes vectors."""

from __future__ import annotations

import numba as nb
import numpy as np

_CHUNK = 1024


@nb.njit(cache=True, fastmath={"reassoc", "contract"})
def _square_sum(u):
    """``sum_i u[i]**2`` in float64, in an order of the compiler's choosing (vector lanes)
    but the same wherever it is called: every row's squares in this package are this one
    compiled function's, so a row's sum does not depend on the rows summed with it."""
    s = 0.0
    for i in range(u.shape[0]):
        v = np.float64(u[i])
        s += v * v
    return s


@nb.njit(cache=True, parallel=True)
def _squares_into(x, out):
    n = x.shape[0]
    for ch in nb.prange((n + _CHUNK - 1) // _CHUNK):
        for j in range(ch * _CHUNK, min(n, (ch + 1) * _CHUNK)):
            out[j] = _square_sum(x[j])


@nb.njit(cache=True)
def _squares_serial(x, out):
    for j in range(x.shape[0]):
        out[j] = _square_sum(x[j])


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
def _quotients(x, s, out):
    """``out[i] = x[i] / s`` divided in float64 and rounded once to float32 (no fast-math
    flags: the division rounds as numpy's ``float64`` divide does)."""
    for i in range(x.shape[0]):
        out[i] = np.float32(np.float64(x[i]) / s)


@nb.njit(cache=True)
def _units_serial(x, sq, out, out_sq):
    for j in range(x.shape[0]):
        _quotients(x[j], np.sqrt(sq[j]), out[j])
        out_sq[j] = _square_sum(out[j])


@nb.njit(cache=True, parallel=True)
def _units_parallel(x, sq, out, out_sq):
    n = x.shape[0]
    for ch in nb.prange((n + _CHUNK - 1) // _CHUNK):
        for j in range(ch * _CHUNK, min(n, (ch + 1) * _CHUNK)):
            _quotients(x[j], np.sqrt(sq[j]), out[j])
            out_sq[j] = _square_sum(out[j])


def unit_rows(x: np.ndarray, sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the float32 matrix ``x`` divided by their norms, and the squared norms
    of the results: ``(float32[n, d], float64[n])`` in one pass.

    ``sq`` are the rows' squared norms (:func:`row_squares`), all positive. Each
    entry is ``x / sqrt(sq)`` divided in float64 and rounded once to float32, as
    ``np.divide(x, np.sqrt(sq)[:, None], out=float32_array, casting="unsafe")``
    gives it; the squares are summed as :func:`row_squares` sums them.

    Examples
    --------
    >>> x = np.array([[3.0, 4.0], [0.0, 2.0]], np.float32)
    >>> unit, sq = unit_rows(x, row_squares(x))
    >>> unit.tolist(), sq.tolist()
    ([[0.6000000238418579, 0.800000011920929], [0.0, 1.0]], [1.0000000476837165, 1.0])
    """
    out = np.empty(x.shape, np.float32)
    out_sq = np.empty(x.shape[0], np.float64)
    (_units_parallel if x.shape[0] > 2 * _CHUNK else _units_serial)(x, sq, out, out_sq)
    return out, out_sq


@nb.njit(cache=True)
def _dot_rounded(u, v):
    """``<u, v>`` of two float32 vectors summed in float64 in index order (no fast-math:
    the same sum wherever it is compiled), rounded once to float32."""
    s = 0.0
    for i in range(u.shape[0]):
        s += np.float64(u[i]) * np.float64(v[i])
    return np.float32(s)


@nb.njit(cache=True)
def _dots_into(x, v, out):
    for j in range(x.shape[0]):
        out[j] = _dot_rounded(x[j], v)


def row_dots(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``<x[j], v>`` of every row of the float32 matrix ``x`` with the float32 vector
    ``v``, summed in float64 and rounded once to float32: a query's value does not
    depend on the queries computed with it (a BLAS product's may, in its last bits).

    Examples
    --------
    >>> row_dots(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), np.ones(2, np.float32))
    array([3., 7.], dtype=float32)
    """
    out = np.empty(x.shape[0], np.float32)
    _dots_into(x, v, out)
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
