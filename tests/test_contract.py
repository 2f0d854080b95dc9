"""The codec contract, checked on every family of the spec registry.

As scikit-learn's ``parametrize_with_checks`` does for estimators, :func:`contract_specs`
derives representative specs from the registry in :mod:`vecpress.codecs.spec` (``QUANTIZERS``,
``PRODUCT_QUANTIZERS``, the two-level ``lvq<b1>x<b2>`` token, ``TRANSFORM_NAMES``, each
transform placed before a cheap quantizer), and every check below runs on every one of
them through the public API only. :func:`test_the_battery_covers_every_registry_family`
fails when a codec joins the registry without a spec here.

The checks:

* **shapes and dtypes**: ``fit``/``encode``/``decode``/``score``/``score_candidates``
  shapes and dtypes, ``code_size`` (= ``Codec.code_size_of``) equal to ``encode``'s
  width, float64 and float16 input converted as the codec documents, empty inputs;
* **determinism**: the same seed gives the same blob and the same codes, and the codes
  of a row do not depend on the rows encoded with it (``encode`` works in slices) up
  to the last-bit rounding of BLAS matrix products;
* **serialization**: ``to_bytes``/``from_bytes`` gives identical encode/decode/score
  (JSON and raw arrays only); every flipped checksummed byte and every truncation is a
  ``FormatError``;
* **bad input**: NaN/Inf (the first bad row named), wrong dimension (both numbers
  named), 1-D/3-D/0-D arrays, integer/bool/complex/object arrays, codes of the wrong
  width or dtype: ``ValueError``/``TypeError``, never another exception;
* **memory layout**: non-contiguous and read-only inputs give identical results and
  no input is modified;
* **magnitudes**: data at 1e-30 .. 1e30 scale (and float16-range values) give finite
  outputs or a clear ``ValueError``;
* **index**: ``Index(spec)`` add -> search -> save -> open -> search gives the same ids
  and scores, ``k`` beyond the index pads, duplicate ids are rejected.

Shapes are small (n = 600, d = 64) so that the whole battery stays fast.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import vecpress
from _util import gaussian
from vecpress import Codec, FormatError, Index
from vecpress import container as vblob
from vecpress.codecs import spec as registry
from vecpress.codecs.quantizers.base import Quantizer
from vecpress.codecs.transforms import Transform

N, D, NQ = 600, 64, 9
#: the dimension the reducing transforms keep
D_OUT = D // 2


# -- the specs ---------------------------------------------------------------------------------


def _transform_family(token: str) -> str:
    """The ``TRANSFORM_NAMES`` entry that ``token`` instantiates (``pca32`` -> ``pca<d'>``)."""
    for name in registry.TRANSFORM_NAMES:
        if re.fullmatch(re.escape(name).replace(re.escape("<d'>"), r"\d+"), token):
            return name
    raise KeyError(token)


def _quantizer_family(q: Quantizer) -> str:
    """The registry name of a quantizer's class (the class name where no table names it)."""
    for table in (
        {name: cls for name, (cls, _) in registry.QUANTIZERS.items()},
        registry.PRODUCT_QUANTIZERS,
    ):
        for name, cls in table.items():
            if type(q) is cls:
                return name
    return type(q).__name__


def registry_families() -> set[str]:
    """Every family :mod:`vecpress.codecs.spec` can build, from its own tables and imports.

    The names of ``QUANTIZERS``, ``PRODUCT_QUANTIZERS`` and ``TRANSFORM_NAMES``, plus
    the class name of any other quantizer class the parser can build (the two-level
    ``LVQ2`` of ``lvq<b1>x<b2>``).
    """
    named = {cls for cls, _ in registry.QUANTIZERS.values()}
    named |= set(registry.PRODUCT_QUANTIZERS.values())
    others = {
        obj.__name__
        for obj in vars(registry).values()
        if isinstance(obj, type) and issubclass(obj, Quantizer) and obj is not Quantizer
        if obj not in named
    }
    return (
        set(registry.QUANTIZERS)
        | set(registry.PRODUCT_QUANTIZERS)
        | set(registry.TRANSFORM_NAMES)
        | others
    )


def families_of(spec: str) -> set[str]:
    """The registry families the stages of ``spec`` belong to."""
    transforms, quantizer = registry.parse(spec)
    return {_transform_family(t.spec) for t in transforms} | {_quantizer_family(quantizer)}


def contract_specs() -> list[str]:
    """Representative specs of every registry family, at D = 64.

    Every quantizer once (with a rotation where its estimator assumes one), the product
    quantizers at both bit widths, the two-level LVQ token (alone and centred), and every
    transform before a cheap quantizer; the reducing transforms keep D / 2 dimensions.
    """
    quantizers = [
        *[name for name, (_, rng) in registry.QUANTIZERS.items() if rng is None],  # floats, sign
        "int4",
        "lvq4",
        "hd2,tq3",
        "hd2,tqp2",
        "hd2,rq4",
        "kl3",
        "qjl64",
        "pq16x4",
        "pq8x8",
        "opq8x4",
        "lvq4x8",
    ]
    cheap = ["rq4", "int4", "lvq4", "sign", "lvq2x4", "f16"]
    transforms = []
    for i, name in enumerate(registry.TRANSFORM_NAMES):
        token = name.replace("<d'>", str(D_OUT))
        transforms.append(f"{token},{cheap[i % len(cheap)]}")
    return quantizers + transforms


SPECS = contract_specs()


def _needs_queries(spec: str) -> bool:
    return "leanvec-ood<d'>" in families_of(spec)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return gaussian(np.random.default_rng(1), N, D, offset=0.5)


@pytest.fixture(scope="module")
def q() -> np.ndarray:
    return gaussian(np.random.default_rng(2), NQ, D, offset=0.5)


@pytest.fixture(scope="module")
def train_queries() -> np.ndarray:
    return gaussian(np.random.default_rng(3), 200, D, offset=0.5)


def make(spec: str, x: np.ndarray, train_queries: np.ndarray, seed: int = 1) -> Codec:
    """A codec of ``spec`` fitted on ``x`` (with a query sample where it learns from one)."""
    queries = train_queries if _needs_queries(spec) else None
    return Codec.from_spec(spec, seed=seed).fit(x, queries=queries)


@pytest.fixture(scope="module", params=SPECS)
def fitted(request, x, train_queries) -> Codec:
    return make(request.param, x, train_queries)


def _no_foreign_exception(exc: BaseException) -> None:
    """The error is the library's, not one leaking from numba or an internal assertion."""
    assert not isinstance(exc, AssertionError)
    assert not type(exc).__module__.startswith("numba"), type(exc)


# -- coverage of the registry ------------------------------------------------------------------


def test_the_battery_covers_every_registry_family():
    covered = set().union(*(families_of(s) for s in SPECS))
    assert covered == registry_families()


def test_the_battery_builds_every_stage_class_the_parser_imports():
    """A stage class reachable from the spec parser but built by no battery spec fails here."""
    built = set()
    for s in SPECS:
        transforms, quantizer = registry.parse(s)
        built |= {type(t) for t in transforms} | {type(quantizer)}
    reachable = {
        obj
        for obj in vars(registry).values()
        if isinstance(obj, type)
        and issubclass(obj, (Quantizer, Transform))
        and obj not in (Quantizer, Transform)
    }
    assert reachable <= built, sorted(c.__name__ for c in reachable - built)


def test_specs_are_canonical():
    assert [Codec.from_spec(s).spec for s in SPECS] == SPECS


# -- shapes, dtypes, conversions ---------------------------------------------------------------


def test_shapes_and_dtypes(fitted, x, q):
    codes = fitted.encode(x)
    assert codes.dtype == np.uint8 and codes.flags.c_contiguous
    assert codes.shape == (N, fitted.code_size)
    assert fitted.code_size == Codec.code_size_of(fitted.spec, D)
    y = fitted.decode(codes)
    assert y.dtype == np.float32 and y.shape == (N, D) and y.flags.c_contiguous
    assert np.isfinite(y).all()
    s = fitted.score(q, codes)
    assert s.dtype == np.float32 and s.shape == (NQ, N)
    assert np.isfinite(s).all()
    # the scores estimate <q, x> (sign assumes unit rows: the weakest, 0.43 here)
    exact = q.astype(np.float64) @ x.astype(np.float64).T
    assert np.corrcoef(s.ravel(), exact.ravel())[0, 1] > 0.3  # sign: 0.43
    # score_candidates is score's estimate of the rows asked for, -inf for -1
    rows = np.random.default_rng(0).integers(-1, N, (NQ, 12))
    cand = fitted.score_candidates(q, codes, rows)
    assert cand.dtype == np.float32 and cand.shape == rows.shape
    valid = rows >= 0
    assert (cand[~valid] == -np.inf).all()
    want = np.take_along_axis(s, np.maximum(rows, 0), axis=1)
    np.testing.assert_allclose(cand[valid], want[valid], rtol=1e-4, atol=1e-4 * np.abs(s).max())


def test_float64_and_float16_are_converted(fitted, x, q):
    """float64 and float16 give the results of the same values as float32."""
    codes = fitted.encode(x)
    scores = fitted.score(q, codes)
    x64 = x.astype(np.float64) + 1e-12  # rounds back to the same float32 values
    assert np.array_equal(x64.astype(np.float32), x)
    np.testing.assert_array_equal(fitted.encode(x64), codes)
    assert np.array_equal(fitted.score(q.astype(np.float64), codes), scores)

    x16 = x.astype(np.float16)
    np.testing.assert_array_equal(fitted.encode(x16), fitted.encode(x16.astype(np.float32)))
    q16 = q.astype(np.float16)
    assert np.array_equal(fitted.score(q16, codes), fitted.score(q16.astype(np.float32), codes))


def test_fit_on_float64_equals_fit_on_float32(fitted, x, train_queries):
    a = make(fitted.spec, x, train_queries)
    b = make(fitted.spec, x.astype(np.float64), train_queries)
    assert a.to_bytes() == b.to_bytes()


def test_deterministic(fitted, x, train_queries):
    """The same seed gives the same blob and the same codes (a fresh fit, a fresh codec)."""
    again = make(fitted.spec, x, train_queries)
    assert again.to_bytes() == fitted.to_bytes()
    np.testing.assert_array_equal(again.encode(x), fitted.encode(x))
    np.testing.assert_array_equal(fitted.encode(x), fitted.encode(x))


def test_codes_do_not_depend_on_the_slices(fitted, x, monkeypatch):
    """``encode`` in slices of 7 rows (and of one) gives the codes of one pass, up to
    the last-bit rounding of BLAS matrix products (``pca``, ``opq``, ``kl``), which
    depends on the number of rows: then under 0.1 % of the code bytes differ."""
    from vecpress.codecs import codec as codec_module

    whole = fitted.encode(x)
    monkeypatch.setattr(codec_module, "_encode_rows", lambda d, threads: 7)
    sliced = fitted.encode(x)
    monkeypatch.setattr(codec_module, "_encode_rows", lambda d, threads: 1)
    single = fitted.encode(x[:50])
    assert (sliced != whole).mean() < 1e-3 and (single != whole[:50]).mean() < 1e-3


def test_empty_inputs(fitted, x, q, train_queries):
    with pytest.raises(ValueError, match="empty"):
        make(fitted.spec, x[:0], train_queries)
    none = fitted.encode(x[:0])
    assert none.shape == (0, fitted.code_size) and none.dtype == np.uint8
    codes = fitted.encode(x[:7])
    s = fitted.score(q[:0], codes)
    assert s.shape == (0, 7) and s.dtype == np.float32
    s = fitted.score(q, codes[:0])
    assert s.shape == (NQ, 0) and s.dtype == np.float32
    assert fitted.score(q[:0], codes[:0]).shape == (0, 0)
    y = fitted.decode(codes[:0])
    assert y.shape == (0, D) and y.dtype == np.float32


# -- serialization -----------------------------------------------------------------------------


def test_blob_round_trip_is_exact(fitted, x, q):
    blob = fitted.to_bytes()
    assert isinstance(blob, bytes) and blob.startswith(b"VECPRESS")
    codes = fitted.encode(x)
    scores = fitted.score(q, codes)
    decoded = fitted.decode(codes)
    for buf in (blob, bytearray(blob), memoryview(blob)):
        back = Codec.from_bytes(buf)
        assert back.spec == fitted.spec and back.d == D and back.code_size == fitted.code_size
        np.testing.assert_array_equal(back.encode(x), codes)
        assert np.array_equal(back.score(q, codes), scores)
        np.testing.assert_array_equal(back.decode(codes), decoded)
        assert back.to_bytes() == blob


def _checked_byte_ranges(blob: bytes) -> list[tuple[int, int]]:
    """The byte ranges a blob's checks cover: prefix, header, arrays, footer (not padding)."""
    hlen = int.from_bytes(blob[12:16], "little")
    ranges = [(0, 20 + hlen), (len(blob) - 16, len(blob))]
    _, arrays = vblob.unpack(blob)
    data_start = 20 + hlen + (-(20 + hlen)) % vblob.ALIGN
    meta = json.loads(blob[20 : 20 + hlen])
    for e in meta["arrays"]:
        ranges.append((data_start + e["offset"], data_start + e["offset"] + e["nbytes"]))
    assert len(arrays) == len(meta["arrays"])
    return ranges


def test_flipped_bytes_are_format_errors(fitted):
    """Every byte the format checks (prefix, header, each array, footer), flipped: FormatError.

    Up to 12 positions per range, the ends included: CRC-32 catches every single-byte error,
    so the positions stand for the rest.
    """
    blob = fitted.to_bytes()
    rng = np.random.default_rng(7)
    positions = set()
    for lo, hi in _checked_byte_ranges(blob):
        positions |= {lo, hi - 1, (lo + hi) // 2}
        positions |= set(rng.integers(lo, hi, 9).tolist())
    for pos in sorted(positions):
        buf = bytearray(blob)
        buf[pos] ^= 0xFF
        with pytest.raises(FormatError) as exc:
            Codec.from_bytes(bytes(buf))
        _no_foreign_exception(exc.value)


def test_flipped_padding_byte_is_a_format_error(x):
    codec = Codec.from_spec("hd2,rq4", d=D)
    blob = codec.to_bytes()
    covered = np.zeros(len(blob), bool)
    for lo, hi in _checked_byte_ranges(blob):
        covered[lo:hi] = True
    padding = np.flatnonzero(~covered)
    assert padding.size
    buf = bytearray(blob)
    buf[int(padding[0])] ^= 0xFF
    try:
        Codec.from_bytes(bytes(buf))
    except FormatError:
        return
    raise AssertionError("a blob with a flipped padding byte loaded")


def test_truncated_blobs_are_format_errors(fitted):
    blob = fitted.to_bytes()
    rng = np.random.default_rng(8)
    cuts = {0, 1, 8, 19, 20, len(blob) - 17, len(blob) - 16, len(blob) - 1}
    cuts |= set(range(0, len(blob), max(1, len(blob) // 16)))
    cuts |= set(rng.integers(0, len(blob), 8).tolist())
    for k in sorted(cuts):
        with pytest.raises(FormatError):
            Codec.from_bytes(blob[:k])
    with pytest.raises(FormatError):
        Codec.from_bytes(blob + b"\x00")


def test_repacked_blob_with_wrong_arrays_is_a_format_error(fitted):
    """Valid checksums around wrong content: each stage array dropped, or cut short."""
    config, arrays = vblob.unpack(fitted.to_bytes())
    for name in arrays:
        for mutated in (
            {k: v for k, v in arrays.items() if k != name},
            {**arrays, name: np.asarray(arrays[name]).ravel()[:-1]},
        ):
            with pytest.raises(FormatError) as exc:
                Codec.from_bytes(vblob.pack(config, mutated))
            _no_foreign_exception(exc.value)


# -- bad input ---------------------------------------------------------------------------------


def _with_bad_rows(a: np.ndarray, rows, value) -> np.ndarray:
    a = a.copy()
    for r in rows:
        a[r, 3] = value
    return a


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_rows_are_rejected_and_named(fitted, x, q, train_queries, value):
    for rows in ([0], [17], [5, 40, 199]):
        first = rows[0]
        bad = _with_bad_rows(x, rows, value)
        with pytest.raises(ValueError, match=rf"row {first}\b") as exc:
            make(fitted.spec, bad, train_queries)
        assert f"{len(rows)} row" in str(exc.value)
        with pytest.raises(ValueError, match=rf"row {first}\b"):
            fitted.encode(bad)
        qrow = min(first, NQ - 1)
        with pytest.raises(ValueError, match=rf"row {qrow}\b"):
            fitted.score(_with_bad_rows(q, [qrow], value), fitted.encode(x[:5]))


def _both_numbers(message: str, a: int, b: int) -> bool:
    return bool(re.search(rf"\b{a}\b", message)) and bool(re.search(rf"\b{b}\b", message))


def test_wrong_dimension_names_both_numbers(fitted, x):
    codes = fitted.encode(x[:3])
    for other in (D - 1, D + 16, 1):
        wrong = gaussian(np.random.default_rng(3), 4, other)
        for call in (
            lambda w=wrong: fitted.encode(w),
            lambda w=wrong: fitted.score(w, codes),
            lambda w=wrong: fitted.score_candidates(w, codes, np.zeros((4, 1), np.int64)),
            lambda w=wrong: fitted.fit(w),
        ):
            with pytest.raises(ValueError) as exc:
                call()
            assert _both_numbers(str(exc.value), D, other), str(exc.value)


@pytest.mark.parametrize("shape", [(D,), (2, 3, D), ()], ids=["1-D", "3-D", "0-D"])
def test_not_two_dimensional(fitted, x, shape):
    bad = np.ones(shape, np.float32)
    with pytest.raises(ValueError, match="2-D"):
        fitted.encode(bad)
    with pytest.raises(ValueError, match="2-D"):
        fitted.score(bad, fitted.encode(x[:3]))
    with pytest.raises(ValueError, match="2-D"):
        Codec.from_spec(fitted.spec).fit(bad)


BAD_DTYPES = [np.int32, np.int64, np.uint8, np.int8, np.bool_, np.complex64, np.complex128, object]


def test_non_float_arrays_are_type_errors(fitted, x):
    codes = fitted.encode(x[:3])
    for dtype in BAD_DTYPES:
        bad = np.ones((4, D), dtype=dtype)
        for call in (
            lambda b=bad: fitted.encode(b),
            lambda b=bad: fitted.score(b, codes),
            lambda b=bad: Codec.from_spec(fitted.spec).fit(b),
        ):
            with pytest.raises(TypeError):
                call()


def test_codes_of_wrong_width_or_dtype(fitted, x, q):
    codes = fitted.encode(x[:4])
    for bad in (codes[:, :-1], np.zeros((4, fitted.code_size + 1), np.uint8), codes[0]):
        for call in (
            lambda b=bad: fitted.score(q, b),
            lambda b=bad: fitted.decode(b),
            lambda b=bad: fitted.score_candidates(q, b, np.zeros((NQ, 1), np.int64)),
        ):
            with pytest.raises(ValueError, match=str(fitted.code_size)):
                call()
    for dtype in (np.int8, np.uint16, np.float32, np.int64, np.bool_):
        with pytest.raises(TypeError, match="uint8"):
            fitted.score(q, codes.astype(dtype))
        with pytest.raises(TypeError, match="uint8"):
            fitted.decode(codes.astype(dtype))
    with pytest.raises(TypeError):
        fitted.score(q, codes.tolist())


def test_candidate_rows_out_of_range(fitted, x, q):
    codes = fitted.encode(x[:4])
    with pytest.raises(ValueError, match="rows"):
        fitted.score_candidates(q, codes, np.full((NQ, 2), 4))
    with pytest.raises(ValueError, match="rows"):
        fitted.score_candidates(q, codes, np.zeros((NQ + 1, 2), np.int64))


# -- memory layout ----------------------------------------------------------------------------


def test_non_contiguous_inputs_give_identical_results(fitted, x, q):
    codes = fitted.encode(x)
    scores = fitted.score(q, codes)

    wide = np.zeros((N, 2 * D), np.float32)
    wide[:, ::2] = x
    for name, view in {"column step": wide[:, ::2], "Fortran": np.asfortranarray(x)}.items():
        assert not view.flags.c_contiguous, name
        np.testing.assert_array_equal(fitted.encode(view), codes, err_msg=name)
    for rows in (x[::3], x[::-1]):
        np.testing.assert_array_equal(fitted.encode(rows), fitted.encode(rows.copy()))

    q_wide = np.zeros((NQ, 2 * D), np.float32)
    q_wide[:, 1::2] = q
    assert np.array_equal(fitted.score(q_wide[:, 1::2], codes), scores)
    assert np.array_equal(fitted.score(np.asfortranarray(q), codes), scores)

    # codes: strided rows, Fortran order, a column slice of a wider buffer (compared with
    # contiguous copies: BLAS may round differently for another number of rows)
    strided = codes[::2]
    assert np.array_equal(fitted.score(q, strided), fitted.score(q, strided.copy()))
    assert np.array_equal(fitted.score(q, np.asfortranarray(codes)), scores)
    buf = np.zeros((N, fitted.code_size + 5), np.uint8)
    buf[:, 3 : 3 + fitted.code_size] = codes
    assert np.array_equal(fitted.score(q, buf[:, 3 : 3 + fitted.code_size]), scores)
    np.testing.assert_array_equal(fitted.decode(strided), fitted.decode(strided.copy()))


def test_inputs_are_not_modified_and_may_be_read_only(fitted, x, q):
    xr, qr = x.copy(), q.copy()
    xr.flags.writeable = False
    qr.flags.writeable = False
    codes = fitted.encode(xr)
    codes.flags.writeable = False
    scores = fitted.score(qr, codes)
    fitted.decode(codes)
    fitted.score_candidates(qr, codes, np.zeros((NQ, 3), np.int64))
    np.testing.assert_array_equal(xr, x)
    np.testing.assert_array_equal(qr, q)
    np.testing.assert_array_equal(codes, fitted.encode(x))
    assert np.array_equal(scores, fitted.score(q, fitted.encode(x)))


# -- magnitudes --------------------------------------------------------------------------------

SCALES = [1e-30, 1e-8, 6e4, 1e12, 1e30]


def _finite_or_value_error(call):
    """``call()``'s result, or None when it raised a clear ValueError."""
    try:
        return call()
    except ValueError as e:
        _no_foreign_exception(e)
        assert str(e), "an empty message is not a clear error"
        return None


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_extreme_scales_give_finite_results_or_a_clear_error(fitted, x, q, train_queries):
    """Data fitted, encoded and scored at 1e-30 .. 1e30 scale, and float16-range values in
    data fitted at scale 1: finite outputs, or a ValueError with a message."""
    for scale in SCALES:
        xs = x * np.float32(scale)
        ts = train_queries * scale
        codec = _finite_or_value_error(lambda xs=xs, ts=ts: make(fitted.spec, xs, ts))
        if codec is None:
            continue
        codes = _finite_or_value_error(lambda c=codec, xs=xs: c.encode(xs))
        if codes is None:
            continue
        assert codes.shape == (N, codec.code_size)
        for qs in (q, q * np.float32(scale)):
            s = _finite_or_value_error(lambda c=codec, qs=qs, codes=codes: c.score(qs, codes))
            assert s is None or np.isfinite(s).all(), (scale, fitted.spec)
        y = codec.decode(codes)
        assert np.isfinite(y).all(), (scale, fitted.spec)
    big = x.copy()
    big[3] = np.float32(6e4) * np.sign(big[3])  # float16's largest values, in one row
    codes = _finite_or_value_error(lambda: fitted.encode(big))
    if codes is not None:
        assert np.isfinite(fitted.score(q, codes)).all()
        assert np.isfinite(fitted.decode(codes)).all()


# -- index -------------------------------------------------------------------------------------

METRICS = ("ip", "l2", "cosine")


@pytest.fixture(scope="module", params=SPECS)
def index_case(request, x, train_queries, tmp_path_factory):
    spec = request.param
    metric = METRICS[SPECS.index(spec) % len(METRICS)]
    index = Index(spec, metric=metric, seed=3)
    if _needs_queries(spec):
        index.train(x, queries=train_queries)
    ids = np.arange(N, dtype=np.int64) * 3 + 7
    assert np.array_equal(index.add(x, ids=ids), ids)
    path = tmp_path_factory.mktemp("contract") / "index.vpi"
    index.save(path)
    return index, ids, path


def _search(index: Index, q: np.ndarray, k: int):
    rerank = 3 * k if index.has_second_tier else None
    return index.search(q, k, rerank=rerank)


def test_index_search_survives_save_and_open(index_case, q):
    index, ids, path = index_case
    res = _search(index, q, 10)
    assert res.ids.shape == (NQ, 10) and res.ids.dtype == np.int64
    assert res.scores.shape == (NQ, 10) and res.scores.dtype == np.float32
    assert np.isin(res.ids, ids).all()
    assert np.isfinite(res.scores).all()
    assert (np.diff(res.scores, axis=1) <= 0).all()
    for mmap in (True, False):
        back = vecpress.open(path, mmap=mmap)
        assert back.spec == index.spec and len(back) == N
        again = _search(back, q, 10)
        np.testing.assert_array_equal(again.ids, res.ids)
        np.testing.assert_array_equal(again.scores, res.scores)


def test_index_k_beyond_the_index(index_case, q):
    index, ids, _ = index_case
    k = N + 20
    res = _search(index, q, k)
    assert res.ids.shape == (NQ, k)
    assert (res.ids[:, N:] == -1).all() and (res.scores[:, N:] == -np.inf).all()
    assert all(sorted(row) == sorted(ids) for row in res.ids[:, :N].tolist())
    with pytest.raises(ValueError, match="larger than the index"):
        index.search(q, 10_000)


def test_index_rejects_duplicate_ids_and_bad_rows(index_case, x):
    index, ids, _ = index_case
    before = len(index)
    with pytest.raises(ValueError, match=str(ids[5])):
        index.add(x[:2], ids=[ids[5], 10**9])
    with pytest.raises(ValueError, match="10000000"):
        index.add(x[:2], ids=[10**7, 10**7])
    with pytest.raises(ValueError, match=r"row 1\b"):
        index.add(_with_bad_rows(x[:3], [1], np.nan), ids=[10**8, 10**8 + 1, 10**8 + 2])
    with pytest.raises(ValueError):
        index.add(x[:2, :-1])
    assert len(index) == before
    assert not index.contains(np.array([10**9, 10**7, 10**8])).any()


@pytest.mark.parametrize("spec", SPECS)
def test_score_candidates_without_candidates(spec, x, q, train_queries):
    codec = make(spec, x, train_queries)
    codes = codec.encode(x[:7])
    for c in (codes, codes[:0]):
        cand = codec.score_candidates(q, c, np.zeros((NQ, 0), np.int64))
        assert cand.shape == (NQ, 0) and cand.dtype == np.float32


# -- magnitudes: the estimates keep their quality at any scale ---------------------------------


def _quality(codec: Codec, x: np.ndarray, q: np.ndarray, scale: float, q_scale: float) -> float:
    """Correlation of ``score(q * q_scale, encode(x * scale)) / (scale * q_scale)`` with the
    exact inner products of the unscaled rows (nan when the scores are constant)."""
    codes = codec.encode(x * np.float32(scale))
    s = codec.score(q * np.float32(q_scale), codes).astype(np.float64) / (scale * q_scale)
    exact = q.astype(np.float64) @ x.astype(np.float64).T
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.corrcoef(s.ravel(), exact.ravel())[0, 1])


def _stores_float16_values(spec: str) -> bool:
    """``f16`` keeps the values themselves in float16: its range is float16's by design."""
    return "f16" in families_of(spec)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("spec", [s for s in SPECS if not _stores_float16_values(s)])
def test_scores_keep_their_quality_at_any_scale(spec, x, q, train_queries):
    """Rows and queries both scaled by 1e-15 .. 1e12 (products of 1e-30 .. 1e24, inside
    float32 and the norm limit): the codec, fitted on the scaled rows, ranks as well as at
    scale 1, as the Codec's docstring promises for data of any scale within the limit."""
    base = _quality(make(spec, x, train_queries), x, q, 1.0, 1.0)
    for scale in (1e-15, 1e-8, 6e4, 1e12):
        codec = make(spec, x * np.float32(scale), train_queries * scale)
        r = _quality(codec, x, q, scale, scale)
        assert r >= base - 0.02, (scale, r, base)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("spec", [s for s in SPECS if not _stores_float16_values(s)])
def test_tiny_rows_keep_their_ranking(spec, x, q, train_queries):
    """Rows of 1e-30 .. 1e-20 (queries at scale 1: their products would underflow float32):
    the scores, divided by the scale, rank about as well as at scale 1."""
    base = _quality(make(spec, x, train_queries), x, q, 1.0, 1.0)
    for scale in (1e-30, 1e-20):
        codec = make(spec, x * np.float32(scale), train_queries * scale)
        r = _quality(codec, x, q, scale, 1.0)
        assert r >= base - 0.05, (scale, r, base)


# -- every parameter value the registry allows, at its ends and in between ---------------------


def bit_width_specs() -> list[str]:
    """Each parametrized ``QUANTIZERS`` family at every value of its range up to 8, and at
    a few larger ones (``qjl<m>``: 7, 64, 100 and the top of its range would cost megabytes),
    after ``hd2`` where the estimator assumes rotated rows; ``lvq<b1>x<b2>`` at its ends."""
    rotated = {"tq", "tqp", "rq"}
    out = []
    for name, (_, rng) in registry.QUANTIZERS.items():
        if rng is None:
            continue
        lo, hi = rng
        values = list(range(lo, min(hi, 8) + 1)) + [v for v in (64, 100) if v <= hi]
        out += [f"{'hd2,' if name in rotated else ''}{name}{v}" for v in values]
    out += ["lvq1x1", "lvq8x8", "lvq1x8", "lvq8x1"]
    return out


@pytest.mark.parametrize("spec", bit_width_specs())
def test_every_parameter_value_round_trips(spec, x, q):
    codec = Codec.from_spec(spec, seed=5).fit(x)
    codes = codec.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (N, Codec.code_size_of(spec, D))
    y = codec.decode(codes)
    assert y.dtype == np.float32 and y.shape == (N, D) and y.flags.c_contiguous
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(codec.decode(codes), y)
    scores = codec.score(q, codes)
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    blob = codec.to_bytes()
    back = Codec.from_bytes(blob)
    assert back.spec == codec.spec and back.to_bytes() == blob
    np.testing.assert_array_equal(back.encode(x), codes)
    assert np.array_equal(back.score(q, codes), scores)
    np.testing.assert_array_equal(back.decode(codes), y)
