"""Index files: a checksummed, memory-mappable layout, saved atomically.

Layout of format version 3 (all integers little-endian)::

    0    8  magic b"VPINDEX\\x00"
    8    4  format version (uint32) = 3 (versions 1 and 2 are read too)
    12   4  flags (uint32) = 0
    16   8  header length H (uint64), 1 <= H <= MAX_HEADER (1 MiB)
    24   4  CRC32 of the header bytes (uint32)
    28   4  reserved (uint32) = 0
    32   H  header: UTF-8 JSON {format, version, spec, metric, d, count, code_size,
            next_id, seed, rerank_spec, rerank_code_size, ivf, ivf_residual,
            block_size, sections: [{name, dtype, shape, offset, nbytes, crc32}]}
    ..      zero padding to a multiple of 64
    ..      sections, in this order, each at a 64-byte boundary, zero padded:
            "codec" (uint8[m]: ``Codec.to_bytes()``),
            "rerank_codec" (uint8[m], if rerank_spec),
            "centroids" (float32[ivf, d], if ivf),
            "list_offsets" (int64[ivf + 1], if ivf: list l is rows offsets[l]:offsets[l+1]),
            "block_crcs" (uint32[nblocks]: the block checksums of the data sections below),
            "ids" (int64[count]),
            "norms" (float32[count], exact |x|², metric "l2" only),
            "codes" (uint8[count, code_size]: the rows the first stage scans),
            "rerank_codes" (uint8[count, rerank_code_size], if rerank_spec, or the
            second level of a two-level spec such as ``lvq4x8``: then rerank_spec
            is null, rerank_code_size the second level's bytes, and the codes'
            rows the first level's)
    end-16  8  total file length (uint64)
    end-8   8  end magic b"VPIEND\\x00\\x00"

Block checksums. The four *data sections* (ids, norms, codes, rerank_codes:
the ones that grow with the number of vectors) are cut into blocks of
``block_size`` bytes (a power of two in [4 KiB, 64 MiB]; vecpress writes
:data:`BLOCK_SIZE` = 1 MiB, as Parquet pages and ZFS records are sized): block
``j`` of a section is its bytes ``[j * block_size, (j + 1) * block_size)``, the
last one shorter. ``block_crcs`` holds the CRC32 of every block, section after
section in the order above (``ceil(nbytes / block_size)`` each, none for an
empty section), so a 100 GB file has about 100,000 of them (400 KB) and the
JSON header stays small. The header's ``crc32`` of each data section is
``null``; every other section (``block_crcs`` included) has its whole-section
CRC32 there. The block size is a multiple of 8, so a block never splits an id
or a norm (codes rows may straddle two blocks).

The layout is strict: every offset must be exactly where the previous section
ends (rounded up to 64), the last section must end where the footer begins,
and every byte outside the JSON is either checked by a CRC or required to be
zero. So any truncation or single-bit flip is reported as a
:class:`~vecpress.errors.FormatError` naming the file and the section.

Version 2 is version 3 without ``block_size`` and ``block_crcs``, each data
section checked by the whole-section CRC32 in its header entry. Version 1 (flat,
no second tier) is version 2 without the four re-ranking/IVF header keys and
their sections. Both are still read (and written back as version 3).

What is validated when:

* :func:`load` (:func:`vecpress.open`) and :func:`info`: prefix, footer, total length, header size
  (bounded and checked against the file length *before* the header is read),
  header checksum, every header field and every section's size and offset
  against the others and against the file length -- all before any array is
  built. :func:`load` also checks at once the padding, the codec sections
  (CRC and the codec's own validation), the small IVF sections (CRC, finite
  centroids, list offsets from 0 to ``count`` and non-decreasing) and
  ``block_crcs`` (its CRC).
* The data sections, with ``mmap=False``: everything at once (every block's
  CRC, ids in ``[0, next_id)`` and unique, norms finite and >= 0).
* With ``mmap=True``, version 3: a search verifies, before reading them, the
  blocks it is about to read -- the blocks of ``codes`` (and ``norms`` under
  l2) holding the probed lists' rows (a flat index: all of them), the blocks of
  ``ids`` holding the result rows, and those of ``rerank_codes`` holding the
  candidates' rows -- each block once per opened index (a bitmap of verified
  blocks; many blocks at once are checked on a few threads; the CRC-32 is
  computed by ISA-L where installed, :mod:`vecpress.checksum`). A block's
  contents are checked with its CRC (ids in ``[0, next_id)``, norms finite and
  >= 0). So the first query reads what the
  search reads, rounded out to whole blocks, not the whole file.
  :meth:`Index.verify` and every use that needs all the data (add, remove,
  contains, ids, save) check every block not yet verified and that the ids are
  unique (which needs the whole ids section). Concurrent searches may share an
  index: a block is claimed by one thread, the others wait for its outcome, and
  a block whose check failed is checked again (and fails again) by the next
  search that reads it.
* With ``mmap=True``, versions 1 and 2: every data section's CRC and contents
  on :meth:`Index.verify` or the first use of the data (search included).
* With ``mmap=True``, before every read of the mapped rows (a search, a verification,
  anything that reads the data): that the file still holds the bytes it held when
  opened (:attr:`IndexState.file_check`, one ``fstat``). Reading a mapped page past
  the end of a file shrunk since (truncated in place by another program, e.g. copied
  over with ``cp``) is a bus error that kills the process; this turns it into a
  ``FormatError``. A file that shrinks *while* a read runs can still end it so: only a
  private copy (``mmap=False``) is safe from that. A file replaced by :func:`save`
  (a rename, a new file) never shrinks under an index that maps the old one.

Saving writes a temp file ``.<name>.<pid>.<random>.vptmp`` in the same
directory, fsyncs it, renames it over the path with ``os.replace`` and fsyncs
the directory, so the path always holds a complete old or new file. One writer
at a time: :func:`save` holds an OS lock (``fcntl.flock`` on ``<path>.lock``)
and raises :class:`LockedError` at once if another writer holds it. Readers
never take that lock (:func:`load` (:func:`vecpress.open`) and :func:`info` only read), so they can
never make a save fail. Temp files left by a killed writer are removed by the
next :func:`save` of that path, under its lock (only a lock holder creates
them, so none can be in use then); they are never read. The lock file normally
exists only while a save runs; a killed save leaves it behind, which is
harmless: ``flock`` locks die with their process, so the next save takes the
lock and removes the file. :func:`filling` writes the same file with its rows
written in place by the caller (a streaming build), under the same lock, temp
file and rename. No pickle anywhere.
"""

from __future__ import annotations

import builtins
import contextlib
import mmap as _mmap
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..atomic import (
    TMP_SUFFIX,
    check_folder,
    fsync_dir,
    naming,
    remove_temps,
    replacing,
    writer_lock,
)
from ..checksum import crc32
from ..codecs.codec import Codec
from ..container import FOOTER, Framing, align, canonical_json, is_int
from ..errors import FormatError
from .blockcheck import BlockCheck, DeferredCheck, block_crcs, nblocks

#: the score conventions an index may have (see :mod:`vecpress.search.index`)
METRICS = ("cosine", "ip", "l2")
MAGIC = b"VPINDEX\x00"
END_MAGIC = b"VPIEND\x00\x00"
FORMAT_VERSION = 3
#: format versions this vecpress reads
READ_VERSIONS = (1, 2, 3)
FORMAT_NAME = "vecpress.index"
MAX_HEADER = 1 << 20
#: largest dimension written or read (bounds what the codec may allocate on load)
MAX_D = 1 << 20
#: bytes per checksummed block of the data sections (format 3) that :func:`save` writes
BLOCK_SIZE = 1 << 20
#: the block sizes a file may declare: powers of two in this range
BLOCK_SIZE_RANGE = (1 << 12, 1 << 26)
#: the sections checked block by block (format 3), in file order
DATA_SECTIONS = ("ids", "norms", "codes", "rerank_codes")
#: the framing of index files (:mod:`vecpress.container`)
FRAMING = Framing(
    magic=MAGIC,
    end_magic=END_MAGIC,
    wide=True,
    versions=READ_VERSIONS,
    max_header=MAX_HEADER,
    what="vecpress index",
    hints={b"VECPRESS": " (it is a codec blob: load it with Codec.from_bytes)"},
)
_fail = FRAMING.fail
_HEADER_KEYS_V1 = {
    "format",
    "version",
    "spec",
    "metric",
    "d",
    "count",
    "code_size",
    "next_id",
    "seed",
    "sections",
}
_HEADER_KEYS_V2 = _HEADER_KEYS_V1 | {"rerank_spec", "rerank_code_size", "ivf", "ivf_residual"}
_HEADER_KEYS = {1: _HEADER_KEYS_V1, 2: _HEADER_KEYS_V2, 3: _HEADER_KEYS_V2 | {"block_size"}}
#: the header fields a version-1 file lacks, as version 2 writes them for a flat index
_V1_DEFAULTS = {"rerank_spec": None, "rerank_code_size": 0, "ivf": None, "ivf_residual": True}
_SECTION_KEYS = {"name", "dtype", "shape", "offset", "nbytes", "crc32"}


@dataclass
class IndexState:
    """What an index file holds: the public state :func:`save` writes and :func:`load`
    reads back (an :class:`~vecpress.Index` makes and takes it: ``Index.to_state``,
    ``Index.from_state``), so this module never touches an index's internals.

    Attributes
    ----------
    codec : Codec
        The first stage (for a two-level spec, the whole codec: ``codes`` hold its
        first level's rows, ``rerank_codes`` its second level's).
    metric : str
        One of :data:`METRICS`.
    seed : int
    rerank_codec : Codec or None
        The re-ranking tier of a ``rerank_spec``.
    nlist : int or None
        IVF lists (``None``: flat).
    ivf_residual : bool
    centroids : numpy.ndarray or None
        ``float32[nlist, d]`` (IVF).
    list_offsets : numpy.ndarray
        ``int64[nlist + 1]`` (flat: ``[0, count]``): list ``l`` is rows
        ``list_offsets[l]:list_offsets[l + 1]``.
    ids, norms, codes, rerank_codes : numpy.ndarray
        The rows: ``int64[count]``, ``float32[count]`` (``"l2"`` only, else
        ``None``), ``uint8[count, code_size]``, ``uint8[count, rerank_code_size]``
        (or ``None`` without a second tier).
    next_id : int
    pending_check : DeferredCheck or None
        Set by :func:`load` with ``mmap=True``: the data checks still to run.
    file_check : callable or None
        Set by :func:`load` with ``mmap=True``: raises ``FormatError`` if the file
        mapped by ``ids``, ``norms``, ``codes`` and ``rerank_codes`` no longer holds
        all their bytes (call it before reading them).
    """

    codec: Codec
    metric: str
    seed: int
    rerank_codec: Codec | None
    nlist: int | None
    ivf_residual: bool
    centroids: np.ndarray | None
    list_offsets: np.ndarray
    ids: np.ndarray
    norms: np.ndarray | None
    codes: np.ndarray
    rerank_codes: np.ndarray | None
    next_id: int
    pending_check: DeferredCheck | None = None
    file_check: Callable[[], None] | None = None

    @property
    def tier_sizes(self) -> tuple[int, int]:
        """Bytes per row of ``codes`` and of ``rerank_codes`` (0 without a second tier)."""
        first, second = self.codec.tier_sizes
        if self.rerank_codec is not None:
            second = self.rerank_codec.code_size
        return first, second


def _data_nbytes(meta: dict) -> dict[str, int]:
    """Bytes of each data section a header implies, in file order."""
    count = meta["count"]
    out = {"ids": 8 * count}
    if meta["metric"] == "l2":
        out["norms"] = 4 * count
    out["codes"] = count * meta["code_size"]
    if meta["rerank_spec"] is not None or meta["rerank_code_size"]:
        out["rerank_codes"] = count * meta["rerank_code_size"]
    return out


def _expected_sections(meta: dict) -> list[tuple[str, str, list | None]]:
    """``(name, dtype, shape)`` of every section a header implies (``None``: a codec blob)."""
    count = meta["count"]
    out = [("codec", "|u1", None)]
    if meta["rerank_spec"] is not None:
        out.append(("rerank_codec", "|u1", None))
    if meta["ivf"] is not None:
        out.append(("centroids", "<f4", [meta["ivf"], meta["d"]]))
        out.append(("list_offsets", "<i8", [meta["ivf"] + 1]))
    if meta["version"] >= 3:
        bs = meta["block_size"]
        count_blocks = sum(nblocks(n, bs) for n in _data_nbytes(meta).values())
        out.append(("block_crcs", "<u4", [count_blocks]))
    out.append(("ids", "<i8", [count]))
    if meta["metric"] == "l2":
        out.append(("norms", "<f4", [count]))
    out.append(("codes", "|u1", [count, meta["code_size"]]))
    if meta["rerank_spec"] is not None or meta["rerank_code_size"]:
        out.append(("rerank_codes", "|u1", [count, meta["rerank_code_size"]]))
    return out


# -- saving ------------------------------------------------------------------
def _sections_of(state: IndexState, block_size: int) -> list[tuple[str, np.ndarray]]:
    data = [(n, np.ascontiguousarray(a)) for n, a in _data_of(state)]
    crcs = np.concatenate(
        [np.zeros(0, "<u4")] + [block_crcs(_raw_bytes(a), block_size) for _, a in data]
    )
    return _leading_sections(state, crcs) + data


def _data_of(state: IndexState) -> list[tuple[str, np.ndarray]]:
    """The data sections' arrays, in file order (not made contiguous)."""
    data = [("ids", state.ids)]
    if state.metric == "l2":
        data.append(("norms", state.norms))
    data.append(("codes", state.codes))
    if state.rerank_codes is not None:
        data.append(("rerank_codes", state.rerank_codes))
    return data


def _leading_sections(state: IndexState, crcs: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The sections before the data: codecs, IVF arrays, the data's block checksums."""
    arrays = [("codec", np.frombuffer(state.codec.to_bytes(), np.uint8))]
    if state.rerank_codec is not None:
        arrays.append(("rerank_codec", np.frombuffer(state.rerank_codec.to_bytes(), np.uint8)))
    if state.nlist is not None:
        arrays.append(("centroids", state.centroids.astype("<f4", copy=False)))
        arrays.append(("list_offsets", state.list_offsets.astype("<i8", copy=False)))
    arrays.append(("block_crcs", crcs))
    return [(n, np.ascontiguousarray(a)) for n, a in arrays]


def check_block_size(block_size: object) -> int:
    """``block_size`` if it is a power of two in :data:`BLOCK_SIZE_RANGE`, else ``ValueError``."""
    lo, hi = BLOCK_SIZE_RANGE
    if not is_int(block_size, lo, hi) or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two in [{lo}, {hi}], found {block_size!r}")
    return block_size


def _raw_bytes(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array's bytes as a flat uint8 view (no copy; empty arrays too)."""
    return a.reshape(-1).view(np.uint8)


def _header(state: IndexState, sections, block_size: int, crc_of: dict | None = None):
    """The JSON header of a file of ``sections`` (``(name, array)`` in file order) and
    its section entries, offsets set; ``crc_of``: checksums to use instead of the
    sections' own (a layout planned before a section's content is known)."""
    entries = []
    offset = None  # filled once the header length is known
    code_size, rerank_code_size = state.tier_sizes
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "spec": state.codec.spec,
        "metric": state.metric,
        "d": state.codec.d,
        "count": int(state.ids.shape[0]),
        "code_size": code_size,
        "next_id": state.next_id,
        "seed": state.seed,
        "rerank_spec": None if state.rerank_codec is None else state.rerank_codec.spec,
        "rerank_code_size": rerank_code_size,
        "ivf": state.nlist,
        "ivf_residual": state.ivf_residual,
        "block_size": block_size,
        "sections": entries,
    }
    for name, a in sections:
        entries.append(
            {
                "name": name,
                "dtype": a.dtype.str,
                "shape": list(a.shape),
                "offset": 0,
                "nbytes": a.nbytes,
                "crc32": None if name in DATA_SECTIONS else crc32(_raw_bytes(a)),
            }
        )
    if crc_of is not None:
        for e in entries:
            e["crc32"] = crc_of.get(e["name"], e["crc32"])
    # Offsets depend on the header length, which depends on the offsets' digits:
    # iterate until stable (at most a few rounds).
    header = b""
    for _ in range(8):
        offset = FRAMING.first_section(len(header))
        for e in entries:
            e["offset"] = offset
            offset = align(offset + e["nbytes"])
        new = canonical_json(meta)
        if new == header:
            break
        header = new
    if len(header) > MAX_HEADER:
        raise ValueError(f"index header of {len(header)} bytes exceeds {MAX_HEADER}")
    return header, entries


def save(state: IndexState, path, *, block_size: int = BLOCK_SIZE) -> None:
    """Write an index's state to ``path`` atomically (temp file, fsync, rename, fsync
    directory); :meth:`vecpress.Index.save` calls it with its lock held.

    Parameters
    ----------
    state : IndexState
        The rows must agree (one id, code row, norm... per vector; list offsets
        ending at the count): :meth:`Index.to_state` checks that.
    path : str or os.PathLike
    block_size : int
        Bytes per checksummed block of the data sections (a power of two in
        ``BLOCK_SIZE_RANGE``): the unit a memory-mapped search verifies.

    Raises
    ------
    LockedError
        Another writer is saving to the same path (readers never lock).
    FileNotFoundError
        The folder of ``path`` does not exist (the message names it).
    ValueError
        A dimension beyond :data:`MAX_D`, or a bad ``block_size``.

    Temp files left at ``path`` by killed saves are removed, under the writer
    lock. Before the new file replaces the old one, its header, layout and
    codecs go through the checks of :func:`load`: a save never writes what
    load rejects.

    Examples
    --------
    >>> import numpy as np, tempfile, os, vecpress
    >>> index = vecpress.Index("hd2,rq4", metric="ip")
    >>> _ = index.add(np.random.default_rng(0).standard_normal((50, 32)).astype(np.float32))
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.vpi")
    >>> index.save(path)
    >>> len(vecpress.open(path))
    50
    """
    if not isinstance(state, IndexState):
        raise TypeError(f"expected an IndexState, found {type(state).__name__}")
    path = _checked_target(state, path, block_size)
    sections = _sections_of(state, block_size)
    header, _ = _header(state, sections, block_size)
    with _writing(path) as (f, _):
        FRAMING.write(f.write, FRAMING.head(FORMAT_VERSION, header),
                      [_raw_bytes(a) for _, a in sections])  # fmt: skip
        f.flush()


def _checked_target(state: IndexState, path, block_size: int) -> str:
    """``path`` made absolute, once the state, block size and path can be saved."""
    check_block_size(block_size)
    if state.codec.d > MAX_D:
        raise ValueError(f"cannot save an index of dimension {state.codec.d}: the limit is {MAX_D}")
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory")
    check_folder(path)
    return path


@contextlib.contextmanager
def _writing(path: str):
    """Yield ``(file, temp path)``: a new temp file beside ``path``, under its writer lock
    (earlier saves' temp files removed); when the block has written it, it is checked as
    :func:`load` would check it, fsynced and renamed over ``path``, and the folder
    fsynced. An exception removes it."""
    folder, base = os.path.split(path)
    with writer_lock(path), naming(path):
        remove_temps(path)
        tmp = os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        with replacing(tmp, path) as f:
            yield f, tmp
            _check_written(tmp)
        fsync_dir(folder)


#: bytes moved at a time when a planned layout shifts (:func:`filling`)
_MOVE_BYTES = 64 << 20
#: the largest crc32 (10 digits): a layout planned with it for a checksum not yet known
#: is never shorter than the final one
_WIDEST_CRC = 0xFFFFFFFF


@contextlib.contextmanager
def filling(state: IndexState, path, *, block_size: int = BLOCK_SIZE):
    """Write the file :func:`save` would write for ``state``, its data sections filled
    by the caller in place: no second copy of rows written elsewhere first.

    ``state``'s data arrays (``ids``, ``norms``, ``codes``, ``rerank_codes``) give only
    their shapes and dtypes (views of one zero, ``np.broadcast_to``, will do); the
    context yields ``fill(name, row, rows)``, which writes ``rows`` at row ``row`` of
    the data section ``name``. On leaving the block, the data's block checksums are
    computed from what was written, the header, codecs and checksums are written
    before the data and the footer after it, the file is checked as :func:`save`
    checks it, fsynced and renamed over ``path``. The layout is planned before the
    data's checksums are known, with the widest checksum in the header: if the final
    header is short enough to move the data (its length crosses a step of the
    sections' alignment), the data is moved down within the file first. An exception
    in the block removes the file; ``path`` is untouched. The writer lock of ``path``
    is held throughout.
    """
    path = _checked_target(state, path, block_size)
    data = _data_of(state)
    total_blocks = sum(nblocks(a.nbytes, block_size) for _, a in data)
    planned = _leading_sections(state, np.zeros(total_blocks, "<u4")) + data
    _, entries = _header(state, planned, block_size, {"block_crcs": _WIDEST_CRC})
    where = {e["name"]: e for e in entries}
    size = entries[-1]["offset"] + align(entries[-1]["nbytes"]) + FOOTER.size
    with _writing(path) as (f, tmp):
        fd = f.fileno()
        os.ftruncate(fd, size)
        shapes = dict(data)

        def fill(name: str, row: int, rows: np.ndarray) -> None:
            a = shapes[name]
            rows = np.ascontiguousarray(rows, a.dtype)
            width = a.nbytes // max(1, a.shape[0])
            if rows.shape[1:] != a.shape[1:] or not 0 <= row <= a.shape[0] - rows.shape[0]:
                raise ValueError(
                    f"{name}: rows {row}..{row + rows.shape[0]} of shape {rows.shape[1:]} "
                    f"do not fit the section's {a.shape}"
                )
            _pwrite_all(fd, _raw_bytes(rows), where[name]["offset"] + row * width)

        yield fill
        rfd = os.open(tmp, os.O_RDONLY)
        try:
            _finish_in_place(fd, rfd, state, data, entries, size, block_size)
        finally:
            os.close(rfd)


def _pwrite_all(fd: int, raw: np.ndarray, offset: int) -> None:
    view = memoryview(raw)
    done = 0
    while done < view.nbytes:
        done += os.pwrite(fd, view[done:], offset + done)


def _finish_in_place(fd, rfd, state, data, entries, size, block_size) -> None:
    """:func:`filling`'s last step: checksums, header, leading sections and footer
    (``fd`` writes the file, ``rfd`` reads it)."""
    planned = entries[-len(data) :]
    crcs = [np.zeros(0, "<u4")]
    with _mmap.mmap(rfd, size, access=_mmap.ACCESS_READ) as buf, memoryview(buf) as mv:
        for e in planned:
            crcs.append(block_crcs(mv[e["offset"] : e["offset"] + e["nbytes"]], block_size))
    leading = _leading_sections(state, np.concatenate(crcs))
    header, final = _header(state, leading + data, block_size)
    delta = planned[0]["offset"] - final[len(leading)]["offset"]  # >= 0: crcs planned widest
    if delta:  # the final header crossed an alignment step down: move the data down, in order
        for e in planned:
            for s in range(0, e["nbytes"], _MOVE_BYTES):
                piece = os.pread(rfd, min(_MOVE_BYTES, e["nbytes"] - s), e["offset"] + s)
                _pwrite_all(fd, np.frombuffer(piece, np.uint8), e["offset"] - delta + s)
        for e in final[len(leading) :]:  # the data's padding now holds old bytes: zero it
            pad = align(e["nbytes"]) - e["nbytes"]
            _pwrite_all(fd, np.zeros(pad, np.uint8), e["offset"] + e["nbytes"])
    end = final[-1]["offset"] + align(final[-1]["nbytes"])
    os.ftruncate(fd, end + FOOTER.size)
    _pwrite_all(fd, np.frombuffer(FRAMING.head(FORMAT_VERSION, header), np.uint8), 0)
    for (_, a), e in zip(leading, final[: len(leading)], strict=True):
        raw = _raw_bytes(a)
        _pwrite_all(fd, raw, e["offset"])
        _pwrite_all(
            fd, np.zeros(align(raw.nbytes) - raw.nbytes, np.uint8), e["offset"] + raw.nbytes
        )
    _pwrite_all(fd, np.frombuffer(FRAMING.foot(end + FOOTER.size), np.uint8), end)


def _check_written(tmp: str) -> None:
    """Run :func:`load`'s checks of the header, layout and codecs on the file just
    written (the data sections' checksums were computed from the same arrays)."""
    try:
        with builtins.open(tmp, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            meta, entries, hlen = _parse(f, size, tmp)
            buf = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
        _build(meta, entries, hlen, buf, tmp, lazy=True)
    except FormatError as e:
        raise RuntimeError(
            f"vecpress bug: the file being saved would not open again ({e}); "
            "it was not written, the previous file (if any) is unchanged"
        ) from e


# -- loading -----------------------------------------------------------------
def _read_at(f, offset: int, n: int) -> bytes:
    f.seek(offset)
    data = f.read(n)
    if len(data) != n:  # the file shrank under us
        raise OSError(f"short read: {len(data)} of {n} bytes at offset {offset}")
    return data


def _parse(f, size: int, source: str) -> tuple[dict, list[dict], int]:
    """Validate prefix, footer, header and section table; nothing large is allocated."""
    version, meta, hlen = FRAMING.read_header(lambda o, n: _read_at(f, o, n), size, source)
    want_keys = _HEADER_KEYS[version]
    if not isinstance(meta, dict) or set(meta) != want_keys:
        keys = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise _fail(source, "header", f"expected keys {sorted(want_keys)}, found {keys}")
    if meta["format"] != FORMAT_NAME or meta["version"] != version:
        raise _fail(
            source,
            "header",
            f"format {meta['format']!r:.80} version {meta['version']!r:.80}, "
            f"expected {FORMAT_NAME!r} version {version}",
        )
    if version == 1:
        meta.update(_V1_DEFAULTS)
    if meta["metric"] not in METRICS:
        raise _fail(source, "header", f"unknown metric {meta['metric']!r:.80}")
    if not isinstance(meta["spec"], str) or not 0 < len(meta["spec"]) <= 256:
        raise _fail(source, "header", f"bad spec {meta['spec']!r:.300}")
    limits = {
        "d": (1, MAX_D),
        "count": (0, size),
        "code_size": (1, 8 * MAX_D + 64),
        "next_id": (0, 2**63),
        "seed": (0, 2**64 - 1),
    }
    if version >= 3:
        limits["block_size"] = BLOCK_SIZE_RANGE
    for key, (lo, hi) in limits.items():
        if not is_int(meta[key], lo, hi):
            raise _fail(
                source, "header", f"{key}={meta[key]!r:.80} is not an integer in [{lo}, {hi}]"
            )
    if version >= 3 and meta["block_size"] & (meta["block_size"] - 1):
        raise _fail(source, "header", f"block_size={meta['block_size']} is not a power of two")
    if meta["count"] > meta["next_id"]:
        raise _fail(source, "header", f"count {meta['count']} exceeds next_id {meta['next_id']}")
    rspec = meta["rerank_spec"]
    if rspec is None:  # 0, or the second level of a two-level spec (checked with the codec)
        if not is_int(meta["rerank_code_size"], 0, 8 * MAX_D + 64):
            raise _fail(source, "header", f"bad rerank_code_size {meta['rerank_code_size']!r:.80}")
    else:
        if not isinstance(rspec, str) or not 0 < len(rspec) <= 256:
            raise _fail(source, "header", f"bad rerank_spec {rspec!r:.300}")
        if not is_int(meta["rerank_code_size"], 1, 8 * MAX_D + 64):
            raise _fail(source, "header", f"bad rerank_code_size {meta['rerank_code_size']!r:.80}")
    if meta["ivf"] is not None and not is_int(meta["ivf"], 1, min(1 << 24, size)):
        raise _fail(source, "header", f"ivf={meta['ivf']!r:.80} is not a list count in [1, 2^24]")
    if not isinstance(meta["ivf_residual"], bool):
        raise _fail(source, "header", f"ivf_residual={meta['ivf_residual']!r:.80} is not a bool")
    expected = _expected_sections(meta)
    entries = meta["sections"]
    if not isinstance(entries, list) or len(entries) != len(expected):
        raise _fail(source, "header", f"expected {len(expected)} sections, found {entries!r:.80}")
    cursor = FRAMING.first_section(hlen)
    for e, (name, dtype, shape) in zip(entries, expected, strict=True):
        where = f"section {name!r}"
        if not isinstance(e, dict) or set(e) != _SECTION_KEYS or e["name"] != name:
            raise _fail(source, "header", f"expected an entry for {where}, found {e!r:.120}")
        if e["dtype"] != dtype:
            raise _fail(source, where, f"dtype {e['dtype']!r:.80}, expected {dtype!r}")
        if shape is None:  # the codec blob: any positive length that fits
            shape = [e["shape"][0]] if isinstance(e["shape"], list) and e["shape"] else None
            if shape is None or not is_int(shape[0], 1, size):
                raise _fail(source, where, f"bad shape {e['shape']!r:.80}")
        if e["shape"] != shape:
            raise _fail(source, where, f"shape {e['shape']!r:.80}, expected {shape}")
        nbytes = np.dtype(dtype).itemsize
        for s in shape:
            nbytes *= s
        if e["nbytes"] != nbytes or not is_int(e["nbytes"], 0, size):
            raise _fail(
                source, where, f"size {e['nbytes']!r:.80}, expected {nbytes} for shape {shape}"
            )
        if e["offset"] != cursor or not is_int(e["offset"], 0, size):
            raise _fail(source, where, f"offset {e['offset']!r:.80}, expected {cursor}")
        if version >= 3 and name in DATA_SECTIONS:
            if e["crc32"] is not None:  # checked block by block (section 'block_crcs')
                raise _fail(source, where, f"checksum field {e['crc32']!r:.80}, expected null")
        elif not is_int(e["crc32"], 0, 2**32 - 1):
            raise _fail(source, where, f"bad checksum field {e['crc32']!r:.80}")
        cursor = align(cursor + nbytes)
        if cursor > size - FOOTER.size:
            raise _fail(
                source,
                where,
                f"ends at {cursor}, past the data end {size - FOOTER.size} (file of {size} bytes)",
            )
    if cursor != size - FOOTER.size:
        raise _fail(
            source,
            "footer",
            f"sections end at {cursor} but the footer starts at {size - FOOTER.size}",
        )
    return meta, entries, hlen


def info(path) -> dict:
    """Read an index file's header alone (no data is loaded or checked).

    Returns
    -------
    dict
        ``spec, metric, d, count, code_size, rerank_spec, rerank_code_size, ivf,
        ivf_residual, bytes_per_vector, format_version, block_size`` (``None``
        before format 3)``, next_id, seed, file_size``.

    Examples
    --------
    >>> import numpy as np, tempfile, os, vecpress
    >>> index = vecpress.Index("hd2,rq4", metric="l2")
    >>> _ = index.add(np.ones((4, 32), np.float32))
    >>> path = os.path.join(tempfile.mkdtemp(), "x.vpi")
    >>> index.save(path)
    >>> meta = vecpress.info(path)
    >>> meta["count"], meta["bytes_per_vector"], meta["format_version"], meta["block_size"]
    (4, 32, 3, 1048576)
    """
    path = os.fspath(path)
    with builtins.open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        meta, _, _ = _parse(f, size, path)
    per_vector = meta["code_size"] + meta["rerank_code_size"] + 8
    return {
        "spec": meta["spec"],
        "metric": meta["metric"],
        "d": meta["d"],
        "count": meta["count"],
        "code_size": meta["code_size"],
        "rerank_spec": meta["rerank_spec"],
        "rerank_code_size": meta["rerank_code_size"],
        "ivf": meta["ivf"],
        "ivf_residual": meta["ivf_residual"],
        "bytes_per_vector": per_vector + (4 if meta["metric"] == "l2" else 0),
        "format_version": meta["version"],
        "block_size": meta.get("block_size"),
        "next_id": meta["next_id"],
        "seed": meta["seed"],
        "file_size": size,
    }


def load(path, mmap: bool = True) -> IndexState:
    """Read an index file's state (:func:`vecpress.open` makes the index of it).

    ``mmap`` and the checks made now or later are those of :func:`vecpress.open`
    (the data sections' deferred checks are :attr:`IndexState.pending_check`).
    Only reads: no lock is taken, nothing removed. Raises ``FormatError``
    naming the file and the section.

    Examples
    --------
    >>> import numpy as np, tempfile, os, vecpress
    >>> index = vecpress.Index("f32", metric="ip")
    >>> _ = index.add(np.ones((20, 16), np.float32))
    >>> path = os.path.join(tempfile.mkdtemp(), "x.vpi")
    >>> index.save(path)
    >>> state = load(path)
    >>> state.codec.spec, state.ids.shape, state.pending_check is not None
    ('f32', (20,), True)
    """
    path = os.fspath(path)
    with builtins.open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        meta, entries, hlen = _parse(f, size, path)
        if mmap:
            buf = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
            if len(buf) != size:
                raise _fail(path, "footer", f"file changed size while opening ({len(buf)})")
            file_check = _file_check(buf, size, path)
            small = next(e["offset"] for e in entries if e["name"] == "ids")
            if hasattr(buf, "madvise"):  # what open reads now, in one request (advice only)
                with contextlib.suppress(OSError, ValueError):
                    buf.madvise(_mmap.MADV_WILLNEED, 0, small)
        else:
            file_check = None
            buf = bytearray(size)
            f.seek(0)
            if f.readinto(buf) != size:
                raise _fail(path, "footer", "file shrank while reading")
    state = _build(meta, entries, hlen, buf, path, lazy=mmap)
    state.file_check = file_check
    return state


def _file_check(buf: _mmap.mmap, size: int, path: str) -> Callable[[], None]:
    """:attr:`IndexState.file_check` of a file of ``size`` bytes mapped by ``buf``: the
    file's size now (``fstat`` of the map's own descriptor, so the file opened, even
    if renamed or deleted since) at least ``size``."""

    def check() -> None:
        now = buf.size()
        if now < size:
            raise _fail(
                path,
                "footer",
                f"the file shrank from {size:,} to {now:,} bytes after it was opened "
                "(memory-mapped, its rows cannot be read; open it again)",
            )

    return check


def _build(
    meta: dict, entries: list[dict], hlen: int, buf, source: str, *, lazy: bool
) -> IndexState:
    mv = memoryview(buf)
    # every byte outside the JSON and the sections must be zero
    FRAMING.check_padding(
        mv, hlen, [(e["name"], e["offset"], e["nbytes"]) for e in entries], source
    )
    sec = {e["name"]: e for e in entries}

    def raw(name: str) -> memoryview:
        e = sec[name]
        return mv[e["offset"] : e["offset"] + e["nbytes"]]

    def check_crc(name: str) -> None:
        if crc32(raw(name)) != sec[name]["crc32"]:
            raise _fail(source, f"section {name!r}", "checksum mismatch")

    def load_codec(name: str, spec: str, code_size: int, *, first_stage: bool) -> Codec:
        check_crc(name)
        where = f"section {name!r}"
        try:
            codec = Codec.from_bytes(bytes(raw(name)), source=f"{source} {where}")
        except FormatError:
            raise
        except (ValueError, TypeError, LookupError, AttributeError, ArithmeticError) as e:
            raise _fail(source, where, f"invalid codec ({type(e).__name__}: {e})") from None
        want = {"spec": spec, "d": meta["d"], "seed": meta["seed"], "code_size": code_size}
        have = {"spec": codec.spec, "d": codec.d, "seed": codec.seed}
        # the first stage's rows (section 'codes') hold the first level of a two-level
        # codec; a re-ranking tier's rows hold the whole code, both levels of one too
        have["code_size"] = codec.tier_sizes[0] if first_stage else codec.code_size
        for key, value in want.items():
            if have[key] != value:
                raise _fail(source, where, f"codec {key} {have[key]!r}, header {value!r}")
        return codec

    codec = load_codec("codec", meta["spec"], meta["code_size"], first_stage=True)
    rerank_codec = None
    if meta["rerank_spec"] is not None:
        if codec.is_two_level:
            raise _fail(source, "header", "a two-level spec cannot have a rerank_spec")
        rerank_codec = load_codec(
            "rerank_codec", meta["rerank_spec"], meta["rerank_code_size"], first_stage=False
        )
    elif meta["rerank_code_size"] != codec.tier_sizes[1]:
        raise _fail(
            source,
            "header",
            f"rerank_code_size {meta['rerank_code_size']}, the codec's second level has "
            f"{codec.tier_sizes[1]}",
        )
    count = meta["count"]
    centroids = None
    list_offsets = np.array([0, count], np.int64)
    if meta["ivf"] is not None:
        nlist = meta["ivf"]
        check_crc("centroids")
        centroids = np.frombuffer(raw("centroids"), np.dtype("<f4"), nlist * meta["d"])
        if not np.isfinite(centroids).all():
            raise _fail(source, "section 'centroids'", "centroids must be finite")
        centroids = centroids.reshape(nlist, meta["d"]).astype(np.float32)
        check_crc("list_offsets")
        list_offsets = np.frombuffer(raw("list_offsets"), np.dtype("<i8"), nlist + 1)
        if list_offsets[0] != 0 or list_offsets[-1] != count or (np.diff(list_offsets) < 0).any():
            raise _fail(
                source,
                "section 'list_offsets'",
                f"offsets must rise from 0 to count={count}",
            )
        list_offsets = list_offsets.astype(np.int64)
    ids = np.frombuffer(raw("ids"), np.dtype("<i8"), count)
    width = codec.tier_sizes[0]
    codes = np.frombuffer(raw("codes"), np.uint8, count * width).reshape(count, width)
    norms = np.frombuffer(raw("norms"), np.dtype("<f4"), count) if "norms" in sec else None
    rcodes = None
    if "rerank_codes" in sec:
        rcs = meta["rerank_code_size"]
        rcodes = np.frombuffer(raw("rerank_codes"), np.uint8, count * rcs).reshape(count, rcs)
    next_id = meta["next_id"]

    def check_ids(part: np.ndarray, where: str = "") -> None:
        if part.size and (part.min() < 0 or part.max() >= next_id):
            raise _fail(
                source,
                "section 'ids'",
                f"ids range [{part.min()}, {part.max()}]{where} is outside [0, next_id={next_id})",
            )

    def check_norms(part: np.ndarray, where: str = "") -> None:
        if not (np.isfinite(part).all() and (part >= 0).all()):
            raise _fail(source, "section 'norms'", f"norms{where} must be finite and >= 0")

    def check_unique() -> None:
        srt = np.sort(ids)
        if (srt[1:] == srt[:-1]).any():
            raise _fail(source, "section 'ids'", "duplicate ids")

    if meta["version"] >= 3:
        check_crc("block_crcs")
        crcs = np.frombuffer(raw("block_crcs"), np.dtype("<u4")).astype(np.uint32)
        data = {"ids": (ids, 8)}
        if norms is not None:
            data["norms"] = (norms, 4)
        data["codes"] = (codes, width)
        if rcodes is not None:
            data["rerank_codes"] = (rcodes, rcodes.shape[1])
        sections = {
            n: (a.reshape(-1).view(np.uint8), w, sec[n]["offset"]) for n, (a, w) in data.items()
        }
        bs = meta["block_size"]

        def block(a: np.ndarray, lo: int, hi: int) -> np.ndarray:
            return a[lo // a.itemsize : hi // a.itemsize]

        checks = {
            "ids": lambda lo, hi, j: check_ids(block(ids, lo, hi), f" in block {j}"),
            "norms": lambda lo, hi, j: check_norms(block(norms, lo, hi), f" in block {j}"),
        }
        prefetch = None
        if isinstance(buf, _mmap.mmap) and hasattr(buf, "madvise"):

            def prefetch(start: int, length: int) -> None:
                lo = start - start % _mmap.PAGESIZE
                with contextlib.suppress(OSError, ValueError):  # advice only
                    buf.madvise(_mmap.MADV_WILLNEED, lo, start + length - lo)

        check_data = BlockCheck(source, sections, crcs, bs, checks, prefetch, fail=_fail)
        check_data.unique_ids = check_unique
    else:

        def check_all() -> None:
            for name in DATA_SECTIONS:
                if name in sec:
                    check_crc(name)
            check_ids(ids)
            if norms is not None:
                check_norms(norms)
            check_unique()

        check_data = DeferredCheck(check_all)

    if not lazy:
        check_data()
    return IndexState(
        codec=codec,
        metric=meta["metric"],
        seed=meta["seed"],
        rerank_codec=rerank_codec,
        nlist=meta["ivf"],
        ivf_residual=meta["ivf_residual"],
        centroids=centroids,
        list_offsets=list_offsets,
        ids=ids,
        norms=norms,
        codes=codes,
        rerank_codes=rcodes,
        next_id=next_id,
        pending_check=check_data if lazy else None,
    )
