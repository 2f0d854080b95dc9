"""Thread control for the compiled kernels (numba; BLAS products keep their own setting)."""

from __future__ import annotations

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
