"""Collections killed with SIGKILL at random moments while they write.

A child process adds batches of documents (and every few batches upserts one,
deletes one or compacts the segments), printing each operation's number once the
call has returned; the parent kills it after a random delay, opens the collection
and checks: it opens, every acknowledged operation is there whole (texts and
metadata), no batch is there in part, no file the catalog does not name is left,
and a search answers.
``VECPRESS_CRASH_TRIALS`` sets the number of kills (30 here; the issue's slow run
asks for 200).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from vecpress.collection import Collection

TRIALS = int(os.environ.get("VECPRESS_CRASH_TRIALS", "30"))
BATCH = 20
D = 16

CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from vecpress.collection import Collection
    path, start = sys.argv[1], int(sys.argv[2])
    col = Collection.open(path)
    rng = np.random.default_rng(start)
    for op in range(start, start + 10_000):
        x = rng.standard_normal((20, 16)).astype(np.float32)
        ids = [f"b{op}-{i}" for i in range(20)]
        if op % 7 == 3:  # replace the first document of the previous batch
            col.upsert(x[:1], [f"b{op - 1}-0"], texts=[f"up{op}"], metadata=[{"op": op}])
        elif op % 7 == 5:  # delete the second document of the previous batch
            col.delete([f"b{op - 1}-1"])
        elif op % 7 == 6:  # merge the small segments, dropping deleted rows
            col.compact()
        else:
            col.add(x, ids=ids, texts=[f"t{op}-{i}" for i in range(20)],
                    metadata=[{"op": op, "i": i} for i in range(20)])
        print(op, flush=True)
    """
)


def _run_until_killed(path, start: int, delay: float) -> list[int]:
    """Start a writer, kill it ``delay`` seconds after its first acknowledgement; the
    operations it acknowledged."""
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    first = proc.stdout.readline()
    if not first:
        proc.wait()
        pytest.fail(f"the writer died before its first operation (exit {proc.returncode})")
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate()
    return [int(line) for line in (first + rest).split()]


def _expected(acked: list[int]) -> dict[str, tuple]:
    """The documents the acknowledged operations must have left: id -> (text, meta)."""
    docs: dict[str, tuple] = {}
    for op in acked:
        if op % 7 == 3:  # replaces the document, or adds it where it is absent
            docs[f"b{op - 1}-0"] = (f"up{op}", {"op": op})
        elif op % 7 == 5:
            docs.pop(f"b{op - 1}-1", None)
        elif op % 7 == 6:  # a compaction changes no document
            continue
        else:
            for i in range(BATCH):
                docs[f"b{op}-{i}"] = (f"t{op}-{i}", {"op": op, "i": i})
    return docs


def test_kill_9_loses_no_acknowledged_batch_and_shows_no_partial_one(tmp_path):
    path = tmp_path / "c"
    Collection.create(path, spec="hd2,rq4", dim=D, flush_rows=60).close()
    rng = np.random.default_rng(0)
    acked: list[int] = []
    start = 0
    for _ in range(TRIALS):
        got = _run_until_killed(path, start, float(rng.uniform(0.0, 0.4)))
        acked += got
        # the operation after the last acknowledged one may or may not have landed
        unsure = got[-1] + 1
        col = Collection.open(path)
        try:
            # the unacknowledged operation landed whole or not at all: find out which
            if unsure % 7 == 3:
                doc = col.get([f"b{unsure - 1}-0"])[0]
                landed = doc is not None and doc["text"] == f"up{unsure}"
            elif unsure % 7 == 5:
                landed = col.get([f"b{unsure - 1}-1"]) == [None]
            elif unsure % 7 == 6:
                landed = False  # whether it did shows in no document
            else:
                ids = [f"b{unsure}-{i}" for i in range(BATCH)]
                present = [d is not None for d in col.get(ids)]
                assert all(present) or not any(present), present
                landed = all(present)
            if landed:
                acked.append(unsure)
            want = _expected(acked)
            stored = col.get(list(want))
            for (key, (text, meta)), doc in zip(want.items(), stored, strict=True):
                assert doc == {"id": key, "text": text, "metadata": meta}, (key, doc)
            named = {f for _, f, _ in col.segments()}
            assert {p.name for p in (path / "segments").iterdir()} == named
            assert len(col) == len(_expected(acked))
            res = col.search(np.ones((1, D), np.float32), 5)
            assert all(i is not None for i in res.ids[0])
        finally:
            col.close()
        start = unsure + 1
    assert len(acked) > TRIALS  # the writers got work done between kills
