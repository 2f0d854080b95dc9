"""The :class:`Index`: compressed vectors with int64 ids, searched by a codec.

This first step is a *flat* index: every search scores the query against every
stored code with :meth:`Codec.score` and keeps the best ``k`` with the shared
:func:`vecpress.topk.topk`. IVF partitioning (``ivf=``/``nprobe=``) and exact
re-ranking (``rerank_spec=``/``rerank=``) are reserved keyword arguments that
raise ``NotImplementedError`` for now.

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

import numpy as np

from ._validation import as_vectors, check_positive_int
from .codec import Codec
from .topk import topk

METRICS = ("cosine", "ip", "l2")
#: rows used to fit the codec on the first add
FIT_SAMPLE = 100_000
#: queries scored per call of ``Codec.score``
QUERY_CHUNK = 100
#: stored rows scored per call of ``Codec.score`` (bounds the score matrix)
DB_BLOCK = 1 << 18
_MAX_ID = 2**63 - 1
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class SearchResult:
    """The result of :meth:`Index.search`.

    Attributes
    ----------
    ids : numpy.ndarray
        ``int64[nq, k]``, best first; ``-1`` where fewer than ``k`` vectors exist.
    scores : numpy.ndarray
        ``float32[nq, k]``, larger is better; ``-inf`` where the id is ``-1``.
    """

    ids: np.ndarray
    scores: np.ndarray


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


def _sq_norms(x: np.ndarray) -> np.ndarray:
    """Squared row norms, accumulated in float64."""
    return np.einsum("ij,ij->i", x, x, dtype=np.float64)


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

    def keep(self, mask: np.ndarray) -> None:
        kept = self.view[mask]
        if not self.data.flags.writeable:
            self.data = kept
        else:
            self.data[: kept.shape[0]] = kept
        self.n = kept.shape[0]


class Index:
    """A searchable collection of compressed vectors with int64 ids (flat, exhaustive).

    Parameters
    ----------
    spec : str
        Codec spec string, e.g. ``"hd2,rq4"`` (see :class:`vecpress.Codec`).
    metric : {"cosine", "ip", "l2"}
        ``"cosine"`` normalises vectors *and* queries to unit length;
        ``"l2"`` scores with the negated estimated squared distance (larger is
        better, like the other metrics) and stores ``|x|²`` per vector.
    seed : int
        Seed of the codec's random stages and of the training sample.
    rerank_spec, ivf : None
        Reserved for re-ranking and IVF partitioning; not implemented yet.

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
    """

    def __init__(
        self,
        spec: str,
        metric: str = "cosine",
        *,
        seed: int = 0,
        rerank_spec: str | None = None,
        ivf: object = None,
    ) -> None:
        if rerank_spec is not None:
            raise NotImplementedError("re-ranking (rerank_spec=) is not implemented yet")
        if ivf is not None:
            raise NotImplementedError("IVF partitioning (ivf=) is not implemented yet")
        self.metric = _check_metric(metric)
        self.seed = check_positive_int(seed, "seed", low=0, high=2**64 - 1)
        self.codec = Codec.from_spec(spec, seed=self.seed)
        self._codes: _Buffer | None = None
        self._ids = _Buffer(np.zeros(0, np.int64))
        self._norms: _Buffer | None = None
        self._next_id = 0
        self._pending_check = None  # set by storage.open for lazily verified files

    # -- state -------------------------------------------------------------
    @property
    def spec(self) -> str:
        """The canonical codec spec string."""
        return self.codec.spec

    @property
    def d(self) -> int | None:
        """The dimension, or ``None`` before the first add / train."""
        return self.codec.d

    @property
    def is_trained(self) -> bool:
        """Whether the codec is fitted (vectors can be encoded)."""
        return self.codec.is_fitted

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
    def bytes_per_vector(self) -> int:
        """Stored bytes per vector: code + 8-byte id (+ 4-byte ``|x|²`` for ``"l2"``)."""
        return self.codec.code_size + 8 + (4 if self.metric == "l2" else 0)

    @property
    def ids(self) -> np.ndarray:
        """A copy of the stored ids, in storage order."""
        self._ensure_checked()
        return self._ids.view.copy()

    def __repr__(self) -> str:
        return f"Index({self.spec!r}, metric={self.metric!r}, d={self.d}, ntotal={self.ntotal})"

    def _ensure_checked(self) -> None:
        if self._pending_check is not None:
            self._pending_check()
            self._pending_check = None

    def verify(self) -> Index:
        """Check the data sections of a memory-mapped file now; returns ``self``.

        Files opened with ``vecpress.open(path, mmap=True)`` have their header
        and codec validated at once and their data sections (codes, ids,
        norms) checked on the first use of the data (search, add, remove,
        contains, ids, save) or here, whichever comes first. Raises
        :class:`~vecpress.FormatError` naming the file and section.
        """
        self._ensure_checked()
        return self

    # -- input preparation ---------------------------------------------------
    def _prepare(self, x: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Normalise for cosine; returns ``(vectors, float64 squared norms of the result)``."""
        sq = _sq_norms(x)
        if self.metric == "cosine":
            zero = np.flatnonzero(sq == 0)
            if zero.size:
                raise ValueError(
                    f"{name} has {zero.size} zero row(s), first at row {zero[0]}: a zero vector "
                    "has no direction under the cosine metric"
                )
            x = (x / np.sqrt(sq)[:, None]).astype(np.float32)
            sq = _sq_norms(x)
        elif self.metric == "l2" and x.shape[0]:
            big = np.flatnonzero(sq > _F32_MAX)
            if big.size:
                raise ValueError(
                    f"{name} row {big[0]} has squared norm {sq[big[0]]:.3g}, beyond float32 "
                    f"range ({_F32_MAX:.3g}), which the l2 metric cannot represent"
                )
        return x, sq

    def _fit_codec(self, x: np.ndarray) -> Codec:
        """A freshly fitted codec (``self.codec`` is replaced only on success)."""
        if x.shape[0] > FIT_SAMPLE:
            rows = np.random.default_rng(self.seed).choice(x.shape[0], FIT_SAMPLE, replace=False)
            x = x[np.sort(rows)]
        return Codec.from_spec(self.spec, seed=self.seed).fit(x)

    # -- building ------------------------------------------------------------
    def train(self, x) -> Index:
        """Fit the codec explicitly on ``x`` (before any vector is added); returns ``self``.

        Under ``"cosine"`` the training vectors are normalised first. More than
        100,000 rows are subsampled with the index's seed.

        Examples
        --------
        >>> import numpy as np
        >>> x = np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)
        >>> Index("center,int8", metric="ip").train(x).is_trained
        True
        """
        if self.ntotal:
            raise ValueError(
                f"cannot train an index that holds {self.ntotal} vectors (their codes would "
                "no longer match the codec); train before the first add"
            )
        x = as_vectors(x, "X", dim=self.d, allow_empty=False)
        x, _ = self._prepare(x, "X")
        self.codec = self._fit_codec(x)
        return self

    def add(self, x, ids=None) -> np.ndarray:
        """Encode and store vectors; returns their ids (``int64[n]``).

        Parameters
        ----------
        x : numpy.ndarray
            ``(n, d)`` float vectors (float16/32/64; converted to float32).
        ids : array_like of int, optional
            Non-negative, unique, not already stored. When omitted, ids
            ``next_id, next_id + 1, ...`` are assigned.

        All-or-nothing: every check (values, dimension, ids) runs before
        anything is stored, so a failed call leaves the index unchanged. The
        codec is fitted on the first add if it is not fitted yet (on up to
        100,000 rows sampled with the index's seed).

        Examples
        --------
        >>> import numpy as np
        >>> index = Index("f32", metric="ip")
        >>> index.add(np.eye(3, dtype=np.float32), ids=[10, 20, 30]).tolist()
        [10, 20, 30]
        >>> index.add(np.ones((1, 3), np.float32)).tolist()
        [31]
        """
        self._ensure_checked()
        x = as_vectors(x, "X", dim=self.d)
        n = x.shape[0]
        x, sq = self._prepare(x, "X")
        new_ids = self._check_new_ids(ids, n)
        codec = self.codec if self.codec.is_fitted else self._fit_codec(x)
        codes = codec.encode(x)
        # -- commit (nothing below can fail on valid input) --
        self.codec = codec
        if self._codes is None:
            self._codes = _Buffer(np.zeros((0, codec.code_size), np.uint8))
            if self.metric == "l2":
                self._norms = _Buffer(np.zeros(0, np.float32))
        self._codes.append(codes)
        if self._norms is not None:
            self._norms.append(sq.astype(np.float32))
        self._ids.append(new_ids)
        if n:
            self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        return new_ids.copy()

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
        self._ensure_checked()
        gone = np.isin(self._ids.view, _as_ids(ids))
        count = int(gone.sum())
        if count:
            keep = ~gone
            self._ids.keep(keep)
            if self._codes is not None:
                self._codes.keep(keep)
            if self._norms is not None:
                self._norms.keep(keep)
        return count

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
        self._ensure_checked()
        found = np.isin(_as_ids(ids), self._ids.view)
        return bool(found[0]) if np.ndim(ids) == 0 else found

    def __contains__(self, id_) -> bool:
        return bool(np.all(self.contains(id_)))

    # -- searching -----------------------------------------------------------
    def search(self, q, k: int, rerank=None, nprobe=None) -> SearchResult:
        """The ``k`` best stored vectors for each query, best first.

        Parameters
        ----------
        q : numpy.ndarray
            ``(nq, d)`` float queries (normalised under ``"cosine"``).
        k : int
            Results per query, ``>= 1``; where fewer than ``k`` vectors are
            stored the rest is padded with id ``-1`` and score ``-inf``.
        rerank, nprobe : None
            Reserved for re-ranking and IVF; not implemented yet.

        Returns
        -------
        SearchResult
            ``ids int64[nq, k]`` and ``scores float32[nq, k]`` (larger is
            better; for ``"l2"`` the negated estimated squared distance).

        The ranking is exactly that of ``topk(codec.score(q, codes), k)`` over
        the stored codes (queries are scored 100 at a time, stored rows in
        blocks of 262,144 merged with the same ``topk``).

        Examples
        --------
        >>> import numpy as np
        >>> index = Index("f32", metric="l2")
        >>> _ = index.add(np.array([[0, 0], [3, 4]], np.float32))
        >>> res = index.search(np.array([[3, 3]], np.float32), k=3)
        >>> res.ids.tolist(), res.scores.tolist()
        ([[1, 0, -1]], [[-1.0, -18.0, -inf]])
        """
        if rerank is not None:
            raise NotImplementedError("re-ranking (rerank=) is not implemented yet")
        if nprobe is not None:
            raise NotImplementedError("IVF search (nprobe=) is not implemented yet")
        k = check_positive_int(k, "k")
        self._ensure_checked()
        q = as_vectors(q, "queries", dim=self.d)
        q, qsq = self._prepare(q, "queries")
        nq = q.shape[0]
        ids = np.full((nq, k), -1, np.int64)
        scores = np.full((nq, k), -np.inf, np.float32)
        if nq == 0 or self.ntotal == 0:
            return SearchResult(ids, scores)
        stored = self._ids.view
        for s in range(0, nq, QUERY_CHUNK):
            pos, sc = self._search_rows(q[s : s + QUERY_CHUNK], qsq[s : s + QUERY_CHUNK], k)
            found = pos >= 0
            ids[s : s + QUERY_CHUNK][found] = stored[pos[found]]
            scores[s : s + QUERY_CHUNK] = sc
        return SearchResult(ids, scores)

    def _search_rows(self, q: np.ndarray, qsq: np.ndarray, k: int):
        """Top-k storage rows (``-1`` padded) and scores for one chunk of queries."""
        codes = self._codes.view
        best = None
        for b in range(0, codes.shape[0], DB_BLOCK):
            est = self.codec.score(q, codes[b : b + DB_BLOCK])
            if self.metric == "l2":
                est *= 2
                est -= self._norms.view[None, b : b + DB_BLOCK]
                est -= qsq.astype(np.float32)[:, None]
            pos, sc = topk(est, k)
            pos = np.where(pos >= 0, pos + b, -1)
            if best is not None:  # merge with the blocks so far, by the same topk
                cat_pos = np.concatenate([best[0], pos], axis=1)
                pick, sc = topk(np.concatenate([best[1], sc], axis=1), k)
                pos = np.take_along_axis(cat_pos, pick, axis=1)
            best = (pos, sc)
        return best

    # -- persistence -----------------------------------------------------------
    def save(self, path) -> None:
        """Write the index to ``path`` atomically; see :func:`vecpress.storage.save`."""
        from .storage import save

        save(self, path)
