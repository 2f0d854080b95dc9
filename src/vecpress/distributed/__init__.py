"""vecpress on a Ray cluster (``pip install 'vecpress[ray]'``, Ray 2.50 to 2.63:
the encoding actors are made not to retry through an option Ray 2.64 removes).

The pattern the field uses for data past one machine: train the codec on a sample,
ship it to every worker, encode each block where it lies, and search the shards
in parallel, merging their top k.

* :func:`vecpress.distributed.builder.build` -- a collection built by Ray Data: the
  codec trained on a sample on the driver and shipped to the workers as its
  bytes (an index file), each block encoded by ``map_batches`` on a pool of
  actors, the codes stored by the driver into one collection, which appears at
  its path only when the whole job has succeeded.
* :class:`vecpress.distributed.searcher.ShardedSearcher` -- Ray actors, each
  holding part of a collection's segments (or whole collections) memory-mapped;
  a search fans the queries out and merges the parts' top k with vecpress's one
  top-k routine, so the answer is the single machine's.

The same code runs on a laptop (``ray.init()``) and on a cluster
(``ray.init(address="auto")`` on a node that ran ``ray start``); the collection's
folder must be reachable at the same path from every node that opens it (a
shared file system), as Ray's own file-based data sets assume.

Nothing here is imported by ``import vecpress``; without Ray, importing it is an
``ImportError`` saying which extra to install.
"""

from __future__ import annotations

from .builder import build
from .searcher import ShardedSearcher

__all__ = ["ShardedSearcher", "build"]
