"""The archive codec's compiled loops: lattice and scalar quantization, decoding, error
sums and symbol counts.

Each returns per-row (or per-column) partial results that the caller sums in one
fixed order, so nothing depends on the number of threads.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, inline="always")
def _nearest_e8(v, p):
    """The point of E8 nearest to ``v`` (8 floats): ``u`` into ``p`` and the coset
    ``c`` returned, the point being ``u + c/2`` with ``u`` in D8 (integer vectors of even
    sum). For each coset, round every coordinate; if the sum is odd, round the
    coordinate farthest from its integer the other way, which adds ``1 - 2 |e|`` to the
    squared distance (Conway & Sloane); the nearer coset wins."""
    s0 = 0.0
    s1 = 0.0
    w0 = -1.0
    w1 = -1.0
    i0 = 0
    i1 = 0
    par0 = 0
    par1 = 0
    for t in range(8):
        a = v[t]
        r0 = np.floor(a + 0.5)
        r1 = np.floor(a)
        e0 = a - r0
        e1 = a - 0.5 - r1
        s0 += e0 * e0
        s1 += e1 * e1
        par0 += np.int64(r0)
        par1 += np.int64(r1)
        if abs(e0) > w0:
            w0 = abs(e0)
            i0 = t
        if abs(e1) > w1:
            w1 = abs(e1)
            i1 = t
    if par0 & 1:
        s0 += 1.0 - 2.0 * w0
    if par1 & 1:
        s1 += 1.0 - 2.0 * w1
    c = 0 if s0 <= s1 else 1
    for t in range(8):
        p[t] = np.floor(v[t] + 0.5) if c == 0 else np.floor(v[t])
    if c == 0 and par0 & 1:
        p[i0] += 1.0 if v[i0] > p[i0] else -1.0
    elif c == 1 and par1 & 1:
        p[i1] += 1.0 if v[i1] - 0.5 > p[i1] else -1.0
    return c


@nb.njit(cache=True, parallel=True)
def quantize_into(y, inv, groups, offsets, s):
    """The symbols of the coefficients ``y`` (step ``1 / inv``) into ``s`` (int32, the
    shape of ``y``); returns the largest ``|level|`` before clipping (clipped to
    ``2**30``: the caller refuses anything that large).

    Columns ``[0, 8 groups)``: each group of 8 is quantized to the nearest point ``p``
    of the E8 lattice (``D8 ∪ D8 + ½``) scaled by the step; ``u = p - c/2`` (``c`` = 1
    in the half-integer coset) is in D8, so its last coordinate's parity follows from
    the other seven and is not coded: the symbols are ``u_1 .. u_7`` and ``2 t + c``
    with ``u_8 = 2 t + (u_1 + .. + u_7 mod 2)``. Other columns ``j``: the scalar level
    ``sign(y) floor(|y| inv + offsets[j - 8 groups])``."""
    n = y.shape[0]
    top = np.zeros(n, np.float64)
    lim = 2.0**30
    blocks = (n + 255) // 256
    for blk in nb.prange(blocks):
        v = np.empty(8)
        p = np.empty(8)
        for i in range(256 * blk, min(n, 256 * blk + 256)):
            _quantize_row(y, i, inv, groups, offsets, s, top, v, p, lim)
    return top.max() if n else 0.0


@nb.njit(cache=True, inline="always")
def _quantize_row(y, i, inv, groups, offsets, s, top, v, p, lim):
    """Row ``i`` of :func:`quantize_into` (``v``, ``p``: 8-float scratch)."""
    d = y.shape[1]
    m = 0.0
    for g in range(groups):
        for t in range(8):
            v[t] = min(max(np.float64(y[i, 8 * g + t]) * inv, -lim), lim)
        c = _nearest_e8(v, p)
        par = 0
        for t in range(8):
            u = p[t]
            m = max(m, abs(u))
            if t < 7:
                s[i, 8 * g + t] = np.int32(u)
                par += np.int64(u)
            else:
                s[i, 8 * g + 7] = np.int32(np.int64(u) - (par & 1) + c)
    for j in range(8 * groups, d):
        a = np.floor(abs(np.float64(y[i, j])) * inv + offsets[j - 8 * groups])
        m = max(m, a)
        a = min(a, lim)
        s[i, j] = np.int32(a) if y[i, j] >= 0 else -np.int32(a)
    top[i] = m


#: rows of symbols by axis :func:`dequantize_columns_into` gathers at a time (one 64-byte
#: line of each symbol column)
_TILE = 16


@nb.njit(cache=True, inline="always")
def _dequantize_row(s, r, step, groups, shrink, out, i):
    """:func:`dequantize_into` of row ``r`` of ``s`` into row ``i`` of ``out``."""
    d = s.shape[1]
    for g in range(groups):
        par = 0
        for t in range(7):
            par += np.int64(s[r, 8 * g + t])
        last = np.int64(s[r, 8 * g + 7])
        c = last & 1
        u8 = last - c + (par & 1)
        half = 0.5 * c
        for t in range(7):
            out[i, 8 * g + t] = np.float32((np.float64(s[r, 8 * g + t]) + half) * step)
        out[i, 8 * g + 7] = np.float32((np.float64(u8) + half) * step)
    for j in range(8 * groups, d):
        q = s[r, j]
        if q == 0:
            out[i, j] = 0.0
        else:
            a = (abs(np.float64(q)) - shrink[j - 8 * groups]) * step
            out[i, j] = np.float32(a if q > 0 else -a)


@nb.njit(cache=True, parallel=True)
def dequantize_into(s, step, groups, shrink, out):
    """The coefficients of the symbols ``s`` (:func:`quantize_into`) into ``out``
    (float32): a lattice group's point ``(u + c/2) step``; a scalar level ``q``,
    ``sign(q) (|q| - shrink[j]) step`` (0 for 0): nearer 0 than its cell's middle, as
    the cell's centroid is where the density falls."""
    for i in nb.prange(s.shape[0]):
        _dequantize_row(s, i, step, groups, shrink, out, i)


@nb.njit(cache=True, parallel=True)
def dequantize_columns_into(s, step, groups, shrink, out):
    """:func:`dequantize_into` of the transpose of ``s`` (symbols by axis, as a decoder
    decodes them: ``s[j, i]`` is row ``i``'s symbol of axis ``j``): :data:`_TILE` rows
    at a time are gathered, a cache line of each axis, into a row-major tile, instead
    of a transposed copy of them all."""
    d, n = s.shape
    for tile in nb.prange((n + _TILE - 1) // _TILE):
        i0 = tile * _TILE
        m = min(n, i0 + _TILE) - i0
        rows = np.empty((_TILE, d), s.dtype)
        for j0 in range(0, d, _TILE):  # a square of lines at a time (few pages)
            j1 = min(d, j0 + _TILE)
            for u in range(m):
                for j in range(j0, j1):
                    rows[u, j] = s[j, i0 + u]
        for u in range(m):
            _dequantize_row(rows, u, step, groups, shrink, out, i0 + u)


@nb.njit(cache=True)
def shrink_sums(y, s, inv, groups):
    """Per scalar column (from ``8 groups``), Σ over its non-zero levels of
    ``|q| - |y| inv``, and their count (``float64[2, d - 8 groups]``)."""
    n, d = y.shape
    out = np.zeros((2, d - 8 * groups))
    for i in range(n):
        for j in range(8 * groups, d):
            q = s[i, j]
            if q != 0:
                out[0, j - 8 * groups] += abs(np.float64(q)) - abs(np.float64(y[i, j])) * inv
                out[1, j - 8 * groups] += 1.0
    return out


@nb.njit(cache=True, parallel=True)
def squared_error(a, b):
    """Per row, Σ (a - b)², each difference and the sum in float64."""
    n, d = a.shape
    rows = np.zeros(n, np.float64)
    for i in nb.prange(n):
        s = 0.0
        for j in range(d):
            e = np.float64(a[i, j]) - np.float64(b[i, j])
            s += e * e
        rows[i] = s
    return rows


@nb.njit(cache=True)
def column_ranges(q):
    """Per column of ``q``, its smallest and largest value (``int64[2, d]``)."""
    n, d = q.shape
    out = np.zeros((2, d), np.int64)
    if n == 0:
        return out
    for j in range(d):
        out[0, j] = q[0, j]
        out[1, j] = q[0, j]
    for i in range(1, n):
        for j in range(d):
            v = q[i, j]
            if v < out[0, j]:
                out[0, j] = v
            elif v > out[1, j]:
                out[1, j] = v
    return out


@nb.njit(cache=True)
def count_into(q, lows, starts, counts):
    """``counts[starts[j] + q[i, j] - lows[j]] += 1`` over all of ``q`` (every value of
    column ``j`` within its table, which starts at ``starts[j]``)."""
    n, d = q.shape
    for i in range(n):
        for j in range(d):
            counts[starts[j] + q[i, j] - lows[j]] += 1


@nb.njit(cache=True)
def low_bit_words(n, shifts):
    """The uint32 words that hold ``n`` rows' low bits, ``shifts[j]`` bits per axis."""
    total = 0
    for j in range(shifts.size):
        total += n * shifts[j]
    return (total + 31) // 32


@nb.njit(cache=True)
def pack_low_bits(cols, shifts):
    """The low ``shifts[j]`` bits of every value of row ``j`` of ``cols`` (non-negative
    int32, one row per axis), row after row, least significant first, into uint32
    words."""
    k, n = cols.shape
    out = np.zeros(low_bit_words(n, shifts) + 1, np.uint32)
    acc = np.uint64(0)
    filled = 0
    w = 0
    for j in range(k):
        b = shifts[j]
        if b == 0:
            continue
        mask = (np.uint64(1) << np.uint64(b)) - np.uint64(1)
        for i in range(n):
            acc |= (np.uint64(cols[j, i]) & mask) << np.uint64(filled)
            filled += b
            if filled >= 32:
                out[w] = np.uint32(acc & np.uint64(0xFFFFFFFF))
                w += 1
                acc >>= np.uint64(32)
                filled -= 32
    if filled:
        out[w] = np.uint32(acc)
        w += 1
    return out[:w]


@nb.njit(cache=True)
def add_low_bits(cols, shifts, words):
    """``cols[j] = (cols[j] << shifts[j]) | low bits`` read from ``words``
    (:func:`pack_low_bits`'s order); returns False if ``words`` is not exactly long
    enough."""
    k, n = cols.shape
    if words.size != low_bit_words(n, shifts):
        return False
    acc = np.uint64(0)
    have = 0
    w = 0
    for j in range(k):
        b = shifts[j]
        if b == 0:
            continue
        mask = (np.uint64(1) << np.uint64(b)) - np.uint64(1)
        for i in range(n):
            if have < b:
                acc |= np.uint64(words[w]) << np.uint64(have)
                w += 1
                have += 32
            cols[j, i] = (cols[j, i] << b) | np.int32(acc & mask)
            acc >>= np.uint64(b)
            have -= b
    return True
