"""Vectors too large for memory, read a range of rows at a time.

A :class:`VectorSource` is the rows of one or more vector files (or of an array)
seen as one matrix: ``.npy``, ``.fbin`` and ``.fvecs`` files, Parquet files
(one list-of-floats column), a folder of such files (taken in name order), a
list of them, or a numpy array (an ``np.memmap`` of a file too). It reads rows
``[lo, hi)`` into float32 (:meth:`VectorSource.read`), walks the whole input in
chunks of a byte budget (:meth:`VectorSource.chunks`) and gathers scattered
rows (:meth:`VectorSource.take`: a training sample drawn across the whole
input, not its first rows).

Memory stays bounded by what a call returns. ``.npy``, ``.fbin`` and ``.fvecs``
reads of at least 1 MiB (chunks) go past the page cache where the system
allows (``O_DIRECT`` on Linux): the disk copies the rows straight into new
memory, with no cache pages to fill and later reclaim, and the build does not
push the machine's working set out of the cache. Where it does not (tmpfs,
other systems) they map just those rows, their pages mapped at once
(``MAP_POPULATE``) and unmapped when the returned array is released. Either way
the resident set holds only the chunks alive. While a chunk is used, the next
one is announced to the kernel (``posix_fadvise(WILLNEED)``) or read on a thread
(``prefetch``). Smaller reads (the rows of a sample) are copied with ``pread``.
A memory-mapped array is read through its file the same way; another array is
sliced. Parquet files are read by row groups (the last one read is kept
for the next call). A file's size is checked before each read; a file truncated
by another process *during* a mapped read is beyond what a mapping can survive
(the kernel signals the process), so do not shrink input files under a build.

Problems are found as rows are read, with the file and row named: a truncated
file is refused when the source is opened (its size against its header); a
null Parquet row or an ``.fvecs`` row with another dimension when its chunk is
read.

Examples
--------
>>> import tempfile, os
>>> folder = tempfile.mkdtemp()
>>> for i in range(3):
...     np.save(os.path.join(folder, f"part{i}.npy"), np.full((4, 2), i, np.float32))
>>> src = VectorSource.open(folder)
>>> src.n, src.d
(12, 2)
>>> src.read(3, 5).tolist()
[[0.0, 0.0], [1.0, 1.0]]
>>> [(lo, x.shape[0]) for lo, x in src.chunks(chunk_bytes=40)]
[(0, 5), (5, 5), (10, 2)]
>>> src.take(np.array([0, 11])).tolist()
[[0.0, 0.0], [2.0, 2.0]]
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .readers import VECTOR_FORMATS, arrow_rows, import_pyarrow, read_vectors, vector_column

#: bytes of rows read at a time by default (:meth:`VectorSource.chunks`)
CHUNK_BYTES = 256 * 2**20
#: threads reading the scattered rows of a sample (:meth:`VectorSource.take`)
_READERS = 8
#: reads of at least this many bytes map the rows (for the call's life) rather than copy them
_MAP_BYTES = 1 << 20
#: a shared map, its pages mapped at once (MAP_POPULATE, Linux) rather than fault by fault
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
#: reads of at least _MAP_BYTES go past the page cache where the system allows (Linux)
_O_DIRECT = getattr(os, "O_DIRECT", 0)
#: offsets and lengths of direct reads are multiples of this (the largest logical block)
_DIRECT_ALIGN = 4096


class _Part:
    """One file's (or array's) rows: ``n``, ``d``, ``where`` and ``read(lo, hi)``."""

    n: int
    d: int
    where: str

    def read(self, lo: int, hi: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def advise(self, lo: int, hi: int) -> None:
        """Rows ``[lo, hi)`` will be read soon (a file starts reading them from disk)."""

    def take_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Rows ``rows`` (sorted, in range) into ``out``, runs of consecutive rows read
        at once."""
        starts = np.flatnonzero(np.diff(rows, prepend=rows[0] - 2) != 1) if rows.size else []
        ends = np.append(starts[1:], rows.size)
        for s, e in zip(starts, ends, strict=True):
            out[s:e] = self.read(int(rows[s]), int(rows[e - 1]) + 1)

    def columns(self, lo: int, hi: int, names: list[str]) -> dict[str, list]:
        """Rows ``[lo, hi)`` of the columns ``names`` (Parquet files only)."""
        raise ValueError(
            f"{self.where}: columns ({', '.join(names)}) can only be read from Parquet files"
        )


class _ArrayPart(_Part):
    def __init__(self, x: np.ndarray, where: str) -> None:
        self.x, self.where = x, where
        self.n, self.d = x.shape

    def read(self, lo: int, hi: int) -> np.ndarray:
        return np.ascontiguousarray(self.x[lo:hi], dtype=np.float32)

    def take_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        out[:] = self.x[rows]


class _FilePart(_Part):
    """Rows at fixed byte offsets of a file: row ``i``'s ``d`` values of ``dtype`` start at
    ``offset + i * stride + skip`` (``.fvecs``: each row's first 4 bytes hold its ``d``)."""

    def __init__(self, path, offset, n, d, dtype, stride, skip, where) -> None:
        self.path, self.offset, self.n, self.d = path, offset, n, d
        self._no_direct = False  # set when the file system refuses O_DIRECT
        self.dtype, self.stride, self.skip, self.where = np.dtype(dtype), stride, skip, where

    def read(self, lo: int, hi: int, fd: int | None = None) -> np.ndarray:
        if fd is None:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                return self.read(lo, hi, fd)
            finally:
                os.close(fd)
        size = (hi - lo) * self.stride
        start = self.offset + lo * self.stride
        if os.fstat(fd).st_size < start + size:
            raise ValueError(f"{self.where}: the file ended early (it changed while being read?)")
        raw = self._direct(start, size) if size >= _MAP_BYTES else None
        if raw is not None:
            pass
        elif size >= _MAP_BYTES:  # mapped for this chunk only: no copy, no zeroed buffer
            at = start - start % mmap.ALLOCATIONGRANULARITY
            view = mmap.mmap(fd, size + start - at, flags=_MAP_FLAGS, prot=mmap.PROT_READ,
                             offset=at)  # fmt: skip
            raw = np.frombuffer(view, np.uint8, count=size, offset=start - at)
        else:
            raw = np.empty(size, np.uint8)
            if os.preadv(fd, [raw], start) != size:
                raise ValueError(
                    f"{self.where}: the file ended early (it changed while being read?)"
                )
        raw = raw.reshape(hi - lo, self.stride)
        if self.skip:  # .fvecs: every row must declare the same dimension
            heads = raw[:, :4].copy().view("<i4")[:, 0]
            bad = np.flatnonzero(heads != self.d)
            if bad.size:
                raise ValueError(
                    f"{self.where}: row {lo + bad[0]} has d={heads[bad[0]]}, expected {self.d} "
                    "(as in row 0)"
                )
        values = raw[:, self.skip : self.skip + self.d * self.dtype.itemsize]
        x = np.ascontiguousarray(values).view(self.dtype) if self.skip else values.view(self.dtype)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _direct(self, start: int, size: int) -> np.ndarray | None:
        """Bytes ``[start, start + size)`` read past the page cache (``O_DIRECT``) into
        new page-aligned memory, or ``None`` where that is not available (not Linux, or a
        file system that refuses it, as tmpfs does). The disk copies straight into the
        array: no page-cache pages to fill, map and later reclaim, which cost a
        streaming build a third of its encode rate when it shared the 2 cores with them
        (``benchmarks/scale.py``), and a build does not push the machine's working set
        out of the cache."""
        if not _O_DIRECT or self._no_direct:
            return None
        a = start - start % _DIRECT_ALIGN
        b = -(-(start + size) // _DIRECT_ALIGN) * _DIRECT_ALIGN
        try:
            fd = os.open(self.path, os.O_RDONLY | _O_DIRECT)
        except OSError:
            self._no_direct = True
            return None
        try:
            buf = mmap.mmap(-1, b - a)
            view = memoryview(buf)
            got = 0
            try:
                while got < b - a:
                    n = os.preadv(fd, [view[got:]], a + got)
                    if n <= 0:
                        break
                    got += n
            except OSError:  # EINVAL: the file system takes no direct reads after all
                self._no_direct = True
                return None
            finally:
                view.release()
        finally:
            os.close(fd)
        if got < start + size - a:
            raise ValueError(f"{self.where}: the file ended early (it changed while being read?)")
        return np.frombuffer(buf, np.uint8, count=size, offset=start - a)

    def advise(self, lo: int, hi: int) -> None:
        if hasattr(os, "posix_fadvise") and hi > lo:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                start = self.offset + lo * self.stride
                os.posix_fadvise(fd, start, (hi - lo) * self.stride, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)

    def take_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Runs of consecutive rows read at once, :data:`_READERS` runs at a time (a
        disk serves scattered reads faster many at once; ``pread`` releases the GIL)."""
        if rows.size == 0:
            return
        starts = np.flatnonzero(np.diff(rows, prepend=rows[0] - 2) != 1)
        ends = np.append(starts[1:], rows.size)
        fd = os.open(self.path, os.O_RDONLY)
        try:

            def run(group: range) -> None:
                for j in group:
                    s, e = int(starts[j]), int(ends[j])
                    out[s:e] = self.read(int(rows[s]), int(rows[e - 1]) + 1, fd)

            step = -(-starts.size // _READERS)
            groups = [range(j, min(j + step, starts.size)) for j in range(0, starts.size, step)]
            with ThreadPoolExecutor(len(groups), thread_name_prefix="vecpress-take") as pool:
                for done in [pool.submit(run, g) for g in groups]:
                    done.result()
        finally:
            os.close(fd)


class _ParquetPart(_Part):
    """A Parquet file's vector column, read by row groups."""

    def __init__(self, path: str, column: str | None, name: str) -> None:
        pa, pq = import_pyarrow(f"reading the Parquet {name} file {path}")
        self._errors = (pa.ArrowException, OSError)
        where = f"{name} file {path}"
        self._pq, self.file_path = pq, path
        try:
            self.file = pq.ParquetFile(path)
        except self._errors as e:
            raise ValueError(f"{where}: cannot read it as Parquet: {e}") from e
        self.column = vector_column(self.file.schema_arrow, column, where)
        self.where = f"{where}, column {self.column!r}"
        meta = self.file.metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.n = int(self.starts[-1])
        self._cached: tuple[int, np.ndarray] | None = None
        kind = self.file.schema_arrow.field(self.column).type
        self.d: int | None = kind.list_size if pa.types.is_fixed_size_list(kind) else None
        # a ParquetFile is not safe to read from two threads at once (its read cache), and
        # the documents' columns are read while the next chunk of vectors is (prefetch):
        # each has its own reader, each behind a lock
        self._lock = threading.Lock()
        self._columns_file = None
        self._columns_lock = threading.Lock()
        if self.d is None:
            self.d = self._first_length()

    def _first_length(self) -> int:
        for g in range(len(self.starts) - 1):
            if self.starts[g + 1] > self.starts[g]:
                return self._group(g).shape[1]
        return 0

    def _group(self, g: int) -> np.ndarray:
        with self._lock:
            return self._read_group(g)

    def _read_group(self, g: int) -> np.ndarray:
        if self._cached is not None and self._cached[0] == g:
            return self._cached[1]
        try:
            arr = self.file.read_row_group(g, columns=[self.column]).column(0).combine_chunks()
        except self._errors as e:
            raise ValueError(f"{self.where}: cannot read row group {g}: {e}") from e
        rows = arrow_rows(arr, self.where, row_offset=int(self.starts[g]))
        if self.d is not None and rows.shape[0] and rows.shape[1] != self.d:
            raise ValueError(
                f"{self.where}: row {self.starts[g]} has length {rows.shape[1]}, expected "
                f"{self.d} (as in row 0); all rows must have the same length"
            )
        self._cached = (g, rows)
        return rows

    def read(self, lo: int, hi: int) -> np.ndarray:
        first = int(np.searchsorted(self.starts, lo, side="right")) - 1
        parts = []
        g = first
        while g < len(self.starts) - 1 and self.starts[g] < hi:
            rows = self._group(g)
            s = int(self.starts[g])
            parts.append(rows[max(lo, s) - s : min(hi, s + rows.shape[0]) - s])
            g += 1
        out = np.concatenate(parts) if parts else np.zeros((0, self.d), np.float32)
        return np.ascontiguousarray(out)

    def columns(self, lo: int, hi: int, names: list[str]) -> dict[str, list]:
        missing = [c for c in names if c not in self.file.schema_arrow.names]
        if missing:
            raise ValueError(
                f"{self.where}: no column {missing[0]!r}; its columns are: "
                f"{', '.join(self.file.schema_arrow.names)}"
            )
        if hi <= lo:
            return {c: [] for c in names}
        first = int(np.searchsorted(self.starts, lo, side="right")) - 1
        last = int(np.searchsorted(self.starts, hi - 1, side="right")) - 1
        try:
            with self._columns_lock:
                if self._columns_file is None:
                    self._columns_file = self._pq.ParquetFile(self.file_path)
                table = self._columns_file.read_row_groups(
                    list(range(first, last + 1)), columns=names
                )
        except self._errors as e:
            raise ValueError(f"{self.where}: cannot read columns {names}: {e}") from e
        part = table.slice(lo - int(self.starts[first]), hi - lo)
        return {c: part.column(c).to_pylist() for c in names}

    def take_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        groups = np.searchsorted(self.starts, rows, side="right") - 1
        for g in np.unique(groups):
            mine = groups == g
            out[mine] = self._group(int(g))[rows[mine] - self.starts[g]]


def _file_part(path: str, name: str, column: str | None) -> _Part:
    """The part of one vector file (its header and size checked now)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".parquet":
        return _ParquetPart(path, column, name)
    where = f"{name} file {path}"
    if ext == ".fvecs" and os.path.isfile(path):  # rows' headers checked as they are read
        size = os.path.getsize(path)
        d = int(np.fromfile(path, np.int32, 1)[0]) if size >= 4 else 0
        if d < 1 or size % (4 * (d + 1)):
            raise ValueError(
                f"{where}: first row has d={d}, so the size {size} should be a multiple of "
                f"{4 * (d + 1)} bytes (rows of an int32 dimension and d float32)"
            )
        return _FilePart(path, 0, size // (4 * (d + 1)), d, np.float32, 4 * (d + 1), 4, where)
    x = read_vectors(path, name, column)  # checks the header against the size
    return _mapped_part(x, where) or _ArrayPart(x, where)


def _mapped_part(x: np.ndarray, where: str) -> _Part | None:
    """A memory-mapped ``x`` (C-ordered rows, or an ``.fvecs`` file's strided rows) read
    through its file; ``None`` for any other array."""
    if not isinstance(x, np.memmap) or x.ndim != 2 or x.size == 0:
        return None
    mm = getattr(x, "_mmap", None)  # shared by every view of the map
    path = getattr(x, "filename", None)
    if mm is None or path is None or not os.path.isfile(path):
        return None
    path = os.fspath(path)
    if x.dtype.kind != "f" or x.dtype.byteorder == ">" or x.strides[1] != x.itemsize:
        return None
    fvecs = path.endswith(".fvecs") and x.strides[0] == (x.shape[1] + 1) * 4
    if x.strides[0] != x.shape[1] * x.itemsize and not fvecs:
        return None
    # the map starts at the file offset rounded down to the allocation granularity
    mapped_at = x.offset - x.offset % mmap.ALLOCATIONGRANULARITY
    start = x.__array_interface__["data"][0] - np.frombuffer(mm, np.uint8).ctypes.data
    skip = 4 if fvecs else 0
    if start - skip < 0:
        return None
    return _FilePart(path, mapped_at + start - skip, x.shape[0], x.shape[1], x.dtype,
                     x.strides[0], skip, where)  # fmt: skip


class VectorSource:
    """The rows of vector files (or of an array) as one matrix (module docstring).

    Use :meth:`open`; ``n`` rows of ``d`` columns; ``name`` is used in messages.
    """

    def __init__(self, parts: list[_Part], name: str = "vectors") -> None:
        if not parts:
            raise ValueError(f"{name}: no files of vectors given")
        dims = {p.d for p in parts if p.n}
        if len(dims) > 1:
            first = next(p for p in parts if p.n)
            other = next(p for p in parts if p.n and p.d != first.d)
            raise ValueError(
                f"{name}: every file must have the same dimension; {first.where} has "
                f"{first.d} columns, {other.where} has {other.d}"
            )
        self.parts = parts
        self.name = name
        self.d = dims.pop() if dims else parts[0].d
        self.starts = np.concatenate([[0], np.cumsum([p.n for p in parts], dtype=np.int64)])
        self.n = int(self.starts[-1])

    @classmethod
    def open(cls, source, *, column: str | None = None, name: str = "vectors") -> VectorSource:
        """The rows of ``source``: a path of a vector file (``.npy``, ``.fbin``,
        ``.fvecs``, ``.parquet``) or of a folder of them (read in name order), a list of
        such paths, a ``VectorSource``, or a 2-D float numpy array (memory-mapped or
        not). ``column``: the vector column of Parquet files.

        Raises
        ------
        ValueError
            A file that cannot be read as vectors (named), files of different
            dimensions, a folder without vector files, an empty list.
        FileNotFoundError
            A path that does not exist.
        """
        if isinstance(source, VectorSource):
            return source
        if isinstance(source, np.ndarray):
            if source.ndim != 2 or (source.dtype.kind != "f"):
                raise ValueError(
                    f"{name} must be a 2-D float array, found shape {source.shape} of "
                    f"{source.dtype}"
                )
            return cls([_mapped_part(source, name) or _ArrayPart(source, name)], name)
        if isinstance(source, (str, os.PathLike)):
            paths = [os.fspath(source)]
        elif isinstance(source, (list, tuple)) and all(
            isinstance(p, (str, os.PathLike)) for p in source
        ):
            paths = [os.fspath(p) for p in source]
        else:
            raise TypeError(
                f"{name} must be a path, a list of paths or a 2-D float array, found "
                f"{type(source).__name__}"
            )
        files = []
        for p in paths:
            if os.path.isdir(p):
                found = sorted(
                    os.path.join(p, f) for f in os.listdir(p)
                    if os.path.splitext(f)[1].lower() in VECTOR_FORMATS
                    and os.path.isfile(os.path.join(p, f))
                )  # fmt: skip
                if not found:
                    raise ValueError(
                        f"{name} folder {p} holds no vector files (expected "
                        f"{', '.join(VECTOR_FORMATS)})"
                    )
                files += found
            else:
                files.append(p)
        return cls([_file_part(f, name, column) for f in files], name)

    def __repr__(self) -> str:
        return f"VectorSource({self.n:,} x {self.d} in {len(self.parts)} part(s))"

    def rows_per_chunk(self, chunk_bytes: int = CHUNK_BYTES) -> int:
        """Rows of float32 in ``chunk_bytes`` (at least 1)."""
        return max(1, int(chunk_bytes) // (4 * max(self.d, 1)))

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` as C-contiguous ``float32[hi - lo, d]``."""
        if not 0 <= lo <= hi <= self.n:
            raise ValueError(f"rows [{lo}, {hi}) are outside the {self.n} rows of {self.name}")
        out = []
        p = int(np.searchsorted(self.starts, lo, side="right")) - 1
        while lo < hi:
            s = int(self.starts[p])
            e = min(hi, int(self.starts[p + 1]))
            if e > lo:
                out.append(self.parts[p].read(lo - s, e - s))
            lo = max(lo, e)
            p += 1
        if len(out) == 1:
            return out[0]
        return np.concatenate(out) if out else np.zeros((0, self.d), np.float32)

    def columns(self, lo: int, hi: int, names: list[str]) -> dict[str, list]:
        """Rows ``[lo, hi)`` of the columns ``names`` of Parquet files, as Python lists
        (nulls as ``None``); a ``ValueError`` for another kind of file or a missing
        column."""
        if not 0 <= lo <= hi <= self.n:
            raise ValueError(f"rows [{lo}, {hi}) are outside the {self.n} rows of {self.name}")
        out: dict[str, list] = {c: [] for c in names}
        p = int(np.searchsorted(self.starts, lo, side="right")) - 1
        while lo < hi and names:
            s, e = int(self.starts[p]), min(hi, int(self.starts[p + 1]))
            if e > lo:
                for c, values in self.parts[p].columns(lo - s, e - s, names).items():
                    out[c] += values
            lo = max(lo, e)
            p += 1
        return out

    def check_columns(self, names: list[str]) -> None:
        """A ``ValueError`` unless every part is a Parquet file with columns ``names``."""
        for part in self.parts:
            part.columns(0, 0, names)

    def chunks(self, chunk_bytes: int = CHUNK_BYTES, rows: int | None = None, *,
               prefetch: bool = False) -> Iterator[tuple[int, np.ndarray]]:  # fmt: skip
        """``(first row, float32 rows)`` of the whole input in order: ``rows`` rows at a
        time, or as many as ``chunk_bytes`` of float32 hold. ``prefetch``: read the next
        chunk on a thread while the caller uses this one (two chunks in memory; reading
        a file releases the GIL), so a disk and the caller's work overlap."""
        step = self.rows_per_chunk(chunk_bytes) if rows is None else max(1, int(rows))
        starts = list(range(0, self.n, step))
        if not prefetch or len(starts) < 2:
            for lo in starts:
                x = self.read(lo, min(self.n, lo + step))
                self._advise(lo + step, min(self.n, lo + 2 * step))  # read ahead meanwhile
                yield lo, x
            return
        with ThreadPoolExecutor(1, thread_name_prefix="vecpress-read") as pool:
            ahead = pool.submit(self.read, 0, min(self.n, step))
            try:
                for i, lo in enumerate(starts):
                    x = ahead.result()
                    nxt = starts[i + 1] if i + 1 < len(starts) else None
                    ahead = None if nxt is None else pool.submit(
                        self.read, nxt, min(self.n, nxt + step))  # fmt: skip
                    yield lo, x
                    del x
            finally:
                if ahead is not None:
                    ahead.cancel()

    def _advise(self, lo: int, hi: int) -> None:
        """Tell the parts holding rows ``[lo, hi)`` that they will be read next."""
        p = int(np.searchsorted(self.starts, lo, side="right")) - 1
        while lo < hi:
            s, e = int(self.starts[p]), min(hi, int(self.starts[p + 1]))
            if e > lo:
                self.parts[p].advise(lo - s, e - s)
            lo = max(lo, e)
            p += 1

    def take(self, rows) -> np.ndarray:
        """The rows of ``rows`` (sorted, distinct row numbers), as ``float32[len, d]``."""
        rows = np.asarray(rows, np.int64)
        if rows.size and (rows[0] < 0 or rows[-1] >= self.n or (np.diff(rows) <= 0).any()):
            raise ValueError(f"rows must be sorted, distinct and in [0, {self.n})")
        parts = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((rows.size, self.d), np.float32)
        for p in np.unique(parts):  # rows are sorted: each part's are one run of them
            a, b = np.searchsorted(parts, [p, p + 1])
            self.parts[p].take_into(rows[a:b] - self.starts[p], out[a:b])
        return out
