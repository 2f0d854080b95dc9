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


def test_drift_measures_both_samples_at_the_same_base_size():
    """A small reference against a large new sample: both recalls on equal bases (else
    the larger base alone would lower the new rows' recall)."""
    from vecpress import Codec
    from vecpress.migrate import drift

    rng = np.random.default_rng(10)
    x = rng.standard_normal((8000, 32)).astype(np.float32)
    codec = Codec.from_spec("hd2,rq4", d=32).fit(x[:2000])
    report = drift(codec, x[:1000], x[1000:], queries=200, rows=6000, threshold=0.05)
    assert (report.recall_queries, report.recall_rows) == (200, 800)
    assert not report.refit


def moved_rows(n: int = 2000, seed: int = 11):
    """Rows whose variance lies on 8 of 16 axes, and the same rows on the other 8."""
    rng = np.random.default_rng(seed)
    scale = np.r_[np.full(8, 2.0), np.full(8, 0.2)].astype(np.float32)
    old = rng.standard_normal((n, 16)).astype(np.float32) * scale
    return old, old[:, ::-1].copy()


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("ivf", [None, 8])
def test_refit_equals_an_index_built_afresh_on_the_sample(metric, ivf):
    """After refit(sample), the index holds exactly what a new index trained on the
    sample and given the same rows and ids holds: codes, norms, lists, ids, answers.
    (Not "cosine": there a fresh index would normalise the stored unit rows again,
    changing last bits; that metric is tested below.)"""
    old, new = moved_rows()
    index = Index("pca8,rq4", metric, rerank_spec="f32", ivf=ivf, seed=3)
    index.add(old, ids=np.arange(5000, 7000))
    index.add(new)
    ids = index.ids
    rows = index.reconstruct(ids)
    assert index.refit(new) is index
    fresh = Index("pca8,rq4", metric, rerank_spec="f32", ivf=ivf, seed=3).train(new)
    fresh.add(rows, ids=ids)
    a, b = index.to_state(), fresh.to_state()
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.codes, b.codes)
    assert np.array_equal(a.rerank_codes, b.rerank_codes)
    assert np.array_equal(a.list_offsets, b.list_offsets)
    if metric == "l2":
        assert np.array_equal(a.norms, b.norms)
    q, probe = new[:20], {} if ivf is None else {"nprobe": 8}
    ra, rb = index.search(q, 5, **probe), fresh.search(q, 5, **probe)
    assert np.array_equal(ra.ids, rb.ids) and np.array_equal(ra.scores, rb.scores)
    assert index.next_id == 9000 and index.add(new[:1]).tolist() == [9000]


@pytest.mark.parametrize("tier", ["f32", "f16"])
def test_refit_under_cosine_reads_the_stored_unit_rows(tier):
    old, new = moved_rows()
    index = Index("pca8,rq4", "cosine", rerank_spec=tier)
    index.add(old)
    ids = index.add(new)

    def found():
        return (index.search(new[:200], 1).ids[:, 0] == ids[:200]).mean()

    before = found()
    rows = index.reconstruct(index.ids)
    index.refit(new)
    assert found() > before + 0.3
    assert np.array_equal(index.to_state().codes, index.codec.encode(rows))


def test_refit_takes_vectors_without_a_float_tier_and_checks_them():
    old, new = moved_rows()
    index = Index("pca8,rq4", "l2")
    index.add(old)
    before = index.search(new[:100], 1)
    with pytest.raises(ValueError, match="vectors="):
        index.refit(new)
    with pytest.raises(ValueError, match="every stored row"):
        index.refit(new, vectors=new[:10])
    bad = new.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"vectors has 1 row.* NaN or Inf"):
        index.refit(new, vectors=bad)
    with pytest.raises(ValueError, match=r"sample has 1 row.* NaN or Inf"):
        index.refit(bad)
    with pytest.raises(ValueError, match="sample must have 16 columns"):
        index.refit(new[:, :8], vectors=new)
    after = index.search(new[:100], 1)  # nothing changed by the failed calls
    assert np.array_equal(before.ids, after.ids) and np.array_equal(before.scores, after.scores)
    index.refit(new, vectors=new)  # the stored rows replaced by what vectors says
    assert (index.search(new[:200], 1).ids[:, 0] == np.arange(200)).mean() > 0.9
    with pytest.raises(ValueError, match="trained"):
        Index("pca8,rq4", "l2").refit(new)


def test_refit_to_a_file_is_atomic(tmp_path, monkeypatch):
    """The old file stays whole until the new one is complete; a failed save leaves the
    file and the object as they were; a mapped index can replace its own file."""
    import vecpress
    from vecpress.files import storage

    old, new = moved_rows()
    path = tmp_path / "i.vpi"
    built = Index("pca8,rq4", "l2", rerank_spec="f32")
    built.add(old)
    built.add(new)
    built.save(path)
    original = path.read_bytes()
    index = vecpress.open(path, mmap=True)
    before = index.search(new[:50], 3)

    def broken(state, target, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(storage, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        index.refit(new, path=path)
    monkeypatch.undo()
    assert path.read_bytes() == original
    again = index.search(new[:50], 3)
    assert np.array_equal(before.ids, again.ids) and np.array_equal(before.scores, again.scores)
    index.refit(new, path=path)
    reopened = vecpress.open(path, mmap=True)
    mine, theirs = index.search(new[:50], 3), reopened.search(new[:50], 3)
    assert np.array_equal(mine.ids, theirs.ids) and np.array_equal(mine.scores, theirs.scores)
    own = np.arange(2000, 2050)
    assert (mine.ids[:, 0] == own).mean() > (before.ids[:, 0] == own).mean()


def test_cli_migrate_refit(tmp_path, capsys):
    import json

    import vecpress
    from vecpress.cli import main

    old, new = moved_rows()
    np.save(tmp_path / "old.npy", old)
    np.save(tmp_path / "new.npy", new)
    np.save(tmp_path / "all.npy", np.concatenate([old, new]))
    idx = str(tmp_path / "i.vpi")
    assert main(["build", str(tmp_path / "all.npy"), "--spec", "pca8,rq4", "--metric", "l2",
                 "--rerank-spec", "f32", "-o", idx]) == 0  # fmt: skip
    plain = str(tmp_path / "plain.vpi")
    assert main(["build", str(tmp_path / "old.npy"), "--spec", "pca8,rq4", "--metric", "l2",
                 "-o", plain]) == 0  # fmt: skip
    capsys.readouterr()
    out = str(tmp_path / "refit.vpi")
    assert main(["migrate", "refit", idx, str(tmp_path / "new.npy"), "-o", out]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 4000
    assert main(["migrate", "refit", idx, str(tmp_path / "new.npy")]) == 0  # in place
    capsys.readouterr()
    a, b = vecpress.open(out).to_state(), vecpress.open(idx).to_state()
    assert np.array_equal(a.codes, b.codes)
    assert main(["migrate", "refit", plain, str(tmp_path / "new.npy")]) == 2
    assert "vectors=" in capsys.readouterr().err
    assert main(["migrate", "refit", plain, str(tmp_path / "new.npy"),
                 "--vectors", str(tmp_path / "old.npy")]) == 0  # fmt: skip


@pytest.mark.parametrize(("d_old", "d_new"), [(12, 96), (96, 12)])
def test_lowrank_default_rank_fits_the_smaller_side(d_old, d_new):
    """The default rank is bounded by both dimensions (a 384-d model mapped to a 50-d
    one, and back)."""
    new, old = pairs(1000, d_old, d_new, seed=12, noise=0.05)
    adapter = Adapter.fit(new, old, kind="lowrank-residual")
    assert adapter.report["rank"] == min(d_old, d_new) // 4
    assert adapter.transform(new[:5]).shape == (5, d_old)
    # 12 dimensions cannot carry 96: only the wide-to-narrow map aligns well
    report = adapter.report
    assert report["heldout_cosine"] >= report["procrustes_cosine"] - 0.01
    assert (report["heldout_cosine"] > 0.9) == (d_new > d_old)


def test_heldout_found_at_10_tells_a_true_map_from_an_unrelated_one():
    """A rotation's mapped held-out rows all find their own pair first; an unrelated
    "new model" finds it about as often as chance (10 of 100 held-out rows)."""
    new, old = pairs(1000, 24, 32, seed=13)
    assert Adapter.fit(new, old).report["heldout_found_at_10"] == 1.0
    unrelated = np.random.default_rng(14).standard_normal(new.shape).astype(np.float32)
    found = Adapter.fit(unrelated, old, kind="linear").report["heldout_found_at_10"]
    assert found < 0.1 + 4 * np.sqrt(0.1 * 0.9 / 100)  # chance plus four deviations
    few = Adapter.fit(new[:100], old[:100]).report  # 10 held out: too few for a top 10
    assert few["heldout"] == 10 and few["heldout_found_at_10"] is None
