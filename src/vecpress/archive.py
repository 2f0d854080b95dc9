"""Archive codec: vectors compressed for storage and transfer near the Shannon bound.

The search codes are fixed-rate (every row the same width, so a scan can jump to
it). Storage and transfer have no such need, and the limit there is the
rate–distortion bound. For a Gaussian source with covariance eigenvalues ``λ``,
the bits a vector needs for a mean squared error ``D`` per coordinate are
(reverse water-filling)::

    R(D) = Σ_i max(0, ½ log2(λ_i / θ)),   θ such that Σ_i min(θ, λ_i) = d · D

and the Gaussian is the hardest source of a given covariance, so real embeddings
can need fewer. :func:`gaussian_rate` computes it (per dimension).

**How a blob is made** (:func:`compress`):

1. **Transform**: the rows' mean ``μ`` and covariance, and its eigenvectors ``V``
   (the principal basis, float32); coefficients ``y = (x - μ) V``.
2. **Quantize** every coefficient with one uniform step ``Δ``, ``q ≈ y / Δ`` rounded
   (with a small dead zone on the low-rate axes, :func:`_quantize`); ``q Δ`` is
   what decodes. Reverse water-filling gives every coded axis the same distortion
   ``θ``, and one step gives every axis ``≈ Δ²/12`` (axes whose variance is below
   that round to 0 and cost no bits, as the water-filling drops them; the basis
   vectors of the trailing all-zero axes are not stored). ``Δ`` is found by
   bisection, on a sample of rows and then on all of them: the largest step whose
   measured error of the decompressed rows (``q Δ Vᵀ + μ`` in float32, as
   :func:`decompress` computes it) stays within ``mse``; or the smallest whose
   coded size stays within ``bits_per_dim``.
3. **Entropy-code** each coefficient's symbols with an adaptive model fitted to
   them: the histogram of that coefficient (stored in the blob) drives an ANS
   coder (``constriction``, ``pip install 'vecpress[archive]'``), so each axis
   costs its empirical entropy, plus 32 bits per histogram bin for the table.

Uniform scalar quantization with ideal entropy coding stays within ~0.25 bits
per coded coefficient of ``R(D)`` at high rate (the space-filling loss of a
scalar quantizer, 1.53 dB) and closer at low rate.

**The blob** is the project's container (magic, format version, JSON config,
checksummed raw arrays; no pickle): the config holds the rows' count and
dimension, ``Δ``, and the blob's own rate (``bits_per_dim``, all its bytes
counted) and distortion (``mse``, measured when it was made); :func:`describe`
reads them without decoding.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> x = (rng.standard_normal((2000, 16)) * np.linspace(2, 0.1, 16)).astype(np.float32)
>>> blob = compress(x, mse=1e-3)
>>> y = decompress(blob)
>>> y.dtype, y.shape, bool(((y - x) ** 2).mean() <= 1e-3)
(dtype('float32'), (2000, 16), True)
>>> info = describe(blob)
>>> info["mse"] <= 1e-3, round(info["bits_per_dim"], 1)
(True, 6.5)
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._validation import as_vectors
from .container import pack, unpack
from .errors import FormatError

__all__ = ["compress", "decompress", "describe", "gaussian_rate"]

FORMAT_NAME = "vecpress-archive"
FORMAT_VERSION = 1
#: rows used to search the step before the search on all rows
_SEARCH_ROWS = 20_000
#: rows reconstructed at a time (bounds the float64 work arrays)
_CHUNK = 32_768
#: the most histogram bins a coefficient may have (a smaller ``mse`` is refused)
MAX_LEVELS = 1 << 20
#: how far past the midpoint between two levels a value must be to take the upper one
ROUNDING = 0.1
#: the error target is met with this relative margin (BLAS may round a row's
#: reconstruction differently in another batch shape or on another machine)
_MARGIN = 1e-5


def _constriction():
    try:
        import constriction
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "the archive codec needs constriction: pip install 'vecpress[archive]'"
        ) from e
    return constriction


def gaussian_rate(eigenvalues, mse: float) -> float:
    """Bits per dimension a Gaussian source of covariance ``eigenvalues`` needs for a
    mean squared error ``mse`` per coordinate (reverse water-filling, module
    docstring).

    Examples
    --------
    >>> gaussian_rate([1.0], 0.25)  # one axis: ½ log2(1 / 0.25)
    1.0
    >>> round(gaussian_rate([4.0, 1.0, 0.01], 0.5), 4)  # θ = 0.745: the last axis dropped
    0.4749
    """
    lam = np.sort(np.maximum(np.asarray(eigenvalues, np.float64), 0.0))[::-1]
    d = lam.size
    if d == 0 or not (isinstance(mse, (int, float)) and math.isfinite(mse) and mse > 0):
        raise ValueError(f"gaussian_rate needs eigenvalues and an mse > 0, found {mse!r}")
    total = d * float(mse)
    if total >= lam.sum():
        return 0.0
    # θ: Σ min(θ, λ) = total; with the k largest axes coded, θ = (total - Σ rest) / k
    for k in range(1, d + 1):
        theta = (total - lam[k:].sum()) / k
        if theta <= lam[k - 1] and (k == d or theta >= lam[k]):
            break
    coded = lam[lam > theta]
    return float(0.5 * np.log2(coded / theta).sum() / d)


def compress(x, *, mse: float | None = None, bits_per_dim: float | None = None) -> bytes:
    """Compress the rows of ``x`` into a blob (module docstring).

    Parameters
    ----------
    x : array_like, float[n, d]
        The vectors (any float dtype; finite, ``n >= 1``).
    mse : float, optional
        The mean over all entries of ``(x̂ - x)²`` the blob may not exceed.
    bits_per_dim : float, optional
        The size the blob may not exceed, in bits per vector entry (all its bytes
        counted). Give exactly one of ``mse`` and ``bits_per_dim``.

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        Bad rows, neither or both targets, a target that is not a positive finite
        number, an ``mse`` so small that an axis would need more than
        :data:`MAX_LEVELS` levels, a ``bits_per_dim`` too small for the blob's tables.
    """
    x = as_vectors(x, "vectors", allow_empty=False)
    _check_target(mse, bits_per_dim)
    n, d = x.shape
    mean64 = x.mean(axis=0, dtype=np.float64)
    cov = np.zeros((d, d), np.float64)
    for s in range(0, n, _CHUNK):  # float32 products, summed in float64 chunk by chunk
        part = x[s : s + _CHUNK] - mean64.astype(np.float32)
        cov += part.T @ part
    lam, vecs = np.linalg.eigh(cov / n)
    order = np.argsort(lam)[::-1]
    basis = np.ascontiguousarray(vecs[:, order], np.float32)
    sigma = np.sqrt(np.maximum(lam[order], 0.0)).astype(np.float32)
    mean = mean64.astype(np.float32)
    y = (x - mean) @ basis  # float32 coefficients
    sample = np.linspace(0, n - 1, min(n, _SEARCH_ROWS)).astype(np.int64)
    if mse is not None:
        step, q, error = _step_for_mse(x, y, basis, mean, sigma, float(mse) * (1 - _MARGIN), sample)
        return _encode(q, step, basis, mean, error)
    step = _step_for_rate(y, sigma, float(bits_per_dim), sample, n, d)
    while True:
        q = _quantize(y, step, sigma)
        blob = _encode(q, step, basis, mean, _mse(x, q, step, basis, mean))
        if 8 * len(blob) <= bits_per_dim * n * d:
            return blob
        if _coded_axes(q) == 0:  # nothing left to drop: the mean and the header alone
            raise ValueError(
                f"bits_per_dim={bits_per_dim!r} is too small for {n} x {d} vectors: the "
                f"smallest archive of them (their mean) takes {8 * len(blob) / (n * d):.4g}"
            )
        step *= 1.01


def _check_target(mse, bits_per_dim) -> None:
    if (mse is None) == (bits_per_dim is None):
        raise ValueError("give exactly one of mse= and bits_per_dim=")
    name, value = ("mse", mse) if mse is not None else ("bits_per_dim", bits_per_dim)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name} must be a number, found {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, found {value!r}")
    if name == "bits_per_dim" and value > 32:
        raise ValueError(f"bits_per_dim must be at most 32 (float32's width), found {value!r}")


def _quantize(y: np.ndarray, step: float, sigma: np.ndarray) -> np.ndarray:
    """``sign(y) floor(|y| / Δ + 1/2 - r)``, ``r`` = :data:`ROUNDING` on the axes whose
    deviation ``sigma`` is below ``1.5 Δ`` (a small dead zone: a value there takes the
    level below unless ``r`` past the midpoint, which saves more bits than it costs in
    error at low rates) and 0 on the others (plain rounding, the least error at high
    rate). The decoder needs none of it: levels decode to ``q Δ`` either way."""
    y = np.ascontiguousarray(y, np.float32)
    q = np.empty(y.shape, np.int32)
    top = _quantize_into(y, np.float32(1 / step), _offsets(step, sigma), q)
    if top >= MAX_LEVELS // 2:
        raise ValueError(
            f"the error target needs a step of {step:.3g}, finer than the archive's "
            f"{MAX_LEVELS} levels an axis allow: give a larger mse (or a smaller bits_per_dim)"
        )
    return q


@nb.njit(cache=True, parallel=True)
def _quantize_into(y, inv, offsets, q):
    """:func:`_quantize`'s symbols into ``q``; returns the largest ``|level|`` (levels
    beyond int32 are clipped: the caller refuses anything past ``MAX_LEVELS``)."""
    n, d = y.shape
    top = np.zeros(n, np.float32)
    for i in nb.prange(n):
        m = np.float32(0.0)
        for j in range(d):
            a = np.floor(abs(y[i, j]) * inv + offsets[j])
            m = max(m, a)
            a = min(a, np.float32(2**30))
            q[i, j] = np.int32(a) if y[i, j] >= 0 else -np.int32(a)
        top[i] = m
    return top.max() if n else np.float32(0.0)


@nb.njit(cache=True, parallel=True)
def _squared_error(a, b):
    """Per row, Σ (a - b)², each difference and the sum in float64."""
    n, d = a.shape
    rows = np.zeros(n, np.float64)
    for i in nb.prange(n):
        s = 0.0
        for j in range(d):
            e = np.float64(a[i, j]) - np.float64(b[i, j])
            s += e * e
        rows[i] = s
    return rows  # summed by the caller: a sum here would be a parallel reduction


def _coded_axes(q: np.ndarray) -> int:
    """The axes a blob keeps: up to the last with a symbol other than 0 (the axes are in
    decreasing variance; the rest decompress to 0 and their basis vectors are not kept)."""
    used = np.flatnonzero((q != 0).any(axis=0))
    return int(used[-1]) + 1 if used.size else 0


def _reconstruct(q: np.ndarray, step: float, basis: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``q Δ Vᵀ + μ`` in float32 over the kept axes (``q``: their symbols, ``basis``:
    their vectors): what :func:`decompress` returns for these rows."""
    if q.shape[1] == 0:
        return np.broadcast_to(mean, (q.shape[0], mean.size)).copy()
    return (q.astype(np.float32) * np.float32(step)) @ basis.T + mean


def _mse(x, q, step, basis, mean) -> float:
    """Mean squared error per entry of the rows :func:`decompress` makes of ``q``."""
    k = _coded_axes(q)
    total = 0.0
    for s in range(0, x.shape[0], _CHUNK):
        rec = _reconstruct(q[s : s + _CHUNK, :k], step, basis[:, :k], mean)
        total += float(_squared_error(rec, x[s : s + _CHUNK]).sum())  # in one order
    return total / x.size


def _offsets(step: float, sigma: np.ndarray) -> np.ndarray:
    """Per axis, what :func:`_quantize` adds to ``|y| / Δ`` before flooring."""
    return np.where(sigma < 1.5 * step, 0.5 - ROUNDING, 0.5).astype(np.float32)


@nb.njit(cache=True, parallel=True)
def _quantization_error(y, inv, step, offsets):
    """Per row of ``y``, Σ ``(floor(|y| inv + offset) step - |y|)²``: :func:`_quantize`'s
    error, in one pass without the symbols."""
    n, d = y.shape
    rows = np.zeros(n, np.float64)
    for i in nb.prange(n):
        s = 0.0
        for j in range(d):
            a = abs(y[i, j])
            e = np.floor(a * inv + offsets[j]) * step - a
            s += np.float64(e) * np.float64(e)
        rows[i] = s
    return rows  # summed by the caller: a sum here would be a parallel reduction


def _coefficient_mse(y: np.ndarray, step: float, sigma: np.ndarray) -> float:
    """Mean squared quantization error per entry in the principal basis: the error of
    the decompressed rows, but for float32 rounding (the basis is orthonormal)."""
    offsets = _offsets(step, sigma)
    err = _quantization_error(y, np.float32(1 / step), np.float32(step), offsets)
    return float(err.sum()) / y.size  # in one order: the same on any number of threads


def _step_for_mse(x, y, basis, mean, sigma, target, sample):
    """The largest step (to 0.5 %) whose error stays within ``target``, its symbols and
    that error.

    The error of step ``sqrt(12 target)`` is about ``target`` or less (each axis costs
    at most ``≈ Δ²/12`` or its variance): from a bracket around it (widened until it
    holds the answer), bisection in log of the step on the sample's coefficients;
    then the decompressed rows' error checked on all rows (the step made smaller by
    0.5 % until it holds)."""
    ys = np.ascontiguousarray(y[sample])
    top = float(np.abs(y).max(initial=0.0))
    if top == 0.0:  # every row is the mean: any step codes them exactly
        q = np.zeros(y.shape, np.int32)
        return 1.0, q, _mse(x, q, 1.0, basis, mean)
    finest = top / (MAX_LEVELS // 2 - 1)  # a finer step needs more levels than allowed
    lo = hi = max(math.sqrt(12 * target), finest)
    while _coefficient_mse(ys, lo, sigma) > target:
        if lo <= finest:
            _quantize(y, lo / 2, sigma)  # raises: too many levels
        lo = max(lo / 2, finest)
    while hi <= 4 * top and _coefficient_mse(ys, hi, sigma) <= target:
        lo, hi = hi, hi * 2  # past 4 |y|max every symbol is 0 and the error stops growing
    while hi / lo >= 1.005:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if _coefficient_mse(ys, mid, sigma) <= target else (lo, mid)
    step = lo
    while True:
        q = _quantize(y, step, sigma)
        if (error := _mse(x, q, step, basis, mean)) <= target:
            return step, q, error
        step /= 1.005


def _entropy_bits(q: np.ndarray) -> float:
    """Σ over columns of the empirical entropy of ``q``'s column, times its rows."""
    bits = 0.0
    for col in q.T:
        counts = np.bincount(col - col.min())
        p = counts[counts > 0] / col.size
        bits -= float((p * np.log2(p)).sum()) * col.size
    return bits


def _step_for_rate(y, sigma, target, sample, n, d) -> float:
    """The smallest step (to 0.5 %) whose estimated size (entropy of the sample's
    symbols, scaled to ``n`` rows) stays within ``target`` bits per entry."""

    def rate(step: float) -> float:
        return _entropy_bits(_quantize(y[sample], step, sigma)) / (sample.size * d)

    spread = float(np.abs(y).max()) or 1.0
    lo, hi = spread * 2.0**-18, spread * 4
    for _ in range(60):
        if hi / lo < 1.005:
            break
        mid = math.sqrt(lo * hi)
        try:
            over = rate(mid) > target
        except ValueError:  # finer than MAX_LEVELS
            over = True
        lo, hi = (mid, hi) if over else (lo, mid)
    return hi


def _encode(q, step, basis, mean, error: float) -> bytes:
    """The blob of the symbols ``q`` (``error``: the decompressed rows' measured mse)."""
    constriction = _constriction()
    model = constriction.stream.model
    n, d = q.shape
    k = _coded_axes(q)
    q, basis = q[:, :k], np.ascontiguousarray(basis[:, :k])
    lows = q.min(axis=0).astype(np.int32) if n else np.zeros(k, np.int32)
    sizes = (q.max(axis=0) - lows + 1).astype(np.int32)
    coder = constriction.stream.stack.AnsCoder()
    cols = np.ascontiguousarray((q - lows).T)
    tables = [np.bincount(cols[i], minlength=int(sizes[i])).astype(np.uint32) for i in range(k)]
    for i in reversed(range(k)):  # a stack: the decoder pops axis 0 first
        if sizes[i] > 1:
            p = tables[i].astype(np.float64) / n
            coder.encode_reverse(cols[i], model.Categorical(p, perfect=False))
    counts = np.concatenate(tables) if tables else np.zeros(0, np.uint32)
    words = coder.get_compressed().astype(np.uint32)
    config = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "n": int(n), "d": int(d),
              "axes": k, "step": float(step), "mse": error, "bits_per_dim": 0.0}  # fmt: skip
    arrays = {"mean": mean, "basis": basis, "lows": lows, "sizes": sizes, "counts": counts,
              "words": words}  # fmt: skip
    blob = pack(config, arrays)
    # the rate counts the whole blob; writing it can lengthen the JSON by a few digits
    for _ in range(4):
        config["bits_per_dim"] = 8 * len(blob) / (n * d)
        again = pack(config, arrays)
        if len(again) == len(blob):
            return again
        blob = again
    return blob  # pragma: no cover - the length settles within a round or two


def describe(blob) -> dict:
    """The blob's rows, dimension, step, rate (``bits_per_dim``) and distortion (``mse``)
    as written in it, its checksums verified, nothing decoded.

    Raises
    ------
    FormatError
        Not an archive blob, or a damaged one.
    """
    config, _ = _open(blob)
    return {key: config[key] for key in ("n", "d", "axes", "step", "mse", "bits_per_dim")}


def _open(blob) -> tuple[dict, dict]:
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected the bytes of an archive, found {type(blob).__name__}")
    config, arrays = unpack(blob, source="archive")
    if config.get("format") != FORMAT_NAME or config.get("version") != FORMAT_VERSION:
        raise FormatError(
            f"archive: format {config.get('format')!r:.80} version {config.get('version')!r:.20}, "
            f"expected {FORMAT_NAME!r} version {FORMAT_VERSION}"
        )
    n, d, k = config.get("n"), config.get("d"), config.get("axes")
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (n, d, k))
    ok = ok and n >= 1 and d >= 1 and 0 <= k <= d
    shapes = {"mean": (d,), "basis": (d, k), "lows": (k,), "sizes": (k,)}
    dtypes = {"mean": "<f4", "basis": "<f4", "lows": "<i4", "sizes": "<i4", "counts": "<u4",
              "words": "<u4"}  # fmt: skip
    ok = ok and set(arrays) == set(dtypes)
    ok = ok and all(arrays[k].dtype.str == v for k, v in dtypes.items())
    ok = ok and all(arrays[k].shape == s for k, s in shapes.items())
    step = config.get("step")
    ok = ok and isinstance(step, float) and math.isfinite(step) and step > 0
    if ok:
        sizes = arrays["sizes"].astype(np.int64)
        ok = bool((sizes >= 1).all() and (sizes <= MAX_LEVELS).all())
        ok = ok and arrays["counts"].shape == (int(sizes.sum()),)
        ok = ok and np.isfinite(arrays["mean"]).all() and np.isfinite(arrays["basis"]).all()
    if ok:
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        counts = arrays["counts"].astype(np.int64)
        sums = np.add.reduceat(counts, bounds[:-1]) if k else np.zeros(0, np.int64)
        ok = bool((sums == n).all())
    if not ok:
        raise FormatError("archive: its config and arrays do not agree (damaged or not a blob)")
    return config, arrays


def decompress(blob) -> np.ndarray:
    """The rows of a blob made by :func:`compress`: ``float32[n, d]``.

    Raises
    ------
    FormatError
        Not an archive blob, or a damaged one (checksums, shapes, a stream that does
        not decode to ``n`` rows).
    """
    constriction = _constriction()
    model = constriction.stream.model
    config, arrays = _open(blob)
    n, d, k, step = config["n"], config["d"], config["axes"], config["step"]
    sizes, lows = arrays["sizes"], arrays["lows"]
    bounds = np.concatenate([[0], np.cumsum(sizes.astype(np.int64))])
    q = np.empty((k, n), np.int32)
    try:
        coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(arrays["words"]))
        for i in range(k):
            if sizes[i] == 1:
                q[i] = 0
                continue
            p = arrays["counts"][bounds[i] : bounds[i + 1]].astype(np.float64) / n
            q[i] = coder.decode(model.Categorical(p, perfect=False), n)
    except Exception as e:  # whatever constriction raises on a stream it cannot decode
        raise FormatError(f"archive: the coded stream does not decode ({e})") from None
    q += lows[:, None]
    q = q.T
    out = np.empty((n, d), np.float32)
    for s in range(0, n, _CHUNK):
        out[s : s + _CHUNK] = _reconstruct(q[s : s + _CHUNK], step, arrays["basis"], arrays["mean"])
    return out
