"""The archive codec (``vecpress.archive``) against zstd and the Shannon bound.

On GloVe-50 and the 384-d sentence set (``sentences.py``), at three distortions -- the
mean squared error per entry of vecpress's ``int8``, ``rq4`` and ``rq2`` codes on the
same rows -- this measures, in one process on the same rows:

* vecpress's archive at that ``mse``: bits per dimension (every byte of the archive
  counted), its measured error, the Gaussian R(D) bound at that error (reverse
  water-filling on the rows' covariance eigenvalues, computed here in float64) and the
  gap, compress and decompress speed (vectors/s, one thread), recall@10 of the
  decompressed rows (the set's queries, inner product, against the exact top 10 of
  the original rows);
* zstd (level 19, numcodecs) on float32, on float16, on byte-shuffled float16
  (numcodecs ``Shuffle`` + ``Zstd``), and on vecpress's own fixed-rate codes at that
  error (the codes and the codec's model, each zstd-compressed), with their errors and
  speeds;
* the criterion of issue 19: the archive within 0.3 bits of R(D), and at most 0.7 x
  the best zstd variant whose error is at most the archive's target;
* the archive at a recall target (``recall=0.99`` and ``0.95``: the coarsest archive
  whose decompressed rows keep that recall@10 on held-out rows), with the recall the
  set's queries then measure;
* streaming (``--stream-rows N``, default 2,000,000; 0: skip): the 384-d set's rows
  repeated to ``N`` rows in one ``.npy`` file, compressed with ``compress_file`` and
  decompressed with ``decompress_file`` each in a child process (all threads), with
  rows/s and the child's peak resident memory against the file's size.

Run ``python benchmarks/archive.py [--rows 100000] [--sets glove,minilm]`` (``--sets ""``:
the streaming part alone); writes
``benchmarks/results/archive-<date>.{json,md,png}`` and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import common
import vecpress
from vecpress import Codec, archive

HERE = Path(__file__).resolve().parent
SPECS = ("int8", "rq4", "rq2")
CRITERION_GAP = 0.3
CRITERION_RATIO = 0.7


def zstd_variants(x: np.ndarray) -> list[dict]:
    """zstd-19 on float32, float16 and byte-shuffled float16: bits per entry, error and
    speeds (vectors/s, one thread; decompression checked)."""
    from numcodecs import Shuffle, Zstd

    z = Zstd(level=19)
    x16 = x.astype(np.float16)
    mse16 = float(np.square(x16.astype(np.float64) - x).mean())
    out = []
    for name, raw, mse, pre in (
        ("zstd-19 float32", x, 0.0, None),
        ("zstd-19 float16", x16, mse16, None),
        ("zstd-19 shuffled float16", x16, mse16, Shuffle(elementsize=2)),
    ):
        t = time.perf_counter()
        data = raw if pre is None else pre.encode(raw)
        blob = z.encode(data)
        tc = time.perf_counter() - t
        t = time.perf_counter()
        back = z.decode(blob)
        if pre is not None:
            back = pre.decode(back)
        td = time.perf_counter() - t
        if bytes(back) != raw.tobytes():
            raise AssertionError(f"{name}: not lossless")
        out.append({"name": name, "bits_per_dim": 8 * len(blob) / x.size, "mse": mse,
                    "compress_per_s": x.shape[0] / tc,
                    "decompress_per_s": x.shape[0] / td})  # fmt: skip
    return out


def zstd_codes(x: np.ndarray, spec: str) -> dict:
    """vecpress's fixed-rate ``spec`` codes of ``x``: their error, and zstd-19 on the codes
    plus the codec's model."""
    from numcodecs import Zstd

    z = Zstd(level=19)
    codec = Codec.from_spec(spec, d=x.shape[1]).fit(x)
    codes = codec.encode(x)
    mse = float(np.square(codec.decode(codes).astype(np.float64) - x).mean())
    t = time.perf_counter()
    size = len(z.encode(np.ascontiguousarray(codes))) + len(z.encode(codec.to_bytes()))
    tc = time.perf_counter() - t
    raw = 8 * (codes.nbytes + len(codec.to_bytes())) / x.size
    return {"name": f"zstd-19 on `{spec}` codes", "spec": spec, "mse": mse,
            "bits_per_dim": 8 * size / x.size, "raw_bits_per_dim": raw,
            "compress_per_s": x.shape[0] / tc}  # fmt: skip


def recall10(truth: np.ndarray, queries: np.ndarray, y: np.ndarray) -> float:
    found = common.exact_top_k(y, queries, 2)
    return float(common.recall_rows(found, truth).mean())


def timed_archive(x: np.ndarray, **target) -> tuple[bytes, float, float, np.ndarray]:
    """The archive of ``x`` (one thread), its compress and decompress rates, and the
    decompressed rows (best of two timings each)."""
    with common.threads(1):
        tc, td = [], []
        for _ in range(2):
            t = time.perf_counter()
            blob = archive.compress(x, **target)
            tc.append(time.perf_counter() - t)
            t = time.perf_counter()
            y = archive.decompress(blob)
            td.append(time.perf_counter() - t)
    return blob, x.shape[0] / min(tc), x.shape[0] / min(td), y


def eigenvalues(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=0, dtype=np.float64)
    cov = np.zeros((x.shape[1],) * 2)
    for s in range(0, x.shape[0], 4096):
        part = x[s : s + 4096].astype(np.float64) - mean
        cov += part.T @ part
    return np.linalg.eigvalsh(cov / x.shape[0])


def run_set(ds: common.Dataset, rows: int, n_queries: int) -> dict:
    x = np.ascontiguousarray(ds.base[:rows])
    queries = np.ascontiguousarray(ds.queries[:n_queries])
    common.log(f"{ds.name}: {x.shape[0]:,} x {x.shape[1]}, exact top 10 of {len(queries)}")
    truth = common.exact_top_k(x, queries, 2)
    lam = eigenvalues(x)
    common.log(f"{ds.name}: zstd on floats")
    floats = zstd_variants(x)
    codes = {spec: zstd_codes(x, spec) for spec in SPECS}
    points = []
    for spec in SPECS:
        target = codes[spec]["mse"]
        common.log(f"{ds.name}: archive at the mse of {spec} ({target:.3g})")
        blob, cps, dps, y = timed_archive(x, mse=target)
        info = archive.describe(blob)
        bound = vecpress.archive.gaussian_rate(lam, info["mse"])
        peers = [p for p in [*floats, *codes.values()] if p["mse"] <= target]
        best = min(peers, key=lambda p: p["bits_per_dim"])
        point = {
            "spec": spec, "target_mse": target, "mse": info["mse"],
            "bits_per_dim": info["bits_per_dim"], "gaussian_bits_per_dim": bound,
            "gap": info["bits_per_dim"] - bound, "compress_per_s": cps,
            "decompress_per_s": dps, "recall_at_10": recall10(truth, queries, y),
            "best_zstd": best["name"], "best_zstd_bits_per_dim": best["bits_per_dim"],
            "ratio_to_best_zstd": info["bits_per_dim"] / best["bits_per_dim"],
            "bound_ratio_to_best_zstd": bound / best["bits_per_dim"],
            "lattice_groups": info["lattice_groups"], "axes": info["axes"],
        }  # fmt: skip
        point["meets"] = point["gap"] <= CRITERION_GAP and point["ratio_to_best_zstd"] <= (
            CRITERION_RATIO
        )
        points.append(point)
    recall_points = []
    for want in (0.99, 0.95):
        common.log(f"{ds.name}: archive at recall {want}")
        blob, cps, dps, y = timed_archive(x, recall=want)
        info = archive.describe(blob)
        recall_points.append({"recall_target": want, "bits_per_dim": info["bits_per_dim"],
                              "mse": info["mse"], "recall_at_10": recall10(truth, queries, y),
                              "compress_per_s": cps, "decompress_per_s": dps})  # fmt: skip
    return {"set": ds.name, "description": ds.description, "n": int(x.shape[0]),
            "d": int(x.shape[1]), "queries": len(queries), "floats": floats,
            "codes": list(codes.values()), "points": points, "recall": recall_points}  # fmt: skip


STREAM_CHILD = """
import json, sys, time
import numpy as np
from vecpress import archive
def peak():  # this process's own peak (ru_maxrss would count the parent's, kept over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
d = int(sys.argv[5])
archive.decompress(archive.compress(np.random.default_rng(0).random((3000, d)), mse=1e-3))
before = peak()  # imports, compiled kernels
t = time.perf_counter()
if sys.argv[1] == "compress":
    info = archive.compress_file(sys.argv[2], sys.argv[3], mse=float(sys.argv[4]))
else:
    info = archive.decompress_file(sys.argv[2], sys.argv[3])
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "peak_rss": peak(), "before": before, "info": info}))
"""


def streaming(base: np.ndarray, rows: int, mse: float, folder: Path) -> dict:
    """``compress_file`` / ``decompress_file`` of ``rows`` rows (``base`` repeated) in
    child processes: rates and peak memory."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    data, vpz, back = folder / f"stream-{rows}.npy", folder / "stream.vpz", folder / "back.npy"
    if not data.exists() or np.load(data, mmap_mode="r").shape != (rows, base.shape[1]):
        common.log(f"streaming: writing {rows:,} rows to {data}")
        out = np.lib.format.open_memmap(data, "w+", np.float32, (rows, base.shape[1]))
        for s in range(0, rows, base.shape[0]):
            out[s : s + base.shape[0]] = base[: rows - s]
        out.flush()
        del out
    result = {"rows": rows, "d": int(base.shape[1]), "input_bytes": data.stat().st_size,
              "mse": mse}  # fmt: skip
    d = str(base.shape[1])
    for step, args in (("compress", [str(data), str(vpz), repr(mse), d]),
                       ("decompress", [str(vpz), str(back), "0", d])):  # fmt: skip
        common.log(f"streaming: {step}")
        done = subprocess.run([sys.executable, "-c", STREAM_CHILD, step, *args], check=True,
                              capture_output=True, text=True)  # fmt: skip
        child = json.loads(done.stdout.strip().splitlines()[-1])
        result[step] = {"rows_per_s": rows / child["seconds"], "peak_rss": child["peak_rss"],
                        "rss_before": child["before"]}  # fmt: skip
        if step == "compress":
            result["archive_bytes"] = vpz.stat().st_size
            result["bits_per_dim"] = child["info"]["bits_per_dim"]
    for path in (vpz, back):
        path.unlink()
    return result


def report(run: dict) -> str:
    env = run["env"]
    lines = [
        f"Run {env['date']} on {env['cpu']} ({env['versions']}; commit {env['git']}; load "
        f"{env['load']}). `python benchmarks/{run['argv']}`. Speeds are one thread.",
        "",
    ]
    for s in run["sets"]:
        lines += [f"### `{s['set']}`: {s['n']:,} x {s['d']}", "", s["description"], ""]
        lines += [
            "| distortion (mse of) | target mse | archive bits/dim | R(D) | gap | best zstd at "
            "≤ mse | its bits/dim | ratio | R(D) / zstd | met | compress /s | decompress /s "
            "| recall@10 |",
            "|---|--:|--:|--:|--:|---|--:|--:|--:|:-:|--:|--:|--:|",
        ]
        for p in s["points"]:
            lines.append(
                f"| `{p['spec']}` | {p['target_mse']:.3g} | **{p['bits_per_dim']:.3f}** | "
                f"{p['gaussian_bits_per_dim']:.3f} | {p['gap']:+.3f} | {p['best_zstd']} | "
                f"{p['best_zstd_bits_per_dim']:.3f} | {p['ratio_to_best_zstd']:.2f} | "
                f"{p['bound_ratio_to_best_zstd']:.2f} | "
                f"{'yes' if p['meets'] else 'no'} | {p['compress_per_s']:,.0f} | "
                f"{p['decompress_per_s']:,.0f} | {p['recall_at_10']:.4f} |"
            )
        lines += ["", "| zstd-19 on | mse | bits/dim | compress /s | decompress /s |",
                  "|---|--:|--:|--:|--:|"]  # fmt: skip
        for f in s["floats"]:
            lines.append(f"| {f['name'][8:]} | {f['mse']:.3g} | {f['bits_per_dim']:.3f} | "
                         f"{f['compress_per_s']:,.0f} | "
                         f"{f['decompress_per_s']:,.0f} |")  # fmt: skip
        for c in s["codes"]:
            lines.append(f"| `{c['spec']}` codes ({c['raw_bits_per_dim']:.3f} bits/dim raw) | "
                         f"{c['mse']:.3g} | {c['bits_per_dim']:.3f} | "
                         f"{c['compress_per_s']:,.0f} | – |")  # fmt: skip
        lines += ["", "| archive at recall | bits/dim | mse | recall@10 (the set's queries) | "
                  "compress /s | decompress /s |", "|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
        for r in s["recall"]:
            lines.append(f"| {r['recall_target']} | {r['bits_per_dim']:.3f} | {r['mse']:.3g} | "
                         f"{r['recall_at_10']:.4f} | {r['compress_per_s']:,.0f} | "
                         f"{r['decompress_per_s']:,.0f} |")  # fmt: skip
        lines.append("")
    st = run.get("streaming")
    if st:
        gib = 1 << 30
        lines += [
            f"### Streaming: {st['rows']:,} x {st['d']} from one `.npy` file "
            f"({st['input_bytes'] / gib:.2f} GiB), mse {st['mse']:.3g}, all threads", "",
            "| step | rows/s | peak RSS | of the input | RSS before (imports, compiled "
            "kernels) |", "|---|--:|--:|--:|--:|",
        ]  # fmt: skip
        for step in ("compress", "decompress"):
            r = st[step]
            lines.append(f"| `{step}_file` | {r['rows_per_s']:,.0f} | "
                         f"{r['peak_rss'] / gib:.2f} GiB | "
                         f"{r['peak_rss'] / st['input_bytes']:.2f} | "
                         f"{r['rss_before'] / gib:.2f} GiB |")  # fmt: skip
        lines += ["", f"The archive: {st['archive_bytes'] / gib:.3f} GiB "
                  f"({st['bits_per_dim']:.3f} bits/dim).", ""]  # fmt: skip
    return "\n".join(lines)


def plot(run: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = run["sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 4.8), squeeze=False)
    for ax, s in zip(axes[0], sets, strict=True):
        lam = np.array(s["eigenvalues"])
        mses = np.geomspace(min(p["mse"] for p in s["points"]) / 2,
                            max(p["mse"] for p in s["points"]) * 2, 60)  # fmt: skip
        ax.plot(mses, [archive.gaussian_rate(lam, m) for m in mses], "k-",
                label="Gaussian R(D) (Shannon bound)")  # fmt: skip
        ax.plot([p["mse"] for p in s["points"]], [p["bits_per_dim"] for p in s["points"]], "o-",
                color="C0", label="vecpress archive")  # fmt: skip
        for c in s["codes"]:
            ax.plot(c["mse"], c["bits_per_dim"], "s", color="C1")
            ax.annotate(f"zstd({c['spec']})", (c["mse"], c["bits_per_dim"]), fontsize=8,
                        textcoords="offset points", xytext=(4, 4))  # fmt: skip
        floats = "\n".join(f"{f['name']}: {f['bits_per_dim']:.1f} bits/dim" for f in s["floats"])
        ax.text(0.02, 0.03, floats, transform=ax.transAxes, fontsize=8, color="C2")
        ax.set_ylim(0, 1.25 * max(c["bits_per_dim"] for c in s["codes"]))
        ax.set_xscale("log")
        ax.set_xlabel("mean squared error per entry")
        ax.set_ylabel("bits per dimension")
        ax.set_title(f"{s['set']} ({s['n']:,} x {s['d']})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=1_000)
    p.add_argument("--sets", default="glove,minilm")
    p.add_argument("--minilm", type=Path, default=Path.home() / ".cache" / "vecpress" / "minilm")
    p.add_argument("--stream-rows", type=int, default=2_000_000)
    p.add_argument("--plot", type=Path, help="only redraw the plot of this results .json")
    args = p.parse_args()
    if args.plot:
        plot(json.loads(args.plot.read_text()), args.plot.with_suffix(".png"))
        return 0
    import numcodecs

    env = common.run_environment(f"numcodecs {numcodecs.__version__}")
    run = {"env": env, "argv": " ".join(["archive.py", *sys.argv[1:]]), "sets": []}
    for name in filter(None, args.sets.split(",")):
        ds = common.load_glove(args.queries) if name == "glove" else common.load_minilm(args.minilm)
        if ds is None:
            continue
        result = run_set(ds, args.rows, args.queries)
        result["eigenvalues"] = eigenvalues(np.ascontiguousarray(ds.base[: args.rows])).tolist()
        run["sets"].append(result)
    data = common.load_minilm(args.minilm) if args.stream_rows else None
    if data is not None:  # the error of rq4 codes of the set's first --rows rows
        codes = next((c for s in run["sets"] if s["set"] == "minilm" for c in s["codes"]
                      if c["spec"] == "rq4"), None)  # fmt: skip
        mse = (codes or zstd_codes(np.ascontiguousarray(data.base[: args.rows]), "rq4"))["mse"]
        folder = Path.home() / ".cache" / "vecpress" / "archive"
        run["streaming"] = streaming(data.base, args.stream_rows, mse, folder)
    text = report(run)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stamp = ("archive-" if run["sets"] else "archive-streaming-") + time.strftime("%Y-%m-%d")
    (out / f"{stamp}.json").write_text(json.dumps(run, indent=1, default=float))
    (out / f"{stamp}.md").write_text(text)
    if run["sets"]:
        plot(run, out / f"{stamp}.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
