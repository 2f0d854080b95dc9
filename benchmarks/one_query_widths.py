"""One query at a time for codes of every width: ``kl``'s mixed widths against ``rq4``.

Issue 15 asks that `kl4` answer one query at a time within 1.3 x the time of
`hd2,rq4`. Before `vecpress.kernels.wordlanes` (AVX-512 VBMI) and
`vecpress.kernels.bytepairs` (AVX2), `kl`'s groups (and `rq` codes of 3, 5, 6, 7
bits) were unpacked to bytes row by row for every query. This script
builds flat indexes of several specs on one data set (1 thread) and times
``search(q[i:i+1], 10)`` with all indexes *in turn on each query* (``--rounds``
rounds of ``--queries`` queries), so that drift of a shared machine's speed
cancels in the ratios; it prints the p50 and p99 of each and the p50 ratio to
`hd2,rq4`, and checks that every single-query answer equals the batch answer
(the batch path unpacks; the single-query path reads in place).

Usage: ``python benchmarks/one_query_widths.py [--dataset minilm|glove50]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import common
import vecpress
from common import K, log
from vecpress.kernels.nibbles import HAVE_AVX2
from vecpress.kernels.wordlanes import HAVE_VBMI

SPECS = ("hd2,rq4", "kl4", "kl2", "kl3", "hd2,rq3", "hd2,rq5")
REFERENCE = "hd2,rq4"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=("minilm", "glove50"), default="minilm")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--minilm-dir", default=str(Path.home() / ".cache/vecpress/minilm"))
    args = p.parse_args()
    if args.dataset == "minilm":
        data = common.load_minilm(Path(args.minilm_dir))
        if data is None:
            raise SystemExit("the MiniLM set is missing: run benchmarks/sentences.py")
    else:
        data = common.load_glove(1_000)
    base, queries = data.base[:100_000], data.queries[: args.queries]
    vecpress.set_num_threads(1)
    indexes = {}
    with common.threads(1):
        for spec in SPECS:
            index = vecpress.Index(spec, metric="ip", seed=0)
            index.add(base)
            batch = index.search(queries, K).ids
            index.search(queries[:1], K)  # compiled before timing
            indexes[spec] = (index, batch)
        times = {spec: [] for spec in SPECS}
        mismatches = dict.fromkeys(SPECS, 0)
        for _ in range(args.rounds):
            for i in range(queries.shape[0]):
                for spec, (index, batch) in indexes.items():
                    t = time.perf_counter()
                    ids = index.search(queries[i : i + 1], K).ids
                    times[spec].append(time.perf_counter() - t)
                    mismatches[spec] += not np.array_equal(ids[0], batch[i])
    ref = np.median(times[REFERENCE])
    print(
        f"- CPU: {common.cpu_model()}; AVX-512 VBMI (codes read by parts): {HAVE_VBMI}; "
        f"AVX2 (codes read by byte pairs where there is no VNNI): {HAVE_AVX2}"
    )
    print(f"- vecpress source: {common.git_state()}")
    print(f"- data: {data.description} First {base.shape[0]:,} rows, {queries.shape[0]} queries.")
    print(f"- command: `python benchmarks/one_query_widths.py --dataset {args.dataset}`\n")
    print("| spec | B/vector (codes) | 1-query p50 µs | p99 µs | p50 / `hd2,rq4` | ids = batch's |")
    print("|---|--:|--:|--:|--:|--:|")
    for spec in SPECS:
        t = np.array(times[spec]) * 1e6
        n = len(t)
        same = 1 - mismatches[spec] / n
        size = indexes[spec][0].codec.code_size
        print(
            f"| `{spec}` | {size} | {np.median(t):,.0f} | {np.percentile(t, 99):,.0f} "
            f"| {np.median(t) / (ref * 1e6):.2f} | {same:.4f} |"
        )
    log("done")


if __name__ == "__main__":
    main()
