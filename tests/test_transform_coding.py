"""``kl<b>``: bit allocation, scores, the correction factor, serialisation and errors."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import vecpress
from _util import gaussian, paired_scores
from vecpress import Codec
from vecpress.codecs.quantizers import transform_coding as tc
from vecpress.codecs.quantizers.transform_coding import KL, allocate_bits, gaussian_step, groups_of
from vecpress.kernels.bitpack import packed_size
from vecpress.kernels.scan import quantize_queries, query_limbs


def _anisotropic(seed: int, n: int, d: int, decades: float = 2.0) -> np.ndarray:
    """Gaussian rows whose standard deviations fall geometrically by ``decades`` over d."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * np.logspace(0, -decades, d)).astype(np.float32)


# -- the scalar quantizer -----------------------------------------------------------------


def test_gaussian_steps_match_the_known_optimal_uniform_quantizers():
    # Max (1960), optimum uniform quantizer for N(0, 1): 2, 4, 8, 16 levels
    want = {1: 1.596, 2: 0.9957, 3: 0.5860, 4: 0.3352}
    for bits, step in want.items():
        assert gaussian_step(bits) == pytest.approx(step, abs=1e-3)
    steps = [gaussian_step(b) for b in range(1, 9)]
    assert (np.diff(steps) < 0).all()
    for bits in (0, 9):
        with pytest.raises(ValueError, match="bits"):
            gaussian_step(bits)


# -- bit allocation -----------------------------------------------------------------------


@pytest.mark.parametrize("d", [32, 50, 96])
@pytest.mark.parametrize("b", range(1, 9))
def test_allocation_fits_the_budget_and_is_non_increasing(d, b):
    lam = np.logspace(1, -3, d)
    budget = packed_size(d, b)
    bits = allocate_bits(lam, budget)
    assert bits.dtype == np.uint8 and bits.shape == (d,)
    assert bits.max() <= 8
    assert (np.diff(bits.astype(int)) <= 0).all()
    used = sum(g[4] for g in groups_of(bits))
    # one more bit on an axis adds at most one byte, so the greedy stops only when the
    # budget is spent exactly or every axis has 8 bits
    assert used == budget
    if b == 8:
        assert (bits == 8).all()


def test_allocation_of_an_isotropic_spectrum_is_nearly_uniform():
    """b bits everywhere but on a few axes: one bit at a time, the greedy cannot pass
    from 60 axes at 2 bits + 4 at 1 bit (15 + 1 bytes) to 61 + 3 (16 + 1 bytes), so the
    4 bits of the second group's byte stay unused (less than a byte per group)."""
    for b in range(1, 9):
        bits = allocate_bits(np.ones(64), packed_size(64, b))
        # (8: the free bits of an axis alone in its byte)
        assert set(bits.tolist()) <= {b - 1, b, 8}
        assert bits.sum() > 64 * b - 8 * len(groups_of(bits))
        assert (bits == b).sum() >= 56


def test_allocation_follows_the_variances():
    d = 64
    lam = np.logspace(1, -3, d)
    bits = allocate_bits(lam, packed_size(d, 2))
    assert bits[0] > 2 > bits[-1]
    # reverse water-filling: a variance 4x larger earns about one bit more, so the
    # 100x between axis 0 and axis d/2 earns more than 2 bits
    assert bits[0] - bits[d // 2] >= 2


def test_one_bit_on_a_strongly_anisotropic_spectrum_leaves_axes_uncoded():
    d = 64
    bits = allocate_bits(np.logspace(2, -6, d), packed_size(d, 1))
    assert (bits == 0).sum() >= d // 4
    assert bits[0] >= 2


def test_zero_variances_get_no_bits():
    lam = np.concatenate([np.logspace(0, -1, 10), np.zeros(6)])
    bits = allocate_bits(lam, packed_size(16, 8))
    assert (bits[:10] == 8).all() and (bits[10:] == 0).all()


@pytest.mark.parametrize("spec", ["kl1", "kl2", "kl3", "kl4", "kl8", "hd2,kl2", "pca24,kl4"])
def test_code_size_is_known_before_fitting(spec):
    d = 48
    x = _anisotropic(0, 600, d)
    before = Codec.code_size_of(spec, d)
    codec = Codec.from_spec(spec).fit(x)
    dd = codec.quantizer.d
    b = codec.quantizer.param
    assert before == codec.code_size == packed_size(dd, b) + (2 if b <= 4 else 4)
    assert codec.encode(x).shape == (600, before)
    q = codec.quantizer
    assert sum(g[4] for g in q.groups_) <= packed_size(dd, b)


def test_fitted_state_is_consistent():
    x = _anisotropic(1, 2000, 40)
    q = Codec.from_spec("kl3").fit(x).quantizer
    np.testing.assert_allclose(q.axes_.T @ q.axes_, np.eye(40), atol=1e-5)
    assert (np.diff(q.lam_) <= 0).all()
    np.testing.assert_allclose(q.lam_, np.var(x @ q.axes_, axis=0), rtol=1e-3)
    coded = q.bits_ > 0
    want = np.sqrt(q.lam_[coded]) * [gaussian_step(int(b)) for b in q.bits_[coded]]
    np.testing.assert_allclose(q.steps_[coded], want)
    assert (q.steps_[~coded] == 0).all()


# -- scores -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["kl1", "kl2", "kl4", "kl7", "hd2,kl3"])
def test_score_is_the_decoded_inner_product_up_to_query_rounding(spec):
    """|score - q·decode| <= |f| s / 2 sum_j |c_j - h_j| (+ float slack), ``s`` the
    scale of the last 8-bit limb of the query's ``w`` (one scale for all the axes)."""
    d = 64
    x = _anisotropic(2, 1500, d) + 0.3
    queries = _anisotropic(3, 20, d) + 0.3
    codec = Codec.from_spec(spec, seed=1).fit(x)
    quant = codec.quantizer
    qt, _ = codec.transform_queries(queries)
    codes = codec.encode(x)
    fast = quant.score(qt, codes).astype(np.float64)
    dec = quant.decode(codes)
    slow = qt.astype(np.float64) @ dec.astype(np.float64).T
    f = np.abs(quant._factor(codes)).astype(np.float64)
    k = quant._coded
    w = (qt @ quant.axes_[:, :k]) * quant.steps_[:k].astype(np.float32)
    y1 = np.zeros(len(x))
    y1 += np.abs(quant.unpacked(codes) - quant._half).sum(axis=1)
    _, scales = quantize_queries(np.ascontiguousarray(w), query_limbs(quant.param))
    bound = 0.5 * scales[-qt.shape[0] :, None].astype(np.float64) * (f * y1)[None, :]
    mag = np.abs(qt).astype(np.float64) @ (np.abs(dec) + np.abs(quant.mean_)).T
    excess = np.abs(fast - slow) - bound
    assert (excess <= 2e-5 * mag).all(), excess.max()
    qx = np.linalg.norm(qt, axis=1)[:, None] * np.linalg.norm(x - quant.mean_, axis=1)[None, :]
    assert (bound <= 0.1 * qx).all()
    # and through the codec (no transform offsets for these specs but hd2's rotation)
    np.testing.assert_allclose(codec.score(queries, codes), fast, rtol=0, atol=1e-4)


@pytest.mark.parametrize("b", [1, 2, 4])
def test_correction_makes_paired_scores_unbiased(b):
    """For q = 0.8 x + n, with n independent of x, est - <q, x> = <n', f ẑ - z> +
    0.8 (f <ẑ, z> - |z|²) has mean 0 since f <ẑ, z> = |z|²; without f it is biased."""
    d, n = 48, 4000
    x = _anisotropic(4, n, d, decades=1.5)
    noise = _anisotropic(5, n, d, decades=1.5)
    q = 0.8 * x + noise
    codec = Codec.from_spec(f"kl{b}").fit(x)
    codes = codec.encode(x)
    true = np.einsum("ij,ij->i", q.astype(np.float64), x.astype(np.float64))
    err = paired_scores(codec, q, codes) - true
    se = err.std() / np.sqrt(n)
    assert abs(err.mean()) < 4 * se, (err.mean(), se)
    # plain midrise codes at the fitted steps (tau = 1), without the correction
    # (f = 1), are biased downward
    quant = codec.quantizer
    k = quant._coded
    z = (x - quant.mean_) @ quant.axes_[:, :k].astype(np.float64)
    c = np.clip(np.rint(z / quant.steps_[:k] + quant._half), 0, quant._top)
    plain = ((c - quant._half) * quant.steps_[:k]) @ quant.axes_[:, :k].T + quant.mean_
    err0 = np.einsum("ij,ij->i", q.astype(np.float64), plain) - true
    assert err0.mean() < -6 * err0.std() / np.sqrt(n)


@pytest.mark.parametrize("b", [1, 2, 4])
def test_coding_gain_over_rotated_and_per_dimension_codes(b):
    """On a Gaussian with spectrum lam and queries drawn like the rows, the score error
    of a rotation code is ~ d AM(lam)² 4^-b and that of bits water-filled over lam²
    ~ d GM(lam)² 4^-b: a gain of (AM/GM)² at high rate (> 4 here). ``hd2,rq<b>`` and
    the per-dimension ``int<b>`` see (nearly) the same budget."""
    rng = np.random.default_rng(6)
    x = gaussian(rng, 4000, 64)
    q = gaussian(rng, 200, 64)
    lam = np.linalg.eigvalsh(np.cov(x.T))
    assert lam.mean() / np.exp(np.log(lam).mean()) > 2.0
    true = q.astype(np.float64) @ x.T.astype(np.float64)

    def score_mse(spec):
        codec = Codec.from_spec(spec, seed=3).fit(x)
        return float(((codec.score(q, codec.encode(x)) - true) ** 2).mean())

    kl = score_mse(f"kl{b}")
    others = {s: score_mse(s) for s in (f"hd2,rq{b}", f"int{b}")}
    for spec, value in others.items():
        assert kl < 0.5 * value, (b, kl, spec, value)


@pytest.mark.parametrize("b", [2, 4])
def test_per_row_scale_lowers_the_score_distortion(b):
    """Each row's searched scale gives a weighted error sum_j lam_j (f ẑ_j - z_j)² no
    larger than the fitted steps alone (tau = 1, up to the grid of scales), and
    clearly smaller on average; rows of larger and smaller norm pick larger and
    smaller scales."""
    x = _anisotropic(12, 3000, 48, decades=1.0)
    x *= np.random.default_rng(3).uniform(0.3, 3.0, (len(x), 1)).astype(np.float32)
    codec = Codec.from_spec(f"kl{b}").fit(x)
    quant = codec.quantizer
    k = quant._coded
    z = ((x - quant.mean_) @ quant.axes_.astype(np.float64))[:, :k]
    n2 = ((x - quant.mean_) ** 2).sum(axis=1)
    lam = quant.lam_[:k]

    def distortion(c):
        zh = (c - quant._half) * quant.steps_[:k]
        f = n2 / (zh * z).sum(axis=1)
        return ((f[:, None] * zh - z) ** 2 * lam).sum(axis=1)

    searched = quant.unpacked(codec.encode(x)).astype(np.float64)
    plain = np.clip(np.rint(z / quant.steps_[:k] + quant._half), 0, quant._top)
    ds, dp = distortion(searched), distortion(plain)
    assert (ds <= dp * (1 + 1e-3)).mean() > 0.99
    assert ds.mean() < 0.9 * dp.mean()
    # the scale follows the norm: large rows (which tau = 1 clips) take coarser scales,
    # small rows (which use few of its levels) finer ones
    spread = np.abs(searched - quant._half).mean(axis=1) / np.abs(plain - quant._half).mean(axis=1)
    norm = np.sqrt(n2)
    assert (
        spread[norm > np.quantile(norm, 0.9)].mean() < spread[norm < np.quantile(norm, 0.1)].mean()
    )


@numba.njit(cache=False)
def _scalar_distortion(z, inv, half, top, step, weight, n2, tau):
    """One scale's distortion, one pass per scale (the kernel before it evaluated four
    scales per pass)."""
    r = np.float32(1.0 / tau)
    dot = np.float32(0.0)
    wyy = np.float32(0.0)
    wyz = np.float32(0.0)
    for j in range(z.shape[0]):
        c = min(max(np.rint(z[j] * inv[j] * r + half[j]), np.float32(0.0)), top[j])
        y = (c - half[j]) * step[j]
        dot += y * z[j]
        wyy += weight[j] * y * y
        wyz += weight[j] * y * z[j]
    if not dot > 0:
        return np.inf
    f = n2 / dot
    return f * f * wyy - 2.0 * f * wyz


@numba.njit(cache=False)
def _scalar_best_tau(z, inv, half, top, step, weight, n2):
    ratio = (2.0 / 0.5) ** (1.0 / 23)
    best, best_t = np.inf, 1.0
    t = 0.5
    for _ in range(24):
        v = _scalar_distortion(z, inv, half, top, step, weight, n2, t)
        if v < best:
            best, best_t = v, t
        t *= ratio
    span = ratio
    for _ in range(2):
        r = (span * span) ** (1.0 / 9)
        t = best_t / span * r
        for _ in range(8):
            v = _scalar_distortion(z, inv, half, top, step, weight, n2, t)
            if v < best:
                best, best_t = v, t
            t *= r
        span = r
    return best_t


@pytest.mark.parametrize("b", [2, 4])
def test_scale_search_matches_the_scalar_search(b):
    """The codes are those of the scale the one-scale-per-pass search picks, except
    where two scales tie to within the float32 resolution of the objective both searches
    minimise, ``f²·Σwy² − 2f·Σwyz`` (``f = |z|²/<y, z>``): its two sums are each about
    ``Σwz²`` in size and accumulate ``k`` float32 terms (up to ``k·ε`` relative error
    each, ``ε = 2⁻²³``), so two scales' values are told apart only beyond about
    ``7k·ε·Σwz²`` each, ``14k·ε·Σwz²`` between them. Such a tie can still be two scales
    whose distortions differ by percents (the objective is the distortion minus
    ``Σwz²``), so rows are compared by the objective, computed exactly here."""
    x = _anisotropic(5, 1500, 40, decades=1.0)
    x *= np.random.default_rng(6).uniform(0.3, 3.0, (len(x), 1)).astype(np.float32)
    codec = Codec.from_spec(f"kl{b}").fit(x)
    q = codec.quantizer
    k, u = q._coded, q._unit_exp
    z64 = (x.astype(np.float64) - q.mean_) @ q._axes64
    n2 = (z64 * z64).sum(axis=1)
    zu = np.ldexp(z64[:, :k], -u).astype(np.float32)
    inv = np.ldexp(1.0 / q.steps_[:k], u).astype(np.float32)
    step = np.ldexp(q.steps_[:k], -u).astype(np.float32)
    weight = np.ldexp(q.lam_[:k], -2 * u).astype(np.float32)
    want = np.empty(zu.shape, np.uint8)
    for j in range(len(zu)):
        tau = _scalar_best_tau(zu[j], inv, q._half, q._top, step, weight, np.ldexp(n2[j], -2 * u))
        tc._row_codes(zu[j], inv, q._half, q._top, tau, want[j])
    codes = codec.encode(x)
    got = q.unpacked(codes)
    zs, w = zu.astype(np.float64), weight.astype(np.float64)
    wzz = (w * zs * zs).sum(axis=1)

    def objective(c):  # in float64, of the float32 inputs both searches see
        y = (c - q._half.astype(np.float64)) * step.astype(np.float64)
        f = np.ldexp(n2, -2 * u) / (y * zs).sum(axis=1)
        return f * f * (w * y * y).sum(axis=1) - 2 * f * (w * y * zs).sum(axis=1)

    assert (got == want).all(axis=1).mean() >= 0.95
    eps = np.finfo(np.float32).eps
    assert (np.abs(objective(got) - objective(want)) <= 14 * k * eps * wzz).all()


def test_score_weighted_allocation_beats_reconstruction_allocation():
    """The expected score distortion sum_j lam_j * lam_j D(b_j) of Gaussian axes
    (D(b) the unit-Gaussian MSE of the b-bit step) is lower with bits water-filled over
    lam² (what kl does) than over lam (the reconstruction-optimal allocation)."""
    lam = np.geomspace(1.0, 0.05, 96)

    def distortion(bits):
        d_of = [1.0] + [tc._gaussian_uniform_mse(tc.gaussian_step(w), 1 << w) for w in range(1, 9)]
        return sum(lj * lj * d_of[int(w)] for lj, w in zip(lam, bits, strict=True))

    for budget in (12, 24, 48):
        score_bits = tc.allocate_bits(lam * lam, budget)
        mse_bits = tc.allocate_bits(lam, budget)
        assert score_bits[0] > mse_bits[0]  # more bits on the leading axes
        assert (score_bits > 0).sum() <= (mse_bits > 0).sum()
        assert distortion(score_bits) < 0.8 * distortion(mse_bits), budget
    codec = Codec.from_spec("kl2").fit(
        (np.random.default_rng(0).standard_normal((3000, 96)) * np.sqrt(lam)).astype(np.float32)
    )
    np.testing.assert_array_equal(
        codec.quantizer.bits_, tc.allocate_bits(codec.quantizer.lam_**2, 24)
    )


# -- composition, edge cases ------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["hd2,kl2", "pca32,kl4", "center,kl3", "kl5"])
def test_composed_specs_encode_decode_and_score(spec):
    d = 96
    x = _anisotropic(7, 1200, d) + 0.2
    codec = Codec.from_spec(spec, seed=2).fit(x)
    assert codec.spec == spec
    codes = codec.encode(x)
    y = codec.decode(codes)
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    s = codec.score(x[:10], codes)
    assert s.shape == (10, 1200) and np.isfinite(s).all()
    # the best match of a database row is (nearly always) itself
    assert (np.argmax(s - 0.5 * (y**2).sum(axis=1)[None, :], axis=1) == np.arange(10)).mean() >= 0.8


def test_encoding_is_chunked_without_changing_the_codes(monkeypatch):
    x = _anisotropic(8, 700, 32)
    codec = Codec.from_spec("kl3").fit(x)
    whole = codec.encode(x)
    monkeypatch.setattr(tc, "_CHUNK", 64)
    np.testing.assert_array_equal(codec.encode(x), whole)
    for i in (0, 1, 3, 699):  # a row alone codes as in a batch (add() one at a time)
        np.testing.assert_array_equal(codec.encode(x[i : i + 1])[0], whole[i])
    refit = Codec.from_spec("kl3").fit(x)
    np.testing.assert_allclose(refit.quantizer.lam_, codec.quantizer.lam_, rtol=1e-9)


def test_constant_and_rank_deficient_data():
    const = np.tile(np.linspace(-1, 1, 16, dtype=np.float32) * 0.1 + 0.3, (7, 1))
    codec = Codec.from_spec("kl4").fit(const)
    assert not codec.quantizer.groups_ and (codec.quantizer.lam_ == 0).all()
    codes = codec.encode(const)
    np.testing.assert_allclose(codec.decode(codes), const, atol=1e-6)
    q = np.arange(32, dtype=np.float32).reshape(2, 16)
    np.testing.assert_allclose(codec.score(q, codes), q @ const.T, rtol=1e-6)

    rng = np.random.default_rng(9)
    low = (rng.standard_normal((400, 5)) @ rng.standard_normal((5, 24))).astype(np.float32)
    codec = Codec.from_spec("kl8").fit(low)
    bits = codec.quantizer.bits_
    assert (bits[:5] == 8).all() and (bits[5:] == 0).all()
    err = codec.decode(codec.encode(low)) - low
    assert (err**2).sum() < 1e-3 * (low**2).sum()  # 8 bits on every axis that varies


def test_a_layout_stored_for_no_coded_axis_is_a_format_error():
    from vecpress import container as vblob

    codec = Codec.from_spec("kl4").fit(np.ones((20, 8), np.float32))  # constant: no axis coded
    config, arrays = vblob.unpack(codec.to_bytes())
    assert "0.layout" not in arrays
    config["stages"][-1]["packing"] = "words"
    arrays = {**arrays, "0.layout": np.array([[0, 1, 4, 0]], np.int64)}
    with pytest.raises(vecpress.FormatError, match="no coded axis"):
        Codec.from_bytes(vblob.pack(config, arrays))


def test_a_row_at_the_mean_decodes_to_the_mean():
    x = _anisotropic(10, 500, 16)
    codec = Codec.from_spec("kl2").fit(x)
    quant = codec.quantizer
    z = np.zeros((1, 16), np.float32)
    codes = quant.encode(z + quant.mean_.astype(np.float32))
    assert np.isfinite(quant._factor(codes)).all()
    np.testing.assert_allclose(quant.decode(codes)[0], quant.mean_, atol=1e-4)


# -- serialisation ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["kl1", "kl4", "kl8", "hd2,kl2", "center,kl3"])
def test_blob_round_trip_is_exact(spec):
    x = _anisotropic(11, 800, 40) + 0.5
    queries = _anisotropic(12, 7, 40) + 0.5
    codec = Codec.from_spec(spec, seed=5).fit(x)
    codes = codec.encode(x)
    blob = codec.to_bytes()
    back = Codec.from_bytes(blob)
    assert back.spec == spec and back.code_size == codec.code_size
    np.testing.assert_array_equal(back.encode(x), codes)
    assert np.array_equal(back.score(queries, codes), codec.score(queries, codes))
    np.testing.assert_array_equal(back.decode(codes), codec.decode(codes))
    assert back.to_bytes() == blob


@pytest.mark.parametrize("spec", ["kl2", "kl3", "kl4", "kl6", "hd2,kl5"])
def test_codes_lie_within_words_and_read_as_the_groups_did(spec):
    """A fitted ``kl`` places its codes so that none crosses a 64-bit word of the row
    (stored as its layout, ``packing: "words"``): the same codes as the groups one after
    another would hold, so the same decoded rows and scores."""
    from vecpress.kernels.wordpack import within_words

    x = _anisotropic(21, 900, 96) + 0.3
    queries = _anisotropic(22, 9, 96) + 0.3
    codec = Codec.from_spec(spec, seed=3).fit(x)
    quant = codec.quantizer
    assert quant.config()["packing"] == "words" and within_words(quant.grid_layout)
    assert not within_words(tc.layout_rows(quant.groups_, quant._coded, quant._nbytes))
    codes = codec.encode(x)
    groups = Codec.from_bytes(codec.to_bytes())
    groups.quantizer.layout_ = None  # the layout of the files written before
    groups.quantizer._layout()
    assert "packing" not in groups.quantizer.config()
    old = groups.encode(x)
    assert not np.array_equal(old, codes)
    np.testing.assert_array_equal(groups.quantizer.unpacked(old), quant.unpacked(codes))
    np.testing.assert_array_equal(groups.decode(old), codec.decode(codes))
    np.testing.assert_array_equal(groups.score(queries, old), codec.score(queries, codes))


def _over_budget(arrays):
    bits = arrays["0.bits"]
    bits[: len(bits) // 2] = np.maximum(bits[: len(bits) // 2], 5)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda a: a.pop("0.axes"),
        lambda a: a.__setitem__("0.bits", np.full(32, 9, np.uint8)),
        lambda a: a.__setitem__("0.bits", a["0.bits"].astype(np.int32)),
        lambda a: a.__setitem__("0.bits", a["0.bits"][::-1].copy()),
        _over_budget,
        lambda a: a["0.steps"].__setitem__(0, np.nan),
        lambda a: a["0.steps"].__setitem__(0, -1.0),
        lambda a: a["0.steps"].__setitem__(-1, 1.0),
        lambda a: a["0.lam"].__setitem__(0, -1.0),
        lambda a: a["0.lam"].__setitem__(-1, 1e6),
        lambda a: a.__setitem__("0.axes", 2 * a["0.axes"]),
        lambda a: a.__setitem__("0.mean", a["0.mean"].astype(np.float32)),
        lambda a: a.__setitem__("0.mean", a["0.mean"][:-1].copy()),
        lambda a: a["0.mean"].__setitem__(0, np.inf),
        lambda a: a.pop("0.layout"),
        lambda a: a.__setitem__("0.layout", a["0.layout"][1:].copy()),  # a run lost
        lambda a: a.__setitem__("0.layout", a["0.layout"].astype(np.int32)),
        lambda a: a.__setitem__("0.layout", a["0.layout"].ravel().copy()),
        lambda a: a["0.layout"].__setitem__((0, 2), a["0.layout"][0, 2] % 8 + 1),  # width
        lambda a: a["0.layout"].__setitem__((-1, 3), a["0.layout"][0, 3]),  # bytes shared
        lambda a: a["0.layout"].__setitem__((0, 3), 10**6),  # beyond the row
        lambda a: a["0.layout"].__setitem__((0, 0), -1),
    ],
)
def test_tampered_state_is_a_format_error(mutate):
    from vecpress import container as vblob

    x = _anisotropic(13, 300, 32)
    codec = Codec.from_spec("kl2").fit(x)
    assert codec.quantizer.bits_[-1] == 0  # so that "steps[-1] = 1" is invalid
    config, arrays = vblob.unpack(codec.to_bytes())
    arrays = {k: np.array(v) for k, v in arrays.items()}
    mutate(arrays)
    with pytest.raises(vecpress.FormatError):
        Codec.from_bytes(vblob.pack(config, arrays))


# -- errors --------------------------------------------------------------------------------------


def test_unfitted_use_raises_not_fitted():
    x = _anisotropic(14, 20, 16)
    codec = Codec.from_spec("kl4", d=16)
    for call in (lambda: codec.encode(x), lambda: codec.score(x, np.zeros((1, 10), np.uint8))):
        with pytest.raises(vecpress.NotFittedError, match="kl4"):
            call()
    quant = KL(4)
    with pytest.raises(vecpress.NotFittedError):
        quant.encode(x)
    quant.setup(16, np.random.default_rng(0))
    for call in (
        lambda: quant.encode(x),
        lambda: quant.decode(np.zeros((1, 10), np.uint8)),
        lambda: quant.score(x, np.zeros((1, 10), np.uint8)),
    ):
        with pytest.raises(vecpress.NotFittedError):
            call()


@pytest.mark.parametrize("token", ["kl0", "kl9", "kl16"])
def test_bits_out_of_range_in_a_spec(token):
    with pytest.raises(ValueError, match="\\[1, 8\\]"):
        Codec.from_spec(f"hd2,{token}")


def test_fit_checks_the_dimension():
    quant = KL(2)
    quant.setup(16, np.random.default_rng(0))
    with pytest.raises(ValueError, match="d=8"):
        quant.fit(_anisotropic(15, 50, 8))
    with pytest.raises(ValueError, match="training row"):
        quant.fit(np.zeros((0, 16), np.float32))
