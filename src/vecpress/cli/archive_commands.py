"""``vecpress compress | decompress``: the archive codec's commands (:mod:`vecpress.archive`)."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from .args import _check_output, _vectors

#: rows of the input (spread evenly) whose recall@10 ``compress --report`` measures
REPORT_ROWS = 20_000


def _compress(args: argparse.Namespace) -> int:
    from .. import archive

    _check_output(args.output)
    source = _source(args.vectors, args.column)
    queries = None if args.queries is None else _vectors(args.queries, "queries", None)
    info = archive.compress_file(
        source, args.output, mse=args.mse, bits_per_dim=args.bits_per_dim, recall=args.recall,
        queries=queries, column=args.column, progress=not args.no_progress,
    )  # fmt: skip
    out = {"file": args.output, "bytes": os.path.getsize(args.output), **info}
    if args.report:
        out["recall_at_10"] = _recall(source, args.column, args.output)
    print(json.dumps(out, indent=2))
    return 0


def _source(arg: str, column: str | None):
    """A file, folder or list the archive reads a chunk at a time; a collection or a
    built-in set's name as an array."""
    if os.path.exists(arg) and not os.path.isfile(os.path.join(arg, "catalog.sqlite")):
        return arg
    return _vectors(arg, "vectors", column)


def _recall(source, column: str | None, path: str) -> float:
    """Recall@10 of the decompressed rows: :data:`REPORT_ROWS` rows of the input spread
    evenly, original against decompressed (:func:`vecpress.archive.recall_of`)."""
    from ..archive import iter_decompress, recall_of
    from ..files.sources import VectorSource

    src = VectorSource.open(source, column=column)
    rows = np.unique(np.linspace(0, src.n - 1, min(REPORT_ROWS, src.n)).astype(np.int64))
    decoded = np.empty((rows.size, src.d), np.float32)
    for lo, part in iter_decompress(path):
        a, b = np.searchsorted(rows, [lo, lo + part.shape[0]])
        decoded[a:b] = part[rows[a:b] - lo]
    return recall_of(src.take(rows), decoded)


def _decompress(args: argparse.Namespace) -> int:
    from .. import archive

    _check_output(args.output)
    if not args.output.endswith(".npy"):
        raise ValueError(f"--output {args.output}: decompress writes a .npy file")
    print(json.dumps(archive.decompress_file(args.archive, args.output,
                                             progress=not args.no_progress)))  # fmt: skip
    return 0


def add_archive_parsers(sub, common: argparse.ArgumentParser) -> None:
    """``compress`` and ``decompress``."""
    comp = sub.add_parser(
        "compress", parents=[common],
        help="compress vectors into an archive file near the Shannon bound; prints its "
        "rate and error as JSON",
    )  # fmt: skip
    comp.add_argument("vectors", help="float vectors: .npy, .fvecs, .fbin or .parquet")
    comp.add_argument("--column", help="Parquet column of the vectors")
    comp.add_argument("-o", "--output", required=True, help="archive file to write (.vpz)")
    target = comp.add_mutually_exclusive_group(required=True)
    target.add_argument("--mse", type=float, metavar="M",
                        help="the largest mean squared error per entry allowed")  # fmt: skip
    target.add_argument("--bits-per-dim", type=float, metavar="B",
                        help="the largest size allowed, in bits per vector entry")  # fmt: skip
    target.add_argument("--recall", type=float, metavar="R",
                        help="the coarsest archive whose decompressed vectors keep a recall@10 "
                        "of R (by inner product) on held-out queries")  # fmt: skip
    comp.add_argument("--queries", help="the queries of --recall (default: 200 held-out rows)")
    comp.add_argument(
        "--report", action="store_true",
        help="also measure the recall@10 of the decompressed vectors (the archive's rate, "
        "error, the Gaussian rate-distortion bound at that error and the gap are always "
        "printed)",
    )  # fmt: skip
    comp.set_defaults(func=_compress)
    dec = sub.add_parser("decompress", parents=[common],
                         help="decompress an archive file into a .npy file")  # fmt: skip
    dec.add_argument("archive", help="archive file (made by vecpress compress)")
    dec.add_argument("-o", "--output", required=True, help=".npy file to write")
    for p in (comp, dec):
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
    dec.set_defaults(func=_decompress)
