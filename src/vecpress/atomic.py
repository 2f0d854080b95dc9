"""Atomic file replacement: the path holds the old content or the new, never half.

:func:`replacing` is the protocol (exclusive temp file beside the path, fsync,
``os.replace``; the temp file removed on any failure); :func:`write_bytes` uses it
for small files (the HTML report, the ground-truth cache), and
:func:`vecpress.storage.save` for index files, adding its lock, its temp-file
naming and the directory fsync.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import secrets
from pathlib import Path


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
