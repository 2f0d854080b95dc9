"""Thread control: numba's threads for the compiled kernels, faiss's, and BLAS around them.

OpenBLAS worker threads spin for a while after each multi-threaded product;
when a numba kernel runs right after one (IVF probing, then the list scan), the
spinning threads take the cores the kernel's threads need (measured on 2 cores:
a 2-thread IVF search ran 1.2x faster than 1 thread instead of 1.7x).
:func:`single_threaded_blas` runs the small products of the search path on
one BLAS thread, through threadpoolctl.

Spinning threads cost far more on a machine that other work shares: OpenMP
workers wait for each other by spinning, so a 2-thread faiss training on 2 cores
with one other busy process ran 10x slower than on 1 thread (OPQ, measured).
:func:`idle_cores` measures how many cores are free now, and the advisor uses
that many threads unless told otherwise.

**Process-wide default, per-call override.** numba's thread count is a
property of the calling thread (a count set in one thread does not reach the
others), and so is OpenMP's. vecpress therefore keeps its own process-wide
count (:func:`set_num_threads`, :func:`get_num_threads`) and every public call
that runs kernels applies it to the calling thread for its duration
(:func:`using`), or the ``threads=`` that call was given (``Index.search(...,
threads=2)``, the usearch habit): a search on a thread the user started runs
on the count the process asked for, and two threads searching at once with
different counts do not disturb each other. BLAS products inside fits run on
the same count (:func:`using` limits them through threadpoolctl), so fitting
never spins more BLAS threads than the cores it was given.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time

import numba
import numpy as np

#: the process-wide thread count (None: every thread numba started with)
_DEFAULT: int | None = None
_LOCAL = threading.local()


def _checked_count(n: object, name: str = "threads") -> int:
    """``n`` as a thread count in [1, the threads numba started with], or raise."""
    top = numba.config.NUMBA_NUM_THREADS
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, found {type(n).__name__}")
    if not 1 <= int(n) <= top:
        raise ValueError(f"{name} must be in [1, {top}] (the threads numba started), found {n}")
    return int(n)


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in vecpress's kernels, faiss (k-means, PQ training) and the
    BLAS products of fitting, in every thread of the process (see the module docstring).

    Examples
    --------
    >>> before = get_num_threads()
    >>> set_num_threads(1); get_num_threads()
    1
    >>> set_num_threads(before)
    """
    global _DEFAULT
    _DEFAULT = _checked_count(n, "n")
    numba.set_num_threads(_DEFAULT)
    if "faiss" in sys.modules:  # faiss's OpenMP pool; loaded later, it is set on import
        sys.modules["faiss"].omp_set_num_threads(_DEFAULT)


def faiss_module():
    """faiss, imported with vecpress's thread count (its OpenMP pool otherwise takes
    every core, whatever :func:`set_num_threads` said)."""
    first = "faiss" not in sys.modules
    import faiss

    if first:
        faiss.omp_set_num_threads(current_threads())
    return faiss


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs from ``/proc/stat``, or None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    return fields[3] + fields[4], sum(fields[:8])


def idle_cores(seconds: float = 0.25) -> float:
    """How many of this process's cores other work leaves idle, measured now.

    On Linux, the idle share of all CPUs over ``seconds`` (``/proc/stat``) times
    the CPU count; elsewhere the cores minus the one-minute load average. At
    most :func:`available_cores`.

    Examples
    --------
    >>> 0 <= idle_cores(0.05) <= available_cores()
    True
    """
    cores = available_cores()
    before = _cpu_times()
    if before is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover
            return float(cores)
        return float(min(cores, max(0.0, cores - load)))
    time.sleep(seconds)
    after = _cpu_times()
    idle, total = after[0] - before[0], after[1] - before[1]
    if total <= 0:
        return float(cores)
    return float(min(cores, idle / total * (os.cpu_count() or cores)))


def threads_for_load(seconds: float = 0.25) -> int:
    """Threads to use now: the idle cores, rounded, at least 1.

    Examples
    --------
    >>> 1 <= threads_for_load(0.05) <= available_cores()
    True
    """
    return max(1, min(available_cores(), int(idle_cores(seconds) + 0.5)))


def get_num_threads() -> int:
    """The process-wide number of threads of vecpress's calls (:func:`set_num_threads`;
    by default every thread numba started with, one per core)."""
    return numba.config.NUMBA_NUM_THREADS if _DEFAULT is None else _DEFAULT


def current_threads() -> int:
    """The threads the running call uses: its ``threads=`` inside :func:`using`, else the
    process-wide count."""
    n = getattr(_LOCAL, "threads", None)
    return get_num_threads() if n is None else n


def using(threads: int | None = None, *, blas: bool = False) -> _Using:
    """Run the body on ``threads`` threads (default: the process-wide count).

    Applies the count to numba and faiss in the calling thread and restores them
    afterwards; with ``blas=True`` (fitting: large products) BLAS is limited to it
    too (threadpoolctl; ~20 µs, so searches, whose few products run on one BLAS
    thread anyway, skip it). Nested calls keep the outermost count unless they
    name one.

    Examples
    --------
    >>> with using(1):
    ...     current_threads()
    1
    """
    if threads is not None:
        threads = _checked_count(threads)
    return _Using(threads, blas)


class _Using:
    """The context manager of :func:`using` (a plain class: a search enters one per
    call, and a generator-based one costs several microseconds more)."""

    __slots__ = ("_blas", "_blas_ctx", "_faiss", "_n", "_outer", "_prev", "_prev_omp", "_threads")

    def __init__(self, threads: int | None, blas: bool) -> None:
        self._threads = threads
        self._blas = blas

    def __enter__(self) -> int:
        outer = getattr(_LOCAL, "threads", None)
        n = self._threads
        if n is None:
            n = get_num_threads() if outer is None else outer
        self._outer = outer
        if n == outer and not self._blas:  # already applied by an enclosing call
            self._prev = None
            return n
        prev = numba.get_num_threads()
        if prev != n:
            numba.set_num_threads(n)
        faiss = sys.modules.get("faiss")
        prev_omp = faiss.omp_get_max_threads() if faiss is not None else n
        if prev_omp != n:
            faiss.omp_set_num_threads(n)
        self._prev, self._prev_omp, self._faiss, self._n = prev, prev_omp, faiss, n
        _LOCAL.threads = n
        self._blas_ctx = _blas_limit(n) if self._blas else None
        if self._blas_ctx is not None:
            try:
                self._blas_ctx.__enter__()
            except BaseException:
                self._restore(n)
                raise
        return n

    def __exit__(self, *exc) -> None:
        if self._prev is None:
            return
        try:
            if self._blas_ctx is not None:
                self._blas_ctx.__exit__(*exc)
        finally:
            self._restore(self._n)

    def _restore(self, n: int) -> None:
        _LOCAL.threads = self._outer
        if self._prev != n:
            numba.set_num_threads(self._prev)
        if self._prev_omp != n:
            self._faiss.omp_set_num_threads(self._prev_omp)


def threaded(method):
    """Decorate a public method that runs kernels: it runs under :func:`using` (the
    process-wide count, or its caller's)."""

    @functools.wraps(method)
    def run(*args, **kwargs):
        with using():
            return method(*args, **kwargs)

    return run


_LIMITER = None
_LIMITER_MODULES = -1


def _controller():
    """threadpoolctl's view of the loaded thread pools, inspected again whenever modules
    were imported since (an import may load a BLAS of its own: faiss, torch)."""
    global _LIMITER, _LIMITER_MODULES, _BLAS_LIBS
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return None
    if _LIMITER is None or _LIMITER_MODULES != len(sys.modules):
        _LIMITER = ThreadpoolController()
        _LIMITER_MODULES = len(sys.modules)
        _BLAS_LIBS = [c for c in _LIMITER.lib_controllers if c.user_api == "blas"]
    return _LIMITER


_BLAS_LIBS: list = []


@contextlib.contextmanager
def _blas_limit(n: int):
    """A context in which BLAS products use at most ``n`` threads.

    Sets each BLAS library's count directly (threadpoolctl's controllers, found once
    per set of loaded modules) rather than through ``ThreadpoolController.limit``,
    which inspects every library again on each call (~20 µs, a tenth of a
    single-query search)."""
    if _controller() is None:  # pragma: no cover
        yield
        return
    libs = list(_BLAS_LIBS)
    prev = [lib.get_num_threads() for lib in libs]
    for lib, p in zip(libs, prev, strict=True):
        if p is None or p > n:
            lib.set_num_threads(n)
    try:
        yield
    finally:
        for lib, p in zip(libs, prev, strict=True):
            if p is not None and p > n:
                lib.set_num_threads(p)


def single_threaded_blas():
    """A context in which BLAS products use one thread (a no-op without threadpoolctl).

    Examples
    --------
    >>> import numpy as np
    >>> with single_threaded_blas():
    ...     float((np.ones((2, 3)) @ np.ones(3))[0])
    3.0
    """
    return _blas_limit(1)
