"""The loss-floor check: two methods (an alternative and BP) fitted with one floor E shared by both.

A pure power law makes the worse method look steeper when the methods share a floor: with
L = E + R the log-log slope is alpha R / L, so of two methods with the same reducible exponent
the one with the higher loss has the steeper apparent slope, and two such methods would read as
scenario B (the alternative "better at scale"). Methods trained on the same data with the same
tokenizer share the entropy of the text, so the study also fits L_m = E + (C / C_c,m)^alpha_m
jointly (`beyondbp.fit.floor_fit`) and the verdict is recomputed from the reducible exponents; a
letter that changes is left undetermined (`beyondbp.fit.verdict`). The floor is fitted per pair
(alternative + BP), so an alternative's letter never depends on which other methods a study has.

A floor within 1% of either bound (0, or the smallest loss of the pair) is *degenerate*: the
data do not identify it, and the check says so instead of deciding a letter.

Intervals: each method's residuals are resampled from its own random stream, the joint fit is
redone for every sample, and the verdict's quantities are widened by the t factor of the joint
fit's degrees of freedom (runs over all methods - (2 per method + 1)).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bootstrap import cluster_index, method_rng, percentile_ci, resampled_residuals, small_sample_factor, widen
from .floor_fit import fit_floor
from .frontier import HUBER_SCALE, PowerLawFit, log_compute, log_loss

# a floor fit's bootstrap refits both methods at once; it needs fewer samples than the letter's
# tails need from the pure fits, and it is the slowest part of a report
MAX_FLOOR_SAMPLES = 1000
DEGENERATE_SHARE = 0.01  # a floor this close (as a share of the upper bound) to 0 or to it


@dataclass
class SharedFloorFit:
    """One floor E for `methods`; `laws[m]` = (alpha, b, E) at that method's centre (as in
    PowerLawFit); `samples[m]`: bootstrap rows of the same, unwidened."""
    methods: list[str]
    E: float
    laws: dict[str, np.ndarray]
    centres: dict[str, float]
    samples: dict[str, np.ndarray] | None
    dof: int
    smallest_loss: float  # of every method's frontier: the floor lies under it

    def _floor_samples(self) -> np.ndarray | None:
        if not self.samples:
            return None
        floors = widen(next(iter(self.samples.values()))[:, 2], self.E, small_sample_factor(self.dof))
        return np.clip(floors, 0.0, self.smallest_loss)

    @property
    def E_ci(self) -> tuple[float, float] | None:
        floors = self._floor_samples()
        return None if floors is None else percentile_ci(floors)

    @property
    def degenerate(self) -> bool:
        """The floor sits at (within 1% of) a bound: 0 or the pair's smallest loss."""
        return not DEGENERATE_SHARE <= self.E / self.smallest_loss <= 1 - DEGENERATE_SHARE

    def bounds_report(self) -> dict:
        """Which ends of E's interval are bounds (a one-sided interval) and the share of bootstrap
        floors at a bound (within 1% of it)."""
        floors = self._floor_samples()
        if floors is None:
            return {"E_ci_open_ends": [], "E_samples_at_bound": None}
        share = floors / self.smallest_loss
        lo, hi = percentile_ci(floors)
        ends = [name for name, at in (("lower", lo <= DEGENERATE_SHARE * self.smallest_loss),
                                      ("upper", hi >= (1 - DEGENERATE_SHARE) * self.smallest_loss)) if at]
        at_bound = (share < DEGENERATE_SHARE) | (share > 1 - DEGENERATE_SHARE)
        return {"E_ci_open_ends": ends, "E_samples_at_bound": float(at_bound.mean())}

    def log_compute_at(self, method: str, log_target: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """ln C at which `method`'s law reaches each loss exp(log_target) (+inf: never), and the
        bootstrap samples of the same (rows x targets)."""
        point = log_compute(self.laws[method], log_target) + self.centres[method]
        samples = None if self.samples is None else log_compute(self.samples[method], log_target) + self.centres[method]
        return point, samples

    def log_loss_at(self, method: str, compute: float) -> tuple[float, np.ndarray | None]:
        x = np.log(compute) - self.centres[method]
        point = float(log_loss(self.laws[method], x))
        samples = None if self.samples is None else log_loss(self.samples[method], x)[:, 0]
        return point, samples


def _groups(fits: dict[str, PowerLawFit]):
    out = []
    for fit in fits.values():
        x = np.log(fit.envelope[:, 0]) - fit.centre
        out.append((x, np.log(fit.envelope[:, 1])))
    return out


def fit_shared_floor(fits: dict[str, PowerLawFit], bootstrap: int, seed: int = 0) -> SharedFloorFit | None:
    """The joint fit of `fits`' frontier points with one floor (None for fewer than 2 methods)."""
    if len(fits) < 2:
        return None
    methods = list(fits)
    groups = _groups(fits)
    e, a, b = fit_floor([(x, y[None]) for x, y in groups], HUBER_SCALE)
    laws = {m: np.array([a[0, i], b[0, i], e[0]]) for i, m in enumerate(methods)}
    n_runs = sum(cluster_index(fit.runs)[1] for fit in fits.values())
    # where a method's seed noise governed its own fit (its dof counts the seeds), it counts here too
    seed_dof = sum(fits[m].seed_noise[1] for m in methods
                   if fits[m].seed_noise and fits[m].dof > max(cluster_index(fits[m].runs)[1] - 2, 1))
    shared = SharedFloorFit(methods, float(e[0]), laws, {m: fits[m].centre for m in methods}, None,
                            max(n_runs - (2 * len(methods) + 1), 1) + seed_dof,
                            float(min(fit.envelope[:, 1].min() for fit in fits.values())))
    n = min(bootstrap, MAX_FLOOR_SAMPLES)
    if n:
        resampled = []
        for m, (x, y) in zip(methods, groups):
            fitted = log_loss(laws[m], x)
            cluster = cluster_index(fits[m].runs)[0]
            noise = fits[m].seed_noise[0] if fits[m].seed_noise else 0.0
            draws = resampled_residuals(y - fitted, x, cluster, n, method_rng(m, seed, "shared-floor"), 2, noise)
            resampled.append((x, fitted + draws))
        es, as_, bs = fit_floor(resampled, HUBER_SCALE)
        shared.samples = {m: np.column_stack([as_[:, i], bs[:, i], es]) for i, m in enumerate(methods)}
    return shared
