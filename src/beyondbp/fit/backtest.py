"""A backtest of a frontier's law: refit without its largest-compute size, predict that size.

Scaling-law practice trusts an extrapolation only after the law has predicted a point it was not
fitted to. Each method's frontier is refitted without the points of the size that made its
largest-compute point; the refit predicts that point's loss with a 95% *prediction* interval:
the refit's bootstrap spread of the law (widened by its t factor) plus the noise of one new
measurement (the larger of the refit's residual noise and the method's measured seed noise,
times the same t factor). `inside` says whether the measured loss fell in it. A failed backtest
withholds the letter beyond the measured compute (`beyondbp.fit.verdict`).
"""
from __future__ import annotations

import math

import numpy as np

from ..config import TooFewPoints
from .bootstrap import method_rng, percentile_ci, small_sample_factor
from .frontier import PowerLawFit, fit_frontier, log_loss, min_points, residual_sd


def _held_out_size(fit: PowerLawFit) -> tuple[str, np.ndarray]:
    """The label of the largest-compute point's size (or run) and the mask of its points."""
    labels = fit.sizes or fit.runs
    if not labels or not labels[-1]:
        mask = np.zeros(fit.n_points, dtype=bool)
        mask[-1] = True
        return f"point at {fit.envelope[-1, 0]:.3g}", mask
    return labels[-1], np.array([label == labels[-1] for label in labels])


def _noise_sd(refit: PowerLawFit) -> float:
    noise = residual_sd(refit.log_residuals, 3 if refit.E is not None else 2)
    return max(noise, refit.seed_noise[0] if refit.seed_noise else 0.0)


def backtest(fit: PowerLawFit, bootstrap: int, seed: int = 0, name: str = "points") -> dict:
    """{held_out, predicted, ci, measured, inside, reason}: `reason` is None when the backtest ran."""
    held, mask = _held_out_size(fit)
    compute, measured = float(fit.envelope[-1, 0]), float(fit.envelope[-1, 1])
    out = {"held_out": held, "compute_pf_days": compute, "predicted": None, "ci": None, "measured": measured,
           "inside": None, "reason": None}
    keep = ~mask
    need = min_points(fit.E is not None)
    if keep.sum() < need or not bootstrap:
        out["reason"] = (f"{int(keep.sum())} frontier points without {held}, fewer than the {need} a fit needs"
                         if bootstrap else "no bootstrap samples")
        return out
    try:
        refit = fit_frontier(fit.envelope[keep, 0], fit.envelope[keep, 1], np.array(fit.runs)[keep] if fit.runs else None,
                             np.array(fit.sizes)[keep] if fit.sizes else None, bootstrap=bootstrap, seed=seed,
                             irreducible=fit.E is not None, name=f"{name}/backtest", seed_noise=fit.seed_noise)
    except TooFewPoints as exc:  # the refit's own envelope is shorter than the fit needs
        out["reason"] = str(exc)
        return out
    law = log_loss(refit.samples, refit.x(compute))[:, 0]
    noise = method_rng(name, seed, "backtest").standard_normal(len(law))
    predicted_log = law + small_sample_factor(refit.dof) * _noise_sd(refit) * noise
    lo, hi = percentile_ci(predicted_log)
    out.update(predicted=float(refit.predict(compute)), ci=[math.exp(lo), math.exp(hi)],
               inside=bool(lo <= math.log(measured) <= hi))
    return out
