"""Where the time of one progressive query goes (issue 15's 1-query line).

On the first 100,000 rows of the 384-d sentence set (``sentences.py``), 1 thread, a
flat ``center,hd2,rq4`` index (``--spec``) searched with ``progressive=True`` one query
at a time, and rabitqlib's flat 4-bit index in the same process for reference:

* ``search``: ``Index.search(q[i:i+1], 10, progressive=True)``, p50 over the queries;
* ``kernel``: :func:`vecpress.kernels.progressive.progressive_search` alone (the
  compiled call of the search: plan, query quantization, the three passes, merge),
  called again with the arguments the search gave it (the same query, back to back);
* ``Python``: the search with the kernel replaced by its saved result (everything but
  the kernel), and the same after an 8 MB sweep of memory (what the kernel's reads do
  to the caches), the sweep's own time subtracted;
* ``sign-plane sums``: the fast-scan sums of the sign planes of every row, alone;
* rows read in full per query (all work items), and the bytes the first pass reads
  per row.

Run ``python benchmarks/latency_parts.py`` (needs ``pip install ".[bench]"`` and the
MiniLM set); prints Markdown.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numba as nb
import numpy as np

import common
import vecpress
from vecpress.kernels import fastscan
from vecpress.kernels.progressive import sign_tables
from vecpress.kernels.scan import grid_queries
from vecpress.search import scan as search_scan


@nb.njit(cache=False)
def _sums_only(tag, blocked, luts):
    """The sign-plane sums of every block for one query (the first pass without bounds)."""
    npairs = blocked.shape[1] // fastscan.PAIR_BYTES
    rowbytes = blocked.shape[1]
    base = blocked.ctypes.data
    sums = np.zeros((8, fastscan.BLOCK), np.int32)
    never = np.full(8, np.iinfo(np.int32).max, np.int32)
    mask = np.zeros(8, np.int32)
    total = 0
    for blk in range(blocked.shape[0]):
        fastscan._block_sums(
            tag, base + blk * rowbytes, blocked[blk], npairs, luts, 0, 1, sums, never, mask
        )
        total += sums[0, 0]
    return total


def _p50(fn, reps: int) -> float:
    times = []
    for i in range(reps):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return 1e6 * float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default="center,hd2,rq4")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--minilm-dir", default=str(Path.home() / ".cache/vecpress/minilm"))
    args = p.parse_args(argv)
    data = common.load_minilm(Path(args.minilm_dir))
    if data is None:
        raise SystemExit("the MiniLM set is missing: run benchmarks/sentences.py")
    base, queries = data.base[:100_000], data.queries[: args.queries]
    nq = queries.shape[0]
    vecpress.set_num_threads(1)
    with common.threads(1):
        index = vecpress.Index(args.spec, metric="cosine", seed=0)
        index.add(base)
        calls = []
        kernel = search_scan.progressive_search

        def spy(*a, **kw):
            out = kernel(*a, **kw)
            calls.append((a, kw, out))
            return out

        search_scan.progressive_search = spy
        try:
            for i in range(nq):
                index.search(queries[i : i + 1], 10, progressive=True)
        finally:
            search_scan.progressive_search = kernel
        refined = np.array([int(out[2].sum()) for _, _, out in calls])
        search_us = _p50(lambda i: index.search(queries[i : i + 1], 10, progressive=True), nq)
        kernel_us = _p50(lambda i: kernel(*calls[i][0], **calls[i][1]), nq)
        saved = calls[0][2]
        sweep = np.ones(8_000_000 // 8)
        search_scan.progressive_search = lambda *a, **kw: saved
        try:
            python_us = _p50(lambda i: index.search(queries[i : i + 1], 10, progressive=True), nq)
            swept_us = _p50(
                lambda i: (sweep.sum(), index.search(queries[i : i + 1], 10, progressive=True)),
                nq,
            )
            sweep_us = _p50(lambda i: sweep.sum(), nq)
        finally:
            search_scan.progressive_search = kernel
        planes = calls[0][0][11]
        blocked = planes[0]
        tag = fastscan._TAGS[fastscan.ISAS.index(fastscan.ISA)]
        qi = grid_queries(*calls[0][0][6], calls[0][0][1])[0]
        luts = np.ascontiguousarray(np.repeat(sign_tables(qi[:1], base.shape[1])[0], 8, axis=0))
        _sums_only(tag, blocked, luts)
        sums_us = _p50(lambda i: _sums_only(tag, blocked, luts), nq)
        rabit_us = None
        try:
            import rabitqlib  # noqa: F401

            from search_grid import Entry
            from search_runners import RUNNERS

            runner = RUNNERS["rabitqlib"](
                Entry("rabitqlib", "flat", {"nlist": 1, "nbits": 4}), base.shape[1]
            )
            runner.build(base, base)
            fn = runner.searcher({}, 1)
            qp = runner.prepare_queries(queries)
            fn(qp[:1])
            rabit_us = _p50(lambda i: fn(qp[i : i + 1]), nq)
        except ImportError:
            pass
    terms = 4 * len(planes[2:]) + {0: 0, 1: 4, 2: 12}[calls[0][1]["terms"]]  # + a, b, c read
    d = base.shape[1]
    print(f"- CPU: {common.cpu_model()}; kernel {fastscan.ISA}; 1 thread")
    print(f"- vecpress source: {common.git_state()}")
    print(f"- command: `python benchmarks/latency_parts.py --spec {args.spec}`\n")
    print("| part | p50 µs |")
    print("|---|--:|")
    print(f"| `search(q[i:i+1], 10, progressive=True)` | {search_us:,.0f} |")
    print(f"| compiled call alone (`progressive_search`) | {kernel_us:,.0f} |")
    print(f"| sign-plane sums alone | {sums_us:,.0f} |")
    print(f"| Python (the kernel's result saved) | {python_us:,.0f} |")
    print(f"| Python after an 8 MB sweep (sweep subtracted) | {swept_us - sweep_us:,.0f} |")
    if rabit_us is not None:
        print(f"| rabitqlib flat 4-bit, one query | {rabit_us:,.0f} |")
    print(
        f"\nRows read in full per query: mean {refined.mean():,.0f}, p50 {np.median(refined):,.0f}"
        f" (of {base.shape[0]:,}). First pass, bytes read per row: {d // 8} of sign plane"
        f" + {terms} of terms + a 4-byte bound written and read again."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
