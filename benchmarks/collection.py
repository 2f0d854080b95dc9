"""Collections (issue 16): ingest, filtered search against faiss's IDSelector, open time.

(The issue names this file ``collections.py``; that name would shadow the standard
library's ``collections`` for every script run from this folder.)

Everything runs in this process, 1 thread (vecpress ``set_num_threads``, faiss
OpenMP and BLAS through ``common.threads``), on the MiniLM sentence set built
by ``sentences.py`` (100,000 x 384 base passages, 2,000 query sentences).

1. **Filtered search.** Every base row gets a metadata field ``bucket``, an
   integer drawn uniformly from 0..999 (seeded; independent of the vectors);
   the filter ``{"bucket": {"$lt": t}}`` lets through 50 %, 10 %, 1 % and
   0.1 % of the rows. For each, recall@10 against the exact filtered top 10
   (float inner products over the allowed rows) and queries/s with all
   ``--queries`` queries in one call (best of 3), for:

   * vecpress ``Collection.search(q, 10, filter=...)`` end to end (the SQL
     query, the allowlist, the scan, the documents' ids, texts and metadata);
   * vecpress ``Index.search(q, 10, allow=ids)`` on the same codes (the scan
     alone, given the allowlist, as faiss is given it);
   * faiss ``RR,RaBitQ4`` (flat) and ``RR,IVF{nlist},RaBitQfs4`` (IVF; the
     fast-scan IVF form accepts a selector, the flat one does not) with an
     ``IDSelectorBitmap`` of the allowed ids: the nearest faiss codec to
     ``hd2,rq4`` (a random rotation and 4-bit RaBitQ codes);

   flat, and IVF with ``--nlist`` lists and ``--nprobe`` probes (the same for
   both libraries). Every query of a selectivity uses the same filter, so after
   the first a collection answers from its kept allowlist (``Catalog.allowed``);
   "first query" is one query on a freshly opened collection (the SQL query, the
   segment opened, its id lookup made). ``bucket`` is indexed (``create_index``).
   The unfiltered recall@10 of each index is measured the
   same way: the issue asks that filtered recall stays within 0.01 of it.
2. **Ingest.** ``--ingest-rows`` vectors (the MiniLM base repeated with
   Gaussian noise of norm ~0.1, renormalised) added in batches of 1,000, each
   with texts (~200 characters) and 3 metadata fields, each batch committed,
   to a ``hd2,rq4`` collection (d = 384, the codec trained first on 20,000
   sample rows, ``flush_rows`` 1,000: each committed batch is its own segment,
   as the issue describes): vectors/s over the whole ingest and the time of
   the last 10 batches against the first 10. Then ``compact()`` merges the
   segments into one (timed).
3. **Open.** A fresh Python process opens that compacted collection and
   answers one query: the open time, the first search's time and the
   process's RSS.

Usage: ``python benchmarks/collection.py [--quick]`` (needs ``pip install
".[bench]"`` and the MiniLM set built by ``sentences.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

import common
import vecpress
from common import HERE, K, faiss, log
from vecpress.collection import Collection

SELECTIVITIES = (0.5, 0.1, 0.01, 0.001)
SPEC = "hd2,rq4"


def exact_filtered_top(base, queries, allow, k=K) -> np.ndarray:
    """Exact top ``k`` ids among ``allow`` (float inner products)."""
    with common.threads(2):
        s = queries @ base[allow].T
    part = np.argpartition(-s, min(k, allow.size - 1), axis=1)[:, :k]
    order = np.take_along_axis(s, part, 1).argsort(axis=1)[:, ::-1]
    return allow[np.take_along_axis(part, order, 1)]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(np.intersect1d(f[f >= 0], t)) / len(t) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def best_time(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def faiss_index(key: str, base: np.ndarray, train: np.ndarray):
    index = faiss.index_factory(base.shape[1], key, faiss.METRIC_INNER_PRODUCT)
    index.train(train)
    index.add(base)
    return index


def faiss_params(n: int, allow: np.ndarray, nprobe: int | None):
    bits = np.zeros(n, bool)
    bits[allow] = True
    packed = np.packbits(bits, bitorder="little")
    sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(packed))
    inner = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe) if nprobe else None
    if inner is None:
        inner = faiss.SearchParameters(sel=sel)
    params = faiss.SearchParametersPreTransform(index_params=inner)
    return params, (packed, sel, inner)  # keep the buffers alive while params is used


def measure_filtered(data, args, work: Path) -> list[dict]:
    base, queries = data.base, data.queries[: args.queries]
    n = base.shape[0]
    rng = np.random.default_rng(common.SEED)
    bucket = rng.integers(0, 1000, n)
    train = base[np.sort(rng.choice(n, min(n, 50_000), replace=False))]
    truth_all = exact_filtered_top(base, queries, np.arange(n))
    rows = []
    for kind in ("flat", "ivf"):
        ivf = args.nlist if kind == "ivf" else None
        nprobe = args.nprobe if kind == "ivf" else None
        log(f"filtered search, {kind}: building ...")
        col = Collection.create(work / f"col-{kind}", spec=SPEC, dim=data.d, metric="ip",
                                ivf=ivf, flush_rows=20_000)  # fmt: skip
        col.train(train)
        for s in range(0, n, 10_000):
            e = min(n, s + 10_000)
            col.add(base[s:e], ids=[f"p{i}" for i in range(s, e)],
                    texts=[f"passage {i}" for i in range(s, e)],
                    metadata=[{"bucket": int(b)} for b in bucket[s:e]])  # fmt: skip
        col.flush()
        col.compact(min_rows=10**9)  # one segment: as one index
        col.create_index("bucket")  # as the docs advise for large collections
        index = vecpress.Index(SPEC, "ip", ivf=ivf)
        index.train(train)
        index.add(base)
        fkey = "RR,RaBitQ4" if kind == "flat" else f"RR,IVF{args.nlist},RaBitQfs4"
        fidx = faiss_index(fkey, base, train)
        if kind == "ivf":
            faiss.extract_index_ivf(fidx).nprobe = nprobe
        with common.threads(1):
            vp_un = recall(index.search(queries, K, nprobe=nprobe).ids, truth_all)
            col_un = col.search(queries, K, nprobe=nprobe)
            col_un_rec = recall(_pos(col_un.ids), truth_all)
            fa_un = recall(fidx.search(queries, K)[1], truth_all)
            for sel in SELECTIVITIES:
                row = _selectivity_row(sel, bucket, data, queries, col, index, fidx, nprobe)
                row.update(kind=kind, vp_collection_unfiltered=col_un_rec,
                           vp_index_unfiltered=vp_un, faiss_unfiltered=fa_un)  # fmt: skip
                log(f"  {json.dumps(row)}")
                rows.append(row)
        col.close()
    return rows


def _selectivity_row(sel, bucket, data, queries, col, index, fidx, nprobe) -> dict:
    """Recall and speed of the three searches at one selectivity."""
    base, n, nq = data.base, data.base.shape[0], queries.shape[0]
    t = round(sel * 1000)
    allow = np.flatnonzero(bucket < t)
    where = {"bucket": {"$lt": t}}
    truth = exact_filtered_top(base, queries, allow)
    params, _keep = faiss_params(n, allow, nprobe)

    def vp_collection(q):
        return col.search(q, K, filter=where, nprobe=nprobe)

    def vp_index(q):
        return index.search(q, K, nprobe=nprobe, allow=allow)

    def peer(q):
        return fidx.search(q, K, params=params)

    fresh = Collection.open(col.path)  # nothing kept yet: the filter's SQL query runs
    t0 = time.perf_counter()
    fresh.search(queries[:1], K, filter=where, nprobe=nprobe)
    cold_ms = (time.perf_counter() - t0) * 1e3
    fresh.close()
    return {
        "selectivity": sel, "allowed": int(allow.size), "vp_collection_1q_cold_ms": cold_ms,
        "vp_collection_recall": recall(_pos(vp_collection(queries).ids), truth),
        "vp_index_recall": recall(vp_index(queries).ids, truth),
        "faiss_recall": recall(peer(queries)[1], truth),
        "vp_collection_qps": nq / best_time(lambda: vp_collection(queries)),
        "vp_index_qps": nq / best_time(lambda: vp_index(queries)),
        "faiss_qps": nq / best_time(lambda: peer(queries)),
        "vp_collection_1q_ms": _one_query_ms(vp_collection, queries),
        "faiss_1q_ms": _one_query_ms(peer, queries),
    }  # fmt: skip


def _pos(ids: list[list[str | None]]) -> np.ndarray:
    """Collection ids ``p<row>`` as base row numbers (``-1`` for padding)."""
    return np.array([[int(i[1:]) if i else -1 for i in row] for row in ids], np.int64)


def _one_query_ms(fn, queries: np.ndarray, count: int = 100) -> float:
    fn(queries[:1])
    times = []
    for i in range(min(count, queries.shape[0])):
        t = time.perf_counter()
        fn(queries[i : i + 1])
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


WORDS = ("vector search compressed embedding memory index filter segment query model "
         "document passage archive cluster sentence latent dense sparse rank").split()  # fmt: skip


def ingest(data, args, path: Path, batch: int = 1000) -> dict:
    base = data.base
    n, d = base.shape
    rng = np.random.default_rng(1)
    col = Collection.create(path, spec=SPEC, dim=d, metric="cosine", flush_rows=batch)
    col.train(base[np.sort(rng.choice(n, min(n, 20_000), replace=False))])
    texts = [" ".join(rng.choice(WORDS, 25)) for _ in range(1000)]  # ~200 characters each
    langs = ("en", "de", "fr", "es")
    nb = args.ingest_rows // batch
    times = []
    added = 0
    with common.threads(1):
        for b in range(nb):
            rows = rng.integers(0, n, batch)
            x = base[rows] + rng.standard_normal((batch, d), dtype=np.float32) * (0.1 / d**0.5)
            ids = [f"d{b}-{i}" for i in range(batch)]
            meta = [{"year": 2000 + (b + i) % 25, "lang": langs[i % 4], "source": f"s{b % 97}"}
                    for i in range(batch)]  # fmt: skip
            t = time.perf_counter()
            col.add(x, ids=ids, texts=texts, metadata=meta)
            times.append(time.perf_counter() - t)
            added += batch
            if (b + 1) % 100 == 0:
                log(f"  ingest: {added:,} rows, {batch * 100 / sum(times[-100:]):,.0f} vectors/s "
                    "over the last 100 batches")  # fmt: skip
        segments = len(col.segments())
        t = time.perf_counter()
        compacted = col.compact()
        compact_s = time.perf_counter() - t
    log(f"  compaction of {segments} segments: {compact_s:.1f} s ({compacted})")
    col.close()
    first, last = sum(times[:10]), sum(times[-10:])
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {
        "rows": added, "batch": batch, "vectors_per_s": added / sum(times),
        "first10_s": first, "last10_s": last, "last_over_first": last / first,
        "per_100_batches_vps": [batch * len(times[s : s + 100]) / sum(times[s : s + 100])
                                for s in range(0, len(times), 100)],
        "bytes_on_disk": size, "segments_before_compaction": segments,
        "compact_s": compact_s,
    }  # fmt: skip


OPEN_CHILD = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np, psutil
    from vecpress.collection import Collection
    t1 = time.perf_counter()
    col = Collection.open(sys.argv[1])
    t2 = time.perf_counter()
    rss_open = psutil.Process().memory_info().rss
    q = np.load(sys.argv[2])
    res = col.search(q, 10, filter={"lang": "en"})
    t3 = time.perf_counter()
    res = col.search(q, 10)
    t4 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "first_search_s": t3 - t2,
                      "second_search_s": t4 - t3, "rss_open": rss_open,
                      "rss_after_search": psutil.Process().memory_info().rss,
                      "count": len(col), "segments": len(col.segments())}))
    """
)


def measure_open(path: Path, queries: np.ndarray, work: Path) -> dict:
    qfile = work / "q.npy"
    np.save(qfile, queries[:1])
    out = {}
    for attempt in ("cold", "warm"):  # the second run finds numba's cache warm
        env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-c", OPEN_CHILD, str(path), str(qfile)],
                              capture_output=True, text=True, check=True, env=env)  # fmt: skip
        out[attempt] = json.loads(proc.stdout.strip().splitlines()[-1])
        log(f"  open ({attempt}): {out[attempt]}")
    return out


def replot(json_path: str, png_path: str) -> None:
    """Draw the plot of a finished run again from its JSON (``--replot RUN.json OUT.png``)."""
    plot(json.loads(Path(json_path).read_text())["filtered"], Path(png_path))


def report(results: dict) -> str:
    env = results["env"]
    lines = [f"# Collections benchmark ({env['date']})", "",
             f"CPU: {env['cpu']}; {env['versions']}; git {env['git']}", "",
             f"Command: `{env['command']}`", ""]  # fmt: skip
    if "filtered" in results:
        lines += ["## Filtered search (recall@10 vs the exact filtered top 10; queries/s, "
                  "1 thread, all queries in one call)", "",
                  "| index | selectivity | allowed | vp Collection recall (unfiltered) | "
                  "vp Index recall | faiss recall (unfiltered) | vp Collection q/s | "
                  "vp Index q/s | faiss q/s | vp/faiss q/s | 1-query p50 ms vp / faiss | "
                  "vp first query ms |",
                  "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
        for r in results["filtered"]:
            lines.append(
                f"| {r['kind']} | {r['selectivity']:.1%} | {r['allowed']:,} | "
                f"{r['vp_collection_recall']:.3f} ({r['vp_collection_unfiltered']:.3f}) | "
                f"{r['vp_index_recall']:.3f} | "
                f"{r['faiss_recall']:.3f} ({r['faiss_unfiltered']:.3f}) | "
                f"{r['vp_collection_qps']:,.0f} | {r['vp_index_qps']:,.0f} | "
                f"{r['faiss_qps']:,.0f} | {r['vp_collection_qps'] / r['faiss_qps']:.2f} | "
                f"{r['vp_collection_1q_ms']:.2f} / {r['faiss_1q_ms']:.2f} | "
                f"{r['vp_collection_1q_cold_ms']:.1f} |"
            )
        lines.append("")
    if "ingest" in results:
        g = results["ingest"]
        lines += ["## Ingest", "",
                  f"{g['rows']:,} vectors in batches of {g['batch']:,}, each committed: "
                  f"**{g['vectors_per_s']:,.0f} vectors/s**; first 10 batches "
                  f"{g['first10_s']:.3f} s, last 10 {g['last10_s']:.3f} s "
                  f"(ratio {g['last_over_first']:.2f}); {g['bytes_on_disk'] / 2**20:,.0f} MiB "
                  f"on disk. compact() of the {g['segments_before_compaction']:,} segments "
                  f"into one: {g['compact_s']:.1f} s.", "",
                  "vectors/s per 100 batches: "
                  + ", ".join(f"{v:,.0f}" for v in g["per_100_batches_vps"]), ""]  # fmt: skip
    if "open" in results:
        for k, o in results["open"].items():
            lines.append(
                f"Open ({k}): open {o['open_s'] * 1e3:.1f} ms, first (filtered) search "
                f"{o['first_search_s'] * 1e3:.1f} ms, second {o['second_search_s'] * 1e3:.1f} ms, "
                f"RSS after open {o['rss_open'] / 2**20:.0f} MiB, after searching "
                f"{o['rss_after_search'] / 2**20:.0f} MiB ({o['count']:,} documents, "
                f"{o['segments']} segments)."
            )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> bool:
    """Recall@10 and queries/s against selectivity, vecpress and faiss, flat and IVF: one
    PNG of two panels (``False`` without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot (pip install '.[bench]')")
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"flat": "-", "ivf": "--"}
    for kind in ("flat", "ivf"):
        rs = [r for r in rows if r["kind"] == kind]
        if not rs:
            continue
        sel = [100 * r["selectivity"] for r in rs]
        ls = styles[kind]
        left.plot(sel, [r["vp_collection_recall"] for r in rs], "o" + ls, color="C0",
                  label=f"vecpress {kind}")  # fmt: skip
        left.plot(sel, [r["faiss_recall"] for r in rs], "s" + ls, color="C3",
                  label=f"faiss IDSelector {kind}")  # fmt: skip
        left.axhline(rs[0]["vp_collection_unfiltered"], color="C0", ls=ls, lw=0.8, alpha=0.5)
        right.plot(sel, [r["vp_collection_qps"] for r in rs], "o" + ls, color="C0",
                   label=f"vecpress Collection {kind}")  # fmt: skip
        right.plot(sel, [r["vp_index_qps"] for r in rs], "^" + ls, color="C2",
                   label=f"vecpress Index(allow=) {kind}")  # fmt: skip
        right.plot(sel, [r["faiss_qps"] for r in rs], "s" + ls, color="C3",
                   label=f"faiss IDSelector {kind}")  # fmt: skip
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("selectivity: share of documents the filter allows (%)")
        ax.grid(True, which="both", alpha=0.3)
    left.set_ylabel("recall@10 vs the exact filtered top 10")
    left.set_title("Filtered recall (thin lines: vecpress unfiltered)")
    left.legend(fontsize=8)
    right.set_yscale("log")
    right.set_ylabel("queries/s, 1 thread, 1,000 queries a call")
    right.set_title("Filtered throughput")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--nlist", type=int, default=256)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--ingest-rows", type=int, default=1_000_000)
    p.add_argument("--parts", default="filtered,ingest,open")
    p.add_argument("--quick", action="store_true", help="smoke test: small sets")
    p.add_argument("--minilm-dir", default=str(Path.home() / ".cache/vecpress/minilm"))
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument("--replot", nargs=2, metavar=("RUN_JSON", "OUT_PNG"),
                   help="only draw the plot of a finished run")  # fmt: skip
    args = p.parse_args(argv)
    if args.replot:
        replot(*args.replot)
        return 0
    if args.quick:
        args.queries, args.ingest_rows, args.nlist = 100, 30_000, 32
    data = common.load_minilm(Path(args.minilm_dir))
    if data is None:
        return 1
    if args.quick:
        data.base = data.base[:20_000]
    import latency

    env = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpu": common.cpu_model(),
        "git": common.git_state(), "versions": latency._versions(),
        "command": "python benchmarks/collection.py " + " ".join(argv or sys.argv[1:]),
        "data": data.description,
    }  # fmt: skip
    results: dict = {"env": env}
    parts = args.parts.split(",")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = time.strftime("%Y-%m-%d") + ("-quick" if args.quick else "")

    def write() -> None:
        (out / f"collection-{tag}.json").write_text(json.dumps(results, indent=1))
        (out / f"collection-{tag}.md").write_text(report(results))

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "filtered" in parts:
            results["filtered"] = measure_filtered(data, args, work)
            write()
            plot(results["filtered"], out / f"collection-filtered-{tag}.png")
        if "ingest" in parts:
            log(f"ingest of {args.ingest_rows:,} rows ...")
            results["ingest"] = ingest(data, args, work / "ingest")
            write()
            if "open" in parts:
                results["open"] = measure_open(work / "ingest", data.queries, work)
                write()
    log(f"report: {out / f'collection-{tag}.md'}")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
