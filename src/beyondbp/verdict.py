"""Verdicts: which of the paper's outcomes A-D holds for an alternative method against BP.

Paper section 2: A alternative always better; B better at scale only (worse at the smallest
compute studied, better as C -> infinity); C better at small compute only; D BP always
better. Two pure power laws are lines in log-log space, so they cross at most once; the
letter is the sign of the gap at the smallest compute studied and as C -> infinity, and the
crossover compute C* is reported for B and C. Confidence is the share of paired bootstrap
samples (sample i of one method with sample i of the other, each from its own residual
bootstrap, see `beyondbp.frontier`) that give the same letter.

A letter is only given when both frontiers pass the power-law checks
(`PowerLawFit.quality`); otherwise `judge` says why and gives the measured gap alone: how
far the alternative's frontier points lie above or below BP's frontier, interpolated, where
both were measured.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

from .frontier import PowerLawFit, _predict, _safe_exp


def _crossover_params(a, b, c_min: float | None) -> float | None:
    """Compute where two laws (alpha, ln C_c, E) meet, above c_min when given."""
    (alpha_a, lcc_a, e_a), (alpha_b, lcc_b, e_b) = a, b
    if e_a == 0 and e_b == 0:
        if alpha_a == alpha_b:
            return None
        # alpha_a (x - lcc_a) = alpha_b (x - lcc_b)  =>  x = (alpha_a lcc_a - alpha_b lcc_b) / (alpha_a - alpha_b)
        log_cross = (alpha_a * lcc_a - alpha_b * lcc_b) / (alpha_a - alpha_b)
        cross = _safe_exp(log_cross)
        return cross if c_min is None or cross > c_min else None
    # with an irreducible term the curves may cross twice: report the first crossing
    def gap(log_c):
        return float(np.log(_predict(a, np.exp(log_c))) - np.log(_predict(b, np.exp(log_c))))
    lo = math.log(c_min) if c_min else -70.0
    grid = np.linspace(lo, lo + 140.0, 2001)
    gaps = np.array([gap(g) for g in grid])
    change = np.flatnonzero(np.sign(gaps[:-1]) * np.sign(gaps[1:]) < 0)
    return math.exp(brentq(gap, grid[change[0]], grid[change[0] + 1])) if len(change) else None


def crossover(fit_a: PowerLawFit, fit_b: PowerLawFit, c_min: float | None = None) -> float | None:
    """Compute (PF-days) where the two fitted laws give equal loss; None if they never do
    (or, with c_min, not above c_min)."""
    return _crossover_params(fit_a.params(), fit_b.params(), c_min)


def _better_at_infinity(alt, ref) -> bool:
    (alpha_a, lcc_a, e_a), (alpha_r, lcc_r, e_r) = alt, ref
    if e_a != e_r and (alpha_a < 0 and alpha_r < 0):
        return e_a < e_r  # both power terms vanish; the floors decide
    if alpha_a != alpha_r:
        return alpha_a < alpha_r
    return -alpha_a * lcc_a < -alpha_r * lcc_r  # equal slopes: lower log-loss at C = 1


def _scenario(alt, ref, c_min: float) -> str:
    at_min = _predict(alt, np.array(c_min)) < _predict(ref, np.array(c_min))
    at_inf = _better_at_infinity(alt, ref)
    return {(True, True): "A", (False, True): "B", (True, False): "C", (False, False): "D"}[
        (bool(at_min), at_inf)]


def _sample_params(samples: np.ndarray) -> list[tuple[float, float, float]]:
    e = samples[:, 2] if samples.shape[1] > 2 else np.zeros(len(samples))
    return list(zip(samples[:, 0], samples[:, 1] * math.log(10.0), e))


def verdict(alt: PowerLawFit, ref: PowerLawFit, c_min: float) -> dict:
    """Scenario letter of `alt` against `ref`, crossover (B/C only) and bootstrap confidence
    (None without bootstrap samples). Says nothing of whether the fits are power laws: see `judge`."""
    letter = _scenario(alt.params(), ref.params(), c_min)
    cross = crossover(alt, ref, c_min) if letter in ("B", "C") else None
    confidence = None
    if alt.samples is not None and ref.samples is not None:
        pairs = list(zip(_sample_params(alt.samples), _sample_params(ref.samples)))
        if pairs:
            confidence = float(np.mean([_scenario(a, r, c_min) == letter for a, r in pairs]))
    return {"scenario": letter, "crossover_pf_days": cross, "confidence": confidence}


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


def judge(alt: PowerLawFit, ref: PowerLawFit, c_min: float, alt_name: str = "alternative",
          ref_name: str = "bp") -> dict:
    """The verdict when both frontiers are power laws; otherwise no letter, and why.

    Always: `measured_gap`. With a letter: `scenario`, `crossover_pf_days`, `confidence`.
    Without: `scenario` None and `reason`."""
    out = {"measured_gap": measured_gap(alt, ref)}
    problems = [f"{name}'s frontier is not a power law ({'; '.join(fit.quality()['problems'])})"
                for name, fit in ((ref_name, ref), (alt_name, alt)) if not fit.power_law_ok]
    if problems:
        return {"scenario": None, "crossover_pf_days": None, "confidence": None,
                "reason": "; ".join(problems), **out}
    return {**verdict(alt, ref, c_min), **out}
