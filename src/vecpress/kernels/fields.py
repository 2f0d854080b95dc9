"""Per-vector float fields of code rows, read in one pass.

A grid codec's score needs up to three numbers per row (:func:`vecpress.search.scan.row_terms`):
the two of its quantizer (e.g. ``rq``'s correction factor) and the ``center``
term. Each is a float16 or float32 at a fixed byte offset of the row, scaled by
``2**exp`` (:mod:`vecpress.codecs.quantizers.base`), or a constant. Reading them with
numpy takes one strided pass over the rows per field, each a cache miss per
row; :func:`read_fields` builds each float32's bits from the row's bytes in a
parallel compiled loop (measured on 1,000,000 rows of 198 bytes: a few ms per
field, against ~15 ms for numpy's strided conversion). The values equal
:func:`~vecpress.codecs.quantizers.base.get_field`'s bit for bit: every float16 is a
float32 exactly, and the scale is the same ``np.ldexp`` afterwards.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from . import read_only

_CHUNK = 4096


@nb.njit(cache=True, inline="always")
def _half_bits(h):
    """The float32 bits of the float16 of bits ``h`` (exact: every float16 is a float32)."""
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    e = (h >> np.uint32(10)) & np.uint32(31)
    m = h & np.uint32(1023)
    if e == 31:  # inf, nan
        return sign | np.uint32(0x7F800000) | (m << np.uint32(13))
    if e == 0:
        if m == 0:
            return sign
        e = np.uint32(113)  # a subnormal float16 is a normal float32: normalise it
        while (m & np.uint32(0x400)) == 0:
            m <<= np.uint32(1)
            e -= np.uint32(1)
        return sign | (e << np.uint32(23)) | ((m & np.uint32(1023)) << np.uint32(13))
    return sign | ((e + np.uint32(112)) << np.uint32(23)) | (m << np.uint32(13))


@nb.njit(cache=True, parallel=True)
def _read_half(codes, offset, out):
    for ch in nb.prange((codes.shape[0] + _CHUNK - 1) // _CHUNK):
        for i in range(ch * _CHUNK, min(codes.shape[0], (ch + 1) * _CHUNK)):
            h = np.uint32(codes[i, offset]) | (np.uint32(codes[i, offset + 1]) << np.uint32(8))
            out[i] = _half_bits(h)


@nb.njit(cache=True, parallel=True)
def _read_single(codes, offset, out):
    for ch in nb.prange((codes.shape[0] + _CHUNK - 1) // _CHUNK):
        for i in range(ch * _CHUNK, min(codes.shape[0], (ch + 1) * _CHUNK)):
            out[i] = (
                np.uint32(codes[i, offset])
                | (np.uint32(codes[i, offset + 1]) << np.uint32(8))
                | (np.uint32(codes[i, offset + 2]) << np.uint32(16))
                | (np.uint32(codes[i, offset + 3]) << np.uint32(24))
            )


def read_fields(codes: np.ndarray, specs, out: np.ndarray | None = None) -> np.ndarray:
    """The fields ``specs`` of every row of ``codes``: ``float32[len(specs), n]`` (written
    into ``out`` when given, whose rows must be contiguous).

    Each spec is a number (a constant field) or ``(offset, dtype, exp)``: the
    little-endian float16 or float32 at byte ``offset`` of the row, times ``2**exp``.

    Examples
    --------
    >>> rows = np.zeros((2, 6), np.uint8)
    >>> rows[:, 2:4] = np.array([[1.5], [-2.0]], "<f2").view(np.uint8)
    >>> read_fields(rows, [(2, np.dtype("<f2"), 3), 0.5]).tolist()
    [[12.0, -16.0], [0.5, 0.5]]
    """
    n, width = codes.shape
    if out is None:
        out = np.empty((len(specs), n), np.float32)
    elif out.shape != (len(specs), n) or out.dtype != np.float32 or out.strides[1] != 4:
        raise ValueError(f"out must be float32[{len(specs)}, {n}] with contiguous rows")
    codes = read_only(codes)  # rows in memory and mapped from a file: one compiled read
    for f, spec in enumerate(specs):
        if not isinstance(spec, tuple):
            out[f] = spec
            continue
        offset, dtype, exp = spec
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype("<f2"), np.dtype("<f4")):
            raise ValueError(f"field {f}: dtype must be <f2 or <f4, found {dtype}")
        if not 0 <= offset <= width - dtype.itemsize:
            raise ValueError(f"field {f}: offset {offset} outside rows of {width} bytes")
        if n:
            read = _read_half if dtype.itemsize == 2 else _read_single
            read(codes, offset, out[f].view(np.uint32))
        if exp:  # as get_field does: float32, then the exact power of two
            out[f] = np.ldexp(out[f], exp)
    return out
