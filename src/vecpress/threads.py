"""Thread control: numba's threads for the compiled kernels, and BLAS around them.

OpenBLAS worker threads spin for a while after each multi-threaded product;
when a numba kernel runs right after one (IVF probing, then the list scan), the
spinning threads take the cores the kernel's threads need (measured on 2 cores:
a 2-thread IVF search ran 1.2x faster than 1 thread instead of 1.7x).
:func:`single_threaded_blas` runs the small products of the search path on
one BLAS thread, through threadpoolctl.
"""

from __future__ import annotations

import contextlib

import numba


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in vecpress's kernels (1 = single-threaded).

    Examples
    --------
    >>> set_num_threads(1); get_num_threads()
    1
    """
    numba.set_num_threads(int(n))


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
