"""Score-aware residual quantization (``vecpress.codecs.quantizers.anisotropic``) and
``klvq<b>-aniso<eta>``, which uses it for its leading block."""

from __future__ import annotations

import numpy as np
import pytest

from vecpress import Codec
from vecpress.codecs.quantizers.anisotropic import (
    anisotropic_loss,
    beam_encode,
    codebook_tables,
    refine_codebooks,
    unit_directions,
)
from vecpress.codecs.quantizers.transform_vq import KLVQ, SWEEPS
from vecpress.threads import faiss_module


def _rows(n=4000, d=16, seed=0):
    """Clustered rows of a decaying spectrum, L2-normalised (as embeddings are)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d)) * np.geomspace(3, 0.3, d)
    x = centres[rng.integers(0, 40, n)] + rng.standard_normal((n, d)) * np.geomspace(1, 0.1, d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    """Rows and the codebooks of faiss's residual quantizer (4 x 8 bits) trained on them."""
    faiss = faiss_module()
    x = _rows()
    rq = faiss.ResidualQuantizer(x.shape[1], 4, 8)
    rq.max_beam_size = 8
    rq.train(x)
    cb = faiss.vector_to_array(rq.codebooks).reshape(4, 256, x.shape[1])
    return x, cb, rq


def test_eta_one_is_faiss_beam_search(trained):
    """At eta = 1 the loss is the squared error, and the beam search is faiss's: the same
    codes but where two candidates tie to rounding."""
    x, cb, rq = trained
    mine = beam_encode(x, unit_directions(x), cb, 1.0, 8)
    theirs = rq.compute_codes(x)  # 8-bit codes: one byte a codebook
    assert (mine == theirs).all(axis=1).mean() > 0.99
    ours, faiss_err = anisotropic_loss(x, x, mine, cb, 1.0), anisotropic_loss(x, x, theirs, cb, 1.0)
    assert ours <= faiss_err * (1 + 1e-6)


def test_anisotropy_moves_the_error_off_the_rows_direction(trained):
    """With eta = 4 the error's component along the row shrinks, and the codes have a
    lower anisotropic loss than the squared-error codes (what the search optimises)."""
    x, cb, _ = trained
    g = unit_directions(x)
    plain, aniso = beam_encode(x, g, cb, 1.0, 8), beam_encode(x, g, cb, 4.0, 8)

    def parallel(codes):
        r = x - sum(cb[m][codes[:, m]] for m in range(cb.shape[0]))
        return float(((r * g).sum(axis=1) ** 2).mean())

    assert parallel(aniso) < 0.7 * parallel(plain)
    assert anisotropic_loss(x, g, aniso, cb, 4.0) < anisotropic_loss(x, g, plain, cb, 4.0)
    # the squared error grows, but by less than the parallel part falls, times eta - 1
    mse_plain, mse_aniso = (
        anisotropic_loss(x, g, plain, cb, 1.0),
        anisotropic_loss(x, g, aniso, cb, 1.0),
    )
    assert mse_plain <= mse_aniso < mse_plain + 3 * (parallel(plain) - parallel(aniso))


def _reference_beam(y, g, cb, eta, beam):
    """The beam search by its definition, in float64: each step keeps the ``beam``
    extensions of least loss (ties: the first in order of kept sum, then word)."""
    y, g, cb = (np.asarray(a, np.float64) for a in (y, g, cb))
    out = np.empty((y.shape[0], cb.shape[0]), np.uint8)
    for i in range(y.shape[0]):
        recon, codes = np.zeros((1, y.shape[1])), np.zeros((1, 0), np.int64)
        for m in range(cb.shape[0]):
            r = y[i] - recon[:, None, :] - cb[m][None]  # (kept, 256, L)
            loss = (r * r).sum(axis=2) + (eta - 1.0) * (r @ g[i]) ** 2
            best = np.argsort(loss.ravel(), kind="stable")[:beam]
            parent, word = np.divmod(best, cb.shape[1])
            recon = recon[parent] + cb[m][word]
            codes = np.concatenate([codes[parent], word[:, None]], axis=1)
        out[i] = codes[0]
    return out


@pytest.mark.parametrize("beam", [1, 3, 16, 300])
def test_beam_search_is_its_definition(trained, beam):
    """Products of ancestors' residuals less cross products, and the search of only the
    blocks of words whose least loss reaches the beam's threshold, give the codes of the
    plain definition (but where two candidates tie to float32 rounding), at beams below
    and above the 8 blocks of a codebook and above its 256 words."""
    x, cb, _ = trained
    n = 150 if beam < 100 else 25  # (the reference's products grow with the beam)
    y, g = x[:n], unit_directions(x[:n] + 0.2)
    cb = np.concatenate([cb, 0.5 * cb[::-1]])  # 8 codebooks: ancestors 2 steps up
    mine = beam_encode(y, g, cb, 3.0, beam)
    want = _reference_beam(y, g, cb, 3.0, beam)
    assert (mine == want).all(axis=1).mean() >= 0.98
    assert anisotropic_loss(y, g, mine, cb, 3.0) <= anisotropic_loss(y, g, want, cb, 3.0) * (
        1 + 1e-6
    )
    again = beam_encode(y, g, cb, 3.0, beam, tables=codebook_tables(cb))
    assert np.array_equal(again, mine)
    with pytest.raises(ValueError, match="tables"):
        beam_encode(y, g, cb[:4], 3.0, beam, tables=codebook_tables(cb))


@pytest.mark.parametrize("eta", [1.0, 3.0, 10.0])
def test_codebook_update_never_raises_the_loss(trained, eta):
    """Each codeword is the exact least-squares minimiser given the others (module
    docstring), so a round cannot raise the training rows' loss for fixed codes."""
    x, cb, _ = trained
    g = unit_directions(x)
    codes = beam_encode(x, g, cb, eta, 4)
    before = anisotropic_loss(x, g, codes, cb, eta)
    new = refine_codebooks(x, g, codes, cb, eta)
    assert new.dtype == np.float32 and new.shape == cb.shape
    assert anisotropic_loss(x, g, codes, new, eta) <= before * (1 + 1e-6)
    unused = np.setdiff1d(np.arange(256), codes[:, 0])  # codewords no row picks keep their value
    assert np.array_equal(new[0][unused], cb[0][unused])


@pytest.mark.parametrize("scale", [2.0**-100, 2.0**100])
def test_extreme_scales_give_the_same_codes(trained, scale):
    """Rows and codebooks of ~1e-30 or ~1e30 (scaled by a power of two) are coded as the
    unit-scale ones: no underflow or overflow in the float32 products."""
    x, cb, _ = trained
    g = unit_directions(x[:500])
    ref = beam_encode(x[:500], g, cb, 3.0, 8)
    got = beam_encode(x[:500] * np.float32(scale), g, cb * np.float32(scale), 3.0, 8)
    assert np.array_equal(got, ref)


def test_shapes_are_checked(trained):
    x, cb, _ = trained
    with pytest.raises(ValueError, match="float32\\[M, 256, L\\]"):
        beam_encode(x[:, :8], unit_directions(x[:, :8]), cb, 3.0, 4)
    with pytest.raises(ValueError, match="directions"):
        beam_encode(x, unit_directions(x[:10]), cb, 3.0, 4)
    for beam in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="beam must be an integer >= 1"):
            beam_encode(x, unit_directions(x), cb, 3.0, beam)
    assert beam_encode(x[:0], unit_directions(x[:0]), cb, 3.0, 4).shape == (0, cb.shape[0])
    for sweeps in (-1, 1.0, True):
        with pytest.raises(ValueError, match="sweeps must be an integer >= 0"):
            beam_encode(x, unit_directions(x), cb, 3.0, 4, sweeps)


def _row_loss(y, g, codes, cb, eta):
    """Each row's anisotropic loss (float64)."""
    r = y.astype(np.float64) - sum(cb[m][codes[:, m]] for m in range(cb.shape[0]))
    return (r * r).sum(axis=1) + (eta - 1.0) * ((r * g).sum(axis=1)) ** 2


@pytest.mark.parametrize("eta", [1.0, 3.0])
def test_sweeps_lower_the_loss_to_a_local_optimum(trained, eta):
    """After the beam search, a sweep changes one codebook's word at a time to the best
    given the others: no row's loss rises, some fall, and after enough sweeps no single
    change lowers any row's loss (checked against every word of every codebook)."""
    x, cb, _ = trained
    y, g = x[:600], unit_directions(x[:600])
    base = beam_encode(y, g, cb, eta, 1)
    one = beam_encode(y, g, cb, eta, 1, 1)
    many = beam_encode(y, g, cb, eta, 1, 12)
    l0, l1, ln = (_row_loss(y, g, c, cb, eta) for c in (base, one, many))
    tol = 1e-5 * l0.max()
    assert (l1 <= l0 + tol).all() and (ln <= l1 + tol).all()
    assert (l1 < l0 - tol).sum() >= 3  # beam 1 leaves words a change improves (5 rows at eta 1)
    for m in range(cb.shape[0]):
        trial = np.repeat(many[:, None], 256, axis=1)  # every word of codebook m in turn
        trial[:, :, m] = np.arange(256)
        losses = _row_loss(
            np.repeat(y, 256, axis=0), np.repeat(g, 256, axis=0), trial.reshape(-1, 4), cb, eta
        ).reshape(-1, 256)
        assert (losses.min(axis=1) >= ln - tol).all()


def test_zero_rows_have_no_direction():
    assert unit_directions(np.zeros((2, 3))).tolist() == [[0.0] * 3] * 2


def test_klvq_aniso_specs():
    assert Codec.from_spec("klvq1-aniso3").spec == "klvq1-aniso3"
    assert Codec.from_spec("klvq1-aniso1").spec == "klvq1"  # eta 1: the squared error
    assert Codec.from_spec("klvq2-beam16-aniso4").spec == "klvq2-beam16-aniso4"
    for bad in ("klvq1-aniso0", "klvq1-aniso65", "klvq1-aniso03", "klvq1-aniso3-beam16",
                "klvq1-aniso2.5"):  # fmt: skip
        with pytest.raises(ValueError):
            Codec.from_spec(bad)


@pytest.fixture(scope="module")
def rows():
    return _rows(6000, 32, seed=3)


def test_klvq_aniso_ranks_better_and_round_trips(rows):
    """A single block (d = 32, 1 bit: 4 codebooks): the anisotropic block's recall@10 of
    an inner-product search is 5 points above the squared-error block's, its stored file reads
    back to the same codes and scores, and a stored eta that differs is refused."""
    x = rows
    base, q = x[:5000], x[5000:5200]
    truth = np.argsort(-(q @ base.T), axis=1)[:, :10]

    def recall(spec):
        codec = Codec.from_spec(spec, d=32).fit(base)
        codes = codec.encode(base)
        found = np.argsort(-codec.score(q, codes), axis=1)[:, :10]
        r = np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(found, truth, strict=True)])
        return codec, codes, r

    _, _, plain = recall("klvq1-beam8")
    codec, codes, aniso = recall("klvq1-beam8-aniso3")
    assert aniso >= plain + 0.05  # measured 0.570 against 0.409
    assert codec.quantizer.lead_.progressive  # a single block: faiss's default training
    again = Codec.from_bytes(codec.to_bytes())
    assert again.spec == "klvq1-beam8-aniso3"
    assert np.array_equal(again.encode(base[:300]), codes[:300])
    assert np.array_equal(again.score(q[:3], codes), codec.score(q[:3], codes))
    quantizer = codec.quantizer
    config, arrays = quantizer.config(), quantizer.arrays()
    assert config["eta"] == 3
    for stored in (2, None):  # another eta; none stored: a squared-error block
        other = {k: v for k, v in config.items() if k != "eta"}
        if stored is not None:
            other["eta"] = stored
        with pytest.raises(ValueError, match="eta"):
            KLVQ(1, 8, 3).restore(other, arrays)
    KLVQ(1, 8, 3).restore(config, arrays)
    assert config["sweeps"] == SWEEPS
    older = KLVQ(1, 8, 3)  # a codec stored before the sweeps: encodes as it did
    older.restore({k: v for k, v in config.items() if k != "sweeps"}, arrays)
    assert older.sweeps == 0
    for bad in (-1, SWEEPS + 1, 1.0, True):
        with pytest.raises(ValueError, match="sweeps"):
            KLVQ(1, 8, 3).restore({**config, "sweeps": bad}, arrays)
    plain = Codec.from_spec("klvq1-beam8", d=32).fit(base[:1000]).quantizer
    with pytest.raises(ValueError, match="sweeps"):
        KLVQ(1, 8, 1).restore({**plain.config(), "sweeps": 1}, plain.arrays())


def test_klvq_aniso_split_row(rows):
    """A row with a block and a tail (d = 192 at 1 bit: 24 bytes, 11 codebooks on 44 axes):
    the block's codes are the anisotropic search's, finite scores, and the block's
    error along the rows' directions is smaller than the plain block's."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rows[:2500], rng.standard_normal((2500, 160)).astype(np.float32) * 0.05], 1)
    x = np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True))
    plain = Codec.from_spec("klvq1", d=192).fit(x[:700])
    aniso = Codec.from_spec("klvq1-aniso4", d=192).fit(x[:700])
    errs = []
    for codec in (plain, aniso):
        codes = codec.encode(x[1500:])
        s = codec.score(x[1500:1600], codes)
        assert np.isfinite(s).all()
        r = x[1500:] - codec.decode(codes)
        errs.append(float(((r * x[1500:]).sum(axis=1) ** 2).mean()))
    quant = aniso.quantizer
    lead_dims, m, _ = quant._split
    y = ((x[1500:].astype(np.float64) - quant.mean_) @ quant._axes64)[:, :lead_dims]
    y = np.ascontiguousarray(y * quant._lead_w, np.float32)
    g = quant._lead_directions(y, quant._mean_lead, quant._lead_w)
    assert quant.sweeps == SWEEPS
    # beside a tail the block's rounds start from plain k-means; the plain block and a
    # single block (test_klvq_aniso_ranks_better_and_round_trips) keep faiss's default
    assert not quant.lead_.progressive and plain.quantizer.lead_.progressive
    want = beam_encode(y, g, quant.lead_.centroids_, 4.0, quant.beam, quant.sweeps)
    assert (aniso.encode(x[1500:])[:, :m] == want).all(axis=1).mean() > 0.99
    assert errs[1] < errs[0]
