"""Filtered search (``Index.search(..., allow=ids)``): the allowlist applied inside the scan.

The reference is an index of the same trained codec holding the allowed rows
only: a filtered search must return exactly its result (ids and scores), by
either path (an exact scan of the gathered allowed rows, or a masked scan).
"""

from __future__ import annotations

import numpy as np
import pytest

import vecpress
from _util import clustered
from test_index import brute_force
from vecpress import Index
from vecpress.search import filtered
from vecpress.search.topk import recall_at_k, topk

N, D = 3000, 32


@pytest.fixture(scope="module")
def data():
    x = clustered(N, D, seed=3)
    q = clustered(20, D, seed=4)
    return x, q


@pytest.fixture(params=["gather", "mask"])
def path(request, monkeypatch):
    """Force one path: gathering costs nothing, or costs more than any scan."""
    monkeypatch.setattr(filtered, "GATHER_COST", 0.0 if request.param == "gather" else 1e18)
    if request.param == "mask":
        monkeypatch.setattr(filtered, "choose", lambda *a: "mask")
    return request.param


def _pair(x, allow, spec, metric, **kw):
    full = Index(spec, metric, **kw)
    full.add(x)
    sub = Index(spec, metric, **kw)
    sub.train(x)  # the same training set and seed: the same codec (and centroids)
    sub.add(x[allow], ids=allow)
    return full, sub


@pytest.mark.parametrize(
    "spec, metric, kw",
    [
        ("hd2,rq4", "cosine", {}),
        ("hd2,rq4", "l2", {}),
        ("int8", "ip", {}),
        ("pq8x4", "ip", {}),  # fast-scan codec: the generic scan masks it
        ("f16", "l2", {}),
        ("hd2,rq4", "cosine", {"ivf": 16}),
        ("hd2,rq4", "l2", {"ivf": 16, "ivf_residual": False}),
    ],
)
@pytest.mark.parametrize("frac", [0.6, 0.05, 0.002])
def test_filtered_search_equals_an_index_of_the_allowed_rows(data, path, spec, metric, kw, frac):
    x, q = data
    rng = np.random.default_rng(int(frac * 1000))
    allow = np.flatnonzero(rng.random(N) < frac)
    full, sub = _pair(x, allow, spec, metric, **kw)
    nprobe = {"nprobe": 16} if "ivf" in kw else {}
    got = full.search(q, 10, allow=allow, **nprobe)
    want = sub.search(q, 10, **nprobe)
    np.testing.assert_array_equal(got.ids, want.ids)
    if spec.startswith("hd2,rq4") or spec == "int8":  # the grid kernel: exact integer sums
        np.testing.assert_array_equal(got.scores, want.scores)
    else:  # BLAS products of other shapes: rounding apart
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
    assert np.isin(got.ids[got.ids >= 0], allow).all()


@pytest.mark.parametrize("rerank", [40, "auto"])
def test_filtered_search_re_ranks_the_allowed_rows(data, path, rerank):
    x, q = data
    allow = np.arange(0, N, 7)
    full, sub = _pair(x, allow, "hd2,rq4", "cosine", rerank_spec="f32")
    got = full.search(q, 10, rerank=rerank, allow=allow)
    want = sub.search(q, 10, rerank=rerank)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.scores, want.scores)
    if rerank == "auto":
        assert got.certified.all()


def test_fewer_allowed_rows_than_k_are_padded(data, path):
    x, q = data
    index = Index("hd2,rq4", "ip")
    index.add(x, ids=np.arange(N) * 3)  # ids are not row numbers
    res = index.search(q, 5, allow=[9, 30, 12345, 9])  # 12345: not stored; 9 twice
    assert sorted(res.ids[0, :2].tolist()) == [9, 30]
    assert (res.ids[:, 2:] == -1).all() and np.isneginf(res.scores[:, 2:]).all()
    assert np.isfinite(res.scores[:, :2]).all()
    empty = index.search(q, 5, allow=np.zeros(0, np.int64))
    assert (empty.ids == -1).all() and np.isneginf(empty.scores).all()


def test_ivf_probes_more_lists_as_the_filter_narrows(data):
    """With few lists probed, a selective filter still finds its true top 10 (the
    masked path probes lists until they hold nprobe lists' worth of allowed rows)."""
    x, q = data
    index = Index("f32", "ip", ivf=32)
    index.add(x)
    rng = np.random.default_rng(0)
    for frac in (0.3, 0.1):
        allow = np.flatnonzero(rng.random(N) < frac)
        truth, _ = topk(brute_force(x[allow], q, "ip"), 10)
        full_truth, _ = topk(brute_force(x, q, "ip"), 10)
        unfiltered = recall_at_k(index.search(q, 10, nprobe=2).ids, full_truth, 10)
        got = index.search(q, 10, nprobe=2, allow=allow).ids
        rec = recall_at_k(got, allow[truth], 10)
        assert rec >= unfiltered - 0.01, (frac, rec, unfiltered)


def test_filtered_search_after_remove_and_add(data, path):
    x, q = data
    index = Index("hd2,rq4", "cosine")
    index.add(x[:2000])
    index.search(q, 3, allow=[1, 2])  # builds the id lookup
    index.remove([1])
    index.add(x[2000:], ids=np.arange(5000, 5000 + N - 2000))
    res = index.search(q, 3, allow=[1, 2, 5000])
    assert set(res.ids[0].tolist()) == {2, 5000, -1}


@pytest.mark.parametrize(
    "allow, error",
    [
        (np.array([0.5, 1.0]), TypeError),
        (np.array([[1, 2]]), ValueError),
        (["a"], TypeError),
    ],
)
def test_bad_allowlists_are_refused(data, allow, error):
    x, q = data
    index = Index("hd2,rq4", "cosine")
    index.add(x[:100])
    with pytest.raises(error, match="allow"):
        index.search(q, 3, allow=allow)


def test_the_cost_model_prefers_gathering_few_rows():
    assert filtered.choose(n=10**6, count=1000, nq=1, scanned=10**6) == "gather"
    assert filtered.choose(n=10**6, count=900_000, nq=1, scanned=10**6) == "mask"
    # IVF: a broad filter needs few more lists than nprobe, a narrow one all of them
    assert filtered.masked_rows_scanned(10**6, 500_000, 1000, 10) == 20_000
    assert filtered.masked_rows_scanned(10**6, 1000, 1000, 10) == 10**6


def test_a_memory_mapped_index_filters_as_the_one_in_memory(tmp_path, data, path):
    x, q = data
    index = Index("hd2,rq4", "l2", ivf=8)
    index.add(x)
    index.save(tmp_path / "i.vpi")
    opened = vecpress.open(tmp_path / "i.vpi", mmap=True)
    allow = np.arange(5, N, 11)
    want = index.search(q, 7, nprobe=2, allow=allow)
    got = opened.search(q, 7, nprobe=2, allow=allow)
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.scores, want.scores)
