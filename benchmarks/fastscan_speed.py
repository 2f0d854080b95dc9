"""Single-thread speed of the 4-bit PQ fast-scan kernel against faiss ``IndexPQFastScan``.

For each ``M`` (d = 384 by default: ``pq96x4`` and ``pq192x4``), faiss's
``PQ<M>x4fs`` index (inner product) is trained on random Gaussian rows and holds
``n`` random rows; both sides search the same ``nq`` queries for their top 10 on
one thread, in the same process, one right after the other, and the median of
``--repeats`` runs is reported. Our codes are those of faiss's product quantizer
(same centroids), so both rank by the same float tables quantized the same way.

Reported per kernel (``--isa``, default: every kernel this machine runs):

* ``fastscan to uint32``: :func:`~vecpress.kernels.fastscan.fastscan` writing
  the integer sums of ``--batch`` queries (a uint32 ``[batch, n]`` array), scaled
  to ``nq`` queries: no selection, but the writes of the full score matrix;
* ``tables + quantize + fastscan_topk``: the float tables (one batched matrix
  product), :func:`~vecpress.kernels.fastscan.quantize_luts` and
  :func:`~vecpress.kernels.fastscan.fastscan_topk` (fused scan and top-10
  heaps, then the merge) for all queries in one call: the figure to compare
  with faiss's ``index.search(q, 10)``; then ``fastscan_topk`` alone, in one
  call and in calls of ``--batch`` queries;
* ns per (query, vector) pair, queries/s, and the ratio to faiss's queries/s.

Run: ``python benchmarks/fastscan_speed.py [--n 100000] [--nq 1000] [--m 96 192]
[--repeats 5] [--isa avx512vbmi avx2]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def median_time(fn, repeats: int) -> float:
    fn()  # warm up (compilation, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--m", type=int, nargs="+", default=[96, 192])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64, help="queries per call of the bare scan")
    ap.add_argument("--isa", nargs="+", default=None)
    ap.add_argument("--ntrain", type=int, default=20_000)
    args = ap.parse_args()

    import faiss
    import numba
    from threadpoolctl import threadpool_limits

    from vecpress.kernels import fastscan as fs

    threadpool_limits(1)
    faiss.omp_set_num_threads(1)
    numba.set_num_threads(1)
    isas = args.isa or list(fs.available_isas()[1:]) or ["portable"]
    rng = np.random.default_rng(0)
    d, n, nq, k = args.d, args.n, args.nq, 10
    xt = rng.standard_normal((args.ntrain, d), dtype=np.float32)
    xb = rng.standard_normal((n, d), dtype=np.float32)
    xq = rng.standard_normal((nq, d), dtype=np.float32)
    print(f"d={d} n={n} nq={nq} k={k}, 1 thread, median of {args.repeats}; host kernel {fs.ISA}")
    print("| M | what | s | ns/(query·vector) | queries/s | queries/s vs faiss |")
    print("|---|---|---|---|---|---|")
    for m in args.m:
        run_m(args, m, isas, xt, xb, xq, k)


def run_m(args, m, isas, xt, xb, xq, k) -> None:
    import faiss

    from vecpress.kernels import fastscan as fs

    d, n, nq = args.d, args.n, args.nq
    index = faiss.index_factory(d, f"PQ{m}x4fs", faiss.METRIC_INNER_PRODUCT)
    index.train(xt)
    index.add(xb)
    pq = index.pq
    # [M, dsub, 16]: the tables are one batched product per sub-space
    cent_t = faiss.vector_to_array(pq.centroids).reshape(m, 16, d // m).transpose(0, 2, 1).copy()
    codes = pq.compute_codes(xb)  # 4-bit codes, sub-quantizer 2p in the low nibble of byte p
    blocked = fs.fastscan_layout(codes, m)

    def tables(q):
        t = np.matmul(q.reshape(len(q), m, -1).transpose(1, 0, 2), cent_t)  # M, nq, 16
        return np.ascontiguousarray(t.transpose(1, 0, 2))

    def ours(isa):
        lut8, scale, bias = fs.quantize_luts(tables(xq))
        return fs.fastscan_topk(blocked, n, m, lut8, k, scale, bias, isa=isa)

    def faiss_search():
        return index.search(xq, k)

    lut8_all, _, _ = fs.quantize_luts(tables(xq))
    lut8_b = lut8_all[: args.batch]
    out_b = np.empty((len(lut8_b), n), np.uint32)
    t_faiss = median_time(faiss_search, args.repeats)
    _, ids_faiss = faiss_search()
    rows = [("faiss IndexPQFastScan search", t_faiss)]
    rows.append(("tables (batched matmul)", median_time(lambda: tables(xq), args.repeats)))
    lut = tables(xq)
    rows.append(("quantize_luts", median_time(lambda: fs.quantize_luts(lut), args.repeats)))
    for isa in isas:
        t_top = median_time(lambda isa=isa: ours(isa), args.repeats)
        t_sel = median_time(
            lambda isa=isa: fs.fastscan_topk(blocked, n, m, lut8_all, k, isa=isa), args.repeats
        )
        t_chunks = median_time(
            lambda isa=isa: [
                fs.fastscan_topk(blocked, n, m, lut8_all[s : s + args.batch], k, isa=isa)
                for s in range(0, nq, args.batch)
            ],
            args.repeats,
        )
        t_scan = median_time(
            lambda isa=isa: fs.fastscan(blocked, n, m, lut8_b, out_b, isa=isa), args.repeats
        ) * (nq / len(lut8_b))
        _, ids = ours(isa)
        agree = np.mean(
            [len(np.intersect1d(a, b)) / k for a, b in zip(ids, ids_faiss, strict=True)]
        )
        rows.append(
            (f"{isa}: tables + quantize + fastscan_topk ({agree:.3f} of faiss's ids)", t_top)
        )
        rows.append((f"{isa}: fastscan_topk alone", t_sel))
        rows.append((f"{isa}: fastscan_topk alone, {args.batch}-query calls", t_chunks))
        rows.append((f"{isa}: fastscan to uint32, {len(lut8_b)}-query calls", t_scan))
        # faiss again, right after, so a busy machine shows in the spread
        rows.append(("faiss again", median_time(faiss_search, args.repeats)))
    for name, t in rows:
        ns = t / (nq * n) * 1e9
        print(f"| {m} | {name} | {t:.4f} | {ns:.3f} | {nq / t:.0f} | {t_faiss / t:.2f} |")


if __name__ == "__main__":
    main()
