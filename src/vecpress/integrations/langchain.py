"""A LangChain ``VectorStore`` over a :class:`vecpress.Collection`.

``pip install 'vecpress[langchain]'`` (``langchain-core`` ≥ 1.8). The store is a
thin adapter: documents (ids, ``page_content``, ``metadata``) are the
collection's documents, ``filter=`` is the collection's filter language
(:mod:`vecpress.collection.filters`: equality, ``$eq $ne $gt $gte $lt $lte $in
$nin``, ``$and``, ``$or``), and the async methods are LangChain's defaults (the
sync ones run in an executor; the collection serialises its own threads).

**Ordering.** The collection keeps a batch smaller than ``flush_rows``
(20,000 by default) as float vectors until enough arrive to make a segment,
and scores those exactly; segments hold compressed codes and, with
``rerank_spec="f32"`` (the default here), the float vectors as a second tier,
so their candidates are re-scored exactly with certified re-ranking
(``rerank="auto"``: every candidate whose error bound reaches the top ``k`` is
re-scored). So results come back in the exact order of the metric's scores,
which LangChain's standard tests check; ``rerank_spec=None`` stores codes only
(smaller, approximate order).

**Scores.** :meth:`VecpressVectorStore.similarity_search_with_score` returns the
collection's scores, larger is better: cosine similarity (``metric="cosine"``),
inner product (``"ip"``) or the negated squared distance (``"l2"``).
``similarity_search_with_relevance_scores`` maps them to [0, 1]:
``(1 + s) / 2`` for cosine, ``1 / (1 + exp(-s))`` for inner products,
``1 / (1 + sqrt(-s))`` for l2.

**Persistence.** ``path=None`` keeps the collection in a temporary folder,
removed when the store is closed or collected; with a folder, a later
``VecpressVectorStore(embedding, path=folder)`` opens what is there (its stored
settings win over the constructor's ``spec``, ``metric``...).

Examples
--------
>>> from langchain_core.embeddings import DeterministicFakeEmbedding
>>> store = VecpressVectorStore(DeterministicFakeEmbedding(size=8))
>>> store.add_texts(["apples", "pears", "cars"], [{"kind": "fruit"}, {"kind": "fruit"},
...                 {"kind": "vehicle"}], ids=["a", "p", "c"])
['a', 'p', 'c']
>>> [d.id for d in store.similarity_search("pears", k=2)][0]
'p'
>>> [d.id for d in store.similarity_search("pears", k=3, filter={"kind": "vehicle"})]
['c']
>>> store.close()
"""

from __future__ import annotations

import math
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..collection import Collection
from ..collection.collection import CATALOG, FLUSH_ROWS

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "vecpress.integrations.langchain needs langchain-core: pip install 'vecpress[langchain]'"
    ) from e

__all__ = ["VecpressVectorStore"]


class VecpressVectorStore(VectorStore):
    """LangChain ``VectorStore`` over a :class:`vecpress.Collection` (module docstring).

    Parameters
    ----------
    embedding : langchain_core.embeddings.Embeddings
        Embeds documents (``embed_documents``) and queries (``embed_query``).
    path : str or pathlib.Path, optional
        The collection's folder (opened if it holds one, else created on the first
        add); ``None``: a temporary folder.
    spec, rerank_spec, metric, seed, ivf, flush_rows
        The collection's settings (:meth:`vecpress.Collection.create`), used when
        it is created (the dimension is the embedding's, on the first add).
    rerank : "auto", int or None
        Re-ranking depth of every search (``"auto"``: certified; ``None`` without a
        second tier).
    """

    def __init__(
        self, embedding: Embeddings, path: str | Path | None = None, spec: str = "hd2,rq4",
        rerank_spec: str | None = "f32", metric: str = "cosine", *, seed: int = 0,
        ivf: int | None = None, flush_rows: int = FLUSH_ROWS, rerank: int | str | None = "auto",
    ) -> None:  # fmt: skip
        self._tmp = None
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="vecpress-langchain-")
            path = self._tmp.name
        self._path = Path(path)
        self._embedding = embedding
        self._settings = {
            "spec": spec, "rerank_spec": rerank_spec, "metric": metric, "seed": seed,
            "ivf": ivf, "flush_rows": flush_rows,
        }  # fmt: skip
        self._lock = threading.Lock()
        self._collection = Collection.open(self._path) if (self._path / CATALOG).exists() else None
        if self._collection is not None:
            rerank_spec = self._collection.settings.get("rerank_spec")
        self._rerank = None if rerank_spec is None and rerank == "auto" else rerank

    # -- the collection ----------------------------------------------------------------
    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @property
    def collection(self) -> Collection | None:
        """The collection (``None`` until the first add of a new store)."""
        return self._collection

    def _created(self, dim: int) -> Collection:
        with self._lock:
            if self._collection is None:
                self._collection = Collection.create(self._path, dim=dim, **self._settings)
            return self._collection

    def close(self) -> None:
        """Close the collection (and remove its temporary folder, for ``path=None``)."""
        if self._collection is not None:
            self._collection.close()
            self._collection = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- writing -----------------------------------------------------------------------
    def add_texts(
        self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
        ids: list[str | None] | None = None, **kwargs: Any,
    ) -> list[str]:  # fmt: skip
        """Embed and store ``texts``; an id already stored is replaced (text, metadata
        and vector, in one transaction). Ids that are ``None`` (or all, when ``ids``
        is omitted) are made up. Returns the ids."""
        texts = list(texts)
        n = len(texts)
        metadatas = [{}] * n if metadatas is None else list(metadatas)
        ids = [None] * n if ids is None else list(ids)
        for name, got in (("metadatas", metadatas), ("ids", ids)):
            if len(got) != n:
                raise ValueError(f"{name} must have one entry per text ({n}), found {len(got)}")
        if not n:
            return []
        ids = [uuid.uuid4().hex if x is None else x for x in ids]
        vectors = np.asarray(self._embedding.embed_documents(texts), np.float32)
        collection = self._created(vectors.shape[1] if vectors.ndim == 2 else 0)
        metadata = [{} if m is None else dict(m) for m in metadatas]
        return collection.upsert(vectors, ids, texts=texts, metadata=metadata)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete the documents of ``ids`` (ids not stored are skipped); ``ids=None``:
        every document."""
        if self._collection is not None:
            ids = self._collection.ids() if ids is None else ids
            if ids:
                self._collection.delete(ids)
        return True

    # -- reading -----------------------------------------------------------------------
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents of ``ids``, in that order (absent ids skipped)."""
        if self._collection is None or not ids:
            return []
        return [
            Document(id=d["id"], page_content=d["text"] or "", metadata=d["metadata"] or {})
            for d in self._collection.get(list(ids))
            if d is not None
        ]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` best documents for a query vector (those ``filter`` matches), with
        their scores (larger is better; module docstring)."""
        if self._collection is None or len(self._collection) == 0:
            return []
        q = np.asarray(embedding, np.float32)[None, :]
        res = self._collection.search(q, k, filter=filter, rerank=self._rerank)
        rows = zip(res.ids[0], res.texts[0], res.metadata[0], res.scores[0], strict=True)
        return [
            (Document(id=i, page_content=t or "", metadata=m or {}), float(s))
            for i, t, m, s in rows
            if i is not None
        ]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict | None = None, **kwargs: Any
    ) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, filter)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        return self.similarity_search_with_score_by_vector(
            self._embedding.embed_query(query), k, filter
        )

    def similarity_search(
        self, query: str, k: int = 4, filter: dict | None = None, **kwargs: Any
    ) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter)]

    def max_marginal_relevance_search_by_vector(
        self, embedding: list[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        filter: dict | None = None, **kwargs: Any,
    ) -> list[Document]:  # fmt: skip
        """Maximal marginal relevance among the ``fetch_k`` best documents, computed on
        their stored vectors (:meth:`vecpress.Collection.vectors_of`)."""
        found = self.similarity_search_with_score_by_vector(embedding, max(k, fetch_k), filter)
        if not found:
            return []
        vectors = self._collection.vectors_of([d.id for d, _ in found])
        chosen = maximal_marginal_relevance(
            np.asarray(embedding, np.float32), vectors, lambda_mult=lambda_mult,
            k=min(k, len(found)),
        )  # fmt: skip
        return [found[i][0] for i in chosen]

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        filter: dict | None = None, **kwargs: Any,
    ) -> list[Document]:  # fmt: skip
        return self.max_marginal_relevance_search_by_vector(
            self._embedding.embed_query(query), k, fetch_k, lambda_mult, filter
        )

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        metric = self._settings["metric"] if self._collection is None else self._collection.metric
        if metric == "cosine":
            return lambda s: min(1.0, max(0.0, (1.0 + s) / 2.0))
        if metric == "ip":
            return lambda s: 1.0 / (1.0 + math.exp(-s)) if s > -700 else 0.0
        return lambda s: 1.0 / (1.0 + math.sqrt(max(-s, 0.0)))

    @classmethod
    def from_texts(
        cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
        ids: list[str] | None = None, **kwargs: Any,
    ) -> VecpressVectorStore:  # fmt: skip
        """A new store (``kwargs``: the constructor's) holding ``texts``."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store
