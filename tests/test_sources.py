"""VectorSource: many files (or an array) read as one matrix, a range of rows at a time."""

from __future__ import annotations

import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vecpress.files.readers import read_vectors
from vecpress.files.sources import VectorSource, _FilePart

D = 6


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def write(path, x: np.ndarray, row_group_size: int = 50, **columns) -> str:
    """``x`` as the file ``path`` in the format its extension names."""
    path = str(path)
    if path.endswith(".npy"):
        np.save(path, x)
    elif path.endswith(".fbin"):
        with open(path, "wb") as f:
            f.write(np.array(x.shape, np.uint32).tobytes() + x.astype(np.float32).tobytes())
    elif path.endswith(".fvecs"):
        head = np.full((x.shape[0], 1), x.shape[1], np.int32)
        with open(path, "wb") as f:
            f.write(np.hstack([head, x.astype(np.float32).view(np.int32)]).tobytes())
    else:
        table = pa.table({"emb": list(x), **columns})
        pq.write_table(table, path, row_group_size=row_group_size)
    return path


@pytest.fixture
def parts(tmp_path):
    """Four files of every format, 517 rows in all, and the matrix they make."""
    x = rows(517)
    cuts = [0, 100, 230, 231, 517]
    names = ["a.npy", "b.fbin", "c.fvecs", "d.parquet"]
    paths = [write(tmp_path / n, x[cuts[i] : cuts[i + 1]]) for i, n in enumerate(names)]
    return paths, x


def test_files_read_as_one_matrix(parts):
    paths, x = parts
    src = VectorSource.open(paths)
    assert (src.n, src.d) == x.shape
    assert np.array_equal(src.read(0, src.n), x)
    for lo, hi in [(0, 1), (99, 101), (229, 232), (230, 231), (200, 517), (516, 517), (5, 5)]:
        assert np.array_equal(src.read(lo, hi), x[lo:hi]), (lo, hi)
    pick = np.array([0, 1, 2, 99, 100, 230, 231, 300, 301, 516])
    assert np.array_equal(src.take(pick), x[pick])
    assert src.take(np.zeros(0, np.int64)).shape == (0, D)


@pytest.mark.parametrize("rows_at_once", [1, 7, 100, 517, 10_000])
def test_chunks_cover_the_input_in_order(parts, rows_at_once):
    paths, x = parts
    src = VectorSource.open(paths)
    got = list(src.chunks(rows=rows_at_once))
    assert [lo for lo, _ in got] == list(range(0, 517, rows_at_once))
    assert all(c.dtype == np.float32 and c.flags.c_contiguous for _, c in got)
    assert np.array_equal(np.concatenate([c for _, c in got]), x)


@pytest.mark.parametrize("rows_at_once", [1, 100, 517])
def test_prefetched_chunks_are_the_same_chunks(parts, rows_at_once):
    paths, x = parts
    src = VectorSource.open(paths)
    got = list(src.chunks(rows=rows_at_once, prefetch=True))
    assert [lo for lo, _ in got] == list(range(0, 517, rows_at_once))
    assert np.array_equal(np.concatenate([c for _, c in got]), x)
    chunks = src.chunks(rows=50, prefetch=True)
    assert next(chunks)[0] == 0
    chunks.close()  # stopping early waits for the read ahead and ends cleanly


def test_a_prefetched_chunk_raises_its_error_in_turn(tmp_path):
    x = rows(200)
    fvecs = write(tmp_path / "x.fvecs", x)
    with open(fvecs, "r+b") as f:
        f.seek(150 * 4 * (D + 1))
        f.write(np.int32(D + 1).tobytes())
    chunks = VectorSource.open(fvecs).chunks(rows=100, prefetch=True)
    lo, first = next(chunks)
    assert lo == 0 and np.array_equal(first, x[:100])
    with pytest.raises(ValueError, match="row 150 has d=7"):
        next(chunks)


def test_chunk_bytes_sets_the_rows(parts):
    src = VectorSource.open(parts[0])
    assert src.rows_per_chunk(4 * D * 10) == 10
    assert src.rows_per_chunk(1) == 1
    assert [c.shape[0] for _, c in src.chunks(chunk_bytes=4 * D * 200)] == [200, 200, 117]


def test_a_folder_is_its_vector_files_in_name_order(tmp_path, parts):
    _, x = parts
    (tmp_path / "notes.txt").write_text("not vectors")
    src = VectorSource.open(tmp_path)
    assert len(src.parts) == 4
    assert np.array_equal(src.read(0, src.n), x)


def test_memory_maps_are_read_through_their_file(tmp_path):
    x = rows(300)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    for view, ref in [(mapped, x), (mapped[37:250], x[37:250]), (mapped[299:], x[299:])]:
        src = VectorSource.open(view)
        assert isinstance(src.parts[0], _FilePart)
        assert np.array_equal(src.read(0, src.n), ref)
    fvecs = read_vectors(write(tmp_path / "x.fvecs", x))[10:]
    src = VectorSource.open(fvecs)
    assert isinstance(src.parts[0], _FilePart)
    assert np.array_equal(src.read(0, src.n), x[10:])
    raw = tmp_path / "raw.bin"
    x.tofile(raw)
    offset = np.memmap(raw, np.float32, "r", offset=4 * D * 3, shape=(297, D))
    assert np.array_equal(VectorSource.open(offset).read(0, 297), x[3:])


def test_arrays_of_any_float_dtype(tmp_path):
    x = rows(40)
    for a in (x, x.astype(np.float16), x.astype(np.float64), np.asfortranarray(x)):
        src = VectorSource.open(a)
        assert src.read(0, 40).dtype == np.float32
        assert np.allclose(src.read(0, 40), a.astype(np.float32))
    np.save(tmp_path / "h.npy", x.astype(np.float16))
    assert np.array_equal(
        VectorSource.open(tmp_path / "h.npy").read(3, 9), x[3:9].astype(np.float16)
    )


def test_parquet_columns_across_files_and_row_groups(tmp_path):
    x = rows(130)
    a = write(tmp_path / "a.parquet", x[:70], row_group_size=30, key=[f"k{i}" for i in range(70)],
              year=[2000 + i for i in range(70)])  # fmt: skip
    b = write(tmp_path / "b.parquet", x[70:], row_group_size=25,
              key=[f"k{i}" for i in range(70, 130)], year=[None] * 60)  # fmt: skip
    src = VectorSource.open([a, b])
    got = src.columns(55, 100, ["key", "year"])
    assert got["key"] == [f"k{i}" for i in range(55, 100)]
    assert got["year"] == [2000 + i for i in range(55, 70)] + [None] * 30
    assert src.columns(3, 3, ["key"]) == {"key": []}
    src.check_columns(["key", "year"])
    with pytest.raises(ValueError, match=r"no column 'nope'; its columns are: emb, key, year"):
        src.check_columns(["nope"])
    with pytest.raises(ValueError, match=r"can only be read from Parquet files"):
        VectorSource.open(x).columns(0, 3, ["key"])
    with pytest.raises(ValueError, match=r"rows \[120, 131\) are outside the 130 rows"):
        src.columns(120, 131, ["key"])


def test_parquet_columns_and_vectors_read_from_two_threads_at_once(tmp_path):
    """A build reads the documents' columns while the next chunk of vectors is read on
    the prefetch thread: one ParquetFile read from two threads at once fails in its read
    cache ("ReadRangeCache did not find matching cache entry")."""
    x = rows(4000)
    path = write(tmp_path / "a.parquet", x, row_group_size=100,
                 key=[f"k{i}" for i in range(4000)])  # fmt: skip
    src = VectorSource.open(path)
    errors = []

    def vectors():
        try:
            for _ in range(20):
                for lo, got in src.chunks(rows=300):
                    np.testing.assert_array_equal(got, x[lo : lo + 300])
        except Exception as e:  # reported below
            errors.append(e)

    reader = threading.Thread(target=vectors)
    reader.start()
    while reader.is_alive():
        for lo in range(0, 4000, 800):
            want = [f"k{i}" for i in range(lo, lo + 800)]
            assert src.columns(lo, lo + 800, ["key"])["key"] == want
    reader.join()
    assert not errors, errors[0]


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VectorSource.open(tmp_path / "nope.npy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no vector files"):
        VectorSource.open(tmp_path / "empty")
    with pytest.raises(ValueError, match="no files of vectors"):
        VectorSource.open([])
    with pytest.raises(TypeError, match="a path, a list of paths or a 2-D float array"):
        VectorSource.open(42)
    with pytest.raises(ValueError, match="2-D float array"):
        VectorSource.open(np.zeros((3, 4), np.int32))
    a = write(tmp_path / "a.npy", rows(5))
    b = tmp_path / "b.npy"
    np.save(b, np.zeros((5, D + 1), np.float32))
    with pytest.raises(ValueError, match=r"same dimension; .*a\.npy has 6 columns, .*b\.npy has 7"):
        VectorSource.open([a, b])
    fbin = write(tmp_path / "t.fbin", rows(5))
    with open(fbin, "r+b") as f:
        f.truncate(8 + 4 * D * 4)
    with pytest.raises(ValueError, match=r"t\.fbin: header says 5 x 6"):
        VectorSource.open(fbin)
    src = VectorSource.open(a)
    with pytest.raises(ValueError, match="outside the 5 rows"):
        src.read(3, 6)
    with pytest.raises(ValueError, match="sorted, distinct"):
        src.take([3, 1])
    with pytest.raises(ValueError, match="sorted, distinct"):
        src.take([0, 5])


def test_bad_rows_are_found_when_read(tmp_path):
    x = rows(200)
    fvecs = write(tmp_path / "x.fvecs", x)
    with open(fvecs, "r+b") as f:  # row 150 declares another dimension
        f.seek(150 * 4 * (D + 1))
        f.write(np.int32(D + 1).tobytes())
    src = VectorSource.open(fvecs)
    assert np.array_equal(src.read(0, 150), x[:150])
    with pytest.raises(ValueError, match=r"x\.fvecs: row 150 has d=7, expected 6"):
        src.read(100, 200)
    table = pa.table({"emb": pa.array([list(r) for r in x[:60]] + [None] + [list(x[0])] * 9)})
    pq.write_table(table, tmp_path / "n.parquet", row_group_size=25)
    src = VectorSource.open(tmp_path / "n.parquet")
    assert src.n == 70
    assert np.array_equal(src.read(0, 50), x[:50])
    with pytest.raises(ValueError, match=r"n\.parquet, column 'emb': row 60 is null"):
        src.read(40, 70)
    ragged = pa.table({"emb": pa.array([[1.0, 2.0]] * 30 + [[1.0, 2.0, 3.0]] * 30)})
    pq.write_table(ragged, tmp_path / "r.parquet", row_group_size=30)
    with pytest.raises(ValueError, match=r"row 30 has length 3, expected 2"):
        VectorSource.open(tmp_path / "r.parquet").read(0, 60)


def test_a_file_shortened_after_opening_is_an_error_not_a_crash(tmp_path):
    x = rows(60_000)  # chunks of ~1.4 MB: the mapped path
    path = write(tmp_path / "x.npy", x)
    src = VectorSource.open(path)
    assert np.array_equal(src.read(0, 60_000), x)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 4 * D * 100)
    assert np.array_equal(src.read(0, 1000), x[:1000])
    with pytest.raises(ValueError, match="ended early"):
        src.read(0, 60_000)
    with pytest.raises(ValueError, match="ended early"):
        src.take(np.array([59_999]))
