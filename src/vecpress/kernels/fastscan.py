"""Fast-scan of 4-bit product-quantizer codes: 8-bit tables looked up by byte shuffles.

The scalar ``pq<M>x4`` scan reads one float table entry per code. Fast-scan
(André et al., "Accelerated nearest neighbor search with quick ADC", 2017; faiss
``IndexPQFastScan``) instead

1. quantizes each query's tables to 8 bits (:func:`quantize_luts`), with one
   scale per query and one offset per sub-quantizer, so that
   ``Σ_m T[m, c_m] ≈ scale * Σ_m lut8[m, c_m] + bias``;
2. re-lays the codes out in blocks of :data:`BLOCK` = 32 vectors
   (:func:`fastscan_layout`), so that 16 bytes hold the 4-bit codes of the 32
   vectors for one sub-quantizer, and one SIMD register the codes of the 32
   vectors for 2 (256-bit) or 4 (512-bit) sub-quantizers;
3. looks the 16-entry tables up with byte shuffles, 32 or 64 codes per
   instruction, accumulating exact integer sums.

Blocked layout: block ``b`` is one row of ``32 * ceil(M/2)`` bytes; for
sub-quantizer pair ``p`` its 32 bytes at ``32 p`` are the codes of
sub-quantizer ``2p`` (bytes 0-15) then ``2p + 1`` (bytes 16-31), byte ``i`` of
each holding vector ``32 b + i`` in its low nibble and vector ``32 b + 16 + i``
in its high nibble. Vectors past ``n`` and the sub-quantizer completing an odd
``M`` have code 0 (their table is zero).

Kernels (all give the same integer sums, exactly; :data:`ISA` is the host's):

* ``"avx512vbmi"`` (AVX-512 VBMI + VNNI): each 64-byte group of 4
  sub-quantizers is transposed once (a constant byte permutation, shared by the
  queries of a pass) so that 4 adjacent bytes hold one vector's 4 codes; a
  ``vpermb`` looks them up in the query's 4 tables at once (a 64-entry table)
  and a ``vpdpbusd`` against ones adds the 4 looked-up bytes into that vector's
  int32 sum: 2 shuffles and 2 dot-product instructions per query for 128 codes;
* ``"avx512bw"`` / ``"avx2"``: faiss's scheme, ``vpshufb`` on 512- or 256-bit
  registers (each 128-bit lane holds one sub-quantizer's table), uint16
  accumulators of even and odd bytes, flushed to int32 every 256 steps (so any
  ``M`` is exact);
* ``"portable"``: plain numba loops.

A pass scores up to 8 queries against one block (the block's codes are read and
prepared once for all of them); passes run in parallel over tiles of blocks
(``numba.prange``), and within a tile the queries go by in passes, so a pass's
tables stay in L1 while the tile's codes stay in L2. :func:`fastscan_topk` fuses
the top-k selection: the kernel also compares the 32 sums of each query with the
query's current k-th best (one vector compare into a bit mask), and only the
rows of set bits are offered to the heap.

Speed (``benchmarks/fastscan_speed.py``; one AMD Zen 5 core, d = 384,
n = 100,000, 1,000 queries, top 10, tables and their quantization included):
about 0.49 ns per (query, vector) pair at M = 96 and 0.85 ns at M = 192 with the
``avx512vbmi`` kernel, 1.5-1.7 times the queries/s of faiss 1.15's
``IndexPQFastScan`` (0.76 and 1.44 ns); ``avx512bw`` 1.1-1.3 times, ``avx2`` 0.7
times. The ``vpermb`` look-ups (64 codes each) bound the ``avx512vbmi`` loop.
"""

from __future__ import annotations

import os

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .grid_search import merge_slots
from .heap import heap_pad, heap_push

#: vectors per block of the fast-scan layout
BLOCK = 32
#: bytes of a block per sub-quantizer pair
PAIR_BYTES = 32
#: kernel names, by the integer id the compiled drivers take
ISAS = ("portable", "avx2", "avx512bw", "avx512vbmi")
#: most queries per pass of each kernel (the accumulators must fit in registers)
_MAX_PASS = {0: 4, 1: 4, 2: 4, 3: 8}
#: bytes of codes per tile (a tile's codes are re-read, from L2, by every pass)
_TILE_BYTES = 1 << 17
#: uint16 accumulation steps between flushes to int32 in the vpshufb kernels
#: (one step adds at most 255 to a lane; the even/odd-byte split is exact below 2^16)
_CHUNK = 256


# -- layout ---------------------------------------------------------------------------------


def _check_m(m: int) -> int:
    m = int(m)
    if m < 1:
        raise ValueError(f"the number of sub-quantizers must be at least 1, found M={m}")
    return m


def fastscan_layout(codes: np.ndarray, m: int) -> np.ndarray:
    """Re-lay ``pq<M>x4`` code rows out in blocks of :data:`BLOCK` vectors.

    Parameters
    ----------
    codes : uint8[n, ceil(M/2)]
        Packed 4-bit codes, sub-quantizer ``2p`` in the low nibble of byte ``p``
        and ``2p + 1`` in the high one (the high nibble of the last byte of an
        odd ``M`` is ignored).
    m : int
        Number of sub-quantizers ``M``.

    Returns
    -------
    uint8[ceil(n / 32), 32 * ceil(M/2)]
        One row per block of 32 vectors (see the module docstring); ``n`` is
        padded with zero codes up to a multiple of 32.

    Examples
    --------
    >>> fastscan_layout(np.array([[0x21], [0x43]], np.uint8), 2)[0, [0, 1, 16, 17]].tolist()
    [1, 3, 2, 4]
    """
    m = _check_m(m)
    codes = np.asarray(codes)
    npairs = (m + 1) // 2
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != npairs:
        raise ValueError(
            f"pq{m}x4 codes must be uint8[n, {npairs}], found {codes.dtype}{list(codes.shape)}"
        )
    n = codes.shape[0]
    nblocks = (n + BLOCK - 1) // BLOCK
    c = np.zeros((nblocks * BLOCK, npairs), np.uint8)
    c[:n] = codes
    if m & 1:
        c[:, -1] &= 15
    c = c.reshape(nblocks, 2, 16, npairs)  # block, vectors 0-15 / 16-31, i, pair
    even = (c[:, 0] & 15) | ((c[:, 1] & 15) << 4)  # sub-quantizer 2p
    odd = (c[:, 0] >> 4) | (c[:, 1] & 0xF0)  # sub-quantizer 2p + 1
    out = np.stack([even, odd], axis=1)  # block, 2p / 2p+1, i, pair
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2).reshape(nblocks, npairs * PAIR_BYTES))


def fastscan_unlayout(blocked: np.ndarray, n: int, m: int) -> np.ndarray:
    """Inverse of :func:`fastscan_layout`: the first ``n`` code rows, ``uint8[n, ceil(M/2)]``."""
    m = _check_m(m)
    npairs = (m + 1) // 2
    nblocks = (n + BLOCK - 1) // BLOCK
    blocked = np.asarray(blocked)
    if blocked.dtype != np.uint8 or blocked.shape != (nblocks, npairs * PAIR_BYTES):
        raise ValueError(
            f"blocked pq{m}x4 codes of n={n} must be uint8[{nblocks}, {npairs * PAIR_BYTES}], "
            f"found {blocked.dtype}{list(blocked.shape)}"
        )
    b = blocked.reshape(nblocks, npairs, 2, 16)
    even, odd = b[:, :, 0], b[:, :, 1]  # block, pair, i
    first = (even & 15) | ((odd & 15) << 4)  # vectors 0-15
    second = (even >> 4) | (odd & 0xF0)  # vectors 16-31
    rows = np.stack([first, second], axis=1).transpose(0, 1, 3, 2)  # block, half, i, pair
    return np.ascontiguousarray(rows.reshape(nblocks * BLOCK, npairs)[:n])


# -- tables ---------------------------------------------------------------------------------


def quantize_luts(lut: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize float look-up tables to 8 bits, one scale per query.

    Table ``m`` of query ``q`` is shifted by its minimum ``min_qm`` and divided by
    ``scale[q] = max_m (max - min of table m) / 255``, then rounded; so every
    entry is in [0, 255] and

    ``Σ_m lut[q, m, c_m] ≈ scale[q] * Σ_m lut8[q, m, c_m] + bias[q]``, with
    ``bias[q] = Σ_m min_qm``,

    each entry off by at most ``scale[q] / 2``: the estimate is within
    ``M * scale[q] / 2`` of the float-table score (plus float32 rounding of the
    operands, relative ~1e-7 of their magnitude). faiss quantizes the same way
    (``quantize_lut::round_uint8_per_column``).

    Parameters
    ----------
    lut : float32[nq, M, 16]

    Returns
    -------
    (lut8 uint8[nq, M, 16], scale float32[nq], bias float32[nq])
        ``scale`` is 1 for a query whose tables are all constant.

    Examples
    --------
    >>> lut8, scale, bias = quantize_luts(np.array([[[0.0] * 15 + [2.55]]], np.float32))
    >>> int(lut8[0, 0, 15]), round(float(scale[0]), 6), float(bias[0])
    (255, 0.01, 0.0)
    """
    lut = np.asarray(lut, np.float32)
    if lut.ndim != 3 or lut.shape[2] != 16:
        raise ValueError(f"look-up tables must be float32[nq, M, 16], found {list(lut.shape)}")
    nq, m, _ = lut.shape
    lut8 = np.zeros(lut.shape, np.uint8)
    scale = np.ones(nq, np.float32)
    bias = np.zeros(nq, np.float32)
    bad = np.zeros(nq, np.bool_)
    if nq and m:
        _quantize_luts(np.ascontiguousarray(lut), lut8, scale, bias, bad)
    if bad.any():
        raise ValueError(
            f"look-up tables of {int(bad.sum())} queries (the first: {int(np.argmax(bad))}) "
            "hold non-finite values"
        )
    return lut8, scale, bias


@nb.njit(cache=True, parallel=True)
def _quantize_luts(lut, lut8, scale, bias, bad):
    nq, m, nc = lut.shape
    for q in nb.prange(nq):
        mins = np.empty(m, np.float32)
        span = np.float32(0.0)
        total = 0.0
        for j in range(m):
            lo = lut[q, j, 0]
            hi = lo
            acc = np.float32(0.0)  # NaN or inf if any entry is
            for c in range(nc):
                v = lut[q, j, c]
                lo = min(lo, v)
                hi = max(hi, v)
                acc += v * np.float32(0.0)
            mins[j] = lo
            span = max(span, np.float32(hi - lo))
            total += np.float64(lo)
            bad[q] |= not np.isfinite(acc)
        if bad[q]:
            continue
        s = span / np.float32(255.0)
        if not s > 0:  # constant tables (or a span so small that it underflows)
            s = np.float32(1.0)
        for j in range(m):
            for c in range(nc):
                x = np.rint((lut[q, j, c] - mins[j]) / s)
                lut8[q, j, c] = np.uint8(min(max(x, np.float32(0.0)), np.float32(255.0)))
        scale[q] = s
        bias[q] = np.float32(total)


def _padded_luts(lut8: np.ndarray, m: int) -> np.ndarray:
    """``uint8[nq, 16 * M4]``: the tables, zero tables appended up to ``M4 = 4 ceil(M/4)``."""
    lut8 = np.asarray(lut8)
    if lut8.dtype != np.uint8 or lut8.ndim != 3 or lut8.shape[1:] != (m, 16):
        raise ValueError(
            f"8-bit tables of pq{m}x4 must be uint8[nq, {m}, 16], "
            f"found {lut8.dtype}{list(lut8.shape)}"
        )
    m4 = (m + 3) // 4 * 4
    out = np.zeros((lut8.shape[0], m4 * 16), np.uint8)
    out[:, : m * 16] = lut8.reshape(lut8.shape[0], m * 16)
    return out


# -- host features ----------------------------------------------------------------------------


def _host_isa() -> str:
    """The best kernel the compiled code may use on this machine (:data:`ISAS`)."""
    if os.environ.get("VECPRESS_PORTABLE_KERNELS"):
        return "portable"
    if os.environ.get("NUMBA_CPU_NAME", "host") != "host":
        return "portable"
    try:
        from llvmlite import binding

        feats = binding.get_host_cpu_features()
    except Exception:  # pragma: no cover - feature probing is best effort
        return "portable"
    if feats.get("avx512bw", False):
        if feats.get("avx512vbmi", False) and feats.get("avx512vnni", False):
            return "avx512vbmi"
        return "avx512bw"
    if feats.get("avx2", False):
        return "avx2"
    return "portable"


#: the kernel :func:`fastscan` uses by default on this machine
ISA = _host_isa()


def available_isas() -> tuple[str, ...]:
    """The kernels this machine can run, the portable one first."""
    return ISAS[: ISAS.index(ISA) + 1]


def _isa_id(isa: str | None) -> int:
    isa = ISA if isa is None else isa
    if isa not in available_isas():
        raise ValueError(f"kernel {isa!r} is not available here; available: {available_isas()}")
    return ISAS.index(isa)


# -- SIMD kernels (LLVM IR) -------------------------------------------------------------------

_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def _const(ty, value):
    return ir.Constant(ty, value)


def _ptr(builder, addr, ty):
    return builder.inttoptr(addr, ty.as_pointer())


def _load_tail(builder, addr, width):
    """``width`` bytes whose first 32 are read at ``addr`` and the rest are zero."""
    v32 = ir.VectorType(_I8, 32)
    lo = builder.load(_ptr(builder, addr, v32), align=1)
    return builder.shuffle_vector(
        lo, _const(v32, None), ir.Constant(ir.VectorType(_I32, width), list(range(width)))
    )


def _store_mask(builder, sums, pthr, pmask, u):
    """``pmask[u]`` (int32) = bit ``r`` set where sum ``r`` of query ``u`` exceeds ``pthr[u]``."""
    thr = builder.load(_ptr(builder, builder.add(pthr, _const(_I64, 4 * u)), _I32), align=4)
    v32i = ir.VectorType(_I32, 32)
    splat = builder.insert_element(_const(v32i, None), thr, _const(_I32, 0))
    splat = builder.shuffle_vector(splat, splat, _const(v32i, [0] * 32))
    bits = builder.bitcast(builder.icmp_signed(">", sums, splat), _I32)
    builder.store(bits, _ptr(builder, builder.add(pmask, _const(_I64, 4 * u)), _I32), align=4)


def _emit_vbmi(builder, qb, pcodes, npairs, plut, lstride, pout, pthr, pmask):
    """Sums of 32 vectors x ``qb`` queries with ``vpermb`` + ``vpdpbusd`` (512-bit)."""
    v64 = ir.VectorType(_I8, 64)
    v16i = ir.VectorType(_I32, 16)
    v32i_mask = ir.VectorType(_I32, 32)
    mod = builder.module
    permb = cgutils.get_or_insert_function(
        mod, ir.FunctionType(v64, [v64, v64]), "llvm.x86.avx512.permvar.qi.512"
    )
    dpbusd = cgutils.get_or_insert_function(
        mod, ir.FunctionType(v16i, [v16i] * 3), "llvm.x86.avx512.vpdpbusd.512"
    )
    # byte 4w + j of the transposed group = vector w's (and w + 16's) code of sub-quantizer j
    transpose = _const(ir.VectorType(_I32, 64), [16 * (t % 4) + t // 4 for t in range(64)])
    slot = _const(v64, [16 * (t % 4) for t in range(64)])
    low = _const(v64, [15] * 64)
    four = _const(v64, [4] * 64)
    ones = _const(v16i, [0x01010101] * 16)
    accs = [cgutils.alloca_once_value(builder, _const(v16i, None)) for _ in range(2 * qb)]

    def step(raw, off):
        t = builder.shuffle_vector(raw, raw, transpose)
        lo = builder.or_(builder.and_(t, low), slot)
        hi = builder.or_(builder.lshr(t, four), slot)
        for u in range(qb):
            addr = builder.add(builder.add(plut, builder.mul(lstride, _const(_I64, u))), off)
            tab = builder.load(_ptr(builder, addr, v64), align=1)
            for h, idx in enumerate((lo, hi)):
                r = builder.bitcast(builder.call(permb, [tab, idx]), v16i)
                acc = accs[2 * u + h]
                builder.store(builder.call(dpbusd, [builder.load(acc), r, ones]), acc)

    ngroups = builder.lshr(npairs, _const(_I64, 1))
    with cgutils.for_range(builder, ngroups) as loop:
        off = builder.mul(loop.index, _const(_I64, 64))
        step(builder.load(_ptr(builder, builder.add(pcodes, off), v64), align=1), off)
    odd = builder.icmp_unsigned("!=", builder.and_(npairs, _const(_I64, 1)), _const(_I64, 0))
    with builder.if_then(odd):
        off = builder.mul(ngroups, _const(_I64, 64))
        step(_load_tail(builder, builder.add(pcodes, off), 64), off)
    for u in range(qb):
        vals = [builder.load(accs[2 * u + h]) for h in range(2)]
        for h in range(2):
            addr = builder.add(pout, _const(_I64, 128 * u + 64 * h))
            builder.store(vals[h], _ptr(builder, addr, v16i), align=4)
        both = builder.shuffle_vector(vals[0], vals[1], _const(v32i_mask, list(range(32))))
        _store_mask(builder, both, pthr, pmask, u)


def _emit_pshufb(builder, qb, width, pcodes, npairs, plut, lstride, pout, pthr, pmask):
    """Sums of 32 vectors x ``qb`` queries with ``vpshufb`` on ``width``-byte registers
    (32: AVX2, 64: AVX-512BW) and uint16 accumulators flushed to int32."""
    vb = ir.VectorType(_I8, width)
    half = width // 2
    vw = ir.VectorType(_I16, half)
    v32i = ir.VectorType(_I32, 32)
    name = "llvm.x86.avx2.pshuf.b" if width == 32 else "llvm.x86.avx512.pshuf.b.512"
    pshufb = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vb, [vb, vb]), name)
    low = _const(vb, [15] * width)
    four = _const(vb, [4] * width)
    eight = _const(vw, [8] * half)
    lanes = width // 16
    accs = [[cgutils.alloca_once(builder, vw) for _ in range(4)] for _ in range(qb)]
    sums = [cgutils.alloca_once_value(builder, _const(v32i, None)) for _ in range(qb)]

    def zero():
        for row in accs:
            for a in row:
                builder.store(_const(vw, None), a)

    def step(raw, off):
        lo = builder.and_(raw, low)
        hi = builder.lshr(raw, four)
        for u in range(qb):
            addr = builder.add(builder.add(plut, builder.mul(lstride, _const(_I64, u))), off)
            tab = builder.load(_ptr(builder, addr, vb), align=1)
            for h, idx in enumerate((lo, hi)):
                w = builder.bitcast(builder.call(pshufb, [tab, idx]), vw)
                a_all, a_odd = accs[u][2 * h], accs[u][2 * h + 1]
                builder.store(builder.add(builder.load(a_all), w), a_all)
                builder.store(builder.add(builder.load(a_odd), builder.lshr(w, eight)), a_odd)

    def flush():
        # word w of lane l: all = Σ (even byte + 256 odd byte), odd = Σ odd byte (mod 2^16);
        # even byte 2w of lane l is vector 2w (low nibbles) or 16 + 2w (high nibbles)
        for u in range(qb):
            vals = [builder.load(a) for a in accs[u]]
            parts = []
            for h in range(2):
                odd = vals[2 * h + 1]
                even = builder.sub(vals[2 * h], builder.shl(odd, eight))
                parts.append((even, odd))
            total = builder.load(sums[u])
            for lane in range(lanes):
                mask = [lane * 8 + v // 2 + (half if v & 1 else 0) for v in range(16)]
                mask = _const(ir.VectorType(_I32, 16), mask)
                x = builder.shuffle_vector(parts[0][0], parts[0][1], mask)
                y = builder.shuffle_vector(parts[1][0], parts[1][1], mask)
                z = builder.shuffle_vector(x, y, _const(ir.VectorType(_I32, 32), list(range(32))))
                total = builder.add(total, builder.zext(z, v32i))
            builder.store(total, sums[u])

    pairs_per_step = width // 32
    nsteps = builder.udiv(npairs, _const(_I64, pairs_per_step))
    nchunks = builder.udiv(builder.add(nsteps, _const(_I64, _CHUNK - 1)), _const(_I64, _CHUNK))
    with cgutils.for_range(builder, nchunks) as chunk:
        zero()
        s0 = builder.mul(chunk.index, _const(_I64, _CHUNK))
        left = builder.sub(nsteps, s0)
        small = builder.icmp_unsigned("<", left, _const(_I64, _CHUNK))
        count = builder.select(small, left, _const(_I64, _CHUNK))
        with cgutils.for_range(builder, count) as loop:
            off = builder.mul(builder.add(s0, loop.index), _const(_I64, width))
            step(builder.load(_ptr(builder, builder.add(pcodes, off), vb), align=1), off)
        flush()
    if pairs_per_step > 1:
        rem = builder.urem(npairs, _const(_I64, pairs_per_step))
        with builder.if_then(builder.icmp_unsigned("!=", rem, _const(_I64, 0))):
            zero()
            off = builder.mul(nsteps, _const(_I64, width))
            step(_load_tail(builder, builder.add(pcodes, off), width), off)
            flush()
    for u in range(qb):
        addr = builder.add(pout, _const(_I64, 128 * u))
        total = builder.load(sums[u])
        builder.store(total, _ptr(builder, addr, v32i), align=4)
        _store_mask(builder, total, pthr, pmask, u)


#: the kernel is chosen at compile time by the dtype of an empty "tag" array
#: (one compiled, cached specialisation per kernel; a literal int would be re-typed
#: at every call from Python)
_TAG_DTYPES = (np.int8, np.int16, np.int32, np.int64)
_TAGS = tuple(np.empty(0, dt) for dt in _TAG_DTYPES)


def _tag_kind(tag) -> int:
    return {8: 0, 16: 1, 32: 2, 64: 3}[tag.dtype.bitwidth]


@intrinsic
def _isa_of(typingctx, tag):
    """The kernel id (:data:`ISAS`) a tag array stands for, as a constant."""
    kind = _tag_kind(tag)

    def codegen(context, builder, signature, args):
        return _const(_I64, kind)

    return types.intp(tag), codegen


@intrinsic
def _simd_block(typingctx, tag, qb, pcodes, npairs, plut, lstride, pout, pthr, pmask):
    """Integer sums of one block (32 vectors) for ``qb`` queries (a constant) with
    the kernel of ``tag``: the codes at ``pcodes`` (``npairs`` pairs), the padded
    tables of the first query at ``plut`` (``lstride`` bytes apart), int32
    ``[qb, 32]`` written at ``pout``; for each query ``u``, bit ``r`` of the int32
    at ``pmask + 4u`` tells whether sum ``r`` exceeds the int32 at ``pthr + 4u``.
    Emits nothing for the portable kernel."""
    if not isinstance(qb, types.IntegerLiteral):
        return None
    kind, count = _tag_kind(tag), qb.literal_value
    sig = types.void(tag, qb, *([types.intp] * 7))

    def codegen(context, builder, signature, args):
        if kind == 3:
            _emit_vbmi(builder, count, *args[2:])
        elif kind in (1, 2):
            _emit_pshufb(builder, count, 32 if kind == 1 else 64, *args[2:])
        return context.get_dummy_value()

    return sig, codegen


# -- portable kernel and drivers ----------------------------------------------------------


@nb.njit(cache=True, inline="always")
def _portable_block(row, npairs, lut, q0, qb, buf, thr, mask):
    for u in range(qb):
        t = lut[q0 + u]
        acc = buf[u]
        acc[:] = 0
        for p in range(npairs):
            b = p * PAIR_BYTES
            o0 = 32 * p
            o1 = o0 + 16
            for i in range(16):
                c0 = row[b + i]
                c1 = row[b + 16 + i]
                acc[i] += np.int32(t[o0 + (c0 & 15)]) + np.int32(t[o1 + (c1 & 15)])
                acc[16 + i] += np.int32(t[o0 + (c0 >> 4)]) + np.int32(t[o1 + (c1 >> 4)])
        bits = np.uint32(0)
        for r in range(BLOCK):
            if acc[r] > thr[u]:
                bits |= np.uint32(1) << np.uint32(r)
        mask[u] = np.int32(bits)


@nb.njit(cache=True, inline="always")
def _pass_size(qbmax, left):
    if left >= 8 and qbmax >= 8:
        return 8
    if left >= 4 and qbmax >= 4:
        return 4
    if left >= 2 and qbmax >= 2:
        return 2
    return 1


@nb.njit(cache=True, inline="always")
def _block_sums(tag, row_addr, row, npairs, lut, q0, qb, buf, thr, mask):
    """int32 sums of one block for queries ``q0 .. q0 + qb`` into ``buf[:qb]``, and
    in ``mask[u]`` the bits of the rows whose sum exceeds ``thr[u]``."""
    if _isa_of(tag) == 0:
        _portable_block(row, npairs, lut, q0, qb, buf, thr, mask)
    else:
        ls = lut.shape[1]
        pl = lut.ctypes.data + q0 * ls
        pb = buf.ctypes.data
        pt = thr.ctypes.data
        pm = mask.ctypes.data
        if qb == 8:
            _simd_block(tag, 8, row_addr, npairs, pl, ls, pb, pt, pm)
        elif qb == 4:
            _simd_block(tag, 4, row_addr, npairs, pl, ls, pb, pt, pm)
        elif qb == 2:
            _simd_block(tag, 2, row_addr, npairs, pl, ls, pb, pt, pm)
        else:
            _simd_block(tag, 1, row_addr, npairs, pl, ls, pb, pt, pm)


@nb.njit(cache=True, parallel=True)
def _scan_sums(tag, qbmax, blocked, n, npairs, lut, tile, sums, fout, scale, bias, to_float):
    nq = lut.shape[0]
    nblocks = blocked.shape[0]
    rowbytes = blocked.shape[1]
    base = blocked.ctypes.data
    ntiles = (nblocks + tile - 1) // tile
    for t in nb.prange(ntiles):
        buf = np.zeros((8, BLOCK), np.int32)
        thr = np.full(8, -1, np.int32)
        mask = np.zeros(8, np.int32)
        b0 = t * tile
        b1 = min(nblocks, b0 + tile)
        q0 = 0
        while q0 < nq:
            qb = _pass_size(qbmax, nq - q0)
            for blk in range(b0, b1):
                row = blocked[blk]
                _block_sums(tag, base + blk * rowbytes, row, npairs, lut, q0, qb, buf, thr, mask)
                j0 = blk * BLOCK
                cnt = min(BLOCK, n - j0)
                for u in range(qb):
                    q = q0 + u
                    if to_float:
                        s, b = scale[q], bias[q]
                        for r in range(cnt):
                            fout[q, j0 + r] = s * np.float32(buf[u, r]) + b
                    else:
                        for r in range(cnt):
                            sums[q, j0 + r] = np.uint32(buf[u, r])
            q0 += qb


@intrinsic
def _ctz32(typingctx, x):
    """Index of the lowest set bit of a nonzero uint32."""
    sig = types.uint32(types.uint32)

    def codegen(context, builder, signature, args):
        i1 = ir.IntType(1)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I32, [_I32, i1]), "llvm.cttz.i32"
        )
        return builder.call(fn, [args[0], _const(i1, 1)])

    return sig, codegen


@nb.njit(cache=True, parallel=True)
def _scan_topk(tag, qbmax, blocked, n, npairs, lut, tile, bounds, slot_s, slot_i, counts):
    nq = lut.shape[0]
    nitems = bounds.shape[0] - 1
    k = slot_s.shape[1]
    rowbytes = blocked.shape[1]
    base = blocked.ctypes.data
    for it in nb.prange(nitems):
        buf = np.zeros((8, BLOCK), np.int32)
        mask = np.zeros(8, np.int32)
        # per query: rows must beat this sum to enter the item's heap (-1: not full)
        qthr = np.full(nq, -1, np.int32)
        for b0 in range(bounds[it], bounds[it + 1], tile):
            b1 = min(bounds[it + 1], b0 + tile)
            q0 = 0
            while q0 < nq:
                qb = _pass_size(qbmax, nq - q0)
                thr = qthr[q0 : q0 + qb]
                for blk in range(b0, b1):
                    row = blocked[blk]
                    _block_sums(
                        tag, base + blk * rowbytes, row, npairs, lut, q0, qb, buf, thr, mask
                    )
                    j0 = blk * BLOCK
                    cnt = min(BLOCK, n - j0)
                    for u in range(qb):
                        bits = np.uint32(mask[u])
                        if cnt < BLOCK:  # the padding rows of the last block do not count
                            bits &= (np.uint32(1) << np.uint32(cnt)) - np.uint32(1)
                        if bits == 0:
                            continue
                        # rows come in increasing order: a tie never enters a full heap
                        slot = (q0 + u) * nitems + it
                        hs = slot_s[slot]
                        hi = slot_i[slot]
                        m = counts[slot]
                        while bits:
                            r = _ctz32(bits)
                            bits &= bits - np.uint32(1)
                            v = np.float32(buf[u, r])
                            if m < k or v > hs[0]:
                                m = heap_push(hs, hi, m, v, j0 + r)
                        counts[slot] = m
                        if m == k:
                            thr[u] = np.int32(hs[0])
                q0 += qb


def _prepare(blocked, n, m, lut8):
    m = _check_m(m)
    n = int(n)
    npairs = (m + 1) // 2
    nblocks = (n + BLOCK - 1) // BLOCK
    blocked = np.ascontiguousarray(blocked)
    if blocked.dtype != np.uint8 or blocked.shape != (nblocks, npairs * PAIR_BYTES):
        raise ValueError(
            f"blocked pq{m}x4 codes of n={n} must be uint8[{nblocks}, {npairs * PAIR_BYTES}], "
            f"found {blocked.dtype}{list(blocked.shape)}"
        )
    lut = _padded_luts(lut8, m)
    tile = max(1, _TILE_BYTES // (npairs * PAIR_BYTES))
    return blocked, n, npairs, lut, tile


def fastscan(blocked, n, m, lut8, out, scale=None, bias=None, *, isa=None):
    """Score blocked ``pq<M>x4`` codes with 8-bit tables: ``Σ_m lut8[q, m, code_jm]``.

    Parameters
    ----------
    blocked : uint8[ceil(n/32), 32 * ceil(M/2)]
        Codes from :func:`fastscan_layout`.
    n, m : int
        Number of vectors and of sub-quantizers.
    lut8 : uint8[nq, M, 16]
        Tables from :func:`quantize_luts`.
    out : uint32[nq, n] or float32[nq, n]
        uint32: the exact integer sums; float32: ``scale[q] * sums + bias[q]``
        (``scale`` and ``bias`` float32[nq] required), computed in float32
        without fused multiply-add, the same by every kernel.
    isa : str, optional
        Kernel (:data:`ISAS`, one of :func:`available_isas`); default :data:`ISA`.
        Every kernel gives the same sums.

    Returns
    -------
    out
    """
    isa_id = _isa_id(isa)
    blocked, n, npairs, lut, tile = _prepare(blocked, n, m, lut8)
    nq = lut.shape[0]
    if out.shape != (nq, n) or out.dtype not in (np.uint32, np.float32):
        raise ValueError(
            f"out must be uint32 or float32 [{nq}, {n}], found {out.dtype}{list(out.shape)}"
        )
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    to_float = out.dtype == np.float32
    if to_float:
        if scale is None or bias is None:
            raise ValueError("a float32 out needs the scale and bias of quantize_luts")
        scale = np.ascontiguousarray(scale, np.float32).reshape(nq)
        bias = np.ascontiguousarray(bias, np.float32).reshape(nq)
        sums, fout = np.empty((1, 1), np.uint32), out
    else:
        scale = bias = np.zeros(nq, np.float32)
        sums, fout = out, np.empty((1, 1), np.float32)
    if n and nq:
        tag, qbmax = _TAGS[isa_id], _MAX_PASS[isa_id]
        _scan_sums(tag, qbmax, blocked, n, npairs, lut, tile, sums, fout, scale, bias, to_float)
    return out


def fastscan_topk(blocked, n, m, lut8, k, scale=None, bias=None, *, isa=None):
    """The ``k`` best vectors of each query by fast-scan sums (scan and top-k fused).

    Ranks by the integer sums ``Σ_m lut8[q, m, code_jm]`` (ties: smaller row
    first) -- the order of ``scale * sums + bias`` as ``scale > 0``.

    Returns
    -------
    (scores float32[nq, k], rows int64[nq, k])
        Best first; ``scores`` are ``scale[q] * sums + bias[q]`` (the integer
        sums when ``scale``/``bias`` are not given); missing places (``n < k``)
        have row -1 and score -inf.
    """
    isa_id = _isa_id(isa)
    blocked, n, npairs, lut, tile = _prepare(blocked, n, m, lut8)
    nq = lut.shape[0]
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be at least 1, found {k}")
    if m * 255 >= 1 << 24:
        raise ValueError(f"fastscan_topk ranks sums as float32: M={m} must be at most 65793")
    nblocks = blocked.shape[0]
    ntiles = max(1, (nblocks + tile - 1) // tile)
    nitems = max(1, min(ntiles, 2 * nb.get_num_threads()))
    bounds = (np.arange(nitems + 1) * ntiles // nitems * tile).clip(0, nblocks).astype(np.int64)
    slot_s = np.full((nq * nitems, k), -np.inf, np.float32)
    slot_i = np.full((nq * nitems, k), -1, np.int64)
    counts = np.zeros(nq * nitems, np.int64)
    res_s = np.empty((nq, k), np.float32)
    res_i = np.empty((nq, k), np.int64)
    if n and nq:
        tag, qbmax = _TAGS[isa_id], _MAX_PASS[isa_id]
        _scan_topk(tag, qbmax, blocked, n, npairs, lut, tile, bounds, slot_s, slot_i, counts)
    _pad_slots(slot_s, slot_i, counts)
    merge_slots(slot_s, slot_i, np.arange(nq + 1, dtype=np.int64) * nitems, k, res_s, res_i)
    if scale is not None:
        s = np.asarray(scale, np.float32).reshape(nq, 1)
        b = np.asarray(bias, np.float32).reshape(nq, 1)
        res_s = np.where(res_i >= 0, s * res_s + b, np.float32(-np.inf)).astype(np.float32)
    return res_s, res_i


@nb.njit(cache=True)
def _pad_slots(slot_s, slot_i, counts):
    for r in range(slot_s.shape[0]):
        heap_pad(slot_s[r], slot_i[r], counts[r])


def score_pq4(codes: np.ndarray, m: int, lut: np.ndarray, *, isa=None) -> np.ndarray:
    """Fast-scan scores of ``pq<M>x4`` code rows: ``float32[nq, n]``.

    ``scale[q] * Σ_m lut8[q, m, code_jm] + bias[q]`` with the 8-bit tables of
    :func:`quantize_luts`: the estimate a fast-scan codec ranks by. It is within
    ``M * scale[q] / 2`` (plus float32 rounding) of the float-table score
    ``Σ_m lut[q, m, code_jm]``.

    Parameters
    ----------
    codes : uint8[n, ceil(M/2)]
        Packed 4-bit codes (as ``PQ.encode`` gives them).
    lut : float32[nq, M, 16]
        Float tables (``PQ.tables(q)``).
    """
    lut = np.asarray(lut, np.float32)
    if lut.ndim != 3 or lut.shape[1:] != (m, 16):
        raise ValueError(f"tables of pq{m}x4 must be float32[nq, {m}, 16], found {lut.shape}")
    blocked = fastscan_layout(codes, m)
    lut8, scale, bias = quantize_luts(lut)
    out = np.empty((lut.shape[0], codes.shape[0]), np.float32)
    return fastscan(blocked, codes.shape[0], m, lut8, out, scale, bias, isa=isa)
