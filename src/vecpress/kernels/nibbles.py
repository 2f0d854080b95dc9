"""Dot products of packed 4-bit codes with AVX2, for CPUs without AVX-512 VNNI.

A row of 4-bit codes holds two a byte, the even dimension in the low nibble. Against
a query split into its even and odd dimensions (``q0``, ``q1``: int8, the layout of
:func:`~vecpress.kernels.grid_search.packed_queries`), each 32 bytes of the row take
five instructions: the low and high nibbles masked out (``and``, ``shift``),
``vpmaddubsw`` of each with its query half (unsigned 8-bit code x signed 8-bit query,
adjacent products summed into 16 bits: at most 2 x 15 x 127 = 3,810, so no
saturation), the two added (at most 7,620) and ``vpmaddwd`` by ones into eight 32-bit
sums. The sums are exact. A loop the compiler vectorises on its own from numba code
widens every byte to 32 bits first and runs about 4 times slower (30 against 8 ns
for a 384-d row here, AMD EPYC, AVX2).

Examples
--------
>>> import numpy as np
>>> codes = np.full((1, 40), 0x21, np.uint8)  # low nibble 1, high nibble 2
>>> q0, q1 = np.full(40, 3, np.int8), np.full(40, -1, np.int8)
>>> int(nibble_dot_at(codes, 0, 0, q0, q1, 40))  # one 32-byte chunk, 8 bytes by the loop
40
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .scan import host_has

#: whether the compiled kernels may use AVX2 (:func:`~vecpress.kernels.scan.host_has`)
HAVE_AVX2 = host_has("avx2")

_I16X16 = ir.VectorType(ir.IntType(16), 16)
_I32X8 = ir.VectorType(ir.IntType(32), 8)
_U8X32 = ir.VectorType(ir.IntType(8), 32)
_I64 = ir.IntType(64)


@intrinsic
def nibble_dot(typingctx, row, q0, q1, chunks):
    """``(row, q0, q1, chunks) -> int32``: ``Σ_i lo(row[i]) q0[i] + hi(row[i]) q1[i]``
    over ``32 chunks`` bytes, each argument a byte address (``row``: the codes; ``q0``,
    ``q1``: int8). Needs AVX2 (:data:`HAVE_AVX2`): compile it only behind that flag."""
    sig = types.int32(types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        prow, pq0, pq1, count = args
        fn = ir.FunctionType(_I16X16, [_U8X32, _U8X32])
        maddubs = cgutils.get_or_insert_function(builder.module, fn, "llvm.x86.avx2.pmadd.ub.sw")
        fn = ir.FunctionType(_I32X8, [_I16X16, _I16X16])
        maddwd = cgutils.get_or_insert_function(builder.module, fn, "llvm.x86.avx2.pmadd.wd")
        low = ir.Constant(_U8X32, [15] * 32)
        four = ir.Constant(_U8X32, [4] * 32)
        ones = ir.Constant(_I16X16, [1] * 16)
        zero = ir.Constant(_I32X8, [0] * 8)
        entry = builder.basic_block
        loop = builder.append_basic_block("nibbles.loop")
        done = builder.append_basic_block("nibbles.done")
        builder.cbranch(builder.icmp_signed(">", count, ir.Constant(_I64, 0)), loop, done)
        builder.position_at_end(loop)
        i = builder.phi(_I64)
        acc = builder.phi(_I32X8)
        i.add_incoming(ir.Constant(_I64, 0), entry)
        acc.add_incoming(zero, entry)
        off = builder.mul(i, ir.Constant(_I64, 32))

        def load(base):
            ptr = builder.inttoptr(builder.add(base, off), _U8X32.as_pointer())
            return builder.load(ptr, align=1)

        x = load(prow)
        lo = builder.and_(x, low)
        hi = builder.and_(builder.lshr(x, four), low)
        pairs = builder.add(
            builder.call(maddubs, [lo, load(pq0)]), builder.call(maddubs, [hi, load(pq1)])
        )
        nacc = builder.add(acc, builder.call(maddwd, [pairs, ones]))
        nxt = builder.add(i, ir.Constant(_I64, 1))
        i.add_incoming(nxt, loop)
        acc.add_incoming(nacc, loop)
        builder.cbranch(builder.icmp_signed("<", nxt, count), loop, done)
        builder.position_at_end(done)
        res = builder.phi(_I32X8)
        res.add_incoming(zero, entry)
        res.add_incoming(nacc, loop)
        total = builder.extract_element(res, ir.Constant(ir.IntType(32), 0))
        for lane in range(1, 8):
            total = builder.add(
                total, builder.extract_element(res, ir.Constant(ir.IntType(32), lane))
            )
        return total

    return sig, codegen


@nb.njit(cache=True, inline="always")
def nibble_dot_at(codes, j, off, q0, q1, n):
    """``Σ_{i < n} lo(b_i) q0[i] + hi(b_i) q1[i]`` over the bytes ``b_i = codes[j, off + i]``
    (exact int32; ``codes`` uint8 2-D with C rows, ``q0``, ``q1`` int8 arrays of at least
    ``n`` values): whole 32-byte chunks by :func:`nibble_dot` where there is AVX2, the
    rest by a loop. The row is addressed, not sliced: a slice per row would cost a
    reference count (an atomic add) per row of a scan."""
    acc = np.int32(0)
    start = 0
    if HAVE_AVX2:
        chunks = n // 32
        row = codes.ctypes.data + j * codes.strides[0] + off
        acc = nibble_dot(row, q0.ctypes.data, q1.ctypes.data, chunks)
        start = 32 * chunks
    for i in range(start, n):
        v = np.int32(codes[j, off + i])
        acc += (v & 15) * np.int32(q0[i]) + (v >> 4) * np.int32(q1[i])
    return acc


__all__ = ["HAVE_AVX2", "nibble_dot", "nibble_dot_at"]
