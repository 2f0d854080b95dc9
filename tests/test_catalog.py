"""A collection's SQLite catalog (:mod:`vecpress.collection.catalog`): transactions that
store all of a batch or nothing, ids never reused, and damaged or foreign files named."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from vecpress import FormatError
from vecpress.collection.catalog import FORMAT, Catalog, check_ids, row_crc


@pytest.fixture
def cat(tmp_path):
    c = Catalog.create(tmp_path / "catalog.sqlite", {"spec": "hd2,rq4", "dim": 8})
    yield c
    c.close()


def _add(cat, file, ids, fields=None):
    pks = cat.next_pks(len(ids))
    texts, metas = [f"text {i}" for i in ids], ["{}"] * len(ids)
    cat.add_documents(pks, ids, texts, metas, fields or {}, segment=file)
    return pks


def test_create_open_and_settings(tmp_path, cat):
    assert cat.settings == {"format": FORMAT, "spec": "hd2,rq4", "dim": 8}
    mode = sqlite3.connect(cat.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    with pytest.raises(FileExistsError, match="already exists"):
        Catalog.create(cat.path, {})
    with pytest.raises(FileNotFoundError, match="no collection catalog"):
        Catalog.open(tmp_path / "missing.sqlite")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Catalog.create(tmp_path / "no" / "catalog.sqlite", {})
    with pytest.raises(ValueError):  # settings must be JSON values
        Catalog.create(tmp_path / "nan.sqlite", {"x": float("nan")})
    assert not (tmp_path / "nan.sqlite").exists()


def test_segments_documents_and_fields(cat):
    pks = _add(cat, "s1.vpi", ["a", "b", "c"], {"year": "number"})
    assert pks.tolist() == [1, 2, 3]
    more = _add(cat, "s2.vpi", ["d"])
    assert more.tolist() == [4]
    assert cat.segments() == [(1, "s1.vpi", 3), (2, "s2.vpi", 1)]
    assert cat.fields() == {"year": "number"}
    assert cat.count() == 4
    got = cat.get(["d", "x", "a"])
    assert got[1] is None and (got[0].pk, got[0].seg, got[0].text) == (4, 2, "text d")
    assert [d.id for d in cat.docs_of_pks([3, 99, 1])[::2]] == ["c", "a"]
    assert cat.docs_of_pks([99]) == [None]


def test_vector_ids_are_never_reused(cat):
    _add(cat, "s1.vpi", ["a", "b"])
    assert cat.delete(["b", "zz"]) == 1  # ids not in the collection are skipped
    assert cat.get(["b"]) == [None]
    assert _add(cat, "s2.vpi", ["b"]).tolist() == [3]  # not 2: segment 1 still holds 2
    assert cat.count() == 2


def test_a_failed_commit_stores_nothing(cat):
    _add(cat, "s1.vpi", ["a"])
    before = (cat.segments(), cat.count(), cat.fields())
    with pytest.raises(ValueError, match="document id 'a' is already in the collection"):
        _add(cat, "s2.vpi", ["new", "a"], {"lang": "string"})
    with pytest.raises(ValueError, match="duplicate document id 'x' at positions 0 and 2"):
        _add(cat, "s2.vpi", ["x", "y", "x"])
    with pytest.raises(TypeError, match="document ids must be strings, found int at 1"):
        _add(cat, "s2.vpi", ["x", 3])
    with pytest.raises(ValueError, match="1 to 1024 characters, found 0 at 0"):
        _add(cat, "s2.vpi", [""])
    with pytest.raises(ValueError, match="as many pks, ids, texts and metadata"):
        cat.add_documents(cat.next_pks(2), ["p", "q"], ["t"], ["{}", "{}"], {}, segment="s")
    with pytest.raises(FormatError, match="refused a commit"):  # a segment named twice
        cat.add_documents(cat.next_pks(1), ["z"], [None], ["{}"], {}, segment="s1.vpi")
    with pytest.raises(FormatError, match="refused a commit"):  # a vector id used twice
        cat.add_documents(cat.get(["a"])[0].pk, ["z"], [None], ["{}"], {}, segment="s3.vpi")
    with pytest.raises(ValueError, match="one segment file or to the pending vectors"):
        cat.add_documents(cat.next_pks(1), ["z"], [None], ["{}"], {})
    with pytest.raises(ValueError, match=r"float32\[1, d\], found \(2, 8\)"):
        cat.add_documents(cat.next_pks(1), ["z"], [None], ["{}"], {}, vectors=np.ones((2, 8)))
    assert (cat.segments(), cat.count(), cat.fields()) == before


def test_check_ids_rejects_what_is_not_a_list_of_strings():
    for bad in ("abc", b"abc", 3, None):
        with pytest.raises(TypeError, match="ids must be a list of strings"):
            check_ids(bad)
    assert check_ids(iter(["a"])) == ["a"]
    with pytest.raises(ValueError, match="found 1025"):
        check_ids(["x" * 1025])


def test_orphans_are_files_no_segment_names(tmp_path, cat):
    folder = tmp_path / "segments"
    folder.mkdir()
    for name in ("s1.vpi", "s2.vpi", "s2.vpi.tmp"):
        (folder / name).write_bytes(b"x")
    _add(cat, "s1.vpi", ["a"])
    assert [p.name for p in cat.orphans(folder)] == ["s2.vpi", "s2.vpi.tmp"]
    assert cat.orphans(tmp_path / "none") == []


def test_foreign_and_damaged_files_are_format_errors(tmp_path, cat):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(FormatError, match=r"junk\.sqlite: not a readable vecpress catalog"):
        Catalog.open(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(FormatError, match=r"other\.sqlite: not a readable vecpress catalog"):
        Catalog.open(other)
    con = sqlite3.connect(cat.path)
    con.execute("UPDATE settings SET value = '99' WHERE key = 'format'")
    con.commit()
    with pytest.raises(
        FormatError, match=f"catalog format 99, this vecpress reads format {FORMAT}"
    ):
        Catalog.open(cat.path)
    con.execute(f"UPDATE settings SET value = '{FORMAT}' WHERE key = 'format'")
    con.commit()
    _add(cat, "s1.vpi", ["a", "b"])
    # a changed text (what a flipped bit in a record does): its checksum no longer holds
    con.execute("UPDATE docs SET text = 'text B' WHERE id = 'b'")
    con.commit()
    assert cat.get(["a"])[0].text == "text a"
    with pytest.raises(FormatError, match="document row 2 fails its checksum"):
        cat.get(["b"])
    with pytest.raises(FormatError, match="fails its checksum"):
        cat.docs_of_pks([2])


def test_flipped_bytes_in_the_file_never_read_back_as_other_data(tmp_path):
    """2,000 bytes of a small catalog flipped, one at a time on a copy: a read by id gives
    the original documents, or ``None`` for some (a damaged page of the id index hides
    them: SQLite pages carry no checksum), or raises FormatError -- never other data;
    and wherever a read differs from the original, ``verify`` raises."""
    path = tmp_path / "c.sqlite"
    cat = Catalog.create(path, {"spec": "f32"})
    ids = [f"doc-{i}" for i in range(20)]
    pks = cat.next_pks(len(ids))
    texts, metas = [f"t{i}" for i in range(20)], ['{"n":1}'] * 20
    cat.add_documents(pks, ids, texts, metas, {}, segment="s.vpi")
    want = cat.get(ids)
    cat.close()
    con = sqlite3.connect(path)  # fold the WAL into the file
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    blob = path.read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"same": 0, "error": 0, "hidden": 0}
    copy = tmp_path / "flipped.sqlite"
    for pos in rng.choice(len(blob), 2000, replace=False):
        bad = bytearray(blob)
        bad[pos] ^= 0x5A
        copy.write_bytes(bytes(bad))
        for side in ("-wal", "-shm"):
            (tmp_path / f"flipped.sqlite{side}").unlink(missing_ok=True)
        try:
            c = Catalog.open(copy)
            got = c.get(ids)
        except FormatError:
            outcomes["error"] += 1
            continue
        if got == want:
            outcomes["same"] += 1
        else:
            assert all(g is None or g == w for g, w in zip(got, want, strict=True)), pos
            with pytest.raises(FormatError):
                c.verify()
            outcomes["hidden"] += 1
        c.close()
    assert outcomes["error"] > 0 and outcomes["same"] > 0, outcomes


def test_pending_vectors_until_a_segment_takes_them(cat):
    """Small batches keep their vectors in the catalog; ``seal`` moves them to a segment
    in one transaction (with settings); a deleted document's pending vector goes too."""
    x = np.arange(24, dtype=np.float32).reshape(3, 8)
    pks = cat.next_pks(3)
    cat.add_documents(pks, ["a", "b", "c"], ["ta", "tb", "tc"], ["{}"] * 3, {}, vectors=x)
    got_pks, got = cat.pending()
    assert got_pks.tolist() == pks.tolist() and np.array_equal(got, x)
    assert cat.get(["a"])[0].seg is None and cat.segments() == []
    cat.delete(["b"])
    live, vecs = cat.pending()
    assert live.tolist() == [1, 3] and np.array_equal(vecs, x[[0, 2]])
    with pytest.raises(ValueError, match="pending vectors of stored documents only"):
        cat.seal("s1.vpi", pks)  # b is gone: nothing happens
    assert cat.segments() == [] and len(cat.pending()[0]) == 2
    cat.seal("s1.vpi", live, {"template": "template.vpi"})
    assert cat.pending()[0].tolist() == [] and cat.segments() == [(1, "s1.vpi", 2)]
    assert [d.seg for d in cat.get(["a", "c"])] == [1, 1] and cat.live_counts() == {1: 2}
    assert cat.settings["template"] == "template.vpi"
    cat.close()
    again = Catalog.open(cat.path)
    assert again.settings["template"] == "template.vpi" and again.get(["c"])[0].text == "tc"
    again.verify()
    again.close()


def test_row_crc_covers_every_column():
    base = (1, "a", 1, "t", "{}")
    for i, other in enumerate((2, "b", 2, None, '{"x":1}')):
        changed = list(base)
        changed[i] = other
        assert row_crc(*changed) != row_crc(*base)
