"""The compiled kernels against plain numpy references, and thread independence."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import vecpress
from _util import gaussian
from vecpress import Codec
from vecpress.kernels.bitpack import pack, packed_size, unpack
from vecpress.kernels.bytetables import byte_tables
from vecpress.kernels.grid_search import _packed_dot
from vecpress.kernels.hadamard import fwht_inplace, hadamard_rounds, random_rounds
from vecpress.kernels.maddubs import TILE_ROWS, tile4x16
from vecpress.kernels.nibbles import HAVE_AVX2
from vecpress.kernels.scan import (
    HAVE_VNNI,
    check_layout,
    grid_queries,
    hamming_scan,
    int_scan,
    pack_words,
    quantize_queries,
    query_limbs,
    rows_layout,
    score_uniform,
    table_scan,
)

BITS = range(1, 9)
DIMS = [1, 3, 7, 50, 385]
U32 = 2.0**-24  # float32 unit roundoff


def ref_pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Little-endian bit stream: code i occupies bits [i*b, (i+1)*b)."""
    n, d = codes.shape
    stream = (codes[:, :, None].astype(np.uint16) >> np.arange(bits)) & 1
    return np.packbits(stream.reshape(n, d * bits).astype(np.uint8), axis=1, bitorder="little")


def ref_unpack(packed: np.ndarray, bits: int, d: int) -> np.ndarray:
    n = packed.shape[0]
    stream = np.unpackbits(packed, axis=1, bitorder="little")[:, : d * bits]
    weights = (1 << np.arange(bits)).astype(np.uint16)
    return (stream.reshape(n, d, bits) * weights).sum(axis=2).astype(np.uint8)


def random_codes(rng, n, d, bits):
    return rng.integers(0, 1 << bits, (n, d), dtype=np.uint8)


# -- bit packing ----------------------------------------------------------------------------


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("bits", BITS)
def test_pack_matches_the_bit_stream_and_round_trips(bits, d):
    rng = np.random.default_rng(bits * 1000 + d)
    codes = random_codes(rng, 131, d, bits)
    packed = pack(codes, bits)
    assert packed.dtype == np.uint8
    assert packed.shape == (131, packed_size(d, bits)) == (131, (d * bits + 7) // 8)
    np.testing.assert_array_equal(packed, ref_pack(codes, bits))
    np.testing.assert_array_equal(unpack(packed, bits, d), codes)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("bits", BITS)
def test_unpack_arbitrary_bytes_and_wider_rows(bits, d):
    rng = np.random.default_rng(bits * 7 + d)
    width = packed_size(d, bits) + 5  # rows may hold more than the codes (norms, factors)
    raw = rng.integers(0, 256, (70, width), dtype=np.uint8)
    np.testing.assert_array_equal(unpack(raw, bits, d), ref_unpack(raw, bits, d))


@pytest.mark.parametrize("d", DIMS)
def test_one_bit_packing_is_numpy_packbits_little(d):
    codes = random_codes(np.random.default_rng(d), 40, d, 1)
    np.testing.assert_array_equal(pack(codes, 1), np.packbits(codes, axis=1, bitorder="little"))


def test_pack_of_zero_rows():
    assert pack(np.zeros((0, 5), np.uint8), 3).shape == (0, 2)
    assert unpack(np.zeros((0, 2), np.uint8), 3, 5).shape == (0, 5)


# -- Hadamard -------------------------------------------------------------------------------


def hadamard_matrix(p: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < p:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(p)


def ref_round_matrix(signs, perm) -> np.ndarray:
    """The matrix A of one round: z = A x (signs and permutation, H on [0,p), H on [d-p,d))."""
    d = signs.size
    p = 1 << (d.bit_length() - 1)
    a = np.zeros((d, d))
    a[np.arange(d), perm] = signs
    h = np.eye(d)
    h[:p, :p] = hadamard_matrix(p)
    a = h @ a
    if p < d:
        h2 = np.eye(d)
        h2[d - p :, d - p :] = hadamard_matrix(p)
        a = h2 @ a
    return a


@pytest.mark.parametrize("rounds", [1, 2, 3])
@pytest.mark.parametrize("d", [1, 2, 3, 7, 50, 64, 130])
def test_hadamard_rounds_match_the_definition(d, rounds):
    signs, perms = random_rounds(d, rounds, np.random.default_rng(d + rounds))
    assert set(np.unique(signs)) <= {-1.0, 1.0}
    for p in perms:
        np.testing.assert_array_equal(np.sort(p), np.arange(d))
    m = np.eye(d)
    for r in range(rounds):
        m = ref_round_matrix(signs[r].astype(np.float64), perms[r]) @ m
    x = np.random.default_rng(0).standard_normal((150, d)).astype(np.float32)
    fwd = hadamard_rounds(x, signs, perms, False)
    want = x.astype(np.float64) @ m.T
    scale = np.linalg.norm(x, axis=1, keepdims=True)
    assert np.abs(fwd - want).max(initial=0) <= 1e-5 * scale.max()
    inv = hadamard_rounds(x, signs, perms, True)
    assert np.abs(inv - x.astype(np.float64) @ m).max(initial=0) <= 1e-5 * scale.max()


@pytest.mark.parametrize("p", [1, 2, 8, 256])
def test_fwht_is_the_normalised_sylvester_hadamard(p):
    x = np.random.default_rng(p).standard_normal((5, p)).astype(np.float32)
    y = x.copy()
    fwht_inplace(y)
    np.testing.assert_allclose(y, x @ hadamard_matrix(p).T, rtol=0, atol=1e-5)


# -- scans ----------------------------------------------------------------------------------


# The VNNI kernel runs only where the CPU has it; the portable one can always be forced.
KERNELS = [
    pytest.param(False, id="auto" + ("-vnni" if HAVE_VNNI else "-portable")),
    pytest.param(True, id="portable"),
]


@pytest.mark.parametrize("portable", KERNELS)
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("bits", BITS)
def test_int_scan_integer_dot_products_are_exact(bits, d, portable):
    rng = np.random.default_rng(bits + 10 * d)
    n, nq = 150, 6  # more rows than one 64-row block, and a partial block
    codes = random_codes(rng, n, d, bits)
    codes[0] = (1 << bits) - 1  # the extremes: all codes maximal ...
    rows = np.hstack([pack(codes, bits), rng.integers(0, 256, (n, 3), dtype=np.uint8)])
    qi = rng.integers(-127, 128, (nq, d)).astype(np.int16)
    qi[0] = 127  # ... against a query of maximal values
    qi[1] = -127
    out = np.empty((nq, n), np.float32)
    ones, zeros = np.ones(n, np.float32), np.zeros(n, np.float32)
    int_scan(
        rows,
        bits,
        d,
        qi,
        np.ones(nq, np.float32),
        np.zeros(nq, np.float32),
        ones,
        zeros,
        np.zeros(nq, np.float32),
        out,
        portable=portable,
    )
    want = qi.astype(np.int64) @ codes.astype(np.int64).T  # |want| < 2^24: exact in float32
    assert np.abs(want).max() < 2**24
    np.testing.assert_array_equal(out, want.astype(np.float32))


@pytest.mark.skipif(not HAVE_VNNI, reason="the tile is an AVX-512 VNNI kernel")
@pytest.mark.parametrize("d", [4, 64, 384, 2048])
def test_tile_of_rows_laid_out_by_rows_is_exact(d):
    """The 4 x 32 tile over rows laid out by rows (``rows_layout``): exact integer dot
    products, at the extremes too (codes 255 against queries of -127 and 127)."""
    from vecpress.kernels.scan import _BLOCK, _vnni_tile4x32_rows, rows_layout

    rng = np.random.default_rng(d)
    codes = rng.integers(0, 256, (_BLOCK, d)).astype(np.uint8)
    codes[0] = 255
    q = rng.integers(-127, 128, (4, d)).astype(np.int8)
    q[0], q[1] = 127, -127
    block = np.zeros((d // 4, _BLOCK), np.uint32)

    @numba.njit
    def run(codes, q, block, dots):
        for r in range(codes.shape[0]):
            rows_layout(codes[r], r, block)
        for r in range(0, codes.shape[0], 32):
            _vnni_tile4x32_rows(
                block.ctypes.data + 4 * r, 4 * block.shape[1], q.ctypes.data, q.shape[1],
                block.shape[0], dots.ctypes.data + 4 * r, 4 * dots.shape[1],
            )  # fmt: skip

    dots = np.zeros((4, _BLOCK), np.int32)
    run(codes, q, block, dots)
    np.testing.assert_array_equal(dots, q.astype(np.int64) @ codes.astype(np.int64).T)


@numba.njit(cache=False)
def _avx2_tiles(codes, qt, block, flush, split, dots):
    """``codes`` laid out by rows into ``block``, then every 4 x 16 AVX2 tile of them
    against the query tiles ``qt``: groups ``0 .. split - 1`` (fresh: written over), then
    the rest (added). At module level: compiled once, not once per parameter."""
    for r in range(codes.shape[0]):
        rows_layout(codes[r], r, block)
    sa, ng = 4 * block.shape[1], block.shape[0]
    for t in range(qt.shape[0]):
        for r in range(0, codes.shape[0], TILE_ROWS):
            out = dots[4 * t :].ctypes.data + 4 * r
            pa, pq = block.ctypes.data + 4 * r, qt[t].ctypes.data
            tile4x16(pa, sa, pq, split, flush, 1, out, 4 * dots.shape[1])
            tile4x16(
                pa + split * sa, sa, pq + 16 * split, ng - split, flush, 0, out,
                4 * dots.shape[1],
            )  # fmt: skip


@pytest.mark.skipif(not HAVE_AVX2, reason="the tile is an AVX2 kernel")
@pytest.mark.parametrize("d", [4, 28, 64, 384, 700])
@pytest.mark.parametrize("bits", [1, 2, 4, 5, 6, 7])
def test_avx2_tile_of_rows_laid_out_by_rows_is_exact(bits, d):
    """The AVX2 4 x 16 tile (16-bit sums of ``flush_groups(bits)`` groups, then widened):
    exact at the extremes that bound its 16-bit sums (codes 2^bits - 1 against queries of
    127 and -127), with a last flush of fewer groups (d / 4 not a multiple of it), over
    two tiles of queries laid out by ``tile_queries`` (the second one part empty)."""
    from vecpress.kernels.maddubs import flush_groups, tile_queries
    from vecpress.kernels.scan import _BLOCK

    rng = np.random.default_rng(bits * 1000 + d)
    codes = rng.integers(0, 1 << bits, (_BLOCK, d)).astype(np.uint8)
    codes[0] = (1 << bits) - 1
    q = rng.integers(-127, 128, (9, d)).astype(np.int8)
    q[0], q[1] = 127, -127
    order = np.array([3, 0, 1, 5, 2, 8, 4])  # query rows in a tile's order, not all of them
    flush = flush_groups(bits)
    assert flush >= 1 and 2 * ((1 << bits) - 1) * 127 * flush <= 32767

    block = np.zeros((d // 4, _BLOCK), np.uint32)
    qt = tile_queries(q, order, d // 4)
    assert qt.shape == (2, d // 4, 16)
    dots = np.full((8, _BLOCK), 7, np.int32)  # the first segment overwrites what was there
    _avx2_tiles(codes, qt, block, flush, d // 8, dots)
    want = q[order].astype(np.int64) @ codes.astype(np.int64).T
    np.testing.assert_array_equal(dots[:7], want)
    np.testing.assert_array_equal(dots[7], 0)  # the empty query row


def test_avx2_tile_layout_spreads_8_bit_codes():
    """A vpmaddubsw pair of 8-bit codes could saturate (2 x 255 x 127 > 32767): the tile
    layout puts a zero beside each 8-bit code (one product a lane), widens after every
    group holding one, and lets the other groups flush as their widest code allows."""
    from vecpress.kernels.maddubs import flush_groups, tile_layout

    assert flush_groups(8) == 0
    assert 2 * 255 * 127 > 32767 >= 255 * 127
    layout = np.array([[5, 3, 8, 0], [0, 5, 4, 3], [8, 2, 8, 6], [10, 6, 2, 8]])
    tl, slots, width, segs = tile_layout(layout, 17)  # dimension 16: coded by no run
    # the widest runs first (the two 8-bit ones at even bytes, 2 bytes a code), then 4, 2
    assert tl[:, 0].tolist() == [0, 10, 6, 15]
    assert slots.tolist() == [10, 11, 12, 13, 14, 0, 2, 4, 6, 8, 15, 16, 17, 18, 19, 20, -1]
    assert width == 21
    # groups of 4 bytes: 0-11 hold 8-bit codes (flush 1), 12-15 4-bit and 2-bit ones (8),
    # 16-23 2-bit (43)
    assert segs.tolist() == [[0, 3, 1], [3, 4, 8], [4, 6, 43]]


@pytest.mark.parametrize("portable", KERNELS)
def test_int_scan_of_a_layout_of_runs_is_exact(portable):
    """Runs of several widths at their own byte offsets (not in dimension order, with
    dimensions no run covers) score as one exact dot product over the dimensions."""
    rng = np.random.default_rng(3)
    n, nq, d = 150, 6, 200
    runs = [(120, 70, 3), (0, 2, 8), (2, 40, 5), (42, 60, 1), (190, 9, 4)]  # 102..119, 199: none
    row_bytes = sum(packed_size(c, w) for _, c, w in runs) + 5
    rows = rng.integers(0, 256, (n, row_bytes), dtype=np.uint8)  # junk outside the runs
    dense = np.zeros((n, d), np.int64)
    layout, off = [], 3
    for first, count, width in runs:
        c = random_codes(rng, n, count, width)
        c[0] = (1 << width) - 1
        nbytes = packed_size(count, width)
        rows[:, off : off + nbytes] = pack(c, width)
        dense[:, first : first + count] = c
        layout.append((first, count, width, off))
        off += nbytes
    layout = check_layout(layout, d, row_bytes)
    qi = rng.integers(-127, 128, (nq, d)).astype(np.int16)
    qi[0] = 127
    out = np.empty((nq, n), np.float32)
    ones, zeros = np.ones(n, np.float32), np.zeros(n, np.float32)
    zq = np.zeros(nq, np.float32)
    int_scan(
        rows, 8, d, qi, np.ones(nq, np.float32), zq, ones, zeros, zq, out,
        portable=portable, layout=layout,
    )  # fmt: skip
    np.testing.assert_array_equal(out, (qi.astype(np.int64) @ dense.T).astype(np.float32))


def test_byte_tables_give_the_exact_dot_product_of_any_layout():
    """One look-up a byte of the runs (3-, 5- and 7-bit codes straddling bytes, junk
    bytes around them, dimensions no run covers, extreme codes and query values) sums
    to the exact integer dot product; a byte range that misses part of the codes is
    refused."""
    rng = np.random.default_rng(5)
    n, nq, d = 300, 5, 90
    runs = [(50, 21, 3), (0, 2, 8), (2, 17, 5), (19, 11, 7), (80, 9, 1), (71, 9, 2)]
    first = 4
    nbytes = sum(packed_size(c, w) for _, c, w in runs)
    rows = rng.integers(0, 256, (n, first + nbytes + 3), dtype=np.uint8)
    dense = np.zeros((n, d), np.int64)
    layout, off = [], first
    for start, count, width in runs:
        c = random_codes(rng, n, count, width)
        c[0] = (1 << width) - 1
        c[1] = 0
        rows[:, off : off + packed_size(count, width)] = pack(c, width)
        dense[:, start : start + count] = c
        layout.append((start, count, width, off))
        off += packed_size(count, width)
    layout = check_layout(layout, d, rows.shape[1])
    qi = rng.integers(-127, 128, (nq, d)).astype(np.int16)
    qi[0], qi[1] = 127, -127
    tables = byte_tables(layout, qi, first, nbytes)
    assert tables.dtype == np.int32 and tables.shape == (nq, nbytes, 256)
    got = tables[:, np.arange(nbytes), rows[:, first : first + nbytes]].sum(axis=2)
    np.testing.assert_array_equal(got, qi.astype(np.int64) @ dense.T)
    with pytest.raises(ValueError, match="outside bytes"):
        byte_tables(layout, qi, first + 1, nbytes - 1)


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        ([[0, 4, 2]], "int64\\[G, 4\\]"),
        ([[0, 4, 9, 0]], "does not fit d=8"),
        ([[0, 4, 0, 0]], "does not fit d=8"),
        ([[6, 4, 2, 0]], "does not fit d=8"),
        ([[-1, 2, 2, 0]], "does not fit d=8"),
        ([[0, 8, 4, 1]], "needs bytes 1..5, rows have 4"),
        ([[0, 4, 2, -1]], "needs bytes"),
        ([[0, 4, 2, 0], [3, 2, 2, 1]], "overlaps"),
        ([[0, 4, 4, 0], [4, 2, 2, 1]], "overlaps"),
    ],
)
def test_check_layout_rejects_bad_runs(layout, match):
    with pytest.raises(ValueError, match=match):
        check_layout(layout, 8, 4)


def test_grid_queries_with_a_centre_per_dimension():
    """off = qoff - sum_l s_l <center, qi_l>, so <c - center, q> + qoff ≈ s <c, qi> + off."""
    rng = np.random.default_rng(5)
    q = rng.standard_normal((3, 20)).astype(np.float32)
    center = rng.uniform(0, 100, 20).astype(np.float32)
    qoff = rng.standard_normal(3).astype(np.float32)
    for bits in (4, 8):
        qi, qs, off = grid_queries(q, center, qoff, bits)
        limbs = query_limbs(bits)
        qq = qi.reshape(3, limbs, 20).astype(np.float64) * qs.reshape(3, limbs, 1)
        want = qoff - (qq.sum(axis=1) @ center.astype(np.float64))
        np.testing.assert_allclose(off, want, rtol=1e-5, atol=1e-3)
        # a scalar centre gives what the same centre repeated per dimension gives
        _, _, off1 = grid_queries(q, 7.5, qoff, bits)
        _, _, off2 = grid_queries(q, np.full(20, 7.5, np.float32), qoff, bits)
        np.testing.assert_allclose(off1, off2, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bits", range(1, 9))
def test_grid_queries_one_centre_is_the_per_dimension_path_to_the_bit(bits):
    """The compiled path of one centre (a single query's latency) gives the arrays of the
    per-dimension path for the same centre repeated: its float64 sums of integer codes
    times a half-integer centre are exact, so the float32 offsets agree bit for bit;
    queries at 1e-20 .. 1e20 scales, one offset for all queries or one per query."""
    rng = np.random.default_rng(40 + bits)
    center = ((1 << bits) - 1) / 2
    for trial in range(20):
        nq, d = int(rng.integers(1, 7)), int(rng.integers(1, 70))
        q = (rng.standard_normal((nq, d)) * 10.0 ** rng.uniform(-20, 20)).astype(np.float32)
        qoff = (rng.standard_normal(nq) * 10.0 ** rng.uniform(-5, 5)).astype(np.float32)
        qoff = np.float32(qoff[0]) if trial % 4 == 0 else qoff
        flat = grid_queries(q, center, qoff, bits)
        per_dim = grid_queries(q, np.full(d, center), np.full(nq, qoff, np.float32), bits)
        for a, b in zip(flat, per_dim, strict=True):
            assert a.dtype == b.dtype and a.flags.c_contiguous
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("portable", KERNELS)
@pytest.mark.parametrize("bits", [1, 4, 5, 8])
def test_int_scan_affine_part(bits, portable):
    rng = np.random.default_rng(bits)
    n, nq, d = 130, 4, 50
    codes = random_codes(rng, n, d, bits)
    qi = rng.integers(-127, 128, (nq, d)).astype(np.int16)
    qscale = rng.uniform(0.001, 0.1, nq).astype(np.float32)
    qoff = rng.standard_normal(nq).astype(np.float32)
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    t = rng.standard_normal(nq).astype(np.float32)
    out = np.empty((nq, n), np.float32)
    int_scan(pack(codes, bits), bits, d, qi, qscale, qoff, a, b, t, out, portable=portable)
    acc = qi.astype(np.float64) @ codes.astype(np.float64).T
    want = a * (qscale[:, None] * acc + qoff[:, None]) + b * t[:, None]
    mag = np.abs(a) * (qscale[:, None] * np.abs(acc) + np.abs(qoff[:, None])) + np.abs(
        b * t[:, None]
    )
    assert (np.abs(out - want) <= 8 * U32 * mag).all()


@pytest.mark.parametrize("offset", [0, 3])
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("bits", BITS)
def test_table_scan_matches_numpy(bits, d, offset):
    rng = np.random.default_rng(bits + 100 * d + offset)
    n, nq = 140, 5
    codes = random_codes(rng, n, d, bits)
    rows = np.hstack(
        [
            rng.integers(0, 256, (n, offset), dtype=np.uint8),
            pack(codes, bits),
            rng.integers(0, 256, (n, 2), dtype=np.uint8),
        ]
    )
    table = rng.standard_normal(1 << bits).astype(np.float32)
    queries = rng.standard_normal((nq, d)).astype(np.float32)
    a = rng.uniform(0.5, 2.0, n).astype(np.float32)
    out = np.empty((nq, n), np.float32)
    table_scan(rows, offset, bits, d, table, queries, a, out)
    vals = table[codes].astype(np.float64)
    want = a * (queries.astype(np.float64) @ vals.T)
    # recursive float32 summation of d terms: error <= (d + 2) u sum |terms|
    bound = (d + 2) * U32 * a * (np.abs(queries).astype(np.float64) @ np.abs(vals).T)
    assert (np.abs(out - want) <= bound + 1e-30).all()


@pytest.mark.parametrize("nbytes", [1, 7, 8, 13, 48])
@pytest.mark.parametrize("offset", [0, 5])
def test_hamming_scan_matches_numpy(nbytes, offset):
    rng = np.random.default_rng(nbytes + offset)
    n, nq = 150, 7
    rows = rng.integers(0, 256, (n, offset + nbytes + 4), dtype=np.uint8)
    qbytes = rng.integers(0, 256, (nq, nbytes), dtype=np.uint8)
    qbytes[0] = rows[3, offset : offset + nbytes]  # distance 0
    qbytes[1] = ~rows[4, offset : offset + nbytes]  # every bit differs
    out = np.empty((nq, n), np.int32)
    hamming_scan(rows, offset, nbytes, pack_words(qbytes), out)
    x = rows[None, :, offset : offset + nbytes] ^ qbytes[:, None, :]
    want = np.unpackbits(x, axis=2).sum(axis=2)
    np.testing.assert_array_equal(out, want)
    assert out[0, 3] == 0 and out[1, 4] == 8 * nbytes


def test_quantize_queries_error_is_at_most_half_a_step():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((50, 77)).astype(np.float32) * rng.uniform(1e-3, 1e3, (50, 1))
    q = q.astype(np.float32)
    q[7] = 0.0
    q[8, :] = 0.0
    q[8, 3] = -2.5  # a single non-zero value maps to -127 exactly
    qi, scale = quantize_queries(q)
    assert qi.dtype == np.int16 and scale.dtype == np.float32
    assert np.abs(qi).max() <= 127
    nonzero = np.abs(q).max(axis=1) > 0
    assert (np.abs(qi[nonzero]).max(axis=1) == 127).all()
    assert (qi[7] == 0).all() and scale[7] == 1.0
    assert qi[8, 3] == -127 and (np.delete(qi[8], 3) == 0).all()
    err = np.abs(q.astype(np.float64) - scale[:, None].astype(np.float64) * qi)
    # rint(q / scale) is exact up to the float32 rounding of q / scale (<= 127 u)
    assert (err <= scale[:, None] * (0.5 + 128 * U32)).all()


@pytest.mark.parametrize("limbs", [1, 2, 3])
def test_quantize_queries_limbs(limbs):
    """Each limb quantizes the previous residual: the error is at most the last scale / 2."""
    rng = np.random.default_rng(limbs)
    q = (rng.standard_normal((30, 50)) * rng.uniform(1e-2, 1e2, (30, 1))).astype(np.float32)
    qi, scale = quantize_queries(q, limbs)
    assert qi.shape == (limbs * 30, 50) and scale.shape == (limbs * 30,)
    assert np.abs(qi).max() <= 127
    parts = qi.reshape(limbs, 30, 50).astype(np.float64)
    scales = scale.reshape(limbs, 30).astype(np.float64)
    rec = (parts * scales[:, :, None]).sum(axis=0)
    last = scales[-1][:, None]
    # float32 residuals add a rounding of ~u |q| per limb on top of the last half-step
    slack = limbs * 4 * U32 * np.abs(q).max(axis=1, keepdims=True)
    assert (np.abs(rec - q) <= 0.5 * last + slack).all()
    np.testing.assert_allclose(scales[1:] * 254, scales[:-1], rtol=1e-6)


def test_query_limbs():
    assert [query_limbs(b) for b in range(1, 9)] == [1, 1, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("bits", [2, 5, 6, 8])
def test_score_uniform_against_float_reference(bits):
    """out = a (<c - center, q> + qoff) + b t, up to the query quantization error."""
    rng = np.random.default_rng(bits)
    n, nq, d = 150, 6, 50
    codes = random_codes(rng, n, d, bits)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    center = ((1 << bits) - 1) / 2
    qoff = rng.standard_normal(nq).astype(np.float32)
    a = rng.uniform(0.5, 2, n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    t = rng.standard_normal(nq).astype(np.float32)
    out = score_uniform(pack(codes, bits), bits, d, q, center, qoff, a, b, t)
    grid = codes.astype(np.float64) - center
    want = a * (q.astype(np.float64) @ grid.T + qoff[:, None]) + b * t[:, None]
    _, scales = quantize_queries(q, query_limbs(bits))
    last = scales[-nq:].astype(np.float64)[:, None]
    bound = a * 0.5 * last * np.abs(grid).sum(axis=1)[None, :]
    mag = a * (np.abs(q).astype(np.float64) @ np.abs(grid).T + np.abs(qoff)[:, None])
    assert (np.abs(out - want) <= bound + 1e-5 * mag + 4 * U32 * np.abs(b * t[:, None])).all()


@pytest.mark.parametrize("spec", ["hd2,rq4", "hd2,rq8", "hd2,rq1", "haar,rq6"])
def test_rq_query_quantization_error_is_bounded(spec):
    """|score - score_float| <= |f| s / 2 sum|y_i| (the documented bound) for all pairs."""
    rng = np.random.default_rng(1)
    x = gaussian(rng, 500, 64, offset=0.3)
    queries = gaussian(rng, 20, 64, offset=0.3)
    codec = Codec.from_spec(spec, seed=2).fit(x)
    quant = codec.quantizer
    qt, _ = codec.transform_queries(queries)
    codes = codec.encode(x)
    fast = quant.score(qt, codes).astype(np.float64)
    slow = quant.score_float(qt, codes).astype(np.float64)
    bound = quant.query_quantization_bound(qt, codes).astype(np.float64)
    assert bound.shape == fast.shape == slow.shape
    # float32 slack: both sides sum terms of size <= |f| |q_i| (2^b - 1) in float32, with
    # at most ~(3 + d/2) roundings each, i.e. < 1e-5 of that magnitude at d = 64
    levels = 2 ** int(spec[-1])
    f = np.abs(quant._factor(codes)).astype(np.float64)
    slack = 1e-5 * np.abs(qt).sum(axis=1)[:, None] * (levels - 1) * f[None, :]
    excess = np.abs(fast - slow) - bound
    assert (excess <= slack).all(), excess.max()
    # the bound is informative: small compared with |q| |x| ...
    qx = np.linalg.norm(queries, axis=1)[:, None] * np.linalg.norm(x, axis=1)[None, :]
    assert (bound <= 0.06 * qx).all()
    # ... and the 8-bit query quantization does change the scores
    assert np.abs(fast - slow).max() > 1e-3 * bound.max()


# -- threads --------------------------------------------------------------------------------

THREAD_SPECS = [
    "hd2,rq4",
    "center,hd2,rq8",
    "int4",
    "lvq3",
    "hd2,tq3",
    "hd2,tqp2",
    "qjl64",
    "hd2,sign",
    "hd3,f16",
]


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has a single thread")
def test_results_do_not_depend_on_thread_count():
    rng = np.random.default_rng(3)
    x = gaussian(rng, 1000, 96, offset=0.5)  # 16 blocks of 64 rows
    queries = gaussian(rng, 30, 96, offset=0.5)
    results = {}
    try:
        for threads in (1, 2):
            vecpress.set_num_threads(threads)
            assert vecpress.get_num_threads() == threads
            out = []
            for spec in THREAD_SPECS:
                codec = Codec.from_spec(spec, seed=5).fit(x)
                codes = codec.encode(x)
                out.append((codes, codec.decode(codes), codec.score(queries, codes)))
            results[threads] = out
    finally:
        vecpress.set_num_threads(1)
    for spec, one, two in zip(THREAD_SPECS, results[1], results[2], strict=True):
        for a, b in zip(one, two, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=spec)


# -- rq: the scale search, eight scales per pass, against the scalar search ---------------


@numba.njit(cache=False)
def _scalar_scales(u, t, ratio, count, levels, best, best_t):
    """``count`` scales ``t, t * ratio, ...`` one :func:`_rq_cosine` pass each; the best
    cosine, its scale and its position in this run (-1: no improvement)."""
    at = -1
    for m in range(count):
        v = _rq_cosine(u, t, levels)
        if v > best:
            best, best_t, at = v, t, m
        t *= ratio
    return best, best_t, at


@numba.njit(cache=False)
def _scalar_best_scale(u, t0, levels, wide=False):
    """The documented search with one :func:`~vecpress.codecs.quantizers.rabitq._cosine`
    pass per scale (the kernel evaluates eight scales per pass); ``wide``: the wide
    search at any width."""
    if levels <= 16 and u.shape[0] >= 128 and not wide:
        # the narrow search: 8 scales about t0, ends extended up to 3 times, refined once
        rho = 1.05
        best, best_t, at = _scalar_scales(u, t0 * rho**-3.5, rho, 8, levels, -1.0, t0)
        for _ in range(3):
            if at == 7:
                best, best_t, at = _scalar_scales(u, best_t * rho, rho, 8, levels, best, best_t)
            elif at == 0:
                best, best_t, at = _scalar_scales(u, best_t * rho**-8, rho, 8, levels, best, best_t)
                at = -1 if at == 7 else at
            else:
                break
        r = (rho * rho) ** (1.0 / 9)
        return _scalar_scales(u, best_t / rho * r, r, 8, levels, best, best_t)[1]
    ratio = (1.6 / 0.6) ** (1.0 / 23)
    best, best_t, _ = _scalar_scales(u, t0 * 0.6, ratio, 24, levels, -1.0, t0)
    step = ratio
    for _ in range(2):
        r = (step * step) ** (1.0 / 9)
        best, best_t, _ = _scalar_scales(u, best_t / step * r, r, 8, levels, best, best_t)
        step = r
    if levels >= 64:
        umin = np.inf
        for i in range(u.shape[0]):
            a = abs(u[i])
            if a > 0.0 and a < umin:
                umin = a
        for k in range(16):
            t = (k + 0.5) / umin
            v = _rq_cosine(u, t, levels)
            if v > best:
                best, best_t = v, t
    return best_t


def _rq_cosine(*args):  # replaced below by the compiled function (a module global for numba)
    raise NotImplementedError


@pytest.mark.parametrize(("bits", "d"), [(2, 96), (4, 96), (7, 96), (2, 256), (3, 256), (4, 256)])
def test_rq_scale_search_matches_the_scalar_search(bits, d):
    """The codes are those of the scale the one-scale-per-pass search picks, except
    where two scales' float32 cosines tie to within their summation order; the
    cosine reached is the same on average (the wide search at d = 96, the narrow one
    at d = 256 and 2-4 bits)."""
    from vecpress.codecs.quantizers import rabitq

    globals()["_rq_cosine"] = rabitq._cosine
    rng = np.random.default_rng(bits)
    x = gaussian(rng, 400, d, offset=0.3)
    codec = Codec.from_spec(f"hd2,rq{bits}", seed=1).fit(x)
    q = codec.quantizer
    y = codec.transforms[0].forward(x).astype(np.float64)
    u = (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)
    half = (q.levels - 1) / 2
    want = np.empty_like(u, dtype=np.uint8)
    for j in range(len(u)):
        t = np.float32(_scalar_best_scale(u[j], q.t0_, q.levels))
        want[j] = np.clip(np.rint(t * u[j] + np.float32(half)), 0, q.levels - 1)
    got = unpack(codec.encode(x), bits, d)

    def cosines(c):
        g = c.astype(np.float64) - half
        return (g * u).sum(1) / np.linalg.norm(g, axis=1)

    same = (got == want).all(axis=1).mean()
    assert same >= (0.95 if bits <= 4 else 0.8), same
    assert abs(cosines(got).mean() - cosines(want).mean()) < 1e-6
    assert (cosines(got) >= cosines(want) - 1e-4).all()


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_rq_narrow_search_reaches_the_wide_search(bits):
    """At 2-4 bits and d = 384 the narrow search (16 scales about t0 for most vectors)
    reaches the cosine of the 40-scale wide search on average up to 5e-6 (the module
    docstring: 1.5e-6 below it at 4 bits), and no vector's cosine is 2e-3 below."""
    from vecpress.codecs.quantizers import rabitq

    globals()["_rq_cosine"] = rabitq._cosine
    rng = np.random.default_rng(10 + bits)
    u = rng.standard_normal((300, 384))
    u = (u / np.linalg.norm(u, axis=1, keepdims=True)).astype(np.float32)
    levels = 1 << bits
    t0 = rabitq.typical_scale(bits, 384)
    narrow, wide = (
        np.array([rabitq._cosine(v, _scalar_best_scale(v, t0, levels, w), levels) for v in u])
        for w in (False, True)
    )
    assert (wide - narrow).mean() < 5e-6, (wide - narrow).mean()
    assert (wide - narrow).max() < 2e-3, (wide - narrow).max()


@pytest.mark.parametrize("n", [1, 3, 2 * 1024, 2 * 1024 + 1, 5000])
def test_row_squares_serial_and_parallel_paths_agree_with_numpy(n):
    """A few rows take the serial kernel, many the parallel one: same sums, and a NaN or
    an infinity anywhere in a row reaches its sum on both."""
    from vecpress.kernels.rows import row_squares

    x = np.random.default_rng(n).standard_normal((n, 37)).astype(np.float32)
    x[n // 2, 5] = np.nan
    x[-1, 36] = np.inf if n > 1 else x[-1, 36]
    want = (x.astype(np.float64) ** 2).sum(axis=1)
    got = row_squares(x)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.isnan(got[n // 2]) and (n == 1 or np.isinf(got[-1]))


@pytest.mark.parametrize("n", [1, 3, 2 * 1024 + 1, 5000])
def test_unit_rows_round_each_float64_quotient_once(n):
    """Serial (few rows) and parallel paths: every entry is ``x / |x|`` divided in float64
    and rounded to float32 once, as numpy's float64 divide into a float32 array gives it,
    at magnitudes from 1e-30 to near the norm limit; the squares are the results' own."""
    from vecpress.kernels.rows import row_squares, unit_rows

    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 37)) * np.logspace(-30, 14, n)[:, None]
    x = x.astype(np.float32)
    sq = row_squares(x)
    unit, usq = unit_rows(x, sq)
    want = np.empty_like(x)
    np.divide(x, np.sqrt(sq)[:, None], out=want, casting="unsafe")
    assert unit.dtype == np.float32 and usq.dtype == np.float64
    np.testing.assert_array_equal(unit.view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(usq, row_squares(unit))
    # a row's sums and quotients do not depend on the rows computed with it (the parallel
    # path of many rows and the serial one of a single row call the same functions)
    for j in {0, n // 2, n - 1}:
        one, one_sq = unit_rows(x[j : j + 1], row_squares(x[j : j + 1]))
        assert row_squares(x[j : j + 1])[0] == sq[j] and one_sq[0] == usq[j]
        np.testing.assert_array_equal(one[0].view(np.uint32), unit[j].view(np.uint32))


def test_vectors_and_squares_are_the_checked_rows_and_their_squares():
    from vecpress._validation import as_vectors, vectors_and_squares
    from vecpress.kernels.rows import row_squares

    x = np.random.default_rng(2).standard_normal((9, 5))  # float64: converted
    rows, sq = vectors_and_squares(x, "x", dim=5)
    np.testing.assert_array_equal(rows, as_vectors(x, "x", dim=5))
    np.testing.assert_array_equal(sq, row_squares(rows))
    empty, none = vectors_and_squares(np.zeros((0, 5), np.float32))
    assert empty.shape == (0, 5) and none.shape == (0,) and none.dtype == np.float64
    with pytest.raises(ValueError, match="NaN or Inf"):
        vectors_and_squares(np.full((2, 5), np.nan, np.float32))


@numba.njit(cache=False)
def _packed_dots(codes, qp, bits, out):
    """``_packed_dot`` of every row of ``codes`` with every query of ``qp`` (at module
    level: compiled once, not once per parameter)."""
    for j in range(codes.shape[0]):
        for v in range(qp.shape[0]):
            qv = qp[v]
            out[j, v] = _packed_dot(codes, j, qv, qv[0], qv[1], bits)


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("d", [1, 3, 8, 50, 129, 384, 701])
def test_packed_dot_reads_codes_where_they_lie(bits, d):
    """The portable scan's dot product over packed 1-, 2- and 4-bit codes (few queries)
    equals the dot product of the unpacked codes, at the extremes too (all codes maximal
    against queries of 127 and -127) and for dimensions that leave a byte part full."""
    from vecpress.kernels.grid_search import packed_queries

    rng = np.random.default_rng(bits * 1000 + d)
    codes = rng.integers(0, 1 << bits, (5, d)).astype(np.uint8)
    codes[0] = (1 << bits) - 1
    qi = rng.integers(-127, 128, (3, d)).astype(np.int16)
    qi[0], qi[1] = 127, -127
    rows = np.hstack([pack(codes, bits), np.full((5, 3), 255, np.uint8)])  # fields after
    out = np.zeros((5, 3), np.int64)
    _packed_dots(rows, packed_queries(qi, d, bits), bits, out)
    np.testing.assert_array_equal(out, codes.astype(np.int64) @ qi.astype(np.int64).T)


def test_packed_queries_take_one_limb_of_int8_values():
    """Queries of two limbs (values past int8) are refused, not wrapped."""
    from vecpress.kernels.grid_search import packed_queries

    with pytest.raises(ValueError, match="int8 values"):
        packed_queries(np.array([[0, 200]], np.int16), 2, 4)
    # wider integers are checked before the int16 kernel: 65,541 would wrap to 5
    with pytest.raises(ValueError, match="65541"):
        packed_queries(np.array([[0, 65541]], np.int64), 2, 4)


def test_the_typical_scale_is_computed_once_per_width_and_dimension():
    """``rq``'s scale search starts from ``typical_scale(bits, d)``, a function of the two
    alone, remembered: a second codec of the same shape reuses it (~11 ms at d = 384,
    once paid by every codec set up) and gets what a fresh computation gives."""
    from vecpress.codecs.quantizers import rabitq

    before = rabitq.typical_scale.cache_info()
    a = Codec.from_spec("rq3", d=72, seed=1).quantizer.t0_
    b = Codec.from_spec("rq3", d=72, seed=2).quantizer.t0_
    after = rabitq.typical_scale.cache_info()
    assert a == b == rabitq.typical_scale.__wrapped__(3, 72)
    assert after.hits >= before.hits + 1
    assert rabitq.typical_scale(3, 72) != rabitq.typical_scale(3, 73)
