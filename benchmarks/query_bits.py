"""Measure the extra error of scoring uniform-grid codes against 8-bit queries.

``rq<b>``, ``int<b>`` and ``lvq<b>`` score a query by quantizing it to 8 bits and
taking integer dot products. This script measures, on GloVe-50 (or synthetic
data), how much that step adds to the codec's own estimation error:

* RMSE of the codec's estimate against the exact inner product, with the query
  in float (``score_float``) and quantized (``score``);
* the RMSE of the difference, its worst case, and the analytic bound
  ``|f| * s / 2 * sum_i |y_i|`` (never exceeded);
* recall@10 of exhaustive search both ways.

Run: ``python benchmarks/query_bits.py [--data glove50|synthetic] [--queries 1000]``
"""

from __future__ import annotations

import argparse

import numpy as np

from vecpress import Codec
from vecpress.advisor import datasets
from vecpress.search.topk import exact_search, recall_at_k, topk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("glove50", "synthetic"), default="glove50")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--base", type=int, default=100_000, help="base rows used (subset)")
    args = ap.parse_args()
    if args.data == "glove50":
        base, queries = datasets.glove50(n_queries=args.queries)
    else:
        base, queries = datasets.synthetic(n=args.base, d=384, n_queries=args.queries)
    base = base[: args.base]
    truth, _ = exact_search(queries, base, 10)
    exact = queries[:200] @ base[:20000].T
    print(f"{args.data}: {base.shape[0]} x {base.shape[1]}, {queries.shape[0]} queries")
    print(
        f"{'spec':<16}{'rmse float q':>13}{'rmse 8-bit q':>13}{'rmse diff':>11}"
        f"{'max diff/bound':>15}{'recall float':>13}{'recall 8-bit':>13}"
    )
    for b in (1, 2, 4, 8):
        spec = f"center,hd2,rq{b}"
        codec = Codec.from_spec(spec).fit(base)
        codes = codec.encode(base)
        qcodes, term = codec._split(codes)
        qt, off = codec.transform_queries(queries)
        extra = off[:, None] + (term[None, :] if term is not None else 0.0)
        q = codec.quantizer
        sf = q.score_float(qt[:200], qcodes[:20000]) + extra[:200, :20000]
        si = q.score(qt[:200], qcodes[:20000]) + extra[:200, :20000]
        bound = q.query_quantization_bound(qt[:200], qcodes[:20000])
        diff = np.abs(si - sf)
        found_f = np.concatenate(
            [
                topk(q.score_float(qt[s : s + 100], qcodes) + extra[s : s + 100], 10)[0]
                for s in range(0, len(queries), 100)
            ]
        )
        found_i = np.concatenate(
            [
                topk(codec.score(queries[s : s + 100], codes), 10)[0]
                for s in range(0, len(queries), 100)
            ]
        )
        print(
            f"{spec:<16}{np.sqrt(((sf - exact) ** 2).mean()):>13.2e}"
            f"{np.sqrt(((si - exact) ** 2).mean()):>13.2e}{np.sqrt((diff**2).mean()):>11.2e}"
            f"{(diff / np.maximum(bound, 1e-30)).max():>15.3f}"
            f"{recall_at_k(found_f, truth, 10):>13.4f}{recall_at_k(found_i, truth, 10):>13.4f}"
        )


if __name__ == "__main__":
    main()
