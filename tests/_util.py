"""Helpers shared by the test modules (imported as ``_util``; pytest puts tests/ on the path)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np


def gaussian(rng: np.random.Generator, n: int, d: int, *, offset: float = 0.0) -> np.ndarray:
    """float32 Gaussian rows with a decaying spectrum and an optional mean offset."""
    scale = 0.2 + 2.0 * np.exp(-np.arange(d) / (d / 4))
    mean = offset * rng.standard_normal(d)
    return (rng.standard_normal((n, d)) * scale + mean).astype(np.float32)


def clustered(n: int, d: int, seed: int, *, centres: int = 50, spread: float = 0.6):
    """float32 rows around ``centres`` Gaussian centres (noise ``spread``): neighbourhoods
    as dense as embeddings have them."""
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centres, d))
    x = middle[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, d))
    return x.astype(np.float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def paired_scores(codec, q: np.ndarray, codes: np.ndarray, block: int = 250) -> np.ndarray:
    """``codec.score(q[i], codes[i])`` for every i, via the diagonals of small blocks."""
    out = np.empty(q.shape[0], np.float64)
    for s in range(0, q.shape[0], block):
        out[s : s + block] = np.diag(codec.score(q[s : s + block], codes[s : s + block]))
    return out


def sphere_cdf(d: int, points: int = 400_001) -> tuple[np.ndarray, np.ndarray]:
    """Grid and CDF of the scaled sphere marginal: density ∝ (1 - s²/d)^((d-3)/2) on ±sqrt(d).

    The CDF is the cumulative trapezoid rule on a fine grid (exact enough: the
    KS distances compared with it are 1e-2 and larger).
    """
    s = np.linspace(-np.sqrt(d), np.sqrt(d), points)
    pdf = np.clip(1.0 - s * s / d, 0.0, None) ** ((d - 3) / 2.0)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(s))])
    return s, cdf / cdf[-1]


def ks_distance(sample: np.ndarray, grid: np.ndarray, cdf: np.ndarray) -> float:
    """Kolmogorov–Smirnov distance between a sample and a CDF given on a grid."""
    x = np.sort(np.asarray(sample, np.float64))
    n = x.size
    f = np.interp(x, grid, cdf)
    above = np.arange(1, n + 1) / n - f
    below = f - np.arange(n) / n
    return float(max(above.max(), below.max()))


def assert_threads_code_as_one(blob: bytes, rows: np.ndarray, queries: np.ndarray) -> None:
    """A codec restored from ``blob`` and shared by two threads, racing to build any state
    made on first use while encoding ``rows`` and scoring ``queries``, gives what one
    thread gives (codes and scores equal, scores finite)."""
    from concurrent.futures import ThreadPoolExecutor

    from vecpress import Codec

    serial = Codec.from_bytes(blob)
    want_codes = serial.encode(rows)
    want_scores = serial.score(queries, want_codes)
    shared = Codec.from_bytes(blob)  # nothing built on first use yet

    def work(_):
        codes = shared.encode(rows)
        return codes, shared.score(queries, codes)

    with ThreadPoolExecutor(2) as pool:
        for codes, scores in pool.map(work, range(4)):
            assert np.array_equal(codes, want_codes)
            assert np.array_equal(scores, want_scores)
            assert np.isfinite(scores).all()


#: prepended to the scripts of :func:`in_fresh_python`: ``entry_points(prefixes)``, the
#: signatures held by every compiled function of the vecpress modules named so; a search
#: that needs a kernel not made yet (compiled, or loaded from numba's cache) adds one
_ENTRY_POINTS = """
import json, sys
import numba, numpy as np, vecpress

def entry_points(prefixes=("vecpress.",)):
    return {
        f"{name}.{attr}": len(f.signatures)
        for name, module in list(sys.modules.items())
        if name.startswith(prefixes) and module is not None
        for attr, f in list(vars(module).items())
        if isinstance(f, numba.core.registry.CPUDispatcher)
    }
"""


def in_fresh_python(script: str, *args: str) -> list[dict]:
    """Run ``script`` (with ``entry_points`` defined) in a fresh interpreter, where no
    kernel loaded by an earlier test hides one a search still needs; its output lines,
    each a JSON object."""
    out = subprocess.run(
        [sys.executable, "-c", _ENTRY_POINTS + script, *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]
