"""Additive quantizers ``rvq<M>x<b>`` and ``lsq<M>x<b>``: faiss's codebooks and codes,
vecpress's scores, specs, bytes and searches."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from _util import assert_threads_code_as_one
from vecpress import Codec, FormatError, Index
from vecpress.codecs.quantizers import additive


def rows(n: int = 1500, d: int = 24, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * np.linspace(2, 0.3, d) * scale).astype(np.float32)


def faiss_twin(spec: str, d: int):
    """faiss's quantizer that ``spec`` names, with the same settings."""
    kind, m, b = spec[:3], int(spec[3:].split("x")[0]), int(spec.split("x")[1].split("-")[0])
    if kind == "rvq":
        q = faiss.ResidualQuantizer(d, m, b)
        if "-beam" in spec:
            q.max_beam_size = int(spec.split("-beam")[1])
        return q
    q = faiss.LocalSearchQuantizer(d, m, b)
    if "-ils" in spec:
        q.encode_ils_iters = int(spec.split("-ils")[1])
    return q


@pytest.mark.parametrize(
    "spec", ["rvq6x4", "rvq2x8", "rvq4x4-beam2", "lsq4x4", "lsq3x4-ils4", "lsq2x4"]
)
def test_codebooks_and_codes_are_faiss_own(spec):
    """Trained on the same rows, faiss's quantizer and vecpress's stage hold the same
    codebooks and give the same codes; decode is the sum of the codewords."""
    x = rows()
    train, test = x[:1000], x[1000:]
    codec = Codec.from_spec(spec, d=x.shape[1]).fit(train)
    twin = faiss_twin(spec, x.shape[1])
    if spec.startswith("lsq"):
        twin.nperts = min(twin.nperts, codec.quantizer.param)
    twin.train(train)
    if spec.startswith("rvq") and additive.beam_tables(codec.quantizer.param, codec.quantizer.bits):
        twin.use_beam_LUT = 1  # the setting vecpress encodes with
        twin.compute_codebook_tables()
    books = faiss.vector_to_array(twin.codebooks).reshape(codec.quantizer.centroids_.shape)
    assert np.array_equal(codec.quantizer.centroids_, books)
    codes = codec.encode(test)
    assert np.array_equal(codes, twin.compute_codes(test))
    assert np.allclose(codec.decode(codes), twin.decode(codes), atol=1e-5)
    m, b = codec.quantizer.param, codec.quantizer.bits
    assert codec.code_size == (m * b + 7) // 8


def test_beam_tables_encode_as_the_plain_beam_search():
    """The residual quantizer encodes with faiss's beam look-up tables (where they fit,
    ``additive.beam_tables``): the codes of the plain beam search on these rows, and
    the same reconstruction error to float rounding."""
    x = rows(2500, 32, seed=3)
    codec = Codec.from_spec("rvq8x8", d=32).fit(x[:2000])
    assert additive.beam_tables(8, 8) and not additive.beam_tables(1024, 8)
    plain = codec.quantizer._faiss_quantizer()
    faiss.copy_array_to_vector(codec.quantizer.centroids_.ravel(), plain.codebooks)
    plain.is_trained = True
    test = x[2000:]
    codes, ref = codec.encode(test), plain.compute_codes(test)
    same = (codes == ref).all(axis=1)
    assert same.mean() > 0.99
    err = ((codec.decode(codes) - test) ** 2).sum()
    ref_err = ((codec.decode(ref) - test) ** 2).sum()
    assert abs(err - ref_err) <= 1e-4 * ref_err


@pytest.mark.parametrize("spec", ["rvq6x4", "rvq2x8", "lsq4x4", "hd2,rvq4x4", "pca12,rvq3x4"])
def test_score_is_the_inner_product_with_the_decoded_rows(spec):
    """Float tables for 4-bit codes too: the score is <q, decode(codes)> to float32
    rounding (fast-scan's shared 8-bit scale would round the small codebooks away)."""
    x = rows()
    codec = Codec.from_spec(spec, d=x.shape[1]).fit(x[:1000])
    codes = codec.encode(x[1000:])
    q = rows(7, seed=1)
    exact = q.astype(np.float64) @ codec.decode(codes).T.astype(np.float64)
    got = codec.score(q, codes)
    assert got.dtype == np.float32
    assert np.abs(got - exact).max() <= 1e-5 * np.abs(exact).max() + 1e-5


def test_plain_training_is_faiss_plain_kmeans():
    """``RVQ(..., progressive=False)`` holds the codebooks of faiss's quantizer trained
    with one plain k-means a codebook (``Train_default``), not those of faiss's default
    progressive-dimension training, and codes the rows about as well."""
    x = rows(2500, 24, seed=4)
    train, test = x[:2000], x[2000:]
    stages = {}
    for progressive in (True, False):
        stage = additive.RVQ(3, 8, progressive=progressive)
        stage.setup(24, np.random.default_rng(0))
        stage.fit(train)
        stages[progressive] = stage
    twin = faiss.ResidualQuantizer(24, 3, 8)
    twin.train_type = faiss.ResidualQuantizer.Train_default
    twin.train(train)
    books = faiss.vector_to_array(twin.codebooks).reshape(stages[False].centroids_.shape)
    assert np.array_equal(stages[False].centroids_, books)
    assert not np.array_equal(stages[True].centroids_, books)
    err = {
        p: float(np.square(st.decode(st.encode(test)) - test).mean()) for p, st in stages.items()
    }
    assert err[False] <= 1.1 * err[True]


def test_more_codebooks_lower_the_error_and_beam_helps():
    """Each added codebook codes what the others left: the error falls with M; a
    wider beam finds sums at least as good on average."""
    x = rows(2000, 32, seed=2)
    errs = {}
    for spec in ("rvq2x4", "rvq4x4", "rvq8x4", "rvq8x4-beam1"):
        codec = Codec.from_spec(spec, d=32).fit(x[:1500])
        errs[spec] = float(np.square(codec.decode(codec.encode(x[1500:])) - x[1500:]).mean())
    assert errs["rvq2x4"] > errs["rvq4x4"] > errs["rvq8x4"]
    assert errs["rvq8x4"] <= errs["rvq8x4-beam1"]


def test_specs_parse_print_and_refuse():
    assert Codec.from_spec("rvq48x8").spec == "rvq48x8"
    assert Codec.from_spec("rvq48x8-beam5").spec == "rvq48x8"  # faiss's default beam
    assert Codec.from_spec("center,lsq16x4-ils32").spec == "center,lsq16x4-ils32"
    for bad in ("rvq8x5", "rvq0x8", "rvq8x8-ils3", "lsq8x8-beam3", "rvq08x8", "rvq8x8-beam0",
                "rvq8x8-beam999", "rvq8x8,center"):  # fmt: skip
        with pytest.raises(ValueError):
            Codec.from_spec(bad)


def test_bytes_round_trip_and_damage():
    x = rows()
    codec = Codec.from_spec("center,rvq4x4-beam3", d=x.shape[1]).fit(x[:1000])
    blob = codec.to_bytes()
    again = Codec.from_bytes(blob)
    assert again.spec == "center,rvq4x4-beam3"
    assert np.array_equal(again.encode(x[1000:]), codec.encode(x[1000:]))
    damaged = bytearray(blob)
    damaged[-40] ^= 0xFF
    with pytest.raises(FormatError):
        Codec.from_bytes(bytes(damaged))


def test_lsq_codes_repeat_for_the_same_rows():
    """faiss's LSQ encoder draws its random starts for the rows of one call in sequence:
    the same rows encoded the same way give the same codes (a fresh codec too)."""
    x = rows()
    codec = Codec.from_spec("lsq4x4", d=x.shape[1]).fit(x[:1000])
    a = codec.encode(x[1000:])
    assert np.array_equal(a, codec.encode(x[1000:]))
    assert np.array_equal(a, Codec.from_bytes(codec.to_bytes()).encode(x[1000:]))


def test_training_rows_are_capped_with_the_seed(monkeypatch):
    monkeypatch.setattr(additive, "TRAIN_ROWS", 400)
    x = rows(1200)
    a = Codec.from_spec("rvq3x4", d=x.shape[1], seed=5).fit(x)
    b = Codec.from_spec("rvq3x4", d=x.shape[1], seed=5).fit(x)
    c = Codec.from_spec("rvq3x4", d=x.shape[1], seed=6).fit(x)
    assert np.array_equal(a.quantizer.centroids_, b.quantizer.centroids_)
    assert not np.array_equal(a.quantizer.centroids_, c.quantizer.centroids_)
    with pytest.raises(ValueError, match="at least 256 training rows, found 100"):
        Codec.from_spec("rvq2x8", d=x.shape[1]).fit(x[:100])


@pytest.mark.parametrize("scale", [1e-30, 1e-12, 1e12])
def test_rows_far_from_unit_scale(scale):
    """Codebooks learned and rows coded at any scale (faiss sees rows brought near 1)."""
    x = rows(1200, scale=scale)
    codec = Codec.from_spec("rvq4x4", d=x.shape[1]).fit(x[:1000])
    codes = codec.encode(x[1000:])
    err = float(np.square(codec.decode(codes) / scale - x[1000:] / scale).mean())
    assert err < 0.5 * float(np.square(x[1000:] / scale).mean())
    s = codec.score(x[:3], codes)
    assert np.isfinite(s).all()


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_index_search_ranks_by_the_codec_score(metric, tmp_path):
    import vecpress

    x = rows(1200)
    index = Index("rvq6x4", metric, rerank_spec="f32")
    index.add(x)
    q = rows(5, seed=3)
    res = index.search(q, 10)
    qq = q / np.linalg.norm(q, axis=1, keepdims=True) if metric == "cosine" else q
    xx = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
    codec = index.codec
    est = codec.score(qq, codec.encode(xx)).astype(np.float64)
    if metric == "l2":
        est = 2 * est - np.square(xx.astype(np.float64)).sum(axis=1)
    want = np.argsort(-est, axis=1, kind="stable")[:, :10]
    assert (res.ids == want).mean() > 0.98  # ties and float32 rounding aside
    index.save(tmp_path / "i.vpi")
    again = vecpress.open(tmp_path / "i.vpi").search(q, 10)
    assert np.array_equal(again.ids, res.ids)
    exact = index.search(q, 10, rerank=300)
    assert (exact.ids[:, 0] == np.argsort(-(qq @ xx.T if metric != "l2" else
            2 * qq @ xx.T - np.square(xx).sum(1)), axis=1)[:, 0]).all()  # fmt: skip


def test_in_the_advisors_full_space_with_their_cost():
    """The full grid holds 8-bit residual quantizers at 0.5, 1 and 2 bits per dimension,
    and the time budget knows what they cost: minutes where rq takes seconds."""
    from vecpress.advisor.bench import GRIDS, family_specs
    from vecpress.advisor.cost import build_seconds, pair_seconds

    assert "rvq" in GRIDS["full"]["families"] and "rvq" not in GRIDS["default"]["families"]
    for d in (50, 384):
        specs = family_specs("rvq", d)
        bits = [int(s[3:].split("x")[0]) * 8 / d for s in specs]  # M bytes a row
        assert bits == pytest.approx([0.5, 1, 2], rel=0.05)
        assert all(Codec.from_spec(s).spec == s for s in specs)
    rq = build_seconds("center,hd2,rq4", 100_000, 384)
    rvq = build_seconds("rvq48x8", 100_000, 384)
    assert rvq > 30 * rq
    assert build_seconds("rvq48x8-beam16", 100_000, 384) > rvq
    assert build_seconds("lsq48x8", 100_000, 384) > rvq
    assert pair_seconds("rvq48x4", 384, 24) > pair_seconds("pq48x4", 384, 24)  # no fast-scan


def test_two_threads_encode_and_score_as_one():
    """The faiss coder is built on first use: two threads racing to build it and
    encoding and scoring at once get what one thread gets."""
    x = rows(1600)
    blob = Codec.from_spec("rvq4x4", d=x.shape[1]).fit(x[:1000]).to_bytes()
    assert_threads_code_as_one(blob, x[1000:], x[:5])
