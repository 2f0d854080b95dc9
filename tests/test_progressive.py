"""Progressive scan (``search(..., progressive=True)``, :mod:`vecpress.kernels.progressive`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from statistics import NormalDist

import numpy as np
import pytest

from _util import clustered, in_fresh_python
from vecpress import Codec, Index
from vecpress.kernels.bitpack import pack, unpack
from vecpress.kernels.progressive import (
    TERMS_ALL,
    TERMS_C,
    TERMS_NONE,
    fold_terms,
    item_planes,
    pack_terms,
    plane_layout,
    plane_rows,
    pop_bits,
    sign_tables,
)
from vecpress.search.planes import Z, _terms_mode, calibrate_z, supports


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    return clustered(n, d, seed, centres=40, spread=0.7)


@pytest.fixture(scope="module")
def data():
    return _clustered(5000, 100, 0), _clustered(60, 100, 1)


def _pair(spec, metric, x, **kw):
    index = Index(spec, metric=metric, seed=0, **kw)
    index.add(x)
    return index


@pytest.mark.compiles_first  # the progressive scan in every mode: ~2 minutes cold
@pytest.mark.parametrize(
    ("spec", "metric"),
    [
        ("hd2,rq4", "cosine"),
        ("hd2,rq4", "l2"),
        ("hd2,rq4", "ip"),
        ("hd2,rq1", "ip"),
        ("hd2,rq2", "l2"),
        ("hd2,rq3", "ip"),
        ("hd2,rq5", "cosine"),
        ("center,hd2,rq4", "ip"),
        ("center,hd2,rq4", "l2"),
        ("hd2,int4", "l2"),
        ("hd2,lvq4", "ip"),
        ("int4", "ip"),
    ],
)
def test_progressive_ranks_as_the_full_scan(data, spec, metric):
    """Same ids and the same float32 scores as reading every code in full (the scores of
    the rows read in full are computed by the same expression, so bit for bit)."""
    x, q = data
    index = _pair(spec, metric, x)
    for k in (1, 10, 64):
        full = index.search(q, k)
        prog = index.search(q, k, progressive=True)
        np.testing.assert_array_equal(prog.ids, full.ids)
        np.testing.assert_array_equal(prog.scores, full.scores)


@pytest.mark.parametrize(
    ("spec", "mode"),
    [("hd2,rq4", TERMS_NONE), ("center,hd2,rq4", TERMS_C), ("hd2,int4", TERMS_ALL),
     ("center,hd2,lvq4", TERMS_ALL)],
)  # fmt: skip
def test_bounds_read_the_terms_they_need(spec, mode):
    """rq's bound reads no row term, a centred rq's only the centring term ``c``, other
    grids all three; with a mean far from the origin (the centring term then
    dominates the score) the scan still ranks as the full scan."""
    x = _clustered(1500, 24, 11) + np.float32(3.0)
    codec = Codec.from_spec(spec).fit(x)
    assert _terms_mode(codec) == mode
    index = _pair(spec, "ip", x)
    q = x[:25] - np.float32(2.9)
    full = index.search(q, 10)
    prog = index.search(q, 10, progressive=True)
    np.testing.assert_array_equal(prog.ids, full.ids)
    np.testing.assert_array_equal(prog.scores, full.scores)


def test_terms_flag_values():
    """``terms=True``/``False`` stand for all/none; another value is refused by name."""
    from vecpress.kernels.progressive import _terms_flag as kernel_terms

    assert (kernel_terms(True), kernel_terms(False), kernel_terms(TERMS_C)) == (
        TERMS_ALL,
        TERMS_NONE,
        TERMS_C,
    )
    with pytest.raises(ValueError, match="terms must be TERMS_NONE, TERMS_C or TERMS_ALL"):
        kernel_terms(7)


@pytest.mark.parametrize("d", [1, 3, 37])
@pytest.mark.parametrize("spec", ["rq4", "lvq3", "int2"])
def test_progressive_odd_dimensions(spec, d):
    """Dimensions that do not fill the sign plane's 4-dimension groups (nor a byte)."""
    x = _clustered(900, d, 9)
    index = _pair(spec, "l2", x)
    full = index.search(x[:20] + 0.05, 10)
    prog = index.search(x[:20] + 0.05, 10, progressive=True)
    np.testing.assert_array_equal(prog.ids, full.ids)
    np.testing.assert_array_equal(prog.scores, full.scores)


@pytest.mark.parametrize("residual", [True, False])
def test_progressive_ivf(data, residual):
    x, q = data
    index = Index("hd2,rq4", metric="l2", seed=0, ivf=16, ivf_residual=residual)
    index.train(x)
    index.add(x)
    for nprobe in (1, 4, 16):
        full = index.search(q, 10, nprobe=nprobe)
        prog = index.search(q, 10, nprobe=nprobe, progressive=True)
        np.testing.assert_array_equal(prog.ids, full.ids)
        np.testing.assert_array_equal(prog.scores, full.scores)


@pytest.mark.parametrize("ivf", [None, 16])
def test_progressive_on_a_memory_mapped_index(data, tmp_path, ivf):
    """An index opened memory-mapped (read-only codes, verified block by block as read)
    makes its planes from the mapped codes and answers as the index that saved it."""
    import vecpress

    x, q = data
    index = Index("center,hd2,rq4", metric="cosine", seed=0, ivf=ivf)
    index.add(x)
    index.save(tmp_path / "p.vpi")
    opened = vecpress.open(tmp_path / "p.vpi", mmap=True)
    for k in (1, 10):
        kw = {"nprobe": 4} if ivf else {}
        want = index.search(q, k, **kw)
        got = opened.search(q, k, progressive=True, **kw)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.scores, want.scores)
        one = opened.search(q[:1], k, progressive=True, **kw)
        np.testing.assert_array_equal(one.ids, want.ids[:1])


#: run in a fresh interpreter (a mapped index searched by an earlier test of the same
#: process would have made the kernels this checks are never made twice)
OPENED_CHILD = """
x, q, metric, path = np.load(sys.argv[1]), np.load(sys.argv[2]), sys.argv[3], sys.argv[4]
scans = ("vecpress.kernels.grid_search", "vecpress.kernels.progressive")
index = vecpress.Index("hd2,rq4", metric=metric, seed=0)
index.add(x)
searches = [{"k": 10}, {"k": 10, "progressive": True}]
want = [(index.search(q, **kw), index.search(q[:1], **kw)) for kw in searches]
before = entry_points(scans)
index.save(path)
opened = vecpress.open(path, mmap=True)
same = [
    (bool((opened.search(q, **kw).ids == batch.ids).all()),
     bool((opened.search(q[:1], **kw).scores == one.scores).all()))
    for kw, (batch, one) in zip(searches, want, strict=True)
]
new = sorted(f for f, n in entry_points(scans).items() if n > before.get(f, 0))
print(json.dumps({"writable": bool(opened._codes.data.flags.writeable), "same": same,
                  "new": new}))
"""


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_an_opened_index_searches_with_the_scans_compiled_in_memory(data, tmp_path, metric):
    """Codes and norms reach the scans read-only, in memory or mapped from a file
    (``kernels.read_only``): opening a saved index compiles no second version of the
    full or the progressive scan (each took 25-75 s on a 2-core machine)."""
    x, q = data
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", q)
    args = (str(tmp_path / "x.npy"), str(tmp_path / "q.npy"), metric, str(tmp_path / "p.vpi"))
    (report,) = in_fresh_python(OPENED_CHILD, *args)
    assert not report["writable"]  # (the rows are the file's)
    assert report["same"] == [[True, True], [True, True]]  # ids of batches, scores of one
    assert report["new"] == []


def test_progressive_pads_past_the_rows():
    x = _clustered(70, 36, 2)
    index = _pair("hd2,rq4", "ip", x)
    full = index.search(x[:3], 100)
    prog = index.search(x[:3], 100, progressive=True)
    np.testing.assert_array_equal(prog.ids, full.ids)
    assert (prog.ids[:, 70:] == -1).all() and np.isneginf(prog.scores[:, 70:]).all()


def test_progressive_with_rerank_and_certified(data):
    x, q = data
    index = _pair("hd2,rq4", "cosine", x, rerank_spec="f32")
    for rerank in (30, "auto"):
        full = index.search(q, 10, rerank=rerank)
        prog = index.search(q, 10, rerank=rerank, progressive=True)
        np.testing.assert_array_equal(prog.ids, full.ids)
        np.testing.assert_array_equal(prog.reranked, full.reranked)


def test_progressive_after_adding_rows(data):
    """The sign planes are remade when rows change."""
    x, q = data
    index = _pair("hd2,rq4", "ip", x[:3000])
    index.search(q, 5, progressive=True)
    index.add(x[3000:])
    np.testing.assert_array_equal(index.search(q, 5, progressive=True).ids, index.search(q, 5).ids)
    index.remove(np.arange(0, 5000, 3))
    np.testing.assert_array_equal(index.search(q, 5, progressive=True).ids, index.search(q, 5).ids)


@pytest.mark.parametrize("spec", ["hd2,rq4", "center,hd2,rq4"])  # bounds without terms, with c
def test_progressive_extreme_magnitudes(spec):
    """Rows of 1e-30 and of 1e12 (and queries alike; k past the rows): finite scores, the
    full scan's ranking; rows at float16's range end alike."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((600, 40)).astype(np.float32)
    x = np.concatenate([base[:300] * np.float32(1e-30), base[300:] * np.float32(1e12)])
    for metric in ("ip", "l2", "cosine"):
        index = _pair(spec, metric, x)
        queries = (base[:5] * np.float32(1e-30), base[5:10] * np.float32(1e12), base[10:15])
        for q, k in zip(queries, (20, 1024, 20), strict=True):
            full = index.search(q, k)
            prog = index.search(q, k, progressive=True)
            assert np.isfinite(prog.scores[:, :600]).all()
            np.testing.assert_array_equal(prog.ids, full.ids)
            np.testing.assert_array_equal(prog.scores, full.scores)
    for scale in (6.55e4, 6e-8):  # float16's largest and smallest normal-ish magnitudes
        index = _pair(spec, "l2", base * np.float32(scale))
        q = base[:4] * np.float32(scale)
        prog = index.search(q, 50, progressive=True)
        assert np.isfinite(prog.scores).all()
        np.testing.assert_array_equal(prog.ids, index.search(q, 50).ids)


@pytest.mark.parametrize("spec", ["lvq4", "hd2,lvq4", "hd2,rq4", "int4"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_progressive_zero_query_over_sparse_rows(spec, metric):
    """A zero query row scores every row its terms alone (all equal under ip, minus the
    squared norms under l2), where the estimate of its dot products need not be 0: the
    rows ranked and scored as the full scan does (ties by the smaller id). Rows 90 %
    zeros, some all zero (lvq4 left rows out of its top k where its points and bounds
    were made from those estimates; found by a fuzzer)."""
    rng = np.random.default_rng(5)
    x = np.where(rng.random((300, 40)) < 0.9, 0.0, rng.standard_normal((300, 40)))
    x = x.astype(np.float32)
    q = rng.standard_normal((3, 40)).astype(np.float32)
    q[1] = 0.0
    index = _pair(spec, metric, x)
    for k in (1, 5, 40):
        full, prog = index.search(q, k), index.search(q, k, progressive=True)
        np.testing.assert_array_equal(prog.ids, full.ids)
        np.testing.assert_array_equal(prog.scores, full.scores)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_progressive_rows_whose_word_is_flagged(metric):
    """Rows of subnormal magnitude (1e-39, some 1e6 times larger among them) give ``A F``
    no relative precision, so their words are flagged (:func:`pack_terms`) and their
    points infinite: the search still ranks and scores as the full scan does."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((500, 40)) * 1e-39).astype(np.float32)
    x[::7] *= np.float32(1e6)
    index = _pair("hd2,rq4", metric, x)
    full, prog = index.search(x[:4], 10), index.search(x[:4], 10, progressive=True)
    words = index._first_stage().planes.words
    assert (words == (1 << pop_bits(40)) - 1).sum() > 100  # flagged rows among them
    np.testing.assert_array_equal(prog.ids, full.ids)
    np.testing.assert_array_equal(prog.scores, full.scores)


@pytest.mark.parametrize("spec", ["hd2,rq4", "center,hd2,rq4"])
def test_progressive_concurrent_first_use(data, spec):
    """Threads searching a fresh index at once (the planes are made on first use)."""
    x, q = data
    index = _pair(spec, "ip", x)
    want = index.search(q, 10).ids
    index = _pair(spec, "ip", x)
    got = _at_once(lambda i: index.search(q, 10, progressive=True, threads=1 + i % 2).ids, 4)
    for ids in got:
        np.testing.assert_array_equal(ids, want)


def _at_once(search, n: int) -> list:
    """``search(i)`` for ``i < n``, each on its own thread, all started together; their
    results (an exception in one is raised here)."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(search, range(n)))


@pytest.mark.parametrize("progressive", [True, False])
def test_concurrent_first_searches_of_an_opened_index(tmp_path, progressive):
    """Threads making the first searches of an index opened from its file (its rows'
    terms and planes made then) get the results of one thread, and leave the index
    right for the next search. Rows far from unit scale: their stored terms carry a
    power of two that filling scales in place (two threads filling the same rows once
    scaled them twice, and every later search of the index went wrong)."""
    import vecpress

    rng = np.random.default_rng(9)
    x = rng.standard_normal((20000, 64)).astype(np.float32) * np.float32(6e4)
    q = rng.standard_normal((9, 64)).astype(np.float32) * np.float32(6e4)
    index = Index("hd2,rq4", metric="ip", seed=0, ivf=16)
    index.add(x)
    want = index.search(q, 10, nprobe=16).ids
    index.save(tmp_path / "i.vpi")
    for _ in range(6):  # the race needs both threads inside the fill: try a few times
        opened = vecpress.open(tmp_path / "i.vpi", mmap=True)

        def first(_, opened=opened):
            return opened.search(q, 10, nprobe=16, progressive=progressive).ids

        for ids in [*_at_once(first, 2), first(None)]:
            np.testing.assert_array_equal(ids, want)


def test_progressive_searches_reuse_their_bounds_scratch(data):
    """One query's first pass (two float32 per row) goes to a vector the planes keep: the
    second search allocates none (the same vector comes back), and a smaller batch
    reuses it."""
    x, q = data
    index = _pair("hd2,rq4", "ip", x)
    index.search(q[:1], 10, progressive=True)
    planes = index._first_stage().planes
    (first,) = planes._scratch
    assert first.size >= 2 * x.shape[0]
    for i in range(1, 4):
        index.search(q[i : i + 1], 10, progressive=True)
        assert len(planes._scratch) == 1 and planes._scratch[0] is first


def test_progressive_batches_cut_to_the_bounds_budget(data, monkeypatch):
    """A batch of queries whose bounds would pass ``PROGRESSIVE_BOUNDS`` is scanned a few
    queries at a time, with the same result as in one call."""
    from vecpress.search import scan as search_scan

    x, q = data
    index = _pair("hd2,rq4", "l2", x)  # no centring: a query's transform is row by row
    whole = index.search(q, 10, progressive=True)
    monkeypatch.setattr(search_scan, "PROGRESSIVE_BOUNDS", 3 * x.shape[0] + 1)
    calls = []
    real = search_scan._scan_batch
    monkeypatch.setattr(
        search_scan, "_scan_batch", lambda *a, **kw: calls.append(a[1].shape[0]) or real(*a, **kw)
    )
    cut = index.search(q, 10, progressive=True)
    assert calls == [3] * (q.shape[0] // 3) + ([q.shape[0] % 3] if q.shape[0] % 3 else [])
    np.testing.assert_array_equal(cut.ids, whole.ids)
    np.testing.assert_array_equal(cut.scores, whole.scores)


def test_progressive_scratch_must_be_a_writable_float32_vector():
    from vecpress.kernels.progressive import _scratch

    ok = np.zeros(8, np.float32)
    assert _scratch(ok) is ok
    frozen = np.zeros(8, np.float32)
    frozen.flags.writeable = False
    for bad in (np.zeros(8), np.zeros((2, 4), np.float32), np.zeros(16, np.float32)[::2], frozen,
                [0.0] * 8):  # fmt: skip
        with pytest.raises(TypeError, match="scratch must be a writable contiguous float32"):
            _scratch(bad)


@pytest.mark.parametrize("centre", ["number", "per dimension"])
def test_progressive_search_equals_the_full_scan(data, centre):
    """One compiled call (plan, quantization, passes, merge) answers as the full scan of the
    same lists, for queries probing lists with gaps (``-1``) and terms added per list, with
    the grid's centre given as one number or one per dimension (quantized outside)."""
    from vecpress.kernels.grid_search import grid_scan_topk, merge_slots, plan_pairs
    from vecpress.kernels.progressive import progressive_search
    from vecpress.kernels.scan import grid_queries
    from vecpress.search.planes import Planes
    from vecpress.search.scan import Terms, make_items

    x, q = data
    codec = Codec.from_spec("hd2,rq4", seed=0).fit(x)
    codes = codec.encode(x)
    items = make_items(np.array([0, 1200, 1200, 3100, 5000]), chunk=700)  # 4 lists, one empty
    every = np.arange(items.starts.size)
    terms = Terms(codec, codes)
    terms.ensure(items, every)
    planes = Planes(codec, codes, items)
    planes.ensure(every, terms.arrays)
    quant = codec.quantizer
    qt, _ = codec._transform_queries(q[:6])
    qe, center, qoff, t = quant.grid_queries(qt)
    lists = np.array([[0, 3], [2, -1], [-1, -1], [1, 3], [3, 0], [0, 2]], np.int64)
    adds = np.round(np.random.default_rng(5).standard_normal(lists.shape), 2).astype(np.float32)
    if centre == "per dimension":
        center = np.full(quant.grid_dims, center, np.float32)
    zero, qsq = np.zeros(1, np.float32), np.zeros(6, np.float32)
    scores, rows, refined = progressive_search(
        codes, 4, quant.grid_dims, (items.starts, items.ends, items.list_ptr), lists, adds,
        (qe, center, qoff), t, *terms.arrays, planes.arrays, zero, qsq, 7, z=planes.z,
        terms=planes.terms,
    )  # fmt: skip
    qptr, qidx, qslot, qadd, qslot_ptr = plan_pairs(items.list_ptr, lists, adds)
    qi, qs, off = grid_queries(qe, center, qoff, 4)
    slot_s, slot_i = grid_scan_topk(
        codes, 4, quant.grid_dims, items.starts, items.ends, qptr, qidx, qslot, qadd, qi, 1,
        qs, off, t, *terms.arrays, zero, qsq, int(qslot_ptr[-1]), 7,
    )  # fmt: skip
    full_s = np.empty((6, 7), np.float32)
    full_i = np.empty((6, 7), np.int64)
    merge_slots(slot_s, slot_i, qslot_ptr, 7, full_s, full_i)
    np.testing.assert_array_equal(rows, full_i)
    np.testing.assert_array_equal(scores, full_s)
    assert (rows[2] == -1).all() and (scores[2] == -np.inf).all()  # probes no list
    probed = [sum(int(items.list_rows[lst]) for lst in row if lst >= 0) for row in lists]
    assert (refined <= np.array(probed)).all() and refined[2] == 0 and refined.sum() > 0


def test_progressive_bad_arguments(data):
    x, q = data
    for spec in ("f32", "pq25x4", "kl4", "hd2,rq8", "hd2,int8"):
        index = _pair(spec, "ip", x[:500])
        assert not supports(index.codec.tier_codec)
        with pytest.raises(ValueError, match="progressive=True reads grid codes"):
            index.search(q, 5, progressive=True)
    # a two-level code's first level is scanned progressively
    index = _pair("hd2,lvq4x8", "ip", x[:500])
    np.testing.assert_array_equal(index.search(q, 5, progressive=True).ids, index.search(q, 5).ids)
    index = _pair("hd2,rq4", "ip", x[:500])
    with pytest.raises(TypeError, match="progressive must be a bool"):
        index.search(q, 5, progressive=1)


def test_progressive_dimension_limit():
    """A row's word (:func:`pack_terms`) holds popcounts of up to ``MAX_DIMS`` dimensions:
    an index of that many searches progressively as it does in full (its words keep 7
    bits of ``A F``); one more is refused with an error that names the limit."""
    from vecpress.kernels.progressive import MAX_DIMS

    rng = np.random.default_rng(3)
    for d in (MAX_DIMS, MAX_DIMS + 1):
        x = rng.standard_normal((40, d)).astype(np.float32)
        index = _pair("rq4", "ip", x)
        if d == MAX_DIMS:
            got, want = index.search(x[:3], 5, progressive=True), index.search(x[:3], 5)
            np.testing.assert_array_equal(got.ids, want.ids)
            np.testing.assert_array_equal(got.scores, want.scores)
        else:
            with pytest.raises(ValueError, match=r"up to 65,534 dimensions.*d = 65535"):
                index.search(x[:1], 5, progressive=True)


def test_sign_tables_recombine_exactly():
    """``<σ, qi> = 8 S6 - 253 pop + R - Σ qi + <r, σ>`` for every row and query."""
    rng = np.random.default_rng(4)
    for d in (1, 7, 64, 100):
        qi = rng.integers(-127, 128, (5, d)).astype(np.int16)
        m = rng.integers(0, 2, (30, d)).astype(np.uint8)
        luts, rsum, rnorm = sign_tables(qi, d)
        groups = -(-d // 4)
        codes = np.zeros((30, groups), np.int64)
        for t in range(4):
            cols = np.arange(t, d, 4)
            codes[:, cols // 4] |= m[:, cols].astype(np.int64) << t
        tables = luts.astype(np.int64).reshape(5, -1, 16)
        s6 = np.stack([tables[u][np.arange(groups), codes].sum(axis=1) for u in range(5)])
        sigma = 2 * m.astype(np.int64) - 1
        u = qi.astype(np.int64) + 128
        r = u - 4 * (u >> 2) - 1.5
        pop = m.sum(axis=1)
        recombined = 8 * s6 - 253 * pop[None] + (rsum - qi.sum(axis=1))[:, None] + r @ sigma.T
        np.testing.assert_array_equal(recombined, qi.astype(np.int64) @ sigma.T)
        np.testing.assert_allclose(rnorm, np.sqrt((r * r).sum(axis=1)))


def _estimates(x, q, bits=4):
    """Sign-plane estimates of ``<v, qi>`` against the exact values and the deviation scale
    ``g |qi|``, for hd2-rotated codes."""
    codec = Codec.from_spec(f"hd2,rq{bits}").fit(x)
    codes = codec.encode(x)
    quant = codec.quantizer
    d = quant.grid_dims
    n = x.shape[0]
    signs = np.zeros((n, (d + 7) // 8), np.uint8)
    f, g, vn = (np.empty(n, np.float32) for _ in range(3))
    pop = np.empty(n, np.int32)
    plane_rows(codes, np.array([[0, d, bits, 0]]), bits, d, signs, f, g, vn, pop)
    from vecpress.kernels.scan import grid_queries

    qt, _ = codec.transform_queries(q)
    qe, center, qoff, _ = quant.grid_queries(qt)
    qi, _, _ = grid_queries(qe, center, qoff, bits)
    qi = qi.astype(np.float64)
    v = unpack(codes, bits, d).astype(np.float64) - ((1 << bits) - 1) / 2
    exact = qi @ v.T
    est = f[None].astype(np.float64) * (qi @ np.sign(v).T)
    scale = g[None] * np.sqrt((qi * qi).sum(axis=1, keepdims=True))
    return exact, est, scale, (f, g, vn, pop)


@pytest.mark.parametrize(
    ("bits", "d"), [(1, 13), (2, 50), (3, 64), (4, 50), (4, 64), (4, 384), (5, 29)]
)
def test_plane_rows_match_their_formulas(bits, d):
    """The sign plane (little-endian bits of the codes in the grid's upper half), its
    popcount, ``|v|``, ``f = |v|² / Σ|v_i|`` and ``g`` of the module docstring, against
    numpy in float64 (rounded once to float32)."""
    rng = np.random.default_rng(bits * 100 + d)
    n = 300
    c = rng.integers(0, 1 << bits, (n, d)).astype(np.uint8)
    c[0] = 0  # every code at the grid's bottom
    codes = pack(c, bits)
    signs = np.zeros((n, (d + 7) // 8), np.uint8)
    f, g, vn = (np.empty(n, np.float32) for _ in range(3))
    pop = np.empty(n, np.int32)
    plane_rows(codes, np.array([[0, d, bits, 0]]), bits, d, signs, f, g, vn, pop)
    v = c.astype(np.float64) - ((1 << bits) - 1) / 2
    upper = c >= (1 << (bits - 1))
    np.testing.assert_array_equal(signs, np.packbits(upper, axis=1, bitorder="little"))
    np.testing.assert_array_equal(pop, upper.sum(axis=1))
    s1, s2 = np.abs(v).sum(axis=1), (v * v).sum(axis=1)
    np.testing.assert_array_equal(vn, np.sqrt(s2).astype(np.float32))
    np.testing.assert_array_equal(f, (s2 / s1).astype(np.float32))
    gamma = s1 / np.sqrt(s2 * d)
    want = np.sqrt(s2) * np.sqrt(np.maximum(0, 1 - gamma**2)) / (gamma * np.sqrt(d - 1))
    np.testing.assert_allclose(g, want.astype(np.float32), rtol=2e-7, atol=1e-12)


def test_sign_estimate_deviation_matches_theory():
    """Normalised errors of the sign-plane estimate: mean 0 and root mean square at most 1
    (the bound's scale); tails beyond z = 4 no more frequent than the normal model says
    (the count is compared with a binomial bound at 1e-6)."""
    x = _clustered(3000, 128, 5)
    q = _clustered(200, 128, 6)
    exact, est, scale, _ = _estimates(x, q)
    err = ((exact - est) / scale).ravel()
    pairs = err.size
    assert abs(err.mean()) < 5 / np.sqrt(pairs)
    assert err.std() <= 1.0
    tail = 2 * (1 - NormalDist().cdf(Z))
    expected = tail * pairs
    assert (np.abs(err) > Z).sum() <= expected + 5 * np.sqrt(expected) + 5


def test_calibrated_width():
    """Rotated codes keep the theory's z; codes of unrotated, skewed data get a wider one."""
    x = _clustered(3000, 64, 7)
    codec = Codec.from_spec("hd2,rq4").fit(x)
    codes = codec.encode(x)
    _, _, _, (f, g, _, _) = _estimates(x, x[:10])
    z = calibrate_z(codec, codes, np.arange(3000), f, g)
    assert Z <= z < 1.2 * Z
    rng = np.random.default_rng(8)
    skewed = np.abs(rng.standard_normal((3000, 64))).astype(np.float32) ** 3
    skewed[:, :4] *= 40
    codec = Codec.from_spec("rq4").fit(skewed)
    codes = codec.encode(skewed)
    n, d = skewed.shape
    signs = np.zeros((n, 8), np.uint8)
    f, g, vn = (np.empty(n, np.float32) for _ in range(3))
    pop = np.empty(n, np.int32)
    plane_rows(codes, np.array([[0, d, 4, 0]]), 4, d, signs, f, g, vn, pop)
    assert calibrate_z(codec, codes, np.arange(n), f, g) > 1.2 * Z


@pytest.mark.parametrize(("bits", "d"), [(1, 13), (2, 50), (4, 50), (4, 384), (5, 29)])
def test_item_planes_equal_the_three_steps(bits, d):
    """One pass per item (:func:`item_planes`) gives, to the bit, the planes and terms of
    :func:`plane_rows`, :func:`plane_layout` and :func:`fold_terms`: items of any length
    (a last block of 1-31 rows, an empty item), the rows read from a read-only array."""
    rng = np.random.default_rng(bits * 7 + d)
    n = 300
    c = rng.integers(0, 1 << bits, (n, d)).astype(np.uint8)
    c[5] = 0
    codes = pack(c, bits)
    codes.flags.writeable = False
    layout = np.array([[0, d, bits, 0]], np.int64)
    a = rng.standard_normal(n).astype(np.float32)
    z = 4.3
    bounds = np.array([0, 33, 33, 64, 250, 300])  # items: 33 rows, none, 31, 186, 50
    starts, ends = bounds[:-1], bounds[1:]
    nblocks = (ends - starts + 31) // 32
    bstarts = np.concatenate([[0], np.cumsum(nblocks)[:-1]])
    nbytes = (d + 7) // 8
    blocked = np.full((int(nblocks.sum()), 32 * nbytes), 0xAB, np.uint8)
    terms = [np.zeros(n, np.float32) for _ in range(4)]
    words = np.zeros(n, np.uint32)
    order = np.array([3, 0, 1, 4, 2])  # items in any order
    item_planes(codes, layout, bits, d, starts[order], ends[order], bstarts[order], blocked,
                *terms, words, a, z)  # fmt: skip
    signs = np.zeros((n, nbytes), np.uint8)
    f, g, vn = (np.empty(n, np.float32) for _ in range(3))
    pop = np.empty(n, np.int32)
    plane_rows(codes, layout, bits, d, signs, f, g, vn, pop)
    for s, e, b0, nb in zip(starts, ends, bstarts, nblocks, strict=True):
        np.testing.assert_array_equal(blocked[b0 : b0 + nb], plane_layout(signs[s:e], d))
    folded = fold_terms(f, g, vn, pop, a, z)
    for got, want in zip(terms, folded, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(words, pack_terms(folded[0], folded[3], pop, d))


def test_item_planes_on_threads_equal_one_thread():
    """Items split among threads (consecutive groups of about equal rows, an empty item
    among them) give, to the bit, the planes and terms of one thread."""
    from itertools import pairwise

    import numba

    import vecpress
    from vecpress.kernels.progressive import _PLANES_PER_THREAD, _item_groups

    rng = np.random.default_rng(2)
    d, bits = 40, 3
    n = 3 * _PLANES_PER_THREAD + 77
    codes = pack(rng.integers(0, 1 << bits, (n, d)).astype(np.uint8), bits)
    layout = np.array([[0, d, bits, 0]], np.int64)
    a = rng.standard_normal(n).astype(np.float32)
    bounds = np.array([0, 100, 2500, 2500, 6000, 9000, n])
    starts, ends = bounds[:-1], bounds[1:]
    rows = ends - starts
    nblocks = (rows + 31) // 32
    bstarts = np.concatenate([[0], np.cumsum(nblocks)[:-1]])
    for threads in (2, 3):
        groups = _item_groups(rows, threads)
        assert len(groups) == threads and groups[0].start == 0 and groups[-1].stop == rows.size
        assert all(g.stop == h.start for g, h in pairwise(groups))
        assert all(abs(rows[g].sum() - n / threads) <= rows.max() for g in groups)  # balanced
    assert _item_groups(np.array([10, 20]), 8) == [slice(0, 2)]  # too few rows to split

    def planes(t):
        blocked = np.zeros((int(nblocks.sum()), 32 * ((d + 7) // 8)), np.uint8)
        terms = [np.zeros(n, np.float32) for _ in range(4)]
        words = np.zeros(n, np.uint32)
        before = vecpress.get_num_threads()
        vecpress.set_num_threads(t)
        try:
            item_planes(
                codes, layout, bits, d, starts, ends, bstarts, blocked, *terms, words, a, 4.0
            )
        finally:
            vecpress.set_num_threads(before)
        return [blocked, *terms, words]

    threads = min(3, numba.config.NUMBA_NUM_THREADS)
    if threads < 2:
        pytest.skip("numba runs one thread here")
    for got, want in zip(planes(threads), planes(1), strict=True):
        np.testing.assert_array_equal(got, want)


def test_calibrate_z_computes_its_own_terms():
    """Without ``f``, ``g`` the calibration computes them for the rows it measures against:
    the same width as with them given."""
    x = _clustered(3000, 64, 9)
    codec = Codec.from_spec("hd2,rq4").fit(x)
    codes = codec.encode(x)
    n, d = x.shape
    f, g, vn = (np.empty(n, np.float32) for _ in range(3))
    signs, pop = np.empty((n, 8), np.uint8), np.empty(n, np.int32)
    plane_rows(codes, np.array([[0, d, 4, 0]]), 4, d, signs, f, g, vn, pop)
    rows = np.arange(100, 2900)
    assert calibrate_z(codec, codes, rows) == calibrate_z(codec, codes, rows, f[rows], g[rows])


def test_fold_terms_bound_the_score():
    """``s0 A w`` with ``w`` from the folded terms reproduces ``a s0 <v, qi>`` estimates."""
    f = np.float32([2.0, 3.0])
    g = np.float32([0.5, 0.25])
    vn = np.float32([4.0, 6.0])
    pop = np.int32([3, 5])
    a = np.float32([1.5, -2.0])
    big_f, big_h, eps, big_a = fold_terms(f, g, vn, pop, a, 4.0)
    np.testing.assert_allclose(big_f * vn, f)
    np.testing.assert_allclose(big_a, a * vn)
    np.testing.assert_allclose(eps, 4.0 * g / vn)
    np.testing.assert_allclose(big_h, -253 * big_f * pop)


def _packed_rows(rng, n, d, mags):
    """Rows' float32 terms as :func:`fold_terms` makes them (``F`` and ``H`` from one
    float64 ``F``), and their :func:`pack_terms` words: popcounts from 0 to ``d``,
    factors ``A`` of magnitudes ``mags``, signs and zeros among them."""
    f32 = np.float32
    big_a = (mags * rng.choice([-1, 1], n)).astype(f32)
    big_a[::7] = 0
    f64 = rng.uniform(0.01, 0.3, n)
    pop = rng.integers(0, d + 1, n)
    pop[::3] = d  # H largest against the estimate: the most cancellation
    pop[1::11] = 0
    big_f, big_h = f64.astype(f32), (-253.0 * f64 * pop).astype(f32)
    return big_f, big_h, big_a, pop, pack_terms(big_f, big_a, pop, d)


def _sums_for(rng, est, f64, pop, xq):
    """Table sums ``s6`` whose estimates ``F (8 s6 + xq - 253 pop)`` lie near ``est``."""
    return np.rint((est / f64 + 253.0 * pop - xq) / 8).astype(np.int32)


@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("terms", [TERMS_NONE, TERMS_C, TERMS_ALL])
def test_block_slack_covers_every_rows_bound(terms, l2):
    """The filter of pass 3 drops a row only where its bound is below the threshold:
    for every row, however its estimate lies (far outside ``±|qi|`` too: degenerate
    rows), whatever the signs and magnitudes of its terms, the point the first pass
    keeps (made from the row's word) is at least the row's own bound (made from its
    float32 terms, as pass 3 makes it) less its block's slack, less the margin the
    filter takes off the threshold (the worst threshold: the bound itself)."""
    from vecpress.kernels.progressive import (
        _THR_MARGIN,
        LIM_E2,
        LIMITS,
        _block_slacks,
        _row_bound,
        _row_points,
        block_limits,
        packed_delta,
    )

    rng = np.random.default_rng(11 + 2 * terms + l2)
    f32 = np.float32
    n, d = 32 * 12, 384
    # magnitudes alike within a block (a block's slack is its largest row's) and far
    # apart between blocks
    mags = (np.repeat(10.0 ** rng.uniform(-4, 4, n // 32), 32) * rng.uniform(0.7, 1, n)).astype(f32)
    big_f, big_h, big_a, pop, words = _packed_rows(rng, n, d, mags)
    eps = rng.uniform(0, 0.6, n).astype(f32)
    eps[::5] = 0
    a, b, c = (rng.normal(0, 1, n).astype(f32) * mags for _ in range(3))
    norms = rng.uniform(0, 4, n).astype(f32) * mags * mags
    mask = np.uint32((1 << pop_bits(d)) - 1)
    xq = f32(-8e5 - 0.5)
    for s0, qn, zr, qc, big, tq, e, qq2 in [
        (0.01, 800.0, 88.0, 0.3, 2.0, 0.5, 0.0, 1.0),
        (1e-3, 50.0, 5.0, -7.0, 9.0, -2.0, 3.0, 25.0),
        (2.0, 1.0, 0.5, 0.0, 0.0, 0.0, -1.0, 0.0),
    ]:
        # estimates from -8 |qi| to 8 |qi|: degenerate rows at both ends
        s6 = _sums_for(rng, rng.uniform(-8, 8, n) * qn, big_f.astype(np.float64), pop, xq)
        limits = np.zeros((n // 32, LIMITS), f32)
        block_limits(np.array([0]), np.array([n]), np.array([0]), big_f, eps, big_a, a, b, c,
                     norms if l2 else np.zeros(0, f32), limits)  # fmt: skip
        xs, points = np.empty(n, f32), np.empty(n, f32)
        _row_points(s6, words, a, b, c, norms, xs, points, xq, f32(s0), limits[0, LIM_E2],
                    f32(qc), f32(tq), f32(e), l2, f32(qq2), terms, mask,
                    packed_delta(d))  # fmt: skip
        np.testing.assert_array_equal(xs, f32(8) * s6 + xq)  # exact
        w0s = big_f * xs + big_h  # as pass 3 makes the estimates
        assert np.abs(w0s).max() > 2 * qn  # degenerate rows among them
        slacks = np.empty(n // 32, f32)
        _block_slacks(limits, f32(s0), f32(qn), f32(zr), f32(qc), f32(big), f32(tq), f32(e), l2,
                      f32(qq2), terms, f32(2 / np.sqrt(d)), slacks)  # fmt: skip
        for r in range(n):
            ub = _row_bound(w0s[r], big_f[r], eps[r], big_a[r], a[r], b[r], c[r], norms[r],
                            f32(s0), f32(qn), f32(zr), f32(qc), f32(big), f32(tq), f32(e), l2,
                            f32(qq2), terms, f32(2 / np.sqrt(d)))  # fmt: skip
            cut = f32(f32(ub - slacks[r // 32]) - f32(abs(ub) * _THR_MARGIN))
            assert points[r] >= cut, (r, points[r], ub, slacks[r // 32])


@pytest.mark.parametrize("d", [5, 100, 384, 3072])
def test_a_packed_point_is_at_least_the_float32_terms_point(d):
    """The point the first pass makes from a row's word is at least the point of its
    float32 terms, ``s0 A ŵ'`` with ``ŵ = F x + H`` (computed exactly here from the
    float32 values), for every sign of ``s0`` and ``A``, estimates near zero (the most
    cancellation between ``F x`` and ``H``) and far out, any popcount; and within
    twice the widening :func:`pack_terms` states (without it, about half the rows fall
    below it); a flagged word's point is infinite."""
    from vecpress.kernels.progressive import _row_points, packed_delta

    rng = np.random.default_rng(d)
    f32, n = np.float32, 4000
    mags = (10.0 ** rng.uniform(-20, 20, n)).astype(f32)
    big_f, big_h, big_a, pop, words = _packed_rows(rng, n, d, mags)
    mask = np.uint32((1 << pop_bits(d)) - 1)
    flagged = words.copy()
    flagged[::10] = mask
    delta = packed_delta(d)
    xq = f32(-8e5 - 0.5)
    qn = 500.0
    est = rng.uniform(-3, 3, n) * qn
    est[::4] = rng.uniform(-1e-3, 1e-3, n // 4)  # near zero
    s6 = _sums_for(rng, est, big_f.astype(np.float64), pop, xq)
    em2 = f32(0.09)
    zero = np.zeros(n, f32)
    for s0 in (f32(0.01), f32(-3.0)):
        xs, points = np.empty(n, f32), np.empty(n, f32)
        _row_points(s6, words, zero, zero, zero, zero, xs, points, xq, s0, em2, f32(0), f32(0),
                    f32(0), False, f32(0), TERMS_NONE, mask, delta)  # fmt: skip
        w0 = (big_f * xs + big_h).astype(np.float64)  # float32 arithmetic, as pass 3
        t = big_a.astype(np.float64) * w0
        ref = float(s0) * np.where(t < 0, t * (1 - float(em2)), t)
        assert (points >= ref).all(), np.flatnonzero(points < ref)[:5]
        u = xs.astype(np.float64) - 253.0 * pop
        af = np.abs(big_a.astype(np.float64) * big_f)
        width = abs(float(s0)) * float(delta) * af * (np.abs(u) + pop)
        assert (points - ref <= 2 * width + 1e-300).all()
        _row_points(s6, flagged, zero, zero, zero, zero, xs, points, xq, s0, em2, f32(0),
                    f32(0), f32(0), False, f32(0), TERMS_NONE, mask, delta)  # fmt: skip
        assert np.isposinf(points[::10]).all() and np.isfinite(points[1::10]).all()


def test_packed_terms_carry_a_f_and_the_popcount():
    """:func:`pack_terms`: each row's popcount exactly and ``A F`` to within half a unit
    of its kept bits (after float32's own rounding), for products from 1e-37 to 1e36;
    zero exactly; the rows without relative precision (a subnormal ``A F``, or one that
    rounds past the largest float32) flagged with the all-ones popcount, which no row
    has (``pop_bits(d)`` holds ``d + 1``)."""
    rng = np.random.default_rng(5)
    f32, n = np.float32, 5000
    for d in (1, 2, 37, 255, 384, 3072):
        pb = pop_bits(d)
        mask = (1 << pb) - 1
        assert mask > d and (1 << (pb - 1)) - 1 <= d
        big_f = (10.0 ** rng.uniform(-2, 0.5, n)).astype(f32)
        big_a = (10.0 ** rng.uniform(-35, 35, n) * rng.choice([-1, 1], n)).astype(f32)
        big_a[:5] = 0
        big_a[5:10] = f32(1e-39) * rng.choice([-1, 1], 5)  # A F subnormal
        big_a[10], big_f[10] = np.finfo(f32).max, 1  # rounds past the largest float32
        pop = rng.integers(0, d + 1, n)
        words = pack_terms(big_f, big_a, pop, d)
        flagged = words == mask
        assert flagged[5:11].all() and not flagged[:5].any() and not flagged[11:].any()
        ok = ~flagged
        np.testing.assert_array_equal(words[ok] & mask, pop[ok])
        got = (words & ~np.uint32(mask)).view(f32).astype(np.float64)
        want = big_a.astype(np.float64) * big_f
        assert (got[:5] == 0).all()
        tol = (2.0 ** -(24 - pb) + 2.0**-24) * np.abs(got)
        assert (np.abs(got - want)[ok] <= tol[ok]).all()
        assert (np.sign(got) == np.sign(want))[ok].all()


def test_query_layouts_match_the_vnni_kernels():
    """The progressive scan lays the queries out as the full scan's kernels read them."""
    from vecpress.kernels.progressive import _query_bytes
    from vecpress.kernels.scan import pad_queries_int8, split_queries

    rng = np.random.default_rng(10)
    for d in (1, 5, 64, 100, 384, 700):
        qi = rng.integers(-127, 128, (3, d)).astype(np.int16)
        for bits in (1, 2, 4):
            want = split_queries(qi, d, bits)
            np.testing.assert_array_equal(_query_bytes(qi, d, 8 // bits), want)
        np.testing.assert_array_equal(_query_bytes(qi, d, 1), pad_queries_int8(qi))


@pytest.mark.parametrize("d", [1, 7, 64, 127, 128, 129, 384, 700])
def test_packed_4bit_dot_is_the_unpacked_one(d):
    """The 4-bit codes read in place (the path without VNNI) give the integer dot product
    of the unpacked codes with the query, at the extremes too (codes 0 and 15 against
    -127 and 127), for every dimension however the bytes fall in 64-byte chunks."""
    from vecpress.kernels.progressive import _dot4, _query_bytes

    rng = np.random.default_rng(d)
    rows = rng.integers(0, 16, (6, d)).astype(np.uint8)
    rows[0], rows[1] = 15, 0
    qi = rng.integers(-127, 128, (3, d)).astype(np.int16)
    qi[0], qi[1] = 127, -127
    codes = pack(rows, 4)
    q8 = _query_bytes(qi, d, 2)
    row_bytes = (4 * d + 7) // 8
    for j in range(rows.shape[0]):
        for qq in range(qi.shape[0]):
            want = int(rows[j].astype(np.int64) @ qi[qq].astype(np.int64))
            assert _dot4(codes, j, q8, qq, row_bytes) == want
