"""Codes of any width read in place with AVX2 by byte pairs (vecpress.kernels.bytepairs)."""

from __future__ import annotations

import numpy as np
import pytest

import vecpress
from _util import gaussian
from test_wordlanes import _layout_of_runs, _rows
from vecpress.kernels.bitpack import packed_size
from vecpress.kernels.bytepairs import (
    WINDOW_BYTES,
    pair_dots,
    pair_parts,
    pair_queries,
)
from vecpress.kernels.grid_search import grid_scan_topk, merge_slots
from vecpress.kernels.nibbles import HAVE_AVX2
from vecpress.kernels.scan import check_layout, grid_queries, query_limbs, uniform_layout
from vecpress.kernels.wordlanes import code_positions
from vecpress.search import scan as search_mod
from vecpress.search.topk import topk

needs_avx2 = pytest.mark.skipif(not HAVE_AVX2, reason="no AVX2 on this machine")


def _dots(rows, parts, qi):
    out = np.zeros(rows.shape[0], np.int32)
    qp = pair_queries(qi[None], parts)[0]
    pair_dots(rows, parts.offsets, parts.shuffle, parts.mult, parts.mask, qp, out)
    return out


def test_every_code_lies_in_one_lane_from_its_two_bytes():
    """Each code of a layout is in exactly one lane, whose two bytes (or a zero and one
    byte) are those holding the code's bits, and whose multiplier shifts it down."""
    rng = np.random.default_rng(0)
    runs = [(0, 13, 8), (13, 16, 7), (29, 56, 6), (85, 88, 5), (173, 76, 4), (249, 42, 3)]
    runs += [(291, 36, 2), (327, 40, 1)]
    layout, row_bytes = _layout_of_runs(rng, runs, 0)
    parts = pair_parts(check_layout(layout, 384, row_bytes))
    dims, pos, width = code_positions(layout)
    used = parts.dims >= 0
    assert sorted(parts.dims[used].tolist()) == sorted(dims.tolist())  # each code once
    by_dim = dict(zip(dims.tolist(), zip(pos.tolist(), width.tolist(), strict=True), strict=True))
    for p, lane in zip(*np.nonzero(used), strict=True):
        st, w = by_dim[int(parts.dims[p, lane])]
        half = lane // 8
        lo, hi = (int(v) for v in parts.shuffle[p, 2 * lane : 2 * lane + 2])
        assert hi < WINDOW_BYTES
        shift = 16 - int(parts.mult[p, lane]).bit_length() + 1
        if lo == 0x80:  # a zero, then the code's byte: the code from bit 8
            assert shift == 8 and st == 8 * (parts.offsets[p, half] + hi)
        else:
            assert hi == lo + 1 and 1 <= shift <= 7
            assert st == 8 * (parts.offsets[p, half] + lo) + shift
        assert parts.mask[p, lane] == (1 << w) - 1
    assert (parts.mask[~used] == 0).all()  # lanes without a code: mask 0 and zero bytes
    assert (parts.shuffle.reshape(-1, 16, 2)[~used] == 0x80).all()
    assert parts.reach == parts.offsets.max() + WINDOW_BYTES
    # kl4-like: 367 codes take 23 parts of 16 lanes (at most 8 codes a window)
    assert len(parts.offsets) == (len(dims) + 15) // 16


def test_pair_queries_put_each_dimension_in_its_lanes():
    parts = pair_parts(uniform_layout(3, 50))
    qi = np.arange(3 * 50).reshape(3, 50) % 256 - 128
    qp = pair_queries(qi, parts)
    assert qp.shape == (4, parts.dims.size) and qp.dtype == np.int16
    flat = parts.dims.reshape(-1)
    np.testing.assert_array_equal(qp[:3, flat >= 0], qi[:, flat[flat >= 0]])
    assert (qp[:3, flat < 0] == 0).all() and (qp[3] == 0).all()


def test_pair_queries_reject_values_past_a_limb():
    with pytest.raises(ValueError, match="int8 values"):
        pair_queries(np.array([[0, 128, 1]]), pair_parts(uniform_layout(3, 3)))


@pytest.mark.parametrize("shape", [(0, 4), (2, 3), (4,)])
def test_pair_parts_rejects_what_is_not_a_layout(shape):
    with pytest.raises(ValueError, match=r"int64\[G, 4\]"):
        pair_parts(np.zeros(shape, np.int64))


@pytest.mark.parametrize("run", [(0, 0, 4, 0), (0, 3, 9, 0), (0, 3, 0, 0), (0, 3, 4, -1)])
def test_pair_parts_rejects_runs_without_codes_or_of_bad_widths(run):
    with pytest.raises(ValueError, match="1-8 bits"):
        pair_parts(np.array([run], np.int64))


@needs_avx2
@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("d", [1, 3, 37, 50, 384, 1000])
def test_uniform_widths_read_by_pairs_are_exact(bits, d):
    rng = np.random.default_rng(bits * 1000 + d)
    layout = uniform_layout(bits, d)
    rows, dense = _rows(rng, 41, layout, packed_size(d, bits) + 3, d)
    parts = pair_parts(layout)
    for qi in (rng.integers(-128, 128, d), np.full(d, -128), np.full(d, 127)):
        np.testing.assert_array_equal(_dots(rows, parts, qi), dense @ qi)


@needs_avx2
@pytest.mark.parametrize("seed", range(6))
def test_runs_of_mixed_widths_at_any_offset_are_exact(seed):
    """Runs of random widths (not in dimension order, some dimensions in none, junk
    bytes between): exact dot products, the largest codes against -128 too."""
    rng = np.random.default_rng(seed)
    d = int(rng.integers(20, 700))
    cuts = np.sort(rng.choice(np.arange(1, d), size=min(7, d - 1), replace=False))
    spans = [(a, b) for a, b in zip(np.r_[0, cuts], np.r_[cuts, d], strict=True)]
    rng.shuffle(spans)
    runs = [(int(a), int(b - a), int(rng.integers(1, 9))) for a, b in spans[:-1]]  # one left out
    layout, row_bytes = _layout_of_runs(rng, runs, int(rng.integers(0, 9)))
    row_bytes += int(rng.integers(0, 5))
    layout = check_layout(layout, d, row_bytes)
    rows, dense = _rows(rng, 70, layout, row_bytes, d)
    parts = pair_parts(layout)
    for qi in (rng.integers(-128, 128, d), np.full(d, -128)):
        np.testing.assert_array_equal(_dots(rows, parts, qi), dense @ qi)


@pytest.mark.parametrize("nq", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "spec", ["kl4", "hd2,kl6", "hd2,rq3", "hd2,rq7", "rq8", "int5", "hd2,rq4", "hd2,rq2", "rq1"]
)
def test_few_queries_by_pairs_rank_as_the_codec(spec, nq):
    """The portable scan for 1-4 queries (codes read by byte pairs where the CPU has
    AVX2, tiles of 4 x 1, 2 x 2 and 1 x 4; one or two limbs; 1-, 2- and 4-bit codes
    of 48 dimensions too, which pairs read faster than the packed loops) over items
    whose rows end at the array's end at every remainder of 4: Codec.score + top-k,
    exactly."""
    rng = np.random.default_rng(nq)
    x = gaussian(rng, 203, 48, offset=0.2)
    q = gaussian(rng, nq, 48, offset=0.2)
    codec = vecpress.Codec.from_spec(spec, seed=1).fit(x)
    quant = codec.quantizer
    k = 7
    for n in (1, 2, 3, 4, 5, 66, 67, 203):
        codes = codec.encode(x[:n])
        items = search_mod.make_items(np.array([0, n]), chunk=64)
        lists = np.zeros((nq, 1), np.int64)
        qt, offset = codec.transform_queries(q)
        plan = search_mod.make_plan(items, lists, offset[:, None])
        qe, center, qoff, t = quant.grid_queries(qt)
        qi, qs, off = grid_queries(qe, center, qoff, quant.param)
        terms = search_mod.row_terms(codec, codes)
        zeros = np.zeros(n, np.float32)
        slot_s, slot_i = grid_scan_topk(
            codes, quant.param, quant.grid_dims, items.starts, items.ends,
            plan.qptr, plan.qidx, plan.qslot, plan.qadd,
            qi, query_limbs(quant.param), qs, off, np.asarray(t, np.float32),
            *terms, zeros, np.zeros(nq, np.float32), plan.nslots, k, portable=True,
            layout=quant.grid_layout,
        )  # fmt: skip
        res_s = np.empty((nq, k), np.float32)
        res_i = np.empty((nq, k), np.int64)
        merge_slots(slot_s, slot_i, plan.qslot_ptr, k, res_s, res_i)
        ids, scores = topk(codec.score(q, codes), min(k, n))
        np.testing.assert_array_equal(res_i[:, : min(k, n)], ids, err_msg=f"{spec} n={n}")
        np.testing.assert_allclose(res_s[:, : min(k, n)], scores, rtol=2e-6, atol=2e-5)
        assert (res_i[:, n:] == -1).all()
