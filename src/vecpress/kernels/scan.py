"""Scoring kernels that read codes directly (no full decode is materialised).

All kernels walk the database in blocks of ``_BLOCK`` code rows (in parallel
over blocks). A block is unpacked once into a small cache-resident buffer and
then scored against every query of the batch, so the unpacking cost is shared
by the queries of a chunk.

* :func:`int_scan` - uniform-grid codes as integer dot products against a query
  quantized to 8 bits, exact int32 accumulation. On CPUs with AVX-512 VNNI the
  products are ``vpdpbusd`` instructions (unsigned 8-bit code x signed 8-bit
  query, 64 per instruction) in 4 x 4 register tiles of (query, code) pairs;
  elsewhere a portable loop that LLVM vectorises on int16 lanes;
* :func:`table_scan` - non-uniform levels (Lloyd–Max, sign bits): each code is
  looked up in a level table once per block, then a float dot product;
* :func:`hamming_scan` - popcount of XOR for sign codes against sign queries.
"""

from __future__ import annotations

import os

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import read_only
from .bitpack import unpack_row

_BLOCK = 64


def query_limbs(bits: int) -> int:
    """8-bit query limbs used against ``bits``-bit codes: 1 up to 5 bits, 2 above.

    With one limb the query's rounding error (relative ~1/127 of its largest
    coordinate) is small next to a code of at most 5 bits; against 6-8-bit codes
    it would dominate, so a second limb quantizes the residual (error / 254).
    """
    return 1 if bits <= 5 else 2


def quantize_queries(q: np.ndarray, limbs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Quantize float queries to ``limbs`` stacked 8-bit integer parts.

    Returns ``qi`` int16[limbs * nq, d] and ``scale`` float32[limbs * nq] with
    ``q ≈ sum_k scale[k*nq:(k+1)*nq, None] * qi[k*nq:(k+1)*nq]``; each part is in
    [-127, 127]. The error per coordinate is at most ``scale_last / 2``.

    Examples
    --------
    >>> qi, s = quantize_queries(np.array([[0.5, -1.0]], np.float32))
    >>> qi.tolist(), round(float(s[0]) * 127, 6)
    ([[64, -127]], 1.0)
    """
    q = np.ascontiguousarray(q, np.float32)
    nq, d = q.shape
    qi = np.empty((limbs * nq, d), np.int16)
    scales = np.empty(limbs * nq, np.float32)
    _quantize(q, limbs, qi, scales)
    return qi, scales


_TINY = np.float32(np.nextafter(np.float32(0), np.float32(1)))


@nb.njit(cache=True)
def _quantize(q, limbs, qi, scales):
    """:func:`quantize_queries` in float32, element by element as numpy would round:
    ``scale = max|q| / 127`` (1 for a zero row), then per limb ``qi = clip(rint(rest /
    scale))``, ``rest -= qi * scale``, ``scale /= 254`` (never below the least subnormal
    float32, so a query of subnormal values still quantizes)."""
    nq, d = q.shape
    rest = np.empty(d, np.float32)
    for i in range(nq):
        amax = np.float32(0.0)
        for c in range(d):
            rest[c] = q[i, c]
            amax = max(amax, abs(q[i, c]))
        scale = amax / np.float32(127.0) if amax > 0 else np.float32(1.0)
        for k in range(limbs):
            # a scale below float32's range (a query of subnormal values, or a second
            # limb under a tiny first one) would divide by zero: use the least subnormal
            scale = max(scale, _TINY)
            row = k * nq + i
            for c in range(d):
                v = min(max(np.rint(rest[c] / scale), np.float32(-127.0)), np.float32(127.0))
                qi[row, c] = np.int16(v)
                rest[c] = rest[c] - np.float32(v) * scale
            scales[row] = scale
            scale = scale / np.float32(254.0)


def grid_queries(q, center, qoff, bits):
    """Quantize grid-scoring queries once, for every kernel that scores grid codes.

    Returns ``(qi int16[nq * L, d], qscale float32[nq * L], off float32[nq])`` with
    ``L = query_limbs(bits)`` limbs per query stored query-major (row ``i * L + l``
    is limb ``l`` of query ``i``) and ``off = qoff - sum_l qscale_l <center, qi_l>``,
    so that ``<c - center, q> + qoff ≈ sum_l qscale_l <c, qi_l> + off``. ``center``
    is one number for every dimension or a float32[d] (one per dimension).
    """
    nq, d = q.shape
    limbs = query_limbs(bits)
    if not np.ndim(center):  # one centre: one compiled call (a single query's latency)
        qoff = query_offsets(qoff, nq)
        return _grid_queries_flat(np.ascontiguousarray(q, np.float32), float(center), qoff, limbs)
    qi, qs = quantize_queries(q, limbs)  # limb-major
    csum = qi.astype(np.float64) @ np.asarray(center, np.float64)  # a centre per dimension
    offl = (-qs * csum).astype(np.float32).reshape(limbs, nq)
    off = (offl[0] + np.asarray(qoff, np.float32)).astype(np.float32)
    for k in range(1, limbs):
        off += offl[k]
    qi = np.ascontiguousarray(qi.reshape(limbs, nq, d).transpose(1, 0, 2).reshape(nq * limbs, d))
    qs = np.ascontiguousarray(qs.reshape(limbs, nq).T.reshape(nq * limbs))
    return qi, qs, off


def query_offsets(qoff, nq: int) -> np.ndarray:
    """``qoff`` as float32[nq]: one number for every query, or one a query as given.

    Examples
    --------
    >>> query_offsets(0.5, 2).tolist(), query_offsets([1.0, 2.0], 2).tolist()
    ([0.5, 0.5], [1.0, 2.0])
    """
    qoff = np.asarray(qoff, np.float32)
    if qoff.shape != (nq,):
        qoff = np.full(nq, qoff, np.float32)
    return qoff


@nb.njit(cache=True)
def _grid_queries_flat(q, center, qoff, limbs):
    """:func:`grid_queries` for one centre, with numpy's roundings: ``csum = center *
    sum(qi)`` in float64, each limb's ``-qscale * csum`` rounded to float32, the limbs'
    terms added to ``qoff`` in float32 in limb order; rows query-major."""
    nq, d = q.shape
    qi_l = np.empty((limbs * nq, d), np.int16)  # limb-major, as _quantize writes them
    qs_l = np.empty(limbs * nq, np.float32)
    _quantize(q, limbs, qi_l, qs_l)
    qi = np.empty((nq * limbs, d), np.int16)
    qs = np.empty(nq * limbs, np.float32)
    off = np.empty(nq, np.float32)
    for i in range(nq):
        acc = qoff[i]
        for k in range(limbs):
            src = k * nq + i
            tot = 0
            for c in range(d):
                tot += np.int64(qi_l[src, c])
                qi[i * limbs + k, c] = qi_l[src, c]
            term = np.float32(-np.float64(qs_l[src]) * (center * np.float64(tot)))
            acc = np.float32(acc + term)
            qs[i * limbs + k] = qs_l[src]
        off[i] = acc
    return qi, qs, off


def score_uniform(codes, bits, d, q, center, qoff, a, b, t, *, layout=None):
    """Score grid codes ``c`` against float queries with the integer kernel.

    ``out[i, j] = a[j] * (<c_j - center, q_i> + qoff[i]) + b[j] * t[i]`` where
    ``<c_j - center, q_i>`` is computed from 8-bit query limbs
    (:func:`query_limbs` of ``bits``, :func:`grid_queries`) and exact integer dot
    products. The ``d`` codes of a row are ``bits``-bit packed at byte 0, or
    placed as ``layout`` says (:func:`check_layout`).
    """
    nq, n = q.shape[0], codes.shape[0]
    qi, qs, off = grid_queries(q, center, qoff, bits)
    out = np.empty((nq, n), np.float32)
    int_scan(
        codes, bits, d, qi, qs, off, a, b, np.asarray(t, np.float32), out,
        limbs=query_limbs(bits), layout=layout,
    )  # fmt: skip
    return out


def uniform_layout(bits: int, d: int) -> np.ndarray:
    """The layout of ``d`` codes of ``bits`` bits packed from byte 0 (:func:`check_layout`).

    Examples
    --------
    >>> uniform_layout(4, 384).tolist()
    [[0, 384, 4, 0]]
    """
    return np.array([[0, d, bits, 0]], np.int64)


def check_layout(layout, d: int, row_bytes: int) -> np.ndarray:
    """Validate a code layout: int64[G, 4] rows ``(first, count, bits, offset)``, each
    a run of ``count`` codes of ``bits`` bits packed from byte ``offset`` of the row
    (:mod:`~vecpress.kernels.bitpack`), standing for dimensions
    ``first..first+count``. Runs must not overlap (in dimensions or bytes), must lie
    within ``d`` dimensions and ``row_bytes`` bytes, and have 1-8 bits.

    Examples
    --------
    >>> check_layout([[0, 3, 2, 0], [3, 2, 5, 1]], 5, 3).shape
    (2, 4)
    """
    lay = np.ascontiguousarray(layout, np.int64)
    if lay.ndim != 2 or lay.shape[1] != 4:
        raise ValueError(f"a code layout is int64[G, 4], found shape {lay.shape}")
    dims = np.zeros(d, bool)
    used = np.zeros(row_bytes, bool)
    for first, count, bits, offset in lay.tolist():
        nbytes = (count * bits + 7) // 8
        if not 1 <= bits <= 8 or count < 1 or first < 0 or first + count > d:
            raise ValueError(f"code run {(first, count, bits, offset)} does not fit d={d}")
        if offset < 0 or offset + nbytes > row_bytes:
            raise ValueError(
                f"code run {(first, count, bits, offset)} needs bytes {offset}..{offset + nbytes},"
                f" rows have {row_bytes}"
            )
        if dims[first : first + count].any() or used[offset : offset + nbytes].any():
            raise ValueError(f"code run {(first, count, bits, offset)} overlaps another")
        dims[first : first + count] = True
        used[offset : offset + nbytes] = True
    return lay


def code_positions(layout: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dimension, first bit (from the row's first bit) and width of every code of a
    layout (:func:`~vecpress.kernels.scan.check_layout`, codes packed as
    :mod:`~vecpress.kernels.bitpack` packs them).

    Examples
    --------
    >>> dims, pos, width = code_positions(np.array([[0, 2, 3, 0], [2, 1, 8, 1]]))
    >>> dims.tolist(), pos.tolist(), width.tolist()
    ([0, 1, 2], [0, 3, 8], [3, 3, 8])
    """
    lay = np.asarray(layout, np.int64).reshape(-1, 4)
    count = lay[:, 1]
    i = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    dims = np.repeat(lay[:, 0], count) + i
    width = np.repeat(lay[:, 2], count)
    pos = np.repeat(lay[:, 3] * 8, count) + i * width
    return dims, pos, width


@nb.njit(cache=True, inline="always")
def unpack_layout(src, layout, dst):
    """Unpack every run of ``layout`` from the code row ``src`` into ``dst`` (dimensions
    outside the runs are left alone)."""
    for g in range(layout.shape[0]):
        first = layout[g, 0]
        unpack_row(src, layout[g, 3], layout[g, 2], layout[g, 1], dst[first:])


def host_has(*features: str) -> bool:
    """Whether the compiled kernels may use every one of the CPU ``features`` (LLVM's
    names, e.g. ``"avx512vnni"``) on this machine: never when ``VECPRESS_PORTABLE_KERNELS``
    is set or numba compiles for another CPU (``NUMBA_CPU_NAME``)."""
    if os.environ.get("VECPRESS_PORTABLE_KERNELS"):
        return False
    if os.environ.get("NUMBA_CPU_NAME", "host") != "host":
        return False
    try:
        from llvmlite import binding

        feats = binding.get_host_cpu_features()
        return all(feats.get(f, False) for f in features)
    except Exception:  # pragma: no cover - feature probing is best effort
        return False


HAVE_VNNI = host_has("avx512vnni", "avx512bw")


def pad_queries_int8(qi: np.ndarray) -> np.ndarray:
    """Query rows as int8 padded to a multiple of 4 rows and 64 columns (the VNNI tile).

    Examples
    --------
    >>> q8 = pad_queries_int8(np.array([[1, -2, 3]], np.int16))
    >>> q8.shape, q8.dtype, q8[0, :4].tolist()
    ((4, 64), dtype('int8'), [1, -2, 3, 0])
    """
    return _query_bytes(qi, qi.shape[1], 1)


@nb.njit(cache=True)
def _query_bytes(qi, d, per_byte):
    """The query rows ``qi`` (``d`` columns, int8-range values) as int8, as
    :func:`split_queries` (``per_byte = 8 / bits > 1``) or :func:`pad_queries_int8`
    (``per_byte = 1``) lay them out, in one compiled pass (a search of one query pays
    ~6 us for numpy's pad, slices and stack)."""
    nv = qi.shape[0]
    rows = (nv + 3) // 4 * 4
    if per_byte == 1:
        out = np.zeros((rows, (d + 63) // 64 * 64), np.int8)
        for v in range(nv):
            for i in range(d):
                out[v, i] = qi[v, i]
        return out
    span = 64 * per_byte
    nch = max(1, (d + span - 1) // span)
    out = np.zeros((rows, nch * span), np.int8)
    for v in range(nv):
        for i in range(d):
            ch, rest = i // span, i % span
            out[v, ch * span + (rest % per_byte) * 64 + rest // per_byte] = qi[v, i]
    return out


def int_scan(
    codes, bits, d, qi, qscale, qoff, a, b, t, out, *, limbs=1, portable=False, layout=None
):  # fmt: skip
    """``out[q, j] = a[j] * (sum_l qscale[qL+l] * <c_j, qi[qL+l]> + qoff[q]) + b[j] * t[q]``.

    ``codes`` are rows whose first ``ceil(d*bits/8)`` bytes are packed codes (or
    whose runs of codes lie as ``layout`` says, :func:`check_layout`); ``qi`` is
    int16[nq * limbs, d] with |values| <= 127, query-major limbs. The dot
    products are exact integers whichever kernel runs (``portable=True`` forces
    the portable one), and both kernels combine them in the same order
    (:func:`combine`), so they give identical floats.
    """
    if layout is None:
        layout = uniform_layout(bits, d)
    codes = read_only(codes)  # rows in memory and mapped from a file: one compiled scan
    if HAVE_VNNI and not portable:
        q8 = pad_queries_int8(qi)
        _int_scan_vnni(codes, layout, q8, qi.shape[0], limbs, qscale, qoff, a, b, t, out)
    else:
        _int_scan_portable(codes, layout, d, qi, limbs, qscale, qoff, a, b, t, out)


@nb.njit(cache=True, fastmath=False, inline="always")
def combine(i0, i1, limbs, s0, s1, off, tq, aj, bj):
    """``aj * (s0 * i0 [+ s1 * i1] + off) + bj * tq``: the score of one (query, row)
    pair from its per-limb integer dot products (``limbs`` is 1 or 2). Every grid
    kernel goes through this one expression, so they all round alike."""
    acc = s0 * np.float32(i0)
    if limbs > 1:
        acc += s1 * np.float32(i1)
    return aj * (acc + off) + bj * tq


_I32X16 = ir.VectorType(ir.IntType(32), 16)


def _mask(lanes: list[int]) -> ir.Constant:
    """A constant shuffle mask (``<16 x i32>``)."""
    return ir.Constant(ir.VectorType(ir.IntType(32), len(lanes)), lanes)


def _accumulate4x4(builder, dpbusd, accs, rows_a, rows_b) -> None:
    """``accs[q * 4 + c] += dpbusd(code row c, query row q)`` for the 4 x 4 pairs."""
    for qi_ in range(4):
        for ci in range(4):
            acc = accs[qi_ * 4 + ci]
            builder.store(builder.call(dpbusd, [builder.load(acc), rows_a[ci], rows_b[qi_]]), acc)


def _store_sums(builder, vecs, pout, sout) -> None:
    """Store the horizontal sums of 16 ``<16 x i32>`` accumulators (query-major 4 x 4)
    as 4 rows of 4 int32 at ``pout + u * sout``.

    A butterfly of shuffles and adds halves the lanes per accumulator at each
    level (30 shuffles and 15 adds instead of 16 separate reductions); lane i of
    the last vector holds sum i.
    """
    i64 = ir.IntType(64)
    block = 16
    while len(vecs) > 1:
        half = block // 2
        lo = [b * block + i for b in range(32 // block) for i in range(half)]
        hi = [x + half for x in lo]
        nxt = []
        for m in range(0, len(vecs), 2):
            x = builder.shuffle_vector(vecs[m], vecs[m + 1], _mask(lo))
            y = builder.shuffle_vector(vecs[m], vecs[m + 1], _mask(hi))
            nxt.append(builder.add(x, y))
        vecs = nxt
        block = half
    i32x4 = ir.VectorType(ir.IntType(32), 4)
    for u in range(4):
        part = builder.shuffle_vector(vecs[0], vecs[0], _mask(list(range(4 * u, 4 * u + 4))))
        dst = builder.add(pout, builder.mul(sout, ir.Constant(i64, u)))
        builder.store(part, builder.inttoptr(dst, i32x4.as_pointer()), align=4)


def _sub_codes(builder, v, per_byte):
    """The ``per_byte`` code vectors (``<16 x i32>`` views of 64 bytes each) packed in
    the 64 bytes ``v``: code ``s`` of each byte is ``(byte >> s*b) & (2^b - 1)``,
    ``b = 8 / per_byte`` (:mod:`~vecpress.kernels.bitpack` order)."""
    if per_byte == 1:
        return [v]
    i8x64 = ir.VectorType(ir.IntType(8), 64)
    bits = 8 // per_byte
    b8 = builder.bitcast(v, i8x64)
    mask = ir.Constant(i8x64, [(1 << bits) - 1] * 64)
    out = []
    for s in range(per_byte):
        part = builder.lshr(b8, ir.Constant(i8x64, [s * bits] * 64)) if s else b8
        if s < per_byte - 1:  # the top code needs no mask
            part = builder.and_(part, mask)
        out.append(builder.bitcast(part, _I32X16))
    return out


def _tile_setup(builder):
    """What every dot-product tile starts with: the i64 type, the ``vpdpbusd``
    intrinsic, the ``<16 x i32>`` pointer type and 16 zeroed accumulators."""
    dpbusd = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_I32X16, [_I32X16] * 3), "llvm.x86.avx512.vpdpbusd.512"
    )
    accs = [cgutils.alloca_once_value(builder, ir.Constant(_I32X16, None)) for _ in range(16)]
    return ir.IntType(64), dpbusd, _I32X16.as_pointer(), accs


def _make_tile4x4(per_byte: int):
    """An intrinsic: 16 exact dot products, 4 code rows (uint8 at ``pa``, stride ``sa``)
    x 4 query rows (int8 at ``pb``, stride ``sb``) over ``nchunks`` chunks of 64 code
    bytes; writes the 4 int32 products of query ``u`` at ``pout + u * sout`` (bytes).

    ``per_byte = 1``: byte codes (unpacked, or 8-bit codes), query rows of
    ``64 * nchunks`` bytes. Otherwise codes of ``8 / per_byte`` bits read *packed*
    (no unpacking): each 64-byte chunk of a code row holds ``64 * per_byte`` codes,
    and the query rows hold, per chunk, ``per_byte`` runs of 64 dimensions (those
    ``= s mod per_byte``, :func:`split_queries`); ``per_byte`` ``vpdpbusd`` per
    chunk and (query, code) pair."""

    @intrinsic
    def tile(typingctx, pa, sa, pb, sb, nchunks, pout, sout):
        sig = types.void(*([types.intp] * 7))

        def codegen(context, builder, signature, args):
            pa, sa, pb, sb, n, pout, sout = args
            i64, dpbusd, vptr, accs = _tile_setup(builder)
            with cgutils.for_range(builder, n) as loop:
                off_a = builder.mul(loop.index, ir.Constant(i64, 64))
                off_b = builder.mul(loop.index, ir.Constant(i64, 64 * per_byte))
                subs = []
                for r in range(4):
                    base = builder.add(pa, builder.mul(sa, ir.Constant(i64, r)))
                    v = builder.load(builder.inttoptr(builder.add(base, off_a), vptr), align=1)
                    subs.append(_sub_codes(builder, v, per_byte))
                for part in range(per_byte):
                    rows_b = []
                    for r in range(4):
                        base = builder.add(pb, builder.mul(sb, ir.Constant(i64, r)))
                        addr = builder.add(builder.add(base, off_b), ir.Constant(i64, 64 * part))
                        rows_b.append(builder.load(builder.inttoptr(addr, vptr), align=1))
                    rows_a = [sub[part] for sub in subs]
                    _accumulate4x4(builder, dpbusd, accs, rows_a, rows_b)
            _store_sums(builder, [builder.load(acc) for acc in accs], pout, sout)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _make_tile1x16(per_byte: int):
    """An intrinsic: 16 exact dot products of ONE query row (int8 at ``pb``) with 16
    code rows (uint8 at ``pa``, stride ``sa``) over ``nchunks`` chunks, written as
    int32[16] at ``pout``; codes of ``8 / per_byte`` bits read packed, the query in
    the :func:`split_queries` layout (``per_byte = 1``: bytes, the plain layout).
    The single-query form of the 4 x 4 tiles (which would waste three of their four
    query rows)."""

    @intrinsic
    def tile(typingctx, pa, sa, pb, nchunks, pout):
        sig = types.void(*([types.intp] * 5))

        def codegen(context, builder, signature, args):
            pa, sa, pb, n, pout = args
            i64, dpbusd, vptr, accs = _tile_setup(builder)
            with cgutils.for_range(builder, n) as loop:
                off_a = builder.mul(loop.index, ir.Constant(i64, 64))
                off_b = builder.mul(loop.index, ir.Constant(i64, 64 * per_byte))
                qv = [
                    builder.load(
                        builder.inttoptr(
                            builder.add(builder.add(pb, off_b), ir.Constant(i64, 64 * h)), vptr
                        ),
                        align=1,
                    )
                    for h in range(per_byte)
                ]
                for r in range(16):
                    base = builder.add(pa, builder.mul(sa, ir.Constant(i64, r)))
                    v = builder.load(builder.inttoptr(builder.add(base, off_a), vptr), align=1)
                    acc = builder.load(accs[r])
                    for part, q in zip(_sub_codes(builder, v, per_byte), qv, strict=True):
                        acc = builder.call(dpbusd, [acc, part, q])
                    builder.store(acc, accs[r])
            _store_sums(builder, [builder.load(acc) for acc in accs], pout, ir.Constant(i64, 16))
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _make_tile_rows4():
    """An intrinsic: ``4 x 32`` exact dot products of 4 query rows (int8 at ``pb``, stride
    ``sb``) with 32 code rows laid out *by rows* (:func:`rows_layout`): ``ngroups``
    groups of 4 dimensions, group ``g`` at ``pa + g * sa`` holding the 4 code bytes of
    each of the 32 rows in turn (128 bytes); writes the 32 int32 products of query
    ``u`` at ``pout + u * sout`` (bytes).

    Each group's 4 query bytes are broadcast to every lane, so one ``vpdpbusd`` adds
    4 dimensions of 16 rows and every lane accumulates one row's product: no
    horizontal sums at the end (the 4 x 4 tiles of rows laid out one after another
    spend about a third of their time on those), 8 accumulators in flight."""

    @intrinsic
    def tile(typingctx, pa, sa, pb, sb, ngroups, pout, sout):
        sig = types.void(*([types.intp] * 7))

        def codegen(context, builder, signature, args):
            pa, sa, pb, sb, n, pout, sout = args
            i64, dpbusd, vptr, accs = _tile_setup(builder)
            i32 = ir.IntType(32)
            with cgutils.for_range(builder, n) as loop:
                g = loop.index
                base = builder.add(pa, builder.mul(g, sa))
                codes = [
                    builder.load(
                        builder.inttoptr(builder.add(base, ir.Constant(i64, 64 * h)), vptr),
                        align=1,
                    )
                    for h in range(2)
                ]
                for u in range(4):
                    qa = builder.add(
                        builder.add(pb, builder.mul(sb, ir.Constant(i64, u))),
                        builder.mul(g, ir.Constant(i64, 4)),
                    )
                    qd = builder.load(builder.inttoptr(qa, i32.as_pointer()), align=1)
                    qv = builder.insert_element(
                        ir.Constant(_I32X16, ir.Undefined), qd, ir.Constant(i32, 0)
                    )
                    qv = builder.shuffle_vector(qv, qv, _mask([0] * 16))
                    for h in range(2):
                        acc = accs[2 * u + h]
                        builder.store(builder.call(dpbusd, [builder.load(acc), codes[h], qv]), acc)
            for u in range(4):
                for h in range(2):
                    dst = builder.add(
                        builder.add(pout, builder.mul(sout, ir.Constant(i64, u))),
                        ir.Constant(i64, 64 * h),
                    )
                    builder.store(
                        builder.load(accs[2 * u + h]), builder.inttoptr(dst, vptr), align=4
                    )
            return context.get_dummy_value()

        return sig, codegen

    return tile


#: 4 query rows x 32 code rows laid out by rows (:func:`_make_tile_rows4`)
_vnni_tile4x32_rows = _make_tile_rows4()


@nb.njit(cache=True, inline="always")
def rows_layout(row, r, block):
    """Copy the byte codes ``row`` (a multiple of 4 long) into row ``r`` of ``block``
    (uint32[groups, rows]): its 4-dimension group ``g`` to ``block[g, r]``, the layout
    :func:`_make_tile_rows4` reads."""
    words = row.view(np.uint32)
    for g in range(block.shape[0]):
        block[g, r] = words[g]


#: code widths the VNNI kernels read in place (packed), by codes per byte
IN_PLACE_BITS = (1, 2, 4, 8)
_vnni_tile4x4 = _make_tile4x4(1)
_vnni_tile1x16 = _make_tile1x16(1)
_vnni_tile1x16_b4 = _make_tile1x16(2)
_vnni_tile1x16_b2 = _make_tile1x16(4)
_vnni_tile1x16_b1 = _make_tile1x16(8)
_vnni_tile4x4_b4 = _make_tile4x4(2)
_vnni_tile4x4_b2 = _make_tile4x4(4)
_vnni_tile4x4_b1 = _make_tile4x4(8)


def split_queries(qi: np.ndarray, d: int, bits: int) -> np.ndarray:
    """Query rows (int16/int8 ``[nv, d]``) laid out for codes of ``bits`` (1, 2 or 4)
    bits read packed (:func:`_make_tile4x4`): int8, rows padded to a multiple of 4,
    and per chunk of ``64 * m`` dimensions (``m = 8 / bits`` codes per byte) the runs
    of the 64 dimensions ``= s mod m`` for ``s = 0 .. m-1``.

    Examples
    --------
    >>> split_queries(np.arange(6).reshape(1, 6), 6, 4)[0, [0, 1, 2, 64, 65, 66]].tolist()
    [0, 2, 4, 1, 3, 5]
    """
    return _query_bytes(qi, d, 8 // bits)


@nb.njit(cache=True, fastmath=False, parallel=True)
def _int_scan_vnni(codes, layout, q8, nv, limbs, qscale, qoff, a, b, t, out):
    n = codes.shape[0]
    dp = q8.shape[1]
    nblocks = (n + _BLOCK - 1) // _BLOCK
    pq = q8.ctypes.data
    per_tile = 4 // limbs  # real queries per 4-row tile (limbs is 1 or 2)
    for blk in nb.prange(nblocks):
        s = blk * _BLOCK
        e = min(n, s + _BLOCK)
        row = np.zeros(dp, np.uint8)
        by_rows = np.zeros((dp // 4, _BLOCK), np.uint32)  # rows_layout, for the 4 x 32 tiles
        dots = np.empty((4, _BLOCK), np.int32)
        for j in range(s, e):
            unpack_layout(codes[j], layout, row)
            rows_layout(row, j - s, by_rows)
        for v0 in range(0, nv, 4):
            for r in range(0, e - s, 32):
                _vnni_tile4x32_rows(
                    by_rows.ctypes.data + 4 * r, 4 * _BLOCK, pq + v0 * dp, dp, dp // 4,
                    dots.ctypes.data + 4 * r, 4 * _BLOCK,
                )  # fmt: skip
            for uu in range(per_tile):
                qq = v0 // limbs + uu
                if qq * limbs >= nv:
                    break
                s0 = qscale[qq * limbs]
                s1 = qscale[qq * limbs + limbs - 1]
                r0 = uu * limbs
                r1 = uu * limbs + limbs - 1
                for j in range(s, e):
                    out[qq, j] = combine(
                        dots[r0, j - s], dots[r1, j - s], limbs, s0, s1, qoff[qq], t[qq], a[j],
                        b[j],
                    )  # fmt: skip


@nb.njit(cache=True, fastmath=False, parallel=True)
def _int_scan_portable(codes, layout, d, qi, limbs, qscale, qoff, a, b, t, out):
    n = codes.shape[0]
    nq = qi.shape[0] // limbs
    nblocks = (n + _BLOCK - 1) // _BLOCK
    for blk in nb.prange(nblocks):
        s = blk * _BLOCK
        e = min(n, s + _BLOCK)
        buf8 = np.zeros(d, np.uint8)
        buf = np.empty((e - s, d), np.int16)
        for j in range(s, e):
            unpack_layout(codes[j], layout, buf8)
            for i in range(d):
                buf[j - s, i] = buf8[i]
        for qq in range(nq):
            s0 = qscale[qq * limbs]
            s1 = qscale[qq * limbs + limbs - 1]
            for j in range(s, e):
                row = buf[j - s]
                i0 = int_dot(row, qi[qq * limbs], d)
                i1 = int_dot(row, qi[qq * limbs + limbs - 1], d) if limbs > 1 else 0
                out[qq, j] = combine(i0, i1, limbs, s0, s1, qoff[qq], t[qq], a[j], b[j])


@nb.njit(cache=True, fastmath=False, inline="always")
def int_dot(row, qrow, d):
    """Exact int32 dot product of int16 rows (|values| small enough not to overflow)."""
    acc = np.int32(0)
    for i in range(d):
        acc = np.int32(acc + np.int32(row[i]) * np.int32(qrow[i]))
    return acc


def table_scan(codes, offset, bits, d, table, queries, a, out):
    """``out[q, j] = a[j] * sum_i queries[q, i] * table[c_ji]``.

    Codes start at byte ``offset`` of each row; ``table`` holds the level of each
    of the ``2**bits`` codes. ``codes`` is passed on read-only
    (:func:`~vecpress.kernels.read_only`: one compiled kernel for codes in memory and
    mapped from a file).

    Examples
    --------
    >>> out = np.empty((1, 1), np.float32)
    >>> table_scan(np.array([[0b10]], np.uint8), 0, 1, 2, np.float32([-1, 1]),
    ...            np.float32([[2, 3]]), np.float32([0.5]), out)
    >>> out.tolist()
    [[0.5]]
    """
    _table_scan(read_only(codes), offset, bits, d, table, queries, a, out)


@nb.njit(cache=True, fastmath=True, parallel=True)
def _table_scan(codes, offset, bits, d, table, queries, a, out):
    """:func:`table_scan`, compiled."""
    n = codes.shape[0]
    nq = queries.shape[0]
    nblocks = (n + _BLOCK - 1) // _BLOCK
    for blk in nb.prange(nblocks):
        s = blk * _BLOCK
        e = min(n, s + _BLOCK)
        buf8 = np.empty(d, np.uint8)
        buf = np.empty((e - s, d), np.float32)
        for j in range(s, e):
            unpack_row(codes[j], offset, bits, d, buf8)
            for i in range(d):
                buf[j - s, i] = table[buf8[i]]
        for q in range(nq):
            qq = queries[q]
            for j in range(s, e):
                row = buf[j - s]
                acc = np.float32(0.0)
                for i in range(d):
                    acc += row[i] * qq[i]
                out[q, j] = a[j] * acc


@intrinsic
def _popcount64(typingctx, x):
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


@nb.njit(cache=True)
def _load_words(src, offset, nbytes, dst):
    nw = dst.shape[0]
    for w in range(nw):
        v = np.uint64(0)
        for k in range(8):
            idx = w * 8 + k
            if idx < nbytes:
                v |= np.uint64(src[offset + idx]) << np.uint64(8 * k)
        dst[w] = v


def hamming_scan(codes, offset, nbytes, qwords, out):
    """``out[q, j]`` = number of differing bits between code row ``j`` and query ``q``.

    ``qwords`` is uint64[nq, ceil(nbytes/8)], the query bits in the same order;
    ``codes`` is passed on read-only (:func:`~vecpress.kernels.read_only`).

    Examples
    --------
    >>> out = np.empty((1, 1), np.int32)
    >>> hamming_scan(np.array([[0b1011]], np.uint8), 0, 1, pack_words(np.uint8([[1]])), out)
    >>> out.tolist()
    [[2]]
    """
    _hamming_scan(read_only(codes), offset, nbytes, qwords, out)


@nb.njit(cache=True, parallel=True)
def _hamming_scan(codes, offset, nbytes, qwords, out):
    """:func:`hamming_scan`, compiled."""
    n = codes.shape[0]
    nq = qwords.shape[0]
    nw = qwords.shape[1]
    nblocks = (n + _BLOCK - 1) // _BLOCK
    for blk in nb.prange(nblocks):
        s = blk * _BLOCK
        e = min(n, s + _BLOCK)
        buf = np.empty((e - s, nw), np.uint64)
        for j in range(s, e):
            _load_words(codes[j], offset, nbytes, buf[j - s])
        for q in range(nq):
            for j in range(s, e):
                c = 0
                for w in range(nw):
                    c += _popcount64(buf[j - s, w] ^ qwords[q, w])
                out[q, j] = c


def pack_words(bits_u8: np.ndarray) -> np.ndarray:
    """Turn packed bit rows ``uint8[n, nbytes]`` into ``uint64[n, ceil(nbytes/8)]``."""
    n, nbytes = bits_u8.shape
    nw = (nbytes + 7) // 8
    padded = np.zeros((n, nw * 8), np.uint8)
    padded[:, :nbytes] = bits_u8
    return padded.view("<u8").reshape(n, nw)
