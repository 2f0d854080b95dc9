"""The input contract: every entry point rejects bad input clearly and accepts the rest.

The checks that every codec must pass (NaN/Inf, dimensions, dtypes, empty and
non-contiguous inputs, codes of the wrong shape) run on every registry family in
``test_contract.py``; this module keeps the checks of particular entry points and specs.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import vecpress
from _util import gaussian
from vecpress import Codec

D = 32


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return gaussian(np.random.default_rng(1), 200, D, offset=0.5)


@pytest.fixture(scope="module")
def q() -> np.ndarray:
    return gaussian(np.random.default_rng(2), 9, D, offset=0.5)


def _with_bad_row(a: np.ndarray, rows, value) -> np.ndarray:
    a = a.copy()
    for r in rows:
        a[r, 3] = value
    return a


# -- NaN / Inf ------------------------------------------------------------------------------


def test_nan_in_float64_and_float16_input(x):
    codec = Codec.from_spec("hd2,rq4", d=D)
    for dtype in (np.float64, np.float16):
        with pytest.raises(ValueError, match=r"row 2\b"):
            codec.encode(_with_bad_row(x, [2], np.nan).astype(dtype))


@pytest.mark.filterwarnings("error")  # the cast to float32 does not warn either
def test_float64_overflowing_float32_is_rejected(x):
    """1e300 is finite in float64 but infinite once converted: it must not slip through,
    and the message says it is too large (not NaN)."""
    codec = Codec.from_spec("hd2,rq4", d=D)
    with pytest.raises(ValueError, match=r"row 4, holds finite values too large for float32"):
        codec.encode(_with_bad_row(x.astype(np.float64), [4], 1e300))
    with pytest.raises(ValueError, match=r"NaN or Inf values, first at row 3\b"):
        codec.encode(_with_bad_row(x.astype(np.float64), [3], np.inf))


# -- dimensions -----------------------------------------------------------------------------


def _both_numbers(message: str, a: int, b: int) -> bool:
    return bool(re.search(rf"\b{a}\b", message)) and bool(re.search(rf"\b{b}\b", message))


def test_fit_with_another_dimension_than_from_spec(x):
    codec = Codec.from_spec("hd2,rq4", d=48)
    with pytest.raises(ValueError) as exc:
        codec.fit(x)
    assert _both_numbers(str(exc.value), 48, D)


def test_refit_with_another_dimension(x):
    codec = Codec.from_spec("center,int4").fit(x)
    with pytest.raises(ValueError):
        codec.fit(gaussian(np.random.default_rng(0), 50, D + 1))


def test_one_dimensional_hint():
    with pytest.raises(ValueError, match=re.escape("x[None, :]")):
        Codec.from_spec("hd2,rq4", d=D).encode(np.ones(D, np.float32))


def test_zero_columns():
    with pytest.raises(ValueError):
        Codec.from_spec("hd2,rq4").fit(np.ones((5, 0), np.float32))


# -- dtypes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, "abc", 3.0, {"a": 1}], ids=["None", "str", "float", "dict"])
def test_non_arrays_are_type_errors(bad):
    with pytest.raises(TypeError):
        Codec.from_spec("hd2,rq4", d=D).encode(bad)


def test_list_of_floats_is_accepted_list_of_ints_is_not(x):
    codec = Codec.from_spec("hd2,rq4", d=D)
    np.testing.assert_array_equal(codec.encode(x[:3].tolist()), codec.encode(x[:3]))
    with pytest.raises(TypeError):
        codec.encode([[1] * D])


# -- memory layout --------------------------------------------------------------------------


def test_fit_on_a_non_contiguous_view(x):
    a = Codec.from_spec("center,int4").fit(np.asfortranarray(x))
    b = Codec.from_spec("center,int4").fit(x)
    assert a.to_bytes() == b.to_bytes()


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
