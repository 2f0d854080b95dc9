"""What the advisor measures of a codec or an index: recall, distortion, graph kept.

All functions take rows already prepared for the metric
(:func:`vecpress.advisor.groundtruth.prepare`: unit rows for cosine) and return plain
floats, so results serialise to JSON as they are.

* :func:`recall_with_ties` — recall@k counting ties as ann-benchmarks does: a
  returned id is correct when its *exact* score is within ``eps`` of the exact
  k-th best score, so data with duplicate vectors is not penalised for
  returning an equally good neighbour.
* :func:`recall_k_at_r` — the fraction of the exact top-k found in a longer
  first-stage list of R candidates (this bounds the recall after re-ranking).
* :func:`graph_recall` — the fraction of each sample vector's exact 10 nearest
  neighbours (itself excluded) that are still its 10 nearest after both sides
  are decoded: how well a kNN graph survives compression.
* :func:`distortion` — relative MSE of decoding and the bias and spread of the
  inner-product estimate ``codec.score`` against the exact products.
"""

from __future__ import annotations

import numpy as np

from .groundtruth import brute_force, exact_scores

#: absolute score tolerance of a tie (ann-benchmarks uses 1e-3 on distances)
TIE_EPS = 1e-3


def found_scores(queries: np.ndarray, base: np.ndarray, ids: np.ndarray, metric: str):
    """Exact scores of the returned ``ids`` (``-inf`` where an id is -1)."""
    valid = ids >= 0
    rows = base[np.where(valid, ids, 0)]  # nq x k x d
    s = np.einsum("qd,qkd->qk", queries, rows)
    if metric == "l2":
        s = (
            2 * s
            - np.einsum("qkd,qkd->qk", rows, rows)
            - np.einsum("qd,qd->q", queries, queries)[:, None]
        )
    return np.where(valid, s, -np.inf).astype(np.float32)


def recall_with_ties(
    queries: np.ndarray,
    base: np.ndarray,
    found: np.ndarray,
    true_scores: np.ndarray,
    metric: str,
    *,
    eps: float = TIE_EPS,
) -> np.ndarray:
    """Per-query recall@k, ties counted: ``float64[nq]``.

    ``found`` are the returned ids (``int64[nq, k]``), ``true_scores`` the exact
    top-k scores of each query (best first). Under ``"l2"`` the tolerance applies
    to distances, as in ann-benchmarks.

    Examples
    --------
    >>> base = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    >>> q = np.array([[1, 0]], np.float32)
    >>> recall_with_ties(q, base, np.array([[1]]), np.array([[1.0]]), "ip")  # id 1 ties id 0
    array([1.])
    """
    got = found_scores(queries, base, found, metric)
    kth = true_scores[:, -1:]
    if metric == "l2":
        ok = np.sqrt(np.maximum(-got, 0)) <= np.sqrt(np.maximum(-kth, 0)) + eps
        ok &= np.isfinite(got)
    else:
        ok = got >= kth - eps
    return ok.sum(axis=1) / true_scores.shape[1]


def strict_recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-query recall@k counting shared ids only: ``float64[nq]``.

    Examples
    --------
    >>> strict_recall(np.array([[1, 2], [3, 4]]), np.array([[2, 5], [3, 4]]))
    array([0.5, 1. ])
    """
    hits = [np.isin(t, f).sum() for f, t in zip(found, truth, strict=True)]
    return np.asarray(hits, np.float64) / truth.shape[1]


def recall_k_at_r(candidates: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` (exact top-k ids) found in ``candidates``.

    Examples
    --------
    >>> recall_k_at_r(np.array([[5, 3, 9, 1]]), np.array([[1, 2]]))
    0.5
    """
    return float(strict_recall(candidates, truth).mean())


def mean_and_se(per_query: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt(n); 0 for a single value)."""
    n = per_query.size
    se = float(per_query.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return float(per_query.mean()), se


def graph_recall(
    sample: np.ndarray, base: np.ndarray, decoded_sample, decoded_base, metric: str, k: int = 10
) -> float:
    """Fraction of the exact k-NN of ``sample`` rows in ``base`` kept after decoding both.

    ``sample`` rows must be rows of ``base`` (each is excluded from its own
    neighbours by dropping its best match, which for a stored row is itself
    or an exact duplicate of it).
    """
    true_ids, _ = brute_force(sample, base, k + 1, metric)
    code_ids, _ = brute_force(decoded_sample, decoded_base, k + 1, metric)
    return recall_k_at_r(code_ids[:, 1:], true_ids[:, 1:])


def distortion(codec, x: np.ndarray, queries: np.ndarray) -> dict:
    """Relative decoding MSE and the bias/spread of the inner-product estimate.

    Returns ``{"mse": E|x - x̂|² / E|x|², "ip_bias": mean(est - exact),
    "ip_spread": std(est - exact)}`` over all query × row pairs. Codecs that
    cannot decode report ``mse`` as ``None``.
    """
    codes = codec.encode(x)
    est = codec.score(queries, codes)
    err = est - exact_scores(queries, x, "ip")
    try:
        x_hat = codec.decode(codes)
        mse = float(((x - x_hat) ** 2).sum() / max((x * x).sum(), 1e-30))
    except NotImplementedError:
        mse = None
    return {"mse": mse, "ip_bias": float(err.mean()), "ip_spread": float(err.std())}
