"""Verdicts: which of the paper's outcomes A-D holds for an alternative method against BP.

Paper section 2: A alternative always better; B better at scale only (worse at the smallest
compute studied, better as C -> infinity); C better at small compute only; D BP always
better. Two quantities decide the letter, both linear in each method's fitted line:

- Δ ln L at the smallest compute studied (alternative minus BP; < 0: the alternative is better
  there), and
- Δalpha, the alternative's exponent minus BP's (< 0: the alternative improves faster, so it is
  better as C -> infinity). With a floor per method (`--irreducible`) the floors decide at
  infinity instead: ΔE.

Each has a 95% interval from the two methods' bootstraps (sample i of one with sample i of the
other; every method resamples from its own stream, `beyondbp.bootstrap`). A letter is given only
when both intervals exclude 0; otherwise the verdict is *undetermined* and names the letters
still possible and why. `confidence` is the bootstrap probability of the stated letter and
`letter_shares` that of each of the four. A crossover (B, C) is given with its interval only
when Δalpha is resolved, and says whether it lies inside the compute range both methods measured.

The loss floor: every method that passes the power-law checks is also fitted with one floor E
shared by all (`beyondbp.shared_floor`) and the letter recomputed from the reducible exponents.
A letter stands only where that fit resolves the same letter; otherwise the verdict is
"undetermined: the floor decides" (a common floor makes the worse method look steeper, so
"B" from pure laws may be a floor and nothing more).

A letter is only given when both frontiers pass the power-law checks
(`PowerLawFit.quality`); otherwise `judge` says why. Always given: the measured gap, how far
the alternative's frontier points lie above or below BP's frontier, interpolated, where both
were measured.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .bootstrap import excludes_zero, percentile_ci, small_sample_factor, welch_dof, widen
from .frontier import PowerLawFit, log_loss, safe_exp
from .multiplier import compute_multiplier, crossover
from .shared_floor import SharedFloorFit, fit_shared_floor

LETTERS = ("A", "B", "C", "D")


def letters_of(gap, scale) -> np.ndarray:
    """The letter for each (Δ ln L at the smallest compute, Δ at scale): negative = alternative better."""
    small, large = np.asarray(gap) < 0, np.asarray(scale) < 0
    return np.where(small, np.where(large, "A", "C"), np.where(large, "B", "D"))


def _signs(ci) -> list[int]:
    """Signs (-1 better, +1 worse) an interval allows."""
    return [-1] if ci[1] < 0 else [1] if ci[0] > 0 else [-1, 1]


def decide(gap: float, gap_samples, scale: float, scale_samples, scale_name: str) -> dict:
    """The letter from the two deciding quantities and their (already widened) samples."""
    gap_ci, scale_ci = percentile_ci(gap_samples), percentile_ci(scale_samples)
    sample_letters = letters_of(gap_samples, scale_samples)
    shares = {letter: float(np.mean(sample_letters == letter)) for letter in LETTERS}
    possible = sorted({str(letters_of(g, s)) for g in _signs(gap_ci) for s in _signs(scale_ci)})
    scenario = possible[0] if len(possible) == 1 else None
    why = []
    if not excludes_zero(gap_ci):
        why.append(f"the interval of Δ ln L at the smallest compute, [{gap_ci[0]:+.3f}, {gap_ci[1]:+.3f}], includes 0")
    if not excludes_zero(scale_ci):
        why.append(f"the interval of {_SYMBOL[scale_name]}, [{scale_ci[0]:+.3g}, {scale_ci[1]:+.3g}], includes 0")
    return {"scenario": scenario, "possible_letters": possible, "point_scenario": str(letters_of(gap, scale)),
            "confidence": shares[scenario] if scenario else None, "letter_shares": shares,
            scale_name: scale, f"{scale_name}_ci": list(scale_ci),
            "delta_log_loss_at_c_min": gap, "delta_log_loss_at_c_min_ci": list(gap_ci),
            "reason": None if scenario else " and ".join(why)}


_SYMBOL = {"delta_alpha": "Δalpha", "delta_E": "ΔE"}


def _pure_quantities(alt: PowerLawFit, ref: PowerLawFit, c_min: float):
    """(gap, gap samples, scale, scale samples, scale name) from the two fits' own laws."""
    gap = float(log_loss(alt.params(), alt.x(c_min)) - log_loss(ref.params(), ref.x(c_min)))
    gap_s = log_loss(alt.samples, alt.x(c_min))[:, 0] - log_loss(ref.samples, ref.x(c_min))[:, 0]
    column, name = (2, "delta_E") if alt.E is not None or ref.E is not None else (0, "delta_alpha")
    scale = float(alt.params()[column] - ref.params()[column])
    return gap, gap_s, scale, alt.samples[:, column] - ref.samples[:, column], name


def paired(alt: PowerLawFit, ref: PowerLawFit) -> tuple[PowerLawFit, PowerLawFit]:
    """The two fits with their bootstrap rows widened for a comparison: by the t factor of the
    Welch-Satterthwaite degrees of freedom of the difference of their exponents (or floors), not
    each by its own (two t-widened intervals combined are wider than a t interval of the difference)."""
    column = 2 if alt.E is not None or ref.E is not None else 0
    dof = welch_dof(float(np.var(alt.raw_samples[:, column])), alt.dof,
                    float(np.var(ref.raw_samples[:, column])), ref.dof)
    factor = small_sample_factor(dof)
    return replace(alt, samples=alt.widened(factor)), replace(ref, samples=ref.widened(factor))


def floor_verdict(floor: SharedFloorFit, alt_name: str, ref_name: str, c_min: float) -> dict:
    """The letter under the shared floor: reducible exponents and the gap at the smallest compute."""
    gap_alt, gap_alt_s = floor.log_loss_at(alt_name, c_min)
    gap_ref, gap_ref_s = floor.log_loss_at(ref_name, c_min)
    alpha = float(floor.laws[alt_name][0] - floor.laws[ref_name][0])
    factor = small_sample_factor(floor.dof)
    alpha_s = widen(floor.samples[alt_name][:, 0] - floor.samples[ref_name][:, 0], alpha, factor)
    gap = gap_alt - gap_ref
    out = decide(gap, widen(gap_alt_s - gap_ref_s, gap, factor), alpha, alpha_s, "delta_alpha")
    e_ci = floor.E_ci
    return {**out, "E": floor.E, "E_ci": list(e_ci) if e_ci else None, "methods": floor.methods}


def _floor_contradicts(pure: dict, floor: dict | None) -> bool:
    """A letter stands only if the shared-floor fit resolves the same letter: where that fit
    leaves it open, the data cannot tell a difference of exponents from a common floor."""
    return floor is not None and pure["scenario"] is not None and floor["scenario"] != pure["scenario"]


def _crossover_entry(alt: PowerLawFit, ref: PowerLawFit, c_min: float, measured: tuple[float, float],
                     c_max: float) -> dict | None:
    """The crossover with its interval, when the laws cross above the smallest compute."""
    log_cross, samples = crossover(alt, ref)
    if not math.isfinite(log_cross) or log_cross <= math.log(c_min):
        return None
    lo, hi = percentile_ci(samples)
    value = safe_exp(log_cross)
    return {"value": value, "ci": [safe_exp(lo), safe_exp(hi)],
            "inside_measured_range": bool(measured[0] <= value <= measured[1]),
            "times_largest_compute": value / c_max}


def measured_gap(alt: PowerLawFit, ref: PowerLawFit) -> dict | None:
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
    return {"compute_pf_days": [float(c.min()), float(c.max())],
            "min": float(gaps.min()), "max": float(gaps.max()), "n_points": int(inside.sum())}


EMPTY = {"scenario": None, "possible_letters": list(LETTERS), "confidence": None, "letter_shares": None,
         "pure_scenario": None, "delta_alpha": None, "delta_alpha_ci": None, "delta_log_loss_at_c_min": None,
         "delta_log_loss_at_c_min_ci": None, "crossover": None, "compute_multiplier": None,
         "compute_multiplier_trend": None, "compute_multiplier_losses_from": None, "shared_floor": None}


def judge(alt: PowerLawFit, ref: PowerLawFit, c_min: float, c_max: float | None = None,
          alt_name: str = "alternative", ref_name: str = "bp", floor: SharedFloorFit | None = None) -> dict:
    """The verdict of `alt` against `ref` (keys: module docstring and `EMPTY`); c_min, c_max:
    the compute range studied (both methods' candidate points)."""
    c_max = c_max or max(alt.fit_range[1], ref.fit_range[1])
    out = {**EMPTY, "c_min_pf_days": c_min, "measured_gap": measured_gap(alt, ref)}
    problems = [f"{name}'s frontier is not a power law ({'; '.join(fit.quality()['problems'])})"
                for name, fit in ((ref_name, ref), (alt_name, alt)) if not fit.power_law_ok]
    if problems:
        return {**out, "reason": "; ".join(problems)}
    if alt.raw_samples is None or ref.raw_samples is None:
        return {**out, "reason": "no bootstrap samples, so no intervals and no letter"}
    alt, ref = paired(alt, ref)
    pure = decide(*_pure_quantities(alt, ref, c_min))
    multiplier = compute_multiplier(alt, ref, (alt_name, ref_name))
    out.update({k: v for k, v in pure.items() if k != "point_scenario"}, pure_scenario=pure["scenario"],
               compute_multiplier=multiplier["entries"], compute_multiplier_trend=multiplier["trend"],
               compute_multiplier_losses_from=multiplier["losses_from"])
    if "delta_E" in pure:  # floors per method decide at scale; the exponents are still worth a look
        out.update(delta_alpha=float(alt.alpha_C - ref.alpha_C),
                   delta_alpha_ci=list(percentile_ci(alt.samples[:, 0] - ref.samples[:, 0])))
    elif excludes_zero(pure["delta_alpha_ci"]):
        measured = (max(alt.fit_range[0], ref.fit_range[0]), min(alt.fit_range[1], ref.fit_range[1]))
        out["crossover"] = _crossover_entry(alt, ref, c_min, measured, c_max)
    if floor is not None and alt_name in floor.laws and ref_name in floor.laws and floor.samples:
        out["shared_floor"] = floor_verdict(floor, alt_name, ref_name, c_min)
        if _floor_contradicts(pure, out["shared_floor"]):
            floor_letters = out["shared_floor"]["possible_letters"]
            floor_text = (out["shared_floor"]["scenario"] or
                          f"undetermined ({' or '.join(floor_letters)})")
            out.update(scenario=None, confidence=None, possible_letters=sorted({pure["scenario"], *floor_letters}),
                       reason=(f"the floor decides: pure power laws give {pure['scenario']}, one floor E shared "
                               f"by all methods gives {floor_text}"))
    return out


def judge_all(fits: dict[str, PowerLawFit], reference: str, spans: dict[str, tuple[float, float]],
              bootstrap: int, seed: int = 0) -> dict[str, dict]:
    """Every method against `reference`; spans: each method's smallest and largest candidate
    compute. The shared-floor check joins every pure-law fit that passes the power-law checks."""
    if reference not in fits:
        return {}
    passing = {m: f for m, f in fits.items() if f.power_law_ok and f.E is None}
    floor = None
    if reference in passing and bootstrap:
        floor = fit_shared_floor(passing, bootstrap, seed)
    verdicts = {}
    for method, fit in fits.items():
        if method == reference:
            continue
        c_min = min(spans[method][0], spans[reference][0])
        c_max = max(spans[method][1], spans[reference][1])
        verdicts[method] = judge(fit, fits[reference], c_min, c_max, method, reference, floor)
    return verdicts
