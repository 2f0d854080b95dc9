"""Codes of any width read in place: byte lanes picked out of 64-bit windows.

The packed tiles of :mod:`vecpress.kernels.scan` read codes of 1, 2, 4 or 8
bits where they lie, one shift and one mask per code. Codes of other widths (3,
5, 6, 7 bits) and rows of several widths (``kl``'s groups,
:func:`~vecpress.kernels.scan.check_layout`) straddle byte boundaries, and
were unpacked to bytes row by row before their dot products: for one query
that unpacking was 5-10 times the cost of the products themselves.

With AVX-512 VBMI two instructions pick any code out of a row. ``vpermb``
builds, from 64 bytes of the row, a vector whose eight 64-bit words are any
eight 8-byte *windows* of those bytes (each word its own start byte, windows
may overlap or repeat); ``vpmultishiftqb`` then copies into every byte lane the
8 bits that start at any bit of the word the lane belongs to (each lane its own
start, ``ctrl``). A code of up to 8 bits within a window is one lane, after one
``and`` with the lane's mask ``2^bits - 1``; the lane's query byte is the
query's value for that code's dimension, and ``vpdpbusd`` sums 64 lanes at a
time into exact int32 dot products. A *part* is one such step: the row's 64
bytes at byte offset ``off``, a permutation, a control vector, a mask vector and
the matching query vector; a row's dot product is the sum over its parts.

:func:`field_parts` assigns the codes of a layout, in the order of their first
bits, to windows of at most 8 codes each (a window starts at the byte of its
first code and takes the next codes while they end within its 64 bits), and
consecutive windows to parts, at most 8 a part and all within the 64 bytes the
part reads. So a layout of ``m`` codes takes about ``m / 64`` parts whatever
their widths (8 codes of up to 7 bits always fit a window; 8 of 8 bits do when
byte-aligned): 6 for ``kl4``'s 367 codes at d = 384, where the 4-bit tile reads
3 chunks of 128 codes. Lanes without a code get mask 0 and query 0. The sums are
exact: every term is a product of the same integers the unpacked path
multiplies.

Where no code of a layout crosses a 64-bit word of the row (``kl``'s codes,
placed so by :mod:`vecpress.kernels.wordpack`), no permutation is needed: each
64-byte chunk of a row is loaded once and read in *passes* (:func:`word_passes`),
pass ``s`` giving each word's codes ``8 s .. 8 s + 7`` their lanes with one
multishift and one mask (:func:`tile1x16_words`, :func:`tile4x4_words`). The parts'
loads were what cost: 6 loads at unaligned offsets a ``kl4`` row against 3 (BENCHMARKS.md).
For many queries a row is unpacked by the same passes, each pass's lanes compacted
(``vpcompressb``, AVX-512 VBMI2) into the order :attr:`WordPasses.order` gives
(:func:`unpack_words`).

Examples
--------
384 codes of 3 bits (144 bytes): 48 windows of 8 codes (3 bytes each), 6 parts.

>>> import numpy as np
>>> from vecpress.kernels.scan import uniform_layout
>>> parts = field_parts(uniform_layout(3, 384))
>>> parts.offsets.tolist(), parts.reach
([0, 24, 48, 72, 96, 120], 184)
>>> qi = np.arange(384) % 7 - 3
>>> part_queries(qi[None, :], parts).shape
(4, 384)
"""

from __future__ import annotations

from collections import namedtuple
from functools import lru_cache

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .scan import _I32X16, _accumulate4x4, _store_sums, _tile_setup, code_positions, host_has
from .wordpack import MAX_PASSES, chunk_passes, word_codes

#: whether this machine reads codes of any width in place (AVX-512 VBMI and VNNI)
HAVE_VBMI = host_has("avx512vbmi", "avx512vnni", "avx512bw")
#: whether it also compacts byte lanes (AVX-512 VBMI2: rows of codes within words
#: unpacked for many queries, :func:`unpack_words`)
HAVE_VBMI2 = HAVE_VBMI and host_has("avx512vbmi2")

#: bytes a part reads past its offset
PART_BYTES = 64
#: codes a window (one 64-bit word of a part) holds at most, and windows a part holds
WINDOW_CODES = PART_WINDOWS = 8

_I8X64 = ir.VectorType(ir.IntType(8), 64)

FieldParts = namedtuple("FieldParts", "offsets perm ctrl mask dims reach")
FieldParts.__doc__ = """The parts of a code layout (:func:`field_parts`).

offsets : int64[P]
    Byte offset in the row that part ``p`` reads 64 bytes from.
perm : uint8[P, 64]
    The ``vpermb`` indices: byte ``8 w + t`` of the permuted vector is byte
    ``perm[p, 8 w + t]`` of the 64 read, ``= start_w + t`` for window ``w``.
ctrl, mask : uint8[P, 64]
    Per lane: the bit, within its window, where the code starts, and
    ``2^bits - 1`` (0 in lanes without a code).
dims : int64[P, 64]
    Per lane: the dimension of the code (-1 in lanes without one).
reach : int
    Bytes of a row the parts read, counted from its start (``max(offsets) + 64``).
"""

#: the parts of no layout (scans that read no code by parts)
NO_PARTS = FieldParts(
    np.zeros(0, np.int64),
    np.zeros((0, 64), np.uint8),
    np.zeros((0, 64), np.uint8),
    np.zeros((0, 64), np.uint8),
    np.zeros((0, 64), np.int64),
    0,
)


@lru_cache(maxsize=64)
def _parts_of(key: bytes) -> FieldParts:
    dims, pos, width = code_positions(np.frombuffer(key, np.int64))
    order = np.argsort(pos, kind="stable")
    dims, pos, width = (dims[order].tolist(), pos[order].tolist(), width[order].tolist())
    windows = []  # (start byte, first code, end code)
    i, n = 0, len(pos)
    while i < n:
        start = pos[i] // 8
        j = i + 1
        while j < n and j - i < WINDOW_CODES and pos[j] + width[j] <= 8 * start + 64:
            j += 1
        windows.append((start, i, j))
        i = j
    parts = []  # (offset, first window, end window)
    w = 0
    while w < len(windows):
        off = windows[w][0]
        e = w + 1
        while e < len(windows) and e - w < PART_WINDOWS and windows[e][0] + 8 <= off + 64:
            e += 1
        parts.append((off, w, e))
        w = e
    nparts = len(parts)
    perm = np.tile(np.arange(8, dtype=np.uint8), (nparts, 8))  # unused windows: bytes 0-7
    ctrl = np.zeros((nparts, 64), np.uint8)
    mask = np.zeros((nparts, 64), np.uint8)
    lanes = np.full((nparts, 64), -1, np.int64)
    for p, (off, w0, w1) in enumerate(parts):
        for slot, (start, i0, i1) in enumerate(windows[w0:w1]):
            perm[p, 8 * slot : 8 * slot + 8] = np.arange(8) + (start - off)
            for t, c in enumerate(range(i0, i1)):
                lane = 8 * slot + t
                ctrl[p, lane] = pos[c] - 8 * start
                mask[p, lane] = (1 << width[c]) - 1
                lanes[p, lane] = dims[c]
    offsets = np.array([p[0] for p in parts], np.int64)
    return FieldParts(offsets, perm, ctrl, mask, lanes, int(offsets.max()) + PART_BYTES)


def field_parts(layout: np.ndarray) -> FieldParts:
    """The parts that read every code of ``layout`` in place (module docstring).

    Cached per layout (the arrays are shared: do not write to them).

    Examples
    --------
    Three 5-bit codes from bit 0 and a 2-bit one at byte 2: one window (the 8
    bytes from byte 0), one part.

    >>> parts = field_parts(np.array([[0, 3, 5, 0], [3, 1, 2, 2]]))
    >>> parts.offsets.tolist(), parts.ctrl[0, :4].tolist(), parts.mask[0, :4].tolist()
    ([0], [0, 5, 10, 16], [31, 31, 31, 3])
    """
    return _parts_of(layout_key(layout))


def layout_key(layout: np.ndarray) -> bytes:
    """The bytes of a code layout that the in-place readers cache their tables by, after
    checking it is one: int64[G, 4] runs of at least one code of 1-8 bits (the runs
    checked once a layout, :func:`_checked_runs`).

    Examples
    --------
    >>> len(layout_key(np.array([[0, 3, 5, 0]])))
    32
    """
    lay = np.ascontiguousarray(layout, np.int64)
    if lay.ndim != 2 or lay.shape[1] != 4 or lay.shape[0] == 0:
        raise ValueError(f"a code layout is int64[G, 4] with G >= 1, found shape {lay.shape}")
    key = lay.tobytes()
    _checked_runs(key)
    return key


@lru_cache(maxsize=256)
def _checked_runs(key: bytes) -> bool:
    """Whether the runs of the layout ``key`` each have at least one code of 1-8 bits at
    non-negative places (ValueError otherwise, which is not cached): a search reads the
    same layout for every query, so it is checked once."""
    lay = np.frombuffer(key, np.int64).reshape(-1, 4)
    if (lay[:, 1] < 1).any() or (lay[:, 2] < 1).any() or (lay[:, 2] > 8).any() or (lay < 0).any():
        raise ValueError(
            f"a code layout's runs have count >= 1 and 1-8 bits, found {lay.tolist()[:4]}"
        )
    return True


def lane_queries(qi: np.ndarray, dims: np.ndarray, dtype) -> np.ndarray:
    """Query rows ``qi`` (``[nv, d]``) laid out in lanes: ``dtype[nv rounded up to 4,
    dims.size]``, lane ``l`` (of ``dims`` flattened) holding ``qi[:, dims[l]]``, 0 where
    ``dims[l]`` is -1 (no code) and in the padding rows."""
    nv = qi.shape[0]
    flat = dims.reshape(-1)
    out = np.zeros(((nv + 3) // 4 * 4, flat.size), dtype)
    _gather_lanes(np.ascontiguousarray(qi), flat, out)
    return out


@nb.njit(cache=True)
def _gather_lanes(qi, flat, out):
    """``out[r, l] = qi[r, flat[l]]`` where ``flat[l] >= 0`` (one compiled pass: a
    one-query search lays its query out on every call)."""
    for r in range(qi.shape[0]):
        for lane in range(flat.shape[0]):
            if flat[lane] >= 0:
                out[r, lane] = qi[r, flat[lane]]


def part_queries(qi: np.ndarray, parts: FieldParts) -> np.ndarray:
    """Query rows ``qi`` (int8/int16 ``[nv, d]``, values in [-128, 127]) laid out for
    ``parts``: int8 ``[nv rounded up to 4, P * 64]``, lane ``l`` of part ``p`` holding
    ``qi[:, dims[p, l]]`` (0 where the lane has no code)."""
    return lane_queries(qi, parts.dims, np.int8)


def _load_part(builder, i64, vptr, p, poff, ptabs):
    """Part ``p``'s byte offset and its permutation, control and mask vectors
    (``ptabs``: the three arrays' addresses)."""
    addr = builder.add(poff, builder.mul(p, ir.Constant(i64, 8)))
    off = builder.load(builder.inttoptr(addr, i64.as_pointer()))
    o64 = builder.mul(p, ir.Constant(i64, 64))
    vecs = []
    for base in ptabs:
        v = builder.load(builder.inttoptr(builder.add(base, o64), vptr), align=1)
        vecs.append(builder.bitcast(v, _I8X64))
    return off, vecs


def _lanes(builder, ops, vptr, addr, tabs):
    """The codes of one part of the row at ``addr``: windows permuted into the words,
    codes shifted into their lanes, masked."""
    permb, mshift = ops
    perm, ctrl, mask = tabs
    v = builder.bitcast(builder.load(builder.inttoptr(addr, vptr), align=1), _I8X64)
    v = builder.call(permb, [v, perm])
    return builder.bitcast(builder.and_(builder.call(mshift, [ctrl, v]), mask), _I32X16)


def _byte_ops(builder):
    """The ``vpermb`` and ``vpmultishiftqb`` intrinsics."""
    fn = ir.FunctionType(_I8X64, [_I8X64, _I8X64])
    return tuple(
        cgutils.get_or_insert_function(builder.module, fn, name)
        for name in ("llvm.x86.avx512.permvar.qi.512", "llvm.x86.avx512.pmultishift.qb.512")
    )


@intrinsic
def tile1x16_parts(typingctx, pa, sa, poff, pperm, pctrl, pmask, pq, nparts, pout):
    """16 exact dot products of ONE query row (parts layout, int8 at ``pq``) with 16
    code rows (at ``pa``, stride ``sa``) read by ``nparts`` parts; int32[16] at ``pout``."""
    sig = types.void(*([types.intp] * 9))

    def codegen(context, builder, signature, args):
        pa, sa, poff, pperm, pctrl, pmask, pq, n, pout = args
        i64, dpbusd, vptr, accs = _tile_setup(builder)
        ops = _byte_ops(builder)
        with cgutils.for_range(builder, n) as loop:
            p = loop.index
            off, tabs = _load_part(builder, i64, vptr, p, poff, (pperm, pctrl, pmask))
            qaddr = builder.add(pq, builder.mul(p, ir.Constant(i64, 64)))
            q = builder.load(builder.inttoptr(qaddr, vptr), align=1)
            start = builder.add(pa, off)
            for r in range(16):
                addr = builder.add(start, builder.mul(sa, ir.Constant(i64, r)))
                x = _lanes(builder, ops, vptr, addr, tabs)
                builder.store(builder.call(dpbusd, [builder.load(accs[r]), x, q]), accs[r])
        _store_sums(builder, [builder.load(acc) for acc in accs], pout, ir.Constant(i64, 16))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def tile4x4_parts(typingctx, pa, sa, poff, pperm, pctrl, pmask, pq, sq, nparts, pout, sout):
    """16 exact dot products, 4 code rows (at ``pa``, stride ``sa``) x 4 query rows
    (parts layout, int8 at ``pq``, stride ``sq``), read by ``nparts`` parts; the 4
    products of query ``u`` as int32 at ``pout + u * sout`` (bytes)."""
    sig = types.void(*([types.intp] * 11))

    def codegen(context, builder, signature, args):
        pa, sa, poff, pperm, pctrl, pmask, pq, sq, n, pout, sout = args
        i64, dpbusd, vptr, accs = _tile_setup(builder)
        ops = _byte_ops(builder)
        with cgutils.for_range(builder, n) as loop:
            p = loop.index
            off, tabs = _load_part(builder, i64, vptr, p, poff, (pperm, pctrl, pmask))
            start = builder.add(pa, off)
            rows_a = []
            for r in range(4):
                addr = builder.add(start, builder.mul(sa, ir.Constant(i64, r)))
                rows_a.append(_lanes(builder, ops, vptr, addr, tabs))
            o64 = builder.mul(p, ir.Constant(i64, 64))
            rows_b = []
            for u in range(4):
                qaddr = builder.add(builder.add(pq, builder.mul(sq, ir.Constant(i64, u))), o64)
                rows_b.append(builder.load(builder.inttoptr(qaddr, vptr), align=1))
            _accumulate4x4(builder, dpbusd, accs, rows_a, rows_b)
        _store_sums(builder, [builder.load(acc) for acc in accs], pout, sout)
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True)
def parts_dots(codes, offsets, perm, ctrl, mask, qp, out):
    """``out[j] = <codes of row j, query>`` for every row, one query row ``qp`` in the
    parts layout (a reference of the tiles for tests; rows need ``reach`` bytes
    readable past their start, so the array is copied with zero padding)."""
    reach = offsets.max() + PART_BYTES if offsets.shape[0] else 0
    _padded_dots(codes, reach, False, offsets, perm, ctrl, mask, qp, offsets.shape[0], out)


@nb.njit(cache=True)
def _padded_dots(codes, reach, words, tab0, perm, ctrl, mask, q, count, out):
    """The dot products of every row of ``codes`` by the 1 x 16 tiles (:func:`parts_dots`
    with ``words`` false, ``tab0`` the offsets; :func:`words_dots` with ``words`` true,
    ``tab0`` the passes' ``first``), each 16 rows copied with zero padding to ``reach``."""
    n, cs = codes.shape
    width = max(cs, reach)
    buf = np.zeros((16, width), np.uint8)
    tmp = np.empty(16, np.int32)
    for s in range(0, n, 16):
        m = min(16, n - s)
        buf[:] = 0
        for r in range(m):
            buf[r, :cs] = codes[s + r]
        if words:
            tile1x16_words(
                buf.ctypes.data, width, tab0.ctypes.data, ctrl.ctypes.data, mask.ctypes.data,
                q.ctypes.data, count, tmp.ctypes.data,
            )  # fmt: skip
        else:
            tile1x16_parts(
                buf.ctypes.data, width, tab0.ctypes.data, perm.ctypes.data, ctrl.ctypes.data,
                mask.ctypes.data, q.ctypes.data, count, tmp.ctypes.data,
            )  # fmt: skip
        for r in range(m):
            out[s + r] = tmp[r]


# -- layouts whose codes lie within 64-bit words (vecpress.kernels.wordpack) ------------

WordPasses = namedtuple("WordPasses", "first ctrl mask dims reach keep at order")
WordPasses.__doc__ = """How a scan reads a layout none of whose codes crosses a 64-bit word of
the row (:func:`word_passes`): each 64-byte chunk of the row loaded once, then read in
*passes*, pass ``s`` giving each word's codes ``8 s .. 8 s + 7`` (in the order of their
bits) a lane each with one ``vpmultishiftqb`` and one ``and``, no permutation.

first : int64[C + 1]
    Chunk ``c`` (bytes ``64 c .. 64 c + 63``) takes the passes ``first[c] ..
    first[c + 1] - 1`` (1 to :data:`~vecpress.kernels.wordpack.MAX_PASSES` of them).
ctrl, mask : uint8[P, 64]
    Per pass and lane (lane ``8 j + t`` reads word ``j`` of the chunk): the bit of the
    word where the code starts, and ``2^bits - 1`` (0 in lanes without a code).
dims : int64[P, 64]
    Per pass and lane: the dimension of the code (-1 in lanes without one).
reach : int
    Bytes of a row the passes read, counted from its start (``64 C``).
keep, at : uint64[P], int64[P]
    The lanes of each pass that hold a code (bit ``l`` for lane ``l``), and where its
    codes start in a *compact* row (:func:`unpack_words`: the codes in pass and lane
    order, no empty lanes).
order : int64[k]
    The dimension of each byte of a compact row.
"""


@lru_cache(maxsize=64)
def _passes_of(key: bytes) -> WordPasses:
    layout = np.frombuffer(key, np.int64).reshape(-1, 4)
    passes = chunk_passes(layout)
    if passes.max(initial=1) > MAX_PASSES:
        raise ValueError(
            f"a 64-bit word of the layout holds {int(word_codes(layout).max())} codes; its "
            f"word passes read at most {8 * MAX_PASSES} a word (wordpack.word_readable)"
        )
    first = np.concatenate([[0], np.cumsum(passes)]).astype(np.int64)
    total = int(first[-1])
    ctrl = np.zeros((total, 64), np.uint8)
    mask = np.zeros((total, 64), np.uint8)
    lanes = np.full((total, 64), -1, np.int64)
    dims, pos, width = code_positions(layout)
    order = np.argsort(pos, kind="stable")
    dims, pos, width = dims[order], pos[order], width[order]
    word = pos // 64
    rank = np.arange(len(pos)) - np.searchsorted(word, word)  # its order within the word
    chunk, j = word // 8, word % 8
    p = first[chunk] + rank // 8
    lane = 8 * j + rank % 8
    ctrl[p, lane] = pos % 64
    mask[p, lane] = (1 << width) - 1
    lanes[p, lane] = dims
    used = lanes >= 0
    keep = (used.astype(np.uint64) << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
    at = np.concatenate([[0], np.cumsum(used.sum(axis=1))[:-1]]).astype(np.int64)
    return WordPasses(first, ctrl, mask, lanes, 64 * len(passes), keep, at, lanes[used])


def word_passes(layout: np.ndarray) -> WordPasses:
    """How to read ``layout``'s codes in place, chunk by chunk (:class:`WordPasses`), for a
    layout none of whose codes crosses a 64-bit word of the row and no word of which holds
    more than ``8 *`` :data:`~vecpress.kernels.wordpack.MAX_PASSES` codes
    (:func:`~vecpress.kernels.wordpack.word_readable`; ValueError otherwise).

    Cached per layout (the arrays are shared: do not write to them).

    Examples
    --------
    Eight 5-bit codes, then eight of 3 bits: one word of 16 codes, read in 2 passes.

    >>> wp = word_passes(np.array([[0, 8, 5, 0], [8, 8, 3, 5]]))
    >>> wp.first.tolist(), wp.ctrl[1, :3].tolist(), wp.dims[1, :3].tolist()
    ([0, 2], [40, 43, 46], [8, 9, 10])
    """
    return _passes_of(layout_key(layout))


def word_queries(qi: np.ndarray, passes: WordPasses) -> np.ndarray:
    """Query rows ``qi`` (int8/int16 ``[nv, d]``, values in [-128, 127]) laid out for
    ``passes``: int8 ``[nv rounded up to 4, P * 64]``, lane ``l`` of pass ``p`` holding
    ``qi[:, dims[p, l]]`` (0 where the lane has no code)."""
    return lane_queries(qi, passes.dims, np.int8)


@nb.njit(cache=True)
def words_dot(row, first, ctrl, mask, qw):
    """The exact dot product of one row's codes with one query row, read by the word
    passes in plain code (the scan's reader where the CPU has no AVX2; no unpacking run
    by run): each pass takes each of its chunk's 8 words and gives its 8 lanes
    ``(word >> ctrl) & mask``, as ``vpmultishiftqb`` and an ``and`` do, times ``qw``'s lane.

    ``row``: uint8, contiguous, a whole number of 64-bit words (read little-endian) and
    at least the passes' ``reach``, ``64 (len(first) - 1)`` bytes (a row shorter than it
    zero-padded; bytes outside the codes are masked off); ``first``, ``ctrl``, ``mask``:
    a :class:`WordPasses`'; ``qw``: one row of :func:`word_queries`.

    Examples
    --------
    >>> layout = np.array([[0, 2, 4, 0], [2, 2, 8, 1]], np.int64)  # 2 x 4 bits, 2 x 8
    >>> passes = word_passes(layout)
    >>> row = np.zeros(passes.reach, np.uint8)
    >>> row[:3] = [0x21, 5, 7]  # codes 1, 2 (byte 0, low nibble first), 5, 7
    >>> q = np.array([[1, 2, 3, -1]], np.int16)
    >>> int(words_dot(row, passes.first, passes.ctrl, passes.mask, word_queries(q, passes)[0]))
    13
    """
    words = row.view(np.uint64)
    acc = 0
    for c in range(first.shape[0] - 1):
        for p in range(first[c], first[c + 1]):
            for j in range(8):
                word = words[8 * c + j]
                lane = 8 * j
                for t in range(8):
                    v = (word >> np.uint64(ctrl[p, lane + t])) & np.uint64(mask[p, lane + t])
                    acc += np.int64(v) * np.int64(qw[64 * p + lane + t])
    return acc


def _switch_passes(builder, i64, npass, emit) -> None:
    """``emit(S)`` for the run-time pass count ``npass`` (1 to ``MAX_PASSES``), each
    count its own unrolled code."""
    end = builder.append_basic_block("passes_end")
    switch = builder.switch(npass, end)
    for s in range(1, MAX_PASSES + 1):
        block = builder.append_basic_block(f"passes_{s}")
        switch.add_case(ir.Constant(i64, s), block)
        builder.position_at_end(block)
        emit(s)
        builder.branch(end)
    builder.position_at_end(end)


def _pass_tables(builder, i64, vptr, index, pctrl, pmask):
    """The control and mask vectors of pass ``index``."""
    o64 = builder.mul(index, ir.Constant(i64, 64))
    return [
        builder.bitcast(builder.load(builder.inttoptr(builder.add(t, o64), vptr), align=1), _I8X64)
        for t in (pctrl, pmask)
    ]


def _chunk(builder, i64, c, pfirst, pa):
    """Chunk ``c``'s first pass and the one after its last (``first[c]``,
    ``first[c + 1]``), and the address of its 64 bytes in the row at ``pa``."""
    at = builder.add(pfirst, builder.mul(c, ir.Constant(i64, 8)))
    iptr = i64.as_pointer()
    p0 = builder.load(builder.inttoptr(at, iptr))
    p1 = builder.load(builder.inttoptr(builder.add(at, ir.Constant(i64, 8)), iptr))
    return p0, p1, builder.add(pa, builder.mul(c, ir.Constant(i64, 64)))


def _word_lanes(builder, mshift, v, ctrl, mask):
    """One pass's lanes of the 64 row bytes ``v``: each lane's 8 bits from its start in
    its word, masked to the code's width."""
    return builder.bitcast(builder.and_(builder.call(mshift, [ctrl, v]), mask), _I32X16)


@intrinsic
def tile1x16_words(typingctx, pa, sa, pfirst, pctrl, pmask, pq, nchunks, pout):
    """16 exact dot products of ONE query row (:func:`word_queries` layout, int8 at
    ``pq``) with 16 code rows (at ``pa``, stride ``sa``) read by :class:`WordPasses`
    (``pfirst``, ``pctrl``, ``pmask``: the arrays' addresses) over ``nchunks`` chunks;
    int32[16] at ``pout``."""
    sig = types.void(*([types.intp] * 8))

    def codegen(context, builder, signature, args):
        pa, sa, pfirst, pctrl, pmask, pq, n, pout = args
        i64, dpbusd, vptr, accs = _tile_setup(builder)
        _, mshift = _byte_ops(builder)
        with cgutils.for_range(builder, n) as loop:
            p0, p1, start = _chunk(builder, i64, loop.index, pfirst, pa)

            def emit(npass):
                tabs, qs = [], []
                for s in range(npass):
                    index = builder.add(p0, ir.Constant(i64, s))
                    tabs.append(_pass_tables(builder, i64, vptr, index, pctrl, pmask))
                    qaddr = builder.add(pq, builder.mul(index, ir.Constant(i64, 64)))
                    qs.append(builder.load(builder.inttoptr(qaddr, vptr), align=1))
                for r in range(16):
                    addr = builder.add(start, builder.mul(sa, ir.Constant(i64, r)))
                    v = builder.bitcast(builder.load(builder.inttoptr(addr, vptr), align=1), _I8X64)
                    acc = builder.load(accs[r])
                    for (ctrl, mask), q in zip(tabs, qs, strict=True):
                        acc = builder.call(
                            dpbusd, [acc, _word_lanes(builder, mshift, v, ctrl, mask), q]
                        )
                    builder.store(acc, accs[r])

            _switch_passes(builder, i64, builder.sub(p1, p0), emit)
        _store_sums(builder, [builder.load(acc) for acc in accs], pout, ir.Constant(i64, 16))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def tile4x4_words(typingctx, pa, sa, pfirst, pctrl, pmask, pq, sq, nchunks, pout, sout):
    """16 exact dot products, 4 code rows (at ``pa``, stride ``sa``) x 4 query rows
    (:func:`word_queries` layout, int8 at ``pq``, stride ``sq``), read by
    :class:`WordPasses` over ``nchunks`` chunks; the 4 products of query ``u`` as int32
    at ``pout + u * sout`` (bytes)."""
    sig = types.void(*([types.intp] * 10))

    def codegen(context, builder, signature, args):
        pa, sa, pfirst, pctrl, pmask, pq, sq, n, pout, sout = args
        i64, dpbusd, vptr, accs = _tile_setup(builder)
        _, mshift = _byte_ops(builder)
        with cgutils.for_range(builder, n) as loop:
            p0, p1, start = _chunk(builder, i64, loop.index, pfirst, pa)
            rows = []
            for r in range(4):
                addr = builder.add(start, builder.mul(sa, ir.Constant(i64, r)))
                rows.append(
                    builder.bitcast(builder.load(builder.inttoptr(addr, vptr), align=1), _I8X64)
                )

            def emit(npass):
                for s in range(npass):
                    index = builder.add(p0, ir.Constant(i64, s))
                    ctrl, mask = _pass_tables(builder, i64, vptr, index, pctrl, pmask)
                    rows_a = [_word_lanes(builder, mshift, v, ctrl, mask) for v in rows]
                    o64 = builder.mul(index, ir.Constant(i64, 64))
                    rows_b = []
                    for u in range(4):
                        qaddr = builder.add(
                            builder.add(pq, builder.mul(sq, ir.Constant(i64, u))), o64
                        )
                        rows_b.append(builder.load(builder.inttoptr(qaddr, vptr), align=1))
                    _accumulate4x4(builder, dpbusd, accs, rows_a, rows_b)

            _switch_passes(builder, i64, builder.sub(p1, p0), emit)
        _store_sums(builder, [builder.load(acc) for acc in accs], pout, sout)
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True)
def words_dots(codes, first, ctrl, mask, qw, out):
    """``out[j] = <codes of row j, query>`` for every row, one query row ``qw`` in the
    :func:`word_queries` layout (a reference of the tiles for tests; rows need ``reach``
    bytes readable past their start, so the array is copied with zero padding)."""
    nchunks = first.shape[0] - 1
    _padded_dots(codes, 64 * nchunks, True, first, mask, ctrl, mask, qw, nchunks, out)


@intrinsic
def unpack_words(typingctx, prow, pfirst, pctrl, pmask, pkeep, pat, nchunks, pdst):
    """The codes of the row at ``prow`` (read by :class:`WordPasses`: ``pfirst``,
    ``pctrl``, ``pmask``, ``pkeep``, ``pat`` the arrays' addresses, ``nchunks`` chunks
    of 64 bytes) as bytes at ``pdst`` in the compact order (``order``): each pass's
    lanes compacted in a register (``vpcompressb``, AVX-512 VBMI2) and stored whole, so
    ``pdst`` needs 64 bytes past the last code."""
    sig = types.void(*([types.intp] * 8))

    def codegen(context, builder, signature, args):
        prow, pfirst, pctrl, pmask, pkeep, pat, n, pdst = args
        i64 = ir.IntType(64)
        iptr = i64.as_pointer()
        vptr = _I8X64.as_pointer()
        _, mshift = _byte_ops(builder)
        bits64 = ir.VectorType(ir.IntType(1), 64)
        compress = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(_I8X64, [_I8X64, _I8X64, bits64]),
            "llvm.x86.avx512.mask.compress.v64i8",
        )

        def at(base, index):
            return builder.load(
                builder.inttoptr(builder.add(base, builder.mul(index, ir.Constant(i64, 8))), iptr)
            )

        with cgutils.for_range(builder, n) as loop:
            c = loop.index
            addr = builder.add(prow, builder.mul(c, ir.Constant(i64, 64)))
            v = builder.bitcast(builder.load(builder.inttoptr(addr, vptr), align=1), _I8X64)
            p0 = at(pfirst, c)
            p1 = at(pfirst, builder.add(c, ir.Constant(i64, 1)))
            with cgutils.for_range_slice(builder, p0, p1, ir.Constant(i64, 1)) as (p, _):
                o64 = builder.mul(p, ir.Constant(i64, 64))
                ctrl, mask = (
                    builder.load(builder.inttoptr(builder.add(t, o64), vptr), align=1)
                    for t in (pctrl, pmask)
                )
                lanes = builder.and_(builder.call(mshift, [ctrl, v]), mask)
                keep = builder.bitcast(at(pkeep, p), bits64)
                packed = builder.call(compress, [lanes, ir.Constant(_I8X64, None), keep])
                dst = builder.inttoptr(builder.add(pdst, at(pat, p)), vptr)
                builder.store(packed, dst, align=1)
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True)
def words_unpacked(codes, first, ctrl, mask, keep, at, k, out):
    """``out[j]`` = the codes of row ``j`` in the compact order (:func:`unpack_words`,
    ``k`` codes a row; a reference for tests, rows copied with zero padding first)."""
    n, cs = codes.shape
    nchunks = first.shape[0] - 1
    src = np.zeros(max(cs, 64 * nchunks), np.uint8)
    dst = np.zeros(k + 64, np.uint8)
    for j in range(n):
        src[:cs] = codes[j]
        unpack_words(
            src.ctypes.data, first.ctypes.data, ctrl.ctypes.data, mask.ctypes.data,
            keep.ctypes.data, at.ctypes.data, nchunks, dst.ctypes.data,
        )  # fmt: skip
        out[j] = dst[:k]
