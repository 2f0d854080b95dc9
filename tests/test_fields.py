"""Per-vector fields read in one pass (:mod:`vecpress.kernels.fields`) and the CRC-32 of
index files (:mod:`vecpress.checksum`): the same values as the slow, obvious ways."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from vecpress import Codec, checksum
from vecpress.codecs.quantizers.base import get_field
from vecpress.kernels.fields import read_fields
from vecpress.search.scan import row_terms

F16, F32 = np.dtype("<f2"), np.dtype("<f4")


@pytest.mark.parametrize("exp", [0, 1, -8, 40, -60, 100, -200])
def test_every_float16_reads_as_get_field_does(exp):
    bits = np.arange(65536, dtype=np.uint16)
    rows = np.zeros((bits.size, 5), np.uint8)
    rows[:, 1:3] = bits.view(np.uint8).reshape(-1, 2)
    with np.errstate(invalid="ignore"):  # the NaN patterns
        got = read_fields(rows, [(1, F16, exp)])[0]
        want = get_field(rows, 1, F16, exp)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_float32_fields_and_constants():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32)
    bits[:6] = [0, 1, 0x7F800000, 0xFF800000, 0x00800000, 0x80000001]
    rows = rng.integers(0, 256, (bits.size, 9), dtype=np.uint8)
    rows[:, 3:7] = bits.view(np.uint8).reshape(-1, 4)
    with np.errstate(invalid="ignore"):  # NaN patterns
        got = read_fields(rows, [(3, F32, 0), 2.5, (0, F16, 3)])
    np.testing.assert_array_equal(got[0].view(np.uint32), bits)
    assert (got[1] == 2.5).all()
    with np.errstate(invalid="ignore"):
        want = get_field(rows, 0, F16, 3)
    np.testing.assert_array_equal(got[2].view(np.uint32), want.view(np.uint32))
    out = np.empty((3, bits.size), np.float32)
    with np.errstate(invalid="ignore"):
        assert read_fields(rows, [(3, F32, 0), 2.5, (0, F16, 3)], out=out) is out
    np.testing.assert_array_equal(out.view(np.uint32), got.view(np.uint32))


def test_bad_field_specs_are_errors():
    rows = np.zeros((4, 6), np.uint8)
    with pytest.raises(ValueError, match="offset 5 outside rows of 6 bytes"):
        read_fields(rows, [(5, F16, 0)])
    with pytest.raises(ValueError, match="dtype must be"):
        read_fields(rows, [(0, np.dtype("<f8"), 0)])
    with pytest.raises(ValueError, match="out must be"):
        read_fields(rows, [1.0], out=np.empty((1, 3), np.float32))
    assert read_fields(rows[:0], [(0, F16, 0), 1.0]).shape == (2, 0)


@pytest.mark.parametrize(
    "spec",
    ["rq4", "center,hd2,rq4", "center,hd2,rq8", "hd2,rq1", "kl3", "int4", "center,int8",
     "lvq4", "center,lvq2", "center,lvq4x8"],
)  # fmt: skip
@pytest.mark.parametrize("scale", [1.0, 2.0**30, 2.0**-40])
def test_row_terms_equal_the_quantizers_own_reading(spec, scale):
    x = np.random.default_rng(4).standard_normal((500, 24)).astype(np.float32) + 0.2
    x *= np.float32(scale)
    codec = Codec.from_spec(spec, seed=2).fit(x)
    tier = codec.tier_codec
    codes = tier.encode(x) if tier is codec else codec.split_tiers(codec.encode(x))[0]
    qcodes, term = tier._split(codes)
    a, b = tier.quantizer.grid_rows(qcodes)
    c = np.zeros(codes.shape[0], np.float32) if term is None else term
    for got, want in zip(row_terms(tier, codes), (a, b, c), strict=True):
        np.testing.assert_array_equal(got, want)
    assert np.isfinite(row_terms(tier, codes)).all()


def test_crc32_is_zlibs():
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, 3_000_000, dtype=np.uint8)
    view = memoryview(data)
    for lo, hi in [(0, 0), (0, 1), (5, 70), (0, 1 << 20), (123, 3_000_000)]:
        assert checksum.crc32(view[lo:hi]) == zlib.crc32(view[lo:hi])
    assert checksum.crc32(data[7:], checksum.crc32(data[:7])) == zlib.crc32(data)
    assert checksum.BACKEND in ("isal", "zlib")
