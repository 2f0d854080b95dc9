"""Tests of vecpress.advisor.diagnostics.inspect: every number against what theory predicts.

Notation: n rows, d dimensions, gamma = d / n. For isotropic Gaussian rows the
sample covariance eigenvalues follow Marchenko–Pastur with variance gamma
around 1, which fixes the effective rank (~ d (1 - gamma / 2)) and the coding
gain (~ 10 log10(e) gamma / 2 dB) to first order in gamma.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from vecpress.advisor.datasets import synthetic
from vecpress.advisor.diagnostics import (
    CODING_GAIN_DB,
    EIGEN_FLOOR,
    EP_T_MAX,
    GAUSSIAN_EXCESS,
    RECALL_FLOOR,
    _rotation,
    epps_pulley,
    format_statistic,
    inspect,
)

KEYS = {
    "n",
    "d",
    "norms",
    "anisotropy",
    "spectrum",
    "effective_rank",
    "coding_gain_db",
    "coding_gain_bits",
    "gaussianity",
    "gaussian_reference",
    "rotation",
    "pca_recall",
    "advice",
    "sample",
    "metric",
}


def _gaussian(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _low_rank(n: int, d: int, r: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, r)) @ rng.standard_normal((r, d))).astype(np.float32)


def _null_sd(n: int, columns: int = 512, seed: int = 99) -> float:
    """Standard deviation of the Epps–Pulley statistic of Gaussian samples of n rows."""
    return float(epps_pulley(np.random.default_rng(seed).standard_normal((n, columns))).std())


@pytest.fixture(scope="module")
def gaussian_report() -> dict:
    return inspect(_gaussian(4000, 32, seed=1), metric="ip", dims=[16])


@pytest.fixture(scope="module")
def synthetic_report() -> dict:
    base, _ = synthetic(n=3000, d=64, n_queries=0, decay=1.0, mean_norm=0.5, seed=0)
    return inspect(base, dims=[32])


# -- isotropic data ------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_isotropic_anisotropy_is_one_over_sqrt_n(metric):
    """|mean|^2 ~ chi2_d / n and the mean norm ~ sqrt(d), so sqrt(n) * anisotropy ~
    sqrt(chi2_d / d): within [0.5, 2] with probability 1 - 1e-5 at d = 32."""
    n, d = 4000, 32
    report = inspect(_gaussian(n, d, seed=2), metric=metric, dims=[])
    assert 0.5 < report["anisotropy"] * math.sqrt(n) < 2.0
    assert not any("centre" in a for a in report["advice"])


def test_isotropic_spectrum_is_flat(gaussian_report):
    n, d = 4000, 32
    gamma = d / n
    assert gaussian_report["effective_rank"] == pytest.approx(
        d * (1 - gamma / 2), abs=d * gamma / 4
    )
    gain = 10 * math.log10(math.e) * gamma / 2  # 0.017 dB
    assert gaussian_report["coding_gain_db"] == pytest.approx(gain, rel=0.5)
    assert gaussian_report["coding_gain_bits"] == pytest.approx(
        gaussian_report["coding_gain_db"] / (20 * math.log10(2))
    )
    assert not any("learned codes" in a for a in gaussian_report["advice"])


def test_spectrum_is_the_sample_covariance(gaussian_report):
    x = _gaussian(4000, 32, seed=1)
    expected = np.linalg.eigvalsh(np.cov(x.astype(np.float64), rowvar=False))[::-1]
    np.testing.assert_allclose(gaussian_report["spectrum"], expected, rtol=1e-6)


# -- anisotropic synthetic embeddings ------------------------------------------------


def test_synthetic_is_anisotropic(synthetic_report):
    """A mean of 0.5 times the fluctuation norm leaves unit rows with a mean of
    norm ~ 0.5 / sqrt(1 + 0.5^2) = 0.447."""
    assert synthetic_report["anisotropy"] > 0.1
    assert synthetic_report["anisotropy"] == pytest.approx(0.5 / math.sqrt(1.25), abs=0.03)
    assert re.search(r"centre first: the mean vector is 4\d% of", synthetic_report["advice"][0])


def test_synthetic_coding_gain(synthetic_report):
    """Eigenvalues ~ 1/i (d = 64) give 10 log10(AM / GM) = 2.62 dB before the rows are
    normalised; normalisation moves it by a few tenths of a dB."""
    eig = 1.0 / np.arange(1, 65)
    theory = 10 * math.log10(eig.mean() / math.exp(np.log(eig).mean()))
    gain = synthetic_report["coding_gain_db"]
    assert gain > CODING_GAIN_DB
    assert gain == pytest.approx(theory, abs=0.5)
    assert any(f"could gain ~{gain:.1f} dB" in a for a in synthetic_report["advice"])
    assert 1.0 <= synthetic_report["effective_rank"] < 64


# -- rank-deficient data -------------------------------------------------------------


def test_rank_deficient_set():
    """Rows in an r-dimensional subspace with r equal variances: effective rank r, and
    d - r eigenvalues raised to the floor give a gain of 10 log10(r / d) + 10 log10(1 /
    EIGEN_FLOOR) (d - r) / d dB (the floor is relative to the largest eigenvalue, at most
    (1 + sqrt(r / n))^2 = 1.1, which moves it by < 0.4 dB)."""
    n, d, r = 2000, 32, 5
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.standard_normal((d, r)))[0].T
    x = (rng.standard_normal((n, r)) @ basis).astype(np.float32)
    report = inspect(x, metric="ip", dims=[])
    assert r - 0.05 <= report["effective_rank"] <= r + 1e-3
    gain = report["coding_gain_db"]
    theory = 10 * math.log10(r / d) - 10 * math.log10(EIGEN_FLOOR) * (d - r) / d  # 93.2 dB
    assert math.isfinite(gain)
    assert gain == pytest.approx(theory, abs=0.5)
    assert all(v >= 0 for v in report["spectrum"])
    assert report["spectrum"][r] < 1e-9 * report["spectrum"][r - 1]


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_pca_recall_on_exactly_low_rank_data(metric):
    """With rank r the top r principal directions span the data: search in them is exact."""
    n, d, r = 3000, 32, 6
    report = inspect(_low_rank(n, d, r, seed=4), metric=metric, dims=[2, 3, r, r + 4])
    recalls = [e["recall_at_k"] for e in report["pca_recall"]]
    assert [e["d"] for e in report["pca_recall"]] == [2, 3, r, r + 4]
    assert recalls == sorted(recalls)
    assert recalls[0] < 0.9
    assert recalls[2] >= 0.99 and recalls[3] >= 0.99
    assert any(f"after PCA to d'={r} is" in a for a in report["advice"])


def test_pca_recall_with_given_queries_and_default_dims():
    base, queries = synthetic(n=2000, d=64, n_queries=100, seed=5)
    report = inspect(base, queries=queries, k=5)
    entries = report["pca_recall"]
    assert [e["d"] for e in entries] == [8, 16, 32, 48]
    recalls = [e["recall_at_k"] for e in entries]
    assert recalls == sorted(recalls)
    assert 0.0 < recalls[0] < recalls[-1] < 1.0
    if recalls[-1] < RECALL_FLOOR:
        assert any("no tested d' keeps recall@5" in a for a in report["advice"])


def test_full_dimension_recall_is_one():
    """d' = d is a rotation of the centred data: the ranking cannot change (up to rounding)."""
    x = _gaussian(1500, 16, seed=6)
    for metric in ("ip", "cosine", "l2"):
        (entry,) = inspect(x, metric=metric, dims=[16])["pca_recall"]
        assert entry["recall_at_k"] >= 0.99, metric


@pytest.mark.parametrize(("d", "expected"), [(256, [32, 64, 128, 192]), (3, [2]), (2, [])])
def test_default_dims(d, expected):
    x = _gaussian(200, d, seed=7)
    assert [e["d"] for e in inspect(x, metric="ip")["pca_recall"]] == expected


# -- Epps–Pulley ---------------------------------------------------------------------


def _integral(phi) -> float:
    """Fine-grid value of the Epps–Pulley integral on [-t_max, t_max] for a real CF."""
    t = np.linspace(-EP_T_MAX, EP_T_MAX, 200_001)
    f = (phi(t) - np.exp(-t * t / 2)) ** 2 * np.exp(-t * t / 2)
    return float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(t)))


@pytest.mark.parametrize(
    ("sample", "phi"),
    [
        (np.ones((1000, 1)), lambda t: np.ones_like(t)),  # a constant: z = 0
        (np.tile([[-1.0], [1.0]], (500, 1)), np.cos),  # two values: z = +-1
    ],
    ids=["constant", "two-valued"],
)
def test_epps_pulley_matches_its_integral(sample, phi):
    """17-node trapezoid rule vs a fine grid: the quadrature error is below 2%."""
    assert epps_pulley(sample)[0] == pytest.approx(1000 * _integral(phi), rel=0.02)


def test_epps_pulley_is_affine_invariant():
    y = np.random.default_rng(8).gamma(2.0, size=(3000, 3))
    np.testing.assert_allclose(epps_pulley(5.0 * y - 7.0), epps_pulley(y), rtol=1e-9)


def test_gaussian_data_matches_the_gaussian_reference(gaussian_report):
    """Raw axes, rotated axes and random directions of Gaussian data are Gaussian: each
    mean of (up to) 64 statistics is within 5 standard errors of the reference."""
    n, d = 4000, 32
    sd = _null_sd(n)
    ref = gaussian_report["gaussian_reference"]
    assert 0.2 < ref < 0.5  # the null mean of T is ~0.33 whatever n
    tol = 5 * sd * math.sqrt(1 / d + 1 / 64)
    for key, value in gaussian_report["gaussianity"].items():
        assert value == pytest.approx(ref, abs=tol), key
    assert not gaussian_report["rotation"]["advised"]
    assert "no rotation needed: the coordinates are near-Gaussian on their axes already" in (
        " ".join(gaussian_report["advice"])
    )


def test_sign_coordinates_are_not_gaussian_until_rotated():
    """+-1 coordinates give T = 0.103 n; after hd2 each coordinate is a sum of d
    independent +-c_j terms (excess kurtosis ~ -6/d), so T falls to near the reference."""
    n, d = 2000, 64
    x = np.sign(np.random.default_rng(9).standard_normal((n, d))).astype(np.float32)
    report = inspect(x, metric="ip", dims=[])
    g, ref = report["gaussianity"], report["gaussian_reference"]
    assert g["raw"] == pytest.approx(n * _integral(np.cos), rel=0.02)
    assert g["rotated"] < g["raw"] / 10
    assert (g["rotated"] - ref) / n < GAUSSIAN_EXCESS
    assert g["random_directions"] < g["raw"] / 10
    assert report["rotation"]["advised"]
    assert report["rotation"]["near_gaussian"] == {
        "raw": False,
        "rotated": True,
        "random_directions": True,
    }
    assert "rotate (hd2): it makes the coordinates near-Gaussian" in " ".join(report["advice"])


def test_one_hot_rows_are_not_gaussian():
    n, d = 2000, 32
    x = np.eye(d, dtype=np.float32)[np.random.default_rng(10).integers(0, d, n)]
    report = inspect(x, metric="ip", dims=[])
    g, ref = report["gaussianity"], report["gaussian_reference"]
    assert (g["raw"] - ref) / n > 10 * GAUSSIAN_EXCESS
    assert g["rotated"] < g["raw"]


# -- the rotation rule ---------------------------------------------------------------


def _rotation_line(report: dict) -> str:
    (line,) = [a for a in report["advice"] if "Epps–Pulley" in a]
    return line


def _sparse(n: int, d: int, density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x[rng.random((n, d)) > density] = 0.0
    return x.astype(np.float32)


def _one_hot(n: int, d: int, seed: int) -> np.ndarray:
    return np.eye(d, dtype=np.float32)[np.random.default_rng(seed).integers(0, d, n)]


def _spherical_t(n: int, d: int, seed: int, dof: int = 5) -> np.ndarray:
    """Multivariate Student t: every direction has the same heavy-tailed law, so no
    rotation changes how Gaussian the coordinates are."""
    rng = np.random.default_rng(seed)
    scale = np.sqrt(dof / rng.chisquare(dof, size=(n, 1)))
    return (rng.standard_normal((n, d)) * scale).astype(np.float32)


CASES = {
    # name: (data, the case of the rule, advised)
    "gaussian": (lambda: _gaussian(4000, 64, seed=20), "no rotation needed", False),
    "sparse": (lambda: _sparse(4000, 256, 0.2, seed=21), "rotate (hd2): it makes", True),
    "one-hot": (lambda: _one_hot(4000, 32, seed=22), "rotate (hd2), but", True),
    "spherical-t": (lambda: _spherical_t(4000, 64, seed=23), "a rotation does not help", False),
}


@pytest.fixture(scope="module")
def rule_reports() -> dict:
    return {name: inspect(make(), metric="ip", dims=[]) for name, (make, _, _) in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_rotation_advice_on_constructed_data(rule_reports, name):
    """Sparse and one-hot rows: the axes are far from Gaussian and hd2 helps (to
    near-Gaussian for 20%-dense rows; only part of the way for one-hot rows, whose rotated
    coordinates take few values). Gaussian rows: nothing to gain. A spherical t: every
    direction is equally non-Gaussian, so hd2 changes the statistic by noise only."""
    report = rule_reports[name]
    _, case, advised = CASES[name]
    assert report["rotation"]["advised"] is advised
    assert _rotation_line(report).startswith(case)
    if name == "spherical-t":
        g = report["gaussianity"]
        assert abs(g["raw"] - g["rotated"]) < 0.2 * g["raw"]


@pytest.mark.parametrize("name", list(CASES))
def test_rotation_advice_agrees_with_the_printed_numbers(rule_reports, name):
    """The rule of inspect's Notes, checked on the numbers the report holds and prints."""
    report = rule_reports[name]
    g, ref, rows = report["gaussianity"], report["gaussian_reference"], report["sample"]
    rule = report["rotation"]
    margin = GAUSSIAN_EXCESS * rows
    assert rule["limit"] == pytest.approx(ref + margin)
    assert rule["limit_per_row"] == GAUSSIAN_EXCESS
    for key, t in g.items():
        assert rule["near_gaussian"][key] is (t <= rule["limit"])
        assert rule["excess_per_row"][key] == pytest.approx((t - ref) / rows)
    raw, rotated = g["raw"], g["rotated"]
    line = _rotation_line(report)
    # the sentence carries the statistics it was decided on, as printed
    for value in (raw, rotated, rule["limit"], ref):
        assert format_statistic(value) in line
    if rule["advised"]:  # never a rotation that does not lower the statistic
        assert raw > rule["limit"] and rotated < raw
        assert rotated <= rule["limit"] or raw - rotated > margin
        assert line.startswith("rotate (hd2)")
    else:
        assert not line.startswith("rotate")
    # "near-Gaussian" only where the statistic is within the limit
    if line.startswith("no rotation needed"):
        assert raw <= rule["limit"]
    if "stay non-Gaussian" in line:
        assert rotated > rule["limit"] and raw > rule["limit"]
    if "it makes the coordinates near-Gaussian" in line:
        assert rotated <= rule["limit"] < raw


@pytest.mark.parametrize(
    ("raw", "rotated", "advised"),
    [
        (0.30, 0.35, False),  # Gaussian axes: nothing to gain
        (3.0, 0.3, False),  # axes within the limit (0.3 + 4): no rotation needed
        (4.4, 4.2, True),  # crosses the limit: near-Gaussian after hd2, and lower
        (6.8, 3.8, True),  # a drop below the margin, but to within the limit
        (50.0, 40.0, True),  # both non-Gaussian, lowered by more than the margin (4)
        (33.0, 30.0, False),  # both non-Gaussian, lowered by less than the margin
        (20.0, 25.0, False),  # hd2 makes it worse
    ],
)
def test_rotation_rule_thresholds(raw, rotated, advised):
    """4,000 rows and a reference of 0.3: limit 4.3, margin 4."""
    g = {"raw": raw, "rotated": rotated, "random_directions": rotated}
    rule = _rotation(g, 0.3, 4000)
    assert rule["limit"] == pytest.approx(4.3)
    assert rule["advised"] is advised


# -- output form ---------------------------------------------------------------------


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return type(value) in (int, float, str, bool)


def test_report_is_plain_json(synthetic_report):
    assert set(synthetic_report) == KEYS
    assert _plain(synthetic_report)
    assert json.loads(json.dumps(synthetic_report)) == synthetic_report
    assert set(synthetic_report["norms"]) == {"min", "p01", "p50", "p99", "max", "mean"}
    assert set(synthetic_report["gaussianity"]) == {"raw", "rotated", "random_directions"}
    spectrum = synthetic_report["spectrum"]
    assert len(spectrum) == 64 and spectrum == sorted(spectrum, reverse=True)
    assert synthetic_report["metric"] == "cosine"
    assert (synthetic_report["n"], synthetic_report["d"], synthetic_report["sample"]) == (
        3000,
        64,
        3000,
    )


def test_norms_are_of_the_raw_rows():
    x = _gaussian(1000, 16, seed=11) * np.linspace(0.5, 3.0, 1000, dtype=np.float32)[:, None]
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    report = inspect(x, metric="cosine", dims=[])["norms"]
    assert report["min"] == pytest.approx(norms.min(), rel=1e-6)
    assert report["max"] == pytest.approx(norms.max(), rel=1e-6)
    assert report["p50"] == pytest.approx(np.percentile(norms, 50), rel=1e-6)
    assert report["mean"] == pytest.approx(norms.mean(), rel=1e-6)


def test_sample_seed_and_dtypes():
    x = _gaussian(3000, 16, seed=12)
    before = x.copy()
    a = inspect(x, sample=500, metric="ip", dims=[4])
    assert a["sample"] == 500
    np.testing.assert_array_equal(x, before)  # the input is not modified
    assert inspect(x, sample=500, metric="ip", dims=[4]) == a
    assert inspect(x, sample=500, metric="ip", dims=[4], seed=1)["spectrum"] != a["spectrum"]
    assert inspect(x.astype(np.float64), sample=500, metric="ip", dims=[4]) == a


# -- bad input -----------------------------------------------------------------------


def test_nan_row():
    x = _gaussian(50, 8, seed=13)
    x[7, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN or Inf.*row 7\b"):
        inspect(x)


def test_integer_dtype():
    with pytest.raises(TypeError, match=r"floating point.*found dtype int64"):
        inspect(np.ones((10, 4), np.int64))


def test_one_dimensional():
    with pytest.raises(ValueError, match=r"2-D.*found shape \(8,\)"):
        inspect(np.ones(8, np.float32))


@pytest.mark.parametrize("rows", [0, 1])
def test_too_few_rows(rows):
    with pytest.raises(ValueError, match=rf"at least 2 rows to describe, found {rows}\b"):
        inspect(np.ones((rows, 4), np.float32))


def test_bad_metric():
    with pytest.raises(ValueError, match=r"metric must be one of cosine, ip, l2, found 'dot'"):
        inspect(_gaussian(10, 4, seed=14), metric="dot")


def test_query_dimension_mismatch():
    with pytest.raises(ValueError, match=r"queries must have d=4 columns.*\(3, 5\)"):
        inspect(_gaussian(10, 4, seed=15), queries=_gaussian(3, 5, seed=16))


def test_bad_queries_and_dims():
    x = _gaussian(10, 4, seed=17)
    with pytest.raises(TypeError, match="queries must hold floating point"):
        inspect(x, queries=np.ones((3, 4), np.int32))
    with pytest.raises(ValueError, match=r"each of dims must be in \[1, 4\], found 5"):
        inspect(x, dims=[2, 5])
    with pytest.raises(ValueError, match=r"sample must be in"):
        inspect(x, sample=1)


def test_identical_rows():
    with pytest.raises(ValueError, match="zero variance"):
        inspect(np.ones((20, 4), np.float32), metric="ip")
