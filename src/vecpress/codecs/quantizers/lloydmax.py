"""Lloyd–Max scalar codebooks for the Gaussian law and the sphere marginal ``f_d``.

After a uniformly random rotation each coordinate of a unit vector in R^d has
the density ``f_d(t) ∝ (1 - t^2)^((d-3)/2)`` on [-1, 1]. Codebooks are computed
for the scaled variable ``s = sqrt(d) t`` (unit variance), which tends to N(0, 1)
as d grows; ``d=None`` gives the Gaussian codebook itself.

The iteration is the textbook one (boundaries = midpoints of levels, levels =
conditional means of their cells), evaluated with cumulative integrals on a
fine grid, started from the high-resolution optimum and run until the levels
move by less than 1e-10 (or 3,000 steps: at 7-8 bits the last steps change the
distortion by less than 0.1%). The distortion is computed exactly for the
returned levels and boundaries. Results are cached.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_GRID = 1 << 20


def _density(d: int | None) -> tuple[np.ndarray, np.ndarray]:
    if d is None:
        s = np.linspace(-12.0, 12.0, _GRID + 1)
        pdf = np.exp(-0.5 * s * s)
    else:
        d = max(int(d), 3)
        lim = np.sqrt(d)
        s = np.linspace(-lim, lim, _GRID + 1)
        pdf = np.clip(1.0 - s * s / d, 0.0, None) ** ((d - 3) / 2.0)
    return s, pdf


@lru_cache(maxsize=64)
def lloyd_max(bits: int, d: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Optimal ``bits``-bit scalar quantizer of the unit-variance law.

    Parameters
    ----------
    bits : int
        1 to 8.
    d : int, optional
        Dimension of the sphere marginal ``f_d`` (scaled by ``sqrt(d)``);
        ``None`` for the standard normal law.

    Returns
    -------
    levels : float64[2**bits]
        Reconstruction levels, increasing.
    boundaries : float64[2**bits - 1]
        Decision thresholds (midpoints of adjacent levels).
    mse : float
        Mean squared error per coordinate (unit-variance source).

    Examples
    --------
    >>> levels, _, mse = lloyd_max(1)
    >>> round(float(levels[1]), 4), round(mse, 4)
    (0.7979, 0.3634)
    """
    s, pdf = _density(d)
    ds = s[1] - s[0]
    w = pdf * ds
    w[0] *= 0.5
    w[-1] *= 0.5
    w /= w.sum()

    def cumulative(v):
        return np.concatenate([[0.0], np.cumsum(0.5 * (v[1:] + v[:-1]))])

    cdf = cumulative(w)
    m1 = cumulative(w * s)
    m2 = cumulative(w * s * s)
    cdf /= cdf[-1]
    n_levels = 1 << bits
    # Start from the high-resolution optimum (point density ∝ f^(1/3), Panter–Dite),
    # which is within a fraction of a percent of the answer, so Lloyd's iteration
    # converges in a few hundred steps even at 8 bits.
    comp = cumulative(np.cbrt(w))
    comp /= comp[-1]
    levels = np.interp((np.arange(n_levels) + 0.5) / n_levels, comp, s)
    lo, hi = s[0], s[-1]
    for _ in range(3000):
        bnd = np.concatenate([[lo], 0.5 * (levels[1:] + levels[:-1]), [hi]])
        mass = np.diff(np.interp(bnd, s, cdf))
        first = np.diff(np.interp(bnd, s, m1))
        new = np.where(mass > 0, first / np.maximum(mass, 1e-300), levels)
        delta = np.abs(new - levels).max()
        levels = new
        if delta < 1e-10:
            break
    bnd = 0.5 * (levels[1:] + levels[:-1])
    edges = np.concatenate([[lo], bnd, [hi]])
    mass = np.diff(np.interp(edges, s, cdf))
    first = np.diff(np.interp(edges, s, m1))
    second = np.diff(np.interp(edges, s, m2))
    # Exact distortion of these levels and boundaries: sum over cells of
    # E[(X - level)^2; cell] = M2 - 2 level M1 + level^2 M0.
    mse = float((second - 2 * levels * first + levels * levels * mass).sum())
    return levels, bnd, mse
