"""LangChain's own standard vector-store suite, unmodified, against VecpressVectorStore.

Two configurations: the default store (small batches stay float vectors, scored
exactly) and one whose every add makes a segment (``flush_rows=1``: codes, with
the ``f32`` tier re-ranking the candidates), so that both paths pass it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests.vectorstores import (
    VectorStoreIntegrationTests,
)

from vecpress.integrations.langchain import VecpressVectorStore


class TestVecpressPending(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self):
        store = VecpressVectorStore(self.get_embeddings())
        try:
            yield store
        finally:
            store.close()


class TestVecpressSegments(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self):
        store = VecpressVectorStore(self.get_embeddings(), flush_rows=1)
        try:
            yield store
        finally:
            store.close()
