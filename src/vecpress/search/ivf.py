"""IVF partitioning: k-means centroids (faiss), list assignment and probing.

An IVF index splits the vectors into ``nlist`` inverted lists by their nearest
centroid and, at search time, scans only the ``nprobe`` lists whose centroids
score best for the query. The centroids come from faiss's ``Kmeans`` (the
library's own k-means; spherical -- unit centroids -- under the cosine metric).

Assignment is by the nearest centroid in Euclidean distance (what k-means
minimises, and what keeps residuals ``x - c`` small); probing ranks centroids
by the metric: the largest ``<q, c>`` for ``"ip"``/``"cosine"``, the smallest
``|q - c|²`` for ``"l2"``.

faiss's k-means aborts the whole process (SIGABRT) when distances overflow
float32, as a row of norm 1e20 makes them; every vector reaching it has passed
:func:`vecpress._validation.as_vectors`, whose norm limit (:data:`vecpress.MAX_NORM`,
``2**50``) keeps squared distances below ``2**102``, and a ``RuntimeError`` that
faiss still throws becomes a ``ValueError``.
"""

from __future__ import annotations

import numpy as np

from .._validation import as_vectors
from ..threads import faiss_module, single_threaded_blas
from .topk import topk

#: k-means iterations (faiss's default is 25; 20 is what its IVF training uses)
KMEANS_ITER = 20
#: training rows per centroid used at most (faiss's own cap is 256)
MAX_POINTS_PER_CENTROID = 256
_BLOCK = 16384


def train_centroids(x: np.ndarray, nlist: int, metric: str, seed: int) -> np.ndarray:
    """``nlist`` k-means centroids of ``x`` (``float32[nlist, d]``), by faiss.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    >>> train_centroids(x, 4, "l2", seed=0).shape
    (4, 8)
    """
    try:
        faiss = faiss_module()
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("IVF indexes need faiss-cpu for k-means: pip install faiss-cpu") from None
    x = as_vectors(x, "X", allow_empty=False)  # the norm limit, before faiss sees a row
    n, d = x.shape
    if n < nlist:
        raise ValueError(f"ivf={nlist} needs at least {nlist} training vectors, found {n}")
    km = faiss.Kmeans(
        d,
        nlist,
        niter=KMEANS_ITER,
        seed=int(seed % (2**31)),
        spherical=metric == "cosine",
        max_points_per_centroid=MAX_POINTS_PER_CENTROID,
        verbose=False,
    )
    from ..codecs.quantizers.pq import faiss_errors

    with faiss_errors(f"ivf={nlist} k-means (faiss Kmeans)"):
        km.train(np.ascontiguousarray(x, dtype=np.float32))
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def assign(centroids: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The list of each row: its nearest centroid (``int64[n]``; ties to the lower list)."""
    half_sq = 0.5 * np.einsum("ij,ij->i", centroids, centroids)
    out = np.empty(x.shape[0], np.int64)
    for s in range(0, x.shape[0], _BLOCK):
        # argmin |x - c|² = argmax <x, c> - |c|²/2
        out[s : s + _BLOCK] = topk(x[s : s + _BLOCK] @ centroids.T - half_sq, 1)[0][:, 0]
    return out


def list_order(lists: np.ndarray, nlist: int) -> tuple[np.ndarray, np.ndarray]:
    """How an IVF index lays out rows of the given ``lists``: ``(order, offsets)`` where
    ``rows[order]`` groups them by list, rows of one list in their given order (a stable
    sort), and list ``l`` is ``offsets[l]:offsets[l + 1]`` of the result.

    Examples
    --------
    >>> order, offsets = list_order(np.array([2, 0, 2, 1]), 3)
    >>> order.tolist(), offsets.tolist()
    ([1, 3, 0, 2], [0, 1, 2, 4])
    """
    order = np.argsort(lists, kind="stable")
    offsets = np.zeros(nlist + 1, np.int64)
    np.cumsum(np.bincount(lists, minlength=nlist), out=offsets[1:])
    return order, offsets


#: products of fewer multiply-adds run on one thread in OpenBLAS (numpy's BLAS: its
#: ``65536 * GEMM_MULTITHREAD_THRESHOLD``; one to four 384-d queries against 256
#: centroids measured at one CPU second a wall second), so the probe of a few queries
#: skips limiting BLAS's threads, which costs more than the product itself (~10 µs of a
#: one-query IVF search of 256 lists at d = 384, whose product takes ~7)
THREADED_PRODUCT = 1 << 18


def probe(
    centroids: np.ndarray, q: np.ndarray, nprobe: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """The ``nprobe`` best lists of each query and ``<q, c>`` for them (``int64``, ``float32``).

    Examples
    --------
    >>> c = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
    >>> lists, dots = probe(c, np.array([[0.9, 0.1]], np.float32), 2, "ip")
    >>> lists.tolist(), dots.tolist()
    ([[0, 1]], [[0.8999999761581421, 0.10000000149011612]])
    """
    if q.shape[0] * centroids.size < THREADED_PRODUCT:
        dots = (q @ centroids.T).astype(np.float32)  # one BLAS thread whatever its count
    else:
        with single_threaded_blas():  # see vecpress.threads: no spinning BLAS threads
            dots = (q @ centroids.T).astype(np.float32)
    if metric != "l2":  # the key is the dot: the selection gives both
        return topk(dots, nprobe)
    key = dots - 0.5 * np.einsum("ij,ij->i", centroids, centroids)[None, :]
    lists, _ = topk(key, nprobe)
    return lists, np.take_along_axis(dots, np.maximum(lists, 0), axis=1)
