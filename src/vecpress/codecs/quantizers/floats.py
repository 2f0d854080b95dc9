"""Floating-point codes: ``f32``, ``f16``, ``bf16``, and float8 ``e4m3``/``e5m2``.

``f16`` and ``bf16`` store each coordinate in 2 bytes. A coordinate beyond
float16's range (|x| > 65504) raises ``ValueError`` at ``f16`` encode, naming
the row: use ``bf16`` (float32's range) for such data, or rescale it.
Coordinates below float16's smallest subnormal (``~6e-8``) become 0.
The float8 codes store one byte per coordinate plus a per-vector float32 scale,
a power of two chosen so that the row's largest magnitude lands in the top
binade of the format (just below 448 for e4m3, 57344 for e5m2): no row overflows,
no range is wasted, and scaling is exact, so decode and re-encode are lossless.
The scale is at least ``2**-149`` (float32's smallest subnormal), so rows of
subnormal float32 values still code to finite numbers.

Scoring decodes one block of rows at a time and multiplies with BLAS.

``ml_dtypes`` (bfloat16, float8) is imported when one of its formats is first
used: its import takes most of a second, which a process that never uses these
codecs should not pay.
"""

from __future__ import annotations

import numpy as np

from .base import F16_MAX, Quantizer, RowField, blocked_matmul


def ml_dtype(name: str) -> np.dtype:
    """The numpy dtype of ``ml_dtypes.<name>`` (imported on first use).

    Examples
    --------
    >>> ml_dtype("bfloat16").itemsize
    2
    """
    import ml_dtypes

    return np.dtype(getattr(ml_dtypes, name))


class _Cast(Quantizer):
    scores_by_decoding = True  # score is <q, decode(x)> (Quantizer.scores_by_decoding)
    param_name = None
    dtype: np.dtype

    @property
    def payload_size(self) -> int:
        return self.d * self.dtype.itemsize

    def encode(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            c = x.astype(self.dtype)
        return np.ascontiguousarray(c).view(np.uint8).reshape(x.shape[0], self.code_size)

    @property
    def field_dtype(self) -> np.dtype:
        return np.dtype("<f4")

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(codes).view(self.dtype).astype(np.float32)

    def score(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        if self.dtype == np.float32:
            return q @ np.ascontiguousarray(codes).view(np.float32).T
        return blocked_matmul(q, codes, self.decode)


class F32(_Cast):
    """Raw float32 (no compression; the exact reference)."""

    name = "f32"
    dtype = np.dtype("<f4")


class F16(_Cast):
    """IEEE half precision; coordinates beyond ±65504 raise ``ValueError``."""

    name = "f16"
    dtype = np.dtype("<f2")

    def encode(self, x: np.ndarray) -> np.ndarray:
        over = ~(np.abs(x) <= F16_MAX).all(axis=1)
        if over.any():
            row = int(np.flatnonzero(over)[0])
            value = float(x[row, np.argmax(np.abs(x[row]))])
            raise ValueError(
                f"f16 stores each coordinate as float16, whose largest value is {F16_MAX:g}: "
                f"row {row} has a coordinate of {value:.7g}; use bf16 (float32's range) "
                "or rescale the data"
            )
        return super().encode(x)


class BF16(_Cast):
    """bfloat16 (float32's range, 8 bits of mantissa)."""

    name = "bf16"

    @property
    def dtype(self) -> np.dtype:
        return ml_dtype("bfloat16")


class _Float8(Quantizer):
    scores_by_decoding = True  # score is <q, decode(x)> (Quantizer.scores_by_decoding)
    param_name = None
    #: the row's power-of-two scale (float32: it spans far more than float16)
    row_fields = (RowField("scale", "scale", "<f4", scaled=False),)

    @property
    def field_dtype(self) -> np.dtype:
        return np.dtype("<f2")

    dtype: np.dtype
    max_value: float

    @property
    def payload_size(self) -> int:
        return self.d  # one byte per coordinate

    def encode(self, x: np.ndarray) -> np.ndarray:
        n, d = x.shape
        scale = _pow2_scale(np.abs(x).max(axis=1) if n else np.zeros(0, np.float32), self.max_value)
        y = self._round(x, scale)
        # A row whose largest value rounded down to exactly half the range would get a
        # scale half as large when re-encoded; use that scale now so that
        # encode(decode(codes)) reproduces the codes bit for bit.
        half = np.abs(y).max(axis=1) <= self.max_value / 2 if n else np.zeros(0, bool)
        half &= scale > _MIN_SCALE  # (a row of subnormals may sit at the smallest scale)
        if half.any():
            scale[half] *= 0.5
            y[half] = self._round(x[half], scale[half])
        out = np.empty((n, self.code_size), np.uint8)
        out[:, :d] = y.astype(self.dtype).view(np.uint8)
        self.put_stored(out, "scale", scale)
        return out

    def _round(self, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
        y = np.clip(x / scale[:, None], -self.max_value, self.max_value)
        return y.astype(self.dtype).astype(np.float32)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        d = self.d
        vals = np.ascontiguousarray(codes[:, :d]).view(self.dtype).astype(np.float32)
        return vals * self.get_fields(codes, "scale")[0][:, None]

    def score(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return blocked_matmul(q, codes, self.decode)


#: the smallest per-vector scale of the float8 codes (float32's smallest subnormal)
_MIN_SCALE = np.float32(2.0**-149)


def _pow2_scale(amax: np.ndarray, max_value: float) -> np.ndarray:
    """Smallest power of two ``s`` with ``amax / s <= max_value`` (1 for zero rows)."""
    ratio = amax.astype(np.float64) / max_value
    mant, expo = np.frexp(ratio)
    expo = np.where(mant == 0.5, expo - 1, expo)
    # not below float32's smallest subnormal (2**-149), which would round to 0
    expo = np.maximum(expo, -149)
    return np.where(amax > 0, np.ldexp(1.0, expo), 1.0).astype(np.float32)


class E4M3(_Float8):
    """float8 e4m3fn with a per-vector scale (4 exponent bits, 3 mantissa bits)."""

    name = "e4m3"
    max_value = 448.0

    @property
    def dtype(self) -> np.dtype:
        return ml_dtype("float8_e4m3fn")


class E5M2(_Float8):
    """float8 e5m2 with a per-vector scale (5 exponent bits, 2 mantissa bits)."""

    name = "e5m2"
    max_value = 57344.0

    @property
    def dtype(self) -> np.dtype:
        return ml_dtype("float8_e5m2")
