"""``vecpress.files.readers.read_vectors``: every input format, and every way a file can be wrong.

The size-versus-header checks of ``.fbin`` and ``.fvecs`` (truncated files, mixed
row lengths) are exercised through the CLI in ``test_cli_index.py``.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from test_cli_index import one_line_error, write_fbin, write_fvecs
from vecpress.cli import main
from vecpress.files.readers import VECTOR_FORMATS, read_vectors

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover - pyarrow is in the test extra
    pa = pq = None

needs_pyarrow = pytest.mark.skipif(pa is None, reason="pyarrow is not installed")


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(5).standard_normal((40, 12)).astype(np.float32)


def list_column(x: np.ndarray, kind: str, value_type=None):
    """``x`` as an Arrow array of the given list kind ("list", "large_list", "fixed")."""
    value_type = value_type or pa.float32()
    values = pa.array(x.ravel(), type=value_type)
    if kind == "fixed":
        return pa.FixedSizeListArray.from_arrays(values, x.shape[1])
    offsets = np.arange(0, x.size + 1, x.shape[1])
    if kind == "list":
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values)


def write_parquet(path, **columns) -> str:
    pq.write_table(pa.table(columns), path)
    return str(path)


@pytest.mark.parametrize("ext", [".npy", ".fvecs", ".fbin"])
def test_binary_formats_round_trip(tmp_path, x, ext):
    path = tmp_path / f"x{ext}"
    {".npy": np.save, ".fvecs": write_fvecs, ".fbin": write_fbin}[ext](path, x)
    got = read_vectors(str(path))
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, x)


@needs_pyarrow
@pytest.mark.parametrize("kind", ["list", "large_list", "fixed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_parquet_round_trip(tmp_path, x, kind, dtype):
    stored = x.astype(dtype)
    value_type = pa.from_numpy_dtype(dtype)
    ids = pa.array(np.arange(len(x)))
    path = write_parquet(tmp_path / "x.parquet", id=ids, emb=list_column(stored, kind, value_type))
    for column in ("emb", None):  # named, and picked as the only list column
        got = read_vectors(path, column=column)
        assert got.shape == x.shape and got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, stored.astype(np.float32))


@needs_pyarrow
def test_parquet_reads_every_row_group(tmp_path, x):
    path = str(tmp_path / "x.parquet")
    pq.write_table(pa.table({"emb": list_column(x, "fixed")}), path, row_group_size=7)
    assert pq.ParquetFile(path).num_row_groups == 6
    np.testing.assert_array_equal(read_vectors(path), x)


@needs_pyarrow
def test_parquet_auto_pick_ignores_non_float_lists(tmp_path, x):
    tokens = pa.array([[1, 2]] * len(x), pa.list_(pa.int64()))
    path = write_parquet(tmp_path / "x.parquet", tokens=tokens, emb=list_column(x, "list"))
    np.testing.assert_array_equal(read_vectors(path), x)


@needs_pyarrow
def test_parquet_empty_table(tmp_path):
    empty = np.zeros((0, 5), np.float32)
    path = write_parquet(tmp_path / "x.parquet", emb=list_column(empty, "fixed"))
    assert read_vectors(path).shape == (0, 5)


@needs_pyarrow
def test_parquet_column_errors(tmp_path, x):
    path = write_parquet(
        tmp_path / "x.parquet",
        id=pa.array(np.arange(len(x))),
        a=list_column(x, "list"),
        b=list_column(x, "fixed"),
    )
    with pytest.raises(ValueError, match=r"found 2 such columns \(a, b\)"):
        read_vectors(path)
    with pytest.raises(ValueError, match=r"no column 'emb'; its columns are: id \(int64\), a "):
        read_vectors(path, column="emb")
    with pytest.raises(ValueError, match=r"column 'id' must be of type list<float>.*found int64"):
        read_vectors(path, column="id")

    path = write_parquet(tmp_path / "none.parquet", id=pa.array([1, 2]))
    with pytest.raises(ValueError, match=r"found none; its columns are: id \(int64\)"):
        read_vectors(path)
    ints = pa.array([[1, 2], [3, 4]], pa.list_(pa.int32()))
    path = write_parquet(tmp_path / "ints.parquet", emb=ints)
    with pytest.raises(ValueError, match=r"found list<element: int32>"):
        read_vectors(path, column="emb")


@needs_pyarrow
@pytest.mark.parametrize("kind", ["list", "large_list"])
def test_parquet_ragged_rows(tmp_path, kind):
    rows = [[1.0, 2.0, 3.0]] * 4 + [[1.0, 2.0]] + [[1.0]]
    emb = pa.array(rows, pa.list_(pa.float32()) if kind == "list" else pa.large_list(pa.float32()))
    path = write_parquet(tmp_path / "x.parquet", emb=emb)
    with pytest.raises(ValueError, match=r"row 4 has length 2, expected 3"):
        read_vectors(path)


@needs_pyarrow
@pytest.mark.parametrize("kind", ["list", "fixed"])
def test_parquet_nulls(tmp_path, kind):
    t = pa.list_(pa.float32(), 2) if kind == "fixed" else pa.list_(pa.float32())
    path = write_parquet(tmp_path / "x.parquet", emb=pa.array([[1.0, 2.0], None, [3.0, 4.0]], t))
    with pytest.raises(ValueError, match=r"row 1 is null"):
        read_vectors(path)
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0, None]]
    path = write_parquet(tmp_path / "y.parquet", emb=pa.array(rows, t))
    with pytest.raises(ValueError, match=r"row 2 has a null value"):
        read_vectors(path)


@needs_pyarrow
def test_parquet_not_parquet(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1 but nothing else")
    with pytest.raises(ValueError, match=r"cannot read it as Parquet"):
        read_vectors(str(tmp_path / "x.parquet"))


def test_parquet_without_pyarrow(tmp_path, monkeypatch):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r'pip install "vecpress\[parquet\]"'):
        read_vectors(str(tmp_path / "x.parquet"))


def test_path_errors(tmp_path, x):
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError, match=r"column \('emb'\) can only be chosen in a \.parquet"):
        read_vectors(str(tmp_path / "x.npy"), column="emb")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"unsupported extension '\.csv'.*\.parquet"):
        read_vectors(str(tmp_path / "x.csv"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_vectors(str(tmp_path / "missing.parquet"))
    assert ".parquet" in VECTOR_FORMATS


def test_cli_parquet_errors_are_one_line(tmp_path, capsys, x, monkeypatch):
    idx = str(tmp_path / "i.vpi")
    np.save(tmp_path / "x.npy", x)
    one_line_error(
        capsys,
        ["build", str(tmp_path / "x.npy"), "--column", "emb", "--spec", "f32", "-o", idx],
        "can only be chosen",
    )
    if pa is not None:
        rows = [[1.0, 2.0], [3.0], [4.0, 5.0]]
        bad = write_parquet(
            tmp_path / "bad.parquet", emb=pa.array(rows), other=list_column(x[:3], "list")
        )
        for column, match in [
            ("nope", "no column 'nope'"),
            ("emb", "row 1 has length 1"),
            (None, "2 such"),
        ]:
            argv = ["build", bad, "--spec", "f32", "-o", idx]
            one_line_error(capsys, argv + (["--column", column] if column else []), match)
        rows = [[1.0, 2.0], None]
        nulls = write_parquet(tmp_path / "nulls.parquet", emb=pa.array(rows))
        one_line_error(capsys, ["build", nulls, "--spec", "f32", "-o", idx], "row 1 is null")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "q.parquet").write_bytes(b"PAR1")
    one_line_error(
        capsys,
        ["build", str(tmp_path / "q.parquet"), "--spec", "f32", "-o", idx],
        "vecpress[parquet]",
    )


@needs_pyarrow
def test_cli_build_and_search_from_parquet(tmp_path, capsys, x):
    q = np.random.default_rng(6).standard_normal((5, 12)).astype(np.float32)
    ids = pa.array(np.arange(len(x)))
    write_parquet(
        tmp_path / "x.parquet", id=ids, emb=list_column(x, "fixed"), other=list_column(x, "list")
    )
    write_parquet(tmp_path / "q.parquet", emb=list_column(q, "list"), other=list_column(q, "fixed"))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", q)

    results = {}
    for ext, column in ((".parquet", ["--column", "emb"]), (".npy", [])):
        index, out = str(tmp_path / f"i{ext}.vpi"), str(tmp_path / f"r{ext}.npy")
        build = ["build", str(tmp_path / f"x{ext}"), *column, "--spec", "f32", "--metric", "ip"]
        assert main([*build, "-o", index, "--no-progress"]) == 0
        search = ["search", index, str(tmp_path / f"q{ext}"), *column, "-k", "3", "-o", out]
        assert main([*search, "--no-progress"]) == 0
        results[ext] = np.load(out, allow_pickle=False)
    assert "40 vectors x 12 dims" in capsys.readouterr().out
    np.testing.assert_array_equal(results[".parquet"]["ids"], results[".npy"]["ids"])
    np.testing.assert_array_equal(results[".parquet"]["scores"], results[".npy"]["scores"])
    assert results[".npy"]["ids"].shape == (5, 3)
