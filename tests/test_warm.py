"""``warm_up`` and ``vecpress warmup``: every search an index serves, compiled ahead."""

from __future__ import annotations

import numpy as np
import pytest

from _util import in_fresh_python
from test_cli_index import one_line_error
from vecpress import Collection, Index
from vecpress.cli import main
from vecpress.collection.warm import warm_up_collection
from vecpress.search.warm import warm_up, warm_up_spec

#: run in a fresh interpreter (kernels loaded by earlier tests of this process would
#: hide one that warm_up missed): per index file, warm it up, then search it as a user
#: would (other queries, another k, one query and batches, every kind it serves) and
#: report the kernels that gained a signature (compiled, or loaded from numba's cache)
CHILD = """
from vecpress.search.warm import warm_up

for path in sys.argv[1:]:
    index = vecpress.open(path, mmap=True)
    steps = warm_up(index, k=3)
    before = entry_points()
    q = np.random.default_rng(1).standard_normal((100, index.d)).astype(np.float32)
    kinds = [{}]
    if any("progressive" in name for name, _ in steps):
        kinds.append({"progressive": True})
    if index.has_second_tier:
        kinds += [{"rerank": 40}, {"rerank": "auto"}]
    kinds += [{"allow": index.ids[5:9]}, {"allow": index.ids[1::3]}]
    for kw in kinds:
        for rows in (q[:1], q[:3], q[:7], q):
            assert index.search(rows, 12, **kw).ids.shape == (rows.shape[0], 12)
    after = entry_points()
    new = sorted(f for f, n in after.items() if n > before.get(f, 0))
    print(json.dumps({"path": path, "steps": [n for n, _ in steps], "new": new}))
"""

CONFIGS = [
    ("hd2,rq4", "cosine", {}, 8),  # full, progressive, two filters
    ("int8", "l2", {"rerank_spec": "f16"}, 10),  # full, re-ranked, certified, filters
    ("center,hd2,rq4", "ip", {"ivf": 8}, 8),
    ("pq8x4", "ip", {}, 6),
]


def test_after_warm_up_searches_need_no_new_kernel(tmp_path):
    """In a fresh process, the searches a user makes after ``warm_up`` find every kernel
    they need made: none gains a signature (flat, progressive, IVF, two tiers, pq,
    filtered)."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (spec, metric, options, _) in enumerate(CONFIGS):
        index = Index(spec, metric=metric, seed=0, **options)
        index.add(rng.standard_normal((600, 32)).astype(np.float32))
        paths.append(str(tmp_path / f"i{i}.vpi"))
        index.save(paths[-1])
    reports = in_fresh_python(CHILD, *paths)
    assert [r["path"] for r in reports] == paths
    for report, (spec, _, _, steps) in zip(reports, CONFIGS, strict=True):
        assert len(report["steps"]) == steps, (spec, report["steps"])
        assert report["new"] == [], (spec, report["new"])


def test_warm_up_refuses_what_it_cannot_search():
    with pytest.raises(ValueError, match="empty"):
        warm_up(Index("hd2,rq4"))
    with pytest.raises(TypeError, match=r"vecpress\.Index"):
        warm_up("i.vpi")
    with pytest.raises(ValueError, match="positive int"):
        warm_up_spec("hd2,rq4", 0)
    with pytest.raises(ValueError, match="larger than warm_up_spec builds"):
        warm_up_spec("hd2,rq4", 10**9)  # not an allocation of 8 TB
    with pytest.raises(ValueError, match="larger than warm_up_spec builds"):
        warm_up_spec("hd2,rq4", 384, ivf=10**6)
    with pytest.raises(ValueError, match="spec"):
        warm_up_spec("nosuchcodec", 8)


def test_warmup_from_the_command_line(tmp_path, capsys):
    """Index files, or a configuration; each step and its seconds, then the total; wrong
    combinations of arguments are one-line errors."""
    index = Index("hd2,rq4", metric="l2", seed=0)
    index.add(np.random.default_rng(1).standard_normal((300, 16)).astype(np.float32))
    path = str(tmp_path / "i.vpi")
    index.save(path)
    assert main(["warmup", path, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{path}: one query, progressive:" in out and "warmed up in" in out
    argv = ["warmup", "--spec", "int8", "--dim", "8", "--metric", "ip", "--no-progress"]
    assert main(argv) == 0
    assert "batch:" in capsys.readouterr().out
    one_line_error(capsys, ["warmup"], "index files or --spec")
    one_line_error(capsys, ["warmup", path, "--spec", "int8", "--dim", "8"], "not both")
    one_line_error(capsys, ["warmup", "--spec", "int8"], "--spec needs --dim")
    one_line_error(capsys, ["warmup", path, "--dim", "8"], "--dim: only with --spec")
    one_line_error(capsys, ["warmup", str(tmp_path / "none.vpi")], "does not exist")


#: as CHILD, for collection folders: warm up, seal what is pending where the folder's
#: name says so (its codec is trained and its first segment written only then: warmed
#: up on a stand-in index), then search as a user would
COLLECTION_CHILD = """
from vecpress import Collection
from vecpress.collection.warm import warm_up_collection

for path in sys.argv[1:]:
    col = Collection.open(path)
    steps = warm_up_collection(col, k=3)
    if path.endswith("-pending"):
        col.flush()  # trains and encodes: kernels of its own, not the search's
    before = entry_points()
    q = np.random.default_rng(1).standard_normal((100, col.dim)).astype(np.float32)
    kinds = [{}, {"filter": {"n": {"$lt": 4}}}, {"filter": {"n": {"$gte": 9}}}]
    if col.settings["rerank_spec"]:
        kinds += [{"rerank": 40}, {"rerank": "auto"}]
    for kw in kinds:
        for rows in (q[:1], q[:3], q[:7], q):
            assert len(col.search(rows, 12, **kw).ids) == rows.shape[0]
    after = entry_points()
    new = sorted(f for f, n in after.items() if n > before.get(f, 0))
    print(json.dumps({"path": path, "steps": [n for n, _ in steps], "new": new}))
"""

#: collections: (name, settings, rows added in one batch, then rows added pending)
COLLECTIONS = [
    ("flat", {"spec": "hd2,rq4", "rerank_spec": "f32"}, 500, 30),  # segment and pending
    ("ivf", {"spec": "center,hd2,rq4", "metric": "ip", "ivf": 8}, 600, 0),
    ("pq-pending", {"spec": "pq8x4", "metric": "l2"}, 0, 150),  # no segment yet
]


def test_a_warmed_up_collection_searches_with_no_new_kernel(tmp_path):
    """In a fresh process, after ``warm_up_collection`` the searches of a collection
    (one query and batches, filtered, re-ranked) find every kernel made -- also those of
    a collection whose first segment is written after the warm-up (it warmed a stand-in
    of its settings) -- and the warm-up leaves the progressive scans out."""
    rng = np.random.default_rng(0)
    paths = []
    for name, settings, segment, pending in COLLECTIONS:
        paths.append(str(tmp_path / name))
        col = Collection.create(paths[-1], dim=32, flush_rows=200, seed=0, **settings)
        for n in (segment, pending):
            if n:
                x = rng.standard_normal((n, 32)).astype(np.float32)
                col.add(x, metadata=[{"n": i % 20} for i in range(n)])
        assert (len(col.segments()) > 0) == (segment > 0)
        col.close()
    reports = in_fresh_python(COLLECTION_CHILD, *paths)
    assert [r["path"] for r in reports] == paths
    for report in reports:
        steps = report["steps"]
        assert steps[-2:] == ["collection, one query", "collection, batch"], steps
        assert not any("progressive" in step for step in steps), steps
        assert report["new"] == [], (report["path"], report["new"])
    flat, ivf, pending = (r["steps"] for r in reports)
    assert "one query, rerank=auto" in flat and "batch, rerank=6" in flat
    assert len(ivf) == len(pending) == 8  # full and two filters, one query and a batch


def test_warm_up_collection_without_a_codec_yet(tmp_path):
    """A collection whose codec the advisor chooses at training has no kernel to warm
    before then: only its own searches run. Not a collection: a ``TypeError``."""
    col = Collection.create(tmp_path / "auto", spec="auto", target_recall=0.9, dim=8)
    col.add(np.ones((5, 8), np.float32))
    steps = warm_up_collection(col)
    assert [name for name, _ in steps] == ["collection, one query", "collection, batch"]
    with pytest.raises(TypeError, match=r"vecpress\.Collection"):
        warm_up_collection(Index("hd2,rq4"))
    with pytest.raises(ValueError, match="k"):
        warm_up_collection(col, k=0)


def test_warmup_of_a_collection_folder_from_the_command_line(tmp_path, capsys):
    col = Collection.create(tmp_path / "docs", spec="hd2,rq4", dim=16, flush_rows=100)
    col.add(np.random.default_rng(2).standard_normal((150, 16)).astype(np.float32))
    col.close()
    assert main(["warmup", str(tmp_path / "docs"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'docs'}: collection, batch:" in out and "warmed up in" in out
    assert "progressive" not in out
    (tmp_path / "plain").mkdir()
    one_line_error(capsys, ["warmup", str(tmp_path / "plain")], "not a collection")
