"""Streaming builds: an index file or a collection from inputs read a chunk at a time,
equal to the in-memory build, failing cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vecpress
from vecpress import Collection, build_collection, build_index
from vecpress.search import index as index_module
from vecpress.search.index import build, training_rows

D = 24


@pytest.fixture
def data(tmp_path):
    """3,000 rows in three .npy files (and the matrix)."""
    x = np.random.default_rng(1).standard_normal((3000, D)).astype(np.float32)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, (lo, hi) in enumerate([(0, 1000), (1000, 1700), (1700, 3000)]):
        np.save(folder / f"part{i}.npy", x[lo:hi])
    return folder, x


def leftovers(folder) -> list[str]:
    return [f for f in os.listdir(folder) if f.endswith(".vpbuild") or f.endswith(".vptmp")]


CASES = [
    dict(spec="hd2,rq4", metric="ip"),
    dict(spec="hd2,rq4", metric="l2", rerank_spec="f32"),
    dict(spec="kl4", metric="cosine", ivf=8, rerank_spec="f16"),
    dict(spec="lvq4x8", metric="l2", ivf=5),
    dict(spec="center,int8", metric="ip", ivf=4, ivf_residual=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c.values())))
@pytest.mark.parametrize("chunk_rows", [400, 1000, 5000])
def test_the_file_equals_the_in_memory_build(tmp_path, data, monkeypatch, case, chunk_rows):
    folder, x = data
    monkeypatch.setattr(index_module, "ADD_CHUNK", 500)  # several encode batches
    ref = tmp_path / "ref.vpi"
    build(x, **case).save(ref)
    out = tmp_path / "streamed.vpi"
    seen = []
    index = build_index(folder, out, chunk_bytes=chunk_rows * D * 4, progress=seen.append, **case)
    assert sum(seen) == 3000 and len(seen) == -(-3000 // min(chunk_rows, 3000))
    assert out.read_bytes() == ref.read_bytes()
    assert len(index) == 3000 and leftovers(tmp_path) == []


def test_sources_of_every_kind_give_the_same_file(tmp_path, data):
    folder, x = data
    build_index(x, tmp_path / "a.vpi", "hd2,rq4", "cosine")
    parquet = tmp_path / "x.parquet"
    pq.write_table(pa.table({"v": list(x)}), parquet, row_group_size=700)
    build_index(parquet, tmp_path / "b.vpi", "hd2,rq4", "cosine", chunk_bytes=500 * D * 4)
    build_index(sorted(folder.iterdir()), tmp_path / "c.vpi", "hd2,rq4", "cosine")
    np.save(tmp_path / "whole.npy", x)
    mapped = np.load(tmp_path / "whole.npy", mmap_mode="r")
    build_index(mapped, tmp_path / "d.vpi", "hd2,rq4", "cosine", chunk_bytes=999 * D * 4)
    first = (tmp_path / "a.vpi").read_bytes()
    assert (tmp_path / "b.vpi").read_bytes() == first
    assert (tmp_path / "c.vpi").read_bytes() == first
    assert (tmp_path / "d.vpi").read_bytes() == first


def test_the_sample_is_drawn_across_the_whole_input(tmp_path, data, monkeypatch):
    """The codec trains on training_rows' rows (the build's), not on the first rows."""
    folder, _ = data
    taken = []
    real = vecpress.files.sources.VectorSource.take

    def spy(self, rows):
        taken.append(np.asarray(rows))
        return real(self, rows)

    monkeypatch.setattr(vecpress.files.sources.VectorSource, "take", spy)
    monkeypatch.setattr(vecpress.Index, "train_rows", property(lambda self: 1000))
    build_index(folder, tmp_path / "x.vpi", "hd2,rq4", "ip")
    (rows,) = taken
    assert np.array_equal(rows, training_rows(3000, 1000, 0))
    assert rows.max() > 2500 and rows.min() < 500


@pytest.mark.parametrize("where", [10, 2345])  # in the training sample, and beyond it
def test_a_bad_row_names_its_number_and_leaves_the_target(tmp_path, data, monkeypatch, where):
    folder, x = data
    monkeypatch.setattr(vecpress.Index, "train_rows", property(lambda self: 1000))
    out = tmp_path / "x.vpi"
    build_index(folder, out, "hd2,rq4", "cosine")
    before = out.read_bytes()
    bad = x.copy()
    bad[where, 3] = np.nan
    with pytest.raises(ValueError, match=rf"row(s)? .*\b{where}\b"):
        build_index(bad, out, "hd2,rq4", "cosine", chunk_bytes=300 * D * 4)
    zero = x.copy()
    zero[where] = 0
    with pytest.raises(ValueError, match=rf"zero row.* {where}\b"):
        build_index(zero, out, "hd2,rq4", "cosine", chunk_bytes=300 * D * 4)
    assert out.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_bad_arguments(tmp_path, data):
    folder, x = data
    with pytest.raises(ValueError, match="more lists than the 3000 vectors"):
        build_index(x, tmp_path / "x.vpi", "hd2,rq4", ivf=3001)
    with pytest.raises(IsADirectoryError):
        build_index(x, folder, "hd2,rq4")
    with pytest.raises(FileNotFoundError):
        build_index(x, tmp_path / "nope" / "x.vpi", "hd2,rq4")
    with pytest.raises(ValueError, match="chunk_bytes"):
        build_index(x, tmp_path / "x.vpi", "hd2,rq4", chunk_bytes=0)
    np.save(tmp_path / "empty.npy", np.zeros((0, D), np.float32))
    with pytest.raises(ValueError, match="holds no vectors"):
        build_index(tmp_path / "empty.npy", tmp_path / "x.vpi", "hd2,rq4")
    with pytest.raises(ValueError, match="not a valid quantizer"):
        build_index(x, tmp_path / "x.vpi", "nope4")
    assert not (tmp_path / "x.vpi").exists() and leftovers(tmp_path) == []


# -- collections -------------------------------------------------------------------------
def docs_parquet(tmp_path, x: np.ndarray, files: int = 2) -> list[str]:
    """``x`` as Parquet files with ids, texts and two metadata fields."""
    n = x.shape[0]
    cuts = np.linspace(0, n, files + 1).astype(int)
    paths = []
    for f in range(files):
        lo, hi = cuts[f], cuts[f + 1]
        table = pa.table({
            "emb": list(x[lo:hi]),
            "key": [f"doc{i}" for i in range(lo, hi)],
            "body": [f"text {i}" for i in range(lo, hi)],
            "year": [2000 + i % 10 for i in range(lo, hi)],
            "lang": [None if i % 7 == 0 else ("en" if i % 2 else "de") for i in range(lo, hi)],
        })  # fmt: skip
        paths.append(str(tmp_path / f"docs{f}.parquet"))
        pq.write_table(table, paths[-1], row_group_size=333)
    return paths


def test_a_collection_equals_the_one_added_in_memory(tmp_path, data, monkeypatch):
    _, x = data
    monkeypatch.setattr(vecpress.Index, "train_rows", property(lambda self: 1000))
    settings = dict(spec="hd2,rq4", metric="cosine", rerank_spec="f32", flush_rows=500)
    seen = []
    col = build_collection(
        docs_parquet(tmp_path, x), tmp_path / "built", id_column="key", text_column="body",
        metadata_columns=["year", "lang"], chunk_bytes=700 * D * 4, progress=seen.append,
        **settings,
    )  # fmt: skip
    assert sum(seen) == 3000 and len(col) == 3000
    assert [r for _, _, r in col._catalog.segments()] == [700, 700, 700, 700, 200]
    ref = Collection.create(tmp_path / "ref", dim=D, **settings)
    ref.train(x[training_rows(3000, 1000, 0)])
    ref.add(x, [f"doc{i}" for i in range(3000)], texts=[f"text {i}" for i in range(3000)],
            metadata=[{"year": 2000 + i % 10, **({} if i % 7 == 0 else
                       {"lang": "en" if i % 2 else "de"})} for i in range(3000)])  # fmt: skip
    q = x[::97] + 0.01
    for kw in ({}, {"filter": {"year": 2003, "lang": "en"}}, {"rerank": "auto"}):
        a, b = col.search(q, 10, **kw), ref.search(q, 10, **kw)
        assert a.ids == b.ids and np.array_equal(a.scores, b.scores), kw
        assert a.texts == b.texts and a.metadata == b.metadata
    assert col.get(["doc7"]) == [{"id": "doc7", "text": "text 7", "metadata": {"year": 2007}}]
    assert leftovers(tmp_path) == []


def test_a_collection_without_id_column_numbers_its_rows(tmp_path, data):
    folder, x = data
    col = build_collection(folder, tmp_path / "c", spec="hd2,rq4", rerank_spec="f32")
    assert col.ids()[:3] == ["0", "1", "2"] and len(col) == 3000
    assert col.search(x[2345:2346], 1, rerank="auto").ids == [["2345"]]


def test_a_failed_collection_build_leaves_nothing(tmp_path, data):
    folder, x = data
    paths = docs_parquet(tmp_path, x)
    dup = pa.table({"emb": list(x[:10]), "key": ["doc5"] * 10})
    pq.write_table(dup, tmp_path / "dup.parquet")
    target = tmp_path / "c"
    with pytest.raises(ValueError, match=r"rows 3,000 to 3,009: .*doc5"):
        build_collection([*paths, str(tmp_path / "dup.parquet")], target, id_column="key",
                         chunk_bytes=1000 * D * 4)  # fmt: skip
    bad = x.copy()
    bad[2222] = np.inf
    with pytest.raises(ValueError, match=r"row 2222"):
        build_collection(bad, target, chunk_bytes=1000 * D * 4)
    with pytest.raises(ValueError, match="can only be read from Parquet files"):
        build_collection(folder, target, id_column="key")
    with pytest.raises(ValueError, match="no column 'nope'"):
        build_collection(paths, target, metadata_columns=["nope"])
    with pytest.raises(ValueError, match="one role only"):
        build_collection(paths, target, id_column="key", metadata_columns=["key"])
    assert not target.exists() and leftovers(tmp_path) == []
    target.mkdir()
    with pytest.raises(FileExistsError):
        build_collection(paths, target)


def test_the_cli_builds_from_several_files(tmp_path, data, capsys):
    from vecpress.cli import main

    folder, x = data
    files = [str(folder / f"part{i}.npy") for i in range(3)]
    assert main(["build", *files, "--spec", "hd2,rq4", "--metric", "ip", "--chunk-mb", "0.05",
                 "-o", str(tmp_path / "cli.vpi"), "--no-progress"]) == 0  # fmt: skip
    assert "3,000 vectors x 24 dims" in capsys.readouterr().out
    build(x, "hd2,rq4", "ip").save(tmp_path / "ref.vpi")
    assert (tmp_path / "cli.vpi").read_bytes() == (tmp_path / "ref.vpi").read_bytes()
    assert main(["build", str(folder), "--spec", "hd2,rq4", "--metric", "ip",
                 "-o", str(tmp_path / "dir.vpi"), "--no-progress"]) == 0  # fmt: skip
    assert (tmp_path / "dir.vpi").read_bytes() == (tmp_path / "ref.vpi").read_bytes()
    assert main(["build", *files, "--spec", "hd2,rq4", "--chunk-mb", "0", "-o", "x.vpi"]) == 2
    assert "--chunk-mb must be > 0" in capsys.readouterr().err


#: rows and dimension of the memory test (VECPRESS_STREAM_ROWS to change the rows)
STREAM_ROWS = int(os.environ.get("VECPRESS_STREAM_ROWS", 2_000_000))
STREAM_D = 384
#: the bound the memory test holds peak RSS to, above the codes' size
STREAM_RSS_BOUND = 1 << 30


def test_peak_memory_is_bounded_by_the_chunk_not_the_input(tmp_path):
    """A 2,000,000 x 384 float32 file (2.9 GiB) built with 256 MiB chunks, in a fresh
    process: peak RSS <= 1 GiB + the codes' size (the rows mapped when the file is
    written), far below the input's size."""
    n, d = STREAM_ROWS, STREAM_D
    src = tmp_path / "big.npy"
    rng = np.random.default_rng(0)
    with open(src, "wb") as f:  # written, not mapped: this process stays small too
        header = {"descr": "<f4", "fortran_order": False, "shape": (n, d)}
        np.lib.format.write_array_header_1_0(f, header)
        for s in range(0, n, 100_000):
            f.write(rng.standard_normal((min(100_000, n - s), d), np.float32).tobytes())
    script = textwrap.dedent(f"""
        import vecpress
        index = vecpress.build_index({str(src)!r}, {str(tmp_path / "big.vpi")!r}, "hd2,rq4",
                                     "ip", chunk_bytes=256 << 20)
        # VmHWM: this process's peak resident set (ru_maxrss would count the parent's,
        # which a fork and exec inherit on Linux)
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        print(len(index), index.memory["codes"] * len(index), int(status.split()[0]) * 1024)
    """)  # fmt: skip
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=1200)  # fmt: skip
    assert out.returncode == 0, out.stderr
    count, codes, peak = map(int, out.stdout.split())
    assert count == n
    input_bytes = n * d * 4
    print(f"peak RSS {peak / 2**20:,.0f} MiB; codes {codes / 2**20:,.0f} MiB; "
          f"input {input_bytes / 2**20:,.0f} MiB")  # fmt: skip
    assert peak <= STREAM_RSS_BOUND + codes, (peak, codes)


# -- rows encoded elsewhere, parts of a collection ------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [dict(spec="hd2,rq4", metric="cosine"), dict(spec="hd2,rq4", metric="l2", ivf=8,
                                                 rerank_spec="f16"), dict(spec="lvq4x8")],
    ids=["flat", "ivf-l2", "two-level"],
)  # fmt: skip
def test_add_encoded_writes_the_segment_add_writes(tmp_path, data, settings):
    _, x = data
    a = Collection.create(tmp_path / "a", dim=D, flush_rows=1000, **settings).train(x)
    b = Collection.create(tmp_path / "b", dim=D, flush_rows=1000, **settings).train(x)
    ids = [f"d{i}" for i in range(3000)]
    a.add(x, ids, metadata=[{"n": i} for i in range(3000)])
    template = tmp_path / "t.vpi"
    template.write_bytes(b.template_bytes())
    rows = vecpress.open(template).encode(x)
    b.add_encoded(rows, ids, metadata=[{"n": i} for i in range(3000)])
    files = [[(c.path / "segments" / f).read_bytes() for _, f, _ in c._catalog.segments()]
             for c in (a, b)]  # fmt: skip
    assert files[0] == files[1]
    ra, rb = a.search(x[:20], 5), b.search(x[:20], 5)
    assert ra.ids == rb.ids and np.array_equal(ra.keys, rb.keys)


def test_add_encoded_refuses_rows_of_another_codec(tmp_path, data):
    _, x = data
    col = Collection.create(tmp_path / "c", dim=D, spec="hd2,rq4", metric="l2", ivf=4).train(x)
    template = tmp_path / "t.vpi"
    template.write_bytes(col.template_bytes())
    good = vecpress.open(template).encode(x[:10])
    ids = [str(i) for i in range(10)]
    bad = [
        (good._replace(codes=good.codes[:, :-1]), "codes must be uint8 of shape"),
        (good._replace(codes=good.codes.astype(np.int16)), "codes must be uint8"),
        (good._replace(norms=None), "norms must be 10 finite"),
        (good._replace(norms=np.full(10, np.nan, np.float32)), "norms must be 10 finite"),
        (good._replace(lists=good.lists + 4), r"lists must be 10 integer IVF lists in \[0, 4\)"),
        (good._replace(lists=None), "lists must be"),
        (good._replace(rerank_codes=good.codes), "no second tier"),
    ]
    for rows, message in bad:
        with pytest.raises(ValueError, match=message):
            col.add_encoded(rows, ids)
    with pytest.raises(TypeError, match="EncodedRows"):
        col.add_encoded(tuple(good), ids)
    with pytest.raises(TypeError, match="needs the ids"):
        col.add_encoded(good, None)
    with pytest.raises(ValueError, match="codes must be uint8 of shape \\(9, "):
        col.add_encoded(good, ids[:9])
    assert len(col) == 0 and col.segments() == []
    col.add_encoded(good, ids)
    with pytest.raises(ValueError, match="already"):
        col.add_encoded(good, ids)
    assert len(col) == 10
    fresh = Collection.create(tmp_path / "f", dim=D, spec="hd2,rq4")
    with pytest.raises(ValueError, match="not trained"):
        fresh.template_bytes()
    with pytest.raises(ValueError, match="needs a trained collection"):
        fresh.add_encoded(good, ids)


def test_the_parts_of_a_collection_merge_into_the_whole(tmp_path, data):
    from vecpress.search.topk import topk

    _, x = data
    col = Collection.create(tmp_path / "c", dim=D, spec="hd2,rq4", flush_rows=500).train(x)
    for lo in range(0, 2800, 700):  # four segments
        col.add(x[lo : lo + 700], [f"d{i}" for i in range(lo, lo + 700)])
    col.add(x[2800:], [f"d{i}" for i in range(2800, 3000)])  # pending
    assert len(col.segments()) == 4 and col.describe()["pending"] == 200
    q = x[::300] + 0.01
    whole = col.search(q, 7)
    parts = [col.search(q, 7, shard=(i, 3)) for i in range(3)]
    scores = np.concatenate([p.scores for p in parts], axis=1)
    keys = np.concatenate([p.keys for p in parts], axis=1)
    best, best_scores = topk(scores, 7, ids=keys)
    assert np.array_equal(best, whole.keys) and np.array_equal(best_scores, whole.scores)
    for bad in [(3, 3), (-1, 2), (0, 0), [0, 2], (0.0, 2), (True, 2)]:
        with pytest.raises(ValueError, match=r"shard must be \(i, m\)"):
            col.search(q, 3, shard=bad)
