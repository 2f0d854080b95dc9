"""An archive's frames: one codec-container blob after another, read in order.

An archive is a *head* frame (the model: mean, basis, step, symbol tables), one
*chunk* frame per ``chunk_rows`` rows (their ANS-coded levels), and a *tail* frame
(rows, chunks, the archive's measured error and rate). Each frame is a blob of
:func:`vecpress.container.pack` (magic, version, JSON config, checksummed arrays,
footer), so a frame is read whole and checked before anything in it is used, and a
file can be written and read front to back with memory bounded by one chunk. The
chunk and tail frames carry the head frame's CRC-32 and their place, so frames of
another archive, reordered or missing frames are refused, and an archive cut short
has no tail.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np

from ..container import BLOB, FOOTER, align, unpack
from ..errors import FormatError


class Reader:
    """Bytes of an archive, from memory or from an open file (``pread``)."""

    def __init__(self, data=None, fd: int | None = None, source: str = "archive") -> None:
        self.source = source
        if fd is not None:
            self.fd, self.view = fd, None
            self.size = os.fstat(fd).st_size
        else:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(
                    f"expected the bytes or the path of an archive, found {type(data).__name__}"
                )
            self.fd, self.view = None, memoryview(data).cast("B")
            self.size = self.view.nbytes

    def read_at(self, offset: int, n: int):
        if offset < 0 or offset + n > self.size:
            raise FormatError(
                f"{self.source}: truncated: {n} bytes at {offset} are past its end ({self.size})"
            )
        if self.view is not None:
            return self.view[offset : offset + n]
        data = os.pread(self.fd, n, offset)
        if len(data) != n:
            raise FormatError(f"{self.source}: truncated while read")
        return data

    def header(self, offset: int, what: str) -> tuple[dict, int]:
        """The config of the frame at ``offset`` and the frame's length, from its prefix
        and header alone (its arrays not read: :meth:`frame` checks them)."""
        pre = BLOB.prefix
        head = bytes(self.read_at(offset, pre.size))
        magic, _, hlen, _ = pre.unpack(head)
        if magic != BLOB.magic or not 1 <= hlen <= min(BLOB.max_header, self.size - offset):
            raise FormatError(f"{self.source}: {what} is not a frame of a vecpress archive")
        try:
            meta = json.loads(bytes(self.read_at(offset + pre.size, hlen)))
            length = BLOB.first_section(hlen) + FOOTER.size
            length += sum(align(int(e["nbytes"])) for e in meta["arrays"])
            config = meta["config"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise FormatError(f"{self.source}: {what} has an unreadable header") from None
        if not isinstance(config, dict) or offset + length > self.size:
            raise FormatError(f"{self.source}: {what} is damaged or cut short")
        return config, length

    def frame(self, offset: int, what: str) -> tuple[dict, dict, int]:
        """The frame at ``offset``, checked whole: ``(config, arrays, its length)``."""
        _, length = self.header(offset, what)
        config, arrays = unpack(self.read_at(offset, length), source=f"{self.source} {what}")
        return config, arrays, length


def expect(config: dict, frame: str, head_crc: int | None, where: str, source: str) -> None:
    """Refuse a frame that is not ``frame`` of the archive whose head has ``head_crc``."""
    if config.get("frame") != frame or (head_crc is not None and config.get("head") != head_crc):
        raise FormatError(
            f"{source}: {where} is not the {frame} frame of this archive (frames missing, "
            "reordered or from another archive)"
        )


def check_chain(reader: Reader, offset: int, head_crc: int, chunks: int) -> int:
    """Walk the frames' headers from ``offset`` (``chunks`` chunk frames, then the tail,
    then the end of the archive), reading no arrays; returns the tail's offset."""
    for i in range(chunks):
        config, length = reader.header(offset, f"chunk frame {i}")
        expect(config, "chunk", head_crc, f"chunk frame {i}", reader.source)
        if config.get("index") != i:
            raise FormatError(f"{reader.source}: chunk frame {i} is out of order")
        offset += length
    config, length = reader.header(offset, "tail frame")
    expect(config, "tail", head_crc, "tail frame", reader.source)
    if offset + length != reader.size:
        raise FormatError(f"{reader.source}: bytes after the tail frame")
    return offset


def chunk_frames(reader: Reader, offset: int, head_crc: int, chunks: int) -> Iterator:
    """``(index, config, arrays)`` of each chunk frame from ``offset`` (arrays ``words``:
    the coded stream, ``bits``: the raw low bits, both uint32); then checks that the
    tail frame follows."""
    for i in range(chunks):
        config, arrays, length = reader.frame(offset, f"chunk frame {i}")
        expect(config, "chunk", head_crc, f"chunk frame {i}", reader.source)
        ok = set(arrays) == {"words", "bits"}
        ok = ok and all(a.dtype == np.uint32 and a.ndim == 1 for a in arrays.values())
        if config.get("index") != i or not ok:
            raise FormatError(f"{reader.source}: chunk frame {i} is damaged or out of order")
        yield i, config, arrays
        offset += length
    config, _, length = reader.frame(offset, "tail frame")
    expect(config, "tail", head_crc, "tail frame", reader.source)
    if offset + length != reader.size:
        raise FormatError(f"{reader.source}: bytes after the tail frame")
