"""Exact integer dot products of packed codes of any layout, one table look-up a byte.

A grid code's integer dot product with a query ``qi`` is ``Σ_i qi[i] c_i``, and a code
``c_i`` of ``w`` bits is ``Σ_t 2^t bit_t``: the product is a sum over the row's *bits*,
bit ``t`` of dimension ``i``'s code weighing ``qi[i] 2^t``. Grouping the bits by the
byte that holds them (codes of 3, 5, 6 or 7 bits and rows of several widths straddle
bytes: each of their bits still lies in one byte), a byte of value ``v`` at position
``p`` adds ``T[p, v]``, the sum of the weights of its set bits. So for one query::

    <c, qi> = Σ_p T[p, row[p]]

one look-up per code byte, whatever the widths, and exact: the tables hold integers
(``|T| <= 8 x 127 x 128``) and int32 sums of them are the same integers the unpacked
product gives. Building a query's tables costs ``256`` additions a byte (the entries with bit
``b`` set are those below ``2^b`` plus that bit's weight), small next to a scan of thousands
of rows. A scan that reads a row's bytes once and looks each up costs about what an
additive quantizer's table scan costs per codebook byte, with no unpacking.

Examples
--------
Three 3-bit codes (9 bits: the third straddles bytes 0 and 1) against a query:

>>> import numpy as np
>>> from vecpress.kernels.bitpack import pack
>>> from vecpress.kernels.scan import uniform_layout
>>> row = pack(np.array([[3, 6, 5]], np.uint8), 3)[0]
>>> t = byte_tables(uniform_layout(3, 3), np.array([[5, -2, 7]], np.int16), 0, 2)
>>> int(t[0, 0, row[0]] + t[0, 1, row[1]]), 5 * 3 - 2 * 6 + 7 * 5
(38, 38)
"""

from __future__ import annotations

from functools import lru_cache

import numba as nb
import numpy as np

from .wordlanes import code_positions, layout_key


def byte_tables(layout: np.ndarray, qi: np.ndarray, first: int, nbytes: int) -> np.ndarray:
    """Per-byte tables (int32[nv, nbytes, 256]) of the query rows ``qi`` (int16[nv, d],
    ``|values| <= 127``) for codes laid out as ``layout``
    (:func:`~vecpress.kernels.scan.check_layout`) within the row bytes ``first ..
    first + nbytes`` (module docstring): ``Σ_p T[v, p, row[first + p]]`` is the exact
    ``<codes, qi[v]>``.

    Examples
    --------
    >>> import numpy as np
    >>> t = byte_tables(np.array([[0, 2, 4, 0]]), np.array([[1, 10]], np.int16), 0, 1)
    >>> int(t[0, 0, 0x21])  # low nibble 1 (dim 0), high nibble 2 (dim 1)
    21
    """
    dims, pos, width = _positions(layout_key(layout), first, nbytes)
    qi = np.ascontiguousarray(qi, np.int16)
    out = np.empty((qi.shape[0], nbytes, 256), np.int32)
    _fill(dims, pos, width, qi, out)
    return out


@lru_cache(maxsize=64)
def _positions(key: bytes, first: int, nbytes: int) -> tuple[np.ndarray, ...]:
    """Dimension, first bit counted from byte ``first``, and width of every code of the
    layout ``key`` (:func:`~vecpress.kernels.wordlanes.layout_key`): a search reads the
    same layout for every query, so it is worked out once."""
    dims, pos, width = code_positions(np.frombuffer(key, np.int64).reshape(-1, 4))
    if dims.size and (pos.min() < 8 * first or (pos + width).max() > 8 * (first + nbytes)):
        raise ValueError(
            f"byte_tables: the layout's codes span bits {int(pos.min())}..."
            f"{int((pos + width).max())}, outside bytes {first}..{first + nbytes}"
        )
    return tuple(np.ascontiguousarray(a, np.int64) for a in (dims, pos - 8 * first, width))


@nb.njit(cache=True)
def _fill(dims, pos, width, qi, out):
    """The tables of :func:`byte_tables` (bit positions counted from byte ``first``)."""
    nv, nbytes = out.shape[0], out.shape[1]
    bit_w = np.zeros(8 * nbytes, np.int32)
    for v in range(nv):
        bit_w[:] = 0
        for c in range(dims.shape[0]):
            q = np.int32(qi[v, dims[c]])
            for t in range(width[c]):
                bit_w[pos[c] + t] = q << t
        for p in range(nbytes):
            tab = out[v, p]
            tab[0] = 0
            for b in range(8):  # the values with bit b set: those below it plus its weight
                half = 1 << b
                for val in range(half):
                    tab[half + val] = tab[val] + bit_w[8 * p + b]


__all__ = ["byte_tables"]
