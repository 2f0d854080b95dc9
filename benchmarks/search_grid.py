"""The grid of ``benchmarks/search.py``: the indexes it builds (:data:`GRID`), their
search-time parameter points, the data sets' settings and the checks' targets.
"""

from __future__ import annotations

import dataclasses
import itertools

NLIST = "{nlist}"  # filled in per data set (DATASETS[...]["nlist"], or QUICK_NLIST)
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128)
QUICK_NPROBES = (2, 16, 64)
RERANKS = (None, 20, 50, 100, 200)
IVF_RERANKS = (None, 20, 50, 100)
EF_SEARCH = (16, 32, 64, 128, 256)
QUICK_RERANKS = (None, 50)
QUICK_EF_SEARCH = (16, 64, 256)
RECALL_TARGETS = (0.90, 0.95)
FLAT_RERANK_TARGET = 0.99
TRAIN_ROWS = 100_000  # fixed-seed base rows every library trains on
VP_METRIC = "cosine"  # the data is unit-norm: cosine = inner product


@dataclasses.dataclass
class Entry:
    """One index: build parameters and a grid of search parameters (their product)."""

    library: str  # "vecpress", "faiss" or "rabitqlib"
    key: str  # vecpress spec, faiss factory key, or rabitqlib "flat" / "IVF{nlist}"
    build: dict = dataclasses.field(default_factory=dict)
    search: dict = dataclasses.field(default_factory=dict)  # name -> values
    datasets: tuple[str, ...] = ("glove50",)
    quick: tuple[str, ...] = ()  # data sets on which it is part of --quick runs

    def resolved(self, nlist: int, quick: bool) -> Entry:
        def fill(v):
            return nlist if v == NLIST else v

        search = {
            k: (QUICK_NPROBES if quick and k == "nprobe" else v) for k, v in self.search.items()
        }
        if quick and "rerank" in search:
            search["rerank"] = tuple(r for r in search["rerank"] if r in QUICK_RERANKS)
        if quick and "efSearch" in search:
            search["efSearch"] = QUICK_EF_SEARCH
        return Entry(
            self.library,
            self.key.format(nlist=nlist),
            {k: fill(v) for k, v in self.build.items()},
            search,
            self.datasets,
            self.quick,
        )

    @property
    def points(self) -> list[dict]:
        names = list(self.search)
        return [
            dict(zip(names, vals, strict=True)) for vals in itertools.product(*self.search.values())
        ]

    @property
    def kind(self) -> str:
        if self.library == "vecpress":
            return "ivf" if self.build.get("ivf") else "flat"
        if self.library == "rabitqlib":
            return "ivf" if self.build.get("nlist", 1) > 1 else "flat"
        if "HNSW" in self.key:
            return "graph"
        return "ivf" if "IVF" in self.key else "flat"

    @property
    def label(self) -> str:
        if self.library == "vecpress":
            s = self.key
            if self.build.get("ivf"):
                s = f"IVF{self.build['ivf']},{s}"
            if self.build.get("rerank_spec"):
                s += f" + rerank {self.build['rerank_spec']}"
            return s
        if self.library == "rabitqlib":
            nl = self.build.get("nlist", 1)
            head = "flat (IvfIndex, 1 cluster)" if nl == 1 else f"IVF{nl}"
            return f"{head}, {self.build['nbits']} bits"
        if self.build.get("pad_to"):
            return f"{self.key} (d zero-padded to {self.build['pad_to']})"
        return self.key


def _vp(spec, datasets=("glove50",), quick=(), **build):
    search = {}
    if build.get("ivf"):
        search["nprobe"] = NPROBES
    if build.get("rerank_spec"):
        search["rerank"] = IVF_RERANKS if build.get("ivf") else RERANKS
    return Entry("vecpress", spec, build, search, datasets, quick)


GRID: list[Entry] = [
    # vecpress, flat
    _vp("hd2,rq4", ("glove50", "minilm"), quick=("glove50", "minilm")),
    _vp("center,hd2,rq4", ("glove50", "minilm"), quick=("minilm",)),
    # learned: principal axes, bits water-filled for scoring (4 bits per dimension on average)
    _vp("kl4", ("glove50", "minilm"), quick=("minilm",)),
    _vp("hd2,rq8"),
    _vp("hd2,rq4", rerank_spec="f32", quick=("glove50",)),
    _vp("hd2,rq4", rerank_spec="rq8"),
    _vp("center,hd2,rq4", rerank_spec="f32"),
    _vp("center,hd2,rq4", rerank_spec="rq8"),
    # vecpress, IVF
    _vp("hd2,rq4", ivf=NLIST, quick=("glove50",)),
    _vp("center,hd2,rq4", ivf=NLIST),
    _vp("hd2,rq8", ivf=NLIST),
    _vp("int8", ivf=NLIST, quick=("glove50",)),
    _vp("hd2,rq4", ivf=NLIST, rerank_spec="rq8", quick=("glove50",)),
    _vp("hd2,rq4", ivf=NLIST, rerank_spec="f32"),
    # faiss, flat
    Entry("faiss", "Flat", datasets=("glove50", "minilm"), quick=("glove50",)),
    Entry("faiss", "RR,RaBitQ4", datasets=("glove50", "minilm")),
    Entry("faiss", "PQ25x4fs"),
    Entry("faiss", "PQ50x4fs"),
    # faiss, IVF (same nprobe grid)
    Entry("faiss", "IVF{nlist},SQ8", search={"nprobe": NPROBES}, quick=("glove50",)),
    # faiss's SQ kernels are SIMD only where d is a multiple of 8: at d = 50 IVF,SQ8 scans
    # ~4.6x slower than the same data zero-padded to 56 (64 B/vector instead of 58)
    Entry("faiss", "IVF{nlist},SQ8", {"pad_to": 56}, {"nprobe": NPROBES}, quick=("glove50",)),
    Entry("faiss", "IVF{nlist},PQ25x4fs", search={"nprobe": NPROBES}),
    Entry("faiss", "IVF{nlist},PQ50x4fs", search={"nprobe": NPROBES}),
    Entry("faiss", "RR,IVF{nlist},RaBitQ4", search={"nprobe": NPROBES}, quick=("glove50",)),
    Entry("faiss", "RR,IVF{nlist},RaBitQfs4", search={"nprobe": NPROBES}),
    # faiss, graph
    Entry("faiss", "HNSW32,SQ8", search={"efSearch": EF_SEARCH}, quick=("glove50",)),
    # rabitqlib: IvfIndex with one cluster is its flat scan
    Entry(
        "rabitqlib",
        "flat",
        {"nlist": 1, "nbits": 4},
        {},
        ("glove50", "minilm"),
        ("glove50", "minilm"),
    ),
    Entry("rabitqlib", "IVF{nlist}", {"nlist": NLIST, "nbits": 4}, {"nprobe": NPROBES}),
]

DATASETS = {
    # recall on `recall_queries`, timing on the first `time_queries` of them (fewer for
    # slow points, never below `min_time_queries`)
    "glove50": {"nlist": 2048, "recall_queries": 10_000, "time_queries": 2_000},
    "minilm": {
        "nlist": 256,
        "recall_queries": 1_000,
        "time_queries": 1_000,
        "min_time_queries": 1_000,
    },
}
QUICK_BASE_ROWS = 100_000  # --quick: GloVe base cut to its first rows
QUICK_NLIST = 512


def fmt_params(p: dict) -> str:
    return ", ".join(f"{k}={'–' if v is None else v}" for k, v in p.items()) or "–"
