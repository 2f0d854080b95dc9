"""encode -> decode -> encode, to_bytes -> from_bytes, and tampered blobs.

The blob round trip, truncations and flipped bytes of every registry family (and of
every bit width) are checked in ``test_contract.py``; this module keeps re-encoding and
the exhaustive tampering of one small codec.
"""

from __future__ import annotations

import numpy as np
import pytest

import vecpress
from _util import gaussian
from vecpress import Codec
from vecpress.kernels.bitpack import packed_size

# Rows that must come back bit for bit: the codes *and* every per-vector field.
ROW_EXACT = [
    "f32",
    "f16",
    "bf16",
    "e4m3",
    "e5m2",
    "sign",
    "hd2,sign",
    *[f"int{b}" for b in range(1, 9)],
    *[f"lvq{b}" for b in range(1, 9)],
]

# Only the quantization codes (the first packed bytes) must come back; per-vector
# floats may differ in the last bits because they are recomputed from the decoded,
# re-transformed float32 vector (e.g. the centring term <mu, x - mu>).
CODES_EXACT = [
    *[f"center,lvq{b}" for b in range(1, 9)],
    *[f"hd2,rq{b}" for b in range(1, 9)],
    "center,hd2,rq4",
    "haar,rq3",
    "hd3,rq5",
    "hd1,rq2",
    # tq: decode keeps the direction inside the cells of the codes (TQ's docstring)
    *[f"hd2,tq{b}" for b in range(1, 9)],
    "center,haar,tq3",
    "haar,tq8",
    "tq5",
]


def _code_bytes(spec: str, d: int) -> int:
    """Bytes of packed quantization codes at the start of each row (from the format docs)."""
    q = spec.split(",")[-1]
    for fam in ("tqp", "int", "lvq", "tq", "rq"):
        if q.startswith(fam) and q[len(fam) :].isdigit():
            b = int(q[len(fam) :])
            return packed_size(d, b - 1 if fam == "tqp" else b)
    if q == "sign":
        return packed_size(d, 1)
    raise AssertionError(spec)


def _datasets(data_64, data_50_unit):
    return {"500x64 offset": data_64, "300x50 unit": data_50_unit}


def _round_trip(spec, x):
    codec = Codec.from_spec(spec, seed=11).fit(x)
    codes = codec.encode(x)
    assert codes.dtype == np.uint8
    assert codes.shape == (x.shape[0], codec.code_size)
    y = codec.decode(codes)
    assert y.dtype == np.float32
    assert y.shape == x.shape
    assert y.flags.c_contiguous
    assert np.isfinite(y).all()
    return codec, codes, y, codec.encode(y)


@pytest.mark.parametrize("spec", ROW_EXACT)
def test_reencoding_reproduces_every_byte(spec, data_64, data_50_unit):
    for name, x in _datasets(data_64, data_50_unit).items():
        _, codes, _, again = _round_trip(spec, x)
        bad = np.flatnonzero((codes != again).any(axis=1))
        assert bad.size == 0, f"{spec} on {name}: rows {bad[:10]} change when re-encoded"


@pytest.mark.parametrize("spec", CODES_EXACT)
def test_reencoding_reproduces_the_codes(spec, data_64, data_50_unit):
    for name, x in _datasets(data_64, data_50_unit).items():
        _, codes, _, again = _round_trip(spec, x)
        nb = _code_bytes(spec, x.shape[1])
        bad = np.flatnonzero((codes[:, :nb] != again[:, :nb]).any(axis=1))
        assert bad.size == 0, f"{spec} on {name}: codes of rows {bad[:10]} change"


@pytest.mark.parametrize("b", range(1, 9))
@pytest.mark.parametrize("transform", ["", "hd2,"])
def test_tq_reencoding_with_an_outlier_coordinate(transform, b):
    """A direction with one coordinate of 0.8 (beyond the outermost level for b >= 2).

    ``levels[c]`` then has a norm far from 1 and ``levels[c] / |levels[c]|`` leaves
    the cells of ``c`` (before the fix every row changed at b >= 3); ``decode``
    keeps the direction inside them, so the codes come back.
    """
    d = 64
    rng = np.random.default_rng(7)
    v = rng.standard_normal((20, d))
    v[:, 0] = 0.0
    v *= np.sqrt(1 - 0.8**2) / np.linalg.norm(v, axis=1, keepdims=True)
    v[:, 0] = 0.8
    codec = Codec.from_spec(f"{transform}tq{b}", d=d, seed=0)
    x = v.astype(np.float32)
    if codec.transforms:
        x = codec.transforms[0].inverse(x)
    codes = codec.encode(x)
    again = codec.encode(codec.decode(codes))
    nb = packed_size(d, b)
    np.testing.assert_array_equal(codes[:, :nb], again[:, :nb])


def test_f32_decode_is_the_identity(data_64):
    codec = Codec.from_spec("f32").fit(data_64)
    np.testing.assert_array_equal(codec.decode(codec.encode(data_64)), data_64)


# -- serialisation -------------------------------------------------------------------------


def test_loaded_codec_does_not_share_memory_with_the_buffer(data_64):
    codec = Codec.from_spec("center,haar,int4", seed=2).fit(data_64)
    codes = codec.encode(data_64)
    scores = codec.score(data_64[:5], codes)
    buf = bytearray(codec.to_bytes())
    back = Codec.from_bytes(buf)
    buf[:] = bytes(len(buf))
    assert np.array_equal(back.score(data_64[:5], codes), scores)


def test_same_seed_same_blob_other_seed_other_codec(data_64):
    a = Codec.from_spec("hd2,rq4", d=64, seed=9)
    b = Codec.from_spec("hd2,rq4", d=64, seed=9)
    c = Codec.from_spec("hd2,rq4", d=64, seed=10)
    assert a.to_bytes() == b.to_bytes()
    assert not np.array_equal(a.encode(data_64), c.encode(data_64))


# -- tampering -----------------------------------------------------------------------------


def _small_codec():
    codec = Codec.from_spec("hd2,rq4", d=16, seed=1)
    x = gaussian(np.random.default_rng(0), 40, 16)
    return codec, x, codec.encode(x)


def _check_tampered(buf: bytes, original: Codec, x: np.ndarray, codes: np.ndarray, blob: bytes):
    """A tampered blob must be rejected with FormatError, or load as the same codec.

    Returns True if it was rejected (any other exception, a plain ValueError included,
    fails the test: from_bytes promises FormatError for whatever is wrong with the data).
    """
    try:
        back = Codec.from_bytes(buf)
    except vecpress.FormatError:
        return True
    # It loaded: it must be the very same codec.
    assert back.spec == original.spec
    assert np.array_equal(back.score(x[:5], codes), original.score(x[:5], codes))
    np.testing.assert_array_equal(back.encode(x), codes)
    assert back.to_bytes() == blob
    return False


def test_truncation_at_every_offset_is_a_format_error():
    codec, _, _ = _small_codec()
    blob = codec.to_bytes()
    assert 500 < len(blob) < 5000
    for k in range(len(blob)):
        with pytest.raises(vecpress.FormatError):
            Codec.from_bytes(blob[:k])


@pytest.mark.parametrize(
    "extra", [b"\x00", b"VPEND\x00\x00\x00", b"\x00" * 64], ids=["byte", "magic", "block"]
)
def test_appended_data_is_a_format_error(extra):
    codec, _, _ = _small_codec()
    with pytest.raises(vecpress.FormatError):
        Codec.from_bytes(codec.to_bytes() + extra)


def test_every_single_bit_flip_is_detected_or_harmless():
    codec, x, codes = _small_codec()
    blob = codec.to_bytes()
    rejected = 0
    for pos in range(len(blob) * 8):
        buf = bytearray(blob)
        buf[pos // 8] ^= 1 << (pos % 8)
        rejected += _check_tampered(bytes(buf), codec, x, codes, blob)
    # Only padding bytes may be flipped harmlessly; the header and data are checksummed.
    assert rejected >= 0.7 * len(blob) * 8


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c, a: c.__setitem__("d", 17),
        lambda c, a: c.__setitem__("d", 0),
        lambda c, a: c.__setitem__("d", 2**64),
        lambda c, a: c.__setitem__("d", "16"),
        lambda c, a: c.__setitem__("spec", "hd2,rq4,rq4"),
        lambda c, a: c.__setitem__("spec", "hd3,rq4"),
        lambda c, a: c.__setitem__("kind", "something else"),
        lambda c, a: c.__setitem__("version", 4),
        lambda c, a: c.__setitem__("version", 0),
        lambda c, a: c.__setitem__("seed", -1),
        lambda c, a: c.__setitem__("stages", []),
        lambda c, a: c["stages"][0].__setitem__("d", 8),
        lambda c, a: c["stages"][1].__setitem__("name", "tq"),
        lambda c, a: a.pop("0.step_perms"),
        lambda c, a: a.__setitem__("0.step_signs", np.full((2, 16), 0.5, np.float32)),
        lambda c, a: a.__setitem__("0.step_signs", np.ones((2, 15), np.float32)),
        lambda c, a: a.__setitem__("0.step_perms", np.zeros((2, 16), np.int32)),
        lambda c, a: a.__setitem__("0.step_perms", np.arange(32, dtype=np.int64).reshape(2, 16)),
        lambda c, a: a.__setitem__("0.step_cos", np.full((2, 8), 2.0, np.float32)),
        lambda c, a: a.pop("0.step_sin"),
        lambda c, a: c["stages"][0].__setitem__("mix", 3),
        lambda c, a: c["stages"][0].__setitem__("mix", True),
        lambda c, a: c["stages"][0].pop("mix"),  # legacy layout: no signs/perms arrays
        lambda c, a: a.__setitem__("1.t0", np.array([-1.0])),
        lambda c, a: a.__setitem__("1.t0", np.array([np.nan])),
    ],
)
def test_consistent_but_wrong_content_is_a_format_error(mutate):
    """Blobs re-packed with valid checksums but invalid content are rejected."""
    from vecpress import container as vblob

    codec, _, _ = _small_codec()
    config, arrays = vblob.unpack(codec.to_bytes())
    arrays = {k: np.array(v) for k, v in arrays.items()}
    mutate(config, arrays)
    with pytest.raises(vecpress.FormatError):
        Codec.from_bytes(vblob.pack(config, arrays))


@pytest.mark.parametrize("mutate", ["spec", "param"])
def test_stage_parameter_must_match_the_spec(mutate):
    from vecpress import container as vblob

    codec, _, _ = _small_codec()
    config, arrays = vblob.unpack(codec.to_bytes())
    arrays = {k: np.array(v) for k, v in arrays.items()}
    if mutate == "spec":
        config["spec"] = "hd2,rq5"
    else:
        config["stages"][1]["param"] = 5
    with pytest.raises(vecpress.FormatError):
        Codec.from_bytes(vblob.pack(config, arrays))


@pytest.mark.parametrize("field", ["offset", "nbytes", "shape"], ids=["offset", "nbytes", "shape"])
@pytest.mark.parametrize("value", [-1, 2**32, 2**63, 2**64 - 1])
def test_hostile_sizes_in_a_checksummed_header(field, value):
    import json
    import struct
    import zlib

    codec, _, _ = _small_codec()
    blob = codec.to_bytes()
    hlen = struct.unpack_from("<I", blob, 12)[0]
    meta = json.loads(blob[20 : 20 + hlen])
    entry = meta["arrays"][0]
    entry[field] = [value, 16] if field == "shape" else value
    header = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    head = struct.pack("<8sIII", b"VECPRESS", 1, len(header), zlib.crc32(header)) + header
    head += b"\x00" * ((-len(head)) % 64)
    old_head = 20 + hlen + ((-(20 + hlen)) % 64)
    body = blob[old_head:-16]
    total = len(head) + len(body) + 16
    forged = head + body + struct.pack("<Q8s", total, b"VPEND\x00\x00\x00")
    with pytest.raises(vecpress.FormatError):
        Codec.from_bytes(forged)
