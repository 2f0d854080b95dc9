"""A few queries made ready for the scan in one compiled call.

Before its scan, a search checks its queries, normalises them (cosine) and maps
them into the codec's space (centring, a randomized rotation). For one query each
of those steps is a handful of numpy or compiled calls, and each is paid with the
caches the previous search's scan left full of codes: on 100,000 x 384 sentence
embeddings they came to about a tenth of a one-query search. :func:`prepare_few`
makes the common chain -- the checks' squared norms, the cosine normalisation,
``center``'s difference and offset, the mixing steps of ``hd<r>`` -- in one call,
calling the very functions those steps call (:func:`~vecpress.kernels.rows.row_squares`'s
sum, :func:`~vecpress.kernels.rows.unit_rows`'s quotient and squares,
:func:`~vecpress.kernels.rows.row_dots`, the row-by-row mixing steps of
:func:`~vecpress.kernels.hadamard.mixing_steps`), so its outputs are the same bits.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .._validation import MAX_NORM
from .hadamard import FEW_ROWS, _mix_rows
from .rows import _dot_rounded, _quotients, _square_sum, _squares_serial

#: most queries :func:`prepare_few` takes (the rotation's row-by-row path)
FEW = FEW_ROWS
#: :func:`prepare_few`'s results: the queries are ready, or a row is non-finite or
#: beyond :data:`~vecpress._validation.MAX_NORM`, or zero under cosine (the caller's
#: general path names the row)
READY, BAD_VALUES, ZERO_ROW = 0, 1, 2
_LIMIT = MAX_NORM * MAX_NORM


@nb.njit(cache=True)
def prepare_few(x, cosine, mean, signs, perms, cos, sin, unit, sq, mapped, offset):
    """Check, normalise and map the queries ``x`` (float32[n, d], ``n`` <= :data:`FEW`).

    Parameters
    ----------
    x : float32[n, d]
    cosine : bool
        Divide each row by its norm (:func:`~vecpress.kernels.rows.unit_rows`).
    mean : float32[d] or float32[0]
        ``center``'s mean, or empty for a chain without ``center``.
    signs, perms, cos, sin : arrays of the mixing steps (0 steps: no rotation)
        As :func:`~vecpress.kernels.hadamard.mixing_steps` takes them.
    unit, mapped : float32[n, d]
        Out: the rows as the index sees them (normalised under cosine), and mapped
        into the codec's space.
    sq : float64[n]
        Out: the squared norms of ``unit``'s rows.
    offset : float32[n]
        Out: ``center``'s ``<q, mean>`` (0 without ``center``).

    Returns
    -------
    int
        :data:`READY`, or :data:`BAD_VALUES` / :data:`ZERO_ROW` (outputs unspecified).

    Examples
    --------
    >>> x = np.array([[3.0, 4.0]], np.float32)
    >>> unit, mapped = np.empty_like(x), np.empty_like(x)
    >>> sq, offset = np.empty(1), np.empty(1, np.float32)
    >>> none = np.zeros((0, 2), np.float32)
    >>> prepare_few(x, True, np.ones(2, np.float32), none, np.zeros((0, 2), np.int32),
    ...             np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32), unit, sq,
    ...             mapped, offset)
    0
    >>> [round(float(v), 4) for v in (*mapped[0], offset[0])]
    [-0.4, -0.2, 1.4]
    """
    n, d = x.shape
    _squares_serial(x, sq)
    for j in range(n):
        if not sq[j] <= _LIMIT:  # NaN fails the comparison too
            return BAD_VALUES
        if cosine and sq[j] == 0.0:
            return ZERO_ROW
    for j in range(n):
        if cosine:
            _quotients(x[j], np.sqrt(sq[j]), unit[j])
            sq[j] = _square_sum(unit[j])
        else:
            unit[j] = x[j]
    rotate = signs.shape[0] > 0
    centred = unit
    if mean.shape[0] > 0:
        centred = np.empty((n, d), np.float32) if rotate else mapped
        for j in range(n):
            offset[j] = _dot_rounded(unit[j], mean)
            for i in range(d):
                centred[j, i] = unit[j, i] - mean[i]
    else:
        offset[:] = 0.0
    if rotate:
        _mix_rows(centred, mapped, signs, perms, cos, sin)
    elif mean.shape[0] == 0:
        mapped[:] = unit
    return READY
