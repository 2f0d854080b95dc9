"""Threads mutating and searching one :class:`~vecpress.Index` at once.

Issue 12, defect 7: add/remove/search from 4 threads used to raise thousands of
``IndexError``s, leave codes and ids of different lengths, crash once in 16 runs,
and ``save`` then wrote a file that ``open`` rejected. The index now holds a
readers-writer lock (:mod:`vecpress.rwlock`): searches share it, mutations hold
it alone.

The long test runs 4 threads for 30 s; each owns a range of ids, so the final
state does not depend on how the threads interleaved, and must equal a serial
replay of every thread's operations: the same ids, codes, and search results
(after save -> open too).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import vecpress
from vecpress.rwlock import ReadWriteLock

D = 16
ID_RANGE = 10**9  # thread t owns ids [t * ID_RANGE, (t + 1) * ID_RANGE)


def _vectors(ids: np.ndarray) -> np.ndarray:
    """The vector of each id: a fixed function of the id, so a replay adds the same rows."""
    return np.stack([np.random.default_rng(int(i)).standard_normal(D) for i in ids]).astype(
        np.float32
    )


# -- the lock itself -------------------------------------------------------------
def test_readers_share_the_lock():
    lock = ReadWriteLock()
    inside = threading.Barrier(3, timeout=10)

    def reader():
        with lock.read():
            inside.wait()  # all three readers are inside at once, or this times out

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not inside.broken


def test_a_writer_excludes_readers_and_writers():
    lock = ReadWriteLock()
    events = []
    with lock.write():
        others = [
            threading.Thread(target=_hold, args=(lock.read(), events, "read")),
            threading.Thread(target=_hold, args=(lock.write(), events, "write")),
        ]
        for t in others:
            t.start()
        time.sleep(0.2)
        assert events == []  # both wait while the writer holds the lock
    for t in others:
        t.join(5)
    assert sorted(events) == ["read", "write"]


def test_a_waiting_writer_goes_before_new_readers():
    lock = ReadWriteLock()
    order = []
    with lock.read():
        writer = threading.Thread(target=lambda: _hold(lock.write(), order, "write"))
        writer.start()
        time.sleep(0.1)  # the writer now waits for the reader above
        reader = threading.Thread(target=lambda: _hold(lock.read(), order, "read"))
        reader.start()
        time.sleep(0.1)
        assert order == []
    writer.join(5)
    reader.join(5)
    assert order == ["write", "read"]


def _hold(ctx, order, name):
    with ctx:
        order.append(name)


# -- the index under threads ---------------------------------------------------------
def _make_index(**kw) -> vecpress.Index:
    index = vecpress.Index("hd2,rq4", metric="l2", seed=4, **kw)
    return index.train(np.random.default_rng(99).standard_normal((2000, D)).astype(np.float32))


def _worker(index, t, deadline, log, errors, save_dir, seed):
    """Random adds (own ids), removes (own ids), searches and saves until the deadline."""
    rng = np.random.default_rng(seed)
    next_id = t * ID_RANGE
    mine: list[int] = []
    try:
        while time.monotonic() < deadline:
            op = rng.random()
            if op < 0.4 or len(mine) < 20:
                n = int(rng.integers(1, 16))
                ids = np.arange(next_id, next_id + n)
                next_id += n
                got = index.add(_vectors(ids), ids=ids)
                np.testing.assert_array_equal(got, ids)
                mine.extend(ids.tolist())
                log.append(("add", ids))
            elif op < 0.6 or len(mine) > 400:
                pick = rng.choice(
                    len(mine), size=min(len(mine), int(rng.integers(1, 25))), replace=False
                )
                gone = np.array([mine[i] for i in pick], np.int64)
                removed = index.remove(gone)
                assert removed == gone.size, (removed, gone.size)
                keep = set(gone.tolist())
                mine = [i for i in mine if i not in keep]
                log.append(("remove", gone))
            elif op < 0.97:
                q = rng.standard_normal((int(rng.integers(1, 5)), D)).astype(np.float32)
                kw = {"rerank": 30} if index.has_second_tier else {}
                res = index.search(q, 10, **kw)
                assert res.ids.shape == (q.shape[0], 10)
                found = res.ids >= 0
                assert np.isfinite(res.scores[found]).all()
                assert (res.scores[~found] == -np.inf).all()
                # every returned id was stored by some thread (ids are never reused)
                assert ((res.ids[found] % ID_RANGE) < 10**8).all()
                assert index.contains(np.array(mine[-3:], np.int64)).all()  # own, not removed
            else:
                path = os.path.join(save_dir, f"t{t}.vpi")
                index.save(path)
                copy = vecpress.open(path, mmap=True).verify()
                assert len(copy.ids) == len(copy)
    except Exception as e:  # reported by the main thread
        errors.append(f"thread {t}: {type(e).__name__}: {e}")


def _warm_up(save_dir, **kw):
    """Every operation of :func:`_worker` once, on a throwaway index of the same kind, so
    that the timed threads run compiled kernels (a fresh numba cache compiles for a
    minute on a loaded 2-core machine, which left the threads a handful of adds)."""
    index = _make_index(**kw)
    ids = np.arange(10**9, 10**9 + 40)
    index.add(_vectors(ids), ids=ids)
    assert index.remove(ids[:5]) == 5
    rng = np.random.default_rng(0)
    for nq in (1, 4):
        q = rng.standard_normal((nq, D)).astype(np.float32)
        index.search(q, 10, **({"rerank": 30} if index.has_second_tier else {}))
    path = os.path.join(save_dir, "warm.vpi")
    index.save(path)
    vecpress.open(path, mmap=True).verify()
    os.remove(path)


def _run_threads(index, seconds, save_dir):
    deadline = time.monotonic() + seconds
    logs = [[] for _ in range(4)]
    errors: list[str] = []
    threads = [
        threading.Thread(target=_worker, args=(index, t, deadline, logs[t], errors, save_dir, t))
        for t in range(4)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(seconds + 120)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    assert errors == [], errors[:5]
    return logs


def _replay(logs, **kw) -> vecpress.Index:
    serial = _make_index(**kw)
    for log in logs:
        for op, ids in log:
            if op == "add":
                serial.add(_vectors(ids), ids=ids)
            else:
                assert serial.remove(ids) == ids.size
    return serial


def _rows_by_id(index) -> dict[int, bytes]:
    ids = index.ids
    codes = index._codes.view
    extra = index._rcodes.view if index._rcodes is not None else codes[:, :0]
    return {int(i): codes[r].tobytes() + extra[r].tobytes() for r, i in enumerate(ids)}


def _check_same(concurrent, serial, tmp_path):
    assert len(concurrent) == len(serial) > 0
    assert _rows_by_id(concurrent) == _rows_by_id(serial)
    q = np.random.default_rng(7).standard_normal((25, D)).astype(np.float32)
    kw = {"rerank": 40} if serial.has_second_tier else {}
    if serial.is_ivf:
        kw["nprobe"] = 3
    want = serial.search(q, 10, **kw)
    path = os.fspath(tmp_path / "final.vpi")
    concurrent.save(path)
    for got in (concurrent.search(q, 10, **kw), vecpress.open(path).search(q, 10, **kw)):
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.ids, want.ids)


@pytest.mark.slow
def test_four_threads_for_30_seconds_equal_a_serial_replay(tmp_path):
    """IVF with a second tier under l2: every per-row store (ids, codes, second tier,
    norms, list offsets) is reordered by each add and remove."""
    _warm_up(os.fspath(tmp_path), rerank_spec="f16", ivf=8)
    index = _make_index(rerank_spec="f16", ivf=8)
    logs = _run_threads(index, 30.0, os.fspath(tmp_path))
    assert sum(op == "add" for log in logs for op, _ in log) > 100  # it did real work
    _check_same(index, _replay(logs, rerank_spec="f16", ivf=8), tmp_path)


def test_four_threads_on_a_flat_index_equal_a_serial_replay(tmp_path):
    index = _make_index()
    logs = _run_threads(index, 3.0, os.fspath(tmp_path))
    _check_same(index, _replay(logs), tmp_path)
