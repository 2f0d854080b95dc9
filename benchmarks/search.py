"""Search benchmark: recall@10 vs queries/s of vecpress indexes against faiss and rabitqlib.

Every index of the grid below (:data:`GRID`) is built on the same data in the same run and
measured at each of its search-time parameter points (``rerank``, ``nprobe``,
``efSearch``):

* ``recall@10`` against the exact float32 top-10 (faiss ``IndexFlatIP``), by id;
* queries/s at 1 and 2 threads: ``search`` called on a whole batch of queries in one call
  (as users do), repeated until at least ``--min-time`` seconds and ``--min-calls`` calls;
  the best call counts (a shared machine only ever slows a call down), the median is kept
  in the JSON lines too;
* for flat indexes, single-query latency: ~200 queries one at a time, 1 thread (p50, p90);
* memory: analytic bytes per vector (what is counted is stated per library), the saved
  file's bytes per vector, the peak RSS of build + search above the RSS with the data
  loaded, and the RSS left once the input data is freed;
* the file: save size and open time (median of 5, warm page cache): vecpress
  ``open(path, mmap=True)`` and ``mmap=False``; faiss ``read_index`` with and without
  ``IO_FLAG_MMAP``; rabitqlib ``IvfIndex.load``.

Each index is built and measured in a fresh subprocess (``python search.py --child``), so
that its peak RSS is its own. It then evaluates the issue's done-when checks and prints a
PASS/FAIL table:

1. vecpress flat search with ``rerank`` reaches recall@10 >= 0.99 on GloVe-50 with a
   4-bit first stage;
2. at recall@10 0.90 and 0.95 on GloVe-50, vecpress IVF serves at least as many
   queries/s (1 thread) as the best faiss IVF index of no smaller bytes per vector;
   qps at a target recall = the best measured point of the index's curve with recall >=
   target (its Pareto frontier);
3. on the 384-d MiniLM set (1,000 queries, k = 10, 1 thread) a flat 4-bit vecpress index
   serves at least as many queries/s as rabitqlib's flat 4-bit scan at no lower recall.

Configurations that vecpress does not implement yet (``rerank_spec=``, ``ivf=`` raising
``NotImplementedError``) are listed as skipped; they run with no code change once they land.

Data: GloVe-50 and the 384-d MiniLM set, loaded by ``benchmarks/common.py``'s loaders.
rabitqlib's rotator does not accept d = 50, so it gets GloVe zero-padded to 64 dims (inner
products unchanged; its codes cover 64 dims).

Run::

    python benchmarks/search.py --quick            # smoke test, < 3 min
    python benchmarks/search.py --dataset glove50  # full GloVe-50 run
    python benchmarks/search.py --dataset minilm --threads 1

Output: ``benchmarks/results/search-<date>.jsonl``, ``search-<date>.md`` and one
``search-<date>-<dataset>.png`` per data set (``-quick`` is appended to the tag for
``--quick`` runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import itertools
import json
import math
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common
import vecpress

HERE = Path(__file__).resolve().parent


faiss = common.faiss
K = common.K
SEED = common.SEED

# ---------------------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------------------
NLIST = "{nlist}"  # filled in per data set (DATASETS[...]["nlist"], or QUICK_NLIST)
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128)
QUICK_NPROBES = (2, 16, 64)
RERANKS = (None, 20, 50, 100, 200)
IVF_RERANKS = (None, 20, 50, 100)
EF_SEARCH = (16, 32, 64, 128, 256)
QUICK_RERANKS = (None, 50)
QUICK_EF_SEARCH = (16, 64, 256)
RECALL_TARGETS = (0.90, 0.95)
FLAT_RERANK_TARGET = 0.99
FAISS_RABITQ_QB = 8  # faiss RaBitQ query bits, as in benchmarks/codecs.py
TRAIN_ROWS = 100_000  # fixed-seed base rows every library trains on
VP_METRIC = "cosine"  # the data is unit-norm: cosine = inner product


@dataclasses.dataclass
class Entry:
    """One index: build parameters and a grid of search parameters (their product)."""

    library: str  # "vecpress", "faiss" or "rabitqlib"
    key: str  # vecpress spec, faiss factory key, or rabitqlib "flat" / "IVF{nlist}"
    build: dict = dataclasses.field(default_factory=dict)
    search: dict = dataclasses.field(default_factory=dict)  # name -> values
    datasets: tuple[str, ...] = ("glove50",)
    quick: tuple[str, ...] = ()  # data sets on which it is part of --quick runs

    def resolved(self, nlist: int, quick: bool) -> Entry:
        def fill(v):
            return nlist if v == NLIST else v

        search = {
            k: (QUICK_NPROBES if quick and k == "nprobe" else v) for k, v in self.search.items()
        }
        if quick and "rerank" in search:
            search["rerank"] = tuple(r for r in search["rerank"] if r in QUICK_RERANKS)
        if quick and "efSearch" in search:
            search["efSearch"] = QUICK_EF_SEARCH
        return Entry(
            self.library,
            self.key.format(nlist=nlist),
            {k: fill(v) for k, v in self.build.items()},
            search,
            self.datasets,
            self.quick,
        )

    @property
    def points(self) -> list[dict]:
        names = list(self.search)
        return [
            dict(zip(names, vals, strict=True)) for vals in itertools.product(*self.search.values())
        ]

    @property
    def kind(self) -> str:
        if self.library == "vecpress":
            return "ivf" if self.build.get("ivf") else "flat"
        if self.library == "rabitqlib":
            return "ivf" if self.build.get("nlist", 1) > 1 else "flat"
        if "HNSW" in self.key:
            return "graph"
        return "ivf" if "IVF" in self.key else "flat"

    @property
    def label(self) -> str:
        if self.library == "vecpress":
            s = self.key
            if self.build.get("ivf"):
                s = f"IVF{self.build['ivf']},{s}"
            if self.build.get("rerank_spec"):
                s += f" + rerank {self.build['rerank_spec']}"
            return s
        if self.library == "rabitqlib":
            nl = self.build.get("nlist", 1)
            head = "flat (IvfIndex, 1 cluster)" if nl == 1 else f"IVF{nl}"
            return f"{head}, {self.build['nbits']} bits"
        if self.build.get("pad_to"):
            return f"{self.key} (d zero-padded to {self.build['pad_to']})"
        return self.key


def _vp(spec, datasets=("glove50",), quick=(), **build):
    search = {}
    if build.get("ivf"):
        search["nprobe"] = NPROBES
    if build.get("rerank_spec"):
        search["rerank"] = IVF_RERANKS if build.get("ivf") else RERANKS
    return Entry("vecpress", spec, build, search, datasets, quick)


GRID: list[Entry] = [
    # vecpress, flat
    _vp("hd2,rq4", ("glove50", "minilm"), quick=("glove50", "minilm")),
    _vp("center,hd2,rq4", ("glove50", "minilm"), quick=("minilm",)),
    # learned: principal axes, bits water-filled for scoring (4 bits per dimension on average)
    _vp("kl4", ("glove50", "minilm"), quick=("minilm",)),
    _vp("hd2,rq8"),
    _vp("hd2,rq4", rerank_spec="f32", quick=("glove50",)),
    _vp("hd2,rq4", rerank_spec="rq8"),
    _vp("center,hd2,rq4", rerank_spec="f32"),
    _vp("center,hd2,rq4", rerank_spec="rq8"),
    # vecpress, IVF
    _vp("hd2,rq4", ivf=NLIST, quick=("glove50",)),
    _vp("center,hd2,rq4", ivf=NLIST),
    _vp("hd2,rq8", ivf=NLIST),
    _vp("int8", ivf=NLIST, quick=("glove50",)),
    _vp("hd2,rq4", ivf=NLIST, rerank_spec="rq8", quick=("glove50",)),
    _vp("hd2,rq4", ivf=NLIST, rerank_spec="f32"),
    # faiss, flat
    Entry("faiss", "Flat", datasets=("glove50", "minilm"), quick=("glove50",)),
    Entry("faiss", "RR,RaBitQ4", datasets=("glove50", "minilm")),
    Entry("faiss", "PQ25x4fs"),
    Entry("faiss", "PQ50x4fs"),
    # faiss, IVF (same nprobe grid)
    Entry("faiss", "IVF{nlist},SQ8", search={"nprobe": NPROBES}, quick=("glove50",)),
    # faiss's SQ kernels are SIMD only where d is a multiple of 8: at d = 50 IVF,SQ8 scans
    # ~4.6x slower than the same data zero-padded to 56 (64 B/vector instead of 58)
    Entry("faiss", "IVF{nlist},SQ8", {"pad_to": 56}, {"nprobe": NPROBES}, quick=("glove50",)),
    Entry("faiss", "IVF{nlist},PQ25x4fs", search={"nprobe": NPROBES}),
    Entry("faiss", "IVF{nlist},PQ50x4fs", search={"nprobe": NPROBES}),
    Entry("faiss", "RR,IVF{nlist},RaBitQ4", search={"nprobe": NPROBES}, quick=("glove50",)),
    Entry("faiss", "RR,IVF{nlist},RaBitQfs4", search={"nprobe": NPROBES}),
    # faiss, graph
    Entry("faiss", "HNSW32,SQ8", search={"efSearch": EF_SEARCH}, quick=("glove50",)),
    # rabitqlib: IvfIndex with one cluster is its flat scan
    Entry(
        "rabitqlib",
        "flat",
        {"nlist": 1, "nbits": 4},
        {},
        ("glove50", "minilm"),
        ("glove50", "minilm"),
    ),
    Entry("rabitqlib", "IVF{nlist}", {"nlist": NLIST, "nbits": 4}, {"nprobe": NPROBES}),
]

DATASETS = {
    # recall on `recall_queries`, timing on the first `time_queries` of them (fewer for
    # slow points, never below `min_time_queries`)
    "glove50": {"nlist": 2048, "recall_queries": 10_000, "time_queries": 2_000},
    "minilm": {
        "nlist": 256,
        "recall_queries": 1_000,
        "time_queries": 1_000,
        "min_time_queries": 1_000,
    },
}
QUICK_BASE_ROWS = 100_000  # --quick: GloVe base cut to its first rows
QUICK_NLIST = 512


# ---------------------------------------------------------------------------------------
# small utilities
# ---------------------------------------------------------------------------------------
log = common.log


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    """This process's peak RSS: ``VmHWM`` (per address space, so it starts afresh at exec,
    unlike ``ru_maxrss``, which a child inherits from its parent at fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def vecpress_src_hash() -> str:
    """A short hash of the imported vecpress package's source (other work may edit it)."""
    import hashlib

    h = hashlib.sha1()
    root = Path(vecpress.__file__).resolve().parent
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def release_free_memory() -> None:
    """``gc`` and glibc ``malloc_trim(0)``, so that RSS shows live memory only."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        t = time.perf_counter()
        obj = fn()
        times.append(time.perf_counter() - t)
        del obj
    return statistics.median(times)


def time_calls(fn, min_time: float, min_calls: int, max_time: float) -> list[float]:
    """Durations of repeated ``fn()`` calls: at least ``min_calls`` and ``min_time`` s."""
    times: list[float] = []
    total = 0.0
    while len(times) < min_calls or total < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        total += times[-1]
        if total > max_time and len(times) >= 2:
            break
    return times


def zero_pad(x: np.ndarray, d: int) -> np.ndarray:
    """``x`` with zero columns appended up to ``d`` (inner products unchanged)."""
    if x.shape[1] == d:
        return np.ascontiguousarray(x, np.float32)
    out = np.zeros((x.shape[0], d), np.float32)
    out[:, : x.shape[1]] = x
    return out


def fmt_params(p: dict) -> str:
    return ", ".join(f"{k}={'–' if v is None else v}" for k, v in p.items()) or "–"


def _f(v, fmt: str, dash: str = "–") -> str:
    return common._f(v, fmt, dash)


# ---------------------------------------------------------------------------------------
# runners (in the child process): one per library, same interface
# ---------------------------------------------------------------------------------------
class VecpressRunner:
    counted = "code + 8-byte id (+ rerank tier), from `Index.bytes_per_vector`"

    def __init__(self, e: Entry, d: int) -> None:
        self.e, self.d = e, d
        self.index = None
        self.bytes_source = "Index.bytes_per_vector"

    def _new(self, with_ivf: bool = True):
        kw = {k: v for k, v in self.e.build.items() if k in ("rerank_spec", "ivf")}
        if not with_ivf:
            kw.pop("ivf", None)
        return vecpress.Index(self.e.key, metric=VP_METRIC, seed=0, **kw)

    def warm_up(self) -> None:
        """Compile the codec's kernels on tiny data (before the memory baseline)."""
        x = common.normalize(np.random.default_rng(0).standard_normal((2000, self.d)))
        ix = self._new(with_ivf=False)
        ix.add(x)
        first = self.e.points[0] if self.e.points else {}
        kw = {k: v for k, v in first.items() if k == "rerank"}
        ix.search(x[:20], K, **kw)

    def build(self, base: np.ndarray, train: np.ndarray) -> None:
        self.index = self._new()
        self.index.train(train)
        self.index.add(base)

    def prepare_queries(self, q: np.ndarray) -> np.ndarray:
        return q

    def searcher(self, params: dict, n_threads: int):
        index = self.index
        return lambda q: index.search(q, K, **params).ids

    def bytes_per_vector(self) -> float:
        bpv = getattr(self.index, "bytes_per_vector", None)
        if bpv is not None:
            return float(bpv)
        self.bytes_source = "computed here: code_size + 8 (+ rerank tier code_size)"
        total = self.index.codec.code_size + 8
        rs = self.e.build.get("rerank_spec")
        if rs:
            x = np.eye(self.d, dtype=np.float32)
            total += vecpress.Codec.from_spec(rs).fit(x).code_size
        return float(total)

    def save(self, path: str) -> None:
        self.index.save(path)

    def open_times(self, path: str, repeats: int) -> dict:
        return {
            "mmap_ms": 1e3 * median_time(lambda: vecpress.open(path, mmap=True), repeats),
            "in_memory_ms": 1e3 * median_time(lambda: vecpress.open(path, mmap=False), repeats),
        }

    def reopen_check(self, path: str, q: np.ndarray, params: dict) -> bool:
        """Whether a memory-mapped reopen returns the same ids as the built index."""
        opened = vecpress.open(path, mmap=True)
        a = opened.search(q, K, **params).ids
        b = self.index.search(q, K, **params).ids
        del opened
        return bool(np.array_equal(a, b))

    def close(self) -> None:
        self.index = None


class FaissRunner:
    counted = (
        "code bytes as stored (fast-scan: packed block bytes / 32); IVF adds an 8-byte id; "
        "HNSW adds its links, levels and offsets; flat indexes store no ids"
    )

    def __init__(self, e: Entry, d: int) -> None:
        self.e, self.d = e, d
        self.dp = int(e.build.get("pad_to", d))  # zero-padded dimension (same inner products)
        self.index = None
        self.bytes_source = "analytic (see 'counted')"

    def warm_up(self) -> None:
        pass

    def _inner(self, index=None):
        top = faiss.downcast_index(self.index if index is None else index)
        if isinstance(top, faiss.IndexPreTransform):
            return faiss.downcast_index(top.index)
        return top

    def _set_qb(self, index) -> None:
        inner = self._inner(index)
        if "RaBitQ" in type(inner).__name__ and hasattr(inner, "qb"):
            inner.qb = FAISS_RABITQ_QB

    def build(self, base: np.ndarray, train: np.ndarray) -> None:
        self.index = faiss.index_factory(self.dp, self.e.key, faiss.METRIC_INNER_PRODUCT)
        self._set_qb(self.index)
        self.index.train(zero_pad(train, self.dp))
        self.index.add(zero_pad(base, self.dp))

    def prepare_queries(self, q: np.ndarray) -> np.ndarray:
        return zero_pad(q, self.dp)

    def _apply(self, index, params: dict) -> None:
        ps = faiss.ParameterSpace()
        for name, value in params.items():
            ps.set_index_parameter(index, name, value)

    def searcher(self, params: dict, n_threads: int):
        index = self.index
        self._apply(index, params)
        return lambda q: index.search(q, K)[1]

    def bytes_per_vector(self) -> float:
        inner = self._inner()
        n = self.index.ntotal
        if isinstance(inner, faiss.IndexHNSW):
            h = inner.hnsw
            links = (h.neighbors.size() * 4 + h.levels.size() * 4 + h.offsets.size() * 8) / n
            return float(faiss.downcast_index(inner.storage).code_size + links)
        if "IVF" in self.e.key:
            ivf = faiss.extract_index_ivf(self.index)
            invl = faiss.downcast_InvertedLists(ivf.invlists)
            if hasattr(invl, "block_size") and hasattr(invl, "n_per_block"):
                code = invl.block_size / invl.n_per_block
            else:
                code = ivf.code_size
            return float(code + 8)
        if isinstance(inner, faiss.IndexFlat):
            return float(4 * self.dp)
        if isinstance(inner, faiss.IndexPQFastScan):  # packed 4-bit codes, M rounded up
            return float(inner.M2 * inner.pq.nbits / 8)
        return float(inner.code_size)

    def save(self, path: str) -> None:
        faiss.write_index(self.index, path)

    def open_times(self, path: str, repeats: int) -> dict:
        out = {"in_memory_ms": 1e3 * median_time(lambda: faiss.read_index(path), repeats)}
        try:
            out["mmap_ms"] = 1e3 * median_time(
                lambda: faiss.read_index(path, faiss.IO_FLAG_MMAP), repeats
            )
        except RuntimeError as ex:
            out["mmap_error"] = str(ex).strip().splitlines()[-1][:160]
        return out

    def reopen_check(self, path: str, q: np.ndarray, params: dict) -> bool | None:
        return None

    def close(self) -> None:
        self.index = None


class RabitqRunner:
    counted = "saved file bytes / n (codes, factors and ids as rabitqlib stores them)"

    def __init__(self, e: Entry, d: int) -> None:
        self.e, self.d = e, d
        self.dp = d if d % 64 == 0 else (d + 63) // 64 * 64  # FhtKacRotator: multiples of 64
        self.index = None
        self.file_bpv: float | None = None
        self.bytes_source = "file size / n"

    def warm_up(self) -> None:
        pass

    def _pad(self, x: np.ndarray) -> np.ndarray:
        return zero_pad(x, self.dp)

    def build(self, base: np.ndarray, train: np.ndarray) -> None:
        import rabitqlib

        nlist, nbits = int(self.e.build.get("nlist", 1)), int(self.e.build["nbits"])
        bp = self._pad(base)
        if nlist == 1:
            centroids = bp.mean(axis=0, keepdims=True)
            assign = np.zeros(bp.shape[0], np.uint32)
        else:  # k-means by faiss on the same training sample, nearest centroid by L2
            km = faiss.Kmeans(self.dp, nlist, niter=20, seed=SEED, verbose=False)
            km.train(self._pad(train))
            assign = km.index.search(bp, 1)[1][:, 0].astype(np.uint32)
            centroids = km.centroids
        self.index = rabitqlib.IvfIndex(self.dp, bp.shape[0], nlist, nbits, metric="ip")
        n_threads = vecpress.get_num_threads()
        self.index.build(bp, np.ascontiguousarray(centroids, np.float32), assign, n_threads)

    def prepare_queries(self, q: np.ndarray) -> np.ndarray:
        return self._pad(q)

    def searcher(self, params: dict, n_threads: int):
        index, nprobe = self.index, int(params.get("nprobe", 1))
        return lambda q: index.search(q, K, nprobe, None, n_threads)[0].astype(np.int64)

    def bytes_per_vector(self) -> float | None:
        return self.file_bpv  # set after save

    def save(self, path: str) -> None:
        self.index.save(path)
        self.file_bpv = os.path.getsize(path) / self.index.num_points

    def open_times(self, path: str, repeats: int) -> dict:
        import rabitqlib

        return {"in_memory_ms": 1e3 * median_time(lambda: rabitqlib.IvfIndex.load(path), repeats)}

    def reopen_check(self, path: str, q: np.ndarray, params: dict) -> bool | None:
        return None

    def close(self) -> None:
        self.index = None


RUNNERS = {"vecpress": VecpressRunner, "faiss": FaissRunner, "rabitqlib": RabitqRunner}


# ---------------------------------------------------------------------------------------
# one index, measured in the child process
# ---------------------------------------------------------------------------------------
def run_job(job: dict) -> dict:
    e = Entry(**{**job["entry"], "datasets": tuple(job["entry"]["datasets"])})
    data = Path(job["data_dir"])
    threads_list, tmax = job["threads"], max(job["threads"])
    out = {"status": "ok", "points": [], "load_start": loadavg(), "src_hash": vecpress_src_hash()}
    runner = RUNNERS[e.library](e, job["d"])
    out["bytes_counted"] = runner.counted
    try:
        with common.threads(tmax):
            runner.warm_up()
    except NotImplementedError as ex:
        return {**out, "status": "skipped", "note": f"NotImplementedError: {ex}"}
    base = np.load(data / "base.npy")
    queries = np.load(data / "queries.npy")
    gt = np.load(data / "gt.npy")
    train = base[np.load(data / "train_rows.npy")]
    n = base.shape[0]
    release_free_memory()
    rss_pre = rss_bytes()
    out["peak_reset"] = reset_peak_rss()
    t = time.perf_counter()
    try:
        with common.threads(tmax):
            runner.build(base, train)
    except NotImplementedError as ex:
        return {**out, "status": "skipped", "note": f"NotImplementedError: {ex}"}
    out["build_s"] = time.perf_counter() - t
    out["n"] = n
    out["build_threads"] = tmax
    out["peak_rss_build_mib"] = (peak_rss_bytes() - rss_pre) / 2**20
    release_free_memory()
    out["index_rss_mib"] = (rss_bytes() - rss_pre) / 2**20
    del train
    qall = runner.prepare_queries(queries)
    release_free_memory()
    rss_pre = rss_bytes()
    reset_peak_rss()
    probe = job["probe_queries"]
    for params in e.points or [{}]:
        out["points"].append(measure_point(runner, params, qall, gt, threads_list, job))
        p = out["points"][-1]
        if "recall" in p:
            qps = ", ".join(f"{t}T {p['qps'][str(t)]:,.0f}" for t in threads_list)
            log(f"    {fmt_params(params):22s} recall {p['recall']:.4f}  qps {qps}")
        else:
            log(f"    {fmt_params(params):22s} {p.get('skipped') or p.get('error')}")
    ok = [p for p in out["points"] if "recall" in p]
    if e.kind == "flat" and ok:
        fn = runner.searcher(ok[0]["params"], 1)
        with common.threads(1):
            fn(qall[:1])
            lat = []
            for i in range(min(job["latency_queries"], qall.shape[0])):
                t = time.perf_counter()
                fn(qall[i : i + 1])
                lat.append(time.perf_counter() - t)
        out["latency_us"] = {
            "params": ok[0]["params"],
            "p50": 1e6 * float(np.percentile(lat, 50)),
            "p90": 1e6 * float(np.percentile(lat, 90)),
            "queries": len(lat),
        }
    out["peak_rss_search_mib"] = (peak_rss_bytes() - rss_pre) / 2**20
    folder = tempfile.mkdtemp(prefix="vp-search-", dir=job.get("work_dir"))
    path = os.path.join(folder, "index.bin")
    try:
        t = time.perf_counter()
        runner.save(path)
        out["save_s"] = time.perf_counter() - t
        out["file_bytes"] = os.path.getsize(path)
        out["file_bytes_per_vector"] = out["file_bytes"] / n
        out["open"] = runner.open_times(path, job["open_repeats"])
        if ok:
            out["reopen_same_ids"] = runner.reopen_check(path, qall[:probe], ok[0]["params"])
    except NotImplementedError as ex:
        out["open"] = {"error": f"NotImplementedError: {ex}"}
    except Exception as ex:  # report, keep the search figures
        out["open"] = {"error": f"{type(ex).__name__}: {ex}"[:300]}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    bpv = runner.bytes_per_vector()
    out["bytes_per_vector"] = bpv
    out["bytes_source"] = runner.bytes_source
    out["load_end"] = loadavg()
    runner.close()
    return out


def measure_point(runner, params: dict, qall, gt, threads_list: list[int], job: dict) -> dict:
    rec: dict = {"params": params, "qps": {}, "qps_median": {}, "calls": {}}
    probe, tmax = job["probe_queries"], max(threads_list)
    n_all = qall.shape[0]
    try:
        with common.threads(1):
            fn = runner.searcher(params, 1)
            fn(qall[:probe])  # warm-up (compiles, allocates)
            t = time.perf_counter()
            fn(qall[:probe])
            per_q = (time.perf_counter() - t) / probe
        fit = int(job["call_budget"] / max(per_q, 1e-9)) // 100 * 100
        n_time = min(n_all, job["time_queries"], max(fit, job["min_time_queries"], probe))
        fit = int(job["eval_budget"] * tmax / max(per_q, 1e-9)) // 100 * 100
        n_rec = min(n_all, max(n_time, fit))
        with common.threads(tmax):
            ids = runner.searcher(params, tmax)(qall[:n_rec])
        per_query = common.recall_rows(np.asarray(ids, np.int64), gt[:n_rec])
        rec["recall"] = float(per_query.mean())
        rec["recall_se"] = float(per_query.std(ddof=1) / math.sqrt(n_rec)) if n_rec > 1 else 0.0
        if job["keep_hits"]:  # per-query hits, for paired comparisons (not in the JSON lines)
            rec["hits"] = np.rint(per_query * K).astype(int).tolist()
        rec["n_recall"] = n_rec
        rec["n_time"] = n_time
        qt = qall[:n_time]
        for nt in threads_list:
            with common.threads(nt):
                fn = runner.searcher(params, nt)
                fn(qt[:probe])
                times = time_calls(
                    lambda fn=fn: fn(qt), job["min_time"], job["min_calls"], job["max_time"]
                )
            rec["qps"][str(nt)] = n_time / min(times)
            rec["qps_median"][str(nt)] = n_time / statistics.median(times)
            rec["calls"][str(nt)] = len(times)
    except NotImplementedError as ex:
        rec["skipped"] = f"NotImplementedError: {ex}"
    except Exception as ex:
        rec["error"] = f"{type(ex).__name__}: {ex}"[:300]
    return rec


def child_main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    try:
        res = run_job(job)
    except Exception as ex:
        res = {"status": "error", "note": f"{type(ex).__name__}: {ex}"[:500], "points": []}
    Path(job["result"]).write_text(json.dumps(res, default=common._json_default))
    return 0


# ---------------------------------------------------------------------------------------
# curves and verdicts (in the parent)
# ---------------------------------------------------------------------------------------
def frontier(points: list[dict], nt: int) -> list[tuple[float, float, dict]]:
    """The Pareto frontier (recall, qps, params) at ``nt`` threads, by descending recall."""
    pts = sorted(
        ((p["recall"], p["qps"][str(nt)], p["params"]) for p in points if str(nt) in p["qps"]),
        key=lambda r: (-r[0], -r[1]),
    )
    out: list[tuple[float, float, dict]] = []
    for r, q, par in pts:
        if not out or q > out[-1][1]:
            out.append((r, q, par))
    return out


def qps_at(rec: dict, target: float, nt: int) -> tuple[float | None, dict | None, float | None]:
    """Best measured qps with recall >= target, its params, and a log-linear interpolation
    of qps at exactly ``target`` between the frontier points around it."""
    fr = frontier([p for p in rec["points"] if "recall" in p], nt)
    above = [f for f in fr if f[0] >= target]
    below = [f for f in fr if f[0] < target]
    if not above:
        return None, None, None
    best = max(above, key=lambda f: f[1])
    interp = best[1]
    if below:
        a, b = above[-1], below[0]  # lowest recall >= target, highest recall < target
        w = (target - b[0]) / (a[0] - b[0])
        interp = math.exp(math.log(b[1]) + w * (math.log(a[1]) - math.log(b[1])))
    return best[1], best[2], max(interp, best[1])


def verdicts(results: list[dict]) -> list[dict]:
    rows: list[dict] = []
    glove = [r for r in results if r["dataset"] == "glove50"]
    minilm = [r for r in results if r["dataset"] == "minilm"]
    ok = [r for r in glove if r["status"] == "ok"]
    # (1) flat + rerank, 4-bit first stage, recall >= 0.99
    if glove:
        cands = [
            r
            for r in glove
            if r["library"] == "vecpress"
            and r["kind"] == "flat"
            and r["build"].get("rerank_spec")
            and common.vecpress_config(r["key"]).bits == 4
        ]
        done = [r for r in cands if r["status"] == "ok"]
        row = {
            "check": 1,
            "what": f"vecpress flat, 4-bit first stage + rerank: recall@10 ≥ "
            f"{FLAT_RERANK_TARGET} on GloVe-50",
        }
        if not done:
            why = "; ".join(sorted({r.get("note", "") for r in cands})) or "no such index in grid"
            rows.append({**row, "status": "SKIP", "detail": f"not run: {why}"})
        else:
            best = None
            for r in done:
                for p in r["points"]:
                    if "recall" not in p or p["params"].get("rerank") is None:
                        continue
                    reach = p["recall"] >= FLAT_RERANK_TARGET
                    key = (reach, p["qps"].get("1", 0) if reach else p["recall"])
                    if best is None or key > best[0]:
                        best = (key, r, p)
            if best is None:
                rows.append({**row, "status": "FAIL", "detail": "no rerank point measured"})
            else:
                _, r, p = best
                rows.append(
                    {
                        **row,
                        "status": "PASS" if p["recall"] >= FLAT_RERANK_TARGET else "FAIL",
                        "detail": f"`{r['label']}` {fmt_params(p['params'])}: recall "
                        f"{p['recall']:.4f} (n={p['n_recall']}), {p['qps'].get('1', 0):,.0f} "
                        f"qps 1T, {r['bytes_per_vector']:.1f} B/vector",
                    }
                )
    # (2) IVF at equal recall, 1 thread
    if glove:
        vp_ivf = [r for r in ok if r["library"] == "vecpress" and r["kind"] == "ivf"]
        fa_ivf = [r for r in ok if r["library"] == "faiss" and r["kind"] == "ivf"]
        for target in RECALL_TARGETS:
            row = {
                "check": 2,
                "target": target,
                "what": f"vecpress IVF vs faiss IVF (≥ its B/vector), qps at recall@10 "
                f"{target:.2f}, 1 thread, GloVe-50",
            }
            if not vp_ivf:
                notes = {
                    r.get("note", "")
                    for r in glove
                    if r["library"] == "vecpress" and r["kind"] == "ivf"
                }
                why = "; ".join(sorted(notes)) or "no such index in grid"
                rows.append({**row, "status": "SKIP", "detail": f"not run: {why}"})
                continue
            subs = []
            for v in vp_ivf:
                vq, vpar, _ = qps_at(v, target, 1)
                rivals = [f for f in fa_ivf if f["bytes_per_vector"] >= v["bytes_per_vector"]]
                fbest = None
                for f in rivals:
                    fq, fpar, _ = qps_at(f, target, 1)
                    if fq is not None and (fbest is None or fq > fbest[0]):
                        fbest = (fq, f, fpar)
                if vq is None:
                    status = "FAIL"
                elif not rivals:
                    status = "NO RIVAL"  # no faiss IVF index costs as much: nothing to compare
                else:
                    status = "PASS" if fbest is None or vq >= fbest[0] else "FAIL"
                subs.append(
                    {
                        "vecpress": v["label"],
                        "vp_bytes": v["bytes_per_vector"],
                        "vp_qps": vq,
                        "vp_params": vpar,
                        "faiss": fbest[1]["label"] if fbest else None,
                        "faiss_bytes": fbest[1]["bytes_per_vector"] if fbest else None,
                        "faiss_qps": fbest[0] if fbest else None,
                        "faiss_params": fbest[2] if fbest else None,
                        "rivals": len(rivals),
                        "status": status,
                    }
                )
            win = [s for s in subs if s["status"] == "PASS"]
            detail = "; ".join(_ivf_detail(s) for s in (win or subs))
            rows.append(
                {**row, "status": "PASS" if win else "FAIL", "detail": detail, "rows": subs}
            )
    # (3) MiniLM flat 4-bit vs rabitqlib flat 4-bit, 1 thread
    if minilm:
        row = {
            "check": 3,
            "what": "MiniLM-384: vecpress flat 4-bit vs rabitqlib flat 4-bit, 1 thread, "
            "qps at no lower recall@10",
        }
        rq = [
            r
            for r in minilm
            if r["library"] == "rabitqlib" and r["kind"] == "flat" and r["status"] == "ok"
        ]
        vps = [
            r
            for r in minilm
            if r["library"] == "vecpress"
            and r["kind"] == "flat"
            and r["status"] == "ok"
            and not r["build"].get("rerank_spec")
            and common.vecpress_config(r["key"]).bits == 4
        ]
        rp = _first_point(rq[0]) if rq else None
        if rp is None or not vps:
            rows.append({**row, "status": "SKIP", "detail": "rabitqlib or vecpress not measured"})
        else:
            subs = []
            for v in vps:
                p = _first_point(v)
                if p is None:
                    continue
                passed = p["qps"]["1"] >= rp["qps"]["1"] and p["recall"] >= rp["recall"]
                diff, se = _paired(p, rp)
                subs.append(
                    {
                        "vecpress": v["label"],
                        "vp_qps": p["qps"]["1"],
                        "vp_recall": p["recall"],
                        "rq_qps": rp["qps"]["1"],
                        "rq_recall": rp["recall"],
                        "n": p["n_recall"],
                        "diff": diff,
                        "diff_se": se,
                        "vp_ns": 1e9 / (p["qps"]["1"] * v["n"]),
                        "rq_ns": 1e9 / (rp["qps"]["1"] * rq[0]["n"]),
                        "status": "PASS" if passed else "FAIL",
                    }
                )
            win = [s for s in subs if s["status"] == "PASS"]
            best = max(win or subs, key=lambda s: s["vp_qps"])
            detail = (
                f"`{best['vecpress']}` {best['vp_qps']:,.0f} qps, recall {best['vp_recall']:.4f}"
                f" vs rabitqlib {best['rq_qps']:,.0f} qps, recall {best['rq_recall']:.4f} "
                f"(n={best['n']}; recall Δ {_f(best['diff'], '+.4f')} ± "
                f"{_f(best['diff_se'], '.4f')} paired; "
                f"qps ratio {best['vp_qps'] / best['rq_qps']:.2f}; "
                f"{best['vp_ns']:.2f} vs {best['rq_ns']:.2f} ns per stored vector)"
            )
            if best["diff"] is not None and abs(best["diff"]) < 2 * (best["diff_se"] or 0):
                detail += "; the recall difference is within 2 standard errors (noise)"
            rows.append(
                {**row, "status": "PASS" if win else "FAIL", "detail": detail, "rows": subs}
            )
    return rows


def _paired(a: dict, b: dict) -> tuple[float | None, float | None]:
    """Recall difference a − b on the queries both evaluated, and its standard error."""
    if "hits" not in a or "hits" not in b:
        return None, None
    n = min(len(a["hits"]), len(b["hits"]))
    d = (np.asarray(a["hits"][:n]) - np.asarray(b["hits"][:n])) / K
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0


def _first_point(rec: dict) -> dict | None:
    pts = [p for p in rec["points"] if "recall" in p and "1" in p["qps"]]
    return pts[0] if pts else None


def _ivf_detail(s: dict) -> str:
    if s["vp_qps"] is None:
        return f"`{s['vecpress']}` ({s['vp_bytes']:.1f} B) never reaches the target recall"
    head = (
        f"`{s['vecpress']}` ({s['vp_bytes']:.1f} B) {s['vp_qps']:,.0f} qps "
        f"({fmt_params(s['vp_params'])})"
    )
    if not s["rivals"]:
        return f"{head}; no faiss IVF index costs ≥ its bytes, so nothing to compare with"
    if s["faiss"] is None:
        return f"{head}; none of the {s['rivals']} faiss IVF indexes of ≥ its bytes reaches it"
    return (
        f"{head} vs `{s['faiss']}` ({s['faiss_bytes']:.1f} B) {s['faiss_qps']:,.0f} qps "
        f"({fmt_params(s['faiss_params'])}); ratio {s['vp_qps'] / s['faiss_qps']:.2f}"
    )


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def render_report(bench: Bench) -> str:
    env, a = bench.env, bench.args
    lines = [
        "# vecpress search benchmark" + (" (--quick)" if a.quick else ""),
        "",
        f"- date: {env['date']}; run time {bench.elapsed() / 60:.1f} min",
        f"- CPU: {env['cpu']} ({env['cpus']} logical CPUs); load average (1/5/15 min) at "
        f"start {env['load_start']}, now {common.load_average()}; the machine is shared, so "
        f"speed figures taken under load are noisy (each index's load is in the JSON lines)",
        f"- python {env['python']}, numpy {env['numpy']}, numba {env['numba']}, faiss-cpu "
        f"{env['faiss']}, rabitqlib {env['rabitqlib']}, vecpress {env['vecpress']}",
        f"- vecpress source: commit {env['git']}",
        f"- command: `{shlex.join(['python', 'benchmarks/search.py', *env['argv']])}`",
        "",
        "## Method",
        "",
        f"- Every index is built and measured in its own fresh subprocess. Build: train on "
        f"{TRAIN_ROWS:,} fixed-seed base rows (vecpress `Index.train`, faiss `train`, "
        f"k-means for rabitqlib's IVF), then add the whole base; {max(a.threads)} thread(s).",
        f"- recall@10: ids against the exact float32 top-10 (faiss `IndexFlatIP`), mean over "
        f"the first `n` queries (all of the data set's queries unless a point is too slow "
        f"to evaluate within {a.eval_budget:g} s at {max(a.threads)} thread(s)).",
        f"- queries/s: `search(queries, 10)` on the first `n_time` queries in one call "
        f"(fewer for points slower than {a.call_budget:g} s per call), repeated for at least "
        f"{a.min_time:g} s and {a.min_calls} calls; the best call is reported (the median is "
        f"in the JSON lines). 1 thread = vecpress `set_num_threads`, faiss "
        f"`omp_set_num_threads`, BLAS via threadpoolctl and rabitqlib's `num_threads`.",
        "- qps at a target recall: the best measured point with recall ≥ target (the "
        "index's Pareto frontier; 'interp.' = log-linear between the frontier points "
        "around the target, shown for information).",
        f"- vecpress: `Index(spec, metric={VP_METRIC!r}, seed=0, rerank_spec=…, ivf=…)`; "
        f"faiss: `index_factory(d, key, METRIC_INNER_PRODUCT)`, RaBitQ query bits qb = "
        f"{FAISS_RABITQ_QB}, `nprobe`/`efSearch` via `ParameterSpace`; rabitqlib: "
        f"`IvfIndex(d, n, nlist, 4, metric='ip')` (4 bits in total, sign bit included), one "
        f"cluster with the data mean as centroid = its flat scan; IVF centroids by faiss "
        f"k-means; GloVe zero-padded to 64 dims for it (its rotator rejects d = 50).",
        "- memory: B/vector (analytic, see 'counted' per library); file B/vector = saved "
        "size / n (shared parts such as centroids included); index RSS = RSS after the "
        "build minus RSS before it (data loaded both times, `malloc_trim` before each "
        "reading); peak Δ build / search = peak RSS (`VmHWM`, "
        "reset through `/proc/self/clear_refs` before the phase) during the build / during "
        "all the searches, minus the RSS before that phase. vecpress compiles its kernels "
        "on tiny data before any of this, so compilation is not counted.",
        f"- open: median of {a.open_repeats} opens of the saved file, page cache warm.",
        f"- single-query latency (flat indexes): {a.latency_queries} queries one at a time, "
        f"1 thread, first parameter point.",
        "",
    ]
    lines += _verdicts_md(bench.verdicts)
    for name, ds_info in bench.ds_info.items():
        lines += _dataset_md(bench, name, ds_info)
    if bench.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in bench.notes] + [""]
    return "\n".join(lines)


def _verdicts_md(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    out = [
        "## Done-when checks",
        "",
        "| # | check | result | detail |",
        "|---|---|---|---|",
    ]
    for r in rows:
        out.append(f"| {r['check']} | {r['what']} | **{r['status']}** | {r['detail']} |")
    out.append("")
    for r in rows:
        if r["check"] == 2 and r.get("rows"):
            out += [
                f"Check 2 at recall {r['target']:.2f}, per vecpress IVF index (rival = the "
                "fastest faiss IVF index with ≥ its B/vector):",
                "",
                "| vecpress | B/vec | qps 1T | at | faiss rival | B/vec | qps 1T | at | result |",
                "|---|--:|--:|---|---|--:|--:|---|---|",
            ]
            for s in r["rows"]:
                out.append(
                    f"| `{s['vecpress']}` | {s['vp_bytes']:.1f} | {_f(s['vp_qps'], ',.0f')} | "
                    f"{fmt_params(s['vp_params'] or {})} | `{s['faiss'] or '–'}` | "
                    f"{_f(s['faiss_bytes'], '.1f')} | {_f(s['faiss_qps'], ',.0f')} | "
                    f"{fmt_params(s['faiss_params'] or {})} | {s['status']} |"
                )
            out.append("")
        if r["check"] == 3 and r.get("rows"):
            out += [
                "Check 3 per vecpress index:",
                "",
                "| vecpress | qps 1T | ns/vector | recall@10 | rabitqlib qps 1T | ns/vector | "
                "recall@10 | recall Δ ± se (paired) | n | result |",
                "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
            ]
            for s in r["rows"]:
                out.append(
                    f"| `{s['vecpress']}` | {s['vp_qps']:,.0f} | {s['vp_ns']:.2f} | "
                    f"{s['vp_recall']:.4f} | {s['rq_qps']:,.0f} | {s['rq_ns']:.2f} | "
                    f"{s['rq_recall']:.4f} | {_f(s['diff'], '+.4f')} ± {_f(s['diff_se'], '.4f')} "
                    f"| {s['n']} | {s['status']} |"
                )
            out.append("")
    return out


def _dataset_md(bench: Bench, name: str, info: dict) -> list[str]:
    threads = bench.args.threads
    recs = [r for r in bench.results if r["dataset"] == name]
    out = [f"## Data set `{name}` (d = {info['d']}, n = {info['n']:,})", "", info["desc"], ""]
    if info.get("note"):
        out += [info["note"], ""]
    done = [r for r in recs if r["status"] == "ok"]
    out += [
        "### Indexes",
        "",
        "| library | index | kind | B/vector | file B/vector | build s | index RSS MiB | "
        "peak Δ build MiB | peak Δ search MiB | open mmap ms | open in-memory ms | "
        "1-query p50 µs | load |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in done:
        op = r.get("open", {})
        mm = _f(op.get("mmap_ms"), ".2f") if "mmap_error" not in op else "n/a"
        lat = r.get("latency_us", {}).get("p50")
        out.append(
            f"| {r['library']} | `{r['label']}` | {r['kind']} | "
            f"{_f(r.get('bytes_per_vector'), '.1f')} | {_f(r.get('file_bytes_per_vector'), '.1f')}"
            f" | {_f(r.get('build_s'), '.1f')} | {_f(r.get('index_rss_mib'), '.0f')} | "
            f"{_f(r.get('peak_rss_build_mib'), '.0f')} | "
            f"{_f(r.get('peak_rss_search_mib'), '.0f')} | {mm} | "
            f"{_f(op.get('in_memory_ms'), '.2f')} | "
            f"{_f(lat, ',.0f')} | {' '.join(map(str, r.get('load_start', [])[:1]))} |"
        )
    out += ["", "B/vector counted:"]
    for lib in ("vecpress", "faiss", "rabitqlib"):
        src = next((r for r in done if r["library"] == lib), None)
        if src:
            out.append(f"- {lib}: {src['bytes_counted']} ({src.get('bytes_source', '')})")
    out.append("")
    errs = [r for r in done if "error" in r.get("open", {})]
    for r in errs:
        out.append(f"- `{r['label']}` save/open failed: {r['open']['error']}")
    bad = [r for r in done if r.get("reopen_same_ids") is False]
    for r in bad:
        out.append(f"- `{r['label']}`: a memory-mapped reopen returned different ids")
    if errs or bad:
        out.append("")
    tcols = " | ".join(f"qps@{t:.2f} {nt}T" for nt in threads for t in RECALL_TARGETS)
    out += [
        "### Queries/s at target recall (best measured point with recall ≥ target; "
        "interp. in brackets)",
        "",
        f"| library | index | B/vector | max recall@10 | {tcols} |",
        "|---|---|--:|--:|" + "--:|" * (len(threads) * len(RECALL_TARGETS)),
    ]
    for r in done:
        cells = []
        for nt in threads:
            for t in RECALL_TARGETS:
                q, par, iq = qps_at(r, t, nt)
                cells.append("–" if q is None else f"{q:,.0f} ({fmt_params(par)}) [{iq:,.0f}]")
        rec = [p["recall"] for p in r["points"] if "recall" in p]
        out.append(
            f"| {r['library']} | `{r['label']}` | {_f(r.get('bytes_per_vector'), '.1f')} | "
            f"{_f(max(rec) if rec else None, '.4f')} | " + " | ".join(cells) + " |"
        )
    qcols = " | ".join(f"qps {nt}T" for nt in threads)
    out += [
        "",
        "### All points",
        "",
        f"| library | index | params | recall@10 | n | n_time | {qcols} |",
        "|---|---|---|--:|--:|--:|" + "--:|" * len(threads),
    ]
    for r in done:
        for p in r["points"]:
            if "recall" not in p:
                msg = p.get("skipped") or p.get("error", "")
                out.append(
                    f"| {r['library']} | `{r['label']}` | {fmt_params(p['params'])} | "
                    f"{msg} | | |" + " |" * len(threads)
                )
                continue
            q = " | ".join(_f(p["qps"].get(str(nt)), ",.0f") for nt in threads)
            out.append(
                f"| {r['library']} | `{r['label']}` | {fmt_params(p['params'])} | "
                f"{p['recall']:.4f} | {p['n_recall']} | {p['n_time']} | {q} |"
            )
    out.append("")
    skipped = [r for r in recs if r["status"] != "ok"]
    if skipped:
        out += ["### Not measured", ""]
        out += [
            f"- {r['library']} `{r['label']}`: {r['status']}: {r.get('note', '')}" for r in skipped
        ]
        out.append("")
    if info.get("plot"):
        out += [f"![recall@10 vs queries/s, {name}]({info['plot']})", ""]
    return out


def plot(bench: Bench, name: str, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        bench.notes.append("matplotlib is not installed: no plot (pip install '.[bench]')")
        return None
    threads = bench.args.threads
    recs = [r for r in bench.results if r["dataset"] == name and r["status"] == "ok"]
    fig, axes = plt.subplots(1, len(threads), figsize=(7 * len(threads), 6), squeeze=False)
    styles = {"vecpress": "-", "faiss": "--", "rabitqlib": ":"}
    cmap = plt.get_cmap("tab20")
    for ax, nt in zip(axes[0], threads, strict=True):
        for i, r in enumerate(recs):
            pts = [p for p in r["points"] if "recall" in p and str(nt) in p["qps"]]
            if not pts:
                continue
            color = cmap(i % 20)
            ax.plot(  # every point, and the Pareto frontier as a line
                [p["qps"][str(nt)] for p in pts],
                [p["recall"] for p in pts],
                "o",
                ms=2.5,
                color=color,
            )
            fr = frontier(pts, nt)
            ax.plot(
                [f[1] for f in fr],
                [f[0] for f in fr],
                styles.get(r["library"], "-"),
                marker="o",
                ms=4,
                color=color,
                label=f"{r['library']}: {r['label']} ({r.get('bytes_per_vector') or 0:.0f} B)",
            )
        ax.set_xscale("log")
        ax.set_xlabel(f"queries/s ({nt} thread{'s' if nt > 1 else ''})")
        ax.set_ylabel("recall@10")
        ax.set_title(f"{name}: {nt} thread{'s' if nt > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
        for t in RECALL_TARGETS:
            ax.axhline(t, color="grey", lw=0.5)
    axes[0][-1].legend(fontsize=6, loc="lower left")
    fig.suptitle("recall@10 vs queries/s (line: Pareto frontier of each index's points)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


# ---------------------------------------------------------------------------------------
# the driver (parent process)
# ---------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.perf_counter()
        self.results: list[dict] = []
        self.verdicts: list[dict] = []
        self.ds_info: dict[str, dict] = {}
        self.notes: list[str] = []
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = out_dir / f"search-{args.tag}.jsonl"
        self.md = out_dir / f"search-{args.tag}.md"
        self.jsonl.write_text("")
        self.env = self._environment()
        self._emit({"kind": "meta", **self.env})

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def _environment(self) -> dict:
        from importlib import metadata

        try:
            rq = metadata.version("rabitqlib")
        except metadata.PackageNotFoundError:
            rq = "not installed"
        import numba

        return {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpu": common.cpu_model(),
            "cpus": os.cpu_count(),
            "threads": self.args.threads,
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "numba": numba.__version__,
            "faiss": getattr(faiss, "__version__", "n/a"),
            "rabitqlib": rq,
            "vecpress": vecpress.__version__,
            "git": common.git_state(),
            "argv": sys.argv[1:],
            "load_start": common.load_average(),
            "quick": self.args.quick,
        }

    def _emit(self, rec: dict) -> None:
        if rec.get("points"):
            pts = [{k: v for k, v in p.items() if k != "hits"} for p in rec["points"]]
            rec = {**rec, "points": pts}
        with self.jsonl.open("a") as f:
            f.write(json.dumps(rec, default=common._json_default) + "\n")

    def entries(self, name: str, nlist: int) -> list[Entry]:
        a = self.args
        out = []
        for e in GRID:
            if name not in e.datasets or (a.quick and name not in e.quick):
                continue
            r = e.resolved(nlist, a.quick)
            if a.only and not re.search(a.only, f"{r.library}:{r.label}"):
                continue
            out.append(r)
        return out

    def load(self, name: str):
        a = self.args
        if name == "glove50":
            ds = common.load_glove()
            if a.quick:
                ds.base = np.ascontiguousarray(ds.base[:QUICK_BASE_ROWS])
        else:
            ds = common.load_minilm(Path(a.minilm_dir).expanduser())
        return ds

    def run_dataset(self, name: str) -> None:
        a = self.args
        conf = DATASETS[name]
        ds = self.load(name)
        if ds is None:
            self.notes.append(f"{name}: data not found in {a.minilm_dir}; skipped")
            return
        nlist = QUICK_NLIST if a.quick and name == "glove50" else conf["nlist"]
        n_rec = a.recall_queries or conf["recall_queries"]
        if a.quick:
            n_rec = min(n_rec, 1_000)
        n_rec = min(n_rec, ds.queries.shape[0])
        queries = np.ascontiguousarray(ds.queries[:n_rec])
        tmax = max(a.threads)
        log(f"{name}: base {ds.base.shape}, {n_rec:,} queries; exact top-{K} ...")
        gt = common.exact_top_k(ds.base, queries, tmax)
        rows = np.random.default_rng(SEED + 1).permutation(ds.base.shape[0])
        train_rows = np.sort(rows[: min(TRAIN_ROWS, ds.base.shape[0])])
        info = {"d": ds.d, "n": ds.base.shape[0], "desc": ds.description, "nlist": nlist}
        if a.quick and name == "glove50":
            info["note"] = (
                f"--quick: the base is cut to its first {QUICK_BASE_ROWS:,} rows, nlist = "
                f"{nlist}, {n_rec:,} queries; the figures are a smoke test, not the acceptance run."
            )
        self.ds_info[name] = info
        data_dir = Path(tempfile.mkdtemp(prefix=f"vp-search-{name}-", dir=a.work_dir))
        try:
            np.save(data_dir / "base.npy", ds.base)
            np.save(data_dir / "queries.npy", queries)
            np.save(data_dir / "gt.npy", gt)
            np.save(data_dir / "train_rows.npy", train_rows)
            d = ds.d
            del ds
            tq = a.time_queries or conf["time_queries"]
            job_base = {
                "data_dir": str(data_dir),
                "d": d,
                "threads": a.threads,
                "time_queries": max(min(tq, 500), conf.get("min_time_queries", 0))
                if a.quick
                else tq,
                "min_time_queries": conf.get("min_time_queries", 100),
                "probe_queries": 50 if a.quick else 100,
                "min_time": a.min_time,
                "min_calls": a.min_calls,
                "max_time": max(4 * a.min_time, 3 * a.call_budget),
                "call_budget": a.call_budget,
                "eval_budget": a.eval_budget,
                "latency_queries": a.latency_queries,
                "open_repeats": a.open_repeats,
                "keep_hits": name == "minilm",
                "work_dir": a.work_dir,
            }
            for e in self.entries(name, nlist):
                self.run_entry(name, e, job_base, data_dir)
                self.write_report()
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
        png = self.md.with_name(f"search-{a.tag}-{name}.png")
        info["plot"] = plot(self, name, png)

    def precheck(self, e: Entry, d: int) -> str | None:
        """Why the index cannot be built here (not implemented, bad key), or None."""
        try:
            if e.library == "vecpress":
                kw = {k: v for k, v in e.build.items() if k in ("rerank_spec", "ivf")}
                vecpress.Index(e.key, metric=VP_METRIC, seed=0, **kw)
            elif e.library == "faiss":
                dp = int(e.build.get("pad_to", d))
                faiss.index_factory(dp, e.key, faiss.METRIC_INNER_PRODUCT)
            else:
                import rabitqlib  # noqa: F401
        except NotImplementedError as ex:
            return f"skipped: NotImplementedError: {ex}"
        except (RuntimeError, ImportError, ValueError) as ex:
            return f"error: {type(ex).__name__}: {str(ex).strip().splitlines()[-1][:200]}"
        return None

    def run_entry(self, name: str, e: Entry, job_base: dict, data_dir: Path) -> None:
        rec = {
            "kind": "index",
            "dataset": name,
            "library": e.library,
            "key": e.key,
            "label": e.label,
            "index_kind": e.kind,
            "build": e.build,
            "search_grid": e.search,
        }
        why = self.precheck(e, job_base["d"])
        t = time.perf_counter()
        if why:
            status, note = why.split(": ", 1)
            res = {"status": status, "note": note, "points": []}
        else:
            log(f"  {name} {e.library}:{e.label} ...")
            job = {
                **job_base,
                "entry": dataclasses.asdict(e),
                "result": str(data_dir / "result.json"),
            }
            (data_dir / "job.json").write_text(json.dumps(job))
            (data_dir / "result.json").unlink(missing_ok=True)
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                str(data_dir / "job.json"),
            ]
            try:
                proc = subprocess.run(cmd, timeout=self.args.child_timeout, check=False)
                if (data_dir / "result.json").exists():
                    res = json.loads((data_dir / "result.json").read_text())
                else:
                    res = {
                        "status": "error",
                        "note": f"child exited {proc.returncode}",
                        "points": [],
                    }
            except subprocess.TimeoutExpired:
                res = {"status": "error", "note": "child timed out", "points": []}
        rec.update(res)
        rec["kind"] = "index"
        rec["index_kind"] = e.kind
        rec["wall_s"] = time.perf_counter() - t
        self._emit(rec)
        rec["kind"] = e.kind  # internal shorthand used by the verdicts and the report
        self.results.append(rec)
        if rec["status"] == "ok":
            log(
                f"  {name} {e.library}:{e.label}: {rec.get('bytes_per_vector') or 0:.1f} B/vector, "
                f"build {rec.get('build_s', 0):.1f} s, {rec['wall_s']:.0f} s in all"
            )
        else:
            log(f"  {name} {e.library}:{e.label}: {rec['status']}: {rec.get('note', '')}")

    def finish(self) -> None:
        hashes = {r["src_hash"] for r in self.results if r.get("src_hash")}
        if len(hashes) > 1:
            self.notes.append(
                f"the vecpress source changed during the run ({len(hashes)} versions imported "
                f"by the indexes' subprocesses: {', '.join(sorted(hashes))}; `src_hash` in the "
                f"JSON lines says which index saw which)"
            )
        self.verdicts = verdicts(self.results)
        for v in self.verdicts:
            self._emit({"kind": "verdict", **v})
        self.write_report()

    def write_report(self) -> None:
        self.md.write_text(render_report(self))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="all", choices=("glove50", "minilm", "all"))
    p.add_argument("--threads", default="1,2", help="thread counts to time, e.g. 1,2")
    p.add_argument("--quick", action="store_true", help="smoke test: small base, few configs")
    p.add_argument("--only", default="", help="regex on 'library:label': run only those")
    p.add_argument("--recall-queries", type=int, default=0, help="0: the data set's default")
    p.add_argument("--time-queries", type=int, default=0, help="0: the data set's default")
    p.add_argument("--min-time", type=float, default=None, help="seconds of timed calls")
    p.add_argument("--min-calls", type=int, default=None, help="timed calls at least")
    p.add_argument(
        "--call-budget", type=float, default=None, help="seconds per timed call (fewer queries)"
    )
    p.add_argument(
        "--eval-budget", type=float, default=None, help="seconds for one recall evaluation"
    )
    p.add_argument("--latency-queries", type=int, default=None, help="default 200 (quick 50)")
    p.add_argument("--open-repeats", type=int, default=None, help="default 5 (quick 3)")
    p.add_argument("--child-timeout", type=float, default=3600.0)
    p.add_argument("--minilm-dir", default="~/.cache/vecpress/minilm")
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument("--work-dir", default=None, help="temp files (default: the system's)")
    p.add_argument("--tag", default=None, help="file name tag (default: date[-quick])")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return a
    cpus = os.cpu_count() or 1
    a.threads = sorted({min(cpus, max(1, int(t))) for t in a.threads.split(",") if t.strip()})
    defaults = {"min_time": (0.25, 1.0), "min_calls": (2, 3), "call_budget": (0.5, 2.0)}
    defaults["eval_budget"] = (10.0, 60.0)
    defaults["latency_queries"] = (50, 200)
    defaults["open_repeats"] = (3, 5)
    for k, (quick, full) in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, quick if a.quick else full)
    if a.tag is None:
        a.tag = datetime.date.today().isoformat() + ("-quick" if a.quick else "")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    if faiss is None:
        print("faiss-cpu is required: pip install '.[bench]'", file=sys.stderr)
        return 2
    bench = Bench(args)
    names = ["glove50", "minilm"] if args.dataset == "all" else [args.dataset]
    for name in names:
        bench.run_dataset(name)
        bench.write_report()
    bench.finish()
    print_summary(bench)
    print(f"\nreport: {bench.md}\njson lines: {bench.jsonl}\ntotal {bench.elapsed() / 60:.1f} min")
    return 0


def print_summary(bench: Bench) -> None:
    threads = bench.args.threads
    for name in bench.ds_info:
        print(f"\n{name}: qps at recall@10 {' / '.join(f'{t:.2f}' for t in RECALL_TARGETS)}")
        for r in bench.results:
            if r["dataset"] != name:
                continue
            if r["status"] != "ok":
                print(
                    f"  {r['library']:9s} {r['label']:36s} {r['status']}: {r.get('note', '')[:70]}"
                )
                continue
            cells = []
            for nt in threads:
                vals = [qps_at(r, t, nt)[0] for t in RECALL_TARGETS]
                cells.append(f"{nt}T " + " / ".join(_f(v, ",.0f") for v in vals))
            rec = [p["recall"] for p in r["points"] if "recall" in p]
            print(
                f"  {r['library']:9s} {r['label']:36s} {r.get('bytes_per_vector') or 0:6.1f} B  "
                f"max recall {_f(max(rec) if rec else None, '.4f')}  " + "  ".join(cells)
            )
    print("\nDone-when checks")
    for v in bench.verdicts:
        print(f"{v['status']:4s} ({v['check']}) {v['what']}: {v['detail']}")


if __name__ == "__main__":
    sys.exit(main())
