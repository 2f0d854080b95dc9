"""``vecpress build / search / info``, run in-process through ``vecpress.cli.main``."""

from __future__ import annotations

import json

import numpy as np
import pytest

import vecpress
from vecpress.cli import main


def write_fvecs(path, x: np.ndarray) -> None:
    n, d = x.shape
    rows = np.empty((n, d + 1), np.int32)
    rows[:, 0] = d
    rows[:, 1:] = x.astype(np.float32).view(np.int32)
    rows.tofile(path)


def write_fbin(path, x: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(np.array(x.shape, np.uint32).tobytes())
        f.write(x.astype(np.float32).tobytes())


WRITERS = {".npy": np.save, ".fvecs": write_fvecs, ".fbin": write_fbin}


@pytest.fixture
def vectors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    return rng.standard_normal((300, 24)).astype(np.float32), rng.standard_normal((7, 24)).astype(
        np.float32
    )


@pytest.mark.parametrize("ext", [".npy", ".fvecs", ".fbin"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_build_search_info_round_trip(tmp_path, capsys, vectors, ext, metric):
    x, q = vectors
    WRITERS[ext](tmp_path / f"x{ext}", x)
    WRITERS[ext](tmp_path / f"q{ext}", q)
    index_path = tmp_path / "x.vpi"
    argv = ["build", str(tmp_path / f"x{ext}"), "--spec", "hd2,rq4", "--metric", metric]
    assert main([*argv, "-o", str(index_path)]) == 0
    assert "300 vectors x 24 dims" in capsys.readouterr().out

    expect = vecpress.Index("hd2,rq4", metric=metric)
    expect.add(x)
    truth = expect.search(q, 5)

    out_npy, out_json = tmp_path / "r.npy", tmp_path / "r.json"
    assert (
        main(["search", str(index_path), str(tmp_path / f"q{ext}"), "-k", "5", "-o", str(out_npy)])
        == 0
    )
    got = np.load(out_npy, allow_pickle=False)
    np.testing.assert_array_equal(got["ids"], truth.ids)
    np.testing.assert_array_equal(got["scores"], truth.scores)
    assert main(["search", str(index_path), str(tmp_path / f"q{ext}"), "-o", str(out_json)]) == 0
    doc = json.loads(out_json.read_text())
    assert doc["k"] == 10 and doc["metric"] == metric
    assert np.asarray(doc["ids"])[:, :5].tolist() == truth.ids.tolist()

    capsys.readouterr()
    assert main(["info", str(index_path)]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert (meta["count"], meta["d"], meta["spec"], meta["metric"]) == (300, 24, "hd2,rq4", metric)


def test_padding_is_written_as_json_null(tmp_path, vectors):
    x, q = vectors
    np.save(tmp_path / "x.npy", x[:3])
    np.save(tmp_path / "q.npy", q[:2])
    assert (
        main(["build", str(tmp_path / "x.npy"), "--spec", "f16", "-o", str(tmp_path / "i.vpi")])
        == 0
    )
    assert (
        main(
            [
                "search",
                str(tmp_path / "i.vpi"),
                str(tmp_path / "q.npy"),
                "-k",
                "5",
                "-o",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["ids"][0][3:] == [-1, -1] and doc["scores"][0][3:] == [None, None]


def one_line_error(capsys, argv, match: str) -> None:
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vecpress: error:"), err
    assert "Traceback" not in err
    assert match in err, err


def test_bad_inputs_exit_non_zero_with_one_line(tmp_path, capsys, vectors):
    x, q = vectors
    idx = str(tmp_path / "i.vpi")
    np.save(tmp_path / "x.npy", x)
    main(["build", str(tmp_path / "x.npy"), "--spec", "hd2,rq4", "-o", idx])
    capsys.readouterr()
    missing = str(tmp_path / "missing.npy")
    one_line_error(capsys, ["build", missing, "--spec", "hd2,rq4", "-o", idx], "does not exist")
    one_line_error(
        capsys, ["search", str(tmp_path / "nope.vpi"), missing, "-o", "r.npy"], "does not exist"
    )
    one_line_error(capsys, ["info", str(tmp_path / "nope.vpi")], "does not exist")

    np.save(tmp_path / "flat.npy", x[0])
    one_line_error(capsys, ["build", str(tmp_path / "flat.npy"), "--spec", "rq4", "-o", idx], "2-D")
    np.save(tmp_path / "q23.npy", q[:, :23])
    one_line_error(
        capsys,
        ["search", idx, str(tmp_path / "q23.npy"), "-o", str(tmp_path / "r.npy")],
        "23 columns",
    )
    bad = x.copy()
    bad[123, 4] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    one_line_error(
        capsys, ["build", str(tmp_path / "nan.npy"), "--spec", "rq4", "-o", idx], "row 123"
    )
    qbad = q.copy()
    qbad[5] = np.inf
    np.save(tmp_path / "qnan.npy", qbad)
    one_line_error(
        capsys, ["search", idx, str(tmp_path / "qnan.npy"), "-o", str(tmp_path / "r.npy")], "row 5"
    )
    zero = x.copy()
    zero[77] = 0
    np.save(tmp_path / "zero.npy", zero)
    one_line_error(
        capsys, ["build", str(tmp_path / "zero.npy"), "--spec", "rq4", "-o", idx], "row 77"
    )
    np.save(tmp_path / "ints.npy", np.ones((4, 3), np.int32))
    one_line_error(
        capsys, ["build", str(tmp_path / "ints.npy"), "--spec", "rq4", "-o", idx], "float"
    )
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float32))
    one_line_error(
        capsys, ["build", str(tmp_path / "empty.npy"), "--spec", "rq4", "-o", idx], "no vectors"
    )
    one_line_error(capsys, ["build", str(tmp_path / "x.npy"), "--spec", "zz9", "-o", idx], "zz9")
    one_line_error(
        capsys, ["search", idx, str(tmp_path / "x.npy"), "-o", str(tmp_path / "r.csv")], ".csv"
    )
    one_line_error(
        capsys,
        ["search", idx, str(tmp_path / "x.npy"), "-k", "0", "-o", str(tmp_path / "r.npy")],
        "-k",
    )
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    one_line_error(
        capsys, ["build", str(tmp_path / "x.parquet"), "--spec", "rq4", "-o", idx], "Parquet"
    )

    # files whose size does not match their header
    write_fbin(tmp_path / "short.fbin", x)
    with open(tmp_path / "short.fbin", "r+b") as f:
        f.truncate(8 + 4 * 24 * 299 + 3)
    one_line_error(
        capsys, ["build", str(tmp_path / "short.fbin"), "--spec", "rq4", "-o", idx], "bytes"
    )
    write_fvecs(tmp_path / "short.fvecs", x)
    with open(tmp_path / "short.fvecs", "r+b") as f:
        f.truncate(4 * 25 * 10 - 2)
    one_line_error(
        capsys, ["build", str(tmp_path / "short.fvecs"), "--spec", "rq4", "-o", idx], "multiple"
    )
    write_fvecs(tmp_path / "mixed.fvecs", x[:4])
    raw = np.fromfile(tmp_path / "mixed.fvecs", np.int32)
    raw[2 * 25] = 7
    raw.tofile(tmp_path / "mixed.fvecs")
    one_line_error(
        capsys, ["build", str(tmp_path / "mixed.fvecs"), "--spec", "rq4", "-o", idx], "row 2"
    )

    # a corrupt index
    data = bytearray(open(idx, "rb").read())
    data[40] ^= 1
    (tmp_path / "bad.vpi").write_bytes(bytes(data))
    one_line_error(capsys, ["info", str(tmp_path / "bad.vpi")], "bad.vpi")
    one_line_error(
        capsys,
        [
            "search",
            str(tmp_path / "bad.vpi"),
            str(tmp_path / "x.npy"),
            "-o",
            str(tmp_path / "r.npy"),
        ],
        "header",
    )
    assert len(vecpress.open(idx)) == 300  # never overwritten by the failed builds


@pytest.mark.parametrize("raw", [False, True])
def test_ivf_and_rerank_options_match_the_library(tmp_path, capsys, vectors, raw):
    x, q = vectors
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", q)
    idx = str(tmp_path / "i.vpi")
    argv = ["build", str(tmp_path / "x.npy"), "--spec", "hd2,rq4", "--metric", "l2"]
    argv += ["--ivf", "6", "--rerank-spec", "f32", "-o", idx] + (["--ivf-raw"] if raw else [])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "6 IVF lists" in out and "re-rank tier 96 (f32)" in out and "|x|² 4" in out
    meta = vecpress.info(idx)
    assert (meta["ivf"], meta["rerank_spec"], meta["ivf_residual"]) == (6, "f32", not raw)
    expect = vecpress.Index("hd2,rq4", "l2", rerank_spec="f32", ivf=6, ivf_residual=not raw)
    expect.train(x)
    expect.add(x)
    truth = expect.search(q, 5, rerank=40, nprobe=3)
    res = str(tmp_path / "r.npy")
    argv = ["search", idx, str(tmp_path / "q.npy"), "-k", "5", "--rerank", "40", "--nprobe", "3"]
    assert main([*argv, "-o", res]) == 0
    got = np.load(res)
    np.testing.assert_array_equal(got["ids"], truth.ids)
    np.testing.assert_array_equal(got["scores"], truth.scores)


def test_certified_rerank_from_the_command_line(tmp_path, capsys, vectors):
    """``--rerank auto`` gives the library's certified search; the JSON output says how
    many candidates each query re-scored and whether it is certified."""
    x, q = vectors
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", q)
    idx = str(tmp_path / "i.vpi")
    argv = ["build", str(tmp_path / "x.npy"), "--spec", "hd2,rq4", "--rerank-spec", "f32"]
    assert main([*argv, "-o", idx]) == 0
    expect = vecpress.open(idx).search(q, 5, rerank="auto", confidence=0.99)
    res = str(tmp_path / "r.json")
    argv = ["search", idx, str(tmp_path / "q.npy"), "-k", "5", "--rerank", "auto"]
    assert main([*argv, "--confidence", "0.99", "-o", res]) == 0
    assert "certified re-ranking: " in capsys.readouterr().out
    doc = json.loads(open(res).read())
    assert doc["ids"] == expect.ids.tolist()
    assert doc["reranked"] == expect.reranked.tolist()
    assert doc["certified"] == expect.certified.tolist()
    base = [*argv[:-2], "-o", res]
    one_line_error(capsys, [*base, "--rerank", "auto", "--confidence", "1"], "--confidence")
    with pytest.raises(SystemExit) as bad:
        main([*base, "--rerank", "best"])
    assert bad.value.code == 2
    assert "expected an integer or 'auto', found 'best'" in capsys.readouterr().err


def test_search_option_errors_are_one_line(tmp_path, capsys, vectors):
    x, q = vectors
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", q)
    flat = str(tmp_path / "f.vpi")
    assert main(["build", str(tmp_path / "x.npy"), "--spec", "rq4", "-o", flat]) == 0
    base = ["search", flat, str(tmp_path / "q.npy"), "-o", str(tmp_path / "r.npy")]
    one_line_error(capsys, [*base, "--rerank", "20"], "--rerank needs a second tier")
    one_line_error(capsys, [*base, "--nprobe", "2"], "--nprobe applies to IVF indexes")
    one_line_error(capsys, [*base, "-k", "5000"], "-k: k=5000 is larger than the index")
    build = ["build", str(tmp_path / "x.npy"), "--spec", "rq4", "-o", str(tmp_path / "b.vpi")]
    one_line_error(capsys, [*build, "--ivf", "0"], "--ivf must be >= 1")
    one_line_error(capsys, [*build, "--ivf", "500"], "--ivf 500: more lists than the 300")
    one_line_error(capsys, [*build, "--rerank-spec", "f17"], "--rerank-spec f17: last stage")
    one_line_error(capsys, [*build, "--spec", "rq9"], "--spec rq9:")
    one_line_error(capsys, [*build, "--seed", "-1"], "--seed must be >= 0")
    lvq2 = [*build[:2], "--spec", "lvq4x4", *build[4:]]
    one_line_error(capsys, [*lvq2, "--rerank-spec", "f32"], "--rerank-spec cannot be added")
    ood = [*build[:2], "--spec", "leanvec-ood8,rq4", *build[4:]]
    one_line_error(capsys, ood, "give a sample of the queries the index will serve with --train")
    nowhere = [*build[:-1], str(tmp_path / "missing" / "b.vpi")]
    one_line_error(capsys, nowhere, "--output")
    one_line_error(capsys, [*build[:-1], str(tmp_path)], "is a directory")
    one_line_error(capsys, [*base[:-1], str(tmp_path / "missing" / "r.npy")], "does not exist")
    assert not (tmp_path / "b.vpi").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"vecpress {vecpress.__version__}"


@pytest.mark.parametrize(
    "command", ["demo", "bench", "advise", "inspect", "build", "search", "info"]
)
def test_every_command_takes_threads(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--threads N" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main([command, "--threads", "0"])
    assert bad.value.code == 2
    assert "argument --threads: must be in [1, " in capsys.readouterr().err


def test_threads_sets_the_kernel_threads(tmp_path, monkeypatch, vectors):
    import vecpress.threads

    x, q = vectors
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", q)
    calls = []
    monkeypatch.setattr(vecpress.threads, "set_num_threads", calls.append)
    index = str(tmp_path / "x.vpi")
    assert main(["build", str(tmp_path / "x.npy"), "--spec", "rq4", "-o", index]) == 0
    assert calls == []  # not given: left as it is
    out = str(tmp_path / "r.npy")
    assert main(["search", "--threads", "1", index, str(tmp_path / "q.npy"), "-o", out]) == 0
    assert calls == [1]


def test_progressive_from_the_command_line(tmp_path, capsys, vectors):
    """``--progressive`` gives the full scan's results; an index it cannot read that way
    is a one-line error."""
    x, q = vectors
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", q)
    idx = str(tmp_path / "i.vpi")
    assert main(["build", str(tmp_path / "x.npy"), "--spec", "hd2,rq4", "-o", idx]) == 0
    truth = vecpress.open(idx).search(q, 5)
    res = str(tmp_path / "r.npy")
    argv = ["search", idx, str(tmp_path / "q.npy"), "-k", "5", "--progressive", "-o", res]
    assert main(argv) == 0
    got = np.load(res)
    np.testing.assert_array_equal(got["ids"], truth.ids)
    np.testing.assert_array_equal(got["scores"], truth.scores)
    other = str(tmp_path / "f.vpi")
    assert main(["build", str(tmp_path / "x.npy"), "--spec", "f16", "-o", other]) == 0
    capsys.readouterr()
    one_line_error(capsys, ["search", other, *argv[2:]], "progressive=True reads grid codes")
