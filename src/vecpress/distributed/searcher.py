"""Searching a collection (or several) with Ray actors, each holding a part.

:class:`ShardedSearcher` starts ``num_actors`` actors. Given one collection, actor
``i`` of ``m`` serves its part ``(i, m)``: the segments whose catalog number is
``i`` modulo ``m`` (and the pending vectors, in part 0), memory-mapped by that
actor only (:meth:`vecpress.Collection.search`'s ``shard``). Given several
collections (shards built apart, e.g. one per machine), they are dealt to the
actors in turn and each actor serves its collections whole.

:meth:`ShardedSearcher.search` sends the queries to every actor at once, each
answers its ``k`` best (filtered, re-ranked -- certified re-ranking included --
as the collection searches), and the driver merges them with
:func:`vecpress.search.topk.topk`: by score, equal scores by the documents'
catalog keys within one collection, so a sharded search of one collection
returns exactly what :meth:`vecpress.Collection.search` returns (across several
collections, equal scores go to the earlier collection). An actor that died or
failed is an error naming its part, never a silently smaller answer.
"""

from __future__ import annotations

import os

import numpy as np

try:
    import ray
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("vecpress.distributed needs Ray: pip install 'vecpress[ray]'") from e

from .._validation import as_vectors, check_positive_int
from ..collection import Collection, CollectionResult
from ..search.topk import topk
from ..threads import set_num_threads

__all__ = ["ShardedSearcher"]


class _Part:
    """An actor's collections (whole, or one part of one collection)."""

    def __init__(self, paths: list[str], shard: tuple[int, int] | None, threads: int) -> None:
        set_num_threads(threads)
        self.collections = [Collection.open(p) for p in paths]
        self.shard = shard

    def search(self, q, k, filter, rerank, nprobe) -> list[CollectionResult]:
        return [c.search(q, k, filter=filter, rerank=rerank, nprobe=nprobe, shard=self.shard)
                for c in self.collections]  # fmt: skip

    def pid(self) -> int:
        return os.getpid()


class ShardedSearcher:
    """Search collections with Ray actors (module docstring).

    Parameters
    ----------
    paths : str, os.PathLike or list of them
        One collection's folder (its segments are split among the actors) or several
        (dealt to the actors whole). Every node running an actor must reach them.
    num_actors : int
        Actors to start (one collection: its parts; several: at most one per
        collection).
    num_cpus : float
        CPUs Ray reserves for each actor; its kernels run on as many threads (at
        least one).

    Examples
    --------
    >>> import tempfile, numpy as np, ray, vecpress
    >>> from vecpress.distributed import ShardedSearcher
    >>> _ = ray.init(num_cpus=2, ignore_reinit_error=True)  # or ray.init(address="auto")
    >>> x = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    >>> col = vecpress.build_collection(x, tempfile.mkdtemp() + "/c", spec="hd2,rq4",
    ...                                 rerank_spec="f32", chunk_bytes=500 * 16 * 4)
    >>> with ShardedSearcher(col.path, num_actors=2) as searcher:
    ...     res = searcher.search(x[:3], 5, rerank="auto")
    >>> res.ids == col.search(x[:3], 5, rerank="auto").ids
    True
    """

    def __init__(self, paths, num_actors: int = 2, num_cpus: float = 1) -> None:
        many = isinstance(paths, (list, tuple))
        self.paths = [os.fspath(p) for p in (paths if many else [paths])]
        if not self.paths:
            raise ValueError("ShardedSearcher needs at least one collection folder")
        dims = set()
        for p in self.paths:  # a clear error now for a folder that is no collection
            with Collection.open(p) as c:
                dims.add(c.dim)
        if len(dims) > 1:
            raise ValueError(f"the collections must have one dimension, found {sorted(dims)}")
        self._dim = dims.pop()
        if not (isinstance(num_cpus, (int, float)) and num_cpus > 0):
            raise ValueError(f"num_cpus must be > 0, found {num_cpus!r}")
        num_actors = check_positive_int(num_actors, "num_actors")
        if not ray.is_initialized():
            ray.init()
        actor = ray.remote(num_cpus=num_cpus, max_restarts=0)(_Part)
        if len(self.paths) == 1:
            self.parts = [((i, num_actors), self.paths) for i in range(num_actors)]
        else:
            groups = [self.paths[i::num_actors] for i in range(min(num_actors, len(self.paths)))]
            self.parts = [(None, g) for g in groups]
        threads = max(1, round(num_cpus))
        self.actors = [actor.remote(paths, shard, threads) for shard, paths in self.parts]

    def __enter__(self) -> ShardedSearcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the actors."""
        for a in self.actors:
            ray.kill(a)
        self.actors = []

    def _describe(self, i: int) -> str:
        shard, paths = self.parts[i]
        what = f"part {shard[0]} of {shard[1]} of" if shard else "collections"
        return f"actor {i} ({what} {', '.join(paths)})"

    def search(self, q, k: int, filter=None, rerank=None, nprobe=None) -> CollectionResult:
        """The ``k`` best documents for each query over every part (module docstring);
        the arguments are :meth:`vecpress.Collection.search`'s.

        Raises
        ------
        RuntimeError
            An actor died or its search failed (the message names its part); a
            ``ValueError``/``TypeError`` of the collections' own checks is raised as is.
        """
        if not self.actors:
            raise RuntimeError("this ShardedSearcher is closed")
        q = as_vectors(q, "queries", dim=self._dim, allow_empty=False)
        k = check_positive_int(k, "k")
        refs = [a.search.remote(q, k, filter, rerank, nprobe) for a in self.actors]
        answers = []
        for i, ref in enumerate(refs):
            try:
                answers.append(ray.get(ref))
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(e.cause, (ValueError, TypeError)) else None
                if cause is not None:
                    raise cause from None
                raise RuntimeError(f"{self._describe(i)} failed: {e}") from e
            except ray.exceptions.RayError as e:
                raise RuntimeError(f"{self._describe(i)} is gone: {e}") from e
        results = [r for answer in answers for r in answer]
        return _merge(results, k, one_collection=len(self.paths) == 1)


def _merge(results: list[CollectionResult], k: int, one_collection: bool) -> CollectionResult:
    """The best ``k`` of several results per query: by score, then by catalog key (one
    collection) or by position in ``results`` (several)."""
    nq = results[0].scores.shape[0]
    scores = np.concatenate([r.scores for r in results], axis=1)
    keys = np.concatenate([r.keys for r in results], axis=1)
    position = np.broadcast_to(np.arange(scores.shape[1], dtype=np.int64), scores.shape)
    labels = np.where(keys >= 0, keys if one_collection else position, -1)
    best, best_scores = topk(scores, k, ids=labels)
    out = CollectionResult([], np.full((nq, k), -np.inf, np.float32), [], [],
                           np.full((nq, k), -1, np.int64))  # fmt: skip
    for i in range(nq):
        ids = [x for r in results for x in r.ids[i]]  # aligned with the columns above
        texts = [x for r in results for x in r.texts[i]]
        metas = [x for r in results for x in r.metadata[i]]
        at = {int(lab): c for c, lab in enumerate(labels[i]) if lab >= 0}
        row = [at[int(lab)] for lab in best[i] if lab >= 0]
        pad = [None] * (k - len(row))
        out.ids.append([ids[c] for c in row] + pad)
        out.texts.append([texts[c] for c in row] + pad)
        out.metadata.append([metas[c] for c in row] + pad)
        out.scores[i, : len(row)] = best_scores[i, : len(row)]
        out.keys[i, : len(row)] = keys[i, row]
    return out
