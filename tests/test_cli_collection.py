"""``vecpress collection create / add / search / delete / compact / info / index``, run
in-process through ``vecpress.cli.main`` on small collections made here."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vecpress import Collection
from vecpress.cli import build_parser, main

N, D = 300, 16
LANGS = ("en", "de", "fr")


def doc(i: int) -> dict:
    return {
        "id": f"doc{i}",
        "text": f"text {i}",
        "metadata": {"year": 2015 + i % 10, "lang": LANGS[i % 3]},
    }


def write_jsonl(path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


@pytest.fixture
def data(tmp_path):
    """The vectors and their documents: rows 0-199 as .npy + .jsonl docs, rows 200-299 as
    one Parquet file holding both the vectors (column ``emb``) and the documents."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    q = rng.standard_normal((5, D)).astype(np.float32)
    np.save(tmp_path / "x1.npy", x[:200])
    write_jsonl(tmp_path / "docs1.jsonl", [doc(i) for i in range(200)])
    rows = [doc(i) for i in range(200, N)]
    table = pa.table(
        {
            "id": [r["id"] for r in rows],
            "text": [r["text"] for r in rows],
            "year": [r["metadata"]["year"] for r in rows],
            "lang": [r["metadata"]["lang"] for r in rows],
            "emb": [list(v) for v in x[200:].astype(float)],
        }
    )
    pq.write_table(table, tmp_path / "x2.parquet")
    np.save(tmp_path / "q.npy", q)
    return tmp_path, x, q


def run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def ok(capsys, *argv) -> dict:
    """Run a command that must succeed; its JSON output."""
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    return json.loads(out)


def fails(capsys, *argv, match: str) -> str:
    """Run a command that must fail cleanly: a non-zero status, one message on stderr
    (containing ``match``), nothing on stdout, no traceback."""
    rc, out, err = run(capsys, *argv)
    assert rc != 0
    assert out == ""
    assert "Traceback" not in err and err.startswith("vecpress: error: "), err
    assert match in err, err
    return err


def direct(path, q, k, **kw) -> list[list[dict]]:
    """``Collection.search`` called directly, in the CLI's JSON shape."""
    with Collection.open(path) as col:
        res = col.search(q, k, **kw)
    return [
        [
            {"id": i, "score": float(s), "text": t, "metadata": m}
            for i, s, t, m in zip(ids, scores, texts, metas, strict=True)
            if i is not None
        ]
        for ids, scores, texts, metas in zip(
            res.ids, res.scores, res.texts, res.metadata, strict=True
        )
    ]


def count(path) -> int:
    with Collection.open(path) as col:
        return len(col)


def create(capsys, path, *extra) -> dict:
    return ok(capsys, "collection", "create", path, "--spec", "hd2,rq4", "--dim", D, *extra)


def filled(capsys, data, *extra):
    """A collection of the 300 documents (flush_rows 150: a segment and pending rows)."""
    tmp, _, _ = data
    col = tmp / "col"
    create(capsys, col, "--flush-rows", 150, *extra)
    ok(capsys, "collection", "add", col, tmp / "x1.npy", "--docs", tmp / "docs1.jsonl")
    ok(
        capsys,
        "collection",
        "add",
        col,
        tmp / "x2.parquet",
        "--column",
        "emb",
        "--docs",
        tmp / "x2.parquet",
    )
    return col


# -- the round trip ----------------------------------------------------------------------


def test_create_add_search_delete_compact_info_index(data, capsys):
    tmp, x, q = data
    col = tmp / "col"
    info = create(capsys, col, "--flush-rows", 150)
    assert (info["spec"], info["dim"], info["metric"], info["flush_rows"]) == (
        "hd2,rq4",
        D,
        "cosine",
        150,
    )
    assert (info["count"], info["pending"], info["segments"], info["fields"]) == (0, 0, [], {})

    # batches of 64: the first three reach flush_rows and make the first segment
    got = ok(
        capsys,
        "collection",
        "add",
        col,
        tmp / "x1.npy",
        "--docs",
        tmp / "docs1.jsonl",
        "--batch",
        64,
    )
    assert got == {"added": 200, "count": 200}
    got = ok(
        capsys,
        "collection",
        "add",
        col,
        tmp / "x2.parquet",
        "--column",
        "emb",
        "--docs",
        tmp / "x2.parquet",
    )
    assert got == {"added": 100, "count": N}

    info = ok(capsys, "collection", "info", col)
    assert info["count"] == N and info["trained"] is True
    assert info["fields"] == {"lang": "string", "year": "number"}  # not the vectors column
    assert sum(s["rows"] for s in info["segments"]) + info["pending"] == N
    assert info["segments"] and info["pending"]  # searched both ways
    with Collection.open(col) as c:
        assert c.get(["doc0", "doc250"]) == [doc(0), doc(250)]

    res = ok(capsys, "collection", "search", col, tmp / "q.npy", "-k", 7)["results"]
    assert res == direct(col, q, 7)
    assert len(res) == len(q) and all(len(r) == 7 for r in res)
    # a query equal to a stored vector finds it first
    np.save(tmp / "q3.npy", x[[3, 260]])
    res = ok(capsys, "collection", "search", col, tmp / "q3.npy", "-k", 2)["results"]
    assert [r[0]["id"] for r in res] == ["doc3", "doc260"]
    assert res[0][0]["text"] == "text 3" and res[1][0]["metadata"] == doc(260)["metadata"]

    where = {"year": {"$gte": 2020}, "lang": {"$in": ["en", "fr"]}}
    res = ok(
        capsys, "collection", "search", col, tmp / "q.npy", "-k", 10, "--filter", json.dumps(where)
    )["results"]
    assert res == direct(col, q, 10, filter=where)
    hits = [h for r in res for h in r]
    assert len(hits) == 10 * len(q)
    assert all(h["metadata"]["year"] >= 2020 and h["metadata"]["lang"] != "de" for h in hits)

    (tmp / "ids.txt").write_text("doc3\n\nnope\ndoc260\n")
    got = ok(
        capsys, "collection", "delete", col, "doc3", "doc4", "doc4", "--ids-file", tmp / "ids.txt"
    )
    assert got == {"deleted": 3, "count": N - 3}
    res = ok(capsys, "collection", "search", col, tmp / "q3.npy", "-k", 5)["results"]
    assert all(h["id"] not in ("doc3", "doc4", "doc260") for r in res for h in r)

    got = ok(capsys, "collection", "compact", col)
    assert got["merged"] >= 1 and got["dropped"] >= 1 and got["segments"] == 1
    assert got == {"merged": got["merged"], "dropped": got["dropped"], "segments": 1}
    info = ok(capsys, "collection", "info", col)
    assert info["count"] == N - 3 and len(info["segments"]) == 1
    assert info["segments"][0]["rows"] == info["segments"][0]["live"]
    assert ok(capsys, "collection", "compact", col, "--min-rows", 1) == {
        "merged": 0,
        "dropped": 0,
        "segments": 1,
    }

    assert ok(capsys, "collection", "index", col, "year") == {"field": "year", "created": True}
    assert ok(capsys, "collection", "index", col, "year") == {"field": "year", "created": False}
    assert ok(capsys, "collection", "info", col)["indexed_fields"] == ["year"]
    res = ok(
        capsys, "collection", "search", col, tmp / "q.npy", "-k", 4, "--filter", '{"year": 2016}'
    )["results"]
    assert res == direct(col, q, 4, filter={"year": 2016})
    assert all(h["metadata"]["year"] == 2016 for r in res for h in r)


def test_rerank_and_nprobe_on_an_ivf_collection(data, capsys):
    tmp, _, q = data
    col = filled(capsys, data, "--ivf", 4, "--rerank-spec", "f32")
    assert ok(capsys, "collection", "info", col)["ivf"] == 4
    for extra, kw in [
        (["--rerank", "20", "--nprobe", "2"], {"rerank": 20, "nprobe": 2}),
        (["--rerank", "auto"], {"rerank": "auto"}),
    ]:
        res = ok(capsys, "collection", "search", col, tmp / "q.npy", "-k", 5, *extra)["results"]
        assert res == direct(col, q, 5, **kw)


def test_upsert_replaces_documents_by_id(data, capsys):
    tmp, x, _ = data
    col = filled(capsys, data)
    np.save(tmp / "two.npy", x[[0, 1]])
    write_jsonl(tmp / "two.jsonl", [{"id": "doc0", "text": "new"}, {"id": "doc1"}])
    fails(
        capsys,
        "collection",
        "add",
        col,
        tmp / "two.npy",
        "--docs",
        tmp / "two.jsonl",
        match="line 1: document id 'doc0' is already in the collection (2 of the file's ids "
        "are); --upsert replaces documents",
    )
    got = ok(
        capsys, "collection", "add", col, tmp / "two.npy", "--docs", tmp / "two.jsonl", "--upsert"
    )
    assert got == {"added": 2, "count": N}
    with Collection.open(col) as c:
        assert c.get(["doc0", "doc1"]) == [
            {"id": "doc0", "text": "new", "metadata": {}},
            {"id": "doc1", "text": None, "metadata": {}},
        ]
    fails(
        capsys,
        "collection",
        "add",
        col,
        tmp / "two.npy",
        "--upsert",
        match="--upsert replaces documents by id",
    )


def test_documents_without_docs_get_random_ids(data, capsys):
    tmp, _, q = data
    col = tmp / "col"
    create(capsys, col)
    assert ok(capsys, "collection", "add", col, tmp / "x1.npy") == {"added": 200, "count": 200}
    res = ok(capsys, "collection", "search", col, tmp / "q.npy", "-k", 3)["results"]
    assert all(re.fullmatch("[0-9a-f]{32}", h["id"]) and h["text"] is None for h in res[0])
    assert res == direct(col, q, 3)


def test_search_pads_nothing_past_the_documents(data, capsys):
    tmp, _, _ = data
    col = tmp / "col"
    create(capsys, col)
    np.save(tmp / "three.npy", np.eye(3, D, dtype=np.float32))
    ok(capsys, "collection", "add", col, tmp / "three.npy")
    res = ok(capsys, "collection", "search", col, tmp / "q.npy", "-k", 10)["results"]
    assert [len(r) for r in res] == [3] * 5  # no padding entries
    res = ok(capsys, "collection", "search", col, tmp / "q.npy", "--filter", "{}")["results"]
    assert [len(r) for r in res] == [3] * 5


# -- bad input: a clean error, and nothing stored ---------------------------------------------


def test_wrong_dimension_stores_nothing(data, capsys):
    tmp, x, _ = data
    col = filled(capsys, data)
    np.save(tmp / "x8.npy", x[:, :8])
    fails(
        capsys,
        "collection",
        "add",
        col,
        tmp / "x8.npy",
        match=f"has vectors of 8 dimensions, the collection {col} has dim 16",
    )
    fails(
        capsys,
        "collection",
        "search",
        col,
        tmp / "x8.npy",
        match=f"queries file {tmp / 'x8.npy'} has vectors of 8 dimensions",
    )
    assert count(col) == N


def test_docs_with_another_row_count_store_nothing(data, capsys):
    tmp, _, _ = data
    col = tmp / "col"
    create(capsys, col)
    write_jsonl(tmp / "short.jsonl", [doc(i) for i in range(199)])
    fails(
        capsys,
        "collection",
        "add",
        col,
        tmp / "x1.npy",
        "--docs",
        tmp / "short.jsonl",
        match="has 199 rows and the vectors file",
    )
    err = fails(
        capsys,
        "collection",
        "add",
        col,
        tmp / "x1.npy",
        "--docs",
        tmp / "x2.parquet",
        match="has 100 rows and the vectors file",
    )
    assert "200 vectors" in err
    assert count(col) == 0


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (["{}", "{oops"], "line 2: not valid JSON (Expecting property name"),
        (["{}", ""], "line 2 is empty"),
        (["[1]"], "line 1: expected a JSON object with the keys id, text and metadata, found an"),
        (['{"meta": {}}'], "line 1: unknown key 'meta'"),
        (['{"id": 7}'], "line 1: id must be a string, found a number"),
        (['{"id": "a"}', "{}"], "line 2 has no id, and"),
        (["{}", '{"id": "a"}'], "line 2 has an id, and"),
        (['{"id": "a"}', '{"id": "a"}'], "line 2: id 'a' again, first at"),
        (['{"id": ""}'], "line 1: document ids must have 1 to 1024 characters"),
        (['{"text": 5}'], "line 1: text must be a string or null, found a number"),
        (['{"metadata": [1]}'], "line 1: metadata must be an object"),
        (['{"metadata": {"y": 1}}', '{"metadata": {"y": "a"}}'], "line 2: metadata: field 'y'"),
        (['{"metadata": {"$y": 1}}'], "line 1: metadata, field '$y'"),
    ],
)
def test_bad_docs_lines_are_named_and_store_nothing(data, capsys, lines, match):
    tmp, x, _ = data
    col = tmp / "col"
    create(capsys, col)
    n = len(lines)
    np.save(tmp / "few.npy", x[:n])
    (tmp / "bad.jsonl").write_text("\n".join(lines) + "\n")
    fails(
        capsys,
        "collection",
        "add",
        col,
        tmp / "few.npy",
        "--docs",
        tmp / "bad.jsonl",
        "--batch",
        1,
        match=match,
    )
    assert count(col) == 0


def test_a_metadata_kind_clash_in_a_later_batch_stores_nothing(data, capsys):
    tmp, _, _ = data
    col = tmp / "col"
    create(capsys, col)
    rows = [doc(i) for i in range(200)]
    rows[150]["metadata"]["year"] = "2020"
    write_jsonl(tmp / "clash.jsonl", rows)
    fails(
        capsys,
        "collection",
        "add",
        col,
        tmp / "x1.npy",
        "--docs",
        tmp / "clash.jsonl",
        "--batch",
        50,
        match="line 151: metadata: field 'year' holds numbers, found string",
    )
    assert count(col) == 0


def test_a_failing_batch_says_what_is_stored(data, capsys, monkeypatch):
    """A batch that fails when it is stored (here: made to) stores nothing; the batches
    before it are stored, and the message says so."""
    tmp, _, _ = data
    col = tmp / "col"
    create(capsys, col)
    calls = []
    add = Collection.add

    def failing_add(self, vectors, *args, **kw):
        calls.append(len(vectors))
        if len(calls) == 2:
            raise ValueError("document id 'doc70' is already in the collection")
        return add(self, vectors, *args, **kw)

    monkeypatch.setattr(Collection, "add", failing_add)
    fails(
        capsys,
        "collection",
        "add",
        col,
        tmp / "x1.npy",
        "--docs",
        tmp / "docs1.jsonl",
        "--batch",
        64,
        match="adding rows 64 to 127: document id 'doc70' is already in the collection; the "
        "collection now holds 64 documents (64 added by this command before)",
    )
    assert calls == [64, 64] and count(col) == 64


def test_bad_parquet_docs_columns_are_named(data, capsys):
    tmp, x, _ = data
    col = tmp / "col"
    create(capsys, col)
    np.save(tmp / "two.npy", x[:2])
    for table, match in [
        (pa.table({"id": [1, 2]}), "column 'id' must hold strings, found int64"),
        (pa.table({"$x": [1, 2]}), "column '$x' cannot be a metadata field"),
        (pa.table({"b": pa.array([b"a", b"b"])}), "column 'b' has type binary"),
        (pa.table({"y": [1, 2], "z": [float("nan"), 1.0]}), "row 0: metadata, field 'z'"),
    ]:
        pq.write_table(table, tmp / "bad.parquet")
        fails(
            capsys,
            "collection",
            "add",
            col,
            tmp / "two.npy",
            "--docs",
            tmp / "bad.parquet",
            match=match,
        )
    assert count(col) == 0
    # nulls leave a field out; other columns than id and text are metadata
    pq.write_table(pa.table({"text": ["a", None], "y": [1, None]}), tmp / "good.parquet")
    ok(capsys, "collection", "add", col, tmp / "two.npy", "--docs", tmp / "good.parquet")
    res = ok(capsys, "collection", "search", col, tmp / "two.npy", "-k", 1)["results"]
    assert [(r[0]["text"], r[0]["metadata"]) for r in res] == [("a", {"y": 1}), (None, {})]


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--filter", "{year: 2020}"], "--filter {year: 2020}: not valid JSON (Expecting"),
        (["--filter", "[1]"], "expected a JSON object such as"),
        (["--filter", '{"nope": 1}'], "filter names the unknown field 'nope'"),
        (["--filter", '{"year": "x"}'], "--filter"),
        (["--filter", '{"year": {"$near": 1}}'], "$near"),
        (["-k", "0"], "-k must be in [1, 10000], found 0"),
        (["--rerank", "20"], "--rerank needs a second tier"),
        (["--nprobe", "2"], "--nprobe applies to IVF collections"),
    ],
)
def test_bad_search_flags_are_named(data, capsys, flags, match):
    tmp, _, _ = data
    col = filled(capsys, data)
    fails(capsys, "collection", "search", col, tmp / "q.npy", *flags, match=match)


def test_a_missing_collection_is_a_clean_error(data, capsys):
    tmp, _, _ = data
    missing = tmp / "none"
    for argv in (
        ["add", missing, tmp / "x1.npy"],
        ["search", missing, tmp / "q.npy"],
        ["delete", missing, "doc1"],
        ["compact", missing],
        ["info", missing],
        ["index", missing, "year"],
    ):
        fails(capsys, "collection", *argv, match=f"collection {missing} does not exist")
    assert not missing.exists()
    fails(capsys, "collection", "info", tmp, match=f"{tmp} is not a collection")
    fails(capsys, "collection", "info", tmp / "q.npy", match="is a file, not a collection")


def test_bad_create_flags_are_named_and_create_nothing(data, capsys):
    tmp, _, _ = data
    col = tmp / "new"
    for extra, match in [
        (["--spec", "zz9"], "--spec zz9: "),
        (["--spec", "pq48x4"], "--spec pq48x4: the dimension d=16 must be a multiple"),
        (["--spec", "leanvec-ood8,rq4"], "trains its codec on the vectors alone"),
        (["--spec", "lvq4x8", "--rerank-spec", "f32"], "cannot be added to the two-level"),
        (["--ivf", "500", "--flush-rows", "200"], "--ivf 500: more lists than the --flush-rows"),
        (["--dim", "0"], "--dim must be >= 1, found 0"),
        (["--flush-rows", "0"], "--flush-rows must be >= 1, found 0"),
    ]:
        argv = ["collection", "create", col, "--spec", "hd2,rq4", "--dim", D, *extra]
        fails(capsys, *argv, match=match)
        assert not col.exists()
    create(capsys, col)
    fails(
        capsys,
        "collection",
        "create",
        col,
        "--spec",
        "f16",
        "--dim",
        4,
        match=f"collection {col} exists already",
    )
    fails(
        capsys,
        "collection",
        "create",
        tmp,
        "--spec",
        "f16",
        "--dim",
        4,
        match="is a folder that is not empty",
    )


def test_other_bad_input_is_named(data, capsys):
    tmp, _, _ = data
    col = filled(capsys, data)
    fails(capsys, "collection", "delete", col, match="no ids to delete")
    fails(capsys, "collection", "delete", col, "--ids-file", tmp / "none.txt", match="--ids-file")
    fails(capsys, "collection", "index", col, "nope", match="no metadata field 'nope' to index")
    fails(capsys, "collection", "compact", col, "--min-rows", 0, match="--min-rows must be >= 1")
    fails(
        capsys, "collection", "add", col, tmp / "x1.npy", "--batch", 0, match="--batch must be >= 1"
    )
    fails(
        capsys,
        "collection",
        "add",
        col,
        tmp / "x1.npy",
        "--docs",
        tmp / "q.npy",
        match="unsupported extension '.npy'; expected one of .jsonl, .parquet",
    )
    np.save(tmp / "zero.npy", np.zeros((2, D), np.float32))
    fails(
        capsys,
        "collection",
        "add",
        col,
        tmp / "zero.npy",
        match="vectors row 0 is a zero vector (metric cosine)",
    )
    assert count(col) == N


# -- help ------------------------------------------------------------------------------------


def _collection_commands() -> dict[str, argparse.ArgumentParser]:
    def subparsers(parser):
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return sub.choices

    return dict(subparsers(subparsers(build_parser())["collection"]))


def test_every_collection_option_has_help_stating_its_default():
    commands = _collection_commands()
    assert set(commands) == {
        "create",
        "build",
        "add",
        "search",
        "delete",
        "compact",
        "info",
        "index",
    }
    for command, parser in commands.items():
        for action in parser._actions:
            if set(action.option_strings) & {"-h", "--help"}:
                continue
            text = " ".join((action.help or "").split())
            assert text, f"{command} {action.dest}: no help"
            default = action.default
            if action.option_strings and default is not None and default is not False:
                assert re.search(rf"\bdefault:? {re.escape(str(default))}(?![\w.])", text), (
                    command,
                    action.dest,
                )


def test_advise_reads_a_collections_vectors(tmp_path, capsys):
    """``vecpress advise FOLDER`` measures a collection's own vectors (its float tier and
    pending ones); a collection of codes only is refused with the reason."""
    x = np.random.default_rng(3).standard_normal((1200, 16)).astype(np.float32)
    with Collection.create(tmp_path / "f", spec="hd2,rq4", dim=16, rerank_spec="f32",
                           flush_rows=1000) as col:  # fmt: skip
        col.add(x, ids=[f"d{i}" for i in range(1200)])
    got = ok(capsys, "advise", tmp_path / "f", "--target-recall", 0.9, "--grid", "quick",
             "--n-queries", 100, "--json")  # fmt: skip
    assert got["recall_at_k"] >= 0.9 and got["met"]
    with Collection.create(tmp_path / "c", spec="hd2,rq4", dim=16, flush_rows=1000) as col:
        col.add(x, ids=[f"d{i}" for i in range(1200)])
    fails(capsys, "advise", tmp_path / "c", "--target-recall", 0.9, match="float tier")


def test_build_makes_a_collection_from_files_a_chunk_at_a_time(data, capsys):
    tmp, x, _ = data
    x2 = tmp / "x2.parquet"
    pq.write_table(pq.read_table(x2), tmp / "x3.parquet")  # rows 200-299 again, new ids
    table = pq.read_table(tmp / "x3.parquet")
    table = table.set_column(0, "id", pa.array([f"again{i}" for i in range(100)]))
    pq.write_table(table, tmp / "x3.parquet")
    info = ok(capsys, "collection", "build", tmp / "c", x2, tmp / "x3.parquet", "--spec",
              "hd2,rq4", "--rerank-spec", "f32", "--id-column", "id", "--text-column",
              "text", "--metadata-columns", "year, lang", "--chunk-mb", 0.005,
              "--flush-rows", 50, "--no-progress")  # fmt: skip
    assert info["count"] == 200 and info["pending"] == 0 and info["dim"] == D
    assert [s["rows"] for s in info["segments"]] == [81, 81, 38]  # 0.005 MiB: 81 rows
    assert info["fields"] == {"lang": "string", "year": "number"}
    col = Collection.open(tmp / "c")
    assert col.get(["doc205"]) == [doc(205)]
    res = col.search(x[250:251], 2, rerank="auto")
    assert set(res.ids[0]) == {"doc250", "again50"}
    fails(capsys, "collection", "build", tmp / "c", x2, "--spec", "hd2,rq4", match="exists")
    fails(capsys, "collection", "build", tmp / "d", x2, "--spec", "hd2,rq4", "--chunk-mb", 0,
          match="--chunk-mb must be > 0")  # fmt: skip
    fails(capsys, "collection", "build", tmp / "d", x2, "--spec", "hd2,rq4",
          "--metadata-columns", "nope", match="no column 'nope'")  # fmt: skip
    fails(capsys, "collection", "build", tmp / "d", x2, "--spec", "nope4", match="--spec nope4")
    fails(capsys, "collection", "build", tmp / "d", x2, x2, "--spec", "hd2,rq4", "--id-column",
          "id", match="rows 0 to 199: duplicate document id 'doc200'")  # fmt: skip
    assert not (tmp / "d").exists()
    assert not [p for p in tmp.iterdir() if p.name.endswith(".vpbuild")]
