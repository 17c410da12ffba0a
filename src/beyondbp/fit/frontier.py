"""Compute-efficient frontiers: envelope, power-law fit, residual bootstrap, quality checks.

For one training method, each point is a pair (compute C in PF-days, loss L) — in a study,
the final evaluation of each run, or every evaluation of its learning curve (see
`beyondbp.report`). The *frontier* is the lower envelope of loss against compute: sorted by
compute, the points where the running minimum of the loss strictly decreases. A power law

    L(C) = (C / C_c) ** alpha_C            (alpha_C < 0, C and C_c in PF-days)

is fitted to the frontier in log space. With x = ln C - centre (the centre is the mean ln C of
the frontier points) the law is the line ln L = alpha_C x + b, b being the log loss at the
centre; it is fitted with a Huber loss of scale `HUBER_SCALE` (residuals below 1% count
squared, larger ones linearly, so one odd point cannot swing the line), a convex problem solved
exactly by iteratively reweighted least squares. With ``irreducible=True`` the form is
L(C) = E + (C / C_c) ** alpha_C (`beyondbp.fit.floor_fit`), which needs at least 5 points.

Form note: the paper prints L(C) = (C_c C) ** alpha_C with C_c in PF-days^-1, but its
Table 1 values (BP alpha=-0.071, C_c=3.8e3; DFA -0.040, 5.1e10; shallow -0.019, 6.2e32)
only give sensible losses (BP ~2.1, DFA ~2.9, shallow ~4.4 at 0.12 PF-days) in Kaplan's
form L = (C / C_c) ** alpha_C with C_c in PF-days. We fit and report in Kaplan's form;
``PAPER_TABLE1`` holds the paper's numbers read that way.

Learning curves: when a run gives several points, only those at or past `RUN_FRACTION` of the
run's own largest compute count (`late_points`). Earlier points lie above the frontier: a run
far from its budget is beaten by a smaller model, which the envelope's left edge lacks, and a
decaying learning rate has not yet paid off.

Uncertainty: a residual bootstrap over the frontier points (`beyondbp.fit.bootstrap`). The fitted
values stay, resampled residuals are added back and the law is refitted, `DEFAULT_BOOTSTRAP`
times, from a random stream of the method's own. The samples of (alpha_C, b[, E]) — the
coordinates in which the law is linear — are widened around the estimate by the Student-t
factor of the fit's degrees of freedom (runs - parameters); intervals of everything derived
(C_c, the loss at a given compute, the compute to reach a loss, verdict quantities) come from
these samples, converted. Resampling whole runs and rebuilding an envelope would not do: a
resample holds a subset of the runs, whose envelope lies above the full one.

Quality: a fit is called a power law (`power_law_ok`) only when its points come from at
least `MIN_SIZES` model sizes, span at least `MIN_DECADES` of compute, and lie on the law
within `MAX_RMS_LOG_RESIDUAL` (root mean square) and `MAX_ABS_LOG_RESIDUAL` (worst point)
in natural-log units (0.01 = 1%).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .bootstrap import (cluster_index, method_rng, percentile_ci, resampled_residuals,
                        small_sample_factor, widen)
from ..config import TooFewPoints
from .defaults import DEFAULT_BOOTSTRAP, RUN_FRACTION
from .floor_fit import fit_floor

PAPER_TABLE1 = {"bp": (-0.071, 3.8e3), "dfa_block": (-0.040, 5.1e10), "shallow": (-0.019, 6.2e32)}
MIN_FRONTIER_POINTS = 3
HUBER_SCALE = 1e-2  # natural-log units: a 1% residual
MIN_SIZES = 3
MIN_DECADES = 0.5
MAX_RMS_LOG_RESIDUAL = 0.015
MAX_ABS_LOG_RESIDUAL = 0.04


def _columns(params):
    """alpha, b, E of one law (scalars) or of rows of laws (columns, to broadcast against x)."""
    params = np.asarray(params, dtype=float)
    if params.ndim == 1:
        return params[0], params[1], params[2]
    return params[..., 0, None], params[..., 1, None], params[..., 2, None]


def log_loss(params: np.ndarray, x) -> np.ndarray:
    """ln L at centred log compute x for laws (alpha, b, E) in the last axis of params."""
    a, b, e = _columns(params)
    return np.log(e + np.exp(a * np.asarray(x, dtype=float) + b))


def log_compute(params: np.ndarray, log_target) -> np.ndarray:
    """Centred ln C at which laws (alpha, b, E) reach the loss exp(log_target): +inf where a law
    never gets there (a flat or rising law, or a target at or below its floor)."""
    a, b, e = _columns(params)
    reducible = np.exp(np.asarray(log_target, dtype=float)) - e
    reached = (a < 0) & (reducible > 0)
    x = (np.log(np.where(reached, reducible, 1.0)) - b) / np.where(reached, a, -1.0)
    return np.where(reached, x, np.inf)


@dataclass
class PowerLawFit:
    """L(C) = [E +] (C / C_c) ** alpha_C, fitted on `envelope` (k x 2: compute, loss).

    The law is kept in its linear coordinates: slope alpha_C and `intercept` b, the log of the
    (reducible) loss at `centre` = mean ln C of the envelope points. `samples`: bootstrap rows
    (alpha_C, b, E), already widened (E = 0 for the pure form)."""
    alpha_C: float
    intercept: float
    centre: float
    E: float | None
    alpha_C_ci: tuple[float, float] | None
    n_points: int
    envelope: np.ndarray
    samples: np.ndarray | None
    runs: list[str] = field(default_factory=list)  # the run of each envelope point ('' if unknown)
    sizes: list[str] = field(default_factory=list)  # the model size of each envelope point
    dof: int = 1  # degrees of freedom of the bootstrap's t widening: runs - parameters
    raw_samples: np.ndarray | None = None  # the bootstrap rows before widening
    seed_noise: tuple[float, int] | None = None  # measured sd of ln loss across seeds, and its dof
    backtest: dict | None = None  # `beyondbp.fit.backtest`, set where a verdict is made
    dropped_sizes: list[str] = field(default_factory=list)  # sizes with points, none on the envelope

    def widened(self, factor: float) -> np.ndarray:
        """The raw bootstrap rows stretched around the estimate by `factor` (floors kept between 0
        and the smallest loss)."""
        out = widen(self.raw_samples, self.params(), factor)
        out[:, 2] = np.clip(out[:, 2], 0.0, self.envelope[:, 1].min())  # a floor lies under every loss
        return out

    @property
    def C_c(self) -> float:
        """The compute at which the (reducible) law reaches loss 1: an extrapolation, often far."""
        if self.alpha_C == 0:
            return math.inf
        return safe_exp(self.centre - self.intercept / self.alpha_C)

    def params(self) -> np.ndarray:
        """(alpha_C, b, E) with E = 0 for the pure power law."""
        return np.array([self.alpha_C, self.intercept, self.E or 0.0])

    def x(self, compute) -> np.ndarray:
        return np.log(np.asarray(compute, dtype=float)) - self.centre

    def predict(self, compute) -> np.ndarray:
        return np.exp(log_loss(self.params(), self.x(compute)))

    def loss_at(self, compute: float) -> dict:
        """The fitted loss at one compute, with its 95% interval when there are samples."""
        value = float(self.predict(float(compute)))
        ci = None
        if self.samples is not None:
            lo, hi = percentile_ci(log_loss(self.samples, self.x(float(compute)))[:, 0])
            ci = [math.exp(lo), math.exp(hi)]
        return {"compute_pf_days": float(compute), "value": value, "ci": ci}

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
        """The checks behind `power_law_ok`, and the reasons where they fail; `frontier` lists
        each point as [compute, loss, run, log residual]."""
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
        return {"frontier": [[float(c), float(l), r, float(e)] for (c, l), r, e in zip(self.envelope, self.runs, res)],
                "sizes_on_frontier": sizes, "sizes_off_frontier": list(self.dropped_sizes),
                "fit_range_pf_days": [lo, hi],
                "rms_log_residual": rms, "max_abs_log_residual": worst,
                "power_law_ok": not problems, "problems": problems}

    @property
    def power_law_ok(self) -> bool:
        return self.quality()["power_law_ok"]


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


def late_points(compute, runs, fraction: float = RUN_FRACTION) -> np.ndarray:
    """Mask of the points at or past `fraction` of their run's largest compute (points without
    a run, and runs of one point, always count)."""
    compute = np.asarray(compute, dtype=float)
    if runs is None:
        return np.ones(len(compute), dtype=bool)
    labels = [str(r) if r not in (None, "") else f"\0{i}" for i, r in enumerate(runs)]
    largest: dict[str, float] = {}
    for label, c in zip(labels, compute):
        largest[label] = max(largest.get(label, 0.0), c)
    return np.array([c >= fraction * largest[label] * (1 - 1e-12) for label, c in zip(labels, compute)])


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
        new_weights = np.where(residual <= scale, 1.0, scale / np.maximum(residual, 1e-300))
        if np.allclose(new_weights, weights, rtol=0, atol=1e-12):
            break  # converged (at once when every residual is under the scale)
        weights = new_weights
    return slope[..., 0], intercept[..., 0]


def _fit_rows(x: np.ndarray, ys: np.ndarray, irreducible: bool) -> np.ndarray:
    """(alpha, b, E) for each row of ys ([rows, k]) at centred log compute x."""
    if irreducible:
        e, a, b = fit_floor([(x, ys)], HUBER_SCALE)
        return np.column_stack([a[:, 0], b[:, 0], e])
    slope, intercept = huber_line(x, ys)
    return np.column_stack([slope, intercept, np.zeros_like(slope)])


def _centred_fit(compute: np.ndarray, loss: np.ndarray, irreducible: bool):
    """(centre, x, y, (alpha, b, E)): the law fitted to y = ln loss at x = ln compute - centre."""
    log_c = np.log(compute)
    centre = float(log_c.mean())
    x, y = log_c - centre, np.log(loss)
    return centre, x, y, _fit_rows(x, y[None], irreducible)[0]


def fit_power_law(compute, loss, irreducible: bool = False) -> tuple[float, float, float | None]:
    """Fit L = [E +] (C / C_c) ** alpha to the given points; returns (alpha, C_c, E or None)."""
    centre, _, _, (alpha, b, e) = _centred_fit(np.asarray(compute, dtype=float), np.asarray(loss, dtype=float),
                                               irreducible)
    log_cc = centre - b / alpha if alpha != 0 else math.inf
    return float(alpha), safe_exp(log_cc), (float(e) if irreducible else None)


def residual_sd(residuals: np.ndarray, parameters: int) -> float:
    """The noise a fit's log residuals estimate: sqrt(sum r^2 / (points - parameters))."""
    return float(np.sqrt(np.sum(np.square(residuals)) / max(len(residuals) - parameters, 1)))


def safe_exp(v: float) -> float:
    """exp(v), inf past the float range (a flat frontier's C_c), 0 below it; nan stays nan."""
    return math.exp(v) if not v >= 709 else math.inf


def min_points(irreducible: bool) -> int:
    """Parameters + 2 (3 for the pure law and its widely used minimum, 5 with a floor)."""
    return 5 if irreducible else MIN_FRONTIER_POINTS


def fit_frontier(compute, loss, runs=None, sizes=None, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                 irreducible: bool = False, name: str = "points",
                 seed_noise: tuple[float, int] | None = None) -> PowerLawFit:
    """Envelope + power-law fit + residual bootstrap for one method.

    compute, loss: 1-D arrays of the candidate points (PF-days, loss); runs and sizes:
    optional labels, one per point (they name the frontier's points, group a run's points in
    the bootstrap and count its sizes). `name` labels error messages and seeds the method's
    own random stream. bootstrap=0 gives no intervals and no samples. seed_noise: (sd of ln loss
    across seeds, its degrees of freedom) where several seeds were run: the bootstrap's noise is
    then at least that sd, and where it is the larger its degrees of freedom add to the fit's.
    """
    compute, loss = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    idx = envelope_index(compute, loss)
    need = min_points(irreducible)
    if len(idx) < need:
        raise TooFewPoints(f"method {name}: only {len(idx)} frontier points, need at least {need}"
                          + (" for a fit with a floor E" if irreducible else ""))
    env_c, env_l = compute[idx], loss[idx]
    centre, x, y, (alpha, b, e) = _centred_fit(env_c, env_l, irreducible)
    run_labels = [str(runs[i]) for i in idx] if runs is not None else [""] * len(idx)
    cluster, n_clusters = cluster_index(run_labels)
    parameters = 3 if irreducible else 2
    fit = PowerLawFit(float(alpha), float(b), centre, float(e) if irreducible else None, None, len(idx),
                      np.column_stack([env_c, env_l]), None, run_labels,
                      [str(sizes[i]) for i in idx] if sizes is not None else [],
                      dof=max(n_clusters - parameters, 1), seed_noise=seed_noise)
    if seed_noise and seed_noise[0] > residual_sd(y - log_loss(fit.params(), x), parameters):
        fit.dof += seed_noise[1]  # the bootstrap's noise is then the seeds': their estimate counts too
    if sizes is not None:  # a size beaten everywhere by a smaller one: listed, never silently gone
        fit.dropped_sizes = list(dict.fromkeys(str(s) for s in sizes if str(s) not in set(fit.sizes)))
    if bootstrap:
        fitted = log_loss(fit.params(), x)
        draws = resampled_residuals(y - fitted, x, cluster, bootstrap, method_rng(name, seed), parameters,
                                    seed_noise[0] if seed_noise else 0.0)
        fit.raw_samples = _fit_rows(x, fitted + draws, irreducible)
        fit.samples = fit.widened(small_sample_factor(fit.dof))
        fit.alpha_C_ci = percentile_ci(fit.samples[:, 0])
    return fit
