"""Bit packing of b-bit codes (b = 1..8) with no wasted bits.

A row of ``d`` codes is stored as one little-endian bit stream: code ``i``
occupies bits ``[i*b, (i+1)*b)``, bit 0 being the least significant bit of byte
0. So ``ceil(d*b/8)`` bytes hold a row, for every ``b`` (3, 5, 6 and 7 included).
For b = 4 this is the usual nibble order (code ``2k`` in the low nibble of
byte ``k``); for b = 1 it is ``numpy.packbits(..., bitorder="little")``.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from . import read_only


def packed_size(d: int, bits: int) -> int:
    """Bytes needed for ``d`` codes of ``bits`` bits.

    Examples
    --------
    >>> packed_size(384, 3)
    144
    """
    return (d * bits + 7) // 8


@nb.njit(cache=True, inline="always")
def unpack_row(src, offset, bits, d, dst):
    """Unpack ``d`` codes of ``bits`` bits from ``src[offset:]`` into ``dst[:d]``."""
    if bits == 8:
        for i in range(d):
            dst[i] = src[offset + i]
    elif bits == 4:
        h = d // 2
        for k in range(h):
            v = src[offset + k]
            dst[2 * k] = v & 15
            dst[2 * k + 1] = v >> 4
        if d & 1:
            dst[d - 1] = src[offset + h] & 15
    elif bits == 2:
        q = d // 4
        for k in range(q):
            v = src[offset + k]
            dst[4 * k] = v & 3
            dst[4 * k + 1] = (v >> 2) & 3
            dst[4 * k + 2] = (v >> 4) & 3
            dst[4 * k + 3] = v >> 6
        for i in range(4 * q, d):
            dst[i] = (src[offset + (i >> 2)] >> (2 * (i & 3))) & 3
    elif bits == 1:
        q = d // 8
        for k in range(q):
            v = src[offset + k]
            for t in range(8):
                dst[8 * k + t] = (v >> t) & 1
        for i in range(8 * q, d):
            dst[i] = (src[offset + (i >> 3)] >> (i & 7)) & 1
    else:
        mask = (1 << bits) - 1
        acc = np.uint32(0)
        nacc = 0
        pos = offset
        for i in range(d):
            if nacc < bits:
                acc |= np.uint32(src[pos]) << np.uint32(nacc)
                pos += 1
                nacc += 8
            dst[i] = acc & mask
            acc >>= np.uint32(bits)
            nacc -= bits


@nb.njit(cache=True, inline="always")
def pack_row(codes, bits, dst, offset):
    """Pack one row of codes (each ``< 2**bits``) into ``dst[offset:]``.

    Widths 8, 4, 2 and 1 fill whole bytes from a fixed number of codes and take a
    loop the compiler vectorises; the others go through a bit accumulator. Both
    write the bytes of the module docstring's bit stream.
    """
    d = codes.shape[0]
    if bits == 8:
        for i in range(d):
            dst[offset + i] = codes[i]
    elif bits == 4:
        for k in range(d // 2):
            dst[offset + k] = codes[2 * k] | (codes[2 * k + 1] << 4)
        if d & 1:
            dst[offset + d // 2] = codes[d - 1]
    elif bits == 2:
        for k in range(d // 4):
            dst[offset + k] = (
                codes[4 * k]
                | (codes[4 * k + 1] << 2)
                | (codes[4 * k + 2] << 4)
                | (codes[4 * k + 3] << 6)
            )
        _pack_tail(codes, bits, dst, offset, d - d % 4)
    elif bits == 1:
        for k in range(d // 8):
            v = codes[8 * k]
            for m in range(1, 8):
                v |= codes[8 * k + m] << m
            dst[offset + k] = v
        _pack_tail(codes, bits, dst, offset, d - d % 8)
    else:
        _pack_tail(codes, bits, dst, offset, 0)


@nb.njit(cache=True, inline="always")
def _pack_tail(codes, bits, dst, offset, start):
    """Pack codes ``start..d`` (``start * bits`` a multiple of 8) with a bit accumulator."""
    d = codes.shape[0]
    acc = np.uint32(0)
    nacc = 0
    pos = offset + start * bits // 8
    for i in range(start, d):
        acc |= np.uint32(codes[i]) << np.uint32(nacc)
        nacc += bits
        while nacc >= 8:
            dst[pos] = acc & 255
            pos += 1
            acc >>= np.uint32(8)
            nacc -= 8
    if nacc > 0:
        dst[pos] = acc & 255


@nb.njit(cache=True, parallel=True)
def pack(codes, bits):
    """Pack ``uint8[n, d]`` codes into ``uint8[n, ceil(d*bits/8)]``.

    Examples
    --------
    >>> import numpy as np
    >>> c = np.array([[1, 2, 3]], np.uint8)
    >>> unpack(pack(c, 2), 2, 3).tolist()
    [[1, 2, 3]]
    """
    n, d = codes.shape
    nb_ = (d * bits + 7) // 8
    out = np.zeros((n, nb_), np.uint8)
    for r in nb.prange(n):
        pack_row(codes[r], bits, out[r], 0)
    return out


def unpack(packed, bits, d):
    """Inverse of :func:`pack`: ``uint8[n, >= ceil(d*bits/8)]`` to ``uint8[n, d]``.

    ``packed`` is passed on read-only (:func:`~vecpress.kernels.read_only`): codes
    just encoded and codes mapped from a file then share one compiled kernel.

    Examples
    --------
    >>> unpack(np.array([[0b111001]], np.uint8), 2, 3).tolist()
    [[1, 2, 3]]
    """
    return _unpack(read_only(packed), bits, d)


@nb.njit(cache=True, parallel=True)
def _unpack(packed, bits, d):
    """:func:`unpack`, compiled."""
    n = packed.shape[0]
    out = np.empty((n, d), np.uint8)
    for r in nb.prange(n):
        unpack_row(packed[r], 0, bits, d, out[r])
    return out
