"""A LlamaIndex vector store over a :class:`vecpress.Collection`.

``pip install 'vecpress[llama-index]'`` (``llama-index-core``). Nodes are the
collection's documents: the node id is the document id, the node's text its text,
and its metadata the node's metadata plus LlamaIndex's own keys
(``_node_content``: the node as JSON, without text or embedding; ``_node_type``;
``ref_doc_id``, ``doc_id``, ``document_id``: the source document), so that a
query rebuilds the nodes it returns. The store keeps the texts
(``stores_text = True``).

**Filters.** ``MetadataFilters`` become the collection's filter language
(:mod:`vecpress.collection.filters`): ``==``, ``!=``, ``>``, ``>=``, ``<``,
``<=``, ``in``, ``nin`` on a field, combined by ``and``/``or`` and nested; the
other operators (``any``, ``all``, ``contains``, ``text_match``, ``is_empty``)
and the ``not`` condition are a ``ValueError`` naming them. ``doc_ids``
restricts to nodes of those source documents, ``node_ids`` to those nodes (an
empty list, which LlamaIndex's retrievers pass, restricts nothing).

**Persistence.** Every ``add`` and ``delete`` is a committed transaction in the
collection's folder; ``persist`` has nothing left to write, and
``VecpressVectorStore(path=folder)`` (or :meth:`VecpressVectorStore.from_persist_path`)
loads it again.

**Ordering and scores** are those of :mod:`vecpress.integrations.langchain`:
exact for float vectors not yet in a segment, and with certified re-ranking
from the ``f32`` tier (the default) for segments; ``similarities`` are the
metric's scores, larger is better.

Examples
--------
>>> import tempfile
>>> from llama_index.core.schema import TextNode
>>> from llama_index.core.vector_stores.types import VectorStoreQuery
>>> store = VecpressVectorStore(path=tempfile.mkdtemp())
>>> nodes = [TextNode(id_="n1", text="north", embedding=[1.0, 0.0], metadata={"k": 1}),
...          TextNode(id_="n2", text="east", embedding=[0.0, 1.0], metadata={"k": 2})]
>>> store.add(nodes)
['n1', 'n2']
>>> res = store.query(VectorStoreQuery(query_embedding=[0.9, 0.1], similarity_top_k=1))
>>> res.ids, res.nodes[0].get_content(), res.nodes[0].metadata
(['n1'], 'north', {'k': 1})
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..collection import Collection
from ..collection.collection import CATALOG, FLUSH_ROWS

try:
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.schema import BaseNode, MetadataMode
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "vecpress.integrations.llama_index needs llama-index-core: "
        "pip install 'vecpress[llama-index]'"
    ) from e

__all__ = ["VecpressVectorStore", "to_filter"]

_OPERATORS = {
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}


def to_filter(filters: MetadataFilters | None) -> dict | None:
    """``MetadataFilters`` as the collection's filter (module docstring).

    Examples
    --------
    >>> from llama_index.core.vector_stores.types import MetadataFilter
    >>> to_filter(MetadataFilters(filters=[
    ...     MetadataFilter(key="year", value=2023, operator=">="),
    ...     MetadataFilter(key="lang", value="en")], condition="or"))
    {'$or': [{'year': {'$gte': 2023}}, {'lang': 'en'}]}
    """
    if filters is None or not filters.filters:
        return None
    parts = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            sub = to_filter(f)
            if sub is not None:
                parts.append(sub)
        elif f.operator == FilterOperator.EQ:
            parts.append({f.key: {"$eq": f.value}})
        elif f.operator in _OPERATORS:
            parts.append({f.key: {_OPERATORS[f.operator]: f.value}})
        else:
            raise ValueError(
                f"vecpress filters have ==, !=, >, >=, <, <=, in and nin; found operator "
                f"{f.operator.value!r} on {f.key!r}"
            )
    condition = filters.condition or FilterCondition.AND
    if condition not in (FilterCondition.AND, FilterCondition.OR):
        raise ValueError(f"vecpress filters combine with and/or; found {condition.value!r}")
    if len(parts) == 1:
        return _plain_eq(parts[0])
    return {f"${condition.value}": [_plain_eq(p) for p in parts]}


def _plain_eq(part: dict) -> dict:
    """``{key: {"$eq": v}}`` written as ``{key: v}`` (the same filter)."""
    if len(part) == 1:
        ((key, cond),) = part.items()
        if isinstance(cond, dict) and list(cond) == ["$eq"]:
            return {key: cond["$eq"]}
    return part


def _and(*filters: dict | None) -> dict | None:
    parts = [f for f in filters if f is not None]
    return None if not parts else parts[0] if len(parts) == 1 else {"$and": parts}


class VecpressVectorStore(BasePydanticVectorStore):
    """LlamaIndex vector store over a :class:`vecpress.Collection` (module docstring).

    Parameters
    ----------
    path : str or pathlib.Path
        The collection's folder: opened if it holds one, else created on the first
        ``add`` (the dimension is the nodes' embeddings').
    spec, rerank_spec, metric, seed, ivf, flush_rows
        The collection's settings (:meth:`vecpress.Collection.create`).
    rerank : "auto", int or None
        Re-ranking depth of every query (``"auto"``: certified).
    """

    stores_text: bool = True
    flat_metadata: bool = False
    path: str
    spec: str = "hd2,rq4"
    rerank_spec: str | None = "f32"
    metric: str = "cosine"
    seed: int = 0
    ivf: int | None = None
    flush_rows: int = FLUSH_ROWS
    rerank: int | str | None = "auto"

    _collection: Collection | None = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default=None)

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(path=str(path), **kwargs)
        self._lock = threading.Lock()
        if (Path(self.path) / CATALOG).exists():
            self._collection = Collection.open(self.path)
            if self._collection.settings.get("rerank_spec") is None and self.rerank == "auto":
                self.rerank = None
        elif self.rerank_spec is None and self.rerank == "auto":
            self.rerank = None

    @classmethod
    def class_name(cls) -> str:
        return "VecpressVectorStore"

    @classmethod
    def from_persist_path(cls, persist_path: str, **kwargs: Any) -> VecpressVectorStore:
        """The store whose collection is in the folder ``persist_path``."""
        return cls(path=persist_path, **kwargs)

    @property
    def client(self) -> Collection | None:
        """The collection (``None`` until the first ``add`` of a new store)."""
        return self._collection

    def _created(self, dim: int) -> Collection:
        with self._lock:
            if self._collection is None:
                self._collection = Collection.create(
                    self.path, dim=dim, spec=self.spec, rerank_spec=self.rerank_spec,
                    metric=self.metric, seed=self.seed, ivf=self.ivf, flush_rows=self.flush_rows,
                )  # fmt: skip
            return self._collection

    # -- writing -----------------------------------------------------------------------
    def add(self, nodes: list[BaseNode], **kwargs: Any) -> list[str]:
        """Store ``nodes`` (each with its embedding); a node id already stored is
        replaced. Returns the node ids."""
        if not nodes:
            return []
        missing = [n.node_id for n in nodes if n.embedding is None]
        if missing:
            raise ValueError(f"nodes need embeddings to be stored; {missing[0]!r} has none")
        vectors = np.asarray([n.get_embedding() for n in nodes], np.float32)
        ids = [n.node_id for n in nodes]
        texts = [n.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]
        metadata = [
            node_to_metadata_dict(n, remove_text=True, flat_metadata=self.flat_metadata)
            for n in nodes
        ]
        collection = self._created(vectors.shape[1] if vectors.ndim == 2 else 0)
        return collection.upsert(vectors, ids, texts=texts, metadata=metadata)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        if self._collection is not None:
            ids = self._collection.ids({"ref_doc_id": ref_doc_id})
            if ids:
                self._collection.delete(ids)

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:  # fmt: skip
        """Delete the nodes of ``node_ids`` that ``filters`` match (either may be
        omitted; both omitted: nothing)."""
        if self._collection is None or (node_ids is None and filters is None):
            return
        ids = self._ids(node_ids, filters)
        if ids:
            self._collection.delete(ids)

    def clear(self) -> None:
        """Delete every node."""
        if self._collection is not None:
            ids = self._collection.ids()
            if ids:
                self._collection.delete(ids)

    def persist(self, persist_path: str, fs: Any = None) -> None:
        """Nothing to write: every change is committed when made. ``persist_path`` must
        be the store's folder (the collection does not copy itself elsewhere)."""
        if Path(persist_path).resolve() != Path(self.path).resolve():
            raise ValueError(
                f"a vecpress store persists in its own folder ({self.path}), not {persist_path}"
            )

    # -- reading -----------------------------------------------------------------------
    def _ids(self, node_ids, filters) -> list[str]:
        ids = self._collection.ids(to_filter(filters))
        if node_ids is not None:
            wanted = set(node_ids)
            ids = [x for x in ids if x in wanted]
        return ids

    def _node(self, doc: dict) -> BaseNode:
        return metadata_dict_to_node(doc["metadata"], text=doc["text"] or "")

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The stored nodes of ``node_ids`` that ``filters`` match."""
        if self._collection is None:
            return []
        ids = self._ids(node_ids, filters)
        return [self._node(d) for d in self._collection.get(ids) if d is not None]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nodes nearest ``query_embedding`` among those the
        query's ``filters``, ``doc_ids`` and ``node_ids`` allow."""
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise ValueError(f"vecpress answers the default query mode, not {query.mode.value!r}")
        if query.query_embedding is None:
            raise ValueError("the query needs query_embedding (vecpress searches vectors)")
        empty = VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        if self._collection is None or len(self._collection) == 0:
            return empty
        where = to_filter(query.filters)
        if query.doc_ids:  # None or [] restrict nothing (as LlamaIndex's own stores read it)
            where = _and(where, {"ref_doc_id": {"$in": list(query.doc_ids)}})
        q = np.asarray(query.query_embedding, np.float32)[None, :]
        k = query.similarity_top_k
        if query.node_ids:  # a retriever passes [] for "any node"
            return self._exact(q, k, self._ids(query.node_ids, None), where)
        res = self._collection.search(q, k, filter=where, rerank=self.rerank)
        nodes, sims, ids = [], [], []
        for i, t, m, s in zip(res.ids[0], res.texts[0], res.metadata[0], res.scores[0],
                              strict=True):  # fmt: skip
            if i is not None:
                nodes.append(self._node({"text": t, "metadata": m}))
                sims.append(float(s))
                ids.append(i)
        return VectorStoreQueryResult(nodes=nodes, similarities=sims, ids=ids)

    def _exact(self, q, k, ids, where) -> VectorStoreQueryResult:
        """Exact scores of the stored vectors of ``ids`` that ``where`` matches."""
        if where is not None:
            allowed = set(self._collection.ids(where))
            ids = [x for x in ids if x in allowed]
        if not ids:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        v = self._collection.vectors_of(ids).astype(np.float64)
        qq = q[0].astype(np.float64)
        if self._collection.metric == "cosine":
            qq = qq / (np.linalg.norm(qq) or 1.0)
        scores = v @ qq if self._collection.metric != "l2" else -((v - qq) ** 2).sum(1)
        order = np.lexsort((np.arange(len(ids)), -scores))[:k]
        docs = self._collection.get([ids[i] for i in order])
        return VectorStoreQueryResult(
            nodes=[self._node(d) for d in docs],
            similarities=[float(scores[i]) for i in order],
            ids=[ids[i] for i in order],
        )
