"""The HTTP service against a live server: documents round trip and agree with the
collection read directly, texts are embedded, every endpoint but /health needs the
token, and bad requests are 4xx naming the problem with nothing stored."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx

from _live import threaded_server
from vecpress import Collection
from vecpress.service.app import create_app
from vecpress.service.limits import Limits

TOKEN = "t0ken-for-the-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = Limits(max_batch=50, max_queries=4, max_k=20, max_dim=64, max_body_bytes=200_000)
WORDS = {"north": [1.0, 0.0, 0.0], "northish": [0.9, 0.1, 0.0], "east": [0.0, 1.0, 0.0],
         "up": [0.0, 0.0, 1.0]}  # fmt: skip


def by_first_word(texts):
    """A fixed embedding: each text's first word's vector (results worked out by hand)."""
    return np.asarray([WORDS[t.split()[0]] for t in texts], np.float32)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    app = create_app(root, token=TOKEN, limits=LIMITS, embedders={"words": by_first_word})
    with threaded_server(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=120) as c:
        yield c, root


def _vectors(n, d, seed):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.fixture(scope="module")
def docs(served):
    """The collection "docs" of 120 documents (ids d0..d119, texts, metadata n and even)
    that several tests use: made by whichever of them runs first in a test process
    (pytest-xdist spreads this module's tests over processes, each with its own server)."""
    client, _ = served
    r = client.post("/collections", json={"name": "docs", "dim": 16, "rerank_spec": "f32",
                                          "flush_rows": 40})  # fmt: skip
    assert r.status_code == 201 and r.json()["count"] == 0
    x = _vectors(120, 16, 0)
    ids = [f"d{i}" for i in range(120)]
    for s in range(0, 120, 50):  # 50, 50, 20: segments and pending vectors both
        rows = range(s, min(s + 50, 120))
        body = {"vectors": x[s : s + 50].tolist(), "ids": ids[s : s + 50],
                "texts": [f"text {i}" for i in rows],
                "metadata": [{"n": i, "even": i % 2 == 0} for i in rows]}  # fmt: skip
        assert client.post("/collections/docs/add", json=body).json() == {"ids": ids[s : s + 50]}
    return x


def test_documents_round_trip_and_agree_with_the_collection(served, docs):
    client, root = served
    x = docs
    new = _vectors(2, 16, 1)
    r = client.post("/collections/docs/upsert", json={"vectors": new.tolist(), "ids": ["d3", "x1"],
                                                      "metadata": [{"n": -3}, None]})  # fmt: skip
    assert r.json() == {"ids": ["d3", "x1"]}
    assert client.post("/collections/docs/delete", json={"ids": ["d5", "d6", "nope"]}).json() == {
        "deleted": 2
    }
    docs = client.post("/collections/docs/get", json={"ids": ["d3", "d5", "x1", "d7"]}).json()
    assert docs["documents"][1] is None
    assert docs["documents"][0] == {"id": "d3", "text": None, "metadata": {"n": -3}}
    assert docs["documents"][3] == {
        "id": "d7",
        "text": "text 7",
        "metadata": {"n": 7, "even": False},
    }
    info = client.get("/collections/docs").json()
    assert (
        info["count"] == 119
        and info["trained"]
        and info["fields"] == {"even": "bool", "n": "number"}
    )
    assert client.get("/collections").json() == {"collections": ["docs"]}

    q = np.concatenate([x[[3, 7, 100]], new[:1]])
    col = Collection.open(root / "docs")
    for flt in (None, {"even": True}, {"n": {"$gte": 50}}):
        body = {"vectors": q.tolist(), "k": 10, "filter": flt, "rerank": "auto"}
        got = client.post("/collections/docs/search", json=body).json()["results"]
        want = col.search(q, 10, filter=flt, rerank="auto")
        for row, ids_, scores in zip(got, want.ids, want.scores, strict=True):
            assert [h["id"] for h in row] == [i for i in ids_ if i is not None]
            np.testing.assert_allclose([h["score"] for h in row], scores[: len(row)], rtol=1e-6)
        if flt == {"even": True}:
            assert all(h["metadata"]["even"] for row in got for h in row)
    best = client.post("/collections/docs/search", json={"vectors": new[:1].tolist(), "k": 1})
    assert best.json()["results"][0][0]["id"] == "d3"  # the upserted vector
    col.close()


def test_texts_are_embedded_by_the_collections_embedder(served):
    client, _ = served
    r = client.post("/collections", json={"name": "words", "dim": 3, "rerank_spec": "f32"})
    assert r.status_code == 201
    texts = ["north star", "northish wind", "east coast", "up high"]
    langs = [{"lang": "en"}, {"lang": "de"}, {"lang": "en"}, None]
    body = {"texts": texts, "ids": ["n", "w", "e", "u"], "metadata": langs}
    r = client.post("/collections/words/add", json=body)
    assert r.json() == {"ids": ["n", "w", "e", "u"]}
    got = client.post("/collections/words/search", json={"texts": ["north", "east side"], "k": 2})
    rows = got.json()["results"]
    assert [h["id"] for h in rows[0]] == ["n", "w"] and [h["id"] for h in rows[1]] == ["e", "w"]
    assert rows[0][0]["score"] == pytest.approx(1.0, abs=1e-6)
    assert rows[0][0]["text"] == "north star"
    en = client.post("/collections/words/search",
                     json={"texts": ["north"], "k": 3, "filter": {"lang": "en"}})  # fmt: skip
    assert [h["id"] for h in en.json()["results"][0]] == ["n", "e"]


def test_every_endpoint_but_health_needs_the_token(served):
    client, _ = served
    bare = httpx.Client(base_url=str(client.base_url), timeout=60)
    schema = bare.get("/openapi.json").json()
    assert bare.get("/health").json()["status"] == "ok"
    operations = [(m, p) for p, item in schema["paths"].items() for m in item]
    assert len(operations) == 9
    for method, path in operations:
        url = path.replace("{name}", "docs")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = bare.request(method.upper(), url, headers=headers, content=b'{"not": "json')
            want = 200 if path == "/health" else 401
            assert r.status_code == want, (method, path, headers, r.text)
            if want == 401:
                assert "bearer token" in r.json()["detail"]
                assert r.headers["www-authenticate"] == "Bearer"
    assert bare.get("/no/such/path").status_code == 401  # unknown paths too: nothing leaks
    bare.close()


def test_the_limits_are_in_the_schema(served):
    client, _ = served
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    search = schemas["VectorSearch"]["properties"]
    assert search["k"]["maximum"] == 20
    assert search["vectors"]["maxItems"] == 4 and search["vectors"]["items"]["maxItems"] == 64
    assert schemas["AddVectors"]["properties"]["vectors"]["maxItems"] == 50
    assert schemas["AddTexts"]["required"] == ["texts"]
    assert schemas["UpsertVectors"]["required"] == ["vectors", "ids"]
    assert all(schemas[m]["additionalProperties"] is False for m in ("AddVectors", "TextSearch"))


BAD = [
    # (endpoint, body, status, what the message names)
    ("add", {"vectors": [[1.0] * 15], "ids": ["z"]}, 400, "16 columns"),
    ("add", {"vectors": [[1.0] * 16] * 2, "ids": ["z", "z"]}, 400, "duplicate document id 'z'"),
    ("add", {"vectors": [[1.0] * 16], "ids": ["d1"]}, 400, "already in the collection"),
    ("add", {"vectors": [[1e300] * 16], "ids": ["z"]}, 400, "too large for float32"),
    ("add", {"vectors": [[1.0] * 16, [1.0] * 3]}, 400, "same length"),
    (
        "add",
        {"vectors": [[1.0] * 16], "metadata": [{"n": "seven"}]},
        400,
        "field 'n' holds numbers",
    ),
    ("add", {"texts": ["north"]}, 400, "no embedder"),
    ("add", {"vectors": [[1.0] * 16] * 51}, 422, "at most 50"),
    ("add", {"vectors": [[1.0] * 65]}, 422, "at most 64"),
    ("add", {"vector": [1.0] * 16}, 422, "Extra inputs"),
    ("add", {"vectors": [["1.5"] * 16]}, 422, "valid number"),
    ("upsert", {"vectors": [[1.0] * 16]}, 422, "Field required"),
    ("search", {"vectors": [[1.0] * 16], "k": 21}, 422, "less than or equal to 20"),
    ("search", {"vectors": [[1.0] * 16] * 5}, 422, "at most 4"),
    ("search", {"vectors": [[1.0] * 16], "texts": ["a"]}, 422, "Extra inputs"),
    ("search", {"vectors": [[0.0] * 16]}, 400, "zero"),
    ("search", {"vectors": [[1.0] * 16], "filter": {"n": {"$near": 1}}}, 400, "unknown operator"),
    ("search", {"vectors": [[1.0] * 16], "filter": {"missing": 1}}, 400, "missing"),
    ("search", {"vectors": [[1.0] * 16], "rerank": 0}, 422, "greater than or equal to 1"),
    ("search", {"vectors": [[1.0] * 16], "nprobe": 4}, 400, "flat"),
    ("get", {"ids": [""]}, 422, "at least 1 character"),
    ("delete", {"ids": "d1"}, 422, "valid list"),
]


@pytest.mark.parametrize("endpoint, body, status, named", BAD, ids=[b[3] for b in BAD])
def test_bad_requests_are_4xx_naming_the_problem_and_store_nothing(served, docs, endpoint, body,
                                                                   status, named):  # fmt: skip
    client, _ = served
    before = client.get("/collections/docs").json()
    r = client.post(f"/collections/docs/{endpoint}", json=body)
    assert r.status_code == status, r.text
    assert named in json.dumps(r.json()["detail"]), r.json()
    if status == 422:  # a refused body is not echoed back
        assert all("input" not in e for e in r.json()["detail"])
    assert client.get("/collections/docs").json() == before


def test_malformed_oversized_and_unknown(served, docs):
    client, _ = served
    post = client.post
    r = post("/collections/docs/search", content=b'{"vectors": [[NaN' + b", 1.0" * 15 + b"]]}",
             headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and "NaN or Inf" in r.json()["detail"]
    r = post("/collections/docs/get", content=b'{"ids": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
             headers={"content-type": "application/json"})  # fmt: skip
    assert 400 <= r.status_code < 500
    r = post(
        "/collections/docs/get",
        content=b'{"ids": ["a"',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    big = json.dumps({"ids": ["x" * 1000] * 300}).encode()  # 300 kB > 200 kB
    r = post("/collections/docs/get", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "at most 200,000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(30):
            yield b" " * 10_000

    r = post(
        "/collections/docs/get", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert client.get("/collections/nothing-here").status_code == 404
    assert "no collection named" in client.get("/collections/nothing-here").json()["detail"]
    r = post("/collections/nothing-here/search", json={"vectors": [[1.0]], "k": 1})
    assert r.status_code == 404
    r = post("/collections", json={"name": "docs", "dim": 16})
    assert r.status_code == 409 and "exists" in r.json()["detail"]
    for name in ("-x", "a/b", "", "x" * 65, ".hidden"):
        assert post("/collections", json={"name": name, "dim": 4}).status_code == 422, name


def test_a_create_the_collection_refuses_leaves_nothing(served):
    client, root = served
    before = client.get("/collections").json()
    for body, named in (
        ({"name": "bad1", "dim": 8, "spec": "nonsense9"}, "nonsense9"),
        ({"name": "bad2", "dim": 8, "rerank_spec": "rq99"}, "rq99"),
        ({"name": "bad3", "dim": 8, "spec": "auto"}, "auto"),
    ):
        r = client.post("/collections", json=body)
        assert r.status_code == 400 and named in r.json()["detail"], r.text
        assert not (root / body["name"]).exists()
    assert client.get("/collections").json() == before
