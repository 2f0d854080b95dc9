"""Index files under faults: I/O errors during save, readers during save, fuzz regressions.

The remaining checks of docs/RELIABILITY.md for index files (truncation, bit
flips, hostile headers and ``kill -9`` are in ``test_storage.py``):

* **Disk full / I/O error at each write call of save.** A dry run records every
  write-side call :func:`vecpress.files.storage.save` makes on the index's directory
  (``os.open``, ``open`` for writing, the file object's ``write``/``flush``/
  ``close``, ``os.write``, ``os.fsync``/``fdatasync``, ``os.replace``/``rename``);
  then, for every call index i, the i-th call raises ``OSError(ENOSPC)`` (once
  more with ``EIO``) and the test checks that the error propagates with its
  errno, that the file at the path is byte-identical to before (or, when the
  failure came after the rename had published the new file, that it is the
  complete new file), that *no* temp or lock file is left in the directory
  (save removes its temp file itself; nothing is left for the next save to
  clean), that no file descriptor leaked, that the in-memory index is
  unchanged, and that the next save succeeds. A second test lets the disk fill
  after k bytes (short writes, then ``ENOSPC``) for many k. The injection
  wraps the functions by name, so it keeps working when the format gains
  sections; the dry run asserts that it saw the writes, so a save rewritten
  around other calls fails loudly instead of passing vacuously.
* **Readers during save.** A writer subprocess saves two known states A and B
  in turn at one path while this process opens it (``mmap=True`` and
  ``False``), verifies and searches in a loop: every open must succeed and
  every result must equal A's or B's, and no save may fail (readers never
  take the writer's lock). Some memory-mapped indexes are kept and only
  verified and searched after the writer has renamed a new file over the path
  (the old inode must keep working).
* **Fuzz regressions.** Every file in ``tests/data/fuzz_regressions/`` (inputs
  found by ``fuzz/fuzz_open.py``) must raise ``FormatError``.
* **A file shrunk under a memory-mapped index** (truncated in place by another
  program): every use of its rows raises ``FormatError`` instead of a bus error
  that kills the process; private copies, and mapped indexes whose rows an add
  copied into memory, keep working; a collection's segments likewise.

Sizes: ``VECPRESS_FAULT_TRIALS`` (default 3000, as in ``test_storage.py``)
scales the disk-full offsets (N/30, at least 100) and the readers' time
(4 s x N/3000); the per-call sweep is exhaustive at any size.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import errno
import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import vecpress
from vecpress import FormatError, Index, LockedError

DATA = Path(__file__).parent / "data"
REGRESSIONS = DATA / "fuzz_regressions"
FAULT_TRIALS = int(os.environ.get("VECPRESS_FAULT_TRIALS", "3000"))
QUOTA_TRIALS = max(100, FAULT_TRIALS // 30)
READ_SECONDS = 4.0 * FAULT_TRIALS / 3000

_REAL_OPEN = builtins.open
_REAL_OS = {
    name: getattr(os, name)
    for name in ("open", "close", "write", "fsync", "fdatasync", "replace", "rename")
    if hasattr(os, name)
}


def small_index(
    metric: str = "l2", n: int = 60, d: int = 32, spec: str = "hd2,rq4", **options
) -> Index:
    """``options``: ``rerank_spec=``, ``ivf=`` ... (the sections a flat index lacks)."""
    x = np.random.default_rng(n * d).standard_normal((n, d)).astype(np.float32)
    index = Index(spec, metric=metric, seed=1, **options)
    index.add(x, ids=np.arange(n) * 2 + 5)
    return index


def query(index: Index, q: np.ndarray):
    """The search every check repeats (re-ranked where the index has a second tier)."""
    return index.search(q, 5, rerank=10 if index.rerank_spec is not None else None)


def same(a, b) -> bool:
    return np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()


# -- fault injection ---------------------------------------------------------------
class Faults:
    """Counts the write-side calls made on files in ``folder``; fails one, or fills the disk.

    ``fail_at=i`` makes the i-th call (1-based) raise ``OSError(err)``;
    ``quota=k`` lets k bytes reach the disk and then makes writes short and
    then fail with ``ENOSPC``, as a full file system does. Calls on other
    files pass through uncounted.
    """

    def __init__(self, folder, target, *, fail_at=None, err=errno.ENOSPC, quota=None):
        self.folder = os.path.abspath(folder)
        self.target = os.path.abspath(target)
        self.fail_at, self.err, self.quota = fail_at, err, quota
        self.calls: list[str] = []
        self.fds: set[int] = set()
        self.written = 0
        self.published = False  # a rename onto the target succeeded
        self.injected = None

    def mine(self, path) -> bool:
        if isinstance(path, int):
            return False
        p = os.path.abspath(os.fspath(path))
        return p == self.folder or os.path.dirname(p) == self.folder

    def point(self, name: str, *filenames) -> None:
        """One injectable call; the error names the files as the real call's would."""
        self.calls.append(name)
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            self.injected = name
            names = [os.fspath(f) for f in filenames]
            if len(names) == 2:
                raise OSError(self.err, os.strerror(self.err), names[0], None, names[1])
            raise OSError(self.err, os.strerror(self.err), *names)

    def take(self, nbytes: int) -> int:
        """How many of ``nbytes`` fit under the quota (raises ENOSPC when none do)."""
        if self.quota is None:
            return nbytes
        room = self.quota - self.written
        if room <= 0 and nbytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return min(nbytes, room)

    # the replacements
    def os_open(self, path, flags, mode=0o777, *, dir_fd=None):
        if not self.mine(path):
            return _REAL_OS["open"](path, flags, mode, dir_fd=dir_fd)
        self.point(f"os.open({os.path.basename(path) or path})", path)
        fd = _REAL_OS["open"](path, flags, mode, dir_fd=dir_fd)
        self.fds.add(fd)
        return fd

    def os_close(self, fd):
        self.fds.discard(fd)
        return _REAL_OS["close"](fd)

    def os_write(self, fd, data):
        if fd not in self.fds:
            return _REAL_OS["write"](fd, data)
        self.point("os.write")
        n = self.take(len(memoryview(data).cast("B")))
        written = _REAL_OS["write"](fd, memoryview(data).cast("B")[:n])
        self.written += written
        return written

    def sync(self, name):
        def call(fd):
            if fd in self.fds:
                self.point(f"os.{name}")
            return _REAL_OS[name](fd)

        return call

    def move(self, name):
        def call(src, dst, **kw):
            if not (self.mine(src) or self.mine(dst)):
                return _REAL_OS[name](src, dst, **kw)
            self.point(f"os.{name}", src, dst)
            _REAL_OS[name](src, dst, **kw)
            if os.path.abspath(os.fspath(dst)) == self.target:
                self.published = True

        return call

    def builtin_open(self, file, mode="r", *args, **kwargs):
        writing = isinstance(mode, str) and any(c in mode for c in "wxa+")
        if not (writing and isinstance(file, str | os.PathLike) and self.mine(file)):
            return _REAL_OPEN(file, mode, *args, **kwargs)
        self.point("open", file)
        if self.quota is not None and "b" in mode and not args and not kwargs:
            raw = _QuotaFileIO(file, mode.replace("b", ""))
            raw.faults = self
            f = io.BufferedWriter(raw)
        else:
            f = _REAL_OPEN(file, mode, *args, **kwargs)
        return _FaultyFile(f, self)


class _QuotaFileIO(io.FileIO):
    faults: Faults

    def write(self, b):
        data = memoryview(b).cast("B")
        n = self.faults.take(len(data))
        written = super().write(data[:n])
        self.faults.written += written
        return written


class _FaultyFile:
    """A file object whose write, flush and close are injection points."""

    def __init__(self, f, faults: Faults) -> None:
        self._f = f
        self._faults = faults
        faults.fds.add(f.fileno())

    def write(self, b):
        self._faults.point("file.write")
        return self._f.write(b)

    def flush(self):
        self._faults.point("file.flush")
        return self._f.flush()

    def close(self):
        if self._f.closed:
            return
        self._faults.fds.discard(self._f.fileno())
        try:
            self._faults.point("file.close")
        finally:  # a failing close still releases the descriptor
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __getattr__(self, name):
        return getattr(self._f, name)


@contextlib.contextmanager
def injected(faults: Faults):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builtins, "open", faults.builtin_open)
        mp.setattr(os, "open", faults.os_open)
        mp.setattr(os, "close", faults.os_close)
        mp.setattr(os, "write", faults.os_write)
        for name in ("fsync", "fdatasync"):
            if name in _REAL_OS:
                mp.setattr(os, name, faults.sync(name))
        for name in ("replace", "rename"):
            mp.setattr(os, name, faults.move(name))
        yield faults


def _check_after_failure(folder: Path, path: Path, faults, before, index, expect, q) -> None:
    """The state after a failed save: old file (or new, if published), nothing stray."""
    where = f"failure at call {faults.fail_at} ({faults.injected})"
    if faults.published:  # failed after the rename (fsync of the directory): new, complete
        loaded = vecpress.open(path, mmap=False)
        assert same(query(loaded, q), expect), where
    elif before is None:
        assert not path.exists(), where
    else:
        assert path.read_bytes() == before, where
    left = sorted(os.listdir(folder))
    assert left == ([path.name] if path.exists() else []), f"{where}: left {left}"
    assert same(query(index, q), expect), f"{where}: the in-memory index changed"


SWEEP_CASES = [
    ("over an old file", errno.ENOSPC),
    ("over an old file", errno.EIO),
    ("no old file", errno.ENOSPC),
    ("mmap index over its own file", errno.ENOSPC),
    ("IVF + re-ranking index over an old one", errno.ENOSPC),
]


@pytest.mark.parametrize(("case", "err"), SWEEP_CASES, ids=lambda v: str(v).replace(" ", "-"))
def test_io_error_at_each_write_call_of_save(tmp_path, case, err):
    """Each write-side call of save fails once: old file intact, no temp or lock file left.

    Save deletes its own temp file when it fails (asserted: the directory
    holds exactly the index file, or nothing), so no later save has anything
    to clean. A failure after the rename (the directory fsync)
    leaves the complete new file, since it is already published.
    """
    folder = tmp_path / "d"
    folder.mkdir()
    path = folder / "i.vpi"
    options = {"ivf": 3, "rerank_spec": "int8"} if case.startswith("IVF") else {}
    old = small_index("l2", n=50, **options)
    new = small_index("l2", n=80, **options)
    extra = np.random.default_rng(4).standard_normal((7, 32)).astype(np.float32)
    q = np.random.default_rng(5).standard_normal((3, 32)).astype(np.float32)

    def prepare():
        """(index to save, its expected search result, bytes at path before or None)."""
        if case == "no old file":
            path.unlink(missing_ok=True)
            return new, query(new, q), None
        old.save(path)
        before = path.read_bytes()
        if case == "over an old file":
            return new, query(new, q), before
        index = vecpress.open(path, mmap=True)
        index.add(extra)
        index.remove([5, 7])
        return index, query(index, q), before

    index, _, _ = prepare()
    with injected(Faults(folder, path)) as dry:
        index.save(path)
    calls = dry.calls
    assert sum("write" in c for c in calls) >= 3 and "os.replace" in calls, calls
    assert sum("fsync" in c for c in calls) >= 2, calls  # the file and the directory
    named = 0
    for i in range(1, len(calls) + 1):
        index, expect, before = prepare()
        fds = open_fds()
        faults = Faults(folder, path, fail_at=i, err=err)
        with pytest.raises(OSError) as raised, injected(faults):
            index.save(path)
        assert faults.injected == calls[i - 1], (i, faults.calls, calls)
        assert not isinstance(raised.value, LockedError)
        assert raised.value.errno == err, repr(raised.value)
        named += str(path) in str(raised.value)
        assert open_fds() == fds, f"call {i} ({calls[i - 1]}): a file descriptor leaked"
        _check_after_failure(folder, path, faults, before, index, expect, q)
        index.save(path)  # the lock is free and the next save works
        assert same(query(vecpress.open(path, mmap=False), q), expect)
        assert sorted(os.listdir(folder)) == [path.name]
    print(
        f"{case}, {errno.errorcode[err]}: {len(calls)} calls injected {calls}; "
        f"{named} errors named the file"
    )


def test_io_error_messages_name_the_file(tmp_path):
    """Every failed save names the index file (the real os.open / open / os.replace errors
    already name a file; write, flush, fsync and close errors name none)."""
    path = tmp_path / "i.vpi"
    index = small_index()
    with injected(Faults(tmp_path, path)) as dry:
        index.save(path)
    unnamed = []
    for i in range(1, len(dry.calls) + 1):
        with pytest.raises(OSError) as raised, injected(Faults(tmp_path, path, fail_at=i)):
            index.save(path)
        if str(path) not in str(raised.value):
            unnamed.append(f"{dry.calls[i - 1]}: {raised.value}")
    assert not unnamed, unnamed


def test_disk_full_after_k_bytes(tmp_path):
    """The disk fills after k bytes (short write, then ENOSPC), for many k up to the file size."""
    folder = tmp_path / "d"
    folder.mkdir()
    path = folder / "i.vpi"
    old = small_index("l2", n=2000, d=64)
    new = small_index("l2", n=3000, d=64)
    q = np.random.default_rng(5).standard_normal((3, 64)).astype(np.float32)
    expect = query(new, q)
    new.save(tmp_path / "size.vpi")
    size = (tmp_path / "size.vpi").stat().st_size
    old.save(path)
    before = path.read_bytes()
    quotas = {0, 1, 31, 32, 33, 64, size - 17, size - 16, size - 1}
    quotas |= {b + e for b in range(4096, size, 4096) for e in (-1, 0, 1)}
    rng = random.Random(7)
    while len(quotas) < QUOTA_TRIALS:
        quotas.add(rng.randrange(size))
    fds = open_fds()
    for k in sorted(quotas):
        faults = Faults(folder, path, quota=k)
        with pytest.raises(OSError) as raised, injected(faults):
            new.save(path)
        assert raised.value.errno == errno.ENOSPC and faults.written == k, (k, raised.value)
        assert not faults.published
        faults.fail_at, faults.injected = -1, f"{k} bytes"
        _check_after_failure(folder, path, faults, before, new, expect, q)
    assert open_fds() == fds
    with injected(Faults(folder, path, quota=size)) as exact:  # exactly enough room
        new.save(path)
    assert exact.written == size
    assert same(query(vecpress.open(path, mmap=True), q), expect)
    print(f"disk full after k bytes: {len(quotas)} values of k in [0, {size}), file of {size}")


# -- readers during save -----------------------------------------------------------
def test_readers_see_one_committed_version_while_a_writer_saves(tmp_path):
    """mmap and in-memory readers vs a writer renaming A and B over the path in turn.

    A is a flat index, B an IVF index with a re-ranking tier (more sections).
    """
    states = [
        small_index("l2", n=2000, d=64),
        small_index("l2", n=3000, d=64, ivf=8, rerank_spec="int8"),
    ]
    q = np.random.default_rng(6).standard_normal((4, 64)).astype(np.float32)
    expect = {len(s): query(s, q) for s in states}
    sources = []
    for i, s in enumerate(states):
        sources.append(str(tmp_path / f"state{i}.vpi"))
        s.save(sources[-1])
    path = tmp_path / "shared" / "i.vpi"
    path.parent.mkdir()
    states[0].save(path)
    stop = tmp_path / "stop"
    stats_path = tmp_path / "writer.json"
    ready = tmp_path / "writer.ready"
    proc = subprocess.Popen(
        [sys.executable, __file__, "writer", *sources, str(path), str(stop), str(stats_path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    failures, seen = [], collections.Counter()
    held: collections.deque = collections.deque()
    opens = held_checks = after_replace = 0

    def check(index, label):
        n = len(index.verify())
        assert n in expect, f"{label}: {n} vectors"
        seen[n] += 1
        assert same(query(index, q), expect[n]), f"{label}: results of neither A nor B"

    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, f"writer died: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "writer did not start"
            time.sleep(0.01)
        end = time.monotonic() + READ_SECONDS
        it = 0
        while time.monotonic() < end and len(failures) < 10:
            mm = it % 2 == 0
            try:
                ino = os.stat(path).st_ino
                index = vecpress.open(path, mmap=mm)
                opens += 1
                known = os.stat(path).st_ino == ino  # then the opened file is inode ino
                if mm and it % 6 == 0:  # keep it unverified; use it after a few renames
                    held.append((index, ino if known else None))
                else:
                    check(index, f"open {it} mmap={mm}")
                if len(held) > 4:
                    old, old_ino = held.popleft()
                    check(old, f"held mmap index from before open {it}")
                    held_checks += 1
                    after_replace += old_ino is not None and os.stat(path).st_ino != old_ino
            except Exception as e:  # every failure is recorded, then reported together
                failures.append(f"open {it} mmap={mm}: {type(e).__name__}: {e}"[:400])
            it += 1
    finally:
        stop.touch()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stats = json.loads(stats_path.read_text())
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    assert not failures, failures
    assert not stats["errors"], stats["errors"]
    assert stats["locked"] == 0, stats  # no reader ever made the writer's save fail
    assert stats["saves"] >= 10 and len(seen) == 2, (stats, seen)
    assert held_checks >= 5 and after_replace >= 1, (held_checks, after_replace)
    print(
        f"readers: {opens} opens ({dict(seen)} by state), {held_checks} held mmap indexes "
        f"checked later ({after_replace} after their file was replaced); writer: "
        f"{stats['saves']} saves, {stats['locked']} refused with LockedError"
    )


def _writer(a: str, b: str, path: str, stop: str, stats_path: str) -> None:
    """Save states A and B at ``path`` in turn until ``stop`` exists; write counts."""
    vecpress.set_num_threads(1)
    states = [vecpress.open(a, mmap=False), vecpress.open(b, mmap=False)]
    saves = locked = 0
    errors: list[str] = []
    ready = Path(stats_path).with_suffix(".ready")
    while not os.path.exists(stop) and len(errors) < 10:
        try:
            states[saves % 2].save(path)
            saves += 1
        except LockedError:  # a failure: readers never take the writer's lock
            locked += 1
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
        if saves == 1 and not ready.exists():
            ready.touch()
    Path(stats_path).write_text(json.dumps({"saves": saves, "locked": locked, "errors": errors}))


# -- fuzz regressions ---------------------------------------------------------------
def _regression_files() -> list:
    files = sorted(p for p in REGRESSIONS.glob("*") if p.is_file() and p.name != "README.md")
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no fuzz regressions yet"))]
    return [pytest.param(p, id=p.name) for p in files]


@pytest.mark.parametrize("blob", _regression_files())
def test_fuzz_regressions_are_format_errors(tmp_path, blob):
    path = tmp_path / "f.vpi"
    path.write_bytes(blob.read_bytes())
    with pytest.raises(FormatError, match=r"f\.vpi"):
        vecpress.open(path, mmap=False)
    with pytest.raises(FormatError, match=r"f\.vpi"):
        index = vecpress.open(path, mmap=True)
        index.verify()


# -- a file shrunk under a memory-mapped index ----------------------------------------
SHRUNK = r"i\.vpi.*shrank from"


@pytest.mark.parametrize("verified", [False, True], ids=["lazy", "verified"])
def test_a_file_shrunk_under_a_mapped_index_is_a_format_error(tmp_path, verified):
    """A file truncated in place after it was opened (another program writing over it)
    would have a mapped index read past its end: a bus error that kills the process.
    Every use of the rows raises ``FormatError`` instead, before reading them; a
    private copy (``mmap=False``) and a mapped index whose rows an add copied into
    memory keep working. ``verified``: every block checked before the truncation (no
    deferred check left to run, only the size check)."""
    index = small_index("l2", n=3000, d=64, ivf=8, rerank_spec="int8")
    q = np.random.default_rng(7).standard_normal((3, 64)).astype(np.float32)
    path = tmp_path / "i.vpi"
    index.save(path)
    expect = query(index, q)
    mapped, private, copied = (vecpress.open(path, mmap=m) for m in (True, False, True))
    assert same(query(mapped, q), expect)
    if verified:
        mapped.verify()
    more = np.random.default_rng(8).standard_normal((10, 64)).astype(np.float32)
    copied.add(more, ids=np.arange(10) + 10**6)  # its rows are now in memory
    shared = Index.from_state(mapped.to_state())  # the same mapped rows
    os.truncate(path, path.stat().st_size // 2)
    for use in (
        lambda: query(mapped, q),
        lambda: query(shared, q),
        lambda: mapped.search(q, 5),
        lambda: mapped.search(q, 5, rerank="auto"),
        lambda: mapped.search(q, 5, allow=[5, 7, 9]),
        mapped.verify,
        lambda: mapped.ids,
        lambda: mapped.contains([5]),
        lambda: mapped.reconstruct([5]),
        lambda: mapped.add(more),
        lambda: mapped.remove([5]),
        lambda: mapped.save(tmp_path / "other.vpi"),
    ):
        with pytest.raises(FormatError, match=SHRUNK):
            use()
    assert mapped.ntotal == 3000 and not (tmp_path / "other.vpi").exists()
    assert same(query(private, q), expect)
    got = query(copied, q)
    assert got.ids.shape == (3, 5) and np.isfinite(got.scores).all()
    # the same bytes again: the mapped index reads them as before
    index.save(tmp_path / "again.vpi")
    os.truncate(path, 0)
    with open(path, "r+b") as f:
        f.write((tmp_path / "again.vpi").read_bytes())
    assert same(query(mapped, q), expect)


def test_a_file_shrunk_under_a_collection_is_a_format_error(tmp_path):
    """The same through a collection, whose segments are mapped index files."""
    x = np.random.default_rng(9).standard_normal((500, 32)).astype(np.float32)
    col = vecpress.Collection.create(tmp_path / "c", spec="hd2,rq4", dim=32, metric="ip")
    col.add(x, ids=[f"d{i}" for i in range(500)])
    col.flush()
    col.close()
    col = vecpress.Collection.open(tmp_path / "c")
    col.search(x[:2], 3)  # the segments mapped
    segments = sorted((tmp_path / "c").rglob("*.vpi"))
    assert segments, "the collection holds no segment file"
    for seg in segments:
        os.truncate(seg, seg.stat().st_size // 2)
    with pytest.raises(FormatError, match=r"\.vpi.*shrank from"):
        col.search(x[:2], 3)
    col.close()


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        _writer(*sys.argv[2:7])
