"""``leanvec<d'>`` and ``leanvec-ood<d'>``: projections learned for the queries served."""

from __future__ import annotations

import numpy as np
import pytest

import vecpress
from vecpress import Codec, FormatError


@pytest.fixture(scope="module")
def ood():
    """Data whose variance lies mostly in dims 0-15, queries living in dims 8-31."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5000, 32)) * np.r_[np.full(16, 3.0), np.full(16, 0.7)]
    q = rng.standard_normal((800, 32)) * np.r_[np.full(8, 0.05), np.full(24, 1.0)]
    return x.astype(np.float32) + 0.5, q.astype(np.float32)


def ip_error(codec, x, q):
    return float(((codec.score(q, codec.encode(x)) - q @ x.T) ** 2).mean())


def test_ood_projection_serves_the_queries_better_than_pca(ood):
    x, q = ood
    train, test = q[:400], q[400:]
    pca = Codec.from_spec("pca12,f32").fit(x)
    lv = Codec.from_spec("leanvec-ood12,f32").fit(x, queries=train)
    # PCA keeps dims 0-15, which queries barely use; the OOD fit keeps what they use
    assert ip_error(lv, x, test) < 0.5 * ip_error(pca, x, test)
    a = lv.transforms[0].query_
    np.testing.assert_allclose(a @ a.T, np.eye(12), atol=1e-5)


def test_in_distribution_leanvec_is_pca(ood):
    x, q = ood
    pca = Codec.from_spec("pca10,f32").fit(x)
    lv = Codec.from_spec("leanvec10,f32").fit(x)
    np.testing.assert_allclose(
        lv.score(q[:20], lv.encode(x)), pca.score(q[:20], pca.encode(x)), rtol=1e-3, atol=1e-3
    )


def test_full_dimension_is_exact(ood):
    x, q = ood
    lv = Codec.from_spec("leanvec-ood32,f32").fit(x, queries=q)
    np.testing.assert_allclose(lv.score(q[:10], lv.encode(x)), q[:10] @ x.T, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(lv.decode(lv.encode(x[:20])), x[:20], atol=1e-3)


def test_ood_needs_queries_and_serialises(ood, tmp_path):
    x, q = ood
    with pytest.raises(ValueError, match=r"fit\(X, queries=Q\)"):
        Codec.from_spec("leanvec-ood8,rq4").fit(x)
    with pytest.raises(ValueError, match="queries"):
        Codec.from_spec("leanvec-ood8,rq4").fit(x, queries=q[:, :5])
    codec = Codec.from_spec("leanvec-ood8,hd2,rq8").fit(x, queries=q)
    again = Codec.from_bytes(codec.to_bytes())
    np.testing.assert_array_equal(again.encode(x[:30]), codec.encode(x[:30]))
    np.testing.assert_allclose(
        again.score(q[:3], codec.encode(x[:30])), codec.score(q[:3], codec.encode(x[:30]))
    )
    codec.transforms[0].query_ = codec.transforms[0].query_ * 2
    with pytest.raises(FormatError, match="orthonormal"):
        Codec.from_bytes(codec.to_bytes())
    with pytest.raises(ValueError, match="cannot keep 40 dimensions"):
        Codec.from_spec("leanvec40,f32").fit(x)


def test_an_index_trains_with_a_query_sample(ood, tmp_path):
    x, q = ood
    index = vecpress.Index("leanvec-ood12,hd2,rq8", metric="ip")
    with pytest.raises(ValueError, match="queries"):
        index.add(x)
    assert len(index) == 0
    index.train(x, queries=q[:400]).add(x)
    res = index.search(q[400:450], 10)
    codec = index.codec
    want = np.argsort(-codec.score(q[400:450], codec.encode(x)), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(res.ids, want)
    index.save(tmp_path / "lv.vpi")
    np.testing.assert_array_equal(
        vecpress.open(tmp_path / "lv.vpi").search(q[400:450], 10).ids, res.ids
    )
