"""Model migration without re-embedding: a map from a new model's embeddings to an old one's.

A better embedding model appears, and re-embedding a large corpus costs days. With
a few thousand texts embedded by both models (``src``: the new model, ``dst``: the
old one, the one the index holds), an :class:`Adapter` learns a map ``f`` with
``f(src) ≈ dst``; queries embedded by the new model then search the old index
through it (``Index.search(q, k, adapter=adapter)``). Three kinds, from the most
constrained to the most flexible (rows are centred on each side's mean first):

``"procrustes"``
    ``f(q) = (q - μ_src) R + μ_dst`` with ``R`` orthogonal (semi-orthogonal when the
    dimensions differ: ``d_src x d_dst`` with orthonormal rows or columns) minimizing
    ``‖A R - B‖`` over the centred pairs: ``R = U Vᵀ`` from the SVD ``Aᵀ B = U Σ Vᵀ``
    (Schönemann, 1966). It preserves angles, needs few pairs (it has
    ``d (d - 1) / 2`` degrees of freedom, but every pair constrains ``d`` of them)
    and cannot overfit much.
``"linear"``
    ``f(q) = (q - μ_src) W + μ_dst``, ``W`` the least-squares map with a small ridge
    (``λ = 1e-3`` times the mean eigenvalue of ``AᵀA``): needs at least ``d_src``
    pairs (fewer is refused: ``W`` would be underdetermined).
``"lowrank-residual"``
    Procrustes, plus a rank-``r`` linear correction of what it leaves
    (``E = B - A R``): the reduced-rank regression of ``E`` on ``A`` (the ridge
    solution projected on the top ``r`` right singular vectors of its fit), ``r``
    by default ``min(64, min(d_src, d_dst) // 4)``; needs at least ``2 r`` pairs.

If every ``dst`` row has unit norm (cosine models), mapped queries are normalised.

**Drift** (:func:`drift`, ``Index.drift``): how a fitted codec serves new rows against
rows like those it was fitted on -- see :func:`drift`.
:meth:`Adapter.fit` holds out a tenth of the pairs (at least one, when there are
ten or more), fits on the rest, reports the mean cosine between mapped and true
held-out rows (``report["heldout_cosine"]``, and the identity's and the procrustes
map's for comparison) and how often a mapped held-out row finds its own pair among
the 10 held-out old-model rows nearest to it (``report["heldout_found_at_10"]``), then
refits on all pairs. The second is the one to trust for search: when the old model's
rows share a large common direction (averaged word vectors: cosines of 0.9 between
unrelated texts), a map can reach a high mean cosine while ranking poorly.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> old = rng.standard_normal((2000, 16)).astype(np.float32)
>>> rot, _ = np.linalg.qr(rng.standard_normal((16, 16)))
>>> new = (old @ rot.T).astype(np.float32)  # the "new model": a rotation of the old
>>> adapter = Adapter.fit(new, old, kind="procrustes")
>>> round(adapter.report["heldout_cosine"], 4)
1.0
>>> np.allclose(adapter.transform(new[:3]), old[:3], atol=1e-4)
True
>>> Adapter.from_bytes(adapter.to_bytes()).kind
'procrustes'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._validation import as_vectors, check_positive_int
from .container import pack, unpack
from .errors import FormatError

__all__ = ["KINDS", "Adapter", "DriftReport", "drift"]

KINDS = ("procrustes", "linear", "lowrank-residual")
FORMAT_NAME = "vecpress-adapter"
FORMAT_VERSION = 1
#: the ridge of ``"linear"`` and of the low-rank correction, relative to the mean
#: eigenvalue of the centred sources' Gram matrix
RIDGE = 1e-3
#: rows of each sample on which :func:`drift` measures distortion and subspace shares
DRIFT_ROWS = 20_000


@dataclass(frozen=True)
class Adapter:
    """A fitted map from one model's embeddings (``d_src``) to another's (``d_dst``).

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    src_mean : float32[d_src]
    dst_mean : float32[d_dst]
    matrix : float32[d_src, d_dst]
        The map of centred rows (for ``"lowrank-residual"``, the rotation plus its
        correction, multiplied out).
    normalize : bool
        Whether mapped rows are scaled to unit norm.
    report : dict
        What the fit measured: ``pairs``, ``heldout``, ``heldout_cosine``,
        ``heldout_found_at_10`` (``None`` under 20 held-out pairs), ``identity_cosine``
        (when the dimensions agree), ``procrustes_cosine``, and ``rank`` for
        ``"lowrank-residual"``.
    """

    kind: str
    src_mean: np.ndarray
    dst_mean: np.ndarray
    matrix: np.ndarray
    normalize: bool
    report: dict = field(default_factory=dict)

    @property
    def d_src(self) -> int:
        return int(self.src_mean.size)

    @property
    def d_dst(self) -> int:
        return int(self.dst_mean.size)

    # -- fitting ---------------------------------------------------------------
    @classmethod
    def fit(cls, src, dst, kind: str = "procrustes", rank: int | None = None,
            seed: int = 0) -> Adapter:  # fmt: skip
        """Fit an adapter on paired embeddings of the same texts (module docstring).

        Parameters
        ----------
        src, dst : array_like, float[n, d_src] and float[n, d_dst]
            Row ``i`` of each embeds the same text: ``src`` by the new model (the
            queries' model), ``dst`` by the old one (the index's).
        kind : str
            ``"procrustes"``, ``"linear"`` or ``"lowrank-residual"``.
        rank : int, optional
            The correction's rank (``"lowrank-residual"`` only).
        seed : int
            Which pairs are held out.

        Raises
        ------
        ValueError
            Different row counts, NaN or Inf, fewer than 2 pairs, an unknown kind, a
            rank out of range, or fewer pairs than the kind needs.
        """
        src = as_vectors(src, "src", allow_empty=False)
        dst = as_vectors(dst, "dst", allow_empty=False)
        if src.shape[0] != dst.shape[0]:
            raise ValueError(
                f"src and dst must pair the same texts row by row: src has {src.shape[0]} "
                f"rows, dst {dst.shape[0]}"
            )
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, found {kind!r}")
        n, d_src = src.shape
        d_dst = dst.shape[1]
        if kind == "lowrank-residual":
            rank = min(64, max(1, min(d_src, d_dst) // 4)) if rank is None else rank
            if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
                raise TypeError(f"rank must be an int, found {type(rank).__name__}")
            if not 1 <= rank <= min(d_src, d_dst):
                raise ValueError(f"rank must be in [1, {min(d_src, d_dst)}], found {rank}")
        elif rank is not None:
            raise ValueError(f"rank applies to kind 'lowrank-residual' only, not {kind!r}")
        need = {"procrustes": 2, "linear": d_src + 1, "lowrank-residual": 2 * (rank or 1)}[kind]
        if n < need:
            why = {
                "procrustes": "two pairs at least",
                "linear": f"a pair per source dimension ({d_src}) or more, else the map is "
                "underdetermined (procrustes needs far fewer)",
                "lowrank-residual": f"twice the rank ({rank}) or more",
            }[kind]
            raise ValueError(f"kind {kind!r} needs {why}: found {n} pairs")
        normalize = bool(np.allclose(np.linalg.norm(dst, axis=1), 1.0, atol=1e-3))
        report: dict = {"pairs": n, "kind": kind}
        held = _held_out(n, seed)
        if held.size and n - held.size >= need:
            train = np.setdiff1d(np.arange(n), held)
            b = _fit_parts(src[train], dst[train], "procrustes", None)
            a = b if kind == "procrustes" else _fit_parts(src[train], dst[train], kind, rank)
            report["heldout"] = int(held.size)
            mapped = _apply(src[held], *a, normalize)
            report["heldout_cosine"] = _cosine(mapped, dst[held])
            report["heldout_found_at_10"] = _found_at_10(mapped, dst[held])
            report["procrustes_cosine"] = _cosine(_apply(src[held], *b, normalize), dst[held])
            if d_src == d_dst:
                report["identity_cosine"] = _cosine(src[held], dst[held])
        else:
            report["heldout"] = 0
            report["heldout_cosine"] = report["heldout_found_at_10"] = None
        if rank is not None:
            report["rank"] = int(rank)
        src_mean, dst_mean, matrix = _fit_parts(src, dst, kind, rank)
        return cls(kind, src_mean, dst_mean, matrix, normalize, report)

    # -- using -----------------------------------------------------------------
    def transform(self, q) -> np.ndarray:
        """Map rows of the source model into the destination's space (float32).

        Raises
        ------
        ValueError
            Rows that are not finite, or not of dimension ``d_src``.
        """
        q = as_vectors(q, "queries", dim=self.d_src)
        return _apply(q, self.src_mean, self.dst_mean, self.matrix, self.normalize)

    # -- bytes -----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The adapter in the project's container (JSON config, checksummed arrays)."""
        config = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": self.kind,
                  "normalize": self.normalize, "report": self.report}  # fmt: skip
        arrays = {"src_mean": self.src_mean, "dst_mean": self.dst_mean, "matrix": self.matrix}
        return pack(config, arrays)

    @classmethod
    def from_bytes(cls, blob) -> Adapter:
        """An adapter from :meth:`to_bytes`'s bytes.

        Raises
        ------
        FormatError
            Not an adapter, or a damaged one.
        """
        config, arrays = unpack(blob, source="adapter")
        if config.get("format") != FORMAT_NAME or config.get("version") != FORMAT_VERSION:
            raise FormatError(
                f"adapter: format {config.get('format')!r:.80} version "
                f"{config.get('version')!r:.20}, expected {FORMAT_NAME!r} version "
                f"{FORMAT_VERSION}"
            )
        try:
            src_mean, dst_mean, matrix = arrays["src_mean"], arrays["dst_mean"], arrays["matrix"]
        except KeyError:
            raise FormatError("adapter: arrays missing") from None
        ok = config.get("kind") in KINDS and isinstance(config.get("normalize"), bool)
        ok = ok and isinstance(config.get("report"), dict) and len(arrays) == 3
        ok = ok and all(a.dtype == np.float32 for a in (src_mean, dst_mean, matrix))
        ok = ok and src_mean.ndim == dst_mean.ndim == 1
        ok = ok and matrix.shape == (src_mean.size, dst_mean.size) and src_mean.size > 0
        ok = ok and all(np.isfinite(a).all() for a in (src_mean, dst_mean, matrix))
        if not ok:
            raise FormatError("adapter: its config and arrays do not agree (damaged?)")
        return cls(config["kind"], np.array(src_mean), np.array(dst_mean), np.array(matrix),
                   config["normalize"], config["report"])  # fmt: skip


def _held_out(n: int, seed: int) -> np.ndarray:
    """A tenth of ``n`` rows (none below 10), drawn with ``seed``, sorted."""
    if n < 10:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max(1, n // 10), replace=False))


def _fit_parts(src: np.ndarray, dst: np.ndarray, kind: str, rank: int | None):
    """``(src_mean, dst_mean, matrix)`` of the map (float32), fitted in float64."""
    mu_s = src.mean(axis=0, dtype=np.float64)
    mu_d = dst.mean(axis=0, dtype=np.float64)
    a = src.astype(np.float64) - mu_s
    b = dst.astype(np.float64) - mu_d
    gram = a.T @ a
    ridge = RIDGE * max(float(np.trace(gram)) / gram.shape[0], 1e-300)
    if kind == "linear":
        m = np.linalg.solve(gram + ridge * np.eye(gram.shape[0]), a.T @ b)
    else:
        m = _procrustes(a, b)
        if kind == "lowrank-residual":
            resid = b - a @ m
            full = np.linalg.solve(gram + ridge * np.eye(gram.shape[0]), a.T @ resid)
            # reduced-rank regression: the fit's top right singular vectors
            _, _, vt = np.linalg.svd(a @ full, full_matrices=False)
            top = vt[:rank].T
            m = m + full @ top @ top.T
    return mu_s.astype(np.float32), mu_d.astype(np.float32), np.ascontiguousarray(m, np.float32)


def _procrustes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The (semi-)orthogonal ``R`` minimizing ``‖a R - b‖``: ``U Vᵀ`` of ``aᵀ b``."""
    u, _, vt = np.linalg.svd(a.T @ b, full_matrices=False)
    return u @ vt


def _apply(q, src_mean, dst_mean, matrix, normalize: bool) -> np.ndarray:
    out = (q - src_mean) @ matrix + dst_mean
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.where(norms > 0, norms, 1.0).astype(np.float32)
    return np.ascontiguousarray(out, np.float32)


def _found_at_10(mapped: np.ndarray, dst: np.ndarray) -> float | None:
    """The share of mapped rows whose own pair is among the 10 ``dst`` rows of highest
    cosine to it (``None`` below 20 rows: the top 10 would be half of them)."""
    if mapped.shape[0] < 20:
        return None
    sims = _unit(mapped).astype(np.float64) @ _unit(dst).T.astype(np.float64)
    own = np.diagonal(sims)
    return float(((sims > own[:, None]).sum(axis=1) < 10).mean())


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine between the rows of ``a`` and ``b`` (zero rows count 0)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0).mean())


@dataclass(frozen=True)
class DriftReport:
    """What :func:`drift` measured (every field also in :meth:`as_dict`).

    Attributes
    ----------
    distortion_reference, distortion_new : float
        The codec's mean squared reconstruction error over the sample's own spread
        (``E‖x̂ - x‖² / E‖x - μ_x‖²``: the share of the signal lost) on each sample.
    distortion_ratio : float
        ``distortion_new / distortion_reference``.
    mean_shift : float
        ``‖μ_new - μ_ref‖`` over the reference rows' spread (``sqrt(tr Σ_ref)``).
    outside_reference, outside_new : float
        The share of each sample's variance (about its own mean) outside the reference's
        principal subspace holding 90 % of the reference's variance (the reference's
        own share is at most 0.1 by construction; the new rows' larger share is how far
        the subspace moved).
    recall_reference, recall_new : float
        Recall@10 of the codec's estimated scores against exact ones, queries and base
        rows both from the reference sample, then both from the new one (base rows of
        equal count).
    recall_queries, recall_rows : int
        The queries and base rows of each of the two recall measurements.
    predicted_recall_change : float
        ``recall_new - recall_reference``.
    predicted_recall_change_se : float
        Its standard error from the spread of the queries' recalls
        (``sqrt((s²_reference + s²_new) / queries)``).
    refit : bool
        Whether a refit is recommended: the predicted change below ``-threshold``.
    reason : str
    """

    rows_reference: int
    rows_new: int
    distortion_reference: float
    distortion_new: float
    distortion_ratio: float
    mean_shift: float
    outside_reference: float
    outside_new: float
    recall_reference: float
    recall_new: float
    recall_queries: int
    recall_rows: int
    predicted_recall_change: float
    predicted_recall_change_se: float
    refit: bool
    reason: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def drift(codec, reference, new, *, metric: str = "ip", queries: int = 2000, rows: int = 20_000,
          threshold: float = 0.02, seed: int = 0) -> DriftReport:  # fmt: skip
    """How a fitted ``codec`` serves the rows ``new`` against ``reference`` rows (a
    sample of what it was fitted on): distortion, shift of mean and principal
    subspace, and the change of recall@10 predicted from samples (:class:`DriftReport`).

    The prediction measures recall@10 of the codec on ``queries`` rows searching
    ``rows`` other rows of the same sample, once for each sample: the same measurement
    at the same base size (the smaller sample's, where one is short), so the difference
    is the codec's, not the base size's. Base size matters: recall@10 falls as a base
    grows (closer neighbours, more near-ties), and so does the gap between two data
    sets (on 384-d sentence embeddings split by topic, a ``pca64,rq4`` codec's drop
    measured -0.048 at 2,500 rows and -0.032 at 28,000), so the default base is
    20,000 rows, or the whole sample where it is smaller (``Index.drift`` passes the
    index's size). Its standard error, from the spread of the queries' recalls, is
    reported: it grows as recall falls (one query's recall varies more), so a codec of
    low first-stage recall needs more ``queries`` for the same precision.

    A refit is recommended when the predicted change falls below ``-threshold``. The
    distortions are reported, not judged: each is over its own sample's spread, and a
    tighter cluster of new rows raises the ratio with no loss of recall.

    Parameters
    ----------
    codec : vecpress.Codec
        A fitted codec.
    reference, new : array_like, float[n, d]
        At least 100 rows each (``"cosine"``: normalised here).
    metric : str
        ``"ip"``, ``"cosine"`` or ``"l2"``: how rows are ranked.
    queries, rows : int
        Queries and base rows of each recall measurement (fewer where a sample is small:
        at most a fifth of the smaller sample as queries, the rest of it as base).
    threshold : float
        The predicted drop of recall@10 above which a refit is recommended.
    seed : int

    Examples
    --------
    A codec that keeps the 8 leading principal axes of its training rows, then rows
    whose variance has moved to the other 8:

    >>> from vecpress import Codec
    >>> rng = np.random.default_rng(0)
    >>> scale = np.r_[np.full(8, 2.0), np.full(8, 0.2)].astype(np.float32)
    >>> old = rng.standard_normal((3000, 16)).astype(np.float32) * scale
    >>> codec = Codec.from_spec("pca8,rq4", d=16).fit(old)
    >>> same = drift(codec, old[:1500], old[1500:])
    >>> same.refit, same.reason
    (False, 'no refit needed')
    >>> moved = drift(codec, old[:1500], old[1500:] * scale[::-1] / scale)
    >>> moved.refit, moved.outside_new > 0.5, moved.predicted_recall_change < -0.1
    (True, True, True)
    """
    if metric not in ("ip", "cosine", "l2"):
        raise ValueError(f"metric must be ip, cosine or l2, found {metric!r}")
    queries = check_positive_int(queries, "queries", low=10)
    rows = check_positive_int(rows, "rows", low=10)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"threshold must be a number, found {type(threshold).__name__}")
    if not (math.isfinite(threshold) and 0 <= threshold < 1):
        raise ValueError(f"threshold must be in [0, 1), found {threshold!r}")
    d = codec.d
    ref = as_vectors(reference, "reference", dim=d, allow_empty=False)
    new = as_vectors(new, "new", dim=d, allow_empty=False)
    for name, x in (("reference", ref), ("new", new)):
        if x.shape[0] < 100:
            raise ValueError(f"drift needs at least 100 {name} rows, found {x.shape[0]}")
    if metric == "cosine":
        ref, new = _unit(ref), _unit(new)
    mu = ref.mean(axis=0, dtype=np.float64)

    def spread(x: np.ndarray) -> float:
        c = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
        return max(float(np.square(c, dtype=np.float64).sum(axis=1).mean()), 1e-300)

    def distortion(x: np.ndarray) -> float:
        y = codec.decode(codec.encode(x))
        return float(np.square(y.astype(np.float64) - x).sum(axis=1).mean()) / spread(x)

    lam, vecs = np.linalg.eigh(np.cov(ref.T.astype(np.float64), bias=True))
    lam, vecs = lam[::-1], vecs[:, ::-1]
    r = int(np.searchsorted(np.cumsum(lam) / max(lam.sum(), 1e-300), 0.9)) + 1
    top = vecs[:, :r]

    def outside(x: np.ndarray) -> float:
        c = x.astype(np.float64) - x.mean(axis=0)
        total = float(np.square(c).sum())
        inside = float(np.square(c @ top).sum())
        return max(0.0, 1 - inside / total) if total > 0 else 0.0

    rng = np.random.default_rng(seed)
    smaller = min(ref.shape[0], new.shape[0])
    nq = min(queries, smaller // 5)
    nb = min(rows, smaller - nq)
    per_ref = _codec_recall(codec, ref, metric, nq, nb, rng)
    per_new = _codec_recall(codec, new, metric, nq, nb, rng)
    recall_ref, recall_new = float(per_ref.mean()), float(per_new.mean())
    se = math.sqrt((per_ref.var(ddof=1) + per_new.var(ddof=1)) / nq) if nq > 1 else math.inf
    # the distortions and subspace shares on at most DRIFT_ROWS rows of each sample
    ref_s, new_s = (x[rng.permutation(x.shape[0])[:DRIFT_ROWS]] for x in (ref, new))
    d_ref, d_new = distortion(ref_s), distortion(new_s)
    ratio = d_new / d_ref if d_ref > 0 else (1.0 if d_new == 0 else math.inf)
    change = recall_new - recall_ref
    refit = change < -threshold
    reason = (
        f"recall@10 predicted to fall by {-change:.3f} (threshold {threshold})"
        if refit
        else "no refit needed"
    )
    return DriftReport(
        rows_reference=int(ref.shape[0]), rows_new=int(new.shape[0]),
        distortion_reference=d_ref, distortion_new=d_new, distortion_ratio=float(ratio),
        mean_shift=float(np.linalg.norm(new.mean(axis=0, dtype=np.float64) - mu)
                         / math.sqrt(spread(ref))),
        outside_reference=outside(ref_s), outside_new=outside(new_s),
        recall_reference=recall_ref, recall_new=recall_new, recall_queries=nq, recall_rows=nb,
        predicted_recall_change_se=float(se),
        predicted_recall_change=float(change), refit=bool(refit), reason=reason,
    )  # fmt: skip


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n > 0, n, 1.0)).astype(np.float32)


def _codec_recall(codec, x: np.ndarray, metric: str, nq: int, nb: int, rng) -> np.ndarray:
    """Recall@10 of each of ``nq`` queries of ``codec`` on a sample of ``x``: ``nq``
    queries and ``nb`` base rows, disjoint (``float64[nq]``)."""
    pick = rng.permutation(x.shape[0])
    q, base = x[pick[:nq]], x[pick[nq : nq + nb]]
    codes = codec.encode(base)
    if metric == "l2":
        dec = codec.decode(codes).astype(np.float64)
        est = 2 * (q @ dec.T) - np.square(dec).sum(axis=1)
        exact = 2 * (q.astype(np.float64) @ base.T) - np.square(base, dtype=np.float64).sum(axis=1)
    else:
        est, exact = codec.score(q, codes), q.astype(np.float64) @ base.T.astype(np.float64)
    want = np.argpartition(-exact, 9, axis=1)[:, :10]
    got = np.argpartition(-est, 9, axis=1)[:, :10]
    return np.array([np.intersect1d(a, b).size / 10 for a, b in zip(want, got, strict=True)])
