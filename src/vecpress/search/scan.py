"""The search path every index goes through: plan, scan, merge, re-rank.

A flat index is an IVF index with one list that every query probes. The rows of
each list are contiguous (the index keeps its rows sorted by list), and lists
are cut into *items* of at most :data:`CHUNK` rows so that the work spreads over
the threads even for a single query or a single list. A search then:

1. **plans**: for each query, the items of its probed lists, each (query,
   item) pair with an output slot and an additive score term (the centring
   offset of the codec, plus ``<q, c_list>`` when lists hold residuals);
2. **scans**: grid codecs (``int``, ``lvq``, ``rq``, ``kl``) run the fused compiled
   scan + top-k (:mod:`vecpress.kernels.grid_search`) over all items at once;
   every other codec scores item by item with :meth:`Codec.score`'s quantizer
   and keeps the top-k of each with the shared :func:`~vecpress.search.topk.topk`;
   (a filtered search masks the rows outside its allowlist there, or scans a
   stage of the allowed rows alone: :mod:`vecpress.search.filtered`);
3. **merges** the slots of each query (:func:`~vecpress.kernels.grid_search.merge_slots`);
4. **re-ranks** (optional): the first stage's best ``R`` rows are re-scored
   with the index's second tier (:class:`Tier`, :func:`tier_scores`:
   :meth:`Codec.score_candidates`; for a two-level codec, with both levels of
   the candidates' rows) and the best ``k`` kept with
   :func:`~vecpress.search.topk.topk`; ``rerank="auto"`` chooses ``R`` per query
   (:mod:`vecpress.search.certify`).

Scores follow the index's metric: the estimated inner product (``"ip"``,
``"cosine"``) or the negated estimated squared distance (``"l2"``).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..codecs.codec import Codec
from ..codecs.quantizers.additive import Additive
from ..codecs.quantizers.base import GridQuantizer
from ..codecs.quantizers.pq import PQ
from ..codecs.transforms import Center, Hadamard
from ..kernels import read_only
from ..kernels.fastscan import fastscan_layout, fastscan_topk, quantize_luts
from ..kernels.fields import read_fields
from ..kernels.grid_search import (
    grid_scan_topk,
    grid_topk,
    merge_slots,
    plan_pairs,
    probed_ready,
)
from ..kernels.progressive import Bound
from ..kernels.queries import READY, prepare_few
from ..kernels.scan import HAVE_VNNI, grid_queries, query_limbs
from ..threads import single_threaded_blas
from . import planes as _planes
from .topk import topk

#: rows per work item
CHUNK = 8192
#: queries planned and scanned together (bounds the slot memory)
QUERY_BATCH = 1024
#: grid codes scanned by :func:`~vecpress.kernels.grid_search.grid_topk` (plan, scan, sort
#: and merge in one compiled call; the VNNI scan), else by the steps one by one
_ONE_CALL_SCAN = HAVE_VNNI
#: up to this many query values (nq x d), transforms without a dense matrix run without
#: limiting BLAS's threads: their products (``center``'s ``q @ mean``) stay below the
#: size at which OpenBLAS threads a matrix-vector product (9,216 elements)
SMALL_PRODUCT = 4096
#: most (row, query) pairs a progressive scan holds at once (two float32 each: 64 MiB): a
#: batch of queries is cut so that its queries times the index's rows stay below it
PROGRESSIVE_BOUNDS = 1 << 23


@dataclass(frozen=True)
class Items:
    """Work items of a list layout: item ``w`` covers rows ``starts[w]:ends[w]``;
    the items of list ``l`` are ``list_ptr[l]:list_ptr[l + 1]``."""

    starts: np.ndarray
    ends: np.ndarray
    list_ptr: np.ndarray

    @functools.cached_property
    def sizes(self) -> np.ndarray:
        """Rows per item (made once)."""
        return self.ends - self.starts

    @functools.cached_property
    def list_rows(self) -> np.ndarray:
        """Rows per list (made once)."""
        ends = np.zeros(self.sizes.size + 1, np.int64)
        np.cumsum(self.sizes, out=ends[1:])
        return ends[self.list_ptr[1:]] - ends[self.list_ptr[:-1]]


def make_items(list_offsets: np.ndarray, chunk: int | None = None) -> Items:
    """Cut each list's row range ``list_offsets[l]:list_offsets[l + 1]`` into items.

    Examples
    --------
    >>> it = make_items(np.array([0, 5, 5, 12]), chunk=4)
    >>> it.starts.tolist(), it.ends.tolist(), it.list_ptr.tolist()
    ([0, 4, 5, 9], [4, 5, 9, 12], [0, 2, 2, 4])
    """
    chunk = CHUNK if chunk is None else chunk
    off = np.asarray(list_offsets, np.int64)
    sizes = np.diff(off)
    per = (sizes + chunk - 1) // chunk
    list_ptr = np.zeros(off.size, np.int64)
    np.cumsum(per, out=list_ptr[1:])
    owner = np.repeat(np.arange(sizes.size), per)
    local = np.arange(list_ptr[-1]) - list_ptr[owner]
    starts = off[owner] + local * chunk
    ends = np.minimum(starts + chunk, off[owner + 1])
    return Items(starts, ends, list_ptr)


@dataclass(frozen=True)
class Plan:
    """Who scans what: item ``w`` is scanned for the pairs ``qptr[w]:qptr[w + 1]``
    (query ``qidx``, slot ``qslot``, additive term ``qadd``); query ``i`` owns the
    slots ``qslot_ptr[i]:qslot_ptr[i + 1]``."""

    qptr: np.ndarray
    qidx: np.ndarray
    qslot: np.ndarray
    qadd: np.ndarray
    qslot_ptr: np.ndarray

    @property
    def nslots(self) -> int:
        return int(self.qslot_ptr[-1])


def make_plan(items: Items, lists: np.ndarray, adds: np.ndarray) -> Plan:
    """Plan the scan of ``lists[i]`` (``int64[nq, P]``, ``-1`` = none) for each query,
    with ``adds[i, p]`` added to every score from list ``lists[i, p]``.

    Slots are numbered query by query, pair by pair, item by item; each item's
    pairs keep that order.

    Examples
    --------
    >>> items = make_items(np.array([0, 5, 12]), chunk=4)
    >>> plan = make_plan(items, np.array([[1, -1], [0, 1]]), np.zeros((2, 2), np.float32))
    >>> plan.qptr.tolist(), plan.qidx.tolist(), plan.qslot.tolist(), plan.qslot_ptr.tolist()
    ([0, 1, 2, 4, 6], [1, 1, 0, 1, 0, 1], [2, 3, 0, 4, 1, 5], [0, 2, 6])
    """
    lists = np.ascontiguousarray(lists, np.int64)
    adds = np.ascontiguousarray(adds, np.float32)
    return Plan(*plan_pairs(items.list_ptr, lists, adds))


def row_terms(codec: Codec, codes: np.ndarray, out: np.ndarray | None = None):
    """Per-row terms ``(a, b, c)`` of a grid codec's rows (``c``: the centring term), read
    in one pass over the rows (:func:`~vecpress.kernels.fields.read_fields`, into ``out``
    if given); the same values as ``quantizer.grid_rows`` and ``Codec._split`` give."""
    quant = codec.quantizer
    center = codec._center
    c = 0.0 if center is None else (quant.code_size, quant.field_dtype, center.term_exp)
    a, b, c = read_fields(codes, (*quant.grid_row_fields(), c), out=out)
    return a, b, c


class Terms:
    """:func:`row_terms` of a grid codec's rows, computed the first time a scan reads them.

    ``arrays`` are the three ``float32[n]`` terms; :meth:`ensure` fills the
    rows of the items a scan is about to read, so a search of a memory-mapped
    IVF index reads only its probed lists' rows, not the whole file. Searches
    may run concurrently: one fills at a time (:func:`read_fields` scales some
    terms in place, so two filling the same rows at once scaled them twice), and
    a row is marked ready only after its terms are written.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((10, 8)).astype(np.float32)
    >>> codec = Codec.from_spec("rq4").fit(x)
    >>> codes = codec.encode(x)
    >>> terms = Terms(codec, codes)
    >>> terms.ensure(make_items(np.array([0, 4, 10])), np.array([1]))
    >>> bool(np.array_equal(terms.arrays[0][4:], row_terms(codec, codes[4:])[0]))
    True
    """

    def __init__(self, codec: Codec, codes: np.ndarray) -> None:
        self.codec = codec
        self.codes = codes
        n = codes.shape[0]
        self._all = np.empty((3, n), np.float32)
        self.arrays = tuple(self._all)
        self._done = np.zeros(n, bool)  # by row: whatever the items, a row is filled once
        self._complete = n == 0  # every row filled: nothing left to check
        self._filling = threading.Lock()

    @property
    def complete(self) -> bool:
        """Whether every row is filled (:meth:`ensure` has nothing left to do)."""
        return self._complete

    def ready(self, items: Items, lists: np.ndarray) -> bool:
        """Whether the rows of every item of the lists ``lists`` probes (``-1``: none) are
        filled: one compiled pass over those items
        (:func:`~vecpress.kernels.grid_search.probed_ready`), where :meth:`ensure` takes
        Python's (an IVF index's rows fill as its lists are first probed)."""
        return self._complete or probed_ready(
            items.list_ptr, lists, items.starts, items.ends, self._done, True
        )

    def ensure(self, items: Items, which: np.ndarray) -> None:
        """Fill the rows of ``items`` number ``which`` (those not filled yet)."""
        if self._complete:
            return
        starts, ends = items.starts[which], items.ends[which]
        todo = [(s, e) for s, e in zip(starts.tolist(), ends.tolist(), strict=True) if e > s]
        with self._filling:
            todo = [(s, e) for s, e in todo if not (self._done[s] and self._done[e - 1])]
            for s, e in _coalesce(todo):
                row_terms(self.codec, self.codes[s:e], out=self._all[:, s:e])
                self._done[s:e] = True
            if todo:
                self._complete = bool(self._done.all())


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged ``[s, e)`` ranges (adjacent ones joined)."""
    out: list[list[int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def query_chain(codec: Codec) -> tuple | None:
    """The arrays :func:`~vecpress.kernels.queries.prepare_few` maps a codec's queries
    with, ``(mean, signs, perms, cos, sin)`` (empty where the stage is absent), for
    codecs whose transforms are ``center``, ``hd<r>`` (mixing steps) or both in that
    order, or none; ``None`` for any other chain (mapped by ``Codec._transform_queries``).
    Contiguous writable copies: one compiled specialisation, whatever the codec's arrays
    (a mapped file's are read-only).

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    >>> [a.shape for a in query_chain(Codec.from_spec("center,hd2,rq4").fit(x))]
    [(8,), (2, 8), (2, 8), (2, 4), (2, 4)]
    >>> query_chain(Codec.from_spec("pca4,rq4").fit(x)) is None
    True
    """
    stages = list(codec.transforms)
    d = codec.d
    mean = np.zeros(0, np.float32)
    steps = (
        np.zeros((0, d), np.float32), np.zeros((0, d), np.int32),
        np.zeros((0, d // 2), np.float32), np.zeros((0, d // 2), np.float32),
    )  # fmt: skip
    if stages and isinstance(stages[0], Center):
        mean = stages.pop(0).mean_
    if stages and isinstance(stages[0], Hadamard) and stages[0].mix != 1:
        h = stages.pop(0)
        steps = (h.signs_, h.perms_, h.cos_, h.sin_)
    if stages:
        return None
    mean = np.array(mean, np.float32)
    signs, perms, cos, sin = (np.array(a, dt) for a, dt in zip(steps, _STEP_DTYPES, strict=True))
    return mean, signs, perms, cos, sin


_STEP_DTYPES = (np.float32, np.int32, np.float32, np.float32)


def prepare_queries(q: np.ndarray, cosine: bool, chain: tuple):
    """Up to :data:`~vecpress.kernels.queries.FEW` float32 queries checked, normalised
    (``cosine``) and mapped by ``chain`` (:func:`query_chain`) in one compiled call:
    ``(rows, squared norms, (mapped, offset))`` as ``Index._prepare`` and
    ``Codec._transform_queries`` give them, or ``None`` where a row is non-finite,
    beyond the norm limit or zero under cosine (the general path names it).

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    >>> codec = Codec.from_spec("center,hd2,rq4").fit(x)
    >>> rows, sq, (mapped, offset) = prepare_queries(x[:2], False, query_chain(codec))
    >>> want, off = codec._transform_queries(x[:2])
    >>> bool((mapped == want).all() and (offset == off).all())
    True
    """
    n = q.shape[0]
    unit = np.empty(q.shape, np.float32)
    mapped = np.empty(q.shape, np.float32)
    sq = np.empty(n, np.float64)
    offset = np.empty(n, np.float32)
    if prepare_few(read_only(q), cosine, *chain, unit, sq, mapped, offset) != READY:
        return None
    return unit, sq, (mapped, offset)


def is_grid(codec: Codec) -> bool:
    """Whether the codec's scores run through the fused integer scan."""
    return isinstance(codec.quantizer, GridQuantizer)


@dataclass
class Stage:
    """What the first stage scans: a fitted codec, its rows (sorted by list), the
    lists' items, and per-row extras (``norms``: exact ``|x|²`` for l2;
    ``terms``: :class:`Terms` for grid codecs, filled as items are scanned)."""

    codec: Codec
    codes: np.ndarray
    items: Items
    norms: np.ndarray | None
    terms: Terms | None
    #: fast-scan layouts of 4-bit PQ items, made on first use (:func:`_scan_fastscan`)
    blocked: dict = field(default_factory=dict)
    #: the first stage's error against the re-ranking tier, measured on first use
    #: (:mod:`vecpress.search.certify`)
    error_model: object | None = None
    #: sign planes for the progressive scan, made on first use (:mod:`vecpress.search.planes`)
    planes: object | None = None
    #: filtered search: the rows a result may hold (``bool[n]``; :mod:`vecpress.search.filtered`)
    allow: np.ndarray | None = None
    #: ``(order, sorted ids)`` of the stored ids, made on the first filtered search
    id_lookup: tuple | None = None
    #: the list of each row (IVF), made on the first filtered search
    row_lists: np.ndarray | None = None
    #: whether the codec can be read sign plane first (:func:`vecpress.search.planes.supports`)
    progressive: bool = False
    #: the progressive scan with the stage's arrays bound (:func:`_scan_progressive`)
    bound: Bound | None = None
    #: the arrays :func:`prepare_queries` maps queries with (:func:`query_chain`), or
    #: ``None`` where the codec's transforms are not a chain it makes
    chain: tuple | None = None


def scan(
    stage: Stage,
    q: np.ndarray,
    qsq: np.ndarray,
    lists: np.ndarray,
    adds: np.ndarray,
    k: int,
    *,
    progressive: bool = False,
    mapped: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows of the probed lists for each query: ``(rows int64, scores float32)``.

    ``q`` are the prepared (normalised for cosine) float32 queries, ``qsq``
    their squared norms (used by l2, ``norms`` set), ``lists``/``adds`` as in
    :func:`make_plan`. ``progressive``: grid codes are read sign plane first
    (:mod:`vecpress.kernels.progressive`; the stage must support it,
    :func:`vecpress.search.planes.supports`). ``mapped``: the queries already mapped
    into the codec's space, ``(q', offset)`` as ``Codec._transform_queries`` gives
    them (:func:`prepare_queries`), or ``None`` to map them here.
    """
    nq = q.shape[0]
    batch = QUERY_BATCH
    if progressive:  # two numbers per row and query: at most PROGRESSIVE_BOUNDS pairs a batch
        batch = max(1, min(batch, PROGRESSIVE_BOUNDS // max(1, stage.codes.shape[0])))
    if nq <= batch:  # one batch (one query at a time): its arrays are the result
        return _scan_batch(stage, q, qsq, lists, adds, k, progressive, mapped)
    rows = np.empty((nq, k), np.int64)
    scores = np.empty((nq, k), np.float32)
    for s in range(0, nq, batch):
        e = min(nq, s + batch)
        part = None if mapped is None else (mapped[0][s:e], mapped[1][s:e])
        rows[s:e], scores[s:e] = _scan_batch(
            stage, q[s:e], qsq[s:e], lists[s:e], adds[s:e], k, progressive, part
        )
    return rows, scores


def _scan_batch(stage, q, qsq, lists, adds, k, progressive=False, mapped=None):
    codec = stage.codec
    if mapped is not None:
        qt, offset = mapped
    # small products: no spinning BLAS threads (vecpress.threads); a few queries through
    # transforms without a dense matrix make products too small for BLAS to thread
    elif q.size <= SMALL_PRODUCT and not any(t.dense for t in codec.transforms):
        qt, offset = codec._transform_queries(q)
    else:
        with single_threaded_blas():
            qt, offset = codec._transform_queries(q)
    adds = adds + offset[:, None]
    if progressive:
        return _scan_progressive(stage, qt, qsq, lists, adds, k)
    l2 = stage.norms is not None
    if stage.terms is not None:  # a grid codec (Stage.terms)
        quant = codec.quantizer
        qe, center, qoff, t = quant.grid_queries(qt)
        bits = quant.param
        items = stage.items
        if not stage.terms.ready(items, lists):  # the scanned items' terms
            stage.terms.ensure(items, np.flatnonzero(np.diff(make_plan(items, lists, adds).qptr)))
        norms = stage.norms if l2 else np.zeros(1, np.float32)
        t = np.asarray(t, np.float32)
        if _ONE_CALL_SCAN:  # plan, scan, sort and merge in one compiled call
            return grid_topk(
                stage.codes, bits, quant.grid_dims, items.starts, items.ends, items.list_ptr,
                np.ascontiguousarray(lists, np.int64), np.ascontiguousarray(adds, np.float32),
                qe, center, qoff, t, *stage.terms.arrays, norms, qsq.astype(np.float32), k,
                l2=l2, layout=quant.grid_layout,
            )  # fmt: skip
        plan = make_plan(items, lists, adds)
        qi, qs, off = grid_queries(qe, center, qoff, bits)
        items = (items.starts, items.ends, plan.qptr, plan.qidx, plan.qslot, plan.qadd)
        slot_s, slot_i = grid_scan_topk(
            stage.codes, bits, quant.grid_dims, *items, qi, query_limbs(bits), qs, off, t,
            *stage.terms.arrays, norms, qsq.astype(np.float32), plan.nslots, k, l2=l2,
            layout=quant.grid_layout,
        )  # fmt: skip
    elif is_fastscan(codec) and not l2 and not codec._centered and stage.allow is None:
        plan = make_plan(stage.items, lists, adds)
        slot_s, slot_i = _scan_fastscan(stage, qt, plan, k)
    else:
        plan = make_plan(stage.items, lists, adds)
        slot_s, slot_i = _scan_generic(stage, qt, qsq, plan, k, l2)
    res_s = np.empty((q.shape[0], k), np.float32)
    res_i = np.empty((q.shape[0], k), np.int64)
    merge_slots(slot_s, slot_i, plan.qslot_ptr, k, res_s, res_i)
    return res_i, res_s


def _scan_progressive(stage, qt, qsq, lists, adds, k):
    """:func:`_scan_batch` of a grid stage read sign plane first, in one compiled call
    (:func:`~vecpress.kernels.progressive.progressive_search`, its arrays bound once a
    stage: :class:`~vecpress.kernels.progressive.Bound`); the rows' terms and planes of
    the probed items are made first where some are missing."""
    codec = stage.codec
    quant = codec.quantizer
    items = stage.items
    if stage.planes is None:
        stage.planes = _planes.Planes(codec, stage.codes, items)
    planes = stage.planes
    if not (stage.terms.ready(items, lists) and planes.ready(lists)):
        which = np.flatnonzero(np.diff(make_plan(items, lists, adds).qptr))
        stage.terms.ensure(items, which)
        planes.ensure(which, stage.terms.arrays, stage.norms)
    qe, center, qoff, t = quant.grid_queries(qt)
    sizes = items.list_rows  # one (row, query) pair per row a query reads (flat: all)
    rows = (
        lists.shape[0] * int(sizes[0]) if sizes.size == 1 else int(sizes[lists[lists >= 0]].sum())
    )
    scan = stage.bound
    if scan is None:
        l2 = stage.norms is not None
        scan = Bound(
            stage.codes, int(quant.param), quant.grid_dims,
            (items.starts, items.ends, items.list_ptr), *stage.terms.arrays, planes.arrays,
            stage.norms if l2 else _NO_NORMS, z=planes.z, terms=planes.terms, l2=l2,
        )  # fmt: skip
        stage.bound = scan  # the arrays are the stage's for good; the planes' z is set
    with planes.scratch(2 * rows) as work:
        scores, found, _ = scan(
            lists, adds, (qe, center, qoff), t, qsq.astype(np.float32), k, scratch=work
        )
    return found, scores


#: the norms argument of a scan that reads none (not l2)
_NO_NORMS = np.zeros(1, np.float32)


def is_fastscan(codec: Codec) -> bool:
    """Whether the codec is a 4-bit product quantizer (scanned by fast-scan; not the
    additive quantizers, :mod:`vecpress.codecs.quantizers.additive`)."""
    quant = codec.quantizer
    return isinstance(quant, PQ) and quant.bits == 4 and not isinstance(quant, Additive)


def _scan_fastscan(stage, qt, plan, k):
    """4-bit PQ items by fused fast-scan + top-k (:mod:`vecpress.kernels.fastscan`): the
    queries' 8-bit tables once per batch, each item's blocked layout once per stage.
    Ranks by the exact integer table sums (ties to the smaller row), i.e. by
    ``codec.score`` wherever float32 keeps distinct sums distinct."""
    quant = stage.codec.quantizer
    m = quant.param
    lut8, scale, bias = quantize_luts(quant.tables(qt))
    slot_s = np.full((plan.nslots, k), -np.inf, np.float32)
    slot_i = np.full((plan.nslots, k), -1, np.int64)
    for w in np.flatnonzero(np.diff(plan.qptr)):
        p0, p1 = plan.qptr[w], plan.qptr[w + 1]
        s, e = int(stage.items.starts[w]), int(stage.items.ends[w])
        if w not in stage.blocked:
            stage.blocked[w] = fastscan_layout(np.ascontiguousarray(stage.codes[s:e]), m)
        who = plan.qidx[p0:p1]
        sc, pos = fastscan_topk(
            stage.blocked[w], e - s, m, np.ascontiguousarray(lut8[who]), k, scale[who], bias[who]
        )
        slot_i[plan.qslot[p0:p1]] = np.where(pos >= 0, pos + s, -1)
        slot_s[plan.qslot[p0:p1]] = sc + plan.qadd[p0:p1, None]
    return slot_s, slot_i


def _scan_generic(stage, qt, qsq, plan, k, l2):
    """Item by item with the quantizer's own ``score`` (codecs without a grid kernel)."""
    codec = stage.codec
    slot_s = np.full((plan.nslots, k), -np.inf, np.float32)
    slot_i = np.full((plan.nslots, k), -1, np.int64)
    qsq32 = qsq.astype(np.float32)
    prepared = codec.quantizer.prepare(qt)  # the queries' tables, once for every item
    for w in np.flatnonzero(np.diff(plan.qptr)):
        p0, p1 = plan.qptr[w], plan.qptr[w + 1]
        s, e = int(stage.items.starts[w]), int(stage.items.ends[w])
        who = plan.qidx[p0:p1]
        qcodes, term = codec._split(stage.codes[s:e])  # only the item's rows are read
        est = codec.quantizer.score_prepared(prepared, who, qcodes)
        if term is not None:
            est += term[None, :]
        est += plan.qadd[p0:p1, None]
        if l2:
            est *= 2
            est -= stage.norms[None, s:e]
            est -= qsq32[who, None]
        if stage.allow is not None:
            est[:, ~stage.allow[s:e]] = -np.inf
        pos, sc = topk(est, k)
        slot_i[plan.qslot[p0:p1]] = np.where(pos >= 0, pos + s, -1)
        slot_s[plan.qslot[p0:p1]] = sc
    return slot_s, slot_i


@dataclass(frozen=True)
class Tier:
    """What re-ranks candidates: a codec, a way to reach the candidates' full code
    rows, and an optional term added to each estimate -- one composition for every
    second tier (as faiss's ``IndexRefine(base, refine)``).

    Attributes
    ----------
    codec : Codec
        Scores the candidates with its own estimator (:meth:`Codec.score_candidates`).
    gather : callable
        ``gather(rows) -> (codes, rows')``: code rows of ``codec`` and the candidates'
        positions in them (``-1`` stays ``-1``).
    offset : callable, optional
        ``offset(q, rows) -> float32[nq, R]`` added to the estimates (IVF residual
        codes: ``<q, centroid of the row's list>``).
    """

    codec: Codec
    gather: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    offset: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


def stored_tier(codec: Codec, codes: np.ndarray) -> Tier:
    """A re-ranking codec whose rows are stored whole (``rerank_spec``)."""
    return Tier(codec, lambda rows: (codes, rows))


def levels_tier(codec: Codec, first: np.ndarray, second: np.ndarray, offset=None) -> Tier:
    """Both levels of a two-level codec, stored as :meth:`Codec.split_tiers` cuts them:
    the candidates' rows are joined back (:meth:`Codec.join_tiers`)."""

    def gather(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        valid = rows >= 0
        flat = np.where(valid, rows, 0).ravel()
        local = np.where(valid, np.arange(rows.size).reshape(rows.shape), -1)
        return codec.join_tiers(first[flat], second[flat]), local

    return Tier(codec, gather, offset)


def tier_scores(
    tier: Tier, norms: np.ndarray | None, q: np.ndarray, qsq: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """The tier's metric scores of candidate ``rows``: float32[nq, R], ``-inf`` at ``-1``
    (l2: ``2 est - |x|² - |q|²`` with the exact stored ``norms``)."""
    codes, local = tier.gather(rows)
    est = tier.codec.score_candidates(q, codes, local)
    if tier.offset is not None:
        est += tier.offset(q, rows)
    if norms is not None:
        valid = rows >= 0
        est *= 2
        est -= np.where(valid, norms[np.maximum(rows, 0)], 0)
        est -= qsq.astype(np.float32)[:, None]
        est[~valid] = -np.inf
    return est
