"""Codes of any width read in place: by parts (vecpress.kernels.wordlanes, AVX-512 VBMI)
and, where the tests say so, by byte pairs (vecpress.kernels.bytepairs, AVX2)."""

from __future__ import annotations

import numpy as np
import pytest

from vecpress.kernels.bitpack import pack, packed_size
from vecpress.kernels.bytepairs import pair_dots, pair_parts, pair_queries
from vecpress.kernels.nibbles import HAVE_AVX2
from vecpress.kernels.scan import check_layout, uniform_layout
from vecpress.kernels.wordlanes import (
    HAVE_VBMI,
    PART_BYTES,
    code_positions,
    field_parts,
    part_queries,
    parts_dots,
)

needs_vbmi = pytest.mark.skipif(not HAVE_VBMI, reason="no AVX-512 VBMI on this machine")
needs_avx2 = pytest.mark.skipif(not HAVE_AVX2, reason="no AVX2 on this machine")


def _layout_of_runs(rng, runs, start):
    """Rows of random junk with the runs' codes packed at consecutive byte offsets."""
    layout, off = [], start
    for first, count, width in runs:
        layout.append((first, count, width, off))
        off += packed_size(count, width)
    return np.array(layout, np.int64), off


def _rows(rng, n, layout, row_bytes, d):
    rows = rng.integers(0, 256, (n, row_bytes), dtype=np.uint8)  # junk around the runs
    dense = np.zeros((n, d), np.int64)
    for first, count, width, off in layout.tolist():
        c = rng.integers(0, 1 << width, (n, count)).astype(np.uint8)
        c[0] = (1 << width) - 1  # the largest code of every run in row 0
        rows[:, off : off + packed_size(count, width)] = pack(c, width)
        dense[:, first : first + count] = c
    return rows, dense


def _dots(rows, parts, qi):
    """The tiles' dot products of every row with one query row ``qi``."""
    out = np.zeros(rows.shape[0], np.int32)
    qp = part_queries(qi[None], parts)[0]
    parts_dots(rows, parts.offsets, parts.perm, parts.ctrl, parts.mask, qp, out)
    return out


def _pair_dots(rows, pairs, qi):
    """The AVX2 byte-pair tiles' dot products of every row with one query row ``qi``."""
    out = np.zeros(rows.shape[0], np.int32)
    qp = pair_queries(qi[None], pairs)[0]
    pair_dots(rows, pairs.offsets, pairs.shuffle, pairs.mult, pairs.mask, qp, out)
    return out


#: each in-place reader's dot products of rows with one query row, where the CPU runs it
EXACT = pytest.mark.parametrize(
    "dots",
    [
        pytest.param(lambda rows, lay, qi: _dots(rows, field_parts(lay), qi), marks=needs_vbmi),
        pytest.param(lambda rows, lay, qi: _pair_dots(rows, pair_parts(lay), qi), marks=needs_avx2),
    ],
    ids=["parts", "pairs"],
)


def kl4_like_layout():
    """Runs of 8 down to 1 bits as ``kl4``'s groups at d = 384 (367 codes), checked; and
    the dimension, first bit and width of each code (:func:`code_positions`)."""
    runs = [(0, 13, 8), (13, 16, 7), (29, 56, 6), (85, 88, 5), (173, 76, 4), (249, 42, 3)]
    runs += [(291, 36, 2), (327, 40, 1)]
    layout, row_bytes = _layout_of_runs(np.random.default_rng(0), runs, 0)
    return check_layout(layout, 384, row_bytes), *code_positions(layout)


def test_every_code_lies_in_one_lane_within_a_word():
    """Each code of a layout is in exactly one lane, its bits inside the 64-bit word
    that lane reads: what makes the extraction exact."""
    layout, dims, pos, width = kl4_like_layout()
    parts = field_parts(layout)
    used = parts.dims >= 0
    assert sorted(parts.dims[used].tolist()) == sorted(dims.tolist())  # each code once
    p, lane = np.nonzero(used)
    window = parts.perm[p, 8 * (lane // 8)].astype(np.int64)  # its first byte in the 64 read
    start = 8 * (parts.offsets[p] + window) + parts.ctrl[p, lane]  # the code's bit in the row
    by_dim = dict(zip(dims.tolist(), zip(pos.tolist(), width.tolist(), strict=True), strict=True))
    for dd, st, pp, ll in zip(parts.dims[used], start, p, lane, strict=True):
        assert by_dim[dd][0] == st
        assert parts.mask[pp, ll] == (1 << by_dim[dd][1]) - 1
        assert parts.ctrl[pp, ll] + by_dim[dd][1] <= 64
    assert (parts.mask[~used] == 0).all()
    assert parts.reach == parts.offsets.max() + PART_BYTES
    # each window is 8 consecutive bytes within the 64 its part reads
    windows = parts.perm.reshape(-1, 8, 8).astype(np.int64)
    np.testing.assert_array_equal(
        windows - windows[:, :, :1], np.broadcast_to(np.arange(8), windows.shape)
    )
    assert windows.max() <= 63
    # kl4's groups at d = 384 (367 codes): 6 parts, as many as 3 chunks of 4-bit codes take
    assert len(parts.offsets) == 6


@pytest.mark.parametrize(
    "tables, lay_out, dtype",
    [(field_parts, part_queries, np.int8), (pair_parts, pair_queries, np.int16)],
    ids=["parts", "pairs"],
)
def test_queries_put_each_dimension_in_its_lanes(tables, lay_out, dtype):
    parts = tables(uniform_layout(3, 50))
    qi = np.arange(3 * 50).reshape(3, 50) % 256 - 128
    qp = lay_out(qi, parts)
    assert qp.shape == (4, parts.dims.size) and qp.dtype == dtype
    flat = parts.dims.reshape(-1)
    np.testing.assert_array_equal(qp[:3, flat >= 0], qi[:, flat[flat >= 0]])
    assert (qp[:3, flat < 0] == 0).all() and (qp[3] == 0).all()


#: the two in-place readers' tables (AVX-512 VBMI parts, AVX2 byte pairs): one check
READERS = pytest.mark.parametrize("tables", [field_parts, pair_parts], ids=["parts", "pairs"])


@READERS
@pytest.mark.parametrize("shape", [(0, 4), (2, 3), (4,)])
def test_readers_reject_what_is_not_a_layout(tables, shape):
    with pytest.raises(ValueError, match=r"int64\[G, 4\]"):
        tables(np.zeros(shape, np.int64))


@READERS
@pytest.mark.parametrize("run", [(0, 0, 4, 0), (0, 3, 9, 0), (0, 3, 0, 0), (0, 3, 4, -1)])
def test_readers_reject_runs_without_codes_or_of_bad_widths(tables, run):
    with pytest.raises(ValueError, match="1-8 bits"):
        tables(np.array([run], np.int64))


@EXACT
@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("d", [1, 3, 37, 50, 384, 1000])
def test_uniform_widths_read_in_place_are_exact(dots, bits, d):
    rng = np.random.default_rng(bits * 1000 + d)
    layout = uniform_layout(bits, d)
    n = 40
    rows, dense = _rows(rng, n, layout, packed_size(d, bits) + 3, d)
    for qi in (rng.integers(-128, 128, d), np.full(d, -128), np.full(d, 127)):
        np.testing.assert_array_equal(dots(rows, layout, qi), dense @ qi)


@EXACT
@pytest.mark.parametrize("seed", range(6))
def test_runs_of_mixed_widths_at_any_offset_are_exact(dots, seed):
    """Runs of random widths (not in dimension order, some dimensions in none, junk
    bytes between), rows narrower than the parts reach: exact dot products."""
    rng = np.random.default_rng(seed)
    d = int(rng.integers(20, 700))
    cuts = np.sort(rng.choice(np.arange(1, d), size=min(7, d - 1), replace=False))
    spans = [(a, b) for a, b in zip(np.r_[0, cuts], np.r_[cuts, d], strict=True)]
    rng.shuffle(spans)
    runs = [(int(a), int(b - a), int(rng.integers(1, 9))) for a, b in spans[:-1]]  # one left out
    layout, row_bytes = _layout_of_runs(rng, runs, int(rng.integers(0, 9)))
    row_bytes += int(rng.integers(0, 5))
    layout = check_layout(layout, d, row_bytes)
    n = 70
    rows, dense = _rows(rng, n, layout, row_bytes, d)
    for qi in (rng.integers(-128, 128, d), np.full(d, -128)):
        np.testing.assert_array_equal(dots(rows, layout, qi), dense @ qi)
