"""The :class:`Index`: compressed vectors with int64 ids, searched by a codec.

An index is *flat* (every search scans every code) or *IVF* (``ivf=nlist``: the
vectors are split into ``nlist`` lists by k-means and a search scans the
``nprobe`` lists nearest the query; see :mod:`vecpress.search.ivf`). Either way the
search runs through :mod:`vecpress.search.scan`: a fused scan + top-k for grid
codecs, the codec's own ``score`` for the others, one merge. An optional second
tier (``rerank_spec=``, e.g. ``"f32"``, ``"f16"``, ``"rq8"``) stores a richer code
of every vector; ``search(..., rerank=R)`` re-scores the first stage's best
``R`` with it.

Bytes per vector, tier by tier (:attr:`Index.memory`): the first-stage code
(``codec.code_size``), the second-tier code (if any), the 8-byte id, and 4
bytes of exact ``|x|²`` under ``"l2"``; shared bytes (codec state, IVF
centroids ``4 * nlist * d`` and list offsets ``8 * (nlist + 1)``) come on top.
With ``mmap=True`` each tier is a memory-mapped section of the file, so a
second tier that is only read for the ``R`` candidates of each query costs page
cache, not resident memory.

Score conventions (larger is always better):

* ``"ip"``: the estimated inner product ``<q, x>``;
* ``"cosine"``: vectors and queries are normalised to unit length before
  encoding and scoring, so the score is the estimated cosine similarity; a zero
  vector or query is a ``ValueError``;
* ``"l2"``: the *negated* estimated squared distance
  ``-(|q|² + |x|² - 2·est<q, x>)``, with the exact ``|x|²`` stored per vector
  as float32 (4 extra bytes per vector).

Id policy: ids are non-negative int64; duplicates (within one call or with a
stored id) and negative ids are rejected with a ``ValueError`` naming them, and
a failed :meth:`Index.add` stores nothing. Automatic ids continue after the
largest id ever used (removed ids are not reused). Missing results are padded
with id ``-1`` (never a valid id) and score ``-inf``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .._validation import as_vectors, check_positive_int, vectors_and_squares
from ..codecs.codec import Codec
from ..files import storage
from ..files.storage import METRICS, IndexState
from ..kernels.queries import FEW as _FEW
from ..kernels.rows import result_ids, row_squares, unit_rows
from ..rwlock import ReadWriteLock
from ..threads import using
from . import certify as _certify
from . import filtered as _filtered
from . import ivf as _ivf
from . import planes as _planes
from . import scan as _search
from .topk import topk

#: rows used to fit the codec on the first add
FIT_SAMPLE = 100_000
#: a large input's training sample is drawn as runs of this many consecutive rows
#: (:func:`training_rows`)
SAMPLE_RUN = 16
#: rows encoded and added at a time by :func:`build`
ADD_CHUNK = 50_000
#: queries re-ranked together (bounds the decoded candidates: chunk x rerank x d floats)
RERANK_CHUNK = 128
#: nprobe used when ``search`` is not given one: this fraction of the lists, at least 1
DEFAULT_NPROBE_FRACTION = 1 / 64
#: the largest ``k`` a search pads beyond the stored vectors (``k`` may always reach ``len``)
MAX_PADDED_K = 1024
_MAX_ID = 2**63 - 1


class EncodedRows(NamedTuple):
    """Rows as an index stores them (:meth:`Index.encode`): ``codes``
    (``uint8[n, code_size]``), ``rerank_codes`` (``uint8[n, rerank_code_size]`` or
    ``None``), ``norms`` (``float32[n]`` squared norms, metric ``"l2"`` only) and
    ``lists`` (``int64[n]`` IVF lists, or ``None`` when flat)."""

    codes: np.ndarray
    rerank_codes: np.ndarray | None
    norms: np.ndarray | None
    lists: np.ndarray | None


@dataclass(frozen=True)
class SearchResult:
    """The result of :meth:`Index.search`.

    Attributes
    ----------
    ids : numpy.ndarray
        ``int64[nq, k]``, best first; ``-1`` where fewer than ``k`` vectors exist.
    scores : numpy.ndarray
        ``float32[nq, k]``, larger is better; ``-inf`` where the id is ``-1``.
    reranked : numpy.ndarray or None
        ``int64[nq]``: candidates each query re-scored with the second tier
        (``None`` without re-ranking).
    certified : numpy.ndarray or None
        ``bool[nq]``, with ``rerank="auto"`` only: the query's ``ids`` are the
        second tier's own exact top k with at least the search's confidence
        (:mod:`vecpress.search.certify`).
    allowed : int or None
        With ``allow=``: how many distinct ids of the allowlist are stored.
    """

    ids: np.ndarray
    scores: np.ndarray
    reranked: np.ndarray | None = None
    certified: np.ndarray | None = None
    allowed: int | None = None


def check_rerank(rerank, has_second_tier: bool, how: str):
    """``rerank`` as a search takes it (``None``, ``"auto"`` or a positive int), or a
    ``ValueError``; asking for it without a second tier says ``how`` to get one."""
    if rerank is None:
        return None
    if not has_second_tier:
        raise ValueError(f"rerank= needs a second tier: {how}")
    if isinstance(rerank, str):
        if rerank != "auto":
            raise ValueError(f"rerank must be an int or 'auto', found {rerank!r}")
        return rerank
    return check_positive_int(rerank, "rerank")


def _check_metric(metric: object) -> str:
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, found {metric!r}")
    return metric


def _as_ids(ids: object, name: str = "ids") -> np.ndarray:
    """``ids`` as a 1-D int64 array (a scalar becomes one element), or raise."""
    a = np.asarray(ids)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, found shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, found dtype {a.dtype}")
    if a.dtype.kind == "u" and a.max() > _MAX_ID:
        raise ValueError(f"{name} must fit in int64, found {int(a.max())}")
    return a.astype(np.int64, copy=False)


def _first(values: np.ndarray, limit: int = 10) -> str:
    vals = [int(v) for v in values[:limit]]
    more = f" (and {values.size - limit} more)" if values.size > limit else ""
    return f"{vals}{more}"


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``n`` rows of ``x``, drawn uniformly (kept in their order)."""
    if x.shape[0] <= n:
        return x
    return x[np.sort(rng.choice(x.shape[0], n, replace=False))]


class _Buffer:
    """A growable row store (amortised O(1) appends); ``view`` is the live prefix."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.n = data.shape[0]

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.n]

    def append(self, rows: np.ndarray) -> None:
        need = self.n + rows.shape[0]
        if need > self.data.shape[0] or not self.data.flags.writeable:
            cap = max(need, 2 * self.n, 1024)
            grown = np.empty((cap, *self.data.shape[1:]), self.data.dtype)
            grown[: self.n] = self.view
            self.data = grown
        self.data[self.n : need] = rows
        self.n = need

    def permute(self, order: np.ndarray) -> None:
        """Reorder the live rows: row ``i`` becomes the old row ``order[i]``."""
        moved = self.view[order]
        if not self.data.flags.writeable:
            self.data = moved
        else:
            self.data[: self.n] = moved

    def keep(self, mask: np.ndarray) -> None:
        kept = self.view[mask]
        if not self.data.flags.writeable:
            self.data = kept
        else:
            self.data[: kept.shape[0]] = kept
        self.n = kept.shape[0]


class Index:
    """A searchable collection of compressed vectors with int64 ids (flat or IVF).

    Parameters
    ----------
    spec : str
        Codec spec string of the first stage, e.g. ``"hd2,rq4"`` (see
        :class:`vecpress.Codec`).
    metric : {"cosine", "ip", "l2"}
        ``"cosine"`` normalises vectors *and* queries to unit length;
        ``"l2"`` scores with the negated estimated squared distance (larger is
        better, like the other metrics) and stores ``|x|²`` per vector.
    seed : int
        Seed of the codecs' random stages, of k-means and of the training sample.
    rerank_spec : str, optional
        Spec of a second, richer code kept for every vector (``"f32"`` = the
        float vectors themselves, ``"f16"``, ``"rq8"``, ...), used by
        ``search(..., rerank=R)``.
    ivf : int, optional
        Number of inverted lists; the index is flat when omitted.
    ivf_residual : bool
        IVF only: code each vector's residual from its list centroid (default)
        rather than the vector itself.

    Examples
    --------
    >>> import numpy as np, vecpress
    >>> x = np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32)
    >>> index = vecpress.Index("hd2,rq4", metric="cosine")
    >>> index.add(x)[:3]
    array([0, 1, 2])
    >>> res = index.search(x[:2], k=3)
    >>> res.ids.shape, res.scores.dtype
    ((2, 3), dtype('float32'))
    >>> res.ids[:, 0]
    array([0, 1])

    A 4-bit first stage re-ranked with the float vectors, in 16 lists:

    >>> index = vecpress.Index("hd2,rq4", "ip", rerank_spec="f32", ivf=16)
    >>> _ = index.add(x)
    >>> index.search(x[:2], k=3, rerank=20, nprobe=16).ids[:, 0]
    array([0, 1])
    """

    def __init__(
        self,
        spec: str,
        metric: str = "cosine",
        *,
        seed: int = 0,
        rerank_spec: str | None = None,
        ivf: int | None = None,
        ivf_residual: bool = True,
    ) -> None:
        self.metric = _check_metric(metric)
        self.seed = check_positive_int(seed, "seed", low=0, high=2**64 - 1)
        self.codec = Codec.from_spec(spec, seed=self.seed)
        if rerank_spec is not None and not isinstance(rerank_spec, str):
            raise TypeError(
                f"rerank_spec must be a spec string, found {type(rerank_spec).__name__}"
            )
        if rerank_spec is not None and self.codec.is_two_level:
            raise ValueError(
                f"spec {self.codec.spec!r} is two-level: its second level is the re-ranking "
                f"tier, so rerank_spec={rerank_spec!r} cannot be added"
            )
        self.rerank_codec = (
            Codec.from_spec(rerank_spec, seed=self.seed) if rerank_spec is not None else None
        )
        self.nlist = None if ivf is None else check_positive_int(ivf, "ivf", high=1 << 24)
        if not isinstance(ivf_residual, bool):
            raise TypeError(f"ivf_residual must be a bool, found {type(ivf_residual).__name__}")
        self.ivf_residual = ivf_residual
        self.centroids: np.ndarray | None = None
        self._codes: _Buffer | None = None
        self._rcodes: _Buffer | None = None
        self._ids = _Buffer(np.zeros(0, np.int64))
        self._norms: _Buffer | None = None
        self._list_offsets = np.zeros(2 if ivf is None else self.nlist + 1, np.int64)
        self._next_id = 0
        self._stage: _search.Stage | None = None
        self._pending_check: storage.DeferredCheck | None = None  # lazily verified files
        self._file_check = None  # a memory-mapped file's size check (IndexState.file_check)
        self._lock = ReadWriteLock()  # searches share it; add/remove/train hold it alone

    # -- state -------------------------------------------------------------
    @property
    def spec(self) -> str:
        """The canonical spec string of the first-stage codec."""
        return self.codec.spec

    @property
    def rerank_spec(self) -> str | None:
        """The canonical spec of the second tier, or ``None``."""
        return None if self.rerank_codec is None else self.rerank_codec.spec

    @property
    def has_second_tier(self) -> bool:
        """Whether ``search(..., rerank=R)`` can re-rank: a ``rerank_spec`` tier, or the
        second level of a two-level spec (``lvq<b1>x<b2>``)."""
        return self.rerank_codec is not None or self.codec.is_two_level

    def _tier_sizes(self) -> tuple[int, int]:
        """Bytes per vector of the first stage's rows and of the second tier's."""
        first, second = self.codec.tier_sizes
        if self.rerank_codec is not None:
            second = self.rerank_codec.code_size
        return first, second

    @property
    def is_ivf(self) -> bool:
        return self.nlist is not None

    @property
    def d(self) -> int | None:
        """The dimension, or ``None`` before the first add / train."""
        return self.codec.d

    @property
    def is_trained(self) -> bool:
        """Whether the codecs (and IVF centroids) are fitted, so vectors can be added."""
        return (
            self.codec.is_fitted
            and (self.rerank_codec is None or self.rerank_codec.is_fitted)
            and (not self.is_ivf or self.centroids is not None)
        )

    @property
    def ntotal(self) -> int:
        """The number of stored vectors (same as ``len(index)``)."""
        return self._ids.n

    def __len__(self) -> int:
        return self._ids.n

    @property
    def next_id(self) -> int:
        """The first automatic id of the next :meth:`add` (largest id ever used + 1)."""
        return self._next_id

    @property
    def memory(self) -> dict:
        """Bytes per vector by tier, and the shared bytes, of a trained index.

        Keys: ``codes`` (first stage), ``rerank`` (second tier, 0 if none; the
        second level of a two-level spec such as ``lvq4x8`` counts here),
        ``ids`` (8), ``norms`` (4 under ``"l2"``, else 0), ``per_vector`` (their
        sum) and ``shared`` (codec states, IVF centroids and list offsets).

        Examples
        --------
        >>> import numpy as np
        >>> x = np.eye(64, dtype=np.float32)
        >>> index = Index("hd2,rq4", metric="ip", rerank_spec="f16").train(x)
        >>> m = index.memory
        >>> m["codes"], m["rerank"], m["ids"], m["per_vector"]
        (36, 128, 8, 172)
        """
        if not self.is_trained:
            raise ValueError("the index is not trained yet: its byte costs are not known")
        first, second = self._tier_sizes()
        tiers = {
            "codes": first,
            "rerank": second,
            "ids": 8,
            "norms": 4 if self.metric == "l2" else 0,
        }
        shared = len(self.codec.to_bytes())
        if self.rerank_codec is not None:
            shared += len(self.rerank_codec.to_bytes())
        if self.is_ivf:
            shared += self.centroids.nbytes + self._list_offsets.nbytes
        return {**tiers, "per_vector": sum(tiers.values()), "shared": shared}

    @property
    def bytes_per_vector(self) -> int:
        """Stored bytes per vector: both tiers' codes + 8-byte id (+ 4-byte ``|x|²`` for l2)."""
        return sum(self._tier_sizes()) + 8 + (4 if self.metric == "l2" else 0)

    @property
    def ids(self) -> np.ndarray:
        """A copy of the stored ids, in storage order (IVF: grouped by list)."""
        with self._lock.read():
            self._ensure_checked()
            return self._ids.view.copy()

    @property
    def train_rows(self) -> int:
        """Rows the training uses at most: 100,000 (IVF: ``64 * nlist`` for k-means if more,
        at most 1,000,000); larger inputs are subsampled with the index's seed."""
        if not self.is_ivf:
            return FIT_SAMPLE
        return max(FIT_SAMPLE, min(64 * self.nlist, 1_000_000))

    @property
    def list_sizes(self) -> np.ndarray:
        """Vectors per list (``int64[nlist]``; one list for a flat index)."""
        return np.diff(self._list_offsets)

    def __repr__(self) -> str:
        extra = ""
        if self.rerank_codec is not None:
            extra += f", rerank_spec={self.rerank_spec!r}"
        if self.is_ivf:
            extra += f", ivf={self.nlist}"
        return (
            f"Index({self.spec!r}, metric={self.metric!r}{extra}, d={self.d}, ntotal={self.ntotal})"
        )

    def _ensure_checked(self) -> None:
        self._check_file()
        if self._pending_check is not None:
            self._pending_check()
            self._pending_check = None

    def _check_file(self) -> None:
        """While some rows are read from a memory-mapped file: a ``FormatError`` if the
        file has shrunk since it was opened (reading past its end would kill the
        process with a bus error; :attr:`vecpress.files.storage.IndexState.file_check`).
        Once every row store is a copy in memory (an add or remove copies them), the
        file no longer matters and the check is dropped."""
        check = self._file_check
        if check is None:
            return
        stores = (self._ids, self._codes, self._norms, self._rcodes)
        if all(b is None or b.data.flags.writeable for b in stores):
            self._file_check = None
            return
        check()

    def _check_reads(self, names: tuple[str, ...], *, lists=None, rows=None) -> None:
        """Before a search reads the file sections ``names`` (``"codes"``, ``"norms"``,
        ``"ids"``, ``"rerank_codes"``) at the rows of ``lists`` or at ``rows`` (``-1``:
        none) of a memory-mapped file: check that the file has not shrunk
        (:meth:`_check_file`); of a lazily verified one, verify the blocks holding
        them (format 3), or everything (formats 1 and 2). Nothing to do for other
        indexes."""
        self._check_file()
        check = self._pending_check
        if check is None or not check.pending(names):
            return
        if lists is not None:
            probed = np.unique(lists[lists >= 0])
            starts, ends = self._list_offsets[probed], self._list_offsets[probed + 1]
        else:
            starts = rows[rows >= 0]
            ends = starts + 1
        check.check_rows(names, starts, ends)

    def verify(self) -> Index:
        """Check all the data of a memory-mapped file now; returns ``self``.

        Files opened with ``vecpress.open(path, mmap=True)`` have their header,
        codecs and lists validated at once. A search then verifies the blocks
        of the data sections it reads (format 3: the probed lists' codes and
        norms, the result rows' ids, the candidates' second-tier codes) before
        reading them; older formats check all the data on the first search.
        This method checks every block not yet checked and that the ids are
        unique, as the first add, remove, contains, ids or save does. Raises
        :class:`~vecpress.FormatError` naming the file and section.
        """
        with self._lock.read():
            self._ensure_checked()
        return self

    # -- input preparation ---------------------------------------------------
    def _prepare(
        self, x: np.ndarray, name: str, row_offset: int = 0, sq: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Normalise for cosine; returns ``(vectors, float64 squared norms of the result)``.
        ``sq``: the squared norms of ``x`` where the caller has them
        (:func:`~vecpress._validation.vectors_and_squares`)."""
        if sq is None:
            sq = row_squares(x)
        if self.metric == "cosine":
            if not sq.all():
                zero = np.flatnonzero(sq == 0)
                raise ValueError(
                    f"{name} has {zero.size} zero row(s), first at row {row_offset + zero[0]}: "
                    "a zero vector has no direction under the cosine metric"
                )
            # each entry divided in float64 and rounded to float32 once, without a
            # float64 temporary of twice the input's size (its page faults were a third
            # of a cosine ingest), and the results' squares in the same pass
            x, sq = unit_rows(x, sq)
        # under "l2" the squared norms are stored as float32: as_vectors has already
        # bounded every norm by MAX_NORM = 2**50, so |x|² <= 2**100 fits with room to spare
        return x, sq

    def _fit(
        self, x: np.ndarray, centroids: np.ndarray | None = None, queries: np.ndarray | None = None
    ) -> tuple[Codec, Codec | None, np.ndarray | None]:
        """Freshly fitted ``(codec, rerank codec, centroids)``; nothing of ``self`` changes."""
        rng = np.random.default_rng(self.seed)
        x = _subsample(x, self.train_rows, rng)
        first = x
        if self.is_ivf:
            if centroids is None:
                centroids = _ivf.train_centroids(x, self.nlist, self.metric, self.seed)
            if self.ivf_residual:
                first = (x - centroids[_ivf.assign(centroids, x)]).astype(np.float32)
        # the codecs learn from a uniform subsample (rows may be ordered, e.g. by frequency)
        codec = Codec.from_spec(self.spec, seed=self.seed).fit(
            _subsample(first, FIT_SAMPLE, rng), queries=queries
        )
        rerank = None
        if self.rerank_codec is not None:
            rerank = Codec.from_spec(self.rerank_spec, seed=self.seed)
            rerank.fit(_subsample(x, FIT_SAMPLE, rng))
        return codec, rerank, centroids

    def _commit_fit(self, fitted) -> None:
        self.codec, rerank, centroids = fitted
        if rerank is not None:
            self.rerank_codec = rerank
        if centroids is not None:
            self.centroids = centroids
        self._stage = None

    # -- building ------------------------------------------------------------
    def train(self, x, centroids=None, queries=None, *, threads: int | None = None) -> Index:
        """Fit the codecs (and IVF centroids) on ``x`` before any vector is added; returns ``self``.

        Under ``"cosine"`` the training vectors are normalised first. More than
        100,000 rows are subsampled with the index's seed (IVF: up to
        ``64 * nlist`` rows for k-means, at most 1,000,000). An IVF index can
        take its ``centroids`` (``float[nlist, d]``, e.g. another index's) instead
        of running k-means; the codecs are still fitted on ``x``. ``queries`` (a
        sample of the queries to serve) is passed to the codec's fit: stages such as
        ``leanvec-ood<d'>`` learn from it (normalised too under ``"cosine"``).
        ``threads``: the threads of this call (k-means, fitting and their BLAS
        products); default the process-wide :func:`vecpress.set_num_threads`.

        Examples
        --------
        >>> import numpy as np
        >>> x = np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)
        >>> Index("center,int8", metric="ip").train(x).is_trained
        True
        """
        with self._lock.write(), using(threads, blas=True):
            return self._train(x, centroids, queries)

    def _train(self, x, centroids, queries) -> Index:
        if self.ntotal:
            raise ValueError(
                f"cannot train an index that holds {self.ntotal} vectors (their codes would "
                "no longer match the codec); train before the first add"
            )
        x = as_vectors(x, "X", dim=self.d, allow_empty=False)
        if centroids is not None:
            if not self.is_ivf:
                raise ValueError("centroids were given, but the index is flat (no ivf=)")
            centroids = as_vectors(centroids, "centroids", dim=x.shape[1])
            if centroids.shape[0] != self.nlist:
                raise ValueError(
                    f"centroids must have {self.nlist} rows (ivf={self.nlist}), "
                    f"found {centroids.shape[0]}"
                )
        x, _ = self._prepare(x, "X")
        if queries is not None:
            queries, _ = self._prepare(as_vectors(queries, "queries", dim=x.shape[1]), "queries")
        self._commit_fit(self._fit(x, centroids, queries))
        return self

    def add(self, x, ids=None, *, threads: int | None = None) -> np.ndarray:
        """Encode and store vectors; returns their ids (``int64[n]``).

        Parameters
        ----------
        x : numpy.ndarray
            ``(n, d)`` float vectors (float16/32/64; converted to float32).
        ids : array_like of int, optional
            Non-negative, unique, not already stored. When omitted, ids
            ``next_id, next_id + 1, ...`` are assigned.
        threads : int, optional
            Threads of this call (encoding; fitting on a first add); default the
            process-wide count (:func:`vecpress.set_num_threads`).

        All-or-nothing: every check (values, dimension, ids) runs before
        anything is stored, so a failed call leaves the index unchanged. The
        codecs (and IVF centroids) are fitted on the first add if the index
        is not trained yet. An IVF index keeps its rows grouped by list, so
        each add re-sorts the stored rows (O(n)): add in batches.

        Examples
        --------
        >>> import numpy as np
        >>> index = Index("f32", metric="ip")
        >>> index.add(np.eye(3, dtype=np.float32), ids=[10, 20, 30]).tolist()
        [10, 20, 30]
        >>> index.add(np.ones((1, 3), np.float32)).tolist()
        [31]
        """
        with self._lock.write(), using(threads, blas=not self.is_trained):
            return self._add(x, ids)

    def _add(self, x, ids) -> np.ndarray:
        self._ensure_checked()
        x, sq = vectors_and_squares(x, "X", dim=self.d)
        n = x.shape[0]
        x, sq = self._prepare(x, "X", sq=sq)
        new_ids = self._check_new_ids(ids, n)
        fitted = None if self.is_trained else self._fit(x)
        codes, rcodes, lists = self._encode(x, fitted)
        # -- commit (nothing below can fail on valid input) --
        if fitted is not None:
            self._commit_fit(fitted)
        if self._codes is None:
            self._init_buffers()
        old = self.ntotal
        self._codes.append(codes)
        if rcodes is not None:
            self._rcodes.append(rcodes)
        if self._norms is not None:
            self._norms.append(sq.astype(np.float32))
        self._ids.append(new_ids)
        if lists is None:
            self._list_offsets[1] = self.ntotal
        elif n:
            order, self._list_offsets = _ivf.list_order(
                np.concatenate([self._row_lists(old), lists]), self.nlist
            )
            self._reorder(order)
        if n:
            self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        self._stage = None
        return new_ids.copy()

    def _encode(self, x: np.ndarray, fitted=None):
        """``(codes, second-tier codes or None, IVF lists or None)`` of prepared rows ``x``
        by the index's codecs (or by ``fitted``, :meth:`_fit`'s result)."""
        codec, rerank, centroids = fitted or (self.codec, self.rerank_codec, self.centroids)
        lists = None
        first = x
        if self.is_ivf:
            lists = _ivf.assign(centroids, x)
            if self.ivf_residual:
                first = (x - centroids[lists]).astype(np.float32)
        codes = codec.encode(first)
        rcodes = rerank.encode(x) if rerank is not None else None
        if codec.is_two_level:
            codes, rcodes = codec.split_tiers(codes)
        return codes, rcodes, lists

    def encode(
        self, x, *, row_offset: int = 0, name: str = "X", threads: int | None = None
    ) -> EncodedRows:
        """The rows a trained index would store for ``x``, without storing them: what
        :meth:`add` computes before it places the rows (a streaming build writes them to
        files, :mod:`vecpress.search.streaming`). ``row_offset``: the number of ``x``'s
        first row, and ``name`` what ``x`` is, in messages about bad rows.

        Examples
        --------
        >>> x = np.random.default_rng(0).standard_normal((100, 16)).astype(np.float32)
        >>> index = Index("hd2,rq4", metric="l2", ivf=4).train(x)
        >>> rows = index.encode(x[:3])
        >>> rows.codes.shape, rows.norms.dtype, rows.lists.shape
        ((3, 12), dtype('float32'), (3,))
        """
        with self._lock.read(), using(threads):
            if not self.is_trained:
                raise ValueError("encode needs a trained index: call train(X) first")
            x, sq = vectors_and_squares(x, name, dim=self.d, row_offset=row_offset)
            x, sq = self._prepare(x, name, row_offset=row_offset, sq=sq)
            codes, rcodes, lists = self._encode(x)
            norms = sq.astype(np.float32) if self.metric == "l2" else None
            return EncodedRows(codes, rcodes, norms, lists)

    def _init_buffers(self) -> None:
        first, second = self._tier_sizes()
        self._codes = _Buffer(np.zeros((0, first), np.uint8))
        if self.has_second_tier:
            self._rcodes = _Buffer(np.zeros((0, second), np.uint8))
        if self.metric == "l2":
            self._norms = _Buffer(np.zeros(0, np.float32))

    def _buffers(self) -> list[_Buffer]:
        return [b for b in (self._ids, self._codes, self._rcodes, self._norms) if b is not None]

    def _row_lists(self, n: int | None = None) -> np.ndarray:
        """The list of each of the first ``n`` stored rows (rows are sorted by list)."""
        sizes = np.diff(self._list_offsets)
        lists = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
        return lists if n is None else lists[:n]

    def _reorder(self, order: np.ndarray) -> None:
        for buf in self._buffers():
            buf.permute(order)

    def _check_new_ids(self, ids, n: int) -> np.ndarray:
        if ids is None:
            if self._next_id + n - 1 > _MAX_ID:
                raise ValueError(f"automatic ids would exceed int64: next id is {self._next_id}")
            return np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        new = _as_ids(ids)
        if new.shape[0] != n:
            raise ValueError(f"ids has {new.shape[0]} entries but X has {n} rows")
        if n == 0:
            return new
        neg = new[new < 0]
        if neg.size:
            raise ValueError(f"ids must be non-negative, found {neg.size} negative: {_first(neg)}")
        uniq, counts = np.unique(new, return_counts=True)
        dup = uniq[counts > 1]
        if dup.size:
            raise ValueError(f"ids repeat within the call: {_first(dup)}")
        clash = new[np.isin(new, self._ids.view)]
        if clash.size:
            raise ValueError(f"{clash.size} id(s) are already stored: {_first(clash)}")
        return new

    def remove(self, ids) -> int:
        """Remove vectors by id; returns how many were removed.

        Unknown ids (never added, or already removed) are ignored. Removed ids
        are not reused by automatic ids.

        Examples
        --------
        >>> import numpy as np
        >>> index = Index("f32", metric="ip")
        >>> _ = index.add(np.eye(3, dtype=np.float32))
        >>> index.remove([0, 2, 99]), len(index)
        (2, 1)
        """
        with self._lock.write():
            return self._remove(ids)

    def _remove(self, ids) -> int:
        self._ensure_checked()
        gone = np.isin(self._ids.view, _as_ids(ids))
        count = int(gone.sum())
        if count:
            keep = ~gone
            kept_lists = self._row_lists()[keep]
            for buf in self._buffers():
                buf.keep(keep)
            counts = np.bincount(kept_lists, minlength=self._list_offsets.size - 1)
            np.cumsum(counts, out=self._list_offsets[1:])
            self._stage = None
        return count

    def drift(self, new, reference=None, **options):
        """How this index's codec serves the rows ``new`` against ``reference`` rows
        (:func:`vecpress.migrate.drift`: distortion, shift of mean and subspace, the
        predicted change of recall@10, whether to refit); ``reference`` by default up
        to 25,000 of the index's own vectors, read back from a float second tier
        (``rerank_spec`` ``"f32"``, ``"f16"`` or ``"bf16"``). ``options``: those of
        :func:`~vecpress.migrate.drift` but ``metric`` (the index's); ``rows`` by
        default the index's size up to 20,000 (recall is measured at the scale it
        serves). A recommended refit is :meth:`refit`.

        Raises
        ------
        ValueError
            No ``reference`` and no float second tier; an IVF index with residual codes
            (its codec codes residuals, not rows); bad rows.

        Examples
        --------
        >>> import numpy as np
        >>> x = np.random.default_rng(0).standard_normal((2000, 16)).astype(np.float32)
        >>> index = Index("hd2,rq4", "ip", rerank_spec="f32")
        >>> _ = index.add(x[:1000])
        >>> index.drift(x[1000:]).refit
        False
        """
        from ..migrate import drift

        if self.is_ivf and self.ivf_residual:
            raise ValueError("drift: this IVF index codes residuals; measure its codec on rows")
        if reference is None:
            tier = self.rerank_codec
            if tier is None or tier.spec not in ("f32", "f16", "bf16"):
                raise ValueError(
                    "drift needs reference= (a sample of the rows the index was built from), "
                    "or an index with a float second tier (rerank_spec f32, f16 or bf16)"
                )
            ids = self.ids
            pick = np.unique(np.linspace(0, ids.size - 1, min(25_000, ids.size)).astype(np.int64))
            reference = self.reconstruct(ids[pick])
        options.setdefault("rows", max(10, min(20_000, self.ntotal)))
        return drift(self.codec, reference, new, metric=self.metric, **options)

    def refit(
        self, sample, *, vectors=None, path=None, queries=None, threads: int | None = None
    ) -> Index:
        """Fit new codecs (and IVF centroids) on ``sample`` and re-encode every stored row
        with them, in one step; returns ``self``. What :meth:`drift` recommends when the
        data has moved away from what the codec was fitted on.

        The rows re-encoded are ``vectors`` where given (``float[ntotal, d]``, in the
        order of :attr:`ids`), else the index's float second tier (``rerank_spec``
        ``"f32"``, ``"f16"`` or ``"bf16"``). All-or-nothing: everything is fitted and
        encoded before anything changes; with ``path`` the new index is first written
        there atomically (:meth:`save`: a temp file renamed over it, so the old file stays
        intact and readable until the new one is complete, and a failure leaves it as it
        was), and only then does this object switch to it. Ids, their order within a list
        and automatic ids are kept; norms (``"l2"``) come from ``vectors`` where given.

        Parameters
        ----------
        sample : array_like, float[m, d]
            Rows like those the index now serves (normalised here under ``"cosine"``),
            subsampled as :meth:`train` does.
        vectors : array_like, float[ntotal, d], optional
        path : str or os.PathLike, optional
            Where to save the refitted index (typically the file it was opened from).
        queries : array_like, optional
            As for :meth:`train`.
        threads : int, optional

        Raises
        ------
        ValueError
            An untrained index; no ``vectors`` and no float second tier (a lossy tier's
            rows would carry its errors into the new codes); ``vectors`` of the wrong
            shape; bad rows.

        Examples
        --------
        A codec that keeps 8 principal axes, then rows whose variance lies on the others:

        >>> rng = np.random.default_rng(0)
        >>> scale = np.r_[np.full(8, 2.0), np.full(8, 0.2)].astype(np.float32)
        >>> old = rng.standard_normal((2000, 16)).astype(np.float32) * scale
        >>> new = old[:, ::-1].copy()
        >>> index = Index("pca8,rq4", "l2", rerank_spec="f32")
        >>> _ = index.add(old)
        >>> index.drift(new).refit
        True
        >>> new_ids = index.add(new)
        >>> def found():  # new rows that find themselves first
        ...     return float((index.search(new[:200], 1).ids[:, 0] == new_ids[:200]).mean())
        >>> before = found()
        >>> after = index.refit(new).search(new[:200], 1).ids[:, 0] == new_ids[:200]
        >>> bool(after.mean() > before + 0.5)
        True
        """
        with self._lock.write(), using(threads, blas=True):
            return self._refit(sample, vectors, path, queries)

    def _refit(self, sample, vectors, path, queries) -> Index:
        if not self.is_trained:
            raise ValueError("refit needs a trained index: call train(X) or add(X) first")
        self._ensure_checked()
        d, n = self.d, self.ntotal
        sample, _ = self._prepare(as_vectors(sample, "sample", dim=d, allow_empty=False), "sample")
        if queries is not None:
            queries, _ = self._prepare(as_vectors(queries, "queries", dim=d), "queries")
        if vectors is not None:
            vectors = as_vectors(vectors, "vectors", dim=d)
            if vectors.shape[0] != n:
                raise ValueError(
                    f"vectors must hold every stored row ({n}, in the order of ids), "
                    f"found {vectors.shape[0]}"
                )
        elif self.rerank_spec not in ("f32", "f16", "bf16"):
            raise ValueError(
                "refit re-encodes the stored rows: pass vectors= (float[ntotal, d] in the "
                "order of ids), or use an index with a float second tier (rerank_spec f32, "
                f"f16 or bf16); this one has {self.rerank_spec!r}"
            )
        fitted = self._fit(sample, None, queries)
        codec, rerank, _ = fitted
        first, second = codec.tier_sizes
        if rerank is not None:
            second = rerank.code_size
        codes = np.empty((n, first), np.uint8)
        rcodes = np.empty((n, second), np.uint8) if second else None
        norms = None if self._norms is None else np.array(self._norms.view, np.float32)
        lists = np.zeros(n, np.int64) if self.is_ivf else None
        step = 1 << 16
        for s in range(0, n, step):
            e = min(n, s + step)
            if vectors is not None:
                x, sq = self._prepare(vectors[s:e], "vectors", row_offset=s)
                if norms is not None:
                    norms[s:e] = sq
            else:
                x = self._tier_vectors(np.arange(s, e, dtype=np.int64))
            c, r, li = self._encode(x, fitted)
            codes[s:e] = c
            if rcodes is not None:
                rcodes[s:e] = r
            if lists is not None:
                lists[s:e] = li
        ids = np.array(self._ids.view, np.int64)
        offsets = np.array([0, n], np.int64)
        if lists is not None:
            order, offsets = _ivf.list_order(lists, self.nlist)
            ids, codes = ids[order], codes[order]
            rcodes = None if rcodes is None else rcodes[order]
            norms = None if norms is None else norms[order]
        if path is not None:
            state = IndexState(
                codec=codec, metric=self.metric, seed=self.seed, rerank_codec=rerank,
                nlist=self.nlist, ivf_residual=self.ivf_residual, centroids=fitted[2],
                list_offsets=offsets, ids=ids, norms=norms, codes=codes, rerank_codes=rcodes,
                next_id=self._next_id,
            )  # fmt: skip
            storage.save(state, path)
        # -- commit (nothing below can fail) --
        self._commit_fit(fitted)
        self._ids, self._codes = _Buffer(ids), _Buffer(codes)
        self._rcodes = None if rcodes is None else _Buffer(rcodes)
        self._norms = None if norms is None else _Buffer(norms)
        self._list_offsets = offsets
        self._pending_check = None
        return self

    def reconstruct(self, ids) -> np.ndarray:
        """The stored vectors of ``ids`` as the index can rebuild them: ``float32[n, d]``,
        decoded from the second tier where there is one (``rerank_spec``, or both
        levels of a two-level spec), else from the first stage (IVF residual codes
        plus their list's centroid). Normalised under ``"cosine"``, as stored. An id
        not stored is a ``ValueError``.

        Examples
        --------
        >>> import numpy as np
        >>> index = Index("hd2,rq4", "ip", rerank_spec="f32")
        >>> x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
        >>> _ = index.add(x)
        >>> bool(np.array_equal(index.reconstruct([3, 7]), x[[3, 7]]))
        True
        """
        with self._lock.read():
            ids = _as_ids(ids)
            stage = self._first_stage()
            if stage.id_lookup is None:
                self._check_reads(("ids",), lists=np.arange(self._list_offsets.size - 1)[None, :])
                stage.id_lookup = _filtered.id_lookup(np.asarray(self._ids.view))
            order, sorted_ids = stage.id_lookup
            pos = np.minimum(np.searchsorted(sorted_ids, ids), max(sorted_ids.size - 1, 0))
            missing = ids[(sorted_ids.size == 0) | (sorted_ids[pos] != ids)] if ids.size else ids
            if missing.size:
                raise ValueError(f"{missing.size} id(s) are not stored: {_first(missing)}")
            rows = order[pos].astype(np.int64)
            if self.has_second_tier:
                return self._tier_vectors(rows)
            self._check_reads(("codes",), rows=rows[None, :])
            x = self.codec.decode(self._codes.view[rows])
            if self.is_ivf and self.ivf_residual:
                lists = np.searchsorted(self._list_offsets, rows, side="right") - 1
                x = (x + self.centroids[lists]).astype(np.float32)
            return x

    def contains(self, ids):
        """Whether ids are stored: a bool for a scalar id, a bool array for an array.

        Examples
        --------
        >>> import numpy as np
        >>> index = Index("f32", metric="ip")
        >>> _ = index.add(np.eye(2, dtype=np.float32))
        >>> index.contains(1), index.contains([1, 5]).tolist()
        (True, [True, False])
        """
        with self._lock.read():
            return self._contains(ids)

    def _contains(self, ids):
        self._ensure_checked()
        found = np.isin(_as_ids(ids), self._ids.view)
        return bool(found[0]) if np.ndim(ids) == 0 else found

    def __contains__(self, id_) -> bool:
        return bool(np.all(self.contains(id_)))

    # -- searching -----------------------------------------------------------
    def _first_stage(self) -> _search.Stage:
        if self._stage is None:
            codes = self._codes.view
            codec = self.codec.tier_codec  # the codec itself, or level 1 of a two-level one
            self._stage = _search.Stage(
                codec=codec,
                codes=codes,
                items=_search.make_items(self._list_offsets),
                norms=None if self._norms is None else self._norms.view,
                terms=_search.Terms(codec, codes) if _search.is_grid(codec) else None,
                progressive=_planes.supports(codec),
                chain=_search.query_chain(codec),
            )
        return self._stage

    def _rerank_tier(self) -> _search.Tier:
        """The second tier as one composition (:class:`vecpress.search.scan.Tier`): the
        ``rerank_spec`` codec and its rows, or both levels of a two-level codec (whose
        IVF residual codes add ``<q, centroid of the row's list>``)."""
        if self.rerank_codec is not None:
            return _search.stored_tier(self.rerank_codec, self._rcodes.view)
        return _search.levels_tier(
            self.codec, self._codes.view, self._rcodes.view, self._residual_offset()
        )

    def _first_tier(self) -> _search.Tier:
        """The first stage as a tier: its estimates of given rows, as its scan makes them."""
        stage = self._first_stage()
        return _search.Tier(stage.codec, lambda rows: (stage.codes, rows), self._residual_offset())

    def _residual_offset(self):
        """``offset(q, rows)``: ``<q, centroid of each row's list>`` for IVF residual
        codes, else ``None``."""
        if not (self.is_ivf and self.ivf_residual):
            return None
        offsets, centroids = self._list_offsets, self.centroids

        def offset(q: np.ndarray, rows: np.ndarray) -> np.ndarray:
            lists = np.searchsorted(offsets, rows, side="right") - 1
            return np.take_along_axis(q @ centroids.T, np.maximum(lists, 0), axis=1)

        return offset

    def _check_search_args(self, k, rerank, nprobe, confidence=0.999):
        k = check_positive_int(k, "k")
        if k > max(self.ntotal, MAX_PADDED_K):
            raise ValueError(
                f"k={k} is larger than the index ({self.ntotal} vectors): results past the "
                f"stored vectors are padding (id -1), allowed up to k={MAX_PADDED_K}; "
                f"ask for at most {max(self.ntotal, MAX_PADDED_K)}"
            )
        rerank = check_rerank(
            rerank, self.has_second_tier, "build the index with rerank_spec= (e.g. "
            "Index(spec, rerank_spec='f32')) or a two-level spec (e.g. 'lvq4x8')",
        )  # fmt: skip
        if rerank is not None:
            if rerank != "auto" and rerank < k:
                raise ValueError(
                    f"rerank must be >= k (it is the candidates kept), found {rerank} < {k}"
                )
        if nprobe is not None:
            if not self.is_ivf:
                raise ValueError(
                    "nprobe= applies to IVF indexes (Index(..., ivf=nlist)); this one is flat"
                )
            nprobe = min(check_positive_int(nprobe, "nprobe"), self.nlist)
        elif self.is_ivf:
            nprobe = max(1, round(self.nlist * DEFAULT_NPROBE_FRACTION))
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)):
            raise TypeError(f"confidence must be a float, found {type(confidence).__name__}")
        if not 0.5 <= confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), found {confidence!r}")
        return k, rerank, nprobe or 1

    def _check_progressive(self, progressive) -> None:
        if not isinstance(progressive, (bool, np.bool_)):
            raise TypeError(f"progressive must be a bool, found {type(progressive).__name__}")
        if progressive and not self._first_stage().progressive:
            raise ValueError(
                "progressive=True reads grid codes of one width of 1-5 bits sign plane first "
                "(rq, int, lvq: e.g. 'hd2,rq4'; up to 65,534 dimensions); this index's first "
                f"stage is {self.codec.tier_codec.spec!r} at d = {self.codec.tier_codec.d}"
            )

    def search(
        self,
        q,
        k: int,
        rerank: int | str | None = None,
        nprobe: int | None = None,
        *,
        confidence: float = 0.999,
        progressive: bool = False,
        allow=None,
        threads: int | None = None,
        adapter=None,
    ) -> SearchResult:
        """The ``k`` best stored vectors for each query, best first.

        Parameters
        ----------
        q : numpy.ndarray
            ``(nq, d)`` float queries (normalised under ``"cosine"``).
        k : int
            Results per query, ``>= 1``; where fewer than ``k`` vectors are
            stored (or probed) the rest is padded with id ``-1`` and score ``-inf``.
            ``k`` may exceed the number of stored vectors by padding only up to
            ``MAX_PADDED_K`` (1024); a larger ``k`` is a ``ValueError``.
        rerank : int or "auto", optional
            Re-score the first stage's best ``rerank`` (``>= k``) candidates with
            the second tier (``rerank_spec``, or both levels of a two-level spec)
            and keep the best ``k``; the scores returned are then the second tier's.
            A ``rerank`` above the number of stored vectors re-scores them all.
            ``"auto"``: *certified re-ranking* -- re-score exactly the candidates
            whose error bound lets them reach the k-th best tier score
            (:mod:`vecpress.search.certify`); the result says how many each query
            re-scored and whether it is certified.
        nprobe : int, optional
            IVF only: lists scanned per query (default ``nlist / 64``, at least 1).
        confidence : float
            With ``rerank="auto"``: the probability (under the calibrated error
            model) that a certified query's result is the tier's exact top k;
            in ``[0.5, 1)``.
        progressive : bool
            Read grid codes (one width of 1-5 bits: ``rq``, ``int``, ``lvq``)
            sign plane first and in full only where a row's error bound can
            still reach the current k-th best score
            (:mod:`vecpress.kernels.progressive`): the same ids and scores as
            without, unless a true top-k row's bound fails (two normal tails of
            3.2e-5 per row, the bound widened where the index's own rows show
            larger errors). Costs ``d / 8 + 21`` bytes of memory per row, made on
            the first progressive search. Pays for few queries at a time at
            d of a few hundred (one query over 100,000 MiniLM rows, d = 384: 0.6-1.1
            against 1.1-1.9 ms, BENCHMARKS.md); a large batch, a small d, or IVF lists of
            a few hundred rows are faster read in full (GloVe-50, 390,000 rows: 5.7
            against 1.1 ms a query; ``IVF256`` over the MiniLM rows, nprobe 16: 0.23
            against 0.17 ms). A filtered search (``allow``) reads in full.
        allow : array of int, optional
            A filter: the ids the results may hold (ids not stored are skipped).
            The best ``k`` allowed rows are returned, ranked as without a filter
            (padded where fewer are allowed): the allowlist is applied inside the
            scan (:mod:`vecpress.search.filtered`), by an exact scan of the
            allowed rows when they are few, else by masking the others (IVF:
            probing lists until they hold ``nprobe`` lists' worth of allowed rows).
        threads : int, optional
            Threads of this call; default the process-wide count
            (:func:`vecpress.set_num_threads`). Concurrent searches may each
            name their own.
        adapter : vecpress.migrate.Adapter, optional
            Queries embedded by another model: mapped into the stored vectors'
            space (``adapter.transform``) before anything else.

        Returns
        -------
        SearchResult
            ``ids int64[nq, k]`` and ``scores float32[nq, k]`` (larger is
            better; for ``"l2"`` the negated estimated squared distance);
            with re-ranking, ``reranked``; with ``rerank="auto"``, ``certified``.

        A flat search without ``rerank`` ranks exactly as
        ``topk(codec.score(q, codes), k)`` over the stored codes (ties go to
        the earlier stored row).

        A query's scores do not depend on the queries searched with it, but in
        their last bits where the codec maps or scores queries by a BLAS product
        (the float codecs, ``int``, ``kl``, ``pca``, ``qjl``, ``center`` among
        them): BLAS sums in an order that depends on how many rows it multiplies
        at once. Measured: 1-9 units in the last place between a query searched
        alone and in a batch of 5 (d = 64), the same ids; rows whose scores lie
        that close may swap.

        Examples
        --------
        >>> import numpy as np
        >>> index = Index("f32", metric="l2")
        >>> _ = index.add(np.array([[0, 0], [3, 4]], np.float32))
        >>> res = index.search(np.array([[3, 3]], np.float32), k=3)
        >>> res.ids.tolist(), res.scores.tolist()
        ([[1, 0, -1]], [[-1.0, -18.0, -inf]])

        Certified re-ranking of a 4-bit first stage with the stored floats:

        >>> x = np.random.default_rng(0).standard_normal((2000, 32)).astype(np.float32)
        >>> index = Index("hd2,rq4", rerank_spec="f32")
        >>> _ = index.add(x)
        >>> res = index.search(x[:3] + 0.1, k=5, rerank="auto")
        >>> bool(res.certified.all()), bool((res.reranked < 2000).all())
        (True, True)
        """
        if adapter is not None:
            q = adapted(adapter, q, self.d)
        with self._lock.read(), using(threads):
            return self._search(q, k, rerank, nprobe, confidence, progressive, allow)

    def _probe(self, q: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """The lists each query scans and the term added to their scores."""
        nq = q.shape[0]
        if not self.is_ivf:
            return np.zeros((nq, 1), np.int64), np.zeros((nq, 1), np.float32)
        lists, dots = _ivf.probe(self.centroids, q, nprobe, self.metric)
        return lists, dots if self.ivf_residual else np.zeros_like(dots)

    def _first(
        self, q, qsq, nprobe, depth, progressive=False, allowed=None, mapped=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The first stage's best ``depth`` rows of the probed lists: ``(rows, scores)``;
        of the ``allowed`` rows only, where given (:meth:`_first_filtered`). ``mapped``:
        the queries mapped into the codec's space (:meth:`_few_queries`), or ``None``."""
        if allowed is not None:
            return self._first_filtered(q, qsq, nprobe, depth, allowed)
        lists, adds = self._probe(q, nprobe)
        self._check_reads(("codes", "norms"), lists=lists)
        stage = self._first_stage()
        return _search.scan(
            stage, q, qsq, lists, adds, depth, progressive=progressive, mapped=mapped
        )

    def _few_queries(self, q):
        """``(rows, squared norms, (mapped, offset))`` of a few float queries by one
        compiled call (:func:`vecpress.search.scan.prepare_queries`: the same values as
        :meth:`_prepare` and the codec's mapping), or ``None`` where that call does not
        apply (other input, other transforms, an empty index) or finds a bad row: the
        general path then checks, names and maps."""
        if not (
            type(q) is np.ndarray
            and q.ndim == 2
            and q.dtype.kind == "f"
            and 0 < q.shape[0] <= _FEW
            and self.ntotal > 0
            and q.shape[1] == self.d
        ):
            return None
        chain = self._first_stage().chain
        if chain is None:
            return None
        if q.dtype != np.float32 or not q.flags.c_contiguous:
            # as as_vectors converts (values beyond float32's range become infinite: the
            # call below finds them, and the general path names them)
            with np.errstate(over="ignore"):
                q = np.ascontiguousarray(q, np.float32)
        return _search.prepare_queries(q, self.metric == "cosine", chain)

    def _allowed(self, allow) -> np.ndarray:
        """The rows (sorted) whose ids are in ``allow``."""
        allow = _as_ids(allow, "allow")
        stage = self._first_stage()
        if stage.id_lookup is None:
            self._check_reads(("ids",), lists=np.arange(self._list_offsets.size - 1)[None, :])
            stage.id_lookup = _filtered.id_lookup(np.asarray(self._ids.view))
        return _filtered.allowed_rows(*stage.id_lookup, allow)

    def _first_filtered(self, q, qsq, nprobe, depth, rows):
        """:meth:`_first` over the allowed ``rows`` only, by the cheaper of an exact scan of
        the allowed rows and a masked scan (:mod:`vecpress.search.filtered`)."""
        n, count, nq = self.ntotal, rows.size, q.shape[0]
        nlist = self.nlist if self.is_ivf else 1
        scanned = _filtered.masked_rows_scanned(n, count, nlist, nprobe)
        stage = self._first_stage()
        pair = _filtered.CANDIDATE_COST if self.is_ivf else 1.0
        if _filtered.choose(n, count, nq, scanned, pair) == "gather":
            self._check_reads(("codes", "norms"), rows=rows[None, :])
            if self.is_ivf:  # rows of many lists: scored as candidates, not list by list
                return self._score_allowed(q, qsq, rows, depth)
            sub = _filtered.gathered(stage, rows, self._list_offsets)
            found, sc = _search.scan(sub, q, qsq, *self._probe(q, 1), depth)
            return np.where(found >= 0, rows[np.maximum(found, 0)], -1), sc
        allow = np.zeros(n, bool)
        allow[rows] = True
        lists, adds = self._probe(q, nlist if self.is_ivf else 1)
        if self.is_ivf:
            if stage.row_lists is None:
                stage.row_lists = self._row_lists()
            per_list = np.bincount(stage.row_lists[rows], minlength=nlist)
            target = max(depth, int(np.ceil(nprobe * n / nlist)))
            lists = _filtered.probe_allowed(lists, per_list, target)
        self._check_reads(("codes", "norms"), lists=lists)
        found, sc = _search.scan(_filtered.masked(stage, allow), q, qsq, lists, adds, depth)
        found[sc == -np.inf] = -1  # masked rows
        return found, sc

    def _score_allowed(self, q, qsq, rows, depth):
        """The best ``depth`` of ``rows`` for each query by the first stage's estimates of
        them (``codec.score`` of their gathered codes, plus the IVF residual term: what
        :meth:`_tier_scores` gives them, as the scan does), in query chunks bounding the
        scores held at once. For an IVF index, whose allowed rows spread over its
        lists, which a scan would visit list by list (one work item each)."""
        stage = self._first_stage()
        codes = np.ascontiguousarray(stage.codes[rows])
        norms = None if self._norms is None else self._norms.view[rows]
        offset = self._residual_offset()
        nq = q.shape[0]
        found = np.empty((nq, depth), np.int64)
        sc = np.empty((nq, depth), np.float32)
        step = max(1, _filtered.SCORES_AT_ONCE // rows.size)
        for s in range(0, nq, step):
            e = min(nq, s + step)
            est = stage.codec.score(q[s:e], codes)
            if offset is not None:
                est += offset(q[s:e], rows[None, :])
            if norms is not None:  # as tier_scores finishes l2 scores
                est *= 2
                est -= norms[None, :]
                est -= qsq[s:e].astype(np.float32)[:, None]
            cand = np.broadcast_to(rows, (e - s, rows.size))
            found[s:e], sc[s:e] = topk(est, depth, ids=cand)
        return found, sc

    def _tier_scores(self, q, qsq, rows, *, first: bool = False) -> np.ndarray:
        """The second tier's (``first``: the first stage's) metric scores of candidate
        ``rows``, in query chunks."""
        self._check_reads(("codes", "norms") if first else ("rerank_codes",), rows=rows)
        tier = self._first_tier() if first else self._rerank_tier()
        norms = None if self._norms is None else self._norms.view
        out = np.empty(rows.shape, np.float32)
        for s in range(0, rows.shape[0], RERANK_CHUNK):
            e = min(rows.shape[0], s + RERANK_CHUNK)
            out[s:e] = _search.tier_scores(tier, norms, q[s:e], qsq[s:e], rows[s:e])
        return out

    def _tier_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The second tier's reconstruction of stored ``rows``: float32[len(rows), d]."""
        self._check_reads(("rerank_codes", "codes"), rows=rows[None, :])
        tier = self._rerank_tier()
        codes, local = tier.gather(rows[None, :])
        x = tier.codec.decode(codes[local[0]])
        if self.rerank_codec is None and self.is_ivf and self.ivf_residual:
            lists = np.searchsorted(self._list_offsets, rows, side="right") - 1
            x = (x + self.centroids[lists]).astype(np.float32)
        return x

    def _error_models(self, nprobe: int) -> tuple[_certify.ErrorModel, ...]:
        """The first stage's error against the tier, calibrated on first use
        (:func:`vecpress.search.certify.calibrate`) and kept until the rows change."""
        stage = self._first_stage()
        if stage.error_model is None:
            rng = np.random.default_rng(self.seed)
            m = min(self.ntotal, _certify.CALIBRATION_QUERIES)
            own = np.sort(rng.choice(self.ntotal, m, replace=False))
            x = self._tier_vectors(own)
            keep = np.isfinite(x).all(axis=1) & (np.abs(x).max(axis=1, initial=0) > 0)
            q, qsq = self._prepare(x[keep], "calibration rows")
            stage.error_model = _certify.calibrate(
                lambda q_, qsq_, depth: self._first(q_, qsq_, nprobe, depth),
                lambda q_, qsq_, rows: self._tier_scores(q_, qsq_, rows, first=True),
                self._tier_scores,
                self._error_scale(),
                q,
                qsq,
                own[keep],
                self.ntotal,
                self.seed,
            )
        return stage.error_model

    def _error_scale(self) -> _certify.Scale:
        """The unit of the first stage's error: aligned with the row for unit rows
        coded as they are (cosine, flat or IVF without residuals), else ``|q|``."""
        if self.metric == "cosine" and not (self.is_ivf and self.ivf_residual):
            return _certify.aligned_scale
        return _certify.plain_scale

    def _search_certified(self, q, qsq, width, nprobe, confidence, progressive, allowed, limit):
        models = self._error_models(nprobe)
        return _certify.certified_rerank(
            lambda q_, qsq_, depth: self._first(q_, qsq_, nprobe, depth, progressive, allowed),
            self._tier_scores,
            self._error_scale(),
            _certify.factor(models, confidence, width),
            q,
            qsq,
            width,
            limit,
        )

    def _search(
        self, q, k, rerank, nprobe, confidence, progressive=False, allow=None
    ) -> SearchResult:  # fmt: skip
        k, rerank, nprobe = self._check_search_args(k, rerank, nprobe, confidence)
        self._check_progressive(progressive)
        few = self._few_queries(q) if allow is None else None
        if few is None:
            q, qsq = vectors_and_squares(q, "queries", dim=self.d)
            q, qsq = self._prepare(q, "queries", sq=qsq)
            mapped = None
        else:
            q, qsq, mapped = few
        nq = q.shape[0]
        allowed = None if allow is None else self._allowed(allow)
        limit = self.ntotal if allowed is None else allowed.size
        count = None if allowed is None else int(allowed.size)
        if nq == 0 or limit == 0:
            return SearchResult(
                np.full((nq, k), -1, np.int64), np.full((nq, k), -np.inf, np.float32),
                allowed=count,
            )  # fmt: skip
        if allowed is not None:
            progressive = False  # a filtered search reads codes in full
        # nothing past the stored (allowed) rows is worth scanning or re-ranking: padding
        width = min(k, limit)
        reranked = certified = None
        if rerank == "auto":
            res = self._search_certified(
                q, qsq, width, nprobe, confidence, progressive, allowed, limit
            )
            rows, sc, reranked, certified = res.rows, res.scores, res.reranked, res.certified
        elif rerank is not None:
            rows, _ = self._first(q, qsq, nprobe, min(rerank, limit), progressive, allowed, mapped)
            reranked = (rows >= 0).sum(axis=1)
            rows, sc = topk(self._tier_scores(q, qsq, rows), width, ids=rows)
        else:
            rows, sc = self._first(q, qsq, nprobe, width, progressive, allowed, mapped)
        self._check_reads(("ids",), rows=rows)
        ids = result_ids(rows, self._ids.view, k)
        if width < k or sc.dtype != np.float32:  # padding past the stored rows
            scores = np.full((nq, k), -np.inf, np.float32)
            scores[:, :width] = sc
        else:
            scores = sc
        return SearchResult(ids, scores, reranked, certified, count)

    # -- persistence -----------------------------------------------------------
    def save(self, path, *, block_size: int = storage.BLOCK_SIZE) -> None:
        """Write the index to ``path`` atomically; see :func:`vecpress.files.storage.save`.

        Safe while other threads search or mutate the index: it holds the
        index's lock shared (:mod:`vecpress.rwlock`), so the file holds the
        state between two mutations, never half of one. A memory-mapped index
        is verified before it is written. ``block_size``: bytes per checksummed
        block of the data sections (a power of two in
        ``vecpress.files.storage.BLOCK_SIZE_RANGE``), the unit a memory-mapped search
        verifies.

        Raises
        ------
        ValueError
            The index was never trained nor added to (its dimension is unknown),
            or a bad ``block_size``.
        LockedError
            Another writer is saving to the same path.
        """
        storage.check_block_size(block_size)
        if not self.is_trained:
            raise ValueError(
                "cannot save an index whose codec is not fitted (its dimension is unknown): "
                "add vectors or call train(X) first"
            )
        with self._lock.read():
            storage.save(self._to_state(), path, block_size=block_size)

    def to_state(self) -> IndexState:
        """A snapshot of the index as the public :class:`~vecpress.files.storage.IndexState`
        (arrays shared, not copied; verified first if memory-mapped).

        Examples
        --------
        >>> index = Index("f32", metric="l2")
        >>> _ = index.add(np.ones((3, 4), np.float32))
        >>> state = index.to_state()
        >>> state.ids.tolist(), state.norms.tolist()
        ([0, 1, 2], [4.0, 4.0, 4.0])
        >>> Index.from_state(state).search(np.ones((1, 4), np.float32), 1).ids.tolist()
        [[0]]
        """
        with self._lock.read():
            return self._to_state()

    def _to_state(self) -> IndexState:
        """:meth:`to_state` under the caller's lock."""
        if not self.is_trained:
            raise ValueError("an index that was never trained nor added to has no state yet")
        self._check_consistent()
        self._ensure_checked()
        first, second = self._tier_sizes()

        def rows(buf: _Buffer | None, empty: np.ndarray | None) -> np.ndarray | None:
            return empty if buf is None else np.ascontiguousarray(buf.view)

        fresh = self._codes is None  # trained but empty: no row stores yet
        return IndexState(
            codec=self.codec,
            metric=self.metric,
            seed=self.seed,
            rerank_codec=self.rerank_codec,
            nlist=self.nlist,
            ivf_residual=self.ivf_residual,
            centroids=self.centroids,
            list_offsets=self._list_offsets.copy(),
            ids=rows(self._ids, None),
            norms=rows(self._norms, np.zeros(0, np.float32) if self.metric == "l2" else None),
            codes=rows(self._codes, np.zeros((0, first), np.uint8)),
            rerank_codes=rows(
                self._rcodes,
                np.zeros((0, second), np.uint8) if fresh and self.has_second_tier else None,
            ),
            next_id=self._next_id,
            file_check=self._file_check,  # its arrays may be the mapped rows themselves
        )

    @classmethod
    def from_state(cls, state: IndexState) -> Index:
        """The index of a state (:meth:`to_state`, :func:`vecpress.files.storage.load`); its
        arrays are used as they are (read-only ones, e.g. memory-mapped, are copied on
        the first change)."""
        if not isinstance(state, IndexState):
            raise TypeError(f"expected an IndexState, found {type(state).__name__}")
        first, second = state.tier_sizes
        for name, a, width in (
            ("codes", state.codes, first),
            ("rerank_codes", state.rerank_codes, second),
        ):
            if a is not None and (a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != width):
                raise ValueError(
                    f"state.{name} must be uint8 rows of {width} bytes, found {a.dtype} {a.shape}"
                )
        index = cls(
            state.codec.spec,
            state.metric,
            seed=state.seed,
            rerank_spec=None if state.rerank_codec is None else state.rerank_codec.spec,
            ivf=state.nlist,
            ivf_residual=state.ivf_residual,
        )
        index.codec = state.codec
        index.rerank_codec = state.rerank_codec
        index.centroids = state.centroids
        index._list_offsets = np.array(state.list_offsets, np.int64)
        index._ids = _Buffer(state.ids)
        index._codes = _Buffer(state.codes)
        index._norms = None if state.norms is None else _Buffer(state.norms)
        index._rcodes = None if state.rerank_codes is None else _Buffer(state.rerank_codes)
        index._next_id = state.next_id
        index._pending_check = state.pending_check
        index._file_check = state.file_check
        index._check_consistent()
        return index

    def _check_consistent(self) -> None:
        """Raise ``RuntimeError`` unless every per-row store and the list offsets agree
        (a file is never written from a state that ``open`` would reject)."""
        n = self._ids.n
        sizes = {"ids": n, "list offsets": int(self._list_offsets[-1])}
        for name, buf in (("codes", self._codes), ("second tier", self._rcodes)):
            if buf is not None:
                sizes[name] = buf.n
        if self._norms is not None:
            sizes["norms"] = self._norms.n
        if len(set(sizes.values())) > 1 or (np.diff(self._list_offsets) < 0).any():
            raise RuntimeError(f"index state is inconsistent (rows per store: {sizes}); not saved")


def training_rows(n: int, limit: int, seed: int) -> np.ndarray:
    """The rows :func:`build` trains on: all ``n``, or ``limit`` of them drawn with ``seed``.

    An input of at least ``4 * limit`` rows gives runs of :data:`SAMPLE_RUN`
    consecutive rows at random places (aligned to multiples of ``SAMPLE_RUN``; a
    few of the runs' rows dropped at random to make ``limit``): a file on disk
    serves a run in about the time of one row, so a streaming build
    (:func:`vecpress.build_index`) gathers its sample from all over a large file
    in seconds rather than minutes. The sample still spans the whole input (at
    least ``limit / SAMPLE_RUN`` places, one in every four runs at most); rows
    next to each other are often alike (passages of one document), which a sample
    of thousands of runs averages out. Smaller inputs give ``limit`` single rows.

    Examples
    --------
    >>> training_rows(5, 10, 0).tolist()
    [0, 1, 2, 3, 4]
    >>> rows = training_rows(1_000_000, 1_000, 0)
    >>> rows.size, bool((np.diff(rows) > 0).all()), int(np.unique(rows // SAMPLE_RUN).size)
    (1000, True, 63)
    """
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    runs = -(-limit // SAMPLE_RUN)
    if n // SAMPLE_RUN < 4 * runs:
        return np.sort(rng.choice(n, limit, replace=False))
    starts = np.sort(rng.choice(n // SAMPLE_RUN, runs, replace=False)) * SAMPLE_RUN
    rows = (starts[:, None] + np.arange(SAMPLE_RUN)).reshape(-1)
    if rows.size > limit:
        rows = np.delete(rows, rng.choice(rows.size, rows.size - limit, replace=False))
    return rows


def build(
    x: np.ndarray,
    spec: str,
    metric: str = "cosine",
    *,
    seed: int = 0,
    rerank_spec: str | None = None,
    ivf: int | None = None,
    ivf_residual: bool = True,
    centroids: np.ndarray | None = None,
    queries: np.ndarray | None = None,
    progress=None,
) -> Index:
    """A trained and filled :class:`Index` of ``x``, exactly as ``vecpress build`` makes it.

    Trains on ``Index.train_rows`` rows drawn with ``seed`` (all rows if fewer),
    then adds ``x`` in order in chunks of ``ADD_CHUNK`` rows, so a memory-mapped
    ``x`` is read one chunk at a time. ``progress(n)`` is called after each
    chunk with the rows added. ``queries`` (a sample of the queries to serve)
    goes to :meth:`Index.train` for stages that learn from it
    (``leanvec-ood<d'>``). The advisor measures indexes built by this
    function, so what it recommends is what the command line builds.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    >>> index = build(x, "center,hd2,rq4", "ip")
    >>> len(index), index.bytes_per_vector
    (300, 22)
    """
    index = Index(
        spec, metric, seed=seed, rerank_spec=rerank_spec, ivf=ivf, ivf_residual=ivf_residual
    )
    n = x.shape[0]
    index.train(np.asarray(x[training_rows(n, index.train_rows, seed)]), centroids, queries)
    for s in range(0, n, ADD_CHUNK):
        index.add(np.asarray(x[s : s + ADD_CHUNK]))
        if progress is not None:
            progress(min(ADD_CHUNK, n - s))
    return index


def open(path, mmap: bool = True) -> Index:  # shadows builtins.open in this module
    """Open an index file.

    Parameters
    ----------
    path : str or os.PathLike
    mmap : bool
        ``True``: memory-map the arrays (nothing is copied; pages load on
        demand). The header, layout, codec and block checksums are validated
        now; the data block by block as searches first read it (format 3; see
        :mod:`vecpress.files.storage`), all of it on :meth:`Index.verify` or the first
        add, remove, contains, ids or save. ``False``: read everything into
        memory and validate it all now.

    Opening only reads: it takes no lock and removes nothing, so readers
    never get in a writer's way.

    Raises
    ------
    FormatError
        The file is truncated, tampered with or not an index; the message
        names the file and the section.

    Examples
    --------
    >>> import tempfile, os, vecpress
    >>> x = np.random.default_rng(0).standard_normal((20, 16)).astype(np.float32)
    >>> index = vecpress.Index("f32", metric="ip")
    >>> _ = index.add(x)
    >>> path = os.path.join(tempfile.mkdtemp(), "x.vpi")
    >>> index.save(path)
    >>> loaded = vecpress.open(path, mmap=True).verify()
    >>> bool((loaded.search(x, 5).ids == index.search(x, 5).ids).all())
    True
    """
    return Index.from_state(storage.load(path, mmap=mmap))


def adapted(adapter, q, d: int | None) -> np.ndarray:
    """``q`` mapped by ``adapter`` (a :class:`vecpress.migrate.Adapter`, or anything with
    ``d_dst`` and ``transform``) into a space of dimension ``d``.

    Examples
    --------
    >>> from vecpress.migrate import Adapter
    >>> x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    >>> adapted(Adapter.fit(x, x[:, :3]), x[:2], 3).shape
    (2, 3)
    """
    if not (hasattr(adapter, "transform") and hasattr(adapter, "d_dst")):
        raise TypeError(
            f"adapter must be a vecpress.migrate.Adapter, found {type(adapter).__name__}"
        )
    if d is not None and adapter.d_dst != d:
        raise ValueError(
            f"the adapter maps into dimension {adapter.d_dst}, the vectors searched have {d}"
        )
    return adapter.transform(q)
