"""The search path: top-k, the fused grid kernel, IVF partitioning and re-ranking."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vecpress
from _util import gaussian
from test_index import brute_force, check_against_truth
from vecpress import Index
from vecpress.kernels.grid_search import SERIAL_MERGE, grid_scan_topk, merge_heaps, merge_slots
from vecpress.kernels.heap import heap_push
from vecpress.kernels.nibbles import HAVE_AVX2
from vecpress.kernels.scan import HAVE_VNNI, grid_queries, query_limbs
from vecpress.search import scan as search_mod
from vecpress.search.topk import exact_search, topk


def lexsort_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Reference: best score first, ties to the smaller column."""
    n = scores.shape[1]
    out = np.full((scores.shape[0], k), -1, np.int64)
    for r, row in enumerate(scores):
        order = np.lexsort((np.arange(n), -row.astype(np.float64)))[:k]
        out[r, : order.size] = order
    return out


# -- top-k ---------------------------------------------------------------------------
@settings(max_examples=80)
@given(
    nq=st.integers(1, 5),
    n=st.integers(0, 70),
    k=st.integers(1, 90),
    levels=st.integers(1, 6),  # few distinct values: many ties
    seed=st.integers(0, 2**32 - 1),
)
def test_topk_is_a_stable_sort_with_padding(nq, n, k, levels, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, (nq, n)).astype(np.float32)
    ids, vals = topk(scores, k)
    want = lexsort_topk(scores, k)
    np.testing.assert_array_equal(ids, want)
    kk = min(k, n)
    np.testing.assert_array_equal(vals[:, :kk], np.take_along_axis(scores, want[:, :kk], 1))
    assert np.isneginf(vals[:, kk:]).all() and vals.dtype == np.float32


def test_topk_with_labels_skips_negative_labels_and_breaks_ties_by_label():
    scores = np.array([[1.0, 5.0, 5.0, 3.0, 9.0]], np.float32)
    labels = np.array([[40, 30, 20, 10, -1]])
    ids, vals = topk(scores, 4, ids=labels)
    assert ids.tolist() == [[20, 30, 10, 40]] and vals.tolist() == [[5, 5, 3, 1]]
    ids, _ = topk(scores, 6, ids=labels)
    assert ids[0, 4:].tolist() == [-1, -1]
    with pytest.raises(ValueError, match="shape"):
        topk(scores, 2, ids=labels[:, :3])
    with pytest.raises(ValueError, match="2-D"):
        topk(scores[0], 2)


def test_exact_search_is_brute_force_with_the_shared_top_k():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    q = rng.standard_normal((20, 16)).astype(np.float32)
    ids, _ = exact_search(q, x, 7, block=6)
    np.testing.assert_array_equal(ids, lexsort_topk(q @ x.T, 7))


# -- the fused grid kernel -----------------------------------------------------------
# (portable, tiles): the portable kernel with its AVX2 tiles (where the CPU has AVX2) and
# with its 16-bit loop, the one every other CPU runs
KERNELS = [pytest.param((False, True), id="auto" + ("-vnni" if HAVE_VNNI else "-portable"))]
KERNELS.append(pytest.param((True, True), id="portable" + ("-avx2" if HAVE_AVX2 else "")))
KERNELS.append(pytest.param((True, False), id="portable-loop"))


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "unpacked"])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    "spec",
    [
        "hd2,rq4",
        "hd2,rq8",
        "hd2,rq7",
        "hd2,rq2",
        "hd2,rq1",
        "center,lvq3",
        "int5",
        "kl3",
        "hd2,kl6",
        "kl4",
    ],
)
@pytest.mark.parametrize("l2", [False, True])
def test_fused_scan_equals_score_then_topk(spec, l2, kernel, in_place):
    """Every (query, item) slot holds exactly topk of Codec.score over the item's rows."""
    portable, tiles = kernel
    rng = np.random.default_rng(7)
    x = gaussian(rng, 700, 40, offset=0.2)
    q = gaussian(rng, 9, 40, offset=0.2)
    codec = vecpress.Codec.from_spec(spec, seed=1).fit(x)
    codes = codec.encode(x)
    norms = (x.astype(np.float64) ** 2).sum(1).astype(np.float32)
    qsq = (q.astype(np.float64) ** 2).sum(1).astype(np.float32)
    items = search_mod.make_items(np.array([0, 130, 130, 700]), chunk=200)  # 3 lists, 4 items
    lists = np.array([[0, 2], [2, -1], [1, 0], [2, 0], [0, 1], [2, 1], [0, -1], [1, 2], [2, 0]])
    adds = rng.standard_normal(lists.shape).astype(np.float32)
    qt, offset = codec.transform_queries(q)
    plan = search_mod.make_plan(items, lists, adds + offset[:, None])
    quant = codec.quantizer
    qe, center, qoff, t = quant.grid_queries(qt)
    qi, qs, off = grid_queries(qe, center, qoff, quant.param)
    terms = search_mod.row_terms(codec, codes)
    k = 6
    slot_s, slot_i = grid_scan_topk(
        codes, quant.param, quant.grid_dims, items.starts, items.ends,
        plan.qptr, plan.qidx, plan.qslot, plan.qadd,
        qi, query_limbs(quant.param), qs, off, np.asarray(t, np.float32),
        *terms, norms, qsq, plan.nslots, k, l2=l2, portable=portable, in_place=in_place,
        tiles=tiles, layout=quant.grid_layout,
    )  # fmt: skip
    full = codec.score(q, codes)
    res_s = np.empty((len(q), k), np.float32)
    res_i = np.empty((len(q), k), np.int64)
    merge_slots(slot_s, slot_i, plan.qslot_ptr, k, res_s, res_i)
    assert plan.nslots == 24  # lists 0 and 2 have 1 and 2 items, list 1 none
    for qq in range(len(q)):
        rows, est = [], []
        for p, li in enumerate(lists[qq]):
            if li < 0:
                continue
            s, e = items.starts[items.list_ptr[li]], items.ends[items.list_ptr[li + 1] - 1]
            part = full[qq, s:e] + adds[qq, p]
            if l2:
                part = 2 * part - norms[s:e] - qsq[qq]
            rows.append(np.arange(s, e))
            est.append(part)
        ref_i, ref_s = topk(np.concatenate(est)[None], k, ids=np.concatenate(rows)[None])
        np.testing.assert_array_equal(res_i[qq], ref_i[0])
        np.testing.assert_allclose(res_s[qq], ref_s[0], rtol=2e-6, atol=2e-5)
        # every slot entry is a row of its item with that row's score
        for sl in range(plan.qslot_ptr[qq], plan.qslot_ptr[qq + 1]):
            got = slot_i[sl][slot_i[sl] >= 0]
            assert np.isin(got, np.concatenate(rows)).all()


@pytest.mark.parametrize("spec", ["kl2", "kl3", "kl4", "hd2,kl6"])
@pytest.mark.parametrize("d", [50, 384])
def test_scans_without_avx2_read_kl_words_as_the_codec_scores(monkeypatch, spec, d):
    """Where the CPU has no AVX2, few query rows over a kl layout within 64-bit words are
    read by its word passes in plain code (words_dot), not unpacked run by run: the same
    slots as the unpacked scan, ranked as Codec.score (1-4 queries, 1-300 rows)."""
    from vecpress.kernels import grid_search

    monkeypatch.setattr(grid_search, "HAVE_AVX2", False)
    rng = np.random.default_rng(d)
    x = gaussian(rng, 300, d, offset=0.1)
    codec = vecpress.Codec.from_spec(spec, seed=3).fit(x)
    quant = codec.quantizer
    assert quant.layout_ is not None  # the fit packs within words
    for nq, n in ((1, 300), (2, 17), (3, 64), (4, 1)):
        q = gaussian(rng, nq, d, offset=0.1)
        codes = codec.encode(x[:n])
        items = search_mod.make_items(np.array([0, n]), chunk=128)
        plan = search_mod.make_plan(items, np.zeros((nq, 1), np.int64), np.zeros((nq, 1)))
        qe, center, qoff, t = quant.grid_queries(codec.transform_queries(q)[0])
        qi, qs, off = grid_queries(qe, center, qoff, quant.param)
        terms = search_mod.row_terms(codec, codes)
        ones = np.ones(n, np.float32)
        args = (
            codes, quant.param, quant.grid_dims, items.starts, items.ends, plan.qptr,
            plan.qidx, plan.qslot, plan.qadd, qi, query_limbs(quant.param), qs, off,
            np.asarray(t, np.float32), *terms, ones, np.zeros(nq, np.float32), plan.nslots, 10,
        )  # fmt: skip
        kw = {"portable": True, "tiles": False, "layout": quant.grid_layout}
        got = [grid_scan_topk(*args, in_place=in_place, **kw) for in_place in (True, False)]
        np.testing.assert_array_equal(got[0][1], got[1][1])
        np.testing.assert_array_equal(got[0][0], got[1][0])
        res_s = np.empty((nq, 10), np.float32)
        res_i = np.empty((nq, 10), np.int64)
        merge_slots(*got[0], plan.qslot_ptr, 10, res_s, res_i)
        ids, _ = topk(codec.score(q, codes), 10)
        np.testing.assert_array_equal(res_i, ids, err_msg=f"{spec} nq={nq} n={n}")


@pytest.mark.parametrize("avx2", [True, False])
def test_portable_scans_of_a_kl_with_no_coded_axis(monkeypatch, avx2):
    """A kl fitted on constant rows codes no axis (an empty layout): the portable scan of
    few query rows, with and without AVX2, ranks its rows as Codec.score (all equal: by
    row), as the scan of the same rows unpacked does."""
    from vecpress.kernels import grid_search

    monkeypatch.setattr(grid_search, "HAVE_AVX2", avx2)
    x = np.tile(np.linspace(-1, 1, 16, dtype=np.float32) * 0.1 + 0.3, (7, 1))
    codec = vecpress.Codec.from_spec("kl4").fit(x)
    codes, quant = codec.encode(x), codec.quantizer
    assert quant.grid_layout.shape[0] == 0
    q = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    items = search_mod.make_items(np.array([0, 7]), chunk=128)
    plan = search_mod.make_plan(items, np.zeros((2, 1), np.int64), np.zeros((2, 1)))
    qe, center, qoff, t = quant.grid_queries(codec.transform_queries(q)[0])
    qi, qs, off = grid_queries(qe, center, qoff, quant.param)
    args = (
        codes, quant.param, quant.grid_dims, items.starts, items.ends, plan.qptr, plan.qidx,
        plan.qslot, plan.qadd, qi, query_limbs(quant.param), qs, off,
        np.asarray(t, np.float32), *search_mod.row_terms(codec, codes),
        np.ones(7, np.float32), np.zeros(2, np.float32), plan.nslots, 5,
    )  # fmt: skip
    kw = {"portable": True, "tiles": False, "layout": quant.grid_layout}
    got = [grid_scan_topk(*args, in_place=in_place, **kw) for in_place in (True, False)]
    np.testing.assert_array_equal(got[0][1], got[1][1])
    ids, _ = topk(codec.score(q, codes), 5)
    np.testing.assert_array_equal(got[0][1], ids)


@pytest.mark.parametrize("d", [50, 130, 384])
@pytest.mark.parametrize("nq", [1, 2, 3, 5])
def test_few_queries_over_every_row_count_match_the_codec(d, nq):
    """Single and few-query scans (1 x 16 tiles; 1-, 2-, 4- and 8-bit codes read in
    place, other widths and kl's groups read by parts, the rows near the end of the
    array through a padded copy) rank as Codec.score."""
    rng = np.random.default_rng(d + nq)
    x = gaussian(rng, 300, d, offset=0.1)
    q = gaussian(rng, nq, d, offset=0.1)
    specs = ("hd2,rq4", "hd2,rq2", "hd2,rq1", "int2", "hd2,rq8", "int8", "kl3")
    for spec in (*specs, "hd2,rq3", "rq5", "hd2,rq7", "kl2", "kl4", "kl6"):
        for n in (1, 15, 16, 17, 63, 64, 65, 300):
            index = Index(spec, metric="ip", seed=2)
            index.add(x[:n])
            res = index.search(q, 10)
            codec = index.codec  # int8 and kl3 are fitted on the rows added
            ids, scores = topk(codec.score(q, codec.encode(x[:n])), 10)
            np.testing.assert_array_equal(res.ids, ids, err_msg=f"{spec} n={n}")
            np.testing.assert_array_equal(res.scores, scores, err_msg=f"{spec} n={n}")


@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("nq", [1, 3, 6])
@pytest.mark.parametrize("portable", [False, True])
def test_kl_codes_within_words_past_what_the_word_passes_read(monkeypatch, d, nq, portable):
    """``kl1`` of isotropic rows: its codes do not pack within words, so it keeps its
    groups, and those lie within 64-bit words with 64 one-bit codes in a word, more
    than a chunk's word passes read (``8 * MAX_PASSES``). The scans of few and many
    query rows, with and without the vector kernels, rank as Codec.score (the word
    passes read such a word's first 32 codes only: scores off by more than their own
    size, found by a fuzzer)."""
    from vecpress.kernels import grid_search
    from vecpress.kernels.wordpack import MAX_PASSES, chunk_passes, within_words

    if portable:  # the scan's path on CPUs without VNNI
        monkeypatch.setattr(search_mod, "_ONE_CALL_SCAN", False)
        monkeypatch.setattr(grid_search, "HAVE_VNNI", False)
    rng = np.random.default_rng(d)
    x = rng.standard_normal((300, d)).astype(np.float32)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    index = Index("kl1", metric="ip", seed=0)
    index.add(x)
    layout = index.codec.quantizer.grid_layout
    assert within_words(layout) and chunk_passes(layout).max() > MAX_PASSES
    res = index.search(q, 20)
    ids, scores = topk(index.codec.score(q, index.codec.encode(x)), 20)
    np.testing.assert_array_equal(res.ids, ids)
    np.testing.assert_array_equal(res.scores, scores)


def test_make_plan_numbers_slots_query_major():
    items = search_mod.make_items(np.array([0, 10, 25]), chunk=8)  # lists of 2 and 2 items
    plan = search_mod.make_plan(items, np.array([[1, 0], [1, -1]]), np.zeros((2, 2)))
    assert plan.qslot_ptr.tolist() == [0, 4, 6]
    assert plan.qptr.tolist() == [0, 1, 2, 4, 6]  # items 0, 1 (list 0) once; 2, 3 twice
    assert sorted(plan.qslot.tolist()) == list(range(6))


def _plan_by_definition(items, lists, adds):
    """make_plan spelled out: enumerate the slots (query, pair, item) in order, then
    group them by item, keeping that order within an item."""
    slots = []
    for i, row in enumerate(lists):
        for j, lst in enumerate(row):
            if lst >= 0:
                for w in range(items.list_ptr[lst], items.list_ptr[lst + 1]):
                    slots.append((w, i, np.float32(adds[i, j])))
    order = sorted(range(len(slots)), key=lambda s: slots[s][0])  # stable
    nitems = items.starts.size
    qptr = np.zeros(nitems + 1, np.int64)
    np.add.at(qptr, np.array([slots[s][0] + 1 for s in order], np.int64), 1)
    per_query = np.bincount([s[1] for s in slots], minlength=len(lists))
    return (
        np.cumsum(qptr),
        [slots[s][1] for s in order],
        order,
        [slots[s][2] for s in order],
        np.concatenate([[0], np.cumsum(per_query)]),
    )


@settings(max_examples=150)
@given(st.integers(0, 2**32 - 1))
def test_make_plan_matches_its_definition(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 30, rng.integers(1, 12))
    items = search_mod.make_items(np.concatenate([[0], np.cumsum(sizes)]), chunk=rng.integers(1, 9))
    lists = rng.integers(-1, sizes.size, (rng.integers(0, 6), rng.integers(1, 5)))
    adds = rng.standard_normal(lists.shape)
    plan = search_mod.make_plan(items, lists, adds)
    qptr, qidx, qslot, qadd, qslot_ptr = _plan_by_definition(items, lists, adds)
    assert plan.qptr.tolist() == qptr.tolist()
    assert plan.qidx.tolist() == qidx and plan.qslot.tolist() == qslot
    assert plan.qadd.dtype == np.float32 and plan.qadd.tolist() == qadd
    assert plan.qslot_ptr.tolist() == qslot_ptr.tolist()


@pytest.mark.parametrize("big", [False, True])
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_merges_keep_each_querys_k_best_pairs_in_the_heaps_order(seed, big):
    """merge_heaps (the one-call scans' merge, of the slots' unsorted heaps) and
    merge_slots (of slots sorted and padded) against the definition: a query's k best
    (score, row) pairs over its slots, a larger score first and among equal scores the
    smaller row, padded with (-inf, -1). Slots filled by heap_push to various counts
    (empty, partial, full), scores drawn from few values so that ties abound; on the
    calling thread and, past SERIAL_MERGE entries, the parallel loop."""
    from vecpress.kernels.grid_search import _sort_slots

    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 12))
    nq = int(rng.integers(1, 6))
    per_query = rng.integers(0, 5, nq)
    if big:  # enough slots that the merge runs in parallel
        per_query[0] += SERIAL_MERGE // k + 1
    qslot_ptr = np.concatenate([[0], np.cumsum(per_query)]).astype(np.int64)
    nslots = int(qslot_ptr[-1])
    slot_s = np.full((nslots, k), 7.0, np.float32)  # junk past each heap's count
    slot_i = np.full((nslots, k), 12345, np.int64)
    counts = np.zeros(nslots, np.int64)
    levels = rng.standard_normal(4).astype(np.float32)
    for sl in range(nslots):
        rows = rng.permutation(60)[: int(rng.integers(0, 2 * k + 1))]  # distinct in a slot
        for r in rows:
            counts[sl] = heap_push(slot_s[sl], slot_i[sl], counts[sl], levels[rng.integers(4)], r)
    want_s = np.full((nq, k), -np.inf, np.float32)
    want_i = np.full((nq, k), -1, np.int64)
    for q in range(nq):
        pairs = [
            (float(slot_s[sl, p]), int(slot_i[sl, p]))
            for sl in range(qslot_ptr[q], qslot_ptr[q + 1])
            for p in range(counts[sl])
        ]
        best = sorted(pairs, key=lambda sr: (-sr[0], sr[1]))[:k]
        want_s[q, : len(best)] = [sc for sc, _ in best]
        want_i[q, : len(best)] = [r for _, r in best]
    res_s, res_i = np.empty((nq, k), np.float32), np.empty((nq, k), np.int64)
    merge_heaps(slot_s, slot_i, counts, qslot_ptr, k, res_s, res_i)
    np.testing.assert_array_equal(res_i, want_i)
    np.testing.assert_array_equal(res_s, want_s)
    _sort_slots(slot_s, slot_i, counts)
    merge_slots(slot_s, slot_i, qslot_ptr, k, res_s, res_i)
    np.testing.assert_array_equal(res_i, want_i)
    np.testing.assert_array_equal(res_s, want_s)


def test_queries_of_subnormal_values_quantize_and_score():
    """A query whose scale (max / 127) or second limb falls below float32's range once
    divided by zero; it now uses the least subnormal scale and scores finitely."""
    from vecpress.kernels.scan import quantize_queries

    q = np.array([[1e-45, -3e-45, 0.0, 2e-44]], np.float32)
    qi, scale = quantize_queries(q, 2)
    assert (scale > 0).all() and np.abs(qi).max() <= 127
    index = Index("rq8", "ip")
    index.add(np.eye(4, dtype=np.float32))
    res = index.search(q, 4)
    assert np.isfinite(res.scores).all() and res.ids[0, 0] == 3


# -- IVF -------------------------------------------------------------------------------
def clustered(n: int, d: int, centers: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d)) * 3
    return (c[rng.integers(0, centers, n)] + rng.standard_normal((n, d))).astype(np.float32)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_ivf_f32_probing_every_list_is_exact(metric):
    x = clustered(600, 16)
    q = clustered(15, 16, seed=1)
    ids = np.arange(600) * 3 + 7
    index = Index("f32", metric=metric, ivf=8)
    index.add(x, ids=ids)
    assert index.list_sizes.sum() == 600 and (index.list_sizes > 0).sum() >= 4
    res = index.search(q, 10, nprobe=8)
    check_against_truth(res, brute_force(x, q, metric), ids, 10)


@pytest.mark.parametrize("spec", ["hd2,rq4", "kl3"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_ivf_raw_codes_probing_every_list_equal_the_flat_index(metric, spec):
    x = clustered(500, 32)
    q = clustered(20, 32, seed=2)
    flat = Index(spec, metric=metric, seed=4)
    flat.add(x)
    ivf = Index(spec, metric=metric, seed=4, ivf=6, ivf_residual=False)
    ivf.add(x)
    a, b = flat.search(q, 10), ivf.search(q, 10, nprobe=6)
    np.testing.assert_allclose(b.scores, a.scores, rtol=1e-6, atol=1e-5)
    untied = np.diff(a.scores, axis=1, prepend=np.inf, append=-np.inf)
    ok = (untied[:, :-1] != 0) & (untied[:, 1:] != 0)
    np.testing.assert_array_equal(b.ids[ok], a.ids[ok])


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_ivf_rows_made_as_their_lists_are_first_probed_score_as_rows_made_at_once(
    metric, progressive
):
    """An IVF index makes its rows' terms (and planes) as searches first probe their lists,
    and a search checks that the probed lists are ready in one compiled pass: queries one
    at a time, each probing lists some of which no earlier query probed, return what the
    same index made whole first returns, bit for bit (progressive: the planes made lazily,
    after a full scan made every row's terms)."""
    x = clustered(1200, 64, centers=16)
    q = x[::100] + np.float32(0.1)  # 12 queries near rows of different clusters

    def build():
        index = Index("center,hd2,rq4", metric=metric, seed=5, ivf=8)
        index.add(x)
        return index

    lazy, whole = build(), build()
    whole.search(q, 10, nprobe=8, progressive=progressive)  # every list's rows made
    stage = whole._first_stage()
    assert stage.terms.complete and (not progressive or stage.planes.complete)
    if progressive:  # every row's terms made by a full scan, the planes left to make
        lazy.search(q, 10, nprobe=8)
    incomplete = 0
    for i in range(q.shape[0]):
        got = lazy.search(q[i : i + 1], 10, nprobe=2, progressive=progressive)
        made = lazy._first_stage().planes if progressive else lazy._first_stage().terms
        incomplete += not made.complete
        want = whole.search(q[i : i + 1], 10, nprobe=2, progressive=progressive)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.scores.view(np.int32), want.scores.view(np.int32))
    assert incomplete >= 3  # the lazy index's lists were still filling while searched


@pytest.mark.parametrize("spec", ["hd2,rq4", "center,hd2,tq2", "f16", "hd2,sign", "kl3"])
def test_ivf_recall_grows_with_nprobe_and_residuals_help(spec):
    x = clustered(3000, 32, centers=40)
    q = clustered(100, 32, centers=40, seed=5)
    truth = exact_search(q, x, 10)[0]
    index = Index(spec, metric="ip", ivf=32)
    index.add(x)
    r = [recall(index.search(q, 10, nprobe=p).ids, truth) for p in (1, 4, 32)]
    assert r[0] <= r[1] + 0.01 <= r[2] + 0.02, r
    if spec == "f16":
        assert r[2] > 0.99
    # the default nprobe is nlist / 64, at least 1
    np.testing.assert_array_equal(index.search(q, 10).ids, index.search(q, 10, nprobe=1).ids)


def test_ivf_adds_in_batches_equal_one_add_and_removed_ids_never_return():
    x = clustered(900, 16)
    q = clustered(30, 16, seed=3)
    one = Index("hd2,rq4", metric="l2", ivf=5, seed=2).train(x)
    one.add(x)
    many = Index("hd2,rq4", metric="l2", ivf=5, seed=2).train(x)
    for s in range(0, 900, 250):
        many.add(x[s : s + 250])
    assert (many.list_sizes == one.list_sizes).all()
    a, b = one.search(q, 8, nprobe=3), many.search(q, 8, nprobe=3)
    np.testing.assert_array_equal(a.scores, b.scores)
    gone = a.ids[:, :2].ravel()
    many.remove(gone)
    assert many.list_sizes.sum() == len(many) == 900 - np.unique(gone).size
    after = many.search(q, 8, nprobe=5)
    assert not np.isin(after.ids, gone).any()
    again = many.add(x[np.unique(gone)])  # new ids, same vectors: found again
    assert np.isin(again, many.search(q, 8, nprobe=5).ids).any()


def test_ivf_needs_enough_training_vectors():
    with pytest.raises(ValueError, match="ivf=50 needs at least 50 training vectors, found 20"):
        Index("hd2,rq4", ivf=50).add(np.ones((20, 8), np.float32) + np.eye(20, 8, dtype=np.float32))
    index = Index("hd2,rq4", ivf=50)
    assert not index.is_trained and len(index) == 0


# -- re-ranking ------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
@pytest.mark.parametrize("ivf", [None, 4])
def test_rerank_with_the_float_tier_over_every_candidate_is_exact(metric, ivf):
    x = clustered(400, 24)
    q = clustered(12, 24, seed=9)
    ids = np.arange(400) + 1000
    index = Index("hd2,rq2", metric=metric, rerank_spec="f32", ivf=ivf)
    index.add(x, ids=ids)
    res = index.search(q, 10, rerank=400, nprobe=4 if ivf else None)
    check_against_truth(res, brute_force(x, q, metric), ids, 10)


def test_rerank_lifts_recall_and_costs_its_bytes():
    x = clustered(4000, 48, centers=60)
    q = clustered(200, 48, centers=60, seed=11)
    truth = exact_search(q, x, 10)[0]
    index = Index("center,hd2,rq2", metric="ip", rerank_spec="rq8")
    index.add(x)
    base = recall(index.search(q, 10).ids, truth)  # measured 0.40
    deep = recall(index.search(q, 10, rerank=200).ids, truth)  # measured 0.97
    assert deep > base + 0.3 and deep > 0.95, (base, deep)
    m = index.memory
    # 2-bit codes + two float16 factors + float16 centring term; 8-bit codes + two float32
    assert (m["codes"], m["rerank"], m["ids"], m["norms"]) == (12 + 4 + 2, 48 + 8, 8, 0)
    assert index.bytes_per_vector == m["per_vector"] == 18 + 56 + 8
    with pytest.raises(ValueError, match="not trained"):
        _ = Index("rq4").memory


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_ivf_rerank_round_trips_through_a_file(tmp_path, metric):
    x = clustered(500, 20)
    q = clustered(9, 20, seed=4)
    index = Index("hd2,rq4", metric=metric, rerank_spec="f16", ivf=7, ivf_residual=False)
    index.add(x, ids=np.arange(500) * 5)
    index.remove([0, 5, 2495])
    expect = index.search(q, 10, rerank=30, nprobe=3)
    index.save(tmp_path / "i.vpi")
    meta = vecpress.info(tmp_path / "i.vpi")
    assert (meta["ivf"], meta["ivf_residual"], meta["rerank_spec"]) == (7, False, "f16")
    assert meta["bytes_per_vector"] == index.bytes_per_vector
    for mm in (True, False):
        loaded = vecpress.open(tmp_path / "i.vpi", mmap=mm)
        got = loaded.search(q, 10, rerank=30, nprobe=3)
        np.testing.assert_array_equal(got.ids, expect.ids)
        np.testing.assert_array_equal(got.scores, expect.scores)
        assert repr(loaded) == repr(index)
        loaded.add(x[:3])  # a mapped index takes adds (copy on write)
        assert len(loaded) == 500 and loaded.list_sizes.sum() == 500


# -- a few queries prepared in one compiled call ----------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize(
    "spec,ivf", [("center,hd2,rq4", None), ("hd2,rq4", 4), ("rq4", None), ("center,int4", None)]
)
def test_a_few_queries_prepared_in_one_call_score_as_the_general_path(spec, ivf, metric):
    """Up to FEW queries are checked, normalised and mapped by one compiled call
    (kernels/queries.py); with that call switched off they take the general path
    (as_vectors, _prepare, Codec._transform_queries). Both give the same ids and the same
    score bits, for full and progressive scans, fixed and certified re-ranking, flat and IVF,
    float32 and float64 queries, at odd dimensions too."""
    from vecpress.kernels.queries import FEW

    rng = np.random.default_rng(7)
    for d in (37, 64):
        x = (gaussian(rng, 1500, d) + 0.4).astype(np.float32)
        q = gaussian(rng, FEW + 2, d)
        index = Index(spec, metric, ivf=ivf, rerank_spec="f16", seed=1)
        index.add(x)
        general = Index(spec, metric, ivf=ivf, rerank_spec="f16", seed=1)
        general.add(x)
        general._few_queries = lambda q: None
        assert index._first_stage().chain is not None
        prepared = []

        def few(rows, real=index._few_queries, seen=prepared):
            out = real(rows)
            seen.append((rows.shape[0], out is not None))
            return out

        index._few_queries = few
        for progressive in (False, True):
            for rerank in (None, 25, "auto"):
                for n in (1, FEW, FEW + 1):
                    for rows in (q[:n], q[:n].astype(np.float64)):
                        got = index.search(rows, 10, rerank, progressive=progressive)
                        want = general.search(rows, 10, rerank, progressive=progressive)
                        np.testing.assert_array_equal(got.ids, want.ids)
                        np.testing.assert_array_equal(
                            got.scores.view(np.uint32), want.scores.view(np.uint32)
                        )
        # the one call prepared every search of up to FEW queries, and no other
        assert sorted(set(prepared)) == [(1, True), (FEW, True), (FEW + 1, False)]


@pytest.mark.skipif(not HAVE_VNNI, reason="the one-call scan runs where the CPU has VNNI")
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize(
    "spec,ivf",
    [
        ("center,hd2,rq4", None),
        ("hd2,rq4", 5),
        ("hd2,rq2", 5),
        ("rq1", None),
        ("int8", 5),
        ("hd2,rq3", None),
        ("kl4", None),
        ("kl6", 5),
    ],
)
def test_grid_scans_in_one_compiled_call_score_as_the_general_path(spec, ivf, metric, monkeypatch):
    """With VNNI, grid codes are planned, scanned, sorted and merged in one compiled call
    (grid_topk): 1-, 2-, 4- and 8-bit codes read in place, 3-bit ones and kl's mixed
    widths by parts (with VBMI) or unpacked; with it switched off they take the steps one
    by one (grid_scan_topk). Both give the same ids and score bits: flat and IVF, one to 40
    queries, fixed re-ranking, an allowlist, k beyond a list's rows, at an odd dimension
    too."""
    from vecpress.kernels import grid_search

    calls = []
    real = grid_search._grid_topk
    at = list(inspect.signature(real.py_func).parameters).index("qsq")

    def spy(*args):
        calls.append(args[at].shape[0])  # one squared norm a query
        return real(*args)

    monkeypatch.setattr(grid_search, "_grid_topk", spy)
    rng = np.random.default_rng(11)
    for d in (37, 64):
        x = (gaussian(rng, 1200, d) + 0.3).astype(np.float32)
        q = gaussian(rng, 40, d)
        index = Index(spec, metric, ivf=ivf, rerank_spec="f16", seed=2)
        index.add(x, ids=np.arange(1200) * 7)
        allow = np.arange(0, 1200 * 7, 21)
        for n in (1, 4, 5, 40):
            for kw in ({}, {"rerank": 25}, {"allow": allow}, {"nprobe": 3}, {"k": 700}):
                kw = {"k": 10, **kw}
                if ivf is None:
                    kw.pop("nprobe", None)
                calls.clear()
                got = index.search(q[:n], **kw)
                assert calls == [n]
                with monkeypatch.context() as m:
                    m.setattr(search_mod, "_ONE_CALL_SCAN", False)
                    want = index.search(q[:n], **kw)
                assert calls == [n]  # the steps one by one made no call
                np.testing.assert_array_equal(got.ids, want.ids)
                np.testing.assert_array_equal(
                    got.scores.view(np.uint32), want.scores.view(np.uint32)
                )


def test_bad_queries_of_the_one_call_path_get_the_general_paths_errors():
    x = gaussian(np.random.default_rng(3), 300, 16)
    index = Index("center,hd2,rq4", "cosine")
    index.add(x)
    q = x[:2].copy()
    q[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf values, first at row 1"):
        index.search(q, 5)
    q[1] = 0.0
    with pytest.raises(ValueError, match="1 zero row"):
        index.search(q, 5)
    q[1] = 2.0**60
    with pytest.raises(ValueError, match="norm exceeds the limit"):
        index.search(q, 5)
    q[1] = x[1]
    assert index.search(q, 5).ids[:, 0].tolist() == index.ids[:2].tolist()


def test_query_chain_covers_center_and_mixing_steps_only():
    x = gaussian(np.random.default_rng(4), 400, 12)
    for spec, covered in [
        ("center,hd2,rq4", True), ("hd1,rq4", True), ("center,rq2", True), ("rq4", True),
        ("pca8,rq4", False), ("hd2,center,rq4", False),
    ]:  # fmt: skip
        codec = vecpress.Codec.from_spec(spec).fit(x)
        chain = search_mod.query_chain(codec)
        assert (chain is not None) == covered, spec
        if chain is not None:
            assert all(a.flags.writeable and a.flags.c_contiguous for a in chain)


def test_center_offsets_do_not_depend_on_the_batch():
    """``center``'s query offset is summed in float64 per query: one query alone and the
    same query among many get the same bits (a BLAS product may differ in the last ones)."""
    rng = np.random.default_rng(5)
    x = gaussian(rng, 500, 96) + 3.0
    center = vecpress.Codec.from_spec("center,rq4").fit(x).transforms[0]
    q = gaussian(rng, 257, 96) * 7.0
    _, batch = center.query(q)
    alone = np.concatenate([center.query(q[i : i + 1])[1] for i in range(q.shape[0])])
    np.testing.assert_array_equal(batch.view(np.uint32), alone.view(np.uint32))
    want = (q.astype(np.float64) @ center.mean_.astype(np.float64)).astype(np.float32)
    np.testing.assert_allclose(batch, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
