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
optimum over fixed-seed Gaussian vectors). Every evaluation of a scale is one
O(d) pass, compiled and parallel, eight scales a call, four per pass over the vector
(:func:`_cosines8`).

- At 2-4 bits and d >= 128 (the *narrow* search) the optimum stays close to
  ``t0``: on 384-d sentence embeddings 98 % of the vectors have theirs within
  ``[0.83, 1.16] t0``. Each vector tries 8 scales spaced by the ratio 1.05
  about ``t0`` (``[0.84, 1.19] t0``); where the best is an end of the run, 8
  more past that end, at most 3 times (to ``[0.26, 3.8] t0``); then 8 scales
  between the best one's neighbours: 16 evaluations for most vectors.
- Otherwise (the *wide* search; fewer dimensions spread the optimum, more bits
  flatten the cosine): a log-spaced grid of 24 scales in ``[0.6, 1.6] t0``, two
  refinements around the best (8 scales each) — 40 evaluations — and at
  6-8 bits the 16 scales that put the smallest coordinate exactly on one of
  the 16 smallest levels (which makes ``encode(decode(codes))`` reproduce the
  codes where the flat optimum would defeat a grid).

On Gaussian vectors the wide search's cosine is within 2e-6 of the exact
optimum. At 4 bits the narrow one reaches a mean cosine 1.5e-6 below the wide
one's at d = 384 (6e-6 at d = 128), which makes the estimator's error variance
(``∝ 1 - γ²``) 0.03 % larger (0.13 % at d = 128; 3 bits: 0.004 %, 2 bits:
none), with 16 evaluations instead of 40 for most vectors;
``benchmarks/latency.py`` measures the encoding rate.

Scoring quantizes the query to 8 bits, ``q ≈ s qi`` (two 8-bit limbs against
6-8-bit codes), and computes ``f * s * (<c, qi> - (2^b - 1)/2 * sum(qi))`` with
integer dot products. The extra error of that step is bounded by
``|f| * s / 2 * sum_i |y_i|`` (:meth:`RQ.query_quantization_bound`) and
measured by ``benchmarks/query_bits.py``.
"""

from __future__ import annotations

import functools

import numba as nb
import numpy as np

from ...kernels.bitpack import pack_row, unpack
from ...kernels.scan import quantize_queries, query_limbs
from .base import GridQuantizer, RowField

_COARSE = 24
_FINE = 8
_LO, _HI = 0.6, 1.6
#: the narrow search (2-4 bits): the ratio of its coarse grid, and how many times it
#: extends past an edge
_RHO = 1.05
_EXTEND = 3
#: the narrow search needs the concentration of the optimum that many dimensions bring
_NARROW_DIMS = 128


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
def _cosines4(a, t0, t1, t2, t3, k):
    """:func:`_cosine` at the four scales ``t0 .. t3`` in one pass over ``a = |u|``
    (:func:`_cosines8`)."""
    h = np.float32(0.5)
    d0 = d1 = d2 = d3 = np.float32(0.0)
    n0 = n1 = n2 = n3 = np.float32(0.0)
    for i in range(a.shape[0]):
        ai = a[i]
        m0 = min(np.floor(t0 * ai), k) + h
        m1 = min(np.floor(t1 * ai), k) + h
        m2 = min(np.floor(t2 * ai), k) + h
        m3 = min(np.floor(t3 * ai), k) + h
        d0 += m0 * ai
        d1 += m1 * ai
        d2 += m2 * ai
        d3 += m3 * ai
        n0 += m0 * m0
        n1 += m1 * m1
        n2 += m2 * m2
        n3 += m3 * m3
    return d0 / np.sqrt(n0), d1 / np.sqrt(n1), d2 / np.sqrt(n2), d3 / np.sqrt(n3)


@nb.njit(cache=True, fastmath=True, inline="always")
def _cosines8(a, ts, top):
    """:func:`_cosine` at the eight scales ``ts``, four per pass over ``a = |u|``.

    The grid is symmetric: with ``levels = 2 k + 2``, the centred code of a
    coordinate is ``sign(u_i) (min(floor(t |u_i|), k) + 1/2)`` (``top`` is ``k``),
    the rounding of :func:`_cosine` written without its offset and its clamp at
    0; so ``<y, u> = sum m_i |u_i|`` with ``m_i = |y_i|``, and one pass needs
    six operations a coordinate and scale where :func:`_cosine` takes seven.
    Independent sums keep the vector units busy where one scale at a time waits on
    its own sums; four scales a pass keep the 8 sums and 4 scales in AVX2's 16
    vector registers (eight a pass spilled them to the stack). The result is
    :func:`_cosine`'s up to the float32 summation order (and the rounding of an
    exact tie ``t u_i + (levels - 1)/2`` integer, where ``rint`` rounds to even).
    """
    k = np.float32(top)
    c0, c1, c2, c3 = _cosines4(
        a, np.float32(ts[0]), np.float32(ts[1]), np.float32(ts[2]), np.float32(ts[3]), k
    )
    c4, c5, c6, c7 = _cosines4(
        a, np.float32(ts[4]), np.float32(ts[5]), np.float32(ts[6]), np.float32(ts[7]), k
    )
    return c0, c1, c2, c3, c4, c5, c6, c7


@nb.njit(cache=True, fastmath=True, inline="always")
def _try(a, ts, top, best, best_t):
    """Try the eight scales ``ts`` in order; the best cosine and its scale so far, and
    the position (0-7) of the scale that improved on ``best`` last (-1: none did).
    Strictly better only: the first of equal cosines stays."""
    vs = _cosines8(a, ts, top)
    at = -1
    for m in range(8):
        if vs[m] > best:
            best, best_t, at = vs[m], ts[m], m
    return best, best_t, at


@nb.njit(cache=True, fastmath=True, inline="always")
def _try8(a, t, ratio, top, best, best_t):
    """:func:`_try` at the scales ``t, t * ratio, ..., t * ratio**7``."""
    t1 = t * ratio
    t2 = t1 * ratio
    t3 = t2 * ratio
    t4 = t3 * ratio
    t5 = t4 * ratio
    t6 = t5 * ratio
    t7 = t6 * ratio
    return _try(a, (t, t1, t2, t3, t4, t5, t6, t7), top, best, best_t)


@nb.njit(cache=True)
def _search_ratios():
    """The ratio of the wide coarse grid and of the two refinements (module
    docstring)."""
    ratio = (_HI / _LO) ** (1.0 / (_COARSE - 1))
    r1 = (ratio * ratio) ** (1.0 / (_FINE + 1))
    r2 = (r1 * r1) ** (1.0 / (_FINE + 1))
    return ratio, r1, r2


@nb.njit(cache=True, fastmath=True, inline="always")
def _refine(a, best, best_t, ratio, top, passes):
    """Two refinements of eight scales each between the neighbours of ``best_t`` on a
    grid of ratio ``ratio`` (module docstring)."""
    for _ in range(passes):
        r = (ratio * ratio) ** (1.0 / (_FINE + 1))
        best, best_t, _ = _try8(a, best_t / ratio * r, r, top, best, best_t)
        ratio = r
    return best, best_t


@nb.njit(cache=True, fastmath=True)
def _best_scale(a, t0, levels, ratios):
    """The scale ``t`` of the code of the direction whose absolute coordinates are ``a``
    (module docstring: the narrow search at 2-4 bits, the wide one above)."""
    top = levels // 2 - 1
    if levels <= 16 and a.shape[0] >= _NARROW_DIMS:
        rho = _RHO
        best, best_t, at = _try8(a, t0 * rho**-3.5, rho, top, -1.0, t0)
        for _ in range(_EXTEND):
            if at == 7:  # the best is the largest scale tried: go on upwards
                best, best_t, at = _try8(a, best_t * rho, rho, top, best, best_t)
            elif at == 0:  # the smallest: go on downwards (7 is then inside)
                best, best_t, at = _try8(a, best_t * rho**-8, rho, top, best, best_t)
                at = -1 if at == 7 else at
            else:
                break
        return _refine(a, best, best_t, rho, top, 1)[1]
    ratio = ratios[0]
    best, best_t, t = -1.0, t0, t0 * _LO
    for _ in range(_COARSE // 8):
        best, best_t, _ = _try8(a, t, ratio, top, best, best_t)
        t = t * ratio**8
    best, best_t = _refine(a, best, best_t, ratio, top, 2)
    # At 6-8 bits the cosine is nearly flat over a wide range of scales and a grid
    # of scales can miss the one that maps a decoded direction y/|y| back onto y
    # (cosine 1). That scale puts the smallest coordinate on a small level k + 1/2,
    # so try t = (k + 1/2) / min|u_i| for k < 16: encode(decode(codes)) == codes.
    if levels >= 64:
        umin = np.inf
        for i in range(a.shape[0]):
            if a[i] > 0.0 and a[i] < umin:
                umin = a[i]
        if umin < np.inf:
            for k in range(0, 16, 8):
                ts = (
                    (k + 0.5) / umin, (k + 1.5) / umin, (k + 2.5) / umin, (k + 3.5) / umin,
                    (k + 4.5) / umin, (k + 5.5) / umin, (k + 6.5) / umin, (k + 7.5) / umin,
                )  # fmt: skip
                best, best_t, _ = _try(a, ts, top, best, best_t)
    return best_t


_CHUNK = 256


@nb.njit(cache=True, fastmath=True, parallel=True)
def _encode(x, bits, t0, out, factors, norms):
    n, d = x.shape
    levels = 1 << bits
    half = (levels - 1) * 0.5
    half32, top32, zero32 = np.float32(half), np.float32(levels - 1), np.float32(0.0)
    nchunks = (n + _CHUNK - 1) // _CHUNK
    ratios = _search_ratios()
    for ch in nb.prange(nchunks):
        c = np.empty(d, np.uint8)
        u = np.empty(d, np.float32)
        a = np.empty(d, np.float32)
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
                    a[i] = abs(u[i])
                t = 1.0 if bits == 1 else _best_scale(a, t0, levels, ratios)
                t32 = np.float32(t)
                dot = 0.0
                for i in range(d):  # in float32 (8 lanes; the codes are exact small integers)
                    ci = min(max(np.rint(t32 * u[i] + half32), zero32), top32)
                    c[i] = np.uint8(ci)
                    dot += np.float64(ci - half32) * np.float64(x[j, i])
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


@functools.lru_cache(maxsize=256)
def typical_scale(bits: int, d: int) -> float:
    """Median optimal grid scale for random unit vectors in R^d (fixed seed).

    A function of ``(bits, d)`` alone, remembered: it costs ~11 ms at d = 384 on one core
    (400 trial scales on 256 rows), paid otherwise by every ``rq`` codec set up.

    Examples
    --------
    >>> typical_scale(1, 384)
    1.0
    >>> t = typical_scale(4, 64)
    >>> t > 0 and typical_scale(4, 64) == t == typical_scale.__wrapped__(4, 64)
    True
    """
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
