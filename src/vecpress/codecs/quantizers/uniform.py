"""Uniform scalar codes scored as integer dot products: ``int<b>`` and ``lvq<b>``.

``int<b>`` (per-dimension calibration, what sentence-transformers' int8 does,
done carefully): each dimension ``i`` gets a range ``[lo_i, hi_i]`` learned by
``fit``, chosen among clipping quantiles to minimise the reconstruction MSE on
the training rows (min/max wins at 8 bits, clipping the tails wins at few bits).
Values outside the range are clipped before rounding, never wrapped.
``x_i ≈ lo_i + step_i * c_i``.

``lvq<b>`` (LVQ, Aguerrebere et al. 2023): each vector gets its own range,
stored with the codes as two float16 numbers (the lower bound rounded down and
the step rounded up, so the stored grid always covers the row). Usually
preceded by ``center``. ``x_i ≈ lo + step * c_i``. Whatever ``b``, the two
numbers are float16 scaled by ``2**-field_exp``, an exponent that ``fit``
chooses from the training rows' largest norm
(:func:`~vecpress.codecs.quantizers.base.field_exponent`; 0 for ordinary data, and
for a codec that is never fitted): a row whose coordinates reach beyond
``32752 * 2**field_exp`` (half float16's range, so that the rounded bounds
stay finite) raises ``ValueError`` at encode.

Both score a query by quantizing it to 8 bits once (``q ≈ s * qi``; two 8-bit
limbs against 6-8-bit codes) and taking integer dot products with the codes
(:class:`~vecpress.codecs.quantizers.base.GridQuantizer`).
"""

from __future__ import annotations

import numpy as np

from ...kernels.bitpack import pack, unpack
from .base import F16_MAX, GridQuantizer, RowField, check_field

_CLIP_QUANTILES = (0.0, 1e-4, 5e-4, 2e-3, 5e-3, 0.01, 0.02, 0.04)
_CALIBRATION_ROWS = 20000


def _round_codes(x, lo, step, levels):
    safe = np.where(step > 0, step, 1.0).astype(np.float32)
    c = np.rint((x - lo) / safe)
    return np.clip(c, 0, levels - 1).astype(np.uint8)


class Int(GridQuantizer):
    """Per-dimension calibrated uniform quantizer with ``b`` bits per coordinate."""

    name = "int"
    needs_data = True

    def fit(
        self, x: np.ndarray, *, weights: np.ndarray | None = None, queries: np.ndarray | None = None
    ) -> None:
        if x.shape[0] > _CALIBRATION_ROWS:
            idx = np.random.default_rng(0).choice(x.shape[0], _CALIBRATION_ROWS, replace=False)
            x = x[np.sort(idx)]
        srt = np.sort(x, axis=0)
        n = srt.shape[0]
        best_mse = np.full(x.shape[1], np.inf)
        best_lo = srt[0].copy()
        best_hi = srt[-1].copy()
        for a in _CLIP_QUANTILES:
            k = min(int(a * n), (n - 1) // 2)
            lo, hi = srt[k], srt[n - 1 - k]
            step = ((hi - lo) / (self.levels - 1)).astype(np.float32)
            rec = lo + step * _round_codes(x, lo, step, self.levels)
            mse = ((rec - x) ** 2).mean(axis=0)
            better = mse < best_mse
            best_mse[better] = mse[better]
            best_lo[better] = lo[better]
            best_hi[better] = hi[better]
        self.lo_ = best_lo.astype(np.float32)
        self.step_ = ((best_hi - best_lo) / (self.levels - 1)).astype(np.float32)
        self.fitted = True

    def arrays(self) -> dict[str, np.ndarray]:
        return {"lo": self.lo_, "step": self.step_}

    def setup_restored(self, arrays: dict[str, np.ndarray]) -> None:
        from ..transforms import _checked

        self.lo_ = _checked(arrays, "lo", (self.d,), np.float32)
        self.step_ = _checked(arrays, "step", (self.d,), np.float32)
        if (self.step_ < 0).any():
            raise ValueError("int quantizer steps must be non-negative")

    def encode(self, x: np.ndarray) -> np.ndarray:
        return pack(_round_codes(x, self.lo_, self.step_, self.levels), self.param)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        c = unpack(codes, self.param, self.d).astype(np.float32)
        return self.lo_ + self.step_ * c

    def grid_queries(self, q: np.ndarray):
        qoff = (q @ self.lo_).astype(np.float32)
        qs = np.ascontiguousarray(q * self.step_, dtype=np.float32)
        return qs, 0.0, qoff, np.zeros(q.shape[0], np.float32)

    def grid_row_fields(self):
        """``a = 1``, ``b = 0``: the per-dimension scales are in the query."""
        return 1.0, 0.0


_F16 = np.dtype("<f2")


class LVQ(GridQuantizer):
    """Per-vector uniform quantizer (LVQ) with ``b`` bits per coordinate."""

    name = "lvq"
    scales_fields = True
    #: the row's grid: the bounds are float16 whatever the number of bits
    row_fields = (
        RowField("lo", "smallest coordinate", "<f2"),
        RowField("step", "grid step", "<f2"),
    )

    @property
    def scaled_field_dtype(self) -> np.dtype:
        return _F16  # the bounds are float16 whatever the number of bits

    def encode(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        out = np.zeros((n, self.code_size), np.uint8)
        if n == 0:
            return out
        e = self.field_exp
        lo, hi = x.min(axis=1), x.max(axis=1)
        # half of float16's range: the rounded bounds and the step stay finite
        big = np.maximum(np.abs(lo), np.abs(hi))
        what = "largest coordinate magnitude"
        check_field(big, _F16, e, what, self.spec, F16_MAX / 2, wider=False)
        step = (hi.astype(np.float64) - lo) / (self.levels - 1)
        what = "grid step (max - min) / (2^b - 1)"
        check_field(step, _F16, e, what, self.spec, F16_MAX / 2, wider=False)
        # in the scaled units of the fields (exact: a power of two)
        lo_s, hi_s = np.ldexp(lo, -e), np.ldexp(hi, -e)
        lo16 = lo_s.astype(np.float16)
        down = lo16.astype(np.float32) > lo_s
        lo16[down] = np.nextafter(lo16[down], np.float16(-np.inf))
        lo32 = lo16.astype(np.float32)
        step16 = ((hi_s - lo32) / (self.levels - 1)).astype(np.float16)
        short = lo32 + step16.astype(np.float32) * (self.levels - 1) < hi_s
        step16[short] = np.nextafter(step16[short], np.float16(np.inf))
        step32 = step16.astype(np.float32)
        lo_x, step_x = np.ldexp(lo32, e), np.ldexp(step32, e)
        codes = _round_codes(x, lo_x[:, None], step_x[:, None], self.levels)
        out[:, : self._nbytes] = pack(codes, self.param)
        self.put_stored(out, "lo", lo16)  # already rounded, in the fields' scaled units
        self.put_stored(out, "step", step16)
        return out

    def _bounds(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.get_fields(codes, "lo", "step")

    def decode(self, codes: np.ndarray) -> np.ndarray:
        lo, step = self._bounds(codes)
        c = unpack(codes, self.param, self.d).astype(np.float32)
        return lo[:, None] + step[:, None] * c

    def grid_queries(self, q: np.ndarray):
        qsum = q.sum(axis=1, dtype=np.float64).astype(np.float32)
        return q, 0.0, np.zeros(q.shape[0], np.float32), qsum

    def grid_row_fields(self):
        """``a = step``, ``b = lo`` (float16, scaled by ``2**field_exp``)."""
        return self.field_at("step"), self.field_at("lo")
