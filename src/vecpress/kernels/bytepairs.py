"""Codes of any width read in place with AVX2: byte pairs picked out of 16-byte windows.

Codes of 3, 5, 6, 7 or 8 bits, and rows of several widths (``kl``'s groups,
:func:`~vecpress.kernels.scan.check_layout`), straddle byte boundaries. Without
AVX-512 VBMI (:mod:`~vecpress.kernels.wordlanes`) a scan for one query unpacked every
row to bytes and then took its dot product, the unpacking costing several times the
product. Here every code becomes one 16-bit lane in four AVX2 instructions:

1. two 16-byte *windows* of the row are loaded into the halves of a register (each
   half its own start byte);
2. ``vpshufb`` puts into each 16-bit lane the two bytes that hold its code (bytes
   ``b``, ``b + 1`` of the code's first bit; a code that starts at bit 0 of its byte
   takes a zero, then byte ``b``), so the code lies at bits ``s .. s + bits`` of the
   lane with ``1 <= s <= 8``;
3. ``vpmulhuw`` by ``2^(16 - s)`` shifts each lane right by its own ``s`` (AVX2 has
   no per-lane 16-bit shift), and an ``and`` with ``2^bits - 1`` drops the bits above;
4. ``vpmaddwd`` multiplies the 16 codes by the query's 16-bit values and adds
   adjacent products into 32-bit sums, exact (a product is at most ``255 x 128``).

:func:`pair_parts` assigns the codes, in the order of their first bits, to windows of
at most 8 codes whose bytes lie within 16 of the window's first, and consecutive
windows to *parts* of two: ``kl4``'s 367 codes at d = 384 take 23 parts (46 windows).
A tile reads a part's tables once for several rows and several query rows
(:func:`pair_tile`). Lanes without a code take zero bytes, mask 0 and query 0.

Examples
--------
384 codes of 3 bits: 48 windows of 8 codes (3 bytes each), 24 parts.

>>> from vecpress.kernels.scan import uniform_layout
>>> parts = pair_parts(uniform_layout(3, 384))
>>> parts.offsets.shape, parts.offsets[:2].tolist(), parts.reach
((24, 2), [[0, 3], [6, 9]], 157)
"""

from __future__ import annotations

from collections import namedtuple
from functools import lru_cache

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .wordlanes import code_positions, lane_queries, layout_key

#: bytes of a window, and 16-bit lanes (codes) of a window (a part: two windows, one
#: AVX2 register of 16 lanes)
WINDOW_BYTES = 16
WINDOW_CODES = 8
#: the ``vpshufb`` index that yields a zero byte
_ZERO = 0x80

_I8X16 = ir.VectorType(ir.IntType(8), 16)
_I8X32 = ir.VectorType(ir.IntType(8), 32)
_I16X16 = ir.VectorType(ir.IntType(16), 16)
_I32X16 = ir.VectorType(ir.IntType(32), 16)
_I32X8 = ir.VectorType(ir.IntType(32), 8)
_I64 = ir.IntType(64)
_I32 = ir.IntType(32)

PairParts = namedtuple("PairParts", "offsets shuffle mult mask dims reach")
PairParts.__doc__ = """The parts of a code layout (:func:`pair_parts`).

offsets : int64[P, 2]
    Byte offset in the row of each of part ``p``'s two windows.
shuffle : uint8[P, 32]
    The ``vpshufb`` indices: bytes ``2 l`` and ``2 l + 1`` of half ``h`` (lane ``l``)
    are bytes ``shuffle[p, 16 h + 2 l]``, ``shuffle[p, 16 h + 2 l + 1]`` of window ``h``
    (``0x80``: a zero byte).
mult, mask : uint16[P, 16]
    Per lane: ``2^(16 - s)`` (the code at bits ``s .. s + bits`` of the lane's 16 bits)
    and ``2^bits - 1`` (0 in lanes without a code).
dims : int64[P, 16]
    Per lane: the dimension of the code (-1 in lanes without one).
reach : int
    Bytes of a row the parts read, counted from its start (``max(offsets) + 16``).
"""


@lru_cache(maxsize=64)
def _parts_of(key: bytes) -> PairParts:
    dims, pos, width = code_positions(np.frombuffer(key, np.int64))
    order = np.argsort(pos, kind="stable")
    dims, pos, width = (dims[order].tolist(), pos[order].tolist(), width[order].tolist())

    def last_byte(c):  # the last byte a code's lane takes
        return pos[c] // 8 + (1 if pos[c] % 8 else 0)

    windows = []  # (start byte, first code, end code)
    i, n = 0, len(pos)
    while i < n:
        start = pos[i] // 8
        j = i + 1
        while j < n and j - i < WINDOW_CODES and last_byte(j) < start + WINDOW_BYTES:
            j += 1
        windows.append((start, i, j))
        i = j
    nparts = (len(windows) + 1) // 2
    offsets = np.zeros((nparts, 2), np.int64)
    shuffle = np.full((nparts, 32), _ZERO, np.uint8)
    mult = np.full((nparts, 16), 1 << 8, np.uint16)
    mask = np.zeros((nparts, 16), np.uint16)
    lanes = np.full((nparts, 16), -1, np.int64)
    for w, (start, i0, i1) in enumerate(windows):
        p, h = divmod(w, 2)
        offsets[p, h] = start
        for t, c in enumerate(range(i0, i1)):
            lane = 8 * h + t
            b, s = divmod(pos[c] - 8 * start, 8)
            if s:  # bytes b, b + 1: the code at bits s .. s + bits
                shuffle[p, 2 * lane : 2 * lane + 2] = (b, b + 1)
                mult[p, lane] = 1 << (16 - s)
            else:  # a zero, then byte b: the code at bits 8 .. 8 + bits
                shuffle[p, 2 * lane + 1] = b
            mask[p, lane] = (1 << width[c]) - 1
            lanes[p, lane] = dims[c]
    if len(windows) % 2:  # the last part's second window: no code, reads the first's bytes
        offsets[-1, 1] = offsets[-1, 0]
    reach = int(offsets.max()) + WINDOW_BYTES if nparts else 0
    return PairParts(offsets, shuffle, mult, mask, lanes, reach)


def pair_parts(layout: np.ndarray) -> PairParts:
    """The parts that read every code of ``layout`` in place (module docstring).

    Cached per layout (the arrays are shared: do not write to them).

    Examples
    --------
    Three 5-bit codes from bit 0 and a 2-bit one at byte 2: one window, one part.

    >>> parts = pair_parts(np.array([[0, 3, 5, 0], [3, 1, 2, 2]]))
    >>> parts.shuffle[0, :8].tolist(), parts.mult[0, :4].tolist(), parts.mask[0, :4].tolist()
    ([128, 0, 0, 1, 1, 2, 128, 2], [256, 2048, 16384, 256], [31, 31, 31, 3])
    """
    return _parts_of(layout_key(layout))


def pair_queries(qi: np.ndarray, parts: PairParts) -> np.ndarray:
    """Query rows ``qi`` (int8/int16 ``[nv, d]``, values in [-128, 127]) laid out for
    ``parts``: int16 ``[nv rounded up to 4, P * 16]``, lane ``l`` of part ``p`` holding
    ``qi[:, dims[p, l]]`` (0 where the lane has no code, and in the padding rows).

    Examples
    --------
    >>> parts = pair_parts(np.array([[0, 3, 5, 0]]))
    >>> pair_queries(np.array([[7, -8, 9]], np.int16), parts)[0, :4].tolist()
    [7, -8, 9, 0]
    """
    if qi.size and not -128 <= int(qi.min()) <= int(qi.max()) <= 127:
        raise ValueError(
            f"pair queries take int8 values (a limb), found {int(qi.min())}..{int(qi.max())}"
        )
    return lane_queries(qi, parts.dims, np.int16)


def _tile_kernel(nrows: int, nqueries: int):
    """The IR of :func:`pair_tile` for ``nrows`` code rows x ``nqueries`` query rows."""

    def codegen(context, builder, signature, args):
        pa, sa, poff, pshuf, pmul, pmask, pq, sq, nparts, pout, sout = args
        fn = ir.FunctionType(_I8X32, [_I8X32, _I8X32])
        pshufb = cgutils.get_or_insert_function(builder.module, fn, "llvm.x86.avx2.pshuf.b")
        fn = ir.FunctionType(_I32X8, [_I16X16, _I16X16])
        maddwd = cgutils.get_or_insert_function(builder.module, fn, "llvm.x86.avx2.pmadd.wd")
        accs = [cgutils.alloca_once(builder, _I32X8) for _ in range(nrows * nqueries)]
        for acc in accs:
            builder.store(ir.Constant(_I32X8, None), acc)
        joined = ir.Constant(ir.VectorType(_I32, 32), list(range(32)))
        sixteen = ir.Constant(_I32X16, [16] * 16)

        def load(addr, vtype, align=1):
            return builder.load(builder.inttoptr(addr, vtype.as_pointer()), align=align)

        with cgutils.for_range(builder, nparts) as loop:
            p = loop.index
            o16 = builder.mul(p, ir.Constant(_I64, 16))
            o32 = builder.mul(p, ir.Constant(_I64, 32))
            off0 = load(builder.add(poff, o16), _I64, 8)
            off1 = load(builder.add(poff, builder.add(o16, ir.Constant(_I64, 8))), _I64, 8)
            shuf = load(builder.add(pshuf, o32), _I8X32)
            mult = builder.zext(load(builder.add(pmul, o32), _I16X16), _I32X16)
            mask = load(builder.add(pmask, o32), _I16X16)
            qs = [
                load(
                    builder.add(builder.add(pq, builder.mul(sq, ir.Constant(_I64, u))), o32),
                    _I16X16,
                )
                for u in range(nqueries)
            ]
            for r in range(nrows):
                row = builder.add(pa, builder.mul(sa, ir.Constant(_I64, r)))
                lo = load(builder.add(row, off0), _I8X16)
                hi = load(builder.add(row, off1), _I8X16)
                v = builder.call(pshufb, [builder.shuffle_vector(lo, hi, joined), shuf])
                wide = builder.mul(builder.zext(builder.bitcast(v, _I16X16), _I32X16), mult)
                codes = builder.and_(builder.trunc(builder.lshr(wide, sixteen), _I16X16), mask)
                for u in range(nqueries):
                    acc = accs[r * nqueries + u]
                    prod = builder.call(maddwd, [codes, qs[u]])
                    builder.store(builder.add(builder.load(acc), prod), acc)
        for r in range(nrows):
            for u in range(nqueries):
                acc = builder.load(accs[r * nqueries + u])
                total = builder.extract_element(acc, ir.Constant(_I32, 0))
                for lane in range(1, 8):
                    total = builder.add(
                        total, builder.extract_element(acc, ir.Constant(_I32, lane))
                    )
                dst = builder.add(
                    builder.add(pout, builder.mul(sout, ir.Constant(_I64, u))),
                    ir.Constant(_I64, 4 * r),
                )
                builder.store(total, builder.inttoptr(dst, _I32.as_pointer()), align=4)
        return context.get_dummy_value()

    return codegen


def _make_tile(nrows: int, nqueries: int):
    @intrinsic
    def tile(typingctx, pa, sa, poff, pshuf, pmul, pmask, pq, sq, nparts, pout, sout):
        return types.void(*([types.intp] * 11)), _tile_kernel(nrows, nqueries)

    return tile


#: the tiles: code rows x query rows (8 accumulators at most, of AVX2's 16 registers)
_TILE_4X1 = _make_tile(4, 1)
_TILE_2X2 = _make_tile(2, 2)
_TILE_1X4 = _make_tile(1, 4)


@nb.njit(cache=True, inline="always")
def pair_tile(nq, pa, sa, pp, pq, sq, nparts, pout, sout):
    """Exact dot products of ``4 // nq`` code rows (at ``pa``, stride ``sa`` bytes; each
    readable :attr:`PairParts.reach` bytes from its start) with ``nq`` query rows (1, 2
    or 4: int16 in the layout of :func:`pair_queries`, at ``pq``, stride ``sq``), read by
    ``nparts`` parts (``pp``: the addresses of the part tables ``offsets``, ``shuffle``,
    ``mult``, ``mask``); the product of code row ``r`` and query row ``u`` as int32 at
    ``pout + u * sout + 4 r``. Needs AVX2 (:data:`~vecpress.kernels.nibbles.HAVE_AVX2`)."""
    poff, pshuf, pmul, pmask = pp
    if nq == 1:
        _TILE_4X1(pa, sa, poff, pshuf, pmul, pmask, pq, sq, nparts, pout, sout)
    elif nq == 2:
        _TILE_2X2(pa, sa, poff, pshuf, pmul, pmask, pq, sq, nparts, pout, sout)
    else:
        _TILE_1X4(pa, sa, poff, pshuf, pmul, pmask, pq, sq, nparts, pout, sout)


@nb.njit(cache=True)
def pair_dots(codes, offsets, shuffle, mult, mask, qp, out):
    """``out[j] = <codes of row j, query>`` for every row, one query row ``qp`` (int16,
    :func:`pair_queries`): a reference of the tiles for tests (rows are copied into a
    zero-padded buffer, so that a part may read past a row's end)."""
    n, cs = codes.shape
    reach = offsets.max() + WINDOW_BYTES if offsets.shape[0] else 0
    width = max(cs, reach)
    buf = np.zeros((4, width), np.uint8)
    tmp = np.empty(4, np.int32)
    pp = (offsets.ctypes.data, shuffle.ctypes.data, mult.ctypes.data, mask.ctypes.data)
    for s in range(0, n, 4):
        m = min(4, n - s)
        buf[:] = 0
        for r in range(m):
            buf[r, :cs] = codes[s + r]
        pair_tile(1, buf.ctypes.data, width, pp, qp.ctypes.data, 0, offsets.shape[0],
                  tmp.ctypes.data, 16)  # fmt: skip
        for r in range(m):
            out[s + r] = tmp[r]


__all__ = [
    "PairParts",
    "pair_dots",
    "pair_parts",
    "pair_queries",
    "pair_tile",
]
