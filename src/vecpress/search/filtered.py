"""Filtered search: an allowlist of rows applied inside the scan, never after it.

A filtered search (``Index.search(..., allow=ids)``) returns the best ``k`` of
the *allowed* rows, ranked exactly as an unfiltered search ranks them. Filtering
an unfiltered top ``k`` afterwards would return fewer than ``k`` rows, or none,
once the filter is selective; here the allowlist reaches the kernel, by one of
two paths chosen per search by their estimated cost (:func:`choose`):

* **gather**: the allowed rows' codes (and per-row terms) are copied into a
  small stage of their own (:func:`gathered`) and *every* one of them is
  scanned -- an exact scan of the allowed rows under the codec's estimator,
  whatever ``nprobe`` says (an IVF index scores them as candidates, as its
  re-ranking scores the first stage's rows, since they spread over its lists). Cost: one copy of the
  allowed rows per search plus one scan of them per query. Chosen for selective
  filters.
* **mask**: the index's own rows are scanned with the disallowed ones masked
  (:func:`masked`): their additive per-row term is ``-inf`` in the grid kernel
  (no other value is), so they never enter a top ``k``, and the rows returned
  with ``-inf`` are turned into padding. An IVF search then probes lists in
  the order of their centroids until they hold as many *allowed* rows as the
  unfiltered search scans in total (``nprobe`` lists of the mean size;
  :func:`probe_allowed`): the more selective the filter, the more lists.
  Chosen for broad filters, where a copy of the allowed rows would cost more
  than scanning past the others.

The cost model (:func:`choose`) counts rows touched: gathering costs
:data:`GATHER_COST` row-scans per allowed row, once per search; scanning costs
one per row and query.

Examples
--------
>>> import numpy as np
>>> ids = np.array([7, 3, 9, 1])
>>> order, sorted_ids = id_lookup(ids)
>>> allowed_rows(order, sorted_ids, np.array([9, 1, 5, 9])).tolist()  # rows of ids 9 and 1
[2, 3]
>>> choose(n=100_000, count=500, nq=1, scanned=100_000)
'gather'
>>> choose(n=100_000, count=80_000, nq=1, scanned=100_000)
'mask'
>>> choose(n=100_000, count=30_000, nq=100, scanned=20_000, pair_cost=CANDIDATE_COST)
'mask'
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .scan import Stage, Terms, is_grid, make_items

#: the cost of scoring one (query, row) pair of gathered rows with ``Codec.score`` (an
#: IVF index's exact scan of its allowed rows), in units of one row scanned for one
#: query by the kernel (measured on the MiniLM set, 100,000 x 384, ``hd2,rq4``, 200
#: queries at once: about 23 ns against 10 ns; one query alone pays more, ~175 ns)
CANDIDATE_COST = 2.5
#: scores an IVF index's exact scan of allowed rows holds at once (queries x rows)
SCORES_AT_ONCE = 1 << 22
#: the cost of copying one allowed row into a gathered stage (its code bytes and terms),
#: in units of one row scanned for one query (measured: ``benchmarks/filtered.py``)
GATHER_COST = 2.0


def id_lookup(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, sorted_ids)``: the rows of stored ``ids`` in id order, and those ids."""
    order = np.argsort(ids, kind="stable")
    return order, ids[order]


def allowed_rows(order: np.ndarray, sorted_ids: np.ndarray, allow: np.ndarray) -> np.ndarray:
    """The rows (sorted, int64) whose ids are in ``allow``; ids not stored are skipped,
    repeated ones counted once."""
    allow = np.asarray(allow, np.int64)
    if allow.size > 1 and not bool(np.all(allow[1:] > allow[:-1])):  # else sorted, distinct
        allow = np.unique(allow)
    if sorted_ids.size == 0 or allow.size == 0:
        return np.zeros(0, np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, allow), sorted_ids.size - 1)
    hit = sorted_ids[pos] == allow
    return np.sort(order[pos[hit]]).astype(np.int64)


def choose(n: int, count: int, nq: int, scanned: int, pair_cost: float = 1.0) -> str:
    """``"gather"`` or ``"mask"``: the cheaper path for ``count`` allowed rows of ``n``,
    ``nq`` queries, where the masked scan reads ``scanned`` rows per query and the
    exact scan of the allowed rows costs ``pair_cost`` row-scans per (query, row)
    (:data:`CANDIDATE_COST` where they are scored as candidates: IVF)."""
    gather = count * (GATHER_COST + pair_cost * nq)
    mask = min(n, scanned) * nq
    return "gather" if gather <= mask else "mask"


def masked_rows_scanned(n: int, count: int, nlist: int, nprobe: int) -> int:
    """Rows a masked IVF scan reads per query, were the allowed rows spread evenly:
    lists until they hold ``nprobe`` lists' worth of allowed rows (all rows if flat)."""
    if nlist <= 1 or count == 0:
        return n
    target = nprobe * n / nlist  # rows the unfiltered search scans
    return int(min(n, np.ceil(target * n / count)))


def probe_allowed(
    lists: np.ndarray, allowed_per_list: np.ndarray, target: int
) -> np.ndarray:  # fmt: skip
    """Of each query's lists (``int64[nq, L]``, best first), the first that together hold
    ``target`` allowed rows (the list that reaches it included); lists without allowed
    rows are dropped (``-1``).

    Examples
    --------
    >>> probe_allowed(np.array([[2, 0, 1, 3]]), np.array([5, 0, 4, 9]), 8).tolist()
    [[2, 0, -1, -1]]
    >>> probe_allowed(np.array([[1, 0, 3, 2]]), np.array([5, 0, 4, 9]), 8).tolist()
    [[-1, 0, 3, -1]]
    """
    valid = lists >= 0
    cnt = np.where(valid, allowed_per_list[np.maximum(lists, 0)], 0)
    before = np.cumsum(cnt, axis=1) - cnt
    keep = valid & (cnt > 0) & (before < target)
    return np.where(keep, lists, -1)


class MaskedTerms:
    """A grid stage's per-row terms with the disallowed rows' additive term ``-inf``."""

    #: never: :meth:`ensure` makes the masked arrays a scan reads
    complete = False

    def __init__(self, terms: Terms, allow: np.ndarray) -> None:
        self._terms = terms
        self._allow = allow
        self.arrays = terms.arrays

    def ready(self, items, lists: np.ndarray) -> bool:
        """Never (as :attr:`complete`): :meth:`ensure` makes the masked arrays a scan reads."""
        return False

    def ensure(self, items, which: np.ndarray) -> None:
        self._terms.ensure(items, which)
        a, b, c = self._terms.arrays
        self.arrays = (a, b, np.where(self._allow, c, np.float32(-np.inf)))


def masked(stage: Stage, allow: np.ndarray) -> Stage:
    """The stage with rows where ``allow`` (``bool[n]``) is false masked out."""
    terms = None if stage.terms is None else MaskedTerms(stage.terms, allow)
    return dataclasses.replace(stage, terms=terms, allow=allow, planes=None)


def gathered(stage: Stage, rows: np.ndarray, list_offsets: np.ndarray) -> Stage:
    """A stage over ``rows`` (sorted) of ``stage`` alone, in the same lists: its row ``i``
    is ``rows[i]``."""
    codes = np.ascontiguousarray(stage.codes[rows])
    offsets = np.searchsorted(rows, list_offsets)
    return Stage(
        codec=stage.codec,
        codes=codes,
        items=make_items(offsets),
        norms=None if stage.norms is None else np.ascontiguousarray(stage.norms[rows]),
        terms=Terms(stage.codec, codes) if is_grid(stage.codec) else None,
    )
