"""Checks shared by every entry point that takes vectors or codes.

One place decides what vecpress accepts, so that ``fit``, ``encode``,
``decode`` and ``score`` (and later the index and the CLI) can never drift
apart. The policy:

* vectors must be a 2-D array of real floating point numbers (float16,
  float32 or float64); they are converted to C-contiguous float32, copying
  only when needed (so non-contiguous views are accepted);
* integer, boolean, complex and object arrays raise ``TypeError``;
* NaN or infinite values raise ``ValueError`` naming the first bad row;
* a row whose L2 norm exceeds :data:`MAX_NORM` (``2**50``, about ``1.1e15``)
  raises ``ValueError`` naming the first such row, its norm and the limit.
  Every score is computed in float32: with both sides within the limit,
  ``|<q, x>| <= 2**100`` and squared distances stay below ``2**102``, far
  inside float32's range (about ``2**128``), and k-means (faiss) never meets
  an overflowing distance. Data beyond it must be rescaled (inner-product
  rankings do not change when every vector is multiplied by one constant);
* a wrong number of columns raises ``ValueError`` with both numbers;
* zero rows are accepted where the result is simply empty (encode, score),
  and rejected where something must be learned (fit).
"""

from __future__ import annotations

import numpy as np

_FLOAT_KINDS = ("f",)

#: the largest L2 norm accepted for a vector or a query (:func:`as_vectors`)
MAX_NORM = 2.0**50


def as_vectors(
    x: object,
    name: str = "x",
    *,
    dim: int | None = None,
    allow_empty: bool = True,
    row_offset: int = 0,
) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 matrix, or raise a clear error.

    Parameters
    ----------
    x : array_like
        The vectors, shape ``(n, d)``.
    name : str
        Name used in error messages (``"X"``, ``"queries"`` ...).
    dim : int, optional
        The required number of columns.
    allow_empty : bool
        Whether ``n == 0`` is allowed.
    row_offset : int
        The number messages give ``x``'s first row (a chunk of a larger input).

    Returns
    -------
    numpy.ndarray
        float32, C-contiguous, shape ``(n, d)``.

    Examples
    --------
    >>> as_vectors(np.ones((2, 3))).dtype
    dtype('float32')
    """
    return vectors_and_squares(x, name, dim=dim, allow_empty=allow_empty, row_offset=row_offset)[0]


def vectors_and_squares(
    x: object,
    name: str = "x",
    *,
    dim: int | None = None,
    allow_empty: bool = True,
    row_offset: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`as_vectors`, and the squared norms of the rows it returns (float64[n], as
    :func:`vecpress.kernels.rows.row_squares` sums them), which its checks compute
    anyway: a caller that needs them (cosine normalisation, l2) need not sum again.

    Examples
    --------
    >>> x, sq = vectors_and_squares([[3.0, 4.0]])
    >>> x.dtype, sq.tolist()
    (dtype('float32'), [25.0])
    """
    if not isinstance(x, np.ndarray):
        if isinstance(x, (list, tuple)):
            x = np.asarray(x)
        else:
            raise TypeError(
                f"{name} must be a numpy array of floats with shape (n, d), "
                f"found {type(x).__name__}"
            )
    dtype = x.dtype
    # ml_dtypes types (bfloat16, float8) report kind 'V'; accept them via a float view.
    if dtype.kind not in _FLOAT_KINDS and not _is_ml_float(dtype):
        raise TypeError(
            f"{name} must hold floating point numbers (float16/32/64), found dtype {dtype}"
        )
    if x.ndim != 2:
        hint = " (use x[None, :] for a single vector)" if x.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D with shape (n, d), found shape {x.shape}{hint}")
    n, d = x.shape
    if dim is not None and d != dim:
        raise ValueError(f"{name} must have {dim} columns (the codec's dimension), found {d}")
    if d == 0:
        raise ValueError(f"{name} must have at least one column, found shape {x.shape}")
    if n == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {x.shape}); at least one row is needed")
    if type(x) is np.ndarray and dtype == np.float32 and x.flags.c_contiguous:
        out = x  # what ascontiguousarray returns, without its cost
    else:
        with np.errstate(over="ignore"):  # float64 values beyond float32's range: named below
            out = np.ascontiguousarray(x, dtype=np.float32)
    sq = np.zeros(0, np.float64)
    if n:
        # float64 squares of float32 values cannot overflow (at most ~1.2e77 each), so a
        # non-finite sum means a NaN or Inf in the row and nothing else
        from .kernels.rows import row_squares

        sq = row_squares(out)
        if not sq.max() <= MAX_NORM * MAX_NORM:  # a NaN fails the comparison too
            _raise_bad_rows(out, sq, sq <= MAX_NORM * MAX_NORM, name, x, row_offset)
    return out, sq


def _raise_bad_rows(
    x: np.ndarray, sq: np.ndarray, ok: np.ndarray, name: str, given: np.ndarray, offset: int
) -> None:
    """Raise for the first non-finite row (``given``: the rows before their cast to
    float32, to tell NaN or Inf from values float32 cannot hold), or else for the first
    row beyond :data:`MAX_NORM`."""
    finite = np.isfinite(sq)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        if given.dtype != x.dtype and np.isfinite(given[bad[0]]).all():
            raise ValueError(
                f"{name} has {bad.size} row(s) with NaN, Inf or values beyond float32's range; "
                f"the first, row {offset + bad[0]}, holds finite values too large for float32 "
                f"(|v| > {float(np.finfo(np.float32).max):.4g}): rescale the data (multiplying "
                "every vector by one constant keeps the inner-product and l2 rankings)"
            )
        raise ValueError(
            f"{name} has {bad.size} row(s) with NaN or Inf values, first at row {offset + bad[0]}"
        )
    bad = np.flatnonzero(~ok)
    raise ValueError(
        f"{name} has {bad.size} row(s) whose L2 norm exceeds the limit {MAX_NORM:.4g} (2**50), "
        f"first at row {offset + bad[0]} with norm {np.sqrt(sq[bad[0]]):.4g}: scores and squared "
        "distances must stay finite in float32; rescale the data (multiplying every vector "
        "by one constant keeps the inner-product and l2 rankings)"
    )


def _is_ml_float(dtype: np.dtype) -> bool:
    try:
        import ml_dtypes

        return dtype in (
            np.dtype(ml_dtypes.bfloat16),
            np.dtype(ml_dtypes.float8_e4m3fn),
            np.dtype(ml_dtypes.float8_e5m2),
        )
    except ImportError:  # pragma: no cover - ml_dtypes is a dependency
        return False


def as_codes(codes: object, code_size: int, name: str = "codes") -> np.ndarray:
    """Return ``codes`` as a C-contiguous ``uint8[n, code_size]`` matrix or raise.

    Examples
    --------
    >>> as_codes(np.zeros((3, 4), np.uint8), 4).shape
    (3, 4)
    """
    if not isinstance(codes, np.ndarray):
        raise TypeError(f"{name} must be a numpy uint8 array, found {type(codes).__name__}")
    if codes.dtype != np.uint8:
        raise TypeError(
            f"{name} must have dtype uint8 (as returned by encode), found {codes.dtype}"
        )
    if codes.ndim != 2 or codes.shape[1] != code_size:
        raise ValueError(
            f"{name} must have shape (n, {code_size}) for this codec, found {codes.shape}"
        )
    return np.ascontiguousarray(codes)


def check_positive_int(value: object, name: str, *, low: int = 1, high: int | None = None) -> int:
    """Return ``value`` as an int in ``[low, high]`` or raise a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, found {type(value).__name__}")
    v = int(value)
    if v < low or (high is not None and v > high):
        rng = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be in {rng}, found {v}")
    return v
