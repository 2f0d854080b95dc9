"""The flat :class:`vecpress.Index`: differential tests against numpy, ids, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vecpress
from _util import gaussian
from vecpress import Codec, Index, SearchResult
from vecpress.search import index as index_mod
from vecpress.search import scan as search_mod
from vecpress.search.topk import topk


def brute_force(x: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """Exact float64 scores ``[nq, n]`` with the index's conventions (larger is better)."""
    x = x.astype(np.float64)
    q = q.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if metric == "l2":
        return -(((q[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    return q @ x.T


def check_against_truth(res: SearchResult, truth: np.ndarray, ids: np.ndarray, k: int) -> None:
    """Returned scores are the true top-k scores, and each id's true score is its score."""
    nq, n = truth.shape
    kk = min(k, n)
    scale = 1e-4 * (1.0 + np.abs(truth).max(initial=0.0))
    pos_of = {int(i): p for p, i in enumerate(ids)}
    for r in range(nq):
        best = np.sort(truth[r])[::-1][:kk]
        np.testing.assert_allclose(res.scores[r, :kk], best, rtol=1e-4, atol=scale)
        got = [pos_of[int(i)] for i in res.ids[r, :kk]]
        np.testing.assert_allclose(truth[r, got], res.scores[r, :kk], rtol=1e-4, atol=scale)
        assert len(set(got)) == kk
        assert (res.ids[r, kk:] == -1).all()
        assert np.isneginf(res.scores[r, kk:]).all()


def snapshot(index: Index, q: np.ndarray) -> tuple:
    res = index.search(q, 7)
    return (index.ids.tolist(), index.next_id, res.ids.tolist(), res.scores.tolist())


@settings(max_examples=60)
@given(
    n=st.integers(1, 60),
    d=st.integers(1, 24),
    nq=st.integers(1, 8),
    k=st.integers(1, 80),
    metric=st.sampled_from(["ip", "cosine", "l2"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_f32_flat_equals_numpy_brute_force(n, d, nq, k, metric, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    ids = rng.choice(10 * n + 10, n, replace=False).astype(np.int64)
    index = Index("f32", metric=metric)
    index.add(x, ids=ids)
    res = index.search(q, k)
    assert res.ids.shape == (nq, k) and res.ids.dtype == np.int64
    assert res.scores.shape == (nq, k) and res.scores.dtype == np.float32
    check_against_truth(res, brute_force(x, q, metric), ids, k)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
@pytest.mark.parametrize("spec", ["hd2,rq4", "center,hd2,rq2", "int8", "kl4"])
def test_flat_search_is_the_codecs_exhaustive_ranking(spec, metric, data_64):
    x, q = data_64[:400], data_64[400:450]
    index = Index(spec, metric=metric, seed=3)
    index.add(x)
    res = index.search(q, 10)
    xs, qs = x.astype(np.float64), q.astype(np.float64)
    if metric == "cosine":
        xs = xs / np.linalg.norm(xs, axis=1, keepdims=True)
        qs = qs / np.linalg.norm(qs, axis=1, keepdims=True)
    xs, qs = xs.astype(np.float32), qs.astype(np.float32)
    codes = index.codec.encode(xs)
    est = index.codec.score(qs, codes)
    if metric == "l2":
        est = 2 * est - (xs.astype(np.float64) ** 2).sum(1).astype(np.float32)[None, :]
        est -= (qs.astype(np.float64) ** 2).sum(1).astype(np.float32)[:, None]
    ids, scores = topk(est, 10)
    np.testing.assert_array_equal(res.ids, ids)
    np.testing.assert_allclose(res.scores, scores, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("spec", ["hd2,rq4", "hd2,rq8", "center,hd2,tq2"])
def test_query_batches_and_row_chunks_change_nothing(monkeypatch, data_64, spec):
    """Work split into many items and query batches merges to the same result
    (ties go to the earlier row whatever the split)."""
    x, q = data_64[:300], data_64[300:500]
    index = Index(spec, metric="l2")
    index.add(np.vstack([x, x[:20]]))  # exact duplicates: tied scores across chunks
    whole = index.search(q, 12)
    monkeypatch.setattr(search_mod, "QUERY_BATCH", 7)
    monkeypatch.setattr(search_mod, "CHUNK", 37)
    index._stage = None
    blocked = index.search(q, 12)
    if spec.endswith("tq2"):  # float scans: sums may round differently with the block shape
        np.testing.assert_allclose(blocked.scores, whole.scores, rtol=1e-6, atol=1e-5)
        assert (blocked.ids == whole.ids).mean() > 0.99
    else:  # the grid kernel: exact integer dot products, identical floats
        np.testing.assert_array_equal(blocked.scores, whole.scores)
        np.testing.assert_array_equal(blocked.ids, whole.ids)


def test_automatic_ids_continue_after_the_largest_id_ever_used():
    index = Index("f32", metric="ip")
    x = np.eye(4, dtype=np.float32)
    assert index.add(x[:2]).tolist() == [0, 1]
    assert index.add(x[2:3], ids=[10]).tolist() == [10]
    assert index.add(x[3:]).tolist() == [11]
    assert index.remove([10, 11]) == 2
    assert index.add(x[:1]).tolist() == [12]  # removed ids are not reused
    assert index.next_id == 13 and index.ntotal == 3 and len(index) == 3


def test_add_after_remove_keeps_every_vector_reachable(data_64):
    index = Index("f32", metric="l2")
    index.add(data_64[:100])
    assert index.remove(np.arange(0, 100, 2)) == 50
    assert index.remove([0, 2, 4, 1000, -5]) == 0  # unknown ids are ignored
    new = index.add(data_64[100:150])
    assert new.tolist() == list(range(100, 150))
    assert len(index) == 100
    for row, i in [(1, 1), (99, 99), (100, 100), (149, 149)]:
        assert index.search(data_64[row : row + 1], 1).ids[0, 0] == i
    assert index.contains(3) and not index.contains(2)
    assert index.contains([3, 2, 120]).tolist() == [True, False, True]
    assert 3 in index and 2 not in index
    kept = set(index.ids.tolist())
    assert kept == set(range(1, 100, 2)) | set(range(100, 150))


def test_padding_when_k_exceeds_the_index():
    index = Index("hd2,rq4", metric="cosine")
    index.add(gaussian(np.random.default_rng(1), 5, 32))
    res = index.search(gaussian(np.random.default_rng(2), 3, 32), 8)
    assert (res.ids[:, 5:] == -1).all() and np.isneginf(res.scores[:, 5:]).all()
    assert sorted(res.ids[0, :5].tolist()) == [0, 1, 2, 3, 4]
    assert np.isfinite(res.scores[:, :5]).all()


def test_empty_index_and_empty_queries():
    index = Index("f32", metric="l2")
    res = index.search(np.ones((2, 3), np.float32), 4)  # no dimension yet: padding only
    assert (res.ids == -1).all() and np.isneginf(res.scores).all()
    index.add(np.ones((2, 3), np.float32))
    assert index.search(np.zeros((0, 3), np.float32), 4).ids.shape == (0, 4)
    index.remove([0, 1])
    assert (index.search(np.ones((1, 3), np.float32), 2).ids == -1).all()
    with pytest.raises(ValueError, match="3 columns"):
        index.search(np.ones((1, 4), np.float32), 2)  # the dimension is remembered


def test_l2_score_is_the_negated_squared_distance():
    index = Index("f32", metric="l2")
    index.add(np.array([[0, 0], [3, 4], [1, 1]], np.float32), ids=[5, 6, 7])
    res = index.search(np.array([[0.9, 0]], np.float32), 3)
    assert res.ids.tolist() == [[5, 7, 6]]
    np.testing.assert_allclose(res.scores, [[-0.81, -1.01, -20.41]], rtol=1e-6)
    assert index.bytes_per_vector == 2 * 4 + 8 + 4


def test_cosine_normalises_vectors_and_queries():
    index = Index("f32", metric="cosine")
    index.add(np.array([[10, 0], [0, 0.1]], np.float32))
    res = index.search(np.array([[0, 50]], np.float32), 2)
    assert res.ids.tolist() == [[1, 0]]
    np.testing.assert_allclose(res.scores, [[1.0, 0.0]], atol=1e-6)


def test_cosine_rows_are_their_float64_quotients_rounded_once():
    # each entry x / |x| divided in float64 and rounded to float32 once, at magnitudes
    # from 1e-30 to near the norm limit (a float32 division or norm rounds twice)
    rng = np.random.default_rng(11)
    x = gaussian(rng, 64, 24) * np.logspace(-30, 14, 64, dtype=np.float32)[:, None]
    index = Index("f32", metric="cosine")
    index.add(x)
    x64 = x.astype(np.float64)
    want = (x64 / np.sqrt((x64 * x64).sum(axis=1))[:, None]).astype(np.float32)
    got = index.reconstruct(index.ids)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_float_dtypes_and_non_contiguous_input():
    x = gaussian(np.random.default_rng(4), 50, 16)
    a, b = Index("f32", metric="ip"), Index("f32", metric="ip")
    a.add(x.astype(np.float64))
    b.add(np.asfortranarray(x))
    q64 = x[:5].astype(np.float64)
    ra, rb = a.search(q64, 3), b.search(q64[:, ::1].T.copy().T, 3)
    assert ra.scores.dtype == np.float32
    np.testing.assert_array_equal(ra.ids, rb.ids)
    c = Index("f32", metric="ip")
    c.add(np.repeat(x, 2, axis=1)[:, ::2])  # strided view
    np.testing.assert_array_equal(c.search(q64, 3).ids, ra.ids)


def test_train_explicitly_and_the_fit_sample(monkeypatch, data_64):
    index = Index("center,int8", metric="ip", seed=5).train(data_64)
    assert index.is_trained and len(index) == 0
    index.add(data_64[:10])
    with pytest.raises(ValueError, match="holds 10 vectors"):
        index.train(data_64)
    monkeypatch.setattr(index_mod, "FIT_SAMPLE", 50)
    auto = Index("center,int8", metric="ip", seed=5)
    auto.add(data_64)
    rows = np.sort(np.random.default_rng(5).choice(len(data_64), 50, replace=False))
    ref = Codec.from_spec("center,int8", seed=5).fit(data_64[rows])
    np.testing.assert_array_equal(auto.codec.encode(data_64), ref.encode(data_64))


# -- bad input: a clear error, and nothing already stored is lost --------------
BAD_ADDS = [
    (
        "nan",
        lambda x: np.where(np.arange(8)[:, None] == 3, np.nan, x[:8]),
        None,
        ValueError,
        "row 3",
    ),
    (
        "inf",
        lambda x: np.where(np.arange(8)[:, None] == 5, np.inf, x[:8]),
        None,
        ValueError,
        "row 5",
    ),
    ("dimension", lambda x: x[:4, :10], None, ValueError, "64 columns"),
    ("ints", lambda x: np.ones((4, 64), np.int32), None, TypeError, "int32"),
    ("1-D", lambda x: x[0], None, ValueError, "2-D"),
    ("list of str", lambda x: "vectors", None, TypeError, "str"),
    ("duplicate within", lambda x: x[:3], [500, 501, 500], ValueError, r"\[500\]"),
    ("duplicate stored", lambda x: x[:3], [600, 7, 8], ValueError, r"\[7, 8\]"),
    ("negative", lambda x: x[:3], [700, -1, -9], ValueError, r"\[-1, -9\]"),
    ("id count", lambda x: x[:3], [800, 801], ValueError, "2 entries but X has 3"),
    ("float ids", lambda x: x[:2], [1.5, 2.5], TypeError, "integers"),
    ("2-D ids", lambda x: x[:2], [[900], [901]], ValueError, "1-D"),
    ("uint64 ids", lambda x: x[:1], np.array([2**64 - 1], np.uint64), ValueError, "int64"),
]


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize(
    ("make", "ids", "exc", "match"), [b[1:] for b in BAD_ADDS], ids=[b[0] for b in BAD_ADDS]
)
def test_bad_add_is_rejected_and_stores_nothing(make, ids, exc, match, metric, data_64):
    index = Index("hd2,rq4", metric=metric)
    index.add(data_64[:100])
    q = data_64[200:210]
    before = snapshot(index, q)
    with pytest.raises(exc, match=match):
        index.add(make(data_64[300:]), ids=ids)
    assert snapshot(index, q) == before


def test_zero_vector_under_cosine_names_the_row(data_64):
    index = Index("hd2,rq4", metric="cosine")
    index.add(data_64[:50])
    before = snapshot(index, data_64[:3])
    x = data_64[50:60].copy()
    x[6] = 0
    with pytest.raises(ValueError, match="first at row 6"):
        index.add(x)
    assert snapshot(index, data_64[:3]) == before
    with pytest.raises(ValueError, match="zero row"):
        index.search(np.zeros((1, 64), np.float32), 3)
    ip = Index("hd2,rq4", metric="ip")
    ip.add(x)  # fine under ip: a zero vector is a valid vector


def test_first_add_failing_leaves_the_index_untrained():
    index = Index("hd2,rq4", metric="ip")
    with pytest.raises(ValueError, match="negative"):
        index.add(np.ones((3, 16), np.float32), ids=[1, -2, 3])
    assert not index.is_trained and index.d is None and len(index) == 0
    with pytest.raises(ValueError, match="empty"):
        index.add(np.zeros((0, 16), np.float32))  # nothing to fit on
    index.add(np.ones((3, 8), np.float32))  # any dimension is still possible
    assert index.d == 8
    assert index.add(np.zeros((0, 8), np.float32)).tolist() == []


BAD_SEARCHES = [
    ("nan", lambda q: np.where(np.arange(4)[:, None] == 2, np.nan, q), 5, ValueError, "row 2"),
    ("inf", lambda q: np.full_like(q, -np.inf), 5, ValueError, "row 0"),
    ("dimension", lambda q: q[:, :63], 5, ValueError, "64 columns"),
    ("ints", lambda q: q.astype(np.int64), 5, TypeError, "int64"),
    ("1-D", lambda q: q[0], 5, ValueError, "2-D"),
    ("k zero", lambda q: q, 0, ValueError, "k must be"),
    ("k negative", lambda q: q, -3, ValueError, "k must be"),
    ("k float", lambda q: q, 2.0, TypeError, "k must be an integer"),
    ("k bool", lambda q: q, True, TypeError, "k must be an integer"),
]


@pytest.mark.parametrize(
    ("make", "k", "exc", "match"), [b[1:] for b in BAD_SEARCHES], ids=[b[0] for b in BAD_SEARCHES]
)
def test_bad_search_is_rejected(make, k, exc, match, data_64):
    index = Index("hd2,rq4", metric="l2")
    index.add(data_64[:100])
    before = snapshot(index, data_64[:3])
    with pytest.raises(exc, match=match):
        index.search(make(data_64[100:104].copy()), k)
    assert snapshot(index, data_64[:3]) == before


def test_bad_constructor_and_search_arguments():
    with pytest.raises(ValueError, match="metric must be one of"):
        Index("f32", metric="euclid")
    with pytest.raises(ValueError, match="not a valid"):
        Index("hd2,nope4")
    with pytest.raises(ValueError, match="not a valid"):
        Index("f32", rerank_spec="f17")
    with pytest.raises(TypeError, match="rerank_spec must be a spec string"):
        Index("f32", rerank_spec=8)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="ivf"):
            Index("f32", ivf=bad)
    with pytest.raises(TypeError, match="ivf_residual must be a bool"):
        Index("f32", ivf=4, ivf_residual="yes")
    index = Index("f32", metric="ip")
    index.add(np.eye(3, dtype=np.float32))
    q = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="rerank= needs a second tier"):
        index.search(q, 1, rerank=10)
    with pytest.raises(ValueError, match="nprobe= applies to IVF indexes"):
        index.search(q, 1, nprobe=4)
    with pytest.raises(TypeError, match="integers"):
        index.remove(["a"])
    two = Index("f32", metric="ip", rerank_spec="f16")
    two.add(q)
    with pytest.raises(ValueError, match="rerank must be >= k"):
        two.search(q, 3, rerank=2)
    with pytest.raises(ValueError, match="rerank"):
        two.search(q, 3, rerank=0)


def test_public_names():
    assert vecpress.Index is Index and vecpress.SearchResult is SearchResult
    res = SearchResult(np.zeros((1, 1), np.int64), np.zeros((1, 1), np.float32))
    with pytest.raises(AttributeError):
        res.ids = None  # frozen
