"""``vecpress compress | decompress``: the archive codec's commands (:mod:`vecpress.archive`)."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from .args import _check_output, _vectors

#: rows of the vectors searched as queries by ``compress --report`` (its recall@10)
REPORT_QUERIES = 200


def _compress(args: argparse.Namespace) -> int:
    from .. import archive
    from ..atomic import write_bytes

    _check_output(args.output)
    x = _vectors(args.vectors, "vectors", args.column)
    blob = archive.compress(x, mse=args.mse, bits_per_dim=args.bits_per_dim)
    write_bytes(args.output, blob)
    out = {"file": args.output, "bytes": len(blob), **archive.describe(blob)}
    if args.report:
        out.update(_report(np.asarray(x, np.float32), archive.decompress(blob), out["mse"]))
        bound = out["gaussian_rate_bits_per_dim"]
        out["gap_bits_per_dim"] = None if bound is None else out["bits_per_dim"] - bound
    print(json.dumps(out, indent=2))
    return 0


def _report(x: np.ndarray, y: np.ndarray, mse: float) -> dict:
    """The Gaussian bound at the blob's error, and the recall@10 of the decompressed rows:
    :data:`REPORT_QUERIES` rows of the input (evenly spaced) search all rows by inner
    product, original against decompressed."""
    from ..archive import gaussian_rate

    xc = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    eig = np.linalg.eigvalsh(xc.T @ xc / x.shape[0])
    bound = gaussian_rate(eig, mse) if mse > 0 else None  # no error: no finite bound
    rows = np.linspace(0, x.shape[0] - 1, min(REPORT_QUERIES, x.shape[0])).astype(np.int64)
    k = min(10, x.shape[0])
    q = x[rows]
    want = np.argpartition(-(q @ x.T), k - 1, axis=1)[:, :k]
    got = np.argpartition(-(q @ y.T), k - 1, axis=1)[:, :k]
    hits = sum(np.intersect1d(a, b).size for a, b in zip(want, got, strict=True))
    return {"gaussian_rate_bits_per_dim": bound, "recall_at_10": hits / (k * rows.size)}


def _decompress(args: argparse.Namespace) -> int:
    from .. import archive
    from ..atomic import TMP_SUFFIX, fsync_dir, replacing

    _check_output(args.output)
    if not args.output.endswith(".npy"):
        raise ValueError(f"--output {args.output}: decompress writes a .npy file")
    with open(args.archive, "rb") as f:
        blob = f.read()
    y = archive.decompress(blob)
    folder, base = os.path.split(os.path.abspath(args.output))
    with replacing(os.path.join(folder, f".{base}.{os.getpid()}{TMP_SUFFIX}"), args.output) as f:
        np.save(f, y)
    fsync_dir(folder)
    print(json.dumps({"file": args.output, "rows": int(y.shape[0]), "dim": int(y.shape[1])}))
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
    comp.add_argument(
        "--report", action="store_true",
        help="also print the Gaussian rate-distortion bound at the archive's error, the "
        "gap to it, and the recall@10 of the decompressed vectors",
    )  # fmt: skip
    comp.set_defaults(func=_compress)
    dec = sub.add_parser("decompress", parents=[common],
                         help="decompress an archive file into a .npy file")  # fmt: skip
    dec.add_argument("archive", help="archive file (made by vecpress compress)")
    dec.add_argument("-o", "--output", required=True, help=".npy file to write")
    dec.set_defaults(func=_decompress)
