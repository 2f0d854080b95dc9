"""Product quantization stages ``pq<M>x<b>`` and ``opq<M>x<b>``."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

import vecpress
from vecpress import Codec, FormatError, NotFittedError
from vecpress.codecs.quantizers.pq import pack_codes, unpack_codes, usage_entropy


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(5)
    # correlated, anisotropic: a random basis with a decaying spectrum
    basis, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    return (rng.standard_normal((6000, 32)) * np.linspace(3, 0.2, 32)) @ basis.T


@pytest.mark.parametrize("spec", ["pq8x8", "pq8x4", "pq5x4", "opq8x4"])
def test_scores_are_the_inner_products_of_the_decoded_vectors(x, spec):
    d = 30 if spec == "pq5x4" else 32
    xs = np.ascontiguousarray(x[:, :d], np.float32)
    codec = Codec.from_spec(spec).fit(xs)
    codes = codec.encode(xs)
    m, bits = codec.quantizer.param, codec.quantizer.bits
    assert codes.shape == (len(xs), (m * bits + 7) // 8) == (len(xs), codec.code_size)
    q = xs[:7]
    exact = q @ codec.decode(codes).T
    np.testing.assert_allclose(codec.quantizer.float_score(q, codes), exact, rtol=1e-4, atol=1e-4)
    if bits == 8:
        np.testing.assert_allclose(codec.score(q, codes), exact, rtol=1e-4, atol=1e-4)
    else:  # fast-scan: tables rounded to 8 bits, each entry within scale / 2
        lut = codec.quantizer.tables(q)
        scale = (lut.max(2) - lut.min(2)).max(1) / 255
        bound = m * scale / 2 + 1e-4 * np.abs(exact).max()
        assert (np.abs(codec.score(q, codes) - exact) <= bound[:, None]).all()
    # a decoded vector is a codeword: coding it again gives the same code
    np.testing.assert_array_equal(codec.encode(codec.decode(codes[:500])), codes[:500])


@pytest.mark.parametrize("spec", ["pq8x4", "opq8x4", "pq8x8", "opq16x8"])
def test_a_query_scores_the_same_alone_as_in_any_batch(x, spec):
    """Tables are computed query by query in a fixed order: a BLAS product of a batch
    sums in an order set by the batch's shape, and one unit in the last place can cross
    a rounding step of fast-scan's 8-bit tables (a whole step of the score)."""
    xs = np.ascontiguousarray(x, np.float32)
    codec = Codec.from_spec(spec, seed=0).fit(xs[:1500])  # (opq16x8 trains 5x longer on 6000)
    codes = codec.encode(xs[:1000])
    q = np.random.default_rng(1).standard_normal((67, 32)).astype(np.float32)
    batch = codec.score(q, codes)
    for i in (0, 13, 66):
        np.testing.assert_array_equal(codec.score(q[i : i + 1], codes)[0], batch[i])
    np.testing.assert_array_equal(codec.score(q[5:37], codes), batch[5:37])
    # the tables are <y, centroid> of the rotated query, to float32 rounding
    quant = codec.quantizer
    y = (q @ quant.rotation_.T if spec.startswith("opq") else q).astype(np.float64)
    c = quant.centroids_.astype(np.float64)
    want = np.einsum("imj,mcj->imc", y.reshape(67, quant.param, -1), c)
    np.testing.assert_allclose(quant.tables(q), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("bits", [4, 8])
def test_codes_are_faiss_codes(x, bits):
    """Same training rows, same codebooks and codes as faiss's ProductQuantizer."""
    xs = np.ascontiguousarray(x, np.float32)
    pq = faiss.ProductQuantizer(32, 8, bits)
    pq.train(xs)
    ours = Codec.from_spec(f"pq8x{bits}").fit(xs)
    np.testing.assert_array_equal(ours.encode(xs), pq.compute_codes(xs))


def test_opq_rotation_is_orthogonal_and_lowers_distortion(x):
    xs = np.ascontiguousarray(x, np.float32)
    pq = Codec.from_spec("pq4x4").fit(xs)
    opq = Codec.from_spec("opq4x4").fit(xs)
    r = opq.quantizer.rotation_
    np.testing.assert_allclose(r @ r.T, np.eye(32), atol=1e-4)

    def mse(c):
        return float(((c.decode(c.encode(xs)) - xs) ** 2).sum(1).mean())

    # OPQ minimises the same distortion over rotations too: it must not do worse
    assert mse(opq) < 0.95 * mse(pq)


def test_packing_round_trips_and_entropy():
    rng = np.random.default_rng(0)
    for m in (1, 4, 5):
        idx = rng.integers(0, 16, (50, m)).astype(np.uint8)
        np.testing.assert_array_equal(unpack_codes(pack_codes(idx, 4), m, 4), idx)
    flat = pack_codes(np.arange(256, dtype=np.uint8).reshape(-1, 1), 8)
    assert usage_entropy(flat, 1, 8)[0] == pytest.approx(8.0)
    collapsed = np.zeros((100, 2), np.uint8)
    np.testing.assert_array_equal(usage_entropy(collapsed, 4, 4), [0, 0, 0, 0])


def test_serialization_round_trip_and_tampering(x):
    xs = np.ascontiguousarray(x, np.float32)
    for spec in ("pq8x4", "opq8x4"):
        codec = Codec.from_spec(spec).fit(xs[:2000])
        again = Codec.from_bytes(codec.to_bytes())
        assert again.spec == spec
        np.testing.assert_array_equal(again.encode(xs[:100]), codec.encode(xs[:100]))
    codec.quantizer.rotation_ = codec.quantizer.rotation_ * 2  # not orthogonal any more
    with pytest.raises(FormatError, match="orthogonal"):
        Codec.from_bytes(codec.to_bytes())


def test_spec_errors_and_unfitted_use(x):
    assert Codec.from_spec("OPQ16x4").spec == "opq16x4"
    for bad in ("pq8x5", "pq0x8", "pq8x", "opqx8"):
        with pytest.raises(ValueError, match="pq"):
            Codec.from_spec(bad)
    with pytest.raises(ValueError, match="multiple of M=5"):
        Codec.from_spec("pq5x8").fit(np.ones((300, 32), np.float32))
    with pytest.raises(ValueError, match="at least 256 training rows"):
        Codec.from_spec("pq4x8").fit(np.random.default_rng(0).standard_normal((100, 32)))
    with pytest.raises(NotFittedError):
        Codec.from_spec("pq4x8", d=32).encode(np.ones((2, 32), np.float32))


@pytest.mark.parametrize("spec", ["pq8x8", "pq16x4"])
def test_an_index_of_pq_codes_searches_and_saves(tmp_path, x, spec):
    xs = np.ascontiguousarray(x, np.float32)
    index = vecpress.Index(spec, metric="ip")
    index.add(xs)
    res = index.search(xs[:20], 5)
    codec = index.codec
    want = np.argsort(-codec.score(xs[:20], codec.encode(xs)), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(res.ids, want)
    index.save(tmp_path / "pq.vpi")
    again = vecpress.open(tmp_path / "pq.vpi")
    np.testing.assert_array_equal(again.search(xs[:20], 5).ids, res.ids)


@pytest.mark.parametrize("ivf", [None, 8])
def test_fastscan_search_path_equals_the_generic_path(monkeypatch, x, ivf):
    """4-bit PQ searches by fused fast-scan + top-k; the result is the ranking of
    ``codec.score`` (+ the IVF list offsets), which the generic path computes."""
    from vecpress.search import scan as search

    xs = np.ascontiguousarray(x, np.float32)
    index = vecpress.Index("pq16x4", metric="cosine", ivf=ivf)
    index.add(xs)
    fast = index.search(xs[:40], 10, nprobe=4 if ivf else None)
    monkeypatch.setattr(search, "is_fastscan", lambda codec: False)
    index._stage = None
    slow = index.search(xs[:40], 10, nprobe=4 if ivf else None)
    np.testing.assert_array_equal(fast.ids, slow.ids)
    np.testing.assert_allclose(fast.scores, slow.scores, rtol=1e-6, atol=1e-6)
