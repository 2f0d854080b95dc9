"""Thread counts: process-wide by default, per call on request (vecpress.threads)."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest

import vecpress
from vecpress import threads


def _in_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


@pytest.fixture
def two_threads_or_skip():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs numba started with 2 threads")


def test_set_num_threads_reaches_threads_the_user_starts(two_threads_or_skip, monkeypatch):
    """numba's count is per thread: a count set in the main thread must still apply to
    a search that runs on another thread (it did not: the other thread used every core)."""
    seen = []

    def probe(*args, **kwargs):
        seen.append(numba.get_num_threads())
        return original(*args, **kwargs)

    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    index = vecpress.Index("hd2,rq4", metric="ip")
    index.add(x)
    original = vecpress.search.scan.scan
    monkeypatch.setattr(vecpress.search.scan, "scan", probe)
    before = vecpress.get_num_threads()
    try:
        vecpress.set_num_threads(1)
        _in_thread(lambda: index.search(x[:2], 3))
        _in_thread(lambda: index.search(x[:2], 3, threads=2))
        vecpress.set_num_threads(2)
        _in_thread(lambda: index.search(x[:2], 3))
        _in_thread(lambda: index.search(x[:2], 3, threads=1))
    finally:
        vecpress.set_num_threads(before)
    assert seen == [1, 2, 2, 1]


def test_a_call_restores_the_threads_count_of_its_thread(two_threads_or_skip):
    def run():
        numba.set_num_threads(2)
        with threads.using(1):
            inner = (numba.get_num_threads(), threads.current_threads())
        return inner, numba.get_num_threads()

    assert _in_thread(run) == ((1, 1), 2)


def test_a_call_restores_the_counts_when_its_body_raises(two_threads_or_skip):
    from threadpoolctl import threadpool_info

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    def run():
        numba.set_num_threads(2)
        before = blas()
        inside = []
        with pytest.raises(KeyError, match="body"):
            with threads.using(1, blas=True):
                with threads.using():  # nested without a count: the outer one holds
                    inside.append((numba.get_num_threads(), threads.current_threads()))
                raise KeyError("body")
        return inside, numba.get_num_threads(), blas() == before, threads.current_threads()

    inside, after, blas_back, current = _in_thread(run)
    assert inside == [(1, 1)]
    assert after == 2 and blas_back and current == threads.get_num_threads()


def test_per_call_threads_give_the_same_results(two_threads_or_skip):
    x = np.random.default_rng(1).standard_normal((2000, 32)).astype(np.float32)
    index = vecpress.Index("hd2,rq4", metric="ip", ivf=8)
    index.add(x, threads=2)
    one = index.search(x[:50], 10, nprobe=8, threads=1)
    two = index.search(x[:50], 10, nprobe=8, threads=2)
    np.testing.assert_array_equal(one.ids, two.ids)
    np.testing.assert_array_equal(one.scores, two.scores)


@pytest.mark.parametrize("bad", [0, -1, 1 << 20, 1.5, "2", True])
def test_bad_thread_counts_are_refused(bad):
    index = vecpress.Index("f32", metric="ip")
    index.add(np.ones((2, 4), np.float32))
    err = TypeError if isinstance(bad, (float, str, bool)) else ValueError
    with pytest.raises(err, match="threads"):
        index.search(np.ones((1, 4), np.float32), 1, threads=bad)
    with pytest.raises(err, match="threads"):
        index.add(np.ones((1, 4), np.float32), threads=bad)
    assert len(index) == 2  # nothing stored by the refused add
    with pytest.raises(err):
        vecpress.set_num_threads(bad)


def test_fitting_limits_blas_to_the_threads_count(monkeypatch):
    """A fit's BLAS products run on vecpress's thread count, not on every core."""
    from threadpoolctl import threadpool_info

    seen = []
    codec = vecpress.Codec.from_spec("pca8,int8")
    original = type(codec.transforms[0]).fit

    def spy(self, *args, **kwargs):
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(codec.transforms[0]), "fit", spy)
    with threads.using(1):
        codec.fit(np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32))
    assert seen and set(seen) == {1}


def test_single_threaded_blas_limits_and_restores():
    from threadpoolctl import threadpool_info

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas()
    with threads.single_threaded_blas():
        assert set(blas()) <= {1}
    assert blas() == before


def test_import_leaves_ml_dtypes_out_and_readies_the_kernels():
    """``import vecpress`` does not import ml_dtypes (most of a second) and pays numba's
    one-time target set-up, so a first search does not."""
    import subprocess
    import sys

    # numba's target set-up loads its numpy implementations (numba.np.arraymath)
    code = "import sys, vecpress; print(*(m in sys.modules for m in ('ml_dtypes', '{np}')))"
    code = code.format(np="numba.np.arraymath")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_index_state_round_trip_and_storage_knows_no_index():
    """storage reads and writes an IndexState; the index makes and takes it."""
    import ast
    import inspect

    from vecpress.files import storage

    tree = ast.parse(inspect.getsource(storage))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "index" not in imported
    x = np.random.default_rng(2).standard_normal((500, 16)).astype(np.float32)
    index = vecpress.Index("hd2,rq4", metric="l2", rerank_spec="f16", ivf=4)
    index.add(x)
    copy = vecpress.Index.from_state(index.to_state())
    a = index.search(x[:20], 5, rerank=20, nprobe=4)
    b = copy.search(x[:20], 5, rerank=20, nprobe=4)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    copy.add(x[:3])  # the copy grows on its own
    assert len(copy) == 503 and len(index) == 500
    state = index.to_state()
    state.codes = state.codes[:, :-1]
    with pytest.raises(ValueError, match="codes must be uint8 rows"):
        vecpress.Index.from_state(state)
    with pytest.raises(TypeError, match="IndexState"):
        vecpress.Index.from_state({"codes": None})
