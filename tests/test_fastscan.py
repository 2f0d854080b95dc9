"""The 4-bit PQ fast-scan kernel: layout, 8-bit tables, exact sums on every kernel, top-k."""

from __future__ import annotations

import numpy as np
import pytest

import vecpress
from vecpress.codecs.quantizers.pq import PQ, pack_codes
from vecpress.kernels import fastscan as fastscan_module
from vecpress.kernels.fastscan import (
    BLOCK,
    ISA,
    available_isas,
    fastscan,
    fastscan_layout,
    fastscan_topk,
    fastscan_unlayout,
    quantize_luts,
    score_pq4,
)

ISAS = available_isas()
SIMD = [isa for isa in ISAS if isa != "portable"]
# (n, M, nq): empty, single rows, M = 1 and 2, odd M, partial last block, odd query
# counts (passes of 8, 4, 2 and 1 queries), and M past the uint16 flush of the
# vpshufb kernels (512 sub-quantizers per flush at 256 bits, 1024 at 512 bits)
SHAPES = [
    (0, 4, 3),
    (1, 1, 1),
    (1, 2, 2),
    (33, 1, 5),
    (31, 2, 3),
    (100, 7, 15),
    (64, 16, 8),
    (70, 96, 4),
    (40, 1101, 3),
]


def random_idx(rng, n, m):
    return rng.integers(0, 16, (n, m), dtype=np.uint8)


def reference_sums(lut8: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``Σ_m lut8[q, m, idx[j, m]]`` as uint32[nq, n], in numpy."""
    m = idx.shape[1]
    if idx.shape[0] == 0:
        return np.zeros((lut8.shape[0], 0), np.uint32)
    gathered = lut8[:, np.arange(m)[None, :], idx]  # nq, n, M
    return gathered.astype(np.int64).sum(axis=2).astype(np.uint32)


def float_scores(lut: np.ndarray, idx: np.ndarray) -> np.ndarray:
    m = idx.shape[1]
    return lut[:, np.arange(m)[None, :], idx].astype(np.float64).sum(axis=2)


# -- layout -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 100])
@pytest.mark.parametrize("m", [1, 2, 7, 16])
def test_layout_round_trips(n, m):
    rng = np.random.default_rng(n * 100 + m)
    codes = pack_codes(random_idx(rng, n, m), 4)
    blocked = fastscan_layout(codes, m)
    assert blocked.dtype == np.uint8
    assert blocked.shape == ((n + BLOCK - 1) // BLOCK, 32 * ((m + 1) // 2))
    np.testing.assert_array_equal(fastscan_unlayout(blocked, n, m), codes)


def test_layout_places_each_code_where_documented():
    rng = np.random.default_rng(7)
    n, m = 70, 5
    idx = random_idx(rng, n, m)
    blocked = fastscan_layout(pack_codes(idx, 4), m)
    for j in (0, 15, 16, 31, 32, 69):
        b, i = divmod(j, 32)
        shift = 4 * (i // 16)
        for sq in range(m):
            p, odd = divmod(sq, 2)
            byte = blocked[b, 32 * p + 16 * odd + i % 16]
            assert (byte >> shift) & 15 == idx[j, sq]
    # padding: vectors past n and the sub-quantizer completing an odd M are 0
    assert not fastscan_unlayout(blocked, 96, m)[n:].any()
    assert not (blocked[:, 32 * 2 + 16 :]).any()


def test_layout_ignores_the_padding_nibble_of_an_odd_m():
    rng = np.random.default_rng(8)
    codes = pack_codes(random_idx(rng, 40, 3), 4)
    dirty = codes.copy()
    dirty[:, -1] |= 0xA0
    np.testing.assert_array_equal(fastscan_layout(dirty, 3), fastscan_layout(codes, 3))


def test_layout_checks_its_input():
    with pytest.raises(ValueError, match=r"uint8\[n, 2\]"):
        fastscan_layout(np.zeros((4, 3), np.uint8), 4)
    with pytest.raises(ValueError, match="at least 1"):
        fastscan_layout(np.zeros((4, 0), np.uint8), 0)
    with pytest.raises(ValueError, match=r"uint8\[1, 64\]"):
        fastscan_unlayout(np.zeros((2, 64), np.uint8), 10, 4)


# -- 8-bit tables -------------------------------------------------------------------------------


def test_quantized_tables_are_within_the_documented_bound():
    rng = np.random.default_rng(11)
    nq, m, n = 6, 24, 300
    lut = (rng.standard_normal((nq, m, 16)) * rng.uniform(0.1, 3, (1, m, 1))).astype(np.float32)
    lut8, scale, bias = quantize_luts(lut)
    assert lut8.dtype == np.uint8 and scale.dtype == bias.dtype == np.float32
    # every table spans [0, x] and the widest one reaches 255
    assert (lut8.min(axis=2) == 0).all()
    assert (lut8.max(axis=(1, 2)) == 255).all()
    # each entry within scale / 2 of its table's value
    entry = scale[:, None, None] * lut8 + (lut.min(axis=2))[:, :, None]
    assert (np.abs(entry - lut) <= scale[:, None, None] * (0.5 + 1e-4)).all()
    idx = random_idx(rng, n, m)
    est = scale[:, None] * reference_sums(lut8, idx).astype(np.float64) + bias[:, None]
    exact = float_scores(lut, idx)
    bound = m * scale[:, None] / 2 + 1e-5 * (np.abs(exact) + 1)
    assert (np.abs(est - exact) <= bound).all()


def test_constant_tables_quantize_to_zero():
    lut = np.zeros((2, 3, 16), np.float32)
    lut[1] = 0.5
    lut8, scale, bias = quantize_luts(lut)
    assert not lut8.any()
    np.testing.assert_array_equal(scale, [1, 1])
    np.testing.assert_array_equal(bias, [0, 1.5])


def test_non_finite_tables_are_rejected():
    lut = np.zeros((3, 2, 16), np.float32)
    lut[2, 1, 5] = np.nan
    with pytest.raises(ValueError, match="the first: 2"):
        quantize_luts(lut)
    with pytest.raises(ValueError, match=r"float32\[nq, M, 16\]"):
        quantize_luts(np.zeros((3, 2, 8), np.float32))


# -- integer sums --------------------------------------------------------------------------------


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(("n", "m", "nq"), SHAPES)
def test_sums_equal_the_numpy_reference(isa, n, m, nq):
    rng = np.random.default_rng(n * 7919 + m * 31 + nq)
    idx = random_idx(rng, n, m)
    blocked = fastscan_layout(pack_codes(idx, 4), m)
    lut8 = rng.integers(0, 256, (nq, m, 16), dtype=np.uint8)
    if m > 1000:  # the largest sums: every entry 255
        lut8[:] = 255
    out = fastscan(blocked, n, m, lut8, np.empty((nq, n), np.uint32), isa=isa)
    np.testing.assert_array_equal(out, reference_sums(lut8, idx))


@pytest.mark.skipif(not SIMD, reason="no SIMD kernel on this machine")
@pytest.mark.parametrize("isa", SIMD)
def test_simd_and_portable_kernels_give_identical_sums_and_scores(isa):
    rng = np.random.default_rng(3)
    n, m, nq = 1000, 96, 13
    codes = pack_codes(random_idx(rng, n, m), 4)
    blocked = fastscan_layout(codes, m)
    lut8, scale, bias = quantize_luts(rng.standard_normal((nq, m, 16)).astype(np.float32))
    sums = {
        k: fastscan(blocked, n, m, lut8, np.empty((nq, n), np.uint32), isa=k)
        for k in ("portable", isa)
    }
    np.testing.assert_array_equal(sums[isa], sums["portable"])
    scores = {
        k: fastscan(blocked, n, m, lut8, np.empty((nq, n), np.float32), scale, bias, isa=k)
        for k in ("portable", isa)
    }
    np.testing.assert_array_equal(scores[isa], scores["portable"])
    np.testing.assert_array_equal(
        scores[isa], scale[:, None] * sums[isa].astype(np.float32) + bias[:, None]
    )


def test_the_host_kernel_is_the_default():
    assert ISA == ISAS[-1]
    with pytest.raises(ValueError, match="not available"):
        fastscan(np.zeros((0, 32), np.uint8), 0, 2, np.zeros((1, 2, 16), np.uint8),
                 np.empty((1, 0), np.uint32), isa="sse2")  # fmt: skip


def test_fastscan_checks_its_arguments():
    blocked = np.zeros((1, 32), np.uint8)
    lut8 = np.zeros((2, 2, 16), np.uint8)
    with pytest.raises(ValueError, match=r"out must be uint32 or float32 \[2, 5\]"):
        fastscan(blocked, 5, 2, lut8, np.empty((2, 5), np.float64))
    with pytest.raises(ValueError, match="scale and bias"):
        fastscan(blocked, 5, 2, lut8, np.empty((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"uint8\[nq, 2, 16\]"):
        fastscan(blocked, 5, 2, lut8[:, :1], np.empty((2, 5), np.uint32))
    with pytest.raises(ValueError, match=r"uint8\[1, 32\]"):
        fastscan(blocked, 40, 2, lut8, np.empty((2, 40), np.uint32))


# -- float scores and ranking ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pq16():
    """A ``pq16x4`` of correlated 64-d data, with 4000 coded rows and 40 queries.

    Its centroids are sampled data rows (no k-means: faiss's threads can crawl
    on a busy runner, and the kernel does not care how the centroids came)."""
    rng = np.random.default_rng(16)
    basis, _ = np.linalg.qr(rng.standard_normal((64, 64)))
    x = ((rng.standard_normal((4040, 64)) * np.linspace(3, 0.3, 64)) @ basis.T).astype(np.float32)
    pq = PQ(16, bits=4)
    pq.setup(64, rng)
    rows = x[rng.choice(4000, (16, 16), replace=False)]  # [M, 16 centroids, d]
    centroids = np.stack([rows[j, :, 4 * j : 4 * j + 4] for j in range(16)])
    pq.setup_restored({"centroids": np.ascontiguousarray(centroids, np.float32)})
    pq.fitted = True
    return pq, pq.encode(x[:4000]), x[4000:]


def test_score_pq4_is_within_the_bound_of_the_float_scan(pq16):
    pq, codes, q = pq16
    lut = pq.tables(q)
    est = score_pq4(codes, 16, lut)
    exact = pq.score(q, codes)  # the float-table scan
    _, scale, _ = quantize_luts(lut)
    bound = 16 * scale[:, None] / 2 + 1e-5 * (np.abs(exact) + 1)
    assert est.dtype == np.float32 and est.shape == exact.shape
    assert (np.abs(est.astype(np.float64) - exact) <= bound).all()


def test_fast_scan_top10_agrees_with_the_float_top10(pq16):
    pq, codes, q = pq16
    lut = pq.tables(q)
    exact = pq.score(q, codes)
    true_top = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    lut8, scale, bias = quantize_luts(lut)
    _, rows = fastscan_topk(fastscan_layout(codes, 16), len(codes), 16, lut8, 10, scale, bias)
    recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(rows, true_top, strict=True)])
    assert recall >= 0.95


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(("n", "m", "nq"), [(0, 3, 2), (3, 2, 2), (1000, 5, 11), (2500, 16, 9)])
@pytest.mark.parametrize("tile_bytes", [None, 1024])
def test_topk_is_the_best_k_of_the_sums(isa, n, m, nq, tile_bytes, monkeypatch):
    if tile_bytes:  # many tiles (of 1024 / (32 ceil(M/2)) blocks) and items to merge
        monkeypatch.setattr(fastscan_module, "_TILE_BYTES", tile_bytes)
    rng = np.random.default_rng(n + m + nq)
    k = 10
    idx = random_idx(rng, n, m)
    blocked = fastscan_layout(pack_codes(idx, 4), m)
    lut8, scale, bias = quantize_luts(rng.standard_normal((nq, m, 16)).astype(np.float32))
    scores, rows = fastscan_topk(blocked, n, m, lut8, k, scale, bias, isa=isa)
    sums = reference_sums(lut8, idx).astype(np.int64)
    full = fastscan(blocked, n, m, lut8, np.empty((nq, n), np.float32), scale, bias)
    kk = min(k, n)
    for q in range(nq):
        order = np.lexsort((np.arange(n), -sums[q]))[:kk]  # best sum, then smaller row
        np.testing.assert_array_equal(rows[q, :kk], order)
        np.testing.assert_array_equal(scores[q, :kk], full[q, order])
    assert (rows[:, kk:] == -1).all() and np.isneginf(scores[:, kk:]).all()
    int_scores, int_rows = fastscan_topk(blocked, n, m, lut8, k, isa=isa)
    np.testing.assert_array_equal(int_rows, rows)
    for q in range(nq):
        np.testing.assert_array_equal(int_scores[q, :kk], sums[q, rows[q, :kk]])


def test_topk_does_not_depend_on_the_thread_count():
    rng = np.random.default_rng(21)
    n, m, nq = 20000, 64, 5  # 5 tiles of 128 blocks: 2 items on 1 thread, 4 on 2
    blocked = fastscan_layout(pack_codes(random_idx(rng, n, m), 4), m)
    lut8 = rng.integers(0, 2, (nq, m, 16), dtype=np.uint8)  # many ties
    before = vecpress.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            vecpress.set_num_threads(threads)
            results.append(fastscan_topk(blocked, n, m, lut8, 10))
    finally:
        vecpress.set_num_threads(before)
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][0], results[1][0])


def test_empty_inputs():
    lut = np.zeros((0, 2, 16), np.float32)
    assert score_pq4(np.zeros((5, 1), np.uint8), 2, lut).shape == (0, 5)
    lut = np.ones((3, 2, 16), np.float32)
    assert score_pq4(np.zeros((0, 1), np.uint8), 2, lut).shape == (3, 0)
    s, r = fastscan_topk(np.zeros((0, 32), np.uint8), 0, 2, np.zeros((3, 2, 16), np.uint8), 4)
    assert (r == -1).all() and np.isneginf(s).all() and r.shape == (3, 4)
