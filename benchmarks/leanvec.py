"""LeanVec-OOD against PCA at equal reduced dimension and bits, on out-of-distribution queries.

Data: the 384-d MiniLM set (``benchmarks/sentences.py``): passages as the base,
short first sentences as queries (out of distribution). The queries are split:
the first half is the query sample ``leanvec-ood<d'>`` learns from
(``fit(X, queries=A)``), the second half (B) is what recall@10 is measured on,
so no query the projection saw is scored. For ``d'`` in 48, 96, 192 and 4- or
8-bit codes after the projection (``<proj><d'>,hd2,rq<b>``), recall@10
(strict: shared ids) of exhaustive search over the codes against exact float32
search, and the paired difference over queries with its standard error.

Run: ``python benchmarks/leanvec.py [--data DIR]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vecpress import Codec
from vecpress.advisor.groundtruth import brute_force
from vecpress.advisor.measures import strict_recall
from vecpress.search.topk import topk

DEFAULT = Path.home() / ".cache" / "vecpress" / "minilm"


def per_query_recall(spec: str, x, fit_q, eval_q, truth) -> np.ndarray:
    codec = Codec.from_spec(spec).fit(x, queries=fit_q if "ood" in spec else None)
    found, _ = topk(codec.score(eval_q, codec.encode(x)), truth.shape[1])
    return strict_recall(found, truth)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT)
    a = p.parse_args()
    x = np.load(a.data / "base.npy")
    q = np.load(a.data / "queries.npy")
    half = len(q) // 2
    fit_q, eval_q = q[:half], q[half:]
    truth, _ = brute_force(eval_q, x, 10, "ip")
    print(f"{x.shape[0]:,} x {x.shape[1]} base; {half} queries to fit, {len(eval_q)} to measure\n")
    print("| d' | bits | pca recall@10 | leanvec-ood recall@10 | difference ± SE |")
    print("|---|---|---|---|---|")
    for dim in (48, 96, 192):
        for bits in (4, 8):
            base = per_query_recall(f"pca{dim},hd2,rq{bits}", x, fit_q, eval_q, truth)
            ood = per_query_recall(f"leanvec-ood{dim},hd2,rq{bits}", x, fit_q, eval_q, truth)
            diff = ood - base
            se = diff.std(ddof=1) / np.sqrt(len(diff))
            print(
                f"| {dim} | {bits} | {base.mean():.4f} | {ood.mean():.4f} | "
                f"{diff.mean():+.4f} ± {se:.4f} |"
            )


if __name__ == "__main__":
    main()
