"""Embedding diagnostics: what a set of vectors implies for compression.

:func:`inspect` (the ``vecpress inspect BASE`` command) measures the numbers that
predict which codec suits a data set before any is tried:

* the row norms (how much a per-vector scale matters);
* the anisotropy, ``|mean| / mean norm`` (whether the ``center`` stage pays);
* the covariance spectrum, its effective rank and its transform-coding gain
  (what a learned, PCA-like code could gain over a random rotation);
* an Epps–Pulley statistic of 1-D projections, the one the SIGReg regulariser
  of LeJEPA uses (whether coordinates are near-Gaussian, before and after the
  ``hd2`` rotation, so that fixed Gaussian quantizers fit them);
* recall@k after PCA to a few smaller dimensions (the dimension floor).

The thresholds behind the advice are the module constants below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .._validation import as_vectors, check_positive_int
from ..search.topk import exact_search, recall_at_k

__all__ = ["inspect"]

METRICS = ("cosine", "ip", "l2")

#: Advise centring when ``|mean| / mean norm`` exceeds this.
ANISOTROPY_CENTER = 0.1
#: Advise a learned transform code when the coding gain exceeds this (dB).
CODING_GAIN_DB = 1.0
#: Coordinates count as near-Gaussian when their mean Epps–Pulley statistic
#: exceeds that of genuinely Gaussian samples by at most this much per row,
#: ``(T - T_ref) / N`` (an effect size: ``T`` itself grows like ``N`` for any fixed
#: non-Gaussian law). For scale: a Student t with 30 degrees of freedom gives
#: 1.5e-4, a coordinate of a uniform point on the 16-sphere 5e-4, a Student t with
#: 10 degrees of freedom 1.6e-3, a uniform or a Laplace law 1.6e-2. The same
#: amount is the smallest change that counts: between two non-Gaussian statistics,
#: the ``hd2`` rotation helps when it lowers the excess by more than this (see
#: :func:`inspect`, Notes).
GAUSSIAN_EXCESS = 1e-3
#: The dimension floor is the smallest tested d' whose recall@k is at least this.
RECALL_FLOOR = 0.95
#: Eigenvalues are floored at this fraction of the largest one in the coding gain.
EIGEN_FLOOR = 1e-12
#: Number of 1-D projections in each Epps–Pulley mean.
N_PROJECTIONS = 64
#: Epps–Pulley quadrature: trapezoid rule on ``[0, EP_T_MAX]`` with ``EP_POINTS`` nodes.
EP_T_MAX = 3.0
EP_POINTS = 17
#: Held-out queries (at most) and base rows (at most) of the PCA recall measurement.
MAX_HELD_OUT = 500
MAX_RECALL_BASE = 50_000
#: Fractions of d tried by default in the PCA recall measurement.
PCA_FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 3 / 4)

_BLOCK = 65_536  # rows per float32 product in the mean
_DB_PER_BIT = 20.0 * math.log10(2.0)  # 6.02 dB per bit of a uniform quantizer


def inspect(
    x: np.ndarray,
    *,
    queries: np.ndarray | None = None,
    metric: str = "cosine",
    sample: int = 20_000,
    seed: int = 0,
    dims: Sequence[int] | None = None,
    k: int = 10,
) -> dict:
    """Describe a set of embeddings and what it implies for compression.

    Parameters
    ----------
    x : numpy.ndarray
        The vectors, float ``(n, d)`` with ``n >= 2``; converted to float32 like
        every vecpress input (float32 is used as is, without a copy).
    queries : numpy.ndarray, optional
        Float ``(nq, d)`` queries of the PCA recall measurement. Without them,
        ``min(500, n // 10)`` rows of ``x`` (at least one) drawn with ``seed``
        are held out as queries and removed from the base for that measurement.
    metric : {"cosine", "ip", "l2"}
        The similarity the vectors are searched with. For ``"cosine"`` every
        measure except ``"norms"`` is taken on the L2-normalised rows (zero
        rows stay zero).
    sample : int
        At most this many rows, drawn uniformly with ``seed``, give the
        spectrum, the Gaussianity statistics and the PCA basis.
    seed : int
        Seed of every random choice (samples, held-out queries, projection
        directions, the ``hd2`` rotation, the Gaussian reference).
    dims : sequence of int, optional
        Reduced dimensions d' (each in ``[1, d]``) of the PCA recall
        measurement; default ``d/8, d/4, d/2, 3d/4`` rounded, at least 2,
        below ``d``, without repeats.
    k : int
        The k of recall@k (capped at the number of base rows).

    Returns
    -------
    dict
        JSON-serialisable (plain ``int``, ``float``, ``str`` and lists):

        ``n``, ``d``
            The shape of ``x``.
        ``norms``
            ``min``, ``p01``, ``p50``, ``p99``, ``max`` and ``mean`` of the row
            L2 norms of the raw input (before any normalisation).
        ``anisotropy``
            ``|mean row| / mean row norm`` over all rows. Isotropic data gives
            about ``1/sqrt(n)``; sentence embeddings 0.3 to 0.5.
        ``spectrum``
            The ``d`` eigenvalues of the (centred, float64) sample covariance,
            largest first.
        ``effective_rank``
            ``exp(-sum p_i log p_i)`` with ``p_i = lambda_i / sum(lambda)``
            (Roy & Vetterli, 2007), in ``[1, d]``.
        ``coding_gain_db``, ``coding_gain_bits``
            The transform-coding gain of the Karhunen–Loève transform over
            coding coordinates of equal variance (what a random rotation gives):
            ``10 log10(mean(lambda) / geomean(lambda))``, with every eigenvalue
            first raised to ``EIGEN_FLOOR`` times the largest, so that a
            rank-deficient set gives a large but finite gain (rank ``r`` with
            equal non-zero eigenvalues: ``120 (d - r) / d + 10 log10(r / d)``
            dB). In bits per dimension it is the same divided by
            ``20 log10(2) = 6.02``.
        ``gaussianity``
            Mean Epps–Pulley statistics (below) of ``raw``: up to 64 coordinate
            axes of the centred sample; ``rotated``: up to 64 coordinates after
            the ``hd2`` rotation; ``random_directions``: 64 random unit
            directions.
        ``gaussian_reference``
            The mean of the same statistic over 64 genuinely Gaussian samples
            of the same size: values near it mean near-Gaussian projections.
        ``rotation``
            The rotation rule (Notes) on these numbers: ``advised`` (bool);
            ``limit``, the statistic up to which coordinates count as
            near-Gaussian (``gaussian_reference + GAUSSIAN_EXCESS * sample``);
            ``limit_per_row`` (``GAUSSIAN_EXCESS``); and, for each key of
            ``gaussianity``, ``near_gaussian`` (bool: the statistic is at most
            ``limit``) and ``excess_per_row``
            (``(T - gaussian_reference) / sample``).
        ``pca_recall``
            A list of ``{"d": d', "recall_at_k": r}``: recall@k of exact search
            after projecting onto the top ``d'`` principal directions (centred,
            fitted on the sample, which may hold held-out queries), against
            exact search in full dimension, on
            at most 50,000 base rows. Inner product for ``"ip"`` and
            ``"cosine"``, Euclidean distance for ``"l2"``.
        ``advice``
            Short sentences on what the numbers imply.
        ``sample``
            The number of rows used for the spectrum.
        ``metric``
            ``metric``.

    Raises
    ------
    TypeError
        If ``x`` or ``queries`` is not a float array.
    ValueError
        If ``x`` is not 2-D, has fewer than 2 rows, holds NaN or Inf, has zero
        variance; if ``metric`` is unknown; if ``queries`` has another dimension.

    Notes
    -----
    The Epps–Pulley statistic of a 1-D sample ``y_1..y_N``, standardised to
    zero mean and unit variance (``z_j``), compares its empirical
    characteristic function with the standard normal one under a Gaussian
    weight, as in LeJEPA's SIGReg::

        T = N * integral over [-3, 3] of |phi_N(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt,
        phi_N(t) = mean_j exp(i t z_j),

    computed by symmetry as twice the trapezoid rule on ``[0, 3]`` with 17
    nodes. Under normality ``T`` has a limit distribution that does not depend
    on ``N`` (mean about 0.3); for any other law it grows like ``N`` times the
    weighted distance between the characteristic functions (``0.1 N`` for a
    two-valued sample, ``0.4 N`` for a constant one). The advice therefore
    judges the excess per row, ``(T - T_ref) / N``, against ``GAUSSIAN_EXCESS``.

    The rotation rule uses only the printed statistics: ``T_raw`` (axes),
    ``T_rot`` (after ``hd2``), ``T_ref`` (Gaussian samples) and ``N`` (rows).
    With ``margin = GAUSSIAN_EXCESS * N``, a statistic counts as near-Gaussian
    when it is at most ``limit = T_ref + margin``, and ``hd2`` is advised when
    it helps: when the axes are not near-Gaussian (``T_raw > limit``) and the
    rotation either makes them so (``T_rot <= limit``) or lowers the statistic
    by more than the margin (``T_raw - T_rot > margin``; a smaller change is
    within what the limit itself tolerates). So a rotation is never advised
    unless the rotated statistic is below the raw one, and coordinates are
    called near-Gaussian, before or after ``hd2``, only when that statistic is
    within the limit. The advice names the case:

    * ``T_raw <= limit``: no rotation needed, the axes are near-Gaussian;
    * rotate, and the rotated coordinates are near-Gaussian (fixed Gaussian
      quantizers fit them);
    * rotate, but the rotated coordinates stay non-Gaussian (quantizers fitted
      to the data should beat fixed Gaussian ones);
    * a rotation does not help non-Gaussian axes (fitted quantizers, again).

    Examples
    --------
    >>> from vecpress.advisor.datasets import synthetic
    >>> base, queries = synthetic(n=2000, d=32, n_queries=50)
    >>> report = inspect(base, queries=queries)
    >>> report["n"], report["d"], report["sample"], len(report["spectrum"])
    (2000, 32, 2000, 32)
    >>> 0.4 < report["anisotropy"] < 0.5
    True
    >>> [r["d"] for r in report["pca_recall"]]
    [4, 8, 16, 24]
    >>> print(report["advice"][0])  # doctest: +ELLIPSIS
    centre first: the mean vector is 4...% of the typical norm (use the `center` stage)
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, found {metric!r}")
    x = as_vectors(x, "x")
    n, d = x.shape
    if n < 2:
        raise ValueError(f"x must have at least 2 rows to describe, found {n}")
    sample = check_positive_int(sample, "sample", low=2)
    seed = check_positive_int(seed, "seed", low=0)
    k = check_positive_int(k, "k")
    if queries is not None:
        queries = _check_queries(queries, d)
    dims = _default_dims(d) if dims is None else _check_dims(dims, d)

    rng_sample, rng_gauss, rng_recall = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    cosine = metric == "cosine"

    # -- norms and anisotropy, on every row -----------------------------------
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    if cosine:
        weights = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        mean_norm = float(np.count_nonzero(norms)) / n
    else:
        weights = np.ones(n, np.float32)
        mean_norm = float(norms.mean(dtype=np.float64))
    mean = np.zeros(d)
    for s in range(0, n, _BLOCK):  # float32 products, summed in float64
        mean += weights[s : s + _BLOCK] @ x[s : s + _BLOCK]
    mean /= n
    anisotropy = float(np.linalg.norm(mean)) / mean_norm if mean_norm > 0 else 0.0

    # -- spectrum of the sample covariance --------------------------------------
    rows = _draw(rng_sample, n, sample)
    xs = x[rows] if rows is not None else x
    xs = _normalised(xs) if cosine else xs
    m = xs.shape[0]
    mu = xs.mean(axis=0, dtype=np.float64)
    xc = xs.astype(np.float64) - mu
    eigval, eigvec = np.linalg.eigh(xc.T @ xc / (m - 1))
    eigval = np.clip(eigval[::-1], 0.0, None)
    eigvec = eigvec[:, ::-1]
    total = float(eigval.sum())
    if not total > 0:
        raise ValueError(
            f"x has zero variance (all {m} sampled rows are identical"
            f"{' after normalisation' if cosine else ''}): nothing to describe"
        )
    p = eigval[eigval > 0] / total
    effective_rank = float(np.exp(-np.sum(p * np.log(p))))
    floored = np.maximum(eigval, EIGEN_FLOOR * eigval[0])
    gain_db = float(10.0 * (np.log10(floored.mean()) - np.mean(np.log10(floored))))
    gain_db = max(gain_db, 0.0)  # AM >= GM; clears a -1e-15 from rounding

    # -- Gaussianity of 1-D projections -----------------------------------------
    gaussianity, reference = _gaussianity(xc.astype(np.float32), rng_gauss, seed)

    # -- recall after PCA -------------------------------------------------------
    pca_recall, k = _pca_recall(x, queries, metric, mu, eigvec, dims, k, rng_recall)

    report = {
        "n": int(n),
        "d": int(d),
        "norms": {
            "min": float(norms.min()),
            "p01": float(np.percentile(norms, 1)),
            "p50": float(np.percentile(norms, 50)),
            "p99": float(np.percentile(norms, 99)),
            "max": float(norms.max()),
            "mean": float(norms.mean(dtype=np.float64)),
        },
        "anisotropy": anisotropy,
        "spectrum": [float(v) for v in eigval],
        "effective_rank": min(max(effective_rank, 1.0), float(d)),
        "coding_gain_db": gain_db,
        "coding_gain_bits": gain_db / _DB_PER_BIT,
        "gaussianity": gaussianity,
        "gaussian_reference": reference,
        "rotation": _rotation(gaussianity, reference, m),
        "pca_recall": pca_recall,
        "advice": [],
        "sample": int(m),
        "metric": metric,
    }
    report["advice"] = _advice(report, k)
    return report


# -- checks ----------------------------------------------------------------------


def _check_queries(queries: object, d: int) -> np.ndarray:
    q = as_vectors(queries, "queries", allow_empty=False)
    if q.shape[1] != d:
        raise ValueError(f"queries must have d={d} columns like x, found shape {q.shape}")
    return q


def _default_dims(d: int) -> list[int]:
    return sorted({v for f in PCA_FRACTIONS if (v := max(2, int(d * f + 0.5))) < d})


def _check_dims(dims: Sequence[int], d: int) -> list[int]:
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence | np.ndarray):
        raise TypeError(f"dims must be a sequence of integers, found {type(dims).__name__}")
    return sorted({check_positive_int(v, "each of dims", low=1, high=d) for v in dims})


# -- helpers ---------------------------------------------------------------------


def _draw(rng: np.random.Generator, n: int, size: int) -> np.ndarray | None:
    """Sorted indices of ``size`` rows out of ``n``, or None when all are kept."""
    if n <= size:
        return None
    return np.sort(rng.choice(n, size, replace=False))


def _normalised(x: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return x / np.where(norms > 0, norms, 1.0).astype(x.dtype)


def _epps_pulley_nodes() -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``t`` on ``[0, EP_T_MAX]`` and weights: doubled trapezoid times ``exp(-t²/2)``."""
    t = np.linspace(0.0, EP_T_MAX, EP_POINTS)
    dt = EP_T_MAX / (EP_POINTS - 1)
    w = np.full(EP_POINTS, 2.0 * dt)
    w[[0, -1]] = dt
    return t, w * np.exp(-0.5 * t * t)


def epps_pulley(y: np.ndarray) -> np.ndarray:
    """Epps–Pulley statistic of every column of ``y`` (see :func:`inspect`, Notes).

    Examples
    --------
    >>> y = np.random.default_rng(0).standard_normal((5000, 2))
    >>> bool(np.all(epps_pulley(y) < 2.0))
    True
    >>> bool(epps_pulley(np.sign(y))[0] > 100.0)
    True
    """
    y = np.asarray(y, np.float64)
    n = y.shape[0]
    sd = y.std(axis=0)
    z = np.divide(y - y.mean(axis=0), sd, out=np.zeros_like(y), where=sd > 0)
    t, w = _epps_pulley_nodes()
    # cos(j a), sin(j a) for the equally spaced nodes t_j = j a by angle addition
    c1, s1 = np.cos(t[1] * z), np.sin(t[1] * z)
    c, s = np.ones_like(z), np.zeros_like(z)
    err = np.empty((EP_POINTS, y.shape[1]))
    for j in range(EP_POINTS):
        err[j] = (c.mean(axis=0) - math.exp(-0.5 * t[j] ** 2)) ** 2 + s.mean(axis=0) ** 2
        c, s = c * c1 - s * s1, s * c1 + c * s1
    return n * (w @ err)


def _gaussianity(
    xc: np.ndarray, rng: np.random.Generator, seed: int
) -> tuple[dict[str, float], float]:
    """Mean Epps–Pulley statistics of the centred sample and of Gaussian samples."""
    from ..codecs.codec import Codec  # deferred: codec imports much of the package

    m, d = xc.shape
    axes = np.arange(d) if d <= N_PROJECTIONS else np.sort(rng.choice(d, N_PROJECTIONS, False))
    rotation = Codec.from_spec("hd2,f32", d=d, seed=seed).transforms[0]
    directions = rng.standard_normal((d, N_PROJECTIONS))
    directions /= np.linalg.norm(directions, axis=0)
    stats = {
        "raw": epps_pulley(xc[:, axes]),
        "rotated": epps_pulley(rotation.forward(xc)[:, axes]),
        "random_directions": epps_pulley(xc @ directions.astype(np.float32)),
    }
    reference = epps_pulley(rng.standard_normal((m, N_PROJECTIONS)))
    return {key: float(v.mean()) for key, v in stats.items()}, float(reference.mean())


def _pca_recall(
    x: np.ndarray,
    queries: np.ndarray | None,
    metric: str,
    mu: np.ndarray,
    eigvec: np.ndarray,
    dims: list[int],
    k: int,
    rng: np.random.Generator,
) -> tuple[list[dict], int]:
    """Recall@k of exact search in the top-d' principal coordinates, for each d'; and k."""
    if not dims:
        return [], k
    n = x.shape[0]
    if queries is None:
        n_held = min(MAX_HELD_OUT, max(1, n // 10))
        perm = rng.permutation(n)
        queries = x[np.sort(perm[:n_held])]
        rest = np.sort(perm[n_held:])
    else:
        rest = np.arange(n)
    if rest.size > MAX_RECALL_BASE:
        rest = rest[np.sort(rng.choice(rest.size, MAX_RECALL_BASE, replace=False))]
    base = x[rest]
    if metric == "cosine":
        base, queries = _normalised(base), _normalised(queries)
    k = min(k, base.shape[0])
    basis = eigvec.astype(np.float32)
    mu32 = mu.astype(np.float32)
    # Reconstruction x^ = mu + V y with y = V'(x - mu). Inner product: rank by
    # <V'q, y>; Euclidean: by <V'(q - mu), y> - |y|^2 / 2 (the rest is constant per query).
    y_base = (base - mu32) @ basis
    if metric == "l2":
        y_query = (queries - mu32) @ basis
        truth, _ = exact_search(*_l2_as_ip(queries, base), k)
    else:
        y_query = queries @ basis
        truth, _ = exact_search(queries, base, k)
    out = []
    for dd in dims:
        qd = np.ascontiguousarray(y_query[:, :dd])
        bd = np.ascontiguousarray(y_base[:, :dd])
        if metric == "l2":
            qd, bd = _l2_as_ip(qd, bd)
        found, _ = exact_search(qd, bd, k)
        out.append({"d": int(dd), "recall_at_k": float(recall_at_k(found, truth, k))})
    return out, k


def _l2_as_ip(q: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Append columns so that the inner product ranks like ``-|q - b|^2``."""
    half = -0.5 * np.einsum("ij,ij->i", b, b)
    return (
        np.hstack([q, np.ones((q.shape[0], 1), q.dtype)]),
        np.hstack([b, half[:, None].astype(b.dtype)]),
    )


def format_statistic(t: float) -> str:
    """An Epps–Pulley statistic as printed: 3 significant digits, whole numbers from 1,000.

    Examples
    --------
    >>> format_statistic(0.35612), format_statistic(46.3), format_statistic(1519.97)
    ('0.356', '46.3', '1,520')
    """
    return f"{t:,.0f}" if abs(t) >= 1000 else f"{t:.3g}"


def _rotation(gaussianity: dict[str, float], reference: float, rows: int) -> dict:
    """The rotation rule (:func:`inspect`, Notes) on the mean statistics of ``rows`` rows."""
    margin = GAUSSIAN_EXCESS * rows
    limit = reference + margin
    raw, rotated = gaussianity["raw"], gaussianity["rotated"]
    return {
        "advised": bool(raw > limit and (rotated <= limit or raw - rotated > margin)),
        "limit": limit,
        "limit_per_row": GAUSSIAN_EXCESS,
        "near_gaussian": {key: bool(t <= limit) for key, t in gaussianity.items()},
        "excess_per_row": {key: (t - reference) / rows for key, t in gaussianity.items()},
    }


def _rotation_advice(report: dict) -> str:
    """One sentence: whether to rotate, and what quantizers then fit (:func:`inspect`, Notes)."""
    g, ref, rows, rule = (
        report["gaussianity"],
        report["gaussian_reference"],
        report["sample"],
        report["rotation"],
    )
    limit, margin = rule["limit"], rule["limit"] - ref
    fmt = format_statistic
    numbers = (
        f"Epps–Pulley statistic {fmt(g['raw'])} on the axes, {fmt(g['rotated'])} after hd2; "
        f"near-Gaussian up to {fmt(limit)}, i.e. Gaussian samples' {fmt(ref)} + "
        f"{GAUSSIAN_EXCESS:g} per row x {rows:,} rows"
    )
    fitted = (
        "quantizers fitted to the data (per-dimension ranges, learned codebooks) should beat "
        "fixed Gaussian ones"
    )
    if g["raw"] <= limit:
        return (
            "no rotation needed: the coordinates are near-Gaussian on their axes already "
            f"({numbers})"
        )
    if g["rotated"] <= limit:  # and so lower than on the axes: advised
        return (
            "rotate (hd2): it makes the coordinates near-Gaussian, so fixed Gaussian "
            f"quantizers fit them ({numbers})"
        )
    if rule["advised"]:
        return (
            f"rotate (hd2), but the coordinates stay non-Gaussian after it: {fitted} "
            f"(hd2 lowers the statistic by more than {fmt(margin)}; {numbers})"
        )
    return (
        "a rotation does not help: hd2 does not lower the statistic by more than "
        f"{fmt(margin)} and the coordinates stay non-Gaussian, so {fitted} ({numbers})"
    )


def _advice(report: dict, k: int) -> list[str]:
    advice = []
    aniso = report["anisotropy"]
    if aniso > ANISOTROPY_CENTER:
        advice.append(
            f"centre first: the mean vector is {aniso:.0%} of the typical norm "
            "(use the `center` stage)"
        )
    advice.append(_rotation_advice(report))
    gain = report["coding_gain_db"]
    if gain > CODING_GAIN_DB:
        advice.append(
            f"learned codes (PCA/KL transform coding) could gain ~{gain:.1f} dB "
            f"(~{report['coding_gain_bits']:.2f} bits/dim) over a random rotation "
            f"(effective rank {report['effective_rank']:.0f} of {report['d']})"
        )
    recalls = report["pca_recall"]
    if recalls:
        good = [r for r in recalls if r["recall_at_k"] >= RECALL_FLOOR]
        if good:
            r = good[0]
            advice.append(
                f"dimension floor: recall@{k} after PCA to d'={r['d']} is "
                f"{r['recall_at_k']:.3f} (the smallest tested d' keeping >= {RECALL_FLOOR})"
            )
        else:
            best = max(recalls, key=lambda r: r["recall_at_k"])
            advice.append(
                f"dimension floor: no tested d' keeps recall@{k} >= {RECALL_FLOOR} after PCA "
                f"(best: d'={best['d']} gives {best['recall_at_k']:.3f}); keep all "
                f"{report['d']} dimensions"
            )
    return advice
