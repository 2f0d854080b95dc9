"""``warm_up`` and ``vecpress warmup``: every search an index serves, compiled ahead."""

from __future__ import annotations

import sys

import numba
import numpy as np
import pytest

import vecpress
from test_cli_index import one_line_error
from vecpress import Index
from vecpress.cli import main
from vecpress.search.warm import warm_up, warm_up_spec


def _entry_points() -> dict[str, int]:
    """Signatures held by every compiled function of vecpress's modules: a search that
    needs a kernel not made yet (compiled, or loaded from numba's cache) adds one."""
    return {
        f"{name}.{attr}": len(f.signatures)
        for name, module in list(sys.modules.items())
        if name.startswith("vecpress.") and module is not None
        for attr, f in list(vars(module).items())
        if isinstance(f, numba.core.registry.CPUDispatcher)
    }


@pytest.mark.parametrize(
    ("spec", "metric", "options", "steps"),
    [
        ("hd2,rq4", "cosine", {}, 4),  # full and progressive
        ("int8", "l2", {"rerank_spec": "f16"}, 6),  # full, re-ranked, certified
        ("center,hd2,rq4", "ip", {"ivf": 8}, 4),
        ("pq8x4", "ip", {}, 2),
    ],
)
def test_after_warm_up_searches_need_no_new_kernel(tmp_path, spec, metric, options, steps):
    """The searches a user then makes (other queries, another k, one query and batches,
    each kind the index serves) find every kernel made: none gains a signature."""
    rng = np.random.default_rng(0)
    index = Index(spec, metric=metric, seed=0, **options)
    index.add(rng.standard_normal((600, 32)).astype(np.float32))
    index.save(tmp_path / "i.vpi")
    opened = vecpress.open(tmp_path / "i.vpi", mmap=True)
    done = warm_up(opened, k=3)
    assert len(done) == steps and all(sec >= 0 for _, sec in done)
    before = _entry_points()
    q = rng.standard_normal((100, 32)).astype(np.float32)
    kinds = [{}]
    if any("progressive" in name for name, _ in done):
        kinds.append({"progressive": True})
    if opened.has_second_tier:
        kinds += [{"rerank": 40}, {"rerank": "auto"}]
    for kw in kinds:
        for rows in (q[:1], q[:3], q[:7], q):
            assert opened.search(rows, 12, **kw).ids.shape == (rows.shape[0], 12)
    assert _entry_points() == before


def test_warm_up_refuses_what_it_cannot_search():
    with pytest.raises(ValueError, match="empty"):
        warm_up(Index("hd2,rq4"))
    with pytest.raises(TypeError, match=r"vecpress\.Index"):
        warm_up("i.vpi")
    with pytest.raises(ValueError, match="positive int"):
        warm_up_spec("hd2,rq4", 0)
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
