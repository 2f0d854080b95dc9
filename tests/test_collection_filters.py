"""Filtered search on a collection: the filter's allowlist reaches every segment's scan
and the pending vectors, so a filtered query returns its k best *matching* documents
(never an unfiltered top k filtered afterwards); bad filters are refused."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from _util import clustered
from vecpress import FormatError
from vecpress.collection import Collection

D = 16
N = 900


@pytest.fixture(scope="module")
def data():
    x = clustered(N, D, seed=11)
    q = clustered(6, D, seed=12)
    rng = np.random.default_rng(5)
    meta = [
        {"year": int(2000 + rng.integers(0, 25)), "lang": ["en", "de", "fr"][i % 3],
         "rare": bool(i % 97 == 0)}
        for i in range(N)
    ]  # fmt: skip
    return x, q, meta


def _exact(x, q, rows, k):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    s = qn @ xn[rows].T
    return rows[np.argsort(-s, axis=1, kind="stable")[:, :k]]


def _collection(tmp_path, data, spec="f32", **kw):
    """Two segments, some pending documents, some deleted ones."""
    x, _, meta = data
    col = Collection.create(tmp_path / "c", spec=spec, dim=D, flush_rows=400, **kw)
    ids = [f"d{i}" for i in range(N)]
    col.add(x[:400], ids=ids[:400], metadata=meta[:400])  # a segment
    col.add(x[400:800], ids=ids[400:800], metadata=meta[400:800])  # another
    col.add(x[800:], ids=ids[800:], metadata=meta[800:])  # pending
    gone = list(range(0, N, 10))
    col.delete([ids[i] for i in gone])
    live = np.setdiff1d(np.arange(N), gone)
    return col, live


FILTERS = [
    ({"lang": "en"}, lambda m: m["lang"] == "en"),
    ({"year": {"$gte": 2010, "$lt": 2013}}, lambda m: 2010 <= m["year"] < 2013),
    ({"$or": [{"rare": True}, {"year": 2024}]}, lambda m: m["rare"] or m["year"] == 2024),
    ({"lang": {"$nin": ["en", "de"]}, "year": {"$ne": 2001}},
     lambda m: m["lang"] == "fr" and m["year"] != 2001),
    ({"rare": True}, lambda m: m["rare"]),
]  # fmt: skip


@pytest.mark.parametrize("where, match", FILTERS)
def test_filtered_search_returns_the_best_matching_documents(tmp_path, data, where, match):
    x, q, meta = data
    col, live = _collection(tmp_path, data)
    rows = np.array([i for i in live if match(meta[i])])
    k = 10
    res = col.search(q, k, filter=where)
    want = _exact(x, q, rows, k)
    for i in range(q.shape[0]):
        got = res.ids[i]
        assert got[: len(want[i])] == [f"d{j}" for j in want[i]]
        assert got[len(want[i]) :] == [None] * (k - len(want[i]))
        assert all(match(m) for m in res.metadata[i] if m is not None)


def test_a_selective_filter_still_fills_k_on_a_compressed_ivf_collection(tmp_path, data):
    """The point of filtering inside the scan: 1 % of the documents match, and every
    query still gets its 9 matching documents, the exact best ones up to the codec."""
    x, q, meta = data
    col, live = _collection(tmp_path, data, spec="hd2,rq8", ivf=4)
    rows = np.array([i for i in live if meta[i]["rare"]])
    res = col.search(q, 9, filter={"rare": True}, nprobe=1)
    want = _exact(x, q, rows, 9)
    for i in range(q.shape[0]):
        assert sorted(res.ids[i]) == sorted(f"d{j}" for j in want[i][: len(rows)])


def test_filters_with_re_ranking(tmp_path, data):
    x, q, meta = data
    col, live = _collection(tmp_path, data, spec="hd2,rq4", rerank_spec="f32")
    rows = np.array([i for i in live if meta[i]["lang"] == "de"])
    res = col.search(q, 5, filter={"lang": "de"}, rerank=200)
    want = _exact(x, q, rows, 5)
    assert res.ids == [[f"d{j}" for j in w] for w in want]
    auto = col.search(q, 5, filter={"lang": "de"}, rerank="auto")
    assert auto.ids == res.ids


@pytest.mark.parametrize(
    "where, error, words",
    [
        ({"lang": {"$regex": "e"}}, ValueError, "unknown operator"),
        ({"colour": "red"}, ValueError, "unknown field 'colour'"),
        ({"year": {"$gt": "x"}}, ValueError, "holds numbers"),
        ({"$not": {"lang": "en"}}, ValueError, "unknown operator"),
        (["lang", "en"], TypeError, "must be a dict"),
        ({"year": {"$in": []}}, ValueError, "non-empty list"),
    ],
)
def test_bad_filters_are_refused_and_change_nothing(tmp_path, data, where, error, words):
    _, q, _ = data
    col, _ = _collection(tmp_path, data)
    before = len(col), col.segments()
    with pytest.raises(error, match=words):
        col.search(q, 3, filter=where)
    assert (len(col), col.segments()) == before
    col.search(q, 3, filter={"lang": "en"})  # the collection still answers


def test_search_arguments_are_checked(tmp_path, data):
    _, q, _ = data
    col, _ = _collection(tmp_path, data)
    with pytest.raises(ValueError, match="second tier"):
        col.search(q, 3, rerank=10)
    with pytest.raises(ValueError, match="IVF"):
        col.search(q, 3, nprobe=2)


def test_an_indexed_field_serves_the_filter_with_the_same_answers(tmp_path, data):
    _, q, _ = data
    col, _ = _collection(tmp_path, data)
    where = {"year": {"$gte": 2020}}
    before = col.search(q, 8, filter=where)
    assert col.create_index("year") and not col.create_index("year")
    assert col.indexed_fields() == ["year"]
    after = col.search(q, 8, filter=where)
    assert after.ids == before.ids
    con = sqlite3.connect(tmp_path / "c" / "catalog.sqlite")
    plan = con.execute(
        "EXPLAIN QUERY PLAN SELECT pk FROM docs WHERE json_extract(meta, '$.\"year\"') >= 2020"
    ).fetchall()
    con.close()
    assert any("field:year" in str(row) for row in plan), plan
    with pytest.raises(ValueError, match="no metadata field 'colour'"):
        col.create_index("colour")
    reopened = Collection.open(tmp_path / "c")
    assert reopened.indexed_fields() == ["year"]


@pytest.mark.parametrize("new_seg", ["other", "NULL", "999"])
def test_a_damaged_segment_number_is_an_error_not_a_missing_document(tmp_path, data, new_seg):
    """A document whose ``seg`` was changed in the file (a bit flip SQLite does not
    see) would vanish from filtered searches; it is an error naming the catalog."""
    _, q, meta = data
    col, _ = _collection(tmp_path, data)
    segs = [s for s, _, _ in col.segments()]
    value = {"other": str(segs[1]), "NULL": "NULL", "999": "999"}[new_seg]
    con = sqlite3.connect(tmp_path / "c" / "catalog.sqlite")
    con.execute(f"UPDATE docs SET seg = {value} WHERE id = 'd1'")  # seg: segs[0]
    con.commit()
    con.close()
    where = {"lang": meta[1]["lang"]}
    with pytest.raises(FormatError, match=r"catalog\.sqlite"):
        col.search(q, 5, filter=where)
    with pytest.raises(FormatError, match=r"catalog\.sqlite: document row \d+ fails its checksum"):
        col.get(["d1"])
    if new_seg == "other":
        with pytest.raises(FormatError, match="fails its checksum"):
            col.compact(min_rows=10**6)


def test_live_counts_follow_every_write_and_verify_checks_them(tmp_path, data):
    x, _, meta = data
    col, _ = _collection(tmp_path, data)
    col.upsert(x[:3], ["d1", "d2", "new"], metadata=meta[:3])  # replaces two stored docs
    col.compact(min_rows=1)
    col.delete(["d401", "d402"])
    col.verify()  # the kept counts equal the documents' own
    counts = col._catalog.live_counts()
    assert sum(counts.values()) + col._catalog.pending_count() == len(col)
    con = sqlite3.connect(tmp_path / "c" / "catalog.sqlite")
    con.execute("UPDATE segments SET live = live - 1 WHERE seg = (SELECT min(seg) FROM segments)")
    con.commit()
    con.close()
    with pytest.raises(FormatError, match=r"catalog\.sqlite: segment \d+ counts"):
        col.verify()


def test_a_kept_allowlist_never_outlives_a_change(tmp_path, data):
    """Filters' allowlists are kept between searches; a commit of this collection
    object or of another (another process, as SQLite's data_version tells) drops them."""
    x, q, _ = data
    col, _ = _collection(tmp_path, data)
    other = Collection.open(tmp_path / "c")
    where = {"lang": "de"}
    first = col.search(q, 5, filter=where)
    assert col.search(q, 5, filter=where).ids == first.ids  # answered from the kept list
    top = first.ids[0][0]
    other.delete([top])  # another connection's commit
    assert top not in col.search(q, 5, filter=where).ids[0]
    col.upsert(x[:1], [top], metadata=[{"lang": "de", "year": 1, "rare": False}])  # our own
    again = col.search(x[:1], 1, filter=where)
    assert again.ids[0][0] == top


def test_a_damaged_pending_vector_is_an_error(tmp_path, data):
    _, q, _ = data
    col, _ = _collection(tmp_path, data)  # 100 pending documents
    con = sqlite3.connect(tmp_path / "c" / "catalog.sqlite")
    pk, vec = con.execute("SELECT pk, vec FROM pending ORDER BY pk LIMIT 1").fetchone()
    flipped = bytearray(vec)
    flipped[5] ^= 0x10
    con.execute("UPDATE pending SET vec = ? WHERE pk = ?", (bytes(flipped), pk))
    con.commit()
    con.close()
    with pytest.raises(
        FormatError, match=rf"catalog\.sqlite: the pending vector of document row {pk}"
    ):
        col.search(q, 3)
