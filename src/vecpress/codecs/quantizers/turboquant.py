"""TurboQuant (Zandieh et al. 2025): ``tq<b>`` (MSE) and ``tqp<b>`` (inner product).

``tq<b>`` stores ``|x|`` (float16 for b <= 4, scaled by ``2**-field_exp``, an
exponent fitted to the training rows' largest norm as described in
:mod:`vecpress.codecs.quantizers.base`; float32 above) and quantizes
each coordinate of the rotated unit vector ``x/|x|`` with the ``b``-bit
Lloyd–Max codebook of the sphere marginal ``f_d``
(:mod:`~vecpress.codecs.quantizers.lloydmax`). It minimises MSE but
shrinks inner products: ``E<levels[c(u)], u> = 1 - D`` with ``D`` the codebook's
distortion. ``score`` therefore returns ``|x| <q, levels[c]> / (1 - D)``,
unbiased on average over directions (``decode`` stays the MSE reconstruction);
without that factor the exact per-vector term that ``center`` adds would be
weighed against a shrunk estimate (measured on 384-d sentence embeddings:
``center,hd2,tq1`` recall@10 0.560 without, 0.652 with). Since only ``|x|``
and the codes are stored,
re-encoding a decoded vector renormalises it by its own norm, so ``decode``
returns a vector whose *direction* lies in the cells of ``c`` (see
:meth:`TQ.decode`): ``encode(decode(codes))`` reproduces the codes of every row.

``tqp<b>`` spends ``b - 1`` bits per coordinate on ``tq`` and the last bit on a
QJL sketch (``m = d`` sign bits) of the residual ``r = u - û``, storing ``|x|``
(scaled as in ``tq``) and ``|r|`` (at most 1, never scaled):
``<q, x> ≈ |x| (<q, û> + sqrt(pi/2)/d |r| <S q, sign(S r)>)``, unbiased. ``tqp1`` is QJL alone.

Non-uniform levels are scored through a level table
(:func:`~vecpress.kernels.scan.table_scan`): each code is looked up once per
block of rows, then reused by every query of the batch.
"""

from __future__ import annotations

import numpy as np

from ...kernels.bitpack import pack, packed_size, unpack
from ...kernels.scan import table_scan
from .base import Quantizer, RowField, unit_rows
from .lloydmax import lloyd_max
from .sketches import QJLSketch


class _LloydMaxCode:
    """Lloyd–Max codebook of ``f_d`` for unit vectors in R^d (levels in raw units)."""

    def __init__(self, bits: int, d: int) -> None:
        levels, bnd, mse = lloyd_max(bits, d)
        scale = 1.0 / np.sqrt(d)
        self.bits = bits
        # E<levels[c(u)], u> = 1 - mse for the rotated unit vector u (centroid
        # condition): the factor that makes inner products unbiased on average.
        self.debias = float(1.0 / (1.0 - mse))
        self.levels = (levels * scale).astype(np.float32)
        self.boundaries = (bnd * scale).astype(np.float32)

    def codes(self, u: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.boundaries, u).astype(np.uint8)


class TQ(Quantizer):
    """TurboQuant-MSE: norm + Lloyd–Max coordinates of the unit vector.

    ``encode(decode(codes))`` reproduces the codes (the packed bytes) of every
    row that :meth:`encode` wrote: the encoder quantizes the direction
    ``x / |x|``, and :meth:`decode` returns ``|x| * |l| * w`` with ``l =
    levels[c]`` and ``w`` a unit vector inside the cells of ``c``, at least
    :attr:`MARGIN` cell widths from their edges so that the float32 rounding
    of a rotation, its inverse and the renormalisation cannot move it across
    one. For almost every row ``w = l / |l|`` and ``decode`` is the MSE
    reconstruction ``|x| * l``, bit for bit. When a coordinate of ``l / |l|``
    leaves its cell (an outlier coordinate clipped to the outermost level makes
    ``|l|`` far from 1; about 1 row in 500 of rotated data at 5-8 bits), ``w``
    is the unit vector ``clip(t * l)`` (clipped into the shrunk cells, ``t``
    found by bisection; the norm of ``clip(t * l)`` grows with ``t``), which
    moves the reconstruction by less than the cell widths. The norm field is
    not reproduced: it becomes ``|x| * |l|`` (``decode`` is shorter than ``x``
    by the codebook's shrinkage, as an MSE reconstruction is). The one row for
    which no such ``w`` exists would need every coordinate within
    ``MARGIN`` of the inner edge of its cell (``|x / |x||`` of them summing to
    1 there); ``decode`` then returns the nearest point it finds.
    """

    #: margin kept from the cell edges by a decoded direction, in cell widths
    #: of the narrowest cell (float32 round trips move a coordinate ~1e-7 of one)
    MARGIN = 1e-4

    name = "tq"
    scales_fields = True
    row_fields = (RowField("norm", "norm"),)

    def setup(self, d: int, rng: np.random.Generator) -> None:
        super().setup(d, rng)
        self.book_ = _LloydMaxCode(self.param, d)

    def setup_restored(self, arrays: dict[str, np.ndarray]) -> None:
        self.book_ = _LloydMaxCode(self.param, self.d)

    def encode(self, x: np.ndarray) -> np.ndarray:
        norms, u = unit_rows(x)
        out = np.empty((x.shape[0], self.code_size), np.uint8)
        out[:, : self._nbytes] = pack(self.book_.codes(u), self.param)
        self.put_fields(out, norm=norms)
        return out

    def _norms(self, codes: np.ndarray) -> np.ndarray:
        return self.get_fields(codes, "norm")[0]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """``|x| * |l| * w``, ``l = levels[c]``, ``w`` a unit vector in the cells of
        ``c`` (``l / |l|`` for almost every row; the class docstring)."""
        c = unpack(codes, self.param, self.d)
        u = self.book_.levels[c]
        self._keep_in_cells(c, u)
        return u * self._norms(codes)[:, None]

    def _keep_in_cells(self, c: np.ndarray, u: np.ndarray) -> None:
        """Replace (in place) the rows of ``u = levels[c]`` whose direction leaves the
        cells of ``c`` by ``|u| * w``, ``w = clip(t * u)`` a unit vector inside them."""
        bnd = self.book_.boundaries.astype(np.float64)
        if bnd.size == 0 or u.shape[0] == 0:
            return
        margin = self.MARGIN * float(np.diff(bnd).min()) if bnd.size > 1 else 0.0
        ext = np.concatenate([[-np.inf], bnd, [np.inf]])
        lo = ext[c] + margin  # cell c is (bnd[c - 1], bnd[c]]
        hi = ext[c.astype(np.intp) + 1] - margin
        u64 = u.astype(np.float64)
        rho = np.linalg.norm(u64, axis=1)
        w = u64 / rho[:, None]
        bad = np.flatnonzero(((w <= lo) | (w >= hi)).any(axis=1))
        if bad.size == 0:
            return
        ub, lob, hib = u64[bad], lo[bad], hi[bad]
        a = np.zeros(bad.size)
        b = np.full(bad.size, 1.0)
        # grow the upper end until clip(b * u) reaches the unit sphere
        for _ in range(64):
            short = np.linalg.norm(np.clip(b[:, None] * ub, lob, hib), axis=1) < 1.0
            if not short.any():
                break
            b[short] *= 2.0
        for _ in range(60):
            mid = 0.5 * (a + b)
            below = np.linalg.norm(np.clip(mid[:, None] * ub, lob, hib), axis=1) < 1.0
            a = np.where(below, mid, a)
            b = np.where(below, b, mid)
        wb = np.clip(b[:, None] * ub, lob, hib)
        wb /= np.linalg.norm(wb, axis=1, keepdims=True)
        u[bad] = (rho[bad, None] * wb).astype(u.dtype)

    def score(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        out = np.empty((q.shape[0], codes.shape[0]), np.float32)
        norms = self._norms(codes) * np.float32(self.book_.debias)
        table_scan(codes, 0, self.param, self.d, self.book_.levels, q, norms, out)
        return out


class TQProd(Quantizer):
    """TurboQuant-prod: ``b - 1`` Lloyd–Max bits + QJL of the residual (unbiased)."""

    name = "tqp"
    scales_fields = True
    row_fields = (
        RowField("norm", "norm"),
        # the norm of a difference of unit vectors: never scaled
        RowField("rnorm", "residual norm", scaled=False),
    )

    def setup(self, d: int, rng: np.random.Generator) -> None:
        super().setup(d, rng)
        self.book_ = _LloydMaxCode(self.param - 1, d) if self.param > 1 else None
        self.sketch_ = QJLSketch(d, d, rng)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"projection": self.sketch_.matrix}

    def setup_restored(self, arrays: dict[str, np.ndarray]) -> None:
        from ..transforms import _checked

        self.book_ = _LloydMaxCode(self.param - 1, self.d) if self.param > 1 else None
        self.sketch_ = QJLSketch.__new__(QJLSketch)
        self.sketch_.m = self.d
        self.sketch_.matrix = _checked(arrays, "projection", (self.d, self.d), np.float32)

    @property
    def _mse_bytes(self) -> int:
        return packed_size(self.d, self.param - 1)

    @property
    def _sign_bytes(self) -> int:
        return packed_size(self.d, 1)

    @property
    def payload_size(self) -> int:
        return self._mse_bytes + self._sign_bytes

    def _mse_part(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.book_ is None:
            return np.zeros((u.shape[0], 0), np.uint8), np.zeros_like(u)
        c = self.book_.codes(u)
        return pack(c, self.param - 1), self.book_.levels[c]

    def encode(self, x: np.ndarray) -> np.ndarray:
        norms, u = unit_rows(x)
        packed, uhat = self._mse_part(u)
        r = u - uhat
        out = np.empty((x.shape[0], self.code_size), np.uint8)
        m, s = self._mse_bytes, self._sign_bytes
        out[:, :m] = packed
        out[:, m : m + s] = self.sketch_.bits(r)
        self.put_fields(out, norm=norms, rnorm=np.linalg.norm(r, axis=1))
        return out

    def _fields(self, codes):
        return self.get_fields(codes, "norm", "rnorm")

    def decode(self, codes: np.ndarray) -> np.ndarray:
        norms, rnorm = self._fields(codes)
        u = self.sketch_.decode(codes, self._mse_bytes, rnorm)
        if self.book_ is not None:
            u += self.book_.levels[unpack(codes, self.param - 1, self.d)]
        return u * norms[:, None]

    def score(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        norms, rnorm = self._fields(codes)
        out = self.sketch_.score(q, codes, self._mse_bytes, norms * rnorm)
        if self.book_ is not None:
            mse = np.empty_like(out)
            table_scan(codes, 0, self.param - 1, self.d, self.book_.levels, q, norms, mse)
            out += mse
        return out
