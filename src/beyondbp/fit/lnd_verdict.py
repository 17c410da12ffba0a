"""Verdicts and compute multipliers on the compute-optimal loss L*(C) of each method's L(N, D) fit.

`lnd_alloc.optimal_loss_law` turns a fit into L*(C) = E + (C / C_c)^-gamma, the loss of the
best model size at each compute. Written in the frontier's form (`OptimalLossLaw.kaplan_form`)
it is a `PowerLawFit` with a floor, so the envelope's verdict code (`verdict.judge`, with the
compute multiplier of `multiplier.compute_multiplier`) judges it unchanged: the letter from the
gap at the smallest compute studied and the floors at scale, the multiplier read from both laws.

Two differences from an envelope fit, both because L* comes from a refit of whole runs:
its bootstrap rows are the L(N, D) fit's own bootstrap over runs (percentile intervals, so no
Student-t widening: the degrees of freedom are set high enough that the factor is 1), and it
has no measured points, so the verdict's `measured_gap` is dropped. The law's "envelope" is
the law itself at `CURVE_POINTS` computes over the span of the method's runs: it sets the
compute range the multiplier reads the law over and has no residuals.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .frontier import PowerLawFit
from .lnd_alloc import OptimalLossLaw, optimal_loss_law, run_span
from .verdict import judge_all
from .verdict_types import Verdict

CURVE_POINTS = 9
NO_WIDENING_DOF = 10**9  # t(0.975, dof) / z(0.975) = 1 to 9 digits: percentile intervals as they are
LN10 = math.log(10.0)


def optimal_loss_frontier(law: OptimalLossLaw, span: tuple[float, float], unit: float = 1.0) -> PowerLawFit:
    """L*(C) as a `PowerLawFit` over `span` (the smallest and largest compute of the method's
    runs, in units of `unit` compute: 8.64e19 for PF-days when the law's C is in FLOP)."""
    with np.errstate(divide="ignore"):  # a bootstrap row may have C_c = 0 or inf; the estimate may not
        (alpha, log_c_c, floor), rows = law.kaplan_form(unit)
    computes = np.geomspace(span[0], span[1], CURVE_POINTS)
    centre = float(np.log(computes).mean())
    intercept = alpha * (centre - log_c_c)  # ln(L* - E) at the centre
    samples = None
    if rows is not None:
        with np.errstate(invalid="ignore", over="ignore"):
            samples = np.column_stack([rows[:, 0], rows[:, 0] * (centre - rows[:, 1] * LN10), rows[:, 2]])
    fit = PowerLawFit(float(alpha), float(intercept), centre, float(floor), None, CURVE_POINTS,
                      np.column_stack([computes, np.zeros(CURVE_POINTS)]), None, dof=NO_WIDENING_DOF,
                      raw_samples=samples)
    fit.envelope[:, 1] = fit.predict(computes)
    if samples is not None:
        fit.samples = fit.widened(1.0)
    return fit


def _common_samples(laws: dict[str, OptimalLossLaw]) -> dict[str, OptimalLossLaw]:
    """The laws with as many bootstrap rows each (the first ones): a verdict pairs row i of one
    method's bootstrap with row i of the other's, and a fit whose refits did not all converge
    keeps fewer rows (`LNDFit.failed_refits`)."""
    counts = [len(law.samples) for law in laws.values() if law.samples is not None]
    if not counts or min(counts) == max(counts):
        return laws
    return {m: law if law.samples is None else replace(law, samples=law.samples[:min(counts)])
            for m, law in laws.items()}


def judge_optimal_loss(laws: dict[str, OptimalLossLaw], spans: dict[str, tuple[float, float]],
                       reference: str = "bp", unit: float = 1.0) -> dict[str, Verdict]:
    """Every method's L*(C) against the reference's: {method: verdict} (keys of `verdict.judge`,
    without `measured_gap`); empty when the reference has no law. spans: each method's smallest
    and largest run compute, in units of `unit`."""
    if reference not in laws:
        return {}
    degenerate = {m: f"{m}'s L*(C) is no power law (gamma {law.gamma:.3g}, C_c {law.C_c:.3g})"
                  for m, law in laws.items() if not (law.gamma > 0 and 0 < law.C_c < math.inf)}
    laws = _common_samples(laws)
    fits = {m: optimal_loss_frontier(law, spans[m], unit) for m, law in laws.items() if m not in degenerate}
    judged = judge_all(fits, reference, spans, bootstrap=0)  # laws with a floor E: no shared-floor check
    out = {}
    for method in laws:
        if method == reference:
            continue
        if method in judged:
            out[method] = replace(judged[method], measured=False)
        else:
            out[method] = Verdict(reason=degenerate.get(reference) or degenerate[method], measured=False)
    return out


def judge_fits(fits: dict, ks: dict[str, float], reference: str = "bp", unit: float = 1.0):
    """(laws, spans, verdicts) for the L(N, D) fits of the methods in `ks` (method -> compute per
    parameter and token, C = k N D): each method's L*(C), its runs' compute span in units of
    `unit`, and `judge_optimal_loss`' verdicts."""
    laws = {m: optimal_loss_law(fits[m], k) for m, k in ks.items()}
    spans = {m: run_span(fits[m], k / unit) for m, k in ks.items()}
    return laws, spans, judge_optimal_loss(laws, spans, reference, unit)
