"""Large and small finite inputs: never a non-finite score, never an abort.

Every input row must have an L2 norm of at most ``vecpress.MAX_NORM`` (2**50), and
the float16 per-vector fields of codes of at most 4 bits (and lvq's bounds, the
centring term) are scaled by a power of two fitted to the training rows. So, for
finite input, every codec either scores finitely or raises a ``ValueError`` that
names the row. Cases that reach faiss (pq, opq, IVF) run in a subprocess, so that
an abort (SIGABRT in faiss's k-means) fails the test instead of killing pytest.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vecpress
from _util import gaussian
from vecpress import Codec, Index
from vecpress.codecs.quantizers.base import field_exponent
from vecpress.codecs.quantizers.two_level import LVQ2
from vecpress.codecs.spec import PRODUCT_QUANTIZERS, QUANTIZERS, TRANSFORM_NAMES, parse

TESTS = Path(__file__).resolve().parent
D = 16
METRICS = ("cosine", "ip", "l2")

#: every quantizer family, at widths with float16 fields (<= 4 bits) and float32 ones
QUANTIZER_SPECS = [
    "f32", "f16", "bf16", "e4m3", "e5m2", "int2", "int8", "lvq1", "lvq4", "lvq8",
    "lvq4x4", "lvq1x8", "tq1", "tq4", "tq8", "tqp1", "tqp4", "tqp8", "rq1", "rq4", "rq8",
    "kl1", "kl4", "kl8", "qjl16", "sign", "pq4x4", "pq2x8", "opq4x4",
]  # fmt: skip
#: every transform family, and the centring term next to every kind of field
TRANSFORM_SPECS = [
    "center,hd2,rq4", "center,lvq2", "center,lvq4x8", "center,int4", "center,e4m3",
    "center,sign", "center,tqp2", "center,tq8", "center,kl3", "center,pq4x4", "haar,tq3",
    "hd1,rq2", "hd3,lvq4", "pca8,rq4", "leanvec8,lvq4", "leanvec-ood8,hd2,rq4",
]  # fmt: skip
ALL_SPECS = QUANTIZER_SPECS + TRANSFORM_SPECS
#: specs whose fit calls faiss (the IVF cases call it for every spec)
FAISS_SPECS = [s for s in ALL_SPECS if re.search(r"(^|,)o?pq\d", s)]
#: codecs scored by the fused integer scan, plus the float16-field codecs around them
GRID_SPECS = ["rq4", "center,hd2,rq4", "lvq4", "center,lvq4", "lvq4x4", "center,int4", "kl4", "tq4"]
#: messages of the ValueErrors the magnitudes may raise: each names a row
CLEAR = re.compile(r"row \d+")


def _directions(rng: np.random.Generator, n: int) -> np.ndarray:
    g = rng.standard_normal((n, D)) + 0.7  # a common direction: the centring term matters
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def _rows(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """``n`` float32 rows whose norms are log-uniform in ``[10**lo, 10**hi]``."""
    norms = 10.0 ** rng.uniform(lo, hi, n)
    return (_directions(rng, n) * norms[:, None]).astype(np.float32)


def _example(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows, more rows and queries, each row's norm log-uniform in
    ``[10**lo, 10**hi]``: every third example spans all of [1e-30, 1e30] (and is
    refused: the norm limit is 2**50 ~ 1.1e15), the others a range drawn in
    [1e-30, 1e16], mostly accepted. The more rows reach 1,000 times beyond the
    training rows, past the headroom of the fitted float16 fields."""
    rng = np.random.default_rng(seed)
    lo, hi = (-30.0, 30.0) if seed % 3 == 0 else sorted(rng.uniform(-30, 16, 2))
    return _rows(rng, 300, lo, hi), _rows(rng, 60, lo, hi + 3), _rows(rng, 8, lo, hi)


def _finite_or_clear(step):
    """``step()``'s result, or ``None`` when it raised a ValueError that names a row."""
    try:
        return step()
    except ValueError as e:
        assert CLEAR.search(str(e)), f"unclear error: {e}"
        return None


def _check_codec(spec: str, x: np.ndarray, more: np.ndarray, q: np.ndarray) -> bool:
    """Fit, encode, score: finite scores or a clear ValueError. True when scored."""
    queries = q if spec.startswith("leanvec-ood") else None
    codec = _finite_or_clear(lambda: Codec.from_spec(spec).fit(x, queries=queries))
    if codec is None:
        return False
    for rows in (x, more):
        codes = _finite_or_clear(lambda rows=rows: codec.encode(rows))
        if codes is None:
            continue
        scores = _finite_or_clear(lambda codes=codes: codec.score(q, codes))
        if scores is None:
            continue
        assert np.isfinite(scores).all(), f"{spec}: non-finite scores {scores}"
        return True
    return False


def _check_index(spec: str, x, more, q, metric: str, ivf: int | None) -> bool:
    """Build, add more, search: finite scores for every id found, or a clear ValueError."""
    index = Index(spec, metric=metric, ivf=ivf)
    queries = None if not spec.startswith("leanvec-ood") else q
    if _finite_or_clear(lambda: index.train(x, queries=queries)) is None:
        return False
    if _finite_or_clear(lambda: index.add(x)) is None:
        return False
    before = index.ntotal
    if _finite_or_clear(lambda: index.add(more)) is None:
        assert index.ntotal == before, "a failed add stored rows"
    res = _finite_or_clear(lambda: index.search(q, k=5, nprobe=ivf))
    if res is None:
        return False
    found = res.ids >= 0
    assert found[:, 0].all()
    assert np.isfinite(res.scores[found]).all(), f"{spec} {metric}: {res.scores}"
    return True


def _property(specs: list[str], seeds: list[int], ivf: int | None, index: bool) -> dict:
    """Run the checks; returns how many examples scored per spec."""
    scored = {}
    for spec in specs:
        scored[spec] = 0
        for seed in seeds:
            x, more, q = _example(seed)
            if index:
                for metric in METRICS:
                    scored[spec] += _check_index(spec, x, more, q, metric, ivf)
            else:
                scored[spec] += _check_codec(spec, x, more, q)
    return scored


def run_isolated(call: str, timeout: int = 240) -> str:
    """Run ``call`` (an expression on this module, imported as ``m``) in a fresh
    interpreter; fail with its return code (-6: SIGABRT) and stderr unless it exits 0.
    Returns its stdout."""
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); import vecpress; "
        f"vecpress.set_num_threads(1); import test_magnitudes as m; {call}"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
    assert p.returncode == 0, f"rc {p.returncode} (-6 is SIGABRT):\n{p.stderr[-4000:]}"
    return p.stdout


# -- the spec list covers the registry ------------------------------------------------------


def test_specs_cover_every_family():
    quantizers = {type(parse(s)[1]) for s in ALL_SPECS}
    registry = {cls for cls, _ in QUANTIZERS.values()} | set(PRODUCT_QUANTIZERS.values())
    assert registry | {LVQ2} <= quantizers
    transforms = {t.name for s in ALL_SPECS for t in parse(s)[0]}
    assert {name.replace("<d'>", "") for name in TRANSFORM_NAMES} <= transforms


# -- the property: random magnitudes from 1e-30 to 1e30 -------------------------------------

PROPERTY_SEEDS = [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("spec", [s for s in ALL_SPECS if s not in FAISS_SPECS])
def test_codec_scores_are_finite_or_a_clear_error(spec):
    scored = _property([spec], PROPERTY_SEEDS, None, index=False)
    assert scored[spec] > 0, "no example was accepted: the test would prove nothing"


@pytest.mark.parametrize("spec", [s for s in ALL_SPECS if s not in FAISS_SPECS])
def test_index_scores_are_finite_or_a_clear_error(spec):
    scored = _property([spec], PROPERTY_SEEDS[:3], None, index=True)
    assert scored[spec] > 0


def faiss_property() -> list[dict]:
    """The property where faiss trains: pq/opq codecs, and IVF indexes (k-means).
    ``opq`` (slow to train) gets one within-limit example."""
    pq = [s for s in FAISS_SPECS if not s.startswith("opq")]
    opq = [s for s in FAISS_SPECS if s.startswith("opq")]
    ivf_specs = ["center,hd2,rq4", "lvq4x4", "int4", "f16", "pq4x4"]
    return [
        _property(pq, [0, 1, 2], None, index=False),
        _property(opq, [1], None, index=False),
        _property(["pq4x4"], [0, 1], None, index=True),
        _property(ivf_specs, [1, 2], 4, index=True),
    ]


@pytest.mark.slow
def test_faiss_cases_are_finite_or_a_clear_error_in_a_subprocess():
    """pq/opq (faiss k-means) and IVF indexes (faiss Kmeans), where an abort is possible."""
    out = run_isolated("import json; print(json.dumps(m.faiss_property()))")
    for scored in json.loads(out.strip().splitlines()[-1]):
        assert all(v > 0 for v in scored.values()), scored


# -- within the limit: always accepted, always finite ---------------------------------------


def _within_limit(seed: int = 7) -> np.ndarray:
    """300 rows whose norms are log-uniform in [1e-30, 1e14], in one batch."""
    return _rows(np.random.default_rng(seed), 300, -30, 14)


@pytest.mark.parametrize("spec", [s for s in ALL_SPECS if s not in FAISS_SPECS])
def test_inputs_within_the_limit_are_accepted(spec):
    x = _within_limit()
    q = x[::37]
    codec = Codec.from_spec(spec).fit(x, queries=q)
    if spec == "f16":  # coordinates beyond float16's range: refused, naming the row
        with pytest.raises(ValueError, match=r"row \d+.*bf16"):
            codec.encode(x)
        return
    scores = codec.score(q, codec.encode(x))
    assert np.isfinite(scores).all()
    for metric in METRICS:
        index = Index(spec, metric=metric)
        index.train(x, queries=q)
        index.add(x)
        res = index.search(q, k=5)
        assert (res.ids >= 0).all() and np.isfinite(res.scores).all(), (metric, res.scores)


def accepted_within_limit_with_faiss() -> None:
    x = _within_limit()
    q = x[::37]
    for spec in FAISS_SPECS:
        codec = Codec.from_spec(spec).fit(x)
        assert np.isfinite(codec.score(q, codec.encode(x))).all(), spec
    for spec in ["rq4", "center,lvq4", "pq4x4", "kl4"]:
        for metric in METRICS:
            index = Index(spec, metric=metric, ivf=4)
            index.add(x)
            res = index.search(q, k=5, nprobe=4)
            assert (res.ids >= 0).all() and np.isfinite(res.scores).all(), (spec, metric)


def test_inputs_within_the_limit_are_accepted_with_faiss():
    run_isolated("m.accepted_within_limit_with_faiss()")


# -- the norm limit -------------------------------------------------------------------------


@pytest.mark.parametrize("norm", [2.0**50 * 1.01, 1e20, 3e38])
def test_rows_beyond_the_norm_limit_are_named(norm):
    x = gaussian(np.random.default_rng(0), 50, D)
    x[17] *= norm / np.linalg.norm(x[17])
    assert np.isfinite(x).all()
    codec = Codec.from_spec("hd2,rq4", d=D)
    pattern = r"norm exceeds the limit .*2\*\*50.*row 17\b with norm"
    with pytest.raises(ValueError, match=pattern):
        codec.encode(x)
    with pytest.raises(ValueError, match=pattern):
        codec.score(x, codec.encode(x[:3]))
    with pytest.raises(ValueError, match=pattern):
        Index("f32", metric="l2").add(x)
    ok = x.copy()
    ok[17] *= 2.0**50 / np.linalg.norm(ok[17].astype(np.float64)) * (1 - 1e-6)
    assert np.isfinite(Codec.from_spec("f32", d=D).encode(ok)).all()


def test_norms_are_measured_without_overflow():
    # every coordinate near float32's largest value: its square overflows float32
    x = np.full((3, D), 3e38, np.float32)
    with pytest.raises(ValueError, match=r"row 0\b.*norm 1.2e\+39"):
        Codec.from_spec("f32", d=D).encode(x)


def huge_row_add(spec: str, ivf: int | None) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 32)).astype(np.float32)
    x[123] *= np.float32(1e20)
    index = Index(spec, metric="ip", ivf=ivf)
    try:
        index.add(x)
    except ValueError as e:
        assert re.search(r"row 123\b", str(e)), str(e)
        assert index.ntotal == 0 and not index.is_trained
        print("refused:", e)
    else:
        raise AssertionError("a row of norm 1e20 was accepted")


@pytest.mark.parametrize(("spec", "ivf"), [("pq8x4", None), ("hd2,rq4", 16), ("opq8x4", None)])
def test_a_huge_row_is_refused_before_faiss_sees_it(spec, ivf):
    """Issue 12, defect 2: faiss's k-means aborted the process (rc 134) on a row of norm 1e20."""
    out = run_isolated(f"m.huge_row_add({spec!r}, {ivf!r})")
    assert "refused:" in out


def test_cli_build_refuses_a_huge_row_naming_its_file_row(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x[211] *= np.float32(1e20)
    np.save(tmp_path / "x.npy", x)
    cmd = [sys.executable, "-m", "vecpress.cli", "build", str(tmp_path / "x.npy")]
    cmd += ["--spec", "pq4x4", "--ivf", "4", "--metric", "ip", "-o", str(tmp_path / "x.vpi")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, f"rc {p.returncode} (134/-6 is SIGABRT): {p.stderr[-2000:]}"
    assert re.search(r"row 211\b.*norm", p.stderr), p.stderr
    assert not (tmp_path / "x.vpi").exists()


# -- issue 12, defect 1: float16 fields ------------------------------------------------------


def _recall(ids: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, truth, strict=True)]))


def _l2_truth(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    d2 = (q64 * q64).sum(1)[:, None] + (x64 * x64).sum(1)[None, :] - 2 * q64 @ x64.T
    return np.argsort(d2, axis=1, kind="stable")[:, :k]


def test_offset_data_l2_recall_and_finite_scores():
    """``center,hd2,rq4`` on 300 + 100 N(0, 1): the centring term overflowed float16, so
    every query returned the same ids with score inf."""
    rng = np.random.default_rng(0)
    x = (300 + 100 * rng.standard_normal((2000, 32))).astype(np.float32)
    index = Index("center,hd2,rq4", metric="l2")
    index.add(x)
    q = x[:100]
    res = index.search(q, k=10)
    assert np.isfinite(res.scores).all()
    assert _recall(res.ids, _l2_truth(x, q, 10)) > 0.85
    assert len({tuple(r) for r in res.ids}) > 90  # not the same ids for every query


def _sift_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """Non-negative integer coordinates up to 255 with a few strong ones, as SIFT."""
    x = rng.gamma(0.6, 30.0, (n, 64)) * (1 + 3 * (rng.random((n, 64)) < 0.1))
    return np.clip(np.rint(x), 0, 255).astype(np.float32)


def test_sift_like_data_times_four_keeps_its_recall():
    rng = np.random.default_rng(1)
    x = _sift_like(rng, 2000)
    q = _sift_like(rng, 60)
    recalls = []
    for scale in (1, 4):
        index = Index("center,hd2,rq4", metric="l2")
        index.add(x * scale)
        res = index.search(q * scale, k=10)
        assert np.isfinite(res.scores).all(), scale
        recalls.append(_recall(res.ids, _l2_truth(x, q, 10)))
    assert recalls[0] > 0.6
    assert recalls[1] >= recalls[0] - 0.03, recalls


def test_f16_refuses_coordinates_beyond_its_range():
    x = gaussian(np.random.default_rng(0), 20, D)
    x[6, 2] = 70000.0
    codec = Codec.from_spec("f16", d=D)
    with pytest.raises(ValueError, match=r"row 6\b.*70000.*bf16"):
        codec.encode(x)
    x[6, 2] = -65504.0  # float16's largest finite magnitude still fits
    assert np.isfinite(codec.decode(codec.encode(x))).all()
    # as a re-ranking tier too, all or nothing
    index = Index("rq4", metric="ip", rerank_spec="f16")
    index.add(x)
    bad = x.copy()
    bad[3, 0] = 1e6
    with pytest.raises(ValueError, match=r"row 3\b.*bf16"):
        index.add(bad)
    assert index.ntotal == 20
    bf = Codec.from_spec("bf16", d=D)
    assert np.isfinite(bf.score(bad, bf.encode(bad))).all()


@pytest.mark.parametrize("spec", ["tq4", "hd2,tq4", "center,hd2,tq4", "hd2,tqp3"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_tq_norms_near_float16_max(spec, metric):
    rng = np.random.default_rng(2)
    x = _directions(rng, 1000) * rng.uniform(4e4, 8e4, (1000, 1))
    x = x.astype(np.float32)
    index = Index(spec, metric=metric)
    index.add(x)
    res = index.search(x[:20], k=10)
    assert np.isfinite(res.scores).all()
    if metric == "l2":
        assert _recall(res.ids, _l2_truth(x, x[:20], 10)) > 0.4


def test_lvq_beyond_the_old_float16_bound():
    # lvq refused coordinates beyond ±32752 whatever the data; fitted, it holds them
    x = gaussian(np.random.default_rng(3), 500, D) * np.float32(1e5)
    for spec, bits in (("lvq4", 4), ("lvq8", 8), ("lvq4x8", 4)):
        codec = Codec.from_spec(spec).fit(x)
        err = np.abs(codec.decode(codec.encode(x)) - x).max(axis=1)
        width = x.max(axis=1) - x.min(axis=1)
        assert (err <= width / (2**bits - 1)).all(), spec
    # values around 1e3 with an offset: the centring term of center,lvq4 overflowed
    y = (300 + 100 * np.random.default_rng(4).standard_normal((1000, 32))).astype(np.float32)
    codec = Codec.from_spec("center,lvq4").fit(y * 3)
    scores = codec.score(y[:10] * 3, codec.encode(y * 3))
    assert np.isfinite(scores).all()
    exact = (y[:10] * 3).astype(np.float64) @ (y * 3).astype(np.float64).T
    assert np.abs(scores - exact).max() < 0.02 * np.abs(exact).max()


# -- the fitted exponent: scale invariance ---------------------------------------------------


def test_field_exponent_rule():
    assert [field_exponent(m) for m in (0.0, 2.0**-6, 1.0, 2.0**8)] == [0, 0, 0, 0]
    assert field_exponent(2.0**8 * 1.001) == 1
    assert field_exponent(2.0**50) == 42
    assert field_exponent(2.0**-7) == -15
    assert field_exponent(1e-30) == -107


@pytest.fixture(scope="module")
def plain() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return gaussian(rng, 600, D, offset=0.5), gaussian(rng, 20, D, offset=0.5)


@pytest.mark.parametrize("spec", GRID_SPECS)
def test_power_of_two_scaling_scales_scores_exactly(spec, plain):
    x, q = plain
    base = Codec.from_spec(spec).fit(x)
    s0 = base.score(q, base.encode(x)).astype(np.float64)
    for p in (40, -60):
        f = np.float32(2.0**p)
        codec = Codec.from_spec(spec).fit(x * f)
        s = codec.score(q * f, codec.encode(x * f)).astype(np.float64)
        if p > 0:  # every intermediate stays a normal float32: exactly the same numbers
            np.testing.assert_array_equal(s, s0 * 2.0 ** (2 * p))
        else:  # a few products are float32 subnormals: the same rankings
            scaled = s0 * 2.0 ** (2 * p)
            assert np.abs(s - scaled).max() <= 1e-4 * np.abs(scaled).max()
            top = np.argsort(-s0, axis=1, kind="stable")[:, :10]
            np.testing.assert_array_equal(np.argsort(-s, axis=1, kind="stable")[:, :10], top)


@pytest.mark.parametrize("spec", ["center,hd2,rq4", "lvq4", "kl4", "center,int4", "hd2,tq4"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_uniformly_scaled_data_keeps_its_recall(spec, metric, plain):
    x, q = plain
    truth = (
        _l2_truth(x, q, 10)
        if metric == "l2"
        else np.argsort(-(q.astype(np.float64) @ x.astype(np.float64).T), axis=1)[:, :10]
    )
    recalls = {}
    for scale in (1.0, 1e-20, 1e12):
        f = np.float32(scale)
        index = Index(spec, metric=metric)
        index.add(x * f)
        res = index.search(q * f, k=10)
        assert np.isfinite(res.scores).all(), scale
        recalls[scale] = _recall(res.ids, truth)
    assert recalls[1.0] > 0.5
    assert min(recalls.values()) >= recalls[1.0] - 0.03, recalls


# -- what is stored: the exponent in the config, old blobs, tampering -------------------------


def test_exponent_is_recorded_and_restored(plain):
    x, q = plain
    big = x * np.float32(1e9)
    codec = Codec.from_spec("center,hd2,rq4").fit(big)
    rotated = codec.transforms[1].forward(codec.transforms[0].forward(big))
    assert codec.quantizer.field_exp == field_exponent(np.linalg.norm(rotated, axis=1).max())
    assert codec.quantizer.field_exp > 0 and codec.transforms[0].term_exp > 0
    codes = codec.encode(big)
    again = Codec.from_bytes(codec.to_bytes())
    assert again.quantizer.field_exp == codec.quantizer.field_exp
    assert again.transforms[0].term_exp == codec.transforms[0].term_exp
    np.testing.assert_array_equal(again.score(q, codes), codec.score(q, codes))
    # ordinary data: no key at all, so the blob is what older versions wrote and read
    plain_codec = Codec.from_spec("center,hd2,rq4").fit(x)
    assert plain_codec.quantizer.field_exp == 0 and plain_codec.transforms[0].term_exp == 0
    assert b"field_exp" not in plain_codec.to_bytes()
    assert b"term_exp" not in plain_codec.to_bytes()


def test_saved_index_with_a_fitted_exponent(tmp_path, plain):
    x, q = plain
    big = x * np.float32(3e10)
    index = Index("center,lvq4x4", metric="l2")
    index.add(big)
    before = index.search(q * np.float32(3e10), k=5, rerank=20)
    index.save(tmp_path / "big.vpi")
    again = vecpress.open(tmp_path / "big.vpi")
    after = again.search(q * np.float32(3e10), k=5, rerank=20)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.scores, before.scores)
    assert np.isfinite(after.scores).all()


def _tampered(blob: bytes, old: bytes, new: bytes) -> bytes:
    from vecpress import container as blob_mod

    config, arrays = blob_mod.unpack(blob, "<test>")
    text = json.dumps(config).replace(old.decode(), new.decode())
    return blob_mod.pack(json.loads(text), arrays)


@pytest.mark.parametrize("value", ["1000", "-1000", "true", '"3"', "2.5"])
def test_bad_stored_exponents_are_format_errors(plain, value):
    x, _ = plain
    blob = Codec.from_spec("rq4").fit(x * np.float32(1e9)).to_bytes()
    e = Codec.from_bytes(blob).quantizer.field_exp
    bad = _tampered(blob, f'"field_exp": {e}'.encode(), f'"field_exp": {value}'.encode())
    with pytest.raises(vecpress.FormatError, match="field_exp"):
        Codec.from_bytes(bad)


def test_an_exponent_on_a_codec_without_scaled_fields_is_a_format_error(plain):
    x, _ = plain
    blob = Codec.from_spec("int4").fit(x).to_bytes()
    bad = _tampered(blob, b'"name": "int"', b'"name": "int", "field_exp": 3')
    bad = _tampered(bad, b'"version": 1', b'"version": 2')  # where exponents may appear
    with pytest.raises(vecpress.FormatError, match="field_exp"):
        Codec.from_bytes(bad)


# -- rows the fitted fields cannot hold: a clear error, all or nothing -----------------------


@pytest.mark.parametrize("spec", ["rq4", "hd2,tq2", "tqp3", "lvq4", "lvq4x8", "center,int4"])
def test_rows_beyond_the_fitted_range_are_refused_naming_the_row(spec, plain):
    x, q = plain
    index = Index(spec, metric="ip")
    index.add(x)  # fitted to ordinary data: exponent 0
    more = x[:10].copy()
    more[4] *= np.float32(1e9)  # ~1e9: beyond float16 whatever the codec's fields
    if spec == "center,int4":
        more[4] = index.codec.transforms[0].mean_ * np.float32(2e6)
    with pytest.raises(ValueError, match=r"row 4\b.*(refit|float16)"):
        index.add(more)
    assert index.ntotal == x.shape[0]
    assert np.isfinite(index.search(q, k=5).scores).all()


def test_unfitted_training_free_codec_keeps_exponent_zero():
    codec = Codec.from_spec("hd2,rq4", d=D)
    assert codec.quantizer.field_exp == 0
    x = gaussian(np.random.default_rng(8), 10, D) * np.float32(1e6)
    with pytest.raises(ValueError, match=r"row \d+.*refit the codec"):
        codec.encode(x)
    codec.fit(x)  # fitting on such rows sets the exponent
    assert codec.quantizer.field_exp > 0
    assert np.isfinite(codec.score(x, codec.encode(x))).all()


def test_float8_codes_of_subnormal_rows_are_finite():
    # rows of a few multiples of float32's smallest subnormal: the per-row scale is a
    # power of two that would be 2**-150 or less, which is 0 in float32
    k = np.random.default_rng(9).integers(-8, 9, (10, D))
    x = (k * 2.0**-149).astype(np.float32)
    assert (x != 0).any()
    for spec in ("e4m3", "e5m2"):
        codec = Codec.from_spec(spec, d=D)
        np.testing.assert_array_equal(codec.decode(codec.encode(x)), x)


def test_a_codec_with_scaled_fields_is_a_version_2_blob_and_plain_ones_stay_version_1():
    """A vecpress that predates the exponents reads version 1 only: it refuses a blob it
    would misread (scores off by 2**e) instead of scoring wrongly."""
    from vecpress import container as blob

    x = np.random.default_rng(3).standard_normal((300, 16)).astype(np.float32)
    plain = vecpress.Codec.from_spec("center,haar,rq4").fit(x)
    big = vecpress.Codec.from_spec("center,haar,rq4").fit(x * 1e6)
    assert blob.unpack(plain.to_bytes())[0]["version"] == 1
    config, arrays = blob.unpack(big.to_bytes())
    assert config["version"] == 2
    assert any("field_exp" in c or "term_exp" in c for c in config["stages"])
    codes = big.encode(x * 1e6)
    again = vecpress.Codec.from_bytes(big.to_bytes())
    np.testing.assert_array_equal(again.score(x[:3] * 1e6, codes), big.score(x[:3] * 1e6, codes))
    config["version"] = 1  # exponents in a version-1 blob: refused, never ignored
    with pytest.raises(vecpress.FormatError, match="version-2"):
        vecpress.Codec.from_bytes(blob.pack(config, arrays))
    assert json.loads(json.dumps(config))  # the config stays plain JSON


def test_mixing_step_rotations_make_a_version_3_blob():
    """Hadamard rounds of the mixing-step layout need version 3: a vecpress that reads
    versions 1 and 2 refuses such a blob, naming its version, instead of misreading it."""
    from vecpress import container as blob

    x = np.random.default_rng(4).standard_normal((300, 16)).astype(np.float32)
    codec = vecpress.Codec.from_spec("center,hd2,rq4").fit(x)
    config, arrays = blob.unpack(codec.to_bytes())
    assert config["version"] == 3 and config["stages"][1]["mix"] == 2
    config["version"] = 2
    with pytest.raises(vecpress.FormatError, match="version-3"):
        vecpress.Codec.from_bytes(blob.pack(config, arrays))
