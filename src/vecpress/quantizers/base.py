"""The quantizer interface and helpers shared by every quantizer."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..errors import NotFittedError
from ..kernels.bitpack import packed_size


class Quantizer:
    """Base class of the quantizer stages.

    A quantizer works on already-transformed float32 rows of dimension ``d``.
    Every byte a vector needs (codes, norms, scales, correction factors) lives
    in its row of ``encode``'s output; shared state (codebooks, projection
    matrices, calibration ranges) is returned by :meth:`arrays`.

    Subclasses set ``name`` and implement ``code_size``, ``encode``, ``decode``
    and ``score``; those that learn from data set ``needs_data`` and implement
    ``fit``.
    """

    name: ClassVar[str]
    needs_data: ClassVar[bool] = False
    param_name: ClassVar[str | None] = "bits"

    def __init__(self, param: int | None = None) -> None:
        self.param = param
        self.d: int | None = None
        self.fitted = False

    # -- identity -----------------------------------------------------------
    @property
    def spec(self) -> str:
        return self.name if self.param is None else f"{self.name}{self.param}"

    # -- state --------------------------------------------------------------
    def setup(self, d: int, rng: np.random.Generator) -> None:
        """Prepare the training-free state for dimension ``d``."""
        self.d = d
        self.fitted = not self.needs_data

    def fit(self, x: np.ndarray) -> None:
        """Learn from transformed training rows; default: nothing to learn."""

    def check_ready(self) -> None:
        if self.d is None or not self.fitted:
            raise NotFittedError(
                f"quantizer {self.spec!r} is not fitted: call fit(X) before encode/decode/score"
            )

    def config(self) -> dict:
        return {"name": self.name, "param": self.param, "d": self.d}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def restore(self, config: dict, arrays: dict[str, np.ndarray]) -> None:
        """Rebuild the state saved by :meth:`config` and :meth:`arrays`."""
        self.d = int(config["d"])
        self.setup_restored(arrays)
        self.fitted = True

    def setup_restored(self, arrays: dict[str, np.ndarray]) -> None:
        """Rebuild deterministic state on restore; default: nothing."""

    @property
    def levels(self) -> int:
        """Number of code values of a ``b``-bit quantizer (``2**b``)."""
        return 1 << self.param

    @property
    def _nbytes(self) -> int:
        """Bytes of the packed ``b``-bit codes of one row."""
        return packed_size(self.d, self.param)

    @property
    def field_dtype(self) -> np.dtype:
        """dtype of the per-vector floats (norms, factors) stored in each row.

        float16 for codes of at most 4 bits, whose own error is ~100 times larger
        than float16 rounding; float32 above, and for float codecs.
        """
        p = self.param
        return np.dtype("<f2") if p is not None and p <= 4 else np.dtype("<f4")

    # -- the codec trio + scoring --------------------------------------------
    @property
    def code_size(self) -> int:
        raise NotImplementedError

    def encode(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, codes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class GridQuantizer(Quantizer):
    """A quantizer whose codes are points of the uniform grid ``{0..2^b-1}^d`` and
    whose score is the linear form

        ``score[i, j] = a_j * (<c_j - center, q'_i> + qoff_i) + b_j * t_i``

    with per-query terms from :meth:`grid_queries` and per-row terms from
    :meth:`grid_rows`. Search kernels compute it with exact integer dot products
    (:func:`~vecpress.kernels.scan.score_uniform` and the fused scan + top-k of
    :mod:`vecpress.kernels.grid_search`); :meth:`score` is that same form.
    """

    def grid_queries(self, q: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """``(q' float32[nq, grid_dims], center, qoff float32[nq], t float32[nq])``;
        ``center`` is one number or a float32[grid_dims]."""
        raise NotImplementedError

    def grid_rows(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(a float32[n], b float32[n])`` read from the code rows."""
        raise NotImplementedError

    @property
    def grid_dims(self) -> int:
        """Length of the grid vectors ``c`` (and of ``q'``): ``d`` unless overridden."""
        return self.d

    @property
    def grid_layout(self) -> np.ndarray | None:
        """Where the codes lie in a row (:func:`~vecpress.kernels.scan.check_layout`),
        or ``None``: ``grid_dims`` codes of ``param`` bits packed from byte 0."""
        return None

    def score(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        from ..kernels.scan import score_uniform

        qe, center, qoff, t = self.grid_queries(q)
        a, b = self.grid_rows(codes)
        return score_uniform(
            codes, self.param, self.grid_dims, qe, center, qoff, a, b, t, layout=self.grid_layout
        )


def get_f32(codes: np.ndarray, offset: int) -> np.ndarray:
    """Read the float32 stored at byte ``offset`` of every code row."""
    return np.ascontiguousarray(codes[:, offset : offset + 4]).view("<f4")[:, 0].copy()


def put_f32(codes: np.ndarray, offset: int, values: np.ndarray) -> None:
    """Store one float32 per row at byte ``offset`` of every code row."""
    v = np.ascontiguousarray(values, dtype="<f4").reshape(-1, 1)
    codes[:, offset : offset + 4] = v.view(np.uint8)


def get_field(codes: np.ndarray, offset: int, dtype: np.dtype) -> np.ndarray:
    """Read the float of ``dtype`` (float16/float32) at byte ``offset`` of every row, as float32."""
    w = dtype.itemsize
    raw = np.ascontiguousarray(codes[:, offset : offset + w]).view(dtype)[:, 0]
    return raw.astype(np.float32)


def put_field(codes: np.ndarray, offset: int, values: np.ndarray, dtype: np.dtype) -> None:
    """Store one float of ``dtype`` per row at byte ``offset``."""
    w = dtype.itemsize
    v = np.ascontiguousarray(values, dtype=dtype).reshape(-1, 1)
    codes[:, offset : offset + w] = v.view(np.uint8)


def get_f16(codes: np.ndarray, offset: int) -> np.ndarray:
    """Read the float16 stored at byte ``offset`` of every code row, as float32."""
    raw = np.ascontiguousarray(codes[:, offset : offset + 2]).view("<f2")[:, 0]
    return raw.astype(np.float32)


def put_f16(codes: np.ndarray, offset: int, values: np.ndarray) -> None:
    """Store one float16 per row at byte ``offset`` of every code row."""
    v = np.ascontiguousarray(values, dtype="<f2").reshape(-1, 1)
    codes[:, offset : offset + 2] = v.view(np.uint8)


def blocked_matmul(q: np.ndarray, codes: np.ndarray, decode_block, block: int = 4096):
    """Score by decoding ``block`` rows at a time into cache and a BLAS product.

    Only one block of decoded rows exists at a time, so memory stays
    ``O(block * d)`` whatever the number of codes.
    """
    n = codes.shape[0]
    out = np.empty((q.shape[0], n), np.float32)
    for s in range(0, n, block):
        out[:, s : s + block] = q @ decode_block(codes[s : s + block]).T
    return out


def unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into norms and unit directions (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1).astype(np.float32)
    safe = np.where(norms > 0, norms, 1.0).astype(np.float32)
    return norms, x / safe[:, None]
