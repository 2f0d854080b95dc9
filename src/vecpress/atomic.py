"""Atomic file replacement: the path holds the old content or the new, never half.

:func:`replacing` is the protocol (exclusive temp file beside the path, fsync,
``os.replace``; the temp file removed on any failure); :func:`write_bytes` uses it
for small files (the HTML report, the ground-truth cache), and
:func:`vecpress.files.storage.save` for index files, adding what a file that several
processes may write needs: one writer at a time (:func:`writer_lock`, ``flock``
on ``<path>.lock``; readers never lock), temp files named ``.<name>.<pid>.<random>``
+ :data:`TMP_SUFFIX` that the next writer removes (:func:`remove_temps`), the
directory fsync (:func:`fsync_dir`) and errors that name the path (:func:`naming`).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import secrets
from pathlib import Path

from .errors import LockedError

try:  # pragma: no cover - fcntl exists on every POSIX system
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

#: the suffix of the temp files of :func:`vecpress.files.storage.save`
TMP_SUFFIX = ".vptmp"


@contextlib.contextmanager
def replacing(tmp: str | os.PathLike, path: str | os.PathLike):
    """Yield ``tmp`` opened for exclusive binary writing; on success flush, fsync it
    and rename it over ``path``; on any failure remove it and re-raise.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with replacing(Path(tmp) / "t", Path(tmp) / "a.txt") as f:
    ...         _ = f.write(b"hi")
    ...     sorted(p.name for p in Path(tmp).iterdir())
    ['a.txt']
    """
    try:
        with builtins.open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it and rename it over ``path``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_bytes(Path(tmp) / "a.txt", b"hello")
    ...     (Path(tmp) / "a.txt").read_bytes(), len(list(Path(tmp).iterdir()))
    (b'hello', 1)
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    with replacing(tmp, path) as f:
        f.write(data)


def check_folder(path: str) -> None:
    """Raise ``FileNotFoundError`` naming the folder of ``path`` if it does not exist."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            errno.ENOENT, f"cannot save {path}: the folder {folder} does not exist", folder
        )


@contextlib.contextmanager
def writer_lock(path: str, *, wait: bool = False):
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
            check_folder(path)  # removed since save checked it: say so
            raise
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


def temp_files(path: str) -> list[str]:
    folder, base = os.path.split(path)
    prefix = f".{base}."
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return []
    return [
        os.path.join(folder, n) for n in names if n.startswith(prefix) and n.endswith(TMP_SUFFIX)
    ]


def remove_temps(path: str) -> None:
    """Remove the temp files of killed saves of ``path``; call only under its lock."""
    for t in temp_files(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(t)


def fsync_dir(folder: str) -> None:
    fd = os.open(folder or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def naming(path: str):
    """Re-raise an ``OSError`` that does not name ``path`` (write, flush, fsync and close
    errors name no file) as one that does, with the same errno."""
    try:
        yield
    except OSError as e:
        if path in str(e):
            raise
        raise type(e)(e.errno, f"saving {path} failed: {e.strerror or e}") from e
