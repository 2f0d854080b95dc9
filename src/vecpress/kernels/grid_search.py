"""Fused scan + top-k of grid codes over row ranges: the kernel of flat and IVF search.

The work is a list of *items*, each a range of code rows (a chunk of the flat
index, or of one inverted list) with the queries that must scan it. Every
(query, item) pair owns an output *slot*: a bounded heap of the ``k`` best rows
(:mod:`vecpress.kernels.heap`). Items run in parallel; within an item the rows
are read 64 at a time (in place for few queries, :func:`grid_scan_topk`, else
unpacked once for all of them and laid out by rows,
:func:`~vecpress.kernels.scan.rows_layout`, for tiles of 4 queries x 32 rows
without horizontal sums -- 4 x 16 with AVX2 and no VNNI,
:mod:`~vecpress.kernels.maddubs`) and scored against all of the item's queries with
the same exact integer dot products and the same float epilogue
(:func:`~vecpress.kernels.scan.combine`) as :func:`~vecpress.kernels.scan.int_scan`,
so a flat search ranks exactly as ``Codec.score`` + top-k. The float
epilogue is compiled without fast-math (no fused multiply-adds, no
reassociation), so its vectorised loop and its scalar remainder round alike and
results do not depend on how rows are split into items. The slots of each
query are then merged (:func:`merge_slots`). With VNNI, a search makes the plan
(:func:`plan_pairs`), the scan and the merge of the slots' unsorted heaps
(:func:`merge_heaps`) in one compiled call (:func:`grid_topk`); without, it calls them
one by one (:func:`grid_scan_topk` between).

The score of row ``j`` for query ``q`` through a slot with additive term ``e``::

    s = combine(<c_j, qi_q>, ...) + c_j + e
    l2:  s = 2 s - norms_j - qsq_q          (negated estimated squared distance)
"""

from __future__ import annotations

import functools
import sys

import numba as nb
import numpy as np

from . import read_only
from .bytepairs import WINDOW_BYTES, pair_parts, pair_queries, pair_tile
from .heap import heap_pad, heap_push, heap_sort
from .maddubs import TILE_ROWS, slot_queries, tile4x16, tile_layout, tile_queries, unpack_tiled
from .nibbles import HAVE_AVX2, nibble_dot_at
from .scan import (
    _BLOCK,
    HAVE_VNNI,
    IN_PLACE_BITS,
    _grid_queries_flat,
    _query_bytes,
    _vnni_tile1x16,
    _vnni_tile1x16_b1,
    _vnni_tile1x16_b2,
    _vnni_tile1x16_b4,
    _vnni_tile4x4,
    _vnni_tile4x4_b1,
    _vnni_tile4x4_b2,
    _vnni_tile4x4_b4,
    _vnni_tile4x32_rows,
    combine,
    grid_queries,
    int_dot,
    pad_queries_int8,
    query_limbs,
    query_offsets,
    rows_layout,
    split_queries,
    uniform_layout,
    unpack_layout,
)
from .wordlanes import (
    HAVE_VBMI,
    HAVE_VBMI2,
    NO_PARTS,
    field_parts,
    layout_key,
    part_queries,
    tile1x16_parts,
    tile1x16_words,
    tile4x4_parts,
    tile4x4_words,
    unpack_words,
    word_passes,
    word_queries,
    words_dot,
)
from .wordpack import word_readable

#: items with at most this many query rows (queries x limbs) read their codes in place
IN_PLACE_ROWS = 4
#: ``in_place_bits`` of the scan when codes are read by parts (:mod:`~vecpress.kernels.wordlanes`)
BY_PARTS = -1
#: ``in_place_bits`` of the scan when codes lie within 64-bit words and are read chunk by
#: chunk (:class:`~vecpress.kernels.wordlanes.WordPasses`, :func:`scan_tables`)
BY_WORDS = -2


@nb.njit(cache=True, inline="always")
def _tile1x16(per_byte, pa, sa, pq, nch, dst):
    """One query row against 16 code rows, codes ``8 / per_byte`` bits wide."""
    if per_byte == 2:
        _vnni_tile1x16_b4(pa, sa, pq, nch, dst)
    elif per_byte == 4:
        _vnni_tile1x16_b2(pa, sa, pq, nch, dst)
    elif per_byte == 8:
        _vnni_tile1x16_b1(pa, sa, pq, nch, dst)
    else:
        _vnni_tile1x16(pa, sa, pq, nch, dst)


@nb.njit(cache=True, inline="always")
def _tile4x4(per_byte, pa, sa, pq, sq, nch, dst, sd):
    """Four query rows against 4 code rows, codes ``8 / per_byte`` bits wide."""
    if per_byte == 2:
        _vnni_tile4x4_b4(pa, sa, pq, sq, nch, dst, sd)
    elif per_byte == 4:
        _vnni_tile4x4_b2(pa, sa, pq, sq, nch, dst, sd)
    elif per_byte == 8:
        _vnni_tile4x4_b1(pa, sa, pq, sq, nch, dst, sd)
    else:
        _vnni_tile4x4(pa, sa, pq, sq, nch, dst, sd)


@nb.njit(cache=True, fastmath=False, inline="always")
def _finish(x, cj, e, l2, nj, qq2):
    s = x + cj
    s = s + e
    if l2:
        s = s * np.float32(2.0)
        s = s - nj
        s = s - qq2
    return s


@nb.njit(cache=True, fastmath=False, inline="always")
def _score_loop(dots, r0, r1, n, limbs, s0, s1, off, tq, a, b, c, e, l2, norms, qq2, out, thr):
    for r in range(n):
        x = combine(dots[r0, r], dots[r1, r], limbs, s0, s1, off, tq, a[r], b[r])
        out[r] = _finish(x, c[r], e, l2, norms[r] if l2 else np.float32(0), qq2)
    hits = 0  # counted in a loop of its own: counting above keeps LLVM from vectorising
    for r in range(n):
        hits += out[r] >= thr
    return hits


@nb.njit(cache=True, fastmath=False, inline="always")
def _score_rows(dots, r0, r1, n, limbs, s0, s1, off, tq, a, b, c, e, l2, norms, qq2, out, thr):
    """Scores of ``n`` rows for one query from their integer dot products ``dots[r0]``
    (and ``dots[r1]``, the second limb's); returns how many reach ``thr``. ``a``, ``b``,
    ``c`` and (``l2``) ``norms`` are the rows' slices, indexed from 0 (from the block's
    first row, numba's wrap of negative indices would make LLVM gather them one by one)
    and sliced once a block by the caller (each slice is a reference count, an atomic
    add). One loop per (limbs, l2) case, with those as constants, so each is
    branch-free and LLVM vectorises it; the arithmetic is that of :func:`combine` and
    :func:`_finish`."""
    if limbs == 1:
        if l2:
            return _score_loop(
                dots, r0, r1, n, 1, s0, s1, off, tq, a, b, c, e, True, norms, qq2, out, thr
            )
        return _score_loop(
            dots, r0, r1, n, 1, s0, s1, off, tq, a, b, c, e, False, norms, qq2, out, thr
        )
    if l2:
        return _score_loop(
            dots, r0, r1, n, 2, s0, s1, off, tq, a, b, c, e, True, norms, qq2, out, thr
        )
    return _score_loop(dots, r0, r1, n, 2, s0, s1, off, tq, a, b, c, e, False, norms, qq2, out, thr)


@nb.njit(cache=True, inline="always")
def _offer_rows(sc, n, base, hs, hi, m, k, qthr, qq):
    """Offer ``n`` scored rows to one slot's heap; returns the new count.

    ``qthr[qq]`` is a lower bound on the query's final k-th score, shared by all
    its slots: once any slot holds ``k`` rows, its worst score bounds the final
    k-th, so rows below it cannot be in the result and are skipped in every slot
    (ties are kept for the merge's tie-break). Threads update it without locks:
    every value ever written is some full slot's k-th score, hence a valid
    bound, so a stale read only prunes less.
    """
    thr = qthr[qq]
    for r in range(n):
        v = sc[r]
        if v >= thr and (m < k or v > hs[0]):
            m = heap_push(hs, hi, m, v, base + r)
            if m == k and hs[0] > thr:
                thr = hs[0]
    if thr > qthr[qq]:
        qthr[qq] = thr
    return m


@nb.njit(cache=True, fastmath=False, inline="always")
def _score_tile(
    dots, v0, limbs, p0, nqw, qidx, qslot, qadd, qscale, qoff, t, a, b, c, l2, norms, qsq,
    n, s, sc, out_s, out_i, counts, qthr,
):  # fmt: skip
    """Score a block's ``n`` rows (first row ``s``; ``a``, ``b``, ``c``, ``norms`` their
    slices) for the queries of the tile of query rows ``v0 .. v0 + 3`` (``4 // limbs``
    queries of the item, their integer dot products in ``dots``) and offer each query's
    slot the rows that reach its bound."""
    k = out_s.shape[1]
    for uu in range(4 // limbs):
        u = v0 // limbs + uu
        if u >= nqw:
            break
        qq = qidx[p0 + u]
        slot = qslot[p0 + u]
        m = counts[slot]
        thr = qthr[qq] if m < k else max(qthr[qq], out_s[slot, 0])
        hits = _score_rows(
            dots, uu * limbs, uu * limbs + limbs - 1, n, limbs,
            qscale[qq * limbs], qscale[qq * limbs + limbs - 1], qoff[qq], t[qq],
            a, b, c, qadd[p0 + u], l2, norms, qsq[qq], sc, thr,
        )  # fmt: skip
        if hits:  # most blocks of a long scan hold no candidate
            counts[slot] = _offer_rows(sc, n, s, out_s[slot], out_i[slot], m, k, qthr, qq)


@nb.njit(cache=True, fastmath=False, parallel=True)
def _scan_vnni(
    codes, layout, d, in_place_rows, in_place_bits, starts, ends, qptr, qidx, qslot, qadd, q8, q8n,
    limbs, qscale,
    qoff, t, a, b, c, l2, norms, qsq, out_s, out_i, counts, qthr, poff, pperm, pctrl, pmask,
    pkeep, pat,
):  # fmt: skip
    nitems = starts.shape[0]
    cs = codes.shape[1]
    total = codes.shape[0] * cs
    pcodes = codes.ctypes.data
    nparts = poff.shape[0]
    preach = poff.max() + 64 if nparts else 0  # bytes of a row the parts read
    pp = (poff.ctypes.data, pperm.ctypes.data, pctrl.ctypes.data, pmask.ctypes.data)
    # codes within words unpacked to the compact order (q8's) where pat is given
    compact = in_place_bits == BY_WORDS and pat.shape[0] > 0
    wp = (
        poff.ctypes.data,
        pctrl.ctypes.data,
        pmask.ctypes.data,
        pkeep.ctypes.data,
        pat.ctypes.data,
    )
    wreach = 64 * (nparts - 1) if in_place_bits == BY_WORDS else 0
    for w in nb.prange(nitems):
        p0 = qptr[w]
        nqw = qptr[w + 1] - p0
        if nqw == 0:
            continue
        nv = nqw * limbs
        # Items scanned for few query rows read 1-, 2-, 4-bit (packed) or 8-bit codes in
        # place (no unpacking to amortise); items with many unpack each block once for all.
        in_place = nv <= in_place_rows
        by_parts = in_place and in_place_bits == BY_PARTS
        by_words = in_place and in_place_bits == BY_WORDS
        per_byte = 8 // in_place_bits if in_place and 0 < in_place_bits < 8 else 1
        row_bytes = (d + per_byte - 1) // per_byte  # code bytes of a row read in place
        qsrc = q8n if per_byte > 1 or by_parts or by_words else q8
        dq = qsrc.shape[1]  # bytes per query row
        nch = dq // (64 * per_byte)
        drow = nch * 64  # bytes per row in the block buffer (and read of a row in place)
        if by_parts:
            row_bytes = cs
            drow = max(cs, preach)
        if by_words:  # the chunks of 64 bytes, poff their passes' prefix sums
            row_bytes = cs
            drow = max(cs, 64 * (nparts - 1))
        qb = np.zeros(((nv + 3) // 4 * 4, dq), np.int8)
        for u in range(nqw):
            for li in range(limbs):
                qb[u * limbs + li] = qsrc[qidx[p0 + u] * limbs + li]
        # the last rows of the array, read in place, are copied here first (a 64-byte
        # chunk would run past the array): only an item that reaches them needs it
        tail = in_place and (ends[w] + 15) * cs + drow > total
        buf = np.zeros((_BLOCK if tail else 1, drow), np.uint8)
        # rows unpacked to bytes, laid out by rows (rows_layout) for the 4 x 32 tiles (64
        # bytes more for the compact unpacking's whole stores; the last rows, whose chunks
        # would run past the array, copied to wrow first)
        row = np.zeros(drow + 64, np.uint8)
        wrow = np.zeros(wreach if compact and not in_place else 0, np.uint8)
        prow, pwrow = row.ctypes.data, wrow.ctypes.data
        by_rows = np.zeros((0 if in_place else drow // 4, _BLOCK), np.uint32)
        pby_rows = by_rows.ctypes.data
        dots = np.empty((4, _BLOCK), np.int32)  # 4 query rows x the block's code rows
        sc = np.empty(_BLOCK, np.float32)
        pbuf = buf.ctypes.data
        pqb = qb.ctypes.data
        pdots = dots.ctypes.data
        for s in range(starts[w], ends[w], _BLOCK):
            n = min(ends[w] - s, _BLOCK)
            ra, rb, rc = a[s : s + n], b[s : s + n], c[s : s + n]  # sliced once a block
            rn = norms[s : s + n] if l2 else norms
            pa = pbuf
            sa = drow
            if not in_place:  # rows past n keep the last block's codes: their dots unused
                for r in range(n):
                    if compact:
                        at = pcodes + (s + r) * cs
                        if (s + r) * cs + wreach > total:
                            wrow[:cs] = codes[s + r]
                            at = pwrow
                        unpack_words(at, *wp, nparts - 1, prow)
                    else:
                        unpack_layout(codes[s + r], layout, row)
                    rows_layout(row[:drow], r, by_rows)
            elif (s + (n + 15) // 16 * 16 - 1) * cs + drow <= total:  # read rows in place
                pa = pcodes + s * cs
                sa = cs
            else:  # the last rows: a 64-byte chunk would run past the array
                for r in range(n):
                    buf[r, :row_bytes] = codes[s + r, :row_bytes]
            for v0 in range(0, nv, 4):
                if not in_place:
                    for r in range(0, n, 32):
                        _vnni_tile4x32_rows(
                            pby_rows + 4 * r, 4 * _BLOCK, pqb + v0 * dq, dq, drow // 4,
                            pdots + 4 * r, 4 * _BLOCK,
                        )  # fmt: skip
                elif nv - v0 <= 2:  # one or two query rows: 1 x 16 tiles waste nothing
                    for vv in range(nv - v0):
                        for r in range(0, n, 16):
                            dst = pdots + 4 * (vv * _BLOCK + r)
                            pq = pqb + (v0 + vv) * dq
                            if by_parts:
                                tile1x16_parts(pa + r * sa, sa, *pp, pq, nparts, dst)
                            elif by_words:
                                tile1x16_words(
                                    pa + r * sa, sa, pp[0], pp[2], pp[3], pq, nparts - 1, dst
                                )
                            else:
                                _tile1x16(per_byte, pa + r * sa, sa, pq, nch, dst)
                for r in range(0, n if in_place and nv - v0 > 2 else 0, 4):
                    dst = pdots + 4 * r
                    if by_parts:
                        tile4x4_parts(
                            pa + r * sa, sa, *pp, pqb + v0 * dq, dq, nparts, dst, 4 * _BLOCK
                        )
                    elif by_words:
                        tile4x4_words(
                            pa + r * sa, sa, pp[0], pp[2], pp[3], pqb + v0 * dq, dq, nparts - 1,
                            dst, 4 * _BLOCK,
                        )  # fmt: skip
                    else:
                        _tile4x4(per_byte, pa + r * sa, sa, pqb + v0 * dq, dq, nch, dst, 4 * _BLOCK)
                _score_tile(
                    dots, v0, limbs, p0, nqw, qidx, qslot, qadd, qscale, qoff, t, ra, rb, rc,
                    l2, rn, qsq, n, s, sc, out_s, out_i, counts, qthr,
                )  # fmt: skip


def packed_queries(qi: np.ndarray, d: int, bits: int) -> np.ndarray:
    """Query rows ``qi`` (int16[nv, d] of int8 values: one limb) as :func:`_packed_dot`
    reads them against ``bits``-bit codes packed ``p = 8 // bits`` a byte:
    int8[nv, p, ceil(d / p)], ``out[v, g, i] = qi[v, p i + g]`` (the dimension of the
    ``g``-th code of byte ``i``), zero past ``d``.

    Examples
    --------
    >>> packed_queries(np.arange(5, dtype=np.int16)[None], 5, 4)[0].tolist()
    [[0, 2, 4], [1, 3, 0]]
    """
    per_byte = 8 // bits
    out = np.zeros((qi.shape[0], per_byte, -(-d // per_byte)), np.int8)
    wide = qi.dtype != np.int16 and qi.size and not -128 <= qi.min() <= qi.max() <= 127
    if wide or not _pack_queries(np.ascontiguousarray(qi, np.int16), d, per_byte, out):
        raise ValueError(
            f"packed queries take int8 values (one limb), found {int(qi.min())}..{int(qi.max())}"
        )
    return out


@nb.njit(cache=True)
def _pack_queries(qi, d, per_byte, out):
    """:func:`packed_queries`' layout, in one compiled pass (one query's is part of every
    one-query scan); false where a value is outside int8 (``out`` then incomplete)."""
    for v in range(qi.shape[0]):
        for i in range(d):
            x = qi[v, i]
            if x < -128 or x > 127:
                return False
            out[v, i % per_byte, i // per_byte] = x
    return True


@nb.njit(cache=True, inline="always")
def _packed_dot(codes, j, qv, q0, q1, bits):
    """The exact integer dot product of row ``j``'s ``bits``-bit codes (1, 2 or 4), packed
    ``8 // bits`` a byte from the lowest bits up, with a query laid out by
    :func:`packed_queries` (``qv``: its int8[8 // bits, nbytes]; ``q0``, ``q1``: its
    first two rows, taken once by the caller): the codes are read where they lie, in a
    loop over the bytes that the compiler vectorises (4-bit codes:
    :func:`~vecpress.kernels.nibbles.nibble_dot_at`, by AVX2 where there is AVX2). The
    row and the query rows are indexed, not sliced, per row (a slice is a reference
    count, an atomic add)."""
    acc = np.int32(0)
    nbytes = qv.shape[1]
    if bits == 4:
        acc = nibble_dot_at(codes, j, 0, q0, q1, nbytes)
    elif bits == 2:
        for i in range(nbytes):
            v = np.int32(codes[j, i])
            acc += (v & 3) * np.int32(qv[0, i]) + ((v >> 2) & 3) * np.int32(qv[1, i])
            acc += ((v >> 4) & 3) * np.int32(qv[2, i]) + (v >> 6) * np.int32(qv[3, i])
    else:
        for g in range(8):
            for i in range(nbytes):
                acc += ((np.int32(codes[j, i]) >> g) & 1) * np.int32(qv[g, i])
    return acc


#: code widths the portable scan reads packed, for items of few queries (:func:`_packed_dot`)
PACKED_BITS = (1, 2, 4)
#: with AVX2, 4-bit rows are read packed only while at most this many of their bytes lie
#: past their last whole 32-byte chunk (:func:`reads_packed`)
NIBBLE_TAIL = 8


def reads_packed(bits: int, d: int) -> bool:
    """Whether the portable scan of at most :data:`IN_PLACE_ROWS` query rows reads
    ``bits``-bit codes of dimension ``d`` packed (:func:`_packed_dot`), rather than by
    byte pairs (:mod:`~vecpress.kernels.bytepairs`, with AVX2). (In larger scans, items
    of few query rows read the widths of :data:`PACKED_BITS` packed.)

    Without AVX2: the widths of :data:`PACKED_BITS`. With AVX2: 4-bit codes whose row
    leaves at most :data:`NIBBLE_TAIL` bytes to the nibble kernel's scalar loop, past its
    whole 32-byte chunks; byte pairs read the rest faster. One query over 100,000 rows
    (AMD EPYC, ``hd2,rq<b>``): 4 bits 789 against 901 µs at d = 64, 1,593 against
    2,766 at d = 384, but 2,477 against 892 at d = 50 and 1,932 against 1,054 at d = 96;
    1 and 2 bits by pairs at every d from 32 to 384 (1 bit, d = 384: 9,337 against 2,505).

    Examples
    --------
    >>> [reads_packed(4, d) for d in (50, 64, 384)] == [not HAVE_AVX2, True, True]
    True
    """
    if bits not in PACKED_BITS:
        return False
    if not HAVE_AVX2:
        return True
    return bits == 4 and ((d + 1) // 2) % 32 <= NIBBLE_TAIL


@nb.njit(cache=True, fastmath=False)
def _scan_tiled(
    codes, tlayout, ngroups, start, end, p0, nqw, qidx, qslot, qadd, limbs, qscale, qoff, t,
    a, b, c, l2, norms, qsq, out_s, out_i, counts, qthr, segs, q8,
):  # fmt: skip
    """One item of :func:`_scan_portable` for many query rows, with AVX2: each block of
    rows unpacked to bytes once (:func:`~vecpress.kernels.maddubs.unpack_tiled`), laid out
    by rows (:func:`~vecpress.kernels.scan.rows_layout`) and scored 4 query rows x 16 code
    rows at a time (:func:`~vecpress.kernels.maddubs.tile4x16`; ``q8``: the query rows of
    :func:`~vecpress.kernels.maddubs.slot_queries`); the products are the same exact
    integers as the 16-bit loop's."""
    nv = nqw * limbs
    rows = np.empty(nv, np.int64)
    for u in range(nqw):
        for li in range(limbs):
            rows[u * limbs + li] = qidx[p0 + u] * limbs + li
    qt = tile_queries(q8, rows, ngroups)
    row = np.zeros(4 * ngroups, np.uint8)  # bytes no code fills stay 0
    by_rows = np.zeros((ngroups, _BLOCK), np.uint32)
    dots = np.zeros((4, _BLOCK), np.int32)  # stays 0 where no code is coded (no segment)
    sc = np.empty(_BLOCK, np.float32)
    pby_rows = by_rows.ctypes.data
    pqt = qt.ctypes.data
    pdots = dots.ctypes.data
    for s in range(start, end, _BLOCK):
        n = min(end - s, _BLOCK)
        ra, rb, rc = a[s : s + n], b[s : s + n], c[s : s + n]  # sliced once a block
        rn = norms[s : s + n] if l2 else norms
        for r in range(n):  # rows past n keep the last block's codes: their dots unused
            unpack_tiled(codes[s + r], tlayout, row)
            rows_layout(row, r, by_rows)
        for v0 in range(0, nv, 4):
            for r in range(0, n, TILE_ROWS):
                for sg in range(segs.shape[0]):  # the groups of each flush (tile_layout)
                    g0 = segs[sg, 0]
                    tile4x16(
                        pby_rows + 4 * r + g0 * 4 * _BLOCK, 4 * _BLOCK,
                        pqt + ((v0 // 4) * ngroups + g0) * 16, segs[sg, 1] - g0, segs[sg, 2],
                        1 if sg == 0 else 0, pdots + 4 * r, 4 * _BLOCK,
                    )  # fmt: skip
            _score_tile(
                dots, v0, limbs, p0, nqw, qidx, qslot, qadd, qscale, qoff, t, ra, rb, rc,
                l2, rn, qsq, n, s, sc, out_s, out_i, counts, qthr,
            )  # fmt: skip


@nb.njit(cache=True, fastmath=False)
def _scan_pairs(
    codes, start, end, p0, nqw, qidx, qslot, qadd, limbs, qscale, qoff, t, a, b, c, l2,
    norms, qsq, out_s, out_i, counts, qthr, pp, nparts, preach, qpair,
):  # fmt: skip
    """One item of :func:`_scan_by_pairs` (1-4 query rows, AVX2): the codes read
    where they lie by byte pairs (:func:`~vecpress.kernels.bytepairs.pair_tile`, ``pp``:
    the addresses of the part tables; ``qpair``: the query rows of
    :func:`~vecpress.kernels.bytepairs.pair_queries`), ``4 // tq`` code rows x ``tq`` query
    rows a tile; the products are the same exact integers as the 16-bit loop's."""
    nv = nqw * limbs
    cs = codes.shape[1]
    total = codes.shape[0] * cs
    tq = 1 if nv == 1 else (2 if nv == 2 else 4)
    step = 4 // tq
    qb = np.zeros((4, qpair.shape[1]), np.int16)  # the item's query rows
    for u in range(nqw):
        for li in range(limbs):
            qb[u * limbs + li] = qpair[qidx[p0 + u] * limbs + li]
    # the last rows of the array are copied here first (a part would read past it)
    drow = max(cs, preach)
    tail = (end + 3) * cs + drow > total
    pad = np.zeros((_BLOCK if tail else 1, drow), np.uint8)
    dots = np.empty((4, _BLOCK), np.int32)
    sc = np.empty(_BLOCK, np.float32)
    for s in range(start, end, _BLOCK):
        n = min(end - s, _BLOCK)
        ra, rb, rc = a[s : s + n], b[s : s + n], c[s : s + n]  # sliced once a block
        rn = norms[s : s + n] if l2 else norms
        pa, sa = codes.ctypes.data + s * cs, cs
        if (s + (n + step - 1) // step * step - 1) * cs + drow > total:
            for r in range(n):
                pad[r, :cs] = codes[s + r]
            pa, sa = pad.ctypes.data, drow
        for r in range(0, n, step):
            pair_tile(
                tq, pa + r * sa, sa, pp, qb.ctypes.data, 2 * qb.shape[1], nparts,
                dots.ctypes.data + 4 * r, 4 * _BLOCK,
            )  # fmt: skip
        _score_tile(
            dots, 0, limbs, p0, nqw, qidx, qslot, qadd, qscale, qoff, t, ra, rb, rc,
            l2, rn, qsq, n, s, sc, out_s, out_i, counts, qthr,
        )  # fmt: skip


@nb.njit(cache=True, fastmath=False, parallel=True)
def _scan_by_pairs(
    codes, starts, ends, qptr, qidx, qslot, qadd, limbs, qscale, qoff, t, a, b, c, l2, norms,
    qsq, out_s, out_i, counts, qthr, poff, pshuf, pmul, pmask, qpair,
):  # fmt: skip
    """Every item by :func:`_scan_pairs` (scans of at most :data:`IN_PLACE_ROWS` query rows,
    with AVX2): a parallel loop of its own, so that a one-query search compiles this
    small one, not :func:`_scan_portable` (first search of a fresh install: about 10
    against 24 s here)."""
    preach = poff.max() + WINDOW_BYTES  # bytes of a row the parts read
    pp = (poff.ctypes.data, pshuf.ctypes.data, pmul.ctypes.data, pmask.ctypes.data)
    for w in nb.prange(starts.shape[0]):
        p0 = qptr[w]
        nqw = qptr[w + 1] - p0
        if nqw:
            _scan_pairs(
                codes, starts[w], ends[w], p0, nqw, qidx, qslot, qadd, limbs, qscale, qoff,
                t, a, b, c, l2, norms, qsq, out_s, out_i, counts, qthr, pp, poff.shape[0],
                preach, qpair,
            )  # fmt: skip


@nb.njit(cache=True, fastmath=False, parallel=True)
def _scan_portable(
    codes, layout, d, starts, ends, qptr, qidx, qslot, qadd, qi, limbs, qscale, qoff, t,
    a, b, c, l2, norms, qsq, out_s, out_i, counts, qthr, packed, qp, tiles, q8, tlayout, ngroups,
    segs, wfirst, wctrl, wmask, qw,
):  # fmt: skip
    nitems = starts.shape[0]
    k = out_s.shape[1]
    cs = codes.shape[1]
    wreach = 64 * (wfirst.shape[0] - 1)  # a layout within words: the bytes its passes read
    wwidth = (max(cs, wreach) + 7) // 8 * 8  # a row padded with zeros to whole words
    # rows whose passes lie within them and start on whole words are read where they are
    wdirect = 0 < wreach <= cs and cs % 8 == 0 and codes.ctypes.data % 8 == 0
    for w in nb.prange(nitems):
        p0 = qptr[w]
        nqw = qptr[w + 1] - p0
        if nqw == 0:
            continue
        nv = nqw * limbs
        # few queries: each reads the packed codes (unpacking a row costs several dots)
        direct = packed > 0 and nv <= IN_PLACE_ROWS
        # many: with AVX2, rows unpacked to bytes and laid out by rows for 4 x 16 tiles
        # (1-4 query rows waste most of a tile: one kl4 query over 100,000 384-d rows
        # took 40 ms through one, 31.5 by the 16-bit loop, 2.8 by byte pairs)
        tiled = tiles and not direct and nv > IN_PLACE_ROWS
        # few, over codes within 64-bit words (kl): read by the word passes, not unpacked
        # run by run (38 runs of alternating widths for kl4 at d = 384)
        bywords = wreach > 0 and not direct and nv <= IN_PLACE_ROWS
        if tiled:
            _scan_tiled(
                codes, tlayout, ngroups, starts[w], ends[w], p0, nqw, qidx, qslot, qadd,
                limbs, qscale, qoff, t, a, b, c, l2, norms, qsq, out_s, out_i, counts, qthr,
                segs, q8,
            )  # fmt: skip
            continue
        buf8 = np.zeros(d, np.uint8)
        buf = np.empty((0 if direct or bywords else _BLOCK, d), np.int16)
        wrows = np.zeros((_BLOCK if bywords and not wdirect else 0, wwidth), np.uint8)
        dots = np.empty((2, _BLOCK), np.int32)
        sc = np.empty(_BLOCK, np.float32)
        for s in range(starts[w], ends[w], _BLOCK):
            n = min(ends[w] - s, _BLOCK)
            ra, rb, rc = a[s : s + n], b[s : s + n], c[s : s + n]  # sliced once a block
            rn = norms[s : s + n] if l2 else norms
            if bywords and not wdirect:
                for r in range(n):
                    wrows[r, :cs] = codes[s + r]
            elif not direct:
                for r in range(n):
                    unpack_layout(codes[s + r], layout, buf8)
                    for i in range(d):
                        buf[r, i] = buf8[i]
            for u in range(nqw):
                qq = qidx[p0 + u]
                slot = qslot[p0 + u]
                if direct:
                    qv = qp[qq]
                    q0, q1 = qv[0], qv[min(1, qv.shape[0] - 1)]
                    for r in range(n):
                        dots[0, r] = _packed_dot(codes, s + r, qv, q0, q1, packed)
                for r in range(n if bywords else 0):
                    for li in range(limbs):
                        qv = qw[qq * limbs + li]
                        if wdirect:
                            dots[li, r] = words_dot(codes[s + r], wfirst, wctrl, wmask, qv)
                        else:
                            dots[li, r] = words_dot(wrows[r], wfirst, wctrl, wmask, qv)
                for r in range(0 if direct or bywords else n):
                    for li in range(limbs):
                        dots[li, r] = int_dot(buf[r], qi[qq * limbs + li], d)
                m = counts[slot]
                thr = qthr[qq] if m < k else max(qthr[qq], out_s[slot, 0])
                hits = _score_rows(
                    dots, 0, limbs - 1, n, limbs,
                    qscale[qq * limbs], qscale[qq * limbs + limbs - 1], qoff[qq], t[qq],
                    ra, rb, rc, qadd[p0 + u], l2, rn, qsq[qq], sc, thr,
                )  # fmt: skip
                if hits:  # most blocks of a long scan hold no candidate
                    counts[slot] = _offer_rows(sc, n, s, out_s[slot], out_i[slot], m, k, qthr, qq)


def grid_scan_topk(
    codes, bits, d, starts, ends, qptr, qidx, qslot, qadd, qi, limbs, qscale, qoff, t,
    a, b, c, norms, qsq, nslots, k, *, l2=False, portable=False, in_place=True, layout=None,
    tiles=True,
):  # fmt: skip
    """Scan items of grid-code rows for their queries; the ``k`` best rows per slot.

    With AVX-512 VNNI, items scanned for at most :data:`IN_PLACE_ROWS` query rows
    read 1-, 2-, 4-bit (packed) and 8-bit codes in place: each 64-byte chunk is
    split into its codes by shifts and masks in registers. With AVX-512 VBMI as
    well, such items read codes of other widths and mixed-width layouts in place
    too, by parts (:mod:`~vecpress.kernels.wordlanes`). Without VNNI (or
    ``portable=True``), scans of at most :data:`IN_PLACE_ROWS` query rows in all read
    their codes in place too: by byte pairs where the CPU has AVX2
    (:mod:`~vecpress.kernels.bytepairs`, any width and layout: one ``kl4`` query over
    100,000 384-d rows in 2.8 ms, 31.5 ms unpacking each row, AMD EPYC), except 4-bit
    codes of rows that are mostly whole 32-byte chunks, read packed by ``vpmaddubsw``
    (:mod:`~vecpress.kernels.nibbles`, :func:`reads_packed`). In larger scans, and
    without AVX2, items of few query rows read 1-, 2- and 4-bit codes of one limb
    packed (:func:`_packed_dot`), ``kl``'s codes placed within 64-bit words by their
    word passes (:func:`~vecpress.kernels.wordlanes.words_dot`) and other codes
    unpacked row by row. Otherwise (VNNI and
    ``in_place=False``, items of more query rows, or no VBMI for those layouts) each
    block of rows is unpacked to bytes once for all the item's queries, laid out by rows
    (:func:`~vecpress.kernels.scan.rows_layout`) and scored 4 queries x 32 rows at a
    time (batch scans about 1.24 x the queries/s of the 4 x 4 tiles over rows one
    after another: 100,000 x 384 rows, 1,000 queries, one core). Without VNNI, items
    of more than :data:`IN_PLACE_ROWS` query rows are scored the same way, 4 queries x
    16 rows at a time, by AVX2 ``vpmaddubsw`` (:mod:`~vecpress.kernels.maddubs`, every
    width and layout) where the CPU has AVX2 and ``tiles`` is true; the other items by a
    16-bit loop over each unpacked row (about 4.6 x slower for 1,000 queries: MiniLM,
    100,000 ``hd2,rq4`` rows, AMD EPYC; faster for 1-4 query rows, which waste most of
    a tile).

    Parameters
    ----------
    codes : uint8[n, code_size]
        Rows whose first bytes are ``bits``-bit packed codes of dimension ``d``,
        or whose runs of codes of several widths lie as ``layout`` says
        (:func:`~vecpress.kernels.scan.check_layout`; ``bits`` then only sets
        the query limbs).
    starts, ends : int64[nitems]
        Row range of each item.
    qptr : int64[nitems + 1]
        Item ``w`` is scanned for the entries ``qptr[w]:qptr[w + 1]`` of
        ``qidx`` (query index), ``qslot`` (output slot) and ``qadd`` (float32
        term added to the scores of that pair).
    qi, qscale, qoff, t
        Quantized queries from :func:`~vecpress.kernels.scan.grid_queries` and
        the per-query ``t``.
    a, b, c : float32[n]
        Per-row terms (``c`` is added after the linear form).
    norms, qsq : float32[n], float32[nq]
        Used with ``l2=True`` only.

    Returns
    -------
    (scores float32[nslots, k], rows int64[nslots, k])
        Each slot best first, padded with row -1 and score -inf. A slot holds
        its item's best rows *that can still be among the query's best k*
        (rows below a k-th score already reached elsewhere are pruned), so
        merging a query's slots gives its exact top-k.
    """
    out_s = np.empty((nslots, k), np.float32)
    out_i = np.empty((nslots, k), np.int64)
    counts = np.zeros(nslots, np.int64)
    qthr = np.full(qsq.shape[0], -np.inf, np.float32)
    # in memory or mapped from a file, the same compiled scan (read_only)
    codes, norms = read_only(codes), read_only(norms)
    args = (starts, ends, qptr, qidx, qslot, qadd)
    tail = (a, b, c, bool(l2), norms, qsq, out_s, out_i, counts, qthr)
    uniform = layout is None
    if HAVE_VNNI and not portable:
        layout, in_place_bits, rows, parts = vnni_reads(bits, d, layout, in_place)
        q8, q8n = vnni_queries(qi, d, in_place_bits, parts)
        _scan_vnni(
            codes, layout, d, rows, in_place_bits, *args, q8, q8n, limbs, qscale, qoff, t, *tail,
            *scan_tables(in_place_bits, parts),
        )  # fmt: skip
    else:
        layout = uniform_layout(bits, d) if uniform else layout
        packed = bits if in_place and uniform and limbs == 1 and bits in PACKED_BITS else 0
        # scans of at most IN_PLACE_ROWS query rows (no item has more): byte pairs with
        # AVX2, unless the codes are read faster packed
        nrows = qi.shape[0]
        by_pairs = HAVE_AVX2 and in_place and layout.shape[0] and nrows <= IN_PLACE_ROWS
        by_pairs = bool(by_pairs and not (packed and reads_packed(bits, d)))
        if by_pairs:
            pairs = pair_parts(layout)
            _scan_by_pairs(
                codes, *args, limbs, qscale, qoff, t, *tail, pairs.offsets, pairs.shuffle,
                pairs.mult, pairs.mask, pair_queries(qi, pairs),
            )  # fmt: skip
        else:
            qp = packed_queries(qi, d, packed) if packed else np.zeros((nrows, 1, 1), np.int8)
            # AVX2 tiles for items of many query rows (8-bit codes spread, tile_layout)
            tlayout, ngroups, q8 = layout, 0, np.zeros((4, 64), np.int8)
            segs = np.zeros((0, 3), np.int64)
            # (no item has more query rows than the whole scan: for a few, no tile)
            tiles = bool(HAVE_AVX2 and tiles and nrows > IN_PLACE_ROWS)
            if tiles:
                tlayout, slots, width, segs = tile_layout(layout, d)
                q8, ngroups = slot_queries(qi, slots, width), (width + 3) // 4
            # a kl layout within 64-bit words, few query rows: read by its word passes (a
            # kl with no coded axis has no layout to read)
            words = (_NO_FIRST, _NO_PERM, _NO_PERM, _NO_QW)
            kl_words = in_place and not uniform and LITTLE_ENDIAN and layout.shape[0] > 0
            if kl_words and _word_readable(layout_key(layout)):
                wp = word_passes(layout)
                words = (wp.first, wp.ctrl, wp.mask, word_queries(qi, wp))
            _scan_portable(
                codes, layout, d, *args, qi, limbs, qscale, qoff, t, *tail, packed, qp, tiles,
                q8, tlayout, ngroups, segs, *words,
            )  # fmt: skip
    _sort_slots(out_s, out_i, counts)
    return out_s, out_i


def vnni_reads(bits: int, d: int, layout, in_place: bool = True):
    """How the VNNI scan (:func:`grid_scan_topk`, :func:`grid_topk`) reads ``bits``-bit codes
    of ``d`` dimensions laid out as ``layout`` (``None``: one width from byte 0):
    ``(layout, in_place_bits, in_place_rows, parts)``. Items of at most ``in_place_rows``
    query rows read 1-, 2-, 4- and 8-bit codes of one width in place (``in_place_bits``
    their width), other widths and layouts where the CPU has VBMI: chunk by chunk where
    no code crosses a 64-bit word of the row and no word holds more codes than a chunk's
    passes read (:func:`~vecpress.kernels.wordpack.word_readable`; :data:`BY_WORDS`,
    ``parts`` its :func:`~vecpress.kernels.wordlanes.word_passes`), else by parts
    (:data:`BY_PARTS`, ``parts`` their :func:`~vecpress.kernels.wordlanes.field_parts`);
    else every block is unpacked (``in_place_bits`` 0).

    Examples
    --------
    >>> layout, how, rows, parts = vnni_reads(4, 384, None)
    >>> layout.tolist(), how, rows, parts.offsets.size
    ([[0, 384, 4, 0]], 4, 4, 0)
    """
    uniform = layout is None
    if uniform:
        layout = _uniform(bits, d)
    in_place_bits = 0
    if in_place and uniform and bits in IN_PLACE_BITS:
        in_place_bits = bits
    elif in_place and HAVE_VBMI and layout.shape[0]:  # (kl with no coded axis: none)
        in_place_bits = BY_WORDS if _word_readable(layout_key(layout)) else BY_PARTS
    rows = IN_PLACE_ROWS if in_place_bits else 0
    parts = NO_PARTS
    if in_place_bits == BY_PARTS:
        parts = field_parts(layout)
    elif in_place_bits == BY_WORDS:
        parts = word_passes(layout)
    return layout, in_place_bits, rows, parts


#: what the scan takes of tables it does not read: no permutations, lanes or offsets
_NO_PERM = np.zeros((0, 64), np.uint8)
_NO_KEEP = np.zeros(0, np.uint64)
_NO_AT = np.zeros(0, np.int64)
#: no word passes (:func:`_scan_portable` reads the layout run by run)
_NO_FIRST = np.zeros(1, np.int64)
_NO_QW = np.zeros((1, 64), np.int8)
#: :func:`~vecpress.kernels.wordlanes.words_dot` reads a row's bytes as little-endian words
LITTLE_ENDIAN = sys.byteorder == "little"


def scan_tables(in_place_bits: int, parts) -> tuple:
    """The tables :func:`vnni_reads` chose, as the VNNI scan takes them: ``(poff, pperm,
    pctrl, pmask, pkeep, pat)``: a :class:`~vecpress.kernels.wordlanes.FieldParts`'
    offsets, permutations, controls and masks; or a
    :class:`~vecpress.kernels.wordlanes.WordPasses`' ``first``, controls, masks, and where
    the CPU compacts lanes (AVX-512 VBMI2), its ``keep`` and ``at`` (else empty: the rows
    are unpacked as their layout says)."""
    if in_place_bits == BY_WORDS:
        keep, at = (parts.keep, parts.at) if HAVE_VBMI2 else (_NO_KEEP, _NO_AT)
        return parts.first, _NO_PERM, parts.ctrl, parts.mask, keep, at
    return parts.offsets, parts.perm, parts.ctrl, parts.mask, _NO_KEEP, _NO_AT


@functools.lru_cache(maxsize=64)
def _word_readable(key: bytes) -> bool:
    """:func:`~vecpress.kernels.wordpack.word_readable` of the layout ``key``
    (:func:`~vecpress.kernels.wordlanes.layout_key`), worked out once a layout."""
    return word_readable(np.frombuffer(key, np.int64).reshape(-1, 4))


def vnni_queries(qi: np.ndarray, d: int, in_place_bits: int, parts) -> tuple:
    """The query rows ``qi`` laid out for the VNNI scan (:func:`vnni_reads`): ``(q8, q8n)``,
    the rows as int8 (:func:`~vecpress.kernels.scan.pad_queries_int8`) and as the codes
    read in place take them (:func:`~vecpress.kernels.scan.split_queries`,
    :func:`~vecpress.kernels.wordlanes.part_queries`; ``q8`` where no split is needed)."""
    q8 = pad_queries_int8(qi)
    if in_place_bits == BY_WORDS:
        # q8 in the compact order where rows are unpacked so (VBMI2), and only where an
        # item can have more query rows than are read in place (a one-query search never
        # unpacks, so it lays out no q8 of its own)
        if HAVE_VBMI2 and qi.shape[0] > IN_PLACE_ROWS:
            q8 = pad_queries_int8(qi[:, parts.order])
        return q8, part_queries(qi, parts)
    if in_place_bits == BY_PARTS:
        return q8, part_queries(qi, parts)
    return q8, split_queries(qi, d, in_place_bits) if 0 < in_place_bits < 8 else q8


#: :func:`~vecpress.kernels.scan.uniform_layout`, made once per width and dimension (the
#: arrays are shared: the scans only read them)
_uniform = functools.lru_cache(maxsize=256)(uniform_layout)


def grid_topk(
    codes, bits, d, starts, ends, list_ptr, lists, adds, q, center, qoff, t, a, b, c, norms,
    qsq, k, *, l2=False, layout=None,
):  # fmt: skip
    """The ``k`` best rows of the queries' probed lists on a CPU with AVX-512 VNNI,
    ``(rows int64[nq, k], scores float32[nq, k])``: the queries quantized
    (:func:`~vecpress.kernels.scan.grid_queries`) and laid out (:func:`vnni_queries`),
    then in one compiled call :func:`plan_pairs`, the VNNI scan :func:`grid_scan_topk`
    runs and :func:`merge_heaps` (:func:`merge_slots` without sorting each slot first):
    the result is the general path's to the bit. Queries of codes of one width read in
    place about one centre (``rq``, ``int``, ``lvq``) are quantized and laid out by one
    compiled call too. A one-query IVF search otherwise makes a dozen calls and
    allocations around its scan (~20 µs with the caches warm, more after another index's
    query), and one compiled entry serves every batch size (the scan compiles once).

    ``lists``, ``adds``: as :func:`plan_pairs` takes them (int64 and float32 ``[nq, P]``);
    ``q``, ``center``, ``qoff``: as :func:`~vecpress.kernels.scan.grid_queries`; the rest
    as :func:`grid_scan_topk`.

    Examples
    --------
    >>> from vecpress.kernels.scan import grid_queries
    >>> rng = np.random.default_rng(0)
    >>> codes = rng.integers(0, 256, (100, 32), dtype=np.uint8)  # 64 dims of 4 bits
    >>> q = rng.standard_normal((1, 64)).astype(np.float32)
    >>> ones, zeros = np.ones(100, np.float32), np.zeros(100, np.float32)
    >>> starts, ends, list_ptr = np.array([0]), np.array([100]), np.array([0, 1])
    >>> lists, adds = np.zeros((1, 1), np.int64), np.zeros((1, 1), np.float32)
    >>> t, qsq = np.zeros(1, np.float32), np.zeros(1, np.float32)
    >>> if HAVE_VNNI:
    ...     rows, scores = grid_topk(codes, 4, 64, starts, ends, list_ptr, lists, adds, q,
    ...                              7.5, 0.0, t, ones, zeros, zeros, ones, qsq, 5)
    ...     qi, qs, off = grid_queries(q, 7.5, 0.0, 4)
    ...     slot_s, slot_i = grid_scan_topk(codes, 4, 64, starts, ends, np.array([0, 1]),
    ...         np.array([0]), np.array([0]), np.zeros(1, np.float32), qi, 1, qs, off, t,
    ...         ones, zeros, zeros, ones, qsq, 1, 5)
    ...     assert (rows == slot_i).all() and (scores == slot_s).all()
    """
    bits = int(bits)
    limbs = query_limbs(bits)
    layout, in_place_bits, rows, parts = vnni_reads(bits, d, layout)
    if np.ndim(center) == 0 and in_place_bits not in (BY_PARTS, BY_WORDS):  # one compiled call
        qoff = query_offsets(qoff, q.shape[0])
        per_byte = 8 // in_place_bits if 0 < in_place_bits < 8 else 1
        q8, q8n, qscale, off = _flat_queries(
            np.ascontiguousarray(q, np.float32), float(center), qoff, limbs, d, per_byte
        )
    else:
        qi, qscale, off = grid_queries(q, center, qoff, bits)
        q8, q8n = vnni_queries(qi, d, in_place_bits, parts)
    return _grid_topk(
        read_only(codes), layout, d, rows, in_place_bits, limbs, starts, ends, list_ptr, lists,
        adds, q8, q8n, qscale, off, t, a, b, c, bool(l2), read_only(norms), qsq, k,
        *scan_tables(in_place_bits, parts),
    )  # fmt: skip


@nb.njit(cache=True)
def _flat_queries(q, center, qoff, limbs, d, per_byte):
    """:func:`grid_topk`'s queries about one centre: quantized
    (:func:`~vecpress.kernels.scan.grid_queries`) and laid out as :func:`vnni_queries`
    lays them out (``per_byte`` codes a byte read in place: 1 for none)."""
    qi, qscale, off = _grid_queries_flat(q, center, qoff, limbs)
    q8 = _query_bytes(qi, d, 1)
    q8n = _query_bytes(qi, d, per_byte) if per_byte > 1 else q8
    return q8, q8n, qscale, off


@nb.njit(cache=True)
def _grid_topk(
    codes, layout, d, in_place_rows, in_place_bits, limbs, starts, ends, list_ptr, lists,
    adds, q8, q8n, qscale, off, t, a, b, c, l2, norms, qsq, k, poff, pperm, pctrl, pmask,
    pkeep, pat,
):  # fmt: skip
    """:func:`grid_topk`'s compiled call: plan, scan, merge (:func:`merge_heaps`)."""
    qptr, qidx, qslot, qadd, qslot_ptr = plan_pairs(list_ptr, lists, adds)
    nq = qsq.shape[0]
    nslots = qslot_ptr[-1]
    out_s = np.empty((nslots, k), np.float32)
    out_i = np.empty((nslots, k), np.int64)
    counts = np.zeros(nslots, np.int64)
    qthr = np.full(nq, -np.inf, np.float32)
    _scan_vnni(
        codes, layout, d, in_place_rows, in_place_bits, starts, ends, qptr, qidx, qslot, qadd,
        q8, q8n, limbs, qscale, off, t, a, b, c, l2, norms, qsq, out_s, out_i, counts, qthr,
        poff, pperm, pctrl, pmask, pkeep, pat,
    )  # fmt: skip
    res_s = np.empty((nq, k), np.float32)
    res_i = np.empty((nq, k), np.int64)
    merge_heaps(out_s, out_i, counts, qslot_ptr, k, res_s, res_i)
    return res_i, res_s


@nb.njit(cache=True)
def plan_pairs(list_ptr, lists, adds):
    """The (query, item) pairs of a scan, by counting sort: query ``i`` scans the items
    ``list_ptr[l]:list_ptr[l + 1]`` of each list ``l = lists[i, j]`` (``-1``: none),
    with ``adds[i, j]`` added to their scores.

    Returns ``(qptr, qidx, qslot, qadd, qslot_ptr)``: item ``w`` is scanned for the
    pairs ``qptr[w]:qptr[w + 1]`` (query ``qidx``, output slot ``qslot``, term
    ``qadd``); query ``i`` owns the slots ``qslot_ptr[i]:qslot_ptr[i + 1]``, numbered
    query by query, list by list, item by item
    (:func:`vecpress.search.scan.make_plan` has an example)."""
    nq, p = lists.shape
    nitems = list_ptr[-1]
    qptr = np.zeros(nitems + 1, np.int64)
    qslot_ptr = np.zeros(nq + 1, np.int64)
    for i in range(nq):
        for j in range(p):
            lst = lists[i, j]
            if lst >= 0:
                for w in range(list_ptr[lst], list_ptr[lst + 1]):
                    qptr[w + 1] += 1
                qslot_ptr[i + 1] += list_ptr[lst + 1] - list_ptr[lst]
    for w in range(nitems):
        qptr[w + 1] += qptr[w]
    for i in range(nq):
        qslot_ptr[i + 1] += qslot_ptr[i]
    total = qptr[nitems]
    qidx = np.empty(total, np.int64)
    qslot = np.empty(total, np.int64)
    qadd = np.empty(total, np.float32)
    fill = qptr[:-1].copy()
    slot = 0
    for i in range(nq):
        for j in range(p):
            lst = lists[i, j]
            if lst >= 0:
                for w in range(list_ptr[lst], list_ptr[lst + 1]):
                    pos = fill[w]
                    fill[w] += 1
                    qidx[pos] = i
                    qslot[pos] = slot
                    qadd[pos] = adds[i, j]
                    slot += 1
    return qptr, qidx, qslot, qadd, qslot_ptr


@nb.njit(cache=True)
def probed_ready(list_ptr, lists, starts, ends, done, by_row):
    """Whether every item of the lists ``lists[i, j] >= 0`` probe (the items
    ``list_ptr[l]:list_ptr[l + 1]`` of list ``l``, as :func:`plan_pairs` plans them) is
    marked ``done``: by its first and last rows where ``by_row`` (rows filled item by
    item; an empty item counts as done), else by its own number.

    One compiled pass over the probed items, for the search's check that the rows it
    reads are ready: an IVF index fills them as its lists are first probed, so its flags
    stay incomplete while some list was never probed, and a check in Python (the items'
    numbers from the plan, their rows' flags) cost ~30 µs of a one-query search.

    Examples
    --------
    >>> list_ptr = np.array([0, 1, 3])  # list 0: item 0; list 1: items 1 and 2
    >>> starts, ends = np.array([0, 4, 6]), np.array([4, 6, 9])
    >>> rows = np.zeros(9, bool); rows[:4] = True
    >>> bool(probed_ready(list_ptr, np.array([[0, -1]]), starts, ends, rows, True))
    True
    >>> bool(probed_ready(list_ptr, np.array([[0, 1]]), starts, ends, rows, True))
    False
    >>> items = np.array([False, True, True])  # by item: list 1's items are done
    >>> bool(probed_ready(list_ptr, np.array([[1]]), starts, ends, items, False))
    True
    """
    for i in range(lists.shape[0]):
        for j in range(lists.shape[1]):
            lst = lists[i, j]
            if lst < 0:
                continue
            for w in range(list_ptr[lst], list_ptr[lst + 1]):
                if by_row:
                    s, e = starts[w], ends[w]
                    if e > s and not (done[s] and done[e - 1]):
                        return False
                elif not done[w]:
                    return False
    return True


@nb.njit(cache=True, parallel=True)
def _sort_slots(out_s, out_i, counts):
    for r in nb.prange(out_s.shape[0]):
        heap_sort(out_s[r], out_i[r], counts[r])
        heap_pad(out_s[r], out_i[r], counts[r])


#: a merge of at most this many slot entries runs on the calling thread: a parallel
#: loop's start costs more than the merge of a one-query search (1-6 µs, the more after
#: a pause, against well under a microsecond for 16 slots of 10)
SERIAL_MERGE = 1 << 14


@nb.njit(cache=True, inline="always")
def _merge_heaps_of(slot_s, slot_i, counts, lo, hi, k, res_s, res_i):
    """:func:`merge_heaps` of one query: its slots ``lo:hi`` into ``res_s``/``res_i``."""
    m = 0
    for sl in range(lo, hi):
        for p in range(counts[sl]):
            sc = slot_s[sl, p]
            r = slot_i[sl, p]
            if m < k or sc > res_s[0] or (sc == res_s[0] and r < res_i[0]):
                m = heap_push(res_s, res_i, m, sc, r)
    heap_sort(res_s, res_i, m)
    heap_pad(res_s, res_i, m)


@nb.njit(cache=True)
def _merge_heaps_serial(slot_s, slot_i, counts, qslot_ptr, k, res_s, res_i):
    for q in range(qslot_ptr.shape[0] - 1):
        _merge_heaps_of(
            slot_s, slot_i, counts, qslot_ptr[q], qslot_ptr[q + 1], k, res_s[q], res_i[q]
        )


@nb.njit(cache=True, parallel=True)
def _merge_heaps_parallel(slot_s, slot_i, counts, qslot_ptr, k, res_s, res_i):
    for q in nb.prange(qslot_ptr.shape[0] - 1):
        _merge_heaps_of(
            slot_s, slot_i, counts, qslot_ptr[q], qslot_ptr[q + 1], k, res_s[q], res_i[q]
        )


@nb.njit(cache=True)
def merge_heaps(slot_s, slot_i, counts, qslot_ptr, k, res_s, res_i):
    """Merge the slots ``qslot_ptr[q]:qslot_ptr[q + 1]`` of each query into its top ``k``
    (``res_s``, ``res_i``: sorted best first, padded with rows of ``-1``), slot ``sl``
    holding its first ``counts[sl]`` pairs in any order: the heaps as a scan leaves
    them, so no slot needs sorting first. The heap's order (a larger score first, then
    the smaller row) is total, so the ``k`` best of a query's pairs do not depend on
    the order they are offered in. Runs on the calling thread up to
    :data:`SERIAL_MERGE` slot entries.

    Examples
    --------
    >>> slot_s = np.array([[0.5, 0.9, 0.7], [0.8, 0.2, 0.0]], np.float32)
    >>> slot_i = np.array([[4, 1, 2], [3, 9, -1]], np.int64)
    >>> res_s, res_i = np.empty((1, 4), np.float32), np.empty((1, 4), np.int64)
    >>> merge_heaps(slot_s, slot_i, np.array([3, 2]), np.array([0, 2]), 4, res_s, res_i)
    >>> res_i.tolist(), res_s.tolist()
    ([[1, 3, 2, 4]], [[0.8999999761581421, 0.800000011920929, 0.699999988079071, 0.5]])
    """
    if qslot_ptr[-1] * slot_s.shape[1] <= SERIAL_MERGE:
        _merge_heaps_serial(slot_s, slot_i, counts, qslot_ptr, k, res_s, res_i)
    else:
        _merge_heaps_parallel(slot_s, slot_i, counts, qslot_ptr, k, res_s, res_i)


@nb.njit(cache=True)
def merge_slots(slot_s, slot_i, qslot_ptr, k, res_s, res_i):
    """Merge the slots ``qslot_ptr[q]:qslot_ptr[q + 1]`` of each query into its top ``k``:
    slots sorted and padded as :func:`grid_scan_topk` returns them (a slot's pairs end
    at its first row of ``-1``), merged by :func:`merge_heaps`. Ties go to the smaller
    row, as in every heap."""
    counts = np.empty(slot_i.shape[0], np.int64)
    for sl in range(slot_i.shape[0]):
        m = 0
        while m < slot_i.shape[1] and slot_i[sl, m] >= 0:
            m += 1
        counts[sl] = m
    merge_heaps(slot_s, slot_i, counts, qslot_ptr, k, res_s, res_i)
