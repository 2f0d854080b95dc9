"""``warm_up`` and ``vecpress warmup``: every search an index serves, compiled ahead."""

from __future__ import annotations

import numpy as np
import pytest

from _util import in_fresh_python
from test_cli_index import one_line_error
from vecpress import Index
from vecpress.cli import main
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
