"""The peers of ``vecpress bench --peers`` are measured by vecpress's own protocol.

Same query bits for faiss's RaBitQ as the benchmarks, the same timing passes as
vecpress's configurations, the same uniform fit sample for every calibration.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import vecpress
from vecpress.advisor import bench, peers
from vecpress.advisor.bench import Config, Workload
from vecpress.search.index import training_rows


def _workload(n=400, d=16, threads=2):
    rng = np.random.default_rng(3)
    # rows ordered by norm, as a frequency-ordered set is: the first rows are not typical
    base = rng.standard_normal((n, d)).astype(np.float32)
    base = base[np.argsort(np.linalg.norm(base, axis=1))]
    return Workload(base, rng.standard_normal((100, d)), "ip", k=5, threads=threads)


class _Faiss:
    """faiss, with the indexes ``index_factory`` made kept and their searches counted."""

    def __init__(self):
        import faiss

        self._faiss = faiss
        self.made: list[tuple[str, object]] = []
        self.calls: dict[str, list[int]] = {}

    def __getattr__(self, name):
        return getattr(self._faiss, name)

    def index_factory(self, d, key, metric):
        index = self._faiss.index_factory(d, key, metric)
        search, calls = index.search, self.calls.setdefault(key, [])

        def counted(q, k, *a, **kw):
            calls.append(q.shape[0])
            return search(q, k, *a, **kw)

        index.search = counted
        self.made.append((key, index))
        return index


@pytest.fixture
def fake_faiss(monkeypatch):
    pytest.importorskip("faiss")
    fake = _Faiss()
    monkeypatch.setattr(vecpress.threads, "faiss_module", lambda: fake)
    monkeypatch.setattr(peers, "FAISS_KEYS", ("SQ8", "RR,RaBitQ4"))
    monkeypatch.setattr(peers, "_st_records", lambda w: [])
    return fake


def test_faiss_rabitq_runs_at_the_benchmarks_query_bits(fake_faiss):
    """faiss's RaBitQ quantizes queries to 8 bits (benchmarks/search.py's ``qb``), not
    faiss's default 0, and its label says so."""
    records = peers.measure_peers(_workload())
    faiss = fake_faiss._faiss
    (index,) = [ix for key, ix in fake_faiss.made if "RaBitQ" in key]
    inner = faiss.downcast_index(faiss.downcast_index(index).index)
    assert isinstance(inner, faiss.IndexRaBitQ)
    assert inner.qb == peers.FAISS_RABITQ_QB == 8
    labels = [r["label"] for r in records]
    assert labels == ["faiss:SQ8", "faiss:RR,RaBitQ4 qb=8"]


def test_peers_are_timed_by_the_same_passes_as_vecpress(fake_faiss, monkeypatch):
    """Every faiss index gets the warm-up and the repeated timed passes (median kept)
    that vecpress's configurations get: the same number of searches of each size."""
    monkeypatch.setattr(bench, "MIN_TIME", 1e9)  # every timing runs its MAX_PASSES passes
    w = _workload(threads=2)
    vp_calls: list[int] = []
    search = vecpress.Index.search

    def counted(self, q, k, *a, **kw):
        vp_calls.append(np.asarray(q).shape[0])
        return search(self, q, k, *a, **kw)

    monkeypatch.setattr(vecpress.Index, "search", counted)
    w.measure(Config("int8"))
    peers.measure_peers(w)
    nq = w.queries.shape[0]
    assert vp_calls.count(nq) == 2 * bench.MAX_PASSES  # 1 thread and 2 threads
    for key, calls in fake_faiss.calls.items():
        assert sorted(calls) == sorted(vp_calls), key


def test_timed_qps_keeps_the_median_pass(monkeypatch):
    """The shared helper: one warm-up, passes until ``MIN_TIME``, the median counts."""
    ticks = iter([0.0, 1.0, 1.0, 4.0, 4.0, 6.0])  # passes of 1 s, 3 s and 2 s
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(bench, "MIN_TIME", 5.5)
    seen = []
    qps, passes, res = bench.timed_qps(lambda q: seen.append(len(q)) or len(q), np.zeros((100, 2)))
    assert seen == [bench.WARM_QUERIES, 100, 100, 100]
    assert (qps, passes, res) == (50.0, 3, 100)


def _fake_sentence_transformers(monkeypatch) -> list[dict]:
    """A stand-in for ``sentence_transformers.util.quantization`` recording its calls."""
    calls: list[dict] = []

    def quantize_embeddings(embeddings, precision, ranges=None, calibration_embeddings=None):
        calls.append(
            {"precision": precision, "ranges": ranges, "calibration": calibration_embeddings}
        )
        if precision == "ubinary":
            return np.packbits(embeddings > 0, axis=1)
        if ranges is None:
            cal = embeddings if calibration_embeddings is None else calibration_embeddings
            ranges = np.stack([cal.min(axis=0), cal.max(axis=0)])
        steps = (ranges[1] - ranges[0]) / 255
        return ((embeddings - ranges[0]) / steps - 128).clip(-128, 127).astype(np.int8)

    module = types.ModuleType("sentence_transformers.util.quantization")
    module.quantize_embeddings = quantize_embeddings
    monkeypatch.setitem(sys.modules, "sentence_transformers.util.quantization", module)
    return calls


def test_sentence_transformers_calibrates_on_vecpress_fit_sample(monkeypatch):
    """int8 calibration uses the uniform sample vecpress fits on, not the first rows."""
    calls = _fake_sentence_transformers(monkeypatch)
    monkeypatch.setattr(peers, "FIT_SAMPLE", 100)
    monkeypatch.setattr(peers, "FAISS_KEYS", ())
    w = _workload(n=400)
    records = peers.measure_peers(w)
    assert [r["label"] for r in records] == [
        "sentence-transformers:int8",
        "sentence-transformers:binary",
    ]
    sample = w.pbase[training_rows(w.n, 100, w.seed)]
    (fit,) = [c for c in calls if c["calibration"] is not None]
    np.testing.assert_array_equal(fit["calibration"], sample)
    (query,) = [c for c in calls if c["ranges"] is not None]  # the queries: same ranges
    np.testing.assert_array_equal(query["ranges"], [sample.min(axis=0), sample.max(axis=0)])
