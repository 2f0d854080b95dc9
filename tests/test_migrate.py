"""Model migration (``vecpress.migrate``): adapters fitted on paired embeddings, and
searches of an old index with a new model's queries through them."""

from __future__ import annotations

import numpy as np
import pytest

from vecpress import FormatError, Index
from vecpress.migrate import Adapter


def pairs(n: int, d_old: int, d_new: int, seed: int = 0, noise: float = 0.0):
    """Old-model rows (unit norm) and new-model rows: a random (semi-)orthogonal map of
    the old ones, plus Gaussian noise of deviation ``noise`` per entry."""
    rng = np.random.default_rng(seed)
    old = rng.standard_normal((n, d_old)) * np.linspace(2, 0.5, d_old)
    old /= np.linalg.norm(old, axis=1, keepdims=True)
    q, _ = np.linalg.qr(rng.standard_normal((max(d_old, d_new), max(d_old, d_new))))
    new = old @ q[:d_old, :d_new] + noise * rng.standard_normal((n, d_new))
    return new.astype(np.float32), old.astype(np.float32)


def test_procrustes_recovers_a_rotation_across_dimensions():
    """A new model that is an isometry of the old one (here into more dimensions) is
    undone exactly: held-out cosine 1, mapped rows equal to the old rows."""
    new, old = pairs(3000, 16, 24, seed=1)
    adapter = Adapter.fit(new, old, kind="procrustes")
    assert (adapter.d_src, adapter.d_dst) == (24, 16)
    assert adapter.report["heldout_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert adapter.report["pairs"] == 3000 and adapter.report["heldout"] == 300
    np.testing.assert_allclose(adapter.transform(new[:50]), old[:50], atol=1e-4)
    assert adapter.normalize  # the old rows have unit norm: mapped rows too
    np.testing.assert_allclose(np.linalg.norm(adapter.transform(new[:5]), axis=1), 1, atol=1e-5)


def test_linear_recovers_a_general_map_and_lowrank_fixes_what_a_rotation_cannot():
    """``dst = src W`` with W far from orthogonal: the least-squares map is recovered
    (relative error of order noise / signal); a rotation plus a rank-r correction beats
    the rotation alone when W = R + (rank r)."""
    rng = np.random.default_rng(2)
    n, d = 4000, 32
    src = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal((d, d)) / np.sqrt(d)
    dst = (src @ w + 0.01 * rng.standard_normal((n, d))).astype(np.float32)
    lin = Adapter.fit(src, dst, kind="linear")
    # the estimate's error: noise 0.01 over ~sqrt(n) rows per coefficient, plus the ridge
    assert np.abs(lin.matrix - w).max() < 0.01
    assert lin.report["heldout_cosine"] > 0.999
    r, _ = np.linalg.qr(rng.standard_normal((d, d)))
    u, v = rng.standard_normal((d, 3)), rng.standard_normal((3, d))
    dst = (src @ (r + 0.3 * u @ v / d) + 0.01 * rng.standard_normal((n, d))).astype(np.float32)
    low = Adapter.fit(src, dst, kind="lowrank-residual", rank=3)
    rep = low.report
    # the correction removes most of what the rotation leaves (the rest: the noise)
    assert rep["rank"] == 3 and 1 - rep["heldout_cosine"] < 0.5 * (1 - rep["procrustes_cosine"])
    assert rep["heldout_cosine"] > 0.999


def test_bytes_round_trip_and_damage():
    new, old = pairs(500, 8, 8, seed=3, noise=0.05)
    adapter = Adapter.fit(new, old, kind="lowrank-residual", rank=2)
    back = Adapter.from_bytes(adapter.to_bytes())
    assert back.kind == adapter.kind and back.report == adapter.report
    np.testing.assert_array_equal(back.transform(new[:20]), adapter.transform(new[:20]))
    blob = bytearray(adapter.to_bytes())
    blob[len(blob) // 2] ^= 1
    with pytest.raises(FormatError):
        Adapter.from_bytes(bytes(blob))
    from vecpress import Codec

    with pytest.raises(FormatError, match="expected 'vecpress-adapter'"):
        Adapter.from_bytes(Codec.from_spec("f32", d=8).fit(old).to_bytes())


def test_bad_input_is_refused():
    new, old = pairs(200, 8, 12, seed=4)
    with pytest.raises(ValueError, match="src has 200 rows, dst 199"):
        Adapter.fit(new, old[:199])
    bad = new.copy()
    bad[17, 3] = np.nan
    with pytest.raises(ValueError, match="row 17"):
        Adapter.fit(bad, old)
    with pytest.raises(ValueError, match="underdetermined"):
        Adapter.fit(new[:10], old[:10], kind="linear")
    with pytest.raises(ValueError, match="kind must be one of"):
        Adapter.fit(new, old, kind="nonlinear")
    with pytest.raises(ValueError, match="rank applies"):
        Adapter.fit(new, old, kind="procrustes", rank=2)
    with pytest.raises(ValueError, match=r"rank must be in \[1, 8\]"):
        Adapter.fit(new, old, kind="lowrank-residual", rank=9)
    with pytest.raises(ValueError, match="twice the rank"):
        Adapter.fit(new[:5], old[:5], kind="lowrank-residual", rank=4)
    adapter = Adapter.fit(new, old)
    with pytest.raises(ValueError, match="dimension"):
        adapter.transform(old[:3])  # the old model's rows: 8 columns, not 12


def test_search_through_an_adapter(tmp_path):
    """An index of the old model's rows, searched with the new model's queries through
    the adapter: the same as searching with the mapped queries; the wrong side refused."""
    new, old = pairs(2000, 16, 24, seed=5, noise=0.01)
    adapter = Adapter.fit(new[:1000], old[:1000])
    index = Index("hd2,rq4", metric="cosine")
    index.add(old)
    got = index.search(new[1500:1510], 5, adapter=adapter)
    want = index.search(adapter.transform(new[1500:1510]), 5)
    np.testing.assert_array_equal(got.ids, want.ids)
    assert (got.ids[:, 0] == np.arange(1500, 1510)).mean() >= 0.9  # each finds its own text
    reverse = Adapter.fit(old[:1000], new[:1000])
    with pytest.raises(ValueError, match="maps into dimension 24"):
        index.search(new[:2], 5, adapter=reverse)
    with pytest.raises(TypeError, match="Adapter"):
        index.search(new[:2], 5, adapter="adapter.vpa")
    from vecpress import Collection

    with Collection.create(tmp_path / "c", dim=16, spec="f32", metric="cosine") as col:
        col.add(old, ids=[f"doc{i}" for i in range(len(old))])
        res = col.search(new[1500:1503], 3, adapter=adapter)
        assert [r[0] for r in res.ids] == ["doc1500", "doc1501", "doc1502"]
        with pytest.raises(ValueError, match="maps into dimension 24"):
            col.search(new[:2], 3, adapter=reverse)


def test_cli_migrate_fit_and_search_with_the_adapter(tmp_path, capsys):
    import json

    from vecpress.cli import main

    new, old = pairs(2000, 16, 24, seed=6, noise=0.01)
    np.save(tmp_path / "new.npy", new[:1000])
    np.save(tmp_path / "old.npy", old[:1000])
    np.save(tmp_path / "base.npy", old)
    np.save(tmp_path / "q.npy", new[1500:1520])
    vpa = str(tmp_path / "a.vpa")
    assert main(["migrate", "fit", str(tmp_path / "new.npy"), str(tmp_path / "old.npy"),
                 "-o", vpa, "--kind", "linear"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert (report["d_src"], report["d_dst"], report["kind"]) == (24, 16, "linear")
    assert report["heldout_cosine"] > 0.99
    idx = str(tmp_path / "i.vpi")
    assert main(["build", str(tmp_path / "base.npy"), "--spec", "f32", "--metric", "cosine",
                 "-o", idx]) == 0  # fmt: skip
    out = str(tmp_path / "r.json")
    assert main(["search", idx, str(tmp_path / "q.npy"), "-k", "3", "--adapter", vpa,
                 "-o", out, "--no-progress"]) == 0  # fmt: skip
    ids = np.array(json.load(open(out))["ids"])
    assert (ids[:, 0] == np.arange(1500, 1520)).mean() >= 0.9
    capsys.readouterr()
    # without the adapter the new model's queries do not fit the index
    assert main(["search", idx, str(tmp_path / "q.npy"), "-o", out]) == 2
    assert "24 columns, the index has d=16" in capsys.readouterr().err
    assert main(["migrate", "fit", str(tmp_path / "new.npy"), str(tmp_path / "old.npy")[:-4]
                 + "x.npy", "-o", vpa]) == 2  # fmt: skip


def test_drift_tells_moved_rows_from_the_same_rows():
    """A codec keeping its training rows' 8 leading principal axes: rows drawn the same
    way need no refit (predicted change within the sampling error, ≈ 0.006 a recall at
    500 queries, so ± 0.02), rows whose variance moved to the other axes do."""
    from vecpress import Codec
    from vecpress.migrate import drift

    rng = np.random.default_rng(7)
    scale = np.r_[np.full(8, 2.0), np.full(8, 0.2)].astype(np.float32)
    old = rng.standard_normal((6000, 16)).astype(np.float32) * scale
    codec = Codec.from_spec("pca8,rq4", d=16).fit(old[:3000])
    same = drift(codec, old[:3000], old[3000:])
    assert not same.refit and same.reason == "no refit needed"
    assert abs(same.predicted_recall_change) <= 0.02 and 0.8 < same.distortion_ratio < 1.25
    assert same.outside_reference <= 0.1 and abs(same.outside_new - same.outside_reference) < 0.02
    moved = drift(codec, old[:3000], old[3000:] * (scale[::-1] / scale))
    assert moved.refit and "recall@10 predicted to fall" in moved.reason
    assert moved.outside_new > 0.9 and moved.distortion_ratio > 10
    shifted = drift(codec, old[:3000], old[3000:] + 3.0)  # a moved mean alone
    assert shifted.mean_shift == pytest.approx(3.0 * 4 / np.sqrt((scale**2).sum()), rel=0.05)
    with pytest.raises(ValueError, match="at least 100 new rows"):
        drift(codec, old, old[:50])
    with pytest.raises(ValueError, match=r"dimension|columns"):
        drift(codec, old, old[:, :8])
    with pytest.raises(ValueError, match="metric"):
        drift(codec, old, old, metric="hamming")
    with pytest.raises(ValueError, match=r"queries must be in >= 10, found 0"):
        drift(codec, old, old, queries=0)
    with pytest.raises(ValueError, match="threshold"):
        drift(codec, old, old, threshold=float("nan"))
    with pytest.raises(TypeError, match="rows must be an integer"):
        drift(codec, old, old, rows=2.5)


def test_index_drift_reads_its_own_rows_back():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    index = Index("hd2,rq4", "ip", rerank_spec="f32")
    index.add(x[:1500])
    report = index.drift(x[1500:])
    assert report.rows_reference == 1500 and not report.refit
    plain = Index("hd2,rq4", "ip")
    plain.add(x[:1500])
    with pytest.raises(ValueError, match="reference="):
        plain.drift(x[1500:])
    assert not plain.drift(x[1500:], reference=x[:1500]).refit


def test_cli_inspect_new(tmp_path, capsys):
    import json

    from vecpress.cli import main

    rng = np.random.default_rng(9)
    scale = np.r_[np.full(8, 2.0), np.full(8, 0.2)].astype(np.float32)
    x = rng.standard_normal((4000, 16)).astype(np.float32) * scale
    np.save(tmp_path / "base.npy", x[:2000])
    np.save(tmp_path / "same.npy", x[2000:])
    np.save(tmp_path / "moved.npy", x[2000:] * (scale[::-1] / scale))
    idx = str(tmp_path / "i.vpi")
    assert main(["build", str(tmp_path / "base.npy"), "--spec", "pca8,rq4", "--metric", "l2",
                 "--rerank-spec", "f32", "-o", idx]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["inspect", idx, "--new", str(tmp_path / "same.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["refit"] is False
    assert main(["inspect", idx, "--new", str(tmp_path / "moved.npy")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["refit"] is True and report["rows_reference"] == 2000
    assert main(["inspect", str(tmp_path / "base.npy"), "--new", str(tmp_path / "same.npy")]) == 2
    assert "invalid" in capsys.readouterr().err
