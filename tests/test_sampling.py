"""Uniform and leverage-score sampling of training rows (``vecpress.codecs.sampling``)."""

from __future__ import annotations

import numpy as np
import pytest

from vecpress import Codec
from vecpress.codecs.sampling import leverage_scores, sample_rows


def exact_leverage(x: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(x - x.mean(axis=0))
    return (q * q).sum(axis=1)


def test_sketched_leverage_is_within_a_constant_factor_of_the_exact():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 12)) * np.linspace(3, 0.3, 12)
    x[:20] *= 6  # a few rows with large leverage
    exact = exact_leverage(x)
    approx = leverage_scores(x.astype(np.float32), seed=1)
    ratio = approx / exact
    # a 4d-row CountSketch is a subspace embedding with constant distortion
    assert np.quantile(ratio, 0.99) < 3 and np.quantile(ratio, 0.01) > 1 / 3
    assert approx.sum() == pytest.approx(12, rel=0.3)  # exact leverage sums to the rank
    assert set(np.argsort(-approx)[:20]) == set(range(20))


def test_a_row_spanning_its_own_direction_has_leverage_one():
    rng = np.random.default_rng(1)
    x = np.zeros((2000, 5), np.float32)
    x[:, :4] = rng.standard_normal((2000, 4))
    x[123, 4] = 3.0
    lev = leverage_scores(x, seed=0)
    assert int(np.argmax(lev)) == 123 and 0.5 < lev[123] < 2
    # constant data has no direction at all: sampling falls back to uniform
    _, w = sample_rows(np.ones((50, 3), np.float32), 10, "leverage")
    np.testing.assert_allclose(w, 1.0)


def test_leverage_sample_weights_make_means_unbiased():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3000, 6)) * [5, 1, 1, 1, 1, 1] + 2).astype(np.float32)
    x[:30, 1:] *= 10  # rare large rows, sampled far more often than 1 in 100
    truth = x.mean(axis=0)
    est = []
    for seed in range(200):
        rows, w = sample_rows(x, 300, "leverage", seed=seed)
        assert (rows[:-1] <= rows[1:]).all()
        est.append((w[:, None] * x[rows]).sum(axis=0) / len(rows))
    est = np.array(est)
    se = est.std(axis=0, ddof=1) / np.sqrt(len(est))
    assert (np.abs(est.mean(axis=0) - truth) < 4 * se + 1e-6).all()
    rare_share = np.isin(sample_rows(x, 3000, "leverage", seed=0)[0], np.arange(30)).mean()
    assert rare_share > 0.05  # 1% of rows, over 5% of draws


def test_uniform_rows_are_distinct_and_unweighted():
    x = np.random.default_rng(3).standard_normal((100, 4)).astype(np.float32)
    rows, w = sample_rows(x, 40, "uniform", seed=5)
    assert len(np.unique(rows)) == 40 and (w == 1).all()


@pytest.mark.parametrize("n", [0, 101, 2.5, True, -3])
def test_bad_sample_sizes(n):
    x = np.ones((100, 4), np.float32)
    with pytest.raises(ValueError, match=r"sample must be an integer in \[1, 100\]"):
        sample_rows(x, n)


def test_bad_method_and_data():
    with pytest.raises(ValueError, match="sampling must be one of uniform, leverage"):
        sample_rows(np.ones((10, 2), np.float32), 5, "stratified")
    with pytest.raises(ValueError, match="NaN"):
        leverage_scores(np.array([[1.0, np.nan]], np.float32))


def test_codec_fit_on_a_sample():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((20000, 8)) + 3).astype(np.float32)
    rows, _ = sample_rows(x, 1000, "uniform", seed=0)
    a = Codec.from_spec("center,int8").fit(x, sample=1000)
    b = Codec.from_spec("center,int8").fit(x[rows])
    np.testing.assert_array_equal(a.encode(x[:50]), b.encode(x[:50]))
    lev = Codec.from_spec("center,int8").fit(x, sample=2000, sampling="leverage")
    # the weighted mean is unbiased: within ~5 standard errors (unit variance, 2000 rows)
    assert np.abs(lev.transforms[0].mean_ - x.mean(axis=0)).max() < 5 * 1.5 / np.sqrt(2000)
    with pytest.raises(ValueError, match="sampling must be one of"):
        Codec.from_spec("center,int8").fit(x, sample=10, sampling="random")
