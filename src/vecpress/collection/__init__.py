"""Collections: documents (string ids, texts, metadata) over compressed vectors.

So far: the metadata filter language (:mod:`vecpress.collection.filters`).
"""
