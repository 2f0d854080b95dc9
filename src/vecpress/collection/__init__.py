"""Collections: documents (string ids, texts, metadata) over compressed vectors.

So far the parts a collection's catalog builds on: documents' metadata, typed per
field and stored as JSON text (:mod:`vecpress.collection.metadata`), and the
filter language compiled to SQLite (:mod:`vecpress.collection.filters`).
"""
