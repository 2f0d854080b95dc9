"""Compiled (numba) kernels: Hadamard transforms, bit packing and scoring scans.

Every kernel parallelises over rows with ``numba.prange``; the number of threads
is numba's (see :func:`vecpress.set_num_threads`).
"""
