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

Modules: this script is the driver (one subprocess per index) and the CLI;
``search_grid.py`` holds the grid and the data sets' settings, ``search_runners.py`` the
per-library runners and the measurement in the child process, ``search_report.py`` the
verdicts, the markdown report and the plots; ``common.py`` what the benchmarks share.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common
import vecpress
from common import HERE, SEED, K, _f, faiss, log
from search_grid import (
    DATASETS,
    GRID,
    QUICK_BASE_ROWS,
    QUICK_NLIST,
    RECALL_TARGETS,
    TRAIN_ROWS,
    VP_METRIC,
    Entry,
)
from search_report import plot, qps_at, render_report, verdicts
from search_runners import child_main


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
