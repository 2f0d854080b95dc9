"""Shared fixtures for the vecpress test suite.

Every random input is drawn from a fixed seed, so a failure always reproduces: numpy's
generators are seeded in each test, and hypothesis runs under the ``vecpress`` profile
below, derandomized (its examples derive from each test's source, the same on every
run and machine) and without a deadline (a busy runner's timing is no failure).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from threadpoolctl import threadpool_limits

import vecpress
from _util import gaussian, unit_rows

settings.register_profile("vecpress", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("vecpress")


def pytest_collection_modifyitems(config, items):
    """Run the tests marked ``compiles_first`` first (in their order), the rest as collected.

    Compiling a kernel family the first time takes minutes on a 2-core runner (numba,
    cold cache), and two test processes that reach it at once each compile it. Run
    first, in the process that takes the first tests, it compiles once, into numba's
    cache, while the other process runs other tests; every later use loads it.
    """
    items.sort(key=lambda item: item.get_closest_marker("compiles_first") is None)


@pytest.fixture(autouse=True, scope="session")
def _single_thread_kernels():
    """Run the compiled kernels and numpy's BLAS on one thread, except where a test asks
    for more.

    The statistical tests call the kernels thousands of times on tiny inputs; on a
    busy 2-core runner every parallel launch can cost milliseconds while the
    worker threads wait for a core. Results do not depend on the thread count
    (``test_kernels.py::test_results_do_not_depend_on_thread_count`` checks 1 vs 2).
    numpy's BLAS (OpenBLAS) takes every core in each test process otherwise, and its
    threads spin waiting for work: two test processes on two cores each running a
    product on two threads lost ~30 % of the time of the ``klvq`` and ``pq`` tests
    (92 s against 70 s with one BLAS thread a process, measured on such a runner).
    """
    before = vecpress.get_num_threads()
    vecpress.set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):
        yield
    vecpress.set_num_threads(before)


@pytest.fixture(scope="session")
def data_64() -> np.ndarray:
    """500 x 64, not normalised, with a mean offset."""
    return gaussian(np.random.default_rng(64), 500, 64, offset=0.5)


@pytest.fixture(scope="session")
def data_50_unit() -> np.ndarray:
    """300 x 50, every row of unit norm."""
    return unit_rows(gaussian(np.random.default_rng(50), 300, 50))
