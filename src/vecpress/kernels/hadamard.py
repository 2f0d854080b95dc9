"""Fast Walsh–Hadamard transforms, and the randomized rotations built on them.

Let ``p`` be the largest power of two ``<= d``. Two layouts exist; both are
exactly orthogonal on R^d (every step is), O(d log d), and add no padding:
``d = 384`` stays 384 coordinates (faiss pads to 512).

**Mixing steps** (:func:`mixing_steps`, what new codecs use). A *step* maps
``x`` to ``z`` by

1. ``y_i = s_i * x[perm_i]`` (random signs and a fresh random permutation,
   at every ``d``; in odd steps the permutation shuffles ``y[:p]`` only,
   leaving the coordinates ``p..d-1`` that the previous step's block missed
   inside this step's block),
2. a random Givens rotation of each pair ``(y_{2i}, y_{2i+1})`` (uniform
   angle; an odd ``d`` leaves the last coordinate alone),
3. the normalised Walsh–Hadamard transform ``H_p`` on one block of ``p``
   coordinates: ``y[:p]`` in even steps, ``y[d - p:]`` in odd ones.

A *round* is one step when ``d`` is a power of two and two steps otherwise, so
each round passes every coordinate through a Hadamard block; ``hd2`` is two
rounds. The permutation in front of every block makes each row of the
composed map a transform of randomly placed, spread-out coordinates (no row
keeps heavy weights), and the angles make the output of a
sparse input continuously distributed instead of few-valued (with signs only,
two rounds at ``d = 2^k`` send a one-hot vector to multiples of ``2/d``).

**Legacy rounds** (:func:`hadamard_rounds`, codecs saved before the mixing
steps, restored unchanged). A round is step 1 (the permutation only when
``d`` is not a power of two), then ``H_p`` on ``y[:p]`` and, when ``p < d``,
``H_p`` again on the overlapping tail ``y[d - p:]``, with no permutation in
between. Composing the two blocks that way gives the output coordinates of the
tail rows a few weights of 1/2: one round at ``d = 384`` sends some basis
vectors to only 130 of the 384 coordinates, and after two rounds a one-hot
vector keeps a few-valued, heavy-tailed distribution (``hd2,tq4`` distortion
on one-hot inputs 3.5 times the Lloyd–Max value).

Rows are processed in blocks of 32 held transposed (``d x 32``), so that every
operation of a step is one on whole block rows of 32 contiguous floats, written
as vector IR (:mod:`vecpress.kernels.block_rows`; blocks move in and out in
16 x 16 tile transposes). Each output is the same sequence of float32 roundings
as the step-by-step definition: the Hadamard sums level by level, then the
scale; the Givens products fused as :func:`_mix_pairs` documents.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from . import read_only
from .block_rows import (
    ROW_BYTES,
    WIDTH,
    fma32,
    givens_rows,
    radix2_scaled,
    radix4,
    radix4_scaled,
    signed_row,
    transpose16,
    unrotate_rows,
)

#: rows per block: a ``d x 32`` float32 block is two AVX-512 registers per coordinate
_BLOCK = WIDTH
#: blocks per parallel task (their scratch is allocated once)
_TASK = 16


@nb.njit(cache=True, inline="always")
def _butterflies(t, start, p, scale):
    """The normalised transform ``H_p`` on rows ``start .. start+p`` of the block ``t``.

    Levels ``h = 1, 2, 4, ...`` are applied two at a time (then one), each pass
    computing exactly the sums of the level-by-level butterflies, and the scale
    multiplies the last pass's outputs (``(a + b) * scale``, as a separate pass
    after the sums would): the result is the same to the bit, in fewer passes
    over the block.
    """
    if p == 1:
        return  # H_1 is the identity (scale 1)
    base = t.ctypes.data + start * ROW_BYTES
    h = 1
    while h < p:
        step = h * ROW_BYTES
        if 4 * h <= p:
            last = 4 * h == p
            for i in range(0, p, 4 * h):
                for k in range(i, i + h):
                    if last:
                        radix4_scaled(base + k * ROW_BYTES, step, scale)
                    else:
                        radix4(base + k * ROW_BYTES, step, scale)
            h *= 4
        else:
            for i in range(0, p, 2 * h):
                for k in range(i, i + h):
                    radix2_scaled(base + k * ROW_BYTES, step, scale)
            h *= 2


@nb.njit(cache=True, inline="always")
def _pow2_below(d):
    """The largest power of two ``<= d``."""
    p = 1
    while p * 2 <= d:
        p *= 2
    return p


@nb.njit(cache=True, inline="always")
def _tile_copy(rows, rs, block, done, to_block):
    """Move columns ``0 .. done`` (a multiple of 16) of ``_BLOCK`` rows at address
    ``rows`` (row stride ``rs`` bytes) into the transposed block at ``block``
    (``to_block``), or back, in 16 x 16 tile transposes."""
    for j0 in range(0, _BLOCK, 16):
        r = rows + j0 * rs
        b = block + j0 * 4
        for c0 in range(0, done, 16):
            if to_block:
                transpose16(r + c0 * 4, rs, b + c0 * ROW_BYTES, ROW_BYTES)
            else:
                transpose16(b + c0 * ROW_BYTES, ROW_BYTES, r + c0 * 4, rs)


@nb.njit(cache=True, inline="always")
def _load_block(x, s, B, t):
    """Rows ``s .. s+B`` of ``x`` (C-contiguous float32), transposed into the
    ``d x _BLOCK`` block ``t``; the columns past ``B`` are zeroed (they are computed,
    never stored). Full blocks move in 16 x 16 tiles."""
    d = x.shape[1]
    done = 0
    if B == _BLOCK:
        done = d - d % 16
        _tile_copy(x.ctypes.data + s * d * 4, d * 4, t.ctypes.data, done, True)
    for j in range(B):
        for i in range(done, d):
            t[i, j] = x[s + j, i]
    for j in range(B, _BLOCK):
        for i in range(d):
            t[i, j] = 0.0


@nb.njit(cache=True, inline="always")
def _store_block(out, t, s, B):
    """Write the first ``B`` columns of the block ``t`` back as rows ``s .. s+B`` of
    ``out`` (C-contiguous float32); full blocks in 16 x 16 tiles."""
    d = t.shape[0]
    done = 0
    if B == _BLOCK:
        done = d - d % 16
        _tile_copy(out.ctypes.data + s * d * 4, d * 4, t.ctypes.data, done, False)
    for j in range(B):
        for i in range(done, d):
            out[s + j, i] = t[i, j]


@nb.njit(cache=True, inline="always")
def _gather_signed(t, u, perm, sign):
    """``u[i] = sign[i] * t[perm[i]]`` (the forward sign-and-permute of a step)."""
    pt, pu = t.ctypes.data, u.ctypes.data
    for i in range(t.shape[0]):
        signed_row(pt + perm[i] * ROW_BYTES, pu + i * ROW_BYTES, sign[i])


@nb.njit(cache=True, inline="always")
def _scatter_signed(t, u, perm, sign):
    """``u[perm[i]] = sign[i] * t[i]`` (its inverse)."""
    pt, pu = t.ctypes.data, u.ctypes.data
    for i in range(t.shape[0]):
        signed_row(pt + i * ROW_BYTES, pu + perm[i] * ROW_BYTES, sign[i])


@nb.njit(cache=True, fastmath=True)
def fwht_inplace(x):
    """Normalised fast Walsh–Hadamard transform of every row of ``x`` (n, p), p = 2^k.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.eye(4, dtype=np.float32)
    >>> fwht_inplace(x); bool(np.allclose(x @ x.T, np.eye(4)))
    True
    """
    n, p = x.shape
    scale = np.float32(1.0 / np.sqrt(p))
    for r in range(n):
        h = 1
        while h < p:
            for i in range(0, p, 2 * h):
                for k in range(i, i + h):
                    a = x[r, k]
                    b = x[r, k + h]
                    x[r, k] = a + b
                    x[r, k + h] = a - b
            h *= 2
        for k in range(p):
            x[r, k] *= scale


def hadamard_rounds(x, signs, perms, inverse):
    """Apply (or undo) legacy randomized Hadamard rounds to every row of ``x``.

    Parameters
    ----------
    x : float32[n, d]
    signs : float32[r, d]
        ±1 per round.
    perms : int32[r, d]
        A permutation per round (identity rows when ``d`` is a power of two).
    inverse : bool
        Apply the inverse (= transpose) map instead.

    Returns
    -------
    float32[n, d]
    """
    return _rotate(x, signs, perms, _NO_PAIRS, _NO_PAIRS, inverse, False)


@nb.njit(cache=True, fastmath={"contract"}, inline="always")
def _legacy_block(t, u, signs, perms, p, scale, inverse):
    """The legacy rounds on one transposed block ``t`` (``u`` its scratch); the result."""
    d = t.shape[0]
    rounds = signs.shape[0]
    if not inverse:
        for r in range(rounds):
            _gather_signed(t, u, perms[r], signs[r])
            _butterflies(u, 0, p, scale)
            if p < d:
                _butterflies(u, d - p, p, scale)
            t, u = u, t
    else:
        for r in range(rounds - 1, -1, -1):
            if p < d:
                _butterflies(t, d - p, p, scale)
            _butterflies(t, 0, p, scale)
            _scatter_signed(t, u, perms[r], signs[r])
            t, u = u, t
    return t


def random_rounds(d: int, rounds: int, rng: np.random.Generator):
    """Draw the signs and permutations of ``rounds`` legacy Hadamard rounds.

    Examples
    --------
    >>> s, p = random_rounds(6, 2, np.random.default_rng(0))
    >>> s.shape, p.shape
    ((2, 6), (2, 6))
    """
    signs = rng.choice(np.array([-1.0, 1.0], np.float32), size=(rounds, d)).astype(np.float32)
    power_of_two = d & (d - 1) == 0
    if power_of_two:
        perms = np.tile(np.arange(d, dtype=np.int32), (rounds, 1))
    else:
        perms = np.stack([rng.permutation(d).astype(np.int32) for _ in range(rounds)])
    return signs, perms


def block_start(d: int, step: int) -> int:
    """First coordinate of the Hadamard block of mixing step ``step`` (module docstring).

    Examples
    --------
    >>> [block_start(384, k) for k in range(4)], block_start(512, 1)
    ([0, 128, 0, 128], 0)
    """
    p = 1 << (d.bit_length() - 1)
    return 0 if step % 2 == 0 else d - p


def steps_per_round(d: int) -> int:
    """Mixing steps in one round: 1 when ``d`` is a power of two, else 2.

    Examples
    --------
    >>> steps_per_round(512), steps_per_round(384)
    (1, 2)
    """
    return 1 if d & (d - 1) == 0 else 2


def mixing_steps(x, signs, perms, cos, sin, inverse):
    """Apply (or undo) randomized Hadamard mixing steps to every row of ``x``.

    Parameters
    ----------
    x : float32[n, d]
    signs : float32[k, d]
        ±1 per step.
    perms : int32[k, d]
        A permutation of ``range(d)`` per step.
    cos, sin : float32[k, d // 2]
        The Givens rotation of each coordinate pair, per step.
    inverse : bool
        Apply the inverse (= transpose) map instead.

    Returns
    -------
    float32[n, d]

    Examples
    --------
    >>> s, p, c, t = random_steps(6, 2, np.random.default_rng(0))
    >>> m = mixing_steps(np.eye(6, dtype=np.float32), s, p, c, t, False)
    >>> bool(np.allclose(m @ m.T, np.eye(6), atol=1e-6))
    True
    """
    return _rotate(x, signs, perms, cos, sin, inverse, True)


@nb.njit(cache=True, inline="always")
def _mix_pairs(t, u, perm, sign, cos, sin):
    """``u = G (sign * t[perm])``: a step's sign-and-permute and its Givens rotations
    of the pairs ``(2i, 2i+1)``, in one pass.

    The signs are folded into the coefficients (``c * (s_a t) == (c s_a) * t``
    exactly) and the products are fused as the kernels compiled with
    ``fastmath=True`` fused them when the mixing steps were introduced
    (:func:`~vecpress.kernels.block_rows.givens_rows`), so saved codecs rotate to
    the same bits.
    """
    d = t.shape[0]
    pt, pu = t.ctypes.data, u.ctypes.data
    for i in range(d // 2):
        givens_rows(
            pt + perm[2 * i] * ROW_BYTES, pt + perm[2 * i + 1] * ROW_BYTES,
            pu + 2 * i * ROW_BYTES, pu + (2 * i + 1) * ROW_BYTES,
            cos[i] * sign[2 * i], sin[i] * sign[2 * i],
            cos[i] * sign[2 * i + 1], sin[i] * sign[2 * i + 1],
        )  # fmt: skip
    if d % 2:  # an odd d leaves the last coordinate alone
        signed_row(pt + perm[d - 1] * ROW_BYTES, pu + (d - 1) * ROW_BYTES, sign[d - 1])


@nb.njit(cache=True, inline="always")
def _unmix_pairs(t, cos, sin):
    """The inverse Givens rotations of the pairs ``(2i, 2i+1)`` of ``t``, in place."""
    pt = t.ctypes.data
    for i in range(t.shape[0] // 2):
        unrotate_rows(pt + 2 * i * ROW_BYTES, pt + (2 * i + 1) * ROW_BYTES, cos[i], sin[i])


@nb.njit(cache=True, fastmath={"contract"}, inline="always")
def _mixing_block(t, u, signs, perms, cos, sin, p, scale, inverse):
    """The mixing steps on one transposed block ``t`` (``u`` its scratch); the result."""
    d = t.shape[0]
    steps = signs.shape[0]
    if not inverse:
        for k in range(steps):
            _mix_pairs(t, u, perms[k], signs[k], cos[k], sin[k])
            start = 0 if (k % 2 == 0 or p == d) else d - p
            _butterflies(u, start, p, scale)
            t, u = u, t
    else:
        for k in range(steps - 1, -1, -1):
            start = 0 if (k % 2 == 0 or p == d) else d - p
            _butterflies(t, start, p, scale)
            _unmix_pairs(t, cos[k], sin[k])
            _scatter_signed(t, u, perms[k], signs[k])
            t, u = u, t
    return t


@nb.njit(cache=True, fastmath={"contract"}, parallel=True)
def _rotate_into(x, out, signs, perms, cos, sin, inverse, mixing):
    """Rows of ``x`` in blocks of ``_BLOCK``, transposed, through the mixing steps or the
    legacy rounds, into ``out``, in parallel over tasks of ``_TASK`` blocks.

    The arithmetic is the block-row intrinsics' (exact IR), so each output is the
    same sequence of roundings however the loops are blocked or threaded.
    """
    n, d = x.shape
    p = _pow2_below(d)
    scale = np.float32(1.0 / np.sqrt(p))
    nblocks = (n + _BLOCK - 1) // _BLOCK
    for task in nb.prange((nblocks + _TASK - 1) // _TASK):
        t0 = np.empty((d, _BLOCK), np.float32)
        u0 = np.empty((d, _BLOCK), np.float32)
        for blk in range(task * _TASK, min(nblocks, (task + 1) * _TASK)):
            s = blk * _BLOCK
            B = min(n, s + _BLOCK) - s
            _load_block(x, s, B, t0)
            if mixing:
                t = _mixing_block(t0, u0, signs, perms, cos, sin, p, scale, inverse)
            else:
                t = _legacy_block(t0, u0, signs, perms, p, scale, inverse)
            _store_block(out, t, s, B)


#: up to this many rows, the forward mixing steps run row by row (:func:`_mix_rows`):
#: a block costs the same for 1 row as for 32
FEW_ROWS = 4


@nb.njit(cache=True, fastmath=False)
def _mix_rows(x, out, signs, perms, cos, sin):
    """The forward mixing steps of each row of ``x`` into ``out``, one row at a time: the
    same float32 operations in the same order as the blocks' (:func:`_mix_pairs`,
    :func:`_butterflies`), so the same bits, without a block's 32 columns for one row."""
    n, d = x.shape
    p = _pow2_below(d)
    scale = np.float32(1.0 / np.sqrt(p))
    t = np.empty(d, np.float32)
    u = np.empty(d, np.float32)
    for r in range(n):
        t[:] = x[r]
        for k in range(signs.shape[0]):
            perm, sign = perms[k], signs[k]
            for i in range(d // 2):
                a = t[perm[2 * i]]
                b = t[perm[2 * i + 1]]
                ca, sa = cos[k, i] * sign[2 * i], sin[k, i] * sign[2 * i]
                cb, sb = cos[k, i] * sign[2 * i + 1], sin[k, i] * sign[2 * i + 1]
                u[2 * i] = fma32(ca, a, -(sb * b))
                u[2 * i + 1] = fma32(cb, b, sa * a)
            if d % 2:
                u[d - 1] = sign[d - 1] * t[perm[d - 1]]
            if p > 1:
                start = 0 if (k % 2 == 0 or p == d) else d - p
                h = 1
                while h < p:
                    for i in range(start, start + p, 2 * h):
                        for j in range(i, i + h):
                            a = u[j]
                            b = u[j + h]
                            u[j] = a + b
                            u[j + h] = a - b
                    h *= 2
                for j in range(start, start + p):
                    u[j] = u[j] * scale
            t, u = u, t
        out[r] = t


def _rotate(x, signs, perms, cos, sin, inverse, mixing):
    """The rotated rows of ``x`` (:func:`_rotate_into`; up to :data:`FEW_ROWS` rows of the
    forward mixing steps, :func:`_mix_rows`) in a fresh array.

    The array is allocated by numpy, which asks the kernel for huge pages on large
    arrays: filling one allocated in a compiled kernel (4 KB pages) costs a page
    fault every 4 KB, about 80 ms for 100,000 rows of d = 384 on a virtual machine.
    """
    x32 = np.ascontiguousarray(x, np.float32)  # the kernels compute in float32
    out = np.empty_like(x32)
    # read-only inputs (a mapped file's rows) and writable ones compile one version
    x32 = read_only(x32)
    if mixing and not inverse and x32.shape[0] <= FEW_ROWS:
        _mix_rows(x32, out, signs, perms, cos, sin)
    else:
        _rotate_into(x32, out, signs, perms, cos, sin, inverse, mixing)
    return out if out.dtype == x.dtype else out.astype(x.dtype)


#: the (absent) pair rotations of the legacy rounds
_NO_PAIRS = np.zeros((0, 0), np.float32)


def random_steps(d: int, rounds: int, rng: np.random.Generator):
    """Draw the signs, permutations and Givens rotations of ``rounds`` mixing rounds.

    Returns ``(signs, perms, cos, sin)`` for ``rounds * steps_per_round(d)``
    steps (the module docstring).

    Examples
    --------
    >>> s, p, c, t = random_steps(6, 2, np.random.default_rng(0))
    >>> s.shape, p.shape, c.shape, t.shape
    ((4, 6), (4, 6), (4, 3), (4, 3))
    """
    k = rounds * steps_per_round(d)
    p = 1 << (d.bit_length() - 1)
    signs = rng.choice(np.array([-1.0, 1.0], np.float32), size=(k, d)).astype(np.float32)
    perms = np.empty((k, d), np.int32)
    for step in range(k):
        if step % 2 == 0 or p == d:
            perms[step] = rng.permutation(d)
        else:  # coordinates p.. stay put, inside the tail block: the round covers them all
            perms[step, :p] = rng.permutation(p)
            perms[step, p:] = np.arange(p, d)
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(k, d // 2))
    return signs, perms, np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
