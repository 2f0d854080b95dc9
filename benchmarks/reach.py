"""The fewest bytes per vector at which recall@10 reaches a target without re-ranking
(issue 21: "the bytes at which each reaches recall@10 0.95 on the 384-d set").

On the 384-d sentence set (``sentences.py``; rows L2-normalised, ranked by inner
product, exhaustive search by each codec's scores against the exact top 10 on
``--queries`` queries), a ladder of codes from 3 to 8 bits per dimension for

* vecpress: ``kl<b>`` (b = 3-5) and ``center,hd2,rq<b>`` (b = 4-6);
* faiss in the same process on the same rows: ``PQ192x8``, ``SQ4``, ``SQ6``, ``SQ8`` and
  ``RR,RaBitQ<b>`` (b = 3-5, query bits 8);

every codec trained on the same ``--train`` rows. Left out for their training time at
d = 384 on this machine: faiss's residual quantizer (96 codebooks and more: tens of
minutes), OPQ (``OPQ96,PQ96x8`` trained for 314 s in ``additive.py``, 0.7980 at 2 bits)
and ``klvq`` above 2 bits (a residual block of 72 codebooks and more). Prints, for each
library, the smallest measured code reaching ``--target``, and the whole ladder.

Run ``python benchmarks/reach.py [--target 0.95]``; writes
``benchmarks/results/reach-<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import common
from additive import recall_rows, top10
from vecpress import Codec

HERE = Path(__file__).resolve().parent


def ladder() -> tuple[list[str], list[str]]:
    """(vecpress specs, faiss factory keys)."""
    vp = [f"kl{b}" for b in (3, 4, 5)] + [f"center,hd2,rq{b}" for b in (4, 5, 6)]
    fs = ["PQ192x8", "SQ4", "SQ6", "SQ8"] + [f"RR,RaBitQ{b}" for b in (3, 4, 5)]
    return vp, fs


def measure_vecpress(spec, train, base, q, truth) -> dict:
    codec = Codec.from_spec(spec, d=base.shape[1]).fit(train)
    codes = codec.encode(base)
    found = np.concatenate(
        [top10(codec.score(q[s : s + 100], codes)) for s in range(0, len(q), 100)]
    )
    return {"library": "vecpress", "codec": spec, "bytes": codec.code_size,
            "recall": float(recall_rows(found, truth).mean())}  # fmt: skip


def measure_faiss(key, train, base, q, truth) -> dict:
    import faiss

    index = faiss.index_factory(base.shape[1], key, faiss.METRIC_INNER_PRODUCT)
    if "RaBitQ" in key:
        top = faiss.downcast_index(index)
        faiss.downcast_index(top.index).qb = 8
    index.train(train)
    index.add(base)
    found = index.search(q, 10)[1]
    return {"library": "faiss", "codec": key, "bytes": index.sa_code_size(),
            "recall": float(recall_rows(found, truth).mean())}  # fmt: skip


def main() -> int:
    import faiss

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", type=float, default=0.95, help="recall@10 (default 0.95)")
    p.add_argument("--train", type=int, default=16_384, help="training rows (default 16384)")
    p.add_argument("--queries", type=int, default=1_000, help="queries (default 1000)")
    p.add_argument("--minilm", type=Path, default=Path.home() / ".cache" / "vecpress" / "minilm")
    args = p.parse_args()
    ds = common.load_minilm(args.minilm)
    if ds is None:
        return 1
    rng = np.random.default_rng(0)
    base = np.ascontiguousarray(ds.base, np.float32)
    q = np.ascontiguousarray(ds.queries[: args.queries], np.float32)
    train = np.ascontiguousarray(
        base[np.sort(rng.choice(base.shape[0], args.train, replace=False))]
    )
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(base)
    truth = flat.search(q, 10)[1]
    vp, fs = ladder()
    rows = []
    for spec in vp:
        rows.append(measure_vecpress(spec, train, base, q, truth))
        common.log(f"vecpress {spec}: {rows[-1]['bytes']} B {rows[-1]['recall']:.4f}")
    for key in fs:
        rows.append(measure_faiss(key, train, base, q, truth))
        common.log(f"faiss {key}: {rows[-1]['bytes']} B {rows[-1]['recall']:.4f}")
    env = common.run_environment()
    out = [f"Run {env['date']}, {env['cpu']}; {env['versions']}; vecpress source {env['git']}; "
           f"load {env['load']}. Command: `python benchmarks/reach.py {' '.join(sys.argv[1:])}`.",
           "", f"**minilm** (n = {base.shape[0]:,}, d = {ds.d}, {len(q):,} queries), "
           f"target recall@10 {args.target}:", ""]  # fmt: skip
    for lib in ("vecpress", "faiss"):
        hit = [r for r in rows if r["library"] == lib and r["recall"] >= args.target]
        best = min(hit, key=lambda r: (r["bytes"], -r["recall"]), default=None)
        out.append(f"- {lib}: " + (f"`{best['codec']}`, {best['bytes']} B/vector "
                   f"(recall {best['recall']:.4f})" if best else "none of the ladder"))  # fmt: skip
    out += ["", "| library | codec | B/vector | recall@10 |", "|---|---|--:|--:|"]
    for r in sorted(rows, key=lambda r: (r["bytes"], r["library"])):
        out.append(f"| {r['library']} | `{r['codec']}` | {r['bytes']} | {r['recall']:.4f} |")
    text = "\n".join(out)
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    stamp = f"reach-{time.strftime('%Y-%m-%d')}"
    (res / f"{stamp}.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    (res / f"{stamp}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
