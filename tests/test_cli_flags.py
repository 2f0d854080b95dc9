"""``vecpress bench / advise / inspect``: bad flag values name the flag, before any work;
every option's help states its default; ``inspect`` says which rows it held out.

Run in-process through ``vecpress.cli.main`` on small synthetic ``.npy`` files.
"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest

import vecpress.advisor.bench
import vecpress.advisor.datasets
import vecpress.advisor.diagnostics
import vecpress.cli
import vecpress.cli.args
import vecpress.cli.index_commands
import vecpress.cli.measure
import vecpress.files.readers
from vecpress.advisor.bench import Config, Workload, search_space
from vecpress.advisor.datasets import BUILTIN
from vecpress.cli import build_parser, main
from vecpress.cli.args import _bytes_per_vector, _check_budget

N, D = 1200, 16  # bench and advise hold out a tenth (120 queries) by default: 1,080 stay


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flags")
    rng = np.random.default_rng(5)
    np.save(folder / "base.npy", rng.standard_normal((N, D)).astype(np.float32))
    np.save(folder / "q.npy", rng.standard_normal((20, D)).astype(np.float32))
    np.save(folder / "q5.npy", rng.standard_normal((20, 5)).astype(np.float32))
    np.save(folder / "q0.npy", np.zeros((0, D), np.float32))
    return folder


# stage "args": caught before any file is opened; "shape": once the vectors' header is read,
# before their rows are scanned (and so before the queries are held out, the ground truth
# computed or the data described)
BAD = [
    ("args", ["bench", "{b}", "-k", "0"], "-k must be >= 1, found 0"),
    ("args", ["bench", "{b}", "-k", "-3"], "-k must be >= 1, found -3"),
    ("shape", ["bench", "{b}", "-k", "5000"], "-k 5000 is larger than the 1080 base vectors"),
    ("args", ["bench", "{b}", "--n-queries", "0"], "--n-queries must be >= 1, found 0"),
    ("args", ["bench", "{b}", "--n-queries", "-5"], "--n-queries must be >= 1, found -5"),
    ("shape", ["bench", "{b}", "--n-queries", str(N)], f"--n-queries {N}: the vectors"),
    ("args", ["bench", "{b}", "--seed", "-1"], "--seed must be >= 0, found -1"),
    ("args", ["bench", "{b}", "--column", "emb"], "--column emb picks a column of a .parquet"),
    ("args", ["bench", "glove50", "--column", "emb"], "--column emb picks a column"),
    ("shape", ["bench", "{b}", "--queries", "{d}/q5.npy"], "--queries {d}/q5.npy has vectors of 5"),
    ("shape", ["bench", "{b}", "--queries", "{d}/q0.npy"], "--queries {d}/q0.npy holds no vectors"),
    ("args", ["bench", "{b}", "--queries", "{d}/none.npy"], "--queries {d}/none.npy does not"),
    ("args", ["bench", "{b}", "--spec", "rq99"], "--spec rq99: "),
    ("args", ["bench", "{b}", "--spec", "int8", "--spec", "zz9"], "--spec zz9: "),
    ("shape", ["bench", "{b}", "--spec", "pq5x4"], "--spec pq5x4: the dimension d=16"),
    ("args", ["bench", "{b}", "--spec", "leanvec-ood8,rq4"], "with --train-queries T"),
    ("args", ["bench", "{b}", "--report", "{d}/no/r.html"], "--report {d}/no/r.html: the folder"),
    ("args", ["bench", "{b}", "--report", "{d}"], "--report {d} is a directory"),
    ("shape", ["bench", "{b}", "--train-queries", "{d}/q5.npy"], "--train-queries {d}/q5.npy"),
    ("args", ["bench", "{b}", "--train-queries", "{d}/none.npy"], "--train-queries {d}/none.npy"),
    ("args", ["advise", "{b}", "--target-recall", "1.5"], "--target-recall must be in (0, 1]"),
    ("args", ["advise", "{b}", "--target-recall", "0"], "--target-recall must be in (0, 1]"),
    ("args", ["advise", "{b}", "--target-recall", "-0.2"], "--target-recall must be in (0, 1]"),
    ("args", ["advise", "{b}", "--target-recall", "nan"], "--target-recall must be in (0, 1]"),
    ("args", ["advise", "{b}", "--budget-bytes", "0"], "--budget-bytes must be >= 1"),
    ("args", ["advise", "{b}", "--budget-bytes", "-8"], "--budget-bytes must be >= 1"),
    ("shape", ["advise", "{b}", "--budget-bytes", "5"], "--budget-bytes 5: no configuration"),
    ("args", ["advise", "{b}", "--target-recall", "0.9", "-k", "0"], "-k must be >= 1"),
    ("args", ["advise", "{b}", "--target-recall", "0.9", "--seed", "-2"], "--seed must be >= 0"),
    ("shape", ["advise", "{b}", "--target-recall", "0.9", "--n-queries", "5000"], "--n-queries"),
    ("shape", ["advise", "{b}", "--budget-bytes", "64", "--queries", "{d}/q5.npy"], "--queries"),
    ("args", ["advise", "{b}", "--target-recall", "0.9", "--report", "{d}/no/r"], "--report"),
    ("shape", ["advise", "{b}", "--budget-bytes", "64", "--train-queries", "{d}/q5.npy"], "--tr"),
    ("args", ["inspect", "{b}", "--seed", "-1"], "--seed must be >= 0, found -1"),
    ("args", ["inspect", "{b}", "--column", "emb"], "--column emb picks a column"),
    ("shape", ["inspect", "{b}", "--queries", "{d}/q5.npy"], "--queries {d}/q5.npy has vectors"),
    ("args", ["inspect", "{b}", "--queries", "{d}/none.npy"], "--queries {d}/none.npy does not"),
]


@pytest.mark.parametrize(("stage", "argv", "message"), BAD, ids=[" ".join(a) for _, a, _ in BAD])
def test_bad_flag_values_name_the_flag_before_any_work(
    files, capsys, monkeypatch, stage, argv, message
):
    opened = []

    def no_reading(*args, **kwargs):
        opened.append(args)
        raise AssertionError("a vectors file was read")

    def no_work(*args, **kwargs):
        raise AssertionError("the work started")

    commands = (vecpress.cli.args, vecpress.cli.measure, vecpress.cli.index_commands)

    def patch(name, fn):  # wherever the command line's modules use it
        for module in (vecpress.files.readers, *commands):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, fn)

    if stage == "args":  # nothing is read: not even a header
        patch("read_vectors", no_reading)
    patch("_check_rows", no_work)  # the rows' scan
    monkeypatch.setattr(vecpress.advisor.bench, "Workload", no_work)  # the ground truth
    monkeypatch.setattr(vecpress.advisor.diagnostics, "inspect", no_work)  # inspect's statistics
    d = str(files)
    args = [a.format(b=f"{d}/base.npy", d=d) for a in argv]
    code = main([*args, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("vecpress: error: ") and err.count("\n") == 1, err
    assert message.format(d=d) in err, err
    flag = re.search(r"(--?[a-z][a-z-]*)", message).group(1)
    assert flag in err
    assert not opened


def test_budget_check_sizes_configurations_as_the_workload_does():
    """The early --budget-bytes check sizes every configuration of the grid exactly as the
    advisor's Workload will, so it never rejects a budget the advisor could meet."""
    rng = np.random.default_rng(6)
    base = rng.standard_normal((600, D)).astype(np.float32)
    queries = rng.standard_normal((10, D)).astype(np.float32)
    for metric in ("cosine", "l2"):
        w = Workload(base, queries, metric, 10)
        configs = [c for f in search_space(w.n, 10, "full", D) for c in f.configs]
        configs.append(Config("center,hd2,rq4", rerank_spec="f16", rerank=40))
        for c in configs:
            assert _bytes_per_vector(c, D, metric) == w.bytes_per_vector(c), c.label
        smallest = min(w.bytes_per_vector(c) for c in configs[:-1])
        args = argparse.Namespace(k=10, grid="full", metric=metric, train_queries=None)
        _check_budget(args, smallest, w.n, D)  # the smallest configuration fits: no error
        with pytest.raises(ValueError, match=rf"--budget-bytes {smallest - 1}: .* {smallest} "):
            _check_budget(args, smallest - 1, w.n, D)


# -- help ---------------------------------------------------------------------------------


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _options():
    for command, parser in _subparsers().items():
        for action in parser._actions:
            if set(action.option_strings) & {"-h", "--help", "--version"}:
                continue
            yield command, action


@pytest.mark.parametrize(
    ("command", "action"),
    list(_options()),
    ids=[f"{c} {a.option_strings[-1] if a.option_strings else a.dest}" for c, a in _options()],
)
def test_every_option_has_help_stating_its_default(command, action):
    text = " ".join((action.help or "").split())
    assert text, f"{command} {action.dest}: no help"
    default = action.default
    if action.option_strings and default is not None and default is not False:
        assert re.search(rf"\bdefault:? {re.escape(str(default))}(?![\w.])", text), (
            f"{command} {action.option_strings[-1]}: the help does not state the default "
            f"{default!r}: {text!r}"
        )


def test_build_and_search_help_name_the_built_in_sets(capsys):
    for command in ("build", "search"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for name in BUILTIN:
            assert name in text, (command, name)
    assert all(f"{name}:queries" in text for name in BUILTIN)  # search's QUERIES
    build = _subparsers()["build"]
    (vectors,) = [a for a in build._actions if a.dest == "vectors"]
    assert "built-in set" in vectors.help and "NAME:queries" in vectors.help


# -- inspect: the held-out queries -------------------------------------------------------


def test_inspect_says_how_many_rows_it_held_out(files, capsys):
    base = str(files / "base.npy")
    assert main(["inspect", base, "--no-progress"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    # 1,000 rows, or a tenth of the rows if fewer: 120 of 1,200
    assert first == (
        f"base.npy: 120 of its {N:,} rows held out as queries (seed 0) for the recall after "
        f"PCA; the other {N - 120:,} are described"
    )
    assert main(["inspect", base, "--seed", "3", "--json", "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["queries"] == {"n": 120, "held_out": True, "seed": 3, "file": None}
    assert doc["n"] == N - 120

    queries = str(files / "q.npy")
    assert main(["inspect", base, "--queries", queries, "--json", "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["queries"] == {"n": 20, "held_out": False, "seed": None, "file": queries}
    assert doc["n"] == N
    assert main(["inspect", base, "--queries", queries, "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"base.npy: 20 queries from {queries} for the recall after PCA"
    )


def test_inspect_text_prints_the_numbers_of_its_rotation_advice(files, capsys):
    argv = ["inspect", str(files / "base.npy"), "--metric", "ip", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    fmt = vecpress.advisor.diagnostics.format_statistic
    (line,) = [s for s in out.splitlines() if s.startswith("Epps–Pulley statistic over")]
    assert f"near-Gaussian up to {fmt(doc['rotation']['limit'])}" in line
    assert f"axes {fmt(doc['gaussianity']['raw'])}" in line
    (advice,) = [s for s in out.splitlines() if "rotation" in s and s.startswith("- ")]
    assert advice.startswith("- no rotation needed")  # Gaussian rows
    assert f"up to {fmt(doc['rotation']['limit'])}" in advice


def test_small_files_hold_out_a_tenth_by_default(tmp_path, capsys):
    """Without --n-queries, a file of fewer than 10,000 rows keeps 90 % as the base
    (not a fixed 1,000 queries, which a 500-row file cannot give)."""
    from vecpress.advisor.datasets import synthetic

    base, _ = synthetic(n=500, d=16, n_queries=0, seed=1)
    np.save(tmp_path / "small.npy", base)
    argv = ["bench", str(tmp_path / "small.npy"), "--spec", "int8", "--json", "--no-progress"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["spec"] == "int8"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--target", "1.5"], "--target must be in (0, 1], found 1.5"),
        (["demo", "--report", "{d}/missing/r.html"], "--report"),
    ],
)
def test_demo_flags_are_checked_before_the_data_is_read(
    tmp_path, monkeypatch, capsys, argv, message
):
    def no_data(*a, **k):
        raise AssertionError("the data was read")

    monkeypatch.setattr(vecpress.advisor.datasets, "glove50", no_data)
    assert main([a.format(d=tmp_path) for a in argv] + ["--no-progress"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_peers_that_are_left_out_are_named(tmp_path, capsys):
    """``bench --peers`` says when sentence-transformers' schemes are not measured."""
    import importlib.util

    from vecpress.advisor.datasets import synthetic

    base, _ = synthetic(n=600, d=16, n_queries=0, seed=2)
    np.save(tmp_path / "b.npy", base)
    argv = ["bench", str(tmp_path / "b.npy"), "--spec", "int8", "--peers", "--no-progress"]
    assert main([*argv, "--metric", "l2"]) == 0
    err = capsys.readouterr().err
    assert "sentence-transformers" in err
    if importlib.util.find_spec("sentence_transformers") is None:
        assert "not installed" in err
    else:
        assert "under l2" in err
