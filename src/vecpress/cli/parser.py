"""The argument parser of the ``vecpress`` command."""

from __future__ import annotations

import argparse

import numpy as np

from ..advisor.bench import RECALLS
from ..advisor.datasets import BUILTIN
from ..collection.collection import FLUSH_ROWS, MAX_K
from ..search.index import METRICS
from .archive_commands import add_archive_parsers
from .args import DEMO_REPORT, DEMO_TARGET, GRID_NAMES, MAX_SECONDS
from .collection_commands import ADD_BATCH, _add, _compact, _create, _delete, _index
from .collection_commands import _build as _collection_build
from .collection_commands import _info as _collection_info
from .collection_commands import _search as _collection_search
from .index_commands import _build, _info, _search, _warmup
from .measure import _advise, _bench, _demo, _inspect
from .migrate_commands import add_migrate_parsers
from .serve_command import add_serve_parser


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


def _rerank_depth(text: str) -> int | str:
    """``--rerank``: a number of candidates, or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', found {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

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
    inspect.add_argument(
        "--new", metavar="VECTORS",
        help="with an index file as BASE: how its codec serves these vectors against the rows "
        "it was built from (read back from its float second tier, or --reference): "
        "distortion, shift, predicted change of recall@10, whether to refit; prints JSON",
    )  # fmt: skip
    inspect.add_argument(
        "--reference",
        metavar="VECTORS",
        help="with --new: a sample of the rows the index was built from",
    )
    inspect.set_defaults(func=_inspect)

    build = sub.add_parser(
        "build", parents=[common], help="build a flat or IVF index from a vectors file"
    )
    build.add_argument(
        "vectors",
        nargs="+",
        help="float vectors: .npy, .fvecs, .fbin or .parquet files, or folders of them, read "
        "in chunks (rows numbered across the files in the order given, folders' files in name "
        "order); or a built-in set ("
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
    _add_chunk_option(build, "encoded")
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
        "--adapter", metavar="FILE",
        help="queries embedded by another model: map them into the index's space with this "
        "adapter (from vecpress migrate fit)",
    )  # fmt: skip
    search.add_argument(
        "--rerank",
        type=_rerank_depth,
        metavar="R",
        help="re-score the best R candidates with the index's second tier "
        "(built with --rerank-spec, or a two-level spec such as lvq4x8); 'auto': certified "
        "re-ranking, as many as can still reach the top k (see --confidence); default: no "
        "re-ranking",
    )
    search.add_argument(
        "--confidence",
        type=float,
        default=0.999,
        help="with --rerank auto: the probability that a certified query's results are the "
        "second tier's exact top k (default 0.999)",
    )
    search.add_argument(
        "--nprobe",
        type=int,
        metavar="P",
        help="IVF indexes: lists scanned per query (default: 1/64 of the lists)",
    )
    search.add_argument(
        "--progressive",
        action="store_true",
        help="read grid codes (rq, int, lvq of 1-5 bits) sign plane first and in full only "
        "where a row can still reach the top k: the same results, faster for few queries",
    )
    search.add_argument(
        "-o", "--output", required=True, help="results file: .npy or .json (required)"
    )
    search.add_argument("--no-progress", action="store_true", help="no progress bar")
    search.set_defaults(func=_search)

    info = sub.add_parser("info", parents=[common], help="print an index file's header as JSON")
    info.add_argument("index", help="index file")
    info.set_defaults(func=_info)

    warmup = sub.add_parser(
        "warmup",
        parents=[common],
        help="compile the search kernels of index files, collections (or of a configuration) "
        "into numba's cache, so that the first query of a later process does not wait for them",
    )
    warmup.add_argument(
        "index", nargs="*",
        help="index files (opened mapped) or collection folders whose searches to compile",
    )  # fmt: skip
    warmup.add_argument(
        "--spec",
        help="instead of files: a configuration (e.g. hd2,rq4), warmed on a small index of "
        "random rows built for it; with --dim, --metric, --rerank-spec, --ivf",
    )
    warmup.add_argument("--dim", type=int, help="with --spec: the vectors' dimension (required)")
    warmup.add_argument(
        "--metric", choices=METRICS, default="cosine", help="with --spec (default cosine)"
    )
    warmup.add_argument("--rerank-spec", help="with --spec: the second tier's spec")
    warmup.add_argument("--ivf", type=int, metavar="NLIST", help="with --spec: IVF lists")
    warmup.add_argument("--no-progress", action="store_true", help="no progress bar")
    warmup.set_defaults(func=_warmup)

    _add_collection_parser(sub, common)
    add_serve_parser(sub, common)
    add_archive_parsers(sub, common)
    add_migrate_parsers(sub, common)
    return parser


def _add_chunk_option(parser: argparse.ArgumentParser, done: str) -> None:
    """``--chunk-mb``: how much input the streaming builds hold at a time."""
    parser.add_argument(
        "--chunk-mb", type=float, default=256, metavar="M",
        help=f"megabytes of float32 vectors read and {done} at a time (default 256): memory "
        "is bounded by it, the training sample and the codes, not by the input's size",
    )  # fmt: skip


def _add_codec_options(parser: argparse.ArgumentParser) -> None:
    """The settings ``collection create`` and ``collection build`` take: --spec, --metric,
    --seed, --rerank-spec, --ivf, --flush-rows."""
    parser.add_argument("--spec", required=True, help="codec spec, e.g. 'hd2,rq4' (required)")
    _add_metric_option(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the codec (default 0)")
    parser.add_argument(
        "--rerank-spec",
        metavar="S2",
        help="second tier kept for re-ranking: 'f32' (the float vectors), 'f16', 'rq8', ... "
        "(default: none)",
    )
    parser.add_argument(
        "--ivf",
        type=int,
        metavar="NLIST",
        help="partition every segment into NLIST lists by k-means, at most --flush-rows "
        "(default: flat)",
    )
    parser.add_argument(
        "--flush-rows",
        type=int,
        default=FLUSH_ROWS,
        metavar="N",
        help="vectors that make a segment; the codec is trained on the first N; fewer wait "
        f"in the catalog, searched exactly (default {FLUSH_ROWS})",
    )


#: the PATH argument of the collection commands
_COLLECTION_HELP = "collection folder (made by vecpress collection create)"


def _add_collection_parser(sub, common: argparse.ArgumentParser) -> None:
    """``vecpress collection COMMAND``: the commands of a collection
    (:mod:`vecpress.cli.collection_commands`)."""
    collection = sub.add_parser(
        "collection",
        help="documents (ids, texts, metadata) over compressed vectors in a folder: create, "
        "add, search with metadata filters, delete, compact",
        description="A collection of documents (string ids, texts, metadata) over compressed "
        "vectors, in a folder (vecpress.Collection). Every command prints one JSON object.",
    )
    csub = collection.add_subparsers(
        dest="collection_command",
        required=True,
        metavar="COMMAND",
        help="create, build, add, search, delete, compact, info or index",
    )

    create = csub.add_parser(
        "create", parents=[common], help="create an empty collection; prints its settings"
    )
    create.add_argument("path", help="folder to create the collection in (new or empty)")
    create.add_argument(
        "--dim", type=int, required=True, help="dimension of the vectors (required)"
    )
    _add_codec_options(create)
    create.set_defaults(func=_create)

    build = csub.add_parser(
        "build", parents=[common],
        help="build a new collection from vector files larger than memory, a chunk at a "
        "time, all or nothing; prints its settings",
    )  # fmt: skip
    build.add_argument("path", help="folder of the new collection (must not exist)")
    build.add_argument(
        "vectors", nargs="+",
        help="float vectors: .npy, .fvecs, .fbin or .parquet files, or folders of them, rows "
        "numbered across them in the order given (folders' files in name order)",
    )  # fmt: skip
    _add_column_option(build, "vectors")
    _add_codec_options(build)
    build.add_argument("--id-column", metavar="C", help="Parquet column of the documents' ids "
                       "(default: the row numbers)")  # fmt: skip
    build.add_argument("--text-column", metavar="C", help="Parquet column of the texts")
    build.add_argument("--metadata-columns", metavar="C1,C2", help="Parquet columns stored as "
                       "the documents' metadata, comma-separated")  # fmt: skip
    _add_chunk_option(build, "stored")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.set_defaults(func=_collection_build)

    add = csub.add_parser(
        "add", parents=[common], help="add vectors and their documents; prints the count"
    )
    add.add_argument("path", help=_COLLECTION_HELP)
    add.add_argument("vectors", help="float vectors: .npy, .fvecs, .fbin or .parquet")
    _add_column_option(add, "vectors")
    add.add_argument(
        "--docs",
        metavar="FILE",
        help="the documents of the vectors, one row per vector in their order: .jsonl (one "
        'object a line, keys "id" (a string), "text", "metadata" (an object), each optional) '
        'or .parquet (columns "id", "text", and every other column a metadata field); ids on '
        "every row or on none (default: none: random ids, no texts, no metadata)",
    )
    add.add_argument(
        "--batch",
        type=int,
        default=ADD_BATCH,
        metavar="N",
        help=f"documents stored per transaction (default {ADD_BATCH})",
    )
    add.add_argument(
        "--upsert",
        action="store_true",
        help="replace the stored documents of the ids in --docs (else an id already stored is "
        "an error)",
    )
    add.add_argument("--no-progress", action="store_true", help="no progress bar")
    add.set_defaults(func=_add)

    search = csub.add_parser(
        "search",
        parents=[common],
        help="the k best documents per query, optionally filtered; prints them as JSON",
    )
    search.add_argument("path", help=_COLLECTION_HELP)
    search.add_argument("queries", help="float queries: .npy, .fvecs, .fbin or .parquet")
    _add_column_option(search, "queries")
    search.add_argument(
        "-k", type=int, default=10, help=f"results per query, at most {MAX_K} (default 10)"
    )
    search.add_argument(
        "--filter",
        metavar="JSON",
        help="""metadata filter as JSON, e.g. '{"year": {"$gte": 2020}, "lang": "en"}' """
        "(operators $eq $ne $gt $gte $lt $lte $in $nin $and $or; default: every document)",
    )
    search.add_argument(
        "--rerank",
        type=_rerank_depth,
        metavar="R",
        help="re-score the best R candidates of each segment with the second tier (created "
        "with --rerank-spec, or a two-level spec such as lvq4x8); 'auto': certified "
        "re-ranking; default: no re-ranking",
    )
    search.add_argument(
        "--nprobe",
        type=int,
        metavar="P",
        help="IVF collections: lists scanned per query in each segment (default: 1/64 of the "
        "lists)",
    )
    search.add_argument("--no-progress", action="store_true", help="no progress bar")
    search.set_defaults(func=_collection_search)

    delete = csub.add_parser(
        "delete", parents=[common], help="delete documents by id; prints how many"
    )
    delete.add_argument("path", help=_COLLECTION_HELP)
    delete.add_argument(
        "ids",
        nargs="*",
        metavar="ID",
        help="ids to delete (ids not stored are skipped; put -- before them if one starts with -)",
    )
    delete.add_argument(
        "--ids-file",
        metavar="FILE",
        help="also delete the ids of this file: one a line, UTF-8 (default: none)",
    )
    delete.set_defaults(func=_delete)

    compact = csub.add_parser(
        "compact",
        parents=[common],
        help="merge small segments and those holding deleted documents, dropping their rows",
    )
    compact.add_argument("path", help=_COLLECTION_HELP)
    compact.add_argument(
        "--min-rows",
        type=int,
        metavar="N",
        help="merge the segments of fewer rows than N too (default: 10 times the collection's "
        "--flush-rows)",
    )
    compact.set_defaults(func=_compact)

    info = csub.add_parser(
        "info",
        parents=[common],
        help="print the settings, counts, segments and metadata fields as JSON",
    )
    info.add_argument("path", help=_COLLECTION_HELP)
    info.set_defaults(func=_collection_info)

    index = csub.add_parser(
        "index",
        parents=[common],
        help="index a metadata field in the catalog, for filters on large collections",
    )
    index.add_argument("path", help=_COLLECTION_HELP)
    index.add_argument("field", help="the metadata field (see vecpress collection info)")
    index.set_defaults(func=_index)
