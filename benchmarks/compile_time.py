"""What a fresh install pays at first use: the kernels' compile time.

numba compiles each kernel the first time a process calls it with new argument types
and keeps the result in its cache; a fresh install (or a CI run) pays it once. This
script runs, in a child process with an empty numba cache, the first full search and
the first progressive search (``progressive=True``) of a small index for each
``--spec`` and metric, and prints each step's wall and CPU seconds and numba's own
compile timers of the kernels it compiled (each inclusive of the kernels it calls:
a kernel that calls another re-optimizes the callee's code as part of its own). A
second child with the cache then warm shows what is left. faiss's flat index, built
and searched on the same rows in the same child, is the reference of a library
without a compiler at run time.

Run ``python benchmarks/compile_time.py`` (needs ``pip install ".[bench]"``); prints
Markdown. It takes a few minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, sys, time
import numpy as np
from numba.core.registry import CPUDispatcher
import faiss
import vecpress

specs, metrics = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rng = np.random.default_rng(0)
centres = 2 * rng.standard_normal((40, 100))
x = (rng.standard_normal((5000, 100)) + centres[rng.integers(0, 40, 5000)]).astype(np.float32)
q = x[:60] + np.float32(0.05)
steps = []

def timed(label, fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    steps.append((label, time.perf_counter() - w, time.process_time() - c))
    return out

flat = faiss.IndexFlatIP(x.shape[1])
timed("faiss IndexFlatIP: add and first search", lambda: (flat.add(x), flat.search(q, 10)))
for spec in specs:
    for metric in metrics:
        index = vecpress.Index(spec, metric=metric, seed=0)
        timed(f"`{spec}` {metric}: build", lambda: index.add(x))
        full = timed(f"`{spec}` {metric}: first full search", lambda: index.search(q, 10))
        prog = timed(f"`{spec}` {metric}: first progressive search",
                     lambda: index.search(q, 10, progressive=True))
        assert (prog.ids == full.ids).all()
kernels = []
for name, mod in list(sys.modules.items()):
    if not name.startswith("vecpress") or mod is None:
        continue
    for obj in list(vars(mod).values()):
        if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == name:
            for cres in obj.overloads.values():
                t = (cres.metadata or {}).get("timers", {}).get("compiler_lock")
                if t is not None:
                    kernels.append((f"{name}.{obj.py_func.__qualname__}", t))
print(json.dumps({"steps": steps, "kernels": kernels}))
"""


def child(specs: list[str], metrics: list[str], cache: str) -> dict:
    """One run of :data:`CHILD` with numba's cache at ``cache``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(specs), json.dumps(metrics)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", nargs="+", default=["hd2,rq4"])
    ap.add_argument("--metrics", nargs="+", default=["cosine", "l2"])
    ap.add_argument("--top", type=int, default=15, help="kernels listed (largest first)")
    args = ap.parse_args()
    import numba
    import numpy as np

    import vecpress

    print(f"# Compile time at first use ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(f"vecpress {vecpress.__version__}, numba {numba.__version__}, "
          f"numpy {np.__version__}; load average {os.getloadavg()[0]:.2f}; "
          "5,000 x 100 rows, 60 queries, k = 10\n")  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        cold = child(args.specs, args.metrics, cache)
        warm = child(args.specs, args.metrics, cache)
    print("| step | cold cache: wall s | CPU s | warm cache: wall s | CPU s |")
    print("|---|--:|--:|--:|--:|")
    for (label, w, c), (_, w2, c2) in zip(cold["steps"], warm["steps"], strict=True):
        print(f"| {label} | {w:.2f} | {c:.2f} | {w2:.2f} | {c2:.2f} |")
    print(f"\nnumba's compile timers, cold cache (the {args.top} largest; seconds, each "
          "inclusive of the kernels it calls and compiled with it):\n")  # fmt: skip
    print("| kernel | s |")
    print("|---|--:|")
    for name, t in sorted(cold["kernels"], key=lambda kv: -kv[1])[: args.top]:
        print(f"| `{name}` | {t:.1f} |")


if __name__ == "__main__":
    main()
