"""``kl<b>``: adaptive transform coding (Karhunen–Loève axes, bits by reverse water-filling).

``b`` is the *average* number of bits per dimension. ``fit`` learns the mean
``mu`` and the covariance of the rows and rotates onto its eigenvectors (the
Karhunen–Loève transform), sorted by decreasing eigenvalue ``lam_j``: the
coordinates ``z = (x - mu) A`` are uncorrelated, with variances ``lam_j``.

**Bit allocation.** ``kl`` codes for scoring, so it spends its bits where
they reduce the error of inner products ``<q, x>``, not of ``x`` itself. For a
query whose coordinates have second moments ``E[q_j²]``, an error ``e_j`` on
axis ``j`` costs ``E[q_j²] e_j²`` in the score; with queries distributed like
the rows (the premise of an index built on its own data),
``E[q_j²] ∝ lam_j``. For Gaussian coordinates at high rate a ``b_j``-bit
quantizer leaves ``E[e_j²] ~ lam_j 4^(-b_j)``, so the score distortion is
``~ sum_j lam_j² 4^(-b_j)``, and the allocation that minimises it for a fixed
number of bits is the *reverse water-filling* of rate-distortion theory over
the importances ``lam_j²``: every axis is coded down to a common level of
score distortion, and the axes below it get no bits at all. Against water-filling
on ``lam_j`` (the reconstruction error) this moves bits to the leading axes
(measured while developing it: +0.7 to +2.7 points of recall@10 at 2-4 bits
per dimension on GloVe-50, MiniLM and the Python-docs set, exhaustive search,
1,000 queries each). vecpress finds the integer
version greedily (:func:`allocate_bits`): starting from ``b_j = 0``, it gives
one more bit to the axis with the largest ``lam_j² 4^(-b_j)`` (at most 8 bits
an axis, ties to the lower index) as long as the codes still fit in
``ceil(d * b / 8)`` bytes, and stops when no increment fits. Because the
eigenvalues are sorted and ties go to the lower index, the allocation is
non-increasing along the axes, so the axes of equal width form contiguous
*groups*. Each group takes ``packed_size(n_g, b_g)`` bytes (:mod:`vecpress.kernels.bitpack`,
byte-aligned); the budget check counts those packed sizes. The code size is
data-independent: ``ceil(d * b / 8)`` bytes of codes (unused bytes are zero) plus
one per-vector float.

**Where the codes lie.** A fitted ``kl`` places its codes so that none crosses a
64-bit word of the row, in the same bytes (:func:`~vecpress.kernels.wordpack.pack_words`:
each group cut into runs of whole bytes, placed among the words), which lets a scan
read each 64 bytes of a row with one load and no byte permutation
(:class:`~vecpress.kernels.wordlanes.WordPasses`; CPUs without AVX2 read the same passes
in plain code, :func:`~vecpress.kernels.wordlanes.words_dot`). The layout is stored with
the codec (the ``layout`` array, ``packing: "words"`` in its config) and checked on
opening: every coded axis once, at its width, within the row. Where no such placement
exists (a word would hold more than 32 codes: some 1- and 2-bit allocations), and in
files written before, the groups lie one after another (``packing`` absent, no
``layout``).

**Scalar quantizer.** An axis with ``b_j >= 1`` bits has a uniform midrise
quantizer with ``2^b_j`` levels and step ``step_j = sqrt(lam_j) s(b_j)``, where
``s(b)`` is the MSE-optimal step of a ``2^b``-level uniform quantizer for a
unit Gaussian (found once by golden-section search on the exact distortion;
1.596, 0.996, 0.586, 0.335 for b = 1..4). A row's codes are
``c_j = clip(rint(z_j / (tau step_j) + h_j), 0, 2^b_j - 1)`` with
``h_j = (2^b_j - 1) / 2`` and a scale ``tau`` of its own (below);
``ẑ_j = step_j (c_j - h_j)``, and ``ẑ_j = 0`` on 0-bit axes (the mean). Axes
with a zero (or numerically zero) eigenvalue never get bits (below ``1e-12``
of the largest, or below the ``~3e-16`` of the mean second moment that
rounding the rows to float32 creates).

**Per-row scale.** The steps fit the axes' distributions, not one row: a
row with a large norm clips, one with a small norm wastes levels. As in
Extended RaBitQ, each row searches its scale ``tau`` (24 log-spaced values in
[0.5, 2], then twice 8 around the best, four per pass over the row) for the
smallest score distortion after the correction below,
``sum_j lam_j (f ẑ_j - z_j)²`` over the coded axes. ``tau`` is not stored:
``f`` absorbs it, since ``f ẑ`` does not change when ``ẑ`` is scaled.
Recall@10 gains another 0.2-2.3 points (the same measurements).

**Correction.** As in RaBitQ, each row stores ``f = |z|² / <ẑ, z>``
(float16 for b <= 4, float32 above), and the estimates use ``f ẑ``:
``decode = mu + f ẑ Aᵀ`` and

    <q, x>  ≈  f <q A, ẑ> + <q, mu>.

For a query ``q = a x + n`` (any multiple of the vector plus a part
independent of it) the error ``a (f <ẑ, z> - |z|²) + <n A, f ẑ - z>`` has mean
zero, because ``f <ẑ, z> = |z|²`` exactly; without ``f`` the shrinkage of the
quantizer and the uncoded axes bias such scores downward. The price is a
larger reconstruction error than ``ẑ`` alone (by about the factor ``f``):
``kl`` is built for scoring. The midrise levels keep the sign of each
coordinate, so ``<ẑ, z> >= 0``; when it is 0 (``z = 0``, or every coded
coordinate is 0) ``f = 0`` and the row decodes to the mean. ``f`` is clipped
to the largest finite value of its field type, and so that ``|f ẑ| <= 2**70``
(a bound only a row nearly orthogonal to its own code meets; with queries of
norm at most ``2**50`` every score stays finite). ``f`` is dimensionless, so
its field is not scaled (unlike the ``rq`` fields, :mod:`vecpress.codecs.quantizers.base`);
the scale search runs at unit scale (one exact power of two), so data of any
magnitude within :data:`vecpress.MAX_NORM` code alike.

**Scoring.** ``kl`` is a grid codec
(:class:`~vecpress.codecs.quantizers.base.GridQuantizer`): with ``w = (q A) * step``
on the coded axes, ``<q A, ẑ> = <c - h, w>``, so

    score = f * <c - h, w> + <q, mu>

is the grid form with per-dimension centres ``h``. The query's ``w`` is
rounded to 8 bits once for all the axes (one limb up to ``kl5``, two above;
:func:`~vecpress.kernels.scan.query_limbs`), and ``<c, w>`` is one exact
integer dot product over the codes' runs (:attr:`KL.grid_layout`), so flat and IVF
search run the same fused integer scan as ``rq``: for a few queries the codes are
read where they lie, picked out of the row's 64-bit words into byte lanes
(:mod:`vecpress.kernels.wordlanes`, on CPUs with AVX-512 VBMI); for many, each block
of rows is unpacked to bytes once for all of them.
Reverse water-filling makes ``step_j`` nearly equal across the coded axes
(``lam_j 4^(-b_j)`` is levelled), so one 8-bit scale fits all of ``w``.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numba as nb
import numpy as np

from ...kernels.bitpack import pack_row, packed_size, unpack
from ...kernels.scan import check_layout
from ...kernels.wordpack import pack_words
from .base import GridQuantizer, RowField

#: widest code of one axis
MAX_BITS = 8
#: eigenvalues below this fraction of the largest are treated as zero (no bits)
_RELATIVE_ZERO = 1e-12
#: ... or below this fraction of the mean second moment (float32 rounding noise ~3e-16)
_FLOAT32_NOISE = 1e-14
#: the largest norm of a row's scaled code ``f ẑ`` (keeps scores finite, see encode)
_MAX_CODED_NORM = 2.0**70
#: rows per chunk when fitting and encoding (bounded memory for any n)
_CHUNK = 16384
#: rows per parallel task of the encoding kernels
_ROWS = 256

_STEP_CACHE: dict[int, float] = {}
#: per-row scale search: a coarse log grid over [_TAU_LO, _TAU_HI], then refinements
_TAU_LO, _TAU_HI = 0.5, 2.0
_TAU_COARSE, _TAU_FINE, _TAU_ROUNDS = 24, 8, 2


def _gaussian_uniform_mse(step: float, levels: int) -> float:
    """Exact MSE of a ``levels``-level midrise uniform quantizer of step ``step`` for
    a unit Gaussian (closed form over the cells)."""
    half = (levels - 1) / 2.0
    inv_sqrt2 = 1.0 / math.sqrt(2.0)
    norm = 1.0 / math.sqrt(2.0 * math.pi)

    def cdf(t: float) -> float:
        return 0.5 * math.erfc(-t * inv_sqrt2)

    def pdf(t: float) -> float:
        return norm * math.exp(-0.5 * t * t) if math.isfinite(t) else 0.0

    def tpdf(t: float) -> float:
        return t * pdf(t) if math.isfinite(t) else 0.0

    total = 0.0
    for k in range(levels):
        y = step * (k - half)
        a = -math.inf if k == 0 else step * (k - half - 0.5)
        b = math.inf if k == levels - 1 else step * (k - half + 0.5)
        # ∫_a^b (x - y)² φ(x) dx
        total += (
            (1.0 + y * y) * (cdf(b) - cdf(a)) - (tpdf(b) - tpdf(a)) + 2.0 * y * (pdf(b) - pdf(a))
        )
    return total


def gaussian_step(bits: int) -> float:
    """MSE-optimal step of a ``2**bits``-level uniform (midrise) quantizer for N(0, 1).

    Computed once per ``bits`` by golden-section search on the exact distortion
    and cached.

    Examples
    --------
    >>> round(gaussian_step(1), 3), round(gaussian_step(2), 3), round(gaussian_step(4), 3)
    (1.596, 0.996, 0.335)
    """
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in [1, {MAX_BITS}], found {bits}")
    if bits not in _STEP_CACHE:
        levels = 1 << bits
        lo, hi = 1e-3, 4.0
        g = (math.sqrt(5.0) - 1.0) / 2.0
        c, d = hi - g * (hi - lo), lo + g * (hi - lo)
        fc, fd = _gaussian_uniform_mse(c, levels), _gaussian_uniform_mse(d, levels)
        for _ in range(80):
            if fc < fd:
                hi, d, fd = d, c, fc
                c = hi - g * (hi - lo)
                fc = _gaussian_uniform_mse(c, levels)
            else:
                lo, c, fc = c, d, fd
                d = lo + g * (hi - lo)
                fd = _gaussian_uniform_mse(d, levels)
        _STEP_CACHE[bits] = 0.5 * (lo + hi)
    return _STEP_CACHE[bits]


def groups_of(bits: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """The byte layout of an allocation: ``(start, stop, width, offset, nbytes)`` for
    every run of equal, non-zero width, packed one after the other.

    Examples
    --------
    >>> groups_of(np.array([3, 3, 2, 2, 2, 0], np.uint8))
    [(0, 2, 3, 0, 1), (2, 5, 2, 1, 1)]
    """
    out = []
    offset = 0
    start = 0
    d = len(bits)
    while start < d:
        stop = start + 1
        while stop < d and bits[stop] == bits[start]:
            stop += 1
        width = int(bits[start])
        if width:
            nbytes = packed_size(stop - start, width)
            out.append((start, stop, width, offset, nbytes))
            offset += nbytes
        start = stop
    return out


def allocate_bits(lam: np.ndarray, budget: int) -> np.ndarray:
    """Greedy integer reverse water-filling of ``budget`` bytes over sorted variances.

    ``lam`` must be non-increasing. Returns ``uint8[d]`` widths, non-increasing,
    at most 8, zero where ``lam <= 0``, whose groups (:func:`groups_of`) take at
    most ``budget`` bytes. Each step gives one more bit to the axis with the
    largest ``lam_j 4^(-b_j)`` among the increments that fit (ties to the lower
    index); only the first axis of a group can be the best, so the allocation
    stays non-increasing and is tracked as a count of axes per width.

    Examples
    --------
    >>> allocate_bits(np.geomspace(64, 1, 16), 4).tolist()
    [3, 3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]

    Groups are byte-aligned, so one byte holds a single group: the bits left in
    it are free and go to the best axis.

    >>> allocate_bits(np.array([16.0, 4.0, 1.0, 0.0]), 1).tolist()
    [8, 0, 0, 0]
    """
    lam = np.asarray(lam, np.float64)
    d = lam.shape[0]
    usable = int((lam > 0).sum())
    counts = [0] * (MAX_BITS + 1)  # axes per width; widths decrease along the axes
    counts[0] = d
    size = 0
    while True:
        best = None
        pos = 0  # index of the first axis of width w
        for w in range(MAX_BITS, -1, -1):
            n_w = counts[w]
            if n_w and w < MAX_BITS and pos < usable:
                n_up = counts[w + 1]
                new = (
                    size
                    - packed_size(n_w, w)
                    + packed_size(n_w - 1, w)
                    - packed_size(n_up, w + 1)
                    + packed_size(n_up + 1, w + 1)
                )
                prio = lam[pos] * 4.0 ** (-w)
                if new <= budget and (best is None or prio > best[0]):
                    best = (prio, w, new)
            pos += n_w
        if best is None:
            break
        _, w, size = best
        counts[w] -= 1
        counts[w + 1] += 1
    widths = np.arange(MAX_BITS, -1, -1)
    return np.repeat(widths, counts[::-1]).astype(np.uint8)


def layout_rows(groups: list, k: int, row_bytes: int) -> np.ndarray:
    """The kernels' layout (:func:`~vecpress.kernels.scan.check_layout`) of the groups of
    :func:`groups_of` over ``k`` coded axes in rows of ``row_bytes`` bytes, validated.

    Examples
    --------
    >>> layout_rows(groups_of(np.array([3, 3, 2, 2, 2, 0], np.uint8)), 5, 2).tolist()
    [[0, 2, 3, 0], [2, 3, 2, 1]]
    """
    rows = [(g0, g1 - g0, width, off) for g0, g1, width, off, _ in groups]
    return check_layout(np.array(rows, np.int64).reshape(-1, 4), max(k, 1), row_bytes)


def _checked_cover(layout: np.ndarray, bits: np.ndarray, row_bytes: int) -> np.ndarray:
    """``layout`` validated (:func:`~vecpress.kernels.scan.check_layout`) as the runs of
    codes of exactly the dimensions ``0..k-1``, each of its width ``bits``
    (uint8[k]), within ``row_bytes`` bytes: a stored layout that lost a run, or gave one
    another width, is refused."""
    k = len(bits)
    if k == 0:
        raise ValueError("kl with no coded axis stores no code layout, found one")
    lay = check_layout(layout, k, row_bytes)
    width = np.zeros(k, np.int64)
    for first, count, w, _ in lay.tolist():
        width[first : first + count] = w
    if not np.array_equal(width, bits.astype(np.int64)):
        raise ValueError(
            f"kl's stored code layout does not give each of its {k} coded axes its width "
            f"once (found widths {np.bincount(width, minlength=9).tolist()} by width 0..8, "
            f"expected {np.bincount(bits, minlength=9).tolist()})"
        )
    return lay


def principal_axes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean, principal axes and variances of rows ``x`` (``n >= 1``).

    Returns ``(mean float64[d], axes float32[d, d], lam float64[d])``: the columns of
    ``axes`` are the covariance's eigenvectors by decreasing eigenvalue ``lam``, each
    signed so that its largest component is positive (a reproducible state), and
    eigenvalues that are numerically zero (module docstring) are set to 0. Sums run
    over chunks of rows in float64, so memory stays bounded for any ``n``.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((500, 3)) * [3.0, 1.0, 0.1]
    >>> mean, axes, lam = principal_axes(x.astype(np.float32))
    >>> np.round(lam, 2).tolist(), axes.shape
    ([8.63, 0.91, 0.01], (3, 3))
    """
    n, d = x.shape
    total = np.zeros(d)
    for s in range(0, n, _CHUNK):
        total += x[s : s + _CHUNK].sum(axis=0, dtype=np.float64)
    mean = total / n
    cov = np.zeros((d, d))
    for s in range(0, n, _CHUNK):
        xc = x[s : s + _CHUNK].astype(np.float64) - mean
        cov += xc.T @ xc
    cov /= n
    lam, vecs = np.linalg.eigh(cov)
    order = np.argsort(-lam, kind="stable")
    lam, vecs = lam[order], vecs[:, order]
    big = np.argmax(np.abs(vecs), axis=0)
    vecs *= np.where(vecs[big, np.arange(d)] < 0, -1.0, 1.0)[None, :]
    # numerically zero: eigh's round-off (relative to the largest eigenvalue) or
    # below the variance that rounding the rows to float32 alone creates
    second = (np.trace(cov) + mean @ mean) / max(d, 1)
    floor = max(lam[0] * _RELATIVE_ZERO if d else 0.0, second * _FLOAT32_NOISE, 0.0)
    lam = np.where(lam > floor, lam, 0.0)
    return mean, np.ascontiguousarray(vecs, np.float32), lam


class KL(GridQuantizer):
    """Adaptive transform coding: ``b`` bits per dimension on average, spread over the
    principal axes by reverse water-filling, plus one correction factor per row.

    See the module docstring for the math. Fitted state: ``mean_`` (float64[d]),
    ``axes_`` (float32[d, d], columns = principal directions by decreasing
    variance), ``lam_`` (float64[d], their variances), ``bits_`` (uint8[d]) and
    ``steps_`` (float64[d], 0 on 0-bit axes).

    Examples
    --------
    >>> import numpy as np
    >>> from vecpress import Codec
    >>> rng = np.random.default_rng(0)
    >>> x = (rng.standard_normal((2000, 32)) * np.geomspace(4, 0.1, 32)).astype(np.float32)
    >>> Codec.code_size_of("kl2", 32)
    10
    >>> codec = Codec.from_spec("kl2").fit(x)
    >>> bits = codec.quantizer.bits_
    >>> int(bits[0]) > 2 > int(bits[-1]), bool((np.diff(bits.astype(int)) <= 0).all())
    (True, True)
    >>> codes = codec.encode(x)
    >>> codes.shape
    (2000, 10)
    >>> s = codec.score(x[:3], codes)
    >>> err = np.abs(s - x[:3] @ codec.decode(codes).T).max()  # the query's 8-bit rounding
    >>> bool(err < 0.05 * np.abs(s).max())
    True
    """

    name = "kl"
    needs_data = True
    #: the correction factor that makes scores unbiased (dimensionless: not scaled)
    row_fields = (RowField("f", "correction factor f", scaled=False),)

    def __init__(self, param: int | None = None) -> None:
        super().__init__(param)
        self.mean_: np.ndarray | None = None
        self.axes_: np.ndarray | None = None
        self.lam_: np.ndarray | None = None
        self.bits_: np.ndarray | None = None
        self.steps_: np.ndarray | None = None
        #: where the codes lie in a row (int64[G, 4] runs, :func:`pack_words`); None:
        #: each group after the one before (:func:`layout_rows`, files written before)
        self.layout_: np.ndarray | None = None

    # -- learning -----------------------------------------------------------------
    def fit(
        self, x: np.ndarray, *, weights: np.ndarray | None = None, queries: np.ndarray | None = None
    ) -> None:
        """Learn the mean, the principal axes and the bit allocation from rows ``x``."""
        n, d = x.shape
        if n == 0:
            raise ValueError(f"{self.spec} needs at least one training row")
        if self.d is None:
            self.d = d
        elif d != self.d:
            raise ValueError(f"{self.spec}: rows have d={d}, expected {self.d}")
        mean, vecs, lam = principal_axes(x)
        self.mean_ = mean
        self.axes_ = vecs
        self.lam_ = lam
        # score distortion sum_j lam_j * lam_j 4^(-b_j): water-fill over lam_j² (module doc)
        self.bits_ = allocate_bits(lam * lam, self._nbytes)
        self.steps_ = _steps(lam, self.bits_)
        k = int((self.bits_ > 0).sum())
        self.layout_ = pack_words(self.bits_[:k], self._nbytes) if k else None
        self._layout()
        self.fitted = True

    def _layout(self) -> None:
        """Derived state: groups, the coded prefix and float32 copies for the kernels."""
        self.groups_ = groups_of(self.bits_)
        self._coded = self.groups_[-1][1] if self.groups_ else 0
        k = self._coded
        levels = (1 << self.bits_[:k].astype(np.int64)).astype(np.float32)
        self._half = (levels - 1) / 2
        self._top = levels - 1
        self._step32 = self.steps_[:k].astype(np.float32)
        self._mean32 = self.mean_.astype(np.float32)
        self._axes_coded = np.ascontiguousarray(self.axes_[:, :k])
        self._axes64 = self.axes_.astype(np.float64)
        # 2**_unit_exp ~ the largest axis's standard deviation (encode's unit scale)
        self._unit_exp = math.frexp(math.sqrt(self.lam_[0]))[1] if k else 0
        # what the kernels read without bounds checks: validated once more here
        if self.layout_ is None:
            self._layout_rows = layout_rows(self.groups_, k, self._nbytes)
        else:
            self._layout_rows = _checked_cover(self.layout_, self.bits_[:k], self._nbytes)

    # -- state ----------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            "mean": self.mean_,
            "axes": self.axes_,
            "lam": self.lam_,
            "bits": self.bits_,
            "steps": self.steps_,
        }
        if self.layout_ is not None:
            out["layout"] = self.layout_
        return out

    def config(self) -> dict:
        cfg = super().config()
        if self.layout_ is not None:  # absent: the groups one after another (files before)
            cfg["packing"] = "words"
        return cfg

    def restore(self, config: dict, arrays: dict[str, np.ndarray]) -> None:
        packing = config.get("packing", "groups")
        if packing not in ("groups", "words"):
            raise ValueError(f"kl code packing must be 'groups' or 'words', found {packing!r}")
        if (packing == "words") != ("layout" in arrays):
            raise ValueError(
                f"kl codes packed as {packing!r} "
                + (
                    "need a stored layout, found none"
                    if packing == "words"
                    else "take no stored layout"
                )
            )
        super().restore(config, arrays)

    def setup_restored(self, arrays: dict[str, np.ndarray]) -> None:
        from ..transforms import _checked

        d = self.d
        mean = _checked(arrays, "mean", (d,), np.float64)
        axes = _checked(arrays, "axes", (d, d), np.float32)
        lam = _checked(arrays, "lam", (d,), np.float64)
        bits = _checked(arrays, "bits", (d,), np.uint8)
        steps = _checked(arrays, "steps", (d,), np.float64)
        if not np.allclose(axes.T @ axes, np.eye(d), atol=1e-3):
            raise ValueError("kl axes are not orthonormal")
        if (lam < 0).any() or (np.diff(lam) > 0).any():
            raise ValueError("kl variances must be non-negative and non-increasing")
        if int(bits.max(initial=0)) > MAX_BITS:
            raise ValueError(f"kl bits per axis must be at most {MAX_BITS}, found {bits.max()}")
        if (np.diff(bits.astype(np.int64)) > 0).any():
            raise ValueError("kl bits per axis must be non-increasing")
        used = sum(g[4] for g in groups_of(bits))
        if used > self._nbytes:
            raise ValueError(
                f"kl codes take {used} bytes, more than the {self._nbytes} of {self.spec} at d={d}"
            )
        coded = bits > 0
        if (steps[coded] <= 0).any() or (steps[~coded] != 0).any():
            raise ValueError("kl steps must be positive on coded axes and 0 on the others")
        layout = arrays.get("layout")  # packing "words" (restore); absent from older files
        if layout is not None:
            if layout.dtype != np.int64 or layout.ndim != 2 or layout.shape[1] != 4:
                raise ValueError(
                    f"state array 'layout' should be int64[G, 4], found {layout.dtype}"
                    f"{list(layout.shape)}"
                )
            layout = np.array(layout)
        self.mean_, self.axes_, self.lam_, self.bits_, self.steps_ = mean, axes, lam, bits, steps
        self.layout_ = layout
        self._layout()

    # -- coding -----------------------------------------------------------------------
    def encode(self, x: np.ndarray) -> np.ndarray:
        self.check_ready()
        n = x.shape[0]
        out = np.zeros((n, self.code_size), np.uint8)
        dt = self.field_dtype
        fmax = float(np.finfo(dt).max)
        k = self._coded
        # The scale search runs in float32 on coordinates, steps and weights brought to
        # unit scale by one power of two (exact, so the codes are those of the unscaled
        # search): at a data scale of 1e14, lam * y² would overflow float32, at 1e-20
        # the products would underflow to 0.
        u = self._unit_exp
        search = search_tables(self.steps_[:k], self.lam_[:k], self._half, self._top, u)
        f = np.empty(n, np.float64)
        for s in range(0, n, _CHUNK):
            # in float64, so that a row's coordinates do not depend on the rows coded
            # with it (BLAS blocking), nor then its choice of scale
            rows = x[s : s + _CHUNK]
            centred = np.empty(rows.shape, np.float64)  # numpy's pages: see _centre
            _centre(rows, self.mean_, centred)
            z64 = centred @ self._axes64
            _encode_block(
                z64, k, math.ldexp(1.0, -u), search, self._step32, self._layout_rows,
                out[s : s + _CHUNK], f[s : s + _CHUNK],
            )  # fmt: skip
        self.put_fields(out, f=np.minimum(f, fmax))
        return out

    def _factor(self, codes: np.ndarray) -> np.ndarray:
        return self.get_fields(codes, "f")[0]

    def unpacked(self, codes: np.ndarray) -> np.ndarray:
        """The grid codes of the coded axes of code rows ``codes``, uint8[n, k], read from
        where :attr:`grid_layout` places them."""
        out = np.empty((codes.shape[0], self._coded), np.uint8)
        for g0, count, width, off in self._layout_rows.tolist():
            part = np.ascontiguousarray(codes[:, off : off + packed_size(count, width)])
            out[:, g0 : g0 + count] = unpack(part, width, count)
        return out

    def _coded_coordinates(self, codes: np.ndarray) -> np.ndarray:
        """``ẑ`` on the coded axes: float32[n, k]."""
        return (self.unpacked(codes).astype(np.float32) - self._half) * self._step32

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """``mean + f ẑ Aᵀ`` (float32)."""
        self.check_ready()
        zh = self._coded_coordinates(codes) * self._factor(codes)[:, None]
        return (zh @ self._axes_coded.T + self._mean32).astype(np.float32, copy=False)

    # -- scoring (the grid form) ------------------------------------------------------
    @property
    def grid_dims(self) -> int:
        return self._coded

    @property
    def grid_layout(self) -> np.ndarray:
        return self._layout_rows

    def grid_queries(self, q: np.ndarray):
        """``w = (q A) * step`` on the coded axes, centres ``h``, and ``t = <q, mean>``."""
        self.check_ready()
        w = np.ascontiguousarray((q @ self._axes_coded) * self._step32, np.float32)
        zq = np.zeros(q.shape[0], np.float32)
        return w, self._half, zq, (q @ self.mean_).astype(np.float32)

    def grid_row_fields(self):
        """``a = f`` (the correction factor), ``b = 1`` (the mean term is not scaled)."""
        return self.field_at("f"), 1.0


@nb.njit(cache=True, fastmath=True, inline="always")
def _row_codes(z, inv, half, top, tau, out):
    """Codes of one row at scale ``tau`` into ``out``."""
    r = np.float32(1.0 / tau)
    for j in range(z.shape[0]):
        out[j] = np.uint8(min(max(np.rint(z[j] * inv[j] * r + half[j]), np.float32(0.0)), top[j]))


#: what the scale search reads per coded axis (float32[k] each, at unit scale): ``inv``
#: = 1 / step, the centres ``half`` and tops ``top`` of the codes, ``step``, and the
#: weighted products ``wss`` = weight * step² and ``ws`` = weight * step
_SearchTables = namedtuple("_SearchTables", "inv half top step wss ws")


def search_tables(steps, lam, half, top, u: int) -> _SearchTables:
    """The scale search's tables of the coded axes (steps ``steps``, variances ``lam``,
    centres ``half``, tops ``top``) at the unit scale ``2**u`` (:meth:`KL.encode`)."""
    inv = np.ldexp(1.0 / steps, u).astype(np.float32)
    step = np.ldexp(steps, -u).astype(np.float32)
    weight = np.ldexp(lam, -2 * u).astype(np.float32)
    ws = weight * step
    return _SearchTables(inv, half, top, step, ws * step, ws)


@nb.njit(cache=True, fastmath=True, inline="always")
def _objective(n2, dot, wyy, wyz):
    """``sum_j weight_j (f ẑ_j - z_j)²`` up to its constant, ``f = n2 / <ẑ, z>``;
    ``inf`` when ``<ẑ, z> <= 0``."""
    if not dot > 0:
        return np.inf
    f = n2 / dot
    return f * f * wyy - 2.0 * f * wyz


@nb.njit(cache=True, fastmath=True, inline="always")
def _distortions4(zi, za, zw, tb, n2, taus):
    """The distortion (:func:`_objective`) of the codes at four scales ``taus``, in one
    pass over the row.

    ``zi = z * inv``, ``za = z * step`` and ``zw = z * weight * step`` are the row's
    own products; with ``e_j = c_j - h_j``, ``ẑ_j = e_j step_j`` and the sums are
    ``<ẑ, z> = sum e za``, ``sum weight ẑ² = sum e² wss`` and
    ``sum weight ẑ z = sum e zw``. Twelve independent sums keep the vector units
    busy where one scale at a time waits on its own.
    """
    zero = np.float32(0.0)
    r0 = np.float32(1.0 / taus[0])
    r1 = np.float32(1.0 / taus[1])
    r2 = np.float32(1.0 / taus[2])
    r3 = np.float32(1.0 / taus[3])
    d0 = d1 = d2 = d3 = np.float32(0.0)
    p0 = p1 = p2 = p3 = np.float32(0.0)
    q0 = q1 = q2 = q3 = np.float32(0.0)
    for j in range(zi.shape[0]):
        x = zi[j]
        h = tb.half[j]
        top = tb.top[j]
        e0 = min(max(np.rint(x * r0 + h), zero), top) - h
        e1 = min(max(np.rint(x * r1 + h), zero), top) - h
        e2 = min(max(np.rint(x * r2 + h), zero), top) - h
        e3 = min(max(np.rint(x * r3 + h), zero), top) - h
        a = za[j]
        w = zw[j]
        b = tb.wss[j]
        d0 += e0 * a
        d1 += e1 * a
        d2 += e2 * a
        d3 += e3 * a
        p0 += e0 * e0 * b
        p1 += e1 * e1 * b
        p2 += e2 * e2 * b
        p3 += e3 * e3 * b
        q0 += e0 * w
        q1 += e1 * w
        q2 += e2 * w
        q3 += e3 * w
    return (
        _objective(n2, d0, p0, q0), _objective(n2, d1, p1, q1),
        _objective(n2, d2, p2, q2), _objective(n2, d3, p3, q3),
    )  # fmt: skip


@nb.njit(cache=True, fastmath=True, inline="always")
def _try_scales(zi, za, zw, tb, n2, t, ratio, count, best, best_t):
    """The best of ``(best, best_t)`` and the ``count`` scales ``t, t * ratio, ...``
    (``count`` a multiple of 4), in that order, four per pass over the row."""
    for _ in range(count // 4):
        t1 = t * ratio
        t2 = t1 * ratio
        t3 = t2 * ratio
        taus = (t, t1, t2, t3)
        vs = _distortions4(zi, za, zw, tb, n2, taus)
        for m in range(4):
            if vs[m] < best:
                best, best_t = vs[m], taus[m]
        t = t3 * ratio
    return best, best_t


@nb.njit(cache=True, fastmath=True, inline="always")
def _best_tau(zi, za, zw, tb, n2):
    """The row's scale ``tau`` (module doc, "Per-row scale"): a coarse log grid, then
    rounds of finer grids around the best so far (strictly better only: the first
    of equal distortions stays)."""
    ratio = (_TAU_HI / _TAU_LO) ** (1.0 / (_TAU_COARSE - 1))
    best, best_t = _try_scales(zi, za, zw, tb, n2, _TAU_LO, ratio, _TAU_COARSE, np.inf, 1.0)
    span = ratio
    for _ in range(_TAU_ROUNDS):
        r = (span * span) ** (1.0 / (_TAU_FINE + 1))
        t = best_t / span * r
        best, best_t = _try_scales(zi, za, zw, tb, n2, t, r, _TAU_FINE, best, best_t)
        span = r
    return best_t


@nb.njit(cache=True, fastmath=True, inline="always")
def _correction(z, k, c, half, step32, n2):
    """``f = |z|² / <ẑ, z>`` (0 when ``<ẑ, z> <= 0``), at most ``_MAX_CODED_NORM / |ẑ|``;
    ``z`` the row's float64 coordinates, ``c`` its codes on the ``k`` coded axes."""
    dot = 0.0
    zz = 0.0
    for i in range(k):
        zh = (np.float32(c[i]) - half[i]) * step32[i]
        dot += np.float64(zh) * np.float64(np.float32(z[i]))
        zz += np.float64(zh) * zh
    f = n2 / dot if dot > 0 else 0.0
    if zz > 0:
        f = min(f, _MAX_CODED_NORM / np.sqrt(zz))
    return f


@nb.njit(cache=True, fastmath=True, inline="always")
def encode_row(z, k, unit, tb, step32, layout, out, zu, zi, za, zw, c):
    """Code one row: ``z`` its float64 coordinates (every axis; the first ``k`` coded),
    its codes packed into the code row ``out`` as ``layout`` says; returns its correction
    factor. ``zu``, ``zi``, ``za``, ``zw`` (float32[k]) and ``c`` (uint8[k]) are scratch."""
    n2 = 0.0
    for i in range(z.shape[0]):
        n2 += z[i] * z[i]
    for i in range(k):
        zu[i] = np.float32(z[i] * unit)
        zi[i] = zu[i] * tb.inv[i]
        za[i] = zu[i] * tb.step[i]
        zw[i] = zu[i] * tb.ws[i]
    tau = _best_tau(zi, za, zw, tb, n2 * (unit * unit))
    _row_codes(zu, tb.inv, tb.half, tb.top, tau, c)
    for g in range(layout.shape[0]):
        g0, count, width, offset = layout[g]
        pack_row(c[g0 : g0 + count], width, out, offset)
    return _correction(z, k, c, tb.half, step32, n2)


@nb.njit(cache=True, fastmath=True, parallel=True)
def _encode_block(z64, k, unit, tb, step32, layout, out, f):
    """Codes and correction factors of the rows ``z64`` (float64 coordinates on the
    axes) into the code rows ``out`` and ``f``; ``unit`` is the power of two of the
    unit scale (KL.encode)."""
    n = z64.shape[0]
    for ch in nb.prange((n + _ROWS - 1) // _ROWS):
        zu = np.empty(k, np.float32)
        zi = np.empty(k, np.float32)
        za = np.empty(k, np.float32)
        zw = np.empty(k, np.float32)
        c = np.empty(k, np.uint8)
        for j in range(ch * _ROWS, min(n, (ch + 1) * _ROWS)):
            f[j] = encode_row(z64[j], k, unit, tb, step32, layout, out[j], zu, zi, za, zw, c)


@nb.njit(cache=True, parallel=True)
def _centre(x, mean, out):
    """``out = float64(x) - mean``, filling an array numpy allocated: numpy asks for
    huge pages on large arrays, where a kernel's own array takes a page fault every
    4 KB."""
    n, d = x.shape
    for ch in nb.prange((n + _ROWS - 1) // _ROWS):
        for j in range(ch * _ROWS, min(n, (ch + 1) * _ROWS)):
            for i in range(d):
                out[j, i] = np.float64(x[j, i]) - mean[i]


def _steps(lam: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """``sqrt(lam_j) s(b_j)`` on coded axes, 0 elsewhere (float64[d])."""
    steps = np.zeros(lam.shape[0])
    for j in np.flatnonzero(bits):
        steps[j] = math.sqrt(lam[j]) * gaussian_step(int(bits[j]))
    return steps
