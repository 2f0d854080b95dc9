"""Batch dot products of byte codes with AVX2, for CPUs without AVX-512 VNNI.

A batch scan unpacks each block of code rows to bytes once for all its queries and
lays them out *by rows* (:func:`~vecpress.kernels.scan.rows_layout`: group ``g`` of 4
dimensions holds the 4 code bytes of every row in turn), so that a vector register
holds 4 dimensions of 8 rows and each 32-bit lane accumulates one row's product: no
horizontal sums. With AVX-512 VNNI one ``vpdpbusd`` does that step for 16 rows; here
:func:`tile4x16` does it for 8 rows with ``vpmaddubsw`` (unsigned 8-bit code x signed
8-bit query, adjacent products summed into 16 bits), adds the 16-bit sums of up to
``flush`` groups, and only then widens them to 32 bits with ``vpmaddwd`` by ones.

The sums are exact while no 16-bit sum can overflow: a ``vpmaddubsw`` lane is at most
``2 x (2^b - 1) x 127`` for codes of ``b`` bits and queries in ``[-127, 127]``, so
:func:`flush_groups` allows ``floor(32767 / (254 (2^b - 1)))`` groups a flush (8 for
4-bit codes, 1 for 7-bit) and none for 8-bit codes, which ``vpmaddubsw`` could
saturate (``2 x 255 x 127 = 64,770``). :func:`tile_layout` therefore lays 8-bit codes
out one every other byte, a zero beside each (one product a lane: at most 32,385),
and widens after every group that holds one; the other groups of the row widen as
their own widest code allows (the layout's *segments*).

Examples
--------
>>> [flush_groups(b) for b in (1, 2, 4, 7, 8)]
[129, 43, 8, 1, 0]
>>> tl, slots, width, segs = tile_layout(np.array([[0, 3, 8, 0], [3, 5, 4, 3]]), 8)
>>> tl.tolist(), slots.tolist(), width, segs.tolist()
([[0, 3, 8, 0], [6, 5, 4, 3]], [0, 2, 4, 6, 7, 8, 9, 10], 11, [[0, 2, 1], [2, 3, 8]])
"""

from __future__ import annotations

from functools import lru_cache

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .bitpack import unpack_row

_I16X16 = ir.VectorType(ir.IntType(16), 16)
_I32X8 = ir.VectorType(ir.IntType(32), 8)
_U8X32 = ir.VectorType(ir.IntType(8), 32)
_I64 = ir.IntType(64)
_I32 = ir.IntType(32)

#: query rows of a tile
TILE_QUERIES = 4
#: code rows of a tile (two 8-lane registers)
TILE_ROWS = 16


def flush_groups(bits: int) -> int:
    """Groups of 4 dimensions whose 16-bit ``vpmaddubsw`` sums :func:`tile4x16` may add
    before widening them, for codes of at most ``bits`` bits and int8 queries in
    ``[-127, 127]``; 0 where a single ``vpmaddubsw`` could saturate (8-bit codes)."""
    return 32767 // (254 * ((1 << bits) - 1))


def tile_layout(layout: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Where the tiles read each code of a row unpacked by :func:`unpack_tiled`.

    ``layout``: the codes' runs, int64[G, 4] rows ``(first, count, bits, offset)``
    (:func:`~vecpress.kernels.scan.check_layout`). Returns ``(tlayout, slots, width,
    segments)``: the runs with ``first`` replaced by their first byte in the unpacked row,
    runs laid end to end from the widest (in layout order among equal widths), each
    8-bit run starting at an even byte and
    taking two bytes a code (the code, then a zero); ``slots`` int64[d] the byte of each
    dimension (-1 for a dimension no run codes: it scores 0 and is dropped); ``width``
    the row's bytes; ``segments`` int64[S, 3] rows ``(g0, g1, flush)``: the groups of 4
    bytes ``g0 .. g1 - 1`` that :func:`tile4x16` reads with that ``flush`` (1 where a
    group holds an 8-bit code, else :func:`flush_groups` of its widest code), one
    segment per run of groups allowing the same.

    Cached per layout (the arrays are shared: do not write to them), as a search
    asks for it on every call."""
    lay = np.ascontiguousarray(layout, np.int64).reshape(-1, 4)
    return _tile_layout_of(lay.tobytes(), int(d))


@lru_cache(maxsize=64)
def _tile_layout_of(key: bytes, d: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    tlayout = np.frombuffer(key, np.int64).reshape(-1, 4).copy()
    slots = np.full(d, -1, np.int64)
    pos = 0
    # the widest runs first: groups of 4 bytes then hold codes of one width where they
    # can, and the narrow codes' groups widen their sums rarely (a layout's runs may
    # alternate widths: kl's codes placed within 64-bit words)
    for g in np.argsort(-tlayout[:, 2], kind="stable").tolist():
        first, count, bits = (int(v) for v in tlayout[g, :3])
        step = 2 if bits == 8 else 1
        pos += pos % step  # an 8-bit run starts at an even byte
        tlayout[g, 0] = pos
        slots[first : first + count] = pos + step * np.arange(count)
        pos += step * count
    bits_at = np.ones(-(-pos // 4) * 4, np.int64)  # bits of the code at each byte (1: none)
    for start, count, bits, _ in tlayout.tolist():
        bits_at[start : start + (2 if bits == 8 else 1) * count] = bits
    allowed = [1 if b == 8 else flush_groups(b) for b in bits_at.reshape(-1, 4).max(axis=1)]
    segments = []
    for g, f in enumerate(allowed):
        if segments and segments[-1][2] == f:
            segments[-1][1] = g + 1
        else:
            segments.append([g, g + 1, f])
    return tlayout, slots, pos, np.array(segments, np.int64).reshape(-1, 3)


@nb.njit(cache=True, inline="always")
def unpack_tiled(src, tlayout, dst):
    """Unpack the code row ``src`` into ``dst`` as :func:`tile_layout` lays it out (the
    zero bytes beside 8-bit codes are not written: ``dst`` starts zeroed)."""
    for g in range(tlayout.shape[0]):
        pos, count, bits, off = tlayout[g, 0], tlayout[g, 1], tlayout[g, 2], tlayout[g, 3]
        if bits == 8:
            for i in range(count):
                dst[pos + 2 * i] = src[off + i]
        else:
            unpack_row(src, off, bits, count, dst[pos:])


def slot_queries(qi: np.ndarray, slots: np.ndarray, width: int) -> np.ndarray:
    """Query rows (int16/int8 ``[nv, d]`` of int8 values) at the bytes ``slots`` of
    :func:`tile_layout`: int8[nv, width rounded up to 64], zero elsewhere."""
    out = np.zeros((qi.shape[0], max(64, -(-width // 64) * 64)), np.int8)
    coded = slots >= 0
    out[:, slots[coded]] = qi[:, coded]
    return out


@nb.njit(cache=True)
def tile_queries(q8, rows, ngroups):
    """Query rows ``q8[rows]`` (int8, at least ``4 ngroups`` columns) laid out for
    :func:`tile4x16`: ``out[t, g, 4 u + i] = q8[rows[4 t + u], 4 g + i]``, int8[ceil(len(rows)
    / 4), ngroups, 16] (the 4 bytes of group ``g`` of a tile's 4 query rows side by side;
    zero for the rows past ``len(rows)``)."""
    nt = (rows.shape[0] + TILE_QUERIES - 1) // TILE_QUERIES
    out = np.zeros((nt, ngroups, 16), np.int8)
    for v in range(rows.shape[0]):
        t, u = divmod(v, TILE_QUERIES)
        src = q8[rows[v]]
        for g in range(ngroups):
            for i in range(4):
                out[t, g, 4 * u + i] = src[4 * g + i]
    return out


@intrinsic
def tile4x16(typingctx, pa, sa, pq, ngroups, flush, fresh, pout, sout):
    """``(pa, sa, pq, ngroups, flush, fresh, pout, sout)``: the ``4 x 16`` exact dot
    products of 4 query rows with 16 code rows laid out by rows (group ``g`` of 4
    dimensions at ``pa + g * sa``: the 4 code bytes of each of the 16 rows in turn, 64
    bytes) over ``ngroups`` groups. The queries lie as :func:`tile_queries` lays one
    tile out (the 16 bytes of group ``g`` at ``pq + 16 g``); the 16 int32 products of
    query ``u`` are stored at ``pout + u * sout`` (``fresh`` nonzero), or added to what
    is there (``fresh`` zero: the next segment of :func:`tile_layout`). ``flush``:
    groups added in 16 bits between widenings (>= 1, :func:`flush_groups`). Needs AVX2
    (:data:`~vecpress.kernels.nibbles.HAVE_AVX2`).

    Only the 8 16-bit sums stay in registers (with the 2 code and the query vectors:
    12 of AVX2's 16); each flush adds them into the products at ``pout``."""
    sig = types.void(*([types.intp] * 8))

    def codegen(context, builder, signature, args):
        pa, sa, pq, n, flush, fresh, pout, sout = args
        fn = ir.FunctionType(_I16X16, [_U8X32, _U8X32])
        maddubs = cgutils.get_or_insert_function(builder.module, fn, "llvm.x86.avx2.pmadd.ub.sw")
        fn = ir.FunctionType(_I32X8, [_I16X16, _I16X16])
        maddwd = cgutils.get_or_insert_function(builder.module, fn, "llvm.x86.avx2.pmadd.wd")
        ones = ir.Constant(_I16X16, [1] * 16)
        outs = []
        for u in range(TILE_QUERIES):
            for h in range(2):
                dst = builder.add(
                    builder.add(pout, builder.mul(sout, ir.Constant(_I64, u))),
                    ir.Constant(_I64, 32 * h),
                )
                outs.append(builder.inttoptr(dst, _I32X8.as_pointer()))
        with builder.if_then(builder.icmp_signed("!=", fresh, ir.Constant(_I64, 0))):
            for ptr in outs:
                builder.store(ir.Constant(_I32X8, None), ptr, align=4)
        narrow = [cgutils.alloca_once(builder, _I16X16) for _ in outs]
        nblocks = builder.sdiv(builder.add(n, builder.sub(flush, ir.Constant(_I64, 1))), flush)
        with cgutils.for_range(builder, nblocks) as outer:
            g0 = builder.mul(outer.index, flush)
            count = builder.sub(n, g0)
            less = builder.icmp_signed("<", flush, count)
            count = builder.select(less, flush, count)
            for acc in narrow:
                builder.store(ir.Constant(_I16X16, None), acc)
            with cgutils.for_range(builder, count) as inner:
                g = builder.add(g0, inner.index)
                base = builder.add(pa, builder.mul(g, sa))
                codes = [
                    builder.load(
                        builder.inttoptr(
                            builder.add(base, ir.Constant(_I64, 32 * h)), _U8X32.as_pointer()
                        ),
                        align=1,
                    )
                    for h in range(2)
                ]
                qg = builder.add(pq, builder.mul(g, ir.Constant(_I64, 16)))
                for u in range(TILE_QUERIES):
                    qa = builder.add(qg, ir.Constant(_I64, 4 * u))
                    qd = builder.load(builder.inttoptr(qa, _I32.as_pointer()), align=1)
                    qv = builder.insert_element(
                        ir.Constant(_I32X8, ir.Undefined), qd, ir.Constant(_I32, 0)
                    )
                    qv = builder.shuffle_vector(qv, qv, ir.Constant(_I32X8, [0] * 8))
                    qv = builder.bitcast(qv, _U8X32)
                    for h in range(2):
                        acc = narrow[2 * u + h]
                        prod = builder.call(maddubs, [codes[h], qv])
                        builder.store(builder.add(builder.load(acc), prod), acc)
            for acc16, ptr in zip(narrow, outs, strict=True):
                widened = builder.call(maddwd, [builder.load(acc16), ones])
                builder.store(builder.add(builder.load(ptr, align=4), widened), ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


__all__ = [
    "TILE_QUERIES",
    "TILE_ROWS",
    "flush_groups",
    "slot_queries",
    "tile4x16",
    "tile_layout",
    "tile_queries",
    "unpack_tiled",
]
