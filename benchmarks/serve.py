"""The HTTP service under load (issue 17): latency, throughput and memory of
``vecpress serve``, side by side with faiss behind the same HTTP stack.

Data: the MiniLM sentence set built by ``sentences.py`` (100,000 x 384 base
passages, 2,000 query sentences, L2-normalised).

* **vecpress**: ``vecpress serve`` (its defaults: 1 kernel thread a search, 4
  readers a collection; here ``--readers 8``) over a collection ``bench``
  (``hd2,rq4``, ``rerank_spec="f32"``, cosine, ``flush_rows`` 100,000: one
  segment), filled through the service's own ``add`` endpoint in batches of
  1,000 (documents/s reported). Searches ask ``k=10`` with ``rerank="auto"``
  (certified re-ranking from the float tier: exact top 10).
* **faiss** (the peer): ``IndexRefineFlat(IndexScalarQuantizer(QT_4bit))``
  with ``k_factor`` 4 -- 4-bit codes re-ranked from the float vectors, the
  nearest faiss analogue -- behind the same FastAPI + uvicorn stack, one
  ``POST /search`` endpoint with the same request body, 1 OpenMP thread
  (this script, ``--peer-server``).

**Load.** C clients (threads of this process, one keep-alive ``httpx.Client``
each) send single-query search requests back to back for ``--seconds``, for C
in 1 and 8: p50 and p99 latency (client-measured, request to parsed response),
requests/s, and recall@10 of the answers against the exact top 10. Server and
clients share the machine's cores (2 here), as a service on one host does.
Also, for scale, one query through ``Collection.search`` in this process (no
HTTP).

**Soak.** 8 clients for ``--soak-minutes`` (10) against vecpress; the server
process's RSS every 5 s; RSS after the first minute against RSS at the end (the
issue: no growth beyond 10 %).

Usage: ``python benchmarks/serve.py [--quick]`` (needs ``pip install
".[bench,serve]"`` and the MiniLM set built by ``sentences.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import common
from common import HERE, K, log

SPEC = "hd2,rq4"
RSS_EVERY_S = 5.0


# ---------------------------------------------------------------------------------------
# the peer: faiss behind the same HTTP stack
# ---------------------------------------------------------------------------------------
def peer_app(base_path: str):
    """A FastAPI app answering ``POST /search {"vectors", "k"}`` with faiss SQ4 + refine."""
    import faiss
    from fastapi import Body, FastAPI

    faiss.omp_set_num_threads(1)
    base = np.load(base_path)
    sq4 = faiss.IndexScalarQuantizer(
        base.shape[1], faiss.ScalarQuantizer.QT_4bit, faiss.METRIC_INNER_PRODUCT
    )
    index = faiss.IndexRefineFlat(sq4)
    index.k_factor = 4
    index.train(base)
    index.add(base)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/search")
    def search(body: dict = Body(...)) -> dict:  # noqa: B008 - FastAPI's idiom
        q = np.asarray(body["vectors"], np.float32)
        scores, ids = index.search(q, int(body.get("k", 10)))
        rows = zip(ids, scores, strict=True)
        return {"results": [[{"id": str(i), "score": float(v)}
                             for i, v in zip(r, sc, strict=True) if i >= 0]
                            for r, sc in rows]}  # fmt: skip

    return app


def _serve_peer(port: int, base_path: str) -> int:
    import uvicorn

    uvicorn.run(peer_app(base_path), host="127.0.0.1", port=port, log_level="warning")
    return 0


# ---------------------------------------------------------------------------------------
# servers and clients
# ---------------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], url: str) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 600
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited with status {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError(f"{url} never became healthy")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ingest(url: str, base: np.ndarray, batch: int = 1000) -> dict:
    """Fill the collection through ``add``; documents/s."""
    import httpx

    with httpx.Client(base_url=url, timeout=600) as http:
        r = http.post("/collections", json={
            "name": "bench", "dim": base.shape[1], "spec": SPEC, "rerank_spec": "f32",
            "flush_rows": base.shape[0]})  # fmt: skip
        r.raise_for_status()
        t0 = time.perf_counter()
        for s in range(0, base.shape[0], batch):
            rows = base[s : s + batch]
            body = {"vectors": rows.tolist(), "ids": [str(i) for i in range(s, s + len(rows))]}
            http.post("/collections/bench/add", json=body).raise_for_status()
        seconds = time.perf_counter() - t0
        info = http.get("/collections/bench").json()
    return {"rows": int(base.shape[0]), "seconds": seconds, "docs_per_s": base.shape[0] / seconds,
            "segments": len(info["segments"]), "pending": info["pending"]}  # fmt: skip


def load(url: str, path: str, queries: np.ndarray, clients: int, seconds: float,
         extra: dict, rss_of: int | None = None) -> dict:  # fmt: skip
    """``clients`` threads sending one-query searches for ``seconds``."""
    import httpx
    import psutil

    lat: list[list[float]] = [[] for _ in range(clients)]
    answers: dict[int, list[int]] = {}
    end = time.monotonic() + seconds
    errors: list[str] = []

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            i = c
            while time.monotonic() < end:
                qi = i % len(queries)
                body = {"vectors": [queries[qi].tolist()], "k": K, **extra}
                t0 = time.perf_counter()
                r = http.post(path, json=body)
                hits = r.json()["results"][0] if r.status_code == 200 else None
                lat[c].append(time.perf_counter() - t0)
                if hits is None:
                    errors.append(r.text[:200])
                elif qi not in answers:
                    answers[qi] = [int(h["id"]) for h in hits]
                i += clients

    rss: list[tuple[float, int]] = []
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    if rss_of is not None:
        proc = psutil.Process(rss_of)
        while any(t.is_alive() for t in threads):
            rss.append((time.monotonic() - t0, proc.memory_info().rss))
            time.sleep(RSS_EVERY_S)
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    all_lat = np.concatenate([np.asarray(x) for x in lat]) * 1e3
    out = {"clients": clients, "requests": int(all_lat.size), "errors": len(errors),
           "rps": all_lat.size / wall, "p50_ms": float(np.percentile(all_lat, 50)),
           "p99_ms": float(np.percentile(all_lat, 99)), "answers": answers}  # fmt: skip
    if rss:
        out["rss"] = rss
    return out


def recall(answers: dict[int, list[int]], truth: np.ndarray) -> float:
    hits = [len(set(a) & set(truth[q].tolist())) / K for q, a in answers.items()]
    return float(np.mean(hits))


def in_process(root: Path, queries: np.ndarray, n: int = 300) -> float:
    """p50 ms of one ``Collection.search`` (no HTTP), 1 thread."""
    import vecpress
    from vecpress.collection import Collection

    vecpress.set_num_threads(1)
    col = Collection.open(root / "bench")
    col.search(queries[:1], K, rerank="auto")
    t = []
    for i in range(n):
        t0 = time.perf_counter()
        col.search(queries[i : i + 1], K, rerank="auto")
        t.append(time.perf_counter() - t0)
    col.close()
    return float(np.median(t) * 1e3)


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def report(results: dict) -> str:
    env = results["env"]
    lines = [
        f"Run {env['date']} on {env['cpu']}, {env['versions']}; {env['git']}.",
        f"Command: `{env['command']}`. Data: {env['data']}",
        "",
    ]
    if "ingest" in results:
        g = results["ingest"]
        lines += [f"Ingest through `add` (batches of 1,000): {g['rows']:,} documents in "
                  f"{g['seconds']:.1f} s = {g['docs_per_s']:,.0f} documents/s "
                  f"({g['segments']} segment, {g['pending']} pending).", ""]  # fmt: skip
    rows = results.get("load", [])
    if rows:
        lines += ["| server | clients | requests | errors | p50 ms | p99 ms | requests/s | "
                  "recall@10 |", "|---|--:|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
        for r in rows:
            lines.append(
                f"| {r['server']} | {r['clients']} | {r['requests']:,} | {r['errors']} | "
                f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['rps']:,.0f} | {r['recall']:.3f} |"
            )
        lines.append("")
        by = {(r["server"], r["clients"]): r for r in rows}
        for c in sorted({r["clients"] for r in rows}):
            v, f = by.get(("vecpress", c)), by.get(("faiss", c))
            if v and f:
                lines.append(f"{c} client(s): vecpress/faiss p50 {v['p50_ms'] / f['p50_ms']:.2f}x, "
                             f"p99 {v['p99_ms'] / f['p99_ms']:.2f}x, requests/s "
                             f"{v['rps'] / f['rps']:.2f}x.")  # fmt: skip
        lines.append("")
    if "in_process_p50_ms" in results:
        lines += [f"One query through `Collection.search` in-process (no HTTP): p50 "
                  f"{results['in_process_p50_ms']:.2f} ms.", ""]  # fmt: skip
    if "soak" in results:
        s = results["soak"]
        lines += [
            f"Soak: 8 clients for {s['minutes']:g} min, {s['requests']:,} requests, "
            f"{s['errors']} errors, p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms; "
            f"server RSS {s['rss_1min_mb']:.0f} MB after 1 min, {s['rss_end_mb']:.0f} MB at "
            f"the end ({s['growth_pct']:+.1f} %).",
            "",
        ]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    rows = results.get("load", [])
    labels = [f"{r['server']}\n{r['clients']} client(s)" for r in rows]
    xs = np.arange(len(rows))
    a.bar(xs - 0.2, [r["p50_ms"] for r in rows], 0.4, label="p50")
    a.bar(xs + 0.2, [r["p99_ms"] for r in rows], 0.4, label="p99")
    a.set_xticks(xs, labels)
    a.set_ylabel("latency of one single-query request (ms)")
    a.set_title("Latency (lower is better)")
    a.legend()
    if "soak" in results:
        t, rss = zip(*results["soak"]["rss"], strict=True)
        mb = np.asarray(rss) / 2**20
        b.plot(np.asarray(t) / 60, mb, marker=".", ms=3)
        b.axvline(1.0, color="grey", ls=":", label="after 1 min")
        b.axhline(1.1 * results["soak"]["rss_1min_mb"], color="red", ls="--",
                  label="+10 % of the 1-min RSS")  # fmt: skip
        b.set_xlabel("minutes of load (8 clients)")
        b.set_ylabel("server RSS (MB)")
        b.set_ylim(0, 1.25 * mb.max())
        b.legend(loc="lower right")
        b.set_title("vecpress serve memory under load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="load per client count")
    p.add_argument("--soak-minutes", type=float, default=10.0)
    p.add_argument("--quick", action="store_true", help="smoke test: 20,000 rows, short runs")
    p.add_argument("--minilm-dir", default=str(Path.home() / ".cache/vecpress/minilm"))
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument("--replot", nargs=2, metavar=("RUN_JSON", "OUT_PNG"),
                   help="only draw the plot of a finished run")  # fmt: skip
    p.add_argument("--peer-server", nargs=2, metavar=("PORT", "BASE_NPY"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.peer_server:
        return _serve_peer(int(args.peer_server[0]), args.peer_server[1])
    if args.replot:
        plot(json.loads(Path(args.replot[0]).read_text()), Path(args.replot[1]))
        return 0
    data = common.load_minilm(Path(args.minilm_dir))
    if data is None:
        return 1
    if args.quick:
        data.base, args.seconds, args.soak_minutes = data.base[:20_000], 5.0, 1.5
    import latency

    env = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpu": common.cpu_model(),
           "git": common.git_state(), "versions": latency._versions(),
           "command": "python benchmarks/serve.py " + " ".join(argv or sys.argv[1:]),
           "data": data.description}  # fmt: skip
    results: dict = {"env": env, "load": []}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = time.strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    truth = common.exact_top_k(data.base, data.queries, 2)

    def write() -> None:
        keep = {**results, "load": [{k: v for k, v in r.items() if k != "answers"}
                                    for r in results["load"]]}  # fmt: skip
        if "soak" in keep:
            keep["soak"] = {k: v for k, v in keep["soak"].items() if k != "answers"}
        (out / f"serve-{tag}.json").write_text(json.dumps(keep, indent=1))
        (out / f"serve-{tag}.md").write_text(report(keep))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        server = _start([sys.executable, "-m", "vecpress.cli", "serve", str(root), "--port",
                         str(port), "--readers", "8", "--max-body-mb", "64"], url)  # fmt: skip
        try:
            log(f"ingest {data.base.shape[0]:,} rows through the service ...")
            results["ingest"] = ingest(url, data.base)
            log(f"  {results['ingest']}")
            for clients in (1, 8):
                r = load(url, "/collections/bench/search", data.queries, clients, args.seconds,
                         {"rerank": "auto"})  # fmt: skip
                results["load"].append({"server": "vecpress", **r,
                                        "recall": recall(r["answers"], truth)})  # fmt: skip
                log(f"  vecpress {clients}: p50 {r['p50_ms']:.2f} ms, {r['rps']:.0f}/s")
                write()
            log(f"soak: 8 clients for {args.soak_minutes:g} min ...")
            s = load(url, "/collections/bench/search", data.queries, 8, args.soak_minutes * 60,
                     {"rerank": "auto"}, rss_of=server.pid)  # fmt: skip
            rss = s["rss"]
            at1 = next(v for t, v in rss if t >= 60.0) if rss[-1][0] >= 60 else rss[0][1]
            end = rss[-1][1]
            s.update(minutes=args.soak_minutes, rss_1min_mb=at1 / 2**20,
                     rss_end_mb=end / 2**20, growth_pct=100 * (end / at1 - 1))  # fmt: skip
            results["soak"] = s
            write()
        finally:
            _stop(server)
        results["in_process_p50_ms"] = in_process(root, data.queries)
        base_path = Path(tmp) / "base.npy"
        np.save(base_path, data.base)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        peer = _start([sys.executable, __file__, "--peer-server", str(port), str(base_path)], url)
        try:
            for clients in (1, 8):
                r = load(url, "/search", data.queries, clients, args.seconds, {})
                results["load"].append({"server": "faiss", **r,
                                        "recall": recall(r["answers"], truth)})  # fmt: skip
                log(f"  faiss {clients}: p50 {r['p50_ms']:.2f} ms, {r['rps']:.0f}/s")
                write()
        finally:
            _stop(peer)
    write()
    plot(results, out / f"serve-{tag}.png")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
