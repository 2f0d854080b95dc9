"""Transforms: stages that map R^d to R^d (or, reducing, to R^d') before the quantizer.

Every transform but ``pca`` is orthogonal or a translation, so inner products
with the original vectors can be recovered exactly:

* ``center`` subtracts the training mean ``mu`` from vectors *and* queries, and
  the codec stores the exact per-vector term ``<mu, x - mu>`` in each row, so
  ``<q, x> = <q - mu, x - mu> + <mu, x - mu> + <q, mu>``: scores still estimate
  the inner product with the uncentred ``x``, and the estimated part scales with
  ``|q - mu|`` instead of ``|q|`` (what faiss's RaBitQ does with its centroid).
  The term is a field of the quantizer's ``field_dtype``; when that is float16
  it is stored as ``term * 2**-term_exp``, with ``term_exp`` fitted by
  :meth:`vecpress.Codec.fit` from the largest ``|<mu, x - mu>|`` of the
  training rows (:func:`~vecpress.codecs.quantizers.base.field_exponent`; recorded in
  the stage's config, absent when 0);
* ``haar`` is a dense uniformly random rotation (QR of a Gaussian matrix with
  the signs of ``diag(R)`` folded in), stored as a matrix;
* ``hd1``/``hd2``/``hd3`` are 1, 2 or 3 randomized Hadamard rounds (see
  :mod:`vecpress.kernels.hadamard`), exactly orthogonal on R^d for every d,
  stored as their signs, permutations and Givens rotations (codecs saved
  before the mixing steps keep their legacy rounds: :class:`Hadamard`).

``pca<d'>`` centres and projects onto the top ``d'`` principal directions of
the training rows (weighted when they were drawn by leverage score):
``x -> P (x - mu)``, queries ``q -> P q`` with the offset ``<q, mu>``, so
``<q, x> ≈ <P q, P (x - mu)> + <q, mu>``, exact up to the variance outside the
kept directions.

The query path differs from the database path: a rotation rotates the query
too, a translation leaves the query unchanged and contributes an additive
offset.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..errors import NotFittedError
from ..kernels.hadamard import (
    hadamard_rounds,
    mixing_steps,
    random_rounds,
    random_steps,
    steps_per_round,
)
from ..kernels.rows import row_dots


class Transform:
    """Base class of the transform stages (see the module docstring)."""

    name: ClassVar[str]
    needs_data: ClassVar[bool] = False
    #: whether the codec stores this stage's exact per-vector term next to the codes
    #: (``center``: ``<mu, x - mu>``, see :meth:`Center.term`)
    stores_term: ClassVar[bool] = False
    #: whether mapping a query multiplies it by a dense matrix (a BLAS product even for
    #: one query, which a multi-threaded BLAS would spread over its threads)
    dense: ClassVar[bool] = False

    def __init__(self) -> None:
        self.d: int | None = None
        self.fitted = False

    @property
    def param(self) -> int | None:
        """The spec's integer parameter (``pca<d'>``'s ``d'``), or ``None``."""
        return None

    @property
    def spec(self) -> str:
        return self.name if self.param is None else f"{self.name}{self.param}"

    def setup(self, d: int, rng: np.random.Generator) -> None:
        """Draw the training-free state for dimension ``d``."""
        self.d = d
        self.fitted = not self.needs_data

    def out_dim(self, d: int) -> int:
        """The dimension of the output for inputs of dimension ``d`` (the same, but
        for dimension reductions)."""
        return d

    def fit(
        self, x: np.ndarray, *, weights: np.ndarray | None = None, queries: np.ndarray | None = None
    ) -> None:
        """Learn from (already transformed) training rows ``x``; default: nothing.

        Every stage -- transform or quantizer -- fits with this signature:
        ``weights`` (one per row, e.g. leverage sampling's) and ``queries`` (a
        sample of the queries, mapped by the stages before) are there for the
        stages that use them and ignored by the others.
        """

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def inverse(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def query(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Map queries; return ``(q', offset)`` with ``<q, x> = <q', T x> + offset``."""
        return self.forward(q), None

    def config(self) -> dict:
        cfg = {"name": self.name, "d": self.d}
        if self.param is not None:
            cfg["param"] = self.param
        return cfg

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def restore(self, config: dict, arrays: dict[str, np.ndarray]) -> None:
        self.d = config["d"]
        self.fitted = True


class Center(Transform):
    """Subtract the training mean (learned by ``fit``)."""

    name = "center"
    needs_data = True
    stores_term = True

    def __init__(self) -> None:
        super().__init__()
        #: exponent of the stored centring term's scale (module docstring); set by Codec.fit
        self.term_exp = 0

    def fit(
        self, x: np.ndarray, *, weights: np.ndarray | None = None, queries: np.ndarray | None = None
    ) -> None:
        """Learn the mean of ``x`` (weighted by ``weights`` when given)."""
        if weights is None:
            self.mean_ = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        else:
            w = np.asarray(weights, np.float64)
            self.mean_ = (w @ x.astype(np.float64) / w.sum()).astype(np.float32)
        self.fitted = True

    def _check(self) -> None:
        if not self.fitted:
            raise NotFittedError("'center' needs fit(X) to learn the mean before use")

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check()
        return x - self.mean_

    def inverse(self, y: np.ndarray) -> np.ndarray:
        self._check()
        return y + self.mean_

    def query(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(q - mean, <q, mean>)``, the offset summed in float64 and rounded once
        (:func:`~vecpress.kernels.rows.row_dots`): a query's offset is the same in any
        batch, and the same as a one-query search's compiled preparation computes it
        (:mod:`vecpress.kernels.queries`)."""
        self._check()
        return q - self.mean_, row_dots(np.ascontiguousarray(q, np.float32), self.mean_)

    def term(self, x: np.ndarray) -> np.ndarray:
        """The exact per-vector term ``<mu, x - mu>`` stored next to the codes."""
        self._check()
        return (x - self.mean_) @ self.mean_

    def config(self) -> dict:
        cfg = super().config()
        if self.term_exp:  # absent (0) for ordinary data: such blobs read as before
            cfg["term_exp"] = self.term_exp
        return cfg

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_}

    def restore(self, config: dict, arrays: dict[str, np.ndarray]) -> None:
        from .quantizers.base import checked_field_exp

        super().restore(config, arrays)
        self.mean_ = _checked(arrays, "mean", (self.d,), np.float32)
        self.term_exp = checked_field_exp(config.get("term_exp", 0))


class Haar(Transform):
    """Dense uniformly random rotation (O(d^2) per vector)."""

    name = "haar"
    dense = True

    def setup(self, d: int, rng: np.random.Generator) -> None:
        super().setup(d, rng)
        g = rng.standard_normal((d, d))
        qm, r = np.linalg.qr(g)
        qm *= np.sign(np.diag(r))[None, :]
        self.matrix_ = np.ascontiguousarray(qm, dtype=np.float32)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x @ self.matrix_.T

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return y @ self.matrix_

    def arrays(self) -> dict[str, np.ndarray]:
        return {"matrix": self.matrix_}

    def restore(self, config: dict, arrays: dict[str, np.ndarray]) -> None:
        super().restore(config, arrays)
        self.matrix_ = _checked(arrays, "matrix", (self.d, self.d), np.float32)


class Hadamard(Transform):
    """``rounds`` randomized Hadamard rounds, O(d log d) per vector.

    New codecs use the mixing steps of :mod:`vecpress.kernels.hadamard` and
    record ``"mix": 2`` in the stage config; a config without that key (codecs
    and index files saved before) restores the legacy rounds, so saved files
    decode and score exactly as before. A codec with the mixing steps is a
    version-3 blob (:mod:`vecpress.codecs.codec`), and the two layouts store
    their arrays under different names (``step_*``, ``signs``/``perms``), so a
    vecpress that predates the mixing steps refuses a new file, naming its
    version, instead of misreading it.
    """

    #: rotation layout of new codecs (1: legacy rounds, 2: mixing steps)
    MIX = 2

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds
        self.mix = self.MIX

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"hd{self.rounds}"

    def setup(self, d: int, rng: np.random.Generator) -> None:
        super().setup(d, rng)
        self.mix = self.MIX
        if self.mix == 1:
            self.signs_, self.perms_ = random_rounds(d, self.rounds, rng)
        else:
            self.signs_, self.perms_, self.cos_, self.sin_ = random_steps(d, self.rounds, rng)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.mix == 1:
            return hadamard_rounds(x, self.signs_, self.perms_, False)
        return mixing_steps(x, self.signs_, self.perms_, self.cos_, self.sin_, False)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        if self.mix == 1:
            return hadamard_rounds(y, self.signs_, self.perms_, True)
        return mixing_steps(y, self.signs_, self.perms_, self.cos_, self.sin_, True)

    def config(self) -> dict:
        cfg = super().config()
        if self.mix != 1:  # absent for the legacy rounds: such blobs read as before
            cfg["mix"] = self.mix
        return cfg

    def arrays(self) -> dict[str, np.ndarray]:
        if self.mix == 1:
            return {"signs": self.signs_, "perms": self.perms_}
        return {
            "step_signs": self.signs_,
            "step_perms": self.perms_,
            "step_cos": self.cos_,
            "step_sin": self.sin_,
        }

    def restore(self, config: dict, arrays: dict[str, np.ndarray]) -> None:
        super().restore(config, arrays)
        mix = config.get("mix", 1)
        if type(mix) is not int or mix not in (1, 2):
            raise ValueError(f"unknown hadamard layout 'mix': {mix!r} (this vecpress reads 1, 2)")
        self.mix = mix
        if mix == 1:
            shape = (self.rounds, self.d)
            self.signs_ = _checked(arrays, "signs", shape, np.float32)
            self.perms_ = _checked(arrays, "perms", shape, np.int32)
        else:
            shape = (self.rounds * steps_per_round(self.d), self.d)
            self.signs_ = _checked(arrays, "step_signs", shape, np.float32)
            self.perms_ = _checked(arrays, "step_perms", shape, np.int32)
            pairs = (shape[0], self.d // 2)
            self.cos_ = _checked(arrays, "step_cos", pairs, np.float32)
            self.sin_ = _checked(arrays, "step_sin", pairs, np.float32)
            c, s = self.cos_.astype(np.float64), self.sin_.astype(np.float64)
            if not (np.abs(c * c + s * s - 1.0) <= 1e-6).all():
                raise ValueError("hadamard Givens rotations must have cos^2 + sin^2 = 1")
        if not np.isin(self.signs_, (-1.0, 1.0)).all():
            raise ValueError("hadamard signs must be +1 or -1")
        for p in self.perms_:
            if not np.array_equal(np.sort(p), np.arange(self.d)):
                raise ValueError("hadamard permutation is not a permutation of range(d)")
        if mix == 2 and steps_per_round(self.d) == 2:
            p = 1 << (self.d.bit_length() - 1)
            tail = np.arange(p, self.d)
            if any(not np.array_equal(q[p:], tail) for q in self.perms_[1::2]):
                raise ValueError("hadamard odd-step permutation must keep coordinates p..d-1")


def _checked(arrays: dict, key: str, shape: tuple, dtype) -> np.ndarray:
    """Fetch a state array and check its shape and dtype (for restore)."""
    if key not in arrays:
        raise ValueError(f"missing state array {key!r}")
    a = arrays[key]
    if a.shape != shape or a.dtype != np.dtype(dtype):
        raise ValueError(
            f"state array {key!r} should be {np.dtype(dtype)}{list(shape)}, "
            f"found {a.dtype}{list(a.shape)}"
        )
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"state array {key!r} holds NaN or Inf")
    return np.array(a)  # writable private copy


class Projection(Transform):
    """Centre, then map to ``d'`` dimensions: data by ``D``, queries by ``Q``, back by
    ``P`` (three ``d' x d`` matrices, :meth:`maps`), so that
    ``<q, x> ≈ <Q q, D (x − μ)> + <q, μ>`` (the offset exact)."""

    needs_data = True
    dense = True

    def __init__(self, out: int) -> None:
        super().__init__()
        self.out = out

    @property
    def param(self) -> int:
        return self.out

    def setup(self, d: int, rng: np.random.Generator) -> None:
        if self.out > d:
            raise ValueError(f"{self.spec}: cannot keep {self.out} dimensions of d={d}")
        super().setup(d, rng)

    def out_dim(self, d: int) -> int:
        return self.out

    def maps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(D, Q, P)``: data, query and inverse maps, each float32 ``d' x d``."""
        raise NotImplementedError

    def _check(self) -> None:
        if not self.fitted:
            raise NotFittedError(f"{self.spec!r} needs fit(X) to learn its projections")

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check()
        return np.ascontiguousarray((x - self.mean_) @ self.maps()[0].T, np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        self._check()
        return np.ascontiguousarray(y @ self.maps()[2] + self.mean_, np.float32)

    def query(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        self._check()
        return np.ascontiguousarray(q @ self.maps()[1].T, np.float32), q @ self.mean_

    def restore(self, config: dict, arrays: dict[str, np.ndarray]) -> None:
        super().restore(config, arrays)
        self.mean_ = _checked(arrays, "mean", (self.d,), np.float32)


class PCA(Projection):
    """Centre and project onto the top ``d'`` principal directions (learned by ``fit``)."""

    name = "pca"

    def fit(
        self, x: np.ndarray, *, weights: np.ndarray | None = None, queries: np.ndarray | None = None
    ) -> None:
        """Principal directions of ``x`` (weighted by ``weights`` when given)."""
        x64 = x.astype(np.float64)
        w = np.ones(x.shape[0]) if weights is None else np.asarray(weights, np.float64)
        mean = w @ x64 / w.sum()
        xc = x64 - mean
        cov = xc.T @ (xc * w[:, None]) / w.sum()
        eig, vecs = np.linalg.eigh(cov)
        order = np.argsort(eig)[::-1][: self.out]
        self.mean_ = mean.astype(np.float32)
        self.components_ = np.ascontiguousarray(vecs[:, order].T, np.float32)  # d' x d
        self.fitted = True

    def maps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.components_, self.components_, self.components_

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "components": self.components_}

    def restore(self, config: dict, arrays: dict[str, np.ndarray]) -> None:
        super().restore(config, arrays)
        self.components_ = _checked(arrays, "components", (self.out, self.d), np.float32)
        gram = self.components_ @ self.components_.T
        if not np.allclose(gram, np.eye(self.out), atol=1e-3):
            raise ValueError("pca components are not orthonormal")


class LeanVec(Projection):
    """Separate query and database projections to ``d'`` dims (LeanVec, Tepper et al. 2023).

    The data are centred first (``x -> B (x − μ)``, queries ``q -> A q`` with the
    exact offset ``<q, μ>``, as for ``pca``), so the error that is minimised is
    the one ranking sees. ``leanvec-ood<d'>`` learns ``A`` (queries, rows
    orthonormal) and ``B`` (database) minimising ``E_q E_x (qᵀ Aᵀ B x̃ − qᵀ x̃)²``
    (``x̃ = x − μ``) from the second-moment matrix ``K_Q`` of a query sample and
    the covariance ``K_X`` of the data. That is a
    weighted rank-``d'`` approximation, ``min ‖K_Q^½ (Aᵀ B − I) K_X^½‖_F``,
    whose optimum is closed-form (Eckart–Young on ``T = K_Q^½ K_X^½ = U S Vᵀ``):
    ``Aᵀ B = K_Q^-½ U_d' S_d' V_d'ᵀ K_X^-½``; ``A``'s rows are then
    orthonormalised (QR) with the triangular factor moved into ``B``. So it
    is the global optimum over all rank-``d'`` maps, with no Frank–Wolfe
    iterations. ``leanvec<d'>`` is the in-distribution case ``K_Q = K_X``, which
    reduces to projecting both on the top principal directions of the second
    moments, i.e. ``pca<d'>``. ``decode`` maps back by the pseudo-inverse of ``B``.
    """

    #: ridge added to both second-moment matrices, relative to their mean eigenvalue
    RIDGE = 1e-6
    #: shrinkage of the query second moments toward the data's (None: d / (m + d))
    SHRINK: float | None = None

    def __init__(self, out: int, ood: bool) -> None:
        super().__init__(out)
        self.ood = ood

    @property
    def name(self) -> str:  # type: ignore[override]
        return "leanvec-ood" if self.ood else "leanvec"

    @staticmethod
    def _powers(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(K^½, K^-½)`` of a symmetric PSD matrix, with a small ridge."""
        lam, v = np.linalg.eigh(k)
        # relative to the spectrum (data of any scale): the floor only guards an all-zero K
        lam = np.maximum(lam, 0) + LeanVec.RIDGE * max(lam.mean(), np.finfo(np.float64).tiny)
        return (v * np.sqrt(lam)) @ v.T, (v / np.sqrt(lam)) @ v.T

    def fit(
        self, x: np.ndarray, *, weights: np.ndarray | None = None, queries: np.ndarray | None = None
    ) -> None:
        """Learn ``A`` and ``B`` from the data ``x`` and (for OOD) a query sample."""
        if self.ood and queries is None:
            raise ValueError(
                f"{self.spec} learns from queries as well as data: fit(X, queries=Q) with a "
                "sample of the queries the index will serve"
            )
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=0)
        x64 -= mean
        kx = x64.T @ x64 / x.shape[0]
        self.mean_ = mean.astype(np.float32)
        if self.ood:
            q64 = np.asarray(queries, np.float64)
            kq = q64.T @ q64 / q64.shape[0]
            # few queries estimate K_Q poorly in its weak directions, which K_Q^-1/2
            # would amplify: shrink it toward (scaled) K_X by d / (m + d)
            alpha = self.SHRINK if self.SHRINK is not None else x.shape[1] / (len(q64) + x.shape[1])
            kq = (1 - alpha) * kq + alpha * kx * (np.trace(kq) / max(np.trace(kx), 1e-30))
        else:
            kq = kx
        kq_half, kq_mhalf = self._powers(kq)
        kx_half, kx_mhalf = self._powers(kx)
        u, s, vt = np.linalg.svd(kq_half @ kx_half)
        d = self.out
        at = kq_mhalf @ u[:, :d]  # d x d'
        b = (s[:d, None] * vt[:d]) @ kx_mhalf  # d' x d
        qmat, r = np.linalg.qr(at)
        self.query_ = np.ascontiguousarray(qmat.T, np.float32)  # A: d' x d, orthonormal rows
        self.data_ = np.ascontiguousarray(r @ b, np.float32)  # B: d' x d
        self._set_back()
        self.fitted = True

    def maps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.data_, self.query_, self._back

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "query": self.query_, "data": self.data_}

    def restore(self, config: dict, arrays: dict[str, np.ndarray]) -> None:
        super().restore(config, arrays)
        self.query_ = _checked(arrays, "query", (self.out, self.d), np.float32)
        self.data_ = _checked(arrays, "data", (self.out, self.d), np.float32)
        if not np.allclose(self.query_ @ self.query_.T, np.eye(self.out), atol=1e-3):
            raise ValueError("leanvec query projection rows are not orthonormal")
        self._set_back()

    def _set_back(self) -> None:
        """``P``: the pseudo-inverse of ``D``, transposed (``decode`` maps back by it)."""
        pinv = np.linalg.pinv(self.data_.astype(np.float64))
        self._back = np.ascontiguousarray(pinv.T, np.float32)
