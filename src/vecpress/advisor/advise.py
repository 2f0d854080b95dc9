"""Choose a configuration for a recall target or a memory budget, measuring as little as needed.

The space is :func:`vecpress.advisor.bench.search_space`: families of configurations
ordered along one axis (bits, re-rank depth, nprobe) along which recall rises.
That order lets the advisor bisect instead of sweeping:

**Target recall** ``r`` (fewest bytes per vector with recall@k ≥ r, with a
margin of ``MARGIN_SE`` standard errors over the queries; among the
configurations within ``BYTES_TIE`` (5 %) of the fewest bytes, the fastest on one
thread wins only if it serves more than ``SPEED_GAP`` (1.5) times the queries/s
of the smallest when the two are timed again head to head, alternately
(``RETIME_ROUNDS``), so that load that changed between two measurements cannot
flip the choice):

1. For each bits family, strongest first, keep the members no larger than the
   best found so far (plus the tie); measure the largest; if it reaches ``r``,
   bisect for the smallest member that does (about log2(8) = 3 builds per family).
2. Refine near the frontier: the chosen codec and every family's near miss
   (the largest member that missed ``r`` by less than ``NEAR_MISS`` flat) are
   tried as IVF indexes, smallest first (IVF codes residuals, which can lift
   recall at the same bytes; see :func:`_ivf_near_misses`), bisecting nprobe for
   the fewest lists that still reach ``r``. An IVF index has the flat index's
   bytes per vector and usually many times its speed.

**Byte budget** ``B`` (highest recall@k with bytes ≤ B; recalls within
``RECALL_TIE`` of the best count as equal and the faster wins):

1. For each bits family, measure its largest member within ``B``; for each
   re-ranking family within ``B``, its deepest re-ranking, then bisect the
   depth down to the smallest that keeps its recall.
2. The best codec is tried as an IVF index, bisecting nprobe the same way.

**Time budget** (``max_seconds``): before measuring a configuration the
advisor predicts what the measurement costs (:mod:`vecpress.advisor.cost`: from n, d,
the spec's bits and sub-spaces, calibrated on this machine and corrected by
every measurement so far) and never starts one that cannot finish within the
budget; it reports each configuration it skipped and why. The bits families are
visited by expected value per second: ``rq`` first (cheap and strong, it sets the
bound that prunes the others), then the family with the highest
``FAMILY_VALUE / predicted seconds`` of its next measurement, so a family whose
training is slow (``opq`` with many sub-spaces, ``pq`` with 8-bit tables on
narrow sub-spaces) comes last and is the one the budget cuts. A configuration
skipped inside a bisection counts as not reaching the target, so the choice is
always one that was measured to reach it.

If nothing reaches the target, the choice is the most accurate configuration
measured, and the note says so. A budget whose best recall is poor (below
``POOR_RECALL``) gets a note with the bytes that reach recall 0.8 and 0.9
(measured by the target search). Every answer carries a ``why``: what won, by
how much, and what it beat.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from .bench import (
    Config,
    Family,
    Workload,
    auto_config,
    ivf_family,
    nlist_for,
    nprobe_grid,
    search_space,
)
from .cost import CostModel, Shape
from .report import pareto_front

#: recalls closer than this count as equal (the faster configuration wins)
RECALL_TIE = 0.002
#: a target counts as reached when recall - MARGIN_SE * (its standard error) >= target.
#: Another sample of as many queries has its own error, so at a margin of m standard
#: errors it reaches the target about Phi(m / sqrt(2)) of the time: 76 % at m = 1,
#: 92 % at m = 2 (less for the edge of a bisection, which picks the configuration that
#: only just passed; with m = 1 the Python-docs set's choice, kl3 IVF128 nprobe 32 at
#: 0.9540 ± 0.0034, gave 0.9476 on its held-back queries)
MARGIN_SE = 2.0
#: for a recall target, configurations within this fraction of the fewest bytes that
#: pass count as equal and the fastest of them wins (a 2 % smaller code is no reason to
#: serve queries several times slower)
BYTES_TIE = 0.05
#: within the bytes tie, a faster configuration displaces the smallest only when it
#: serves more than this many times its queries/s (not a load-dependent coin flip)
SPEED_GAP = 1.5
#: flat codecs whose recall came within this of the target are tried as IVF indexes
NEAR_MISS = 0.05
#: rounds of the head-to-head timing that confirms a speed gap before it decides
RETIME_ROUNDS = 3
#: a budget whose best recall is below this gets a note on the bytes that reach more
POOR_RECALL = 0.5
#: the recalls whose bytes that note gives
BETTER_RECALLS = (0.8, 0.9)
#: strongest families first: a good early bound prunes the others
FAMILY_ORDER = (
    "rq", "kl", "klvq", "lvq", "pq", "opq", "pca", "leanvec-ood", "rvq", "tq", "int", "pq8",
    "float",
)  # fmt: skip
#: the prior worth of measuring each family, a judgement from the sweeps in
#: BENCHMARKS.md (kl and rq held the smallest passing configurations, then lvq, pca,
#: int and the product quantizers came close); divided by a measurement's predicted
#: seconds it orders the visits after ``rq``
FAMILY_VALUE = {
    "rq": 1.0,
    "kl": 1.0,
    "lvq": 0.7,
    "pca": 0.6,
    "leanvec-ood": 0.6,
    "opq": 0.6,
    "rvq": 0.6,
    "klvq": 0.6,
    "pq": 0.5,
    "tq": 0.4,
    "int": 0.4,
    "pq8": 0.3,
    "float": 0.2,
}


@dataclass
class Advice:
    """The advisor's answer: the choice, the runner-up and everything measured."""

    objective: str
    target: float
    choice: dict
    runner_up: dict | None
    records: list[dict]
    space_size: int
    met: bool
    note: str | None = None
    #: the definition of recall@k measured (:data:`vecpress.advisor.bench.RECALLS`)
    recall: str = "strict"
    #: one sentence: what won, by how much, and what it beat
    why: str | None = None
    #: configurations not measured for lack of time: ``{"label", "predicted_s", "reason"}``
    skipped: list[dict] = field(default_factory=list)
    #: the time budget (seconds) and the seconds spent measuring
    max_seconds: float | None = None
    seconds: float | None = None

    def commands(
        self, source: str, queries: str | None, metric: str, k: int, train_queries=None
    ) -> tuple[str, str]:
        """The ``vecpress build`` and ``vecpress search`` command lines of the choice
        (``--train-queries`` where the codec learns from queries)."""
        c = config_of(self.choice)
        q = queries if queries is not None else "QUERIES.npy"
        fit = ""
        if "leanvec-ood" in c.spec:
            fit = f" --train-queries {train_queries or 'TRAIN_QUERIES.npy'}"
        return (
            f"vecpress build {source} {c.build_args(metric)}{fit} -o index.vpi",
            f"vecpress search index.vpi {q} {c.search_args(k)} -o results.npy",
        )

    def to_dict(
        self, source: str, queries: str | None, metric: str, k: int, train_queries=None
    ) -> dict:
        build_cmd, search_cmd = self.commands(source, queries, metric, k, train_queries)
        c = self.choice
        return {
            **{key: c[key] for key in ("spec", "rerank", "rerank_spec", "nprobe", "ivf")},
            "bytes_per_vector": c["bytes_per_vector"],
            "recall_at_k": c["recall_at_k"],
            "recall_se": c["recall_se"],
            "recall_ties": c["recall_ties"],
            "recall_strict": c["recall_strict"],
            "recall": self.recall,
            "qps_1t": c["qps_1t"],
            "k": k,
            "metric": metric,
            "objective": self.objective,
            "target": self.target,
            "met": self.met,
            "choice": c,
            "runner_up": self.runner_up,
            "build_command": build_cmd,
            "search_command": search_cmd,
            "frontier": [
                r["label"] for r in pareto_front(self.records, "bytes_per_vector", "recall_at_k")
            ],
            "evaluated": len(self.records),
            "space_size": self.space_size,
            "note": self.note,
            "why": self.why,
            "skipped": self.skipped,
            "max_seconds": self.max_seconds,
            "seconds": self.seconds,
        }


def config_of(record: dict) -> Config:
    return Config(*(record[f] for f in ("spec", "rerank_spec", "rerank", "ivf", "nprobe")))


class _Search:
    """Memoised measuring over one workload within a deadline, with progress callbacks:
    ``starting(config, seconds, remaining)`` before a configuration is measured (its
    predicted seconds, and those of everything the plan still expects including it),
    ``progress(record)`` after."""

    def __init__(
        self,
        workload: Workload,
        progress=None,
        starting=None,
        max_seconds: float | None = None,
        cost: CostModel | None = None,
    ) -> None:
        self.w = workload
        self.progress = progress
        self.starting = starting
        self.seen: dict[Config, dict] = {}
        self.skipped: dict[Config, dict] = {}
        self.t0 = time.perf_counter()
        self.deadline = None if max_seconds is None else self.t0 + max_seconds
        self.cost = cost or CostModel()
        nq = workload.queries.shape[0]
        self.shape = Shape(workload.n, workload.d, nq, workload.k, workload.threads)
        #: predicted seconds of what the plan still expects after the current step
        self.plan_left = 0.0

    def predict(self, config: Config) -> float:
        """Seconds measuring ``config`` should take now (0 once measured, in this
        search or an earlier one on the same workload)."""
        if config in self.seen or self.w.has_record(config):
            return 0.0
        built = config.build_key in self.w._built
        kmeans = config.ivf is not None and config.ivf not in self.w._centroids
        return self.cost.predict(config, self.shape, built=built, kmeans=kmeans)

    def left(self) -> float:
        """Seconds left in the budget (infinite without one)."""
        if self.deadline is None:
            return math.inf
        return self.deadline - time.perf_counter()

    def __call__(self, config: Config) -> dict | None:
        """The record of ``config``, measured now if need be; ``None`` if its predicted
        cost does not fit the time left (it is then listed in ``skipped``)."""
        if config in self.seen:
            return self.seen[config]
        if config in self.skipped:
            return None
        predicted = self.predict(config)
        left = self.left()
        if predicted > left:
            self.skipped[config] = {
                "label": config.label,
                "predicted_s": round(predicted, 1),
                "reason": f"predicted {predicted:.0f} s, {max(left, 0):.0f} s of the budget left",
            }
            return None
        if self.starting is not None:
            self.starting(config, predicted, predicted + min(self.plan_left, left - predicted))
        t0 = time.perf_counter()
        record = self.w.measure(config)
        seconds = time.perf_counter() - t0
        self.cost.observe(predicted / self.cost.correction, seconds)
        record["predicted_s"], record["seconds"] = predicted, seconds
        self.seen[config] = record
        if self.progress is not None:
            self.progress(record)
        return record

    def bytes(self, config: Config) -> int:
        return self.w.bytes_per_vector(config)

    def first_passing(self, configs, passes) -> dict | None:
        """The first config of ``configs`` that passes, by bisection (passing is monotone);
        ``None`` if the last one fails or cannot be measured in time. A configuration
        skipped for time counts as failing, so the answer was always measured."""

        def ok(config) -> bool:
            r = self(config)
            return r is not None and passes(r)

        if not configs or not ok(configs[-1]):
            return None
        lo, hi = 0, len(configs) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(configs[mid]):
                hi = mid
            else:
                lo = mid + 1
        return self(configs[hi])

    def expected(self, configs) -> float:
        """Predicted seconds of bisecting ``configs``: the largest, then about
        log2(len) of the rest (their mean predicted cost each)."""
        if not configs:
            return 0.0
        costs = [self.predict(c) for c in configs]
        steps = math.ceil(math.log2(len(configs))) if len(configs) > 1 else 0
        return costs[-1] + steps * sum(costs[:-1]) / max(len(costs) - 1, 1)

    def skipped_list(self) -> list[dict]:
        return list(self.skipped.values())

    def confirm_faster(self, fast: dict, small: dict) -> bool:
        """Whether ``fast`` serves more than ``SPEED_GAP`` x the queries/s of ``small``
        when both are timed again, alternately (:meth:`Workload.retime`), so that load
        which changed between their first measurements cannot decide. Both records'
        ``qps_1t`` become the head-to-head figures. ``False`` when there is no time."""
        configs = [config_of(small), config_of(fast)]
        predicted = sum(self.predict(c) for c in configs)  # rebuilds, if evicted
        predicted += (
            2 * RETIME_ROUNDS * sum(self.cost.predict(c, self.shape, built=True) for c in configs)
        )
        if predicted > self.left():
            return False
        qps = self.w.retime(configs, RETIME_ROUNDS)
        for r, q in zip((small, fast), qps, strict=True):
            r["qps_1t"], r["qps_1t_head_to_head"] = q, True
        return _speed(fast) > SPEED_GAP * _speed(small)


def _bits_families(space: list[Family]) -> list[Family]:
    fams = [f for f in space if f.axis == "bits"]
    rank = {name: i for i, name in enumerate(FAMILY_ORDER)}
    return sorted(fams, key=lambda f: rank.get(f.name, len(rank)))


def _by_value_per_second(search: _Search, families: list[Family], candidates):
    """Visit ``families`` in order of value per predicted second: the first as given
    (``rq``: the bound), then whichever family's next measurement is worth most per
    second. ``candidates(family)`` lists a family's members still worth measuring
    (under the current bound); a family without any is dropped without cost."""
    todo = list(families)
    first = True
    while todo:
        if first:
            fam = todo[0]
            first = False
        else:

            def worth(f):
                c = candidates(f)
                return FAMILY_VALUE.get(f.name, 0.1) / max(search.predict(c[-1]), 1e-3) if c else 0

            fam = max(todo, key=worth)
        todo.remove(fam)
        configs = candidates(fam)
        search.plan_left = sum(search.expected(candidates(f)) for f in todo)
        if configs:
            yield fam, configs


def _target_key(r: dict) -> tuple:
    return (r["bytes_per_vector"], -r["qps_1t"])


def _smallest_then_faster(ok: list[dict]) -> tuple[dict, dict]:
    """The choice among passing records, and the smallest of them: the smallest, unless
    a record within ``BYTES_TIE`` of its bytes serves > ``SPEED_GAP`` x its queries/s."""
    smallest = min(ok, key=_target_key)
    near = [
        r for r in ok if r["bytes_per_vector"] <= smallest["bytes_per_vector"] * (1 + BYTES_TIE)
    ]
    fastest = max(near, key=lambda r: (_speed(r), -r["bytes_per_vector"]))
    return (fastest if _speed(fastest) > SPEED_GAP * _speed(smallest) else smallest), smallest


def _brief(r: dict) -> str:
    return (
        f"{r['label']} ({r['bytes_per_vector']} B, recall {r['recall_at_k']:.4f} "
        f"± {r['recall_se']:.4f}, {r['qps_1t']:,.0f} q/s)"
    )


def _why_target(choice: dict, smallest: dict, runner_up: dict | None, target: float) -> str:
    if choice is not smallest:
        return (
            f"{_brief(choice)} is within {BYTES_TIE:.0%} of the fewest bytes that reach "
            f"{target} and serves {choice['qps_1t'] / max(smallest['qps_1t'], 1e-9):.1f}x the "
            f"queries/s of the smallest, {_brief(smallest)} (more than {SPEED_GAP}x, timed "
            "again head to head)"
        )
    out = f"{_brief(choice)} is the smallest configuration measured that reaches {target}"
    out += f" with a margin of {MARGIN_SE:g} standard errors"
    if runner_up is not None:
        out += f"; next, another codec: {_brief(runner_up)}"
    return out


def _most_accurate(records) -> dict:
    """The fastest of the records whose recall is within ``RECALL_TIE`` of the best."""
    records = list(records)
    top = max(r["recall_at_k"] for r in records)
    return max((r for r in records if r["recall_at_k"] >= top - RECALL_TIE), key=_speed)


def _speed(r: dict) -> float:
    return r["qps_1t"]


def _others(records: list[dict], choice: dict) -> list[dict]:
    """Records of another codec than the choice's (the runner-up is a real alternative)."""
    return [r for r in records if r["spec"] != choice["spec"]]


def advise(
    workload: Workload,
    *,
    target_recall: float | None = None,
    budget_bytes: int | None = None,
    grid: str = "full",
    progress=None,
    starting=None,
    max_seconds: float | None = None,
    cost: CostModel | None = None,
    flat_only: bool = False,
) -> Advice:
    """Measure the configurations needed to answer one objective, and choose.

    Exactly one of ``target_recall`` (fewest bytes with recall@k ≥ target) and
    ``budget_bytes`` (best recall@k within the bytes per vector) is given.
    ``max_seconds`` bounds the measuring: no configuration starts whose predicted
    cost (``cost``, by default an uncalibrated :class:`vecpress.advisor.cost.CostModel`)
    exceeds the time left; those skipped are in ``Advice.skipped``.
    ``starting(config, seconds, remaining)`` is called before each configuration
    is measured (with its predicted seconds and the plan's predicted seconds left,
    this one included) and ``progress(record)`` after it. ``flat_only``: no IVF
    configuration is measured (for vectors whose lists would not last: a
    collection's first batch).

    Examples
    --------
    >>> import numpy as np
    >>> from vecpress.advisor.datasets import synthetic
    >>> base, queries = synthetic(n=3000, d=64, n_queries=100)
    >>> a = advise(Workload(base, queries), target_recall=0.9, grid="quick")
    >>> a.met, a.choice["recall_at_k"] >= 0.9, a.choice["bytes_per_vector"] < 4 * 64
    (True, True, True)
    """
    if (target_recall is None) == (budget_bytes is None):
        raise ValueError("give exactly one of target_recall and budget_bytes")
    space = search_space(
        workload.n, workload.k, grid, workload.d, workload.train_queries is not None
    )
    if flat_only:
        space = [f for f in space if all(c.ivf is None for c in f.configs)]
    size = sum(len(f.configs) for f in space)
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be a positive number of seconds, found {max_seconds}")
    search = _Search(workload, progress, starting, max_seconds, cost)
    if target_recall is not None:
        if not 0 < target_recall <= 1:
            raise ValueError(f"target recall must be in (0, 1], found {target_recall}")
        advice = _for_target(search, space, size, float(target_recall))
    else:
        if budget_bytes <= 0:
            raise ValueError(f"budget must be a positive number of bytes, found {budget_bytes}")
        advice = _for_budget(search, space, size, int(budget_bytes))
    advice.recall = workload.recall
    advice.skipped = search.skipped_list()
    advice.max_seconds = max_seconds
    advice.seconds = time.perf_counter() - search.t0
    return advice


def _nothing_measured(search: _Search) -> ValueError:
    first = next(iter(search.skipped.values()), None)
    why = f": {first['label']} was {first['reason']}" if first else ""
    return ValueError(
        f"no configuration could be measured within the time budget{why}; "
        "give the advisor more seconds (max_seconds; --max-seconds on the command line)"
    )


def _for_target(search: _Search, space, size: int, target: float) -> Advice:
    def passes(r):
        return r["recall_at_k"] - MARGIN_SE * r["recall_se"] >= target

    def choose() -> dict | None:
        ok = [r for r in search.seen.values() if passes(r)]
        return _smallest_then_faster(ok)[0] if ok else None

    best = None

    def candidates(fam: Family) -> list[Config]:
        limit = best["bytes_per_vector"] * (1 + BYTES_TIE) if best else None
        return [c for c in fam.configs if limit is None or search.bytes(c) <= limit]

    for _fam, configs in _by_value_per_second(search, _bits_families(space), candidates):
        search.first_passing(configs, passes)
        best = choose()
    search.plan_left = 0.0
    if not search.seen:
        raise _nothing_measured(search)
    nlist = nlist_for(search.w.n)
    if nlist is not None:  # also when nothing passed flat: a near miss may pass as IVF
        _ivf_near_misses(search, space, nlist, passes, target)
        best = choose()
    if best is None:
        records = list(search.seen.values())
        choice = max(records, key=lambda r: (r["recall_at_k"], -r["bytes_per_vector"]))
        return Advice(
            "target_recall",
            target,
            choice,
            None,
            records,
            size,
            False,
            f"no configuration reached recall@{choice['k']} {target}; the most accurate "
            f"measured ({choice['recall_at_k']:.4f}) is shown",
        )
    records = list(search.seen.values())
    best, smallest = _smallest_then_faster([r for r in records if passes(r)])
    if best is not smallest and not search.confirm_faster(best, smallest):
        best = smallest  # the speed gap did not hold head to head: fewer bytes win
    runner_up = min((r for r in _others(records, best) if passes(r)), key=_target_key, default=None)
    return Advice(
        "target_recall",
        target,
        best,
        runner_up,
        records,
        size,
        True,
        why=_why_target(best, smallest, runner_up, target),
    )


def _ivf_near_misses(search: _Search, space, nlist: int, passes, target: float) -> None:
    """Try IVF variants of the flat codecs that came close, smallest first.

    An IVF index codes each vector's residual from its list's centroid, which is
    smaller than the vector, so the same bits code it finer: on clustered
    embeddings a codec that missed the target flat often reaches it as IVF (768-d,
    64 topics: ``kl4`` 0.933 flat, 0.956 as IVF512 with 32 probes), with the same
    bytes per vector. The candidates are the choice's codec and, per bits family,
    the largest member that missed the target by less than ``NEAR_MISS`` and is
    smaller than the choice; each is tried at its largest nprobe first (then
    nprobe is bisected down), smallest codec first, and a codec that reaches the
    target as IVF adds the next smaller member of its family. Candidates no
    smaller than the best found so far are dropped.
    """
    tried: set[str] = set()
    deepest = nprobe_grid(nlist)[-1]

    def passed_as_ivf(spec: str) -> bool:
        r = search.seen.get(Config(spec, ivf=nlist, nprobe=deepest))
        return r is not None and passes(r)

    while True:
        ok = [r for r in search.seen.values() if passes(r)]
        best = _smallest_then_faster(ok)[1] if ok else None
        cands: list[Config] = []
        for fam in _bits_families(space):
            flat = [c for c in fam.configs if c.ivf is None and c.rerank is None]
            near = [
                c
                for c in flat
                if c in search.seen
                and not passes(search.seen[c])
                and search.seen[c]["recall_at_k"] >= target - NEAR_MISS
            ]
            if near:
                cands.append(max(near, key=search.bytes))
            cands += [flat[i - 1] for i in range(1, len(flat)) if passed_as_ivf(flat[i].spec)]
        if best is not None:
            cands = [c for c in cands if search.bytes(c) < best["bytes_per_vector"]]
            if best["ivf"] is None and best["rerank"] is None:
                cands.append(config_of(best))
        cands = [c for c in cands if c.spec not in tried]
        if not cands:
            return
        c = min(cands, key=lambda c: (search.bytes(c), c.spec))
        tried.add(c.spec)
        search.plan_left = sum(
            search.predict(Config(x.spec, ivf=nlist, nprobe=deepest)) for x in cands if x != c
        )
        search.first_passing(list(ivf_family(c.spec, nlist).configs), passes)


def _for_budget(search: _Search, space, size: int, budget: int) -> Advice:
    def fits(c: Config) -> bool:
        return search.bytes(c) <= budget

    if not any(fits(c) for f in space for c in f.configs):
        smallest = min((c for f in space for c in f.configs), key=lambda c: search.bytes(c))
        raise ValueError(
            f"no configuration fits {budget} bytes per vector; the smallest, "
            f"{smallest.label!r}, takes {search.bytes(smallest)}"
        )

    def largest_fitting(fam: Family) -> list[Config]:
        configs = [c for c in fam.configs if fits(c)]
        return configs[-1:]

    for _fam, configs in _by_value_per_second(search, _bits_families(space), largest_fitting):
        search(configs[-1])
    search.plan_left = 0.0
    for fam in space:
        if fam.axis == "rerank" and fits(fam.configs[0]):
            deepest = search(fam.configs[-1])
            if deepest is None:
                continue
            top = deepest["recall_at_k"]
            search.first_passing(
                list(fam.configs), lambda r, top=top: r["recall_at_k"] >= top - RECALL_TIE
            )
            # certified re-ranking next to the fixed depths: it wins where it reaches
            # their recall re-scoring fewer candidates (faster at the same bytes)
            auto = auto_config(fam)
            if auto is not None:
                search(auto)
    if not search.seen:
        raise _nothing_measured(search)
    best = _most_accurate(search.seen.values())
    nlist = nlist_for(search.w.n)
    if nlist is not None and best["ivf"] is None and best["rerank"] is None:
        top = best["recall_at_k"]
        found = search.first_passing(
            list(ivf_family(best["spec"], nlist).configs),
            lambda r: r["recall_at_k"] >= top - RECALL_TIE,
        )
        if found is not None:
            best = _most_accurate([best, found])
    note = None
    if best["recall_at_k"] < POOR_RECALL:
        reach = []
        for want in BETTER_RECALLS:
            got = _for_target(search, space, size, want)
            reach.append(
                f"{want} needs {got.choice['bytes_per_vector']} B ({got.choice['label']})"
                if got.met
                else f"{want} was not reached by any configuration"
            )
        note = (
            f"the best recall@{best['k']} within {budget} bytes is only "
            f"{best['recall_at_k']:.3f}; recall " + ", ".join(reach)
        )
    records = list(search.seen.values())
    others = _others(records, best)
    runner_up = _most_accurate(others) if others else None
    why = f"{_brief(best)} has the highest recall measured within {budget} bytes"
    if runner_up is not None:
        why += f"; next, another codec: {_brief(runner_up)}"
    return Advice("budget_bytes", budget, best, runner_up, records, size, True, note, why=why)
