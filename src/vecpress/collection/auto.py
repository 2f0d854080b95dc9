"""``spec="auto"``: a collection's codec chosen by the advisor on its training vectors.

A collection created with ``spec="auto"`` and a ``target_recall`` (or a
``budget_bytes``) has no codec until it trains (:meth:`Collection.train`, or
the first segment's rows): then :func:`choose` holds out some of the training
vectors as queries (:data:`HELD_OUT` of them, at most a tenth), measures the
advisor's flat configurations on the rest (:func:`vecpress.advisor.advise`;
flat only, since IVF lists fitted on a first batch would not fit a grown
collection) within ``advise_seconds``, and the chosen spec, re-ranking tier and
depth become the collection's settings -- the depth as the default ``rerank``
of its searches. The advice (what was chosen, its measured recall@10 and bytes
per vector, whether the target was met) is kept in the settings as ``advice``.

Examples
--------
>>> import numpy as np
>>> x = np.random.default_rng(0).standard_normal((3000, 32)).astype(np.float32)
>>> s = choose(x, "cosine", seed=0, target_recall=0.9, budget_bytes=None, seconds=60)
>>> s["advice"]["met"], s["advice"]["recall_at_k"] >= 0.9, s["ivf"]
(True, True, None)
"""

from __future__ import annotations

import numpy as np

from ..advisor.advise import advise, config_of
from ..advisor.bench import Workload

#: training vectors held out as the advisor's queries (at most a tenth of them)
HELD_OUT = 200
#: the fewest training vectors the advisor is run on
MIN_ROWS = 500


def choose(
    x: np.ndarray, metric: str, *, seed: int, target_recall: float | None,
    budget_bytes: int | None, seconds: float,
) -> dict:  # fmt: skip
    """The settings (``spec``, ``rerank_spec``, ``ivf``, ``rerank``, ``advice``) the advisor
    chooses for vectors like ``x`` (module docstring)."""
    n = x.shape[0]
    if n < MIN_ROWS:
        raise ValueError(
            f'spec="auto" trains on at least {MIN_ROWS} vectors to choose a codec, found {n}: '
            "train(sample) on more, or add more before the first flush"
        )
    rng = np.random.default_rng(seed)
    held = np.zeros(n, bool)
    held[rng.choice(n, min(HELD_OUT, n // 10), replace=False)] = True
    work = Workload(x[~held], x[held], metric, k=10, seed=seed)
    advice = advise(work, target_recall=target_recall, budget_bytes=budget_bytes,
                    max_seconds=seconds, flat_only=True)  # fmt: skip
    c = config_of(advice.choice)
    return {
        "spec": c.spec,
        "rerank_spec": c.rerank_spec,
        "ivf": None,
        "rerank": c.rerank,
        "advice": {
            "label": c.label,
            "recall_at_k": float(advice.choice["recall_at_k"]),
            "bytes_per_vector": int(advice.choice["bytes_per_vector"]),
            "met": bool(advice.met),
            "objective": advice.objective,
            "target": advice.target,
            "why": advice.why,
        },
    }
