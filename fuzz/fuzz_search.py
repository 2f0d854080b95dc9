"""Randomised differential testing of ``Index.search`` on adversarial data (see fuzz/README.md).

Each case draws a spec, a dimension (1-69; one case in ten 128, 130 or 384), rows
(1-399), 1-5 queries (one case in five 6-20), a metric, an IVF list count or none,
``k`` (1 to the rows + 5) and data of one of several kinds: Gaussian, scaled
by ``10**e`` for ``e`` in -30..30, one row repeated, few distinct rows, float16's range,
mostly zeros, columns of magnitudes from 1e-20 to 1e20, small integers. The contract
checked:

* building (``Index``, ``train``, ``add``) either succeeds or raises ``ValueError`` /
  ``TypeError`` (a refusal that names what it expected); a search either answers or
  raises ``ValueError`` (a query the index refuses: a zero row under ``cosine``, a
  norm past ``vecpress.MAX_NORM``); any other exception is a failure;
* an answer's ids are stored ids or -1, without duplicates, -1 only at the end of a
  row, its scores finite where the id is not -1 and in non-increasing order;
* a flat index (of one level) ranks as ``Codec.score`` plus top-k: every returned
  score within float rounding of its id's ``Codec.score``, and none of them below the
  ``k``-th best of those by more than that rounding (near ties may rank either way);
* ``progressive=True``, where the codec supports it, returns the full scan's ids and
  scores bit for bit;
* one case in three also: with an ``f32`` re-rank tier, a re-ranked search's answer
  is valid as above; or saved and opened again (memory-mapped or in memory), the
  index answers the same bit for bit.

Run: ``python fuzz/fuzz_search.py --seconds 600 --seed 1`` (one process per core, with
different seeds; ``--specs "kl1;lvq4"`` draws from those only). Failures are printed
with the case's parameters and counted; the exit status is 1 if any. Each case draws
from a generator of its own (seed, case number), so ``--seed S --case N`` runs case
``N`` alone again.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np

import vecpress
from vecpress import Index
from vecpress.search.planes import supports

SPECS = [
    "hd2,rq4", "center,hd2,rq4", "hd2,rq1", "hd2,rq2", "rq3", "int4", "hd2,int8", "lvq4",
    "hd2,lvq4", "center,hd2,int4", "int7", "kl4", "kl2", "kl1", "tq4", "tqp2", "f16", "bf16",
    "e4m3", "pca8,rq4", "qjl64", "sign", "lvq4x4",
]  # fmt: skip
METRICS = ("ip", "l2", "cosine")
#: two-level specs: a flat search ranks by the first level (the second re-ranks), where
#: ``Codec.score`` reads both
TWO_LEVEL = {"lvq4x4"}
#: dimensions drawn one case in ten (wider than the Gaussian cases' 1-69)
WIDE = (128, 130, 384)
#: what a case does besides searching, one case in three: a re-rank tier (``f32``) and
#: a deeper re-ranked search, or the index saved and opened (memory-mapped or not) and
#: searched again (the same answer bit for bit)
EXTRAS = ("rerank", "mmap", "memory")


def draw_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """``n`` float32 rows of one of eight kinds (module docstring)."""
    kind = rng.integers(0, 8)
    if kind == 0:
        x = rng.standard_normal((n, d))
    elif kind == 1:
        x = rng.standard_normal((n, d)) * 10.0 ** float(rng.integers(-30, 31))
    elif kind == 2:
        x = np.tile(rng.standard_normal((1, d)), (n, 1))
    elif kind == 3:
        m = max(1, n // 10)
        x = rng.standard_normal((m, d))[rng.integers(0, m, n)]
    elif kind == 4:
        x = rng.standard_normal((n, d)) * 6e4
    elif kind == 5:
        x = np.where(rng.random((n, d)) < 0.9, 0.0, rng.standard_normal((n, d)))
    elif kind == 6:
        x = rng.standard_normal((n, d)) * np.logspace(-20, 20, d)
    else:
        x = rng.integers(-3, 4, (n, d)).astype(np.float64)
    return x.astype(np.float32)


def check_answer(ids: np.ndarray, scores: np.ndarray, n: int) -> str | None:
    """What is wrong with one search's answer over ids ``0..n-1``, or None."""
    for row_ids, row_scores in zip(ids, scores, strict=True):
        real = row_ids >= 0
        if real.sum() and not real[: real.sum()].all():
            return "-1 before a stored id"
        if (row_ids[real] >= n).any() or (row_ids < -1).any():
            return "an id that is not stored"
        if len(np.unique(row_ids[real])) != real.sum():
            return "a repeated id"
        got = row_scores[real]
        if not np.isfinite(got).all():
            return "a non-finite score"
        if (np.diff(got) > 0).any():
            return "scores not in non-increasing order"
    return None


def reference_scores(index: Index, x: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """float64[nq, n]: ``Codec.score`` made into the metric's score, as a flat index
    defines its ranking (float64 after the codec's float32 scores)."""
    xs, qs = x.astype(np.float64), q.astype(np.float64)
    if metric == "cosine":
        xs = xs / np.linalg.norm(xs, axis=1, keepdims=True)
        qs = qs / np.linalg.norm(qs, axis=1, keepdims=True)
    est = index.codec.score(qs.astype(np.float32), index.codec.encode(xs.astype(np.float32)))
    est = est.astype(np.float64)
    if metric == "l2":
        est = 2 * est - (xs**2).sum(1)[None, :] - (qs**2).sum(1)[:, None]
    return est


def ranks_as(ids: np.ndarray, scores: np.ndarray, ref: np.ndarray, k: int) -> bool:
    """Whether each row's answer is a top ``k`` of ``ref`` up to float32 rounding: every
    returned score within rounding of the reference score of its id, and no returned
    id's reference score below the reference's ``k``-th best by more than rounding."""
    n = ref.shape[1]
    for r in range(ids.shape[0]):
        got = ids[r][ids[r] >= 0]
        if got.size != min(k, n):
            return False
        tol = 1e-4 * max(1.0, float(np.abs(ref[r]).max()))
        if np.abs(scores[r][: got.size] - ref[r, got]).max() > tol:
            return False
        kth = np.sort(ref[r])[::-1][got.size - 1]
        if ref[r, got].min() < kth - tol:
            return False
    return True


def run_case(rng: np.random.Generator, specs=SPECS) -> tuple[str, str | None]:
    """One random case of one of ``specs``: ``(description, failure or None)``."""
    spec = specs[rng.integers(len(specs))]
    d = int(rng.integers(1, 70)) if rng.random() < 0.9 else int(rng.choice(WIDE))
    n = int(rng.integers(1, 400))
    metric = METRICS[rng.integers(3)]
    ivf = int(rng.integers(2, 9)) if rng.random() < 0.3 else None
    nq = int(rng.integers(1, 6)) if rng.random() < 0.8 else int(rng.integers(6, 21))
    x, q = draw_rows(rng, n, d), draw_rows(rng, nq, d)
    k = int(rng.integers(1, n + 6))
    extra = EXTRAS[rng.integers(len(EXTRAS))] if rng.random() < 0.3 else ""
    desc = f"spec={spec} d={d} n={n} nq={nq} metric={metric} ivf={ivf} k={k} {extra}"
    try:
        return desc, exercise(spec, metric, ivf, x, q, k, extra)
    except Exception:  # anything but the refusals exercise allows
        return desc, traceback.format_exc(limit=4)


def exercise(
    spec: str, metric: str, ivf: int | None, x: np.ndarray, q: np.ndarray, k: int, extra: str
):
    """Build and search one case (``extra``: :data:`EXTRAS`); the failure found, or None
    (module docstring)."""
    n = x.shape[0]
    kw = {"ivf": ivf} if ivf else {}
    if extra == "rerank":
        kw["rerank_spec"] = "f32"
    try:
        index = Index(spec, metric=metric, seed=0, **kw)
        if ivf:
            index.train(x)
        index.add(x)
    except (ValueError, TypeError):
        return None
    kw = {"nprobe": ivf} if ivf else {}
    try:
        res = index.search(q, k, **kw)
    except ValueError:
        return None
    bad = check_answer(res.ids, res.scores, n)
    if bad:
        return bad
    if not ivf and spec not in TWO_LEVEL:
        if not ranks_as(res.ids, res.scores, reference_scores(index, x, q, metric), k):
            return "the flat ranking differs from Codec.score + top-k"
    if supports(index.codec):
        prog = index.search(q, k, progressive=True, **kw)
        same = np.array_equal(prog.ids, res.ids) and np.array_equal(prog.scores, res.scores)
        if not same:
            return "progressive=True differs from the full scan"
    if extra == "rerank":
        deep = index.search(q, k, rerank=max(k, min(n, 4 * k)), **kw)
        bad = check_answer(deep.ids, deep.scores, n)
        if bad:
            return f"rerank: {bad}"
    if extra in ("mmap", "memory"):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "index.vpi")
            index.save(path)
            opened = vecpress.open(path, mmap=extra == "mmap")
            again = opened.search(q, k, **kw)
            del opened
        if not (np.array_equal(again.ids, res.ids) and np.array_equal(again.scores, res.scores)):
            return f"saved and opened ({extra}): the search differs"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--specs", help="';'-separated specs to draw from (default: all)")
    ap.add_argument("--case", type=int, help="run this case of --seed only (a replay)")
    args = ap.parse_args(argv)
    specs = args.specs.split(";") if args.specs else SPECS
    cases = failures = 0
    end = time.monotonic() + args.seconds
    replay = args.case is not None
    while (not cases) if replay else time.monotonic() < end:
        case = args.case if replay else cases + 1
        cases += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # each case draws from its own generator: any case replays alone (--case)
            desc, bad = run_case(np.random.default_rng([args.seed, case]), specs)
        if bad:
            failures += 1
            print(f"FAIL seed={args.seed} case={case} {desc}: {bad}", flush=True)
    print(f"seed={args.seed}: {cases} cases, {failures} failures", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
