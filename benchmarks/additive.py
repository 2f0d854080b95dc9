"""Additive quantizers and ``klvq`` at 1 and 2 bits per dimension, against transform coding
and faiss (issue 21).

On GloVe-50 and the 384-d sentence set (``sentences.py``), rows L2-normalised and
ranked by inner product, at budgets of B = 1 and 2 bits per dimension (``d * bits / 8``
bytes a row, per-vector factors included): as the issue states the comparison, a
vecpress codec counts within B, a faiss codec within 1.1 B (faiss's additive quantizers
get the largest number of 8-bit codebooks within 1.1 B). Recall@10 of an exhaustive search
by each codec's scores against the exact top 10, on ``--queries`` queries, for

* vecpress: ``klvq<b>`` (transform coding with a residual quantizer on the leading
  axes, or one weighted block on every axis at d b / 8 <= 16 bytes; beam 5 and
  ``--strong-beam``; and ``klvq<b>-aniso<eta>``, the block coded score-aware, at the
  ``--aniso`` values), ``rvq<M>x8`` (faiss's residual quantizer trains
  and encodes; its codes are faiss's own, ``tests/test_additive.py``; with the strong
  beam too where ``M <= 16``), ``kl<b>`` and ``pca<d'>,kl<b>`` (transform coding),
  ``center,hd2,rq<b>``, ``pq<M>x8``;
* faiss in the same process on the same rows: ``RQ<M'>x8`` (beam 5, and ``--strong-beam``),
  ``LSQ<M'>x8`` (GloVe only: at d = 384 faiss's LSQ of 48 x 8-bit codebooks had not
  finished training on 5,000 rows after 9 minutes on this machine), ``PQ<M>x8``,
  ``OPQ<M>,PQ<M>x8`` and ``RR,RaBitQ`` (1 bit);

every codec trained on the same ``--train`` rows, with bytes per vector (codes and
per-vector factors: no codec here stores a norm), encode rows/s (all threads, and on one
core: 20,000 rows, vecpress and faiss set to one thread) and scan ns per vector (the
exhaustive search's time over queries x rows, one thread each, the top 10 kept inside
the scan on both sides, after one untimed search of the same queries: vecpress
``Index.search`` of all queries, the index holding the codec ``Index.train`` fitted,
faiss ``index.search``, its default search type). The paired standard error of a
recall difference is over queries.

Run ``python benchmarks/additive.py [--sets glove,minilm] [--bits 1,2] [--aniso 3]
[--vecpress 'klvq{b};klvq{b}-aniso3'] [--faiss 'RQ{m}x8']`` (``--vecpress``, ``--faiss``:
only those specs and keys); writes
``benchmarks/results/additive-<sets>-<bits>b-<date>.{json,md}`` and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import common
from vecpress import Index
from vecpress.codecs.quantizers.transform_vq import row_bytes, split

HERE = Path(__file__).resolve().parent


def candidates(
    d: int, bits: int, set_name: str, strong_beam: int, aniso=(), only=(), only_faiss=None
) -> tuple[list[str], list[str]]:
    """(vecpress specs, faiss factory keys) near ``bits`` per dimension at ``d``; ``aniso``
    adds ``klvq``'s score-aware block at those ``eta`` (where the row has a block),
    ``only`` replaces vecpress's list (``{b}`` and ``{beam}`` filled in), ``only_faiss``
    (if not ``None``) faiss's (``{m}``, its codebooks within 1.1 B, filled in)."""
    m = max(1, d * bits // 8)  # vecpress's bytes = 8-bit codebooks within B
    mf = max(1, int(1.1 * d * bits / 8))  # faiss's codebooks within 1.1 B
    vp = [f"klvq{bits}", f"rvq{m}x8", f"kl{bits}", f"center,hd2,rq{bits}"]
    if strong_beam:
        vp.append(f"klvq{bits}-beam{strong_beam}")
        if m <= 16:  # faiss's RQ with the strong beam (the same codes): where it is cheap
            vp.append(f"rvq{m}x8-beam{strong_beam}")
    if split(d, row_bytes(d, bits))[1]:  # a block to code score-aware
        for eta in aniso:
            vp.append(f"klvq{bits}-aniso{eta}")
            if strong_beam:
                vp.append(f"klvq{bits}-beam{strong_beam}-aniso{eta}")
    for keep in (d // 2, (3 * d) // 4):  # fewer axes, more bits each
        b2 = max(1, min(8, (d * bits - 16) // keep))  # the factor's 2 bytes within B
        if b2 >= 1 and keep < d:
            vp.append(f"pca{keep},kl{b2}")
    # product quantizers need M to divide d: the most sub-spaces within B / 1.1 B
    vp.append(f"pq{max(k for k in range(1, d + 1) if d % k == 0 and k <= m)}x8")
    if only:
        vp = [spec.format(b=bits, beam=strong_beam) for spec in only]
    mp = max(k for k in range(1, d + 1) if d % k == 0 and k <= mf)
    fs = [f"RQ{mf}x8", f"PQ{mp}x8", f"OPQ{mp},PQ{mp}x8"]
    if set_name == "glove":
        fs.append(f"LSQ{mf}x8")
    if bits == 1:
        fs.append("RR,RaBitQ")
    if only_faiss is not None:
        fs = [key.format(m=mf) for key in only_faiss]
    return vp, [f for f in fs if f]


def top10(scores: np.ndarray) -> np.ndarray:
    """Each row's 10 best columns (any order): ``reach.py``'s exhaustive top 10."""
    return np.argpartition(-scores, 9, axis=1)[:, :10]


def recall_rows(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.array([np.intersect1d(f, t).size / 10 for f, t in zip(found, truth, strict=True)])


#: rows encoded on one core for the one-core encode rate
ONE_CORE_ROWS = 20_000


def run_vecpress(spec: str, train, base, q) -> dict:
    import vecpress

    index = Index(spec, metric="ip")
    t0 = time.perf_counter()
    index.train(train)
    fit_s = time.perf_counter() - t0
    codec = index.codec
    codec.encode(base[:1000])  # (compiled before the clock starts)
    t0 = time.perf_counter()
    codec.encode(base)
    enc = base.shape[0] / (time.perf_counter() - t0)
    threads = vecpress.get_num_threads()
    vecpress.set_num_threads(1)
    try:
        part = base[:ONE_CORE_ROWS]
        t0 = time.perf_counter()
        codec.encode(part)
        enc1 = part.shape[0] / (time.perf_counter() - t0)
    finally:
        vecpress.set_num_threads(threads)
    index.add(base)
    index.search(q, 10, threads=1)  # (compiled for this batch before the clock starts)
    t0 = time.perf_counter()
    found = index.search(q, 10, threads=1).ids
    scan_ns = (time.perf_counter() - t0) / (len(q) * base.shape[0]) * 1e9
    return {"library": "vecpress", "codec": spec, "bytes": codec.code_size, "fit_s": fit_s,
            "encode_per_s": enc, "encode_one_core": enc1, "scan_ns": scan_ns,
            "found": found}  # fmt: skip


def run_faiss(key: str, train, base, q, beam: int | None = None) -> dict:
    import faiss

    d = base.shape[1]
    index = faiss.index_factory(d, key, faiss.METRIC_INNER_PRODUCT)
    if beam is not None:
        faiss.downcast_index(index).rq.max_beam_size = beam
    if "RaBitQ" in key:  # query bits 8, as in the other benchmarks
        top = faiss.downcast_index(index)
        inner = faiss.downcast_index(top.index) if isinstance(top, faiss.IndexPreTransform) else top
        inner.qb = 8
    t0 = time.perf_counter()
    index.train(train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.add(base)
    enc = base.shape[0] / (time.perf_counter() - t0)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        part = base[:ONE_CORE_ROWS]
        t0 = time.perf_counter()
        index.sa_encode(part)
        enc1 = part.shape[0] / (time.perf_counter() - t0)
    finally:
        faiss.omp_set_num_threads(threads)
    faiss.omp_set_num_threads(1)
    try:
        index.search(q, 10)  # (as vecpress's: the same search once before the clock)
        t0 = time.perf_counter()
        found = index.search(q, 10)[1]
    finally:
        faiss.omp_set_num_threads(threads)
    scan_ns = (time.perf_counter() - t0) / (len(q) * base.shape[0]) * 1e9
    label = key if beam is None else f"{key} (beam {beam})"
    return {"library": "faiss", "codec": label, "bytes": index.sa_code_size(), "fit_s": fit_s,
            "encode_per_s": enc, "encode_one_core": enc1, "scan_ns": scan_ns,
            "found": found}  # fmt: skip


def run_set(
    ds, bits_list, n_train: int, n_queries: int, strong_beam: int, aniso, only, only_faiss=None
) -> dict:
    import faiss

    rng = np.random.default_rng(0)
    base = np.ascontiguousarray(ds.base, np.float32)
    q = np.ascontiguousarray(ds.queries[:n_queries], np.float32)
    train = np.ascontiguousarray(base[np.sort(rng.choice(base.shape[0], n_train, replace=False))])
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(base)
    truth = flat.search(q, 10)[1]
    out = {"set": ds.name, "d": ds.d, "n": base.shape[0], "queries": len(q), "budgets": []}
    for bits in bits_list:
        vp, fs = candidates(ds.d, bits, ds.name, strong_beam, aniso, only, only_faiss)
        rows = []
        for spec in vp:
            rows.append(run_vecpress(spec, train, base, q))
            got = recall_rows(rows[-1]["found"], truth).mean()
            common.log(f"{ds.name} {bits}b vecpress {spec}: {got:.4f}")
        for key in fs:
            rows.append(run_faiss(key, train, base, q))
            common.log(
                f"{ds.name} {bits}b faiss {key}: {recall_rows(rows[-1]['found'], truth).mean():.4f}"
            )
            if key.startswith("RQ") and strong_beam:
                rows.append(run_faiss(key, train, base, q, beam=strong_beam))
        budget = ds.d * bits / 8
        for r in rows:
            per = recall_rows(r.pop("found"), truth)
            r["recall"], r["per_query"] = float(per.mean()), per
            r["within"] = r["bytes"] <= (budget if r["library"] == "vecpress" else 1.1 * budget)
        best = {
            lib: max((r for r in rows if r["library"] == lib and r["within"]),
                     key=lambda r: r["recall"], default=None)
            for lib in ("vecpress", "faiss")
        }  # fmt: skip
        lead = se = None
        if best["vecpress"] and best["faiss"]:
            diff = best["vecpress"]["per_query"] - best["faiss"]["per_query"]
            lead, se = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.size))
        for r in rows:
            r.pop("per_query")
        out["budgets"].append({"bits": bits, "bytes": budget, "rows": rows, "lead": lead, "se": se,
                               "best": {k: v and v["codec"] for k, v in best.items()}})  # fmt: skip
    return out


def report(run: dict) -> str:
    env = run["env"]
    out = [f"Run {env['date']}, {env['cpu']}; {env['versions']}; vecpress source {env['git']}; "
           f"load {env['load']}. Command: `python benchmarks/{run['argv']}`.", ""]  # fmt: skip
    for s in run["sets"]:
        for b in s["budgets"]:
            out += [f"**{s['set']}** (n = {s['n']:,}, d = {s['d']}, {s['queries']:,} queries), "
                    f"{b['bits']} bit(s) per dimension = {b['bytes']:g} B (vecpress within "
                    f"B, faiss within 1.1 B = {1.1 * b['bytes']:.1f} B):", "",
                    "| library | codec | B/vector | recall@10 | fit s | encode rows/s "
                    "| one core | scan ns/vector |",
                    "|---|---|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
            for r in sorted(b["rows"], key=lambda r: -r["recall"]):
                mark = (
                    ""
                    if r["within"]
                    else (" (over B)" if r["library"] == "vecpress" else " (over 1.1 B)")
                )
                out.append(f"| {r['library']} | `{r['codec']}`{mark} | {r['bytes']} | "
                           f"{r['recall']:.4f} | {r['fit_s']:.1f} | "
                           f"{r['encode_per_s']:,.0f} | {r['encode_one_core']:,.0f} | "
                           f"{r['scan_ns']:.2f} |")  # fmt: skip
            if b["lead"] is not None:
                out += ["", f"- best: vecpress `{b['best']['vecpress']}` (within B) against "
                        f"faiss `{b['best']['faiss']}`: {b['lead']:+.4f} +- {b['se']:.4f} "
                        "(paired standard error)", ""]  # fmt: skip
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="glove,minilm")
    p.add_argument("--bits", default="1,2")
    p.add_argument("--train", type=int, default=16_384, help="training rows (default 16384)")
    p.add_argument("--queries", type=int, default=1_000, help="queries (default 1000)")
    p.add_argument("--strong-beam", type=int, default=16, help="faiss RQ's stronger beam "
                   "(default 16; 0: skip)")  # fmt: skip
    p.add_argument("--aniso", default="3", help="eta of klvq's score-aware variants, "
                   "comma-separated (default 3; empty: none)")  # fmt: skip
    p.add_argument("--vecpress", default="", help="vecpress specs to run instead of the "
                   "default list, separated by ';', {b} and {beam} filled in")  # fmt: skip
    p.add_argument("--faiss", default=None, help="faiss keys to run instead of the default "
                   "list, separated by ';', {m} (codebooks within 1.1 B) filled in; '' for "
                   "none")  # fmt: skip
    p.add_argument("--minilm", type=Path, default=Path.home() / ".cache" / "vecpress" / "minilm")
    args = p.parse_args()
    env = common.run_environment()
    run = {"env": env, "argv": " ".join(["additive.py", *sys.argv[1:]]), "sets": []}
    bits = [int(b) for b in args.bits.split(",")]
    for name in filter(None, args.sets.split(",")):
        ds = common.load_glove(args.queries) if name == "glove" else common.load_minilm(args.minilm)
        if ds is not None:
            aniso = [int(e) for e in filter(None, args.aniso.split(","))]
            only = list(filter(None, args.vecpress.split(";")))
            only_faiss = None if args.faiss is None else list(filter(None, args.faiss.split(";")))
            run["sets"].append(
                run_set(
                    ds, bits, args.train, args.queries, args.strong_beam, aniso, only, only_faiss
                )
            )
    text = report(run)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    sets, bits_tag = args.sets.replace(",", "-"), args.bits.replace(",", "-")
    stamp = f"additive-{sets}-{bits_tag}b-{time.strftime('%Y-%m-%d')}"
    (out / f"{stamp}.json").write_text(json.dumps(run, indent=1, default=float))
    (out / f"{stamp}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
