"""Two-level LVQ (``lvq<b1>x<b2>``): the codec, and its second level as an index's
re-ranking tier."""

from __future__ import annotations

import numpy as np
import pytest

import vecpress
from vecpress import Codec, FormatError, Index
from vecpress.search.topk import topk


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    scales = np.linspace(2.0, 0.2, 48).astype(np.float32)
    x = rng.standard_normal((3000, 48)).astype(np.float32) * scales + 0.5
    q = rng.standard_normal((40, 48)).astype(np.float32) * scales + 0.5
    return x, q


@pytest.mark.parametrize("b1,b2", [(1, 4), (2, 2), (4, 4), (4, 8), (3, 5)])
def test_second_level_error_is_its_step_squared_over_12(data, b1, b2):
    # the residual of level 1 lies in [-Δ/2, Δ/2]; level 2 puts 2^b2 levels on that
    # range (step Δ2 = Δ/(2^b2 - 1)), so each coordinate's error is ~uniform on a cell:
    # E err² = Δ2²/12, averaged over the rows' own Δ
    x, _ = data
    two = Codec.from_spec(f"lvq{b1}x{b2}").fit(x)
    codes = two.encode(x)
    _, step = two.quantizer.level1._bounds(two.split_tiers(codes)[0])
    want = float((step.astype(np.float64) ** 2).mean()) / (12 * (2**b2 - 1) ** 2)
    mse = float(((two.decode(codes) - x) ** 2).mean())
    assert 0.85 < mse / want < 1.15, mse / want
    one = Codec.from_spec(f"lvq{b1}").fit(x)
    assert mse < float(((one.decode(one.encode(x)) - x) ** 2).mean()) / (2**b2 - 1) ** 2 * 2


def test_code_layout_and_sizes(data):
    x, _ = data
    codec = Codec.from_spec("center,lvq4x8").fit(x)
    assert codec.spec == "center,lvq4x8" and codec.is_two_level
    # level 1: 24 bytes of 4-bit codes + lo + step (4) + centring term (2); level 2: 48
    assert codec.tier_sizes == (30, 48)
    assert codec.code_size == 78 == Codec.code_size_of("center,lvq4x8", 48)
    assert codec.tier_codec.spec == "center,lvq4"
    assert Codec.from_spec("lvq4", d=48).tier_sizes == (36 - 8, 0)


def test_first_level_is_the_one_level_code(data):
    x, q = data
    one = Codec.from_spec("center,lvq4").fit(x)
    two = Codec.from_spec("center,lvq4x8").fit(x)
    codes = two.encode(x)
    first, second = two.split_tiers(codes)
    np.testing.assert_array_equal(first, one.encode(x))
    np.testing.assert_array_equal(two.join_tiers(first, second), codes)
    np.testing.assert_array_equal(two.tier_codec.score(q, first), one.score(q, first))


def test_score_is_the_decoded_inner_product(data):
    x, q = data
    codec = Codec.from_spec("lvq2x6").fit(x)
    codes = codec.encode(x)
    want = q @ codec.decode(codes).T
    np.testing.assert_allclose(codec.score(q, codes), want, rtol=1e-5, atol=1e-4)
    # centred: the stored exact term <mu, x - mu> replaces <mu, decoded - mu>, a
    # per-row constant (the same for every query)
    codec = Codec.from_spec("center,lvq2x6").fit(x)
    codes = codec.encode(x)
    diff = codec.score(q, codes) - q @ codec.decode(codes).T
    np.testing.assert_allclose(diff, np.broadcast_to(diff[:1], diff.shape), atol=1e-3)
    dec = codec.decode(codes) - codec.transforms[0].mean_
    exact_term = (x - codec.transforms[0].mean_) @ codec.transforms[0].mean_
    np.testing.assert_allclose(
        diff[0], exact_term - dec @ codec.transforms[0].mean_, atol=2e-3 * np.abs(exact_term).max()
    )


def test_serialization_round_trip(data):
    x, _ = data
    codec = Codec.from_spec("center,lvq3x5").fit(x)
    back = Codec.from_bytes(codec.to_bytes())
    assert back.spec == "center,lvq3x5"
    np.testing.assert_array_equal(back.encode(x[:100]), codec.encode(x[:100]))


@pytest.mark.parametrize("spec", ["lvq0x4", "lvq4x9", "lvq4x0", "lvq04x4"])
def test_bad_two_level_specs(spec):
    with pytest.raises(ValueError, match="lvq"):
        Codec.from_spec(spec)


def _exhaustive(codec, q, x, k):
    est = codec.score(q, codec.encode(x))
    return topk(est, k)


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_flat_index_levels(data, metric):
    x, q = data
    two = Index("center,lvq4x4", metric)
    two.add(x)
    one = Index("center,lvq4", metric)
    one.add(x)
    # without rerank: exactly the one-level index (the first level is that code)
    np.testing.assert_array_equal(two.search(q, 10).ids, one.search(q, 10).ids)
    # re-ranking every row: exactly the two-level codec's exhaustive ranking
    res = two.search(q, 10, rerank=len(x))
    xs, qs = (x, q) if metric == "ip" else (two._prepare(x, "X")[0], two._prepare(q, "q")[0])
    ids, scores = _exhaustive(two.codec, qs, xs, 10)
    np.testing.assert_array_equal(res.ids, ids)
    np.testing.assert_allclose(res.scores, scores, rtol=1e-5, atol=1e-5)
    assert two.memory["codes"] == one.memory["codes"]
    assert two.memory["rerank"] == 24 and two.bytes_per_vector == one.bytes_per_vector + 24


def test_l2_rerank_scores_are_negated_squared_distances(data):
    x, q = data
    index = Index("lvq4x8", "l2")  # uncentred: the estimate is <q, decoded> exactly
    index.add(x)
    res = index.search(q, 5, rerank=50)
    dec = index.codec.decode(index.codec.join_tiers(index._codes.view, index._rcodes.view))
    rows = np.searchsorted(np.sort(index.ids), res.ids)  # ids are 0..n-1 in storage order
    xr = x[rows]
    est = np.einsum("qkd,qd->qk", dec[rows], q)
    want = -((q**2).sum(1)[:, None] + (xr**2).sum(2) - 2 * est)
    np.testing.assert_allclose(res.scores, want, rtol=1e-4, atol=1e-3)


def test_ivf_residual_rerank_adds_the_centroid_term(data):
    x, q = data
    index = Index("center,lvq4x8", "ip", ivf=8)
    index.add(x)
    res = index.search(q, 10, rerank=len(x), nprobe=8)
    # reconstruct every stored vector: its list's centroid + decoded residual
    full = index.codec.join_tiers(index._codes.view, index._rcodes.view)
    recon = index.codec.decode(full) + index.centroids[index._row_lists()]
    order = np.argsort(index.ids)
    want_ids, want_scores = topk(q @ recon[order].T, 10)
    np.testing.assert_array_equal(res.ids, want_ids)
    np.testing.assert_allclose(res.scores, want_scores, rtol=1e-4, atol=1e-3)
    # and the second level improves the ranking over the first level alone
    exact = topk(q @ x.T, 10)[0]

    def hits(ids):
        return np.mean([len(set(a) & set(b)) for a, b in zip(ids, exact, strict=True)])

    assert hits(res.ids) > hits(index.search(q, 10, nprobe=8).ids)


def test_save_open_mmap_identical_and_info(tmp_path, data):
    x, q = data
    index = Index("center,lvq4x8", "cosine", ivf=4)
    index.add(x)
    index.remove(np.arange(0, 3000, 7))
    index.add(x[:100] * 2)
    want = index.search(q, 10, rerank=40, nprobe=4)
    path = tmp_path / "two.vpi"
    index.save(path)
    info = vecpress.info(path)
    assert info["rerank_spec"] is None and info["rerank_code_size"] == 48
    assert info["code_size"] == 30 and info["bytes_per_vector"] == 30 + 48 + 8
    for mmap in (True, False):
        got = vecpress.open(path, mmap=mmap).search(q, 10, rerank=40, nprobe=4)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.scores, want.scores)


def test_file_without_the_second_level_is_rejected(tmp_path, data, monkeypatch):
    # a well-formed file (checksums right) whose two-level codec lacks its second tier
    x, _ = data
    index = Index("lvq4x4", "ip")
    index.add(x[:50])
    first = index.memory["codes"]
    state = index.to_state()
    state.rerank_codes = None
    monkeypatch.setattr(
        vecpress.files.storage.IndexState, "tier_sizes", property(lambda s: (first, 0))
    )
    path = tmp_path / "a.vpi"
    with pytest.raises(RuntimeError, match="would not open again"):
        vecpress.files.storage.save(state, path)  # save refuses to write what open rejects
    monkeypatch.setattr(vecpress.files.storage, "_check_written", lambda tmp: None)
    vecpress.files.storage.save(state, path)  # written all the same, for open to reject it
    monkeypatch.undo()
    with pytest.raises(FormatError, match="second level"):
        vecpress.open(path)


def test_errors(data):
    x, q = data
    with pytest.raises(ValueError, match="two-level"):
        Index("center,lvq4x8", rerank_spec="f32")
    one = Index("center,lvq4", "ip")
    one.add(x[:100])
    with pytest.raises(ValueError, match="two-level spec"):
        one.search(q, 10, rerank=20)
    two = Index("lvq4x4", "ip")
    two.add(x[:100])
    with pytest.raises(ValueError, match="rerank must be >= k"):
        two.search(q, 10, rerank=5)
