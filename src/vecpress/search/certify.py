"""Certified re-ranking: re-score exactly the candidates that can still be in the top k.

A re-ranked search asks the first stage for candidates and re-scores them with
the second tier (``rerank_spec``, or both levels of a two-level code). With a
fixed depth ``R`` the user guesses how many candidates are enough. Here the
depth follows from a bound on the first stage's error against the tier:

* **The error model.** For a query ``q`` and a stored row, ``e = est - tier``
  is the first stage's score minus the tier's score of the same pair (both as
  the index's metric scores them). Errors are measured in units of a *scale*
  ``u(q, est)`` (:data:`Scale`): ``|q|`` (:func:`plain_scale`), or, for unit
  rows (cosine), ``|q| sqrt(1 - c^2)`` with ``c = est / |q|`` the estimated
  cosine (:func:`aligned_scale`). The second is the law of rotated codes: the
  error of a RaBitQ-style estimate is ``|x| tan(theta) <w, q>`` with ``w`` a
  random unit vector orthogonal to the row, whose variance is proportional to
  ``|q|^2 - <x/|x|, q>^2``, so a query aligned with a row meets a smaller
  error than a query far from it. An :class:`ErrorModel` holds the mean and a
  standard deviation of ``e / u``. :func:`calibrate` measures two: stored rows,
  decoded by the tier, used as queries (1) against their own nearest
  candidates (the row itself left out) and (2) against random stored rows, and
  the larger margin of the two is used, so a scale that fits one regime badly
  is caught by the other. Errors are modelled as Gaussian; each standard
  deviation is raised where its sample's lower tail (the 1 % and 0.1 %
  quantiles) is heavier than the Gaussian's, so a model is never
  lighter-tailed than what was measured.
* **The margin.** ``eps = u(q, est) * max(0, z_a * sd - mean)`` with ``z_a``
  the Gaussian quantile of ``1 - a`` and ``a = (1 - confidence) / k``: under the
  model an estimate falls more than ``eps`` below its tier score with
  probability at most ``a``.
* **The search** (:func:`certified_rerank`). The first stage returns its best
  ``depth`` rows by estimate, each with its upper bound ``ub = est + eps``.
  Candidates are re-scored in the order of their upper bounds, ``k`` at a time,
  while the next upper bound reaches ``L``, the k-th best tier score found so
  far; the best ``k`` re-scored rows are returned. Rows beyond the depth have
  estimates at most the last candidate's, and the upper bound grows with the
  estimate (for the aligned scale while ``c`` stays below ~0.99, where the
  scale's floor takes over), so when the last candidate's upper bound is below
  the final ``L`` the query is **certified**; otherwise the depth grows
  fourfold (up to :data:`MAX_DEPTH`) and the query is searched again.

Why ``a = (1 - confidence) / k``: a certified result differs from the tier's
exact top k only if some row of that exact top k was never re-scored, which
needs its estimate to fall more than ``eps`` below its tier score (its upper
bound was below ``L``, and ``L`` is at most its tier score). That is ``k``
events of probability at most ``a`` each, so their union has probability at
most ``k a = 1 - confidence`` (under the error model). Overestimates only cost
re-scoring. For an IVF index the statement covers the rows of the probed
lists: rows of other lists are never scored.

The error model is an empirical one (``benchmarks/latency.py`` measures how
often a certified result is exact); it is calibrated once per index content,
on first use, from at most :data:`CALIBRATION_QUERIES` stored rows and
:data:`CALIBRATION_DEPTH` pairs of each kind per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .topk import topk

#: stored rows used as queries to calibrate the error model
CALIBRATION_QUERIES = 256
#: candidates per calibration query
CALIBRATION_DEPTH = 64
#: the first depth of a certified search is at least this (and at least 4 k)
START_DEPTH = 64
#: a certified search never asks the first stage for more candidates than this
MAX_DEPTH = 4096
#: lower-tail levels checked against the Gaussian model (used where the sample
#: holds at least 10 errors below them)
TAIL_LEVELS = (0.01, 0.001)
#: the aligned scale never falls below this fraction of ``|q|`` (cosine 0.995)
ALIGN_FLOOR = 0.1

#: ``first(q, qsq, depth) -> (rows int64[nq, depth], est float32[nq, depth])``: the
#: first stage's best rows by estimate, best first, ``-1`` / ``-inf`` padded
FirstStage = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]
#: ``exact(q, qsq, rows) -> float32[nq, R]``: a tier's scores of the given rows, ``-inf``
#: at rows ``-1`` (the first stage's own estimates of given rows have the same form)
TierScores = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
#: ``scale(qsq float64[nq], est float32[nq, R]) -> float64[nq, R]``: the unit of error
#: of each pair (:func:`plain_scale`, :func:`aligned_scale`)
Scale = Callable[[np.ndarray, np.ndarray], np.ndarray]


def plain_scale(qsq: np.ndarray, est: np.ndarray) -> np.ndarray:
    """``|q|`` for every pair.

    Examples
    --------
    >>> plain_scale(np.array([4.0]), np.zeros((1, 2), np.float32)).tolist()
    [[2.0, 2.0]]
    """
    qn = np.sqrt(np.maximum(np.asarray(qsq, np.float64), 0.0))[:, None]
    return np.broadcast_to(qn, est.shape)


def aligned_scale(qsq: np.ndarray, est: np.ndarray) -> np.ndarray:
    """``|q| sqrt(1 - c^2)`` with ``c = est / |q|`` (unit rows), at least
    :data:`ALIGN_FLOOR` ``|q|``.

    Examples
    --------
    >>> aligned_scale(np.ones(1), np.array([[0.0, 0.6, 1.0]], np.float32)).round(3).tolist()
    [[1.0, 0.8, 0.1]]
    """
    qn = np.sqrt(np.maximum(np.asarray(qsq, np.float64), 0.0))[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(qn > 0, est / np.where(qn > 0, qn, 1.0), 0.0)
        rest = np.where(np.isfinite(c), 1.0 - c * c, 1.0)
    return qn * np.sqrt(np.maximum(rest, ALIGN_FLOOR**2))


@dataclass(frozen=True)
class ErrorModel:
    """The first stage's error against the tier, in units of the pair's scale.

    Attributes
    ----------
    mean, sd : float
        Mean and (tail-adjusted) standard deviation of ``(est - tier) / scale``.
    pairs : int
        How many (query, row) pairs were measured.

    Examples
    --------
    >>> round(ErrorModel(mean=0.0, sd=0.01, pairs=1000).factor(0.999, 10), 4)
    0.0372
    """

    mean: float
    sd: float
    pairs: int

    def factor(self, confidence: float, k: int) -> float:
        """The margin per unit of scale: ``max(0, z_a * sd - mean)``."""
        z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / k)
        return max(0.0, z * self.sd - self.mean)


def fit_error_model(errors: np.ndarray) -> ErrorModel:
    """An :class:`ErrorModel` from measured ``(est - tier) / scale`` values.

    Examples
    --------
    >>> e = np.random.default_rng(0).standard_normal(100_000) * 0.01
    >>> m = fit_error_model(e)
    >>> abs(m.mean) < 1e-3, 0.0099 < m.sd < 0.0102
    (True, True)
    """
    e = np.asarray(errors, np.float64).ravel()
    if e.size < 2:
        return ErrorModel(0.0, 0.0, int(e.size))
    mean = float(e.mean())
    sd = float(e.std(ddof=1))
    for p in TAIL_LEVELS:
        if e.size * p >= 10:
            low = float(np.quantile(e, p))
            sd = max(sd, (mean - low) / NormalDist().inv_cdf(1.0 - p))
    return ErrorModel(mean, sd, int(e.size))


def factor(models: tuple[ErrorModel, ...], confidence: float, k: int) -> float:
    """The largest :meth:`ErrorModel.factor` of ``models``."""
    return max((m.factor(confidence, k) for m in models), default=0.0)


def calibrate(
    first: FirstStage,
    estimate: TierScores,
    exact: TierScores,
    scale: Scale,
    q: np.ndarray,
    qsq: np.ndarray,
    own: np.ndarray,
    limit: int,
    seed: int = 0,
) -> tuple[ErrorModel, ErrorModel]:
    """Measure the error models (near pairs, random pairs) on calibration queries.

    ``q`` are prepared stored rows (decoded by the tier), ``own[i]`` the row
    query ``i`` came from: that pair is left out (a vector scored against its own
    code is not a search). ``estimate`` scores given rows with the first stage
    (as its scan does), ``exact`` with the tier; the random rows are drawn from
    ``0..limit-1`` with ``seed``.
    """
    if q.shape[0] == 0:
        return ErrorModel(0.0, 0.0, 0), ErrorModel(0.0, 0.0, 0)
    rows, est = first(q, qsq, CALIBRATION_DEPTH + 1)
    rows = _without(rows, own)
    near = _errors(est, exact(q, qsq, rows), scale(qsq, est), rows)
    rng = np.random.default_rng(seed)
    rand = _without(rng.integers(0, limit, (q.shape[0], CALIBRATION_DEPTH)), own)
    est = estimate(q, qsq, rand)
    far = _errors(est, exact(q, qsq, rand), scale(qsq, est), rand)
    return fit_error_model(near), fit_error_model(far)


def _without(rows: np.ndarray, own: np.ndarray) -> np.ndarray:
    return np.where(rows == own[:, None], -1, rows)


def _errors(est, tier, unit, rows) -> np.ndarray:
    """``(est - tier) / unit`` of the valid pairs, float64[m]."""
    valid = (rows >= 0) & np.isfinite(est) & np.isfinite(tier) & (unit > 0)
    return (est[valid].astype(np.float64) - tier[valid]) / unit[valid]


@dataclass(frozen=True)
class Certified:
    """What :func:`certified_rerank` returns: the best ``k`` rows and their tier
    scores, how many candidates each query re-scored, and whether its result is
    certified."""

    rows: np.ndarray
    scores: np.ndarray
    reranked: np.ndarray
    certified: np.ndarray


def certified_rerank(
    first: FirstStage,
    exact: TierScores,
    scale: Scale,
    margin: float,
    q: np.ndarray,
    qsq: np.ndarray,
    k: int,
    limit: int,
) -> Certified:
    """Re-score the candidates whose upper bound reaches the k-th best tier score.

    Parameters
    ----------
    first, exact, scale
        The first stage, the tier and the unit of error (:data:`FirstStage`,
        :data:`TierScores`, :data:`Scale`).
    margin : float
        The margin per unit of scale (:func:`factor`): ``ub = est + margin * scale``.
    q, qsq : float32[nq, d], float64[nq]
        Prepared queries and their squared norms.
    k : int
        Results per query (at most ``limit``).
    limit : int
        Rows the first stage can return at most (the index's size): the depth
        never exceeds it, and a search that reaches it sees every row.

    Examples
    --------
    >>> x = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], np.float32)
    >>> true = lambda q, qsq, rows: np.where(rows >= 0, (q @ x.T)[0][rows], -np.inf)
    >>> def first(q, qsq, depth):  # estimates off by at most 0.1
    ...     est = (q @ x.T) + np.array([[0.1, -0.1, 0.0]], np.float32)
    ...     rows = np.argsort(-est, axis=1)[:, :depth]
    ...     return rows, np.take_along_axis(est, rows, axis=1)
    >>> q = np.array([[1.0, 0.0]], np.float32)
    >>> r = certified_rerank(first, true, plain_scale, 0.35, q, np.ones(1), 1, 3)
    >>> r.rows.tolist(), r.reranked.tolist(), r.certified.tolist()
    ([[0]], [2], [True])
    """
    nq = q.shape[0]
    rows_out = np.full((nq, k), -1, np.int64)
    scores_out = np.full((nq, k), -np.inf, np.float32)
    reranked = np.zeros(nq, np.int64)
    certified = np.zeros(nq, bool)
    todo = np.arange(nq)
    seen_rows = np.full((nq, 0), -1, np.int64)  # rows re-scored by an earlier pass
    seen_sc = np.full((nq, 0), -np.inf, np.float32)
    depth = min(limit, max(START_DEPTH, 4 * k))
    while todo.size:
        qt, qsqt = q[todo], qsq[todo]
        rows, est = first(qt, qsqt, depth)
        ub = est + margin * scale(qsqt, est)
        new_rows, new_sc = _rescore_by_bound(exact, qt, qsqt, rows, ub, k, seen_rows, seen_sc)
        seen_rows = np.concatenate([seen_rows, new_rows], axis=1)
        seen_sc = np.concatenate([seen_sc, new_sc], axis=1)
        best_rows, best_sc = topk(seen_sc, k, ids=seen_rows)
        seen_all = (rows[:, -1] < 0) | (depth >= limit)
        ok = seen_all | (ub[:, -1] < best_sc[:, -1])
        done = ok | (depth >= min(limit, MAX_DEPTH))
        reranked[todo] += (new_rows >= 0).sum(axis=1)
        rows_out[todo[done]] = best_rows[done]
        scores_out[todo[done]] = best_sc[done]
        certified[todo[done]] = ok[done]
        todo = todo[~done]
        seen_rows, seen_sc = seen_rows[~done], seen_sc[~done]
        depth = min(limit, MAX_DEPTH, depth * 4)
    return Certified(rows_out, scores_out, reranked, certified)


def _rescore_by_bound(exact, q, qsq, rows, ub, k, seen_rows, seen_sc):
    """Re-score candidates in the order of their upper bounds, ``k`` at a time, while
    the next bound reaches the k-th best tier score so far (counting the rows an
    earlier pass re-scored, ``seen_rows`` with ``seen_sc``, which are not re-scored
    again). Without earlier rows the first ``k`` are re-scored whatever their bounds.
    Returns the rows re-scored and their scores (``-1`` / ``-inf`` padded)."""
    nq, depth = rows.shape
    order = np.argsort(-ub, axis=1, kind="stable")
    rows = np.take_along_axis(rows, order, axis=1)
    ub = np.take_along_axis(ub, order, axis=1)
    best_rows, best_sc = topk(seen_sc, k, ids=seen_rows)
    out_rows = np.full((nq, depth), -1, np.int64)
    out_sc = np.full((nq, depth), -np.inf, np.float32)
    live = np.arange(nq)
    pos = 0
    while live.size and pos < depth:
        cand = rows[live, pos : pos + k]
        if pos or seen_rows.shape[1]:  # past the head: only rows whose bound reaches L
            cand = np.where(ub[live, pos : pos + k] >= best_sc[live, -1:], cand, -1)
        if seen_rows.shape[1]:
            again = (cand[:, :, None] == seen_rows[live, None, :]).any(axis=2)
            cand = np.where(again, -1, cand)
        sc = exact(q[live], qsq[live], cand)
        out_rows[live, pos : pos + k] = cand
        out_sc[live, pos : pos + k] = sc
        merged_rows = np.concatenate([best_rows[live], cand], axis=1)
        merged_sc = np.concatenate([best_sc[live], sc], axis=1)
        best_rows[live], best_sc[live] = topk(merged_sc, k, ids=merged_rows)
        pos += k
        if pos < depth:
            live = live[(ub[live, pos] >= best_sc[live, -1]) & (rows[live, pos] >= 0)]
    used = np.flatnonzero((out_rows >= 0).any(axis=0))
    return out_rows[:, used], out_sc[:, used]
