"""``vecpress serve ROOT``: the HTTP service over the collections under a folder.

``vecpress serve ROOT [--host 127.0.0.1] [--port 8000] [--token-file F]
[--max-batch N] [--max-queries N] [--max-k N] [--max-dim N] [--max-body-mb M]
[--readers N] [--threads N] [--warmup]`` runs :func:`vecpress.service.app.create_app`
under uvicorn until interrupted (``pip install 'vecpress[serve]'``). With
``--warmup`` every collection under ROOT is warmed up first
(:func:`vecpress.collection.warm.warm_up_collection`: its search kernels compiled or
loaded from numba's cache, its segment files opened), and the port opens after: a
health check that waits for it sees a server whose first searches do not compile.

It binds to the loopback address unless told otherwise, and warns when it listens
elsewhere without a token. The token file holds the token on its first line
(surrounding white space dropped). Each search runs its kernels on ``--threads``
threads (default 1: concurrent requests use the other cores).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from pathlib import Path

#: the most bytes of a token file read (a token is a line)
TOKEN_FILE_BYTES = 4096


def read_token(path: str) -> str:
    """The token in the file ``path`` (its first line, stripped), or a clear error.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "token"
    >>> _ = f.write_text("s3cret\\n")
    >>> read_token(str(f))
    's3cret'
    """
    raw = Path(path).read_bytes()[:TOKEN_FILE_BYTES]
    try:
        lines = raw.decode("utf-8").strip().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"--token-file {path}: not UTF-8 text") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise ValueError(f"--token-file {path}: the file holds no token (its first line is empty)")
    return token


def _port(text: str) -> int:
    """``--port``: an integer in [0, 65535] (0: any free port)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"must be in [0, 65535], found {n}")
    return n


def _megabytes(text: str) -> float:
    """``--max-body-mb``: a positive number of megabytes below 1 TB."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
    if not 0 < v < 2**20:
        raise argparse.ArgumentTypeError(f"must be in (0, 1048576) megabytes, found {text}")
    return v


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..service.app import create_app
        from ..service.limits import Limits
    except ImportError as e:
        raise ImportError(
            f"vecpress serve needs FastAPI and uvicorn: pip install 'vecpress[serve]' ({e})"
        ) from None
    from ..threads import set_num_threads

    token = None if args.token_file is None else read_token(args.token_file)
    limits = Limits(
        max_batch=args.max_batch, max_queries=args.max_queries, max_k=args.max_k,
        max_dim=args.max_dim, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
    )  # fmt: skip
    if args.threads is None:
        set_num_threads(1)
    if token is None and not _is_loopback(args.host):
        print(
            f"vecpress serve: warning: listening on {args.host} without --token-file: anyone "
            "who reaches this port can read and change the collections",
            file=sys.stderr,
        )
    app = create_app(args.root, token=token, limits=limits, readers=args.readers)
    try:
        if args.warmup:
            _warm_up(app.state.registry)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        app.state.registry.close()
    return 0


def _warm_up(registry) -> None:
    """``--warmup``: each collection of the registry warmed up through one of its
    readers (the objects its searches use), each one's seconds on stderr. A collection
    that cannot be searched (a damaged file) is reported and skipped: the warm-up only
    saves time, and the others are still served (its requests get the error)."""
    from ..collection.warm import warm_up_collection

    start = time.perf_counter()
    names = registry.names()
    for name in names:
        t = time.perf_counter()
        try:
            with registry.get(name).reader() as col:
                warm_up_collection(col)
        except Exception as e:  # reported; the server still starts
            print(f"vecpress serve: warning: could not warm up {name}: {type(e).__name__}: "
                  f"{e}", file=sys.stderr)  # fmt: skip
            continue
        print(f"vecpress serve: warmed up {name} in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)  # fmt: skip
    print(f"vecpress serve: {len(names)} collection(s) warmed up in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)  # fmt: skip


def add_serve_parser(sub, common: argparse.ArgumentParser) -> None:
    """``vecpress serve``'s arguments."""
    from ..service.limits import Limits  # no FastAPI: the limits are a dataclass

    d = Limits()
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="serve the collections under a folder over HTTP (JSON; needs vecpress[serve])",
        description="Serve the collections under ROOT (one folder each) over HTTP: JSON "
        "endpoints to create, add, upsert, delete, get and search, described at /openapi.json. "
        "--threads is the kernel threads of each search (default 1 here: concurrent requests "
        "use the other cores).",
    )
    serve.add_argument("root", help="folder of the collections (created if absent)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--token-file", metavar="F",
        help="file whose first line is the bearer token every endpoint but /health requires",
    )  # fmt: skip
    for flag, default, what in (
        ("--max-batch", d.max_batch, "documents in one add/upsert, ids in one get/delete"),
        ("--max-queries", d.max_queries, "queries in one search"),
        ("--max-k", d.max_k, "results per query (at most 10000)"),
        ("--max-dim", d.max_dim, "dimension of a vector"),
        ("--readers", 4, "searches one collection serves at once"),
    ):
        serve.add_argument(flag, type=int, default=default, metavar="N",
                           help=f"{what} (default {default})")  # fmt: skip
    serve.add_argument(
        "--max-body-mb", type=_megabytes, default=d.max_body_bytes // 2**20, metavar="M",
        help=f"megabytes of a request body (default {d.max_body_bytes // 2**20})",
    )  # fmt: skip
    serve.add_argument(
        "--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn's log level (default warning; info logs every request)",
    )  # fmt: skip
    serve.add_argument(
        "--warmup", action="store_true",
        help="before listening, run every kind of search each collection serves once "
        "(compiles the kernels a fresh install lacks; vecpress warmup does it ahead)",
    )  # fmt: skip
    serve.set_defaults(func=_serve)
