"""Compute-efficient frontiers: envelope, power-law fit, residual bootstrap, quality checks.

For one training method, each point is a pair (compute C in PF-days, loss L) — in a study,
the final evaluation of each run (see `beyondbp.report`). The *frontier* is the lower
envelope of loss against compute: sorted by compute, the points where the running minimum
of the loss strictly decreases. A power law

    L(C) = (C / C_c) ** alpha_C            (alpha_C < 0, C and C_c in PF-days)

is fitted to the frontier in log space, log L = alpha_C * (log C - log C_c), with a Huber
loss of scale `HUBER_SCALE` (residuals below 1% count squared, larger ones linearly, so one
odd point cannot swing the line). The pure form is a convex problem, solved exactly by
iteratively reweighted least squares. With ``irreducible=True`` the form is
L(C) = E + (C / C_c) ** alpha_C, fitted from several starting points.

Form note: the paper prints L(C) = (C_c C) ** alpha_C with C_c in PF-days^-1, but its
Table 1 values (BP alpha=-0.071, C_c=3.8e3; DFA -0.040, 5.1e10; shallow -0.019, 6.2e32)
only give sensible losses (BP ~2.1, DFA ~2.9, shallow ~4.4 at 0.12 PF-days) in Kaplan's
form L = (C / C_c) ** alpha_C with C_c in PF-days. We fit and report in Kaplan's form;
``PAPER_TABLE1`` holds the paper's numbers read that way.

Uncertainty: a residual bootstrap over the frontier points. The fitted values stay, the
log residuals (centred, inflated by sqrt(k / (k - 2)) for the two fitted parameters) are
resampled with replacement and added back, and the law is refitted; 95% percentile
intervals. Resampling whole runs and rebuilding an envelope would not do: a resample holds
a subset of the runs, whose envelope lies above the full one, so nearly every resample is
flatter than the full fit and the interval does not centre on the estimate.

Quality: a fit is called a power law (`power_law_ok`) only when its points come from at
least `MIN_SIZES` model sizes, span at least `MIN_DECADES` of compute, and lie on the law
within `MAX_RMS_LOG_RESIDUAL` (root mean square) and `MAX_ABS_LOG_RESIDUAL` (worst point)
in natural-log units (0.01 = 1%).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from .config import ConfigError

PAPER_TABLE1 = {"bp": (-0.071, 3.8e3), "dfa_block": (-0.040, 5.1e10), "shallow": (-0.019, 6.2e32)}
MIN_FRONTIER_POINTS = 3
HUBER_SCALE = 1e-2  # natural-log units: a 1% residual
MIN_SIZES = 3
MIN_DECADES = 0.5
MAX_RMS_LOG_RESIDUAL = 0.015
MAX_ABS_LOG_RESIDUAL = 0.04


@dataclass
class PowerLawFit:
    """L(C) = [E +] (C / C_c) ** alpha_C, fitted on `envelope` (k x 2: compute, loss)."""
    alpha_C: float
    C_c: float
    E: float | None
    alpha_C_ci: tuple[float, float] | None
    C_c_ci: tuple[float, float] | None
    n_points: int
    envelope: np.ndarray
    samples: np.ndarray | None  # bootstrap rows (alpha_C, log10 C_c[, E])
    runs: list[str] = field(default_factory=list)  # the run of each envelope point ('' if unknown)
    sizes: list[str] = field(default_factory=list)  # the model size of each envelope point

    def predict(self, compute) -> np.ndarray:
        return _predict(self.params(), np.asarray(compute, dtype=float))

    def params(self) -> tuple[float, float, float]:
        """(alpha_C, ln C_c, E) with E = 0 for the pure power law."""
        return self.alpha_C, math.log(self.C_c), self.E or 0.0

    @property
    def log_residuals(self) -> np.ndarray:
        """ln(measured loss) - ln(fitted loss) at each envelope point."""
        return np.log(self.envelope[:, 1]) - np.log(self.predict(self.envelope[:, 0]))

    @property
    def fit_range(self) -> tuple[float, float]:
        return float(self.envelope[0, 0]), float(self.envelope[-1, 0])

    @property
    def sizes_on_frontier(self) -> list[str]:
        return list(dict.fromkeys(s for s in self.sizes if s))

    def quality(self) -> dict:
        """The checks behind `power_law_ok`, and the reasons where they fail."""
        res = self.log_residuals
        lo, hi = self.fit_range
        rms, worst = float(np.sqrt(np.mean(res ** 2))), float(np.max(np.abs(res)))
        decades = math.log10(hi / lo) if lo > 0 else 0.0
        sizes = self.sizes_on_frontier
        problems = []
        if self.sizes and len(sizes) < MIN_SIZES:
            problems.append(f"made by {len(sizes)} model size{'s' if len(sizes) != 1 else ''}, "
                            f"fewer than {MIN_SIZES}")
        if decades < MIN_DECADES:
            problems.append(f"spans {decades:.2f} decades of compute, under {MIN_DECADES}")
        if rms > MAX_RMS_LOG_RESIDUAL:
            problems.append(f"rms log residual {rms:.3f} > {MAX_RMS_LOG_RESIDUAL}")
        if worst > MAX_ABS_LOG_RESIDUAL:
            problems.append(f"worst log residual {worst:.3f} > {MAX_ABS_LOG_RESIDUAL}")
        return {"frontier": [[float(c), float(l), r] for (c, l), r in zip(self.envelope, self.runs)],
                "sizes_on_frontier": sizes, "fit_range_pf_days": [lo, hi],
                "rms_log_residual": rms, "max_abs_log_residual": worst,
                "power_law_ok": not problems, "problems": problems}

    @property
    def power_law_ok(self) -> bool:
        return self.quality()["power_law_ok"]


def _predict(params, compute: np.ndarray) -> np.ndarray:
    alpha, log_cc, e = params
    return e + np.exp(alpha * (np.log(compute) - log_cc))


# ----------------------------------------------------------------------------- envelope

def envelope_index(compute, loss) -> np.ndarray:
    """Indices of the points where the running minimum of loss (ordered by compute) strictly decreases."""
    compute, loss = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    order = np.lexsort((loss, compute))  # by compute, ties by loss
    l = loss[order]
    prior_min = np.concatenate(([np.inf], np.minimum.accumulate(l)[:-1]))
    return order[l < prior_min]


def envelope(compute, loss) -> tuple[np.ndarray, np.ndarray]:
    idx = envelope_index(compute, loss)
    return np.asarray(compute, dtype=float)[idx], np.asarray(loss, dtype=float)[idx]


# ----------------------------------------------------------------------------- fitting

def huber_line(x: np.ndarray, y: np.ndarray, scale: float = HUBER_SCALE,
               iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Huber regression y = slope * x + intercept for each row of y ([..., k]; x: [k]), by
    iteratively reweighted least squares (the problem is convex: one minimum, no starts)."""
    y = np.asarray(y, dtype=float)
    weights = np.ones_like(y)
    for _ in range(iterations):
        w_sum = weights.sum(-1, keepdims=True)
        x_mean = (weights * x).sum(-1, keepdims=True) / w_sum
        y_mean = (weights * y).sum(-1, keepdims=True) / w_sum
        dx = x - x_mean
        slope = (weights * dx * (y - y_mean)).sum(-1, keepdims=True) / (weights * dx * dx).sum(-1, keepdims=True)
        intercept = y_mean - slope * x_mean
        residual = np.abs(y - slope * x - intercept)
        weights = np.where(residual <= scale, 1.0, scale / np.maximum(residual, 1e-300))
    return slope[..., 0], intercept[..., 0]


def _fit_irreducible(x: np.ndarray, y: np.ndarray, n_starts: int) -> tuple[float, float, float]:
    """Huber fit of y = log(E + exp(alpha * x + b)); returns (alpha, b, E)."""
    e_max = float(np.exp(y.min())) * (1 - 1e-6)

    def residual(p):
        return np.log(p[2] + np.exp(p[0] * x + p[1])) - y

    best = None
    for frac in np.linspace(0.0, 0.95, max(n_starts, 1)):
        e0 = frac * e_max
        alpha0, b0 = np.polyfit(x, np.log(np.exp(y) - e0), 1)
        start = (min(alpha0, -1e-4), b0, e0)
        res = least_squares(residual, start, loss="huber", f_scale=HUBER_SCALE,
                            bounds=([-5.0, -np.inf, 0.0], [0.0, np.inf, e_max]))
        if best is None or res.cost < best.cost:
            best = res
    return float(best.x[0]), float(best.x[1]), float(best.x[2])


def _log_cc(alpha, intercept, centre):
    """ln C_c from y = alpha (ln C - centre) + intercept = alpha (ln C - ln C_c)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(alpha != 0, centre - np.asarray(intercept) / np.where(alpha != 0, alpha, 1.0), np.inf)


def _fit_xy(x: np.ndarray, y: np.ndarray, centre: float, irreducible: bool,
            n_starts: int = 8) -> tuple[float, float, float | None]:
    if irreducible:
        alpha, b, e = _fit_irreducible(x, y, n_starts)
    else:
        slope, intercept = huber_line(x, y)
        (alpha, b), e = (float(slope), float(intercept)), None
    return alpha, float(_log_cc(alpha, b, centre)), e


def fit_power_law(compute, loss, irreducible: bool = False,
                  n_starts: int = 8) -> tuple[float, float, float | None]:
    """Fit L = [E +] (C / C_c) ** alpha to the given points; returns (alpha, C_c, E or None)."""
    log_c = np.log(np.asarray(compute, dtype=float))
    y = np.log(np.asarray(loss, dtype=float))
    centre = float(log_c.mean())  # centring keeps slope and intercept uncorrelated
    alpha, log_cc, e = _fit_xy(log_c - centre, y, centre, irreducible, n_starts)
    return alpha, _safe_exp(log_cc), e


def _safe_exp(v: float) -> float:
    """exp(v), inf past the float range (a flat frontier's C_c), 0 below it."""
    return math.exp(v) if v < 709 else math.inf


def fit_frontier(compute, loss, runs=None, sizes=None, bootstrap: int = 200, seed: int = 0,
                 irreducible: bool = False, name: str = "points") -> PowerLawFit:
    """Envelope + power-law fit + residual bootstrap for one method.

    compute, loss: 1-D arrays of the candidate points (PF-days, loss); runs and sizes:
    optional labels, one per point (they name the frontier's points and count its sizes).
    `name` only labels error messages. bootstrap=0 gives no intervals and no samples.
    """
    compute, loss = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    idx = envelope_index(compute, loss)
    if len(idx) < MIN_FRONTIER_POINTS:
        raise ConfigError(f"method {name}: only {len(idx)} frontier points, "
                          f"need at least {MIN_FRONTIER_POINTS}")
    env_c, env_l = compute[idx], loss[idx]
    alpha, c_c, e = fit_power_law(env_c, env_l, irreducible=irreducible)
    fit = PowerLawFit(alpha, c_c, e, None, None, len(idx), np.column_stack([env_c, env_l]), None,
                      [str(runs[i]) for i in idx] if runs is not None else [""] * len(idx),
                      [str(sizes[i]) for i in idx] if sizes is not None else [])
    if bootstrap:
        fit.samples = _residual_bootstrap(fit, bootstrap, seed, irreducible)
        fit.alpha_C_ci = _percentile_ci(fit.samples[:, 0])
        lo, hi = _percentile_ci(fit.samples[:, 1])
        fit.C_c_ci = (_safe_exp(lo * math.log(10.0)), _safe_exp(hi * math.log(10.0)))
    return fit


def _percentile_ci(values: np.ndarray) -> tuple[float, float]:
    """95% percentile interval, without interpolating: a flat frontier's C_c is +inf in some
    samples, and inf - inf would turn the bound into nan."""
    lo = np.percentile(values, 2.5, method="lower")
    hi = np.percentile(values, 97.5, method="higher")
    return float(lo), float(hi)


def _residual_bootstrap(fit: PowerLawFit, n: int, seed: int, irreducible: bool) -> np.ndarray:
    """Rows (alpha, log10 C_c[, E]) from refits of fitted values plus resampled log residuals."""
    rng = np.random.default_rng(seed)
    log_c = np.log(fit.envelope[:, 0])
    centre = float(log_c.mean())
    x = log_c - centre
    fitted = np.log(fit.predict(fit.envelope[:, 0]))
    k = len(x)
    residuals = fit.log_residuals
    residuals = (residuals - residuals.mean()) * math.sqrt(k / max(k - 2, 1))
    ys = fitted + residuals[rng.integers(0, k, size=(n, k))]
    if not irreducible:
        slopes, intercepts = huber_line(x, ys)
        samples = np.column_stack([slopes, _log_cc(slopes, intercepts, centre) / math.log(10.0)])
    else:
        samples = np.array([[a, lcc / math.log(10.0), e] for a, lcc, e in
                            (_fit_xy(x, y, centre, True, n_starts=3) for y in ys)], dtype=float).reshape(-1, 3)
    estimate = np.array([fit.alpha_C, math.log10(fit.C_c) if 0 < fit.C_c < math.inf else np.inf, fit.E or 0.0])
    estimate = estimate[:samples.shape[1]]
    with np.errstate(invalid="ignore"):
        widened = estimate + small_sample_factor(k) * (samples - estimate)
    return np.where(np.isfinite(widened), widened, samples)


def small_sample_factor(k: int, parameters: int = 2) -> float:
    """t_{0.975, k - p} / z_{0.975}: a bootstrap from k points estimates the noise from k points
    too, and its percentile interval is as narrow as a normal one; widening the samples' spread
    around the estimate by this ratio turns it into a Student-t interval (coverage of a 95%
    interval on 6 noisy points: 87.5% without, see tests/test_frontier.py)."""
    from scipy.stats import norm, t
    dof = max(k - parameters, 1)
    return float(t.ppf(0.975, dof) / norm.ppf(0.975))
