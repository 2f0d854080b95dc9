"""Check the advisor against an exhaustive sweep and an independent measurement.

For each data set (a base file and a queries file of real embeddings), the
queries are split in two halves: **A** (the first half) is what the advisor
sees, **B** (the second half) is kept back. Then, each step as its own
``vecpress`` process, as a user would run them:

1. ``vecpress advise BASE --queries A --target-recall R --json`` and
   ``... --budget-bytes B --json``, timed from a cold start (the cached ground
   truth for A is deleted first, so the time includes computing it);
2. the printed ``vecpress build`` and ``vecpress search`` commands, run as
   printed with the queries file swapped for A and for B; recall@10 of their
   results is computed here by brute force (strict: shared ids, and with ties
   counted as ann-benchmarks does), independently of the advisor's code path;
3. ``vecpress bench BASE --queries A --grid full --json``: every configuration
   of the space the advisor chooses from; its smallest configuration reaching
   the target (point estimate) and its most accurate one within the budget are
   what the advisor's choices are compared with.

Run: ``python benchmarks/advisor.py --dataset minilm [--dataset pydocs] [--target 0.95]
[--budget 120] [--no-sweep]``. Results go to ``benchmarks/results/advisor-<name>.json``
and a Markdown summary is printed.
"""

from __future__ import annotations

import argparse
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

from vecpress.groundtruth import brute_force, prepare
from vecpress.measures import recall_with_ties

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("VECPRESS_CACHE", Path.home() / ".cache" / "vecpress"))
#: name -> directory holding base.npy and queries.npy (built by sentences.py / pydocs.py)
DATASETS = {"minilm": CACHE / "minilm", "pydocs": CACHE / "pydocs"}
K = 10


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


def summarise(name: str, res: dict, target: float, budget: int) -> str:
    t, b = res["target"], res["budget"]
    lines = [f"### {name}: {res['n']:,} x {res['d']}, queries A/B {res['nq_a']}/{res['nq_b']}", ""]
    for label, adv, goal in (
        ("target", t, f"recall@10 >= {target}"),
        ("budget", b, f"<= {budget} B"),
    ):
        c = adv["advice"]
        chk = adv["check"]
        lines.append(
            f"- **{label}** ({goal}): `{c['build_command']}` / search `{c['search_command']}`: "
            f"{c['bytes_per_vector']} B/vector, advisor's recall {c['recall_at_k']:.4f} ± "
            f"{c['recall_se']:.4f}; {c['evaluated']} of {c['space_size']} configurations "
            f"measured in {adv['seconds']:.0f} s (cold, ground truth included). Built and "
            f"searched as printed: recall@10 on A {chk['A']['ties']:.4f} (strict "
            f"{chk['A']['strict']:.4f}), on held-back B {chk['B']['ties']:.4f} (strict "
            f"{chk['B']['strict']:.4f})."
        )
    sweep = res.get("sweep")
    if sweep:
        lines.append(
            f"- **sweep** (`vecpress bench --grid full`, {sweep['configs']} configurations, "
            f"{sweep['seconds']:.0f} s): smallest reaching {target}: "
            f"`{sweep['smallest']['label']}` {sweep['smallest']['bytes_per_vector']} B "
            f"(recall {sweep['smallest']['recall_at_k']:.4f}); advisor / smallest bytes = "
            f"{t['advice']['bytes_per_vector'] / sweep['smallest']['bytes_per_vector']:.3f}. "
            f"Most accurate within {budget} B: `{sweep['best_in_budget']['label']}` "
            f"recall {sweep['best_in_budget']['recall_at_k']:.4f}; advisor's choice "
            f"{b['advice']['recall_at_k']:.4f}."
        )
    return "\n".join(lines)


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


def bench_dataset(name: str, target: float, budget: int, sweep: bool) -> dict:
    folder = DATASETS[name].resolve()
    base_path = folder / "base.npy"
    base = np.load(base_path)
    queries = np.load(folder / "queries.npy")
    half = queries.shape[0] // 2
    res = {"n": base.shape[0], "d": base.shape[1], "nq_a": half, "nq_b": queries.shape[0] - half}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp).resolve()
        halves = {"A": tmp / "queries-A.npy", "B": tmp / "queries-B.npy"}
        np.save(halves["A"], queries[:half])
        np.save(halves["B"], queries[half:])
        common = [str(base_path), "--queries", str(halves["A"]), "--json", "--no-progress"]
        for label, goal in (
            ("target", ["--target-recall", str(target)]),
            ("budget", ["--budget-bytes", str(budget)]),
        ):
            for f in folder.glob("gt-*.npz"):
                f.unlink()  # a cold run: the ground truth is part of the advisor's time
            out, seconds = run([*vecpress_cmd(), "advise", *common, *goal])
            doc = json.loads(out)
            print(f"{name} {label}: {doc['build_command']} ({seconds:.0f} s)", file=sys.stderr)
            res[label] = {"advice": doc, "seconds": seconds}
            res[label]["check"] = check_commands(doc, halves, base, tmp)
        if sweep:
            out, seconds = run([*vecpress_cmd(), "bench", *common, "--grid", "full"])
            records = [json.loads(s) for s in out.splitlines() if s.strip()]
            reach = [r for r in records if r["recall_at_k"] >= target]
            fits = [r for r in records if r["bytes_per_vector"] <= budget]
            res["sweep"] = {
                "configs": len(records),
                "seconds": seconds,
                "smallest": min(reach, key=lambda r: (r["bytes_per_vector"], -r["qps_1t"])),
                "best_in_budget": max(fits, key=lambda r: r["recall_at_k"]),
                "records": records,
            }
        return scrub(res, {f"{tmp}/": "", f"{folder}/": f"{name}/"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", action="append", choices=sorted(DATASETS))
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--budget", type=int, default=120)
    p.add_argument("--no-sweep", action="store_true")
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
        res = bench_dataset(name, a.target, a.budget, not a.no_sweep)
        res["env"] = env
        out = HERE / "results" / f"advisor-{name}.json"
        out.write_text(json.dumps(res, indent=1))
        report.append(summarise(name, res, a.target, a.budget))
    print("\n\n".join(report))


if __name__ == "__main__":
    main()
