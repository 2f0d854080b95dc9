"""The input contract: every entry point rejects bad input clearly and accepts the rest."""

from __future__ import annotations

import re

import numpy as np
import pytest

import vecpress
from _util import gaussian
from vecpress import Codec

D = 32
SPECS = ["hd2,rq4", "center,int4", "f16", "e4m3", "lvq4", "hd2,tq3", "hd2,tqp2", "qjl16", "sign"]


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return gaussian(np.random.default_rng(1), 200, D, offset=0.5)


@pytest.fixture(scope="module")
def q() -> np.ndarray:
    return gaussian(np.random.default_rng(2), 9, D, offset=0.5)


@pytest.fixture(scope="module", params=SPECS)
def fitted(request, x):
    return Codec.from_spec(request.param, seed=1).fit(x)


def _with_bad_row(a: np.ndarray, rows, value) -> np.ndarray:
    a = a.copy()
    for r in rows:
        a[r, 3] = value
    return a


# -- NaN / Inf ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("rows", [[0], [17], [5, 40, 199]], ids=["first", "one", "several"])
def test_non_finite_rows_are_rejected_and_named(fitted, x, q, value, rows):
    first = rows[0]
    bad = _with_bad_row(x, rows, value)
    with pytest.raises(ValueError, match=rf"row {first}\b") as exc:
        Codec.from_spec(fitted.spec).fit(bad)
    assert f"{len(rows)} row" in str(exc.value)
    with pytest.raises(ValueError, match=rf"row {first}\b"):
        fitted.encode(bad)
    qrow = min(first, q.shape[0] - 1)
    with pytest.raises(ValueError, match=rf"row {qrow}\b"):
        fitted.score(_with_bad_row(q, [qrow], value), fitted.encode(x[:5]))


def test_nan_in_float64_and_float16_input(x):
    codec = Codec.from_spec("hd2,rq4", d=D)
    for dtype in (np.float64, np.float16):
        with pytest.raises(ValueError, match=r"row 2\b"):
            codec.encode(_with_bad_row(x, [2], np.nan).astype(dtype))


# The float32 conversion warns before the check raises; the error is what matters here.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_float64_overflowing_float32_is_rejected(x):
    """1e300 is finite in float64 but infinite once converted: it must not slip through."""
    codec = Codec.from_spec("hd2,rq4", d=D)
    with pytest.raises(ValueError, match=r"row 4\b"):
        codec.encode(_with_bad_row(x.astype(np.float64), [4], 1e300))


# -- dimensions -----------------------------------------------------------------------------


def _both_numbers(message: str, a: int, b: int) -> bool:
    return bool(re.search(rf"\b{a}\b", message)) and bool(re.search(rf"\b{b}\b", message))


@pytest.mark.parametrize("other", [D - 1, D + 16, 1])
def test_wrong_dimension_names_both_numbers(fitted, x, other):
    wrong = gaussian(np.random.default_rng(3), 4, other)
    with pytest.raises(ValueError) as exc:
        fitted.encode(wrong)
    assert _both_numbers(str(exc.value), D, other), str(exc.value)
    with pytest.raises(ValueError) as exc:
        fitted.score(wrong, fitted.encode(x[:3]))
    assert _both_numbers(str(exc.value), D, other), str(exc.value)


def test_fit_with_another_dimension_than_from_spec(x):
    codec = Codec.from_spec("hd2,rq4", d=48)
    with pytest.raises(ValueError) as exc:
        codec.fit(x)
    assert _both_numbers(str(exc.value), 48, D)


def test_refit_with_another_dimension(x):
    codec = Codec.from_spec("center,int4").fit(x)
    with pytest.raises(ValueError):
        codec.fit(gaussian(np.random.default_rng(0), 50, D + 1))


@pytest.mark.parametrize("shape", [(D,), (2, 3, D), ()], ids=["1-D", "3-D", "0-D"])
def test_not_two_dimensional(fitted, x, shape):
    bad = np.ones(shape, np.float32)
    with pytest.raises(ValueError, match="2-D"):
        fitted.encode(bad)
    with pytest.raises(ValueError, match="2-D"):
        fitted.score(bad, fitted.encode(x[:3]))
    with pytest.raises(ValueError, match="2-D"):
        Codec.from_spec(fitted.spec).fit(bad)


def test_one_dimensional_hint():
    with pytest.raises(ValueError, match=re.escape("x[None, :]")):
        Codec.from_spec("hd2,rq4", d=D).encode(np.ones(D, np.float32))


def test_zero_columns():
    with pytest.raises(ValueError):
        Codec.from_spec("hd2,rq4").fit(np.ones((5, 0), np.float32))


# -- dtypes ---------------------------------------------------------------------------------

BAD_DTYPES = [np.int32, np.int64, np.uint8, np.int8, np.bool_, np.complex64, np.complex128, object]


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda t: np.dtype(t).name)
def test_non_float_arrays_are_type_errors(fitted, x, dtype):
    bad = np.ones((4, D), dtype=dtype)
    with pytest.raises(TypeError):
        fitted.encode(bad)
    with pytest.raises(TypeError):
        fitted.score(bad, fitted.encode(x[:3]))
    with pytest.raises(TypeError):
        Codec.from_spec(fitted.spec).fit(bad)


@pytest.mark.parametrize("bad", [None, "abc", 3.0, {"a": 1}], ids=["None", "str", "float", "dict"])
def test_non_arrays_are_type_errors(bad):
    with pytest.raises(TypeError):
        Codec.from_spec("hd2,rq4", d=D).encode(bad)


def test_list_of_floats_is_accepted_list_of_ints_is_not(x):
    codec = Codec.from_spec("hd2,rq4", d=D)
    np.testing.assert_array_equal(codec.encode(x[:3].tolist()), codec.encode(x[:3]))
    with pytest.raises(TypeError):
        codec.encode([[1] * D])


def test_float64_and_float16_are_converted(fitted, x, q):
    """Results equal those of the same values given as float32."""
    codes32 = fitted.encode(x)
    s32 = fitted.score(q, codes32)
    x64 = x.astype(np.float64) + 1e-12  # rounds back to the same float32 values
    assert np.array_equal(x64.astype(np.float32), x)
    np.testing.assert_array_equal(fitted.encode(x64), codes32)
    assert np.array_equal(fitted.score(q.astype(np.float64), codes32), s32)

    x16 = x.astype(np.float16)
    np.testing.assert_array_equal(fitted.encode(x16), fitted.encode(x16.astype(np.float32)))
    assert np.array_equal(
        fitted.score(q.astype(np.float16), codes32),
        fitted.score(q.astype(np.float16).astype(np.float32), codes32),
    )


def test_fit_on_float64_equals_fit_on_float32(x, q):
    for spec in ("center,int4", "center,hd2,rq4"):
        a = Codec.from_spec(spec).fit(x)
        b = Codec.from_spec(spec).fit(x.astype(np.float64))
        assert a.to_bytes() == b.to_bytes()


# -- memory layout --------------------------------------------------------------------------


def test_non_contiguous_inputs_give_identical_results(fitted, x, q):
    codes = fitted.encode(x)
    scores = fitted.score(q, codes)

    wide = np.zeros((x.shape[0], 2 * D), np.float32)
    wide[:, ::2] = x
    views = {
        "column step": wide[:, ::2],
        "Fortran": np.asfortranarray(x),
        "reversed": x[::-1][::-1],
    }
    for name, view in views.items():
        assert not view.flags.c_contiguous or name == "reversed", name
        np.testing.assert_array_equal(fitted.encode(view), codes, err_msg=name)

    for rows in (x[::3], x[::-1]):
        want = fitted.encode(np.ascontiguousarray(rows))
        np.testing.assert_array_equal(fitted.encode(rows), want)

    q_wide = np.zeros((q.shape[0], 2 * D), np.float32)
    q_wide[:, 1::2] = q
    assert np.array_equal(fitted.score(q_wide[:, 1::2], codes), scores)
    assert np.array_equal(fitted.score(np.asfortranarray(q), codes), scores)

    # codes: strided rows, Fortran order, a column slice of a wider buffer (compared with
    # contiguous copies: BLAS may round differently for another number of rows)
    strided = codes[::2]
    assert np.array_equal(fitted.score(q, strided), fitted.score(q, strided.copy()))
    assert np.array_equal(fitted.score(q, np.asfortranarray(codes)), scores)
    buf = np.zeros((codes.shape[0], codes.shape[1] + 5), np.uint8)
    buf[:, 3 : 3 + codes.shape[1]] = codes
    assert np.array_equal(fitted.score(q, buf[:, 3 : 3 + codes.shape[1]]), scores)
    np.testing.assert_array_equal(fitted.decode(strided), fitted.decode(strided.copy()))


def test_fit_on_a_non_contiguous_view(x):
    a = Codec.from_spec("center,int4").fit(np.asfortranarray(x))
    b = Codec.from_spec("center,int4").fit(x)
    assert a.to_bytes() == b.to_bytes()


def test_inputs_are_not_modified(fitted, x, q):
    xc, qc = x.copy(), q.copy()
    codes = fitted.encode(x)
    cc = codes.copy()
    fitted.score(q, codes)
    fitted.decode(codes)
    np.testing.assert_array_equal(x, xc)
    np.testing.assert_array_equal(q, qc)
    np.testing.assert_array_equal(codes, cc)


def test_read_only_inputs_are_accepted(fitted, x, q):
    xr, qr = x.copy(), q.copy()
    xr.flags.writeable = False
    qr.flags.writeable = False
    codes = fitted.encode(xr)
    codes.flags.writeable = False
    assert np.array_equal(fitted.score(qr, codes), fitted.score(q, fitted.encode(x)))


# -- empty inputs ---------------------------------------------------------------------------


def test_empty_inputs(fitted, x, q):
    with pytest.raises(ValueError, match="empty"):
        Codec.from_spec(fitted.spec).fit(x[:0])
    none = fitted.encode(x[:0])
    assert none.shape == (0, fitted.code_size) and none.dtype == np.uint8
    codes = fitted.encode(x[:7])
    s = fitted.score(q[:0], codes)
    assert s.shape == (0, 7) and s.dtype == np.float32
    s = fitted.score(q, codes[:0])
    assert s.shape == (q.shape[0], 0) and s.dtype == np.float32
    assert fitted.score(q[:0], codes[:0]).shape == (0, 0)
    y = fitted.decode(codes[:0])
    assert y.shape == (0, D) and y.dtype == np.float32


# -- codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.float32, np.int64, np.bool_])
def test_codes_of_wrong_dtype(fitted, x, q, dtype):
    codes = fitted.encode(x[:4]).astype(dtype)
    with pytest.raises(TypeError, match="uint8"):
        fitted.score(q, codes)
    with pytest.raises(TypeError, match="uint8"):
        fitted.decode(codes)


def test_codes_of_wrong_shape(fitted, x, q):
    codes = fitted.encode(x[:4])
    for bad in (codes[:, :-1], np.zeros((4, fitted.code_size + 1), np.uint8), codes[0]):
        with pytest.raises(ValueError, match=str(fitted.code_size)):
            fitted.score(q, bad)
        with pytest.raises(ValueError, match=str(fitted.code_size)):
            fitted.decode(bad)
    with pytest.raises(TypeError):
        fitted.score(q, codes.tolist())


# -- fitting --------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["center,rq4", "int4", "center,hd2,f32", "center,lvq4"])
@pytest.mark.parametrize("d", [None, D])
def test_learned_codecs_need_fit(spec, d, x, q):
    codec = Codec.from_spec(spec, d=d)
    assert not codec.is_fitted
    for call in (
        lambda: codec.encode(x),
        lambda: codec.decode(np.zeros((2, 8), np.uint8)),
        lambda: codec.score(q, np.zeros((2, 8), np.uint8)),
        lambda: codec.code_size,
        lambda: codec.to_bytes(),
        lambda: codec.transform_queries(q),
    ):
        with pytest.raises(vecpress.NotFittedError, match="fit"):
            call()
    codec.fit(x)
    assert codec.is_fitted
    assert codec.encode(x).shape == (x.shape[0], codec.code_size)


@pytest.mark.parametrize("spec", ["hd2,rq4", "haar,tq2", "f16", "qjl16", "hd3,sign", "lvq4"])
def test_training_free_codecs_work_without_fit(spec, x, q):
    codec = Codec.from_spec(spec, d=D, seed=4)
    assert codec.is_fitted
    codes = codec.encode(x)
    assert codes.shape == (x.shape[0], codec.code_size)
    assert codec.score(q, codes).shape == (q.shape[0], x.shape[0])
    # fit only fixes the dimension: nothing changes
    blob = codec.to_bytes()
    codec.fit(x)
    assert codec.to_bytes() == blob


def test_training_free_codec_without_dimension_needs_fit(x):
    codec = Codec.from_spec("hd2,rq4")
    with pytest.raises(vecpress.NotFittedError):
        codec.encode(x)


def test_not_fitted_error_is_a_value_error():
    assert issubclass(vecpress.NotFittedError, ValueError)
    assert issubclass(vecpress.FormatError, ValueError)


# -- from_bytes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"VECPRESS", b"VECPRESS" + bytes(100), bytes(1000), b"\xff" * 64],
    ids=["empty", "garbage", "magic", "magic+zeros", "zeros", "ff"],
)
def test_from_bytes_on_garbage(data):
    with pytest.raises(vecpress.FormatError):
        Codec.from_bytes(data)


def test_from_bytes_on_random_bytes():
    rng = np.random.default_rng(0)
    for n in (10, 100, 1000, 5000):
        with pytest.raises(vecpress.FormatError):
            Codec.from_bytes(rng.integers(0, 256, n, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("data", [None, "VECPRESS", 123, [1, 2], np.zeros(100, np.uint8)])
def test_from_bytes_on_non_bytes(data):
    with pytest.raises(TypeError):
        Codec.from_bytes(data)


def test_format_error_names_the_source():
    with pytest.raises(vecpress.FormatError, match=re.escape("my-file.vp")):
        Codec.from_bytes(b"nonsense", source="my-file.vp")


# -- value ranges ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["lvq4", "lvq8", "center,lvq2"])
@pytest.mark.parametrize("big", [4e4, 1e5, 1e30])
def test_lvq_values_beyond_float16_range(spec, big, x):
    # beyond what the codec fitted on x holds (its float16 bounds), or (1e30) beyond
    # the norm limit of every input: either way a ValueError naming the row
    codec = Codec.from_spec(spec).fit(x)
    why = "float16" if big < vecpress.MAX_NORM else r"2\*\*50"
    bad = x.copy()
    bad[3, 5] = big
    with pytest.raises(ValueError, match=rf"row 3\b.*{why}|{why}.*row 3\b"):
        codec.encode(bad)
    bad[3, 5] = -big
    with pytest.raises(ValueError, match=rf"row 3\b.*{why}|{why}.*row 3\b"):
        codec.encode(bad)


def test_lvq_values_within_range_are_fine(x):
    codec = Codec.from_spec("lvq8", d=D)
    y = x * (3e4 / np.abs(x).max())
    rec = codec.decode(codec.encode(y))
    assert np.isfinite(rec).all()
    assert np.abs(rec - y).max() <= 2 * (y.max(axis=1) - y.min(axis=1)).max() / 255
