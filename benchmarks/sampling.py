"""Leverage-score against uniform sampling for fitting principal components.

The data set has *rare directions*: 100,000 rows of dimension 64, of which
99.5 % lie near a 32-dimensional subspace (a decaying spectrum plus small
isotropic noise) and 0.5 % (500 rows) also have large components along 16 other
directions, which then hold about a tenth of the total variance. A principal
subspace of dimension ``K = 48`` fitted on a sample must find those 16
directions, so it needs rare rows in the sample.

For sample sizes ``n`` (doubling from 25) and ``--seeds`` seeds, rows are drawn
by :func:`vecpress.codecs.sampling.sample_rows` (uniform, or by leverage score with
weights), the weighted covariance of the sample gives the top-``K``
eigenvectors, and the *PCA error* is the share of the full data's variance
outside their span, reported as the excess over the best possible (the full
data's own top-``K`` subspace). The figure asked for: the fewest leverage rows
reaching the error of ``n`` uniform rows, as a ratio of ``n``.

Run: ``python benchmarks/sampling.py [--seeds 5]``
"""

from __future__ import annotations

import argparse

import numpy as np

from vecpress.codecs.sampling import sample_rows

N, D, BULK, RARE_DIMS, RARE_ROWS, K = 100_000, 64, 32, 16, 500, 48


def rare_direction_set(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((D, D)))
    z = np.zeros((N, D))
    z[:, :BULK] = rng.standard_normal((N, BULK)) * np.linspace(2.0, 0.5, BULK)
    rare = rng.choice(N, RARE_ROWS, replace=False)
    z[rare, BULK : BULK + RARE_DIMS] = rng.standard_normal((RARE_ROWS, RARE_DIMS)) * 4.0
    z += 0.02 * rng.standard_normal((N, D))
    return (z @ basis.T).astype(np.float32)


def pca_error(x: np.ndarray, cov_full: np.ndarray, rows, weights) -> float:
    """Share of the full data's variance outside the sample's top-K subspace."""
    s = x[rows].astype(np.float64)
    w = weights / weights.sum()
    mu = w @ s
    c = (s - mu).T @ ((s - mu) * w[:, None])
    _, vecs = np.linalg.eigh(c)
    top = vecs[:, -K:]
    return float(1 - np.trace(top.T @ cov_full @ top) / np.trace(cov_full))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    a = p.parse_args()
    x = rare_direction_set()
    xc = x.astype(np.float64) - x.mean(axis=0)
    cov = xc.T @ xc / N
    eig = np.linalg.eigvalsh(cov)
    best = float(eig[:-K].sum() / eig.sum())
    sizes = [25 * 2**i for i in range(11)]
    err = {m: [] for m in ("uniform", "leverage")}
    for n in sizes:
        for m in err:
            e = [pca_error(x, cov, *sample_rows(x, n, m, seed=s)) for s in range(a.seeds)]
            err[m].append(float(np.mean(e)) - best)
    print(f"rare-direction set: {N:,} x {D}, {RARE_ROWS} rows span {RARE_DIMS} rare directions;")
    print(f"K = {K}; best possible error {best:.2e}; excess error, mean of {a.seeds} seeds:\n")
    print("| rows | uniform | leverage | leverage rows reaching uniform's error | ratio |")
    print("|---|---|---|---|---|")
    for i, n in enumerate(sizes):
        reach = next(
            (sizes[j] for j in range(len(sizes)) if err["leverage"][j] <= err["uniform"][i]), None
        )
        ratio = f"{reach / n:.3f}" if reach else "–"
        print(
            f"| {n:,} | {err['uniform'][i]:.2e} | {err['leverage'][i]:.2e} | "
            f"{reach if reach else 'more than tested'} | {ratio} |"
        )


if __name__ == "__main__":
    main()
