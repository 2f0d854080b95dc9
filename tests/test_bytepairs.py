"""Codes of any width read in place with AVX2 by byte pairs (vecpress.kernels.bytepairs);
their exact dot products are tested with the VBMI reader's, tests/test_wordlanes.py."""

from __future__ import annotations

import numpy as np
import pytest

import vecpress
from _util import gaussian
from test_wordlanes import kl4_like_layout
from vecpress.kernels.bytepairs import (
    WINDOW_BYTES,
    pair_parts,
    pair_queries,
)
from vecpress.kernels.grid_search import grid_scan_topk, merge_slots
from vecpress.kernels.scan import grid_queries, query_limbs, uniform_layout
from vecpress.search import scan as search_mod
from vecpress.search.topk import topk


def test_every_code_lies_in_one_lane_from_its_two_bytes():
    """Each code of a layout is in exactly one lane, whose two bytes (or a zero and one
    byte) are those holding the code's bits, and whose multiplier shifts it down."""
    layout, dims, pos, width = kl4_like_layout()
    parts = pair_parts(layout)
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


def test_pair_queries_reject_values_past_a_limb():
    with pytest.raises(ValueError, match="int8 values"):
        pair_queries(np.array([[0, 128, 1]]), pair_parts(uniform_layout(3, 3)))


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
