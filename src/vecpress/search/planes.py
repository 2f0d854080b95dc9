"""Sign planes of a grid index's rows, for the progressive scan.

:class:`Planes` holds what :func:`~vecpress.kernels.progressive.progressive_scan_topk`
reads first: each row's sign plane (the top bit of every code, in fast-scan
blocks per work item) and one word of its terms
(:func:`~vecpress.kernels.progressive.pack_terms`), and what the bounds of the few
rows it lets through read: four float32 terms
(:func:`~vecpress.kernels.progressive.fold_terms`).
They are derived from the stored codes, item by item the first time a scan
reads the item (as :class:`~vecpress.search.scan.Terms`), in one compiled pass
over the item's codes where they lie
(:func:`~vecpress.kernels.progressive.item_planes`: about 0.2 s per million
384-d rows on one core here, so the first progressive search of a freshly
opened million-row index answers in about 0.4 s), and cost ``d / 8 + 21``
bytes of memory per row (the terms 16, the word 4, the blocks' limits 32 per 32
rows); the file holds only the codes.

The bound's width ``z`` (error deviations) starts from the theory's
:data:`Z` and is widened where the rows disagree with it: :func:`calibrate_z`
measures the normalised errors of stored rows, used as queries, against other
stored rows, and takes the largest of :data:`Z`, ``Z`` times their root mean
square, and their quantile at the tail :data:`Z` stands for. Codes that do not
live in a randomly rotated space (``int4`` without a rotation, say) thus get a
wider band instead of a wrong one.
"""

from __future__ import annotations

import numpy as np

from ..codecs.codec import Codec
from ..kernels import read_only
from ..kernels.bitpack import unpack
from ..kernels.grid_search import probed_ready
from ..kernels.progressive import (
    LIMITS,
    MAX_BITS,
    MAX_DIMS,
    TERMS_ALL,
    TERMS_C,
    TERMS_NONE,
    block_limits,
    item_planes,
    plane_rows,
    sign_plane_dims,
)
from ..kernels.scan import grid_queries

#: error deviations a bound allows by theory: a one-sided normal tail of 3.2e-5 per row
Z = 4.0
#: two-sided normal tail beyond :data:`Z` (the quantile :func:`calibrate_z` checks)
Z_TAIL = 6.334e-5
#: stored rows used as queries, and rows they are measured against, by :func:`calibrate_z`
CALIBRATION_QUERIES = 256
CALIBRATION_ROWS = 2048


def supports(codec: Codec) -> bool:
    """Whether a codec's first stage can be scanned progressively: grid codes of one
    width of at most :data:`~vecpress.kernels.progressive.MAX_BITS` bits, in at most
    :data:`~vecpress.kernels.progressive.MAX_DIMS` dimensions (where the codec knows
    them: fitted).

    Examples
    --------
    >>> supports(Codec.from_spec("hd2,rq4")), supports(Codec.from_spec("hd2,rq8"))
    (True, False)
    >>> supports(Codec.from_spec("pq8x4"))
    False
    """
    quant = codec.quantizer
    return (
        hasattr(quant, "grid_queries")
        and quant.grid_layout is None
        and 1 <= int(quant.param) <= MAX_BITS
        and (quant.grid_dims is None or int(quant.grid_dims) <= MAX_DIMS)
    )


def _terms_mode(codec: Codec) -> int:
    """Which of the rows' ``a``, ``b``, ``c`` the bound must read
    (:data:`~vecpress.kernels.progressive.TERMS_ALL`), unless ``b`` is zero and the grid
    is centred on its middle (``rq``): then ``c`` only where the codec is centred (its
    term), else none."""
    quant = codec.quantizer
    _, center, _, _ = quant.grid_queries(np.zeros((1, quant.grid_dims), np.float32))
    mid = ((1 << int(quant.param)) - 1) / 2
    b = quant.grid_row_fields()[1]
    plain = np.ndim(center) == 0 and float(center) == mid
    if not (plain and isinstance(b, float) and b == 0.0):
        return TERMS_ALL
    return TERMS_C if codec._center is not None else TERMS_NONE


class Planes:
    """Sign planes and bound terms of a grid codec's rows, made per item on first use.

    Examples
    --------
    >>> from vecpress.search.scan import Terms, make_items
    >>> x = np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32)
    >>> codec = Codec.from_spec("hd2,rq4").fit(x)
    >>> codes = codec.encode(x)
    >>> items = make_items(np.array([0, 40]))
    >>> terms = Terms(codec, codes)
    >>> terms.ensure(items, np.array([0]))
    >>> planes = Planes(codec, codes, items)
    >>> planes.ensure(np.array([0]), terms.arrays)
    >>> planes.blocked.shape, bool(planes.terms), bool(planes.row_terms[2].min() > 0)
    ((2, 64), False, True)
    >>> planes.limits.shape
    (2, 8)
    """

    def __init__(self, codec: Codec, codes: np.ndarray, items) -> None:
        quant = codec.quantizer
        self.codec = codec
        self.codes = codes
        self.items = items
        self.bits = int(quant.param)
        self.d = int(quant.grid_dims)
        #: which of the rows' a, b, c the bound reads (:func:`_terms_mode`)
        self.terms = _terms_mode(codec)
        n = codes.shape[0]
        nblocks = (items.ends - items.starts + 31) // 32
        self.bptr = np.zeros(nblocks.size + 1, np.int64)
        np.cumsum(nblocks, out=self.bptr[1:])
        npairs = (sign_plane_dims(self.d) + 1) // 2
        self.blocked = np.zeros((int(self.bptr[-1]), 32 * npairs), np.uint8)
        #: fold_terms's F, H, eps, A of every row (rows of items not made yet: zeros)
        self.row_terms = np.zeros((4, n), np.float32)
        #: pack_terms's word of every row (rows of items not made yet: zeros)
        self.words = np.zeros(n, np.uint32)
        #: per block of 32 rows, the largest magnitudes of its rows' terms (block_limits)
        self.limits = np.zeros((int(self.bptr[-1]), LIMITS), np.float32)
        self._done = np.zeros(nblocks.size, bool)
        self._complete = nblocks.size == 0
        self.z: float | None = None
        self._scratch: list[np.ndarray] = []

    def scratch(self, size: int) -> _Lent:
        """A float32 vector of at least ``size`` values for a scan's first pass (each
        row's table sum and point,
        :func:`~vecpress.kernels.progressive.progressive_scan_topk`), lent for a ``with``
        block and given back for the next scan when the block ends: searches allocate
        nothing in proportion to the rows once the first has run (one vector per search
        running at once).

        Examples
        --------
        >>> from vecpress.search.scan import make_items
        >>> codec = Codec.from_spec("rq4").fit(np.ones((4, 8), np.float32))
        >>> planes = Planes(codec, codec.encode(np.ones((4, 8), np.float32)),
        ...                 make_items(np.array([0, 4])))
        >>> with planes.scratch(100) as first:
        ...     pass
        >>> with planes.scratch(60) as again:
        ...     again is first
        True
        """
        return _Lent(self._scratch, size)

    @property
    def complete(self) -> bool:
        """Whether every item's planes are made (:meth:`ensure` has nothing left to do)."""
        return self._complete

    def ready(self, lists: np.ndarray) -> bool:
        """Whether the planes of every item of the lists ``lists`` probes (``-1``: none)
        are made (one compiled pass over those items,
        :func:`~vecpress.kernels.grid_search.probed_ready`)."""
        items = self.items
        return self._complete or probed_ready(
            items.list_ptr, lists, items.starts, items.ends, self._done, False
        )

    @property
    def arrays(self) -> tuple:
        """``(blocked, bptr, F, H, eps, A, words, limits)`` as the progressive scan takes
        them."""
        return (self.blocked, self.bptr, *self.row_terms, self.words, self.limits)

    def ensure(self, which: np.ndarray, terms: tuple, norms: np.ndarray | None = None) -> None:
        """Make the planes of items number ``which`` (those not made yet), with
        ``terms`` the rows' ``(a, b, c)`` (``Terms.arrays``, filled for those items) and
        ``norms`` their ``|x|²`` where the scan is l2; the first call also calibrates
        :attr:`z` on those items' rows."""
        if self._complete:
            return
        todo = np.array([w for w in np.asarray(which).tolist() if not self._done[w]], np.int64)
        if todo.size == 0:
            return
        starts, ends = self.items.starts[todo], self.items.ends[todo]
        if self.z is None:
            rows = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
            self.z = calibrate_z(self.codec, self.codes, rows)
        layout = np.array([[0, self.d, self.bits, 0]], np.int64)
        a, b, c = terms
        item_planes(
            self.codes, layout, self.bits, self.d, starts, ends, self.bptr[todo],
            self.blocked, *self.row_terms, self.words, a, self.z,
        )  # fmt: skip
        big_f, _, eps, big_a = self.row_terms
        block_limits(
            starts, ends, self.bptr[todo], big_f, eps, big_a, a, b, c,
            read_only(_NO_NORMS if norms is None else norms), self.limits,
        )  # fmt: skip
        self._done[todo] = True
        self._complete = bool(self._done.all())


#: the norms of a scan that reads none (not l2)
_NO_NORMS = np.zeros(0, np.float32)


class _Lent:
    """The context manager of :meth:`Planes.scratch` (a plain class: a search enters one
    per call, and a generator-based one costs microseconds)."""

    __slots__ = ("_buf", "_pool", "_size")

    def __init__(self, pool: list, size: int) -> None:
        self._pool = pool
        self._size = size

    def __enter__(self) -> np.ndarray:
        try:
            buf = self._pool.pop()  # atomic: concurrent searches never share one
        except IndexError:
            buf = None
        if buf is None or buf.shape[0] < self._size:
            buf = np.empty(max(self._size, 1), np.float32)
        self._buf = buf
        return buf

    def __exit__(self, *exc) -> None:
        self._pool.append(self._buf)


def calibrate_z(codec, codes, rows, f=None, g=None, *, seed: int = 0) -> float:
    """The bound's width in error deviations for a codec's rows (see the module docstring).

    ``rows`` are row numbers and ``f``, ``g`` their
    :func:`~vecpress.kernels.progressive.plane_rows` terms (in the same order; by
    default computed here for the rows measured against); up to
    :data:`CALIBRATION_QUERIES` of them, decoded, serve as queries against up to
    :data:`CALIBRATION_ROWS` others. Returns at least :data:`Z`.
    """
    rng = np.random.default_rng(seed)
    quant = codec.quantizer
    bits, d = int(quant.param), int(quant.grid_dims)
    pick = np.sort(rng.choice(rows.size, min(rows.size, CALIBRATION_QUERIES), replace=False))
    against = np.sort(rng.choice(rows.size, min(rows.size, CALIBRATION_ROWS), replace=False))
    qcodes, _ = codec._split(np.ascontiguousarray(codes[rows[pick]]))
    x = quant.decode(qcodes)
    x = x[np.isfinite(x).all(axis=1) & (np.abs(x).max(axis=1, initial=0) > 0)]
    if x.shape[0] == 0:
        return Z
    qe, center, qoff, _ = quant.grid_queries(x)
    qi, _, _ = grid_queries(qe, center, qoff, bits)
    # the products below are of integers (|qi| <= 127, 2 c - (2^b - 1) odd): float32 sums
    # are exact while every sum stays below 2^24 (4 bits at d = 384: below 2^20); twice as fast
    full = (1 << bits) - 1
    dtype = np.float32 if 127 * full * d < 1 << 24 else np.float64
    qi = qi.astype(dtype)
    sample = np.ascontiguousarray(codes[rows[against]])
    if f is None or g is None:
        f, g, vn = (np.empty(against.size, np.float32) for _ in range(3))
        signs = np.empty((against.size, (d + 7) // 8), np.uint8)
        layout = np.array([[0, d, bits, 0]], np.int64)
        plane_rows(sample, layout, bits, d, signs, f, g, vn, np.empty(against.size, np.int32))
    else:
        f, g = f[against], g[against]
    rcodes, _ = codec._split(sample)
    c = unpack(rcodes, bits, d)
    exact = (qi @ (2 * c.astype(dtype) - full).T).astype(np.float64) / 2
    qsum = qi.sum(axis=1, keepdims=True, dtype=np.float64)
    sig = 2 * (qi @ (c > full / 2).astype(dtype).T).astype(np.float64) - qsum
    qi = qi.astype(np.float64)
    est = f[None, :].astype(np.float64) * sig
    # the deviation the scan's bound allows for: g |qi|
    scale = g[None, :] * np.sqrt((qi * qi).sum(axis=1, keepdims=True))
    scale = np.broadcast_to(scale, exact.shape)
    ok = scale > 0
    if not ok.any():
        return Z
    err = np.abs(exact - est)[ok] / scale[ok]
    rms = float(np.sqrt(np.mean(err * err)))
    tail = float(np.quantile(err, 1 - Z_TAIL)) if err.size * Z_TAIL >= 8 else 0.0
    return max(Z, Z * rms, tail)
