"""Lloyd–Max codebooks for N(0, 1) and for the scaled sphere marginal f_d."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vecpress.codecs.quantizers.lloydmax import lloyd_max

# Optimal fixed-rate MSE per coordinate for N(0, 1): the Lloyd-Max quantizers' table
# (J. Max, "Quantizing for minimum distortion", IRE Trans. Inf. Theory, 1960).
TABLE = {1: 0.3634, 2: 0.1175, 3: 0.03454, 4: 0.009497}
PANTER_DITE = math.sqrt(3) * math.pi / 2  # high-resolution limit of mse * 4^b


@pytest.fixture(scope="module")
def normal_samples() -> np.ndarray:
    return np.random.default_rng(20250101).standard_normal(1_000_000)


def _quantize(x, levels, boundaries):
    return levels[np.searchsorted(boundaries, x)]


def _phi(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _cdf(x):
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2)))


def exact_gaussian_mse(levels: np.ndarray, boundaries: np.ndarray) -> float:
    """E[(X - Q(X))^2] for X ~ N(0, 1), in closed form cell by cell.

    On [a, b]: E[X^2] = P - (b phi(b) - a phi(a)), E[X] = phi(a) - phi(b), so the cell
    contributes E[X^2] - 2 l E[X] + l^2 P.
    """
    a = np.concatenate([[-np.inf], boundaries])
    b = np.concatenate([boundaries, [np.inf]])
    p = _cdf(b) - _cdf(a)
    m = _phi(a) - _phi(b)
    with np.errstate(invalid="ignore"):
        bphi = np.where(np.isinf(b), 0.0, b * _phi(b))
        aphi = np.where(np.isinf(a), 0.0, a * _phi(a))
    e2 = p - (bphi - aphi)
    return float((e2 - 2 * levels * m + levels**2 * p).sum())


@pytest.mark.parametrize("b", [1, 2, 3, 4])
def test_gaussian_mse_matches_the_table(b):
    levels, boundaries, mse = lloyd_max(b)
    assert abs(mse - TABLE[b]) <= 0.02 * TABLE[b]
    assert abs(exact_gaussian_mse(levels, boundaries) - TABLE[b]) <= 0.02 * TABLE[b]
    assert mse > 2.0 ** (-2 * b)  # the Shannon lower bound


@pytest.mark.parametrize("b", [1, 2, 3, 4])
def test_empirical_mse_of_the_codebook(b, normal_samples):
    levels, boundaries, _ = lloyd_max(b)
    err = normal_samples - _quantize(normal_samples, levels, boundaries)
    assert abs(np.mean(err * err) - TABLE[b]) <= 0.02 * TABLE[b]


@pytest.mark.parametrize("b", [1, 2, 3, 4])
def test_levels_are_the_centroids_of_their_cells(b, normal_samples):
    """The Lloyd–Max optimality condition, checked on samples (5 standard errors)."""
    levels, boundaries, _ = lloyd_max(b)
    cell = np.searchsorted(boundaries, normal_samples)
    for k, level in enumerate(levels):
        xs = normal_samples[cell == k]
        assert xs.size > 100
        se = xs.std() / math.sqrt(xs.size)
        assert abs(xs.mean() - level) <= 5 * se, (k, xs.mean(), level)


@pytest.mark.parametrize("d", [None, 3, 50, 384])
@pytest.mark.parametrize("b", range(1, 9))
def test_codebook_structure(b, d):
    levels, boundaries, mse = lloyd_max(b, d)
    assert levels.shape == (2**b,)
    assert boundaries.shape == (2**b - 1,)
    assert np.all(np.diff(levels) > 0)
    # symmetric up to the grid's numerical noise (measured: 7e-7 at b = 8, i.e. 4e-5 of the
    # smallest gap between levels)
    np.testing.assert_allclose(levels, -levels[::-1], rtol=0, atol=1e-3 * np.diff(levels).min())
    np.testing.assert_allclose(boundaries, 0.5 * (levels[1:] + levels[:-1]), atol=1e-12)
    assert np.all((levels[:-1] < boundaries) & (boundaries < levels[1:]))
    assert 0 < mse < 1
    if d is not None:
        assert np.abs(levels).max() < math.sqrt(d)  # support of f_d


@pytest.mark.parametrize("b", [1, 2, 3, 4])
def test_sphere_marginal_codebook_is_close_to_the_gaussian_one(b):
    """f_d (scaled by sqrt(d)) tends to N(0, 1); at d = 384 the MSEs agree within 2%."""
    _, _, mse_g = lloyd_max(b)
    levels, _, mse_d = lloyd_max(b, d=384)
    assert abs(mse_d - mse_g) <= 0.02 * mse_g
    np.testing.assert_allclose(levels, lloyd_max(b)[0], rtol=0.02)


@pytest.mark.parametrize("b", [1, 2, 3])
def test_small_d_codebook_differs(b):
    """At d = 3, f_d is uniform on [-sqrt(3), sqrt(3)]: the optimal quantizer is uniform."""
    levels, _, mse = lloyd_max(b, d=3)
    n = 2**b
    step = 2 * math.sqrt(3) / n
    np.testing.assert_allclose(levels, -math.sqrt(3) + step * (np.arange(n) + 0.5), atol=1e-4)
    assert abs(mse - step**2 / 12) <= 1e-3 * step**2 / 12


@pytest.mark.parametrize("b", range(1, 9))
def test_reported_mse_is_the_mse_of_the_returned_codebook(b):
    levels, boundaries, mse = lloyd_max(b)
    exact = exact_gaussian_mse(levels, boundaries)
    assert abs(mse - exact) <= 0.005 * exact


@pytest.mark.parametrize("b", [5, 6, 7, 8])
def test_high_resolution_limit(b):
    """mse * 4^b approaches sqrt(3) pi / 2 from below (0.94, 0.97, 0.98, 0.99 at b=5..8)."""
    levels, boundaries, _ = lloyd_max(b)
    ratio = exact_gaussian_mse(levels, boundaries) * 4.0**b / PANTER_DITE
    assert 0.92 <= ratio <= 1.0
