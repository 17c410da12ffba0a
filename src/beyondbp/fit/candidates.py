"""How open a letter is, and what a candidate run is expected to do to it (the adaptive planner,
`beyondbp.study.adaptive`). Numbers in, numbers out.

A letter is *decided* when the verdict gives one (both intervals exclude 0 and the pair's shared
floor agrees, `beyondbp.fit.verdict`), its bootstrap share is at least `SHARE`, and the per-method
floors do not give another letter. Its *openness* is 0 when decided, else the share of bootstrap
samples that disagree with the most common letter (under the pure laws or the pair's floor fit,
whichever disagrees more), and at least 1 - SHARE.

A candidate is scored by refitting the pair with the candidate's expected outcome in place: a new
size's point on each method's current law (`law_loss`), a new rate's loss from the parabola in
log10(lr) through its size's rates (`rate_loss`), another seed's mean moved toward the law
(`beyondbp.study.proposals`).
The score is the openness it removes per unit of compute. This uses the point prediction, one
refit per candidate, with fewer bootstrap samples than the report (`SCORE_BOOTSTRAP`).

In a study of several budgets per size, `unbracketed_optima` says where a method's fitted L(N, D)
puts the compute-optimal tokens per parameter outside the range its runs trained (the report's
`bracketing` check, on the point estimate): there a budget beyond that range is a candidate.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import ConfigError
from .frontier import fit_frontier
from .lnd import LNDFit, fit_lnd
from .lnd_alloc import optimal_allocation
from .verdict import judge_all

SHARE = 0.9  # the bootstrap share a letter needs to count as decided
SCORE_BOOTSTRAP = 200  # bootstrap samples of a candidate's refit


def pair_verdict(rows: list[dict], alt: str, ref: str, bootstrap: int, seed: int = 0,
                 noise: dict[str, tuple[float, int]] | None = None) -> dict:
    """The verdict of `alt` against `ref` from frontier rows {method, compute, loss, run,
    size}, as the report makes it for the pair; {"reason": ...} where a method cannot be fitted."""
    fits, spans = {}, {}
    for method in (alt, ref):
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            return {"scenario": None, "reason": f"{method} has no finished runs"}
        computes = [r["compute"] for r in mine]
        spans[method] = (min(computes), max(computes))
        try:
            fits[method] = fit_frontier(computes, [r["loss"] for r in mine], [r["run"] for r in mine],
                                        [r["size"] for r in mine], bootstrap=bootstrap, seed=seed, name=method,
                                        seed_noise=(noise or {}).get(method))
        except ConfigError as exc:
            return {"scenario": None, "reason": str(exc)}
    return judge_all(fits, ref, spans, bootstrap, seed)[alt].to_dict()


def is_decided(verdict: dict) -> bool:
    if verdict.get("scenario") is None or (verdict.get("bootstrap_share") or 0.0) < SHARE:
        return False
    return (verdict.get("per_method_floors") or {}).get("scenario") in (None, verdict["scenario"])


def top_letter(verdict: dict) -> tuple[str | None, float]:
    """The most common letter of the bootstrap and its share (None, 0 without samples)."""
    shares = verdict.get("letter_shares") or {}
    if not shares:
        return None, 0.0
    letter = max(sorted(shares), key=lambda k: shares[k])
    return letter, float(shares[letter])


def openness(verdict: dict) -> float:
    """0 for a decided letter, else in [1 - SHARE, 1] (module docstring)."""
    if is_decided(verdict):
        return 0.0
    letter, share = top_letter(verdict)
    if letter is None:
        return 1.0
    open_ = 1.0 - share
    floor = verdict.get("floor") or {}
    if floor.get("letter_shares") and not floor.get("degenerate"):
        open_ = max(open_, 1.0 - float(floor["letter_shares"].get(letter, 0.0)))
    return max(open_, 1.0 - SHARE)


def law_loss(rows: list[dict], method: str, compute: float) -> float | None:
    """The loss `method`'s current law gives at `compute` (its pure power law through its frontier
    rows; log-linear through its two outermost points where the envelope has fewer than 3)."""
    mine = sorted((r["compute"], r["loss"]) for r in rows if r["method"] == method)
    if len(mine) < 2:
        return None
    try:
        fit = fit_frontier([c for c, _ in mine], [loss for _, loss in mine], bootstrap=0, name=method)
        return float(fit.predict(compute))
    except ConfigError:
        (c0, l0), (c1, l1) = mine[0], mine[-1]
        if c1 <= c0:
            return None
        slope = math.log(l1 / l0) / math.log(c1 / c0)
        return float(l1 * (compute / c1) ** min(slope, 0.0))


def log_residuals(rows: list[dict], method: str) -> dict[str, float]:
    """{run: ln(loss) - ln(law)} of `method`'s frontier rows (empty where it has no law)."""
    out = {}
    for r in rows:
        if r["method"] == method:
            predicted = law_loss([q for q in rows if q is not r], method, r["compute"])
            if predicted:
                out[r["run"]] = math.log(r["loss"]) - math.log(predicted)
    return out


def rate_loss(lrs: list[float], losses: list[float], lr: float) -> float:
    """The loss expected at rate `lr` from a size's tried rates: the parabola in log10(lr) through
    them where it opens upwards (3 or more rates), else the line through the two nearest rates,
    at half its slope, never below the best loss by more than that line gives."""
    x, y = np.log10(np.asarray(lrs, dtype=float)), np.log(np.asarray(losses, dtype=float))
    target = math.log10(lr)
    if len(x) >= 3:
        curve = np.polyfit(x, y, 2)
        if curve[0] > 0:
            return float(math.exp(np.polyval(curve, target)))
    order = np.argsort(np.abs(x - target))[:2]
    if len(order) < 2 or x[order[0]] == x[order[1]]:
        return float(math.exp(y.min()))
    slope = (y[order[0]] - y[order[1]]) / (x[order[0]] - x[order[1]])
    return float(math.exp(y[order[0]] + 0.5 * slope * (target - x[order[0]])))


def score(before: dict, after: dict, cost: float) -> tuple[float, float]:
    """(openness removed, openness removed per unit cost) by a candidate whose refit is `after`."""
    gain = openness(before) - openness(after)
    return gain, gain / cost if cost > 0 else 0.0


def lnd_estimate(n_params, tokens, loss, method: str) -> LNDFit | None:
    """A method's L(N, D) point fit (no bootstrap), or None where its runs cannot determine the
    allocation (too few runs, sizes or budgets; an exponent, a or b, at a bound of the fit)."""
    try:
        fit = fit_lnd(n_params, tokens, loss, method=method, bootstrap=0)
    except ConfigError:
        return None
    return None if set(fit.at_bounds) & {"a", "b"} else fit


def unbracketed_optima(fit: LNDFit, computes, k: float) -> list[dict]:
    """Where the compute-optimal tokens per parameter of `fit` (C = k N D, C in FLOP) lies outside
    the range of its runs': [{compute, tokens_per_param, n_opt, direction (up: above the range,
    down: below), run_range}] for each such compute."""
    run_tpp = fit.tokens / fit.n_params
    lo, hi = float(run_tpp.min()), float(run_tpp.max())
    n_opt, d_opt = (v[0] for v in optimal_allocation(fit.params, computes, k))
    out = []
    for c, n, d in zip(np.atleast_1d(computes), n_opt, d_opt):
        tpp = float(d / n)
        if not lo <= tpp <= hi:
            out.append({"compute": float(c), "tokens_per_param": tpp, "n_opt": float(n),
                        "direction": "up" if tpp > hi else "down", "run_range": [lo, hi]})
    return out
