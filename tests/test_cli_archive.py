"""``vecpress compress`` / ``vecpress decompress``."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("constriction")

from vecpress.cli import main


@pytest.fixture
def vectors(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2000, 24)) * np.linspace(2, 0.1, 24)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    return tmp_path / "v.npy", x


def test_compress_report_and_decompress(tmp_path, vectors, capsys):
    path, x = vectors
    out = tmp_path / "v.vpz"
    assert main(["compress", str(path), "-o", str(out), "--mse", "0.01", "--report"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bytes"] == out.stat().st_size and report["mse"] <= 0.01
    assert report["bits_per_dim"] == 8 * report["bytes"] / x.size
    assert report["gap_bits_per_dim"] == pytest.approx(
        report["bits_per_dim"] - report["gaussian_bits_per_dim"]
    )
    assert 0.5 < report["recall_at_10"] <= 1.0
    assert main(["decompress", str(out), "-o", str(tmp_path / "w.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == x.shape[0]
    y = np.load(tmp_path / "w.npy")
    assert y.shape == x.shape and ((y.astype(np.float64) - x) ** 2).mean() <= 0.01
    assert main(["compress", str(path), "-o", str(out), "--bits-per-dim", "3"]) == 0
    assert 8 * out.stat().st_size <= 3 * x.size
    capsys.readouterr()
    queries = tmp_path / "q.npy"
    np.save(queries, x[:50] + np.float32(0.01))
    args = ["compress", str(path), "-o", str(out), "--recall", "0.9", "--queries", str(queries)]
    assert main([*args, "--report", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["recall_at_10"] >= 0.85


def test_compress_reads_a_folder_of_parts(tmp_path, vectors, capsys):
    """A folder of vector files is one input, read a chunk at a time: the same archive
    as from one file."""
    path, x = vectors
    parts = tmp_path / "parts"
    parts.mkdir()
    np.save(parts / "a.npy", x[:700])
    np.save(parts / "b.npy", x[700:])
    assert main(["compress", str(parts), "-o", str(tmp_path / "p.vpz"), "--mse", "0.01"]) == 0
    assert main(["compress", str(path), "-o", str(tmp_path / "v.vpz"), "--mse", "0.01"]) == 0
    assert (tmp_path / "p.vpz").read_bytes() == (tmp_path / "v.vpz").read_bytes()


def test_cli_errors_exit_2_naming_the_problem(tmp_path, vectors, capsys):
    path, _ = vectors
    assert main(["compress", str(path), "-o", str(tmp_path / "a.vpz"), "--mse", "-1"]) == 2
    assert "mse must be a positive finite number" in capsys.readouterr().err
    assert main(["decompress", str(path), "-o", str(tmp_path / "w.npy")]) == 2
    assert "not a frame of a vecpress archive" in capsys.readouterr().err
    assert main(["decompress", str(path), "-o", str(tmp_path / "w.txt")]) == 2
    assert "writes a .npy file" in capsys.readouterr().err
    assert not (tmp_path / "w.npy").exists() and not (tmp_path / "a.vpz").exists()
    assert main(["compress", str(path), "-o", str(tmp_path / "a.vpz"), "--recall", "2"]) == 2
    assert "recall must be in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "a.vpz").exists()
    with pytest.raises(SystemExit):  # argparse: one of --mse / --bits-per-dim / --recall
        main(["compress", str(path), "-o", str(tmp_path / "a.vpz")])
