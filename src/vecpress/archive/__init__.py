"""Archive codec: vectors compressed for storage and transfer near the Shannon bound.

The search codes are fixed-rate (every row the same width, so a scan can jump to
it). Storage and transfer have no such need, and the limit there is the
rate–distortion bound. For a Gaussian source with covariance eigenvalues ``λ``,
the bits a vector needs for a mean squared error ``D`` per coordinate are
(reverse water-filling)::

    R(D) = Σ_i max(0, ½ log2(λ_i / θ)),   θ such that Σ_i min(θ, λ_i) = d · D

and the Gaussian is the hardest source of a given covariance, so real embeddings
can need fewer. :func:`gaussian_rate` computes it (per dimension).

**How an archive is made** (:func:`compress`, :func:`compress_file`):

1. **Transform**: the rows' mean ``μ`` and covariance (one pass, float64 sums), and
   its eigenvectors ``V`` (the principal basis); coefficients ``y = (x - μ) V``. The
   archive stores ``V`` with each column rounded to a step matched to its axis's
   variance and entropy-coded (:mod:`.basis`), and the decoder multiplies by that.
2. **Quantize** every coefficient with one uniform step ``Δ``, ``q ≈ y / Δ`` rounded
   (with a small dead zone on the low-rate axes, :func:`~.transform.quantize`);
   ``q Δ`` is what decodes. Reverse water-filling gives every coded axis the same
   distortion ``θ``, and one step gives every axis ``≈ Δ²/12`` (axes whose variance
   is below that round to 0 and cost no bits, as the water-filling drops them; the
   trailing axes whose levels are all 0 on a sample of rows are dropped, basis
   vectors included). ``Δ`` is found on a sample of rows (bisection), for the
   target asked: the largest step whose error stays within ``mse``; the smallest
   whose size stays within ``bits_per_dim``; or the largest whose decompressed
   rows still give held-out queries a recall@10 of ``recall``. A pass over all rows
   then measures the error of the decompressed rows exactly as :func:`decompress`
   makes them (and the symbol tables); the step is refined until it holds.
3. **Entropy-code** each coefficient's levels with an adaptive model: the
   histogram of that coefficient over all rows (stored in the archive) drives an
   ANS coder (``constriction``, ``pip install 'vecpress[archive]'``), so each axis
   costs its empirical entropy, plus 32 bits per histogram bin for the table.

Uniform scalar quantization with ideal entropy coding stays within ~0.25 bits per
coded coefficient of ``R(D)`` at high rate (the space-filling loss of a scalar
quantizer, 1.53 dB) and closer at low rate.

**The archive** is a sequence of frames (:mod:`.frames`), each a blob of the
project's container (magic, format version, JSON config, checksummed raw arrays;
no pickle): a head (the model), one frame per ``chunk_rows`` rows (their coded
levels: a chunk decodes on its own, so memory stays bounded by a chunk when
compressing or decompressing a file larger than RAM), and a tail that records the
archive's own rate (``bits_per_dim``, all its bytes counted) and distortion
(``mse``, measured when it was made). The chunk grid is fixed by the format, so a
row decodes to the same bits however the archive is read, and compressing an
array or a file of the same rows gives the same bytes. :func:`describe` reads the
head and tail only.

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
(True, 6.1)
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator

import numpy as np

from .._validation import as_vectors
from ..atomic import TMP_SUFFIX, fsync_dir, replacing
from ..checksum import crc32
from ..container import pack
from ..errors import FormatError
from ..files.sources import VectorSource
from . import basis as stored_basis
from . import kernels
from .frames import Reader, check_chain, chunk_frames, expect
from .rate import gaussian_rate
from .transform import (
    LATTICE_SIGMA,
    MAX_LEVELS,
    ROUNDING,
    Moments,
    Quantizer,
    Transform,
    entropy_bits,
    project,
    recall_at_10,
    reconstruct,
    sample_quantizer,
    step_for_bits,
    step_for_mse,
    step_for_recall,
    symbols,
    values,
)

__all__ = [
    "LATTICE_SIGMA",
    "MAX_LEVELS",
    "ROUNDING",
    "compress",
    "compress_file",
    "decompress",
    "decompress_file",
    "describe",
    "gaussian_rate",
    "iter_decompress",
]

FORMAT_NAME = "vecpress-archive"
FORMAT_VERSION = 2
#: entries (rows x dimension) of the sample the step is searched on (2,000 to 20,000 rows)
SEARCH_ENTRIES = 4_000_000
#: rows held out as queries for a ``recall`` target (when no queries are given)
RECALL_QUERIES = 200
#: rows (spread evenly) a ``recall`` target is measured against: recall falls as the
#: rows searched grow, so a larger input's recall is a little below the one measured
RECALL_ROWS = 100_000
#: the error target is met with this relative margin (another machine's BLAS may
#: round a decompressed row differently)
_MARGIN = 1e-5
#: levels of at most this many bytes are kept between the counting pass and the
#: coding pass (more: the input is read and quantized again)
_KEEP_BYTES = 1 << 30
#: an archive's bytes outside its coded levels and tables, per frame (an estimate
#: for the size target; the size is checked once written)
_FRAME_BYTES = 640


def _constriction():
    try:
        import constriction
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "the archive codec needs constriction: pip install 'vecpress[archive]'"
        ) from e
    return constriction


def chunk_rows_for(d: int) -> int:
    """Rows of a chunk frame for dimension ``d``: a power of two near 4 Mi entries,
    between 256 and 65,536.

    Examples
    --------
    >>> chunk_rows_for(50), chunk_rows_for(384), chunk_rows_for(3072)
    (65536, 8192, 1024)
    """
    return int(min(65536, max(256, 2 ** math.floor(math.log2((1 << 22) / d)))))


def compress(
    x,
    *,
    mse: float | None = None,
    bits_per_dim: float | None = None,
    recall: float | None = None,
    queries=None,
) -> bytes:
    """Compress the rows of ``x`` into an archive (module docstring).

    Parameters
    ----------
    x : array_like, float[n, d]
        The vectors (any float dtype; finite, ``n >= 1``).
    mse : float, optional
        The mean over all entries of ``(x̂ - x)²`` the archive may not exceed.
    bits_per_dim : float, optional
        The size the archive may not exceed, in bits per vector entry (all its bytes
        counted).
    recall : float, optional
        The recall@10 (by inner product, decompressed rows against the original ones)
        that queries must keep: the coarsest step that keeps it, searching up to
        :data:`RECALL_ROWS` rows spread over the input, is chosen. Give exactly one of
        ``mse``, ``bits_per_dim`` and ``recall``.
    queries : array_like, float[m, d], optional
        The queries of a ``recall`` target; by default :data:`RECALL_QUERIES` rows of
        ``x`` held out of the sample searched.

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        Bad rows, not exactly one target, a target out of range, an ``mse`` so small
        (or a ``recall`` so high) that an axis would need more than
        :data:`MAX_LEVELS` levels, a ``bits_per_dim`` too small for the archive's
        tables.

    Examples
    --------
    >>> x = np.random.default_rng(1).standard_normal((1000, 8)).astype(np.float32)
    >>> 8 * len(compress(x, bits_per_dim=3.0)) <= 3.0 * x.size
    True
    """
    x = as_vectors(x, "vectors", allow_empty=False)
    target = _target(mse, bits_per_dim, recall)
    out = io.BytesIO()
    _compress(VectorSource.open(x), out, target, queries, progress=False)
    return out.getvalue()


def compress_file(
    vectors,
    path,
    *,
    mse: float | None = None,
    bits_per_dim: float | None = None,
    recall: float | None = None,
    queries=None,
    column: str | None = None,
    progress: bool = False,
) -> dict:
    """Compress vectors too large for memory into the archive file ``path``.

    ``vectors`` is anything :meth:`vecpress.files.sources.VectorSource.open` reads
    (``.npy``/``.fbin``/``.fvecs``/Parquet files, a folder or list of them, an
    array); they are read a chunk at a time (a few passes), and memory stays
    bounded by a chunk, the sample and the model. The file is written atomically
    (a temporary file renamed over ``path``) and holds the same bytes
    :func:`compress` returns for the same rows. Targets as for :func:`compress`;
    ``progress`` shows a bar per pass.

    Returns
    -------
    dict
        :func:`describe` of the file.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> x = np.random.default_rng(2).standard_normal((3000, 8)).astype(np.float32)
    >>> np.save(os.path.join(folder, "x.npy"), x)
    >>> info = compress_file(os.path.join(folder, "x.npy"), os.path.join(folder, "x.vpz"), mse=0.01)
    >>> info["n"], info["mse"] <= 0.01
    (3000, True)
    >>> open(os.path.join(folder, "x.vpz"), "rb").read() == compress(x, mse=0.01)
    True
    """
    target = _target(mse, bits_per_dim, recall)
    src = VectorSource.open(vectors, column=column)
    if src.n == 0:
        raise ValueError(f"vectors must have at least one row, found 0 x {src.d}")
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{base}.{os.getpid()}{TMP_SUFFIX}")
    with replacing(tmp, path) as f:
        _compress(src, f, target, queries, progress=progress)
    fsync_dir(folder)
    return describe(path)


def _target(mse, bits_per_dim, recall) -> tuple[str, float]:
    given = [(k, v) for k, v in (("mse", mse), ("bits_per_dim", bits_per_dim),
                                 ("recall", recall)) if v is not None]  # fmt: skip
    if len(given) != 1:
        raise ValueError("give exactly one of mse=, bits_per_dim= and recall=")
    name, value = given[0]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, found {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, found {value!r}")
    if name == "bits_per_dim" and value > 32:
        raise ValueError(f"bits_per_dim must be at most 32 (float32's width), found {value!r}")
    if name == "recall" and value > 1:
        raise ValueError(f"recall must be in (0, 1], found {value!r}")
    return name, value


def _bar(progress: bool, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rows", unit_scale=True, disable=not progress)


def _chunks(src: VectorSource, rows: int, bar, check: bool = False):
    """The input on the archive's chunk grid (float32); with ``check``, each chunk
    checked (finite, norms in range): the first pass checks, the later ones read the
    same rows again."""
    for lo, x in src.chunks(rows=rows, prefetch=src.n > rows):
        if check:
            x = as_vectors(x, src.name, dim=src.d, row_offset=lo)
        bar.update(x.shape[0])
        yield lo, x


def _coefficients(t: Transform, x: np.ndarray, k: int) -> np.ndarray:
    """``x``'s first ``k`` coefficients (finite: rows are checked to norms below 2**50)."""
    return (x - t.mean) @ t.basis[:, :k]


def _search_rows(d: int) -> int:
    return min(20_000, max(2_000, SEARCH_ENTRIES // d))


def _sample(src: VectorSource, rows: int, avoid: np.ndarray | None = None) -> np.ndarray:
    """Up to ``rows`` row numbers spread evenly over the input, none of ``avoid`` (memory
    in the sample's size, not the input's)."""
    picks = np.unique(np.linspace(0, src.n - 1, min(rows, src.n)).astype(np.int64))
    return picks if avoid is None else np.setdiff1d(picks, avoid, assume_unique=True)


class _Tables:
    """Per axis, the histogram of its levels over all rows, added a chunk at a time."""

    def __init__(self, k: int) -> None:
        self.lows = np.zeros(k, np.int64)
        self.counts: list[np.ndarray] = []

    def add(self, q: np.ndarray) -> None:
        ranges = kernels.column_ranges(q)
        sizes = ranges[1] - ranges[0] + 1
        starts = np.concatenate([[0], np.cumsum(sizes)])
        flat = np.zeros(int(starts[-1]), np.int64)
        kernels.count_into(q, ranges[0], starts[:-1], flat)
        parts = [flat[starts[j] : starts[j + 1]] for j in range(q.shape[1])]
        if not self.counts:
            self.lows, self.counts = ranges[0].copy(), parts
            return
        for j, part in enumerate(parts):
            old, lo = self.counts[j], int(self.lows[j])
            new_lo = min(lo, int(ranges[0, j]))
            new_hi = max(lo + old.size, int(ranges[1, j]) + 1)
            if new_lo != lo or new_hi != lo + old.size:
                grown = np.zeros(new_hi - new_lo, np.int64)
                grown[lo - new_lo : lo - new_lo + old.size] = old
                self.counts[j], self.lows[j], old, lo = grown, new_lo, grown, new_lo
            s = int(ranges[0, j]) - lo
            old[s : s + part.size] += part

    def bits(self, n: int) -> float:
        """The levels' empirical entropy, all axes (bits)."""
        total = 0.0
        for c in self.counts:
            p = c[c > 0] / n
            total -= float((p * np.log2(p)).sum()) * n
        return total


def _compress(src: VectorSource, out, target: tuple[str, float], queries, progress: bool):
    """Write the archive of ``src``'s rows to the binary file ``out`` (module docstring)."""
    n, d = src.n, src.d
    rows = chunk_rows_for(d)
    chunks = -(-n // rows)
    moments = Moments(d)
    with _bar(progress, n, "archive: covariance") as bar:
        for _, x in _chunks(src, rows, bar, check=True):
            moments.add(x)
    t = moments.transform()
    sigma = t.sigma
    kind, value = target
    held = None
    if kind == "recall":
        qs, held = _recall_queries(src, queries)
        base = src.take(_sample(src, RECALL_ROWS, avoid=held))
        step = step_for_recall(t, base, qs, value)
        picks = np.linspace(0, len(base) - 1, min(len(base), _search_rows(d))).astype(np.int64)
        sample = project(t, base[np.unique(picks)])
    else:
        sample = _coefficients(t, src.take(_sample(src, _search_rows(d))), d)
    eps = stored_basis.precision(n, d)
    if kind == "mse":
        goal = value * (1 - _MARGIN)
        # the stored basis's rounding adds up to a fraction d ε² of the error
        step = step_for_mse(sample, sigma, goal * (1 - d * eps * eps))
    elif kind == "bits_per_dim":
        budget = value * n * d

        def excess(q: np.ndarray) -> float:
            k = _kept(q)
            tables = sum(int(np.ptp(c)) + 1 for c in q[:, :k].T)
            coded = entropy_bits(q[:, :k]).sum() * n / q.shape[0]
            return coded + 32 * tables + 16 * d * k + 8 * _FRAME_BYTES * (chunks + 2) - budget

        step = step_for_bits(sample, sigma, excess)
    for _ in range(64):
        qz, _ = sample_quantizer(sample, step, sigma)
        k = qz.axes
        deltas = stored_basis.steps(t.variances[:k], qz.step, eps, d)
        ints = stored_basis.rounded(t.basis[:, :k], deltas)
        keep = n * k * 4 <= _KEEP_BYTES
        tables, levels, error = _count(src, t, qz, stored_basis.stored(ints, deltas), rows, keep,
                                       progress)  # fmt: skip
        if kind == "mse" and error > goal:
            step *= min(math.sqrt(goal / error), 0.9995)
            continue
        if kind == "bits_per_dim":
            sizes = sum(c.size for c in tables.counts)
            over = (tables.bits(n) + 32 * sizes + 16 * d * k + 8 * _FRAME_BYTES * (chunks + 2)
                    - budget)  # fmt: skip
            if over > 0 and k:
                step *= max(1.005, 2.0 ** (over / (n * k)))
                continue
        size = _write(out, src, t, qz, (ints, deltas, eps), rows, tables, levels, error,
                      progress)  # fmt: skip
        if kind == "bits_per_dim" and 8 * size > budget:
            if k == 0:
                raise ValueError(
                    f"bits_per_dim={value!r} is too small for {n} x {d} vectors: the smallest "
                    f"archive of them (their mean) takes {8 * size / (n * d):.4g}"
                )
            step *= 1.005
            continue
        return
    raise RuntimeError("archive: the step search did not settle")  # pragma: no cover


def _recall_queries(src: VectorSource, queries) -> tuple[np.ndarray, np.ndarray | None]:
    """The queries of a recall target, and the rows held out for them (or None)."""
    if queries is not None:
        return as_vectors(queries, "queries", dim=src.d, allow_empty=False), None
    if src.n < 2 * 10 + 1:
        raise ValueError(
            f"recall= needs queries= or at least 21 rows to hold some out, found {src.n}"
        )
    held = _sample(src, min(RECALL_QUERIES, src.n // 10))
    return src.take(held), held


def _kept(q: np.ndarray) -> int:
    """The axes an archive keeps: up to the last with a level other than 0 (axes are in
    decreasing variance; the rest decompress to 0)."""
    used = np.flatnonzero((q != 0).any(axis=0))
    return int(used[-1]) + 1 if used.size else 0


def _count(src, t: Transform, qz: Quantizer, basis: np.ndarray, rows, keep, progress):
    """One pass: the tables of the symbols, the symbols themselves (if ``keep``) and
    the decompressed rows' mean squared error (``basis``: the stored one)."""
    k = qz.axes
    tables = _Tables(k)
    levels: list[np.ndarray] | None = [] if keep else None
    total = 0.0
    with _bar(progress, src.n, "archive: measure") as bar:
        for _, x in _chunks(src, rows, bar):
            s = symbols(_coefficients(t, x, k), qz)
            tables.add(s)
            rec = reconstruct(values(s, qz), basis, t.mean)
            total += float(kernels.squared_error(rec, x).sum())  # in one order
            if levels is not None:
                levels.append(s)
    return tables, levels, total / (src.n * src.d)


def _write(out, src, t: Transform, qz: Quantizer, basis, rows, tables, levels, error,
           progress) -> int:  # fmt: skip
    """Write the frames; returns the archive's length (``basis``: the stored basis's
    integers, steps and precision)."""
    constriction = _constriction()
    n, d = src.n, src.d
    k = qz.axes
    chunks = -(-n // rows)
    lows = tables.lows.astype(np.int32)
    shifts = _shifts(tables.counts, n)
    counts = [np.add.reduceat(c, np.arange(0, c.size, 1 << int(b)))
              for c, b in zip(tables.counts, shifts, strict=True)]  # fmt: skip
    sizes = np.array([c.size for c in counts], np.int32)
    ints, deltas, eps = basis
    basis_words, bound = stored_basis.encode(constriction, ints, deltas)
    config = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "frame": "head", "n": n, "d": d,
              "axes": k, "step": qz.step, "lattice_groups": qz.groups, "chunk_rows": rows,
              "chunks": chunks, "basis_precision": eps, "basis_bound": bound}  # fmt: skip
    arrays = {
        "mean": t.mean,
        "variances": t.variances.astype(np.float64),
        "basis": basis_words,
        "shrink": qz.shrink,
        "lows": lows,
        "shifts": shifts,
        "sizes": sizes,
        # uint32 tables unless a count could pass 2**32 - 1
        "counts": (np.concatenate(counts) if k else np.zeros(0, np.int64)).astype(
            np.uint32 if n < 1 << 32 else np.uint64
        ),
    }
    head = pack(config, arrays)
    head_crc = crc32(head)
    out.seek(0)
    out.truncate()
    out.write(head)
    size = len(head)
    models = _models(constriction, counts, n)
    if levels is None:
        bar = _bar(progress, n, "archive: encode")
        levels = (symbols(_coefficients(t, x, k), qz) for _, x in _chunks(src, rows, bar))
    for i, q in enumerate(levels):
        coder = constriction.stream.stack.AnsCoder()
        cols = np.ascontiguousarray((q - lows).T)
        bits = kernels.pack_low_bits(cols, shifts)
        cols >>= shifts[:, None]
        for j in reversed(range(k)):  # a stack: the decoder pops axis 0 first
            if models[j] is not None:
                coder.encode_reverse(cols[j], models[j])
        words = coder.get_compressed().astype(np.uint32)
        frame = pack({"frame": "chunk", "head": head_crc, "index": i, "rows": q.shape[0]},
                     {"words": words, "bits": bits})  # fmt: skip
        out.write(frame)
        size += len(frame)
    tail = {"frame": "tail", "head": head_crc, "n": n, "chunks": chunks, "mse": error,
            "bits_per_dim": 0.0}  # fmt: skip
    blob = pack(tail, {})
    for _ in range(4):  # the rate counts every byte; writing it can lengthen the JSON
        tail["bits_per_dim"] = 8 * (size + len(blob)) / (n * d)
        again = pack(tail, {})
        if len(again) == len(blob):
            break
        blob = again
    out.write(again)
    return size + len(again)


def _shifts(counts: list[np.ndarray], n: int) -> np.ndarray:
    """Per axis, how many low bits of its symbols are stored as they are, not
    entropy-coded: ``floor(log2(deviation / 4))`` of its histogram (0 below 8). Within
    a quarter of a deviation the density is nearly flat, so those bits cost about what
    they would coded (≤ ~0.004 bits per coefficient for a Gaussian), and the coded
    alphabet (the table stored, the decoder's search) shrinks by ``2^shift``."""
    out = np.zeros(len(counts), np.int32)
    for j, c in enumerate(counts):
        if c.size >= 8:
            at = np.arange(c.size, dtype=np.float64)
            mean = float(c @ at) / n
            std = math.sqrt(max(float(c @ (at - mean) ** 2) / n, 0.0))
            out[j] = min(20, max(0, math.floor(math.log2(max(std, 1.0) / 4))))
    return out


def _models(constriction, counts: list[np.ndarray], n: int) -> list:
    """Per axis, the categorical model of its histogram (None: a single level)."""
    model = constriction.stream.model
    return [model.Categorical(c.astype(np.float64) / n, perfect=False) if c.size > 1 else None
            for c in counts]  # fmt: skip


def _reader(archive) -> tuple[Reader, int | None]:
    if isinstance(archive, (str, os.PathLike)):
        fd = os.open(os.fspath(archive), os.O_RDONLY)
        return Reader(fd=fd, source=os.fspath(archive)), fd
    return Reader(archive), None


def _head(reader: Reader) -> tuple[dict, dict, int, int]:
    """The head frame checked: ``(config, arrays, its CRC-32, its length)``."""
    config, arrays, length = reader.frame(0, "head frame")
    if config.get("format") != FORMAT_NAME or config.get("version") != FORMAT_VERSION:
        raise FormatError(
            f"{reader.source}: format {config.get('format')!r:.80} version "
            f"{config.get('version')!r:.20}, expected {FORMAT_NAME!r} version {FORMAT_VERSION}"
        )
    expect(config, "head", None, "the first frame", reader.source)
    n, d, k = config.get("n"), config.get("d"), config.get("axes")
    rows, chunks, g = config.get("chunk_rows"), config.get("chunks"), config.get("lattice_groups")
    ints = (n, d, k, rows, chunks, g)
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in ints)
    ok = ok and n >= 1 and d >= 1 and 0 <= k <= d and 1 <= rows <= 1 << 20
    ok = ok and chunks == -(-n // rows) and 0 <= 8 * g <= k
    shapes = {"mean": (d,), "variances": (d,), "lows": (k,), "shifts": (k,), "sizes": (k,)}
    if ok:
        shapes["shrink"] = (k - 8 * g,)
    dtypes = {"mean": "<f4", "variances": "<f8", "basis": "<u4", "shrink": "<f4", "lows": "<i4",
              "shifts": "<i4", "sizes": "<i4", "counts": "<u4"}  # fmt: skip
    ok = ok and set(arrays) == set(dtypes)
    if ok and n >= 1 << 32:
        dtypes["counts"] = "<u8"
    ok = ok and all(arrays[a].dtype.str == v for a, v in dtypes.items())
    ok = ok and all(arrays[a].shape == s for a, s in shapes.items())
    step, eps, bound = config.get("step"), config.get("basis_precision"), config.get("basis_bound")
    ok = ok and all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in (step, eps))
    ok = ok and isinstance(bound, int) and 0 <= bound < 1 << 31 and arrays["basis"].ndim == 1
    if ok:
        sizes = arrays["sizes"].astype(np.int64)
        ok = bool((sizes >= 1).all() and (sizes <= MAX_LEVELS).all())
        shifts = arrays["shifts"]
        ok = ok and bool(((shifts >= 0) & (shifts <= 20)).all())
        ok = ok and bool((np.abs(arrays["lows"]) <= MAX_LEVELS).all())
        ok = ok and arrays["counts"].shape == (int(sizes.sum()),)
        ok = ok and all(np.isfinite(arrays[a]).all() for a in ("mean", "variances"))
        ok = ok and bool(((arrays["shrink"] >= 0) & (arrays["shrink"] < 0.5)).all())
    if ok and k:
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        sums = np.add.reduceat(arrays["counts"].astype(np.int64), bounds[:-1])
        ok = bool((sums == n).all())
    if not ok:
        raise FormatError(f"{reader.source}: the head frame's config and arrays do not agree")
    return config, arrays, crc32(bytes(reader.read_at(0, length))), length


def describe(archive) -> dict:
    """An archive's rows, dimension, kept axes, step, chunks, rate (``bits_per_dim``) and
    distortion (``mse``) as written in it, with the Gaussian bound at that distortion
    (``gaussian_bits_per_dim``, None for a lossless archive) and the gap to it; its
    head and tail frames checked whole and the chunk frames' headers in between
    (their order, and that they belong to this head), nothing decoded.

    Parameters
    ----------
    archive : bytes or path
        The archive's bytes, or the path of an archive file.

    Raises
    ------
    FormatError
        Not an archive, or a damaged one.

    Examples
    --------
    >>> x = np.random.default_rng(3).standard_normal((20000, 8)).astype(np.float32)
    >>> info = describe(compress(x, mse=0.05))
    >>> info["n"], info["d"], round(info["gaussian_bits_per_dim"], 2)
    (20000, 8, 2.16)
    >>> round(info["gap_bits_per_dim"], 1)
    0.3
    """
    reader, fd = _reader(archive)
    try:
        config, arrays, head_crc, offset = _head(reader)
        at = check_chain(reader, offset, head_crc, config["chunks"])
        tail, _, _ = reader.frame(at, "tail frame")
        mse, rate = tail.get("mse"), tail.get("bits_per_dim")
        if not all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in (mse, rate)):
            raise FormatError(f"{reader.source}: the tail frame is damaged")
        keys = ("n", "d", "axes", "lattice_groups", "step", "chunk_rows", "chunks")
        out = {key: config[key] for key in keys}
        bound = gaussian_rate(arrays["variances"], mse) if mse > 0 else None
        out.update(mse=mse, bits_per_dim=rate, gaussian_bits_per_dim=bound,
                   gap_bits_per_dim=None if bound is None else rate - bound)  # fmt: skip
        return out
    finally:
        if fd is not None:
            os.close(fd)


def iter_decompress(archive) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, float32 rows)`` of an archive, a chunk frame at a time: memory
    bounded by one chunk (``archive``: bytes, or the path of an archive file).

    Raises
    ------
    FormatError
        Not an archive, or a damaged one (checksums, shapes, frames missing or out of
        order, a coded stream that does not decode).

    Examples
    --------
    >>> x = np.random.default_rng(4).standard_normal((300, 4)).astype(np.float32)
    >>> [(lo, rows.shape) for lo, rows in iter_decompress(compress(x, mse=0.1))]
    [(0, (300, 4))]
    """
    yield from _decoded(archive, None)


def _decoded(archive, out: np.ndarray | None) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`iter_decompress`, each chunk's rows written into ``out`` if given (else
    new arrays)."""
    constriction = _constriction()
    reader, fd = _reader(archive)
    try:
        config, arrays, head_crc, offset = _head(reader)
        n, k, rows, g = config["n"], config["axes"], config["chunk_rows"], config["lattice_groups"]
        qz = Quantizer(config["step"], g, np.zeros(k - 8 * g, np.float32), arrays["shrink"])
        sizes, lows = arrays["sizes"], arrays["lows"]
        bounds = np.concatenate([[0], np.cumsum(sizes.astype(np.int64))])
        counts = [arrays["counts"][bounds[j] : bounds[j + 1]] for j in range(k)]
        models = _models(constriction, counts, n)
        deltas = stored_basis.steps(arrays["variances"][:k], config["step"],
                                    config["basis_precision"], config["d"])  # fmt: skip
        try:
            ints, whole = stored_basis.decode(
                constriction, arrays["basis"], config["basis_bound"], deltas, config["d"]
            )
        except Exception as e:  # whatever constriction raises on a stream it cannot decode
            raise FormatError(f"{reader.source}: the basis does not decode ({e})") from None
        if not whole:
            raise FormatError(f"{reader.source}: the basis does not decode")
        basis = stored_basis.stored(ints, deltas)
        mean = np.array(arrays["mean"])
        shifts = np.array(arrays["shifts"])
        if out is not None and out.shape != (n, config["d"]):
            raise ValueError(f"out has shape {out.shape}, the archive {(n, config['d'])}")
        q = np.zeros((k, min(rows, n)), np.int32)
        for i, frame, coded in chunk_frames(reader, offset, head_crc, config["chunks"]):
            lo, r = i * rows, min(rows, n - i * rows)
            if frame.get("rows") != r:
                raise FormatError(f"{reader.source}: chunk frame {i} holds the wrong rows")
            qi = q[:, :r]
            try:
                coder = constriction.stream.stack.AnsCoder(np.array(coded["words"]))
                for j in range(k):
                    qi[j] = coder.decode(models[j], r) if models[j] is not None else 0
                left = not coder.is_empty()
            except Exception as e:  # whatever constriction raises on a stream it cannot decode
                raise FormatError(
                    f"{reader.source}: chunk frame {i} does not decode ({e})"
                ) from None
            if left or (qi >= sizes[:, None]).any():
                raise FormatError(f"{reader.source}: chunk frame {i} does not decode")
            qi = np.ascontiguousarray(qi)
            if not kernels.add_low_bits(qi, shifts, np.array(coded["bits"])):
                raise FormatError(f"{reader.source}: chunk frame {i} has the wrong low bits")
            qi += lows[:, None]
            dst = None if out is None else out[lo : lo + r]
            yield lo, reconstruct(values(qi.T, qz), basis, mean, out=dst)
    finally:
        if fd is not None:
            os.close(fd)


def decompress(archive) -> np.ndarray:
    """The rows of an archive made by :func:`compress`: ``float32[n, d]``.

    Parameters
    ----------
    archive : bytes or path
        The archive's bytes, or the path of an archive file.

    Raises
    ------
    FormatError
        Not an archive, or a damaged one (:func:`iter_decompress`).
    """
    info = describe(archive)
    out = np.empty((info["n"], info["d"]), np.float32)
    for _ in _decoded(archive, out):
        pass
    return out


def decompress_file(archive, path, *, progress: bool = False) -> dict:
    """Decompress the archive file ``archive`` into the ``.npy`` file ``path``, a chunk
    at a time (memory bounded by one chunk), written atomically.

    Returns
    -------
    dict
        ``{"file", "rows", "dim"}``.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> x = np.random.default_rng(5).standard_normal((300, 4)).astype(np.float32)
    >>> with open(os.path.join(folder, "x.vpz"), "wb") as f:
    ...     _ = f.write(compress(x, mse=0.1))
    >>> decompress_file(os.path.join(folder, "x.vpz"), os.path.join(folder, "y.npy"))["rows"]
    300
    >>> np.load(os.path.join(folder, "y.npy")).shape
    (300, 4)
    """
    path = os.fspath(path)
    info = describe(archive)
    n, d = info["n"], info["d"]
    folder, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{base}.{os.getpid()}{TMP_SUFFIX}")
    with replacing(tmp, path) as f, _bar(progress, n, "decompress") as bar:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (n, d)}
        )
        for _, rows in iter_decompress(archive):
            f.write(rows.tobytes())
            bar.update(rows.shape[0])
    fsync_dir(folder)
    return {"file": path, "rows": n, "dim": d}


def recall_of(x: np.ndarray, y: np.ndarray, queries: int = RECALL_QUERIES) -> float:
    """Recall@10 of the rows ``y`` (decompressed) against ``x`` (original): ``queries``
    rows of ``x`` spread evenly search the others by inner product.

    Examples
    --------
    >>> x = np.random.default_rng(6).standard_normal((500, 8)).astype(np.float32)
    >>> recall_of(x, x)
    1.0
    """
    n = x.shape[0]
    if n < 2:
        return 1.0
    held = np.unique(np.linspace(0, n - 1, min(queries, max(1, n // 10))).astype(np.int64))
    rest = np.setdiff1d(np.arange(n), held)
    return recall_at_10(x[held], x[rest], y[rest])
