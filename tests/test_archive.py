"""The archive codec (``vecpress.archive``): transform coding in the principal basis,
one uniform step found for the error or size asked, ANS-coded symbols."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("constriction")

from vecpress import FormatError
from vecpress.archive import (
    MAX_LEVELS,
    compress,
    decompress,
    describe,
    gaussian_rate,
)


def gaussian(n: int, d: int, seed: int = 0, decay: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a Gaussian with eigenvalues from 1 down to 1/decay in a random basis."""
    rng = np.random.default_rng(seed)
    lam = np.geomspace(1.0, 1.0 / decay, d)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    x = (rng.standard_normal((n, d)) * np.sqrt(lam)) @ basis.T + 0.5
    return x.astype(np.float32), lam


def error(x: np.ndarray, y: np.ndarray) -> float:
    return float(((y.astype(np.float64) - x) ** 2).mean())


@pytest.mark.parametrize("fraction", [0.3, 0.03, 0.001])
def test_the_error_never_exceeds_mse_and_is_what_the_blob_says(fraction):
    x, lam = gaussian(3000, 24)
    mse = fraction * lam.mean()
    blob = compress(x, mse=mse)
    y = decompress(blob)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert error(x, y) <= mse
    info = describe(blob)
    assert info["mse"] == pytest.approx(error(x, y), rel=1e-6)
    assert info["bits_per_dim"] == 8 * len(blob) / x.size
    assert (info["n"], info["d"]) == x.shape
    assert compress(x, mse=mse) == blob  # deterministic


def test_the_rate_is_within_a_scalar_quantizers_gap_of_the_gaussian_bound():
    """Entropy-coded uniform quantization of Gaussian coefficients costs 0.254 bits per
    coded coefficient above R(D) at high rate (½ log2(2πe/12), the 1.53 dB space-filling
    loss of a scalar quantizer), less at low rate: the coded symbols stay within that,
    plus 0.05 for the step found to 0.5 % and the sample's luck; the blob's tables
    (histograms, basis, mean) come on top, counted from the blob. Below R(D) the blob
    cannot go by more than the sample's luck."""
    from vecpress.container import unpack

    x, lam = gaussian(40_000, 16, seed=1)
    eig = np.linalg.eigvalsh(np.cov(x.T.astype(np.float64), bias=True))
    for fraction in (0.5, 0.1, 0.01, 0.001):
        mse = fraction * lam.mean()
        blob = compress(x, mse=mse)
        bits = describe(blob)["bits_per_dim"]
        symbols = 8 * unpack(blob)[1]["words"].nbytes / x.size
        bound = gaussian_rate(eig, mse)
        assert bound - 0.02 <= bits and symbols <= bound + 0.254 + 0.05, (fraction, bits, bound)
        assert bits - symbols < 0.1  # the tables, at 40,000 rows of 16


def test_bits_per_dim_caps_the_size():
    x, _ = gaussian(2000, 16, seed=2)
    sizes = []
    for target in (0.8, 2.0, 4.0):
        blob = compress(x, bits_per_dim=target)
        assert 8 * len(blob) <= target * x.size
        sizes.append((describe(blob)["mse"], len(blob)))
    assert sizes[0][0] > sizes[1][0] > sizes[2][0]  # more bits, less error
    with pytest.raises(ValueError, match=r"too small for 2000 x 16 vectors"):
        compress(x, bits_per_dim=0.001)


def test_gaussian_rate_is_reverse_water_filling():
    assert gaussian_rate([2.0], 0.5) == pytest.approx(1.0)
    assert gaussian_rate([3.0] * 4, 3.0 / 16) == pytest.approx(2.0)
    assert gaussian_rate([1.0, 0.1], 0.6) == 0.0  # mse >= mean variance: nothing to code
    # θ between the eigenvalues: the small axis is dropped (costs its variance)
    lam, mse = np.array([4.0, 1.0, 0.01]), 0.5
    theta = (3 * mse - 0.01) / 2
    want = 0.5 * (np.log2(4.0 / theta) + np.log2(1.0 / theta)) / 3
    assert gaussian_rate(lam, mse) == pytest.approx(want)
    with pytest.raises(ValueError, match="mse > 0"):
        gaussian_rate(lam, 0.0)


def test_constant_and_extreme_scale_rows():
    x = np.tile(np.float32([[1.5, -2.0, 3.0]]), (100, 1))
    blob = compress(x, mse=1e-6)
    assert describe(blob)["axes"] == 0
    np.testing.assert_array_equal(decompress(blob), x)
    base, lam = gaussian(500, 8, seed=3)
    for scale in (1e-30, 1e-18, 1e12):  # float32 denormal squares: errors summed in float64
        x = base * np.float32(scale)
        mse = 0.01 * lam.mean() * scale * scale
        y = decompress(compress(x, mse=mse))
        assert np.isfinite(y).all() and error(x, y) <= mse


def test_bad_input_is_refused():
    x, _ = gaussian(100, 8)
    bad = x.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        compress(bad, mse=0.01)
    with pytest.raises(ValueError):
        compress(np.zeros((0, 8), np.float32), mse=0.01)
    with pytest.raises(ValueError):
        compress(x[0], mse=0.01)
    with pytest.raises(ValueError, match="exactly one of"):
        compress(x)
    with pytest.raises(ValueError, match="exactly one of"):
        compress(x, mse=0.1, bits_per_dim=2)
    for value in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive finite"):
            compress(x, mse=value)
    with pytest.raises(TypeError, match="mse must be a number"):
        compress(x, mse="0.1")
    with pytest.raises(ValueError, match="at most 32"):
        compress(x, bits_per_dim=40)
    with pytest.raises(ValueError, match=f"{MAX_LEVELS} levels"):
        compress(x * np.float32(1e6), mse=1e-30)


def test_damaged_blobs_are_format_errors():
    x, _ = gaussian(500, 8)
    blob = compress(x, mse=0.01)
    for cut in (0, 10, len(blob) // 2, len(blob) - 1):
        with pytest.raises(FormatError):
            decompress(blob[:cut])
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x40
    with pytest.raises(FormatError):
        decompress(bytes(flipped))
    from vecpress import Codec

    other = Codec.from_spec("hd2,rq4", d=8).fit(x).to_bytes()
    with pytest.raises(FormatError):
        decompress(other)
    with pytest.raises(TypeError, match="bytes of an archive"):
        describe("not bytes")


def test_two_threads_compress_at_once():
    """The compiled kernels are called from two threads at once: same blobs as alone."""
    import threading

    x, _ = gaussian(1500, 16, seed=6)
    want = [compress(x + i, mse=0.01) for i in range(2)]
    got: dict[int, list] = {0: [], 1: []}

    def work(i: int) -> None:
        for _ in range(4):
            got[i].append(compress(x + i, mse=0.01))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(b == want[i] for i in range(2) for b in got[i])
