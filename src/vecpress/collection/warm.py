"""Compile a collection's search kernels ahead of its first query.

A collection searches each of its segments as a memory-mapped index
(:meth:`vecpress.Index.search`, full scans, re-ranked where it has a second tier,
filtered by allowlists), so its kernels are those of one segment opened that way:
:func:`warm_up_collection` runs :func:`vecpress.search.warm.warm_up` on its largest
segment -- without the progressive scans, which a collection never makes (they
are the slowest to compile) -- or, before any segment exists, on a stand-in index
of the collection's settings (:func:`vecpress.search.warm.warm_up_spec`), then
searches the collection itself once, which opens every segment file. ``vecpress
warmup FOLDER`` and ``vecpress serve ROOT --warmup`` call it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._validation import check_positive_int
from ..search.warm import BATCH_QUERIES, timed_step, warm_up, warm_up_spec
from .collection import AUTO, MAX_K, Collection


def warm_up_collection(
    col: Collection, *, k: int = 10, progress: Callable[[str], None] | None = None
) -> list[tuple[str, float]]:
    """Run every kind of search ``col`` serves once, so that its kernels are compiled
    (and cached on disk for the next process), and open its segment files.

    Parameters
    ----------
    col : Collection
        An open collection; a collection with ``spec="auto"`` whose codec is not
        trained yet has no kernel to compile (its vectors are pending, scored
        exactly): only its own searches run.
    k : int
        Results per query.
    progress : callable, optional
        Called with each step's name before it runs.

    Returns
    -------
    list of (str, float)
        Each step and its seconds: the index steps of
        :func:`~vecpress.search.warm.warm_up`, then ``"collection, one query"`` and
        ``"collection, batch"``.

    Examples
    --------
    >>> import tempfile
    >>> x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    >>> col = Collection.create(tempfile.mkdtemp() + "/docs", spec="hd2,rq4", dim=16,
    ...                         flush_rows=200)
    >>> _ = col.add(x)
    >>> [step for step, _ in warm_up_collection(col)]  # doctest: +NORMALIZE_WHITESPACE
    ['one query', 'batch', 'one query, 10 ids allowed', 'batch, 10 ids allowed',
     'one query, 150 ids allowed', 'batch, 150 ids allowed',
     'collection, one query', 'collection, batch']
    """
    if not isinstance(col, Collection):
        raise TypeError(f"col must be a vecpress.Collection, found {type(col).__name__}")
    k = check_positive_int(k, "k", high=MAX_K)  # before the index steps, not after them
    s = col.settings
    segments = col.segments()
    if segments:
        _, file, _ = max(segments, key=lambda seg: seg[2])  # the largest (ties: first)
        steps = warm_up(col._segment(file), k=k, progress=progress, progressive=False)
    elif s["spec"] != AUTO:
        steps = warm_up_spec(
            s["spec"], s["dim"], metric=s["metric"], rerank_spec=s["rerank_spec"],
            ivf=s["ivf"], progress=progress, progressive=False,
        )  # fmt: skip
    else:
        steps = []
    q = np.random.default_rng(0).standard_normal((BATCH_QUERIES, s["dim"])).astype(np.float32)
    for name, rows in (("collection, one query", q[:1]), ("collection, batch", q)):
        timed_step(steps, name, progress, col.search, rows, k)
    return steps
