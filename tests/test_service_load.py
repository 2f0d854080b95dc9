"""The service under concurrent clients, and killed mid-ingestion.

Eight clients add and search at once against a ``vecpress serve`` process for
``VECPRESS_SERVE_SECONDS`` (default 60): no request fails, every client finds each
document it added right after the add was acknowledged, every acknowledged
document is there afterwards, and the final searches equal an exact
single-threaded search over the acknowledged vectors. Then the server is killed
(SIGKILL) while clients ingest, restarted on the same folder, and every
acknowledged write is there; a batch in flight is all there or not at all.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx

from _live import served_process

SECONDS = float(os.environ.get("VECPRESS_SERVE_SECONDS", "60"))
CLIENTS = 8
DIM = 32
BATCH = 20
TOKEN = "load-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def vector_of(doc_id: str) -> np.ndarray:
    """Each document's vector, a function of its id (so any thread can recompute it)."""
    seed = int.from_bytes(doc_id.encode()[-12:].rjust(12, b"\0"), "big")
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def _batch(client: int, j: int) -> list[str]:
    return [f"c{client}-b{j}-{r}" for r in range(BATCH)]


@pytest.fixture
def token_file(tmp_path):
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    return str(f)


def _create(url: str) -> None:
    body = {"name": "load", "dim": DIM, "rerank_spec": "f32", "flush_rows": 400}
    r = httpx.post(f"{url}/collections", headers=AUTH, timeout=60, json=body)
    assert r.status_code == 201, r.text


def test_eight_clients_adding_and_searching_at_once(tmp_path, token_file):
    acked: list[list[str]] = [[] for _ in range(CLIENTS)]
    errors: list[str] = []
    with served_process(tmp_path / "root", "--token-file", token_file) as (url, _):
        _create(url)
        end = time.monotonic() + SECONDS

        def client(i: int) -> None:
            with httpx.Client(base_url=url, headers=AUTH, timeout=120) as http:
                j = 0
                while time.monotonic() < end and not errors:
                    ids = _batch(i, j)
                    body = {"ids": ids, "vectors": [vector_of(x).tolist() for x in ids],
                            "metadata": [{"client": i, "batch": j}] * BATCH}  # fmt: skip
                    r = http.post("/collections/load/add", json=body)
                    if r.status_code != 200:
                        errors.append(f"add {r.status_code}: {r.text}")
                        return
                    acked[i].extend(ids)
                    mine = ids[j % BATCH]  # read your own write, through a reader
                    r = http.post("/collections/load/search", json={
                        "vectors": [vector_of(mine).tolist()], "k": 3, "rerank": "auto",
                        "filter": {"client": i}})  # fmt: skip
                    if r.status_code != 200 or r.json()["results"][0][0]["id"] != mine:
                        errors.append(f"search {r.status_code}: {r.text[:300]} for {mine}")
                        return
                    j += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        ids = [x for mine in acked for x in mine]
        assert all(len(mine) >= BATCH for mine in acked)  # every client got through
        with httpx.Client(base_url=url, headers=AUTH, timeout=120) as http:
            info = http.get("/collections/load").json()
            assert info["count"] == len(ids) and len(info["segments"]) >= 1
            for s in range(0, len(ids), 1000):
                docs = http.post("/collections/load/get", json={"ids": ids[s : s + 1000]}).json()
                assert [d["id"] for d in docs["documents"]] == ids[s : s + 1000]
            # the final searches: an exact single-threaded search over the acknowledged vectors
            x = np.stack([vector_of(i) for i in ids]).astype(np.float64)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            q = np.random.default_rng(7).standard_normal((64, DIM))
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            want = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
            for s in range(0, 64, 32):
                body = {"vectors": q[s : s + 32].tolist(), "k": 10, "rerank": "auto"}
                r = http.post("/collections/load/search", json=body)
                got = [[h["id"] for h in row] for row in r.json()["results"]]
                assert got == [[ids[c] for c in row] for row in want[s : s + 32]]
    print(f"{len(ids)} documents added by {CLIENTS} clients in {SECONDS:g} s")


def test_kill_9_during_ingestion_loses_no_acknowledged_write(tmp_path, token_file):
    root = tmp_path / "root"
    acked: list[str] = []
    in_flight: dict[int, list[str]] = {}
    lock = threading.Lock()
    with served_process(root, "--token-file", token_file) as (url, proc):
        _create(url)
        stop = threading.Event()

        def client(i: int) -> None:
            with httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
                for j in range(10**6):
                    if stop.is_set():
                        return
                    ids = _batch(i, j)
                    with lock:
                        in_flight[i] = ids
                    body = {"ids": ids, "vectors": [vector_of(x).tolist() for x in ids]}
                    try:
                        r = http.post("/collections/load/add", json=body)
                    except httpx.HTTPError:
                        return  # the server died: this batch was never acknowledged
                    if r.status_code != 200:
                        return
                    with lock:
                        acked.extend(ids)
                        in_flight.pop(i)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while len(acked) < 1500 and time.monotonic() < deadline:  # past a segment or three
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stop.set()
        for t in threads:
            t.join()
    assert len(acked) >= 1500
    with served_process(root, "--token-file", token_file) as (url, _):
        with httpx.Client(base_url=url, headers=AUTH, timeout=120) as http:
            present = set()
            for s in range(0, len(acked), 1000):
                docs = http.post("/collections/load/get", json={"ids": acked[s : s + 1000]})
                present |= {d["id"] for d in docs.json()["documents"] if d is not None}
            assert present == set(acked)
            for ids in in_flight.values():  # all or nothing
                got = http.post("/collections/load/get", json={"ids": ids}).json()["documents"]
                assert all(d is None for d in got) or all(d is not None for d in got)
            count = http.get("/collections/load").json()["count"]
            settled = 0
            for ids in in_flight.values():
                first = http.post("/collections/load/get", json={"ids": ids[:1]}).json()
                settled += len(ids) if first["documents"][0] is not None else 0
            assert count == len(acked) + settled
            body = {"vectors": [vector_of(acked[-1]).tolist()], "k": 1, "rerank": "auto"}
            r = http.post("/collections/load/search", json=body)
            assert r.json()["results"][0][0]["id"] == acked[-1]
