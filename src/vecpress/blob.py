"""A self-describing, checksummed container: JSON config plus named raw arrays.

Layout (all integers little-endian)::

    0   8  magic  b"VECPRESS"
    8   4  format version (uint32)
    12  4  header length H (uint32, at most ``MAX_HEADER``)
    16  4  CRC32 of the header bytes (uint32)
    20  H  header: UTF-8 JSON {"config": {...}, "arrays": [{name, dtype, shape,
           offset, nbytes, crc32}, ...]}
    ..     zero padding to a multiple of 64
    ..     array sections, each starting on a 64-byte boundary
    end-16 8  total length (uint64)
    end-8  8  end magic b"VPEND\\x00\\x00\\x00"

Everything is validated (magic, version, header checksum and bounds, the JSON
itself, every array's name, dtype, shape, bounds and checksum) before any array
is built, so a truncated or tampered blob raises
:class:`~vecpress.errors.FormatError` naming the source and never allocates
more than its own size. No pickle is involved anywhere.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from .errors import FormatError

MAGIC = b"VECPRESS"
END_MAGIC = b"VPEND\x00\x00\x00"
VERSION = 1
MAX_HEADER = 1 << 24
ALIGN = 64
_PREFIX = struct.Struct("<8sIII")
_FOOTER = struct.Struct("<Q8s")
_DTYPES = {"<f4", "<f8", "<f2", "|u1", "|i1", "<i4", "<i8", "<u4", "<u8", "<i2", "<u2"}


def _pad(n: int) -> int:
    return (-n) % ALIGN


def pack(config: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """Serialize a JSON-able ``config`` and named numpy ``arrays`` into bytes.

    Examples
    --------
    >>> cfg, arr = unpack(pack({"a": 1}, {"x": np.arange(3, dtype=np.int64)}))
    >>> cfg, arr["x"].tolist()
    ({'a': 1}, [0, 1, 2])
    """
    entries = []
    chunks = []
    offset = 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        a = a.astype(dt, copy=False)
        if dt.str not in _DTYPES:
            raise TypeError(f"array {name!r} has unsupported dtype {a.dtype} for serialization")
        raw = a.tobytes()
        entries.append(
            {
                "name": name,
                "dtype": dt.str,
                "shape": list(a.shape),
                "offset": offset,
                "nbytes": len(raw),
                "crc32": zlib.crc32(raw),
            }
        )
        chunks.append(raw + b"\x00" * _pad(len(raw)))
        offset += len(raw) + _pad(len(raw))
    header = json.dumps(
        {"config": config, "arrays": entries}, sort_keys=True, separators=(",", ":")
    ).encode()
    if len(header) > MAX_HEADER:
        raise ValueError(f"config too large to serialize ({len(header)} bytes)")
    head = _PREFIX.pack(MAGIC, VERSION, len(header), zlib.crc32(header)) + header
    head += b"\x00" * _pad(len(head))
    body = b"".join(chunks)
    total = len(head) + len(body) + _FOOTER.size
    return head + body + _FOOTER.pack(total, END_MAGIC)


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
    """
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, found {type(buf).__name__}")
    mv = memoryview(buf).cast("B")
    size = mv.nbytes

    def fail(section: str, why: str) -> FormatError:
        return FormatError(f"{source}: invalid vecpress data in {section}: {why}")

    if size < _PREFIX.size + _FOOTER.size:
        raise fail("prefix", f"{size} bytes is shorter than the smallest valid blob")
    magic, version, hlen, hcrc = _PREFIX.unpack_from(mv, 0)
    if magic != MAGIC:
        raise fail("prefix", "bad magic (not a vecpress blob)")
    if version != VERSION:
        raise fail("prefix", f"format version {version} is not supported (expected {VERSION})")
    total, end_magic = _FOOTER.unpack_from(mv, size - _FOOTER.size)
    if end_magic != END_MAGIC:
        raise fail("footer", "bad end magic (truncated or appended data)")
    if total != size:
        raise fail("footer", f"recorded length {total} differs from actual length {size}")
    if hlen > MAX_HEADER or _PREFIX.size + hlen > size - _FOOTER.size:
        raise fail("header", f"header length {hlen} exceeds the blob")
    header = bytes(mv[_PREFIX.size : _PREFIX.size + hlen])
    if zlib.crc32(header) != hcrc:
        raise fail("header", "checksum mismatch")
    try:  # ValueError: bad UTF-8 or JSON, or an integer beyond Python's int-string limit
        meta = json.loads(header.decode("utf-8"))
        config = meta["config"]
        entries = meta["arrays"]
    except (ValueError, RecursionError, KeyError, TypeError) as e:
        raise fail("header", f"unreadable JSON ({e})") from None
    if not isinstance(config, dict) or not isinstance(entries, list):
        raise fail("header", "config must be an object and arrays a list")
    data_start = _PREFIX.size + hlen + _pad(_PREFIX.size + hlen)
    data_end = size - _FOOTER.size
    checked = []
    for e in entries:
        try:
            name, dts, shape = e["name"], e["dtype"], e["shape"]
            off, nbytes, crc = e["offset"], e["nbytes"], e["crc32"]
        except (KeyError, TypeError):
            raise fail("header", f"malformed array entry {e!r:.200}") from None
        if not isinstance(name, str) or any(name == c[0] for c in checked):
            raise fail("header", f"array name {name!r:.80} is not a string, or repeats")
        section = f"array {name!r}"
        if not isinstance(dts, str) or dts not in _DTYPES:
            raise fail(section, f"unsupported dtype {dts!r:.80}")
        if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**48 for s in shape
        ):
            raise fail(section, f"bad shape {shape!r:.80}")
        ints = (off, nbytes, crc)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
            raise fail(section, "offset, size and checksum must be non-negative integers")
        itemsize = np.dtype(dts).itemsize
        count = 1
        for s in shape:
            count *= s
        if count * itemsize != nbytes:
            raise fail(section, f"size {nbytes} does not match shape {shape} of {dts}")
        start = data_start + off
        if off % ALIGN or start + nbytes > data_end:
            raise fail(section, f"section [{start}, {start + nbytes}) lies outside the data")
        checked.append((name, dts, tuple(shape), start, nbytes, crc))
    arrays = {}
    for name, dts, shape, start, nbytes, crc in checked:
        raw = mv[start : start + nbytes]
        if zlib.crc32(raw) != crc:
            raise fail(f"array {name!r}", "checksum mismatch")
        a = np.frombuffer(raw, dtype=np.dtype(dts), count=nbytes // np.dtype(dts).itemsize)
        arrays[name] = a.reshape(shape)
    return config, arrays
