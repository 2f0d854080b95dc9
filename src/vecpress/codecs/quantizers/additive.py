"""Additive quantizers: ``rvq<M>x<b>`` (residual) and ``lsq<M>x<b>`` (local search).

An additive quantizer codes a vector as a sum of ``M`` codewords, one from each of
``M`` codebooks of ``2^b`` full-dimensional vectors: ``x̂ = Σ_m C_m[c_m]``. Unlike a
product quantizer (:mod:`.pq`), whose codewords each cover a slice of the coordinates,
every codeword here spans all ``d`` of them, so the codebooks jointly quantize the
whole space -- the space-filling advantage that scalar and product codes give up at 1-2
bits per dimension. The price is the encoding: choosing the ``M`` codewords jointly is
a hard combinatorial problem that both families solve approximately.

``rvq<M>x<b>`` (residual quantization; Chen et al. 2010, with beam search as in
faiss's ``ResidualQuantizer``, factory key ``RQ<M>x<b>``) picks codewords one codebook
at a time, each the best for what the previous ones left, keeping the ``beam`` best
partial sums at each step (faiss's default 5; ``rvq<M>x<b>-beam<B>`` sets it).
Training learns each codebook by k-means on the residuals of the previous ones.

``lsq<M>x<b>`` (local search quantization; Martinez et al. 2016/2018, LSQ++, faiss's
``LocalSearchQuantizer``, key ``LSQ<M>x<b>``) learns all codebooks together by least
squares and encodes by iterated conditional modes with random perturbations:
``encode_ils_iters`` rounds (faiss's default 16; ``lsq<M>x<b>-ils<N>`` sets it),
each perturbing ``min(4, M)`` codes (faiss's 4 refuses ``M < 4``). faiss draws the
random starts and perturbations of the rows of one call in sequence, so an ``lsq``
row's code depends on the rows encoded with it: the same rows in the same slices give
the same codes, but a build that encodes in other chunks (streaming, distributed)
gets different, equally good codes -- the one quantizer of vecpress whose codes are
not a function of the row alone.

faiss does the training and the encoding (the codebooks are those of faiss's
quantizer trained on the same rows); vecpress stores the codebooks as an array
(``float32[M, 2^b, d]``), rebuilds the faiss object from them to encode, and scores
itself. Training uses at most :data:`TRAIN_ROWS` rows (drawn with the codec's seed):
faiss's residual quantizer learns 48 x 8-bit codebooks at d = 384 from 10,000 rows
in about two minutes on one core, and encodes ~2,300 vectors/s with beam 5 (measured
on this project's 2-core machine); ``lsq`` is slower still. faiss's residual quantizer
trains each codebook by progressive-dimension k-means by default; one plain k-means
(:class:`RVQ`'s ``progressive=False``) is 3-17 times faster and its codebooks a little
less good (one core, 16,384 unit GloVe-50 rows, beam 5, recall@10 of the decoded rows:
``rvq6x8`` 2.6 s against 13.9 s, 0.2782 against 0.2822; ``rvq12x8`` 5.1 s against 26.7
s, 0.5656 against 0.5736; 4,000 x 48 synthetic rows, ``rvq12x8``: 1.4 s against 18.9
s; random rows of a decaying spectrum, 2 codebooks: 16,384 x 384 3.2 s against 8.7 s,
2,000 x 24 0.08 s against 1.36 s). ``rvq`` keeps faiss's default, as faiss's ``RQ``
does. Code rows are
``M * b / 8`` bytes (4-bit codes two to a byte, the first in the low nibble, as
faiss packs them); ``b`` is 4 or 8.

A query is scored with look-up tables ``T[m, c] = <q, C_m[c]>`` and
``score = Σ_m T[m, code_m]`` (``= <q, x̂>``), computed for all ``M * 2^b`` codewords
at once by a BLAS product (``d`` multiply-adds per entry, where a product quantizer's
entry needs ``d / M``), and summed with float tables for 4-bit codes too: fast-scan's
8-bit tables share one scale across the ``M`` tables of a query, and a residual
quantizer's later codebooks are orders of magnitude smaller than its first, so their
entries would round to a few levels (on 3,000 rows of d = 32, ``rvq16x4``'s scores moved
by up to 0.5 for rows of norm ~7). As
with the other codecs whose queries go through a matrix product, one query's tables
computed alone and within a batch may differ in the last bit (the product's blocking
follows the batch's shape).
"""

from __future__ import annotations

import re
from typing import ClassVar

import numpy as np

from ...threads import faiss_module
from .base import Quantizer
from .pq import PQ, PQ_BITS, faiss_errors, unit_scale, unpack_codes

#: the most rows an additive quantizer trains on (64 per codeword of an 8-bit codebook)
TRAIN_ROWS = 16_384
#: rows encoded per faiss call (bounds the beam's working memory)
_ENCODE_BLOCK = 4096
#: most bytes of the residual quantizer's codeword cross products (``4 M 4^b``) its
#: encoder keeps to search the beam by look-up tables (:func:`beam_tables`)
BEAM_TABLE_BYTES = 32 << 20


def beam_tables(m: int, bits: int) -> bool:
    """Whether ``rvq<m>x<bits>`` encodes with faiss's beam look-up tables
    (``use_beam_LUT``: the inner products of every codeword pair, ``4 m 4^bits``
    bytes, made once per codec, replace each step's distance computations). The
    same distances computed another way, so the codes are the plain search's
    except where two candidates differ by float rounding. Measured on one core
    with ``klvq1``'s 23 x 8-bit codebooks at d = 384: 12,100 -> 12,900 rows/s on the
    rows its lead block encodes (the same codes), 8,800 -> 11,000 on harder
    synthetic rows (the same codes on 5,000).

    Examples
    --------
    >>> beam_tables(23, 8), beam_tables(200, 8)
    (True, False)
    """
    return 4 * m * (1 << (2 * bits)) <= BEAM_TABLE_BYTES


#: ``rvq<M>x<b>[-beam<B>]`` and ``lsq<M>x<b>[-ils<N>]``
TOKEN = re.compile(r"^(rvq|lsq)(\d+)x(\d+)(?:-(beam|ils)(\d+))?$")


class Additive(PQ):
    """Base of the additive quantizers: ``M`` codebooks of ``2^b`` vectors of dimension
    ``d``; ``effort`` is the encoder's search setting (beam width, ILS rounds)."""

    needs_data = True
    param_name = "m"
    #: the effort's name in the spec (``-beam5``) and its faiss default
    effort_name: ClassVar[str]
    default_effort: ClassVar[int]
    effort_range: ClassVar[tuple[int, int]] = (1, 256)

    def __init__(self, param: int, bits: int = 8, effort: int | None = None) -> None:
        super().__init__(param, bits)
        effort = self.default_effort if effort is None else effort
        lo, hi = self.effort_range
        if isinstance(effort, bool) or not isinstance(effort, int) or not lo <= effort <= hi:
            raise ValueError(
                f"{self.name}{param}x{bits}: {self.effort_name} must be an integer in "
                f"[{lo}, {hi}], found {effort!r}"
            )
        self.effort = effort
        #: ``(codebooks, faiss quantizer, scale)``, rebuilt from the codebooks on first encode
        self._coder = None
        self._rng: np.random.Generator | None = None

    @property
    def spec(self) -> str:
        tail = "" if self.effort == self.default_effort else f"-{self.effort_name}{self.effort}"
        return f"{self.name}{self.param}x{self.bits}{tail}"

    def config(self) -> dict:
        return {**super().config(), "effort": self.effort}

    def setup(self, d: int, rng: np.random.Generator) -> None:
        Quantizer.setup(self, d, rng)  # any d: no sub-spaces to divide it into
        self._rng = rng

    @property
    def dsub(self) -> int:
        return self.d

    # -- faiss ------------------------------------------------------------------
    def _faiss_quantizer(self):
        """A new, untrained faiss quantizer with this stage's shape and effort."""
        raise NotImplementedError

    def _coder_for(self, codebooks: np.ndarray):
        """A faiss quantizer that encodes with ``codebooks`` (``float32[M, K, d]``)."""
        faiss = faiss_module()
        aq = self._faiss_quantizer()
        faiss.copy_array_to_vector(
            np.ascontiguousarray(codebooks, np.float32).ravel(), aq.codebooks
        )
        aq.is_trained = True
        return aq

    # -- learning ---------------------------------------------------------------
    def fit(
        self, x: np.ndarray, *, weights: np.ndarray | None = None, queries: np.ndarray | None = None
    ) -> None:
        faiss = faiss_module()
        k = 1 << self.bits
        if x.shape[0] < k:
            raise ValueError(f"{self.spec} needs at least {k} training rows, found {x.shape[0]}")
        if x.shape[0] > TRAIN_ROWS:
            rng = self._rng if self._rng is not None else np.random.default_rng(0)
            x = x[np.sort(rng.choice(x.shape[0], TRAIN_ROWS, replace=False))]
        s = unit_scale(x)
        aq = self._faiss_quantizer()
        with faiss_errors(f"{self.spec} training (faiss {type(aq).__name__})"):
            aq.train(np.ascontiguousarray(x * s, np.float32))
        c = faiss.vector_to_array(aq.codebooks).astype(np.float32) / s
        self.centroids_ = c.reshape(self.param, k, self.d)
        self._coder = None
        self.fitted = True

    def restore(self, config: dict, arrays: dict[str, np.ndarray]) -> None:
        if config.get("effort") != self.effort:
            raise ValueError(f"{self.spec}: stored effort {config.get('effort')!r} differs")
        super().restore(config, arrays)

    def setup_restored(self, arrays: dict[str, np.ndarray]) -> None:
        from ..transforms import _checked

        shape = (self.param, 1 << self.bits, self.d)
        self.centroids_ = _checked(arrays, "centroids", shape, np.float32)
        if not np.isfinite(self.centroids_).all():
            raise ValueError(f"{self.spec}: codebooks hold NaN or Inf")
        self._coder = None

    # -- coding -------------------------------------------------------------------
    def encode(self, x: np.ndarray) -> np.ndarray:
        if self._coder is None or self._coder[0] is not self.centroids_:
            scale = unit_scale(self.centroids_)  # 1 but for data far from unit scale
            self._coder = (self.centroids_, self._coder_for(self.centroids_ * scale), scale)
        _, aq, scale = self._coder
        out = np.empty((x.shape[0], self.payload_size), np.uint8)
        for s in range(0, x.shape[0], _ENCODE_BLOCK):
            blk = np.ascontiguousarray(x[s : s + _ENCODE_BLOCK] * scale, np.float32)
            with faiss_errors(f"{self.spec} encoding"):
                out[s : s + blk.shape[0]] = aq.compute_codes(blk)
        return out

    def decode(self, codes: np.ndarray) -> np.ndarray:
        idx = unpack_codes(codes, self.param, self.bits)
        out = np.zeros((codes.shape[0], self.d), np.float32)
        for m in range(self.param):
            out += self.centroids_[m][idx[:, m]]
        return out

    def score(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``Σ_m T[m, code_m]`` with float tables, 4-bit codes too (module docstring)."""
        return self.float_score(q, codes)

    def tables(self, q: np.ndarray) -> np.ndarray:
        """Look-up tables ``float32[nq, M, 2^b]``: ``<q, C_m[c]>`` for every codeword, by
        one matrix product (module docstring)."""
        flat = self._transposed("codewords", self.centroids_, (2, 0, 1)).reshape(self.d, -1)
        out = np.ascontiguousarray(q, np.float32) @ flat
        return out.reshape(q.shape[0], self.param, 1 << self.bits)


class RVQ(Additive):
    """Residual quantization with beam search (faiss ``ResidualQuantizer``).

    ``progressive=False`` trains each codebook by one plain k-means on the residuals
    (faiss's ``train_type = Train_default``) instead of faiss's default,
    progressive-dimension k-means (``Train_progressive_dim``: k-means on growing
    prefixes of the dimensions): 3-17 times faster to train, for codebooks a little
    less good (module docstring). Not part of the spec: what a codec stores is its
    codebooks, however they were trained.
    """

    name = "rvq"
    effort_name = "beam"
    default_effort = 5

    def __init__(
        self, param: int, bits: int = 8, effort: int | None = None, *, progressive: bool = True
    ) -> None:
        super().__init__(param, bits, effort)
        self.progressive = bool(progressive)

    def _faiss_quantizer(self):
        faiss = faiss_module()
        rq = faiss.ResidualQuantizer(self.d, self.param, self.bits)
        rq.max_beam_size = self.effort
        if not self.progressive:
            rq.train_type = faiss.ResidualQuantizer.Train_default
        return rq

    def _coder_for(self, codebooks: np.ndarray):
        rq = super()._coder_for(codebooks)
        if beam_tables(self.param, self.bits):
            rq.use_beam_LUT = 1
            rq.compute_codebook_tables()
        return rq


class LSQ(Additive):
    """Local search quantization, LSQ++ (faiss ``LocalSearchQuantizer``)."""

    name = "lsq"
    effort_name = "ils"
    default_effort = 16

    def _faiss_quantizer(self):
        faiss = faiss_module()
        lsq = faiss.LocalSearchQuantizer(self.d, self.param, self.bits)
        lsq.encode_ils_iters = self.effort
        # faiss perturbs nperts = 4 codes a round and refuses M < nperts
        lsq.nperts = min(lsq.nperts, self.param)
        return lsq


ADDITIVE_QUANTIZERS = {"rvq": RVQ, "lsq": LSQ}


def make_additive(token: str) -> Additive | None:
    """The additive quantizer named ``token``, ``None`` if it is not one, or
    ``ValueError`` for a malformed one.

    Examples
    --------
    >>> make_additive("rvq48x8").spec, make_additive("lsq16x4-ils32").spec
    ('rvq48x8', 'lsq16x4-ils32')
    >>> make_additive("rq4") is None
    True
    """
    m = TOKEN.match(token)
    if not m:
        return None
    name, count, bits, effort_name, effort = m.groups()
    cls = ADDITIVE_QUANTIZERS[name]
    canonical = f"{name}{int(count)}x{int(bits)}" + (
        f"-{effort_name}{int(effort)}" if effort else ""
    )
    if (
        effort_name not in (None, cls.effort_name)
        or not 1 <= int(count) <= 1 << 12
        or int(bits) not in PQ_BITS
        or token != canonical
    ):
        raise ValueError(
            f"stage {token!r}: {name}<M>x<b>[-{cls.effort_name}<n>] needs M in [1, 4096], "
            f"b in {' or '.join(map(str, PQ_BITS))} and {cls.effort_name} in "
            f"[{cls.effort_range[0]}, {cls.effort_range[1]}]"
        )
    return cls(int(count), int(bits), None if effort is None else int(effort))


__all__ = ["LSQ", "RVQ", "TRAIN_ROWS", "Additive", "make_additive"]
