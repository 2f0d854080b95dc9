"""Index files: a checksummed, memory-mappable layout, saved atomically.

Layout of format version 2 (all integers little-endian)::

    0    8  magic b"VPINDEX\\x00"
    8    4  format version (uint32) = 2 (version 1 files are read too)
    12   4  flags (uint32) = 0
    16   8  header length H (uint64), 1 <= H <= MAX_HEADER (1 MiB)
    24   4  CRC32 of the header bytes (uint32)
    28   4  reserved (uint32) = 0
    32   H  header: UTF-8 JSON {format, version, spec, metric, d, count, code_size,
            next_id, seed, rerank_spec, rerank_code_size, ivf, ivf_residual,
            sections: [{name, dtype, shape, offset, nbytes, crc32}]}
    ..      zero padding to a multiple of 64
    ..      sections, in this order, each at a 64-byte boundary, zero padded:
            "codec" (uint8[m]: ``Codec.to_bytes()``),
            "rerank_codec" (uint8[m], if rerank_spec),
            "centroids" (float32[ivf, d], if ivf),
            "list_offsets" (int64[ivf + 1], if ivf: list l is rows offsets[l]:offsets[l+1]),
            "ids" (int64[count]),
            "norms" (float32[count], exact |x|², metric "l2" only),
            "codes" (uint8[count, code_size]: the rows the first stage scans),
            "rerank_codes" (uint8[count, rerank_code_size], if rerank_spec, or the
            second level of a two-level spec such as ``lvq4x8``: then rerank_spec
            is null, rerank_code_size the second level's bytes, and the codes'
            rows the first level's)
    end-16  8  total file length (uint64)
    end-8   8  end magic b"VPIEND\\x00\\x00"

The layout is strict: every offset must be exactly where the previous section
ends (rounded up to 64), the last section must end where the footer begins,
and every byte outside the JSON is either checked by a CRC or required to be
zero. So any truncation or single-bit flip is reported as a
:class:`~vecpress.errors.FormatError` naming the file and the section.

Version 1 (flat, no second tier) is version 2 without the four re-ranking/IVF
header keys and their sections; it is still read.

What is validated when:

* :func:`open` and :func:`info`: prefix, footer, total length, header size
  (bounded and checked against the file length *before* the header is read),
  header checksum, every header field and every section's size and offset
  against the others and against the file length -- all before any array is
  built. :func:`open` also checks at once the padding, the codec sections
  (CRC and the codec's own validation) and the small IVF sections (CRC,
  finite centroids, list offsets from 0 to ``count`` and non-decreasing).
* The data sections (ids, norms, codes, rerank_codes) -- their CRCs and
  contents (ids non-negative, unique and below ``next_id``; norms finite and
  >= 0): at once with ``mmap=False``; with ``mmap=True`` on
  :meth:`Index.verify` or the first use of the data (search, add, remove,
  contains, ids, save).

Saving writes a temp file ``.<name>.<pid>.<random>.vptmp`` in the same
directory, fsyncs it, renames it over the path with ``os.replace`` and fsyncs
the directory, so the path always holds a complete old or new file. One writer
at a time: :func:`save` holds an OS lock (``fcntl.flock`` on ``<path>.lock``)
and raises :class:`LockedError` at once if another writer holds it. Readers
never take that lock (:func:`open` and :func:`info` only read), so they can
never make a save fail. Temp files left by a killed writer are removed by the
next :func:`save` of that path, under its lock (only a lock holder creates
them, so none can be in use then); they are never read. The lock file normally
exists only while a save runs; a killed save leaves it behind, which is
harmless: ``flock`` locks die with their process, so the next save takes the
lock and removes the file. No pickle anywhere.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import mmap as _mmap
import os
import secrets
import struct
import zlib

import numpy as np

from .atomic import replacing
from .codec import Codec
from .errors import FormatError, LockedError
from .index import METRICS, Index, _Buffer

try:  # pragma: no cover - fcntl exists on every POSIX system
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

MAGIC = b"VPINDEX\x00"
END_MAGIC = b"VPIEND\x00\x00"
FORMAT_VERSION = 2
#: format versions this vecpress reads
READ_VERSIONS = (1, 2)
FORMAT_NAME = "vecpress.index"
MAX_HEADER = 1 << 20
#: largest dimension written or read (bounds what the codec may allocate on load)
MAX_D = 1 << 20
ALIGN = 64
_PREFIX = struct.Struct("<8sIIQII")
_FOOTER = struct.Struct("<Q8s")
_TMP_SUFFIX = ".vptmp"
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
_HEADER_KEYS = {
    1: _HEADER_KEYS_V1,
    2: _HEADER_KEYS_V1 | {"rerank_spec", "rerank_code_size", "ivf", "ivf_residual"},
}
#: the header fields a version-1 file lacks, as version 2 writes them for a flat index
_V1_DEFAULTS = {"rerank_spec": None, "rerank_code_size": 0, "ivf": None, "ivf_residual": True}
_SECTION_KEYS = {"name", "dtype", "shape", "offset", "nbytes", "crc32"}


def _align(n: int) -> int:
    return n + (-n) % ALIGN


def _int(value, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _expected_sections(meta: dict) -> list[tuple[str, str, list | None]]:
    """``(name, dtype, shape)`` of every section a header implies (``None``: a codec blob)."""
    count = meta["count"]
    out = [("codec", "|u1", None)]
    if meta["rerank_spec"] is not None:
        out.append(("rerank_codec", "|u1", None))
    if meta["ivf"] is not None:
        out.append(("centroids", "<f4", [meta["ivf"], meta["d"]]))
        out.append(("list_offsets", "<i8", [meta["ivf"] + 1]))
    out.append(("ids", "<i8", [count]))
    if meta["metric"] == "l2":
        out.append(("norms", "<f4", [count]))
    out.append(("codes", "|u1", [count, meta["code_size"]]))
    if meta["rerank_spec"] is not None or meta["rerank_code_size"]:
        out.append(("rerank_codes", "|u1", [count, meta["rerank_code_size"]]))
    return out


# -- saving ------------------------------------------------------------------
@contextlib.contextmanager
def _lock(path: str, *, wait: bool = False):
    """Hold the writer lock of ``path``, or raise :class:`LockedError`.

    The lock is ``flock`` on ``<path>.lock``. The holder removes the lock file
    before releasing it; a waiter that then finds its locked file is no longer
    the one at that path retries, so removal never lets two writers in. A lock
    file left by a killed holder is not locked (``flock`` locks die with their
    process): the next writer takes it, and removes it when done. Only writers
    call this; readers never lock.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_path = path + ".lock"
    while True:
        try:  # read-only suffices for flock, so a leftover read-only lock file never blocks
            fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o644)
        except FileNotFoundError:
            folder = os.path.dirname(path) or "."
            if os.path.isdir(folder):
                raise
            raise FileNotFoundError(
                errno.ENOENT, f"cannot save {path}: the folder {folder} does not exist", folder
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"{path}: another writer is saving this index (lock {lock_path} is held); "
                "only one writer at a time"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed it meanwhile: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)  # releases the flock


def _temp_files(path: str) -> list[str]:
    folder, base = os.path.split(path)
    prefix = f".{base}."
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return []
    return [
        os.path.join(folder, n) for n in names if n.startswith(prefix) and n.endswith(_TMP_SUFFIX)
    ]


def _remove_temps(path: str) -> None:
    """Remove the temp files of killed saves of ``path``; call only under its lock."""
    for t in _temp_files(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(t)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sections_of(index: Index) -> list[tuple[str, np.ndarray]]:
    arrays = [("codec", np.frombuffer(index.codec.to_bytes(), np.uint8))]
    if index.rerank_codec is not None:
        arrays.append(("rerank_codec", np.frombuffer(index.rerank_codec.to_bytes(), np.uint8)))
    if index.is_ivf:
        arrays.append(("centroids", index.centroids.astype("<f4", copy=False)))
        arrays.append(("list_offsets", index._list_offsets.astype("<i8", copy=False)))
    arrays.append(("ids", index._ids.view))
    if index.metric == "l2":
        arrays.append(("norms", index._norms.view))
    arrays.append(("codes", index._codes.view))
    if index.has_second_tier:
        arrays.append(("rerank_codes", index._rcodes.view))
    return [(n, np.ascontiguousarray(a)) for n, a in arrays]


def _raw_bytes(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array's bytes as a flat uint8 view (no copy; empty arrays too)."""
    return a.reshape(-1).view(np.uint8)


def encode_header(meta: dict) -> bytes:
    """The canonical JSON bytes of a header dict."""
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def save(index: Index, path) -> None:
    """Write ``index`` to ``path`` atomically (temp file, fsync, rename, fsync directory).

    Raises
    ------
    LockedError
        Another writer is saving to the same path (readers never lock).
    FileNotFoundError
        The folder of ``path`` does not exist (the message names it).
    ValueError
        The index has no dimension yet (never added to nor trained).

    A memory-mapped index is verified before it is written. Temp files left
    at ``path`` by killed saves are removed, under the writer lock.

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
    if not isinstance(index, Index):
        raise TypeError(f"expected a vecpress.Index, found {type(index).__name__}")
    if not index.is_trained:
        raise ValueError(
            "cannot save an index whose codec is not fitted (its dimension is unknown): "
            "add vectors or call train(X) first"
        )
    if index.d > MAX_D:
        raise ValueError(f"cannot save an index of dimension {index.d}: the limit is {MAX_D}")
    index._ensure_checked()
    path = os.path.abspath(os.fspath(path))
    folder, base = os.path.split(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory")
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            errno.ENOENT, f"cannot save {path}: the folder {folder} does not exist", folder
        )
    if index._codes is None:  # trained but empty
        index._init_buffers()
    sections = _sections_of(index)
    entries = []
    offset = None  # filled once the header length is known
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "spec": index.spec,
        "metric": index.metric,
        "d": index.d,
        "count": index.ntotal,
        "code_size": index.memory["codes"],
        "next_id": index.next_id,
        "seed": index.seed,
        "rerank_spec": index.rerank_spec,
        "rerank_code_size": index.memory["rerank"],
        "ivf": index.nlist,
        "ivf_residual": index.ivf_residual,
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
                "crc32": zlib.crc32(_raw_bytes(a)),
            }
        )
    # Offsets depend on the header length, which depends on the offsets' digits:
    # iterate until stable (at most a few rounds).
    header = b""
    for _ in range(8):
        offset = _align(_PREFIX.size + len(header))
        for e in entries:
            e["offset"] = offset
            offset = _align(offset + e["nbytes"])
        new = encode_header(meta)
        if new == header:
            break
        header = new
    if len(header) > MAX_HEADER:
        raise ValueError(f"index header of {len(header)} bytes exceeds {MAX_HEADER}")
    total = offset + _FOOTER.size
    with _lock(path), _naming(path):
        _remove_temps(path)
        tmp = os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
        with replacing(tmp, path) as f:
            head = _PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(header), zlib.crc32(header), 0)
            head += header
            f.write(head + b"\x00" * (_align(len(head)) - len(head)))
            for (_, a), e in zip(sections, entries, strict=True):
                f.write(_raw_bytes(a))
                f.write(b"\x00" * (_align(e["nbytes"]) - e["nbytes"]))
            f.write(_FOOTER.pack(total, END_MAGIC))
        _fsync_dir(folder)


@contextlib.contextmanager
def _naming(path: str):
    """Re-raise an ``OSError`` that does not name ``path`` (write, flush, fsync and close
    errors name no file) as one that does, with the same errno."""
    try:
        yield
    except OSError as e:
        if path in str(e):
            raise
        raise type(e)(e.errno, f"saving {path} failed: {e.strerror or e}") from e


# -- loading -----------------------------------------------------------------
def _fail(source: str, section: str, why: str) -> FormatError:
    return FormatError(f"{source}: invalid vecpress index in {section}: {why}")


def _read_at(f, offset: int, n: int) -> bytes:
    f.seek(offset)
    data = f.read(n)
    if len(data) != n:  # the file shrank under us
        raise OSError(f"short read: {len(data)} of {n} bytes at offset {offset}")
    return data


def _parse(f, size: int, source: str) -> tuple[dict, list[dict], int]:
    """Validate prefix, footer, header and section table; nothing large is allocated."""
    smallest = _align(_PREFIX.size + 2) + _FOOTER.size
    if size < smallest:
        raise _fail(
            source,
            "prefix",
            f"file of {size} bytes is shorter than the smallest index ({smallest} bytes)",
        )
    magic, version, flags, hlen, hcrc, reserved = _PREFIX.unpack(_read_at(f, 0, _PREFIX.size))
    if magic != MAGIC:
        hint = (
            " (it is a codec blob: load it with Codec.from_bytes)" if magic == b"VECPRESS" else ""
        )
        raise _fail(source, "prefix", f"bad magic {magic!r}, not a vecpress index{hint}")
    if version not in READ_VERSIONS:
        raise _fail(
            source,
            "prefix",
            f"format version {version} is not supported "
            f"(this vecpress reads versions {', '.join(map(str, READ_VERSIONS))})",
        )
    if flags or reserved:
        raise _fail(source, "prefix", f"flags {flags} / reserved {reserved} must be 0")
    total, end_magic = _FOOTER.unpack(_read_at(f, size - _FOOTER.size, _FOOTER.size))
    if end_magic != END_MAGIC:
        raise _fail(source, "footer", "bad end magic (truncated, or data appended)")
    if total != size:
        raise _fail(source, "footer", f"recorded length {total} differs from file length {size}")
    room = size - _PREFIX.size - _FOOTER.size
    if not 1 <= hlen <= min(MAX_HEADER, room):
        raise _fail(
            source,
            "header",
            f"header length {hlen} is outside [1, {min(MAX_HEADER, room)}] "
            f"(file of {size} bytes, limit {MAX_HEADER})",
        )
    header = _read_at(f, _PREFIX.size, hlen)
    if zlib.crc32(header) != hcrc:
        raise _fail(source, "header", "checksum mismatch")
    try:
        meta = json.loads(header.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, an integer of > 4300 digits
        raise _fail(source, "header", f"unreadable JSON ({e})") from None
    want_keys = _HEADER_KEYS[version]
    if not isinstance(meta, dict) or set(meta) != want_keys:
        keys = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise _fail(source, "header", f"expected keys {sorted(want_keys)}, found {keys}")
    if meta["format"] != FORMAT_NAME or meta["version"] != version:
        raise _fail(
            source,
            "header",
            f"format {meta['format']!r} version {meta['version']!r}, "
            f"expected {FORMAT_NAME!r} version {version}",
        )
    if version == 1:
        meta.update(_V1_DEFAULTS)
    if meta["metric"] not in METRICS:
        raise _fail(source, "header", f"unknown metric {meta['metric']!r}")
    if not isinstance(meta["spec"], str) or not 0 < len(meta["spec"]) <= 256:
        raise _fail(source, "header", f"bad spec {meta['spec']!r}")
    limits = {
        "d": (1, MAX_D),
        "count": (0, size),
        "code_size": (1, 8 * MAX_D + 64),
        "next_id": (0, 2**63),
        "seed": (0, 2**64 - 1),
    }
    for key, (lo, hi) in limits.items():
        if not _int(meta[key], lo, hi):
            raise _fail(source, "header", f"{key}={meta[key]!r} is not an integer in [{lo}, {hi}]")
    if meta["count"] > meta["next_id"]:
        raise _fail(source, "header", f"count {meta['count']} exceeds next_id {meta['next_id']}")
    rspec = meta["rerank_spec"]
    if rspec is None:  # 0, or the second level of a two-level spec (checked with the codec)
        if not _int(meta["rerank_code_size"], 0, 8 * MAX_D + 64):
            raise _fail(source, "header", f"bad rerank_code_size {meta['rerank_code_size']!r}")
    else:
        if not isinstance(rspec, str) or not 0 < len(rspec) <= 256:
            raise _fail(source, "header", f"bad rerank_spec {rspec!r}")
        if not _int(meta["rerank_code_size"], 1, 8 * MAX_D + 64):
            raise _fail(source, "header", f"bad rerank_code_size {meta['rerank_code_size']!r}")
    if meta["ivf"] is not None and not _int(meta["ivf"], 1, min(1 << 24, size)):
        raise _fail(source, "header", f"ivf={meta['ivf']!r} is not a list count in [1, 2^24]")
    if not isinstance(meta["ivf_residual"], bool):
        raise _fail(source, "header", f"ivf_residual={meta['ivf_residual']!r} is not a bool")
    expected = _expected_sections(meta)
    entries = meta["sections"]
    if not isinstance(entries, list) or len(entries) != len(expected):
        raise _fail(source, "header", f"expected {len(expected)} sections, found {entries!r:.80}")
    cursor = _align(_PREFIX.size + hlen)
    for e, (name, dtype, shape) in zip(entries, expected, strict=True):
        where = f"section {name!r}"
        if not isinstance(e, dict) or set(e) != _SECTION_KEYS or e["name"] != name:
            raise _fail(source, "header", f"expected an entry for {where}, found {e!r:.120}")
        if e["dtype"] != dtype:
            raise _fail(source, where, f"dtype {e['dtype']!r}, expected {dtype!r}")
        if shape is None:  # the codec blob: any positive length that fits
            shape = [e["shape"][0]] if isinstance(e["shape"], list) and e["shape"] else None
            if shape is None or not _int(shape[0], 1, size):
                raise _fail(source, where, f"bad shape {e['shape']!r}")
        if e["shape"] != shape:
            raise _fail(source, where, f"shape {e['shape']!r}, expected {shape}")
        nbytes = np.dtype(dtype).itemsize
        for s in shape:
            nbytes *= s
        if e["nbytes"] != nbytes or not _int(e["nbytes"], 0, size):
            raise _fail(source, where, f"size {e['nbytes']!r}, expected {nbytes} for shape {shape}")
        if e["offset"] != cursor or not _int(e["offset"], 0, size):
            raise _fail(source, where, f"offset {e['offset']!r}, expected {cursor}")
        if not _int(e["crc32"], 0, 2**32 - 1):
            raise _fail(source, where, f"bad checksum field {e['crc32']!r}")
        cursor = _align(cursor + nbytes)
        if cursor > size - _FOOTER.size:
            raise _fail(
                source,
                where,
                f"ends at {cursor}, past the data end {size - _FOOTER.size} (file of {size} bytes)",
            )
    if cursor != size - _FOOTER.size:
        raise _fail(
            source,
            "footer",
            f"sections end at {cursor} but the footer starts at {size - _FOOTER.size}",
        )
    return meta, entries, hlen


def info(path) -> dict:
    """Read an index file's header alone (no data is loaded or checked).

    Returns
    -------
    dict
        ``spec, metric, d, count, code_size, rerank_spec, rerank_code_size, ivf,
        ivf_residual, bytes_per_vector, format_version, next_id, seed, file_size``.

    Examples
    --------
    >>> import numpy as np, tempfile, os, vecpress
    >>> index = vecpress.Index("hd2,rq4", metric="l2")
    >>> _ = index.add(np.ones((4, 32), np.float32))
    >>> path = os.path.join(tempfile.mkdtemp(), "x.vpi")
    >>> index.save(path)
    >>> meta = vecpress.info(path)
    >>> meta["count"], meta["bytes_per_vector"], meta["format_version"]
    (4, 32, 2)
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
        "next_id": meta["next_id"],
        "seed": meta["seed"],
        "file_size": size,
    }


def open(path, mmap: bool = True) -> Index:  # shadows builtins.open here: use builtins.open
    """Load an index file.

    Parameters
    ----------
    path : str or os.PathLike
    mmap : bool
        ``True``: memory-map the arrays (nothing is copied; pages load on
        demand). The header, layout and codec are validated now; the data
        sections' checksums on :meth:`Index.verify` or the first use of the
        data. ``False``: read everything into memory and validate it all now.

    Opening only reads: it takes no lock and removes nothing, so readers
    never get in a writer's way.

    Raises
    ------
    FormatError
        The file is truncated, tampered with or not an index; the message
        names the file and the section.

    Examples
    --------
    >>> import numpy as np, tempfile, os, vecpress
    >>> x = np.random.default_rng(0).standard_normal((20, 16)).astype(np.float32)
    >>> index = vecpress.Index("f32", metric="ip")
    >>> _ = index.add(x)
    >>> path = os.path.join(tempfile.mkdtemp(), "x.vpi")
    >>> index.save(path)
    >>> loaded = vecpress.open(path, mmap=True).verify()
    >>> bool((loaded.search(x, 5).ids == index.search(x, 5).ids).all())
    True
    """
    path = os.fspath(path)
    with builtins.open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        meta, entries, hlen = _parse(f, size, path)
        if mmap:
            buf = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
            if len(buf) != size:
                raise _fail(path, "footer", f"file changed size while opening ({len(buf)})")
        else:
            buf = bytearray(size)
            f.seek(0)
            if f.readinto(buf) != size:
                raise _fail(path, "footer", "file shrank while reading")
    return _build(meta, entries, hlen, buf, path, lazy=mmap)


def _build(meta: dict, entries: list[dict], hlen: int, buf, source: str, *, lazy: bool) -> Index:
    mv = memoryview(buf)
    # Padding: every byte outside the JSON and the sections must be zero.
    gaps = []
    prev_end = _PREFIX.size + hlen
    for e in entries:
        gaps.append((e["name"], prev_end, e["offset"]))
        prev_end = e["offset"] + e["nbytes"]
    gaps.append(("footer", prev_end, len(mv) - _FOOTER.size))
    for name, lo, hi in gaps:
        if any(mv[lo:hi]):
            raise _fail(source, f"padding before {name!r}", "non-zero padding bytes")
    sec = {e["name"]: e for e in entries}

    def raw(name: str) -> memoryview:
        e = sec[name]
        return mv[e["offset"] : e["offset"] + e["nbytes"]]

    def check_crc(name: str) -> None:
        if zlib.crc32(raw(name)) != sec[name]["crc32"]:
            raise _fail(source, f"section {name!r}", "checksum mismatch")

    def load_codec(name: str, spec: str, code_size: int) -> Codec:
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
        have["code_size"] = codec.tier_sizes[0]  # the rows of section 'codes'
        for key, value in want.items():
            if have[key] != value:
                raise _fail(source, where, f"codec {key} {have[key]!r}, header {value!r}")
        return codec

    codec = load_codec("codec", meta["spec"], meta["code_size"])
    rerank_codec = None
    if meta["rerank_spec"] is not None:
        if codec.is_two_level:
            raise _fail(source, "header", "a two-level spec cannot have a rerank_spec")
        rerank_codec = load_codec("rerank_codec", meta["rerank_spec"], meta["rerank_code_size"])
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

    def check_data() -> None:
        for name in ("ids", "norms", "codes", "rerank_codes"):
            if name in sec:
                check_crc(name)
        if count:
            if ids.min() < 0 or ids.max() >= meta["next_id"]:
                raise _fail(
                    source,
                    "section 'ids'",
                    f"ids range [{ids.min()}, {ids.max()}] is outside "
                    f"[0, next_id={meta['next_id']})",
                )
            srt = np.sort(ids)
            if (srt[1:] == srt[:-1]).any():
                raise _fail(source, "section 'ids'", "duplicate ids")
            if norms is not None and not (np.isfinite(norms).all() and (norms >= 0).all()):
                raise _fail(source, "section 'norms'", "norms must be finite and >= 0")

    if not lazy:
        check_data()
    index = Index(
        meta["spec"],
        meta["metric"],
        seed=meta["seed"],
        rerank_spec=meta["rerank_spec"],
        ivf=meta["ivf"],
        ivf_residual=meta["ivf_residual"],
    )
    index.codec = codec
    index.rerank_codec = rerank_codec
    index.centroids = centroids
    index._list_offsets = list_offsets
    index._ids = _Buffer(ids)
    index._codes = _Buffer(codes)
    index._norms = _Buffer(norms) if norms is not None else None
    index._rcodes = _Buffer(rcodes) if rcodes is not None else None
    index._next_id = meta["next_id"]
    index._pending_check = check_data if lazy else None
    return index
