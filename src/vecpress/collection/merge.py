"""Merging segments: the kept rows of several indexes of one codec as one index.

A collection's segments share one trained codec (its template), so their code
rows can be moved between them as they are -- nothing is decoded or encoded
again, and a merged segment answers exactly as its parts did. IVF segments share
the template's centroids: rows keep their list, and the merged rows are sorted
by list (stably: within a list, in the order of the parts).

Examples
--------
>>> import numpy as np
>>> from vecpress import Index
>>> x = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
>>> template = Index("hd2,rq4"); _ = template.train(x)
>>> parts = []
>>> for s in (0, 20):
...     part = Index.from_state(template.to_state())
...     _ = part.add(x[s : s + 20], ids=np.arange(s, s + 20))
...     parts.append(part)
>>> merged = merge([p.to_state() for p in parts], keep=np.arange(0, 40, 2))
>>> len(merged), merged.search(x[6:7], 1).ids.tolist()
(20, [[6]])
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..files.storage import IndexState
from ..search.index import Index


def merge(states: list[IndexState], keep: np.ndarray) -> Index:
    """One index of the rows of ``states`` whose ids are in ``keep`` (sorted int64).

    The states must share codec, metric, tiers and centroids (segments of one
    template); ``ValueError`` otherwise."""
    if not states:
        raise ValueError("merge needs at least one index state")
    first = states[0]
    for st in states[1:]:
        same = (
            st.codec.spec == first.codec.spec and st.metric == first.metric
            and st.nlist == first.nlist and st.tier_sizes == first.tier_sizes
            and (st.centroids is None) == (first.centroids is None)
            and (st.centroids is None or np.array_equal(st.centroids, first.centroids))
        )  # fmt: skip
        if not same:
            raise ValueError("segments of different codecs or centroids cannot be merged")
    keep = np.asarray(keep, np.int64)
    picks, lists = [], []
    for st in states:
        rows = np.flatnonzero(np.isin(st.ids, keep))
        picks.append(rows)
        sizes = np.diff(st.list_offsets)
        lists.append(np.repeat(np.arange(sizes.size), sizes)[rows])
    lst = np.concatenate(lists)
    order = np.argsort(lst, kind="stable")
    nlist = first.list_offsets.size - 1
    offsets = np.zeros(nlist + 1, np.int64)
    np.cumsum(np.bincount(lst, minlength=nlist), out=offsets[1:])

    def gather(name: str) -> np.ndarray | None:
        if getattr(first, name) is None:
            return None
        pairs = zip(states, picks, strict=True)
        whole = np.concatenate([getattr(st, name)[rows] for st, rows in pairs])
        return np.ascontiguousarray(whole[order])

    state = dataclasses.replace(
        first,
        list_offsets=offsets,
        ids=gather("ids"),
        norms=gather("norms"),
        codes=gather("codes"),
        rerank_codes=gather("rerank_codes"),
        next_id=max(st.next_id for st in states),
        pending_check=None,
    )
    return Index.from_state(state)
