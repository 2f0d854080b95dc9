"""Fast Walsh–Hadamard transforms, and the randomized rounds built on them.

A *round* maps ``x`` in R^d to ``z`` by

1. ``y_i = s_i * x[perm_i]`` (random signs, and a random permutation when
   ``d`` is not a power of two),
2. the normalised Walsh–Hadamard transform ``H_p`` on ``y[:p]``, where ``p`` is
   the largest power of two ``<= d``,
3. when ``p < d``, ``H_p`` again on the overlapping tail ``y[d - p:]``.

Each step is exactly orthogonal on R^d, so a round is too, and it adds no
padding: ``d = 384`` stays 384 coordinates (faiss pads to 512). Because
``p > d / 2`` the two blocks overlap and every output coordinate depends on
every input coordinate after one round.

Rows are processed in blocks held transposed (``d x B``), so each butterfly
works on ``B`` contiguous floats and vectorises.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_BLOCK = 64


@nb.njit(cache=True, fastmath=True, inline="always")
def _butterflies(t, start, p, scale):
    h = 1
    B = t.shape[1]
    while h < p:
        for i in range(start, start + p, 2 * h):
            for k in range(i, i + h):
                for j in range(B):
                    a = t[k, j]
                    b = t[k + h, j]
                    t[k, j] = a + b
                    t[k + h, j] = a - b
        h *= 2
    for k in range(start, start + p):
        for j in range(B):
            t[k, j] *= scale


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


@nb.njit(cache=True, fastmath=True, parallel=True)
def hadamard_rounds(x, signs, perms, inverse):
    """Apply (or undo) randomized Hadamard rounds to every row of ``x``.

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
    n, d = x.shape
    rounds = signs.shape[0]
    p = 1
    while p * 2 <= d:
        p *= 2
    scale = np.float32(1.0 / np.sqrt(p))
    out = np.empty_like(x)
    nblocks = (n + _BLOCK - 1) // _BLOCK
    for blk in nb.prange(nblocks):
        s = blk * _BLOCK
        e = min(n, s + _BLOCK)
        B = e - s
        t = np.zeros((d, B), np.float32)
        u = np.empty((d, B), np.float32)
        for j in range(B):
            for i in range(d):
                t[i, j] = x[s + j, i]
        if not inverse:
            for r in range(rounds):
                for i in range(d):
                    src = perms[r, i]
                    sg = signs[r, i]
                    for j in range(B):
                        u[i, j] = sg * t[src, j]
                _butterflies(u, 0, p, scale)
                if p < d:
                    _butterflies(u, d - p, p, scale)
                t, u = u, t
        else:
            for r in range(rounds - 1, -1, -1):
                if p < d:
                    _butterflies(t, d - p, p, scale)
                _butterflies(t, 0, p, scale)
                for i in range(d):
                    dst = perms[r, i]
                    sg = signs[r, i]
                    for j in range(B):
                        u[dst, j] = sg * t[i, j]
                t, u = u, t
        for j in range(B):
            for i in range(d):
                out[s + j, i] = t[i, j]
    return out


def random_rounds(d: int, rounds: int, rng: np.random.Generator):
    """Draw the signs and permutations of ``rounds`` randomized Hadamard rounds.

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
