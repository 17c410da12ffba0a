"""The residual bootstrap behind every interval: random streams, resampled residuals, widening.

Each method resamples from its own random stream, seeded from a stable hash of its name and
the user's seed (`method_rng`), so two methods with the same number of points never share
resampling indices (pairing sample i of one method with sample i of another is then a draw from
the product of the two distributions, as an independent comparison needs).

Residuals are resampled in two levels: a *run* effect (the mean residual of a run's points on
the frontier; a run's learning curve is one draw of its seed and its schedule, so its points'
errors move together) and the points' deviations from it. With one point per run this is the
ordinary residual bootstrap. Run effects are centred and divided by sqrt(1 - leverage) of the
runs' mean positions in a straight-line fit (for the curved floor fits by sqrt(R / (R - p))
instead), so that their spread estimates the noise, not the smaller spread of fitted residuals.

A bootstrap from R runs estimates the noise from R runs too: its percentile interval is as
narrow as a normal one with a known variance. `small_sample_factor` widens the samples around
the estimate by t(0.975, R - p) / z(0.975), the Student-t correction. Widening is done in the
coordinates where the law is linear (slope and the log loss at the data's centre), never on
derived quantities such as log C_c, which are not linear in them.
"""
from __future__ import annotations

import math
import zlib

import numpy as np


def method_rng(name: str, seed: int = 0, purpose: str = "") -> np.random.Generator:
    """A random stream of its own for each (method, purpose), from a stable hash (crc32) of the
    name: Python's hash() is salted per process, so it would not reproduce."""
    return np.random.default_rng([int(seed), zlib.crc32(f"{name}/{purpose}".encode())])


def cluster_index(labels) -> tuple[np.ndarray, int]:
    """Cluster id of every point (0..R-1, in order of first appearance) and R. Empty labels
    ('' or None) are clusters of their own."""
    ids, index = {}, []
    for i, label in enumerate(labels):
        key = label if label not in (None, "") else ("", i)
        index.append(ids.setdefault(key, len(ids)))
    return np.array(index, dtype=int), len(ids)


def _run_leverage(x: np.ndarray, cluster: np.ndarray, n_clusters: int) -> np.ndarray:
    """Leverage of each run's mean position in a least-squares line through the run means."""
    x_run = np.bincount(cluster, weights=x, minlength=n_clusters) / np.bincount(cluster, minlength=n_clusters)
    dx = x_run - x_run.mean()
    sxx = float(dx @ dx)
    return 1.0 / n_clusters + (dx * dx / sxx if sxx > 0 else 0.0)


def resampled_residuals(residuals: np.ndarray, x: np.ndarray, cluster: np.ndarray, n: int,
                        rng: np.random.Generator, parameters: int = 2, noise_sd: float = 0.0) -> np.ndarray:
    """n x k bootstrap draws of the residual vector: run effects resampled over runs, the
    points' deviations from their run's effect over points (see the module docstring).
    noise_sd: a measured run-to-run noise (seeds); where the run effects spread less, Gaussian
    run effects make up the difference, so the draws' run-level variance is at least noise_sd^2."""
    n_clusters = int(cluster.max()) + 1
    counts = np.bincount(cluster, minlength=n_clusters)
    run_effect = np.bincount(cluster, weights=residuals, minlength=n_clusters) / counts
    within = residuals - run_effect[cluster]
    run_effect = run_effect - run_effect.mean()
    if parameters == 2 and n_clusters > 2:
        run_effect = run_effect / np.sqrt(np.maximum(1.0 - _run_leverage(x, cluster, n_clusters), 1e-3))
        run_effect = run_effect - run_effect.mean()
    else:
        run_effect = run_effect * np.sqrt(n_clusters / max(n_clusters - parameters, 1))
    draws = run_effect[rng.integers(0, n_clusters, size=(n, n_clusters))][:, cluster]
    missing = noise_sd ** 2 - float(np.mean(run_effect ** 2))
    if missing > 0:
        draws = draws + (math.sqrt(missing) * rng.standard_normal((n, n_clusters)))[:, cluster]
    k = len(residuals)
    if k > n_clusters:
        within = (within - within.mean()) * np.sqrt(k / (k - n_clusters))
        draws = draws + within[rng.integers(0, k, size=(n, k))]
    return draws


def small_sample_factor(dof: float) -> float:
    """t(0.975, dof) / z(0.975): widening a bootstrap's spread by this ratio turns its percentile
    interval into a Student-t one (2.20 for 2 degrees of freedom, 1.42 for 4, ~1 for many)."""
    from scipy.special import ndtri, stdtrit  # scipy.stats would cost seconds to import
    return float(stdtrit(max(float(dof), 1.0), 0.975) / ndtri(0.975))


def widen(samples: np.ndarray, estimate, factor: float) -> np.ndarray:
    """Samples stretched around the estimate by `factor` (non-finite samples left as they are)."""
    with np.errstate(invalid="ignore"):
        out = np.asarray(estimate) + factor * (samples - np.asarray(estimate))
    return np.where(np.isfinite(out), out, samples)


def percentile_ci(values: np.ndarray) -> tuple[float, float]:
    """95% percentile interval, without interpolating between samples: infinite samples (a law
    that never reaches a loss) stay infinite bounds instead of turning into nan."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    return (float(np.percentile(values, 2.5, method="lower")),
            float(np.percentile(values, 97.5, method="higher")))


def excludes_zero(ci) -> bool:
    return bool(ci[0] > 0 or ci[1] < 0)
