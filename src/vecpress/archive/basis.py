"""An archive's basis: each column rounded to a step matched to its axis, entropy-coded.

The decoder multiplies the decoded coefficients ``v`` by the stored basis ``B̂``;
the encoder projects with the exact one ``V``, so ``x̂ - x`` gains ``v (B̂ - V)ᵀ``: with
column ``j`` rounded to a step ``δ_j`` (each entry off by at most ``δ_j / 2``), that
adds ``Σ_j λ_j δ_j² / 12`` per row, ``≈ k ε² Δ² / 12`` per coordinate for
``δ_j = ε Δ / σ_j`` (``Δ`` the quantization step, ``σ_j`` the axis's deviation),
against the quantization's own ``≈ (k / d) Δ² / 12``: a fraction ``d ε²`` more. The
archive takes ``ε = sqrt(f / d)`` with ``f = d / n`` (between 0.1 % and 5 %): the
fraction of error whose cost in rate (``≈ 0.72 f`` bits per coded coefficient) equals
what a finer basis would cost in bits per row. Leading axes thus get fine columns and
the low-variance tail coarse ones, instead of 16 bits for every entry.

The rounded entries ``round(V_ij / δ_j)`` are coded with an ANS coder under a
quantized Gaussian of deviation ``(1 / sqrt(d)) / δ_j`` (a unit column's entries have
that deviation when spread), over ``[-bound, bound]``: no table is stored.
"""

from __future__ import annotations

import math

import numpy as np


def precision(n: int, d: int) -> float:
    """``ε`` for ``n`` rows of dimension ``d`` (module docstring).

    Examples
    --------
    >>> round(precision(100_000, 384), 5)
    0.00316
    """
    return math.sqrt(min(0.05, max(1e-3, d / n)) / d)


def steps(variances: np.ndarray, step: float, eps: float, d: int) -> np.ndarray:
    """Per kept axis, its column's rounding step ``ε Δ / σ_j``, at most ``2 / sqrt(d)``
    (coarser would round a spread unit column to 0)."""
    sigma = np.sqrt(np.maximum(np.asarray(variances, np.float64), 0.0))
    return np.minimum(eps * step / np.maximum(sigma, 1e-300), 2.0 / math.sqrt(d))


def rounded(basis: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """The integer entries (int64, ``d x k``) of ``basis`` on its columns' steps."""
    return np.rint(basis.astype(np.float64) / deltas).astype(np.int64)


def stored(ints: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """The basis the decoder multiplies by (float32, C-contiguous)."""
    return np.ascontiguousarray((ints * deltas).astype(np.float32))


def _model(constriction, bound: int, deltas: np.ndarray, d: int):
    model = constriction.stream.model.QuantizedGaussian(-bound, bound)
    stds = np.repeat((1.0 / math.sqrt(d)) / deltas, d)  # column after column
    return model, np.zeros(stds.size), np.maximum(stds, 1e-3)


def encode(constriction, ints: np.ndarray, deltas: np.ndarray) -> tuple[np.ndarray, int]:
    """The ANS stream (uint32) of ``ints`` and the bound of their magnitude."""
    d = ints.shape[0]
    bound = int(np.abs(ints).max(initial=0))
    coder = constriction.stream.stack.AnsCoder()
    if ints.size and bound:
        model, means, stds = _model(constriction, bound, deltas, d)
        coder.encode_reverse(np.ascontiguousarray(ints.T).ravel().astype(np.int32), model,
                             means, stds)  # fmt: skip
    return coder.get_compressed().astype(np.uint32), bound


def decode(constriction, words: np.ndarray, bound: int, deltas: np.ndarray, d: int):
    """The ``d x len(deltas)`` integers :func:`encode` coded (raises whatever constriction
    raises on a stream it cannot decode; False as the second value if words are left)."""
    k = deltas.size
    if not k or not bound:
        return np.zeros((d, k), np.int64), words.size == 0
    model, means, stds = _model(constriction, bound, deltas, d)
    coder = constriction.stream.stack.AnsCoder(np.array(words))
    flat = coder.decode(model, means, stds)
    return flat.reshape(k, d).T.astype(np.int64), coder.is_empty()
