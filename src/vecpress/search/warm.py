"""Compile an index's search kernels ahead of its first query: ``vecpress warmup``.

vecpress's scans are numba kernels, compiled at their first call for the types they
are given and kept in numba's on-disk cache (``__pycache__`` beside the package, or
``NUMBA_CACHE_DIR``). A process that finds them there starts searching at once (a
saved 1,000,000 x 384 index answers its first query in about 0.1-0.5 s on a 2-core
machine); one that does not compiles them first: tens of seconds per kernel family,
a minute or two for the progressive scan. :func:`warm_up` makes every search an
index can run once, on queries drawn for the purpose, so that a deployment pays the
compilation when it is built (a container image, an install step) and its first
user does not.

What is compiled depends on the argument types, not on the data: an index of the
same specs, metric and dimension, opened the same way (from its file, mapped), uses
the same kernels, so warming a small index of the same configuration serves a large
one (:func:`warm_up_spec`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .index import Index, open

#: query rows of the batch searches (more than the one-query kernels take: 4)
BATCH_QUERIES = 32
#: rows of the stand-in index :func:`warm_up_spec` builds
SPEC_ROWS = 2000
#: ids of the filtered search that scores its allowed rows alone
FEW_ALLOWED = 10
#: the most numbers (rows x d) of the stand-in index (256 MiB of float32)
MAX_SPEC_FLOATS = 1 << 26


def warm_up(
    index: Index,
    *,
    k: int = 10,
    progress: Callable[[str], None] | None = None,
    progressive: bool = True,
):
    """Run every kind of search ``index`` can serve once, so that its kernels are
    compiled (and cached on disk for the next process).

    One query and a batch of :data:`BATCH_QUERIES`, each with the full scan and, where
    the first stage is read sign plane first (and ``progressive``), the progressive
    one; with a second tier, re-ranked to a fixed depth and certified
    (``rerank="auto"``); filtered by a few allowed ids and by half of them. The
    queries are random rows of the index's dimension; the results are discarded.

    Parameters
    ----------
    index : Index
        A trained index holding at least one row (best opened as it will be served:
        ``vecpress.open(path, mmap=True)``).
    k : int
        Results per query (clipped to the rows stored).
    progress : callable, optional
        Called with each step's name before it runs.
    progressive : bool
        Also the progressive scans (``search(..., progressive=True)``; their kernels
        take the longest to compile). A collection never makes them:
        :func:`vecpress.collection.warm.warm_up_collection` leaves them out.

    Returns
    -------
    list of (str, float)
        Each step and its seconds: compilation, for kernels not in the cache yet.

    Examples
    --------
    >>> import numpy as np, vecpress
    >>> index = vecpress.Index("hd2,rq4", metric="cosine")
    >>> ids = index.add(np.random.default_rng(0).standard_normal((300, 32)).astype(np.float32))
    >>> [step for step, _ in warm_up(index)]  # doctest: +NORMALIZE_WHITESPACE
    ['one query', 'batch', 'one query, progressive', 'batch, progressive',
     'one query, 10 ids allowed', 'batch, 10 ids allowed',
     'one query, 150 ids allowed', 'batch, 150 ids allowed']
    """
    if not isinstance(index, Index):
        raise TypeError(f"index must be a vecpress.Index, found {type(index).__name__}")
    if len(index) == 0:
        raise ValueError("warm_up needs an index holding rows: this one is empty")
    k = max(1, min(int(k), len(index)))
    q = np.random.default_rng(0).standard_normal((BATCH_QUERIES, index.d)).astype(np.float32)
    kinds = [{}]
    if progressive and index._first_stage().progressive:
        kinds.append({"progressive": True})
    if index.has_second_tier:
        kinds += [{"rerank": 2 * k}, {"rerank": "auto"}]
    ids = index.ids
    # filters: few rows allowed (scored alone) and many (the others masked in the scan)
    kinds += [{"allow": ids[:FEW_ALLOWED]}, {"allow": ids[::2]}]
    steps = []
    for kw in kinds:
        for label, rows in (("one query", q[:1]), ("batch", q)):
            name = ", ".join([label, *(_describe(key, v) for key, v in kw.items())])
            timed_step(steps, name, progress, index.search, rows, k, **kw)
    return steps


def timed_step(steps: list, name: str, progress, search: Callable, *args, **kwargs) -> None:
    """One step of a warm-up: ``name`` to ``progress`` (if given), then
    ``search(*args, **kwargs)`` run and ``(name, seconds)`` appended to ``steps``."""
    if progress is not None:
        progress(name)
    t = time.perf_counter()
    search(*args, **kwargs)
    steps.append((name, time.perf_counter() - t))


def _describe(key: str, value) -> str:
    if key == "allow":
        return f"{len(value)} ids allowed"
    return "progressive" if key == "progressive" else f"rerank={value}"


def warm_up_spec(
    spec: str,
    d: int,
    *,
    metric: str = "cosine",
    rerank_spec: str | None = None,
    ivf: int | None = None,
    progress: Callable[[str], None] | None = None,
    progressive: bool = True,
):
    """:func:`warm_up` of an index of this configuration built for the purpose: rows
    of dimension ``d`` drawn at random (:data:`SPEC_ROWS`), saved to a temporary file
    and opened from it mapped, as a served index is (``progress`` and ``progressive``
    as :func:`warm_up` takes them).

    Examples
    --------
    >>> [step for step, _ in warm_up_spec("int8", 16, metric="l2")][:2]
    ['one query', 'batch']
    """
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d must be a positive int, found {d!r}")
    rows = max(SPEC_ROWS, 8 * (ivf or 0) if isinstance(ivf, (int, np.integer)) else 0)
    if rows * int(d) > MAX_SPEC_FLOATS:
        raise ValueError(
            f"a stand-in index of {rows:,} x {int(d):,} is larger than warm_up_spec builds "
            f"({MAX_SPEC_FLOATS:,} numbers); warm up an index file of this configuration"
        )
    x = np.random.default_rng(0).standard_normal((rows, int(d))).astype(np.float32)
    index = Index(spec, metric=metric, rerank_spec=rerank_spec, ivf=ivf, seed=0)
    index.add(x)
    with tempfile.TemporaryDirectory(prefix="vecpress-warmup-") as tmp:
        path = Path(tmp) / "warmup.vpi"
        index.save(path)
        opened = open(path, mmap=True)
        steps = warm_up(opened, progress=progress, progressive=progressive)
        del opened  # its mapping, before the file goes
    return steps
