"""The archive codec's transform and quantizer: the principal basis of the rows, one
uniform step, and the steps that meet an error, a size or a recall.

Everything here works on float32 rows in memory (a chunk, or a sample of a larger
input); :mod:`vecpress.archive` walks the input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import kernels

#: the most levels a coefficient may have (a smaller ``mse`` is refused)
MAX_LEVELS = 1 << 20
#: how far past the midpoint between two levels a value must be to take the upper one,
#: on the scalar axes whose deviation is below 1.5 steps (a small dead zone)
ROUNDING = 0.1
#: groups of 8 axes whose deviations are all at least this many steps are quantized
#: on the E8 lattice (its cells' mean squared error is 0.0717 step² per axis against
#: 1/12 for a cube of the same volume: 14 % less error for the same symbols)
LATTICE_SIGMA = 1.0


@dataclass(frozen=True)
class Transform:
    """The principal basis of some rows.

    Attributes
    ----------
    mean : float32[d]
    basis : float32[d, d]
        Orthonormal columns in decreasing variance (the encoder projects on them; the
        archive stores them rounded, :mod:`.basis`).
    variances : float64[d]
        The covariance's eigenvalues, decreasing.
    """

    mean: np.ndarray
    basis: np.ndarray
    variances: np.ndarray

    @property
    def sigma(self) -> np.ndarray:
        """Per axis, the deviation (float32)."""
        return np.sqrt(np.maximum(self.variances, 0.0)).astype(np.float32)


class Moments:
    """Mean and covariance of rows added a chunk at a time, in float64 (the products
    of 512 rows at a time in float32, centred on the first chunk's mean so that an
    offset far larger than the spread loses nothing).

    Examples
    --------
    >>> m = Moments(2)
    >>> m.add(np.array([[1, 0], [3, 0]], np.float32)); m.add(np.array([[2, 3]], np.float32))
    >>> t = m.transform()
    >>> t.mean.tolist(), t.variances.round(3).tolist()
    ([2.0, 1.0], [2.0, 0.667])
    """

    def __init__(self, d: int) -> None:
        self.n = 0
        self.shift: np.ndarray | None = None
        self.sums = np.zeros(d, np.float64)
        self.products = np.zeros((d, d), np.float64)

    def add(self, x: np.ndarray) -> None:
        if self.shift is None:
            self.shift = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        part = x - self.shift
        self.n += x.shape[0]
        self.sums += part.sum(axis=0, dtype=np.float64)
        for s in range(0, part.shape[0], 512):  # float32 sums of 512 rows at most
            block = part[s : s + 512]
            top = float(np.abs(block).max(initial=0.0))
            if 0.0 < top < 2.0**-50 or top > 2.0**50:  # squares under- or overflow float32
                block = block.astype(np.float64)
            self.products += block.T @ block

    def transform(self) -> Transform:
        m = self.sums / self.n
        cov = self.products / self.n - np.outer(m, m)
        lam, vecs = np.linalg.eigh((cov + cov.T) / 2)
        order = np.argsort(lam)[::-1]
        basis = vecs[:, order].astype(np.float32)
        mean = (self.shift.astype(np.float64) + m).astype(np.float32)
        return Transform(mean, np.ascontiguousarray(basis), np.maximum(lam[order], 0.0))


def project(t: Transform, x: np.ndarray) -> np.ndarray:
    """Coefficients ``(x - mean) basis`` (float32)."""
    return (x - t.mean) @ t.basis


def reconstruct(v: np.ndarray, basis: np.ndarray, mean: np.ndarray, out=None) -> np.ndarray:
    """``v basisᵀ + mean`` in float32 (``v``: the kept axes' decoded coefficients,
    ``basis``: their vectors), into ``out`` if given (C-contiguous): what a
    decompressed chunk holds."""
    if out is None:
        out = np.empty((v.shape[0], mean.size), np.float32)
    if v.shape[1] == 0:
        out[:] = mean
        return out
    np.matmul(np.ascontiguousarray(v, np.float32), basis.T, out=out)
    out += mean
    return out


@dataclass(frozen=True)
class Quantizer:
    """How coefficients become symbols: one step; the leading ``groups`` groups of 8
    axes on the E8 lattice; the other axes scalar, with a dead zone where the axis's
    deviation is below 1.5 steps, decoded with a per-axis shrink toward 0.

    Attributes
    ----------
    step : float
    groups : int
    offsets, shrink : float32[k - 8 groups]
        Per scalar axis, what :func:`kernels.quantize_into` adds before flooring, and
        how far toward 0 a level decodes (in steps).
    """

    step: float
    groups: int
    offsets: np.ndarray
    shrink: np.ndarray

    @property
    def axes(self) -> int:
        return 8 * self.groups + self.offsets.size


def lattice_groups(sigma: np.ndarray, step: float) -> int:
    """Leading groups of 8 axes whose deviations are all at least
    :data:`LATTICE_SIGMA` steps (where the lattice beats scalar levels)."""
    g = 0
    while 8 * g + 8 <= sigma.size and sigma[8 * g + 7] >= LATTICE_SIGMA * step:
        g += 1
    return g


def quantizer(step: float, sigma: np.ndarray, k: int | None = None, shrink=None) -> Quantizer:
    """The quantizer of ``step`` for axes of deviations ``sigma`` (the first ``k``);
    ``shrink`` 0 unless given."""
    k = sigma.size if k is None else k
    groups = min(lattice_groups(sigma, step), k // 8)
    rest = sigma[8 * groups : k]
    offsets = np.where(rest < 1.5 * step, 0.5 - ROUNDING, 0.5).astype(np.float32)
    shrink = np.zeros(rest.size, np.float32) if shrink is None else shrink
    return Quantizer(float(step), groups, offsets, np.asarray(shrink, np.float32))


def symbols(y: np.ndarray, qz: Quantizer) -> np.ndarray:
    """The int32 symbols of the first ``qz.axes`` coefficients of ``y``.

    Raises
    ------
    ValueError
        A level beyond :data:`MAX_LEVELS` / 2 (the step is too fine for the data).
    """
    y = np.ascontiguousarray(y[:, : qz.axes], np.float32)
    s = np.empty(y.shape, np.int32)
    top = kernels.quantize_into(y, 1.0 / qz.step, qz.groups, qz.offsets, s)
    if top >= MAX_LEVELS // 2:
        raise ValueError(
            f"the target needs a step of {qz.step:.3g}, finer than the {MAX_LEVELS} levels "
            "an axis of an archive may have: give a larger mse (or a smaller bits_per_dim)"
        )
    return s


def values(s: np.ndarray, qz: Quantizer) -> np.ndarray:
    """The decoded coefficients (float32) of the symbols ``s`` (row-major, or the
    transpose of a decoder's column-major symbols: read in place)."""
    out = np.empty(s.shape, np.float32)
    if s.T.flags.c_contiguous and not s.flags.c_contiguous:
        kernels.dequantize_columns_into(s.T, qz.step, qz.groups, qz.shrink, out)
    else:
        kernels.dequantize_into(np.ascontiguousarray(s), qz.step, qz.groups, qz.shrink, out)
    return out


def fit_shrink(y: np.ndarray, s: np.ndarray, qz: Quantizer) -> Quantizer:
    """``qz`` with each scalar axis's shrink set to the mean of ``|q| - |y| / step``
    over its non-zero levels (the cells' centroid, on these rows), within [0, 0.5)."""
    y = np.ascontiguousarray(y[:, : qz.axes], np.float32)
    sums = kernels.shrink_sums(y, np.ascontiguousarray(s), 1.0 / qz.step, qz.groups)
    mean = np.where(sums[1] > 0, sums[0] / np.maximum(sums[1], 1), 0.0)
    return Quantizer(qz.step, qz.groups, qz.offsets, np.clip(mean, 0, 0.49).astype(np.float32))


def sample_quantizer(y: np.ndarray, step: float, sigma: np.ndarray) -> tuple[Quantizer, float]:
    """The quantizer of ``step`` fitted on the coefficients ``y`` (shrink, and the axes
    kept: up to the last whose levels are not all 0), and its mean squared error per
    entry of ``y`` (the axes dropped counted whole)."""
    qz, _, _, err = _fitted(y, step, sigma)
    return qz, err


def _fitted(y: np.ndarray, step: float, sigma: np.ndarray):
    """:func:`sample_quantizer`'s quantizer and error, with the kept axes' symbols and
    decoded coefficients: ``(qz, symbols, values, error)``."""
    qz = quantizer(step, sigma)
    s = symbols(y, qz)
    qz = fit_shrink(y, s, qz)
    used = np.flatnonzero((s != 0).any(axis=0))
    k = max(int(used[-1]) + 1 if used.size else 0, 8 * qz.groups)
    qz = Quantizer(qz.step, qz.groups, qz.offsets[: k - 8 * qz.groups],
                   qz.shrink[: k - 8 * qz.groups])  # fmt: skip
    s = s[:, :k]
    v = values(s, qz)
    err = kernels.squared_error(v, np.ascontiguousarray(y[:, :k])).sum()
    err += float(np.square(y[:, k:], dtype=np.float64).sum())
    return qz, s, v, float(err) / y.size


def finest_step(y: np.ndarray) -> float:
    """The finest step :data:`MAX_LEVELS` allows for coefficients ``y`` (0: all zero)."""
    return float(np.abs(y).max(initial=0.0)) / (MAX_LEVELS // 2 - 2)


def step_for_mse(y: np.ndarray, sigma: np.ndarray, target: float) -> float:
    """The largest step (to 0.5 %) whose error on the coefficients ``y``
    (:func:`sample_quantizer`) stays within ``target``.

    Step ``sqrt(12 target)`` errs by about ``target`` or less (each axis costs at most
    ``≈ step²/12`` or its variance): from a bracket around it (widened until it holds
    the answer), false position on ``log error`` against ``log step`` (the error grows
    about as the step squared), each new step kept well inside the bracket."""
    top = float(np.abs(y).max(initial=0.0))
    if top == 0.0:  # every row is the mean: any step codes them exactly
        return 1.0

    def error(step: float) -> float:
        return sample_quantizer(y, step, sigma)[1]

    finest = finest_step(y)
    lo = hi = max(math.sqrt(12 * target), finest)
    e_lo = e_hi = error(lo)
    while e_lo > target:
        if lo <= finest:
            symbols(y, quantizer(lo / 2, sigma))  # raises: too many levels
        hi, e_hi = lo, e_lo
        lo = max(lo / 2, finest)
        e_lo = error(lo)
    while e_hi <= target:
        if hi > 4 * top:  # past 4 |y|max every level is 0 and the error stops growing
            return hi
        lo, e_lo = hi, e_hi
        hi = hi * 2
        e_hi = error(hi)
    while hi / lo >= 1.005:
        mid = math.sqrt(lo * hi)
        if e_lo > 0 and e_hi > e_lo:  # aim 0.2 % below the step that errs by target
            w = math.log(0.996 * target / e_lo) / math.log(e_hi / e_lo)
            mid = math.exp(math.log(lo) + math.log(hi / lo) * min(max(w, 0.05), 0.95))
        e_mid = error(mid)
        if e_mid <= target:
            lo, e_lo = mid, e_mid
            if lo * 1.004 < hi:  # probe just above: the answer is often bracketed at once
                e_up = error(lo * 1.004)
                if e_up > target:
                    return lo
                lo, e_lo = lo * 1.004, e_up
        else:
            hi, e_hi = mid, e_mid
    return lo


def entropy_bits(q: np.ndarray) -> np.ndarray:
    """Per column of ``q``, its empirical entropy times its rows (bits)."""
    out = np.zeros(q.shape[1])
    for j, col in enumerate(q.T):
        counts = np.bincount(col - col.min())
        p = counts[counts > 0] / col.size
        out[j] = -float((p * np.log2(p)).sum()) * col.size
    return out


def step_for_bits(y: np.ndarray, sigma: np.ndarray, bits, top: float | None = None) -> float:
    """The smallest step (to 0.5 %) for which ``bits(q)`` -- a size in bits estimated
    from the levels ``q`` of the coefficients ``y`` -- stays within 0 (``bits``
    returns the excess); bisection in the step's logarithm between 2⁻¹⁸ and 4 times the
    largest coefficient."""
    spread = top or float(np.abs(y).max(initial=0.0)) or 1.0
    lo, hi = spread * 2.0**-18, spread * 4
    for _ in range(60):
        if hi / lo < 1.005:
            break
        mid = math.sqrt(lo * hi)
        try:
            over = bits(symbols(y, quantizer(mid, sigma))) > 0
        except ValueError:  # finer than MAX_LEVELS
            over = True
        lo, hi = (mid, hi) if over else (lo, mid)
    return hi


def recall_at_10(queries: np.ndarray, base: np.ndarray, decoded: np.ndarray) -> float:
    """Recall@10 by inner product of the decoded rows against the original ones: the
    fraction of each query's 10 best original rows found among its 10 best decoded
    rows."""
    return _recall(_top10(queries, base), queries, decoded)


def _top10(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    k = min(10, rows.shape[0])
    return np.argpartition(-(queries @ rows.T), k - 1, axis=1)[:, :k]


def _recall(want: np.ndarray, queries: np.ndarray, decoded: np.ndarray) -> float:
    got = _top10(queries, decoded)
    hits = sum(np.intersect1d(a, b).size for a, b in zip(want, got, strict=True))
    return hits / got.size


#: rows of the base on which a recall target's step is first bracketed
RECALL_COARSE_ROWS = 20_000


def step_for_recall(t: Transform, base: np.ndarray, queries: np.ndarray, target: float) -> float:
    """The largest step (to 1 %) whose decoded ``base`` rows give ``queries`` a
    recall@10 of at least ``target`` (:func:`recall_at_10`; recall falls as the step
    grows, up to noise).

    Coarse to fine: the step is bracketed on :data:`RECALL_COARSE_ROWS` rows of the base
    spread evenly (steps a factor 4 apart, then to 5 %), then found on the whole base
    from there (steps a factor 1.1 apart, then bisection in the step's logarithm):
    recall on fewer rows is a little higher, so the whole base's step is near and
    usually below, and few decodings of the whole base are needed."""
    y = project(t, base)
    top = float(np.abs(y).max(initial=0.0))
    if top == 0.0:
        return 1.0
    finest = finest_step(y) * 2

    def recall_on(rows):
        ys = y[rows]
        want = _top10(queries, base[rows])  # the originals' top 10, once

        def recall(step: float) -> float:
            qz, _, v, _ = _fitted(ys, step, t.sigma)
            return _recall(want, queries, reconstruct(v, t.basis[:, : qz.axes], t.mean))

        return recall

    step = top * 2.0**-6
    if len(base) > RECALL_COARSE_ROWS * 5 // 4:
        rows = np.unique(np.linspace(0, len(base) - 1, RECALL_COARSE_ROWS).astype(np.int64))
        step = _largest_step(recall_on(rows), step, target, 4.0, 1.05, finest, top)
    return _largest_step(recall_on(slice(None)), step, target, 1.1, 1.01, finest, top)


def _largest_step(recall, start, target, factor, tol, finest, top) -> float:
    """The largest step (to ``tol``) with ``recall(step) >= target``: steps ``factor``
    apart from ``start`` until the answer is bracketed, then bisection."""
    lo = hi = start
    if recall(start) >= target:
        while True:
            hi = lo * factor
            if hi > 4 * top:  # every level 0 beyond: the recall stops changing
                return lo
            if recall(hi) < target:
                break
            lo = hi
    else:
        while True:
            lo = max(hi / factor, finest)
            got = recall(lo)
            if got >= target:
                break
            if lo <= finest:
                raise ValueError(
                    f"recall={target!r} is beyond reach: even the finest step the archive "
                    f"allows gives {got:.4f} on the held-out queries"
                )
            hi = lo
    while hi / lo >= tol:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if recall(mid) >= target else (lo, mid)
    return lo
