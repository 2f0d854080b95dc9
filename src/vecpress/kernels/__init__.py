"""Compiled (numba) kernels: Hadamard transforms, bit packing and scoring scans.

The kernels parallelise over rows with ``numba.prange`` (or, where a parallel loop
would take long to compile, over Python threads); the number of threads
is numba's (see :func:`vecpress.set_num_threads`).

Importing this package runs one tiny cached kernel (:func:`_ready`): the first
compiled function a process calls pays numba's one-time set-up of its compiler
target (loading its numpy implementations, ~0.4 s on a 2-core machine), even
when every kernel comes from numba's on-disk cache. Paying it at import keeps it
out of the first search of a freshly opened index.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def _ready(x):
    return x[0] + 1


_ready(np.zeros(1, np.int64))


def read_only(rows: np.ndarray) -> np.ndarray:
    """``rows`` as a read-only array (a view where it is writable), as the scans'
    entries (:func:`~vecpress.kernels.grid_search.grid_scan_topk`, the progressive
    scan) pass the arrays an index may read from its file (codes, norms).

    numba compiles a function once per argument type, and a read-only array is a
    type of its own: rows in memory and rows memory-mapped from a file (read-only)
    would each compile the scan's whole chain, over a minute on a 2-core machine at
    first use. The scan only reads them, so one read-only specialisation serves both.

    Examples
    --------
    >>> codes = np.zeros((2, 4), np.uint8)
    >>> view = read_only(codes)
    >>> view.flags.writeable, codes.flags.writeable, np.shares_memory(view, codes)
    (False, True, True)
    """
    if rows.flags.writeable:
        rows = rows.view()
        rows.flags.writeable = False
    return rows
