"""How much compute an alternative needs relative to BP for the same loss, and where they cross.

The compute multiplier at loss L is C_alt(L) / C_bp(L), each read from the method's fitted law
(ln C = centre + (ln(L - E) - b) / alpha). It is reported at the two ends and the middle (in
log loss) of the loss range both fitted laws cover over the compute their frontiers measured,
so it is an interpolation of both laws.
When the ranges do not overlap (the alternative never reaches BP's losses, or the reverse), it
is reported over the range of whichever method makes the other's law extrapolate the least,
and each entry says how many decades of compute that extrapolation spans. Intervals pair
sample i of one method's bootstrap with sample i of the other's (independent streams).
The trend compares the multiplier at the lowest loss with that at the highest: whether the
alternative's handicap grows or shrinks with scale.

An interval knows when it extrapolates: an entry read more than `EXTRAPOLATION_LIMIT_DECADES`
outside either method's measured compute carries the model's error as well as the noise's. Where
the pair's floor fit is identified, the interval is widened to include that fit's interval
(`ci_includes_model_spread`); otherwise none is given (`ci` null, `ci_reason` says why).
An interval also needs tuned points: where a method's best learning rate sits at an edge of its
sweep beyond seed noise, `withhold_for_tuning` gives none, with the reason.
"""
from __future__ import annotations

import math

import numpy as np

from .bootstrap import excludes_zero, percentile_ci, small_sample_factor, widen
from .defaults import EXTRAPOLATION_LIMIT_DECADES
from .frontier import PowerLawFit, log_compute, safe_exp
from .tuning import unresolved_edges

LN10 = math.log(10.0)


def _log_compute(fit: PowerLawFit, log_loss: np.ndarray, samples: bool = False) -> np.ndarray:
    params = fit.samples if samples else fit.params()
    return log_compute(params, log_loss) + fit.centre


def _outside_decades(fit: PowerLawFit, log_c: np.ndarray) -> np.ndarray:
    lo, hi = np.log(fit.fit_range)
    return np.maximum(np.maximum(lo - log_c, log_c - hi), 0.0) / LN10


def _loss_range(alt: PowerLawFit, ref: PowerLawFit, names: tuple[str, str]) -> tuple[list[float], str]:
    """Three log losses (highest, middle, lowest) and whose range they come from."""
    ranges = {}  # the losses each fitted law gives over its own compute range
    for name, f in zip(names, (alt, ref)):
        ends = np.log(f.predict(np.array(f.fit_range)))
        ranges[name] = (float(ends.min()), float(ends.max()))
    lo, hi = max(r[0] for r in ranges.values()), min(r[1] for r in ranges.values())
    if lo <= hi:
        return [hi, (lo + hi) / 2, lo], "both"
    cost = {}
    for name, other in zip(names, (ref, alt)):
        r_lo, r_hi = ranges[name]
        cost[name] = float(np.max(_outside_decades(other, _log_compute(other, np.array([r_lo, r_hi])))))
    source = min(cost, key=cost.get)
    r_lo, r_hi = ranges[source]
    return [r_hi, (r_lo + r_hi) / 2, r_lo], source


def _ratio_ci(log_ratio: np.ndarray) -> list[float]:
    return [safe_exp(bound) for bound in percentile_ci(log_ratio)]


def _floor_log_ratio(floor, names: tuple[str, str], targets: np.ndarray):
    """The floor fit's ln(C_alt / C_ref) at the target log losses, and its widened samples."""
    point_alt, samples_alt = floor.log_compute_at(names[0], targets)
    point_ref, samples_ref = floor.log_compute_at(names[1], targets)
    with np.errstate(invalid="ignore"):
        point = point_alt - point_ref
        return point, widen(samples_alt - samples_ref, point, small_sample_factor(floor.dof))


def _model_error(entry: dict, i: int, floor, floor_ratio) -> None:
    """Widen (or withhold) an entry's interval where it is read far outside the measured compute."""
    decades = max(entry["extrapolated_decades"].values(), default=0.0)
    if decades <= EXTRAPOLATION_LIMIT_DECADES or entry["ci"] is None:
        return
    if floor is None or floor.degenerate or floor_ratio is None:
        why = "no identified floor fit of the pair" if floor is None or floor.degenerate else "no floor samples"
        entry.update(ci=None, ci_reason=(f"read {decades:.2g} decades outside the measured compute, and {why} "
                                         "bounds the model's error there"))
        return
    lo, hi = percentile_ci(floor_ratio[1][:, i])
    pure = [math.log(v) if v > 0 else -math.inf for v in entry["ci"]]
    entry["ci"] = [safe_exp(min(pure[0], lo)), safe_exp(max(pure[1], hi))]
    entry["ci_includes_model_spread"] = True


def compute_multiplier(alt: PowerLawFit, ref: PowerLawFit, names: tuple[str, str], floor=None) -> dict:
    """{"losses_from", "entries": [{loss, value, ci, extrapolated_decades}], "trend"}; floor: the
    pair's `SharedFloorFit` (or None) that bounds the model error of extrapolated entries."""
    log_losses, source = _loss_range(alt, ref, names)
    targets = np.array(log_losses)
    point_alt, point_ref = _log_compute(alt, targets), _log_compute(ref, targets)
    has_samples = alt.samples is not None and ref.samples is not None
    if has_samples:
        with np.errstate(invalid="ignore"):
            sample_log_ratio = _log_compute(alt, targets, True) - _log_compute(ref, targets, True)
    entries = []
    for i, log_l in enumerate(log_losses):
        outside = {name: float(_outside_decades(f, c)) for name, f, c in
                   zip(names, (alt, ref), (point_alt[i], point_ref[i])) if _outside_decades(f, c) > 1e-6}
        entries.append({"loss": math.exp(log_l), "value": safe_exp(point_alt[i] - point_ref[i]),
                        "ci": _ratio_ci(sample_log_ratio[:, i]) if has_samples else None,
                        "extrapolated_decades": outside, "ci_reason": None, "ci_includes_model_spread": False})
    floor_ratio = (_floor_log_ratio(floor, names, targets) if floor is not None and floor.samples
                   and not floor.degenerate else None)
    for i, entry in enumerate(entries):
        _model_error(entry, i, floor, floor_ratio)
    trend = {"value": safe_exp((point_alt[2] - point_ref[2]) - (point_alt[0] - point_ref[0])), "ci": None,
             "direction": None}
    if has_samples:
        with np.errstate(invalid="ignore"):
            change = sample_log_ratio[:, 2] - sample_log_ratio[:, 0]
        ci = percentile_ci(change)
        trend["ci"] = _ratio_ci(change)
        withheld = any(entries[i]["ci_reason"] for i in (0, 2))  # an end read too far out: no direction
        if not math.isnan(ci[0]) and not withheld:  # change > 0: a larger multiplier at the lower loss, i.e. at scale
            trend["direction"] = ("no clear trend" if not excludes_zero(ci) else
                                  "grows with scale" if ci[0] > 0 else "shrinks with scale")
    return {"losses_from": source, "entries": entries, "trend": trend}


def crossover(alt: PowerLawFit, ref: PowerLawFit) -> tuple[float, np.ndarray | None]:
    """ln C where two pure laws meet (inf or nan for equal slopes), and its bootstrap samples."""
    def meet(a_alt, b_alt, a_ref, b_ref):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (b_ref - b_alt + a_alt * alt.centre - a_ref * ref.centre) / (a_alt - a_ref)
    samples = None
    if alt.samples is not None and ref.samples is not None:
        samples = meet(alt.samples[:, 0], alt.samples[:, 1], ref.samples[:, 0], ref.samples[:, 1])
    return float(meet(*alt.params()[:2], *ref.params()[:2])), samples


def withhold_for_tuning(verdicts: dict, edges: list[dict], reference: str) -> dict:
    """Withhold the multiplier intervals (and the trend's) of every alternative whose own or the
    reference's best learning rate sits at an edge of its sweep not shown flat within seed noise
    (`fit.tuning.unresolved_edges`): an under-tuned method's points lie above its law by an amount
    no fit of them can see, so the interval would miss (26-60% coverage in the calibration).
    The estimates stay; each entry's `ci_reason` names the edges. verdicts: {method: `Verdict`},
    changed in place and returned."""
    by_method: dict[str, list[str]] = {}
    for e in unresolved_edges(edges):
        by_method.setdefault(e["method"], []).append(f"{e['size']}{' ' + e['budget'] if e.get('budget') else ''}"
                                                     f" ({e['edge']})")
    for method, v in verdicts.items():
        named = [f"{m}'s at {', '.join(by_method[m])}" for m in (method, reference) if m in by_method]
        if not named or not v.compute_multiplier:
            continue
        reason = ("the best learning rate lies at an edge of its sweep, beyond seed noise or with it unmeasured ("
                  + "; ".join(named) + "), so the points may lie above their law")
        for entry in v.compute_multiplier:
            if entry.ci is not None or entry.ci_includes_model_spread:
                entry.ci, entry.ci_reason, entry.ci_includes_model_spread = None, reason, False
        trend = v.compute_multiplier_trend
        if trend is not None and trend.ci is not None:
            trend.ci, trend.direction = None, None
    return verdicts
