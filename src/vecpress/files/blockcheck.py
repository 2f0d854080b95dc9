"""The checks of an index file's data sections: all at once, or block by block.

A format-3 file (:mod:`vecpress.files.storage`) cuts its four data sections into
blocks of ``block_size`` bytes, each with its CRC-32 in the section
``block_crcs``. A memory-mapped index checks a block before its first read
(:class:`BlockCheck`): a search checks only the blocks it reads. Older
formats check everything on first use (:class:`DeferredCheck`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..checksum import crc32
from ..container import ALIGN
from ..threads import current_threads

#: a verification thread takes this many blocks at a time
_BLOCKS_PER_TASK = 8


def nblocks(nbytes: int, block_size: int) -> int:
    return -(-nbytes // block_size)


def block_crcs(data, block_size: int) -> np.ndarray:
    """The CRC32 of every ``block_size`` bytes of ``data`` (the last block shorter).

    Examples
    --------
    >>> import zlib
    >>> block_crcs(b"abcdef", 4).tolist() == [zlib.crc32(b"abcd"), zlib.crc32(b"ef")]
    True
    >>> block_crcs(b"", 4).tolist()
    []
    """
    mv = memoryview(data).cast("B")
    out = [crc32(mv[s : s + block_size]) for s in range(0, mv.nbytes, block_size)]
    return np.array(out, "<u4")


class DeferredCheck:
    """The data checks a lazily opened file still owes (:attr:`IndexState.pending_check`).

    Calling it checks everything not yet checked; :meth:`check_rows` checks what
    a search is about to read. This base class (formats 1 and 2, which have no
    block checksums) checks everything in both cases.
    """

    def __init__(self, check_all: Callable[[], None]) -> None:
        self._check_all = check_all

    def __call__(self) -> None:
        self._check_all()

    def check_rows(self, names, starts, ends) -> None:
        """Check rows ``starts[i]:ends[i]`` of the sections ``names`` (here: everything)."""
        self()

    def pending(self, names) -> bool:
        """Whether some data of the sections ``names`` may still be unchecked (here:
        always: the index drops this object once the whole check has run)."""
        return True


class BlockCheck(DeferredCheck):
    """The deferred checks of a format-3 file (:attr:`IndexState.pending_check`).

    Calling it checks everything not yet checked: every block of the data
    sections, then that the ids are unique. :meth:`check_rows` checks only the
    blocks holding some rows of some sections (what a search is about to
    read). Each block's state is 0 (not checked), 1 (being checked by one
    thread: the others wait) or 2 (passed); a failed block goes back to 0, so
    every search that reads it raises.
    """

    def __init__(
        self,
        source: str,
        sections: dict,
        crcs: np.ndarray,
        block_size: int,
        checks: dict,
        prefetch=None,
        fail=None,
    ):
        self.source = source
        self._fail = fail  # (source, section, why) -> FormatError of the file's format
        self.block_size = block_size
        self.crcs = crcs
        self._sections = sections  # name -> (flat uint8 array, bytes per row, file offset)
        self._checks = checks  # name -> content check of a block's bytes (or None)
        self._prefetch = prefetch  # (file offset, length) -> None: start reading it now
        self._first = {}  # name -> index of its first block in crcs
        self._count = {}
        g = 0
        for name, (raw, _, _) in sections.items():
            self._first[name] = g
            self._count[name] = nblocks(raw.size, block_size)
            g += self._count[name]
        if g != crcs.size:  # pragma: no cover - _parse sized the section
            raise self._fail(source, "section 'block_crcs'", f"{crcs.size} blocks, expected {g}")
        self._owner = np.repeat(np.arange(len(sections)), list(self._count.values()))
        self._names = list(sections)
        self._state = np.zeros(g, np.int8)
        self._left = dict(self._count)  # blocks not yet passed, by section
        self._cond = threading.Condition()
        self.unique_ids = None  # the whole-section check of ids, run by __call__

    # -- which blocks -------------------------------------------------------
    def _blocks(self, name: str, starts, ends) -> np.ndarray:
        """Indices (into ``crcs``) of the blocks holding rows ``starts[i]:ends[i]`` of ``name``."""
        width = self._sections[name][1]
        starts = np.asarray(starts, np.int64).reshape(-1)
        ends = np.asarray(ends, np.int64).reshape(-1)
        keep = ends > starts
        lo = starts[keep] * width // self.block_size
        hi = (ends[keep] * width - 1) // self.block_size + 1
        first = self._first[name]
        if lo.size == 0:
            return np.zeros(0, np.int64)
        if lo.size == 1:
            return np.arange(lo[0], hi[0], dtype=np.int64) + first
        mark = np.zeros(self._count[name] + 1, np.int32)
        np.add.at(mark, lo, 1)
        np.add.at(mark, hi, -1)
        return np.flatnonzero(np.cumsum(mark[:-1]) > 0).astype(np.int64) + first

    def check_rows(self, names, starts, ends) -> None:
        """Check (once) the blocks holding rows ``starts[i]:ends[i]`` of each section in
        ``names`` (sections the file lacks are skipped); raise ``FormatError`` if one fails."""
        todo = [
            self._blocks(n, starts, ends) for n in names if n in self._sections and self._left[n]
        ]
        if todo:
            self._check_blocks(np.concatenate(todo))

    def pending(self, names) -> bool:
        """Whether a block of the sections ``names`` has not passed yet. A block passes
        once and for all, so ``False`` is final: a search that reads only such sections
        skips working out which of their blocks it reads."""
        return any(self._left[n] for n in names if n in self._sections)

    def __call__(self) -> None:
        self._check_blocks(np.arange(self.crcs.size))
        if self.unique_ids is not None:
            self.unique_ids()

    # -- checking -----------------------------------------------------------
    def _check_blocks(self, blocks: np.ndarray) -> None:
        state = self._state
        blocks = blocks[state[blocks] != 2]  # a stale read only costs a look under the lock
        while blocks.size:
            with self._cond:
                now = state[blocks]
                mine = blocks[now == 0]
                state[mine] = 1
                others = blocks[now == 1]
            if mine.size:
                try:
                    self._run(mine)
                except BaseException:
                    with self._cond:
                        state[mine] = 0
                        self._cond.notify_all()
                    raise
                with self._cond:
                    state[mine] = 2
                    for s, n in zip(*np.unique(self._owner[mine], return_counts=True), strict=True):
                        self._left[self._names[s]] -= int(n)
                    self._cond.notify_all()
            if not others.size:
                return
            with self._cond:  # blocks another thread is checking: wait for the outcome
                while (state[others] == 1).any():
                    self._cond.wait()
                blocks = others[state[others] == 0]  # its check failed: fail here too

    def _run(self, blocks: np.ndarray) -> None:
        """Check ``blocks``; on a few threads when there are many (the CRC releases the GIL).
        The error raised is that of the first failing block."""
        if self._prefetch is not None:  # one request per run of blocks, not a fault per page
            for lo, hi in self._file_ranges(blocks):
                self._prefetch(lo, hi - lo)
        tasks = [blocks[s : s + _BLOCKS_PER_TASK] for s in range(0, blocks.size, _BLOCKS_PER_TASK)]
        workers = min(current_threads(), len(tasks))
        if workers <= 1:
            for t in tasks:
                self._check_task(t)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="vecpress-verify") as pool:
            for _ in pool.map(self._check_task, tasks):
                pass

    def _file_ranges(self, blocks: np.ndarray) -> list[tuple[int, int]]:
        """The file byte ranges of sorted ``blocks``, adjacent ones merged."""
        out: list[list[int]] = []
        for g in blocks.tolist():
            name = self._names[self._owner[g]]
            raw, _, offset = self._sections[name]
            lo = offset + (g - self._first[name]) * self.block_size
            hi = min(lo + self.block_size, offset + raw.size)
            if out and lo <= out[-1][1] + ALIGN:
                out[-1][1] = hi
            else:
                out.append([lo, hi])
        return [(lo, hi) for lo, hi in out]

    def _check_task(self, blocks: np.ndarray) -> None:
        for g in blocks.tolist():
            name = self._names[self._owner[g]]
            raw = self._sections[name][0]
            j = g - self._first[name]
            lo = j * self.block_size
            hi = min(lo + self.block_size, raw.size)
            if crc32(raw[lo:hi]) != int(self.crcs[g]):
                raise self._fail(
                    self.source,
                    f"section {name!r}",
                    f"checksum mismatch in block {j} of {self._count[name]} (bytes {lo}:{hi} "
                    f"of the section, blocks of {self.block_size} bytes)",
                )
            check = self._checks.get(name)
            if check is not None:
                check(lo, hi, j)
