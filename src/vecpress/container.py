"""The one binary framing of vecpress's files, and the codec blob built on it.

Every vecpress file -- a codec blob (:func:`pack`, :meth:`Codec.to_bytes`) and an
index file (:mod:`vecpress.files.storage`) -- is framed the same way (integers
little-endian)::

    prefix   magic (8 bytes), format version (uint32), then the header's length
             and CRC32 (a :class:`Framing` says the widths, and whether zero
             ``flags``/``reserved`` words surround them)
    header   UTF-8 JSON, canonical (sorted keys, no spaces), at most ``max_header``
    ..       zero padding to a multiple of :data:`ALIGN` (64)
    sections raw arrays, each at a 64-byte boundary, zero padded, each described
             in the header (name, dtype, shape, offset, nbytes, crc32)
    footer   total length (uint64), end magic (8 bytes)

:meth:`Framing.read_header` validates everything up to the JSON (size, magic,
version, zero words, footer, total length, header length against the file
before the header is read, header checksum, the JSON itself) without
allocating more than the header; :meth:`Framing.check_padding` requires every
byte outside the header and the sections to be zero. So a truncated or
tampered file raises :class:`~vecpress.errors.FormatError` naming the source
and the section. The two framings differ only in their prefix and in what the
header holds:

* codec blob (:data:`BLOB`, version 1): prefix ``magic b"VECPRESS"``, version,
  header length (uint32), header CRC32; header ``{"config": {...}, "arrays":
  [{name, dtype, shape, offset, nbytes, crc32}]}`` with offsets relative to the
  first section; ends with ``b"VPEND\\x00\\x00\\x00"``.
* index file (:mod:`vecpress.files.storage`): prefix ``magic b"VPINDEX\\x00"``,
  version, flags = 0 (uint32), header length (uint64), header CRC32, reserved = 0
  (uint32); absolute section offsets in a strict order.

No pickle is involved anywhere.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .checksum import crc32
from .errors import FormatError

ALIGN = 64
FOOTER = struct.Struct("<Q8s")
#: the dtypes a blob's arrays may have
BLOB_DTYPES = frozenset(
    {"<f4", "<f8", "<f2", "|u1", "|i1", "<i4", "<i8", "<u4", "<u8", "<i2", "<u2"}
)


def align(n: int) -> int:
    """``n`` rounded up to a multiple of :data:`ALIGN`.

    Examples
    --------
    >>> align(0), align(1), align(64), align(65)
    (0, 64, 64, 128)
    """
    return n + (-n) % ALIGN


def is_int(value: object, lo: int, hi: int) -> bool:
    """Whether ``value`` is an int (not a bool) in ``[lo, hi]`` (a JSON field check)."""
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def canonical_json(obj: object) -> bytes:
    """The header bytes of ``obj``: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def section_nbytes(dtype: str, shape: list[int]) -> int:
    """Bytes of an array of ``dtype`` and ``shape``."""
    n = np.dtype(dtype).itemsize
    for s in shape:
        n *= s
    return n


@dataclass(frozen=True)
class Framing:
    """One file format's framing (see the module docstring).

    Parameters
    ----------
    magic, end_magic : bytes
        8 bytes each.
    wide : bool
        ``False``: prefix ``magic, version, header length (uint32), CRC32``;
        ``True``: ``magic, version, flags, header length (uint64), CRC32,
        reserved``, flags and reserved 0.
    versions : tuple of int
        The format versions read.
    max_header : int
        The largest header, in bytes.
    what : str
        The file's kind in error messages (``"vecpress data"``).
    hints : dict
        Magic of another format -> a hint appended to the bad-magic error.
    """

    magic: bytes
    end_magic: bytes
    wide: bool
    versions: tuple[int, ...]
    max_header: int
    what: str
    hints: dict[bytes, str] = field(default_factory=dict)

    @property
    def prefix(self) -> struct.Struct:
        return struct.Struct("<8sIIQII" if self.wide else "<8sIII")

    def fail(self, source: str, section: str, why: str) -> FormatError:
        return FormatError(f"{source}: invalid {self.what} in {section}: {why}")

    # -- writing -------------------------------------------------------------
    def head(self, version: int, header: bytes) -> bytes:
        """Prefix, header and zero padding up to the first section."""
        if len(header) > self.max_header:
            raise ValueError(f"header of {len(header)} bytes exceeds {self.max_header}")
        if self.wide:
            prefix = self.prefix.pack(self.magic, version, 0, len(header), crc32(header), 0)
        else:
            prefix = self.prefix.pack(self.magic, version, len(header), crc32(header))
        out = prefix + header
        return out + b"\x00" * (align(len(out)) - len(out))

    def foot(self, total: int) -> bytes:
        """The footer of a file of ``total`` bytes (footer included)."""
        return FOOTER.pack(total, self.end_magic)

    def first_section(self, header_len: int) -> int:
        """Offset of the first section after a header of ``header_len`` bytes."""
        return align(self.prefix.size + header_len)

    def write(self, write: Callable, head: bytes, sections: list) -> int:
        """Write ``head`` (:meth:`head`), each section's bytes zero padded to
        :data:`ALIGN`, and the footer through ``write``; returns the total length."""
        write(head)
        total = len(head)
        for raw in sections:
            n = memoryview(raw).nbytes
            write(raw)
            write(b"\x00" * (align(n) - n))
            total += align(n)
        total += FOOTER.size
        write(self.foot(total))
        return total

    # -- reading -------------------------------------------------------------
    def read_header(self, read_at: Callable[[int, int], bytes], size: int, source: str):
        """Validate prefix, footer and header of a file of ``size`` bytes and parse it.

        ``read_at(offset, n)`` returns ``n`` bytes. Returns ``(version, parsed JSON,
        header length)``; raises :class:`FormatError` naming ``source``.

        Examples
        --------
        >>> data = pack({"a": 1}, {})
        >>> BLOB.read_header(lambda o, n: data[o : o + n], len(data), "x")[1]["config"]
        {'a': 1}
        """
        pre = self.prefix
        smallest = align(pre.size + 2) + FOOTER.size  # the JSON is at least "{}"
        if size < smallest:
            raise self.fail(
                source,
                "prefix",
                f"{size} bytes is shorter than the smallest valid file ({smallest} bytes)",
            )
        fields = pre.unpack(read_at(0, pre.size))
        if self.wide:
            magic, version, flags, hlen, hcrc, reserved = fields
        else:
            (magic, version, hlen, hcrc), flags, reserved = fields, 0, 0
        if magic != self.magic:
            hint = self.hints.get(magic, "")
            raise self.fail(source, "prefix", f"bad magic {magic!r}, not {self.what}{hint}")
        if version not in self.versions:
            raise self.fail(
                source,
                "prefix",
                f"format version {version} is not supported "
                f"(this vecpress reads versions {', '.join(map(str, self.versions))})",
            )
        if flags or reserved:
            raise self.fail(source, "prefix", f"flags {flags} / reserved {reserved} must be 0")
        total, end_magic = FOOTER.unpack(read_at(size - FOOTER.size, FOOTER.size))
        if end_magic != self.end_magic:
            raise self.fail(source, "footer", "bad end magic (truncated, or data appended)")
        if total != size:
            raise self.fail(source, "footer", f"recorded length {total} differs from {size}")
        room = size - pre.size - FOOTER.size
        if not 1 <= hlen <= min(self.max_header, room):
            raise self.fail(
                source,
                "header",
                f"header length {hlen} is outside [1, {min(self.max_header, room)}] "
                f"({size} bytes, limit {self.max_header})",
            )
        header = read_at(pre.size, hlen)
        if crc32(header) != hcrc:
            raise self.fail(source, "header", "checksum mismatch")
        try:  # ValueError: bad UTF-8 or JSON, or an integer beyond Python's int-string limit
            meta = json.loads(header.decode("utf-8"))
        except (ValueError, RecursionError) as e:
            raise self.fail(source, "header", f"unreadable JSON ({e})") from None
        return version, meta, hlen

    def check_padding(self, mv: memoryview, hlen: int, spans, source: str) -> None:
        """Require zeros outside the header and the sections ``spans`` ((name, offset,
        nbytes), sorted by offset) of the file bytes ``mv``."""
        prev = self.prefix.size + hlen
        for name, offset, nbytes in [*spans, ("footer", len(mv) - FOOTER.size, 0)]:
            if any(mv[prev:offset]):
                raise self.fail(source, f"padding before {name!r}", "non-zero padding bytes")
            prev = offset + nbytes


#: the framing of codec blobs
BLOB = Framing(
    magic=b"VECPRESS",
    end_magic=b"VPEND\x00\x00\x00",
    wide=False,
    versions=(1,),
    max_header=1 << 24,
    what="vecpress data",
)
BLOB_VERSION = 1


def pack(config: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """Serialize a JSON-able ``config`` and named numpy ``arrays`` into a blob.

    Examples
    --------
    >>> cfg, arr = unpack(pack({"a": 1}, {"x": np.arange(3, dtype=np.int64)}))
    >>> cfg, arr["x"].tolist()
    ({'a': 1}, [0, 1, 2])
    """
    entries = []
    raws = []
    offset = 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        a = a.astype(dt, copy=False)
        if dt.str not in BLOB_DTYPES:
            raise TypeError(f"array {name!r} has unsupported dtype {a.dtype} for serialization")
        raw = a.tobytes()
        entries.append(
            {
                "name": name,
                "dtype": dt.str,
                "shape": list(a.shape),
                "offset": offset,
                "nbytes": len(raw),
                "crc32": crc32(raw),
            }
        )
        raws.append(raw)
        offset += align(len(raw))
    header = canonical_json({"config": config, "arrays": entries})
    if len(header) > BLOB.max_header:
        raise ValueError(f"config too large to serialize ({len(header)} bytes)")
    out: list[bytes] = []
    BLOB.write(out.append, BLOB.head(BLOB_VERSION, header), raws)
    return b"".join(out)


def unpack(buf: bytes | bytearray | memoryview, source: str = "<bytes>"):
    """Validate and parse a blob made by :func:`pack`.

    Returns
    -------
    (dict, dict[str, numpy.ndarray])
        The config and the arrays (read-only views into ``buf``).

    Raises
    ------
    FormatError
        If anything about the blob is inconsistent; the message names the section.

    Examples
    --------
    >>> unpack(b"not a blob", source="x.bin")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    vecpress.errors.FormatError: x.bin: invalid vecpress data in prefix: 10 bytes is shorter ...
    """
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, found {type(buf).__name__}")
    mv = memoryview(buf).cast("B")
    size = mv.nbytes
    _, meta, hlen = BLOB.read_header(lambda o, n: bytes(mv[o : o + n]), size, source)
    try:
        config = meta["config"]
        entries = meta["arrays"]
    except (KeyError, TypeError) as e:
        raise BLOB.fail(source, "header", f"unreadable JSON ({e!r})") from None
    if not isinstance(config, dict) or not isinstance(entries, list):
        raise BLOB.fail(source, "header", "config must be an object and arrays a list")
    data_start = BLOB.first_section(hlen)
    data_end = size - FOOTER.size
    checked = []
    for e in entries:
        try:
            name, dts, shape = e["name"], e["dtype"], e["shape"]
            off, nbytes, crc = e["offset"], e["nbytes"], e["crc32"]
        except (KeyError, TypeError):
            raise BLOB.fail(source, "header", f"malformed array entry {e!r:.200}") from None
        if not isinstance(name, str) or any(name == c[0] for c in checked):
            raise BLOB.fail(
                source, "header", f"array name {name!r:.80} is not a string, or repeats"
            )
        section = f"array {name!r}"
        if not isinstance(dts, str) or dts not in BLOB_DTYPES:
            raise BLOB.fail(source, section, f"unsupported dtype {dts!r:.80}")
        if not isinstance(shape, list) or not all(is_int(s, 0, 2**48 - 1) for s in shape):
            raise BLOB.fail(source, section, f"bad shape {shape!r:.80}")
        if not all(is_int(v, 0, 2**64) for v in (off, nbytes, crc)):
            raise BLOB.fail(source, section, "offset, size and checksum must be non-negative ints")
        if section_nbytes(dts, shape) != nbytes:
            raise BLOB.fail(source, section, f"size {nbytes} does not match shape {shape} of {dts}")
        start = data_start + off
        if off % ALIGN or start + nbytes > data_end:
            raise BLOB.fail(source, section, f"section [{start}, {start + nbytes}) lies outside")
        checked.append((name, dts, tuple(shape), start, nbytes, crc))
    spans = sorted(((f"array {c[0]}", c[3], c[4]) for c in checked), key=lambda s: s[1])
    BLOB.check_padding(mv, hlen, spans, source)
    arrays = {}
    for name, dts, shape, start, nbytes, crc in checked:
        raw = mv[start : start + nbytes]
        if crc32(raw) != crc:
            raise BLOB.fail(source, f"array {name!r}", "checksum mismatch")
        a = np.frombuffer(raw, dtype=np.dtype(dts), count=nbytes // np.dtype(dts).itemsize)
        arrays[name] = a.reshape(shape)
    return config, arrays
