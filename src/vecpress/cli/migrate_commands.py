"""``vecpress migrate fit``: an adapter from a new model's embeddings to an old one's
(:mod:`vecpress.migrate`), for ``vecpress search --adapter``."""

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


def read_adapter(path: str):
    """The adapter in the file ``path`` (made by ``vecpress migrate fit``)."""
    from ..migrate import Adapter

    with open(path, "rb") as f:
        return Adapter.from_bytes(f.read())


def add_migrate_parsers(sub, common: argparse.ArgumentParser) -> None:
    """``migrate fit``."""
    migrate = sub.add_parser("migrate", help="switch embedding models without re-embedding")
    msub = migrate.add_subparsers(
        dest="migrate_command", required=True, metavar="ACTION", help="fit: fit an adapter"
    )
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
