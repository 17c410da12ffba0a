"""The report's allocation section: L(N, D) per method on a study with several budgets per size.

Each method's best-learning-rate runs (`results.best_lr_runs`, seeds as separate runs) give one
(N, D, loss) each: N the non-embedding parameter count, D the tokens trained, loss the final
validation loss. One L(N, D) fit per method (`fit.lnd.fit_lnd`, bootstrap over runs) then
gives, under the paper's count, the compute-optimal allocation at the smallest and largest
compute of the method's runs, the isoFLOP cross-check and the edge warnings
(`fit.lnd_runs.method_summary`). The fit and the allocation in N and D do not depend on the
accounting; L*(C) and its verdict do: under each accounting, C = k N D with k the median over
the method's runs of their compute / (N D) in that accounting's unit (a constant for the
paper's and the optimistic counts, nearly one for the exact count; for wall-clock seconds an
approximation, as a small model's throughput is lower), and each alternative's L*(C) is judged
against BP's (`fit.lnd_verdict`).

A study with one budget per size has no such section: `allocation_section` returns None.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import TooFewPoints
from ..fit.lnd import DEFAULT_BOOTSTRAP as LND_BOOTSTRAP, LNDFit, fit_lnd
from ..fit.lnd_alloc import BP_FLOPS_PER_PARAM_TOKEN, OptimalLossLaw
from ..fit.lnd_runs import method_summary
from ..fit.lnd_verdict import judge_fits
from ..fit.verdict_types import Verdict
from ..runs.folder import PF_DAY
from .results import ACCOUNTINGS, REFERENCE, RunResult


@dataclass
class AllocationSection:
    """Fits per method, what `method_summary` says of each (paper's count, C in FLOP), and per
    accounting: k per method, L*(C) laws (C in the accounting's unit), spans and verdicts."""
    fits: dict[str, LNDFit] = field(default_factory=dict)
    unfitted: dict[str, str] = field(default_factory=dict)
    summaries: dict[str, dict] = field(default_factory=dict)
    k: dict[str, dict[str, float]] = field(default_factory=dict)
    laws: dict[str, dict[str, OptimalLossLaw]] = field(default_factory=dict)
    spans: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    verdicts: dict[str, dict[str, Verdict]] = field(default_factory=dict)
    bootstrap: int = 0

    @property
    def warnings(self) -> list[str]:
        return [w for s in self.summaries.values() for w in s["warnings"]]


def has_several_budgets(results: list[RunResult]) -> bool:
    """Whether the study trains each size at several budgets (run names then carry the budget)."""
    return any(r.run.budget for r in results)


def _run_tokens(r: RunResult) -> float:
    trained = [m.get("tokens") or 0 for m in r.metrics]
    return float(max(trained)) if trained and max(trained) > 0 else float(r.run.tokens)


def _per_param_token(runs: list[RunResult], accounting: str) -> float | None:
    """Median over runs of (final compute in the accounting's reported unit) / (N D)."""
    column, factor = ACCOUNTINGS[accounting].column, ACCOUNTINGS[accounting].factor
    ratios = [r.last(column) * factor / (r.run.n_params * _run_tokens(r)) for r in runs
              if r.last(column) and r.last(column) > 0]
    return float(np.median(ratios)) if ratios else None


def allocation_section(kept: list[RunResult], methods: list[str], bootstrap: int, seed: int = 0
                       ) -> AllocationSection:
    """Fit every method's L(N, D) (methods whose runs cannot determine it are named in
    `unfitted`), then its allocation, L*(C) and verdicts under every accounting. The L(N, D)
    bootstrap uses min(bootstrap, 200) refits: each refit is a full non-linear fit."""
    out = AllocationSection(bootstrap=min(bootstrap, LND_BOOTSTRAP))
    by_method = {m: [r for r in kept if r.run.method == m] for m in methods}
    for method, runs in by_method.items():
        try:
            out.fits[method] = fit_lnd([r.run.n_params for r in runs], [_run_tokens(r) for r in runs],
                                       [r.final_loss for r in runs], method=method,
                                       runs=[r.run.name for r in runs], bootstrap=out.bootstrap, seed=seed)
        except TooFewPoints as err:
            out.unfitted[method] = str(err).removeprefix(f"method {method}: ")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # a degenerate fit (a or b = 0)
        _summarise(out, by_method)
    return out


def _summarise(out: AllocationSection, by_method: dict[str, list[RunResult]]) -> None:
    """Fill `out`'s summaries (paper's count, C in FLOP) and per accounting k, laws, spans, verdicts."""
    for method, fit in out.fits.items():
        k_paper = _per_param_token(by_method[method], "paper")
        out.summaries[method] = method_summary(fit, BP_FLOPS_PER_PARAM_TOKEN if k_paper is None else k_paper * PF_DAY)
        if k_paper is None:
            out.summaries[method]["warnings"].append(f"{method}: its runs logged no compute; C = 6 N D assumed")
    for accounting in ACCOUNTINGS:
        ks = {m: _per_param_token(by_method[m], accounting) for m in out.fits}
        ks = {m: k for m, k in ks.items() if k}
        out.k[accounting] = ks
        out.laws[accounting], out.spans[accounting], out.verdicts[accounting] = judge_fits(out.fits, ks, REFERENCE)


def allocation_json(section: AllocationSection) -> dict:
    """results.json's "allocation": per method the fit and its summary (paper's count, FLOP), and
    per accounting each method's k, L*(C) (C in the accounting's unit) and verdict."""
    return {
        "bootstrap": section.bootstrap,
        "fits": {m: {"lnd_fit": f.to_dict(), **section.summaries[m]} for m, f in section.fits.items()},
        "unfitted": section.unfitted,
        "accountings": {a: {"unit": ACCOUNTINGS[a].unit,
                            "compute_per_param_token": section.k[a],
                            "optimal_loss": {m: law.to_dict() for m, law in section.laws[a].items()},
                            "verdicts": {m: v.to_dict() for m, v in section.verdicts[a].items()}}
                       for a in ACCOUNTINGS},
        "warnings": section.warnings,
    }
