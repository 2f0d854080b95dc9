"""Layouts whose codes lie within 64-bit words (vecpress.kernels.wordpack) and their
reader (vecpress.kernels.wordlanes' word passes and tiles)."""

from __future__ import annotations

import numpy as np
import pytest

from vecpress.codecs.quantizers.transform_coding import allocate_bits, groups_of
from vecpress.kernels.bitpack import pack, packed_size
from vecpress.kernels.scan import check_layout
from vecpress.kernels.wordlanes import (
    HAVE_VBMI,
    HAVE_VBMI2,
    code_positions,
    word_passes,
    word_queries,
    words_dot,
    words_dots,
    words_unpacked,
)
from vecpress.kernels.wordpack import (
    MAX_PASSES,
    chunk_passes,
    pack_words,
    within_words,
    word_codes,
    word_readable,
)

needs_vbmi = pytest.mark.skipif(not HAVE_VBMI, reason="no AVX-512 VBMI on this machine")
needs_vbmi2 = pytest.mark.skipif(not HAVE_VBMI2, reason="no AVX-512 VBMI2 on this machine")


def allocations(seed: int, count: int):
    """``kl``'s bit allocations (:func:`allocate_bits`) of random spectra: ``(widths of
    the coded axes, the bytes kl gives them, the bits per dimension)``."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        d = int(rng.integers(2, 1100))
        b = int(rng.integers(1, 9))
        lam = np.sort(rng.gamma(0.5, 1.0, d) ** rng.uniform(1, 6))[::-1]
        budget = packed_size(d, b)
        bits = allocate_bits(lam * lam, budget)
        k = int((bits > 0).sum())
        if k:
            yield bits[:k], budget, b


def assert_packs(layout, bits, row_bytes):
    """``layout`` codes each dimension once at its width, within the row, no code
    crossing a word, at most ``8 MAX_PASSES`` codes a word."""
    check_layout(layout, len(bits), row_bytes)
    dims, pos, width = code_positions(layout)
    np.testing.assert_array_equal(np.sort(dims), np.arange(len(bits)))
    np.testing.assert_array_equal(width[np.argsort(dims)], bits)
    assert ((pos // 64) == (pos + width - 1) // 64).all()
    assert within_words(layout)
    assert word_codes(layout).max() <= 8 * MAX_PASSES
    assert 1 <= chunk_passes(layout).min() and chunk_passes(layout).max() <= MAX_PASSES


def test_kl_allocations_pack_within_words_in_their_bytes():
    """Every layout found codes each axis once within the bytes ``kl`` gives the codes,
    and one is found for every allocation of 3 bits or more a dimension here (below, a
    word may need more than 32 codes: then ``kl`` keeps its groups)."""
    found = {}
    for bits, budget, b in allocations(0, 600):
        layout = pack_words(bits, budget)
        found.setdefault(b, []).append(layout is not None)
        if layout is not None:
            assert_packs(layout, bits, budget)
            # the same bytes as the groups one after another: the row does not grow
            assert (layout[:, 3] + (layout[:, 1] * layout[:, 2] + 7) // 8).max() <= budget
    for b in range(3, 9):
        assert all(found[b]), (b, found[b].count(False))
    assert np.mean(found[1] + found[2]) > 0.8


def test_passes_come_near_the_fewest_lanes_the_codes_need():
    """The passes read about as many lanes as there are codes: at most twice the fewest
    (``codes / 64`` passes), and within 1.3 times on average at 3-8 bits."""
    ratios = []
    for bits, budget, b in allocations(1, 300):
        layout = pack_words(bits, budget)
        if layout is None:
            continue
        ratio = chunk_passes(layout).sum() / -(-len(bits) // 64)
        assert ratio <= 2.0 or b <= 2, (b, ratio)
        if b >= 3:
            ratios.append(ratio)
    assert np.mean(ratios) < 1.3


def test_packing_keeps_runs_where_codes_need_no_moving():
    """Codes of one width that never cross a word (4 bits; 8 bits) stay one run."""
    assert pack_words(np.full(384, 4, np.uint8), 192).tolist() == [[0, 384, 4, 0]]
    assert pack_words(np.full(50, 8, np.uint8), 50).tolist() == [[0, 50, 8, 0]]


@pytest.mark.parametrize(
    "bits, row_bytes",
    [
        (np.full(16, 5, np.uint8), 10),  # 80 bits fill 10 bytes, but 12 codes a word at most
        (np.full(40, 1, np.uint8), 4),  # fewer bytes than the codes take
        (np.full(64, 1, np.uint8) , 8),  # 64 codes in one word: more than 8 MAX_PASSES
        (np.zeros(5, np.uint8), 4),  # nothing to code
    ],
)  # fmt: skip
def test_no_layout_where_none_fits(bits, row_bytes):
    assert pack_words(bits, row_bytes) is None


def test_layouts_with_a_code_across_a_word_are_told_apart():
    crossing = np.array([[0, 13, 5, 0]])  # code 12 takes bits 60-64
    assert not within_words(crossing)
    with pytest.raises(ValueError, match="crosses a 64-bit word"):
        word_codes(crossing)
    with pytest.raises(ValueError, match="crosses a 64-bit word"):
        word_passes(crossing)
    assert within_words(np.array([[0, 12, 5, 0], [12, 1, 5, 8]]))


def test_layouts_within_words_past_the_passes_are_not_read_by_them():
    """A word of more than 8 MAX_PASSES codes (64 of one bit) lies within its word but
    is not for the word passes: word_readable says so and word_passes refuses it (its
    reader read a chunk's first MAX_PASSES passes only)."""
    full = np.array([[0, 8 * MAX_PASSES, 1, 0], [8 * MAX_PASSES, 8, 2, 4]])  # 40 codes
    assert within_words(full) and chunk_passes(full).max() == MAX_PASSES + 1
    assert not word_readable(full)
    with pytest.raises(ValueError, match="holds 40 codes"):
        word_passes(full)
    fits = np.array([[0, 8 * MAX_PASSES, 1, 0], [8 * MAX_PASSES, 8, 2, 8]])  # next word
    assert word_readable(fits) and word_passes(fits).first.tolist() == [0, MAX_PASSES]
    assert not word_readable(np.array([[0, 13, 5, 0]]))  # a code across a word


def test_word_passes_give_each_code_one_lane_of_its_word():
    """Each code is in exactly one lane of one pass of its chunk, the lane in its word
    (lanes 8 j .. 8 j + 7 read word j), starting at its bit, masked to its width."""
    layout = next(
        pack_words(b, budget)
        for b, budget, _ in allocations(2, 50)
        if len(b) > 300 and pack_words(b, budget) is not None
    )
    dims, pos, width = code_positions(layout)
    wp = word_passes(layout)
    used = wp.dims >= 0
    assert sorted(wp.dims[used].tolist()) == sorted(dims.tolist())
    chunk_of_pass = np.repeat(np.arange(len(wp.first) - 1), np.diff(wp.first))
    by_dim = {int(dd): (int(p), int(w)) for dd, p, w in zip(dims, pos, width, strict=True)}
    for p, lane in zip(*np.nonzero(used), strict=True):
        start, w = by_dim[int(wp.dims[p, lane])]
        assert start // 64 == 8 * chunk_of_pass[p] + lane // 8  # its word
        assert wp.ctrl[p, lane] == start % 64 and wp.mask[p, lane] == (1 << w) - 1
    assert (wp.mask[~used] == 0).all()
    np.testing.assert_array_equal(np.diff(wp.first), chunk_passes(layout))
    assert wp.reach == 64 * (len(wp.first) - 1)


def packed_rows(rng, seed):
    """Rows of junk with random codes packed within words as random allocations lay them
    out (some rows wider than the codes): ``(layout, rows, their codes by dimension)``."""
    for bits, budget, _ in allocations(seed, 25):
        layout = pack_words(bits, budget)
        if layout is None:
            continue
        n = int(rng.integers(1, 40))
        rows = rng.integers(0, 256, (n, budget + int(rng.integers(0, 3))), dtype=np.uint8)
        dense = np.zeros((n, len(bits)), np.int64)
        for first, count, width, off in layout.tolist():
            c = rng.integers(0, 1 << width, (n, count)).astype(np.uint8)
            c[0] = (1 << width) - 1
            rows[:, off : off + packed_size(count, width)] = pack(c, width)
            dense[:, first : first + count] = c
        yield layout, rows, dense


@needs_vbmi
@pytest.mark.parametrize("seed", range(4))
def test_word_tiles_are_exact(seed):
    """The 1 x 16 word tile's dot products with the codes of random allocations packed
    within words, rows of junk around them and rows narrower than the chunks read."""
    rng = np.random.default_rng(seed)
    for layout, rows, dense in packed_rows(rng, seed + 10):
        n, k = dense.shape
        wp = word_passes(layout)
        for qi in (rng.integers(-128, 128, k), np.full(k, -128), np.full(k, 127)):
            out = np.zeros(n, np.int32)
            words_dots(rows, wp.first, wp.ctrl, wp.mask, word_queries(qi[None], wp)[0], out)
            np.testing.assert_array_equal(out, dense @ qi)


@pytest.mark.parametrize("seed", range(4))
def test_the_plain_word_reader_is_exact(seed):
    """:func:`words_dot` (the scan's reader where the CPU has no AVX2) gives each row's
    exact dot product with the codes of random allocations packed within words: junk
    in the bytes between codes, the row zero-padded past its bytes to whole words and
    the passes' reach."""
    rng = np.random.default_rng(seed)
    for layout, rows, dense in packed_rows(rng, seed + 30):
        n, k = dense.shape
        wp = word_passes(layout)
        width = (max(wp.reach, rows.shape[1]) + 7) // 8 * 8
        padded = np.zeros((n, width), np.uint8)
        padded[:, : rows.shape[1]] = rows
        for qi in (rng.integers(-128, 128, k), np.full(k, -128), np.full(k, 127)):
            qw = word_queries(qi[None], wp)[0]
            got = [int(words_dot(padded[r], wp.first, wp.ctrl, wp.mask, qw)) for r in range(n)]
            assert got == (dense @ qi).tolist()


def test_groups_of_kl4_at_384_dimensions_pack_within_words():
    """``kl4``'s groups of 8 down to 1 bits at d = 384 (367 codes, 192 bytes, of which
    the groups one after another leave 2 bits): within words in the same bytes, 3
    chunks in at most 9 passes (the groups read by parts take 6 loads, 6 permutations)."""
    counts = [(8, 13), (7, 16), (6, 56), (5, 88), (4, 76), (3, 42), (2, 36), (1, 40)]
    bits = np.repeat([w for w, _ in counts], [c for _, c in counts]).astype(np.uint8)
    assert sum(g[4] for g in groups_of(bits)) == 192
    layout = pack_words(bits, 192)
    assert_packs(layout, bits, 192)
    assert len(chunk_passes(layout)) == 3 and chunk_passes(layout).sum() <= 9


@needs_vbmi2
@pytest.mark.parametrize("seed", range(3))
def test_rows_unpack_to_the_compact_order(seed):
    """:func:`unpack_words` writes each row's codes in the compact order: dimension
    ``order[i]``'s code at byte ``i``, the order every code once."""
    rng = np.random.default_rng(seed)
    for layout, rows, dense in packed_rows(rng, seed + 20):
        n, k = dense.shape
        wp = word_passes(layout)
        assert sorted(wp.order.tolist()) == list(range(k))
        out = np.zeros((n, k), np.uint8)
        words_unpacked(rows, wp.first, wp.ctrl, wp.mask, wp.keep, wp.at, k, out)
        np.testing.assert_array_equal(out, dense[:, wp.order])
