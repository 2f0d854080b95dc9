"""Certified re-ranking (``search(..., rerank="auto")``, :mod:`vecpress.search.certify`)."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from _util import clustered
from vecpress import Index
from vecpress.search.certify import (
    START_DEPTH,
    ErrorModel,
    certified_rerank,
    fit_error_model,
    plain_scale,
)


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    return clustered(n, d, seed)


@pytest.fixture(scope="module")
def data():
    x = _clustered(6000, 48, 0)
    q = _clustered(400, 48, 1)
    return x, q


def _reference(index: Index, q: np.ndarray, k: int, nprobe=None) -> np.ndarray:
    """The tier's own top k of every row the first stage reaches: a re-rank of all."""
    return index.search(q, k, rerank=index.ntotal, nprobe=nprobe).ids


@pytest.mark.parametrize(
    "spec, metric, extra",
    [
        ("hd2,rq4", "cosine", {"rerank_spec": "f32"}),
        ("hd2,rq2", "ip", {"rerank_spec": "f32"}),
        ("center,hd2,rq4", "l2", {"rerank_spec": "f16"}),
        ("int4", "cosine", {"rerank_spec": "f32"}),
        ("pq24x4", "ip", {"rerank_spec": "f32"}),
        ("lvq4x8", "l2", {}),
        ("hd2,rq4", "cosine", {"rerank_spec": "f32", "ivf": 16}),
        ("lvq4x8", "ip", {"ivf": 16}),
    ],
)
def test_certified_results_are_the_tiers_exact_top_k(data, spec, metric, extra):
    """Certified queries return the tier's own top 10 (over the probed rows); almost
    every query is certified; fewer rows are re-scored than a full re-rank."""
    x, q = data
    index = Index(spec, metric, **extra)
    index.add(x)
    nprobe = 4 if index.is_ivf else None
    res = index.search(q, 10, rerank="auto", nprobe=nprobe, confidence=0.999)
    ref = _reference(index, q, 10, nprobe)
    assert res.certified.dtype == bool and res.reranked.dtype == np.int64
    assert res.certified.mean() >= 0.99
    same = (res.ids == ref).all(axis=1)
    # 400 queries at confidence 0.999: the bound allows 0.4 misses on average
    assert (~same & res.certified).sum() <= 1
    assert (res.reranked >= 10).all()
    assert res.reranked.mean() < index.ntotal / 4
    # the scores are the tier's (to float rounding: the IVF offset <q, centroid> is a
    # matrix product whose rounding may depend on how many queries it holds)
    full = index.search(q, 10, rerank=index.ntotal, nprobe=nprobe)
    np.testing.assert_allclose(res.scores[same], full.scores[same], rtol=1e-6, atol=1e-6)


def test_a_coarser_first_stage_re_scores_more(data):
    """The margin follows the first stage's measured error: 2-bit codes need deeper
    re-ranking than 4-bit ones for the same certificate."""
    x, q = data
    depth = {}
    for spec in ("hd2,rq2", "hd2,rq4", "hd2,rq8"):
        index = Index(spec, "cosine", rerank_spec="f32")
        index.add(x)
        res = index.search(q, 10, rerank="auto")
        assert res.certified.mean() >= 0.99
        depth[spec] = res.reranked.mean()
    assert depth["hd2,rq2"] > depth["hd2,rq4"] > depth["hd2,rq8"] >= 10


def test_an_exact_first_stage_re_scores_only_k(data):
    x, q = data
    index = Index("f32", "ip", rerank_spec="f32")
    index.add(x)
    res = index.search(q[:20], 7, rerank="auto")
    assert res.reranked.tolist() == [7] * 20
    assert res.certified.all()
    assert np.array_equal(res.ids, index.search(q[:20], 7).ids)


def test_higher_confidence_re_scores_at_least_as_much(data):
    x, q = data
    index = Index("hd2,rq4", "cosine", rerank_spec="f32")
    index.add(x)
    low = index.search(q, 10, rerank="auto", confidence=0.9).reranked
    high = index.search(q, 10, rerank="auto", confidence=0.99999).reranked
    assert (high >= low).all() and high.mean() > low.mean()


def test_small_indexes_and_k_beyond_the_rows():
    x = _clustered(5, 8, 3)
    index = Index("hd2,rq4", "cosine", rerank_spec="f32")
    index.add(x)
    res = index.search(x[:2], 8, rerank="auto")
    assert res.ids.shape == (2, 8)
    assert (res.ids[:, 5:] == -1).all() and np.isneginf(res.scores[:, 5:]).all()
    assert res.certified.all() and (res.reranked == 5).all()
    assert np.array_equal(res.ids[:, :5], index.search(x[:2], 5, rerank=5).ids)


def test_the_error_model_is_measured_again_after_the_rows_change(data):
    x, q = data
    index = Index("hd2,rq4", "cosine", rerank_spec="f32")
    index.add(x[:3000])
    index.search(q[:5], 10, rerank="auto")
    models = index._first_stage().error_model
    assert len(models) == 2  # near and random pairs
    assert all(isinstance(m, ErrorModel) and m.pairs > 10_000 for m in models)
    index.add(x[3000:])
    assert index._first_stage().error_model is None
    res = index.search(q, 10, rerank="auto")
    assert res.certified.mean() >= 0.99
    ok = res.certified
    assert np.array_equal(res.ids[ok], _reference(index, q, 10)[ok])


def test_rerank_auto_needs_a_second_tier_and_a_sane_confidence(data):
    x, q = data
    index = Index("hd2,rq4", "cosine")
    index.add(x[:100])
    with pytest.raises(ValueError, match="second tier"):
        index.search(q[:1], 5, rerank="auto")
    index = Index("hd2,rq4", "cosine", rerank_spec="f32")
    index.add(x[:100])
    with pytest.raises(ValueError, match="'auto'"):
        index.search(q[:1], 5, rerank="best")
    for bad in (1.0, 0.2, float("nan"), -1):
        with pytest.raises(ValueError, match="confidence"):
            index.search(q[:1], 5, rerank="auto", confidence=bad)
    for bad in ("0.9", None, True):
        with pytest.raises(TypeError, match="confidence"):
            index.search(q[:1], 5, rerank="auto", confidence=bad)


def test_fixed_depth_reports_its_re_scored_rows(data):
    x, q = data
    index = Index("hd2,rq4", "cosine", rerank_spec="f32")
    index.add(x[:50])
    res = index.search(q[:3], 5, rerank=20)
    assert res.reranked.tolist() == [20, 20, 20] and res.certified is None
    assert index.search(q[:3], 5).reranked is None


def test_the_error_model_follows_a_heavier_lower_tail():
    """A Laplace sample's 0.1 % quantile lies beyond the Gaussian of its own standard
    deviation (3.57 against 3.09 sd), so the fitted sd is raised to cover it."""
    rng = np.random.default_rng(0)
    gauss = fit_error_model(rng.standard_normal(200_000))
    assert abs(gauss.sd - 1.0) < 0.01
    lap = rng.laplace(size=200_000) / np.sqrt(2.0)  # unit variance
    model = fit_error_model(lap)
    assert model.sd > 1.1
    z = NormalDist().inv_cdf(0.999)  # 3.09
    assert model.mean - z * model.sd <= np.quantile(lap, 0.001) + 1e-6
    assert fit_error_model(np.zeros(1)).sd == 0.0


def test_certified_rerank_grows_its_depth_until_the_bound_is_met():
    """A first stage with a large margin cannot certify from 64 candidates: the depth
    grows (re-asking the first stage) until every row left out is out of reach."""
    rng = np.random.default_rng(1)
    n = 1000
    true = rng.standard_normal((1, n)).astype(np.float32)
    noise = rng.uniform(-1.5, 1.5, (1, n)).astype(np.float32)
    asked = []

    def first(q, qsq, depth):
        asked.append(depth)
        est = true + noise
        rows = np.argsort(-est, axis=1, kind="stable")[:, :depth]
        return rows, np.take_along_axis(est, rows, axis=1)

    def exact(q, qsq, rows):
        return np.where(rows >= 0, true[0][np.maximum(rows, 0)], -np.inf)

    q = np.ones((1, 4), np.float32)
    res = certified_rerank(first, exact, plain_scale, 1.5, q, np.ones(1), 10, n)
    assert asked[0] == START_DEPTH and len(asked) >= 2
    assert res.certified.all()
    assert np.array_equal(res.rows[0], np.argsort(-true[0], kind="stable")[:10])
    # a margin the data cannot meet within the cap stops there, uncertified
    res = certified_rerank(first, exact, plain_scale, 50.0, q, np.ones(1), 10, 10**6)
    assert not res.certified.any()


@pytest.mark.parametrize("scale", [1e-30, 1e12])
@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_tiny_and_huge_rows_certify_with_finite_scores(scale, metric):
    """Calibration and margins scale with the data: rows of 1e-30 or 1e12 give finite
    scores, a certificate, and k = 1024 beyond the rows pads as a fixed depth would."""
    x = (_clustered(500, 32, 4) * scale).astype(np.float32)
    index = Index("hd2,rq4", metric, rerank_spec="f32")
    index.add(x)
    res = index.search(x[:5] * 1.01, 10, rerank="auto")
    assert np.isfinite(res.scores).all() and res.certified.all()
    wide = index.search(x[:2], 1024, rerank="auto")
    assert (wide.ids[:, 500:] == -1).all() and wide.certified.all()
    assert np.array_equal(wide.ids, index.search(x[:2], 1024, rerank=1024).ids)
