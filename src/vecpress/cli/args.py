"""Shared constants and the checks of the command line's arguments and inputs."""

from __future__ import annotations

import argparse
import os

import numpy as np

from .._validation import MAX_NORM
from ..advisor.bench import GRIDS
from ..advisor.datasets import BUILTIN, DEFAULT_QUERIES
from ..files.readers import read_vectors
from ..search.index import ADD_CHUNK

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
    from ..codecs.codec import Codec

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
    from ..codecs.codec import Codec

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
    from ..codecs.codec import Codec

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
    """:attr:`vecpress.Index.bytes_per_vector` of a :class:`~vecpress.advisor.bench.Config` at
    dimension ``d``, without building it: every tier's code, the 8-byte id and, for l2,
    the 4-byte ``|x|²``."""
    from ..codecs.codec import Codec

    tiers = [config.spec] + ([config.rerank_spec] if config.rerank_spec is not None else [])
    return sum(Codec.code_size_of(s, d) for s in tiers) + 8 + (4 if metric == "l2" else 0)


def _check_budget(args: argparse.Namespace, budget: int, n: int, d: int) -> None:
    """``--budget-bytes``: at least the smallest configuration of the grid at dimension d."""
    from ..advisor.bench import search_space

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


def _vectors(arg: str, name: str, column: str | None) -> np.ndarray:
    """A vectors file, a collection's folder (its documents' vectors: a float second tier
    needed, :meth:`vecpress.Collection.vectors`), or a built-in set's name (``glove50``,
    ``glove50:queries``, ...)."""
    from ..advisor.datasets import builtin_vectors

    if os.path.isfile(os.path.join(arg, "catalog.sqlite")):  # a collection's folder
        from ..collection import Collection

        with Collection.open(arg) as col:
            return col.vectors()
    x = None if os.path.exists(arg) else builtin_vectors(arg)
    return read_vectors(arg, name, column=column) if x is None else x


def _train_queries(args: argparse.Namespace, d: int):
    """The ``--train-queries`` sample (checked like the queries), or None."""
    path = getattr(args, "train_queries", None)
    if path is None:
        return None
    t = _vectors(path, "train-queries", None)
    _check_train_queries_shape(path, t.shape, d)
    _check_rows(t, "train-queries", args.metric)
    return np.asarray(t, np.float32)
