"""A readers-writer lock: many searches at once, one mutation at a time.

:class:`~vecpress.Index` holds one. Searches, saves and other reads take it
shared; ``add``, ``remove`` and ``train`` take it exclusive, so a mutation
never runs while a search reads the rows it would move, and a search never
sees half a mutation. Writers are preferred: once a writer waits, new readers
wait behind it, so a stream of searches cannot starve an ``add``.

Neither side is re-entrant: a thread holding the lock must not take it again
(the index takes it only in its public entry points, never in helpers they
call).
"""

from __future__ import annotations

import contextlib
import threading


class ReadWriteLock:
    """Shared (read) / exclusive (write) lock, writer-preferring.

    Examples
    --------
    >>> import threading
    >>> lock, seen = ReadWriteLock(), []
    >>> def search():
    ...     with lock.read():  # readers share the lock
    ...         seen.append("read")
    >>> with lock.read():
    ...     t = threading.Thread(target=search)
    ...     t.start(); t.join()
    >>> with lock.write():
    ...     seen.append("write")
    >>> seen
    ['read', 'write']
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        self._shared = _Shared(self)

    def read(self) -> _Shared:
        """Hold the lock shared for the ``with`` block."""
        return self._shared

    def _acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            # only writers wait for the readers to leave (readers wait for writers)
            if not self._readers and self._waiting_writers:
                self._cond.notify_all()

    @contextlib.contextmanager
    def write(self):
        """Hold the lock exclusively for the ``with`` block."""
        with self._cond:
            self._waiting_writers += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class _Shared:
    """The context manager of :meth:`ReadWriteLock.read` (one per lock, stateless: a
    plain class, as a search takes it once a call and a generator-based one costs
    microseconds)."""

    __slots__ = ("_lock",)

    def __init__(self, lock: ReadWriteLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock._acquire_read()

    def __exit__(self, *exc) -> None:
        self._lock._release_read()
