"""The markdown report of ``benchmarks/codecs.py``: the environment, the results per
data set, the diagnostics, the criteria table and the automatic notes."""

from __future__ import annotations

import shlex

from codecs_criteria import (
    BUDGET_FAISS_FACTOR,
    BUDGET_TOL,
    ENCODE_TARGET,
    FAMILY_SLACK_BYTES,
    FAMILY_TOL,
    LEARNED_MARGIN,
    SPEED_TARGET,
    Result,
)
from common import CHUNK, Dataset, K, _f, load_average


def _plain(row: dict) -> dict:
    return {k: v for k, v in row.items() if not isinstance(v, Result)}


def _one_line(r: Result) -> str:
    if r.error:
        return f"  {r.dataset:9s} {r.library:8s} {r.spec:18s} ERROR {r.error}"
    return (
        f"  {r.dataset:9s} {r.library:8s} {r.spec:18s} {r.code_size:5d} B  "
        f"recall {r.recall:.4f} (n={r.n_queries})  mse {r.mse:.3g}  "
        f"enc {r.encode_vps:,.0f}/s  {r.ns_1t:.1f} / {r.ns_all:.1f} ns"
    )


# ---------------------------------------------------------------------------------------
# markdown
# ---------------------------------------------------------------------------------------


def render_report(bench) -> str:
    env = bench.environment()
    a = bench.args
    lines = [
        "# vecpress codec benchmark",
        "",
        f"- date: {env['date']}; total run time {sum(bench.timings.values()) / 60:.1f} min "
        f"({', '.join(f'{k} {v / 60:.1f} min' for k, v in bench.timings.items())})",
        f"- CPU: {env['cpu']} ({env['cpus']} logical CPUs; 'all threads' = {env['threads']}); "
        f"load average (1/5/15 min) at start {bench.load_start}, at end {load_average()}",
        f"- python {env['python']}, numpy {env['numpy']}, numba {env['numba']}, "
        f"faiss-cpu {env['faiss']}, vecpress {env['vecpress']}",
        f"- vecpress source (imported once at start): commit {env['git']}",
        f"- command: `{shlex.join(['python', 'benchmarks/codecs.py', *env['argv']])}`",
        "",
        "## Method",
        "",
        f"- recall@10: exhaustive search over the whole base, top-10 by the codec's scores "
        f"against the exact float32 top-10 (faiss `IndexFlatIP`), mean over queries. "
        f"Every codec is first screened on the first {a.screen_queries:,} queries; the "
        f"codecs that can decide a criterion (within {a.finalist_margin} of the best of "
        f"their group) are extended to up to {a.queries:,} queries, each within "
        f"{a.max_eval_seconds:.0f} s of scoring (column `queries`). Codecs slow to score "
        f"may use fewer queries for the same reason. Criteria compare two codecs on their "
        f"common queries (paired difference ± its standard error).",
        f"- vecpress: `Codec.from_spec(spec).fit(train)`, `score` in chunks of {CHUNK} "
        f"queries, top-10 by a compiled selection kernel (same result as `np.argpartition`, "
        f"ties to the lower id). faiss: `index_factory(d, key, METRIC_INNER_PRODUCT)`, "
        f"RaBitQ with `qb = 8`; recall of `RaBitQ`/`PQ…fs` from `index.search`; for "
        f"`SQ*`, `HR,SQ*`, `RR,SQtqmse*` and `RR,EDEN*` (mode `decoded`) faiss's search "
        f"score equals `<q, sa_decode(code)>` (checked on 20 queries to 1e-4), so the "
        f"ranking uses that product.",
        f"- training sample: {a.train_rows:,} fixed-seed base rows, the same for vecpress "
        f"`fit` and faiss `train`. MSE: mean ‖decode(encode(x)) − x‖² over "
        f"{a.mse_rows:,} fixed-seed base rows (faiss: `sa_decode`, mapped back through the "
        f"pre-transform).",
        f"- speed: encode = vectors/s of `encode`/`sa_encode` on {a.encode_rows:,} fixed "
        f"base rows ({a.synthetic_encode_rows:,} for the 1024-d synthetic set, whose slow "
        f"encoders would otherwise dominate the run), 1 thread, timed in two halves (the "
        f"faster half counts). ns/vector = time to score "
        f"up to 1,000 queries (chunks of {CHUNK}) against those rows' codes / "
        f"(queries × rows); faiss: "
        f"`index.search(q, 10)` on an index holding the same rows. Slow codecs are timed "
        f"on fewer queries (≥ 10) to stay within {a.time_budget:g} s per measurement "
        f"(columns `tq1`/`tqN`). 1 thread = `vecpress.set_num_threads(1)`, "
        f"`faiss.omp_set_num_threads(1)` and BLAS limited to 1 thread (threadpoolctl).",
        "- The machine is shared: the load average above shows other processes competing "
        "for the 2 cores, which makes the timings (especially 'all threads') noisy.",
        "",
    ]
    lines += _criteria_md(bench)
    for name, results in bench.results.items():
        ds = bench.datasets[name]
        lines += [f"## Data set `{name}` (d = {ds.d})", "", ds.description, ""]
        if bench.skipped.get(name):
            lines += ["faiss keys not accepted by this faiss (skipped): "]
            lines += [f"- `{s}`" for s in bench.skipped[name]] + [""]
        lines += _results_md(results, ds)
        diags = bench.diagnostics.get(name)
        if diags:
            lines += _diag_md(diags)
    lines += ["## Notes", ""] + [f"- {n}" for n in _auto_notes(bench)] + [""]
    return "\n".join(lines)


def _results_md(results: list[Result], ds: Dataset) -> list[str]:
    out = [
        "| library | spec | code_size (B) | bits/dim | recall@10 | queries | MSE | "
        "encode vec/s | ns/vector 1 thread | ns/vector all threads | tq1/tqN | note |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    order = sorted(results, key=lambda r: (r.library != "vecpress", r.code_size or 0, r.spec))
    for r in order:
        if r.error:
            err = r.error.replace("|", "/")
            out.append(
                f"| {r.library} | `{r.spec}` | {_f(r.code_size, 'd')} | | | | | | | | | {err} |"
            )
            continue
        note = "; ".join(x for x in (r.mode if r.mode == "decoded" else "", r.note) if x)
        if r.nonfinite_scores:
            note += f"; {r.nonfinite_scores} NaN/Inf scores"
        out.append(
            f"| {r.library} | `{r.spec}` | {r.code_size} | {8 * r.code_size / ds.d:.2f} | "
            f"{_f(r.recall, '.4f')} | {r.n_queries} | {_f(r.mse, '.3g')} | "
            f"{_f(r.encode_vps, ',.0f')} | {_f(r.ns_1t, '.2f')} | {_f(r.ns_all, '.2f')} | "
            f"{r.timed_queries_1t}/{r.timed_queries_all} | {note} |"
        )
    return [*out, ""]


def _diag_md(diags: dict) -> list[str]:
    out = [
        "8-bit query quantization of the `rq` codecs (first queries): recall@10 with the "
        "query quantized to 8 bits (what `score` does) and with the float query "
        "(`score_float`), and the worst |score − score_float| / "
        "`query_quantization_bound` over all pairs (≤ 1 expected).",
        "",
        "| spec | queries | recall int8 query | recall float query | max err/bound | violations |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for spec, g in diags.items():
        out.append(
            f"| `{spec}` | {g['queries']} | {g['recall_int8_query']:.4f} | "
            f"{g['recall_float_query']:.4f} | {g['max_err_over_bound']:.3f} | "
            f"{g['bound_violations']} |"
        )
    return [*out, ""]


def _criteria_md(bench) -> list[str]:
    rows = bench.criteria
    out = ["## Acceptance criteria", ""]
    ab = [r for r in rows if r["criterion"] in ("a", "b", "e")]
    if ab:
        out += [
            f"(a) family parity: best vecpress config of the family with code_size ≤ "
            f"faiss + {FAMILY_SLACK_BYTES} B, recall@10 ≥ faiss − {FAMILY_TOL}. "
            f"(b) budget parity: best vecpress codec with code_size ≤ B = d·b/8 + 8 within "
            f"{BUDGET_TOL} of the best training-free faiss codec with code_size ≤ "
            f"{BUDGET_FAISS_FACTOR}·B. (e) learned budget: the same, against every faiss "
            f"codec (PQ, OPQ, PCAR+SQ included), vecpress ahead by "
            f"{', '.join(f'{m} at b={b}' for b, m in LEARNED_MARGIN.items())}. "
            f"Recalls are on the n queries both codecs share; Δ = "
            f"vecpress − faiss ± standard error of the paired difference.",
            "",
            "| crit. | data set | check | vecpress (B) | faiss (B) | n | recall vecpress | "
            "recall faiss | Δ ± se | result |",
            "|---|---|---|---|---|--:|--:|--:|--:|---|",
        ]
        for r in ab:
            if "diff" not in r:
                out.append(
                    f"| {r['criterion']} | {r['dataset']} | {r['check']} | | "
                    f"{r.get('faiss', '')} | | | | {r.get('detail', '')} | **{r['status']}** |"
                )
                continue
            out.append(
                f"| {r['criterion']} | {r['dataset']} | {r['check']} | "
                f"`{r['vecpress']}` ({r['vp_size']}) | `{r['faiss']}` ({r['faiss_size']}) | "
                f"{r['n']} | {r['a']:.4f} | {r['b']:.4f} | {r['diff']:+.4f} ± {r['se']:.4f} | "
                f"**{r['status']}** |"
            )
        out.append("")
    cd = [r for r in rows if r["criterion"] in ("c", "d")]
    if cd:
        out += [
            f"(c) search speed with top-{K}, like for like, 1 thread, 1,000 queries in chunks "
            f"of {CHUNK} against {bench.args.speed_rows:,} rows, best of "
            f"{bench.args.speed_repeats}: a flat vecpress `Index(spec, metric='ip')"
            f".search(q, {K})` (its scan and top-{K}) vs faiss `RR,RaBitQ4` "
            f"`search(q, {K})` (its scan and heap) with qb = 8 (target ratio ≥ "
            f"{SPEED_TARGET}; 'score only' is vecpress's `Codec.score` without top-k, for "
            f"information). (d) encode `hd2,rq4`, 1 thread (target ≥ {ENCODE_TARGET:,} "
            f"vectors/s).",
            "",
            "| crit. | data set | check | vecpress vectors/s | faiss vectors/s | ratio | "
            "ratio score only | result |",
            "|---|---|---|--:|--:|--:|--:|---|",
        ]
        for r in cd:
            out.append(
                f"| {r['criterion']} | {r['dataset']} | {r['check']} | {r['vp_vps']:,.0f} | "
                f"{_f(r.get('faiss_vps'), ',.0f')} | {_f(r.get('ratio'), '.2f')} | "
                f"{_f(r.get('ratio_score_only'), '.2f')} | **{r['status']}** |"
            )
        out.append("")
    return out


def _auto_notes(bench) -> list[str]:
    notes = list(bench.notes)
    for name, results in bench.results.items():
        for r in results:
            if r.error:
                notes.append(f"{name}: `{r.spec}` ({r.library}) failed: {r.error}")
            if r.nonfinite_scores:
                notes.append(f"{name}: `{r.spec}` produced {r.nonfinite_scores} NaN/Inf scores")
        capped = [r.spec for r in results if r.note.startswith("time cap")]
        if capped:
            notes.append(
                f"{name}: finalists stopped by the {bench.args.max_eval_seconds:.0f} s "
                f"evaluation cap: {', '.join(f'`{s}`' for s in capped)}"
            )
        rq = {r.spec: r.mse for r in results if r.library == "faiss" and r.family == "RaBitQ"}
        if len(rq) > 1 and len({round(v, 6) for v in rq.values() if v is not None}) == 1:
            notes.append(
                f"{name}: faiss's RaBitQ `sa_decode` gives the same MSE at every bit count "
                f"({next(iter(rq.values())):.4g}): it appears to decode the 1-bit code only, "
                f"so its MSE column does not reflect the extra bits (its search does use them)."
            )
    if any(r.family == "sign" for rs in bench.results.values() for r in rs):
        notes.append(
            "`hd2,sign` scores take only d + 1 distinct values (cosine of a Hamming "
            "distance), so many rows tie; ties go to the lower row id, which makes its "
            "recall partly a matter of tie-breaking."
        )
    notes.append(
        "faiss `RR,SQtqmse<b>` stores no norm (exact for unit-norm data only); vecpress "
        "`tq<b>` adds a 2-byte norm. faiss `RR,RaBitQ*` and `RR,EDEN*` train a centroid "
        "(faiss RaBitQ ≈ vecpress `center,…,rq`)."
    )
    return notes
