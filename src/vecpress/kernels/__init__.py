"""Compiled (numba) kernels: Hadamard transforms, bit packing and scoring scans.

Every kernel parallelises over rows with ``numba.prange``; the number of threads
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
