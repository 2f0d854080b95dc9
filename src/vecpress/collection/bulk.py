"""Build a collection from inputs larger than memory, in one step that succeeds or leaves
nothing.

:func:`build_collection` reads its vectors (and, from Parquet files, the
documents' ids, texts and metadata) a chunk at a time
(:class:`vecpress.files.sources.VectorSource`):

1. the collection is created in a work folder next to the target
   (``.NAME.*.vpbuild``);
2. its codec is trained on a sample drawn with the seed across the whole input
   (:func:`vecpress.search.index.training_rows`: ``Index.train_rows`` rows,
   not the first ones);
3. each chunk is added as one transaction; a chunk of at least ``flush_rows``
   rows is written straight to a segment file, so the vectors never wait in
   the catalog; the rest are sealed into a last segment;
4. the work folder is renamed to the target, which must not exist: until then
   the target is untouched, and a failed build removes its work folder (a
   build killed outright leaves it, safe to delete).

Memory is bounded by two chunks (one read ahead; vectors and documents), the
training sample and its fit, not by the number of rows.

Examples
--------
>>> import tempfile, os
>>> import numpy as np
>>> import pyarrow as pa, pyarrow.parquet as pq
>>> folder = tempfile.mkdtemp()
>>> x = np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32)
>>> pq.write_table(pa.table({"emb": list(x), "key": [f"doc{i}" for i in range(400)],
...                          "year": [2000 + i % 20 for i in range(400)]}),
...                os.path.join(folder, "docs.parquet"))
>>> col = build_collection(os.path.join(folder, "docs.parquet"), os.path.join(folder, "col"),
...                        spec="hd2,rq4", rerank_spec="f32", id_column="key",
...                        metadata_columns=["year"])
>>> len(col), len(col.segments())
(400, 1)
>>> res = col.search(x[5:6], 1, filter={"year": 2005})
>>> res.ids, res.metadata
([['doc5']], [[{'year': 2005}]])
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .. import atomic
from .._validation import check_positive_int
from ..files.sources import CHUNK_BYTES, VectorSource
from ..search.index import Index, training_rows
from ..search.streaming import check_rows
from .collection import AUTO, FLUSH_ROWS, Collection

__all__ = ["build_collection", "new_folder"]


def build_collection(
    source,
    path,
    *,
    spec: str = "hd2,rq4",
    metric: str = "cosine",
    rerank_spec: str | None = None,
    ivf: int | None = None,
    seed: int = 0,
    flush_rows: int = FLUSH_ROWS,
    column: str | None = None,
    id_column: str | None = None,
    text_column: str | None = None,
    metadata_columns: list[str] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    embed=None,
    progress=None,
) -> Collection:
    """Build the collection of ``source`` in the new folder ``path`` (module docstring);
    returns it, open.

    Parameters
    ----------
    source : path, list of paths, VectorSource or numpy.ndarray
        The vectors (:meth:`vecpress.files.sources.VectorSource.open`).
    path : str or os.PathLike
        The collection's folder; it must not exist.
    spec, metric, rerank_spec, ivf, seed, flush_rows, embed
        The collection's settings (:meth:`vecpress.Collection.create`;
        ``spec="auto"`` is not taken here: the advisor needs its targets).
    column : str, optional
        The vector column of Parquet files.
    id_column, text_column : str, optional
        Parquet columns of the documents' ids (strings or integers, written as
        strings) and texts; without ``id_column`` document ``i`` of the input has
        the id ``str(i)``.
    metadata_columns : list of str, optional
        Parquet columns stored as each document's metadata (a null leaves the field
        out of that document's metadata).
    chunk_bytes : int
        Bytes of float32 vectors read and added at a time (default 256 MiB).
    progress : callable, optional
        Called with the number of rows after each chunk is stored.

    Raises
    ------
    FileExistsError
        ``path`` exists.
    ValueError
        A bad row (named by its number in the input), a duplicate id, a column
        that is absent or not in a Parquet file, a bad setting. The target is
        untouched.
    """
    src = VectorSource.open(source, column=column)
    check_positive_int(chunk_bytes, "chunk_bytes")
    if spec == AUTO:
        raise ValueError("build_collection needs a codec spec (spec='auto' is not taken here)")
    metadata_columns = list(metadata_columns or [])
    columns = check_roles(id_column, text_column, metadata_columns)
    if columns:
        src.check_columns(columns)
    if src.n == 0:
        raise ValueError(f"{src.name} holds no vectors ({src!r})")
    template = Index(spec, metric=metric, seed=seed, rerank_spec=rerank_spec, ivf=ivf)
    with new_folder(path) as work:
        col = Collection.create(
            work, spec=spec, dim=src.d, metric=metric, seed=seed, rerank_spec=rerank_spec,
            ivf=ivf, flush_rows=flush_rows, embed=embed,
        )  # fmt: skip
        with col:
            rows = training_rows(src.n, template.train_rows, seed)
            sample = src.take(rows)
            check_rows(sample, metric, src.name, rows=rows)
            col.train(sample)
            del sample
            for lo, x in src.chunks(chunk_bytes, prefetch=True):
                hi = lo + x.shape[0]
                check_rows(x, metric, src.name, row_offset=lo)
                ids, texts, metadata = documents(
                    src.columns(lo, hi, columns), lo, hi, id_column, text_column,
                    metadata_columns,
                )  # fmt: skip
                try:
                    col.add(x, ids, texts=texts, metadata=metadata)
                except (ValueError, TypeError) as e:
                    raise type(e)(f"{src.name}, rows {lo:,} to {hi - 1:,}: {e}") from None
                if progress is not None:
                    progress(hi - lo)
            col.flush()
    return Collection.open(path, embed=embed)


def check_roles(id_column, text_column, metadata_columns: list[str]) -> list[str]:
    """The columns the documents are read from, each with one role; else ``ValueError``."""
    columns = [c for c in (id_column, text_column) if c is not None] + list(metadata_columns)
    if len(set(columns)) != len(columns):
        raise ValueError(f"a column may have one role only, found {columns}")
    return columns


def documents(docs: dict, lo: int, hi: int, id_column, text_column, metadata_columns):
    """``(ids, texts, metadata)`` of rows ``[lo, hi)`` from their columns ``docs``:
    ids as strings (``str(row)`` without an id column), metadata without null fields."""
    ids = (
        [str(i) for i in range(lo, hi)] if id_column is None
        else [None if v is None else str(v) for v in docs[id_column]]
    )  # fmt: skip
    texts = None if text_column is None else docs[text_column]
    metadata = None
    if metadata_columns:
        metadata = [
            {c: docs[c][i] for c in metadata_columns if docs[c][i] is not None}
            for i in range(hi - lo)
        ]
    return ids, texts, metadata


@contextlib.contextmanager
def new_folder(path):
    """Build a new folder ``path`` all or nothing: yields a work folder beside it
    (``.NAME.*.vpbuild``), renamed to ``path`` when the block succeeds and removed when
    it fails. ``path`` must not exist (``FileExistsError``), nor be created meanwhile."""
    path = Path(os.path.abspath(os.fspath(path)))
    if path.exists():
        raise FileExistsError(f"{path}: exists (a new collection is built there)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the folder {path.parent} does not exist")
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".vpbuild", dir=path.parent))
    try:
        yield work
        if path.exists():
            raise FileExistsError(f"{path}: was created while the collection was being built")
        os.rename(work, path)
        atomic.fsync_dir(str(path.parent))
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
        raise
