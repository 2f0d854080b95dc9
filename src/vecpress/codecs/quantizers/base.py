"""The quantizer interface and helpers shared by every quantizer.

**Scaled float16 fields.** Codes of at most 4 bits store their per-vector
numbers (norms, correction factors, LVQ bounds) as float16, whose range ends
at 65504 and whose normal numbers start at ``2**-14``. The fields that grow
with the vector's magnitude therefore store ``value * 2**-e``, with an integer
exponent ``e`` (``field_exp``) that :meth:`Quantizer.fit` chooses from the
training rows and the stage's config records (:func:`field_exponent`:
``e = 0`` when the largest training norm ``M`` lies in ``[2**-6, 2**8]``, so
ordinary embeddings are coded as if there were no scale; otherwise
``e = ceil(log2 M) - 8``, which puts the largest training value near ``2**8``
and leaves 256 times that of headroom for later rows). Multiplying by a power
of two is exact, so the precision is float16's whatever the data's scale.
A value that does not fit its field raises ``ValueError`` at encode
(:func:`check_field`) naming the row: scores are never infinite.
Dimensionless fields (``kl``'s correction factor, ``tqp``'s residual norm) are
not scaled; float32 fields have ``e = 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...errors import NotFittedError
from ...kernels.bitpack import packed_size

#: the largest finite float16
F16_MAX = 65504.0
#: largest training norms coded with ``field_exp = 0`` (:func:`field_exponent`)
_PLAIN_LOW, _PLAIN_HIGH = 2.0**-6, 2.0**8
#: the exponent that puts the largest training value near ``2**8``
_TARGET_LOG2 = 8
#: the field exponents a stored config may hold (fitting gives -157..42)
FIELD_EXP_RANGE = (-200, 100)


def field_exponent(largest: float) -> int:
    """The exponent ``e`` of scaled float16 fields for training rows of largest norm ``largest``.

    ``0`` when ``largest`` lies in ``[2**-6, 2**8]`` (or is 0), else
    ``ceil(log2(largest)) - 8``.

    Examples
    --------
    >>> field_exponent(3.0), field_exponent(2.0**8), field_exponent(300.0), field_exponent(1e-3)
    (0, 0, 1, -17)
    """
    m = float(largest)
    if not m > 0 or _PLAIN_LOW <= m <= _PLAIN_HIGH:
        return 0
    mant, ex = math.frexp(m)  # m = mant * 2**ex, mant in [0.5, 1)
    return (ex - 1 if mant == 0.5 else ex) - _TARGET_LOG2


def largest_norm(x: np.ndarray) -> float:
    """The largest L2 norm of the rows of ``x`` (0 for no rows), accumulated in float64."""
    if x.shape[0] == 0:
        return 0.0
    return float(np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64).max()))


def checked_field_exp(value: object) -> int:
    """A stored ``field_exp`` as an int in :data:`FIELD_EXP_RANGE`, or ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"field_exp must be an integer, found {value!r}")
    lo, hi = FIELD_EXP_RANGE
    if not lo <= value <= hi:
        raise ValueError(f"field_exp must be in [{lo}, {hi}], found {value}")
    return value


def check_field(
    values: np.ndarray,
    dtype: np.dtype,
    exp: int,
    what: str,
    owner: str,
    limit: float | None = None,
    *,
    wider: bool = True,
) -> np.ndarray:
    """``values * 2**-exp`` (float64), or ``ValueError`` naming the first row that does not fit.

    ``limit`` is the largest magnitude the field takes after scaling (default: the
    largest finite value of ``dtype``); ``wider`` says whether codes of 5 or more
    bits would store the field as float32 (the error then suggests them).
    """
    dtype = np.dtype(dtype)
    top = float(np.finfo(dtype).max) if limit is None else float(limit)
    scaled = np.ldexp(np.asarray(values, np.float64), -exp)
    over = ~(np.abs(scaled) <= top)
    if over.any():
        row = int(np.flatnonzero(over)[0])
        value = float(np.asarray(values, np.float64)[row])
        holds = math.ldexp(top, exp)
        if dtype.itemsize == 2:
            hint = (
                f"{owner} stores it as float16 scaled by 2**{exp} (the exponent fitted on its "
                "training rows); refit the codec on data that includes rows like this one"
            )
            if wider:
                hint += ", or use a codec of 5 or more bits, whose per-vector fields are float32"
        else:
            hint = "rescale the data"
        raise ValueError(
            f"the {what} of row {row} is {value:.4g}, beyond the largest value this fitted "
            f"{owner} holds ({holds:.4g}): {hint}"
        )
    return scaled


@dataclass(frozen=True)
class RowField:
    """A per-vector number stored in every code row, after the packed codes.

    A quantizer family declares its fields once (:attr:`Quantizer.row_fields`);
    the base class lays them out (:meth:`Quantizer.field_at`), stores
    (:meth:`Quantizer.put_fields`) and reads them (:meth:`Quantizer.get_fields`).

    Attributes
    ----------
    name : str
        The field's name (``"norm"``).
    what : str
        What it is, for the message of a value that does not fit.
    dtype : str or None
        ``"<f2"`` or ``"<f4"``; ``None``: the quantizer's :attr:`~Quantizer.field_dtype`
        (float16 for codes of at most 4 bits, float32 above).
    scaled : bool
        Stored times ``2**-field_exp`` (module docstring); ``False`` for
        dimensionless numbers.
    """

    name: str
    what: str
    dtype: str | None = None
    scaled: bool = True


class Quantizer:
    """Base class of the quantizer stages.

    A quantizer works on already-transformed float32 rows of dimension ``d``.
    Every byte a vector needs (codes, norms, scales, correction factors) lives
    in its row of ``encode``'s output; shared state (codebooks, projection
    matrices, calibration ranges) is returned by :meth:`arrays`.

    Subclasses set ``name`` and implement ``encode``, ``decode`` and ``score``;
    those that learn from data set ``needs_data`` and implement ``fit``. A row
    is the packed codes (:attr:`payload_size` bytes), then the per-vector
    fields the family declares in :attr:`row_fields`; :attr:`code_size` is
    their sum unless a family overrides it.
    """

    name: ClassVar[str]
    needs_data: ClassVar[bool] = False
    param_name: ClassVar[str | None] = "bits"

    #: whether some per-vector fields are scaled by ``2**-field_exp`` (module docstring)
    scales_fields: ClassVar[bool] = False
    #: whether :meth:`score` is exactly ``<q, decode(codes)>`` (floats, two-level LVQ):
    #: re-ranking then computes that product pair by pair, which gives every (query,
    #: row) pair the same float32 result whatever the other candidates and the rows'
    #: storage order (a matrix product's rounding depends on its shape)
    scores_by_decoding: ClassVar[bool] = False
    #: whether the rows hold two levels (``lvq<b1>x<b2>``, :attr:`level1` its first)
    two_level: ClassVar[bool] = False
    #: the per-vector fields after the codes, in row order (:class:`RowField`)
    row_fields: ClassVar[tuple[RowField, ...]] = ()

    def __init__(self, param: int | None = None) -> None:
        self.param = param
        self.d: int | None = None
        self.fitted = False
        #: exponent of the scaled float16 fields (module docstring); 0 until fitted
        self.field_exp = 0

    # -- identity -----------------------------------------------------------
    @property
    def spec(self) -> str:
        return self.name if self.param is None else f"{self.name}{self.param}"

    # -- state --------------------------------------------------------------
    def setup(self, d: int, rng: np.random.Generator) -> None:
        """Prepare the training-free state for dimension ``d``."""
        self.d = d
        self.fitted = not self.needs_data

    def fit(
        self, x: np.ndarray, *, weights: np.ndarray | None = None, queries: np.ndarray | None = None
    ) -> None:
        """Learn from transformed training rows; default: the exponent of the scaled
        fields (:meth:`fit_field_exp`), if any, and nothing else. ``weights`` and
        ``queries`` are the stage lifecycle's (:meth:`vecpress.codecs.transforms.Transform.fit`);
        no quantizer uses them yet."""
        self.fit_field_exp(x)

    def fit_field_exp(self, x: np.ndarray) -> None:
        """Set :attr:`field_exp` from the largest norm of the training rows ``x``
        (:func:`field_exponent`); 0 for quantizers without scaled float16 fields."""
        scaled = self.scales_fields and self.scaled_field_dtype.itemsize == 2
        self.field_exp = field_exponent(largest_norm(x)) if scaled else 0

    @property
    def scaled_field_dtype(self) -> np.dtype:
        """dtype of the fields that :attr:`field_exp` scales (:attr:`field_dtype` by default)."""
        return self.field_dtype

    def check_ready(self) -> None:
        if self.d is None or not self.fitted:
            raise NotFittedError(
                f"quantizer {self.spec!r} is not fitted: call fit(X) before encode/decode/score"
            )

    def config(self) -> dict:
        cfg = {"name": self.name, "param": self.param, "d": self.d}
        if self.field_exp:  # absent (0) for ordinary data: such blobs read as before
            cfg["field_exp"] = self.field_exp
        return cfg

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def restore(self, config: dict, arrays: dict[str, np.ndarray]) -> None:
        """Rebuild the state saved by :meth:`config` and :meth:`arrays`."""
        self.d = int(config["d"])
        exp = checked_field_exp(config.get("field_exp", 0))
        if exp and not self.scales_fields:
            raise ValueError(f"{self.spec} has no scaled fields, found field_exp={exp}")
        self.field_exp = exp
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

    # -- the row layout: codes, then the declared per-vector fields ------------
    @property
    def payload_size(self) -> int:
        """Bytes of the packed codes at the start of a row (``d`` codes of ``b`` bits)."""
        return self._nbytes

    @property
    def code_size(self) -> int:
        """Bytes per row: the codes and the per-vector fields."""
        return self.payload_size + sum(self.field_at(f.name)[1].itemsize for f in self.row_fields)

    def field_at(self, name: str) -> tuple[int, np.dtype, int]:
        """``(byte offset, dtype, exponent)`` of the per-vector field ``name``: the row
        holds ``value * 2**-exponent`` as one ``dtype`` at that offset."""
        offset = self.payload_size
        for f in self.row_fields:
            dtype = self.field_dtype if f.dtype is None else np.dtype(f.dtype)
            if f.name == name:
                return offset, dtype, self.field_exp if f.scaled else 0
            offset += dtype.itemsize
        raise KeyError(f"{self.spec} has no per-vector field {name!r}")

    def put_fields(self, out: np.ndarray, **values: np.ndarray) -> None:
        """Store each named field's values (one per row) in the rows ``out``; a value that
        does not fit raises ``ValueError`` naming the row (:func:`check_field`)."""
        what = {f.name: f.what for f in self.row_fields}
        for name, v in values.items():
            offset, dtype, exp = self.field_at(name)
            put_field(out, offset, v, dtype, exp, what=what[name], owner=self.spec)

    def put_stored(self, out: np.ndarray, name: str, stored: np.ndarray) -> None:
        """Store values already in the field's units and dtype (no scaling, no check)."""
        offset, dtype, _ = self.field_at(name)
        v = np.ascontiguousarray(stored, dtype=dtype).reshape(-1, 1)
        out[:, offset : offset + dtype.itemsize] = v.view(np.uint8)

    def get_fields(self, codes: np.ndarray, *names: str) -> tuple[np.ndarray, ...]:
        """The named fields of every row, as float32 in the data's units."""
        return tuple(get_field(codes, *self.field_at(name)) for name in names)

    # -- the codec trio + scoring --------------------------------------------

    def encode(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, codes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, q: np.ndarray):
        """What :meth:`score` derives from the queries ``q`` alone, for
        :meth:`score_prepared` to reuse: the search path scores a batch's queries against
        one block of rows after another. The queries themselves unless a quantizer
        computes tables from them (``klvq``)."""
        return q

    def score_prepared(self, prepared, who: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """:meth:`score` of the queries ``who`` (indices into the queries given to
        :meth:`prepare`, which returned ``prepared``) against ``codes``."""
        return self.score(prepared[who], codes)


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

    def grid_row_fields(self) -> tuple:
        """Where ``a`` and ``b`` of :meth:`grid_rows` are in a row: each a constant or
        ``(offset, dtype, exp)``, a float16/float32 field times ``2**exp``."""
        raise NotImplementedError

    def grid_rows(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(a float32[n], b float32[n])`` read from the code rows (:meth:`grid_row_fields`,
        in one pass: :func:`~vecpress.kernels.fields.read_fields`)."""
        from ...kernels.fields import read_fields

        a, b = read_fields(codes, self.grid_row_fields())
        return a, b

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
        from ...kernels.scan import score_uniform

        qe, center, qoff, t = self.grid_queries(q)
        a, b = self.grid_rows(codes)
        return score_uniform(
            codes, self.param, self.grid_dims, qe, center, qoff, a, b, t, layout=self.grid_layout
        )


def _column(codes: np.ndarray, offset: int, dtype: np.dtype) -> np.ndarray:
    """The float of ``dtype`` at byte ``offset`` of every row, as a strided view when the
    rows' bytes are contiguous (no gather of the bytes first: ~3x faster on 1M rows)."""
    part = codes[:, offset : offset + np.dtype(dtype).itemsize]
    try:
        return part.view(dtype)[:, 0]
    except ValueError:  # the bytes of a row are not contiguous
        return np.ascontiguousarray(part).view(dtype)[:, 0]


def get_field(codes: np.ndarray, offset: int, dtype: np.dtype, exp: int = 0) -> np.ndarray:
    """Read the float of ``dtype`` (float16/float32) at byte ``offset`` of every row, as
    float32, times ``2**exp`` (the field's scale, module docstring)."""
    out = _column(codes, offset, dtype).astype(np.float32)
    return np.ldexp(out, exp).astype(np.float32, copy=False) if exp else out


def put_field(
    codes: np.ndarray,
    offset: int,
    values: np.ndarray,
    dtype: np.dtype,
    exp: int = 0,
    *,
    what: str = "per-vector field",
    owner: str = "codec",
) -> None:
    """Store ``values * 2**-exp`` as one float of ``dtype`` per row at byte ``offset``.

    Raises ``ValueError`` naming the row, the value and the largest value the field
    holds when one does not fit (:func:`check_field`); ``what`` and ``owner`` name the
    field and the codec in that message.
    """
    w = dtype.itemsize
    scaled = check_field(values, dtype, exp, what, owner)
    v = np.ascontiguousarray(scaled, dtype=dtype).reshape(-1, 1)
    codes[:, offset : offset + w] = v.view(np.uint8)


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
    # in float64: the squares of float32 rows of ~1e-20 and less underflow in float32
    norms = np.linalg.norm(x.astype(np.float64), axis=1).astype(np.float32)
    safe = np.where(norms > 0, norms, 1.0).astype(np.float32)
    return norms, x / safe[:, None]
