"""Peer codecs measured beside vecpress's in ``vecpress bench --peers``.

* **faiss** (a dependency): flat codec indexes from ``index_factory`` —
  ``SQfp16``, ``SQ8``, ``SQ4``, ``RR,RaBitQ`` (1 bit), ``RR,RaBitQ4`` and
  ``PQ{d/2}x4fs`` (4-bit fast-scan PQ, 2 bits per dimension) — trained on the
  base rows vecpress's own build trains on (:func:`vecpress.search.index.training_rows`),
  searched with faiss's own threads. RaBitQ quantizes the queries to
  ``FAISS_RABITQ_QB`` = 8 bits, as the benchmarks do (``benchmarks/search.py``,
  ``benchmarks/query_bits.py``), not faiss's default of 0 (float queries); its
  labels say so (``faiss:RR,RaBitQ4 qb=8``).
* **sentence-transformers** (when installed): its ``int8`` (per-dimension
  calibrated ranges) and ``ubinary`` schemes via ``quantize_embeddings``,
  searched as its ``semantic_search_*`` helpers do: the quantized query finds
  ``4k`` candidates, the float query re-scores them against the stored codes.
  ``int8`` is calibrated on the same uniform sample of the base as vecpress
  fits on (the first rows of a frequency-ordered set like GloVe are not
  typical). Its speed depends on the engine behind it, so only recall and
  bytes are reported (``qps`` is ``None``).

Every timed peer is timed as vecpress is, by :func:`vecpress.advisor.bench.timed_qps`
(a warm-up, then passes until ``MIN_TIME``, at most ``MAX_PASSES``, the median
pass counted), at one thread and at the workload's thread count.

Records have the fields of :meth:`vecpress.advisor.bench.Workload.measure`, with
``peer`` naming the library; bytes per vector count the code and an 8-byte id,
as vecpress's do.
"""

from __future__ import annotations

import resource
import time

import numpy as np

from ..search.index import FIT_SAMPLE, training_rows
from ..search.topk import topk
from . import bench

#: faiss factory keys (``{m}`` = d/2 sub-quantizers)
FAISS_KEYS = ("SQfp16", "SQ8", "SQ4", "RR,RaBitQ", "RR,RaBitQ4", "PQ{m}x4fs")
#: query bits of faiss's RaBitQ indexes, as in ``benchmarks/search.py`` and
#: ``benchmarks/query_bits.py`` (faiss's default, 0, keeps the queries in float)
FAISS_RABITQ_QB = 8
#: sentence-transformers re-scores this many times k candidates (its default)
ST_RESCORE = 4


def _record(workload, label: str, peer: str, code_size: int, found, build_s, qps_1t, qps):
    return {
        "label": label,
        "peer": peer,
        "spec": label,
        "rerank_spec": None,
        "rerank": None,
        "ivf": None,
        "nprobe": None,
        "code_size": int(code_size),
        "bytes_per_vector": int(code_size) + 8 + (4 if workload.metric == "l2" else 0),
        "shared_bytes": 0,
        "k": workload.k,
        **workload.recalls(found),
        "recall_k_at_r": None,
        "graph_recall": None,
        "mse": None,
        "ip_bias": None,
        "ip_spread": None,
        "encode_us": build_s / workload.n * 1e6,
        "qps_1t": qps_1t,
        "qps": qps,
        "threads": workload.threads,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def fit_rows(workload) -> np.ndarray:
    """The base rows every peer fits on: those vecpress's flat build trains on.

    A uniform sample of ``FIT_SAMPLE`` rows drawn with the workload's seed (all rows
    when fewer), :func:`vecpress.search.index.training_rows` as :func:`vecpress.search.index.build`
    draws it, sorted.

    Examples
    --------
    >>> class W:
    ...     n, seed = 5, 0
    >>> fit_rows(W()).tolist()
    [0, 1, 2, 3, 4]
    """
    return training_rows(workload.n, FIT_SAMPLE, workload.seed)


def set_rabitq_qb(faiss, index, qb: int = FAISS_RABITQ_QB) -> bool:
    """Set the query bits of a faiss RaBitQ index (under its pre-transform, if any);
    whether ``index`` is one."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    if "RaBitQ" in type(inner).__name__ and hasattr(inner, "qb"):
        inner.qb = qb
        return True
    return False


def _faiss_records(workload) -> list[dict]:
    from ..threads import faiss_module

    faiss = faiss_module()

    d, k = workload.d, workload.k
    metric = faiss.METRIC_L2 if workload.metric == "l2" else faiss.METRIC_INNER_PRODUCT
    train = workload.pbase[fit_rows(workload)]
    out = []
    for key in FAISS_KEYS:
        if "{m}" in key:
            if d % 2:
                continue
            key = key.format(m=d // 2)
        t0 = time.perf_counter()
        index = faiss.index_factory(d, key, metric)
        label = f"faiss:{key}"
        if set_rabitq_qb(faiss, index):
            label += f" qb={FAISS_RABITQ_QB}"
        index.train(train)
        index.add(workload.pbase)
        build_s = time.perf_counter() - t0
        qps = {}
        for threads in (1, workload.threads):
            faiss.omp_set_num_threads(threads)
            qps[threads], _, (_, found) = bench.timed_qps(
                lambda q, index=index: index.search(q, k), workload.pqueries
            )
        faiss.omp_set_num_threads(workload.threads)
        out.append(
            _record(
                workload,
                label,
                "faiss",
                index.sa_code_size(),
                found,
                build_s,
                qps[1],
                qps[workload.threads],
            )
        )
    return out


def _rescored(q, coarse: np.ndarray, stored: np.ndarray, r: int, k: int) -> np.ndarray:
    """The best ``k`` of the best ``r`` by ``coarse`` scores, re-scored by ``<q, stored>``."""
    cand, _ = topk(coarse, r)
    rescored = np.einsum("qd,qrd->qr", q, stored[cand])
    return np.take_along_axis(cand, topk(rescored, k)[0], axis=1)


def _st_record(workload, scheme: str, nbytes: int, found: np.ndarray, build_s: float) -> dict:
    """The record of a sentence-transformers scheme (not timed: no queries/s)."""
    name = f"sentence-transformers:{scheme}"
    return _record(workload, name, "sentence-transformers", nbytes, found, build_s, None, None)


def _st_records(workload) -> list[dict]:
    try:
        from sentence_transformers.util.quantization import quantize_embeddings
    except ImportError:
        try:
            from sentence_transformers.quantization import quantize_embeddings
        except ImportError:
            return []
    if workload.metric == "l2":
        return []  # its schemes score by inner product (or Hamming) only
    base, q, k = workload.pbase, workload.pqueries, workload.k
    r = min(ST_RESCORE * k, workload.n)
    out = []
    t0 = time.perf_counter()
    calibration = base[fit_rows(workload)]  # vecpress's uniform fit sample, not the first rows
    codes = quantize_embeddings(base, "int8", calibration_embeddings=calibration)
    build_s = time.perf_counter() - t0
    ranges = np.stack([calibration.min(axis=0), calibration.max(axis=0)])
    qc = quantize_embeddings(q, "int8", ranges=ranges).astype(np.float32)
    stored = codes.astype(np.float32)
    found = _rescored(q, qc @ stored.T, stored, r, k)
    out.append(_st_record(workload, "int8", codes.shape[1], found, build_s))
    t0 = time.perf_counter()
    bits = quantize_embeddings(base, "ubinary")
    build_s = time.perf_counter() - t0
    signs = np.unpackbits(bits, axis=1)[:, : workload.d].astype(np.float32) * 2 - 1
    qs = np.where(q > 0, 1.0, -1.0).astype(np.float32)
    found = _rescored(q, qs @ signs.T, signs, r, k)  # qs @ signs.T = d - 2 * Hamming
    out.append(_st_record(workload, "binary", bits.shape[1], found, build_s))
    return out


def measure_peers(workload) -> list[dict]:
    """Records of faiss's codecs and (when installed) sentence-transformers' schemes."""
    return _faiss_records(workload) + _st_records(workload)


def skipped_peers(workload) -> list[str]:
    """Why a peer of :func:`measure_peers` is left out on this workload (one line each).

    Examples
    --------
    >>> class W:
    ...     metric = "l2"
    >>> any("inner product" in s or "not installed" in s for s in skipped_peers(W()))
    True
    """
    import importlib.util

    if importlib.util.find_spec("sentence_transformers") is None:
        return [
            "sentence-transformers is not installed: its int8 and ubinary schemes were not "
            "measured (pip install sentence-transformers)"
        ]
    if workload.metric == "l2":
        return ["sentence-transformers' schemes score by inner product: not measured under l2"]
    return []
