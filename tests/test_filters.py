"""The metadata filter language (:mod:`vecpress.collection.filters`): compiled SQL run on
SQLite against a Python evaluation of the documented semantics, and every kind of bad
filter rejected with a message naming it."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from vecpress.collection.filters import (
    MAX_DEPTH,
    MAX_VALUES,
    check_field_name,
    compile_filter,
    field_expr,
    value_kind,
)

FIELDS = {"year": "number", "score": "number", "lang": "string", "flag": "bool"}
LANGS = ["en", "de", "fr", "", "é", "zh-中文", "it's", 'say "hi"']


def _docs(rng: np.random.Generator, n: int = 400) -> list[dict]:
    """Metadata with missing fields, None, ints and floats, empty and non-ASCII strings."""
    docs = []
    for _ in range(n):
        meta: dict = {}
        if rng.random() < 0.85:
            meta["year"] = int(rng.integers(2015, 2026))
        if rng.random() < 0.8:
            meta["score"] = float(np.round(rng.normal(), 2)) if rng.random() < 0.7 else None
        if rng.random() < 0.8:
            meta["lang"] = LANGS[int(rng.integers(len(LANGS)))]
        if rng.random() < 0.8:
            meta["flag"] = bool(rng.random() < 0.5)
        docs.append(meta)
    return docs


def _table(docs: list[dict]) -> sqlite3.Connection:
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE docs (pk INTEGER PRIMARY KEY, meta TEXT)")
    rows = [(i, json.dumps(m)) for i, m in enumerate(docs)]
    con.executemany("INSERT INTO docs VALUES (?, ?)", rows)
    return con


def _select(con: sqlite3.Connection, where) -> set[int]:
    sql, params = compile_filter(where, FIELDS)
    return {r[0] for r in con.execute(f"SELECT pk FROM docs WHERE {sql}", params)}


def _holds(meta: dict, where: dict) -> bool:
    """The documented semantics, evaluated in Python."""
    ok = True
    for key, value in where.items():
        if key == "$and":
            ok &= all(_holds(meta, f) for f in value)
        elif key == "$or":
            ok &= any(_holds(meta, f) for f in value)
        else:
            cond = value if isinstance(value, dict) else {"$eq": value}
            x = meta.get(key)
            for op, v in cond.items():
                if op == "$ne":
                    ok &= x is None or x != v
                elif op == "$nin":
                    ok &= x is None or x not in v
                elif x is None:
                    ok = False
                elif op == "$eq":
                    ok &= x == v
                elif op == "$in":
                    ok &= x in v
                else:  # strings order by code point, as UTF-8 bytes do
                    ok &= {"$gt": x > v, "$gte": x >= v, "$lt": x < v, "$lte": x <= v}[op]
    return ok


def _random_filter(rng: np.random.Generator, depth: int = 0) -> dict:
    if depth < 3 and rng.random() < 0.35:
        op = "$and" if rng.random() < 0.5 else "$or"
        return {op: [_random_filter(rng, depth + 1) for _ in range(int(rng.integers(1, 4)))]}
    out = {}
    for _ in range(int(rng.integers(1, 3))):
        field = ["year", "score", "lang", "flag"][int(rng.integers(4))]
        values = {
            "year": lambda: int(rng.integers(2014, 2027)),
            "score": lambda: float(np.round(rng.normal(), 2)),
            "lang": lambda: LANGS[int(rng.integers(len(LANGS)))],
            "flag": lambda: bool(rng.random() < 0.5),
        }[field]
        ops = ["$eq", "$ne", "$in", "$nin"]
        ops += [] if field == "flag" else ["$gt", "$gte", "$lt", "$lte"]
        op = ops[int(rng.integers(len(ops)))]
        if op in ("$in", "$nin"):
            cond = {op: [values() for _ in range(int(rng.integers(1, 4)))]}
        elif op == "$eq" and rng.random() < 0.5:
            cond = values()  # the short form
        else:
            cond = {op: values()}
        out[field] = cond
    return out


def test_compiled_filters_select_what_the_semantics_say():
    """600 random filters (nested $and/$or, every operator, the short equality form) on
    400 documents with missing fields and None values: SQLite returns exactly the
    documents the Python evaluation of the documented semantics accepts."""
    rng = np.random.default_rng(0)
    docs = _docs(rng)
    con = _table(docs)
    matched = 0
    for _ in range(600):
        where = _random_filter(rng)
        want = {i for i, m in enumerate(docs) if _holds(m, where)}
        assert _select(con, where) == want, where
        matched += len(want)
    assert 0 < matched < 600 * len(docs)  # the filters both select and reject


def test_every_operator_on_a_known_case():
    docs = [{"year": 2020, "lang": "en", "flag": True}, {"year": 2024.0, "lang": "de"}, {}]
    con = _table(docs)
    assert _select(con, {"year": 2024}) == {1}  # an int equals a stored float
    assert _select(con, {"year": {"$ne": 2020}}) == {1, 2}  # a missing field is not equal
    assert _select(con, {"year": {"$gt": 2020}}) == {1}
    assert _select(con, {"year": {"$gte": 2020, "$lt": 2024}}) == {0}
    assert _select(con, {"year": {"$lte": 2024}}) == {0, 1}
    assert _select(con, {"lang": {"$in": ["de", "fr"]}}) == {1}
    assert _select(con, {"lang": {"$nin": ["de"]}}) == {0, 2}
    assert _select(con, {"flag": True}) == {0}
    assert _select(con, {"flag": {"$ne": True}}) == {1, 2}
    assert _select(con, {"$or": [{"flag": True}, {"lang": "de"}]}) == {0, 1}
    assert _select(con, {"$and": [{"year": {"$gt": 2000}}, {"lang": "en"}]}) == {0}
    assert _select(con, {}) == _select(con, None) == {0, 1, 2}
    # numpy scalars are the values they hold
    assert _select(con, {"year": np.int64(2020)}) == _select(con, {"flag": np.bool_(True)}) == {0}


def test_values_are_parameters_and_odd_field_names_are_quoted():
    """Quotes and SQL in values are data; a field name holding a quote works."""
    docs = [{"it's": "x'; DROP TABLE docs; --"}, {"it's": "y"}]
    con = _table(docs)
    where = {"it's": "x'; DROP TABLE docs; --"}
    sql, params = compile_filter(where, {"it's": "string"})
    assert "DROP" not in sql and params == ["x'; DROP TABLE docs; --"]
    assert {r[0] for r in con.execute(f"SELECT pk FROM docs WHERE {sql}", params)} == {0}
    assert con.execute("SELECT count(*) FROM docs").fetchone()[0] == 2


def test_an_index_on_the_field_expression_serves_the_filter():
    con = _table(_docs(np.random.default_rng(1)))
    con.execute(f"CREATE INDEX by_year ON docs({field_expr('year')})")
    sql, params = compile_filter({"year": {"$gte": 2024}}, FIELDS)
    rows = con.execute(f"EXPLAIN QUERY PLAN SELECT pk FROM docs WHERE {sql}", params)
    plan = " ".join(str(r) for r in rows)
    assert "by_year" in plan, plan


@pytest.mark.parametrize(
    ("where", "exc", "match"),
    [
        ({"year": {"$regex": "x"}}, ValueError, r"'year': unknown operator '\$regex'"),
        ({"$nor": [{"year": 1}]}, ValueError, r"unknown operator '\$nor'"),
        ({"month": 3}, ValueError, r"unknown field 'month'; known fields: 'flag', 'lang'"),
        ({"year": {"$gt": "x"}}, ValueError, r"'year' \(\$gt\): the field holds numbers, found "),
        ({"lang": 3}, ValueError, r"'lang' \(\$eq\): the field holds strings, found number 3"),
        ({"flag": {"$gt": False}}, ValueError, r"'flag' \(\$gt\): the field holds booleans"),
        ({"year": True}, ValueError, r"holds numbers, found bool True"),
        ({"year": {"$in": []}}, ValueError, r"\$in\): expected a non-empty list"),
        ({"year": {"$nin": 2020}}, ValueError, r"\$nin\): expected a non-empty list"),
        ({"year": {"$in": [2020, "x"]}}, ValueError, r"found string 'x'"),
        ({"year": {}}, ValueError, r"'year': an empty dict of operators"),
        ({"year": None}, ValueError, r"None compares with nothing"),
        ({"year": float("nan")}, ValueError, r"numbers must be finite, found nan"),
        ({"year": [2020]}, TypeError, r"found list"),
        ({"year": {"a": 1}}, ValueError, r"unknown operator 'a'"),
        ({"$and": []}, ValueError, r"\$and takes a non-empty list of filters, found \[\]"),
        ({"$or": {"year": 1}}, ValueError, r"\$or takes a non-empty list"),
        ({"$and": [3]}, TypeError, r"a filter must be a dict .* found int"),
        ("year = 2020", TypeError, r"a filter must be a dict .* found str"),
        ({3: 1}, TypeError, r"field names must be strings, found int"),
    ],
)
def test_bad_filters_name_the_problem(where, exc, match):
    with pytest.raises(exc, match=match):
        compile_filter(where, FIELDS)


def test_depth_and_size_limits():
    where: dict = {"year": 2020}
    for _ in range(MAX_DEPTH):
        where = {"$and": [where]}
    compile_filter(where, FIELDS)
    with pytest.raises(ValueError, match=f"at most {MAX_DEPTH} levels"):
        compile_filter({"$or": [where]}, FIELDS)
    compile_filter({"year": {"$in": list(range(MAX_VALUES))}}, FIELDS)
    with pytest.raises(ValueError, match=f"at most {MAX_VALUES} values"):
        compile_filter({"year": {"$in": list(range(MAX_VALUES))}, "lang": "en"}, FIELDS)


@pytest.mark.parametrize(
    ("name", "exc", "match"),
    [
        ("", ValueError, "must not be empty"),
        ("$x", ValueError, "must not start with"),
        ('a"b', ValueError, "character '\"'"),
        ("a\\b", ValueError, "character"),
        ("a\nb", ValueError, "character"),
        ("x" * 257, ValueError, "at most 256 characters, found 257"),
        (b"year", TypeError, "found bytes"),
    ],
)
def test_bad_field_names(name, exc, match):
    with pytest.raises(exc, match=match):
        check_field_name(name)


def test_value_kinds():
    assert [value_kind(v) for v in (1, 1.5, np.float32(2), "s", False, np.bool_(True), None)] == [
        "number", "number", "number", "string", "bool", "bool", None,
    ]  # fmt: skip
    for bad in (float("inf"), -np.inf, np.nan):
        with pytest.raises(ValueError, match="finite"):
            value_kind(bad)
    for bad in ([1], {"a": 1}, b"x", object()):
        with pytest.raises(TypeError, match="numbers, strings, booleans or None"):
            value_kind(bad)
