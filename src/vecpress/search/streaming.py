"""Build an index file from inputs larger than memory, one chunk of rows at a time.

:func:`build_index` makes the same file as :func:`vecpress.search.index.build`
followed by :meth:`~vecpress.Index.save`, byte for byte, without holding the
vectors or the index in memory:

1. **Train** on the rows :func:`~vecpress.search.index.training_rows` draws with
   the seed across the whole input (``Index.train_rows`` of them, 100,000 for
   most specs), gathered from wherever they lie
   (:meth:`vecpress.files.sources.VectorSource.take`).
2. **Encode** the input in order, ``chunk_bytes`` of float32 rows read at a time
   and encoded in batches of ``ADD_CHUNK`` rows (the batches of ``build``).
   A flat index's rows keep the input's order, so each batch's codes,
   second-tier codes and squared norms (``l2``) are written straight to their
   place in the new file (:func:`vecpress.files.storage.filling`: the layout is
   planned before the rows' checksums are known). An IVF index's rows go in
   list order, known only at the end: its batches are appended to files in a
   work folder next to the target (``.NAME.*.vpbuild``).
3. **Finish.** Flat: the block checksums are computed from the written rows,
   and the header, codecs and checksums written before them. IVF: the rows are
   put in list order (a stable sort of the lists, as ``Index.add`` keeps them)
   and :func:`vecpress.files.storage.save` writes the file from the work files
   (memory-mapped), which are then removed. Either way the file replaces
   ``path`` atomically, only when complete.

Memory is bounded by two chunks of input (the next is read while one is encoded),
the training sample and its fit, and the codes (the last step maps them: their
pages count in the resident set): not by the number of rows. A bad row (NaN,
Inf, a zero vector under ``"cosine"``) fails the build with its row number, the
target untouched. A build killed outright leaves a temp file or work folder
behind (the next save of the same path removes the temp file; the folder is
safe to delete).

Examples
--------
>>> import tempfile, os
>>> folder = tempfile.mkdtemp()
>>> x = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
>>> np.save(os.path.join(folder, "a.npy"), x[:300]); np.save(os.path.join(folder, "b.npy"), x[300:])
>>> index = build_index(folder, os.path.join(folder, "x.vpi"), "hd2,rq4", "l2")
>>> len(index), index.search(x[:2], 1).ids.tolist()
(500, [[0], [1]])
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import numpy as np

from .._validation import MAX_NORM, as_vectors, check_positive_int
from ..atomic import check_folder
from ..files import storage
from ..files.sources import CHUNK_BYTES, VectorSource
from ..files.storage import IndexState
from . import index as _index
from .index import Index, training_rows
from .index import open as open_index
from .ivf import list_order

__all__ = ["build_index"]

#: ids written at a time (a flat index's are its row numbers)
_IDS_ROWS = 1 << 20


def build_index(
    source,
    path,
    spec: str,
    metric: str = "cosine",
    *,
    seed: int = 0,
    rerank_spec: str | None = None,
    ivf: int | None = None,
    ivf_residual: bool = True,
    centroids: np.ndarray | None = None,
    queries: np.ndarray | None = None,
    column: str | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    block_size: int = storage.BLOCK_SIZE,
    progress=None,
) -> Index:
    """Build the index of ``source`` into the file ``path`` in bounded memory (module
    docstring); returns it, opened memory-mapped.

    Parameters
    ----------
    source : path, list of paths, VectorSource or numpy.ndarray
        The vectors: ``.npy``/``.fbin``/``.fvecs``/``.parquet`` files, a folder of
        them, or an array (:meth:`vecpress.files.sources.VectorSource.open`). Row
        ``i`` of the whole input gets id ``i``.
    path : str or os.PathLike
        The index file to write (replaced atomically if it exists).
    spec, metric, seed, rerank_spec, ivf, ivf_residual, centroids, queries
        As for :func:`vecpress.search.index.build`.
    column : str, optional
        The vector column of Parquet files.
    chunk_bytes : int
        Bytes of float32 input rows read at a time (default 256 MiB).
    block_size : int
        The file's checksum block size (:func:`vecpress.files.storage.save`).
    progress : callable, optional
        Called with the number of rows after each chunk is encoded.

    Returns
    -------
    Index
        The written file, opened with ``mmap=True``.
    """
    src = VectorSource.open(source, column=column)
    check_positive_int(chunk_bytes, "chunk_bytes")
    storage.check_block_size(block_size)
    index = Index(spec, metric, seed=seed, rerank_spec=rerank_spec, ivf=ivf,
                  ivf_residual=ivf_residual)  # fmt: skip
    n = src.n
    if n == 0:
        raise ValueError(f"{src.name} holds no vectors ({src!r})")
    if ivf is not None and ivf > n:
        raise ValueError(f"ivf={ivf}: more lists than the {n} vectors to train them on")
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory")
    check_folder(path)
    picked = training_rows(n, index.train_rows, seed)
    sample = src.take(picked)
    check_rows(sample, metric, src.name, rows=picked)
    index.train(sample, centroids, queries)
    del sample

    batch = _index.ADD_CHUNK
    rows = src.rows_per_chunk(chunk_bytes)
    rows = rows - rows % batch if rows >= batch else rows  # whole batches, as build's
    batch = min(batch, rows)

    def encoded():
        """``(first row, codes, second-tier codes, norms, lists)`` of every batch."""
        for lo, x in src.chunks(rows=rows, prefetch=True):
            for s in range(0, x.shape[0], batch):
                yield lo + s, *index.encode(x[s : s + batch], row_offset=lo + s, name=src.name)
            if progress is not None:
                progress(x.shape[0])

    if not index.is_ivf:  # rows stay in input order: written where they go in the file
        with storage.filling(_planned_state(index, n), path, block_size=block_size) as fill:
            for s in range(0, n, _IDS_ROWS):
                fill("ids", s, np.arange(s, min(n, s + _IDS_ROWS), dtype=np.int64))
            for lo, codes, rerank_codes, norms, _ in encoded():
                fill("codes", lo, codes)
                if rerank_codes is not None:
                    fill("rerank_codes", lo, rerank_codes)
                if norms is not None:
                    fill("norms", lo, norms)
        return open_index(path, mmap=True)
    folder, base = os.path.split(path)
    work = tempfile.mkdtemp(prefix=f".{base}.", suffix=".vpbuild", dir=folder)
    try:
        names = ["codes"]
        if index.has_second_tier:
            names.append("rerank_codes")
        if metric == "l2":
            names.append("norms")
        if index.is_ivf:
            names.append("lists")
        with contextlib.ExitStack() as stack:
            out = {k: stack.enter_context(open(os.path.join(work, k), "wb")) for k in names}
            for _, *enc in encoded():
                for k, a in zip(("codes", "rerank_codes", "norms", "lists"), enc, strict=True):
                    if a is not None:
                        out[k].write(a.tobytes())
        state = _state(index, work, n)
        storage.save(state, path, block_size=block_size)
        del state
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return open_index(path, mmap=True)


def check_rows(x: np.ndarray, metric: str, name: str, rows=None, row_offset: int = 0) -> None:
    """The ``ValueError`` of :func:`vecpress._validation.as_vectors` (or of a zero row
    under cosine) for the first bad row of ``x``, numbered as the input's row: row
    ``i`` of ``x`` is ``rows[i]`` when given (a sample), else ``row_offset + i``."""
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    bad = ~(sq <= MAX_NORM * MAX_NORM)
    if metric == "cosine":
        bad |= sq == 0
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    at = int(rows[i]) if rows is not None else row_offset + i
    as_vectors(x[i : i + 1], name, row_offset=at)
    raise ValueError(
        f"{name} has a zero row at row {at}: a zero vector has no direction under the cosine metric"
    )


#: rows gathered at a time when the rows are put in IVF list order
_PERMUTE_ROWS = 1 << 20


def _planned_state(index: Index, n: int) -> IndexState:
    """The state of a flat index of ``n`` rows, its rows only shapes (for
    :func:`vecpress.files.storage.filling`)."""
    first, second = index._tier_sizes()

    def shaped(dtype, *shape):
        return np.broadcast_to(np.zeros((), dtype), shape)

    return IndexState(
        codec=index.codec, metric=index.metric, seed=index.seed,
        rerank_codec=index.rerank_codec, nlist=None, ivf_residual=index.ivf_residual,
        centroids=None, list_offsets=np.array([0, n], np.int64), ids=shaped(np.int64, n),
        norms=shaped(np.float32, n) if index.metric == "l2" else None,
        codes=shaped(np.uint8, n, first),
        rerank_codes=shaped(np.uint8, n, second) if index.has_second_tier else None,
        next_id=n,
    )  # fmt: skip


def _state(index: Index, work: str, n: int) -> IndexState:
    """The index state of the encoded rows in ``work`` (memory-mapped files)."""
    first, second = index._tier_sizes()
    widths = {"codes": first, "rerank_codes": second}

    def mapped(name: str) -> np.ndarray | None:
        file = os.path.join(work, name)
        if not os.path.exists(file):
            return None
        if name == "norms":
            return np.memmap(file, np.float32, "r", shape=(n,))
        return np.memmap(file, np.uint8, "r", shape=(n, widths[name]))

    arrays = {k: mapped(k) for k in ("codes", "rerank_codes", "norms")}
    if index.is_ivf:
        order, offsets = list_order(np.fromfile(os.path.join(work, "lists"), np.int64),
                                    index.nlist)  # fmt: skip
        for k, a in arrays.items():
            if a is None:
                continue
            with open(os.path.join(work, f"{k}.sorted"), "wb") as f:
                for s in range(0, n, _PERMUTE_ROWS):
                    f.write(np.ascontiguousarray(a[order[s : s + _PERMUTE_ROWS]]).tobytes())
            del a
            os.replace(os.path.join(work, f"{k}.sorted"), os.path.join(work, k))
            arrays[k] = mapped(k)
        ids = order.astype(np.int64, copy=False)
    else:
        ids = np.arange(n, dtype=np.int64)
        offsets = np.array([0, n], np.int64)
    return IndexState(
        codec=index.codec,
        metric=index.metric,
        seed=index.seed,
        rerank_codec=index.rerank_codec,
        nlist=index.nlist,
        ivf_residual=index.ivf_residual,
        centroids=index.centroids,
        list_offsets=offsets,
        ids=ids,
        norms=arrays["norms"],
        codes=arrays["codes"],
        rerank_codes=arrays["rerank_codes"],
        next_id=n,
    )
