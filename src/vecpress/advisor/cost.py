"""What measuring one configuration costs, in seconds, before it is measured.

The advisor works to a time budget (:func:`vecpress.advisor.advise.advise`,
``max_seconds``), so it must know what a measurement will take before starting
it: a 4-bit ``rq`` code of 100,000 × 384 vectors takes seconds, ``pq192x8``
minutes (faiss trains 192 k-means of 256 centroids on 2-dimensional
sub-spaces, slow per point), ``opq`` more (50 alternations of PQ training and a
d × d rotation).

:func:`predict` counts the work of :meth:`vecpress.advisor.bench.Workload.measure` from
the shape alone (``n`` rows, ``d`` dimensions, ``nq`` queries, the spec's bits,
sub-spaces ``M`` and kept dimensions, IVF lists and probes):

* **build**: fitting (rows ``min(n, 100,000)``; PQ's k-means on
  ``min(rows, 256 · 2^b)`` points per sub-space, OPQ's alternations, a d × d
  eigen-decomposition for ``kl``/``pca``/``leanvec``; IVF's k-means once per
  list count) and encoding every row;
* **search**: a pass over all queries costs ``nq × rows scanned`` times a
  per-pair cost of the codec's scan (bytes read by the fused integer kernel,
  dimensions of a decoded float product, sub-spaces of a PQ look-up table);
  the timing repeats passes up to 0.2 s (:data:`vecpress.advisor.bench.MIN_TIME`),
  once on one thread and once on all, plus a warm-up and the re-ranking's
  first stage;
* **statistics** of flat codecs: decoding 20,000 rows for the graph and
  distortion measures.

Each term is a coefficient in seconds per unit of work, measured on the
development machine (2 cores of a 2026 x86 server, one thread) by timing those
pieces on synthetic 20,000 × 384 and × 768 sets. :class:`CostModel` scales them
to the machine it runs on: :meth:`CostModel.calibrate` times float32 matrix
products on one thread (about 0.3 s) against the development machine's time,
and every finished measurement corrects the
estimate further (:meth:`CostModel.observe`: the median ratio of measured to
predicted time so far), which follows the load of a shared machine.
"""

from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np

from ..codecs.quantizers.additive import TRAIN_ROWS
from ..codecs.quantizers.anisotropic import ROUNDS
from ..codecs.quantizers.transform_vq import row_bytes, split

#: rows the codecs fit on at most (:data:`vecpress.search.index.FIT_SAMPLE`)
FIT_ROWS = 100_000
#: rows the graph and distortion statistics decode
STATS_ROWS = 20_000
#: candidates per query the model assumes ``rerank="auto"`` re-scores (measured at k = 10:
#: 18 on 384-d sentence embeddings, 44 on GloVe-50, ``benchmarks/latency.py``)
AUTO_DEPTH = 40
#: seconds per (row x dimension) of fitting + encoding, by quantizer kind
ENCODE_S = {
    "rq": 5e-8,
    "lvq": 4e-8,
    "int": 8e-8,
    "tq": 6e-8,
    "kl": 7e-8,
    "float": 2.5e-8,
    "sign": 2e-8,
    "qjl": 6e-8,
    "pq": 1e-8,
}
#: seconds per (query x row) pair and per byte read by the fused integer scan
GRID_SCAN_S = 5e-11
#: seconds per (query x row x dimension) of a decoded float product (floats, tq, qjl)
FLOAT_SCAN_S = 5.5e-11
#: seconds per (query x row x sub-space): 4-bit fast-scan, 8-bit float tables
PQ4_SCAN_S = 3.5e-11
PQ8_SCAN_S = 1.4e-9
#: PQ training: seconds per k-means point x centroid x iteration in one sub-space of
#: 8 dimensions, and how it grows on narrower sub-spaces (faiss's per-point work does
#: not shrink with the dimension: 2-dim sub-spaces cost 8x per point)
PQ_KMEANS_S = 4.6e-10
PQ_NARROW_EXPONENT = 1.5
#: PQ encoding: seconds per row x sub-space, and a fixed part
PQ_ENCODE_S = 3.5e-7
PQ_FIXED_S = 0.17
#: OPQ (faiss OPQMatrix): alternations (faiss's default), the rows it learns from at
#: most, and seconds per (row x sub-space) and per (row x d^2) of one alternation
OPQ_ITER = 50
OPQ_ROWS = 65_536
OPQ_S = 6e-7
OPQ_ROTATION_S = 2e-12
#: additive quantizers (faiss's residual and local-search quantizers; measured with the
#: residual one, beam 5, d = 384, one thread: 48 x 8-bit codebooks trained on 10,000
#: rows in 133 s and encoding 2,300 rows/s, 96 x 4-bit in 47 s and 4,800 rows/s):
#: training seconds per (row x codebook x codeword x dimension) and per (row x
#: codebook), kept for local search (faiss's LSQ trains by encoding its rows 25 times
#: over: a factor on its training and encoding); encoding per (row x codebook x beam x
#: codeword x dimension) and per (row x codebook x beam x dimension); they train on at
#: most :data:`~vecpress.codecs.quantizers.additive.TRAIN_ROWS` rows
AQ_TRAIN_S = 2.5e-9
AQ_TRAIN_ROW_S = 3.4e-5
AQ_ENCODE_S = 1.5e-11
AQ_ENCODE_DIM_S = 8.9e-10
LSQ_FACTOR = 10.0
#: faiss's residual-quantizer training (:func:`rq_train_seconds`), for its default
#: progressive-dimension k-means (``True``) and for one plain k-means a codebook
#: (``False``): seconds per (codebook x beam entry), per (row x codebook), per (row x
#: beam entry x codeword x dimension) and per (row x codebook x codeword x dimension).
#: Fitted (relative least squares) to 24 timed trainings on one core, 2026-12-06: 2,000-
#: 16,384 rows of 24-384 dimensions, 2-24 codebooks of 256 words, beams 5 and 16; every
#: one within 1.45 x of its fit (the model of the first line above was off by up to 10 x
#: below d = 100: 1.9 s predicted for a training of 20 s)
RQ_TRAIN = {True: (0.196, 6.45e-5, 0.0, 1.67e-9), False: (6.1e-3, 5.7e-6, 3.0e-10, 4.5e-11)}
#: ``klvq``'s score-aware block (vecpress's beam search, :mod:`~vecpress.codecs.quantizers.
#: anisotropic`; measured on one core, 2026-12-06, MiniLM's block at 1 bit: 23 codebooks on
#: 92 axes, about 105 µs a row at beam 5, 290 at beam 16, 30 for a sweep; GloVe-50's, 6
#: codebooks on 50 axes: 61 µs at beam 16): seconds per (row x codebook x codeword x
#: dimension), the same per unit of beam and per sweep; per (row x codebook x codeword x
#: beam) of the selection, whatever the dimension; per codeword and round of the codebook
#: updates (a small linear solve each, ``refine_codebooks``)
ANISO_S = 3.9e-11
ANISO_BEAM_S = 1.8e-11
ANISO_SWEEP_S = 5.5e-11
ANISO_SELECT_S = 1.2e-9
ANISO_WORD_S = 1e-4
#: seconds per flop of float32 matrix products (covariances, projections, k-means)
GEMM_S = 2.5e-11
#: seconds per d^3 of a symmetric eigen-decomposition
EIG_S = 2e-9
#: seconds per decoded element in the statistics, and their fixed part
STATS_S = 6e-8
STATS_FIXED_S = 0.1
#: IVF k-means: iterations, points per centroid at most
KMEANS_ITER = 20
KMEANS_POINTS = 256
#: the timing's search passes (:data:`vecpress.advisor.bench.MIN_TIME`, at most 5 passes)
MIN_TIME = 0.2
MAX_PASSES = 5
#: gain of each thread past the first (compiled scans and faiss on a free core)
THREAD_GAIN = 0.6
#: the calibration's time on the development machine (seconds, best of 3)
REF_GEMM_S = 0.071


@dataclass(frozen=True)
class Shape:
    """What a measurement's cost depends on: rows, dimensions, queries, k, threads."""

    n: int
    d: int
    nq: int
    k: int = 10
    threads: int = 1


def _stages(spec: str) -> tuple[list[str], str]:
    parts = [p.strip().lower() for p in spec.split(",") if p.strip()]
    return parts[:-1], parts[-1]


def _quantizer_kind(q: str) -> tuple[str, int, int]:
    """(kind, sub-spaces or codebooks M, bits b) of a quantizer token; M and b are 0
    but for PQ and the additive quantizers."""
    m = re.fullmatch(r"(o?pq|rvq|lsq)(\d+)x(\d+)(?:-(?:beam|ils)\d+)?", q)
    if m:
        return m.group(1), int(m.group(2)), int(m.group(3))
    m = re.fullmatch(r"klvq(\d)(?:-beam\d+)?(?:-aniso\d+)?", q)
    if m:
        return "klvq", 0, int(m.group(1))
    m = re.fullmatch(r"(rq|lvq|int|tqp?|kl)\d(x\d)?", q)
    if m:
        return ("tq" if m.group(1) == "tqp" else m.group(1)), 0, 0
    if q.startswith("qjl") or q == "sign":
        return ("qjl" if q != "sign" else "sign"), 0, 0
    return "float", 0, 0


def _dims_after(transforms: list[str], d: int) -> int:
    for t in transforms:
        m = re.fullmatch(r"(?:pca|leanvec(?:-ood)?)(\d+)", t)
        if m:
            d = int(m.group(1))
    return d


def build_seconds(spec: str, n: int, d: int) -> float:
    """Fitting and encoding ``n`` rows of ``d`` dimensions with ``spec``, one thread,
    at the development machine's speed.

    Examples
    --------
    >>> build_seconds("opq96x4", 50_000, 768) > 10 * build_seconds("center,hd2,rq4", 50_000, 768)
    True
    """
    fit = min(n, FIT_ROWS)
    transforms, q = _stages(spec)
    s = 0.0
    dd = d
    for t in transforms:
        if t == "center":
            s += n * dd * 2e-9
        elif t.startswith("hd"):
            s += n * dd * math.log2(max(dd, 2)) * int(t[2]) * 1.5e-9
        elif t == "haar":
            s += 2 * n * dd * dd * GEMM_S + dd**3 * EIG_S
        else:  # pca / leanvec: covariance, eigen-decomposition, projection
            m = _dims_after([t], dd)
            s += 2 * fit * dd * dd * GEMM_S + dd**3 * EIG_S + 2 * n * dd * m * GEMM_S
            dd = m
    kind, m, b = _quantizer_kind(q)
    if kind == "klvq":  # kl's axes, rvq's block of M codebooks on L axes, kl's tail
        lead, books, _ = split(dd, row_bytes(dd, b), 2 if b <= 4 else 4)
        effort = re.search(r"-beam(\d+)", q)
        beam = int(effort.group(1)) if effort else 5
        if not books:
            block = 0.0
        elif "-aniso" in q:  # faiss starts (plain k-means beside a tail); vecpress's search
            rows = min(fit, TRAIN_ROWS)
            unit = books * 256 * lead
            search = unit * (ANISO_S + ANISO_BEAM_S * beam) + books * 256 * beam * ANISO_SELECT_S
            block = (
                rq_train_seconds(rows, lead, books, 8, beam, progressive=lead == dd)
                # rounds of encoding the training rows and updating every codebook
                + ROUNDS * rows * (search + 2 * books * lead * lead * GEMM_S)
                + ROUNDS * books * 256 * ANISO_WORD_S
                + n * (search + unit * ANISO_SWEEP_S)
            )
        else:
            block = build_seconds(f"rvq{books}x8-beam{beam}", n, lead)
        return (
            s + block + 2 * fit * dd * dd * GEMM_S + dd**3 * EIG_S + 2 * n * dd * dd * GEMM_S
            + n * (dd - lead) * ENCODE_S["kl"]
        )  # fmt: skip
    if kind in ("rvq", "lsq"):
        effort = re.search(r"-(?:beam|ils)(\d+)$", q)
        beam = int(effort.group(1)) if effort else (5 if kind == "rvq" else 16)
        rows = min(fit, TRAIN_ROWS)
        k = 1 << b
        # the search grows with rvq's beam, and with lsq's rounds as its 16 do with a beam of 5
        width = beam if kind == "rvq" else 5 * beam / 16
        encode = n * m * width * (k * dd * AQ_ENCODE_S + dd * AQ_ENCODE_DIM_S)
        if kind == "rvq":
            return s + rq_train_seconds(rows, dd, m, b, beam) + encode
        return s + (rows * m * (k * dd * AQ_TRAIN_S + AQ_TRAIN_ROW_S) + encode) * LSQ_FACTOR
    if kind in ("pq", "opq"):
        dsub = max(1, dd // m)
        points = min(fit, KMEANS_POINTS << b)
        per_point = PQ_KMEANS_S * ((8 / dsub) ** PQ_NARROW_EXPONENT if dsub < 8 else dsub / 8)
        s += m * points * (1 << b) * 25 * per_point + n * m * PQ_ENCODE_S + PQ_FIXED_S
        if kind == "opq":
            rows = min(fit, OPQ_ROWS)
            s += OPQ_ITER * (rows * m * OPQ_S + rows * dd * dd * OPQ_ROTATION_S + dd**3 * EIG_S)
        return s
    s += n * dd * ENCODE_S[kind]
    if kind == "kl":
        s += 2 * fit * dd * dd * GEMM_S + dd**3 * EIG_S
    return s


def rq_train_seconds(
    rows: int, d: int, m: int, bits: int, beam: int, *, progressive: bool = True
) -> float:
    """faiss's residual quantizer trained on ``rows`` rows of ``d`` dimensions: ``m``
    codebooks of ``2^bits`` words, beam ``beam``, one thread, at the development
    machine's speed (:data:`RQ_TRAIN`).

    Each stage clusters the residuals of every kept beam entry of every row (one
    entry at the first stage, ``min(beam, 2^bits)`` after), then extends the beam.

    Examples
    --------
    >>> plain = rq_train_seconds(16_384, 92, 23, 8, 5, progressive=False)
    >>> 10 < plain < rq_train_seconds(16_384, 92, 23, 8, 5) / 2  # measured 16.7 s and 70.0 s
    True
    """
    k = 1 << bits
    entries = 1 + (m - 1) * min(beam, k)
    per_entry, per_row, per_entry_word, per_row_word = RQ_TRAIN[bool(progressive)]
    return (
        entries * per_entry + rows * m * per_row
        + rows * k * d * (entries * per_entry_word + m * per_row_word)
    )  # fmt: skip


def pair_seconds(spec: str, d: int, code_bytes: int) -> float:
    """Scanning one (query, row) pair of ``spec``'s codes, one thread.

    Examples
    --------
    >>> pair_seconds("center,hd2,rq4", 384, 198) < pair_seconds("pq192x8", 384, 192)
    True
    """
    transforms, q = _stages(spec)
    dd = _dims_after(transforms, d)
    kind, m, b = _quantizer_kind(q)
    if kind in ("pq", "opq"):
        return m * (PQ4_SCAN_S if b == 4 else PQ8_SCAN_S)
    if kind in ("rvq", "lsq"):  # float tables for 4-bit codes too
        return m * PQ8_SCAN_S
    if kind == "klvq":  # the block's float tables, then the tail's integer scan
        books = split(dd, row_bytes(dd, b), 2 if b <= 4 else 4)[1]
        return books * PQ8_SCAN_S + code_bytes * GRID_SCAN_S
    if kind in ("rq", "lvq", "int", "kl"):
        return code_bytes * GRID_SCAN_S
    return dd * FLOAT_SCAN_S


def _timed(pass_s: float) -> float:
    """The timing loop: passes until MIN_TIME in all, at most MAX_PASSES."""
    if pass_s <= 0:
        return 0.0
    return pass_s * min(MAX_PASSES, max(1, math.ceil(MIN_TIME / pass_s)))


@dataclass
class CostModel:
    """Predicted seconds of measuring a configuration on this machine.

    ``speed`` is this machine's speed relative to the development machine's
    (from :meth:`calibrate`); ``ratios`` the measured / predicted times seen so far.

    Examples
    --------
    >>> from vecpress.advisor.bench import Config
    >>> m = CostModel()
    >>> s = Shape(n=100_000, d=384, nq=1000)
    >>> m.predict(Config("pq192x8"), s) > 20 * m.predict(Config("center,hd2,rq4"), s)
    True
    """

    speed: float = 1.0
    ratios: list[float] = field(default_factory=list)

    @classmethod
    def calibrate(cls) -> CostModel:
        """Time float32 matrix products on one thread (about 0.3 s) and compare with the
        development machine's time."""
        rng = np.random.default_rng(0)
        a = rng.standard_normal((256, 384), dtype=np.float32)
        b = rng.standard_normal((384, 4096), dtype=np.float32)

        def best(f) -> float:
            f()
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                f()
                times.append(time.perf_counter() - t0)
            return min(times)

        from ..threads import single_threaded_blas

        with single_threaded_blas():
            gemm = best(lambda: [a @ b for _ in range(4)])
        return cls(speed=float(min(max(REF_GEMM_S / max(gemm, 1e-9), 0.05), 20.0)))

    @property
    def correction(self) -> float:
        """The median ratio of measured to predicted seconds (1 before any)."""
        if not self.ratios:
            return 1.0
        return float(min(max(math.exp(float(np.median(np.log(self.ratios[-9:])))), 0.2), 10.0))

    def observe(self, predicted: float, measured: float) -> None:
        """Record one finished measurement: the seconds predicted before any correction
        (:meth:`raw` / ``speed``) and those measured."""
        if predicted > 0 and measured > 0:
            self.ratios.append(measured / predicted)

    def raw(self, config, shape: Shape, *, built: bool = False, kmeans: bool = True) -> float:
        """The model's seconds on the development machine, one build thread.

        ``built``: the index is already built (a re-rank depth or nprobe sweep
        reuses it); ``kmeans``: the IVF centroids still have to be trained.
        """
        n, d, nq = shape.n, shape.d, shape.nq
        gain = 1 + THREAD_GAIN * (max(shape.threads, 1) - 1)
        code = _code_bytes(config.spec, d)
        build = 0.0
        if not built:
            build = build_seconds(config.spec, n, d)
            if config.rerank_spec is not None:
                build += build_seconds(config.rerank_spec, n, d)
            if config.ivf is not None and kmeans:
                points = min(n, max(FIT_ROWS, 64 * config.ivf), KMEANS_POINTS * config.ivf)
                build += 2 * points * config.ivf * d * KMEANS_ITER * GEMM_S
            build /= gain
        scanned = n
        extra = 0.0
        if config.ivf is not None:
            scanned = n * min(1.0, (config.nprobe or 1) / config.ivf)
            extra = 2 * nq * config.ivf * d * GEMM_S
        one = nq * scanned * pair_seconds(config.spec, d, code) + extra
        if config.rerank is not None:
            tier = config.rerank_spec or config.spec
            depth = AUTO_DEPTH if config.rerank == "auto" else config.rerank
            one += nq * depth * pair_seconds(tier, d, _code_bytes(tier, d)) * 4
        search = _timed(one) + one * 64 / max(nq, 1)
        if shape.threads > 1:
            search += _timed(one / gain)
        if config.rerank is not None:
            search += one
        stats = 0.0
        if config.ivf is None and config.rerank is None and not built:
            stats = STATS_FIXED_S + min(n, STATS_ROWS) * d * STATS_S
        return build + search + stats

    def predict(self, config, shape: Shape, **kw) -> float:
        """Seconds measuring ``config`` should take here (:meth:`raw`, scaled by the
        calibration and the corrections observed)."""
        return self.raw(config, shape, **kw) / self.speed * self.correction


@functools.lru_cache(maxsize=1024)  # asked for every candidate at every step of a plan
def _code_bytes(spec: str, d: int) -> int:
    from ..codecs.codec import Codec

    try:
        return Codec.code_size_of(spec, d)
    except (ValueError, NotImplementedError):
        return d
