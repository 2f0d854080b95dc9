"""The ``vecpress`` command line.

``vecpress demo`` runs the advisor on the built-in GloVe-50 set for recall@10 ≥
0.95, prints its choice and the commands that build and search it, and writes
``vecpress-report.html``. ``vecpress bench BASE`` measures a grid of
configurations (codec × re-ranking × IVF) on the user's vectors;
``vecpress advise BASE (--target-recall R | --budget-bytes B)`` chooses one,
bisecting the space rather than sweeping it; ``vecpress inspect BASE`` describes
the data (:mod:`vecpress.advisor.diagnostics`). BASE is a vectors file or a built-in
set (``glove50``, ``synthetic-384``, ``synthetic-768``; ``NAME:queries`` names
its held-out queries). See :mod:`vecpress.advisor.bench` and :mod:`vecpress.advisor.advise`.

``vecpress build VECTORS --spec S [--metric M] [--ivf N [--ivf-raw]]
[--rerank-spec S2] [--train-queries T] -o INDEX`` builds a flat or IVF index
(with an optional re-ranking tier; ``--train-queries``: a sample of the queries,
for ``leanvec-ood<d'>``) from a ``.npy``, ``.fvecs``, ``.fbin`` or ``.parquet`` file
(``--column NAME`` picks the Parquet column of vectors, by default the only
list-of-floats column; Parquet needs ``pip install "vecpress[parquet]"``);
``vecpress search INDEX QUERIES -k 10 [--rerank R] [--nprobe P] -o OUT`` writes
the results as ``.npy``
(a structured array with fields ``ids`` int64[k] and ``scores`` float32[k] per
query: ``np.load(OUT)["ids"]``) or ``.json`` (``{"k", "metric", "ids",
"scores"}``, missing scores as ``null``); ``vecpress info INDEX`` prints the
header as JSON. Progress bars appear on a terminal only.

``vecpress collection create | add | search | delete | compact | info | index``
runs a :class:`vecpress.Collection` (documents with ids, texts and metadata over
compressed vectors, in a folder): ``create PATH --spec S --dim D``, ``add PATH
VECTORS --docs FILE`` (``.jsonl`` or ``.parquet`` documents, one per vector),
``search PATH QUERIES -k K --filter JSON``, ``delete PATH ID ...``, ``compact
PATH``, ``info PATH``, ``index PATH FIELD``; each prints one JSON object. See
:mod:`vecpress.cli.collection_commands`.

``vecpress serve ROOT [--host H] [--port P] [--token-file F]`` serves the collections
under ROOT over HTTP (:mod:`vecpress.cli.serve_command`, :mod:`vecpress.service.app`).

Errors are printed as one line on stderr with a non-zero exit status, never as
a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time

from .parser import build_parser

#: commands that choose their thread count from the load when --threads is not given
LOAD_AWARE = ("demo", "advise", "bench")


def _threads_for(args: argparse.Namespace):
    """``--threads``, or for the measuring commands the cores other work leaves idle
    (spinning OpenMP and BLAS threads on a busy core cost up to 10x); BLAS limited alike."""
    import contextlib

    from threadpoolctl import threadpool_limits

    from ..threads import available_cores, set_num_threads, threads_for_load

    n = args.threads
    args.load_note = None
    if n is None and args.command in LOAD_AWARE:
        n = threads_for_load()
        if n < available_cores():
            cores, plural = available_cores(), "s" if n > 1 else ""
            args.load_note = (
                f"vecpress: {cores - n} of {cores} cores are busy with other work; measuring "
                f"on {n} thread{plural} (--threads N to choose)"
            )
    if n is None:
        return contextlib.nullcontext()
    set_num_threads(n)
    return threadpool_limits(limits=n, user_api="blas")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vecpress`` command."""
    args = build_parser().parse_args(argv)
    args.started = time.perf_counter()
    try:
        with _threads_for(args):
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
