"""``vecpress migrate fit``: an adapter from a new model's embeddings to an old one's
(:mod:`vecpress.migrate`), for ``vecpress search --adapter``; ``vecpress migrate refit``:
an index re-encoded with a codec fitted on new rows (:meth:`vecpress.Index.refit`)."""

from __future__ import annotations

import argparse
import json

from .args import _check_output, _vectors


def _fit(args: argparse.Namespace) -> int:
    from ..atomic import write_bytes
    from ..migrate import Adapter

    _check_output(args.output)
    new = _vectors(args.new, "new", args.column)
    old = _vectors(args.old, "old", args.column)
    adapter = Adapter.fit(new, old, kind=args.kind, rank=args.rank, seed=args.seed)
    write_bytes(args.output, adapter.to_bytes())
    print(json.dumps({"file": args.output, "d_src": adapter.d_src, "d_dst": adapter.d_dst,
                      **adapter.report}, indent=2))  # fmt: skip
    return 0


def _refit(args: argparse.Namespace) -> int:
    from ..search.index import open as open_index

    output = args.output or args.index
    if args.output:
        _check_output(args.output)
    index = open_index(args.index, mmap=True)
    sample = _vectors(args.sample, "sample", args.column)
    vectors = None if args.vectors is None else _vectors(args.vectors, "vectors", args.column)
    index.refit(sample, vectors=vectors, path=output)
    print(json.dumps({"file": output, "rows": index.ntotal, "spec": index.spec}, indent=2))
    return 0


def read_adapter(path: str):
    """The adapter in the file ``path`` (made by ``vecpress migrate fit``)."""
    from ..migrate import Adapter

    with open(path, "rb") as f:
        return Adapter.from_bytes(f.read())


def add_migrate_parsers(sub, common: argparse.ArgumentParser) -> None:
    """``migrate fit`` and ``migrate refit``."""
    migrate = sub.add_parser("migrate", help="switch embedding models without re-embedding")
    msub = migrate.add_subparsers(
        dest="migrate_command", required=True, metavar="ACTION",
        help="fit: fit an adapter; refit: re-encode an index with a codec fitted on new rows",
    )  # fmt: skip
    fit = msub.add_parser(
        "fit", parents=[common],
        help="fit an adapter on the same texts embedded by the new and the old model; prints "
        "its held-out alignment (mean cosine of mapped and true rows) as JSON",
    )  # fmt: skip
    fit.add_argument("new", help="the new model's embeddings (.npy, .fvecs, .fbin, .parquet)")
    fit.add_argument("old", help="the old model's embeddings of the same texts, row by row")
    fit.add_argument("--column", help="Parquet column of the vectors")
    fit.add_argument("-o", "--output", required=True, help="adapter file to write (.vpa)")
    fit.add_argument("--kind", default="procrustes",
                     choices=("procrustes", "linear", "lowrank-residual"),
                     help="the map (default procrustes)")  # fmt: skip
    fit.add_argument("--rank", type=int, help="the correction's rank (lowrank-residual)")
    fit.add_argument("--seed", type=int, default=0, help="which pairs are held out (default 0)")
    fit.set_defaults(func=_fit)

    refit = msub.add_parser(
        "refit", parents=[common],
        help="fit the index's codec again on a sample of the rows it now serves and re-encode "
        "every stored row (from its float second tier or --vectors), written atomically: the "
        "old file stays intact until the new one is complete (see vecpress inspect INDEX --new)",
    )  # fmt: skip
    refit.add_argument("index", help="index file (.vpi)")
    refit.add_argument("sample", help="rows like those the index now serves, to fit on")
    refit.add_argument("--vectors", help="every stored row as floats, in the order of the "
                       "index's ids (needed without a f32/f16/bf16 second tier)")  # fmt: skip
    refit.add_argument("--column", help="Parquet column of the vectors")
    refit.add_argument("-o", "--output", help="index file to write (default: the index "
                       "itself, replaced atomically)")  # fmt: skip
    refit.set_defaults(func=_refit)
