"""Spec strings: parse -> stages -> print back, and clear errors for bad specs."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vecpress
from vecpress import Codec

TRANSFORMS = ["center", "haar", "hd1", "hd2", "hd3"]
PLAIN_QUANTIZERS = ["f32", "f16", "bf16", "e4m3", "e5m2", "sign"]
BIT_FAMILIES = ["int", "lvq", "tq", "tqp", "rq", "kl"]
QJL_M = [1, 7, 8, 64, 255, 1024, 65536]

QUANTIZER_SPECS = (
    PLAIN_QUANTIZERS
    + [f"{fam}{b}" for fam in BIT_FAMILIES for b in range(1, 9)]
    + [f"qjl{m}" for m in QJL_M]
)

COMPOSED = [
    "center,hd2,rq4",
    "center,f32",
    "haar,tq3",
    "hd1,int2",
    "hd3,lvq7",
    "center,haar,hd1,hd2,hd3,sign",
    "hd2,hd2,rq8",
    "haar,qjl64",
    "center,hd3,tqp5",
]


@pytest.mark.parametrize("spec", QUANTIZER_SPECS + COMPOSED)
def test_canonical_spec_round_trips(spec):
    assert Codec.from_spec(spec).spec == spec
    ts, q = vecpress.parse_spec(spec)
    assert ",".join([t.spec for t in ts] + [q.spec]) == spec


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("quantizer", ["f16", "int3", "rq4", "qjl64", "sign"])
def test_every_transform_before_every_family(transform, quantizer):
    spec = f"{transform},{quantizer}"
    assert Codec.from_spec(spec).spec == spec


@pytest.mark.parametrize("spec", ["hd2,rq4", "center,int3", "haar,tq2", "qjl16", "e4m3"])
def test_spec_survives_setup_and_serialisation(spec, data_64):
    codec = Codec.from_spec(spec, seed=3).fit(data_64[:, :16])
    assert codec.spec == spec
    assert Codec.from_bytes(codec.to_bytes()).spec == spec


@pytest.mark.parametrize(
    ("messy", "canonical"),
    [
        ("Center, HD2 ,RQ4", "center,hd2,rq4"),
        ("  F16  ", "f16"),
        ("QJL64", "qjl64"),
        ("\tHaar,\nTq3 ", "haar,tq3"),
        ("hd1 , hd3 , SIGN", "hd1,hd3,sign"),
        ("E4M3", "e4m3"),
    ],
)
def test_case_and_whitespace_are_normalised(messy, canonical):
    assert Codec.from_spec(messy).spec == canonical


_SEP = st.sampled_from([",", " ,", ", ", " , ", "\t,"])


@st.composite
def messy_specs(draw):
    n = draw(st.integers(0, 4))
    ts = draw(st.lists(st.sampled_from(TRANSFORMS[1:]), min_size=n, max_size=n))
    if draw(st.booleans()):
        ts.insert(draw(st.integers(0, len(ts))), "center")
    q = draw(st.sampled_from(QUANTIZER_SPECS))
    tokens = [*ts, q]
    canonical = ",".join(tokens)
    cased = ["".join(c.upper() if draw(st.booleans()) else c for c in tok) for tok in tokens]
    text = cased[0]
    for tok in cased[1:]:
        text += draw(_SEP) + tok
    return draw(st.sampled_from(["", " ", "  "])) + text + draw(st.sampled_from(["", " "])), (
        canonical
    )


@settings(max_examples=200)
@given(messy_specs())
def test_random_messy_specs_normalise(pair):
    messy, canonical = pair
    assert Codec.from_spec(messy).spec == canonical


# -- errors -------------------------------------------------------------------------------


def _assert_lists_valid_names(message: str) -> None:
    for name in ["center", "haar", "hd1", "hd2", "hd3", "f32", "e5m2", "sign"]:
        assert name in message, f"valid name {name!r} missing from: {message}"
    for fam in BIT_FAMILIES:
        assert f"{fam}<b>" in message, f"{fam}<b> missing from: {message}"
    assert "qjl<m>" in message


@pytest.mark.parametrize(
    ("spec", "bad"),
    [
        ("foo", "foo"),
        ("hd2,pq4", "pq4"),
        ("hd4,rq4", "hd4"),
        ("hd2,rq", "rq"),
        ("qjl", "qjl"),
        ("sign1", "sign1"),
        ("f32x", "f32x"),
        ("r q4", "r q4"),
        ("centre,rq4", "centre"),
        ("hd2,rq4x", "rq4x"),
    ],
)
def test_unknown_stage_is_named_and_valid_names_listed(spec, bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))) as exc:
        Codec.from_spec(spec)
    _assert_lists_valid_names(str(exc.value))


@pytest.mark.parametrize(("spec", "bad"), [("rq4,center", "rq4"), ("f16,hd2,rq4", "f16")])
def test_quantizer_before_the_end_is_rejected(spec, bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))) as exc:
        Codec.from_spec(spec)
    assert "quantizer" in str(exc.value)
    assert "last" in str(exc.value)
    _assert_lists_valid_names(str(exc.value))


@pytest.mark.parametrize(
    "spec",
    ["center", "haar", "hd1", "hd3", "center,hd2", "pca24", "center,pca24", "leanvec8",
     "leanvec-ood16", "hd2,pca100"],
)  # fmt: skip
def test_spec_ending_in_a_transform_is_rejected(spec):
    """Parametrised transforms too (pca<d'>, leanvec<d'>): the message says what the
    stage is and what is missing, not that it is an unknown quantizer."""
    last = spec.split(",")[-1]
    with pytest.raises(ValueError, match=re.escape(repr(last))) as exc:
        Codec.from_spec(spec)
    msg = str(exc.value)
    assert f"{last} is a transform and needs a quantizer after it" in msg
    assert "must end with a quantizer" in msg and "not a valid quantizer" not in msg
    assert repr(spec + ",rq4") in msg
    _assert_lists_valid_names(msg)


@pytest.mark.parametrize("spec", ["pca0", "foo7", "rq99x"])
def test_an_unknown_last_stage_is_not_called_a_transform(spec):
    with pytest.raises(ValueError) as exc:
        Codec.from_spec(spec)
    assert "is a transform" not in str(exc.value)


@pytest.mark.parametrize("spec", ["", " ", "hd2,,rq4", ",rq4", "hd2,rq4,", " , ", "hd2, ,rq4"])
def test_empty_stage_is_rejected(spec):
    with pytest.raises(ValueError, match="empty stage") as exc:
        Codec.from_spec(spec)
    _assert_lists_valid_names(str(exc.value))


@pytest.mark.parametrize("family", BIT_FAMILIES)
@pytest.mark.parametrize("b", [0, 9, 10, 16])
def test_bits_out_of_range_name_the_stage_and_the_range(family, b):
    token = f"{family}{b}"
    with pytest.raises(ValueError, match=re.escape(repr(token))) as exc:
        Codec.from_spec(f"hd2,{token}")
    assert "[1, 8]" in str(exc.value)
    assert f"found {b}" in str(exc.value)


@pytest.mark.parametrize("token", ["qjl0", "qjl65537"])
def test_qjl_width_out_of_range(token):
    with pytest.raises(ValueError, match=re.escape(repr(token))) as exc:
        Codec.from_spec(token)
    assert "[1, 65536]" in str(exc.value)


@pytest.mark.parametrize("spec", ["rq04", "int008", "qjl064"])
def test_leading_zeros_are_not_canonical(spec):
    with pytest.raises(ValueError, match=re.escape(repr(spec))):
        Codec.from_spec(spec)


@pytest.mark.parametrize("spec", ["center,center,rq4", "center,hd2,center,f32"])
def test_center_twice_is_rejected(spec):
    with pytest.raises(ValueError, match="'center'") as exc:
        Codec.from_spec(spec)
    assert "once" in str(exc.value)


@pytest.mark.parametrize("spec", [None, 42, b"hd2,rq4", ["hd2", "rq4"], ("rq4",), 4.0])
def test_non_string_spec_is_a_type_error(spec):
    with pytest.raises(TypeError, match="spec must be a string"):
        Codec.from_spec(spec)
    with pytest.raises(TypeError):
        vecpress.parse_spec(spec)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"d": 0}, ValueError),
        ({"d": -3}, ValueError),
        ({"d": 2.0}, TypeError),
        ({"d": "8"}, TypeError),
        ({"d": True}, TypeError),
        ({"seed": -1}, ValueError),
        ({"seed": 1.5}, TypeError),
        ({"seed": None}, TypeError),
    ],
)
def test_bad_dimension_or_seed(kwargs, exc):
    with pytest.raises(exc):
        Codec.from_spec("hd2,rq4", **kwargs)
