"""Collections: documents (string ids, texts, metadata) over compressed vectors.

So far the parts a collection builds on: its SQLite catalog of segments and
documents, written in transactions that store a whole batch or nothing
(:mod:`vecpress.collection.catalog`); documents' metadata, typed per field and
stored as JSON text (:mod:`vecpress.collection.metadata`); and the filter
language compiled to SQLite (:mod:`vecpress.collection.filters`).
"""
