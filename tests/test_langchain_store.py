"""VecpressVectorStore beyond LangChain's standard suite: filters, MMR, scores,
persistence, retrievers and bad input."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from vecpress import Collection
from vecpress.integrations.langchain import VecpressVectorStore


class TableEmbedding(Embeddings):
    """Fixed vectors for known texts: results that can be worked out by hand."""

    TABLE: ClassVar[dict[str, list[float]]] = {
        "north": [1.0, 0.0, 0.0],
        "north-ish": [0.9, 0.1, 0.0],
        "north too": [0.89, 0.11, 0.0],
        "east": [0.0, 1.0, 0.0],
        "up": [0.0, 0.0, 1.0],
        "north-east": [0.7, 0.7, 0.0],
    }

    def embed_documents(self, texts):
        return [self.TABLE[t] for t in texts]

    def embed_query(self, text):
        return self.TABLE[text]


TEXTS = ["north", "north-ish", "north too", "east", "up"]
META = [
    {"year": 2020, "lang": "en"},
    {"year": 2021, "lang": "de"},
    {"year": 2022, "lang": "en"},
    {"year": 2023, "lang": "en"},
    {"year": 2024, "lang": "fr"},
]


@pytest.fixture(params=[20_000, 1], ids=["pending", "segments"])
def store(request):
    s = VecpressVectorStore(TableEmbedding(), flush_rows=request.param)
    s.add_texts(TEXTS, META, ids=[f"d{i}" for i in range(5)])
    yield s
    s.close()


def test_similarity_search_ranks_by_cosine_and_filters_inside_the_search(store):
    assert [d.id for d in store.similarity_search("north", k=3)] == ["d0", "d1", "d2"]
    # the filter keeps its k best matches, however far down the unfiltered ranking
    got = store.similarity_search("north", k=2, filter={"lang": {"$ne": "en"}})
    assert [d.id for d in got] == ["d1", "d4"]
    got = store.similarity_search("north", k=5, filter={"$and": [{"year": {"$gte": 2022}},
                                                                 {"lang": "en"}]})  # fmt: skip
    assert [d.id for d in got] == ["d2", "d3"]
    assert got[0] == Document(id="d2", page_content="north too", metadata=META[2])


def test_scores_are_the_metrics_and_relevance_maps_them_to_unit_range(store):
    pairs = store.similarity_search_with_score("north", k=5)
    scores = [s for _, s in pairs]
    assert scores == sorted(scores, reverse=True)
    v = np.array(TableEmbedding.TABLE["north-ish"])
    assert scores[1] == pytest.approx(v[0] / np.linalg.norm(v), abs=1e-6)
    rel = store.similarity_search_with_relevance_scores("north", k=5)
    assert all(0.0 <= r <= 1.0 for _, r in rel)
    assert rel[0][1] == pytest.approx(1.0, abs=1e-6)  # cosine 1
    assert rel[-1][1] == pytest.approx(0.5, abs=1e-6)  # orthogonal: cosine 0


def test_mmr_trades_relevance_for_diversity(store):
    # the best two are near copies of each other; at lambda 0.3 MMR takes "east" second
    # (0.3 * 0.707 - 0.7 * 0.123 > 0.3 * 0.781 - 0.7 * 1.000)
    assert [d.id for d in store.similarity_search("north-east", k=2)] == ["d2", "d1"]
    got = store.max_marginal_relevance_search("north-east", k=2, fetch_k=5, lambda_mult=0.3)
    assert [d.id for d in got] == ["d2", "d3"]
    got = store.max_marginal_relevance_search(
        "north-east", k=2, fetch_k=5, lambda_mult=0.3, filter={"year": {"$lte": 2021}}
    )
    assert [d.id for d in got] == ["d1", "d0"]


def test_retriever_and_async_search(store):
    retriever = store.as_retriever(search_kwargs={"k": 1, "filter": {"year": 2023}})
    assert [d.id for d in retriever.invoke("north")] == ["d3"]
    import asyncio

    got = asyncio.run(store.asimilarity_search("up", k=1))
    assert got[0].id == "d4"


def test_a_store_with_a_folder_opens_again(tmp_path):
    s = VecpressVectorStore(TableEmbedding(), path=tmp_path / "c", flush_rows=2)
    s.add_texts(TEXTS[:4], META[:4], ids=[f"d{i}" for i in range(4)])  # a segment
    s.add_texts(TEXTS[4:], META[4:], ids=["d4"])  # pending
    s.delete(["d1"])
    s.close()
    again = VecpressVectorStore(TableEmbedding(), path=tmp_path / "c")
    assert [d.id for d in again.similarity_search("north", k=3)] == ["d0", "d2", "d3"]
    assert len(again.collection) == 4 and len(again.collection.segments()) == 1
    again.close()
    assert (tmp_path / "c").exists()  # a folder the user named is kept


def test_temporary_folder_is_removed_on_close():
    s = VecpressVectorStore.from_texts(TEXTS, TableEmbedding(), metadatas=META)
    folder = s.collection.path
    assert folder.exists() and len(s.collection) == 5
    s.close()
    assert not folder.exists()


def test_bad_input_is_a_clear_error_and_stores_nothing(store):
    with pytest.raises(ValueError, match="metadatas must have one entry per text"):
        store.add_texts(["north"], [{}, {}])
    with pytest.raises(ValueError, match="ids must have one entry per text"):
        store.add_texts(["north"], ids=["a", "b"])
    with pytest.raises(TypeError):
        store.add_texts(["north"], [{"when": object()}], ids=["x"])
    with pytest.raises(ValueError, match="operator"):
        store.similarity_search("north", k=1, filter={"year": {"$near": 1}})
    assert len(store.collection) == 5 and store.get_by_ids(["x"]) == []


def test_delete_without_ids_deletes_everything(store):
    store.delete(["d0"])
    assert store.collection.ids() == ["d1", "d2", "d3", "d4"]
    store.delete()
    assert len(store.collection) == 0 and store.similarity_search("north", k=2) == []


def test_empty_store_searches_return_nothing():
    s = VecpressVectorStore(TableEmbedding())
    assert s.similarity_search("north", k=3) == []
    assert s.max_marginal_relevance_search("north", k=3) == []
    assert s.get_by_ids(["a"]) == [] and s.delete(["a"]) is True
    s.close()


# -- Collection.vectors_of, which MMR reads ------------------------------------------------
@pytest.mark.parametrize("flush_rows", [1, 3, 100])
def test_vectors_of_gives_stored_vectors_in_the_order_asked(tmp_path, flush_rows):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    col = Collection.create(
        tmp_path / "c", spec="hd2,rq4", dim=5, metric="cosine", rerank_spec="f32",
        flush_rows=flush_rows,
    )  # fmt: skip
    ids = [f"v{i}" for i in range(7)]
    for s in range(0, 7, 2):
        col.add(x[s : s + 2], ids=ids[s : s + 2])
    want = x / np.linalg.norm(x, axis=1, keepdims=True)
    order = [6, 0, 3, 3, 1]
    np.testing.assert_allclose(col.vectors_of([ids[i] for i in order]), want[order], atol=1e-6)
    with pytest.raises(KeyError, match="'nope'"):
        col.vectors_of(["v0", "nope"])


def test_vectors_of_needs_a_float_tier_once_vectors_are_codes(tmp_path):
    col = Collection.create(tmp_path / "c", spec="hd2,rq4", dim=4, metric="ip", flush_rows=2)
    col.add(np.eye(4, dtype=np.float32)[:1], ids=["pending"])
    np.testing.assert_array_equal(col.vectors_of(["pending"]), [[1, 0, 0, 0]])
    col.add(np.eye(4, dtype=np.float32)[1:3], ids=["a", "b"])
    with pytest.raises(ValueError, match="float tier"):
        col.vectors_of(["a"])
