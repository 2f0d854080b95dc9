"""One-bit sketches: ``qjl<m>`` (QJL) and ``sign`` (binary codes).

``qjl<m>`` (Zandieh et al. 2024) stores the ``m`` bits ``sign(S x)`` of a
Gaussian projection ``S`` (m x d, i.i.d. N(0, 1)) and the float32 norm ``|x|``.
With the query left unquantized,
``<q, x> ≈ sqrt(pi/2) / m * |x| * <S q, sign(S x)>``, which is unbiased with
variance ``((pi/2)|q|^2|x|^2 - <q, x>^2) / m``.

``sign`` stores the d sign bits of the (rotated) vector and nothing else — the
binary embeddings vector databases ship. It is scored by popcount against the
sign bits of the query: with ``h`` differing bits, the angle is estimated as
``pi * h / d`` (exact in expectation for Gaussian projections, close after a
random rotation), so the score is ``|q| * cos(pi * h / d)``, an estimate of
``<q, x>`` for unit-norm ``x``. It decodes to ``sign(x) / sqrt(d)``.
"""

from __future__ import annotations

import numpy as np

from ...kernels.bitpack import pack, packed_size, unpack
from ...kernels.scan import hamming_scan, pack_words, table_scan
from .base import Quantizer, RowField

_SIGN_TABLE = np.array([-1.0, 1.0], np.float32)
SQRT_HALF_PI = float(np.sqrt(np.pi / 2))


def sign_bits(y: np.ndarray) -> np.ndarray:
    """Pack ``y >= 0`` per coordinate into little-endian bits."""
    return pack((y >= 0).astype(np.uint8), 1)


class QJLSketch:
    """The Gaussian projection shared by ``qjl`` and ``tqp``."""

    def __init__(self, m: int, d: int, rng: np.random.Generator) -> None:
        self.m = m
        self.matrix = rng.standard_normal((m, d), dtype=np.float32)

    def bits(self, x: np.ndarray) -> np.ndarray:
        return sign_bits(x @ self.matrix.T)

    def score(self, q: np.ndarray, codes: np.ndarray, offset: int, weight: np.ndarray):
        """``weight[j] * sqrt(pi/2)/m * <S q, sign(S x_j)>`` for bits at ``offset``."""
        sq = np.ascontiguousarray(q @ self.matrix.T, dtype=np.float32)
        out = np.empty((q.shape[0], codes.shape[0]), np.float32)
        a = (weight * (SQRT_HALF_PI / self.m)).astype(np.float32)
        table_scan(codes, offset, 1, self.m, _SIGN_TABLE, sq, a, out)
        return out

    def decode(self, codes: np.ndarray, offset: int, weight: np.ndarray) -> np.ndarray:
        nbytes = packed_size(self.m, 1)
        s = _SIGN_TABLE[unpack(np.ascontiguousarray(codes[:, offset : offset + nbytes]), 1, self.m)]
        return (s @ self.matrix) * (weight * (SQRT_HALF_PI / self.m))[:, None]


class QJL(Quantizer):
    """``m`` sign bits of a Gaussian projection plus the norm (4 bytes)."""

    name = "qjl"
    param_name = "m"
    row_fields = (RowField("norm", "norm", scaled=False),)  # float32 (field_dtype)

    @property
    def field_dtype(self) -> np.dtype:
        return np.dtype("<f4")

    def setup(self, d: int, rng: np.random.Generator) -> None:
        super().setup(d, rng)
        self.sketch_ = QJLSketch(self.param, d, rng)

    @property
    def _nbytes(self) -> int:
        return packed_size(self.param, 1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"projection": self.sketch_.matrix}

    def setup_restored(self, arrays: dict[str, np.ndarray]) -> None:
        from ..transforms import _checked

        self.sketch_ = QJLSketch.__new__(QJLSketch)
        self.sketch_.m = self.param
        self.sketch_.matrix = _checked(arrays, "projection", (self.param, self.d), np.float32)

    def encode(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.code_size), np.uint8)
        out[:, : self._nbytes] = self.sketch_.bits(x)
        # in float64: the squares of float32 rows of ~1e-20 and less underflow in float32
        self.put_stored(out, "norm", np.linalg.norm(x.astype(np.float64), axis=1))
        return out

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.sketch_.decode(codes, 0, self.get_fields(codes, "norm")[0])

    def score(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return self.sketch_.score(q, codes, 0, self.get_fields(codes, "norm")[0])


class Sign(Quantizer):
    """The sign bit of every coordinate (d bits), scored by popcount."""

    name = "sign"
    param_name = None

    @property
    def field_dtype(self) -> np.dtype:
        return np.dtype("<f2")

    @property
    def payload_size(self) -> int:
        return packed_size(self.d, 1)

    def encode(self, x: np.ndarray) -> np.ndarray:
        return sign_bits(x)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        s = _SIGN_TABLE[unpack(codes, 1, self.d)]
        return s / np.float32(np.sqrt(self.d))

    def score(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        qw = pack_words(sign_bits(q))
        ham = np.empty((q.shape[0], codes.shape[0]), np.int32)
        hamming_scan(codes, 0, self.code_size, qw, ham)
        qn = np.linalg.norm(q, axis=1).astype(np.float32)
        return (qn[:, None] * np.cos(ham * np.float32(np.pi / self.d))).astype(np.float32)
