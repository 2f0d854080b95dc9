"""Whole-row operations on blocks of vectors held transposed, as vector IR.

The randomized Hadamard rotations (:mod:`vecpress.kernels.hadamard`) process
:data:`WIDTH` vectors at a time, transposed into a ``d x WIDTH`` float32 block, so
that every step is a sequence of operations on whole block rows of ``WIDTH``
floats. Written as numba loops, the compiler must prove that the rows a loop
reads and the rows it writes do not overlap before it vectorises them, and it
gives up (or checks at run time, in every loop) once a loop touches more than a
few rows. The intrinsics here load each row as one ``<WIDTH x float>`` vector,
compute, and store: no aliasing question arises, and the arithmetic is exactly
the IR written (each sum and product rounded once, ``llvm.fma`` where a fused
product is meant), whatever the caller's fastmath flags.

Addresses are integers (``array.ctypes.data`` plus byte offsets); the callers
keep them inside their arrays.
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

#: vectors per block: a block row is ``WIDTH`` float32 (two AVX-512 registers)
WIDTH = 32
#: bytes of a block row
ROW_BYTES = 4 * WIDTH

_I64 = ir.IntType(64)
_ROW = ir.VectorType(ir.FloatType(), WIDTH)
_F32X16 = ir.VectorType(ir.FloatType(), 16)


def _at(builder, base, stride, m, vtype=_ROW):
    """The pointer ``base + m * stride`` (bytes) to a vector of ``vtype``."""
    addr = builder.add(base, builder.mul(stride, ir.Constant(_I64, m)))
    return builder.inttoptr(addr, vtype.as_pointer())


def _splat(builder, x):
    """A ``<WIDTH x float>`` vector of the float ``x``."""
    one = builder.insert_element(ir.Constant(_ROW, None), x, ir.Constant(ir.IntType(32), 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH)
    return builder.shuffle_vector(one, ir.Constant(_ROW, None), zeros)


def _fma(builder, a, b, c):
    """``a * b + c`` rounded once, on ``<WIDTH x float>`` vectors (``llvm.fma``)."""
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_ROW, [_ROW] * 3), f"llvm.fma.v{WIDTH}f32"
    )
    return builder.call(fn, [a, b, c])


@intrinsic
def fma32(typingctx, a, b, c):
    """``a * b + c`` of float32 scalars rounded once (``llvm.fma.f32``): the scalar form of
    the fused products of :func:`givens_rows`.

    Examples
    --------
    >>> import numba as nb, numpy as np
    >>> f = nb.njit(lambda a, b, c: fma32(a, b, c))
    >>> e = np.float32(2.0**-13)  # (1 + e)(1 - e) = 1 - 2^-26 rounds to 1 in float32
    >>> float(f(np.float32(1) + e, np.float32(1) - e, np.float32(-1))) == -(2.0**-26)
    True
    """
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(f32, [f32] * 3), "llvm.fma.f32"
        )
        return builder.call(fn, args)

    return sig, codegen


def _butterfly_kernel(radix: int, scaled: bool):
    """An intrinsic ``(p0, step, scale)``: the radix-``radix`` butterflies of the rows at
    ``p0 + m * step`` (levels 1, 2, ... of that group, in the order of the
    level-by-level transform: the same sums), times ``scale`` when ``scaled``."""

    @intrinsic
    def kernel(typingctx, p0, step, scale):
        sig = types.void(types.intp, types.intp, types.float32)

        def codegen(context, builder, signature, args):
            base, stride, sc = args
            ptrs = [_at(builder, base, stride, m) for m in range(radix)]
            v = [builder.load(p, align=4) for p in ptrs]
            h = 1
            while h < radix:
                for i in range(0, radix, 2 * h):
                    for k in range(i, i + h):
                        a, b = v[k], v[k + h]
                        v[k], v[k + h] = builder.fadd(a, b), builder.fsub(a, b)
                h *= 2
            if scaled:
                s = _splat(builder, sc)
                v = [builder.fmul(x, s) for x in v]
            for p, x in zip(ptrs, v, strict=True):
                builder.store(x, p, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return kernel


#: two levels of butterflies on rows ``p0 + m * step``, m < 4
radix4 = _butterfly_kernel(4, False)
#: the same, the outputs times ``scale`` (the last levels of a normalised transform)
radix4_scaled = _butterfly_kernel(4, True)
#: one level of butterflies on the rows ``p0`` and ``p0 + step``, times ``scale``
radix2_scaled = _butterfly_kernel(2, True)


@intrinsic
def givens_rows(typingctx, pa, pb, pu0, pu1, ca, sa, cb, sb):
    """``u0 = fma(ca, a, -(sb b))`` and ``u1 = fma(cb, b, sa a)`` for the rows ``a`` at
    ``pa`` and ``b`` at ``pb``, stored at ``pu0`` and ``pu1``: a Givens rotation of
    the pair with the signs folded into the coefficients."""
    sig = types.void(*([types.intp] * 4), *([types.float32] * 4))

    def codegen(context, builder, signature, args):
        pa, pb, pu0, pu1, ca, sa, cb, sb = (
            builder.inttoptr(v, _ROW.as_pointer()) if i < 4 else _splat(builder, v)
            for i, v in enumerate(args)
        )
        a = builder.load(pa, align=4)
        b = builder.load(pb, align=4)
        u0 = _fma(builder, ca, a, builder.fneg(builder.fmul(sb, b)))
        u1 = _fma(builder, cb, b, builder.fmul(sa, a))
        builder.store(u0, pu0, align=4)
        builder.store(u1, pu1, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def unrotate_rows(typingctx, pa, pb, c, s):
    """The inverse Givens rotation of the rows at ``pa`` and ``pb``, in place:
    ``a' = fma(s, b, c a)``, ``b' = fma(c, b, -(s a))``."""
    sig = types.void(types.intp, types.intp, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        pa = builder.inttoptr(args[0], _ROW.as_pointer())
        pb = builder.inttoptr(args[1], _ROW.as_pointer())
        c, s = _splat(builder, args[2]), _splat(builder, args[3])
        a = builder.load(pa, align=4)
        b = builder.load(pb, align=4)
        a2 = _fma(builder, s, b, builder.fmul(c, a))
        b2 = _fma(builder, c, b, builder.fneg(builder.fmul(s, a)))
        builder.store(a2, pa, align=4)
        builder.store(b2, pb, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def signed_row(typingctx, src, dst, sign):
    """The row at ``src`` times ``sign`` (``±1``: exact), stored at ``dst``."""
    sig = types.void(types.intp, types.intp, types.float32)

    def codegen(context, builder, signature, args):
        v = builder.load(builder.inttoptr(args[0], _ROW.as_pointer()), align=4)
        out = builder.fmul(_splat(builder, args[2]), v)
        builder.store(out, builder.inttoptr(args[1], _ROW.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _bit_swap_masks(k: int) -> tuple[ir.Constant, ir.Constant]:
    """Shuffle masks that exchange bit ``k`` of the row and of the column index of a
    pair of 16-float rows ``(r, r + 2**k)`` (``r`` with bit ``k`` clear)."""
    s = 1 << k
    lo = [g if not g & s else 16 + g - s for g in range(16)]
    hi = [g + s if not g & s else 16 + g for g in range(16)]
    i32x16 = ir.VectorType(ir.IntType(32), 16)
    return ir.Constant(i32x16, lo), ir.Constant(i32x16, hi)


@intrinsic
def transpose16(typingctx, src, src_stride, dst, dst_stride):
    """Transpose a 16 x 16 tile of float32: the 16 floats at ``src + r * src_stride``
    (addresses in bytes) become the column ``r`` of the 16 rows at
    ``dst + c * dst_stride``. Four stages of 16 two-vector shuffles, each exchanging
    one bit of the row and column indices, instead of 256 scalar moves."""
    sig = types.void(types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        src, sstride, dst, dstride = args
        rows = [builder.load(_at(builder, src, sstride, r, _F32X16), align=4) for r in range(16)]
        for k in range(4):
            lo, hi = _bit_swap_masks(k)
            for r in range(16):
                if r & (1 << k):
                    continue
                a, b = rows[r], rows[r + (1 << k)]
                rows[r] = builder.shuffle_vector(a, b, lo)
                rows[r + (1 << k)] = builder.shuffle_vector(a, b, hi)
        for c in range(16):
            builder.store(rows[c], _at(builder, dst, dstride, c, _F32X16), align=4)
        return context.get_dummy_value()

    return sig, codegen
