"""Choosing the rows a codec learns from: uniform or leverage-score sampling.

Learned stages (the mean, calibration ranges, codebooks, projections) are fitted
on a sample of the data. A uniform sample can miss *rare directions*: a few rows
that span a direction most rows do not, which principal-component fits need to
see. Leverage-score sampling (Drineas, Magdon-Ismail, Mahoney and Woodruff, "Fast
approximation of matrix coherence and statistical leverage", JMLR 2012) draws row ``i``
with probability proportional to its leverage ``ℓ_i = |x_i R⁻¹|²`` — how much of
the column space only that row spans — and weights it by ``1 / (n p_i)`` so
weighted sums over the sample estimate sums over all rows without bias.

Leverage is computed from a sketch, in O(n·d + d³) rather than O(n·d²) per
exact QR: ``S X`` with a CountSketch ``S`` of ``SKETCH_FACTOR · d`` rows (each
row of ``X`` added, with a random sign, to one random row of the sketch), then
``R`` from the QR of ``S X``; ``|x_i R⁻¹|²`` is within a constant factor of the
exact leverage with high probability (Clarkson & Woodruff 2013). A share
``UNIFORM_MIX`` of the probability is spread uniformly, so no row's weight can
blow up.
"""

from __future__ import annotations

import numpy as np

from .._validation import as_vectors

METHODS = ("uniform", "leverage")
#: sketch rows per dimension
SKETCH_FACTOR = 4
#: share of the sampling probability spread uniformly over the rows
UNIFORM_MIX = 0.1
_BLOCK = 65536


def leverage_scores(x: np.ndarray, *, seed: int = 0, center: bool = True) -> np.ndarray:
    """Approximate leverage scores of the rows of ``x`` (``float64[n]``, summing to ~rank).

    With ``center`` the mean is removed first (the leverage of the covariance's
    column space, which is what principal components see).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.zeros((1000, 3), np.float32)
    >>> x[:, :2] = rng.standard_normal((1000, 2))
    >>> x[7, 2] = 5.0                       # the only row spanning the third axis
    >>> lev = leverage_scores(x, center=False)
    >>> int(np.argmax(lev)), bool(0.5 < lev[7] < 2)  # exact leverage: 1
    (7, True)
    """
    x = as_vectors(x, "X", allow_empty=False)
    n, d = x.shape
    rng = np.random.default_rng(seed)
    mean = x.mean(axis=0, dtype=np.float64) if center else np.zeros(d)
    s = min(n, SKETCH_FACTOR * d)
    sketch = np.zeros((s, d))
    for a in range(0, n, _BLOCK):
        blk = x[a : a + _BLOCK].astype(np.float64) - mean
        rows = rng.integers(0, s, blk.shape[0])
        signs = rng.choice((-1.0, 1.0), blk.shape[0])
        np.add.at(sketch, rows, blk * signs[:, None])
    r = np.linalg.qr(sketch, mode="r")
    # drop directions the data does not span (R's tiny diagonal): pseudo-inverse
    _, sv, vt = np.linalg.svd(r)
    keep = sv > sv.max() * 1e-10 if sv.size and sv.max() > 0 else np.zeros(0, bool)
    r_pinv = vt[keep].T / sv[keep]  # d x rank
    out = np.empty(n)
    for a in range(0, n, _BLOCK):
        y = (x[a : a + _BLOCK].astype(np.float64) - mean) @ r_pinv
        out[a : a + _BLOCK] = np.einsum("ij,ij->i", y, y)
    return out


def sample_rows(
    x: np.ndarray, n: int, method: str = "uniform", *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows int64[n], weights float64[n])``: which rows to fit on, and their weights.

    ``"uniform"``: ``n`` distinct rows, weights 1. ``"leverage"``: ``n`` draws
    (with replacement) with probability ``p_i = (1 - UNIFORM_MIX) ℓ_i / Σℓ +
    UNIFORM_MIX / N`` over the ``N`` rows, weights ``1 / (N p_i)``: their mean is
    about 1, and ``Σ w_i f(x_i) / n`` estimates the mean of ``f`` over all rows
    without bias.

    Examples
    --------
    >>> x = np.random.default_rng(1).standard_normal((500, 4)).astype(np.float32)
    >>> rows, w = sample_rows(x, 100, "leverage", seed=0)
    >>> rows.shape, bool(abs(w.mean() - 1) < 0.2)
    ((100,), True)
    """
    if method not in METHODS:
        raise ValueError(f"sampling must be one of {', '.join(METHODS)}, found {method!r}")
    total = x.shape[0]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < n <= total:
        raise ValueError(f"sample must be an integer in [1, {total}] (the rows), found {n!r}")
    rng = np.random.default_rng(seed)
    if method == "uniform":
        return np.sort(rng.choice(total, n, replace=False)), np.ones(n)
    lev = leverage_scores(x, seed=seed)
    if not lev.sum() > 0:  # all rows equal: nothing to prefer
        lev = np.ones(total)
    p = (1 - UNIFORM_MIX) * lev / lev.sum() + UNIFORM_MIX / total
    p /= p.sum()
    rows = rng.choice(total, n, replace=True, p=p)
    order = np.argsort(rows, kind="stable")
    rows = rows[order]
    return rows, 1.0 / (total * p[rows])
