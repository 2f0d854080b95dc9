"""The child process of ``benchmarks/search.py``: one runner per library (vecpress,
faiss, rabitqlib) behind the same interface, and the measurement of one index
(build, recall, queries/s, latency, memory, file) in its own subprocess.
"""

from __future__ import annotations

import gc
import json
import math
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import common
import vecpress
from common import SEED, K, faiss, log
from search_grid import VP_METRIC, Entry, fmt_params
from vecpress.advisor import peers


# ---------------------------------------------------------------------------------------
# small utilities
# ---------------------------------------------------------------------------------------
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
        seed = int(self.e.build.get("seed", 0))
        return vecpress.Index(self.e.key, metric=VP_METRIC, seed=seed, **kw)

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

    def _inner(self):
        top = faiss.downcast_index(self.index)
        if isinstance(top, faiss.IndexPreTransform):
            return faiss.downcast_index(top.index)
        return top

    def build(self, base: np.ndarray, train: np.ndarray) -> None:
        self.index = faiss.index_factory(self.dp, self.e.key, faiss.METRIC_INNER_PRODUCT)
        peers.set_rabitq_qb(faiss, self.index)
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
