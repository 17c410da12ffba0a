"""Verdicts: which of the paper's outcomes A-D holds for an alternative method against BP, and
through which compute.

Paper section 2: A alternative always better; B better at scale only (worse at the smallest
compute studied, better at larger compute); C better at small compute only; D BP always better.
A letter is a claim with a range. It is claimed *through a horizon* H (by default 10x the
largest compute measured, `horizon_factor`) and decided by two quantities, both read from each
method's fitted law:

- Δ ln L at the smallest compute studied (alternative minus BP; < 0: the alternative is better
  there), and
- Δ ln L at the horizon H.

Each has a 95% interval from the two methods' bootstraps (sample i of one with sample i of the
other; every method resamples from its own stream, `beyondbp.fit.bootstrap`), widened by the t
factor of the smaller of the two fits' degrees of freedom (Welch-Satterthwaite with 2 per side
is anti-conservative). A letter is given only when both intervals exclude 0; otherwise the
verdict is *undetermined* and names the letters still possible and why. `bootstrap_share` is
the share of bootstrap samples that give the stated letter under the fitted model: not a
probability that the letter is right.

Beyond the horizon the verdict gives the *trend*, labelled as extrapolation: Δalpha with its
interval and the letter pure power laws give as C -> infinity (with a floor per method,
`--irreducible`, ΔE decides at infinity instead).

Checks that can withhold a letter:
- both frontiers must pass the power-law checks (`PowerLawFit.quality`);
- the loss floor: the pair (alternative + BP) is also fitted with one floor E shared by the two
  (`beyondbp.fit.shared_floor`) and the letter recomputed from that fit; a letter stands only
  where that fit gives the same one. A floor at a bound (degenerate) is not identified and
  does not decide; per-method floors (where each frontier has 5 points) are reported beside it
  as a sensitivity check;
- the backtest (`beyondbp.fit.backtest`): a law that failed to predict its own largest size
  claims nothing past the measured compute (the horizon shrinks to it).

Always given: the measured gap, how far the alternative's frontier points lie above or below
BP's frontier, interpolated, where both were measured.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..config import TooFewPoints
from .backtest import backtest
from .bootstrap import excludes_zero, percentile_ci, small_sample_factor, widen
from .defaults import HORIZON_FACTOR
from .frontier import PowerLawFit, fit_frontier, log_loss, min_points, safe_exp
from .multiplier import _outside_decades, compute_multiplier, crossover
from .shared_floor import SharedFloorFit, fit_shared_floor
from .verdict_types import (LETTERS, SYMBOL, Crossover, Decision, FloorVerdict, MeasuredGap, MultiplierEntry,
                            MultiplierTrend, PerMethodFloors, Trend, Verdict)


def letters_of(gap, scale) -> np.ndarray:
    """The letter for each (Δ at the smallest compute, Δ at scale): negative = alternative better."""
    small, large = np.asarray(gap) < 0, np.asarray(scale) < 0
    return np.where(small, np.where(large, "A", "C"), np.where(large, "B", "D"))


def _signs(ci) -> list[int]:
    """Signs (-1 better, +1 worse) an interval allows."""
    return [-1] if ci[1] < 0 else [1] if ci[0] > 0 else [-1, 1]


def decide(gap: float, gap_samples, scale: float, scale_samples, scale_name: str) -> Decision:
    """The letter from the two deciding quantities and their (already widened) samples."""
    gap_samples, scale_samples = np.asarray(gap_samples, dtype=float), np.asarray(scale_samples, dtype=float)
    usable = ~(np.isnan(gap_samples) | np.isnan(scale_samples))
    gap_ci, scale_ci = percentile_ci(gap_samples[usable]), percentile_ci(scale_samples[usable])
    sample_letters = letters_of(gap_samples[usable], scale_samples[usable])
    shares = {letter: float(np.mean(sample_letters == letter)) if usable.any() else 0.0 for letter in LETTERS}
    possible = (sorted({str(letters_of(g, s)) for g in _signs(gap_ci) for s in _signs(scale_ci)})
                if usable.any() else list(LETTERS))
    scenario = possible[0] if len(possible) == 1 else None
    why = []
    if not excludes_zero(gap_ci):
        why.append(f"the interval of Δ ln L at the smallest compute, [{gap_ci[0]:+.3f}, {gap_ci[1]:+.3f}], includes 0")
    if not excludes_zero(scale_ci):
        why.append(f"the interval of {SYMBOL[scale_name]}, [{scale_ci[0]:+.3g}, {scale_ci[1]:+.3g}], includes 0")
    return Decision(scenario, possible, str(letters_of(gap, scale)), shares[scenario] if scenario else None, shares,
                    scale_name, scale, list(scale_ci), gap, list(gap_ci), int((~usable).sum()),
                    None if scenario else " and ".join(why))


def _gap(alt: PowerLawFit, ref: PowerLawFit, compute: float) -> tuple[float, np.ndarray]:
    """Δ ln L at one compute from the two fits' laws, and its samples."""
    point = float(log_loss(alt.params(), alt.x(compute)) - log_loss(ref.params(), ref.x(compute)))
    return point, log_loss(alt.samples, alt.x(compute))[:, 0] - log_loss(ref.samples, ref.x(compute))[:, 0]


def _at_infinity(alt: PowerLawFit, ref: PowerLawFit, gap_at_c_min: tuple[float, np.ndarray]) -> Trend:
    """The trend past the horizon: the letter as C -> infinity from Δalpha (or ΔE with floors);
    gap_at_c_min: `_gap` at the smallest compute, as the letter through the horizon read it."""
    column, name = (2, "delta_E") if alt.E is not None or ref.E is not None else (0, "delta_alpha")
    scale = float(alt.params()[column] - ref.params()[column])
    out = decide(*gap_at_c_min, scale, alt.samples[:, column] - ref.samples[:, column], name)
    trend = Trend(float(alt.alpha_C - ref.alpha_C), list(percentile_ci(alt.samples[:, 0] - ref.samples[:, 0])),
                  out.scenario, out.possible_letters, out.bootstrap_share)
    if name == "delta_E":
        trend.delta_E, trend.delta_E_ci = out.scale, out.scale_ci
    return trend


def paired(alt: PowerLawFit, ref: PowerLawFit) -> tuple[PowerLawFit, PowerLawFit]:
    """The two fits with their bootstrap rows widened for a comparison, both by the t factor of
    the smaller of their degrees of freedom (a difference is no better known than its noisier side)."""
    factor = small_sample_factor(min(alt.dof, ref.dof))
    return replace(alt, samples=alt.widened(factor)), replace(ref, samples=ref.widened(factor))


def floor_verdict(floor: SharedFloorFit, alt_name: str, ref_name: str, c_min: float, horizon: float) -> FloorVerdict:
    """The letter under the pair's floor fit, through the same horizon."""
    factor = small_sample_factor(floor.dof)
    quantities = []
    for compute in (c_min, horizon):
        alt, alt_s = floor.log_loss_at(alt_name, compute)
        ref, ref_s = floor.log_loss_at(ref_name, compute)
        quantities += [alt - ref, widen(alt_s - ref_s, alt - ref, factor)]
    out = decide(*quantities, "delta_log_loss_at_horizon")
    alpha = float(floor.laws[alt_name][0] - floor.laws[ref_name][0])
    alpha_s = widen(floor.samples[alt_name][:, 0] - floor.samples[ref_name][:, 0], alpha, factor)
    e_ci, bounds = floor.E_ci, floor.bounds_report()
    return FloorVerdict(out, alpha, list(percentile_ci(alpha_s)), floor.E, list(e_ci) if e_ci else None,
                        floor.smallest_loss, floor.degenerate, bounds["E_ci_open_ends"], bounds["E_samples_at_bound"],
                        floor.methods)


def own_floor(fit: PowerLawFit, name: str, bootstrap: int, seed: int) -> PowerLawFit | str:
    """`fit`'s frontier refitted with a floor of its own (for the sensitivity check), or why not."""
    if fit.n_points < min_points(True):
        return f"{name} has fewer than {min_points(True)} frontier points"
    try:
        return fit_frontier(fit.envelope[:, 0], fit.envelope[:, 1], fit.runs or None, fit.sizes or None, bootstrap,
                            seed, True, f"{name}/own-floor", fit.seed_noise)
    except TooFewPoints as exc:
        return str(exc)


def per_method_floors(own: tuple[PowerLawFit | str, PowerLawFit | str], names: tuple[str, str], c_min: float,
                      horizon: float) -> PerMethodFloors:
    """Sensitivity: each method with a floor of its own (`own_floor`), the letter through the same horizon."""
    reasons = [f for f in own if isinstance(f, str)]
    if reasons:
        return PerMethodFloors(None, "; ".join(reasons))
    a, r = paired(*own)
    out = decide(*_gap(a, r, c_min), *_gap(a, r, horizon), "delta_log_loss_at_horizon")
    return PerMethodFloors(out.scenario, out.reason, out.possible_letters, out.letter_shares, out.bootstrap_share,
                           {names[0]: a.E, names[1]: r.E})


def _crossover_entry(alt: PowerLawFit, ref: PowerLawFit, c_min: float, measured: tuple[float, float],
                     c_max: float) -> Crossover | None:
    """The crossover with its interval, when the laws cross above the smallest compute."""
    log_cross, samples = crossover(alt, ref)
    if not math.isfinite(log_cross) or log_cross <= math.log(c_min):
        return None
    lo, hi = percentile_ci(samples)
    value = safe_exp(log_cross)
    return Crossover(value, [safe_exp(lo), safe_exp(hi)], bool(measured[0] <= value <= measured[1]), value / c_max)


def measured_gap(alt: PowerLawFit, ref: PowerLawFit) -> MeasuredGap | None:
    """Where both frontiers were measured: the alternative's frontier points against the
    reference's frontier interpolated log-linearly between its points. Returns the compute
    range compared and the smallest and largest relative gap (alt / ref - 1; > 0: alt worse),
    or None where the compute ranges do not overlap."""
    ref_c, ref_l = np.log(ref.envelope[:, 0]), np.log(ref.envelope[:, 1])
    alt_c, alt_l = np.log(alt.envelope[:, 0]), np.log(alt.envelope[:, 1])
    inside = (alt_c >= ref_c[0]) & (alt_c <= ref_c[-1])
    if not inside.any():
        return None
    gaps = np.exp(alt_l[inside] - np.interp(alt_c[inside], ref_c, ref_l)) - 1.0
    c = alt.envelope[inside, 0]
    return MeasuredGap([float(c.min()), float(c.max())], float(gaps.min()), float(gaps.max()), int(inside.sum()))


def _outside(fits: dict[str, PowerLawFit], compute: float) -> dict[str, float]:
    """Decades by which `compute` lies outside each fit's measured compute (only those outside)."""
    decades = {name: float(_outside_decades(fit, math.log(compute))) for name, fit in fits.items()}
    return {name: d for name, d in decades.items() if d > 1e-6}


def _horizon(alt: PowerLawFit, ref: PowerLawFit, names: tuple[str, str], c_max: float,
             factor: float) -> tuple[float, str | None]:
    """The compute through which a letter is claimed, and why it is the measured compute only."""
    failed = [n for n, f in zip(names, (alt, ref)) if f.backtest and f.backtest.get("inside") is False]
    if failed:
        return c_max, (f"{' and '.join(failed)}'s law failed its backtest (it did not predict its largest size), "
                       "so no letter is claimed past the measured compute")
    untested = [n for n, f in zip(names, (alt, ref)) if f.backtest and f.backtest.get("inside") is None]
    if untested:
        return c_max, (f"{' and '.join(untested)}'s law could not be backtested ("
                       f"{'; '.join(f.backtest['reason'] for f in (alt, ref) if f.backtest and f.backtest.get('inside') is None)}), "
                       "so no letter is claimed past the measured compute")
    return factor * c_max, None


def _apply_floor(out: Verdict, pure: Decision, floor: FloorVerdict) -> None:
    """A letter stands only if the pair's identified floor fit resolves the same letter."""
    if floor.degenerate or pure.scenario is None or floor.scenario == pure.scenario:
        return
    floor_text = floor.scenario or f"undetermined ({' or '.join(floor.possible_letters)})"
    out.scenario, out.bootstrap_share = None, None
    out.possible_letters = sorted({pure.scenario, *floor.possible_letters})
    out.reason = (f"the floor decides: pure power laws give {pure.scenario}, one floor E shared by the "
                  f"pair gives {floor_text}")


def judge(alt: PowerLawFit, ref: PowerLawFit, c_min: float, c_max: float | None = None,
          alt_name: str = "alternative", ref_name: str = "bp", floor: SharedFloorFit | None = None,
          horizon_factor: float = HORIZON_FACTOR, own_floors: tuple | None = None) -> Verdict:
    """The verdict of `alt` against `ref` (module docstring, `verdict_types.Verdict`); c_min, c_max:
    the compute range studied (both methods' candidate points); floor: the pair's floor fit;
    own_floors: each method refitted with a floor of its own (`own_floor`), for the sensitivity check."""
    c_max = c_max or max(alt.fit_range[1], ref.fit_range[1])
    out = Verdict(c_min=c_min, c_max=c_max, measured_gap=measured_gap(alt, ref))
    problems = [f"{name}'s frontier is not a power law ({'; '.join(fit.quality()['problems'])})"
                for name, fit in ((ref_name, ref), (alt_name, alt)) if not fit.power_law_ok]
    if problems:
        out.reason = "; ".join(problems)
        return out
    if alt.raw_samples is None or ref.raw_samples is None:
        out.reason = "no bootstrap samples, so no intervals and no letter"
        return out
    names = (alt_name, ref_name)
    alt, ref = paired(alt, ref)
    horizon, horizon_reason = _horizon(alt, ref, names, c_max, horizon_factor)
    gap_at_c_min = _gap(alt, ref, c_min)
    pure = decide(*gap_at_c_min, *_gap(alt, ref, horizon), "delta_log_loss_at_horizon")
    trend = _at_infinity(alt, ref, gap_at_c_min)
    multiplier = compute_multiplier(alt, ref, names, floor)
    out = replace(out, scenario=pure.scenario, possible_letters=pure.possible_letters,
                  bootstrap_share=pure.bootstrap_share, letter_shares=pure.letter_shares, pure_scenario=pure.scenario,
                  horizon=horizon, horizon_factor=horizon / c_max, horizon_reason=horizon_reason,
                  delta_log_loss_at_horizon=pure.scale, delta_log_loss_at_horizon_ci=pure.scale_ci, trend=trend,
                  delta_alpha=trend.delta_alpha, delta_alpha_ci=trend.delta_alpha_ci,
                  delta_log_loss_at_c_min=pure.gap, delta_log_loss_at_c_min_ci=pure.gap_ci,
                  c_min_extrapolated_decades=_outside({alt_name: alt, ref_name: ref}, c_min),
                  compute_multiplier=[MultiplierEntry(**e) for e in multiplier["entries"]],
                  compute_multiplier_trend=MultiplierTrend(**multiplier["trend"]),
                  compute_multiplier_losses_from=multiplier["losses_from"],
                  nan_samples_dropped=pure.nan_samples_dropped, reason=pure.reason)
    if alt.E is None and ref.E is None and excludes_zero(trend.delta_alpha_ci):
        measured = (max(alt.fit_range[0], ref.fit_range[0]), min(alt.fit_range[1], ref.fit_range[1]))
        out.crossover = _crossover_entry(alt, ref, c_min, measured, c_max)
    if floor is not None and floor.samples:
        out.floor = floor_verdict(floor, alt_name, ref_name, c_min, horizon)
        _apply_floor(out, pure, out.floor)
    if own_floors is not None:
        out.per_method_floors = per_method_floors(own_floors, names, c_min, horizon)
    return out


def judge_all(fits: dict[str, PowerLawFit], reference: str, spans: dict[str, tuple[float, float]],
              bootstrap: int, seed: int = 0, horizon_factor: float = HORIZON_FACTOR) -> dict[str, Verdict]:
    """Every method against `reference`; spans: each method's smallest and largest candidate
    compute. Each fit is backtested first; each pair of pure laws that pass the power-law checks
    gets a floor fit of its own, so no letter depends on a third method."""
    if reference not in fits:
        return {}
    for method, fit in fits.items():
        if bootstrap and fit.backtest is None:
            fit.backtest = backtest(fit, bootstrap, seed, method)
    ref = fits[reference]
    own: dict[str, PowerLawFit | str] = {}  # each method's own-floor refit, made once for all its pairs
    verdicts = {}
    for method, fit in fits.items():
        if method == reference:
            continue
        floor = own_floors = None
        if bootstrap and fit.E is None and ref.E is None and fit.power_law_ok and ref.power_law_ok:
            floor = fit_shared_floor({method: fit, reference: ref}, bootstrap, seed)
            for name in (method, reference):
                if name not in own:
                    own[name] = own_floor(fits[name], name, bootstrap, seed)
            own_floors = (own[method], own[reference])
        c_min = min(spans[method][0], spans[reference][0])
        c_max = max(spans[method][1], spans[reference][1])
        verdicts[method] = judge(fit, ref, c_min, c_max, method, reference, floor, horizon_factor, own_floors)
    return verdicts
