"""The ``pca<d'>`` transform: centre, project onto the top d' principal directions."""

from __future__ import annotations

import numpy as np
import pytest

import vecpress
from vecpress import Codec, FormatError, NotFittedError
from vecpress.search.topk import topk


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(8)
    basis, _ = np.linalg.qr(rng.standard_normal((48, 48)))
    z = rng.standard_normal((4000, 48)) * np.geomspace(4, 0.05, 48)
    return (z @ basis.T + 0.7).astype(np.float32)


def test_full_dimension_pca_keeps_inner_products(x):
    """d' = d: an exact rotation plus the mean offset, so f32 scores are the products."""
    codec = Codec.from_spec("pca48,f32").fit(x)
    q = x[:9] * 1.3
    np.testing.assert_allclose(codec.score(q, codec.encode(x)), q @ x.T, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(codec.decode(codec.encode(x[:50])), x[:50], atol=1e-4)


def test_reduction_loses_exactly_the_discarded_variance(x):
    keep = 20
    codec = Codec.from_spec(f"pca{keep},f32").fit(x)
    rec = codec.decode(codec.encode(x))
    xc = x.astype(np.float64) - x.mean(axis=0)
    sv = np.linalg.svd(xc, compute_uv=False)
    want = (sv[keep:] ** 2).sum() / len(x)  # Eckart-Young: the optimum rank-keep error
    got = ((rec - x) ** 2).sum(axis=1).mean()
    assert got == pytest.approx(want, rel=1e-3)
    assert codec.code_size == 4 * keep


def test_exactly_low_rank_data_is_scored_exactly():
    rng = np.random.default_rng(1)
    low = (rng.standard_normal((2000, 6)) @ rng.standard_normal((6, 32)) + 2).astype(np.float32)
    codec = Codec.from_spec("pca6,f32").fit(low)
    q = rng.standard_normal((5, 32)).astype(np.float32)
    np.testing.assert_allclose(codec.score(q, codec.encode(low)), q @ low.T, rtol=1e-3, atol=1e-2)


def test_pca_before_a_quantizer_in_an_index(tmp_path, x):
    index = vecpress.Index("pca24,hd2,rq4", metric="ip")
    index.add(x)
    res = index.search(x[:30], 10)
    codec = index.codec
    want, _ = topk(codec.score(x[:30], codec.encode(x)), 10)
    np.testing.assert_array_equal(res.ids, want)
    assert index.memory["codes"] == Codec.code_size_of("pca24,hd2,rq4", 48) == 16
    index.save(tmp_path / "p.vpi")
    np.testing.assert_array_equal(vecpress.open(tmp_path / "p.vpi").search(x[:30], 10).ids, res.ids)


def test_serialisation_and_tampering(x):
    codec = Codec.from_spec("pca16,center,rq8").fit(x)
    again = Codec.from_bytes(codec.to_bytes())
    np.testing.assert_array_equal(again.encode(x[:20]), codec.encode(x[:20]))
    codec.transforms[0].components_ = codec.transforms[0].components_ * 1.5
    with pytest.raises(FormatError, match="orthonormal"):
        Codec.from_bytes(codec.to_bytes())


def test_errors(x):
    with pytest.raises(ValueError, match="cannot keep 60 dimensions of d=48"):
        Codec.from_spec("pca60,rq4").fit(x)
    with pytest.raises(ValueError, match="pca"):
        Codec.from_spec("pca0,rq4")
    with pytest.raises(ValueError, match="only the last stage may be one"):
        Codec.from_spec("rq4,pca8")
    with pytest.raises(NotFittedError):
        Codec.from_spec("pca8,f32", d=48).encode(x[:2])


def test_leverage_weighted_fit_keeps_the_mean_unbiased(x):
    codec = Codec.from_spec("pca8,f32").fit(x, sample=1500, sampling="leverage")
    se = x.std(axis=0) / np.sqrt(1500)
    assert (np.abs(codec.transforms[0].mean_ - x.mean(axis=0)) < 6 * se + 1e-3).all()
