"""``vecpress build | search | info``: the index commands."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from .args import (
    RESULT_FORMATS,
    SEARCH_CHUNK,
    _check_build_args,
    _check_output,
    _check_rows,
    _progress,
    _train_queries,
    _vectors,
)


def _build(args: argparse.Namespace) -> int:
    from ..files.sources import VectorSource
    from ..search.index import Index
    from ..search.streaming import build_index

    _check_build_args(args)
    Index(  # checks the specs, metric and list count before reading anything
        args.spec,
        metric=args.metric,
        seed=args.seed,
        rerank_spec=args.rerank_spec,
        ivf=args.ivf,
        ivf_residual=not args.ivf_raw,
    )
    if not args.chunk_mb > 0:
        raise ValueError(f"--chunk-mb must be > 0, found {args.chunk_mb}")
    _check_output(args.output)
    src = VectorSource.open(_source(args.vectors, args.column), column=args.column)
    n, d = src.n, src.d
    if n == 0:
        raise ValueError(f"vectors {' '.join(args.vectors)} hold no vectors ({src!r})")
    if args.ivf is not None and args.ivf > n:
        raise ValueError(f"--ivf {args.ivf}: more lists than the {n} vectors to train them on")
    train_queries = _train_queries(args, d)
    with _progress(args, total=n, desc="encoding", unit="vec") as bar:
        index = build_index(
            src,
            args.output,
            args.spec,
            args.metric,
            seed=args.seed,
            rerank_spec=args.rerank_spec,
            ivf=args.ivf,
            ivf_residual=not args.ivf_raw,
            queries=train_queries,
            chunk_bytes=max(1, int(args.chunk_mb * 2**20)),
            progress=bar.update,
        )
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
    from ..search.index import open as open_index

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
    if isinstance(args.rerank, int) and args.rerank < args.k:
        raise ValueError(f"--rerank must be >= -k (it is the candidates kept), found {args.rerank}")
    if args.nprobe is not None and not index.is_ivf:
        raise ValueError(
            f"--nprobe applies to IVF indexes (built with --ivf N); {args.index} is flat"
        )
    if args.nprobe is not None and args.nprobe < 1:
        raise ValueError(f"--nprobe must be >= 1, found {args.nprobe}")
    if not 0.5 <= args.confidence < 1:
        raise ValueError(f"--confidence must be in [0.5, 1), found {args.confidence}")
    try:
        index._check_search_args(args.k, args.rerank, args.nprobe, args.confidence)
    except ValueError as e:  # k beyond the index
        raise ValueError(f"-k: {e}") from None
    if args.progressive:
        index._check_progressive(True)
    q = _vectors(args.queries, "queries", args.column)
    if args.adapter is not None:
        from ..search.index import adapted
        from .migrate_commands import read_adapter

        q = adapted(read_adapter(args.adapter), q, index.d)
    if index.d is not None and q.shape[1] != index.d:
        raise ValueError(
            f"queries file {args.queries} has {q.shape[1]} columns, the index has d={index.d}"
        )
    _check_rows(q, "queries", index.metric)
    nq = q.shape[0]
    ids = np.empty((nq, args.k), np.int64)
    scores = np.empty((nq, args.k), np.float32)
    reranked, certified = np.zeros(nq, np.int64), np.zeros(nq, bool)
    with _progress(args, total=nq, desc="searching", unit="query") as bar:
        for s in range(0, nq, SEARCH_CHUNK):
            res = index.search(
                np.asarray(q[s : s + SEARCH_CHUNK]),
                args.k,
                rerank=args.rerank,
                nprobe=args.nprobe,
                confidence=args.confidence,
                progressive=args.progressive,
            )
            e = s + res.ids.shape[0]
            ids[s:e], scores[s:e] = res.ids, res.scores
            if res.certified is not None:
                reranked[s:e], certified[s:e] = res.reranked, res.certified
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
        if args.rerank == "auto":
            doc["reranked"], doc["certified"] = reranked.tolist(), certified.tolist()
        with open(args.output, "w") as f:
            json.dump(doc, f)
    print(f"wrote {args.output}: {nq:,} queries x k={args.k} ({index.metric} scores)")
    if args.rerank == "auto" and nq:
        print(
            f"certified re-ranking: {certified.mean():.1%} of queries certified at confidence "
            f"{args.confidence}, {reranked.mean():.1f} candidates re-scored per query on average"
        )
    return 0


def _source(args: list[str], column: str | None):
    """``vecpress build``'s vectors: one built-in set or collection folder (its vectors, in
    memory), else the paths of files and folders of them (read in chunks)."""
    if len(args) == 1 and (
        not os.path.exists(args[0]) or os.path.isfile(os.path.join(args[0], "catalog.sqlite"))
    ):
        return _vectors(args[0], "vectors", column)
    return list(args)


def _check_index_path(path: str) -> None:
    """Raise a clear error unless ``path`` is an existing file."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"index file {path} is a directory, not an index file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"index file {path} does not exist")


def _info(args: argparse.Namespace) -> int:
    from ..files.storage import info

    _check_index_path(args.index)
    print(json.dumps(info(args.index), indent=2))
    return 0


def _warmup(args: argparse.Namespace) -> int:
    """``vecpress warmup``: each step's seconds (compilation, where the cache lacked it)."""
    from ..collection import Collection
    from ..collection.collection import CATALOG
    from ..collection.warm import warm_up_collection
    from ..search.index import open as open_index
    from ..search.warm import warm_up, warm_up_spec

    with_spec = [f for f in ("dim", "rerank_spec", "ivf") if getattr(args, f) is not None]
    if bool(args.index) == bool(args.spec):
        raise ValueError("warmup takes index files or --spec (with --dim), not both or neither")
    if args.spec is None and with_spec:
        flags = ", ".join("--" + f.replace("_", "-") for f in with_spec)
        raise ValueError(f"{flags}: only with --spec, not with index files")
    if args.spec is not None and args.dim is None:
        raise ValueError("--spec needs --dim, the vectors' dimension")
    for path in args.index:
        if os.path.isdir(path) and not os.path.isfile(os.path.join(path, CATALOG)):
            raise FileNotFoundError(f"{path} is a folder but not a collection (no {CATALOG})")
        if not os.path.exists(path):
            raise FileNotFoundError(f"index file or collection {path} does not exist")
    targets = args.index or [f"--spec {args.spec} --dim {args.dim} --metric {args.metric}"]
    total = 0.0
    with _progress(args, desc="compiling", unit="step") as bar:
        for target in targets:

            def step(name, target=target):
                bar.set_postfix_str(f"{target}: {name}", refresh=True)
                bar.update()

            if args.spec is not None:
                steps = warm_up_spec(
                    args.spec, args.dim, metric=args.metric, rerank_spec=args.rerank_spec,
                    ivf=args.ivf, progress=step,
                )  # fmt: skip
            elif os.path.isdir(target):
                with Collection.open(target) as col:
                    steps = warm_up_collection(col, progress=step)
            else:
                steps = warm_up(open_index(target, mmap=True), progress=step)
            for name, sec in steps:
                bar.write(f"{target}: {name}: {sec:.2f} s")
                total += sec
    print(f"warmed up in {total:.1f} s (numba's cache: later processes load these kernels)")
    return 0
