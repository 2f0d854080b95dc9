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
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import numba


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in vecpress's kernels and in faiss (k-means, PQ training).

    Examples
    --------
    >>> set_num_threads(1); get_num_threads()
    1
    """
    numba.set_num_threads(int(n))
    if "faiss" in sys.modules:  # faiss's OpenMP pool; loaded later, it is set on import
        sys.modules["faiss"].omp_set_num_threads(int(n))


def faiss_module():
    """faiss, imported with vecpress's thread count (its OpenMP pool otherwise takes
    every core, whatever :func:`set_num_threads` said)."""
    first = "faiss" not in sys.modules
    import faiss

    if first:
        faiss.omp_set_num_threads(get_num_threads())
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
    """The number of threads vecpress's kernels use."""
    return numba.get_num_threads()


_LIMITER = None


def single_threaded_blas():
    """A context in which BLAS products use one thread (a no-op without threadpoolctl).

    Examples
    --------
    >>> import numpy as np
    >>> with single_threaded_blas():
    ...     float((np.ones((2, 3)) @ np.ones(3))[0])
    3.0
    """
    global _LIMITER
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    if _LIMITER is None:
        _LIMITER = ThreadpoolController()  # inspects the loaded libraries once
    return _LIMITER.limit(limits=1, user_api="blas")
