"""``rq<b>``: RaBitQ-style uniform grid with per-vector optimal rescaling.

For a (rotated) vector ``x`` with norm ``r`` and direction ``u = x / r``, the code
is a point ``c`` of the uniform grid ``{0..2^b-1}^d``; its centred version
``y = c - (2^b - 1)/2`` (half-integers) is chosen to maximise the cosine
``<y, u> / |y|`` over the scale ``t`` of ``y = clamp(round(t u))``
(Extended RaBitQ, Gao et al. 2024). The row stores the packed codes, the
correction factor ``f = r / <y, u>`` and the norm ``r`` (float16 for b <= 4,
where the code's own error is ~100 times larger than float16 rounding, float32
above; the float16 fields are scaled by ``2**-field_exp``, an exponent fitted
to the training rows' largest norm, see :mod:`vecpress.codecs.quantizers.base`), and

    <q, x>  ≈  f * <y, q>

which is unbiased when the rotation is random (the quantization error of ``y``
is orthogonal to ``u`` after normalisation by ``<y, u>``).

The scale search: after a random rotation every unit vector looks alike, so
the best scale concentrates around a value ``t0(b, d)`` computed once (median
optimum over fixed-seed Gaussian vectors). Each vector then searches a
log-spaced grid of 24 scales in ``[0.6, 1.6] t0``, refines twice around the
best (8 scales each) — 40 O(d) evaluations, compiled and parallel, eight
scales per pass over the vector (:func:`_cosines8`) — and at
6-8 bits also tries the 16 scales that put the smallest coordinate exactly on
one of the 16 smallest levels (which makes ``encode(decode(codes))`` reproduce
the codes where the flat optimum would defeat a grid). On
Gaussian vectors the cosine reached is within 2e-6 of the exact optimum.

Scoring quantizes the query to 8 bits, ``q ≈ s qi`` (two 8-bit limbs against
6-8-bit codes), and computes ``f * s * (<c, qi> - (2^b - 1)/2 * sum(qi))`` with
integer dot products. The extra error of that step is bounded by
``|f| * s / 2 * sum_i |y_i|`` (:meth:`RQ.query_quantization_bound`) and
measured by ``benchmarks/query_bits.py``.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ...kernels.bitpack import pack_row, unpack
from ...kernels.scan import quantize_queries, query_limbs
from .base import GridQuantizer, RowField

_COARSE = 24
_FINE = 8
_LO, _HI = 0.6, 1.6


@nb.njit(cache=True, fastmath=True, inline="always")
def _cosine(u, t, levels):
    half = np.float32((levels - 1) * 0.5)
    top = np.float32(levels - 1.0)
    tt = np.float32(t)
    dot = np.float32(0.0)
    nn = np.float32(0.0)
    for i in range(u.shape[0]):
        c = min(max(np.rint(tt * u[i] + half), np.float32(0.0)), top)
        y = c - half
        dot += y * u[i]
        nn += y * y
    return dot / np.sqrt(nn)


@nb.njit(cache=True, fastmath=True, inline="always")
def _cosines8(u, ts, levels):
    """:func:`_cosine` at the eight scales ``ts`` in one pass over ``u``.

    Eight independent sums keep the vector units busy where one scale at a time
    waits on its own sums (about 6 times faster per scale). The result is
    :func:`_cosine`'s up to the float32 summation order.
    """
    half = np.float32((levels - 1) * 0.5)
    top = np.float32(levels - 1.0)
    zero = np.float32(0.0)
    a0, a1, a2, a3 = np.float32(ts[0]), np.float32(ts[1]), np.float32(ts[2]), np.float32(ts[3])
    a4, a5, a6, a7 = np.float32(ts[4]), np.float32(ts[5]), np.float32(ts[6]), np.float32(ts[7])
    d0 = d1 = d2 = d3 = d4 = d5 = d6 = d7 = np.float32(0.0)
    n0 = n1 = n2 = n3 = n4 = n5 = n6 = n7 = np.float32(0.0)
    for i in range(u.shape[0]):
        ui = u[i]
        y0 = min(max(np.rint(a0 * ui + half), zero), top) - half
        y1 = min(max(np.rint(a1 * ui + half), zero), top) - half
        y2 = min(max(np.rint(a2 * ui + half), zero), top) - half
        y3 = min(max(np.rint(a3 * ui + half), zero), top) - half
        y4 = min(max(np.rint(a4 * ui + half), zero), top) - half
        y5 = min(max(np.rint(a5 * ui + half), zero), top) - half
        y6 = min(max(np.rint(a6 * ui + half), zero), top) - half
        y7 = min(max(np.rint(a7 * ui + half), zero), top) - half
        d0 += y0 * ui
        d1 += y1 * ui
        d2 += y2 * ui
        d3 += y3 * ui
        d4 += y4 * ui
        d5 += y5 * ui
        d6 += y6 * ui
        d7 += y7 * ui
        n0 += y0 * y0
        n1 += y1 * y1
        n2 += y2 * y2
        n3 += y3 * y3
        n4 += y4 * y4
        n5 += y5 * y5
        n6 += y6 * y6
        n7 += y7 * y7
    return (
        d0 / np.sqrt(n0), d1 / np.sqrt(n1), d2 / np.sqrt(n2), d3 / np.sqrt(n3),
        d4 / np.sqrt(n4), d5 / np.sqrt(n5), d6 / np.sqrt(n6), d7 / np.sqrt(n7),
    )  # fmt: skip


@nb.njit(cache=True, fastmath=True, inline="always")
def _keep_best(ts, vs, best, best_t):
    """The best of ``(best, best_t)`` and the cosines ``vs`` at the scales ``ts``, in
    order (strictly better only: the first of equal cosines stays)."""
    for m in range(len(ts)):
        if vs[m] > best:
            best, best_t = vs[m], ts[m]
    return best, best_t


@nb.njit(cache=True, fastmath=True, inline="always")
def _try_scales(u, t, ratio, count, levels, best, best_t):
    """Try ``count`` scales ``t, t * ratio, ...`` (``count`` a multiple of 8), in that
    order, eight per pass over ``u``; the best cosine and its scale so far."""
    for _ in range(count // 8):
        t1 = t * ratio
        t2 = t1 * ratio
        t3 = t2 * ratio
        t4 = t3 * ratio
        t5 = t4 * ratio
        t6 = t5 * ratio
        t7 = t6 * ratio
        ts = (t, t1, t2, t3, t4, t5, t6, t7)
        best, best_t = _keep_best(ts, _cosines8(u, ts, levels), best, best_t)
        t = t7 * ratio
    return best, best_t


@nb.njit(cache=True)
def _search_ratios():
    """The ratio of the coarse grid and of the two refinements (module docstring)."""
    ratio = (_HI / _LO) ** (1.0 / (_COARSE - 1))
    r1 = (ratio * ratio) ** (1.0 / (_FINE + 1))
    r2 = (r1 * r1) ** (1.0 / (_FINE + 1))
    return ratio, r1, r2


@nb.njit(cache=True, fastmath=True)
def _best_scale(u, t0, levels, ratios):
    ratio, r1, r2 = ratios
    best, best_t = _try_scales(u, t0 * _LO, ratio, _COARSE, levels, -1.0, t0)
    best, best_t = _try_scales(u, best_t / ratio * r1, r1, _FINE, levels, best, best_t)
    best, best_t = _try_scales(u, best_t / r1 * r2, r2, _FINE, levels, best, best_t)
    # At 6-8 bits the cosine is nearly flat over a wide range of scales and a grid
    # of scales can miss the one that maps a decoded direction y/|y| back onto y
    # (cosine 1). That scale puts the smallest coordinate on a small level k + 1/2,
    # so try t = (k + 1/2) / min|u_i| for k < 16: encode(decode(codes)) == codes.
    if levels >= 64:
        umin = np.inf
        for i in range(u.shape[0]):
            a = abs(u[i])
            if a > 0.0 and a < umin:
                umin = a
        if umin < np.inf:
            for k in range(0, 16, 8):
                ts = (
                    (k + 0.5) / umin, (k + 1.5) / umin, (k + 2.5) / umin, (k + 3.5) / umin,
                    (k + 4.5) / umin, (k + 5.5) / umin, (k + 6.5) / umin, (k + 7.5) / umin,
                )  # fmt: skip
                best, best_t = _keep_best(ts, _cosines8(u, ts, levels), best, best_t)
    return best_t


_CHUNK = 256


@nb.njit(cache=True, fastmath=True, parallel=True)
def _encode(x, bits, t0, out, factors, norms):
    n, d = x.shape
    levels = 1 << bits
    half = (levels - 1) * 0.5
    nchunks = (n + _CHUNK - 1) // _CHUNK
    ratios = _search_ratios()
    for ch in nb.prange(nchunks):
        c = np.empty(d, np.uint8)
        u = np.empty(d, np.float32)
        for j in range(ch * _CHUNK, min(n, (ch + 1) * _CHUNK)):
            r2 = 0.0
            for i in range(d):
                r2 += np.float64(x[j, i]) * x[j, i]
            r = np.sqrt(r2)
            factor = 0.0
            if r == 0.0:
                for i in range(d):
                    c[i] = levels // 2
            else:
                inv = 1.0 / r
                for i in range(d):
                    u[i] = x[j, i] * inv
                t = 1.0 if bits == 1 else _best_scale(u, t0, levels, ratios)
                dot = 0.0
                for i in range(d):
                    ci = min(
                        max(np.rint(np.float32(t) * u[i] + np.float32(half)), 0.0), levels - 1.0
                    )
                    c[i] = np.uint8(ci)
                    dot += (ci - half) * np.float64(x[j, i])
                factor = r2 / dot
            pack_row(c, bits, out[j], 0)
            factors[j] = factor
            norms[j] = r


@nb.njit(cache=True, fastmath=True, parallel=True)
def _typical_scale(g, levels):
    n, d = g.shape
    best = np.empty(n)
    for j in nb.prange(n):
        u = g[j] / np.sqrt((g[j] * g[j]).sum())
        bt = 0.0
        bv = -1.0
        for k in range(400):
            t = np.sqrt(d) * 0.02 * (k + 1) * (levels - 1) / 4.0
            v = _cosine(u, t, levels)
            if v > bv:
                bv, bt = v, t
        best[j] = bt
    return np.median(best)


def typical_scale(bits: int, d: int) -> float:
    """Median optimal grid scale for random unit vectors in R^d (fixed seed)."""
    if bits == 1:
        return 1.0
    g = np.random.default_rng(20241205).standard_normal((256, d))
    return float(_typical_scale(g, 1 << bits))


class RQ(GridQuantizer):
    """RaBitQ-style ``b``-bit codes with a per-vector correction factor (+8 bytes)."""

    name = "rq"
    scales_fields = True
    row_fields = (RowField("f", "correction factor f"), RowField("norm", "norm"))

    def setup(self, d: int, rng: np.random.Generator) -> None:
        super().setup(d, rng)
        self.t0_ = typical_scale(self.param, d)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"t0": np.array([self.t0_], np.float64)}

    def setup_restored(self, arrays: dict[str, np.ndarray]) -> None:
        from ..transforms import _checked

        t0 = float(_checked(arrays, "t0", (1,), np.float64)[0])
        if not t0 > 0:
            raise ValueError(f"rq scale t0 must be positive, found {t0}")
        self.t0_ = t0

    def encode(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        out = np.empty((n, self.code_size), np.uint8)
        f = np.empty(n, np.float64)
        r = np.empty(n, np.float64)
        _encode(x, self.param, self.t0_, out, f, r)
        self.put_fields(out, f=f, norm=r)
        return out

    def _factor(self, codes: np.ndarray) -> np.ndarray:
        return self.get_fields(codes, "f")[0]

    def _norm(self, codes: np.ndarray) -> np.ndarray:
        return self.get_fields(codes, "norm")[0]

    def _grid(self, codes: np.ndarray) -> np.ndarray:
        return unpack(codes, self.param, self.d).astype(np.float32) - (self.levels - 1) / 2

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Norm-preserving reconstruction ``r * y / |y|``."""
        y = self._grid(codes)
        return y * (self._norm(codes) / np.linalg.norm(y, axis=1))[:, None]

    def grid_queries(self, q: np.ndarray):
        zq = np.zeros(q.shape[0], np.float32)
        return q, (self.levels - 1) / 2, zq, zq

    def grid_row_fields(self):
        """``a = f`` (the correction factor), ``b = 0``."""
        return self.field_at("f"), 0.0

    def score_float(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The same estimator with the query kept in float (slow; for measurement)."""
        return (q @ self._grid(codes).T) * self._factor(codes)[None, :]

    def query_quantization_bound(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Bound on ``|score - score_float|``: ``|f| * s / 2 * sum_i |y_i|`` per pair,
        ``s`` the scale of the last 8-bit query limb."""
        _, qs = quantize_queries(q, query_limbs(self.param))
        qs = qs[-q.shape[0] :]
        y1 = np.abs(self._grid(codes)).sum(axis=1)
        f = np.abs(self._factor(codes))
        return (qs[:, None] * 0.5) * (f * y1)[None, :]
