"""Measure opening a large index file and answering its first query (goal: < 50 ms at 1M).

Builds (or, with ``--reuse``, finds in ``--dir``) two indexes of ``--n`` random
Gaussian vectors (default 1,000,000 x 384, spec ``center,hd2,rq4``, cosine): a
flat one and an IVF one (``--ivf 1024``; ``--ivf 0`` skips it), saved with
``--block-size`` (default: vecpress's, 1 MiB). Before any timing, the numba
kernels are compiled on small memory-mapped indexes of the same spec (flat and
IVF), so the first query of a big file measures the file, not the compiler.
Then, each as the median of ``--repeats`` runs, for each file:

* ``open(mmap=True)`` -- header, layout, codec and block checksums only;
* ``open(mmap=False)`` -- reads and checks the whole file;
* the first single query (``k=10``; IVF: the default ``nprobe = nlist / 64``)
  after a memory-mapped open: format 3 verifies the blocks the search reads
  (flat: all of ``codes``; IVF: the probed lists'; the result rows' ids);
* a second, different query on an index the first query has just used: flat,
  every block is verified already (the search alone); IVF, it probes other
  lists, so it verifies their blocks in turn;
* ``verify()`` on a freshly memory-mapped index (every block, unique ids).

The peer, in the same run: faiss's ``SQ4`` and ``IVF<nlist>,SQ4`` (``--peer``)
on the same Gaussian rows normalised, read with faiss's memory-mapping flags
(``IO_FLAG_MMAP_IFC`` flat, ``IO_FLAG_MMAP`` IVF), same ``nprobe`` and threads;
faiss keeps no checksums, so its first query is the floor a verifying format
is measured against.

Each timing is taken "warm" (the file in the page cache, as right after a
save) and "cold" (before every run the file's pages are dropped from the page
cache with ``posix_fadvise(DONTNEED)``, which needs no root; pages another
mapping still holds may survive, and the VM's host may still cache the disk,
so this is "cold-ish"). Only the call named in the row is inside the timer:
the index of a "first query" row is opened before the cache is dropped.

Run: ``python benchmarks/open_time.py [--n 1000000] [--d 384] [--spec center,hd2,rq4]
[--ivf 1024] [--dir DIR --keep --reuse]``
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import vecpress
from vecpress.files import storage


def drop_page_cache(path: str) -> None:
    """Ask the kernel to evict the file's clean pages (best effort, no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def build(n: int, d: int, spec: str, metric: str, ivf, batch: int, seed: int) -> vecpress.Index:
    """An index of n Gaussian vectors, added in batches (bounded memory)."""
    rng = np.random.default_rng(seed)
    index = vecpress.Index(spec, metric=metric, seed=seed, ivf=ivf)
    t0 = time.perf_counter()
    if ivf:  # k-means on a sample first, so each batch is assigned to the final lists
        index.train(rng.standard_normal((min(n, index.train_rows), d), dtype=np.float32))
    for start in range(0, n, batch):
        rows = min(batch, n - start)
        index.add(rng.standard_normal((rows, d), dtype=np.float32))
        done = start + rows
        rate = done / (time.perf_counter() - t0)
        print(f"\r  added {done:,} / {n:,} ({rate:,.0f} vectors/s)", end="", flush=True)
    print()
    return index


def build_faiss(n: int, d: int, key: str, ivf, batch: int, seed: int, path: str) -> None:
    """The peer: faiss's ``index_factory(d, key)`` (inner product) of the same Gaussian rows as
    :func:`build` (the same random stream), normalised for cosine, written to ``path``."""
    import faiss

    rng = np.random.default_rng(seed)
    index = faiss.index_factory(d, key, faiss.METRIC_INNER_PRODUCT)
    train = None
    if ivf:
        train = rng.standard_normal((min(n, 100_000), d), dtype=np.float32)
    for start in range(0, n, batch):
        rows = rng.standard_normal((min(batch, n - start), d), dtype=np.float32)
        faiss.normalize_L2(rows)
        if not index.is_trained:
            if train is None:
                train = rows
            faiss.normalize_L2(train)
            index.train(train)
        index.add(rows)
    faiss.write_index(index, path)


def faiss_open(path: str, ivf):
    """faiss's memory-mapped read (``IO_FLAG_MMAP``: inverted lists; ``IO_FLAG_MMAP_IFC``:
    flat codes); it checks no checksum."""
    import faiss

    return faiss.read_index(path, faiss.IO_FLAG_MMAP if ivf else faiss.IO_FLAG_MMAP_IFC)


def timed(setup, run, *, repeats: int, cold: bool, path: str) -> float:
    """Median seconds of ``run(setup())`` (only ``run`` is timed)."""
    times = []
    for _ in range(repeats):
        obj = setup()
        gc.collect()
        if cold:
            drop_page_cache(path)
        t0 = time.perf_counter()
        run(obj)
        times.append(time.perf_counter() - t0)
        del obj
    return statistics.median(times)


def compile_kernels(spec: str, metric: str, d: int, folder: str) -> None:
    """Run every search path once on small memory-mapped indexes (numba compiles here)."""
    x = np.random.default_rng(5).standard_normal((4000, d), dtype=np.float32)
    for ivf in (None, 4):
        index = vecpress.Index(spec, metric=metric, ivf=ivf)
        index.add(x)
        path = os.path.join(folder, f"warmup{ivf}.vpi")
        index.save(path)
        small = vecpress.open(path)
        small.search(x[:1], 10)
        small.search(x[:3], 10)
        small.verify()
        os.unlink(path)


def verified_mib(index: vecpress.Index) -> str:
    """What the memory-mapped index has verified so far: blocks and MiB per section."""
    check = index._pending_check
    if check is None or not hasattr(check, "_state"):
        return "all"
    parts = []
    for name, count in check._count.items():
        first = check._first[name]
        done = int((check._state[first : first + count] == 2).sum())
        size = check._sections[name][0].size
        mib = min(done * check.block_size, size) / 2**20
        parts.append(f"{name} {done}/{count} blocks ({mib:.1f} MiB)")
    return ", ".join(parts)


def environment() -> list[str]:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln), "?"
        )
    except OSError:
        model = platform.processor() or "?"
    import numba

    return [
        f"date {time.strftime('%Y-%m-%d %H:%M')}, CPU {model} ({os.cpu_count()} logical CPUs), "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
        f"vecpress {vecpress.__version__}, format {storage.FORMAT_VERSION}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    ap.add_argument("--d", type=int, default=384, help="dimension")
    ap.add_argument("--spec", default="center,hd2,rq4")
    ap.add_argument("--metric", default="cosine", choices=("cosine", "ip", "l2"))
    ap.add_argument("--ivf", type=int, default=1024, help="lists of the IVF file (0: none)")
    ap.add_argument("--block-size", type=int, default=storage.BLOCK_SIZE)
    ap.add_argument("--repeats", type=int, default=5, help="runs per timing (median)")
    ap.add_argument("--batch", type=int, default=100_000, help="vectors per add() call")
    ap.add_argument("--dir", default=None, help="where to write the files (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the files afterwards")
    ap.add_argument("--reuse", action="store_true", help="reuse matching files in --dir")
    ap.add_argument("--threads", type=int, default=None, help="vecpress kernel threads")
    ap.add_argument(
        "--peer",
        default="SQ4",
        help="the faiss codec of the peer files (flat and IVF<ivf>,<peer>; '' for none)",
    )
    args = ap.parse_args()
    if args.threads:
        vecpress.set_num_threads(args.threads)
    if args.peer:
        import faiss

        faiss.omp_set_num_threads(vecpress.get_num_threads())

    folder = args.dir or tempfile.mkdtemp(prefix="vecpress-open-")
    os.makedirs(folder, exist_ok=True)
    kinds = [("flat", None)] + ([(f"ivf{args.ivf}", args.ivf)] if args.ivf else [])
    files, peers = {}, {}
    try:
        for kind, ivf in kinds:
            tag = f"{args.spec.replace(',', '_')}_{args.metric}_{args.n}x{args.d}_{kind}"
            path = os.path.join(folder, f"{tag}_b{args.block_size}.vpi")
            if args.reuse and os.path.exists(path):
                print(f"reusing {path}")
            else:
                print(f"building {args.n:,} x {args.d} ({args.spec}, {args.metric}, {kind})")
                t0 = time.perf_counter()
                index = build(args.n, args.d, args.spec, args.metric, ivf, args.batch, seed=0)
                build_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                storage.save(index, path, block_size=args.block_size)
                print(f"  build {build_s:.1f} s, save {time.perf_counter() - t0:.2f} s")
                del index
                gc.collect()
            files[kind] = path
        for _, ivf in kinds if args.peer else []:
            key = f"IVF{ivf},{args.peer}" if ivf else args.peer
            path = os.path.join(folder, f"faiss_{key.replace(',', '_')}_{args.n}x{args.d}.index")
            if not (args.reuse and os.path.exists(path)):
                print(f"building the faiss peer {key}")
                build_faiss(args.n, args.d, key, ivf, args.batch, 0, path)
            peers[f"faiss {key}"] = (path, ivf)

        compile_kernels(args.spec, args.metric, args.d, folder)
        q = np.random.default_rng(1).standard_normal((1, args.d), dtype=np.float32)
        q2 = np.random.default_rng(2).standard_normal((1, args.d), dtype=np.float32)
        results, notes = [], []
        for kind, path in files.items():

            def nothing():
                return None

            def mapped(path=path):
                return vecpress.open(path, mmap=True)

            def searched(path=path):
                index = vecpress.open(path, mmap=True)
                index.search(q, 10)
                return index

            rows = [
                ("open(mmap=True)", nothing, lambda _, p=path: vecpress.open(p, mmap=True)),
                ("open(mmap=False)", nothing, lambda _, p=path: vecpress.open(p, mmap=False)),
                ("first query after mmap open", mapped, lambda ix: ix.search(q, 10)),
                ("second query (another one)", searched, lambda ix: ix.search(q2, 10)),
                ("verify() after mmap open", mapped, lambda ix: ix.verify()),
            ]
            for name, setup, run in rows:
                warm = timed(setup, run, repeats=args.repeats, cold=False, path=path)
                cold = timed(setup, run, repeats=args.repeats, cold=True, path=path)
                results.append((kind, name, warm, cold))
            probe = vecpress.open(path)
            probe.search(q, 10)
            size = os.path.getsize(path)
            notes.append(
                f"{kind}: file {size:,} bytes ({size / 2**20:,.1f} MiB); the first query "
                f"verified {verified_mib(probe)}"
            )
        for kind, (path, ivf) in peers.items():
            qn = q / np.linalg.norm(q)
            qn2 = q2 / np.linalg.norm(q2)
            nprobe = max(1, round(ivf / 64)) if ivf else None  # vecpress's default

            def opened(path=path, ivf=ivf, nprobe=nprobe):
                index = faiss_open(path, ivf)
                if nprobe:
                    index.nprobe = nprobe
                return index

            def searched_peer(opened=opened, qn=qn):
                index = opened()
                index.search(qn, 10)
                return index

            rows = [
                ("open (mmap)", lambda: None, lambda _, p=path, i=ivf: faiss_open(p, i)),
                ("first query after mmap open", opened, lambda ix, qn=qn: ix.search(qn, 10)),
                ("second query (another one)", searched_peer, lambda ix, q=qn2: ix.search(q, 10)),
            ]
            for name, setup, run in rows:
                warm = timed(setup, run, repeats=args.repeats, cold=False, path=path)
                cold = timed(setup, run, repeats=args.repeats, cold=True, path=path)
                results.append((kind, name, warm, cold))
            size = os.path.getsize(path)
            notes.append(f"{kind}: file {size:,} bytes ({size / 2**20:,.1f} MiB), no checksums")

        print()
        for line in environment():
            print(line)
        print(
            f"n = {args.n:,}, d = {args.d}, spec {args.spec}, metric {args.metric}, blocks of "
            f"{args.block_size:,} bytes, kernel threads {vecpress.get_num_threads()}; "
            f"median of {args.repeats} runs"
        )
        for line in notes:
            print(line)
        print()
        print(f"| {'index':<22} | {'operation':<30} | {'warm (ms)':>10} | {'cold (ms)':>10} |")
        print(f"|{'-' * 24}|{'-' * 32}|{'-' * 12}|{'-' * 12}|")
        for kind, name, warm, cold in results:
            print(f"| {kind:<22} | {name:<30} | {warm * 1e3:>10.2f} | {cold * 1e3:>10.2f} |")
        print()
        for kind, name, warm, cold in results:
            if name.startswith("first query"):
                verdict = "meets" if max(warm, cold) < 0.05 else "misses"
                print(
                    f"{kind}: first query {warm * 1e3:.1f} ms warm, {cold * 1e3:.1f} ms cold: "
                    f"{verdict} the 50 ms goal"
                )
    finally:
        kept = [*files.values(), *(p for p, _ in peers.values())]
        if args.keep or args.reuse:
            print(f"kept {', '.join(kept)}")
        elif args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            for p in kept:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)


if __name__ == "__main__":
    sys.exit(main())
