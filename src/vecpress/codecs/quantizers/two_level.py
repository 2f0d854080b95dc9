"""``lvq<b1>x<b2>``: two-level LVQ, whose second level is an index's re-ranking tier.

Level 1 is :class:`~vecpress.codecs.quantizers.uniform.LVQ` with ``b1`` bits: each
vector gets its own range, ``x_i ≈ lo + Δ c1_i`` with ``Δ = (hi - lo) / (2^b1 - 1)``
(``lo`` and ``Δ`` stored as float16, rounded so the grid covers the row, and
scaled by ``2**-field_exp``, the exponent level 1 fits to the training rows:
see :mod:`~vecpress.codecs.quantizers.uniform`). The
residual ``r_i = x_i - lo - Δ c1_i`` then lies in ``[-Δ/2, Δ/2]``, a range both
levels already know, so level 2 quantizes it with ``b2`` bits and *no* extra
per-vector number (Aguerrebere et al. 2023, "Similarity search in the blink of
an eye with compressed indices"):

    ``r_i ≈ -Δ/2 + Δ2 c2_i``,  ``Δ2 = Δ / (2^b2 - 1)``.

A row is ``[level-1 codes | lo | Δ | level-2 codes]``: ``lvq4x8`` at d = 384
takes 196 + 384 bytes. As a codec on its own, ``lvq<b1>x<b2>`` encodes, decodes
and scores with both levels (the error of ``b1 + b2`` bits per coordinate).
In an :class:`~vecpress.Index` the two levels are stored apart: level 1
(``Codec.tier_codec``, an ordinary ``lvq<b1>`` code) is what the first stage
scans, and level 2 is the re-ranking tier that ``search(..., rerank=R)``
reads for the ``R`` candidates only, so re-ranking needs no float vectors.

Level 1 scores as exact integer dot products with the 8-bit query (it is an
``lvq<b1>`` code); the full two-level score ``<q, x̂>`` is a float product with
the decoded rows, whose rounding stays below the second level's error.
"""

from __future__ import annotations

import numpy as np

from ...kernels.bitpack import pack, packed_size, unpack
from .base import Quantizer, blocked_matmul
from .uniform import LVQ


class LVQ2(Quantizer):
    """Two-level LVQ: ``b1`` bits per coordinate, then ``b2`` bits of the residual.

    Examples
    --------
    >>> import numpy as np
    >>> from vecpress import Codec
    >>> x = np.random.default_rng(0).standard_normal((500, 64)).astype(np.float32)
    >>> one, two = Codec.from_spec("lvq4", d=64), Codec.from_spec("lvq4x4", d=64)
    >>> two.code_size, one.code_size
    (68, 36)
    >>> err = lambda c: float(((c.decode(c.encode(x)) - x) ** 2).mean())
    >>> bool(err(two) < err(one) / 100)
    True
    """

    scores_by_decoding = True

    two_level = True
    name = "lvq"
    scales_fields = True

    def __init__(self, param: int, bits2: int) -> None:
        super().__init__(param)
        for b in (param, bits2):
            if not 1 <= b <= 8:
                raise ValueError(f"lvq{param}x{bits2}: both levels need 1..8 bits, found {b}")
        self.bits2 = bits2
        self.level1 = LVQ(param)

    @property
    def spec(self) -> str:
        return f"lvq{self.param}x{self.bits2}"

    def setup(self, d: int, rng: np.random.Generator) -> None:
        super().setup(d, rng)
        self.level1.setup(d, rng)

    def fit(
        self, x: np.ndarray, *, weights: np.ndarray | None = None, queries: np.ndarray | None = None
    ) -> None:
        """Fit level 1's field exponent (level 2 stores no per-vector number)."""
        self.level1.fit(x)
        self.field_exp = self.level1.field_exp

    def setup_restored(self, arrays: dict[str, np.ndarray]) -> None:
        self.level1.d = self.d
        self.level1.field_exp = self.field_exp
        self.level1.fitted = True

    @property
    def scaled_field_dtype(self) -> np.dtype:
        return self.level1.scaled_field_dtype

    @property
    def field_dtype(self) -> np.dtype:
        # the centring term next to the codes goes with level 1, whose rows the
        # first stage of an index reads on their own
        return self.level1.field_dtype

    @property
    def level1_size(self) -> int:
        """Bytes of the level-1 part of a row (an ``lvq<b1>`` code)."""
        return self.level1.code_size

    @property
    def payload_size(self) -> int:
        """Both levels' rows: the first level's codes and fields, then the second's codes."""
        return self.level1_size + packed_size(self.d, self.bits2)

    def _split(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n1 = self.level1_size
        return np.ascontiguousarray(codes[:, :n1]), np.ascontiguousarray(codes[:, n1:])

    def encode(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        out = np.zeros((n, self.code_size), np.uint8)
        if n == 0:
            return out
        n1 = self.level1_size
        out[:, :n1] = self.level1.encode(x)
        _, step = self.level1._bounds(out[:, :n1])
        resid = x - self.level1.decode(out[:, :n1])
        levels2 = (1 << self.bits2) - 1
        safe = np.where(step > 0, step, 1.0).astype(np.float32)[:, None]
        c2 = np.rint((resid / safe + 0.5) * levels2)
        out[:, n1:] = pack(np.clip(c2, 0, levels2).astype(np.uint8), self.bits2)
        return out

    def decode(self, codes: np.ndarray) -> np.ndarray:
        c1, c2 = self._split(codes)
        _, step = self.level1._bounds(c1)
        frac = unpack(c2, self.bits2, self.d).astype(np.float32) / ((1 << self.bits2) - 1)
        return self.level1.decode(c1) + step[:, None] * (frac - 0.5)

    def score(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``<q, x̂>`` with both levels, by blocks of decoded rows and a float product.

        An 8-bit query would cost more than the second level gains (its rounding
        is ~100 times the error of ``b1 + b2 = 12`` bits), so the codec scores in
        float; an index scans level 1 with the integer kernel instead.
        """
        return blocked_matmul(q, codes, self.decode)
