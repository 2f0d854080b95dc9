"""Progressive scan of grid codes: the sign plane of every row, the full code of few.

A row of ``b``-bit grid codes ``c`` (uniform width, ``b`` ≤ 5) is split about the
middle of its grid, ``v = c - (2^b - 1) / 2``. Its *sign plane*
``σ = sign(v)`` (the most significant bit of each code) is itself a 1-bit
RaBitQ-style code of ``v``, with the estimator (``v̂ = v / |v|``)

    <v, q> ≈ V̂ = f · <σ, q>,    f = |v|² / Σ_i |v_i|,

whose error, when the codes live in a randomly rotated space, is
``|v| · <σ, q⊥> / <σ, v̂>`` (``q⊥`` the part of ``q`` orthogonal to ``v``):
about normal with standard deviation at most

    g · |q|,    g = |v| · sqrt(1 - γ²) / (γ · sqrt(d - 1)),    γ = Σ_i |v_i| / (|v| sqrt(d)).

(Decomposing ``q`` about ``v``, not about ``σ``, is what makes the estimate
unbiased: a near neighbour's magnitudes correlate with the query, its
orthogonal part does not.) :func:`plane_rows` gives each row's sign plane,
``f``, ``g``, ``|v|`` and popcount; :func:`fold_terms` folds them with the row's
score factor ``a`` into the four float32 terms the bounds read, and
:func:`pack_terms` the two the first pass needs (``A F`` and the popcount) into
one word (4 bytes a row: the first pass reads every row's, so its bytes are what
it costs); :func:`item_planes` does all of it, and lays the planes out for the scan,
in one pass over each work item's codes.

The scan (:func:`progressive_scan_topk`) sums the sign plane against the query
with the fast-scan kernel (:mod:`vecpress.kernels.fastscan`): the plane laid
out as 4-bit "sub-quantizer" codes of 4 dimensions each, and one 8-bit table
per query of its 8-bit integer form ``qi`` shifted to ``u = qi + 128`` and cut
to 6 bits, ``u >> 2`` (four of them sum below 256). The 2 bits cut off,
``r = u - 4 (u >> 2) - 3/2``, add ``<r, σ>`` to ``<σ, qi>``: a term of mean 0
and deviation ``|r|`` under the same model (random signs), bounded with the
same ``z``. A row's upper bound of its full-code score is the estimate plus
``z`` error deviations plus float rounding; only the rows whose bound reaches
the current k-th best score are read in full and scored exactly as the full scan
(:mod:`vecpress.kernels.grid_search`) scores them, into the same heaps. So the
result equals the full scan's whenever no bound of a true top-k row fails: with
the normal model, one-sided tails of ``1 - Φ(z)`` for each of the two deviations
of a row, at most ``2 k (1 - Φ(z))`` per query (``z = 4``: 3.2e-5 each).

The bound (a square root and two divisions) is made only for the rows a cheaper
test cannot rule out: the first pass keeps each row's table sum and its point
estimate (a multiply-add, from the row's word), and once a threshold is known, a
block of 32 rows is compared with it all at once, less the block's *slack*
(:func:`_block_slacks`),
a bound on how far any of its rows' bounds can lie above their points, made from
the largest magnitudes of the block's row terms (:func:`block_limits`). A row
the filter drops has a bound below the threshold, so the filter changes which
rows are bounded, never the result.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import read_only
from .fastscan import (
    _I32,
    _MAX_PASS,
    _TAGS,
    BLOCK,
    ISA,
    ISAS,
    PAIR_BYTES,
    _block_sums,
    _ctz32,
    _padded_luts,
    _pass_size,
    fastscan_layout,
)
from .grid_search import _finish, _sort_slots, _tile1x16, merge_heaps, plan_pairs
from .heap import heap_push
from .nibbles import nibble_dot_at
from .scan import (
    HAVE_VNNI,
    IN_PLACE_BITS,
    _grid_queries_flat,
    _query_bytes,
    combine,
    grid_queries,
    int_dot,
    query_offsets,
    unpack_layout,
)

#: most code bits a progressive scan takes (wider codes use two 8-bit query limbs)
MAX_BITS = 5
#: most dimensions a progressive scan takes: a :func:`pack_terms` word keeps at least
#: 7 bits of ``A F``'s significand beside the popcount (:func:`pop_bits` at most 16)
MAX_DIMS = (1 << 16) - 2
#: which of the rows' score terms ``a``, ``b``, ``c`` the bound reads (:func:`_row_bound`):
#: none (``rq``: ``b`` and ``c`` zero, the grid centred on its middle), ``c`` only (the
#: same with a centring term ``c``, ``center,...,rq``), or all three
TERMS_NONE, TERMS_C, TERMS_ALL = 0, 1, 2
#: the bound's flags, ``terms + 3 l2``, carried by the length of an empty "mode" array
#: and read at run time: loop-invariant branches on ``terms`` and on ``l2`` are as fast
#: as constants (one query and batches over 100,000 x 384 rows, ``rq``, centred ``rq``,
#: ``lvq`` and ``int`` codes, measured A/B; for ``l2`` the compiled one-query call over
#: 100,000 MiniLM rows, 300 queries alternated with the earlier specialisation by dtype:
#: ``center,hd2,rq4`` cosine 609 against 599 us, ``hd2,rq4`` l2 1,314 against 1,325), and
#: the scan compiles once for every metric: the first l2 search after a cosine one
#: compiled for another 23-32 s
_MODES = tuple(np.empty(m, np.int8) for m in range(6))


@nb.njit(cache=True, inline="always")
def _mode_flags(mode):
    """``(l2, terms)`` of a mode array (:data:`_MODES`)."""
    return mode.shape[0] >= 3, mode.shape[0] % 3


#: rows of best point estimate scored first, per result wanted: their k-th exact score is the
#: threshold every other row's bound must reach (4 k brings it within a few per cent of
#: the final k-th score on sentence embeddings)
SEEDS = 4
#: relative slack added to every bound for float rounding: the bound and the exact score
#: are float32 expressions of a dozen operations, each rounding by at most 2^-24 of the
#: largest magnitude involved
_ROUNDING = np.float32(2.0**-14)


def sign_plane_dims(d: int) -> int:
    """Number of 4-dimension groups (fast-scan sub-quantizers) of a ``d``-dim sign plane.

    Examples
    --------
    >>> sign_plane_dims(384), sign_plane_dims(50)
    (96, 13)
    """
    return (d + 3) // 4


#: blocks of rows whose bounds the first pass makes at once: few enough that their sums
#: stay in L1, enough that the per-span work (slices, loop set-up) is spread thin
_SPAN = 16
#: rows pass 3 collects (their reads started) before scoring them, without VNNI
_PREFETCH_AHEAD = 8
#: rows pass 3 filters before it bounds those the filters let through (8 blocks)
_GROUP = 8 * 32
#: the columns of :func:`block_limits`: per block of 32 rows, the largest ``|A F|`` (U),
#: ``|A| eps`` (V), the item's largest ``eps²`` (E2), the largest ``|A|``, ``|a|``,
#: ``|b|``, ``|c|`` and ``|x|²`` (l2)
LIM_U, LIM_V, LIM_E2, LIM_A, LIM_SA, LIM_SB, LIM_SC, LIM_N = range(8)
#: columns of :func:`block_limits`
LIMITS = 8
#: relative widening of a block's slack (:func:`_block_slacks`), for the float rounding
#: of the slack itself, and the share of the threshold's magnitude the filter takes off
#: too, for the rounding of the threshold less the slack
_FILTER_MARGIN = np.float32(1.0 + 2.0**-12)
_THR_MARGIN = np.float32(2.0**-12)


@nb.njit(cache=True)
def block_limits(starts, ends, bstarts, big_f, eps, big_a, a, b, c, norms, out):
    """Per block of 32 rows of each item ``i`` (rows ``starts[i]:ends[i]``, blocks from
    ``bstarts[i]``, as :func:`item_planes` lays them out), the largest magnitudes of its
    rows' terms (the :data:`LIM_U` ... :data:`LIM_N` columns of ``out``, float32[blocks,
    :data:`LIMITS`]), rounded up: what the first pass's filter needs to bound, for a
    whole block at once, how far a row's bound can lie above its point estimate
    (:func:`_block_slacks`). ``norms``: the rows' ``|x|²`` for l2, or empty.

    Examples
    --------
    >>> one = np.ones(40, np.float32)
    >>> out = np.zeros((2, LIMITS), np.float32)
    >>> block_limits(np.array([0]), np.array([40]), np.array([0]), 2 * one, one / 2,
    ...              3 * one, one, one, one, np.zeros(0, np.float32), out)
    >>> out[1, [LIM_U, LIM_V, LIM_E2, LIM_A]].round(4).tolist()
    [6.0, 1.5, 0.25, 3.0]
    """
    up = 1.0 + 2.0**-20  # float32 rounding of the float64 maxima is below 2^-24
    l2 = norms.shape[0] > 0
    for i in range(starts.shape[0]):
        s, e = starts[i], ends[i]
        em = 0.0
        for j in range(s, e):
            em = max(em, abs(np.float64(eps[j])))
        for b0 in range(s, e, BLOCK):
            u = v = am = sa = sb = sc = sn = 0.0
            for j in range(b0, min(e, b0 + BLOCK)):
                aj = abs(np.float64(big_a[j]))
                ej = abs(np.float64(eps[j]))
                u = max(u, aj * abs(np.float64(big_f[j])))
                v = max(v, aj * ej)
                am = max(am, aj)
                sa = max(sa, abs(np.float64(a[j])))
                sb = max(sb, abs(np.float64(b[j])))
                sc = max(sc, abs(np.float64(c[j])))
                if l2:
                    sn = max(sn, abs(np.float64(norms[j])))
            row = out[bstarts[i] + (b0 - s) // BLOCK]
            row[LIM_U] = u * up
            row[LIM_V] = v * up
            row[LIM_E2] = em * em * up
            row[LIM_A] = am * up
            row[LIM_SA] = sa * up
            row[LIM_SB] = sb * up
            row[LIM_SC] = sc * up
            row[LIM_N] = sn * up


@nb.njit(cache=True)
def plane_rows(codes, layout, bits, d, signs, f, g, vn, pop):
    """Sign plane and estimator terms of grid code rows.

    ``signs[j]`` (uint8[n, ceil(d/8)]) gets bit ``i`` (little-endian) set where
    code ``i`` is in the upper half of its grid; ``f[j]``, ``g[j]``, ``vn[j]``
    (float32) the estimator's factor, its error scale and ``|v|``, ``pop[j]`` (int32)
    the number of set bits. ``Σ|v_i|`` and ``|v|²`` are summed as the integers
    ``Σ|2 v_i|`` and ``Σ(2 v_i)²`` (``2 v_i = 2 c_i - (2^b - 1)``, odd): exact, and
    loops without branches that the compiler vectorises.

    Examples
    --------
    >>> from vecpress.kernels.bitpack import pack
    >>> codes = pack(np.array([[0, 15, 8, 7]], np.uint8), 4)
    >>> signs, pop = np.zeros((1, 1), np.uint8), np.zeros(1, np.int32)
    >>> f, g, vn = (np.zeros(1, np.float32) for _ in range(3))
    >>> plane_rows(codes, np.array([[0, 4, 4, 0]]), 4, 4, signs, f, g, vn, pop)
    >>> int(signs[0, 0]), int(pop[0]), round(float(vn[0]) ** 2, 4)
    (6, 2, 113.0)
    """
    # one thread: it serves the bound's calibration sample (a few thousand rows, under a
    # millisecond), and a parallel kernel compiles 3-4x longer (~9 s on a 2-core runner)
    buf = np.zeros(8 * signs.shape[1], np.uint8)  # the codes past d stay 0: no bit set
    for j in range(codes.shape[0]):
        fj, gj, vnj, cnt = _row_plane(codes[j], layout, bits, d, buf, signs[j])
        f[j], g[j], vn[j], pop[j] = fj, gj, vnj, cnt


@nb.njit(cache=True, inline="always")
def _unpacked_plane(src, layout, bits, d, buf, sign):
    """``(Σ|2 v_i|, Σ(2 v_i)², popcount)`` of a code row of any width and layout, its sign
    plane into ``sign``: the codes unpacked to bytes first."""
    full = (1 << bits) - 1
    half = 1 << (bits - 1)
    unpack_layout(src, layout, buf)
    a1 = 0
    a2 = 0
    for i in range(d):
        t2 = 2 * np.int64(buf[i]) - full
        a1 += abs(t2)
        a2 += t2 * t2
    cnt = 0
    for k in range(sign.shape[0]):
        byte = 0
        for t in range(8):
            up = np.int64(buf[8 * k + t] >= half)
            byte |= up << t
            cnt += up
        sign[k] = byte
    return a1, a2, cnt


@nb.njit(cache=True, inline="always")
def _nibble_plane(src, d, sign):
    """:func:`_unpacked_plane` of 4-bit codes packed in nibbles (``d`` a multiple of 8),
    read in place: the sums over both nibbles of each byte, and each sign byte gathered
    from the top bits (3, 7, ..., 31) of four code bytes by shifts and masks."""
    a1 = 0
    a2 = 0
    cnt = 0
    for m in range(d // 2):
        v = np.int64(src[m])
        lo = 2 * (v & 15) - 15
        hi = 2 * (v >> 4) - 15
        a1 += abs(lo) + abs(hi)
        a2 += lo * lo + hi * hi
        cnt += ((v >> 3) & 1) + (v >> 7)
    for k in range(d // 8):
        w = (
            np.uint32(src[4 * k]) | (np.uint32(src[4 * k + 1]) << np.uint32(8))
            | (np.uint32(src[4 * k + 2]) << np.uint32(16))
            | (np.uint32(src[4 * k + 3]) << np.uint32(24))
        )  # fmt: skip
        x = (w >> np.uint32(3)) & np.uint32(0x11111111)  # code t's top bit at bit 4 t
        x = (x | (x >> np.uint32(3))) & np.uint32(0x03030303)  # pairs at bits 0-1, 8-9, ...
        x = (x | (x >> np.uint32(6))) & np.uint32(0x000F000F)  # fours at bits 0-3, 16-19
        sign[k] = np.uint8((x | (x >> np.uint32(12))) & np.uint32(0xFF))
    return a1, a2, cnt


@nb.njit(cache=True, inline="always")
def _row_plane(src, layout, bits, d, buf, sign):
    """:func:`plane_rows` of one code row ``src``: its sign plane into ``sign``
    (uint8[ceil(d/8)]), and ``(f, g, vn, pop)``, the float32 terms as float64 values."""
    if bits == 4 and d % 8 == 0 and layout.shape[0] == 1 and layout[0, 3] == 0:
        a1, a2, cnt = _nibble_plane(src, d, sign)
    else:
        a1, a2, cnt = _unpacked_plane(src, layout, bits, d, buf, sign)
    s1 = a1 / 2.0
    s2 = a2 / 4.0
    vn = np.float32(np.sqrt(s2))
    # every |v_i| >= 1/2, so s1 > 0 and gamma > 0
    gamma = s1 / np.sqrt(s2 * d)
    f = np.float32(s2 / s1)
    g = np.float32(0.0)
    if d > 1:
        spread = max(0.0, 1.0 - gamma * gamma)
        g = np.float32(np.sqrt(s2) * np.sqrt(spread) / (gamma * np.sqrt(d - 1.0)))
    return np.float64(f), np.float64(g), np.float64(vn), cnt


def item_planes(codes, layout, bits, d, starts, ends, bstarts, blocked, big_f, big_h, eps, big_a,
                packed, a, z):  # fmt: skip
    """The sign planes and terms of the rows ``starts[i]:ends[i]`` of each item ``i``, in
    one pass over their codes (read where they lie: a memory-mapped file is not copied).

    The planes go to the fast-scan blocks ``blocked[bstarts[i]:]`` (the item's rows in
    blocks of 32, :func:`plane_layout`'s layout), the terms to ``big_f``, ``big_h``,
    ``eps``, ``big_a`` and their words to ``packed`` at the rows' numbers: the values
    of :func:`plane_rows`, :func:`plane_layout`, :func:`fold_terms` with score factors
    ``a`` and ``z`` error deviations, and :func:`pack_terms`, to the bit.

    Examples
    --------
    >>> from vecpress.kernels.bitpack import pack
    >>> codes = pack(np.array([[0, 15, 8, 7]], np.uint8), 4)
    >>> blocked = np.zeros((1, 32), np.uint8)
    >>> t = [np.zeros(1, np.float32) for _ in range(4)]
    >>> words = np.zeros(1, np.uint32)
    >>> item_planes(codes, np.array([[0, 4, 4, 0]]), 4, 4, np.array([0]), np.array([1]),
    ...             np.array([0]), blocked, *t, words, np.float32([1.0]), 4.0)
    >>> int(blocked[0, 0]), round(float(t[3][0]) ** 2, 4), int(words[0]) & 7
    (6, 113.0, 2)
    """
    # the codes read-only, as an index opened from its file holds them: one compiled
    # specialisation for both
    codes = read_only(codes)
    starts, ends, bstarts = (np.asarray(v, np.int64) for v in (starts, ends, bstarts))
    args = (layout, bits, d)
    rest = (blocked, big_f, big_h, eps, big_a, packed, a, z)
    groups = _item_groups(ends - starts, nb.get_num_threads())
    if len(groups) <= 1:
        _item_planes(codes, *args, starts, ends, bstarts, *rest)
        return
    # the items in parallel on Python threads (the kernel releases the GIL): a numba
    # parallel loop compiled in ~25 s here, the one-thread kernel in ~7
    with ThreadPoolExecutor(len(groups), thread_name_prefix="vecpress-planes") as pool:
        done = [
            pool.submit(_item_planes, codes, *args, starts[g], ends[g], bstarts[g], *rest)
            for g in groups
        ]
        for f in done:
            f.result()


#: rows per thread of :func:`item_planes` at least (under a millisecond of work at d = 384)
_PLANES_PER_THREAD = 1 << 12


def _item_groups(rows: np.ndarray, threads: int) -> list[slice]:
    """Consecutive groups of items with about equal numbers of ``rows`` (to an item), one
    per thread: up to ``threads`` groups, and one per :data:`_PLANES_PER_THREAD` rows."""
    total = int(rows.sum())
    parts = max(1, min(threads, rows.size, total // _PLANES_PER_THREAD))
    if parts == 1:
        return [slice(0, rows.size)]
    cuts = np.searchsorted(np.cumsum(rows), total * np.arange(1, parts) / parts) + 1
    edges = np.unique(np.concatenate([[0], np.minimum(cuts, rows.size), [rows.size]]))
    return [slice(int(s), int(e)) for s, e in pairwise(edges) if e > s]


@nb.njit(cache=True, nogil=True)
def _item_planes(codes, layout, bits, d, starts, ends, bstarts, blocked, big_f, big_h, eps,
                 big_a, packed, a, z):  # fmt: skip
    """:func:`item_planes` on one thread (its caller splits the items among threads)."""
    nbytes = (d + 7) // 8
    pb = pop_bits(d)
    for i in range(starts.shape[0]):
        s = starts[i]
        e = ends[i]
        buf = np.zeros(8 * nbytes, np.uint8)  # the codes past d stay 0: no bit set
        signs = np.zeros((BLOCK, nbytes), np.uint8)  # rows past the item's end stay 0
        for b0 in range(s, e, BLOCK):
            cnt = min(e, b0 + BLOCK) - b0
            for v in range(cnt):
                j = b0 + v
                f, g, vn, pop = _row_plane(codes[j], layout, bits, d, buf, signs[v])
                ratio = f / vn
                big_f[j] = np.float32(ratio)
                big_h[j] = np.float32(-253.0 * ratio * pop)
                eps[j] = np.float32(z * g / vn)
                big_a[j] = np.float32(np.float64(a[j]) * vn)
                packed[j] = _packed_word(big_f[j], big_a[j], pop, pb)
            if cnt < BLOCK:
                signs[cnt:] = 0
            # fastscan_layout: rows v and 16 + v share the bytes of lane v
            out = blocked[bstarts[i] + (b0 - s) // BLOCK]
            for p in range(nbytes):
                for v in range(16):
                    lo = signs[v, p]
                    hi = signs[16 + v, p]
                    out[p * PAIR_BYTES + v] = (lo & 15) | ((hi & 15) << 4)
                    out[p * PAIR_BYTES + 16 + v] = (lo >> 4) | (hi & 0xF0)


def fold_terms(f, g, vn, pop, a, z):
    """The per-row terms the scan reads, float32: ``F = f / |v|``, ``H = -253 F pop``
    (the estimate of ``w = <qi, v̂>`` is ``F x + H``), ``eps = z g / |v|`` (its bound's
    width) and ``A = a |v|`` (the score is ``s0 A w`` plus row and query terms), for
    rows of score factor ``a`` and ``z`` error deviations: 16 bytes a row, read for the
    rows the first pass lets through (which reads :func:`pack_terms`' word instead;
    the scan is bound by the bytes it reads, so what it can compute from these, such
    as ``1 / (1 + eps²)``, it computes).

    Examples
    --------
    >>> one = np.float32([1.0])
    >>> [t.tolist() for t in fold_terms(2 * one, one, 4 * one, np.int32([3]), -one, 4.0)]
    [[0.5], [-379.5], [1.0], [-4.0]]
    """
    vn = np.asarray(vn, np.float64)
    big_f = np.asarray(f, np.float64) / vn
    eps = z * np.asarray(g, np.float64) / vn
    return (
        big_f.astype(np.float32),
        (-253.0 * big_f * np.asarray(pop, np.float64)).astype(np.float32),
        eps.astype(np.float32),
        (np.asarray(a, np.float64) * vn).astype(np.float32),
    )


@nb.njit(cache=True)
def pop_bits(d):
    """Low bits of a :func:`pack_terms` word that hold a ``d``-dim row's popcount: the
    fewest that hold ``d + 1`` (every popcount ``0 ... d``, and the all-ones
    :data:`flagged <pack_terms>` value above them).

    Examples
    --------
    >>> pop_bits(384), pop_bits(383), pop_bits(1)
    (9, 9, 2)
    """
    pb = 1
    while (1 << pb) <= d + 1:
        pb += 1
    return pb


@nb.njit(cache=True)
def packed_delta(d):
    """Relative widening ``δ`` of a point made from :func:`pack_terms` words of
    ``d``-dim rows (:func:`_row_points`): ``2^-(23 - p) + 2^-12``, ``p =``
    :func:`pop_bits` ``(d)``.

    Examples
    --------
    >>> float(packed_delta(384)) == 2.0**-14 + 2.0**-12
    True
    """
    return np.float32(2.0 ** -(23 - pop_bits(d)) + 2.0**-12)


@nb.njit(cache=True, inline="always")
def _packed_word(big_f, big_a, pop, pb):
    """One row's :func:`pack_terms` word from its float32 ``F``, ``A`` and popcount."""
    mask = np.uint32((1 << pb) - 1)
    af = np.float32(np.float64(big_a) * np.float64(big_f))
    bits = af.view(np.uint32)
    mag = bits & np.uint32(0x7FFFFFFF)
    if mag == 0:
        return np.uint32(pop)
    if mag < np.uint32(0x00800000):
        return mask  # subnormal: no relative precision to state
    r = (bits + np.uint32(1 << (pb - 1))) & ~mask
    if (r >> np.uint32(23)) & np.uint32(0xFF) == np.uint32(0xFF):
        return mask  # rounded past the largest float32 (or not finite)
    return r | np.uint32(pop)


@nb.njit(cache=True)
def _pack_terms(big_f, big_a, pop, pb, out):
    for j in range(out.shape[0]):
        out[j] = _packed_word(big_f[j], big_a[j], pop[j], pb)


def pack_terms(big_f, big_a, pop, d) -> np.ndarray:
    """The one word per row (uint32) the first pass reads: ``A F`` (:func:`fold_terms`)
    as a float32 rounded to nearest on its upper ``32 - p`` bits, and the row's
    popcount in the lower ``p = pop_bits(d)``: 4 bytes a row, where ``F``, ``H``, ``A``
    take 12 (``H = -253 F pop``).

    The pass then makes ``y = (A F)' (x - 253 pop)``, the row's estimate times ``A``
    (:func:`_row_points`), off by at most ``δ |(A F)'| (|x - 253 pop| + pop)`` from
    ``A ŵ`` as the float32 terms give it (:func:`packed_delta`). A row whose ``A F``
    is a subnormal float32 (no relative precision) or rounds past the largest float32
    gets the word ``2^p - 1`` (a popcount no row has): its point is infinite, so the
    filter always lets it through to its bound, made from the float32 terms.

    Examples
    --------
    >>> words = pack_terms(np.float32([0.5, 0.25]), np.float32([-3.0, 1e-40]),
    ...                    np.int32([7, 2]), 384)
    >>> w = int(words[0])
    >>> w & 511, float(np.uint32(w & ~511).view(np.float32)), int(words[1])
    (7, -1.5, 511)
    """
    pb = int(pop_bits(int(d)))
    big_f, big_a = (np.ascontiguousarray(v, np.float32) for v in (big_f, big_a))
    pop = np.ascontiguousarray(pop, np.int64)
    out = np.empty(pop.shape[0], np.uint32)
    _pack_terms(big_f, big_a, pop, pb, out)
    return out


def sign_tables(qi: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fast-scan tables of the sign plane for int8-range queries ``qi`` (int16[nq, d]).

    Returns ``(luts, rsum, rnorm)``: uint8[nq, 16 M4]
    (:func:`~vecpress.kernels.fastscan._padded_luts`) of the 6-bit values
    ``(qi + 128) >> 2``, and per query ``R = Σ_i r_i`` and ``|r|`` (float64) of the
    parts cut off, ``r = qi + 128 - 4 ((qi + 128) >> 2) - 3/2``, so that for a sign
    plane ``m`` (``σ = 2 m - 1``, ``pop`` bits set) with table sum ``S6``
    ``<σ, qi> = 8 S6 - 253 pop + R - Σ qi + <r, σ>``.

    Examples
    --------
    >>> qi = np.array([[5, -3, 0, 127]], np.int16)
    >>> luts, rsum, _ = sign_tables(qi, 4)
    >>> sigma = np.array([1, 1, -1, -1])
    >>> exact = int(qi[0] @ sigma)
    >>> s6 = int(luts[0, 0b0011])
    >>> r = qi[0] + 128 - 4 * ((qi[0] + 128) >> 2) - 1.5
    >>> bool(8 * s6 - 253 * 2 + rsum[0] - int(qi.sum()) + float(r @ sigma) == exact)
    True
    """
    nq = qi.shape[0]
    m = sign_plane_dims(d)
    lut = np.zeros((nq, m, 16), np.uint8)
    rsum = np.zeros(nq, np.float64)
    rnorm = np.zeros(nq, np.float64)
    _tables(np.ascontiguousarray(qi, np.int16), d, lut, rsum, rnorm)
    return _padded_luts(lut, m), rsum, rnorm


@nb.njit(cache=True)
def _tables(qi, d, lut, rsum, rnorm):
    nq = qi.shape[0]
    m = lut.shape[1]
    six = np.zeros(4 * m, np.int32)
    for u in range(nq):
        r1 = 0.0
        r2 = 0.0
        for i in range(d):
            x = np.int32(qi[u, i]) + 128
            six[i] = x >> 2
            r = x - 4 * (x >> 2) - 1.5
            r1 += r
            r2 += r * r
        rsum[u] = r1
        rnorm[u] = np.sqrt(r2)
        for s in range(m):
            for code in range(16):
                tot = 0
                for t in range(4):
                    if (code >> t) & 1:
                        tot += six[4 * s + t]
                lut[u, s, code] = tot


def plane_layout(signs: np.ndarray, d: int) -> np.ndarray:
    """Fast-scan blocks (:func:`~vecpress.kernels.fastscan.fastscan_layout`) of sign planes
    (uint8[n, ceil(d/8)], little-endian bits): uint8[ceil(n/32), 32 ceil(M/2)], ``M`` =
    :func:`sign_plane_dims`.

    Examples
    --------
    >>> plane_layout(np.zeros((40, 48), np.uint8), 384).shape
    (2, 1536)
    """
    return fastscan_layout(signs, sign_plane_dims(d))


@nb.njit(cache=True, fastmath=False, error_model="numpy", inline="always")
def _row_points(
    s6, words, a, b, c, norms, xs, points, xq, s0, em2, qc, tq, e, l2, qq2, terms, mask, delta,
):  # fmt: skip
    """The first pass's two numbers per row of a run of rows (every row array is the
    run's slice), from their sign-plane table sums ``s6`` and :func:`pack_terms` words:
    ``xs``, the sum ``x = 8 S6 + R - Σ qi`` (exact in float32), from which
    :func:`_refine` makes the estimate ``ŵ = F x + H`` of ``w = <qi, v̂>`` and the
    row's bound (:func:`_row_bound`) if the filter lets it through; and ``points``, a
    score at least the one at ``ŵ'``: ``ŵ``, or where it lies on the side that lowers
    the score (``A ŵ < 0``) ``ŵ`` shrunk by ``1 - em2`` (``em2``: at least the item's
    largest ``ε²``, :data:`LIM_E2`). It is the point estimate the seeds are chosen by,
    and what the filter compares with the threshold less its block's
    :func:`_block_slacks`: the shrinking takes the bound's ``-ŵ ε² / (1 + ε²)`` term,
    which only estimates on that side have, into the point, so that no row's bound lies
    farther above its point than its block's slack, an estimate far outside ``±|qi|``
    (a degenerate row) included.

    The point reads one word a row, not ``F``, ``H``, ``A``: ``y = (A F)' u`` (``u = x -
    253 pop``) stands for ``A ŵ``, and the shrinking, ``t -> t`` or ``t (1 - em2)`` by
    the sign of ``t``, moves two values no farther apart than they were, so ``|s0|`` times
    :func:`pack_terms`' bound on ``|y - A ŵ|``, ``δ |(A F)'| (|u| + pop)`` (``delta``;
    ``mask``: the popcount's bits), is added. A flagged word's point is infinite. Float32
    over ``len(words)``; ``l2`` and ``terms`` as :func:`_row_bound`."""
    two = np.float32(2.0)
    keep = np.uint32(~mask)
    width = abs(s0) * delta
    shrink = np.float32(1.0) - em2
    for r in range(len(words)):
        x = np.float32(8 * s6[r]) + xq
        xs[r] = x
        word = words[r]
        pop = word & mask
        af = np.uint32(word & keep).view(np.float32)
        popf = np.float32(np.int32(pop))
        u = x - np.float32(253.0) * popf  # exact: 253 pop < 2^24 (MAX_DIMS)
        y = af * u
        y = y * shrink if y < np.float32(0.0) else y
        if terms == TERMS_ALL:
            rest = a[r] * qc + b[r] * tq + c[r] + e
        elif terms == TERMS_C:
            rest = c[r] + e
        else:
            rest = e
        p = s0 * y + rest + width * abs(af) * (abs(u) + popf)
        if l2:
            p = two * p - norms[r] - qq2
        points[r] = np.float32(np.inf) if pop == mask else p


@nb.njit(cache=True, fastmath=False, error_model="numpy", inline="always")
def _row_bound(
    w0, big_f, eps, big_a, a, b, c, norm, s0, qn, zr, qc, big, tq, e, l2, qq2, terms, amax,
):  # fmt: skip
    """An upper bound of one row's full-code score from its estimate ``w0``
    (:func:`_row_points`) and its terms.

    The table's cut bits move ``ŵ`` by at most ``z |r| |F|``; then, the estimator's
    deviation being ``g sqrt(|qi|² - w²)``, ``w`` is at most the largest root of
    ``w - ŵ = ε sqrt(|qi|² - w²)`` (``ε = z g / |v|``), a quadratic, and never above
    ``|qi|`` (the least root, and ``-|qi|``, where the row's factor is negative); 0 for a
    zero query row, whose estimates need not be 0 (its points are its rows' terms:
    :func:`_points`). The
    score bound is ``s0 A w`` plus the row and query terms and the rounding slack,
    :data:`_ROUNDING` of the largest magnitude the row's float32 score can have. With
    ``terms`` :data:`TERMS_ALL` the row terms ``a qc + b t + c`` are added exactly; for
    codes whose ``b`` is zero and whose ``qc`` is float rounding (``rq``:
    :data:`TERMS_C` adds the row's ``c``, a centring term, exactly; :data:`TERMS_NONE`
    has ``c`` zero too), ``|a qc|`` is bounded by ``amax |A| |qc|`` (``amax = 2 /
    sqrt(d)``: every ``|v_i| >= 1/2``, so ``|a| <= 2 |A| / sqrt(d)``), and ``a`` and
    ``b`` are not read. ``l2`` and ``terms`` are loop-invariant branches
    (:data:`_MODES`).
    """
    one = np.float32(1.0)
    two = np.float32(2.0)
    zero = np.float32(0.0)
    q2 = qn * qn
    up = big_a >= zero
    move = zr * abs(big_f)
    wt = w0 + move if up else w0 - move
    den = one + eps * eps
    root = eps * np.sqrt(max(q2 * den - wt * wt, zero))
    hi = min((wt + root) / den, qn)
    lo = max((wt - root) / den, -qn)
    w = hi if up else lo
    if qn == zero:  # a zero query row: every dot product is 0, whatever the estimate
        w = zero
    scale = s0 * big_a
    if terms == TERMS_ALL:
        rest = a * qc + b * tq + c + e
        mag = abs(scale) * qn + abs(a) * big + abs(b * tq) + abs(c) + abs(e)
        drop = zero
    elif terms == TERMS_C:
        rest = c + e
        mag = abs(big_a) * (s0 * qn + amax * big) + abs(c) + abs(e)
        drop = abs(big_a) * amax * abs(qc)
    else:
        rest = e
        mag = abs(big_a) * (s0 * qn + amax * big) + abs(e)
        drop = abs(big_a) * amax * abs(qc)
    u = scale * w + rest + drop
    if l2:
        u = two * u - norm - qq2
        mag = two * mag + abs(norm) + abs(qq2)
    return u + _ROUNDING * mag


@nb.njit(cache=True, fastmath=False, error_model="numpy", inline="always")
def _block_slacks(lims, s0, qn, zr, qc, big, tq, e, l2, qq2, terms, amax, out):
    """How far above its point (:func:`_row_points`) any row's bound (:func:`_row_bound`)
    of a block can lie, for each block of ``lims`` (its :func:`block_limits`) into
    ``out``.

    A row's bound less its point is ``s0 |A| (w - ŵ')`` (``ŵ'`` the estimate as
    :func:`_row_points` shrinks it; the row terms cancel) plus the drop and rounding
    terms. For ``A >= 0``, whatever the estimate, ``w - ŵ`` is at most ``(m + root) /
    (1 + ε²) - ŵ ε² / (1 + ε²) <= m + ε |qi| + max(-ŵ, 0) ε²`` (``m = z |r| |F|``,
    ``root <= ε |qi| sqrt(1 + ε²)``), and ``ŵ + max(-ŵ, 0) ε² <= ŵ'``; the mirror image
    for a negative ``A``. So the distance is at most ``s0 (z |r| U + |qi| V)`` plus the
    drop and rounding terms at the block's largest magnitudes, and twice the float
    rounding bound is added for the filter's own arithmetic: a sum of the limits with
    coefficients of the query, widened by :data:`_FILTER_MARGIN`. Infinite where the
    sum is not finite (everything then passes the filter)."""
    one = np.float32(1.0)
    two = np.float32(2.0)
    rr = two * _ROUNDING
    s0a = abs(s0)
    sc = two if l2 else one  # l2 doubles the score: 2 <q, x> - |x|² - |q|²
    coef = np.zeros(LIMITS, np.float32)
    coef[LIM_U] = sc * s0a * zr
    coef[LIM_V] = sc * s0a * qn
    if terms == TERMS_ALL:
        coef[LIM_A] = sc * rr * s0a * qn
        coef[LIM_SA] = sc * rr * big
        coef[LIM_SB] = sc * rr * abs(tq)
    else:  # the drop |A| amax |qc|, and |A| in the magnitude
        coef[LIM_A] = sc * (amax * abs(qc) + rr * (s0a * qn + amax * big))
    if terms != TERMS_NONE:
        coef[LIM_SC] = sc * rr
    const = sc * rr * abs(e)
    if l2:
        coef[LIM_N] = rr
        const += rr * abs(qq2)
    for i in range(lims.shape[0]):
        v = const
        for col in range(LIMITS):
            v += coef[col] * lims[i, col]
        v *= _FILTER_MARGIN
        out[i] = v if v < np.inf else np.float32(np.inf)


@nb.njit(cache=True, inline="always")
def _dot4(codes, j, q8, qq, row_bytes):
    """The exact integer dot product of row ``j``'s 4-bit codes (two a byte, the even
    dimension in the low nibble) with query ``qq`` in the
    :func:`~vecpress.kernels.scan.split_queries` layout (each 128 dimensions: the 64 even
    ones, then the 64 odd ones), read where they lie, 64 bytes at a time
    (:func:`~vecpress.kernels.nibbles.nibble_dot_at`; the path without VNNI)."""
    acc = np.int32(0)
    for ch in range(0, row_bytes, 64):
        lim = min(64, row_bytes - ch)
        acc += nibble_dot_at(codes, j, ch, q8[qq, 2 * ch : 2 * ch + 64], q8[qq, 2 * ch + 64 :], lim)
    return acc


@nb.njit(cache=True, fastmath=False, inline="always")
def _exact(
    codes, layout, row, qi, qq, d, qscale, qoff, t, a, b, c, j, e, l2, norms, qsq, q8, per_byte,
    row_bytes,
):  # fmt: skip
    """Row ``j``'s full-code score, computed as the full scan computes it (4-bit codes
    read in place, :func:`_dot4`; other widths unpacked first)."""
    if per_byte == 2:
        dot = _dot4(codes, j, q8, qq, row_bytes)
    else:
        unpack_layout(codes[j], layout, row)
        dot = int_dot(row, qi[qq], d)
    x = combine(dot, dot, 1, qscale[qq], qscale[qq], qoff[qq], t[qq], a[j], b[j])
    return _finish(x, c[j], e, l2, norms[j], qsq[qq])


def _mask32(op: str):
    """An intrinsic ``(addr, thr) -> uint32``: bit ``r`` set where the float32 at
    ``addr + 4 r`` compares ``op`` ``thr`` (``r < 32``; one vector compare)."""

    @intrinsic
    def mask(typingctx, addr, thr):
        sig = types.uint32(types.intp, types.float32)

        def codegen(context, builder, signature, args):
            vec = ir.VectorType(ir.FloatType(), 32)
            x = builder.load(builder.inttoptr(args[0], vec.as_pointer()), align=4)
            splat = builder.insert_element(ir.Constant(vec, None), args[1], ir.Constant(_I32, 0))
            lanes = ir.Constant(ir.VectorType(_I32, 32), [0] * 32)
            splat = builder.shuffle_vector(splat, splat, lanes)
            return builder.bitcast(builder.fcmp_ordered(op, x, splat), _I32)

        return sig, codegen

    return mask


@intrinsic
def _prefetch(typingctx, addr):
    """Hint the cache line at ``addr`` into the caches (``llvm.prefetch``, read)."""
    sig = types.void(types.intp)

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        ptr = builder.inttoptr(args[0], i8p)
        builder.call(fn, [ptr, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return sig, codegen


_gt_mask32 = _mask32(">")
_ge_mask32 = _mask32(">=")


@nb.njit(cache=True, inline="always")
def _prefetch_row(pcodes, cs, row_bytes, a, b, c, l2, norms, j):
    """Hint into the caches what scoring row ``j`` exactly reads: its code bytes (rows of
    ``cs`` bytes from ``pcodes``; every line ``row_bytes`` touch) and its terms ``a``,
    ``b``, ``c`` (and norm, for l2): each a cache line of its own, a miss apiece for a
    row read out of order."""
    lo = pcodes + j * cs
    for line in range(lo - lo % 64, lo + row_bytes, 64):
        _prefetch(line)
    _prefetch(a.ctypes.data + 4 * j)
    _prefetch(b.ctypes.data + 4 * j)
    _prefetch(c.ctypes.data + 4 * j)
    if l2:
        _prefetch(norms.ctypes.data + 4 * j)


@nb.njit(cache=True, inline="always")
def _best(point, n, offset, hs, hi, m, root, cap):
    """Offer ``point[:n]`` (the rows ``offset ..``) to the heap ``hs``/``hi`` of the ``cap``
    largest values above ``root``, which holds ``m``; returns its new count and the
    value a row must beat (the smallest it holds once full). 32 values are compared
    with it at once, so the heap is touched only where one of them can enter."""
    base = point.ctypes.data
    full = n - n % 32
    for r0 in range(0, n, 32):
        if r0 < full:
            bits = _gt_mask32(base + 4 * r0, root)
        else:
            bits = np.uint32(0)
            for r in range(n - r0):
                if point[r0 + r] > root:
                    bits |= np.uint32(1) << np.uint32(r)
        while bits:
            r = r0 + _ctz32(bits)
            bits &= bits - np.uint32(1)
            if point[r] > root:
                m = heap_push(hs, hi, m, point[r], offset + r)
                if m == cap:
                    root = hs[0]
    return m, root


@nb.njit(cache=True, fastmath=False, error_model="numpy", parallel=True)
def _points(
    tag, qbmax, blocked, bptr, starts, ends, qptr, qidx, qadd, luts, xq, qnorm, qc, qscale,
    t, a, b, c, words, popmask, delta, limits, mode, norms, qsq, uptr, xs, pts, seed_s,
    seed_i, seed_m, floor,
):  # fmt: skip
    """Pass 1: every (pair, row)'s table sum and point (:func:`_row_points`) into ``xs``
    and ``pts``; each pair's best points (as many as ``seed_s`` has columns) above its
    query's ``floor`` into the heaps ``seed_s``/``seed_i``/``seed_m``.
    The sign-plane sums of up to ``qbmax`` queries of an item come from one pass over
    its blocks (the blocks' preparation shared); the points are made every :data:`_SPAN`
    blocks while their sums are at hand, so the scratch is a span's, whatever the
    item's length.

    A pair's seeds are its best point estimates above ``floor[q]``: the ``cap``-th best
    of any one item is at most the query's ``cap``-th best, so once an item has filled
    its heap, the query's later items offer it only what beats that value (most blocks
    are discarded by one compare per 32 rows). With several threads the floor read may
    be an earlier item's: any is a lower bound."""
    l2, terms = _mode_flags(mode)
    nitems = starts.shape[0]
    npairs = blocked.shape[1] // PAIR_BYTES
    rowbytes = blocked.shape[1]
    base = blocked.ctypes.data
    cap = seed_s.shape[1]
    for w in nb.prange(nitems):
        if qptr[w] == qptr[w + 1]:
            continue  # no query scans the item (IVF: most): no scratch to allocate
        s = starts[w]
        n = ends[w] - s
        sums = np.zeros((8, BLOCK), np.int32)
        never = np.full(8, np.iinfo(np.int32).max, np.int32)
        mask = np.zeros(8, np.int32)
        span = np.empty((8, _SPAN * BLOCK), np.int32)  # the sums of a span's rows
        tables = np.empty((8, luts.shape[1]), np.uint8)
        em2 = limits[bptr[w], LIM_E2] if bptr[w + 1] > bptr[w] else np.float32(0.0)
        g0 = qptr[w]
        while g0 < qptr[w + 1]:
            qb = _pass_size(qbmax, qptr[w + 1] - g0)
            for u in range(qb):
                tables[u] = luts[qidx[g0 + u]]
            for b0 in range(bptr[w], bptr[w + 1], _SPAN):
                b1 = min(bptr[w + 1], b0 + _SPAN)
                r0 = (b0 - bptr[w]) * BLOCK
                cnt = min(_SPAN * BLOCK, n - r0)
                for blk in range(b0, b1):
                    _block_sums(
                        tag, base + blk * rowbytes, blocked[blk], npairs, tables, 0, qb, sums,
                        never, mask,
                    )  # fmt: skip
                    at = (blk - b0) * BLOCK
                    here = min(BLOCK, cnt - at)
                    for u in range(qb):
                        span[u, at : at + here] = sums[u, :here]
                j = s + r0
                nm = norms[j : j + cnt] if l2 else norms
                ra, rb = (a[j : j + cnt], b[j : j + cnt]) if terms == TERMS_ALL else (a, b)
                rc = c[j : j + cnt] if terms != TERMS_NONE else c
                rw = words[j : j + cnt]
                for u in range(qb):
                    p = g0 + u
                    qq = qidx[p]
                    at = uptr[p] + r0
                    point = pts[at : at + cnt]
                    # a zero query row (|qi| = 0) scores every row its terms: a point of
                    # scale 0 is that score, exactly (the estimate's part would not be 0)
                    s0 = qscale[qq] if qnorm[qq] > 0 else np.float32(0.0)
                    _row_points(
                        span[u], rw, ra, rb, rc, nm, xs[at : at + cnt], point, xq[qq], s0,
                        em2, qc[qq], t[qq], qadd[p], l2, qsq[qq], terms, popmask, delta,
                    )  # fmt: skip
                    m = seed_m[p]
                    root = seed_s[p, 0] if m == cap else floor[qq]
                    m, root = _best(point, cnt, r0, seed_s[p], seed_i[p], m, root, cap)
                    seed_m[p] = m
                    if m == cap and root > floor[qq]:
                        floor[qq] = root
            g0 += qb


@nb.njit(cache=True, fastmath=False, parallel=True)
def _seed(
    codes, layout, d, starts, pitem, qpairs, qpptr, qslot, qadd, qi, qscale, qoff, t, a, b, c,
    l2, norms, qsq, uptr, pts, seed_s, seed_i, seed_m, out_s, out_i, counts, qthr, refined,
    q8, per_byte, row_bytes,
):  # fmt: skip
    """Pass 2, per query: score exactly its rows of best point estimates (as many as
    ``seed_s`` has columns; 16 at a time where :func:`_dots16` can); their k-th score
    is the threshold pass 3 starts from."""
    nq = qpptr.shape[0] - 1
    k = out_s.shape[1]
    ns = seed_s.shape[1]
    dq = q8.shape[1]
    nch = dq // (64 * per_byte)
    for qq in nb.prange(nq):
        row = np.zeros(d, np.uint8)
        buf = np.zeros((16, nch * 64), np.uint8)
        dots = np.zeros(16, np.int32)
        best_s = np.empty(ns, np.float32)
        best_r = np.empty(ns, np.int64)  # position in pts
        mb = 0
        for x in range(qpptr[qq], qpptr[qq + 1]):
            p = qpairs[x]
            for y in range(seed_m[p]):
                v = seed_s[p, y]
                if mb < ns or v > best_s[0]:
                    mb = heap_push(best_s, best_r, mb, v, uptr[p] + seed_i[p, y])
        # the rows and pairs of the seeds
        rows = np.empty(mb, np.int64)
        pairs = np.empty(mb, np.int64)
        for y in range(mb):
            pos = best_r[y]
            p = qpairs[qpptr[qq]]
            for x in range(qpptr[qq], qpptr[qq + 1]):  # the pair whose range holds pos
                if uptr[qpairs[x]] <= pos < uptr[qpairs[x] + 1]:
                    p = qpairs[x]
            rows[y] = starts[pitem[p]] + pos - uptr[p]
            pairs[y] = p
            pts[pos] = -np.inf  # pass 3 skips it
        exact_s = np.empty(k, np.float32)
        exact_i = np.empty(k, np.int64)
        me = 0
        pq = q8.ctypes.data + qq * dq
        pcodes = codes.ctypes.data
        for y in range(mb):  # the seeds lie anywhere: start reading them all now
            _prefetch_row(pcodes, codes.shape[1], row_bytes, a, b, c, l2, norms, rows[y])
        for y0 in range(0, mb, 16):
            cnt = min(16, mb - y0)
            if HAVE_VNNI:
                _dots16(codes, layout, d, rows[y0:], cnt, buf, row_bytes, per_byte, pq, nch, dots)
            for y in range(y0, y0 + cnt):
                j = rows[y]
                p = pairs[y]
                if HAVE_VNNI:
                    dot = dots[y - y0]
                    x = combine(dot, dot, 1, qscale[qq], qscale[qq], qoff[qq], t[qq], a[j], b[j])
                    v = _finish(x, c[j], qadd[p], l2, norms[j], qsq[qq])
                else:
                    v = _exact(codes, layout, row, qi, qq, d, qscale, qoff, t, a, b, c, j,
                               qadd[p], l2, norms, qsq, q8, per_byte, row_bytes)  # fmt: skip
                slot = qslot[p]
                counts[slot] = heap_push(out_s[slot], out_i[slot], counts[slot], v, j)
                refined[slot] += 1
                me = heap_push(exact_s, exact_i, me, v, j)
        if me == k:
            qthr[qq] = exact_s[0]


@nb.njit(cache=True, inline="always")
def _dots16(codes, layout, d, rows, cnt, buf, row_bytes, per_byte, pq, nch, dots):
    """Exact integer dot products of up to 16 code rows ``rows[:cnt]`` with one query
    (``pq``: its row in the :func:`~vecpress.kernels.scan.split_queries` layout, or
    plain int8 for ``per_byte = 1``) into ``dots[:cnt]``: the rows are gathered into
    ``buf`` (packed as stored, or unpacked to bytes for widths not read in place)
    and scored by one 1 x 16 VNNI tile."""
    for i in range(cnt):
        if per_byte > 1:
            buf[i, :row_bytes] = codes[rows[i], :row_bytes]
        else:
            unpack_layout(codes[rows[i]], layout, buf[i])
    _tile1x16(per_byte, buf.ctypes.data, buf.shape[1], pq, nch, dots.ctypes.data)


@nb.njit(cache=True, fastmath=False, inline="always")
def _score_batch(
    codes, layout, d, cand, nc, buf, row, row_bytes, per_byte, pq, nch, dots, qi, qq, qscale,
    qoff, t, a, b, c, e, l2, norms, qsq, hs, hi, m, k, thr, q8,
):  # fmt: skip
    """Score rows ``cand[:nc]`` exactly into one slot's heap; returns ``(m, thr)``."""
    if HAVE_VNNI:
        _dots16(codes, layout, d, cand, nc, buf, row_bytes, per_byte, pq, nch, dots)
    for i in range(nc):
        j = cand[i]
        if HAVE_VNNI:
            x = combine(dots[i], dots[i], 1, qscale[qq], qscale[qq], qoff[qq], t[qq], a[j], b[j])
            v = _finish(x, c[j], e, l2, norms[j], qsq[qq])
        else:
            v = _exact(codes, layout, row, qi, qq, d, qscale, qoff, t, a, b, c, j, e, l2, norms,
                       qsq, q8, per_byte, row_bytes)  # fmt: skip
        if v >= thr:
            m = heap_push(hs, hi, m, v, j)
            if m == k and hs[0] > thr:
                thr = hs[0]
    return m, thr


@nb.njit(cache=True, fastmath=False, parallel=True)
def _refine(
    codes, layout, d, starts, ends, qptr, qidx, qslot, qadd, qi, qscale, qoff, t, a, b, c,
    l2, norms, qsq, uptr, xs, pts, out_s, out_i, counts, qthr, refined, q8, per_byte,
    row_bytes, bptr, limits, big_f, big_h, eps, big_a, qnorm, zr, qc, big, terms, amax,
):  # fmt: skip
    """Pass 3: score exactly every row whose bound reaches the k-th best score so far.
    A block of 32 rows is filtered first: the rows whose point (:func:`_row_points`)
    lies within the block's :func:`_block_slacks` of the threshold (32 compared at
    once); only they get their estimate ``ŵ = F x + H`` (``x`` the first pass's sum)
    and bound (:func:`_row_bound`), and those it lets through
    are read in full (with AVX-512 VNNI 16 at a time, :func:`_dots16`, ``q8`` the
    queries in its layout)."""
    nitems = starts.shape[0]
    k = out_s.shape[1]
    dq = q8.shape[1]
    nch = dq // (64 * per_byte)
    batch = 16 if HAVE_VNNI else _PREFETCH_AHEAD
    zero = np.float32(0.0)
    for w in nb.prange(nitems):
        if qptr[w] == qptr[w + 1]:
            continue
        s = starts[w]
        n = ends[w] - s
        row = np.zeros(d, np.uint8)
        buf = np.zeros((16, nch * 64), np.uint8)
        cand = np.empty(16, np.int64)
        dots = np.zeros(16, np.int32)
        sv = np.empty(_GROUP, np.int64)  # a group's rows its filters let through
        ubv = np.empty(_GROUP, np.float32)  # and their bounds
        slacks = np.empty(bptr[w + 1] - bptr[w], np.float32)  # per block (_block_slacks)
        for p in range(qptr[w], qptr[w + 1]):
            qq = qidx[p]
            slot = qslot[p]
            hs = out_s[slot]
            hi = out_i[slot]
            e = qadd[p]
            m = counts[slot]
            thr = qthr[qq] if m < k else max(qthr[qq], hs[0])
            pt = pts[uptr[p] : uptr[p] + n]
            xr = xs[uptr[p] : uptr[p] + n]
            ppt = pt.ctypes.data
            px = xr.ctypes.data
            pf, ph, pe, pa, pc = (big_f.ctypes.data, big_h.ctypes.data, eps.ctypes.data,
                                  big_a.ctypes.data, c.ctypes.data)  # fmt: skip
            s0, qn, zq, cq = qscale[qq], qnorm[qq], zr[qq], qc[qq]
            bq, tq, qq2 = big[qq], t[qq], qsq[qq]
            _block_slacks(
                limits[bptr[w] : bptr[w + 1]], s0, qn, zq, cq, bq, tq, e, l2, qq2, terms, amax,
                slacks,
            )  # fmt: skip
            seen = 0
            nc = 0
            pq = q8.ctypes.data + qq * dq
            pcodes = codes.ctypes.data
            cs = codes.shape[1]
            # a group of blocks at a time: the rows their filters let through first (their
            # terms' reads started as they are found), then their bounds (independent of
            # each other), then the rows the bounds let through. One group past the rows
            # scores the last, partial batch: _score_batch has one call site (inlined: a
            # second copy made this kernel compile ~1.5 x as long)
            for g0 in range(0, n + _GROUP, _GROUP):
                tail = g0 >= n
                ns = 0
                for r0 in range(g0, min(n, g0 + _GROUP), 32):
                    cut = thr - slacks[r0 // 32] - abs(thr) * _THR_MARGIN
                    if r0 + 32 <= n:
                        bits = _ge_mask32(ppt + 4 * r0, cut)
                    else:
                        bits = np.uint32(0)
                        for r in range(n - r0):
                            if pt[r0 + r] >= cut:
                                bits |= np.uint32(1) << np.uint32(r)
                    while bits:
                        r = r0 + _ctz32(bits)
                        bits &= bits - np.uint32(1)
                        sv[ns] = r
                        ns += 1
                        _prefetch(px + 4 * r)
                        _prefetch(pf + big_f.strides[0] * (s + r))
                        _prefetch(ph + big_h.strides[0] * (s + r))
                        _prefetch(pe + eps.strides[0] * (s + r))
                        _prefetch(pa + big_a.strides[0] * (s + r))
                        if terms != TERMS_NONE:
                            _prefetch(pc + 4 * (s + r))
                for x in range(ns):
                    r = sv[x]
                    j = s + r
                    w0 = big_f[j] * xr[r] + big_h[j]  # as the float32 terms make ŵ
                    ub = _row_bound(
                        w0, big_f[j], eps[j], big_a[j],
                        a[j] if terms == TERMS_ALL else zero,
                        b[j] if terms == TERMS_ALL else zero,
                        c[j] if terms != TERMS_NONE else zero,
                        norms[j] if l2 else zero, s0, qn, zq, cq, bq, tq, e, l2, qq2, terms,
                        amax,
                    )  # fmt: skip
                    ubv[x] = -np.inf if pt[r] == -np.inf else ub  # -inf: scored in pass 2
                x = 0
                while x < ns or (tail and nc):
                    if x < ns:
                        x += 1
                        if ubv[x - 1] < thr or ubv[x - 1] == -np.inf:
                            continue
                        j = s + sv[x - 1]
                        cand[nc] = j
                        nc += 1
                        # the row is scored when the batch is full: start reading it now
                        _prefetch_row(pcodes, cs, row_bytes, a, b, c, l2, norms, j)
                        if nc < batch:
                            continue
                    m, thr = _score_batch(
                        codes, layout, d, cand, nc, buf, row, row_bytes, per_byte, pq, nch,
                        dots, qi, qq, qscale, qoff, t, a, b, c, e, l2, norms, qsq, hs, hi,
                        m, k, thr, q8,
                    )  # fmt: skip
                    seen += nc
                    nc = 0
            if m == k and thr > qthr[qq]:
                qthr[qq] = thr
            counts[slot] = m
            refined[slot] += seen


def progressive_scan_topk(
    codes, bits, d, starts, ends, qptr, qidx, qslot, qadd, qi, qscale, qoff, t, a, b, c,
    planes, norms, qsq, nslots, k, *, z, terms=TERMS_ALL, l2=False, isa=None, scratch=None,
):  # fmt: skip
    """:func:`~vecpress.kernels.grid_search.grid_scan_topk` reading the sign plane first.

    Same arguments and result (one query limb: ``bits`` ≤ :data:`MAX_BITS`),
    plus ``planes = (blocked, bptr, F, H, eps, A, words, limits)``: the fast-scan blocks
    of the rows' sign planes (item ``w``'s rows in blocks ``bptr[w]:bptr[w+1]``),
    :func:`fold_terms`'s terms made with ``z`` error deviations, their
    :func:`pack_terms` words and the blocks' :func:`block_limits`; ``terms``: which of
    the rows' ``a``, ``b``, ``c`` the points and bounds read (:data:`TERMS_ALL`, or
    where ``b`` is zero and the grid's centre is its middle, ``rq``, :data:`TERMS_C`
    or, with ``c`` zero too, :data:`TERMS_NONE`: the first pass then reads 8 or 4 bytes
    of terms a row; ``True``/``False`` stand for all/none). Three passes: (1) every
    row's table sum and point estimate from its sign plane and word (two float32 per
    row scanned, of scratch); (2) per query, its :data:`SEEDS` ``* k`` rows of best
    point estimates scored exactly, whose k-th score is a threshold; (3) every row
    whose bound reaches the threshold (raised as better rows come) scored exactly,
    the bound made only for the rows that its block's filter lets through. Returns
    ``(scores, rows, refined int64[nslots])``, the last the number of rows scored
    exactly per slot. ``scratch``: a float32 array for the first pass, used where it
    holds two values per row scanned (per row and query; else one is allocated), so a
    caller that keeps one allocates nothing in proportion to the rows per call.
    """
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"a progressive scan takes 1-{MAX_BITS}-bit codes, found {bits} bits")
    isa_id = ISAS.index(ISA if isa is None else isa)
    per_byte = 8 // bits if bits in IN_PLACE_BITS else 1
    out_s, out_i, counts, refined = _run(
        _TAGS[isa_id], _MAX_PASS[isa_id], read_only(codes), bits, d, per_byte, starts, ends,
        qptr, qidx, qslot, qadd, qi, qscale, qoff, t, a, b, c, *planes, read_only(norms), qsq,
        nslots, k, float(z),
        _MODES[_terms_flag(terms) + 3 * bool(l2)],
        _NO_SCRATCH if scratch is None else _scratch(scratch),
    )  # fmt: skip
    _sort_slots(out_s, out_i, counts)
    return out_s, out_i, refined


def progressive_search(
    codes, bits, d, items, lists, adds, queries, t, a, b, c, planes, norms, qsq, k, *, z,
    terms=TERMS_ALL, l2=False, isa=None, scratch=None,
):  # fmt: skip
    """A whole progressive search in one compiled call: the pairs planned, the queries
    quantized, :func:`progressive_scan_topk`'s passes and each query's slots merged.

    What a search of one query at a time pays outside the kernel is the Python
    between its steps, and it is paid with the caches cold (the scan has just
    streamed the sign planes through them): one call instead of five keeps it
    small.

    Parameters
    ----------
    codes, bits, d, t, a, b, c, planes, norms, qsq, k, z, terms, l2, isa, scratch
        As :func:`progressive_scan_topk`.
    items : tuple
        ``(starts, ends, list_ptr)``: the rows of each work item and the items of
        each list (:class:`vecpress.search.scan.Items`).
    lists, adds : int64[nq, P], float32[nq, P]
        The lists each query scans (``-1``: none) and the terms added to their
        scores (:func:`~vecpress.kernels.grid_search.plan_pairs`).
    queries : tuple
        ``(q, center, qoff)`` as :func:`~vecpress.kernels.scan.grid_queries` takes
        them (a grid centre of one number is quantized inside the call).

    Returns
    -------
    (scores float32[nq, k], rows int64[nq, k], refined int64[nq])
        Each query's best ``k`` rows, best first, padded with row ``-1`` and score
        ``-inf`` (the merge of :func:`progressive_scan_topk`'s slots), and the rows
        each query read in full.

    Examples
    --------
    Two stored rows as queries against 200 ``rq4`` rows, as a flat search scans them:

    >>> from vecpress import Codec
    >>> from vecpress.search.planes import Planes
    >>> from vecpress.search.scan import Terms, make_items
    >>> x = np.random.default_rng(0).standard_normal((200, 32)).astype(np.float32)
    >>> codec = Codec.from_spec("rq4").fit(x)
    >>> codes = codec.encode(x)
    >>> items = make_items(np.array([0, 200]))
    >>> terms = Terms(codec, codes)
    >>> terms.ensure(items, np.array([0]))
    >>> planes = Planes(codec, codes, items)
    >>> planes.ensure(np.array([0]), terms.arrays)
    >>> qe, center, qoff, t = codec.quantizer.grid_queries(x[:2])
    >>> scores, rows, refined = progressive_search(
    ...     codes, 4, 32, (items.starts, items.ends, items.list_ptr),
    ...     np.zeros((2, 1), np.int64), np.zeros((2, 1), np.float32), (qe, center, qoff),
    ...     t, *terms.arrays, planes.arrays, np.zeros(1, np.float32), np.zeros(2, np.float32),
    ...     3, z=planes.z, terms=planes.terms)
    >>> full = np.argsort(-codec.score(x[:2], codes), axis=1, kind="stable")[:, :3]
    >>> rows[:, 0].tolist(), bool((rows == full).all()), bool((refined < 200).all())
    ([0, 1], True, True)
    """
    return Bound(codes, bits, d, items, a, b, c, planes, norms, z=z, terms=terms, l2=l2, isa=isa)(
        lists, adds, queries, t, qsq, k, scratch=scratch
    )


class Bound:
    """:func:`progressive_search` with an index's arrays bound once: a search of one
    query at a time then passes only its own, ``bound(lists, adds, queries, t, qsq, k,
    scratch=None)`` (the arguments of :func:`progressive_search` of those names).
    A search stage keeps one from its first progressive search on.

    Examples
    --------
    >>> from vecpress import Index
    >>> x = np.random.default_rng(0).standard_normal((200, 32)).astype(np.float32)
    >>> index = Index("rq4", "ip")
    >>> _ = index.add(x)
    >>> index.search(x[:1], 3, progressive=True).ids[0, 0].item()
    0
    >>> isinstance(index._first_stage().bound, Bound)
    True
    """

    __slots__ = ("_bits", "_head", "_mode", "_rows", "_z")

    def __init__(
        self, codes, bits, d, items, a, b, c, planes, norms, *, z, terms=TERMS_ALL, l2=False,
        isa=None,
    ):  # fmt: skip
        if not 1 <= bits <= MAX_BITS:
            raise ValueError(f"a progressive scan takes 1-{MAX_BITS}-bit codes, found {bits} bits")
        isa_id = ISAS.index(ISA if isa is None else isa)
        per_byte = 8 // bits if bits in IN_PLACE_BITS else 1
        starts, ends, list_ptr = items
        self._bits = bits
        self._head = (
            _TAGS[isa_id], _MAX_PASS[isa_id], read_only(codes), bits, d, per_byte, starts, ends,
            list_ptr,
        )  # fmt: skip
        self._rows = (a, b, c, *planes, read_only(norms))
        self._z = float(z)
        self._mode = _MODES[_terms_flag(terms) + 3 * bool(l2)]

    def __call__(self, lists, adds, queries, t, qsq, k, *, scratch=None):
        q, center, qoff = queries
        lists = np.ascontiguousarray(lists, np.int64)
        adds = np.ascontiguousarray(adds, np.float32)
        t = np.ascontiguousarray(t, np.float32)
        work = _NO_SCRATCH if scratch is None else _scratch(scratch)
        if np.ndim(center) == 0:
            qoff = query_offsets(qoff, q.shape[0])
            return _search_centred(
                *self._head, lists, adds, q, float(center), qoff, t, *self._rows, qsq, k,
                self._z, self._mode, work,
            )  # fmt: skip
        return _search(
            *self._head, lists, adds, *grid_queries(q, center, qoff, self._bits), t,
            *self._rows, qsq, k, self._z, self._mode, work,
        )  # fmt: skip


@nb.njit(cache=True)
def _search_centred(
    tag, qbmax, codes, bits, d, per_byte, starts, ends, list_ptr, lists, adds, q, center,
    qoff, t, a, b, c, blocked, bptr, big_f, big_h, eps, big_a, words, limits, norms, qsq, k, z,
    mode, scratch,
):  # fmt: skip
    """:func:`_search` of queries quantized here (:func:`progressive_search`)."""
    qi, qscale, off = _grid_queries_flat(q, center, qoff, 1)
    return _search(
        tag, qbmax, codes, bits, d, per_byte, starts, ends, list_ptr, lists, adds, qi, qscale,
        off, t, a, b, c, blocked, bptr, big_f, big_h, eps, big_a, words, limits, norms, qsq, k,
        z, mode, scratch,
    )  # fmt: skip


@nb.njit(cache=True)
def _search(
    tag, qbmax, codes, bits, d, per_byte, starts, ends, list_ptr, lists, adds, qi, qscale,
    qoff, t, a, b, c, blocked, bptr, big_f, big_h, eps, big_a, words, limits, norms, qsq, k, z,
    mode, scratch,
):  # fmt: skip
    """:func:`progressive_search` of quantized queries: plan, :func:`_run`, merge
    (:func:`~vecpress.kernels.grid_search.merge_heaps`)."""
    qptr, qidx, qslot, qadd, qslot_ptr = plan_pairs(list_ptr, lists, adds)
    slot_s, slot_i, counts, refined = _run(
        tag, qbmax, codes, bits, d, per_byte, starts, ends, qptr, qidx, qslot, qadd, qi,
        qscale, qoff, t, a, b, c, blocked, bptr, big_f, big_h, eps, big_a, words, limits, norms,
        qsq, qslot_ptr[-1], k, z, mode, scratch,
    )  # fmt: skip
    nq = lists.shape[0]
    res_s = np.empty((nq, k), np.float32)
    res_i = np.empty((nq, k), np.int64)
    merge_heaps(slot_s, slot_i, counts, qslot_ptr, k, res_s, res_i)
    per_query = np.zeros(nq, np.int64)
    for i in range(nq):
        per_query[i] = refined[qslot_ptr[i] : qslot_ptr[i + 1]].sum()
    return res_s, res_i, per_query


#: no scratch given (:func:`progressive_scan_topk`)
_NO_SCRATCH = np.empty(0, np.float32)


def _scratch(buf) -> np.ndarray:
    """``buf`` as the first pass's scratch: a writable, contiguous float32 vector."""
    if (
        not isinstance(buf, np.ndarray)
        or buf.dtype != np.float32
        or buf.ndim != 1
        or not buf.flags.c_contiguous
        or not buf.flags.writeable
    ):
        found = (
            type(buf).__name__
            if not isinstance(buf, np.ndarray)
            else f"{buf.dtype}{list(buf.shape)}"
        )
        raise TypeError(f"scratch must be a writable contiguous float32 vector, found {found}")
    return buf


def _terms_flag(terms) -> int:
    """``terms`` as one of :data:`TERMS_NONE`, :data:`TERMS_C`, :data:`TERMS_ALL`."""
    if terms is True or terms is False:
        return TERMS_ALL if terms else TERMS_NONE
    if terms not in (TERMS_NONE, TERMS_C, TERMS_ALL):
        raise ValueError(f"terms must be TERMS_NONE, TERMS_C or TERMS_ALL, found {terms!r}")
    return int(terms)


@nb.njit(cache=True)
def query_terms(qi, d, qscale, qoff, bits, z, rsum, rnorm):
    """Per query (``qi``'s first ``d`` columns), the constants the passes read,
    float32[nq] each: ``xq = R - Σ qi``
    (the sign plane's estimate is ``F (8 S6 + xq) + H``), ``zr = z |r|`` (the table's
    cut bits), ``qnorm = |qi|``, ``qc`` the score's term of the grid's middle and
    ``big`` the magnitude ``combine()`` rounds at; ``rsum``, ``rnorm`` are
    :func:`sign_tables`'s.

    Examples
    --------
    >>> qi = np.array([[3, -4]], np.int16)
    >>> xq, zr, qnorm, qc, big = query_terms(qi, 2, np.float32([0.5]), np.float32([1.0]),
    ...                                      1, 4.0, np.array([2.0]), np.array([1.0]))
    >>> float(xq[0]), float(zr[0]), float(qnorm[0]), float(qc[0]), float(big[0])
    (3.0, 4.0, 5.0, 0.75, 1.25)
    """
    nq = qi.shape[0]
    mid = ((1 << bits) - 1) / 2.0
    xq = np.empty(nq, np.float32)
    zr = np.empty(nq, np.float32)
    qnorm = np.empty(nq, np.float32)
    qc = np.empty(nq, np.float32)
    big = np.empty(nq, np.float32)
    for u in range(nq):
        qsum = 0.0
        q2 = 0.0
        for i in range(d):
            x = np.float64(qi[u, i])
            qsum += x
            q2 += x * x
        s0 = np.float64(qscale[u])
        off = np.float64(qoff[u])
        xq[u] = np.float32(rsum[u] - qsum)
        zr[u] = np.float32(z * rnorm[u])
        qnorm[u] = np.float32(np.sqrt(q2))
        # the score's term of the grid's middle, and the magnitude combine() rounds at
        qc[u] = np.float32(s0 * mid * qsum + off)
        big[u] = np.float32(abs(s0 * mid * qsum) + abs(off))
    return xq, zr, qnorm, qc, big


@nb.njit(cache=True)
def _run(
    tag, qbmax, codes, bits, d, per_byte, starts, ends, qptr, qidx, qslot, qadd, qi, qscale,
    qoff, t, a, b, c, blocked, bptr, big_f, big_h, eps, big_a, words, limits, norms, qsq, nslots, k,
    z, mode, scratch,
):  # fmt: skip
    """:func:`progressive_scan_topk` in one compiled call: the queries' tables and
    constants, the pairs' bookkeeping and the three passes; the slots' heaps are
    returned unsorted, with their counts (``out_s, out_i, counts, refined``)."""
    l2, terms = _mode_flags(mode)
    nq = qsq.shape[0]
    m4 = ((d + 3) // 4 + 3) // 4 * 4  # sign_plane_dims(d) groups, padded as _padded_luts does
    lut = np.zeros((nq, m4, 16), np.uint8)
    rsum = np.zeros(nq, np.float64)
    rnorm = np.zeros(nq, np.float64)
    _tables(qi, d, lut, rsum, rnorm)
    luts = lut.reshape(nq, m4 * 16)
    xq, zr, qnorm, qc, big = query_terms(qi, d, qscale, qoff, bits, z, rsum, rnorm)
    out_s = np.empty((nslots, k), np.float32)
    out_i = np.empty((nslots, k), np.int64)
    counts = np.zeros(nslots, np.int64)
    refined = np.zeros(nslots, np.int64)
    qthr = np.full(nq, -np.inf, np.float32)
    layout = np.zeros((1, 4), np.int64)
    layout[0, 1] = d
    layout[0, 2] = bits
    # pair p (an entry of qidx) scans item pitem[p]; its rows' numbers lie at uptr[p]:uptr[p + 1]
    npair = qidx.shape[0]
    pitem = np.empty(npair, np.int64)
    uptr = np.zeros(npair + 1, np.int64)
    for w in range(starts.shape[0]):
        for p in range(qptr[w], qptr[w + 1]):
            pitem[p] = w
            uptr[p + 1] = uptr[p] + ends[w] - starts[w]
    total = uptr[npair]
    # per (pair, row): its table sum x, then its point (_row_points)
    need = 2 * total
    work = scratch[:need] if scratch.shape[0] >= need else np.empty(need, np.float32)
    xs, pts = work[:total], work[total:need]
    seed_s = np.empty((npair, SEEDS * k), np.float32)
    seed_i = np.empty((npair, SEEDS * k), np.int64)
    seed_m = np.zeros(npair, np.int64)
    qpairs = np.argsort(qidx, kind="mergesort")
    qpptr = np.zeros(nq + 1, np.int64)
    for p in range(npair):
        qpptr[qidx[p] + 1] += 1
    for u in range(nq):
        qpptr[u + 1] += qpptr[u]
    amax = np.float32(2 / np.sqrt(d))
    popmask = np.uint32((1 << pop_bits(d)) - 1)
    delta = packed_delta(d)
    _points(
        tag, qbmax, blocked, bptr, starts, ends, qptr, qidx, qadd, luts, xq, qnorm, qc, qscale,
        t, a, b, c, words, popmask, delta, limits, mode, norms, qsq, uptr, xs, pts, seed_s,
        seed_i, seed_m, np.full(nq, -np.inf, np.float32),
    )  # fmt: skip
    q8 = _query_bytes(qi, d, per_byte)
    row_bytes = (d * bits + 7) // 8
    _seed(
        codes, layout, d, starts, pitem, qpairs, qpptr, qslot, qadd, qi, qscale, qoff, t, a, b,
        c, l2, norms, qsq, uptr, pts, seed_s, seed_i, seed_m, out_s, out_i, counts, qthr,
        refined, q8, per_byte, row_bytes,
    )  # fmt: skip
    _refine(
        codes, layout, d, starts, ends, qptr, qidx, qslot, qadd, qi, qscale, qoff, t, a, b, c,
        l2, norms, qsq, uptr, xs, pts, out_s, out_i, counts, qthr, refined, q8, per_byte,
        row_bytes, bptr, limits, big_f, big_h, eps, big_a, qnorm, zr, qc, big, terms, amax,
    )  # fmt: skip
    return out_s, out_i, counts, refined


__all__ = [
    "MAX_BITS",
    "MAX_DIMS",
    "TERMS_ALL",
    "TERMS_C",
    "TERMS_NONE",
    "Bound",
    "block_limits",
    "fold_terms",
    "item_planes",
    "pack_terms",
    "packed_delta",
    "plane_layout",
    "plane_rows",
    "pop_bits",
    "progressive_scan_topk",
    "progressive_search",
    "query_terms",
    "sign_plane_dims",
    "sign_tables",
]
