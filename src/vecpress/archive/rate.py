"""The Gaussian rate–distortion bound (reverse water-filling) an archive is measured by."""

from __future__ import annotations

import math

import numpy as np


def gaussian_rate(eigenvalues, mse: float) -> float:
    """Bits per dimension a Gaussian source of covariance ``eigenvalues`` needs for a
    mean squared error ``mse`` per coordinate.

    Reverse water-filling: with ``θ`` such that ``Σ_i min(θ, λ_i) = d · mse``, the bound
    is ``Σ_i max(0, ½ log2(λ_i / θ)) / d``. The Gaussian is the hardest source of a
    given covariance, so other data of the same covariance can need fewer bits.

    Parameters
    ----------
    eigenvalues : array_like
        The covariance's eigenvalues (negative ones count as 0).
    mse : float
        The error per coordinate, > 0.

    Returns
    -------
    float

    Examples
    --------
    >>> gaussian_rate([1.0], 0.25)  # one axis: ½ log2(1 / 0.25)
    1.0
    >>> round(gaussian_rate([4.0, 1.0, 0.01], 0.5), 4)  # θ = 0.745: the last axis dropped
    0.4749
    """
    lam = np.sort(np.maximum(np.asarray(eigenvalues, np.float64), 0.0))[::-1]
    d = lam.size
    if d == 0 or not (isinstance(mse, (int, float)) and math.isfinite(mse) and mse > 0):
        raise ValueError(f"gaussian_rate needs eigenvalues and an mse > 0, found {mse!r}")
    total = d * float(mse)
    if total >= lam.sum():
        return 0.0
    # θ: Σ min(θ, λ) = total; with the k largest axes coded, θ = (total - Σ rest) / k
    for k in range(1, d + 1):
        theta = (total - lam[k:].sum()) / k
        if theta <= lam[k - 1] and (k == d or theta >= lam[k]):
            break
    coded = lam[lam > theta]
    return float(0.5 * np.log2(coded / theta).sum() / d)
