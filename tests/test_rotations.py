"""The rotations haar, hd1, hd2, hd3: orthogonality, inverses, and how well they mix."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from _util import ks_distance, sphere_cdf
from vecpress import Codec

ROTATIONS = ["haar", "hd1", "hd2", "hd3"]
DIMS = [1, 2, 3, 7, 50, 64, 384, 1000]

# float32 storage and arithmetic: each entry of M M^T sums d products with relative
# rounding ~6e-8, so errors stay well below 1e-5 up to d = 1000.
TOL = 1e-5


def _rotation(name: str, d: int, seed: int = 0):
    return Codec.from_spec(f"{name},f32", d=d, seed=seed).transforms[0]


@functools.cache
def _shared_rotation(name: str, d: int):
    """One rotation per (name, d) for the deterministic checks (haar at d=1000 is a QR)."""
    return _rotation(name, d, seed=d)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("name", ROTATIONS)
def test_rotation_matrix_is_orthogonal(name, d):
    t = _shared_rotation(name, d)
    m = t.forward(np.eye(d, dtype=np.float32))
    assert m.dtype == np.float32
    assert m.shape == (d, d)
    m64 = m.astype(np.float64)
    assert np.abs(m64 @ m64.T - np.eye(d)).max() <= TOL
    assert np.abs(m64.T @ m64 - np.eye(d)).max() <= TOL
    # the inverse is the transpose
    minv = t.inverse(np.eye(d, dtype=np.float32)).astype(np.float64)
    assert np.abs(minv - m64.T).max() <= TOL


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("name", ROTATIONS)
def test_rotation_is_linear_invertible_and_keeps_inner_products(name, d):
    t = _shared_rotation(name, d)
    rng = np.random.default_rng(d)
    x = (rng.standard_normal((130, d)) * rng.uniform(0.01, 100, (130, 1))).astype(np.float32)
    y = t.forward(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    norms = np.linalg.norm(x64, axis=1)

    # linear: forward(X) = X M with M = forward(I) (row i of M is forward(e_i))
    m = t.forward(np.eye(d, dtype=np.float32)).astype(np.float64)
    assert (np.linalg.norm(y64 - x64 @ m, axis=1) <= TOL * norms).all()

    # inverse(forward(x)) = x
    back = t.inverse(y).astype(np.float64)
    assert (np.linalg.norm(back - x64, axis=1) <= TOL * norms).all()

    # norms and inner products kept
    assert np.allclose(np.linalg.norm(y64, axis=1), norms, rtol=TOL, atol=0)
    gram_x = x64 @ x64.T
    gram_y = y64 @ y64.T
    assert (np.abs(gram_y - gram_x) <= TOL * np.outer(norms, norms)).all()


@pytest.mark.parametrize("name", ROTATIONS)
def test_rotation_depends_on_the_seed_only(name):
    d = 50
    x = np.random.default_rng(0).standard_normal((4, d)).astype(np.float32)
    a = _rotation(name, d, seed=7).forward(x)
    b = _rotation(name, d, seed=7).forward(x)
    c = _rotation(name, d, seed=8).forward(x)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1


@pytest.mark.parametrize("name", ["hd1", "hd2", "hd3"])
@pytest.mark.parametrize("d", [384, 1000])
def test_hadamard_keeps_the_dimension(name, d):
    """No padding to a power of two: d stays d, and the code size follows d."""
    codec = Codec.from_spec(f"{name},rq4", d=d)
    assert codec.transforms[0].forward(np.ones((1, d), np.float32)).shape == (1, d)
    assert codec.code_size == d * 4 // 8 + 4


# -- mixing ----------------------------------------------------------------------------------

N_SEEDS = 8000  # KS noise ~ 0.5 / sqrt(N) = 0.006


def _rotated_coordinates(name: str, d: int, x: np.ndarray, n_seeds: int) -> np.ndarray:
    """forward(x) for codecs with seeds 0..n_seeds-1: float64[n_seeds, len(x), d]."""
    out = np.empty((n_seeds, x.shape[0], d))
    for s in range(n_seeds):
        out[s] = _rotation(name, d, seed=s).forward(x)
    return out


def test_ks_machinery_accepts_the_sphere_law_and_rejects_a_wider_one():
    d = 384
    grid, cdf = sphere_cdf(d)
    g = np.random.default_rng(0).standard_normal((N_SEEDS, d))
    s = np.sqrt(d) * g[:, 0] / np.linalg.norm(g, axis=1)  # exact samples of f_d
    assert ks_distance(s, grid, cdf) < 0.02
    assert ks_distance(1.25 * s, grid, cdf) > 0.05


@pytest.fixture(scope="module")
def hd2_samples():
    d = 384
    x = np.zeros((2, d), np.float32)
    x[0, 0] = 1.0  # one-hot e_0: the hardest input for a Hadamard transform
    x[1, :] = 1.0 / np.sqrt(d)  # constant unit vector
    return d, _rotated_coordinates("hd2", d, x, N_SEEDS)


@pytest.mark.parametrize("coord", [0, 200])
@pytest.mark.parametrize("row", [0, 1], ids=["one-hot", "constant"])
def test_hd2_coordinates_follow_the_sphere_law(hd2_samples, row, coord):
    """Each output coordinate of hd2 is distributed (over seeds) like a Haar coordinate.

    Measured with these seeds at d = 384: one-hot 0.019 (coordinate 0) and 0.038
    (coordinate 200, in the overlap of the two Hadamard blocks; ~0.03 with 20,000
    seeds), constant 0.012 and 0.016. hd1 gives 0.22 and 0.33 on the one-hot input.
    """
    d, samples = hd2_samples
    grid, cdf = sphere_cdf(d)
    s = np.sqrt(d) * samples[:, row, coord]
    assert ks_distance(s, grid, cdf) < 0.05
    # and the variance is 1 (a unit vector spreads its mass evenly)
    assert abs(np.mean(s * s) - 1.0) < 5 * np.sqrt(2.0 / N_SEEDS)


def test_hd1_does_not_mix_a_one_hot_vector():
    """One round at a power-of-two d maps e_0 to ±H[:, 0]: every coordinate is ±1/sqrt(d).

    That two-point law is far from f_d (KS ~0.34), whatever the seed: this is why hd2
    (two rounds) is the default rotation.
    """
    d = 512
    x = np.zeros((1, d), np.float32)
    x[0, 0] = 1.0
    samples = _rotated_coordinates("hd1", d, x, 3000)
    np.testing.assert_allclose(np.abs(samples) * np.sqrt(d), 1.0, rtol=1e-5)
    grid, cdf = sphere_cdf(d)
    assert ks_distance(np.sqrt(d) * samples[:, 0, 0], grid, cdf) >= 0.05
    assert ks_distance(np.sqrt(d) * samples[:, 0, 0], grid, cdf) > 0.25
