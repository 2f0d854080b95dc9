"""CRC-32 of index files: the zlib checksum, computed by the fastest library present.

Every checksum in a vecpress file is the CRC-32 of zlib and gzip (the ISO-HDLC
polynomial ``0xEDB88320``, reflected, initial and final XOR ``0xFFFFFFFF``).
:func:`crc32` computes it with ISA-L (``isal``, a dependency: carry-less
multiplication, measured at ~28 GB/s on this project's 2-core machine) and falls
back to the standard library's :func:`zlib.crc32` (~5 GB/s) where ``isal`` is
not installed. Both give the same value, so files do not depend on which ran.
The speed matters for a memory-mapped index: its first search verifies the
blocks it reads (:mod:`vecpress.files.storage`), all of them for a flat index.
"""

from __future__ import annotations

import zlib

try:  # pragma: no cover - which one is installed varies
    from isal.isal_zlib import crc32 as _fast_crc32
except ImportError:  # pragma: no cover
    _fast_crc32 = None

#: the library that computes :func:`crc32`: ``"isal"`` or ``"zlib"``
BACKEND = "zlib" if _fast_crc32 is None else "isal"


def crc32(data, value: int = 0) -> int:
    """The zlib CRC-32 of a bytes-like ``data``, continuing from ``value``.

    Examples
    --------
    >>> crc32(b"vecpress") == zlib.crc32(b"vecpress")
    True
    >>> crc32(b"press", crc32(b"vec")) == zlib.crc32(b"vecpress")
    True
    """
    if _fast_crc32 is None:  # pragma: no cover
        return zlib.crc32(data, value)
    return _fast_crc32(data, value)
