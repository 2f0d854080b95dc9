"""VecpressVectorStore for LlamaIndex: end to end through a VectorStoreIndex with a
fixed embedding, filters, deletion, persistence and bad input."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from vecpress.integrations.llama_index import VecpressVectorStore, to_filter


class TableEmbedding(BaseEmbedding):
    """Fixed vectors by the first word of a text the table knows (LlamaIndex embeds a
    node's metadata lines before its text): results worked out by hand."""

    TABLE: ClassVar[dict[str, list[float]]] = {
        "north": [1.0, 0.0, 0.0],
        "northish": [0.9, 0.1, 0.0],
        "east": [0.0, 1.0, 0.0],
        "up": [0.0, 0.0, 1.0],
    }

    def _vec(self, text: str) -> list[float]:
        return self.TABLE[next(w for w in text.split() if w in self.TABLE)]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vec(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)


DOCS = [
    Document(text="north star", doc_id="doc-n", metadata={"year": 2020, "lang": "en"}),
    Document(text="northish wind", doc_id="doc-w", metadata={"year": 2022, "lang": "de"}),
    Document(text="east coast", doc_id="doc-e", metadata={"year": 2023, "lang": "en"}),
    Document(text="up high", doc_id="doc-u", metadata={"year": 2024, "lang": "fr"}),
]


def _index(store):
    context = StorageContext.from_defaults(vector_store=store)
    return VectorStoreIndex.from_documents(
        DOCS, storage_context=context, embed_model=TableEmbedding()
    )


def _texts(nodes):
    return [n.node.get_content() for n in nodes]


@pytest.fixture(params=[20_000, 1], ids=["pending", "segments"])
def store(request, tmp_path):
    return VecpressVectorStore(path=tmp_path / "c", flush_rows=request.param)


def test_vector_store_index_retrieves_the_expected_nodes_with_filters(store):
    index = _index(store)
    assert len(store.client) == 4  # one node per document
    got = index.as_retriever(similarity_top_k=2).retrieve("north")
    assert _texts(got) == ["north star", "northish wind"]
    assert got[0].score == pytest.approx(1.0, abs=1e-6)
    assert got[1].score == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-6)
    assert got[0].node.metadata == {"year": 2020, "lang": "en"}
    assert got[0].node.ref_doc_id == "doc-n"
    # the filter is applied inside the search: its best matches, however far down
    lang = MetadataFilters(filters=[MetadataFilter(key="lang", value="en")])
    got = index.as_retriever(similarity_top_k=2, filters=lang).retrieve("north")
    assert _texts(got) == ["north star", "east coast"]
    either = MetadataFilters(
        filters=[
            MetadataFilter(key="year", value=2024, operator=FilterOperator.GTE),
            MetadataFilter(key="lang", value="de"),
        ],
        condition="or",
    )
    got = index.as_retriever(similarity_top_k=3, filters=either).retrieve("north")
    assert _texts(got) == ["northish wind", "up high"]


def test_delete_by_source_document_and_by_nodes(store):
    index = _index(store)
    index.delete_ref_doc("doc-n")
    assert _texts(index.as_retriever(similarity_top_k=1).retrieve("north")) == ["northish wind"]
    store.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="lang", value="de")]))
    assert _texts(index.as_retriever(similarity_top_k=1).retrieve("north")) == ["east coast"]
    assert [n.get_content() for n in store.get_nodes()] == ["east coast", "up high"]
    store.clear()
    assert store.query(VectorStoreQuery(query_embedding=[1, 0, 0], similarity_top_k=3)).ids == []


def test_doc_ids_and_node_ids_restrict_a_query(store):
    _index(store)
    q = VectorStoreQuery(query_embedding=[1.0, 0.0, 0.0], similarity_top_k=3,
                         doc_ids=["doc-e", "doc-u"])  # fmt: skip
    res = store.query(q)
    assert [n.get_content() for n in res.nodes] == ["east coast", "up high"]
    wanted = [n.node_id for n in store.get_nodes() if n.get_content() in ("up high", "north star")]
    res = store.query(VectorStoreQuery(query_embedding=[0.0, 0.1, 1.0], similarity_top_k=5,
                                       node_ids=wanted))  # fmt: skip
    assert [n.get_content() for n in res.nodes] == ["up high", "north star"]
    assert res.similarities[0] == pytest.approx(1 / np.hypot(0.1, 1.0), abs=1e-6)


def test_the_store_loads_again_from_its_folder(tmp_path):
    store = VecpressVectorStore(path=tmp_path / "c", flush_rows=2)
    _index(store)
    store.persist(str(tmp_path / "c"))  # nothing to write: committed already
    again = VecpressVectorStore.from_persist_path(str(tmp_path / "c"))
    index = VectorStoreIndex.from_vector_store(again, embed_model=TableEmbedding())
    got = index.as_retriever(similarity_top_k=2).retrieve("up")
    assert _texts(got)[0] == "up high" and len(got) == 2
    assert len(again.client) == 4 and len(again.client.segments()) == 1
    with pytest.raises(ValueError, match="its own folder"):
        again.persist(str(tmp_path / "elsewhere"))


def test_unsupported_filters_and_queries_are_clear_errors(store):
    _index(store)
    for op in (FilterOperator.CONTAINS, FilterOperator.TEXT_MATCH, FilterOperator.ANY):
        f = MetadataFilters(filters=[MetadataFilter(key="lang", value="en", operator=op)])
        with pytest.raises(ValueError, match=op.value):
            store.query(VectorStoreQuery(query_embedding=[1, 0, 0], filters=f))
    f = MetadataFilters(filters=[MetadataFilter(key="lang", value="en")], condition="not")
    with pytest.raises(ValueError, match="and/or"):
        to_filter(f)
    with pytest.raises(ValueError, match="mmr"):
        store.query(VectorStoreQuery(query_embedding=[1, 0, 0], mode=VectorStoreQueryMode.MMR))
    with pytest.raises(ValueError, match="query_embedding"):
        store.query(VectorStoreQuery(query_str="north"))
    with pytest.raises(ValueError, match="embeddings"):
        store.add([TextNode(id_="x", text="no vector")])
    assert len(store.client) == 4


def test_an_empty_store_answers_nothing(tmp_path):
    store = VecpressVectorStore(path=tmp_path / "c")
    assert store.query(VectorStoreQuery(query_embedding=[1.0, 0.0], similarity_top_k=2)).ids == []
    assert store.get_nodes() == [] and store.add([]) == []
    store.delete("nothing")
