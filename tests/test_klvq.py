"""``klvq<b>``: transform coding with a residual quantizer on the leading principal axes
(its split, codes, scores, correction, bytes, bad input and searches)."""

from __future__ import annotations

import functools

import faiss
import numpy as np
import pytest

from _util import assert_threads_code_as_one
from vecpress import Codec, FormatError, Index
from vecpress.codecs.quantizers import transform_vq
from vecpress.codecs.quantizers.transform_vq import GRID_RATE, KLVQ, SMALL_ROW, row_bytes, split
from vecpress.kernels.scan import grid_queries, int_scan, query_limbs


def rows(n: int = 1500, d: int = 192, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * np.geomspace(3, 0.1, d) * scale).astype(np.float32)


@pytest.fixture(scope="module")
def fitted():
    x = rows()
    return Codec.from_spec("klvq1", d=x.shape[1]).fit(x[:1000]), x


def test_split_keeps_within_the_budget_and_gives_the_block_half_the_codes():
    """A row takes floor(d b / 8) bytes, the factor included; a row of at most SMALL_ROW
    bytes is one block without a factor, one of GRID_RATE bits an axis or more all grid."""
    for d, b in ((384, 1), (384, 2), (384, 4), (384, 8), (50, 1), (50, 2), (96, 2), (8, 8)):
        total = max(1, d * b // 8)
        fb = 2 if b <= 4 else 4
        lead, m, tail = split(d, total, fb)
        size = Codec.code_size_of(f"klvq{b}", d)
        assert size == row_bytes(d, b) == total
        if total <= SMALL_ROW:
            assert (lead, m, tail) == (d, total, 0)
        elif 8 * (total - fb) >= GRID_RATE * d:
            assert (lead, m, tail) == (0, 0, total - fb)
        else:
            assert m == (total - fb) // 2 and lead == 4 * m < d and m + tail + fb == total


def test_a_small_row_is_one_weighted_block_without_a_factor():
    """At d = 32, klvq2's 8 bytes are 8 codebooks over every axis: no tail, no factor, and
    the scores are <q, decode(codes)> (tables of the query over the weighted axes)."""
    x = rows(1500, d=32)
    codec = Codec.from_spec("klvq2", d=32).fit(x[:1000])
    quant = codec.quantizer
    assert (quant.lead_dims, quant.lead_bytes, codec.code_size) == (32, 8, 8)
    assert quant.row_fields == () and quant._coded == 0
    codes = codec.encode(x[1000:])
    q = rows(5, d=32, seed=9)
    exact = q.astype(np.float64) @ codec.decode(codes).T.astype(np.float64)
    assert np.allclose(codec.score(q, codes), exact, rtol=1e-4, atol=1e-4 * np.abs(exact).max())
    # the weights lam_j ** LEAD_WEIGHT: wider on the leading axes, geometric mean 1
    w = quant._lead_w
    assert (np.diff(w) <= 0).all() and w[0] > w[-1] and np.isclose(np.log(w).mean(), 0)


def test_block_codes_are_faiss_residual_codes_of_the_leading_coordinates(fitted):
    """The first M bytes are what faiss's residual quantizer (the same codebooks, the
    same beam) gives the rows' leading principal coordinates, each axis weighted."""
    codec, x = fitted
    quant = codec.quantizer
    lead, m = quant.lead_dims, quant.lead_bytes
    rq = faiss.ResidualQuantizer(lead, m, 8)
    rq.max_beam_size = 5
    faiss.copy_array_to_vector(quant.lead_.centroids_.ravel(), rq.codebooks)
    rq.is_trained = True
    z = (x[1000:].astype(np.float64) - quant.mean_) @ quant.axes_[:, :lead]
    z = (z * quant._lead_w).astype(np.float32)  # the weighted block coordinates
    codes = codec.encode(x[1000:])
    assert np.array_equal(codes[:, :m], rq.compute_codes(np.ascontiguousarray(z)))


def test_score_is_tables_plus_the_tail_grid_form(fitted):
    """score = <q A_lead, block reconstruction> + f <q A_tail, tail reconstruction> +
    <q, mu> = <q, decode(codes)>, up to the 8-bit rounding of the tail's query part,
    whose error is at most f * sum_j |c_j - h_j| * (qscale / 2) a row."""
    codec, x = fitted
    quant = codec.quantizer
    codes = codec.encode(x[1000:])
    q = rows(6, seed=4)
    exact = q.astype(np.float64) @ codec.decode(codes).T.astype(np.float64)
    got = codec.score(q, codes)
    assert got.dtype == np.float32 and got.shape == (6, 500)
    w = (q @ quant._tail_axes) * quant._step32
    qscale = np.abs(w).max(axis=1) / 127
    e = quant._tail_coordinates(codes) / quant._step32  # f (c - h)
    bound = qscale[:, None] / 2 * np.abs(e).sum(axis=1)[None, :]
    assert (np.abs(got - exact) <= bound + 1e-4 * np.abs(exact).max()).all()
    assert np.abs(got - exact).max() > 0  # the tail's query part is rounded


@pytest.mark.parametrize(
    ("spec", "d"), [("klvq1", 192), ("klvq1", 50), ("klvq2", 192), ("klvq6", 64)]
)
def test_score_equals_the_unpacked_integer_scan_and_one_query_equals_many(
    spec, d, monkeypatch, request
):
    """The scan's per-byte integer tables and table sums (a block and a tail, a single
    block, all grid, two query limbs) give the very floats of the unpacked integer scan
    (``int_scan``) plus the block's tables summed in codebook order; a subset of the
    queries through ``score_prepared``, and tables built a few queries at a time (over
    the memory bound), give the same floats."""
    if (spec, d) == ("klvq1", 192):  # the module's fitted codec: a block and a tail
        codec, x = request.getfixturevalue("fitted")
    else:  # (400 rows: the block's training is most of the time)
        x = rows(900, d)
        codec = Codec.from_spec(spec, d=d).fit(x[:400])
    quant = codec.quantizer
    codes = codec.encode(x[-500:])
    q = rows(7, d, seed=9)
    got = quant.score(q, codes)
    m, k = quant.lead_bytes, quant._coded
    want = np.empty_like(got)
    t = (q.astype(np.float64) @ quant.mean_).astype(np.float32)
    if k:
        w = np.ascontiguousarray((q @ quant._tail_axes) * quant._step32, np.float32)
        qi, qs, off = grid_queries(w, quant._half, np.zeros(7, np.float32), quant.param)
        f = quant.get_fields(codes, "f")[0]
        int_scan(
            codes, quant.param, k, qi, qs, off, f, np.ones_like(f), t, want,
            limbs=query_limbs(quant.param), layout=quant._layout_rows,
        )  # fmt: skip
    else:
        want[:] = t[:, None]
    if m:
        lut = quant.lead_.tables(q @ quant._lead_axes)
        acc = np.zeros_like(want)
        for mm in range(m):
            acc += lut[:, mm, codes[:, mm]]
        want += acc
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        quant.score_prepared(quant.prepare(q), [5, 2], codes), got[[5, 2]]
    )
    if quant._coded:  # tables over the memory bound: built three queries at a time
        monkeypatch.setattr(transform_vq, "TABLE_BYTES", 3 * quant._table_bytes)
        assert quant.prepare(q).itab is None
        np.testing.assert_array_equal(quant.score(q, codes), got)
        monkeypatch.undo()
    # one query at a time: BLAS's products of one query row round unlike a batch's
    one = np.concatenate([quant.score(q[i : i + 1], codes) for i in range(7)])
    np.testing.assert_allclose(one, got, rtol=1e-5, atol=1e-5 * np.abs(got).max())


def test_tail_correction_makes_the_coded_part_exact_on_the_row_itself(fitted):
    """f = |z_c|² / <ẑ, z_c>: the tail's scaled reconstruction has the row's own inner
    product with its coded coordinates, exactly (float rounding aside)."""
    codec, x = fitted
    quant = codec.quantizer
    codes = codec.encode(x[1000:])
    zc = (x[1000:].astype(np.float64) - quant.mean_) @ quant._tail_axes.astype(np.float64)
    fz = quant._tail_coordinates(codes).astype(np.float64)
    assert np.allclose((fz * zc).sum(1), (zc * zc).sum(1), rtol=2e-3)  # f is float16


def test_more_bits_and_a_wider_beam_lower_the_score_error():
    """Each added bit per dimension lowers the score error (klvq1 split, klvq2 and klvq4
    all grid at d = 192); a wider beam finds block codes at least as good on average."""
    x = rows(2500, seed=2)
    q = rows(40, seed=5)
    exact = q.astype(np.float64) @ x[2000:].T.astype(np.float64)
    errs = {}
    for spec in ("klvq1", "klvq2", "klvq4", "klvq1-beam1"):
        codec = Codec.from_spec(spec, d=192).fit(x[:2000])
        errs[spec] = float(np.square(codec.score(q, codec.encode(x[2000:])) - exact).mean())
    assert errs["klvq1"] > errs["klvq2"] > errs["klvq4"]
    assert errs["klvq1"] <= errs["klvq1-beam1"]


def test_a_row_of_many_bits_an_axis_is_all_grid():
    """klvq2 at d = 192: 46 bytes of codes give 1.9 bits an axis, past GRID_RATE: no block,
    kl's grid over every axis within the row, no codebooks stored; scores are
    <q, decode(codes)> up to the 8-bit rounding of the query; bytes round trip."""
    x = rows(1500)
    codec = Codec.from_spec("klvq2", d=192).fit(x[:1000])
    quant = codec.quantizer
    assert (quant.lead_dims, quant.lead_bytes, codec.code_size) == (0, 0, 48)
    assert quant.lead_ is None and quant.arrays()["codebooks"].shape == (0, 256, 0)
    codes = codec.encode(x[1000:])
    q = rows(5, seed=9)
    exact = q.astype(np.float64) @ codec.decode(codes).T.astype(np.float64)
    got = codec.score(q, codes)
    assert np.abs(got - exact).max() < 0.02 * np.abs(exact).max()
    again = Codec.from_bytes(codec.to_bytes())
    assert np.array_equal(again.encode(x[1000:]), codes)
    assert np.array_equal(again.score(q, codes), got)


def test_specs_parse_print_and_refuse():
    assert Codec.from_spec("klvq2").spec == "klvq2"
    assert Codec.from_spec("klvq2-beam5").spec == "klvq2"  # the default beam
    assert Codec.from_spec("pca16, klvq1-beam16").spec == "pca16,klvq1-beam16"
    for bad in ("klvq0", "klvq9", "klvq02", "klvq2-beam0", "klvq2-beam257", "klvq2-ils3",
                "klvq2,center"):  # fmt: skip
        with pytest.raises(ValueError):
            Codec.from_spec(bad)


def test_bytes_round_trip_and_damage(fitted):
    codec, x = fitted
    blob = codec.to_bytes()
    again = Codec.from_bytes(blob)
    assert again.spec == codec.spec
    codes = codec.encode(x[1000:])
    assert np.array_equal(again.encode(x[1000:]), codes)
    assert np.array_equal(again.score(x[:4], codes), codec.score(x[:4], codes))
    damaged = bytearray(blob)
    damaged[-40] ^= 0xFF
    with pytest.raises(FormatError):
        Codec.from_bytes(bytes(damaged))


def test_restored_state_is_checked(fitted):
    """Arrays that no fit could give are refused by name, whatever the checksum says."""
    codec, _ = fitted
    quant = codec.quantizer
    config = quant.config()
    good = quant.arrays()

    def restore(**changes):
        fresh = KLVQ(quant.param)
        fresh.restore(config, {**good, **changes})
        return fresh

    assert np.array_equal(restore().lead_.centroids_, quant.lead_.centroids_)
    with pytest.raises(ValueError, match="orthonormal"):
        restore(axes=(good["axes"] * 2).astype(np.float32))
    with pytest.raises(ValueError, match="non-increasing"):
        restore(lam=good["lam"][::-1].copy())
    with pytest.raises(ValueError, match="NaN or Inf"):
        restore(codebooks=np.full_like(good["codebooks"], np.nan))
    with pytest.raises(ValueError, match="tail codes take"):
        restore(bits=np.full_like(good["bits"], 8))
    with pytest.raises(ValueError, match="codebooks"):
        restore(codebooks=good["codebooks"][:1])
    for weight in (None, 0.0):  # a code of the first layout (no weights), or other weights
        fresh = KLVQ(quant.param)
        with pytest.raises(ValueError, match="lead_weight"):
            fresh.restore({**config, "lead_weight": weight}, good)
    with pytest.raises(ValueError, match="beam"):
        KLVQ(quant.param, beam=7).restore(config, good)


def test_bad_input_is_refused():
    x = rows(600)
    with pytest.raises(ValueError, match=r"at least 256 training rows .*found 100"):
        Codec.from_spec("klvq1", d=192).fit(x[:100])
    codec = Codec.from_spec("klvq1", d=192).fit(x)
    bad = x[:5].copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError):
        codec.encode(bad)
    with pytest.raises(ValueError):
        codec.encode(x[:5, :16])
    with pytest.raises(ValueError):
        Codec.from_spec("klvq2", d=16).fit(x)


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e12])
@pytest.mark.parametrize(("spec", "d"), [("klvq1", 192), ("klvq2", 32), ("klvq2", 192)])
def test_rows_far_from_unit_scale(scale, spec, d):
    """The block trains and codes at unit scale, the tail's scale search too: scaled rows
    are scored as well as the rows themselves, with finite scores, in each layout (split,
    one block, all grid)."""
    assert _scaled_score_error(spec, d, scale) < 1.5 * _scaled_score_error(spec, d, 1.0) + 1e-9


@functools.cache
def _scaled_score_error(spec: str, d: int, s: float) -> float:
    """Mean squared error of ``spec``'s scores of 200 rows, fitted and coded at ``s``
    times their scale, against the exact scores at unit scale (each fit made once)."""
    x = rows(800, d=d)
    exact = x[:5].astype(np.float64) @ x[600:].T.astype(np.float64)
    codec = Codec.from_spec(spec, d=d).fit(x[:600] * s)
    got = codec.score(x[:5], codec.encode(x[600:] * s)).astype(np.float64) / s
    assert np.isfinite(got).all()
    return float(np.square(got - exact).mean())


def test_tiny_dimensions_code_every_axis_in_the_block():
    """d = 4 at 8 bits: the block covers every axis, the tail is empty."""
    x = rows(800, d=4)
    codec = Codec.from_spec("klvq8", d=4).fit(x)
    assert codec.quantizer.lead_dims == 4 and codec.quantizer._coded == 0
    codes = codec.encode(x[:50])
    exact = x[:3].astype(np.float64) @ codec.decode(codes).T
    assert np.allclose(codec.score(x[:3], codes), exact, atol=1e-4)
    assert np.square(codec.decode(codes) - x[:50]).mean() < 0.01 * np.square(x[:50]).mean()


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_index_search_ranks_by_the_codec_score(metric, tmp_path):
    import vecpress

    x = rows(800)
    index = Index("klvq1", metric, rerank_spec="f32")
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


def test_in_the_advisors_full_space_with_its_cost():
    """The full grid holds klvq at 1 bit per dimension; the time budget knows its
    block trains like rvq's (tens of seconds where kl takes a few) and its tables cost
    more to scan than kl's integer codes."""
    from vecpress.advisor.bench import GRIDS, family_specs
    from vecpress.advisor.cost import build_seconds, pair_seconds

    assert "klvq" in GRIDS["full"]["families"] and "klvq" not in GRIDS["default"]["families"]
    assert family_specs("klvq", 384) == ["klvq1-aniso3"]
    kl, klvq = build_seconds("kl1", 100_000, 384), build_seconds("klvq1", 100_000, 384)
    assert klvq > 5 * kl
    assert build_seconds("klvq1-beam16", 100_000, 384) > klvq
    aniso = build_seconds("klvq1-aniso3", 100_000, 384)
    # the score-aware block starts from one plain k-means a codebook, not faiss's
    # progressive training: its rounds and encoder cost less than that (measured
    # 16.7 s against 70.0 s for 23 codebooks on 92 axes and 16,384 rows)
    assert 1.5 * aniso < klvq
    assert aniso > 5 * kl
    assert build_seconds("klvq1-beam16-aniso3", 100_000, 384) > aniso
    assert build_seconds("klvq2", 100_000, 384) < klvq  # all grid: no block to train
    assert pair_seconds("klvq1", 384, 50) > pair_seconds("kl1", 384, 50)


@pytest.mark.parametrize("residual", [True, False])
def test_ivf_search_scores_list_by_list(residual):
    """Through IVF lists (residual codes or not), every list probed: the generic path
    scores a list at a time; the answers are finite, sorted, the same for a query alone
    as in a batch, and near the exact top 10."""
    x = rows(2000, seed=6)
    q = rows(4, seed=7)
    index = Index("klvq1", "ip", ivf=8, ivf_residual=residual)
    index.add(x)
    res = index.search(q, 10, nprobe=8)
    assert res.ids.shape == (4, 10) and (res.ids >= 0).all()
    assert np.isfinite(res.scores).all()
    assert (np.diff(res.scores, axis=1) <= 0).all()
    one = index.search(q[:1], 10, nprobe=8)
    assert np.array_equal(one.ids[0], res.ids[0])
    # most of the exact top 10 among the 10 found (1 bit a dimension, d = 192)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    found = np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(res.ids, exact, strict=True)])
    assert found > 0.5


def test_two_threads_encode_and_score_as_one(fitted):
    """A restored codec builds its faiss coder on first use: two threads racing to build
    it while encoding and scoring get what one thread gets."""
    codec, x = fitted
    assert_threads_code_as_one(codec.to_bytes(), x[1000:], x[:5])
