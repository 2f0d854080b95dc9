"""Write a small file atomically: the path holds the old content or the new, never half.

Used for the HTML report and the ground-truth cache (index files have their own,
locked protocol in :mod:`vecpress.storage`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode as umask allows
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
