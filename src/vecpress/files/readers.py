"""Read a matrix of float vectors from a file, checking it before use.

One reader serves every entry point that takes a vectors file (``vecpress
build``, ``vecpress search``, and later the advisor):

* ``.npy`` (no pickles), ``.fvecs`` and ``.fbin`` are memory-mapped; their size
  is checked against their header first, so a truncated file is an error, not
  garbage;
* ``.parquet`` reads one column of type ``list<float>``, ``large_list<float>``
  or ``fixed_size_list<float, d>`` (float16, float32 or float64 values) into a
  float32 matrix; it needs ``pyarrow`` (``pip install "vecpress[parquet]"``),
  imported only when a Parquet file is read.

Problems with a file raise ``ValueError`` (``FileNotFoundError`` for a missing
file) with a message naming the file and what was expected and found.
"""

from __future__ import annotations

import os

import numpy as np

VECTOR_FORMATS = (".npy", ".fvecs", ".fbin", ".parquet")
_CHECK_CHUNK = 50_000


def read_vectors(path: str, name: str = "vectors", column: str | None = None) -> np.ndarray:
    """Read a 2-D float matrix from ``.npy``, ``.fvecs``, ``.fbin`` or ``.parquet``.

    ``.npy``, ``.fvecs`` and ``.fbin`` are memory-mapped read-only after their
    size is checked against their header. A Parquet column is read into memory
    and returned as C-contiguous float32.

    Parameters
    ----------
    path : str
        The file; its extension picks the format (one of ``VECTOR_FORMATS``).
    name : str
        What the file holds, used in error messages (``"vectors"``, ``"queries"``).
    column : str, optional
        Parquet only: the column holding the vectors, of type ``list<float>``,
        ``large_list<float>`` or ``fixed_size_list<float, d>``. By default the
        only such column in the file.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, d)``: a float matrix (float32 for ``.fvecs``, ``.fbin`` and
        ``.parquet``; the stored dtype for ``.npy``).

    Raises
    ------
    ValueError
        Unsupported extension, ``column`` given for a non-Parquet file, a size
        that does not match the header, an unknown or ambiguous Parquet column,
        rows of different lengths, or null rows or values.
    FileNotFoundError
        The file does not exist.
    ImportError
        A Parquet file is read and ``pyarrow`` is not installed.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.fbin")
    >>> with open(p, "wb") as f:
    ...     _ = f.write(np.array([2, 3], np.uint32).tobytes() + np.ones(6, np.float32).tobytes())
    >>> read_vectors(p).shape
    (2, 3)
    >>> import pyarrow as pa, pyarrow.parquet as pq
    >>> q = os.path.join(tempfile.mkdtemp(), "x.parquet")
    >>> pq.write_table(pa.table({"id": [7, 8], "emb": [[1.0, 2.0], [3.0, 4.0]]}), q)
    >>> read_vectors(q, column="emb")
    array([[1., 2.],
           [3., 4.]], dtype=float32)
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in VECTOR_FORMATS:
        raise ValueError(
            f"{name} file {path}: unsupported extension {ext or '(none)'!r}; expected one of "
            f"{', '.join(VECTOR_FORMATS)}"
        )
    if column is not None and ext != ".parquet":
        raise ValueError(
            f"{name} file {path}: a column ({column!r}) can only be chosen in a .parquet file, "
            f"found a {ext} file"
        )
    if os.path.isdir(path):
        raise IsADirectoryError(f"{name} file {path} is a directory, not a file of vectors")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name} file {path} does not exist")
    if ext == ".parquet":
        return _read_parquet(path, name, column)
    size = os.path.getsize(path)
    if ext == ".npy":
        try:
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:  # object dtype, a damaged header, a truncated body
            raise ValueError(
                f"{name} file {path}: not a readable array of floats ({e}); "
                "expected a float16/32/64 .npy of shape (n, d)"
            ) from None
    elif ext == ".fbin":
        if size < 8:
            raise ValueError(f"{name} file {path}: {size} bytes, shorter than the 8-byte header")
        n, d = (int(v) for v in np.fromfile(path, np.uint32, 2))
        if size != 8 + 4 * n * d:
            raise ValueError(
                f"{name} file {path}: header says {n} x {d} float32 ({8 + 4 * n * d} bytes), "
                f"file has {size} bytes"
            )
        x = np.memmap(path, np.float32, "r", offset=8, shape=(n, d)) if n * d else np.zeros((n, d))
    else:  # .fvecs: every row is int32 d followed by d float32
        if size < 4:
            raise ValueError(f"{name} file {path}: {size} bytes, shorter than one row header")
        d = int(np.fromfile(path, np.int32, 1)[0])
        row = 4 * (d + 1)
        if d < 1 or size % row:
            raise ValueError(
                f"{name} file {path}: first row has d={d}, so the size {size} should be a "
                f"multiple of {row} bytes"
            )
        raw = np.memmap(path, np.int32, "r", shape=(size // row, d + 1))
        for s in range(0, raw.shape[0], _CHECK_CHUNK):
            bad = np.flatnonzero(raw[s : s + _CHECK_CHUNK, 0] != d)
            if bad.size:
                raise ValueError(
                    f"{name} file {path}: row {s + bad[0]} has d={raw[s + bad[0], 0]}, "
                    f"expected {d} (as in row 0)"
                )
        x = raw.view(np.float32)[:, 1:]
    if x.ndim != 2 or x.dtype.kind != "f":
        raise ValueError(
            f"{name} file {path}: expected a 2-D float matrix, found shape {x.shape} of {x.dtype}"
        )
    return x


def _read_parquet(path: str, name: str, column: str | None) -> np.ndarray:
    """One list-of-floats column of a Parquet file as C-contiguous float32 ``(n, d)``."""
    pa, pq = import_pyarrow(f"reading the Parquet {name} file {path}")
    where = f"{name} file {path}"
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{where}: cannot read it as Parquet: {e}") from e
    column = vector_column(schema, column, where)
    try:
        arr = pq.read_table(path, columns=[column]).column(0).combine_chunks()
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{where}: cannot read column {column!r}: {e}") from e
    return arrow_rows(arr, f"{where}, column {column!r}")


def import_pyarrow(what: str):
    """``(pyarrow, pyarrow.parquet)``, or an ``ImportError`` saying how to install them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f'{what} needs pyarrow: pip install "vecpress[parquet]"') from e
    return pa, pq


def _is_vector_type(t) -> bool:
    import pyarrow as pa

    is_list = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    return is_list and pa.types.is_floating(t.value_type)


def vector_column(schema, column: str | None, where: str) -> str:
    """The name of the vector column of a Parquet ``schema``: ``column`` if it is one,
    else the only column of type ``list<float>``, ``large_list<float>`` or
    ``fixed_size_list<float, d>``; a ``ValueError`` naming the columns otherwise."""
    columns = ", ".join(f"{f.name} ({f.type})" for f in schema) or "(none)"
    if column is None:
        candidates = [f.name for f in schema if _is_vector_type(f.type)]
        if len(candidates) != 1:
            found = (
                f"{len(candidates)} such columns ({', '.join(candidates)}); choose one with "
                f"column= (--column on the command line)"
                if candidates
                else f"none; its columns are: {columns}"
            )
            raise ValueError(
                f"{where}: expected exactly one column of type list<float>, large_list<float> "
                f"or fixed_size_list<float, d>, found {found}"
            )
        return candidates[0]
    if column not in schema.names:
        raise ValueError(f"{where}: no column {column!r}; its columns are: {columns}")
    kind = schema.field(column).type
    if not _is_vector_type(kind):
        raise ValueError(
            f"{where}: column {column!r} must be of type list<float>, large_list<float> or "
            f"fixed_size_list<float, d> (float16/32/64 values), found {kind}"
        )
    return column


def arrow_rows(arr, where: str, row_offset: int = 0) -> np.ndarray:
    """A pyarrow list-of-floats array (one vector a row) as C-contiguous float32 ``(n, d)``;
    a ``ValueError`` naming the first null row, null value or row of another length
    (rows numbered from ``row_offset``)."""
    import pyarrow as pa

    kind = arr.type
    n = len(arr)
    if arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(
            f"{where}: row {row_offset + row} is null ({arr.null_count} null rows in all)"
        )
    if pa.types.is_fixed_size_list(kind):
        d = kind.list_size
        start = arr.offset * d
    else:
        offsets = arr.offsets.to_numpy()
        lengths = np.diff(offsets)
        d = int(lengths[0]) if n else 0
        bad = np.flatnonzero(lengths != d)
        if bad.size:
            row = int(bad[0])
            raise ValueError(
                f"{where}: row {row_offset + row} has length {lengths[row]}, expected {d} (as "
                f"in row {row_offset}); all rows must have the same length"
            )
        start = int(offsets[0]) if n else 0
    if n and d == 0:
        raise ValueError(f"{where}: the rows are empty (length 0), expected vectors")
    values = arr.values.slice(start, n * d)
    if values.null_count:
        first = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(
            f"{where}: row {row_offset + first // d} has a null value (at position "
            f"{first % d}); null values are not supported"
        )
    flat = values.to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(n, d), dtype=np.float32)
