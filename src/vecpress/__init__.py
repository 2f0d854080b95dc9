"""vecpress: compress embedding vectors and search them compressed.

Examples
--------
>>> import numpy as np, vecpress
>>> x = np.random.default_rng(0).standard_normal((100, 32)).astype(np.float32)
>>> codec = vecpress.Codec.from_spec("hd2,rq4").fit(x)
>>> codec.encode(x).shape
(100, 20)
"""

from __future__ import annotations

# isort: off
# first: numba's cache locator for vecpress's kernels, installed before any is defined
from . import kernel_cache  # noqa: F401

# isort: on
from ._validation import MAX_NORM
from ._version import __version__
from .codecs.codec import Codec
from .codecs.spec import parse as parse_spec
from .collection import Collection, CollectionResult
from .collection.bulk import build_collection
from .errors import FormatError, LockedError, NotFittedError
from .files.storage import info
from .search.index import Index, SearchResult, open
from .search.streaming import build_index
from .threads import get_num_threads, set_num_threads

__all__ = [
    "MAX_NORM",
    "Codec",
    "Collection",
    "CollectionResult",
    "FormatError",
    "Index",
    "LockedError",
    "NotFittedError",
    "SearchResult",
    "__version__",
    "build_collection",
    "build_index",
    "get_num_threads",
    "info",
    "open",
    "parse_spec",
    "set_num_threads",
]
