"""Where the time of one progressive query goes (issue 15's 1-query line).

On the first 100,000 rows of the 384-d sentence set (``sentences.py``), 1 thread, a
flat ``center,hd2,rq4`` index (``--spec``) searched with ``progressive=True`` one query
at a time, and rabitqlib's flat 4-bit index in the same process for reference:

* ``search``: ``Index.search(q[i:i+1], 10, progressive=True)``, p50 over the queries;
* ``kernel``: the search's compiled call alone (:class:`vecpress.kernels.progressive.Bound`,
  the index's arrays bound once: plan, query quantization, the three passes, merge),
  called again with the arguments the search gave it (the same query, back to back);
  and timed within each search (the caches as the search leaves them), with the
  search's time outside it, query by query;
* ``Python``: the search with the kernel replaced by its saved result (everything but
  the kernel), and the same after an 8 MB sweep of memory (what the kernel's reads do
  to the caches), the sweep's own time subtracted;
* ``sign-plane sums``: the fast-scan sums of the sign planes of every row, alone;
* the compiled call's passes (setup, pass 1: the sign-plane sums and every row's
  table sum and point, pass 2: the seeds scored exactly, pass 3: the blocks' filters, the
  bounds of the rows they let through and the rows whose bound reaches the threshold
  scored, the slots' sort): a copy of :func:`vecpress.kernels.progressive._run` with the
  CPU's cycle counter read before each pass, called with the arguments of each search;
* rows read in full per query (all work items), and the bytes the first pass reads
  per row;
* the share of rows pass 3's filter lets through against the final 10th score, and of
  those whose bound reaches it, over the first 100 queries.

Run ``python benchmarks/latency_parts.py`` (needs ``pip install ".[bench]"`` and the
MiniLM set); prints Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import time
from pathlib import Path

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

import common
import vecpress
from vecpress.kernels import fastscan, progressive
from vecpress.kernels.grid_search import plan_pairs
from vecpress.kernels.progressive import sign_tables
from vecpress.kernels.scan import _grid_queries_flat, grid_queries


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


@intrinsic
def _cycles(typingctx):
    """The CPU's cycle counter (``llvm.readcyclecounter``: the time-stamp counter on x86)."""

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")
        return builder.call(fn, [])

    return types.int64(), codegen


#: the passes of one compiled call, and the line of ``progressive._run`` each starts at
PASSES = (
    ("setup (tables, pairs)", "    l2, terms = _mode_flags(mode)"),
    ("pass 1: sign-plane sums and points", "    _points("),
    ("pass 2: seeds scored", "    q8 = _query_bytes("),
    ("pass 3: refinement", "    _refine("),
)


def _timed_run():
    """:func:`vecpress.kernels.progressive._run` compiled again with the cycle counter
    written to ``marks[i]`` (a new first argument) before pass ``i`` and at its end."""
    src = inspect.getsource(progressive._run.py_func).split("\n")
    out = []
    for line in src:
        if line.startswith("@nb.njit"):
            continue
        for i, (_, start) in enumerate(PASSES):
            if line.startswith(start):
                out.append(f"    marks[{i}] = _cycles()")
        if line.startswith("    return out_s, out_i, counts, refined"):
            out.append(f"    marks[{len(PASSES)}] = _cycles()")
        out.append(line)
    text = "\n".join(out).replace("def _run(\n", "def _run(\n    marks,", 1)
    if text.count("_cycles()") != len(PASSES) + 1:
        raise SystemExit("progressive._run changed: update PASSES in latency_parts.py")
    space = dict(vars(progressive), _cycles=_cycles)
    exec(text, space)
    return nb.njit(space["_run"])


def _run_args(bound, args, kw):
    """The arguments a :class:`~vecpress.kernels.progressive.Bound` call gives
    ``progressive._run`` (``args``, ``kw``: the call's own)."""
    tag, qbmax, codes, bits, d, per_byte, starts, ends, list_ptr = bound._head
    lists, adds, queries, t, qsq, k = args
    q, center, qoff = queries
    if np.ndim(center) == 0:
        qoff = np.broadcast_to(np.asarray(qoff, np.float32), (q.shape[0],)).copy()
        qi, qscale, off = _grid_queries_flat(q, float(center), qoff, 1)
    else:
        qi, qscale, off = grid_queries(q, center, qoff, bits)
    lists = np.ascontiguousarray(lists, np.int64)
    qptr, qidx, qslot, qadd, qslot_ptr = plan_pairs(
        list_ptr, lists, np.ascontiguousarray(adds, np.float32)
    )
    scratch = kw.get("scratch")
    return (
        tag, qbmax, codes, bits, d, per_byte, starts, ends, qptr, qidx, qslot, qadd, qi,
        qscale, off, np.ascontiguousarray(t, np.float32), *bound._rows, qsq, qslot_ptr[-1], k,
        bound._z, bound._mode, progressive._NO_SCRATCH if scratch is None else scratch,
    )  # fmt: skip


#: the scan's call, unspied
_CALL = progressive.Bound.__call__


@contextlib.contextmanager
def _spying(record):
    """Within the block, every progressive scan's call is also ``record(bound, args, kw,
    out)``, or replaced by ``record`` where it returns something (its result)."""

    def spy(bound, *a, **kw):
        out = record(bound, a, kw, None)
        if out is not None:
            return out
        out = _CALL(bound, *a, **kw)
        record(bound, a, kw, out)
        return out

    progressive.Bound.__call__ = spy
    try:
        yield
    finally:
        progressive.Bound.__call__ = _CALL


def _pass_p50(calls, rounds: int = 3) -> list[float]:
    """p50 µs of each of :data:`PASSES` over the captured calls (``rounds`` rounds, the
    first a warm-up)."""
    run = _timed_run()
    marks = np.zeros(len(PASSES) + 1, np.int64)
    prepared = [_run_args(b, a, kw) for b, a, kw, _ in calls]
    spans = []
    for r in range(rounds):
        for args in prepared:
            run(marks, *args)
            if r:
                spans.append(np.diff(marks))
    c0, t0 = _cycles_now(), time.perf_counter()
    time.sleep(0.2)
    per_us = (_cycles_now() - c0) / (time.perf_counter() - t0) / 1e6
    return (np.median(np.array(spans), axis=0) / per_us).tolist()


@nb.njit(cache=False)
def _cycles_now():
    return _cycles()


def _filter_reach(index, queries, k: int = 10) -> dict:
    """Mean shares of the rows, over the queries, that pass 3's filter lets through
    against the final k-th score (the point within its block's slack of it; the real
    count is a little higher, the threshold rising during the pass), and whose bound
    reaches it. The points and table sums are the scan's own (its scratch after the
    search; the seeds' -inf left out), the estimates and the query's constants made as
    ``progressive._run`` makes them."""
    from vecpress.kernels.progressive import _block_slacks, _row_bound, query_terms

    stage = index._first_stage()
    n = index.ntotal
    got = []

    def record(bound, a, kw, out):
        if out is not None:
            got.append((bound, a, kw, out))

    passed, reached = [], []
    with _spying(record):
        for i in range(queries.shape[0]):
            got.clear()
            index.search(queries[i : i + 1], k, progressive=True)
            bound, a, kw, out = got[0]
            names = inspect.signature(progressive._run.py_func).parameters
            run = dict(zip(names, _run_args(bound, a, kw), strict=True))
            work = stage.planes._scratch[-1]
            xs, points = work[:n], work[n : 2 * n]
            _, rsum, rnorm = sign_tables(run["qi"][:1], run["d"])
            _, zr, qnorm, qc, big = query_terms(
                run["qi"][:1], run["d"], run["qscale"][:1], run["qoff"][:1], run["bits"],
                run["z"], rsum, rnorm,
            )  # fmt: skip
            f32 = np.float32
            consts = (
                f32(run["qscale"][0]), qnorm[0], zr[0], qc[0], big[0], f32(run["t"][0]),
                f32(run["qadd"][0]),
            )  # fmt: skip
            l2, terms = progressive._mode_flags(run["mode"])
            qq2 = f32(run["qsq"][0])
            amax = f32(2 / np.sqrt(run["d"]))
            slacks = np.empty(run["limits"].shape[0], f32)
            _block_slacks(run["limits"], *consts, l2, qq2, terms, amax, slacks)
            thr = f32(out[0][0, k - 1])
            rows = np.concatenate(
                [np.arange(s, e) for s, e in zip(run["starts"], run["ends"], strict=True)]
            )
            block = np.concatenate(
                [b + np.arange(e - s) // 32 for s, e, b in
                 zip(run["starts"], run["ends"], run["bptr"][:-1], strict=True)]
            )  # fmt: skip
            ok = np.isfinite(points)
            cut = thr - slacks[block] - abs(thr) * progressive._THR_MARGIN
            through = ok & (points >= cut)
            w0 = run["big_f"][rows] * xs + run["big_h"][rows]  # as pass 3 makes them
            ub = np.array([
                _row_bound(w0[r], run["big_f"][j], run["eps"][j], run["big_a"][j], run["a"][j],
                           run["b"][j], run["c"][j], run["norms"][j] if l2 else f32(0),
                           consts[0], consts[1], consts[2], consts[3], consts[4], consts[5],
                           consts[6], l2, qq2, terms, amax)
                for r, j in zip(np.flatnonzero(through), rows[through], strict=True)
            ])  # fmt: skip
            passed.append(through.mean())
            reached.append(np.sum(ub >= thr) / n)
    return {"passed": float(np.mean(passed)), "reached": float(np.mean(reached))}


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

        def record(bound, a, kw, out):
            if out is not None:
                calls.append((bound, a, kw, out))

        with _spying(record):
            for i in range(nq):
                index.search(queries[i : i + 1], 10, progressive=True)
        refined = np.array([int(out[2].sum()) for *_, out in calls])
        reach = _filter_reach(index, queries[: min(nq, 100)])
        search_us = _p50(lambda i: index.search(queries[i : i + 1], 10, progressive=True), nq)
        # the search again, its compiled call timed where it runs (caches as the search
        # leaves them): what the search pays outside the call, query by query
        inside = []

        def timed(bound, a, kw, out):
            inside.append(time.perf_counter())

        whole = []
        with _spying(timed):
            for i in range(nq):
                t = time.perf_counter()
                index.search(queries[i : i + 1], 10, progressive=True)
                whole.append(time.perf_counter() - t)
        spans = np.diff(np.array(inside).reshape(-1, 2), axis=1)[:, 0]
        in_situ_us = 1e6 * float(np.median(spans))
        outside_us = 1e6 * float(np.median(np.array(whole) - spans))
        kernel_us = _p50(lambda i: _CALL(calls[i][0], *calls[i][1], **calls[i][2]), nq)
        saved = calls[0][3]
        sweep = np.ones(8_000_000 // 8)
        with _spying(lambda *_: saved):
            python_us = _p50(lambda i: index.search(queries[i : i + 1], 10, progressive=True), nq)
            swept_us = _p50(
                lambda i: (sweep.sum(), index.search(queries[i : i + 1], 10, progressive=True)),
                nq,
            )
            sweep_us = _p50(lambda i: sweep.sum(), nq)
        bound, a0, _, _ = calls[0]
        blocked = bound._rows[3]
        tag = fastscan._TAGS[fastscan.ISAS.index(fastscan.ISA)]
        qi = grid_queries(*a0[2], bound._head[3])[0]
        luts = np.ascontiguousarray(np.repeat(sign_tables(qi[:1], base.shape[1])[0], 8, axis=0))
        _sums_only(tag, blocked, luts)
        sums_us = _p50(lambda i: _sums_only(tag, blocked, luts), nq)
        passes = _pass_p50(calls)
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
    # the packed word (F, A, pop) and the a, b, c read
    terms = 4 + {0: 0, 1: 4, 2: 12}[progressive._mode_flags(calls[0][0]._mode)[1]]
    d = base.shape[1]
    print(f"- CPU: {common.cpu_model()}; kernel {fastscan.ISA}; 1 thread")
    print(f"- vecpress source: {common.git_state()}")
    print(f"- command: `python benchmarks/latency_parts.py --spec {args.spec}`\n")
    print("| part | p50 µs |")
    print("|---|--:|")
    print(f"| `search(q[i:i+1], 10, progressive=True)` | {search_us:,.0f} |")
    print(f"| compiled call alone (`progressive.Bound`) | {kernel_us:,.0f} |")
    print(f"| compiled call within the search | {in_situ_us:,.0f} |")
    print(f"| the search outside the compiled call | {outside_us:,.0f} |")
    for (name, _), us in zip(PASSES, passes, strict=True):
        print(f"| compiled call, {name} | {us:,.0f} |")
    print(f"| sign-plane sums alone | {sums_us:,.0f} |")
    print(f"| Python (the kernel's result saved) | {python_us:,.0f} |")
    print(f"| Python after an 8 MB sweep (sweep subtracted) | {swept_us - sweep_us:,.0f} |")
    if rabit_us is not None:
        print(f"| rabitqlib flat 4-bit, one query | {rabit_us:,.0f} |")
    print(
        f"\nRows read in full per query: mean {refined.mean():,.0f}, p50 {np.median(refined):,.0f}"
        f" (of {base.shape[0]:,}). First pass, bytes read per row: {d // 8} of sign plane"
        f" + {terms} of terms, and 8 written (table sum and point; the points read again)."
    )
    print(
        f"\nRows pass 3's filter lets through against the final 10th score:"
        f" {reach['passed']:.2%}; rows whose bound reaches it: {reach['reached']:.2%}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
