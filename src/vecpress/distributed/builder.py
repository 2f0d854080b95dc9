"""A collection built on a Ray cluster: encode where the data lies, commit once.

:func:`build` runs in the driver:

1. **Sample.** ``n`` rows of the source; the codec's training rows are all of
   them when ``n <= Index.train_rows`` (100,000 for most specs), in order, else
   a random sample of the source drawn by Ray Data with the seed (or the
   ``sample`` given).
2. **Train** a new collection in a work folder beside the target
   (:func:`vecpress.collection.bulk.new_folder`) on the sample, on the driver.
3. **Encode.** The collection's template (an empty index file of the trained
   codec) goes to the workers as its bytes; ``map_batches`` with a callable class
   on a pool of ``num_workers`` actors opens it once per actor and turns each
   batch's vectors into their codes (:meth:`vecpress.Index.encode`), passing the
   documents' columns through.
4. **Commit.** The driver reads the encoded rows back in input order, in
   segments of ``segment_rows`` rows (as :func:`vecpress.build_collection`
   cuts its chunks), and stores each with its documents
   (:meth:`vecpress.Collection.add_encoded`, one transaction each). When every
   row is stored, the work folder is renamed to the target; a failed, killed or
   cancelled job removes it, and the target is never touched.

The actors are not restarted and their tasks not retried: a worker that dies
fails the build (cleanly, as above) rather than leaving it to guess which rows
were stored. Given the same rows, spec and seed, the collection equals the one
:func:`vecpress.build_collection` builds from the same files with chunks of
``segment_rows`` rows (at least ``flush_rows``, else that build keeps its small
chunks pending and merges them): the same training rows when
``n <= Index.train_rows``, the same codes, segment files and ids.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile

import numpy as np

try:
    import pyarrow as pa
    import ray
    import ray.data
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("vecpress.distributed needs Ray: pip install 'vecpress[ray]'") from e

from ..collection import Collection
from ..collection.bulk import check_roles, documents, new_folder
from ..collection.collection import AUTO, FLUSH_ROWS
from ..files.readers import arrow_rows, vector_column
from ..files.sources import CHUNK_BYTES
from ..search.index import ADD_CHUNK, EncodedRows, Index
from ..search.index import open as open_index
from ..search.streaming import check_rows
from ..threads import set_num_threads

__all__ = ["build"]

#: the encoded rows' columns (uint8 codes as fixed-size lists; norms; IVF lists)
_CODES, _RCODES, _NORMS, _LISTS = "__vp_codes", "__vp_rerank_codes", "__vp_norms", "__vp_lists"


class _Encoder:
    """The callable class ``map_batches`` runs on each actor: the template, opened once,
    encodes every batch given to the actor."""

    def __init__(self, template: bytes, column: str, threads: int) -> None:
        set_num_threads(threads)
        fd, path = tempfile.mkstemp(suffix=".vpi")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(template)
            self.index = open_index(path, mmap=False)
        finally:
            os.unlink(path)
        self.column = column

    def __call__(self, batch: pa.Table) -> pa.Table:
        x = arrow_rows(batch.column(self.column).combine_chunks(), f"column {self.column!r}")
        rows = self.index.encode(x, name=f"a batch of {batch.num_rows} rows of the vectors")
        out = batch.drop_columns([self.column])
        for name, a in zip((_CODES, _RCODES, _NORMS, _LISTS), rows, strict=True):
            if a is not None:
                flat = pa.array(a.reshape(-1)) if a.ndim == 2 else pa.array(a)
                col = pa.FixedSizeListArray.from_arrays(flat, a.shape[1]) if a.ndim == 2 else flat
                out = out.append_column(name, col)
        return out


def _codes(table: pa.Table, name: str) -> np.ndarray | None:
    if name not in table.column_names:
        return None
    arr = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
        return arr.flatten().to_numpy().reshape(len(arr), width).astype(np.uint8, copy=False)
    return arr.to_numpy(zero_copy_only=False)


def build(
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
    sample: np.ndarray | None = None,
    num_workers: int | None = None,
    cpus_per_worker: float | None = None,
    segment_rows: int | None = None,
    progress=None,
) -> Collection:
    """Build the collection of ``source`` at ``path`` on the current Ray cluster (module
    docstring); returns it, open.

    Parameters
    ----------
    source : ray.data.Dataset, str or list of str
        The rows: a Ray Dataset, or Parquet files (paths or folders, read with
        ``ray.data.read_parquet``), with a vector column (``list<float>`` or
        ``fixed_size_list<float, d>``) and optionally id, text and metadata columns.
    path : str or os.PathLike
        The new collection's folder (it must not exist).
    spec, metric, rerank_spec, ivf, seed, flush_rows
        The collection's settings (:meth:`vecpress.Collection.create`).
    column : str, optional
        The vector column (by default the only list-of-floats column).
    id_column, text_column, metadata_columns
        As :func:`vecpress.build_collection` takes them.
    sample : numpy.ndarray, optional
        The rows to train the codec on (default: drawn from the source, above).
    num_workers : int, optional
        Encoding actors (default: the cluster's CPUs less one, which Ray Data's read
        tasks need; at least one).
    cpus_per_worker : float, optional
        CPUs Ray reserves for each encoding actor (default 1, or less so that the
        actors hold at most the CPUs less one, or half of them); its kernels run on
        that many threads (at least one).
    segment_rows : int, optional
        Rows per segment (default: as many as 256 MiB of float32 vectors hold, as
        :func:`vecpress.build_collection`'s chunks).
    progress : callable, optional
        Called with the number of rows after each segment is stored.

    Raises
    ------
    FileExistsError
        ``path`` exists.
    ValueError
        A bad row, column or setting; a failed worker (its error in the message).
        The target is untouched.
    """
    if spec == AUTO:
        raise ValueError("distributed.build needs a codec spec (spec='auto' is not taken here)")
    metadata_columns = list(metadata_columns or [])
    doc_columns = check_roles(id_column, text_column, metadata_columns)
    if not ray.is_initialized():
        ray.init()
    try:
        ds = source if isinstance(source, ray.data.Dataset) else ray.data.read_parquet(source)
        schema = _arrow_schema(ds)  # may run the source's first block
        column = vector_column(schema, column, "the source")
        missing = [c for c in doc_columns if c not in schema.names]
        if missing:
            raise ValueError(f"the source has no column {missing[0]!r}; its columns are: "
                             f"{', '.join(schema.names)}")  # fmt: skip
        with _quiet_and_ordered(ds.select_columns([column, *doc_columns])) as ds:
            return _build(ds, path, column, doc_columns, spec, metric, rerank_spec, ivf, seed,
                          flush_rows, id_column, text_column, metadata_columns, sample,
                          num_workers, cpus_per_worker, segment_rows, progress)  # fmt: skip
    except ray.exceptions.RayError as e:
        raise ValueError(f"the distributed build failed; nothing was stored: {e}") from e


def _build(ds, path, column, doc_columns, spec, metric, rerank_spec, ivf, seed, flush_rows,
           id_column, text_column, metadata_columns, sample, num_workers, cpus_per_worker,
           segment_rows, progress) -> Collection:  # fmt: skip
    """:func:`build` once the source is a Dataset of the columns it reads."""
    template = Index(spec, metric=metric, seed=seed, rerank_spec=rerank_spec, ivf=ivf)
    cpus = float(ray.cluster_resources().get("CPU", 1))
    # the actors must leave CPUs to Ray Data's read tasks, or the job waits forever
    budget = max(cpus - 1, cpus / 2)
    workers = num_workers or max(1, int(budget))
    if cpus_per_worker is None:
        cpus_per_worker = min(1.0, budget / workers)
    if not (isinstance(cpus_per_worker, (int, float)) and 0 < cpus_per_worker):
        raise ValueError(f"cpus_per_worker must be > 0, found {cpus_per_worker!r}")
    if workers * cpus_per_worker > budget:
        raise ValueError(
            f"{workers} workers of {cpus_per_worker:g} CPU would hold more than {budget:g} of "
            f"the cluster's {cpus:g} CPUs, leaving too few to read the data; use fewer "
            "workers or a smaller cpus_per_worker"
        )
    with new_folder(path) as work:
        n = None  # counted here only when a sample is drawn (a count runs the source)
        if sample is None:
            n = ds.count()
            if n == 0:
                raise ValueError("the source holds no rows")
            sample = _sample(ds, column, n, template.train_rows, seed)
        sample = np.asarray(sample)
        check_rows(sample.astype(np.float32), metric, "the training sample")
        col = Collection.create(work, spec=spec, dim=sample.shape[1], metric=metric,
                                seed=seed, rerank_spec=rerank_spec, ivf=ivf,
                                flush_rows=flush_rows)  # fmt: skip
        with col:
            col.train(sample)
            del sample
            blob = col.template_bytes()
            encoded = ds.map_batches(
                _Encoder, fn_constructor_kwargs={"template": blob, "column": column,
                                                 "threads": max(1, round(cpus_per_worker))},
                batch_size=ADD_CHUNK, batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
                ray_remote_args_fn=_no_retries,
            )  # fmt: skip
            step = segment_rows or max(1, CHUNK_BYTES // (4 * col.dim))
            lo = 0
            for table in encoded.iter_batches(batch_size=step, batch_format="pyarrow"):
                hi = lo + table.num_rows
                docs = {c: table.column(c).to_pylist() for c in doc_columns}
                ids, texts, metadata = documents(docs, lo, hi, id_column, text_column,
                                                 metadata_columns)  # fmt: skip
                rows = EncodedRows(*(_codes(table, c) for c in (_CODES, _RCODES, _NORMS,
                                                                _LISTS)))  # fmt: skip
                try:
                    col.add_encoded(rows, ids, texts=texts, metadata=metadata)
                except (ValueError, TypeError) as e:
                    raise type(e)(f"rows {lo:,} to {hi - 1:,}: {e}") from None
                lo = hi
                if progress is not None:
                    progress(table.num_rows)
            if lo == 0:
                raise ValueError("the source holds no rows")
            if n is not None and lo != n:
                raise ValueError(f"the workers returned {lo:,} rows of the source's {n:,}")
    return Collection.open(path)


def _no_retries() -> dict:
    """The encoding actors' Ray options: a dead actor is not restarted, nor its task
    retried (the build fails and leaves nothing)."""
    return {"max_restarts": 0, "max_task_retries": 0}


def _arrow_schema(ds) -> pa.Schema:
    """The Dataset's schema as a pyarrow schema (Ray Data's Arrow blocks)."""
    schema = ds.schema()
    base = getattr(schema, "base_schema", schema)
    if not isinstance(base, pa.Schema):
        names, types = schema.names, schema.types
        base = pa.schema([(c, t) for c, t in zip(names, types, strict=True)])
    return base


def _sample(ds, column: str, n: int, limit: int, seed: int) -> np.ndarray:
    """The training rows: all ``n`` in order when ``n <= limit``, else ``limit`` of a
    seeded Bernoulli sample of the source (drawn by Ray Data where the rows lie)."""
    part = ds.select_columns([column])
    if n > limit:
        part = part.random_sample(min(1.0, 1.25 * limit / n), seed=seed)
    rows = []
    got = 0
    for table in part.iter_batches(batch_size=ADD_CHUNK, batch_format="pyarrow"):
        rows.append(arrow_rows(table.column(column).combine_chunks(), f"column {column!r}"))
        got += rows[-1].shape[0]
        if got >= limit:
            break
    if not rows:
        raise ValueError("the training sample drew no rows")
    return np.concatenate(rows)[:limit]


@contextlib.contextmanager
def _quiet_and_ordered(ds):
    """``ds`` keeps its rows in input order and prints neither its plan nor progress bars
    (``build`` reports progress itself) for the duration of the block. A Dataset shares
    its execution settings with those it derives from, so they are put back after.
    Ray Data logs a WARNING the first time a process runs a Dataset with its progress
    bars off ("Progress bars disabled..."): its progress module's logger is held to
    errors meanwhile, so that a build prints no warning of its own choosing."""
    ctx = ds.context
    saved = (ctx.execution_options.preserve_order, ctx.print_on_execution_start,
             ctx.enable_progress_bars)  # fmt: skip
    progress_log = logging.getLogger(_RAY_PROGRESS_LOGGER)
    level = progress_log.level
    ctx.execution_options.preserve_order = True
    ctx.print_on_execution_start = False
    ctx.enable_progress_bars = False
    progress_log.setLevel(logging.ERROR)
    try:
        yield ds
    finally:
        (ctx.execution_options.preserve_order, ctx.print_on_execution_start,
         ctx.enable_progress_bars) = saved  # fmt: skip
        progress_log.setLevel(level)


#: the logger of Ray Data's progress bars (:func:`_quiet_and_ordered`)
_RAY_PROGRESS_LOGGER = "ray.data._internal.progress"
