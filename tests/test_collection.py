"""Collections (:mod:`vecpress.collection.collection`): documents in, search out, the same
answers as an index of the same codec, deletions never returned, batches stored whole
or not at all, files a crashed writer left removed on open."""

from __future__ import annotations

import numpy as np
import pytest

import vecpress
from _util import gaussian
from vecpress import Index
from vecpress.collection import Collection

D = 24


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return gaussian(np.random.default_rng(0), 600, D, offset=0.3)


@pytest.fixture(scope="module")
def q() -> np.ndarray:
    return gaussian(np.random.default_rng(1), 7, D, offset=0.3)


def _ids(n, start=0):
    return [f"doc-{i}" for i in range(start, start + n)]


def _exact_top(x, q, k):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.argsort(-(qn @ xn.T), axis=1, kind="stable")[:, :k]


def test_pending_vectors_are_searched_exactly(tmp_path, x, q):
    col = Collection.create(tmp_path / "c", spec="hd2,rq4", dim=D, flush_rows=10_000)
    col.add(x[:100], ids=_ids(100), texts=[f"t{i}" for i in range(100)])
    assert col.segments() == [] and len(col) == 100
    res = col.search(q, 5)
    want = _exact_top(x[:100], q, 5)
    assert res.ids == [[f"doc-{j}" for j in row] for row in want]
    assert res.texts[0][0] == f"t{want[0, 0]}" and res.scores.dtype == np.float32
    assert np.all(np.diff(res.scores, axis=1) <= 0)


def test_segments_answer_as_an_index_of_the_same_codec(tmp_path, x, q):
    """Once flushed, a collection's answers are those of an Index of its spec and seed
    fitted on the same vectors (the codec is trained on the first segment's rows)."""
    col = Collection.create(tmp_path / "c", spec="hd2,rq4", dim=D, seed=3, flush_rows=600)
    col.add(x[:250], ids=_ids(250))
    col.add(x[250:], ids=_ids(350, 250))  # reaches flush_rows: one segment of 600
    assert [r for _, _, r in col.segments()] == [600]
    index = Index("hd2,rq4", metric="cosine", seed=3)
    index.add(x)
    want = index.search(q, 10)
    res = col.search(q, 10)
    assert res.ids == [[f"doc-{j}" for j in row] for row in want.ids]
    np.testing.assert_array_equal(res.scores, want.scores)


def test_later_batches_share_the_codec_and_merge(tmp_path, x, q):
    col = Collection.create(tmp_path / "c", spec="hd2,rq4", dim=D, flush_rows=200)
    for s in range(0, 600, 150):  # 150, then pending 300 -> segment; ...
        col.add(x[s : s + 150], ids=_ids(150, s))
    col.add(x[:1] * 2, ids=["extra"])  # pending
    col.flush()
    sizes = [r for _, _, r in col.segments()]
    assert sum(sizes) == 601 and col._catalog.pending_count() == 0
    big = Collection.create(tmp_path / "big", spec="hd2,rq4", dim=D, flush_rows=200)
    big.add(x, ids=_ids(600))  # the codec trained on all 600 rows at once
    res = col.search(q, 10)
    exact = _exact_top(x, q, 10)
    hits = [len({f"doc-{j}" for j in e} & set(r)) for e, r in zip(exact, res.ids, strict=True)]
    recall = np.mean(hits) / 10
    assert recall >= 0.7, recall  # 4-bit codes at d = 24: most of the exact top 10
    # the same document never comes twice; "extra" is the scaled copy of doc-0
    for row in res.ids:
        assert len(set(row)) == len(row)
    assert col.search(x[:1], 2).ids[0][:2] in (["doc-0", "extra"], ["extra", "doc-0"])


def test_deleted_documents_are_never_returned(tmp_path, x, q):
    col = Collection.create(tmp_path / "c", spec="hd2,rq4", dim=D, flush_rows=300)
    col.add(x[:300], ids=_ids(300))  # a segment
    col.add(x[300:350], ids=_ids(50, 300))  # pending
    before = col.search(q, 10)
    gone = sorted({i for row in before.ids for i in row[:6]})
    assert col.delete([*gone, "never-stored"]) == len(gone)
    res = col.search(q, 10)
    for row in res.ids:
        assert not set(row) & set(gone) and None not in row  # still 10 a query
    # the survivors keep their order: each query's result is its old list without them
    for old, new in zip(before.ids, res.ids, strict=True):
        kept = [i for i in old if i not in gone]
        assert new[: len(kept)] == kept
    assert len(col) == 350 - len(gone) and col.get(gone[:1]) == [None]


def test_reopen_and_get(tmp_path, x, q):
    path = tmp_path / "c"
    col = Collection.create(path, spec="hd2,rq4", dim=D, flush_rows=100)
    meta = [{"n": i, "lang": "en" if i % 2 else "de", "tags": [i]} for i in range(150)]
    col.add(x[:150], ids=_ids(150), texts=[f"t{i}" for i in range(150)], metadata=meta)
    first = col.search(q, 5)
    col.close()
    again = Collection.open(path)
    res = again.search(q, 5)
    assert res.ids == first.ids and np.array_equal(res.scores, first.scores)
    assert again.get(["doc-3", "nope"]) == [
        {"id": "doc-3", "text": "t3", "metadata": {"n": 3, "lang": "en", "tags": [3]}},
        None,
    ]
    assert len(again) == 150 and again.spec == "hd2,rq4"


def test_k_past_the_documents_pads(tmp_path, x):
    col = Collection.create(tmp_path / "c", spec="f32", dim=D)
    col.add(x[:3], ids=["a", "b", "c"])
    res = col.search(x[:1], 5)
    assert res.ids[0][3:] == [None, None] and np.isneginf(res.scores[0, 3:]).all()
    assert res.ids[0][0] == "a" and res.metadata[0][0] == {}
    empty = Collection.create(tmp_path / "e", spec="f32", dim=D)
    assert empty.search(x[:2], 3).ids == [[None] * 3] * 2


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"vectors": np.ones((2, D + 1), np.float32)}, ValueError, f"{D} columns"),
        ({"vectors": np.full((2, D), np.nan, np.float32)}, ValueError, "NaN"),
        ({"vectors": np.zeros((0, D), np.float32)}, ValueError, "empty"),
        ({"vectors": np.zeros((2, D), np.float32)}, ValueError, "zero row"),
        ({"ids": ["a", "a"]}, ValueError, "duplicate document id 'a'"),
        ({"ids": ["a", 2]}, TypeError, "must be strings, found int"),
        ({"ids": ["doc-0", "new"]}, ValueError, "'doc-0' is already in the collection"),
        ({"ids": ["a"]}, ValueError, r"ids must have one entry per vector \(2\), found 1"),
        ({"texts": ["t"]}, ValueError, "texts must have one entry per vector"),
        ({"texts": ["t", 3]}, TypeError, "texts must be strings or None, found int at 1"),
        ({"metadata": [{"n": "x"}, None]}, ValueError, "field 'n' holds numbers"),
        ({"metadata": [{"n": 1}, {"s": {1, 2}}]}, TypeError, "found set"),
        ({"metadata": [{"n": 1}]}, ValueError, "metadata must have one entry per vector"),
    ],
)
def test_bad_batches_store_nothing(tmp_path, x, kwargs, exc, match):
    col = Collection.create(tmp_path / "c", spec="hd2,rq4", dim=D, flush_rows=100)
    col.add(x[:5], ids=_ids(5), metadata=[{"n": i} for i in range(5)])
    args = {"vectors": x[10:12], "ids": ["p", "q"]} | kwargs
    with pytest.raises(exc, match=match):
        col.add(**args)
    assert len(col) == 5 and col._catalog.pending_count() == 5
    assert col._catalog.fields() == {"n": "number"}


def test_bad_searches_and_settings(tmp_path, x):
    col = Collection.create(tmp_path / "c", spec="hd2,rq4", dim=D)
    col.add(x[:5])
    with pytest.raises(ValueError, match=f"{D} columns"):
        col.search(x[:1, :3], 2)
    with pytest.raises(ValueError, match="zero row"):
        col.search(np.zeros((1, D), np.float32), 2)
    with pytest.raises(ValueError):
        col.search(x[:1], 0)
    with pytest.raises(TypeError):
        col.search(x[:1], 2.5)
    with pytest.raises(FileExistsError, match="not an empty folder"):
        Collection.create(tmp_path / "c", spec="hd2,rq4", dim=D)
    with pytest.raises(ValueError, match="metric must be one of"):
        Collection.create(tmp_path / "d", spec="hd2,rq4", dim=D, metric="dot")
    with pytest.raises(ValueError):
        Collection.create(tmp_path / "d", spec="nonsense9", dim=D)
    with pytest.raises(ValueError):
        Collection.create(tmp_path / "d", spec="f32", dim=0)
    assert not (tmp_path / "d").exists()
    with pytest.raises(FileNotFoundError, match="no collection catalog"):
        Collection.open(tmp_path / "nowhere")


def test_files_a_crashed_writer_left_are_removed_on_open(tmp_path, x):
    path = tmp_path / "c"
    col = Collection.create(path, spec="hd2,rq4", dim=D, flush_rows=50)
    col.add(x[:60], ids=_ids(60))
    named = {f for _, f, _ in col.segments()}
    col.close()
    (path / "segments" / "seg-999-deadbeef.vpi").write_bytes(b"half written")
    Collection.open(path).close()
    assert {p.name for p in (path / "segments").iterdir()} == named
    # a template written but never named (a crash inside the first flush) goes too
    fresh = Collection.create(tmp_path / "f", spec="hd2,rq4", dim=D)
    fresh.close()
    index = Index("hd2,rq4")
    index.train(x[:100])
    index.save(tmp_path / "f" / "template.vpi")
    Collection.open(tmp_path / "f").close()
    assert not (tmp_path / "f" / "template.vpi").exists()


def test_metrics_ip_and_l2_match_an_index(tmp_path, x, q):
    for metric in ("ip", "l2"):
        col = Collection.create(tmp_path / metric, spec="f32", dim=D, metric=metric)
        col.add(x[:200], ids=_ids(200))  # pending: exact scores
        index = Index("f32", metric=metric)
        index.add(x[:200])
        want = index.search(q, 5)
        res = col.search(q, 5)
        assert res.ids == [[f"doc-{j}" for j in row] for row in want.ids]
        np.testing.assert_allclose(res.scores, want.scores, rtol=1e-5, atol=1e-4)
        col.flush()  # the same from a segment
        assert col.search(q, 5).ids == res.ids
    assert vecpress.Collection is Collection


def test_upsert_replaces_documents_in_one_transaction(tmp_path, x, q):
    col = Collection.create(tmp_path / "c", spec="f32", dim=D, flush_rows=100)
    col.add(x[:150], ids=_ids(150), texts=["old"] * 150, metadata=[{"v": 1}] * 150)
    assert len(col.segments()) == 1
    # doc-0 (in the segment) is replaced, "new" is added
    col.upsert(x[200:202], ids=["doc-0", "new"], texts=["fresh", "n"], metadata=[{"v": 2}] * 2)
    assert len(col) == 151
    assert col.get(["doc-0"]) == [{"id": "doc-0", "text": "fresh", "metadata": {"v": 2}}]
    res = col.search(x[200:201], 1)
    assert res.ids == [["doc-0"]] and res.texts == [["fresh"]]
    assert col.search(x[:1], 1).ids[0][0] != "doc-0"  # its old vector is gone
    with pytest.raises(ValueError, match="'doc-1' is already in the collection"):
        col.add(x[:1], ids=["doc-1"])
    with pytest.raises(TypeError, match="upsert needs the ids"):
        col.upsert(x[:1], None)
    with pytest.raises(ValueError, match="field 'v' holds numbers"):
        col.upsert(x[:1], ["doc-2"], metadata=[{"v": "x"}])
    assert col.get(["doc-2"])[0]["metadata"] == {"v": 1}  # a failed upsert replaces nothing


def test_a_refused_batch_leaves_no_segment_file(tmp_path, x):
    """A batch large enough for a segment of its own writes the file before the catalog
    names it; when the catalog refuses the batch (an id already stored), the file goes,
    and nothing of the batch is stored (add and add_encoded)."""
    col = Collection.create(tmp_path / "c", spec="hd2,rq4", dim=D, flush_rows=100)
    col.add(x[:150], ids=_ids(150))
    folder = tmp_path / "c" / "segments"
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == len(col.segments()) == 1
    ids = [*_ids(120, start=150), "doc-149"]  # the last id is stored already
    with pytest.raises(ValueError, match="'doc-149' is already in the collection"):
        col.add(x[150:271], ids=ids)
    path = tmp_path / "template.vpi"
    path.write_bytes(col.template_bytes())
    rows = vecpress.open(path).encode(x[150:271])
    with pytest.raises(ValueError, match="'doc-149' is already in the collection"):
        col.add_encoded(rows, ids)
    assert sorted(p.name for p in folder.iterdir()) == files
    assert len(col) == 150 and col.get(["doc-150"]) == [None]


def test_two_writers_share_one_codec(tmp_path, x, q):
    """A second handle (as another process would have) sees the codec the first one
    trained: its flush writes a segment of the same template, never a new one (``center``
    learns the mean: a codec trained on other rows would differ)."""
    path = tmp_path / "c"
    a = Collection.create(path, spec="center,hd2,rq4", dim=D, flush_rows=100)
    b = Collection.open(path)
    a.add(x[:100], ids=_ids(100))  # trains the codec
    template = (path / "template.vpi").read_bytes()
    b.add(x[100:200], ids=_ids(100, 100))
    assert (path / "template.vpi").read_bytes() == template
    assert [r for _, _, r in b.segments()] == [100, 100]
    index = Index("center,hd2,rq4", metric="cosine")
    index.add(x[:100])
    index.add(x[100:200])
    want = index.search(q, 5)
    assert a.search(q, 5).ids == [[f"doc-{j}" for j in row] for row in want.ids]


def test_verify_names_a_damaged_segment_or_catalog(tmp_path, x):
    import sqlite3

    path = tmp_path / "c"
    col = Collection.create(path, spec="hd2,rq4", dim=D, flush_rows=100)
    col.add(x[:120], ids=_ids(120), texts=["t"] * 120)
    assert col.verify() is col
    ((_, file, _),) = col.segments()
    seg = path / "segments" / file
    blob = bytearray(seg.read_bytes())
    blob[-200] ^= 0x01  # a byte of the last data section's last block
    seg.write_bytes(bytes(blob))
    with pytest.raises(vecpress.FormatError, match=file):
        col.verify()
    seg.write_bytes(bytes(blob[:-200]) + bytes([blob[-200] ^ 0x01]) + bytes(blob[-199:]))
    col.verify()
    con = sqlite3.connect(path / "catalog.sqlite")
    con.execute("UPDATE docs SET text = 'other' WHERE id = 'doc-5'")
    con.commit()
    damaged = r"catalog\.sqlite: document row \d+ fails its checksum"
    with pytest.raises(vecpress.FormatError, match=damaged):
        col.verify()


def test_compact_merges_small_segments_and_drops_deleted_rows(tmp_path, x, q):
    col = Collection.create(tmp_path / "c", spec="hd2,rq4", dim=D, seed=2, flush_rows=100)
    for s in range(0, 600, 100):
        col.add(x[s : s + 100], ids=_ids(100, s), metadata=[{"n": i} for i in range(s, s + 100)])
    col.delete([*_ids(50, 0), "doc-250"])
    before = col.search(q, 10)
    filtered = col.search(q, 10, filter={"n": {"$lt": 300}})
    old_files = {f for _, f, _ in col.segments()}
    report = col.compact()
    assert report == {"merged": 6, "dropped": 51, "segments": 1}
    assert [r for _, _, r in col.segments()] == [549] and len(col) == 549
    assert {p.name for p in (tmp_path / "c" / "segments").iterdir()}.isdisjoint(old_files)
    after = col.search(q, 10)  # the same codes: the same answers
    assert after.ids == before.ids and after.metadata == before.metadata
    np.testing.assert_array_equal(after.scores, before.scores)
    assert col.search(q, 10, filter={"n": {"$lt": 300}}).ids == filtered.ids
    assert col.compact() == {"merged": 0, "dropped": 0, "segments": 1}
    reopened = Collection.open(tmp_path / "c")
    assert reopened.search(q, 10).ids == before.ids
    col.delete(_ids(550, 50))  # everything: compaction leaves no segment
    assert col.compact()["segments"] == 0 and len(col) == 0
    assert col.search(q, 3).ids[0] == [None] * 3


def test_compact_ivf_segments_keep_their_lists(tmp_path, x, q):
    col = Collection.create(tmp_path / "c", spec="hd2,rq4", dim=D, ivf=8, flush_rows=200)
    for s in range(0, 600, 200):
        col.add(x[s : s + 200], ids=_ids(200, s))
    col.delete(["doc-3", "doc-401"])
    before = col.search(q, 10, nprobe=3)
    assert col.compact(min_rows=1)["merged"] == 2  # only the segments with deletions
    assert sorted(r for _, _, r in col.segments()) == [200, 398]
    assert col.search(q, 10, nprobe=3).ids == before.ids


def test_a_reader_of_an_older_snapshot_survives_a_compaction(tmp_path, x, q):
    path = tmp_path / "c"
    writer = Collection.create(path, spec="hd2,rq4", dim=D, flush_rows=100)
    for s in range(0, 300, 100):
        writer.add(x[s : s + 100], ids=_ids(100, s))
    reader = Collection.open(path)
    reader.search(q, 5)  # the reader holds the old segments open now
    writer.delete(["doc-0"])
    writer.compact()
    got = reader.search(q, 5)  # the old files are gone; a fresh snapshot is read
    assert all("doc-0" not in row for row in got.ids) and None not in got.ids[0]
    assert got.ids == Collection.open(path).search(q, 5).ids


def test_a_search_whose_snapshot_loses_its_files_reads_a_fresh_one(tmp_path, x, q, monkeypatch):
    """The race itself: a reader's snapshot names segments, a compaction commits and
    removes them before the reader opens their files; the reader reads again."""
    path = tmp_path / "c"
    writer = Collection.create(path, spec="hd2,rq4", dim=D, flush_rows=100)
    for s in range(0, 300, 100):
        writer.add(x[s : s + 100], ids=_ids(100, s))
    writer.delete(["doc-0"])
    reader = Collection.open(path)
    opened = Collection._segment
    raced = []

    def compact_first(self, file):
        if not raced:  # inside the reader's snapshot, before it opens a file
            raced.append(writer.compact())
        return opened(self, file)

    monkeypatch.setattr(Collection, "_segment", compact_first)
    got = reader.search(q, 5)
    assert raced and raced[0]["merged"] == 3
    monkeypatch.undo()
    assert got.ids == Collection.open(path).search(q, 5).ids


def test_train_on_a_sample_before_any_document(tmp_path, x, q):
    col = Collection.create(tmp_path / "c", spec="hd2,rq4", dim=D, seed=1, flush_rows=100)
    col.train(x)  # the codec of an Index trained on the same sample
    col.add(x[:300], ids=_ids(300))  # 300 >= flush_rows: straight to a segment
    assert [r for _, _, r in col.segments()] == [300]
    index = Index("hd2,rq4", metric="cosine", seed=1)
    index.train(x)
    index.add(x[:300])
    assert col.search(q, 5).ids == [[f"doc-{j}" for j in row] for row in index.search(q, 5).ids]
    with pytest.raises(ValueError, match="trained already"):
        col.train(x)
    assert Collection.open(tmp_path / "c").search(q, 5).ids == col.search(q, 5).ids
    fresh = Collection.create(tmp_path / "d", spec="hd2,rq4", dim=D)
    with pytest.raises(ValueError, match="24 columns"):
        fresh.train(x[:, :16])


def test_spec_auto_lets_the_advisor_choose_on_the_training_vectors(tmp_path, x, q):
    big = gaussian(np.random.default_rng(7), 2000, D, offset=0.3)
    col = Collection.create(tmp_path / "c", spec="auto", dim=D, target_recall=0.9,
                            flush_rows=1500, advise_seconds=60)  # fmt: skip
    assert col.search(q, 3).ids[0] == [None] * 3  # nothing stored, nothing chosen yet
    col.add(big[:1000], ids=_ids(1000))  # pending: no choice yet
    assert col._catalog.settings["spec"] == "auto"
    col.add(big[1000:], ids=_ids(1000, 1000))  # reaches flush_rows: the advisor chooses
    s = Collection.open(tmp_path / "c")._catalog.settings
    assert s["spec"] != "auto" and col.spec == s["spec"] and s["ivf"] is None
    assert s["advice"]["met"] and s["advice"]["recall_at_k"] >= 0.9
    exact = _exact_top(big, q, 10)
    res = col.search(q, 10)  # with the advised re-ranking depth, if any
    hits = np.mean(
        [len(set(r) & {f"doc-{j}" for j in e}) / 10 for r, e in zip(res.ids, exact, strict=True)]
    )
    assert hits >= 0.8


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"spec": "auto"}, "exactly one"),
        ({"spec": "auto", "target_recall": 0.9, "budget_bytes": 64}, "exactly one"),
        ({"spec": "auto", "target_recall": 1.5}, "target_recall"),
        ({"spec": "auto", "target_recall": 0.9, "ivf": 16}, "flat"),
        ({"spec": "hd2,rq4", "target_recall": 0.9}, 'spec="auto"'),
    ],
)
def test_spec_auto_arguments_are_checked(tmp_path, kw, words):
    with pytest.raises(ValueError, match=words):
        Collection.create(tmp_path / "c", dim=D, **kw)
    assert not (tmp_path / "c").exists()


def test_spec_auto_needs_enough_training_vectors(tmp_path, x):
    col = Collection.create(tmp_path / "c", spec="auto", dim=D, budget_bytes=16)
    with pytest.raises(ValueError, match="at least 500"):
        col.train(x[:100])
    assert "template" not in col._catalog.settings


@pytest.mark.parametrize("spec, kw, rows", [("pq8x8", {}, 100), ("hd2,rq4", {"ivf": 500}, 300)])
def test_an_add_whose_codec_cannot_train_stores_nothing(tmp_path, x, spec, kw, rows):
    """The first flush trains the codec: before the batch is committed, so a codec that
    cannot train on so few rows (256 centroids, 500 lists) fails the add whole."""
    col = Collection.create(tmp_path / "c", spec=spec, dim=D, flush_rows=rows, **kw)
    with pytest.raises(ValueError):
        col.add(x[:rows], ids=_ids(rows))
    assert len(col) == 0 and col.segments() == []
    assert len(Collection.open(tmp_path / "c")) == 0


def test_delete_counts_a_repeated_id_once(tmp_path, x):
    col = Collection.create(tmp_path / "c", spec="f32", dim=D)
    col.add(x[:5], ids=_ids(5))
    assert col.delete(["doc-1", "doc-1", "doc-9"]) == 1 and len(col) == 4
    with pytest.raises(TypeError, match="strings"):
        col.delete(["doc-2", 3])


def test_vectors_come_back_from_a_float_tier_and_the_pending_table(tmp_path, x):
    col = Collection.create(tmp_path / "c", spec="hd2,rq4", dim=D, rerank_spec="f32",
                            flush_rows=200)  # fmt: skip
    col.add(x[:250], ids=_ids(250))  # a segment of 250
    col.add(x[250:300], ids=_ids(50, 250))  # pending
    col.delete(["doc-3"])
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    keep = [i for i in range(300) if i != 3]
    np.testing.assert_allclose(col.vectors(), unit[keep], atol=1e-6)
    codes_only = Collection.create(tmp_path / "d", spec="hd2,rq4", dim=D, flush_rows=100)
    codes_only.add(x[:100], ids=_ids(100))
    with pytest.raises(ValueError, match="float tier"):
        codes_only.vectors()


@pytest.mark.parametrize("kw", [{}, {"rerank_spec": "f16"}, {"ivf": 4}])
def test_index_reconstruct(x, kw):
    index = Index("hd2,rq8", "ip", **kw)
    index.add(x, ids=np.arange(600) * 2)
    got = index.reconstruct([10, 4])
    assert got.shape == (2, D) and got.dtype == np.float32
    np.testing.assert_allclose(got, x[[5, 2]], atol=0.05 * np.abs(x).max())
    with pytest.raises(ValueError, match=r"not stored: \[3\]"):
        index.reconstruct([4, 3])


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_segment_fails_the_search_naming_it(tmp_path, x, q, damage):
    path = tmp_path / "c"
    with Collection.create(path, spec="hd2,rq4", dim=D, flush_rows=300) as col:
        col.add(x, ids=_ids(600))
    ((_, file, _), *_) = Collection.open(path).segments()
    seg = path / "segments" / file
    blob = bytearray(seg.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0x04  # inside the codes
    else:
        blob = blob[: len(blob) // 2]
    seg.write_bytes(bytes(blob))
    with pytest.raises(vecpress.FormatError, match=file):
        Collection.open(path).search(q, 5)


def test_a_truncated_catalog_is_an_error_naming_it(tmp_path, x, q):
    import sqlite3

    path = tmp_path / "c"
    with Collection.create(path, spec="hd2,rq4", dim=D, flush_rows=300) as col:
        col.add(x, ids=_ids(600), texts=["some text"] * 600)
    con = sqlite3.connect(path / "catalog.sqlite")  # fold the WAL into the file
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    catalog = path / "catalog.sqlite"
    catalog.write_bytes(catalog.read_bytes()[: catalog.stat().st_size // 2])
    with pytest.raises(vecpress.FormatError, match=r"catalog\.sqlite: not a readable"):
        Collection.open(path).search(q, 5)


def test_objects_opened_with_share_map_each_segment_once(tmp_path, x, q):
    """``open(share=)``: readers of one folder use the same memory-mapped segments (one
    Index per file), answer as the owner does, follow its compactions, and closing one
    leaves the others working."""
    owner = Collection.create(tmp_path / "c", spec="hd2,rq4", dim=D, flush_rows=200)
    owner.add(x[:400], ids=_ids(400))  # two segments
    a = Collection.open(tmp_path / "c", share=owner)
    b = Collection.open(tmp_path / "c", share=owner)
    want = owner.search(q, 10)
    assert a.search(q, 10).ids == want.ids and b.search(q, 10).ids == want.ids
    files = sorted(f for _, f, _ in owner.segments())
    assert sorted(a._segments) == files and a._segments is owner._segments
    owner.delete(["doc-3"])
    owner.compact(min_rows=10_000)  # the two segments become one
    assert "doc-3" not in a.search(q, 10).ids[0] and len(owner.segments()) == 1
    assert sorted(b._segments) == [f for _, f, _ in owner.segments()]
    a.close()
    assert b.search(q, 10).ids == owner.search(q, 10).ids
    with pytest.raises(ValueError, match="share= must be an open Collection of"):
        Collection.open(tmp_path / "c", share=Collection.create(tmp_path / "d", spec="f32", dim=2))
