"""Adapters of :class:`vecpress.Collection` to the frameworks applications are built
with; each is an optional extra, imported only by its own module:

* :mod:`vecpress.integrations.langchain` -- a LangChain ``VectorStore``
  (``pip install 'vecpress[langchain]'``).
* :mod:`vecpress.integrations.llama_index` -- a LlamaIndex vector store
  (``pip install 'vecpress[llama-index]'``).

They are thin: the collection stores, filters and searches; an adapter
translates names and types.
"""
