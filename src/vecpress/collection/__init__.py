"""Collections: documents (string ids, texts, metadata) over compressed vectors.

:class:`Collection` (:mod:`vecpress.collection.collection`) keeps them in a
folder: an SQLite catalog of segments and documents, written in transactions
that store a whole batch or nothing (:mod:`vecpress.collection.catalog`),
documents' metadata typed per field and stored as JSON text
(:mod:`vecpress.collection.metadata`), and immutable segment files of vecpress's
index format. The filter language compiled to SQLite
(:mod:`vecpress.collection.filters`) is not applied by searches yet.
"""

from .collection import Collection, CollectionResult

__all__ = ["Collection", "CollectionResult"]
