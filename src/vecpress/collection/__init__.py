"""Collections: documents (string ids, texts, metadata) over compressed vectors.

:class:`Collection` (:mod:`vecpress.collection.collection`) keeps them in a
folder: an SQLite catalog of segments and documents, written in transactions
that store a whole batch or nothing (:mod:`vecpress.collection.catalog`),
documents' metadata typed per field and stored as JSON text
(:mod:`vecpress.collection.metadata`), and immutable segment files of vecpress's
index format. Searches take metadata filters (:mod:`vecpress.collection.filters`:
compiled to SQL, applied inside each segment's scan); segments merge without
re-encoding (:mod:`vecpress.collection.merge`); texts are embedded by a callable
or a sentence-transformers model (:mod:`vecpress.collection.embed`); ``spec="auto"``
lets the advisor choose the codec (:mod:`vecpress.collection.auto`).
"""

from .collection import Collection, CollectionResult

__all__ = ["Collection", "CollectionResult"]
