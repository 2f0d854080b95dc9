"""Exact nearest neighbours by blocked brute force, cached on disk by content hash.

Ground truth is the float32 exact top-``k`` under the metric's score (larger is
better, as everywhere in vecpress): the cosine similarity of normalised rows,
the inner product, or ``-|q - x|²``. Computing it for 1,000 queries over
100,000 × 384 vectors takes a few seconds; :func:`ground_truth` stores the
result in a ``.npz`` file (plain numeric arrays, read with
``allow_pickle=False``) whose name carries a hash of the base, the queries, the
metric and ``k``, so changed data can never be served stale truth.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from ..atomic import write_bytes
from ..search.topk import topk

#: bytes of the base hashed per block (the hash covers every byte)
_HASH_BLOCK = 1 << 24


def content_hash(*arrays: np.ndarray, extra: str = "") -> str:
    """A 16-hex-digit BLAKE2b hash of the arrays' shapes, dtypes and bytes, and ``extra``.

    Examples
    --------
    >>> a = np.zeros((2, 3), np.float32)
    >>> content_hash(a) == content_hash(a.copy()) != content_hash(a, extra="l2")
    True
    """
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype.str};".encode())
        flat = a.reshape(-1).view(np.uint8)
        for s in range(0, flat.size, _HASH_BLOCK):
            h.update(flat[s : s + _HASH_BLOCK])
    h.update(extra.encode())
    return h.hexdigest()


def prepare(x: np.ndarray, metric: str) -> np.ndarray:
    """Rows as the metric sees them: unit length for ``"cosine"``, unchanged otherwise."""
    x = np.asarray(x, np.float32)
    if metric != "cosine":
        return x
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1).astype(np.float32)


def exact_scores(queries: np.ndarray, base: np.ndarray, metric: str) -> np.ndarray:
    """``float32[nq, n]`` exact scores of prepared rows (``-|q - x|²`` for ``"l2"``)."""
    s = queries @ base.T
    if metric == "l2":
        s *= 2
        s -= np.einsum("ij,ij->i", base, base)[None, :]
        s -= np.einsum("ij,ij->i", queries, queries)[:, None]
    return s


def brute_force(
    queries: np.ndarray, base: np.ndarray, k: int, metric: str, *, block: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` ids and scores of every query, ``block`` queries at a time.

    Examples
    --------
    >>> base = np.eye(4, dtype=np.float32)
    >>> ids, scores = brute_force(base[:2] * 2, base, 2, "l2")
    >>> ids[:, 0].tolist(), scores[:, 0].tolist()
    ([0, 1], [-1.0, -1.0])
    """
    queries = prepare(queries, metric)
    base = prepare(base, metric)
    k = min(k, base.shape[0])
    ids = np.empty((queries.shape[0], k), np.int64)
    scores = np.empty((queries.shape[0], k), np.float32)
    for s in range(0, queries.shape[0], block):
        ids[s : s + block], scores[s : s + block] = topk(
            exact_scores(queries[s : s + block], base, metric), k
        )
    return ids, scores


def ground_truth(
    queries: np.ndarray,
    base: np.ndarray,
    k: int,
    metric: str,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`brute_force`, read from or written to ``cache_dir`` when one is given.

    The cache file is ``gt-<hash>.npz`` with the hash of base, queries, metric and
    ``k``; a file that cannot be read (or a directory that cannot be written) is
    ignored and the truth recomputed, never trusted half-way.

    Examples
    --------
    >>> import tempfile
    >>> rng = np.random.default_rng(0)
    >>> base, queries = rng.standard_normal((100, 8)), rng.standard_normal((3, 8))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     first = ground_truth(queries, base, 5, "ip", cache_dir=tmp)
    ...     again = ground_truth(queries, base, 5, "ip", cache_dir=tmp)  # from the file
    >>> bool((first[0] == again[0]).all())
    True
    """
    if cache_dir is None:
        return brute_force(queries, base, k, metric)
    key = content_hash(
        np.asarray(base, np.float32), np.asarray(queries, np.float32), extra=f"{metric};{k}"
    )
    path = Path(cache_dir) / f"gt-{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            ids, scores = f["ids"], f["scores"]
        if ids.shape == scores.shape == (len(queries), min(k, len(base))):
            return ids, scores
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass  # missing or damaged: recompute
    ids, scores = brute_force(queries, base, k, metric)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, ids=ids, scores=scores)
        write_bytes(path, buf.getvalue())
    except OSError:
        pass  # a read-only place: the truth is still returned, just not cached
    return ids, scores
