"""Measure index configurations on a workload: the instrument behind ``bench`` and ``advise``.

A :class:`Config` is one thing a user could build and search: a codec spec,
an optional re-ranking tier and depth, an optional IVF partition and probe
count. A :class:`Workload` holds base vectors, queries, the metric and the
exact ground truth, and :meth:`Workload.measure` builds the index exactly as
``vecpress build`` does (:func:`vecpress.search.index.build`), searches it exactly as
``vecpress search`` does, and returns one plain-dict record (JSON-ready):

* ``code_size`` (first-stage code bytes), ``bytes_per_vector`` (every tier, the
  8-byte id, and ``|x|²`` under l2: :attr:`Index.bytes_per_vector`),
  ``shared_bytes`` (codec states, IVF centroids);
* ``recall_at_k`` (by default strict: the share of the exact k nearest ids
  returned, as faiss users compute it; with ``recall="ties"``, as
  ann-benchmarks does: a returned vector whose exact score is within 1e-3 of
  the k-th best counts, which on data with many near-equal neighbours is
  higher) and its standard error ``recall_se`` over queries; both means,
  ``recall_strict`` and ``recall_ties``; ``recall_k_at_r`` of the first stage
  when re-ranking;
* ``graph_recall`` (the exact 10-NN of 500 base vectors kept when both sides
  are decoded), ``mse`` (relative), ``ip_bias``/``ip_spread`` of the
  inner-product estimate — for flat configurations, per codec;
* ``encode_us`` (build time per vector, fit included), ``qps_1t`` and ``qps``
  (all threads; both timed by :func:`timed_qps`, as the peers are), ``peak_rss_mb``
  (the process's high-water mark so far).

:func:`search_space` lists the configurations the advisor chooses from, as
:class:`Family` objects: each an ordered list along one axis (bits, re-rank
depth or nprobe) along which recall rises, so a search can bisect it.
"""

from __future__ import annotations

import math
import resource
import shlex
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import numpy as np

from ..codecs.codec import Codec
from ..search.index import Index, build, training_rows
from ..threads import get_num_threads, set_num_threads
from .groundtruth import ground_truth, prepare
from .measures import (
    distortion,
    graph_recall,
    mean_and_se,
    recall_k_at_r,
    recall_with_ties,
    strict_recall,
)

#: search passes are repeated until they take this long in all (at most ``MAX_PASSES``);
#: the queries/s reported are those of the median pass (:func:`timed_qps`)
MIN_TIME = 0.2
MAX_PASSES = 5
#: queries of the untimed warm-up search before each timing
WARM_QUERIES = 64
#: base rows decoded for the graph and distortion measures, and graph sample rows
CODEC_SAMPLE = 20_000
GRAPH_SAMPLE = 500
DISTORTION_QUERIES = 100
#: definitions of recall@k (see :meth:`Workload.recalls`)
RECALLS = ("strict", "ties")
#: indexes kept built (a sweep over re-rank depths or nprobe reuses one build)
KEEP_BUILT = 2


@dataclass(frozen=True)
class Config:
    """One index configuration: codec, optional re-ranking tier and depth, optional IVF.

    Examples
    --------
    >>> Config("center,hd2,rq4", rerank_spec="f16", rerank=50).label
    'center,hd2,rq4 + f16 R=50'
    >>> Config("int8", ivf=1024, nprobe=16).search_args(10)
    '-k 10 --nprobe 16'
    >>> Config("center,hd2,rq4", rerank_spec="f16", rerank="auto").search_args(10)
    '-k 10 --rerank auto'
    """

    spec: str
    rerank_spec: str | None = None
    #: candidates re-scored by the tier, or ``"auto"``: certified re-ranking
    #: (``Index.search(..., rerank="auto")`` at its default confidence)
    rerank: int | str | None = None
    ivf: int | None = None
    nprobe: int | None = None

    @property
    def label(self) -> str:
        s = self.spec
        if self.rerank_spec is not None:
            s += f" + {self.rerank_spec} R={self.rerank}"
        elif self.rerank is not None:  # the second level of a two-level spec
            s += f" R={self.rerank}"
        if self.ivf is not None:
            s += f" IVF{self.ivf} p{self.nprobe}"
        return s

    @property
    def build_key(self) -> tuple:
        return (self.spec, self.rerank_spec, self.ivf)

    def build_args(self, metric: str) -> str:
        s = f"--spec {shlex.quote(self.spec)} --metric {metric}"
        if self.ivf is not None:
            s += f" --ivf {self.ivf}"
        if self.rerank_spec is not None:
            s += f" --rerank-spec {shlex.quote(self.rerank_spec)}"
        return s

    def search_args(self, k: int) -> str:
        s = f"-k {k}"
        if self.rerank is not None:
            s += f" --rerank {self.rerank}"
        if self.nprobe is not None:
            s += f" --nprobe {self.nprobe}"
        return s


@dataclass(frozen=True)
class Family:
    """Configurations ordered along one axis (``"bits"``, ``"rerank"``, ``"nprobe"``)
    along which bytes do not fall and recall is expected to rise."""

    name: str
    axis: str
    configs: tuple[Config, ...] = field(default_factory=tuple)


#: quantizer families along bits: name -> (spec template, bits)
BIT_FAMILIES = {
    "rq": ("center,hd2,rq{b}", range(1, 9)),
    "lvq": ("center,hd2,lvq{b}", range(2, 9)),
    "int": ("int{b}", range(3, 9)),
    "tq": ("center,hd2,tq{b}", range(1, 5)),
    # principal axes, bits per axis by reverse water-filling (average b per dimension)
    "kl": ("kl{b}", range(1, 5)),
    "float": (None, ("e4m3", "f16")),
    # product quantizers at 0.5, 1, 2 (x4: fast-scan) and 1, 2, 4 (x8) bits per dimension
    "pq": ("pq{m}x4", (8, 4, 2)),
    "pq8": ("pq{m}x8", (8, 4, 2)),
    # the same x4 codes after a learned rotation (OPQ)
    "opq": ("opq{m}x4", (8, 4, 2)),
    # additive (residual) quantizers of 8-bit codebooks at 0.5, 1 and 2 bits per
    # dimension: minutes to train at d = 384 (vecpress.advisor.cost), so in the full grid
    "rvq": ("rvq{m}x8", (16, 8, 4)),
    # transform coding with a residual quantizer on the leading axes (issue 21's hybrid):
    # at 1 bit per dimension, where it leads (at 2, kl2 does); its block trains like rvq's,
    # coded score-aware (eta 3: 0.7305 against 0.7179 on MiniLM, 0.2924 against 0.2365
    # on GloVe-50 at beam 16; transform_vq's docstring)
    "klvq": ("klvq{b}-aniso3", (1,)),
    # principal directions kept (d/4 to 15d/16 in steps of d/16), then 4-bit codes
    "pca": ("pca{m},hd2,rq4", tuple(16 / k for k in range(4, 16))),
    # the same with query and data projections learned for the queries (needs a sample
    # of them: in the space only when the workload has training queries)
    "leanvec-ood": ("leanvec-ood{m},hd2,rq4", tuple(16 / k for k in range(4, 16))),
}
#: families that need a sample of the queries to fit
QUERY_FAMILIES = ("leanvec-ood",)
#: which families each grid holds, its re-ranking part (first stages re-ranked by
#: ``RERANK_TIER``, and two-level ``lvq<b1>x<b2>`` codes re-ranked by their second
#: level), and which codecs get IVF variants
#: ("all": every member of its bits families — the whole space the advisor chooses from)
GRIDS = {
    "quick": {
        "families": ("rq", "float"),
        "rerank_first": (1, 4),
        "rerank_depths": (2, 10),
        "two_level": (),
        "ivf": ("center,hd2,rq4", "center,hd2,rq8"),
    },
    "default": {
        "families": ("rq", "lvq", "int", "tq", "kl", "float", "pq", "pq8", "opq", "pca"),
        "rerank_first": (1, 2, 4),
        "rerank_depths": (2, 5, 10, 20),
        "two_level": ((4, 4),),
        "ivf": ("center,hd2,rq2", "center,hd2,rq4", "center,hd2,rq6", "int8"),
    },
    "full": {
        "families": (
            "rq",
            "lvq",
            "int",
            "tq",
            "kl",
            "float",
            "pq",
            "pq8",
            "opq",
            "pca",
            "rvq",
            "klvq",
        ),
        "rerank_first": (1, 2, 3, 4),
        "rerank_depths": (1, 2, 5, 10, 20, 50),
        "two_level": ((2, 4), (4, 4), (4, 8)),
        "ivf": "all",
    },
}
#: second tier of the re-ranking families
RERANK_TIER = "center,hd2,rq8"
#: nprobe grid as fractions of nlist
NPROBE_FRACTIONS = (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4)


def timed_qps(search, queries: np.ndarray) -> tuple[float, int, object]:
    """Queries/s of ``search(queries)`` by the one protocol every library is timed with.

    A warm-up call on the first ``WARM_QUERIES`` queries (untimed: compiled kernels,
    caches), then passes over all ``queries`` repeated until they take ``MIN_TIME``
    seconds in all, at most ``MAX_PASSES``; the median pass counts, so one pass slowed
    by other work on the machine does not. vecpress's configurations
    (:meth:`Workload.measure`) and the peers (:mod:`vecpress.advisor.peers`) are all timed here.

    Parameters
    ----------
    search : callable
        Searches a batch of queries (the thread count is set by the caller).
    queries : numpy.ndarray
        The queries, one per row.

    Returns
    -------
    tuple
        ``(queries/s, passes timed, result of the last pass)``.

    Examples
    --------
    >>> q = np.zeros((100, 4), np.float32)
    >>> qps, passes, res = timed_qps(lambda x: x.shape[0], q)
    >>> qps > 0, 1 <= passes <= MAX_PASSES, res
    (True, True, 100)
    """
    search(queries[:WARM_QUERIES])
    times: list[float] = []
    res = None
    while sum(times) < MIN_TIME and len(times) < MAX_PASSES:
        t0 = time.perf_counter()
        res = search(queries)
        times.append(time.perf_counter() - t0)
    return queries.shape[0] / float(np.median(times)), len(times), res


def pq_subspaces(d: int, dims_per_subspace: int) -> int:
    """The divisor of ``d`` nearest ``d / dims_per_subspace`` (PQ needs M to divide d)."""
    target = d / dims_per_subspace
    return min((m for m in range(1, d + 1) if d % m == 0), key=lambda m: (abs(m - target), m))


def family_specs(name: str, d: int) -> list[str]:
    """The specs of a bits family at dimension ``d``, fewest bytes first.

    Examples
    --------
    >>> family_specs("pq", 384), family_specs("rq", 384)[:2]
    (['pq48x4', 'pq96x4', 'pq192x4'], ['center,hd2,rq1', 'center,hd2,rq2'])
    >>> family_specs("rvq", 50)
    ['rvq3x8', 'rvq6x8', 'rvq12x8']
    """
    template, values = BIT_FAMILIES[name]
    if template is None:
        return list(values)
    if template.startswith(("pca", "leanvec")):
        return [template.format(m=m) for m in sorted({max(1, round(d / f)) for f in values})]
    if template.startswith("rvq"):  # any number of codebooks: no divisor of d needed
        return [template.format(m=m) for m in sorted({max(1, round(d / v)) for v in values})]
    if "{m}" in template:
        ms = sorted({pq_subspaces(d, per) for per in values})
        return [template.format(m=m) for m in ms]
    return [template.format(b=b) for b in values]


def nlist_for(n: int) -> int | None:
    """IVF list count for ``n`` vectors: the power of two nearest ``2·√n``, at most
    ``n / 64`` (k-means wants dozens of points per centroid); ``None`` below 16 lists.

    Examples
    --------
    >>> nlist_for(100_000), nlist_for(390_000), nlist_for(3_000), nlist_for(500)
    (512, 1024, 32, None)
    """
    nlist = min(1 << round(math.log2(2 * math.sqrt(n))), 1 << int(math.log2(n / 64)))
    return nlist if nlist >= 16 else None


def nprobe_grid(nlist: int) -> list[int]:
    return sorted({max(1, round(nlist * f)) for f in NPROBE_FRACTIONS})


def ivf_family(spec: str, nlist: int) -> Family:
    return Family(
        f"ivf:{spec}",
        "nprobe",
        tuple(Config(spec, ivf=nlist, nprobe=p) for p in nprobe_grid(nlist)),
    )


def rerank_family(spec: str, depths: tuple[int, ...], k: int, tier: str = RERANK_TIER) -> Family:
    return Family(
        f"rerank:{spec}+{tier}",
        "rerank",
        tuple(Config(spec, rerank_spec=tier, rerank=m * k) for m in depths),
    )


def auto_config(family: Family) -> Config | None:
    """The certified re-ranking (``rerank="auto"``) of a re-rank family with a tier,
    next to its fixed depths; ``None`` for a family without one.

    Examples
    --------
    >>> auto_config(rerank_family("center,hd2,rq4", (1, 2), 10)).label
    'center,hd2,rq4 + center,hd2,rq8 R=auto'
    """
    first = family.configs[0] if family.configs else None
    if family.axis != "rerank" or first is None or first.rerank_spec is None:
        return None
    return Config(first.spec, rerank_spec=first.rerank_spec, rerank="auto", ivf=first.ivf,
                  nprobe=first.nprobe)  # fmt: skip


def two_level_family(b1: int, b2: int, depths: tuple[int, ...], k: int) -> Family:
    """``center,lvq<b1>x<b2>`` searched by its first level and re-ranked by both."""
    spec = f"center,lvq{b1}x{b2}"
    return Family(f"rerank:{spec}", "rerank", tuple(Config(spec, rerank=m * k) for m in depths))


def search_space(
    n: int, k: int = 10, grid: str = "default", d: int = 384, train_queries: bool = False
) -> list[Family]:
    """The families of configurations a grid holds for ``n`` base vectors of dimension ``d``.

    With ``train_queries`` (a sample of the queries to fit on) the default and full grids
    also hold the families that learn from queries (:data:`QUERY_FAMILIES`).

    Examples
    --------
    >>> [f.name for f in search_space(1000, grid="quick")]
    ['rq', 'float', 'rerank:center,hd2,rq1+center,hd2,rq8', 'rerank:center,hd2,rq4+center,hd2,rq8']
    """
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {', '.join(GRIDS)}, found {grid!r}")
    g = GRIDS[grid]
    names = list(g["families"])
    if train_queries and grid != "quick":
        names += QUERY_FAMILIES
    families = [
        Family(name, "bits", tuple(Config(s) for s in family_specs(name, d))) for name in names
    ]
    families += [
        rerank_family(f"center,hd2,rq{b}", g["rerank_depths"], k) for b in g["rerank_first"]
    ]
    families += [two_level_family(b1, b2, g["rerank_depths"], k) for b1, b2 in g["two_level"]]
    nlist = nlist_for(n)
    if nlist is not None:
        specs = g["ivf"]
        if specs == "all":
            specs = [c.spec for f in families if f.axis == "bits" for c in f.configs]
        families += [ivf_family(spec, nlist) for spec in specs]
    return families


class Workload:
    """Base vectors, queries, metric, ``k`` and exact ground truth, ready to measure configs.

    Parameters
    ----------
    base, queries : numpy.ndarray
        Float vectors (raw: normalised here for cosine, as the index does).
    metric : str
        ``"cosine"``, ``"ip"`` or ``"l2"``.
    k : int
        Neighbours per query.
    cache_dir : path, optional
        Where ground truth is cached (:func:`vecpress.advisor.groundtruth.ground_truth`).
    threads : int, optional
        Threads of the "all threads" timing (default: vecpress's current count).
    seed : int
        Seed of every index built and of the samples.
    recall : str
        What ``recall_at_k`` means: ``"strict"`` (the default: shared ids with the
        exact k nearest) or ``"ties"`` (ann-benchmarks: a returned vector within
        1e-3 of the k-th exact score counts).
    train_queries : numpy.ndarray, optional
        A sample of the queries for the stages that learn from them
        (``leanvec-ood<d'>``), passed to every build; keep it apart from ``queries``,
        or the recall measured is optimistic.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> w = Workload(rng.standard_normal((2000, 32)), rng.standard_normal((50, 32)), "ip")
    >>> r = w.measure(Config("center,hd2,rq8"))
    >>> r["bytes_per_vector"], r["recall_at_k"] > 0.9
    (52, True)
    """

    def __init__(
        self,
        base: np.ndarray,
        queries: np.ndarray,
        metric: str = "cosine",
        k: int = 10,
        *,
        cache_dir=None,
        threads: int | None = None,
        seed: int = 0,
        recall: str = "strict",
        train_queries: np.ndarray | None = None,
    ) -> None:
        if recall not in RECALLS:
            raise ValueError(f"recall must be one of {', '.join(RECALLS)}, found {recall!r}")
        self.recall = recall
        self.base = np.ascontiguousarray(base, np.float32)
        self.queries = np.ascontiguousarray(queries, np.float32)
        self.train_queries = (
            None if train_queries is None else np.ascontiguousarray(train_queries, np.float32)
        )
        self.metric, self.k, self.seed = metric, k, seed
        self.threads = threads or get_num_threads()
        self.pbase = prepare(self.base, metric)
        self.pqueries = prepare(self.queries, metric)
        self.true_ids, self.true_scores = ground_truth(
            self.queries, self.base, k, metric, cache_dir=cache_dir
        )
        self._built: OrderedDict[tuple, tuple] = OrderedDict()
        self._centroids: dict[int, np.ndarray] = {}
        self._kmeans_s: dict[int, float] = {}
        self._codec_stats: dict[str, dict] = {}
        self._sizes: dict[str, int] = {}
        self._measured: dict[Config, dict] = {}
        self.records: list[dict] = []

    @property
    def n(self) -> int:
        return self.base.shape[0]

    @property
    def d(self) -> int:
        return self.base.shape[1]

    # -- sizes without building ------------------------------------------------
    def code_size(self, spec: str) -> int:
        """Code bytes per vector of ``spec`` at this dimension (no fitting)."""
        if spec not in self._sizes:
            self._sizes[spec] = Codec.code_size_of(spec, self.d)
        return self._sizes[spec]

    def bytes_per_vector(self, config: Config) -> int:
        """What :attr:`Index.bytes_per_vector` of ``config`` will be."""
        extra = 0 if config.rerank_spec is None else self.code_size(config.rerank_spec)
        return self.code_size(config.spec) + extra + 8 + (4 if self.metric == "l2" else 0)

    # -- measuring ------------------------------------------------------------
    def _index(self, config: Config):
        key = config.build_key
        if key in self._built:
            self._built.move_to_end(key)
            return self._built[key]
        while len(self._built) >= KEEP_BUILT:
            self._built.popitem(last=False)
        centroids = None if config.ivf is None else self.centroids(config.ivf)
        t0 = time.perf_counter()
        index = build(
            self.base,
            config.spec,
            self.metric,
            seed=self.seed,
            rerank_spec=config.rerank_spec,
            ivf=config.ivf,
            centroids=centroids,
            queries=self.train_queries,
        )
        seconds = time.perf_counter() - t0
        if config.ivf is not None:
            seconds += self._kmeans_s[config.ivf]  # what a fresh build would spend
        self._built[key] = (index, seconds)
        return self._built[key]

    def centroids(self, nlist: int) -> np.ndarray:
        """The IVF centroids every ``nlist``-list build of this workload gets.

        k-means depends only on the training rows, ``nlist``, the metric and the
        seed, not on the codec, so it runs once per ``nlist`` (on the rows
        :func:`vecpress.search.index.build` trains on) and its time is added to the
        build time of every IVF configuration, as a fresh build would spend it.
        """
        if nlist not in self._centroids:
            probe = Index("f16", self.metric, seed=self.seed, ivf=nlist)
            rows = training_rows(self.n, probe.train_rows, self.seed)
            t0 = time.perf_counter()
            probe.train(self.base[rows])
            self._kmeans_s[nlist] = time.perf_counter() - t0
            self._centroids[nlist] = probe.centroids
        return self._centroids[nlist]

    def _timed_search(self, index, config: Config, threads: int):
        prev = get_num_threads()
        set_num_threads(threads)
        try:
            qps, _, res = timed_qps(
                lambda q: index.search(q, self.k, rerank=config.rerank, nprobe=config.nprobe),
                self.queries,
            )
        finally:
            set_num_threads(prev)
        return qps, res

    def retime(self, configs: list[Config], rounds: int = 3) -> list[float]:
        """Queries/s on one thread of each of ``configs``, timed again in alternation
        (``rounds`` times each, the fastest round kept), so that they share the machine's
        load. Other work on the machine only ever slows a round down, so the fastest
        is the least disturbed: a gap between two configurations must then hold in
        their best rounds, not appear because load fell on one of them twice.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> w = Workload(rng.standard_normal((2000, 32)), rng.standard_normal((50, 32)), "ip")
        >>> a, b = w.retime([Config("int8"), Config("center,hd2,rq4")], rounds=2)
        >>> a > 0 and b > 0
        True
        """
        qps: list[list[float]] = [[] for _ in configs]
        for _ in range(rounds):
            for i, c in enumerate(configs):
                index, _ = self._index(c)
                qps[i].append(self._timed_search(index, c, 1)[0])
        return [max(q) for q in qps]

    def recalls(self, found: np.ndarray) -> dict:
        """``recall_at_k`` and ``recall_se`` by this workload's definition, and both
        definitions' means (``recall_ties``, ``recall_strict``), of returned ids."""
        ties = recall_with_ties(self.pqueries, self.pbase, found, self.true_scores, self.metric)
        strict = strict_recall(found, self.true_ids)
        recall, se = mean_and_se(ties if self.recall == "ties" else strict)
        return {
            "recall_at_k": recall,
            "recall_se": se,
            "recall_ties": float(ties.mean()),
            "recall_strict": float(strict.mean()),
        }

    def codec_stats(self, codec: Codec) -> dict:
        """Graph recall and distortion of a fitted flat codec, on a fixed base sample."""
        if codec.spec not in self._codec_stats:
            rng = np.random.default_rng(self.seed)
            rows = np.sort(rng.choice(self.n, min(self.n, CODEC_SAMPLE), replace=False))
            x = self.pbase[rows]
            graph = None
            try:
                x_hat = codec.decode(codec.encode(x))
                g = rng.choice(x.shape[0], min(GRAPH_SAMPLE, x.shape[0]), replace=False)
                graph = graph_recall(x[g], x, x_hat[g], x_hat, self.metric)
            except NotImplementedError:
                pass
            d = distortion(codec, x[: CODEC_SAMPLE // 4], self.pqueries[:DISTORTION_QUERIES])
            self._codec_stats[codec.spec] = {"graph_recall": graph, **d}
        return self._codec_stats[codec.spec]

    def has_record(self, config: Config) -> bool:
        """Whether ``config`` has a record already (:meth:`measure` returns it at once)."""
        return config in self._measured

    def measure(self, config: Config) -> dict:
        """Build (or reuse) the index of ``config``, search it, and return its record.

        A configuration is measured once per workload: asked again (by a second
        :func:`~vecpress.advisor.advise.advise` on the same workload, a target after a
        budget, say), it returns a copy of its first record, without fitting, building
        or timing anything. :attr:`records` lists each configuration once.
        """
        if config in self._measured:
            return dict(self._measured[config])
        index, build_s = self._index(config)
        k = self.k
        qps_1t, res = self._timed_search(index, config, 1)
        qps = qps_1t
        if self.threads > 1:
            qps, _ = self._timed_search(index, config, self.threads)
        k_at_r = None
        if isinstance(config.rerank, int):
            first = index.search(self.queries, config.rerank, nprobe=config.nprobe).ids
            k_at_r = recall_k_at_r(first, self.true_ids)
        stats = {"graph_recall": None, "mse": None, "ip_bias": None, "ip_spread": None}
        if config.ivf is None:
            stats = self.codec_stats(index.codec)
        record = {
            "label": config.label,
            "peer": None,
            **asdict(config),
            "code_size": index.codec.code_size,
            "bytes_per_vector": index.bytes_per_vector,
            "shared_bytes": index.memory["shared"],
            "k": k,
            **self.recalls(res.ids),
            "recall_k_at_r": k_at_r,
            **stats,
            "encode_us": build_s / self.n * 1e6,
            "qps_1t": qps_1t,
            "qps": qps,
            "threads": self.threads,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        self._measured[config] = record
        self.records.append(record)
        return dict(record)  # the caller may annotate its copy (timings, head to head)
