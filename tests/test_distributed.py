"""vecpress.distributed against a real local Ray cluster started here: the distributed
build equals the single-machine build, the sharded search equals the single collection's,
and faults are errors, never silently smaller answers."""

from __future__ import annotations

import doctest
import logging
import logging.handlers
import os
import signal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

import vecpress
from vecpress import Collection, build_collection
from vecpress.distributed import ShardedSearcher
from vecpress.distributed import build as dbuild
from vecpress.distributed.builder import _RAY_PROGRESS_LOGGER

N, D = 100_000, 32
SEGMENT = 30_000


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of this test process (pytest-xdist: one per process that runs
    these tests), stopped after the module's tests."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 2**20,
                 log_to_driver=False)  # fmt: skip
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """100,000 x 32 rows in four Parquet files, with ids, texts and a metadata field."""
    folder = tmp_path_factory.mktemp("parquet")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, D)).astype(np.float32)
    x[:, :4] *= 3  # some structure for the codec to learn
    paths = []
    for f, lo in enumerate(range(0, N, N // 4)):
        hi = lo + N // 4
        table = pa.table({
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(x[lo:hi].reshape(-1)), D),
            "key": [f"doc{i}" for i in range(lo, hi)],
            "body": [f"text {i}" for i in range(lo, hi)],
            "year": [2000 + i % 13 for i in range(lo, hi)],
        })  # fmt: skip
        paths.append(str(folder / f"part{f}.parquet"))
        pq.write_table(table, paths[-1], row_group_size=7_000)
    return paths, x


DOCS = dict(id_column="key", text_column="body", metadata_columns=["year"])


def segment_files(col: Collection) -> list[bytes]:
    return [(col.path / "segments" / f).read_bytes() for _, f, _ in col._catalog.segments()]


def same_results(a, b) -> None:
    assert a.ids == b.ids
    assert np.array_equal(a.scores, b.scores)
    assert a.texts == b.texts and a.metadata == b.metadata


def leftovers(folder) -> list[str]:
    return [f for f in os.listdir(folder) if f.endswith(".vpbuild")]


@pytest.mark.parametrize(
    "settings",
    [dict(spec="hd2,rq4", rerank_spec="f32"), dict(spec="hd2,rq4", metric="l2", ivf=16)],
    ids=["flat", "ivf"],
)
def test_the_distributed_build_equals_the_single_machine_build(cluster, data, tmp_path,
                                                               settings):  # fmt: skip
    paths, x = data
    seen = []
    dist = dbuild(paths, tmp_path / "dist", segment_rows=SEGMENT, progress=seen.append,
                  **DOCS, **settings)  # fmt: skip
    one = build_collection(paths, tmp_path / "one", chunk_bytes=SEGMENT * D * 4, **DOCS,
                           **settings)  # fmt: skip
    assert sum(seen) == N and len(dist) == N
    assert segment_files(dist) == segment_files(one)
    assert (dist.path / "template.vpi").read_bytes() == (one.path / "template.vpi").read_bytes()
    q = x[::5001] + 0.05
    for kw in ({}, {"filter": {"year": {"$in": [2003, 2007]}}}, {"nprobe": 4}):
        if "nprobe" in kw and "ivf" not in settings:
            continue
        same_results(dist.search(q, 10, **kw), one.search(q, 10, **kw))
    assert dist.get(["doc12345"]) == one.get(["doc12345"])
    assert leftovers(tmp_path) == []


def test_a_build_logs_no_warning_of_its_own_choosing(cluster, data, tmp_path):
    """build turns Ray Data's progress bars off (it reports progress itself), which Ray
    Data announces with a WARNING once per process: the build holds it back. Ray's
    once-per-process memory of it is cleared first, so the test does not depend on
    which tests ran before in its process."""
    from ray.util.debug import reset_log_once

    paths, _ = data
    reset_log_once("ray_data_progress_manager_disabled")
    seen = logging.handlers.BufferingHandler(capacity=1_000_000)  # keeps every record
    ray_data = logging.getLogger("ray.data")
    ray_data.addHandler(seen)
    try:
        dbuild(paths[:1], tmp_path / "c", spec="hd2,rq4", segment_rows=SEGMENT)
    finally:
        ray_data.removeHandler(seen)
    assert [r.getMessage() for r in seen.buffer if r.levelno >= logging.WARNING] == []
    assert logging.getLogger(_RAY_PROGRESS_LOGGER).level == logging.NOTSET  # put back


def test_a_ray_dataset_and_a_drawn_sample(cluster, data, tmp_path, monkeypatch):
    """A Dataset source; more rows than the codec trains on: a seeded sample drawn by
    Ray Data (the collection searches as well as one trained on the first rows)."""
    paths, x = data
    monkeypatch.setattr(vecpress.Index, "train_rows", property(lambda self: 5_000))
    ds = ray.data.read_parquet(paths).select_columns(["emb", "key"])
    col = dbuild(ds, tmp_path / "c", spec="hd2,rq4", rerank_spec="f32", id_column="key")
    assert len(col) == N and col.ids()[:2] == ["doc0", "doc1"]
    q = x[:200]
    res = col.search(q, 1, rerank="auto")
    assert [r[0] for r in res.ids] == [f"doc{i}" for i in range(200)]


def test_the_sharded_search_equals_the_collection(cluster, data, tmp_path):
    paths, x = data
    col = build_collection(paths, tmp_path / "c", spec="hd2,rq4", rerank_spec="f32",
                           chunk_bytes=SEGMENT * D * 4, **DOCS)  # fmt: skip
    col.add(x[:50] * 1.01, [f"new{i}" for i in range(50)])  # pending vectors too
    col.delete([f"doc{i}" for i in range(0, 3000, 7)])
    q = x[::3333] + 0.05
    with ShardedSearcher(col.path, num_actors=2) as searcher:
        for kw in ({}, {"rerank": "auto"}, {"rerank": 40},
                   {"filter": {"year": 2004}}, {"filter": {"year": {"$gte": 2010}}}):  # fmt: skip
            same_results(searcher.search(q, 10, **kw), col.search(q, 10, **kw))
        with pytest.raises(ValueError, match="k must be"):
            searcher.search(q, 0)
        with pytest.raises(ValueError, match="columns"):
            searcher.search(x[:2, :5], 3)
        with pytest.raises(ValueError, match="unknown field"):
            searcher.search(q, 3, filter={"nope": 1})


def test_several_collections_merge_by_score(cluster, data, tmp_path):
    paths, x = data
    parts = [build_collection(p, tmp_path / f"c{i}", spec="hd2,rq4", rerank_spec="f32", **DOCS)
             for i, p in enumerate(paths[:3])]  # fmt: skip
    q = x[::7777] + 0.05
    with ShardedSearcher([c.path for c in parts], num_actors=2) as searcher:
        got = searcher.search(q, 8, rerank="auto")
    for i in range(q.shape[0]):
        each = [(float(r.scores[i, c]), r.ids[i][c]) for r in (p.search(q, 8, rerank="auto")
                for p in parts) for c in range(8)]  # fmt: skip
        best = sorted(each, key=lambda t: -t[0])[:8]
        assert got.ids[i] == [b[1] for b in best]
        assert np.allclose(got.scores[i], [b[0] for b in best])


def test_an_actor_killed_during_search_is_an_error(cluster, data, tmp_path):
    paths, x = data
    col = build_collection(paths[:2], tmp_path / "c", spec="hd2,rq4",
                           chunk_bytes=10_000 * D * 4)  # fmt: skip
    searcher = ShardedSearcher(col.path, num_actors=2)
    assert searcher.search(x[:2], 3).ids[0][0] == "0"
    ray.kill(searcher.actors[1])
    # ray.kill returns before the actor is dead (a search sent at once may still be
    # answered): wait until a call to it fails, then search
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(searcher.actors[1].pid.remote(), timeout=60)
    with pytest.raises(RuntimeError, match=r"actor 1 \(part 1 of 2 of .*\) is gone"):
        searcher.search(x[:2], 3)
    searcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        searcher.search(x[:2], 3)


def test_a_worker_killed_during_the_build_fails_it_cleanly(cluster, data, tmp_path):
    paths, x = data

    def killer(batch: pa.Table) -> pa.Table:  # a stage killing its worker on doc60000's batch
        if "doc60000" in batch.column("key").to_pylist():
            os.kill(os.getpid(), signal.SIGKILL)
        return batch

    ds = ray.data.read_parquet(paths).map_batches(killer, batch_format="pyarrow",
                                                  max_retries=0)  # fmt: skip
    with pytest.raises(ValueError, match=r"build failed; nothing was stored: .*worker died"):
        dbuild(ds, tmp_path / "c", spec="hd2,rq4", id_column="key", segment_rows=SEGMENT,
               sample=x[:20_000])  # fmt: skip
    assert not (tmp_path / "c").exists() and leftovers(tmp_path) == []


def test_bad_builds_leave_nothing(cluster, data, tmp_path):
    paths, x = data
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        dbuild(paths, tmp_path / "taken")
    with pytest.raises(ValueError, match="no column 'nope'"):
        dbuild(paths, tmp_path / "c", metadata_columns=["nope"])
    bad = x[:20_000].copy()
    bad[15_000, 3] = np.nan
    ds = ray.data.from_arrow(pa.table({
        "emb": pa.FixedSizeListArray.from_arrays(pa.array(bad.reshape(-1)), D)}))  # fmt: skip
    with pytest.raises(ValueError, match="NaN"):
        dbuild(ds, tmp_path / "c")
    assert not (tmp_path / "c").exists() and leftovers(tmp_path) == []


def test_the_modules_examples_run(cluster):
    from vecpress.distributed import builder as b
    from vecpress.distributed import searcher as s

    for module in (b, s):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
    assert doctest.testmod(s).attempted > 0


def test_a_searcher_refuses_what_it_cannot_search(cluster, data, tmp_path):
    _, x = data
    a = build_collection(x[:2000], tmp_path / "a", spec="hd2,rq4")
    b = build_collection(x[:2000, :16], tmp_path / "b", spec="hd2,rq4")
    with pytest.raises(ValueError, match=r"one dimension, found \[16, 32\]"):
        ShardedSearcher([a.path, b.path])
    with pytest.raises(ValueError, match="num_cpus must be > 0"):
        ShardedSearcher(a.path, num_cpus=0)
    with pytest.raises(ValueError, match="num_actors"):
        ShardedSearcher(a.path, num_actors=0)
    with pytest.raises(FileNotFoundError):
        ShardedSearcher(tmp_path / "nope")
