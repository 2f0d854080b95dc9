"""Huge ``k`` and ``rerank``, and paths that are not files: clear errors, no huge allocations.

Issue 12, defect 3: ``search(q, 10, rerank=10**9)`` on 500 vectors allocated
``nq x 10^9``, ``k=2**63-1`` died in numpy ("array is too big") and the CLI
printed a traceback for a huge ``-k``. Minor items of the same issue: ``vecpress
info .`` said "does not exist", and an object-dtype ``.npy`` gave numpy's
message without the file's name.
"""

from __future__ import annotations

import numpy as np
import pytest

import vecpress
from vecpress.cli import main
from vecpress.search.index import MAX_PADDED_K


@pytest.fixture(scope="module")
def index_and_queries():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((500, 24)).astype(np.float32)
    index = vecpress.Index("hd2,rq4", metric="l2", rerank_spec="f32")
    index.add(x)
    return index, x[:6] + 0.01


def test_rerank_beyond_the_index_rescores_every_vector(index_and_queries):
    index, q = index_and_queries
    # before: numpy tried to allocate nq x 10^12 candidates and raised
    huge = index.search(q, 10, rerank=10**12)
    whole = index.search(q, 10, rerank=len(index))
    np.testing.assert_array_equal(huge.ids, whole.ids)
    np.testing.assert_array_equal(huge.scores, whole.scores)
    # re-ranking every stored vector with the floats is the exact search
    x = np.random.default_rng(5).standard_normal((500, 24)).astype(np.float32)
    truth = np.argsort(((q[:, None, :] - x[None]) ** 2).sum(-1), axis=1)[:, :10]
    np.testing.assert_array_equal(huge.ids, truth)


@pytest.mark.parametrize("k", [2**63 - 1, 10**10, MAX_PADDED_K + 1])
def test_k_far_beyond_the_index_is_a_clear_error(index_and_queries, k):
    index, q = index_and_queries
    with pytest.raises(ValueError, match=rf"k={k} is larger than the index \(500 vectors\)"):
        index.search(q, k)


def test_k_beyond_the_index_pads_up_to_the_limit(index_and_queries):
    index, q = index_and_queries
    res = index.search(q[:2], MAX_PADDED_K, rerank=MAX_PADDED_K)
    assert res.ids.shape == (2, MAX_PADDED_K)
    assert (res.ids[:, :500] >= 0).all() and (res.ids[:, 500:] == -1).all()
    assert np.isfinite(res.scores[:, :500]).all() and (res.scores[:, 500:] == -np.inf).all()
    assert sorted(res.ids[0, :500].tolist()) == sorted(index.ids.tolist())
    # the first 10 are the same as a search for 10
    np.testing.assert_array_equal(res.ids[:, :10], index.search(q[:2], 10, rerank=10**6).ids)


def test_k_up_to_the_index_size_is_allowed_on_a_large_index():
    x = np.random.default_rng(1).standard_normal((MAX_PADDED_K + 300, 8)).astype(np.float32)
    index = vecpress.Index("f32", metric="ip")
    index.add(x)
    res = index.search(x[:1], len(index))
    assert res.ids.shape == (1, len(index)) and sorted(res.ids[0].tolist()) == list(range(len(x)))
    with pytest.raises(ValueError, match="k="):
        index.search(x[:1], len(index) + 1)


def test_ivf_k_beyond_the_probed_lists_is_padded():
    x = np.random.default_rng(2).standard_normal((400, 8)).astype(np.float32)
    index = vecpress.Index("f32", metric="ip", ivf=8)
    index.add(x)
    res = index.search(x[:3], 300, nprobe=1)
    assert res.ids.shape == (3, 300)
    for row in res.ids:
        assert (row[row < 0] == -1).all() and len(set(row[row >= 0].tolist())) == (row >= 0).sum()


def test_cli_huge_k_is_an_error_message_not_a_traceback(tmp_path, capsys, index_and_queries):
    index, q = index_and_queries
    index.save(tmp_path / "x.vpi")
    np.save(tmp_path / "q.npy", q)
    argv = [
        "search",
        str(tmp_path / "x.vpi"),
        str(tmp_path / "q.npy"),
        "-o",
        str(tmp_path / "r.npy"),
    ]
    assert main([*argv, "-k", str(10**10)]) != 0
    err = capsys.readouterr().err
    assert "k=10000000000 is larger than the index" in err and "Traceback" not in err
    assert not (tmp_path / "r.npy").exists()


def test_cli_info_of_a_directory_says_so(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) != 0
    assert "is a directory" in capsys.readouterr().err


def test_object_dtype_npy_names_the_file(tmp_path, capsys, index_and_queries):
    index, _ = index_and_queries
    index.save(tmp_path / "x.vpi")
    bad = tmp_path / "objects.npy"
    # an object-dtype header written by hand (no pickle is made or read anywhere)
    with open(bad, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|O", "fortran_order": False, "shape": (1, 2)}
        )
        f.write(b"\x00" * 16)
    out = tmp_path / "r.npy"
    assert main(["search", str(tmp_path / "x.vpi"), str(bad), "-o", str(out)]) != 0
    err = capsys.readouterr().err
    assert str(bad) in err and "not a readable array of floats" in err
    with pytest.raises(ValueError, match=r"objects\.npy"):
        vecpress.files.readers.read_vectors(str(bad))
