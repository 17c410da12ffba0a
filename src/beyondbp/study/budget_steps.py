"""The adaptive planner's budget candidates (`beyondbp.study.adaptive`), for studies that train each
size at several budgets: where a method's L(N, D) puts the compute-optimal tokens per parameter
outside the range its runs trained (`fit.candidates.unbracketed_optima`, at the smallest and
largest compute of the pair's frontier), a budget beyond that range, so that the optimum the
frontier claims is bracketed by runs on both sides.

The run: both methods of the pair (every method tuned alike), at the size on the ladder nearest the
optimal N from the side that brackets it (up: the largest size at or below it, trained longer;
down: the smallest at or above it, trained shorter), each at the best rate of its nearest budget
at that size, at the first budget on the study's ladder (the spec's budgets, those the planner
added in earlier rounds, and one step beyond its end: the median ratio between its neighbouring
budgets) whose tokens
per parameter at that size lie beyond the optimum. Its loss is expected on each method's
current L(N, D); its cost, as every candidate's, from the study's measured compute per planned
FLOP. Like a rate beyond an edge, it comes before the scored candidates while a letter is open.
Torch-free.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import PF_DAY
from ..fit.candidates import LNDFit, lnd_estimate, unbracketed_optima
from .grid import budget_label


def method_k(proposer, method: str) -> float | None:
    """The method's paper's count per parameter and token: median PF-days x PF_DAY / (N D)."""
    ratios = [r["pf_days"] * PF_DAY / (r["n_params"] * r["tokens"]) for r in proposer.obs.runs
              if r["method"] == method and r.get("pf_days") and r.get("n_params") and r.get("tokens")]
    return float(np.median(ratios)) if ratios else None


def lnd_fits(proposer, methods) -> dict[str, LNDFit]:
    """Each method's L(N, D) point fit through its best-rate cells (seeds averaged in ln loss),
    fitted once per proposer (its observation does not change)."""
    cache = proposer.lnd_cache
    for method in methods:
        if method not in cache:
            cells = [(run["n_params"], run["tokens"], proposer._cell_loss(m, size, budget, choice["best"]))
                     for (m, size, budget), choice in sorted(proposer.choices.items())
                     if m == method and (run := _a_run(proposer, m, size, budget))]
            cache[method] = lnd_estimate(*zip(*cells), method=method) if len(cells) >= 3 else None
    return {m: cache[m] for m in methods if cache[m] is not None}


def _a_run(proposer, method: str, size: str, budget: str) -> dict | None:
    return next((r for r in proposer.obs.runs if (r["method"], r["size"], r["budget"]) == (method, size, budget)
                 and r.get("n_params") and r.get("tokens")), None)


def _ladder(proposer) -> tuple[list[tuple[str, float]], bool, float]:
    """([(label, value)] by value, per_param, step) of the study's budgets, spec's and added."""
    values = sorted(((label, v) for label, v, _ in (proposer.budgets[k] for k in proposer.known_budgets)),
                    key=lambda x: x[1])
    per_param = next(iter(proposer.budgets.values()))[2]
    ratios = [b / a for (_, a), (_, b) in zip(values, values[1:]) if b > a]
    return values, per_param, float(np.median(ratios)) if ratios else 2.0


def budget_brackets(proposer, methods) -> list:
    """The budget candidates of the pair `methods` (module docstring); [] for one budget per size."""
    if len(proposer.budgets) < 2 or not proposer.obs.rows:
        return []
    fits = lnd_fits(proposer, methods)
    computes = [r["compute"] * PF_DAY for r in proposer.obs.rows if r["method"] in methods]
    if not fits or not computes:
        return []
    n_of = {r.size: r.n_params for r in proposer.plan.runs}
    out, seen = [], set()
    for method, fit in fits.items():
        k = method_k(proposer, method)
        for miss in unbracketed_optima(fit, [min(computes), max(computes)], k) if k else []:
            size = _bracketing_size(proposer.ordered, n_of, miss)
            budget = _bracketing_budget(proposer, n_of[size], miss)
            if (size, budget[0]) in seen:
                continue
            seen.add((size, budget[0]))
            found = _candidate(proposer, methods, size, budget, fits, miss, method)
            if found is not None:
                out.append(found)
    return out


def _bracketing_size(ordered: list[str], n_of: dict[str, int], miss: dict) -> str:
    below = [s for s in ordered if n_of[s] <= miss["n_opt"]]
    above = [s for s in ordered if n_of[s] >= miss["n_opt"]]
    if miss["direction"] == "up":
        return below[-1] if below else ordered[0]
    return above[0] if above else ordered[-1]


def _bracketing_budget(proposer, n_params: int, miss: dict) -> tuple[str, float, bool]:
    """(label, value, per_param) of the first budget on the ladder whose tokens per parameter at
    this size lie beyond the optimum; else the step beyond the ladder's end."""
    values, per_param, step = _ladder(proposer)
    up = miss["direction"] == "up"
    for label, value in values if up else values[::-1]:
        tpp = value if per_param else value / n_params
        if (tpp > miss["tokens_per_param"]) if up else (tpp < miss["tokens_per_param"]):
            return (label, value, per_param)
    beyond = float(f"{values[-1][1] * step if up else values[0][1] / step:.3g}")
    return (budget_label(beyond, per_param), beyond, per_param)


def _candidate(proposer, methods, size: str, budget: tuple[str, float, bool], fits, miss: dict, method: str):
    label = budget[0]
    new = {} if label in proposer.known_budgets else {label: [budget[1], budget[2]]}
    proposer.budgets.setdefault(label, budget)
    rows, runs = list(proposer.obs.rows), []
    for m in methods:
        mine = [(b, c["best"]) for (q, s, b), c in proposer.choices.items() if (q, s) == (m, size)]
        if not mine:
            return None
        near = min(mine, key=lambda x: abs(math.log(proposer.budgets[x[0]][1] / budget[1])))
        planned = [proposer._run(m, size, near[1], s, label) for s in proposer.spec.seeds]
        compute = planned[0].cost * proposer.obs.per_flop(m, "pf_days")
        loss = proposer.expected_loss(m, planned[0], compute, fits)
        if loss is None or not compute:
            return None
        rows.append({"method": m, "compute": compute, "loss": loss, "run": planned[0].name, "size": size,
                     "budget": label})
        runs += planned
    where = "above" if miss["direction"] == "up" else "below"
    text = (f"{' and '.join(methods)} at {size} {label} ({method}'s optimal tokens per parameter at "
            f"{miss['compute'] / PF_DAY:.3g} PF-days, {miss['tokens_per_param']:.3g}, lies {where} the runs' "
            f"{miss['run_range'][0]:.3g}-{miss['run_range'][1]:.3g})")
    found = proposer._candidate("budget", text, runs, rows, edge=True)
    if found is not None:
        found.new_budgets = new
    return found
