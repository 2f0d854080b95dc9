"""Product quantization: ``pq<M>x<b>`` and ``opq<M>x<b>``.

``pq<M>x<b>`` (Jégou et al. 2011) splits the ``d`` coordinates into ``M``
contiguous sub-vectors of ``d/M`` coordinates and codes each by the nearest of
``2^b`` centroids (b = 4 or 8) learned by k-means on that sub-space — faiss's
``ProductQuantizer`` does the training, so the codebooks are those of faiss's
``PQ<M>x<b>`` trained on the same rows. A code row is ``M * b / 8`` bytes; 4-bit
codes hold two sub-quantizers per byte, the first in the low nibble.

``opq<M>x<b>`` (Ge et al. 2013) first rotates the vectors by an orthogonal
matrix learned by faiss's ``OPQMatrix`` to balance the variance between
sub-spaces, then product-quantizes them; queries are rotated the same way.

A query is scored with look-up tables: ``T[m, c] = <q_m, centroid_{m,c}>``
and ``score = Σ_m T[m, code_m]`` (an asymmetric estimate of ``<q, x>``).
4-bit codes are scored by fast-scan (:mod:`vecpress.kernels.fastscan`): the
tables rounded to 8 bits per query and looked up 32-64 codes at a time with
byte shuffles, as faiss's ``PQ<M>x4fs``. ``d`` must be a multiple of ``M``.

faiss's k-means aborts the process on distances that overflow float32 (a row
of norm 1e20); the input checks (:data:`vecpress.MAX_NORM`) refuse such rows
first, and an exception faiss still throws becomes a ``ValueError``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numba as nb
import numpy as np

from ...kernels.fastscan import score_pq4
from ...threads import faiss_module
from .base import Quantizer

#: bits per sub-quantizer that ``pq``/``opq`` accept
PQ_BITS = (4, 8)
#: no rotation of the queries (:func:`_query_tables`)
_NO_ROTATION = np.zeros((0, 0), np.float32)
#: code rows scored per block (keeps the decoded look-ups in cache)
_BLOCK = 4096


#: code rows per parallel block of the table scans (one query's tables stay in cache
#: while it scores the block)
_SCAN_BLOCK = 512


@nb.njit(cache=True, parallel=True)
def _query_tables(q, rotation_t, centroids_t, out):
    """``out[i, m, c] = <y_i[m-th sub-vector], centroid (m, c)>`` with ``y_i = q_i R^T``
    (``rotation_t`` = ``R^T``, or empty for none): one query at a time, each sum in
    float64 in a fixed order (vectorised across outputs, never across a sum's terms), so
    a query's tables are the same whatever queries it is computed with. (A BLAS product
    of a batch sums in an order its blocking picks for the batch's shape; one unit in
    the last place of a table entry can move it across a rounding step of the 8-bit
    tables of fast-scan, changing the query's scores by a whole step.)"""
    nq, d = q.shape
    m_count, dsub, k = centroids_t.shape
    for i in nb.prange(nq):
        y = np.zeros(d, np.float64)
        if rotation_t.shape[0]:
            for j in range(d):
                v = np.float64(q[i, j])
                for e in range(d):
                    y[e] += v * rotation_t[j, e]
        else:
            for e in range(d):
                y[e] = q[i, e]
        acc = np.empty(k, np.float64)
        for m in range(m_count):
            acc[:] = 0.0
            for j in range(dsub):
                v = y[m * dsub + j]
                for c in range(k):
                    acc[c] += v * centroids_t[m, j, c]
            for c in range(k):
                out[i, m, c] = acc[c]


@nb.njit(cache=True, parallel=True, fastmath=True)
def _lut_scan(idx, lut, out):
    """``out[i, j] = Σ_m lut[i, m, idx[j, m]]`` (``idx``: one centroid index per byte)."""
    nq, m_count, _ = lut.shape
    n = idx.shape[0]
    for blk in nb.prange((n + _SCAN_BLOCK - 1) // _SCAN_BLOCK):
        lo = blk * _SCAN_BLOCK
        hi = min(n, lo + _SCAN_BLOCK)
        for i in range(nq):
            for j in range(lo, hi):
                s = np.float32(0.0)
                for m in range(m_count):
                    s += lut[i, m, idx[j, m]]
                out[i, j] = s


def unpack_codes(codes: np.ndarray, m: int, bits: int) -> np.ndarray:
    """``uint8[n, M]`` centroid indices of packed code rows."""
    if bits == 8:
        return np.ascontiguousarray(codes[:, :m])
    out = np.empty((codes.shape[0], m), np.uint8)
    lo = codes & 15
    hi = codes >> 4
    out[:, 0::2] = lo[:, : (m + 1) // 2]
    out[:, 1::2] = hi[:, : m // 2]
    return out


def pack_codes(idx: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``uint8[n, M]`` centroid indices into code rows (two 4-bit codes per byte)."""
    if bits == 8:
        return np.ascontiguousarray(idx, np.uint8)
    n, m = idx.shape
    out = np.zeros((n, (m + 1) // 2), np.uint8)
    out[:, :] = idx[:, 0::2]
    out[:, : m // 2] |= idx[:, 1::2] << 4
    return out


def usage_entropy(codes: np.ndarray, m: int, bits: int) -> np.ndarray:
    """Entropy in bits of each sub-quantizer's code usage (``float64[M]``; at most ``bits``).

    A sub-quantizer whose codes collapse onto a few centroids shows a low
    entropy: its bits are wasted.

    Examples
    --------
    >>> usage_entropy(np.array([[0], [1], [2], [3]], np.uint8), 1, 8)
    array([2.])
    """
    idx = unpack_codes(codes, m, bits)
    out = np.empty(m)
    for j in range(m):
        p = np.bincount(idx[:, j], minlength=1 << bits) / max(idx.shape[0], 1)
        p = p[p > 0]
        out[j] = float(-(p * np.log2(p)).sum())
    return out


@contextmanager
def faiss_errors(what: str):
    """Turn a ``RuntimeError`` thrown by faiss into a ``ValueError`` naming ``what``.

    The inputs are validated first (:func:`vecpress._validation.as_vectors` bounds
    every norm by ``2**50``, so no distance overflows float32 inside faiss); this is
    the last line for anything faiss still refuses.
    """
    try:
        yield
    except RuntimeError as e:
        raise ValueError(f"{what} failed on these training rows: {e}") from None


def unit_scale(a: np.ndarray) -> np.float32:
    """A power of two that brings the largest magnitude of ``a`` near 1, or exactly 1 when
    it lies in ``[2**-20, 2**20]`` (ordinary data: nothing changes). Scaling by it is exact,
    and keeps the float32 products of training and encoding from underflowing (rows of
    ~1e-30) or overflowing.

    Examples
    --------
    >>> float(unit_scale(np.ones(3))), float(unit_scale(np.full(3, 2.0**-100))) == 2.0**99
    (1.0, True)
    """
    m = float(np.abs(a).max()) if a.size else 0.0
    if m == 0 or 2.0**-20 <= m <= 2.0**20:
        return np.float32(1.0)
    return np.float32(2.0 ** -math.frexp(m)[1])


class PQ(Quantizer):
    """Product quantizer: ``M`` sub-spaces, ``2^b`` centroids each (b = 4 or 8)."""

    name = "pq"
    needs_data = True
    param_name = "m"

    def __init__(self, param: int, bits: int = 8) -> None:
        super().__init__(param)
        if bits not in PQ_BITS:
            raise ValueError(f"{self.name}{param}x{bits}: bits must be 4 or 8, found {bits}")
        self.bits = bits
        self.centroids_: np.ndarray | None = None
        #: contiguous transposes of the arrays for the query tables (``_transposed``)
        self._layouts: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def spec(self) -> str:
        return f"{self.name}{self.param}x{self.bits}"

    def config(self) -> dict:
        return {**super().config(), "bits": self.bits}

    def setup(self, d: int, rng: np.random.Generator) -> None:
        if d % self.param:
            raise ValueError(
                f"{self.spec}: the dimension d={d} must be a multiple of M={self.param}"
            )
        super().setup(d, rng)

    @property
    def dsub(self) -> int:
        return self.d // self.param

    @property
    def payload_size(self) -> int:
        return (self.param * self.bits + 7) // 8

    @property
    def field_dtype(self) -> np.dtype:
        return np.dtype("<f4")

    # -- learning ---------------------------------------------------------------
    def _train_pq(self, x: np.ndarray) -> np.ndarray:
        faiss = faiss_module()
        if x.shape[0] < (1 << self.bits):
            raise ValueError(
                f"{self.spec} needs at least {1 << self.bits} training rows, found {x.shape[0]}"
            )
        pq = faiss.ProductQuantizer(self.d, self.param, self.bits)
        s = unit_scale(x)  # faiss's float32 distances of rows of ~1e-30 underflow to 0
        with faiss_errors(f"{self.spec} training (faiss ProductQuantizer)"):
            pq.train(np.ascontiguousarray(x * s, np.float32))
        c = faiss.vector_to_array(pq.centroids).astype(np.float32) / s
        return c.reshape(self.param, 1 << self.bits, self.dsub)

    def fit(
        self, x: np.ndarray, *, weights: np.ndarray | None = None, queries: np.ndarray | None = None
    ) -> None:
        self.centroids_ = self._train_pq(x)
        self.fitted = True

    def arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids_}

    def restore(self, config: dict, arrays: dict[str, np.ndarray]) -> None:
        if config.get("bits") != self.bits:
            raise ValueError(f"{self.spec}: stored bits {config.get('bits')!r} differ")
        super().restore(config, arrays)

    def setup_restored(self, arrays: dict[str, np.ndarray]) -> None:
        from ..transforms import _checked

        if self.d % self.param:
            raise ValueError(f"d={self.d} is not a multiple of M={self.param}")
        shape = (self.param, 1 << self.bits, self.dsub)
        self.centroids_ = _checked(arrays, "centroids", shape, np.float32)

    # -- coding -------------------------------------------------------------------
    def _rotate(self, x: np.ndarray) -> np.ndarray:
        return x

    def encode(self, x: np.ndarray) -> np.ndarray:
        x = self._rotate(x)
        n = x.shape[0]
        idx = np.empty((n, self.param), np.uint8)
        scale = unit_scale(self.centroids_)  # 1 but for data far from unit scale
        c = self.centroids_ * scale
        half_sq = 0.5 * np.einsum("mkd,mkd->mk", c, c)
        for s in range(0, n, _BLOCK):
            blk = x[s : s + _BLOCK].reshape(-1, self.param, self.dsub) * scale
            for m in range(self.param):
                # nearest centroid: max <x, c> - |c|²/2
                idx[s : s + _BLOCK, m] = np.argmax(blk[:, m] @ c[m].T - half_sq[m], axis=1)
        return pack_codes(idx, self.bits)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        idx = unpack_codes(codes, self.param, self.bits)
        parts = self.centroids_[np.arange(self.param)[None, :], idx]  # n x M x dsub
        return self._unrotate(parts.reshape(codes.shape[0], self.d))

    def _unrotate(self, y: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(y, np.float32)

    def tables(self, q: np.ndarray) -> np.ndarray:
        """Look-up tables ``float32[nq, M, 2^b]`` of the queries, each query's the same
        whatever queries it comes with (:func:`_query_tables`)."""
        out = np.empty((q.shape[0], self.param, self.centroids_.shape[1]), np.float32)
        q = np.ascontiguousarray(q, np.float32)
        centroids_t = self._transposed("centroids", self.centroids_, (0, 2, 1))
        _query_tables(q, self._query_rotation(), centroids_t, out)
        return out

    def _query_rotation(self) -> np.ndarray:
        """``R^T`` for :func:`_query_tables` (empty: none)."""
        return _NO_ROTATION

    def _transposed(self, name: str, a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        """``a.transpose(axes)`` made contiguous, kept while ``a`` is the same array."""
        cached = self._layouts.get(name)
        if cached is None or cached[0] is not a:
            cached = (a, np.ascontiguousarray(a.transpose(axes)))
            self._layouts[name] = cached
        return cached[1]

    def score(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``Σ_m T[m, code_m]``; for 4-bit codes by fast-scan, with the tables rounded to
        8 bits per query (:func:`vecpress.kernels.fastscan.score_pq4`: within
        ``M * scale / 2`` of the float-table sum), as faiss's ``PQ<M>x4fs`` does."""
        out = np.empty((q.shape[0], codes.shape[0]), np.float32)
        if codes.shape[0] == 0 or q.shape[0] == 0:
            return out
        lut = self.tables(q)
        codes = np.ascontiguousarray(codes)
        if self.bits == 4:
            return score_pq4(codes, self.param, lut)
        _lut_scan(codes, lut, out)
        return out

    def float_score(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``Σ_m T[m, code_m]`` with float tables (= ``<q, decode(codes)>``), any bits."""
        out = np.empty((q.shape[0], codes.shape[0]), np.float32)
        if codes.shape[0] and q.shape[0]:
            lut = self.tables(q)
            _lut_scan(unpack_codes(np.ascontiguousarray(codes), self.param, self.bits), lut, out)
        return out


class OPQ(PQ):
    """Product quantizer after a learned orthogonal rotation (faiss ``OPQMatrix``)."""

    name = "opq"

    def fit(
        self, x: np.ndarray, *, weights: np.ndarray | None = None, queries: np.ndarray | None = None
    ) -> None:
        faiss = faiss_module()
        opq = faiss.OPQMatrix(self.d, self.param)
        # learn the rotation with the sub-quantizers it will serve (faiss's default is 8 bits)
        pq = faiss.ProductQuantizer(self.d, self.param, self.bits)
        opq.pq = pq
        with faiss_errors(f"{self.spec} training (faiss OPQMatrix)"):
            opq.train(np.ascontiguousarray(x * unit_scale(x), np.float32))  # scale-free
        del pq
        # faiss applies y = A x with A stored row-major as d_out x d_in
        self.rotation_ = faiss.vector_to_array(opq.A).astype(np.float32).reshape(self.d, self.d)
        self.centroids_ = self._train_pq(self._rotate(x))
        self.fitted = True

    def _rotate(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x @ self.rotation_.T, np.float32)

    def _unrotate(self, y: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(y @ self.rotation_, np.float32)

    def _query_rotation(self) -> np.ndarray:
        return self._transposed("rotation", self.rotation_, (1, 0))

    def arrays(self) -> dict[str, np.ndarray]:
        return {**super().arrays(), "rotation": self.rotation_}

    def setup_restored(self, arrays: dict[str, np.ndarray]) -> None:
        from ..transforms import _checked

        super().setup_restored(arrays)
        self.rotation_ = _checked(arrays, "rotation", (self.d, self.d), np.float32)
        eye = self.rotation_ @ self.rotation_.T
        if not np.allclose(eye, np.eye(self.d), atol=1e-3):
            raise ValueError("opq rotation is not orthogonal")
