"""Re-ranking scores candidates with the tier's own estimator (``Codec.score``).

A re-ranked search must rank its candidates exactly as an index of the re-ranking
codec would: for the unbiased codecs (``rq``, ``tqp``, ``kl``, ``qjl``) that is their
corrected estimator, not ``<q, decode(x)>`` (which differs by up to 0.3 for
``hd2,rq4`` and 2.7 for ``hd2,rq2`` on 64-d Gaussian rows).
"""

from __future__ import annotations

import numpy as np
import pytest

from vecpress import Codec, Index
from vecpress.search.topk import topk

#: one member of every codec family, as a re-ranking tier
TIERS = [
    "f32", "f16", "bf16", "e4m3", "int8", "int4", "center,lvq4", "hd2,rq2", "hd2,rq4",
    "center,hd2,rq8", "hd2,tq3", "hd2,tqp3", "kl3", "qjl128", "sign", "pq16x4", "pq8x8",
    "opq16x4", "pca32,hd2,rq4", "center,lvq2x4",
]  # fmt: skip


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2000, 64)).astype(np.float32)
    q = rng.standard_normal((40, 64)).astype(np.float32)
    return x, q


@pytest.mark.parametrize("spec", TIERS)
def test_score_candidates_is_score(data, spec):
    x, q = data
    codec = Codec.from_spec(spec, seed=0).fit(x)
    codes = codec.encode(x)
    full = codec.score(q, codes)
    rows = np.random.default_rng(1).integers(-1, x.shape[0], size=(q.shape[0], 50))
    got = codec.score_candidates(q, codes, rows)
    want = np.where(rows >= 0, np.take_along_axis(full, np.maximum(rows, 0), axis=1), -np.inf)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(full).max())


@pytest.mark.parametrize("tier", ["hd2,rq2", "hd2,rq4", "kl3", "hd2,tqp3", "qjl128"])
def test_a_full_depth_rerank_ranks_as_the_tier_alone(data, tier):
    """With every row a candidate, ``Index(first, rerank_spec=tier)`` returns the top k
    of the tier's ``Codec.score``: what an index of the tier alone returns."""
    x, q = data
    index = Index("int2", "ip", rerank_spec=tier)
    index.add(x)
    res = index.search(q, 10, rerank=x.shape[0])
    tier_codec = index.rerank_codec
    want_ids, want_scores = topk(tier_codec.score(q, tier_codec.encode(x)), 10)
    np.testing.assert_array_equal(res.ids, want_ids)
    np.testing.assert_allclose(res.scores, want_scores, rtol=1e-5, atol=1e-5)


def test_every_second_tier_goes_through_one_rerank_path(monkeypatch):
    """A rerank_spec tier and the second level of a two-level code are both a
    vecpress.search.scan.Tier re-scored by vecpress.search.scan.tier_scores (IndexRefine-style)."""
    import vecpress.search.scan as search_path

    calls = []
    original = search_path.tier_scores

    def spy(tier, *args):
        calls.append(tier.codec.spec)
        return original(tier, *args)

    monkeypatch.setattr(search_path, "tier_scores", spy)
    x = np.random.default_rng(3).standard_normal((400, 16)).astype(np.float32)
    for index in (
        Index("hd2,rq2", "ip", rerank_spec="f16"),
        Index("lvq2x4", "ip", ivf=4),
    ):
        index.add(x)
        index.search(x[:5], 3, rerank=20, **({"nprobe": 4} if index.is_ivf else {}))
    assert calls == ["f16", "lvq2x4"]
