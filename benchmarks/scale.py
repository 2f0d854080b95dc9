"""Building past memory (issue 18): a streaming build of 10,000,000 x 384 from disk, its
rows/s and peak memory, against the in-memory encode rate and against faiss building
the same file the same way, in the same run.

**Data** (``--rows``, default 10,000,000, written once to ``--data``): rows of the MiniLM
set (``sentences.py``'s 100,000 base passages) drawn at random with Gaussian noise of
norm 0.1 added, then L2-normalised (embedding-like: the set's spectrum, no exact
duplicates); a ``.npy`` of ``rows x 384`` float32 (15.4 GB at 10 M). Without the MiniLM
set, the synthetic anisotropic set of ``common.make_synthetic`` at d = 384.

**vecpress, streaming**: ``vecpress.build_index(file, out, "hd2,rq4", "cosine",
chunk_bytes=256 MiB)`` in a fresh process (training sample: 100,000 rows drawn across
the file in runs of 16; chunks read past the page cache, the next one on a thread; the
codes written in place in the new index file, its header and checksums at the end).
Reported: wall time, rows/s over the whole build, the encode phase's rows/s (from the
progress callback: chunks 2..last), the final write's seconds, and the process's peak
resident set (``VmHWM``).

**In-memory encode rate** (the reference of the issue's done-when): the first
``--memory-rows`` rows (default 1,000,000) read into memory in this process, an index
of the same spec trained on 100,000 of them, then ``Index.add`` in batches of
``ADD_CHUNK`` rows timed; the same threads.

**faiss (the peer), streaming**: ``index_factory(384, "RR,RaBitQ4", IP)`` (a random
rotation and 4-bit RaBitQ codes, the nearest faiss analogue of ``hd2,rq4``) in a fresh
process: trained on the same 100,000 rows, then ``add`` of the same 256 MiB chunks read
the same way, then ``write_index``: faiss's own pattern for an index built from data
larger than memory (its codes are held in memory until written).

Usage: ``python benchmarks/scale.py [--rows N] [--data PATH] [--threads T]`` (needs
``pip install ".[bench]"``; the data file is kept for the next run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

import common
from common import HERE, log

SPEC = "hd2,rq4"
FAISS_KEY = "RR,RaBitQ4"
D = 384
TRAIN_ROWS = 100_000
WRITE_ROWS = 100_000


def make_data(path: Path, n: int, seed: int = 0) -> str:
    """Write the benchmark's ``n x 384`` file (module docstring); returns its description."""
    from tqdm import tqdm

    ds = common.load_minilm(Path.home() / ".cache" / "vecpress" / "minilm")
    rng = np.random.default_rng(seed)
    if ds is not None:
        base = ds.base
        desc = (f"MiniLM base rows (100,000 x 384, `benchmarks/sentences.py`) drawn at random "
                f"with Gaussian noise of norm 0.1, L2-normalised, seed {seed}")  # fmt: skip
    else:
        base = common.make_synthetic(d=D, n_base=100_000, n_queries=1).base
        desc = (
            f"the synthetic anisotropic 384-d set (common.make_synthetic) with noise, seed {seed}"
        )
    if path.exists() and path.stat().st_size >= n * D * 4:
        return desc
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f, tqdm(total=n, desc="writing data", unit="row") as bar:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (n, D)}
        )
        for s in range(0, n, WRITE_ROWS):
            m = min(WRITE_ROWS, n - s)
            noise = rng.standard_normal((m, D), np.float32) * np.float32(0.1 / np.sqrt(D))
            rows = base[rng.integers(0, base.shape[0], m)] + noise
            f.write(common.normalize(rows).tobytes())
            bar.update(m)
    os.replace(tmp, path)
    return desc


CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    which, src_path, out, chunk, spec, key = sys.argv[1:7]
    chunk = int(chunk)
    t0 = time.perf_counter()
    marks = []
    from vecpress.files.sources import VectorSource
    from vecpress.search.index import training_rows
    src = VectorSource.open(src_path)
    if which == "vecpress":
        import vecpress
        index = vecpress.build_index(src, out, spec, "cosine", chunk_bytes=chunk,
                                     progress=lambda m: marks.append((time.perf_counter(), m)))
        codes = index.memory["codes"] * len(index)
    else:
        import faiss
        index = faiss.index_factory(src.d, key, faiss.METRIC_INNER_PRODUCT)
        index.train(src.take(training_rows(src.n, 100_000, 0)))
        for lo, x in src.chunks(chunk):
            index.add(x)
            marks.append((time.perf_counter(), x.shape[0]))
        faiss.write_index(index, out)
        codes = index.index.sa_code_size() * index.ntotal if hasattr(index, "index") else 0
    t1 = time.perf_counter()
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    print(json.dumps({"t0": t0, "t1": t1, "marks": marks, "codes": int(codes),
                      "peak": int(status.split()[0]) * 1024}))
""")


def streamed(which: str, data: Path, out: Path, chunk_bytes: int, n_threads: int) -> dict:
    """Run one streaming build in a fresh process; its timings and peak memory."""
    env = {**os.environ, "OMP_NUM_THREADS": str(n_threads), "NUMBA_NUM_THREADS": str(n_threads),
           "OPENBLAS_NUM_THREADS": str(n_threads)}  # fmt: skip
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", CHILD, which, str(data), str(out), str(chunk_bytes), SPEC,
           FAISS_KEY]  # fmt: skip
    log(f"{which}: streaming build of {data} ...")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{which} build failed:\n{done.stderr[-3000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    marks = r["marks"]
    n = sum(m for _, m in marks)
    wall = r["t1"] - r["t0"]
    (t_first, m_first), (t_last, _) = marks[0], marks[-1]
    encode_rate = (n - m_first) / (t_last - t_first) if len(marks) > 1 else float("nan")
    res = {
        "library": which, "rows": n, "wall_s": wall, "rows_per_s": n / wall,
        "encode_rows_per_s": encode_rate, "until_first_chunk_s": t_first - r["t0"],
        "write_s": r["t1"] - t_last, "peak_bytes": r["peak"], "codes_bytes": r["codes"],
        "file_bytes": out.stat().st_size,
    }  # fmt: skip
    log(f"{which}: {n:,} rows in {wall:.1f} s = {n / wall:,.0f} rows/s; encode phase "
        f"{encode_rate:,.0f} rows/s; peak RSS {r['peak'] / 2**20:,.0f} MiB")  # fmt: skip
    out.unlink(missing_ok=True)
    return res


def in_memory(data: Path, rows: int, n_threads: int) -> dict:
    """``Index.add`` of ``rows`` rows held in memory (the in-memory encode rate), and
    faiss's ``add`` of the same rows."""
    import faiss

    import vecpress
    from vecpress.files.sources import VectorSource
    from vecpress.search.index import ADD_CHUNK, training_rows

    src = VectorSource.open(data)
    rows = min(rows, src.n)
    x = src.read(0, rows)
    sample = x[training_rows(rows, TRAIN_ROWS, 0)]
    out = {"rows": rows}
    with common.threads(n_threads):
        index = vecpress.Index(SPEC, "cosine").train(sample)
        t = time.perf_counter()
        for s in range(0, rows, ADD_CHUNK):
            index.add(x[s : s + ADD_CHUNK])
        out["vecpress_rows_per_s"] = rows / (time.perf_counter() - t)
        peer = faiss.index_factory(D, FAISS_KEY, faiss.METRIC_INNER_PRODUCT)
        peer.train(sample)
        t = time.perf_counter()
        for s in range(0, rows, ADD_CHUNK):
            peer.add(x[s : s + ADD_CHUNK])
        out["faiss_rows_per_s"] = rows / (time.perf_counter() - t)
    log(f"in memory ({rows:,} rows): vecpress add {out['vecpress_rows_per_s']:,.0f} rows/s, "
        f"faiss add {out['faiss_rows_per_s']:,.0f} rows/s")  # fmt: skip
    return out


def ray_part(data: Path, rows: int, n_queries: int, work: Path) -> dict:
    """Ray on this machine: ``vecpress.distributed.build`` with 1 and 2 encoding actors and
    ``ShardedSearcher`` with 1 and 2 actors (1 CPU and 1 kernel thread each), against
    the single process: ``build_collection`` and ``Collection.search`` with 1 thread."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    import vecpress
    from vecpress.distributed import ShardedSearcher
    from vecpress.distributed import build as dbuild
    from vecpress.files.sources import VectorSource

    src = VectorSource.open(data)
    rows = min(rows, src.n)
    pdir = work / "parquet"
    shutil.rmtree(pdir, ignore_errors=True)
    pdir.mkdir(parents=True)
    step = rows // 8
    for f, lo in enumerate(range(0, rows, step)):
        x = src.read(lo, min(rows, lo + step))
        ids = pa.array([f"d{i}" for i in range(lo, lo + x.shape[0])])
        vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), D)
        pq.write_table(pa.table({"vector": vec, "id": ids}), pdir / f"part-{f:02d}.parquet")
    files = sorted(str(p) for p in pdir.iterdir())
    queries = (
        src.read(rows, rows + n_queries) if src.n >= rows + n_queries else src.read(0, n_queries)
    )
    out: dict = {"rows": rows, "queries": int(queries.shape[0])}

    def timed(fn):
        t = time.perf_counter()
        r = fn()
        return r, time.perf_counter() - t

    one = work / "single"
    shutil.rmtree(one, ignore_errors=True)
    with common.threads(1):
        col, s = timed(lambda: vecpress.build_collection(files, one, spec=SPEC, id_column="id"))
        out["single_build_rows_per_s"] = rows / s
        col.search(queries[:10], 10)  # compiled and mapped
        _, s = timed(lambda: col.search(queries, 10))
        out["single_search_qps"] = queries.shape[0] / s
    log(f"single process: build {out['single_build_rows_per_s']:,.0f} rows/s, search "
        f"{out['single_search_qps']:,.0f} q/s (1 thread)")  # fmt: skip
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for actors in (1, 2):
            target = work / f"ray{actors}"
            shutil.rmtree(target, ignore_errors=True)
            _, s = timed(lambda a=actors, t=target: dbuild(
                files, t, spec=SPEC, id_column="id", num_workers=a,
                cpus_per_worker=1 if a == 1 else 0.5))  # fmt: skip
            out[f"ray{actors}_build_rows_per_s"] = rows / s
            with ShardedSearcher(one, num_actors=actors, num_cpus=1 if actors == 1 else 0.9) as ss:
                ss.search(queries[:10], 10)
                best = min(timed(lambda q=ss: q.search(queries, 10))[1] for _ in range(3))
            out[f"ray{actors}_search_qps"] = queries.shape[0] / best
            log(f"ray, {actors} actor(s): build {out[f'ray{actors}_build_rows_per_s']:,.0f} "
                f"rows/s, search {out[f'ray{actors}_search_qps']:,.0f} q/s")  # fmt: skip
            shutil.rmtree(target, ignore_errors=True)
    finally:
        ray.shutdown()
        shutil.rmtree(one, ignore_errors=True)
        shutil.rmtree(pdir, ignore_errors=True)
    return out


def ray_report(r: dict) -> str:
    lines = [
        "",
        f"Ray on this machine ({r['rows']:,} rows in 8 Parquet files; `{SPEC}`, flat; "
        f"{r['queries']:,} queries in one batch, k = 10; every actor 1 kernel thread; the "
        "single process 1 thread):",
        "",
        "| | build rows/s | batch search q/s |",
        "|---|--:|--:|",
        f"| single process (`build_collection`, `Collection.search`) | "
        f"{r['single_build_rows_per_s']:,.0f} | {r['single_search_qps']:,.0f} |",
    ]
    for a in (1, 2):
        lines.append(f"| Ray, {a} actor(s) | {r[f'ray{a}_build_rows_per_s']:,.0f} | "
                     f"{r[f'ray{a}_search_qps']:,.0f} |")  # fmt: skip
    b = r["ray2_build_rows_per_s"] / r["ray1_build_rows_per_s"]
    q = r["ray2_search_qps"] / r["ray1_search_qps"]
    lines += [
        "",
        f"- 2 actors / 1 actor: build {b:.2f}x (done-when >= 1.5), batch search {q:.2f}x "
        f"(done-when >= 1.4).",
        f"- The engine's overhead, 1 actor / single process: build "
        f"{r['ray1_build_rows_per_s'] / r['single_build_rows_per_s']:.2f}x, search "
        f"{r['ray1_search_qps'] / r['single_search_qps']:.2f}x.",
    ]
    return "\n".join(lines) + "\n"


def report_head(run: dict) -> str:
    return (
        f"Run {run['env']['date']} on {run['env']['cpu']}, {run['env']['versions']}; "
        f"{run['env']['git']}; load before: {run['env']['load']}.\n"
        f"Command: `python benchmarks/scale.py {run['argv']}`. Data: {run['data_desc']}.\n"
    )


def report(run: dict) -> str:
    mems, rows = run["in_memory"], run["streamed"]
    mem = {k: float(np.mean([m[k] for m in mems])) for k in mems[0]}
    spread = ", ".join(f"{m['vecpress_rows_per_s']:,.0f}" for m in mems)
    mib = 2**20
    lines = [
        f"Run {run['env']['date']} on {run['env']['cpu']}, {run['env']['versions']}; "
        f"{run['env']['git']}; load before: {run['env']['load']}.",
        f"Command: `python benchmarks/scale.py {run['argv']}`. Data: {run['rows']:,} x {D} "
        f"float32 ({run['rows'] * D * 4 / 2**30:.1f} GiB), {run['data_desc']}. Chunks of "
        f"{run['chunk_mb']} MiB, {run['threads']} thread(s).",
        "",
        f"In-memory encode rate ({mem['rows']:,.0f} rows in memory, `Index.add` in batches; "
        f"the mean of a measurement before the first build and one after the last): "
        f"vecpress `{SPEC}` {mem['vecpress_rows_per_s']:,.0f} rows/s ({spread}); faiss "
        f"`{FAISS_KEY}` {mem['faiss_rows_per_s']:,.0f} rows/s.",
        "",
        "| build | rows | wall s | rows/s (whole build) | encode phase rows/s | until first "
        "chunk s | final write s | peak RSS MiB | codes MiB | file MiB |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['library']} | {r['rows']:,} | {r['wall_s']:.1f} | {r['rows_per_s']:,.0f} | "
            f"{r['encode_rows_per_s']:,.0f} | {r['until_first_chunk_s']:.1f} | "
            f"{r['write_s']:.1f} | {r['peak_bytes'] / mib:,.0f} | {r['codes_bytes'] / mib:,.0f} | "
            f"{r['file_bytes'] / mib:,.0f} |"
        )
    fa = next((r for r in rows if r["library"] == "faiss"), None)
    ref = mem["vecpress_rows_per_s"]
    lines.append("")
    for i, vp in enumerate(r for r in rows if r["library"] == "vecpress"):
        bound = 2**30 + vp["codes_bytes"]
        held = "met" if vp["peak_bytes"] <= bound else "NOT met"
        lines += [
            f"- vecpress build {i + 1}: streaming / in-memory encode rate: whole build "
            f"{vp['rows_per_s'] / ref:.2f}, encode phase {vp['encode_rows_per_s'] / ref:.2f} "
            f"(done-when: >= 0.80); peak RSS {vp['peak_bytes'] / mib:,.0f} MiB against 1 GiB "
            f"+ codes = {bound / mib:,.0f} MiB: {held}.",
        ]
    if fa is not None:
        lines.append(
            f"- vecpress / faiss (same run, same chunks): whole-build rows/s "
            f"{vp['rows_per_s'] / fa['rows_per_s']:.2f}x, peak RSS "
            f"{vp['peak_bytes'] / fa['peak_bytes']:.2f}x."
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--data", type=Path, default=None, help="the data file (made if absent)")
    p.add_argument("--chunk-mb", type=int, default=256)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--memory-rows", type=int, default=1_000_000)
    p.add_argument("--no-faiss", action="store_true")
    p.add_argument("--remove-data", action="store_true", help="delete the data file at the end")
    p.add_argument("--parts", default="streaming,ray", help="streaming, ray or both")
    p.add_argument("--ray-rows", type=int, default=1_000_000)
    p.add_argument("--ray-queries", type=int, default=1_000)
    args = p.parse_args()
    data = args.data or Path.home() / ".cache" / "vecpress" / "scale" / f"base-{args.rows}.npy"
    env = _environment()
    desc = make_data(data, args.rows)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    work = data.parent / "scale-out.vpi"
    run = {
        "env": env, "argv": " ".join(sys.argv[1:]), "rows": args.rows, "data_desc": desc,
        "chunk_mb": args.chunk_mb, "threads": args.threads, "in_memory": [], "streamed": [],
    }  # fmt: skip
    chunk = args.chunk_mb << 20
    parts = set(args.parts.split(","))
    text = ""
    if "streaming" in parts:
        # in turn, twice for vecpress: the page cache holds part of the file, differently
        # for each run; the in-memory rate before the first build and after the last
        run["in_memory"].append(in_memory(data, args.memory_rows, args.threads))
        run["streamed"].append(streamed("vecpress", data, work, chunk, args.threads))
        if not args.no_faiss:
            run["streamed"].append(streamed("faiss", data, work, chunk, args.threads))
        run["streamed"].append(streamed("vecpress", data, work, chunk, args.threads))
        run["in_memory"].append(in_memory(data, args.memory_rows, args.threads))
        text = report(run)
    if "ray" in parts:
        run["ray"] = ray_part(data, args.ray_rows, args.ray_queries, data.parent / "ray")
        if not text:
            text = report_head(run)
        text += ray_report(run["ray"])
    stamp = time.strftime("%Y-%m-%d")
    name = "scale" if parts == {"streaming", "ray"} else f"scale-{'-'.join(sorted(parts))}"
    (out_dir / f"{name}-{stamp}.json").write_text(json.dumps(run, indent=1))
    (out_dir / f"{name}-{stamp}.md").write_text(text)
    print(text)
    if args.remove_data:
        data.unlink()
    return 0


def _environment() -> dict:
    import platform

    import faiss

    import vecpress

    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu": common.cpu_model(),
        "versions": f"python {platform.python_version()}, numpy {np.__version__}, faiss-cpu "
        f"{faiss.__version__}, vecpress {vecpress.__version__}",
        "git": common.git_state(),
        "load": common.load_average(),
    }


if __name__ == "__main__":
    raise SystemExit(main())
