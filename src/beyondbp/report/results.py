"""A study's results: its runs, the runs that count, the frontier points and the fits.

From the study folder: for each (method, size, budget) the learning rate with the lowest mean
log training loss at the runs' last evaluation (over seeds) is kept (`best_lr_runs`; why not the
validation loss: `beyondbp.fit.tuning`). The frontier's candidate points are,
by the spec's `frontier_points`, each kept run's final evaluation (default: the only point of a
decayed schedule that is near-optimal for its length) or every evaluation from half of the run's
tokens on (`fit.frontier.RUN_FRACTION`). Each method's frontier is fitted and checked
(`beyondbp.fit.frontier`); each alternative is judged against BP (`beyondbp.fit.verdict`) under
four compute accountings: the paper's, the optimistic one, the exact FLOP count and measured
wall-clock seconds (`ACCOUNTINGS`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import TooFewPoints
from ..fit.defaults import DEFAULT_BOOTSTRAP, RUN_FRACTION
from ..fit.frontier import PowerLawFit, fit_frontier
from ..fit.points import fit_json
from ..fit.tuning import choose_rates, mean_log_loss
from ..fit.verdict import judge_all
from ..fit.verdict_types import Verdict
from ..runs.accounting import ACCOUNTINGS
from ..runs.folder import RunState, read_metrics, read_summary, run_state
from ..study.spec_types import Spec
from .recorded import RecordedRun, read_spec, recorded_runs, study_cells

REFERENCE = "bp"
# At or above this `residual_common`, every position carries (nearly) the same vector into the
# final LayerNorm, so the model predicts one distribution everywhere: the unigram plateau.
COLLAPSED = 0.999


@dataclass
class RunResult:
    run: RecordedRun
    state: str
    summary: dict | None
    metrics: list[dict]

    @property
    def final_loss(self) -> float | None:
        value = (self.summary or {}).get("final_val_loss")
        return float(value) if value is not None and math.isfinite(value) else None

    def last(self, key: str):
        """The value of `key` at the run's last evaluation that logged it (None if none did)."""
        values = [m[key] for m in self.metrics if m.get(key) is not None]
        return values[-1] if values else None

    @property
    def select_loss(self) -> float | None:
        """The training loss logged at the run's last evaluation: what its rate is chosen on (`fit.tuning`).
        None for the MLP track, whose epochs revisit every example (an in-sample loss)."""
        last = self.metrics[-1] if self.metrics else {}
        value = last.get("train_loss") if "epoch" not in last else None
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    @property
    def final_residual_common(self) -> float | None:
        """`residual_common` at the run's last evaluation (Transformer runs; see train.loop.residual_stats)."""
        return self.last("residual_common")

    @property
    def final_alignment(self) -> dict[str, float] | None:
        return self.last("alignment")


@dataclass
class AccountingFits:
    fits: dict[str, PowerLawFit] = field(default_factory=dict)
    unfitted: dict[str, str] = field(default_factory=dict)  # method -> why
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    c_range: tuple[float, float] | None = None

    @property
    def reference_compute(self) -> float | None:
        """Where Table 1 gives each law's loss: the geometric middle of the compute studied."""
        return math.sqrt(self.c_range[0] * self.c_range[1]) if self.c_range else None


# --- results -------------------------------------------------------------------------------

def collect(study_dir: str | Path) -> tuple[Spec, list[RunResult]]:
    """The folder's spec and each run's state and records (`recorded`: nothing is planned again)."""
    spec = read_spec(study_dir)
    runs_dir = Path(study_dir) / "runs"
    with_sizes, cells = study_cells(spec, Path(study_dir))
    summaries = {c.name: read_summary(runs_dir / c.name) for c in cells}
    return spec, [RunResult(r, run_state(runs_dir / r.name), summaries[r.name],
                            read_metrics(runs_dir / r.name / "metrics.jsonl"))
                  for r in recorded_runs(study_dir, with_sizes, cells, summaries)]


def trials(results: list[RunResult]) -> list[dict]:
    """The completed runs with a final loss as `fit.tuning` trials."""
    return [{"method": r.run.method, "size": r.run.size, "budget": r.run.budget, "lr": r.run.lr, "seed": r.run.seed,
             "loss": r.final_loss, "select_loss": r.select_loss}
            for r in results if r.state == RunState.COMPLETED and r.final_loss is not None]


def rate_choices(results: list[RunResult]) -> dict[tuple[str, str, str], dict]:
    """Per (method, size, budget) the best and runner-up rates (`fit.tuning.choose_rates`)."""
    return choose_rates(trials(results))


def runs_at_rate(results: list[RunResult], which: str = "best", choices: dict | None = None) -> list[RunResult]:
    """For each (method, size, budget): the completed runs of its `which` rate ("best" or
    "runner_up"; a cell with one rate keeps it for both); choices: `rate_choices(results)` when
    the caller has them already."""
    choices = rate_choices(results) if choices is None else choices
    kept = []
    for r in results:
        choice = choices.get((r.run.method, r.run.size, r.run.budget))
        if r.state == RunState.COMPLETED and r.final_loss is not None and choice is not None:
            if r.run.lr == (choice[which] if choice[which] is not None else choice["best"]):
                kept.append(r)
    return kept


def best_lr_runs(results: list[RunResult]) -> list[RunResult]:
    """For each (method, size, budget): the completed runs of its best learning rate, chosen on
    the training loss at the runs' last evaluation (`fit.tuning`: not on the loss that is fitted)."""
    return runs_at_rate(results, "best")


def _usable(m: dict, column: str) -> bool:
    value, loss = m.get(column), m.get("val_loss")
    return bool(m.get("step", 0) > 0 and value and value > 0 and loss is not None and math.isfinite(loss))


def _chosen_rows(r: RunResult, column: str, mode: str) -> list[dict]:
    """A run's evaluations that count: its final one (mode `final`; none if the run ended early),
    or every one from RUN_FRACTION of its tokens on (mode `all`: earlier points lie above the
    frontier, see `beyondbp.fit.frontier`)."""
    usable = [m for m in r.metrics if _usable(m, column)]
    if not usable:
        return []
    run_tokens = max(m.get("tokens", 0) for m in r.metrics)
    if mode == "final":
        return [usable[-1]] if usable[-1].get("tokens") == run_tokens else []
    return [m for m in usable if m.get("tokens", 0) >= RUN_FRACTION * run_tokens]


def frontier_points(runs: list[RunResult], accounting: str, mode: str = "final") -> list[dict]:
    """Rows (method, compute, loss, run, size) of the frontier's candidate points (`_chosen_rows`);
    compute in the accounting's unit (PF-days, or seconds under the wall-clock accounting).
    The seeds of one configuration are averaged step by step into one point, the mean of their
    ln(loss) (`fit.tuning.mean_log_loss`): the envelope of several seeds would otherwise pick the
    luckiest one."""
    column, factor = ACCOUNTINGS[accounting].column, ACCOUNTINGS[accounting].factor
    by_config: dict[tuple, list[RunResult]] = {}
    for r in runs:
        by_config.setdefault((r.run.method, r.run.size, r.run.budget, r.run.lr), []).append(r)
    rows = []
    for seeds in by_config.values():
        per_step: dict[int, list[dict]] = {}
        for r in seeds:
            for m in _chosen_rows(r, column, mode):
                per_step.setdefault(m["step"], []).append(m)
        name = seeds[0].run.name if len(seeds) == 1 else seeds[0].run.name.rsplit("_s", 1)[0] + "_seeds"
        rows += [{"method": seeds[0].run.method, "compute": float(np.mean([m[column] for m in ms])) * factor,
                  "loss": mean_log_loss([m["val_loss"] for m in ms]), "run": name, "size": seeds[0].run.size}
                 for step, ms in sorted(per_step.items()) if len(ms) == len(seeds)]
    return rows


def frontier_kind(spec: Spec) -> dict:
    """What the frontier's points are, and the bias that comes with them (results.json and the report)."""
    fixed = spec.tokens is not None and not isinstance(spec.tokens, list) and len(spec.sizes) > 1
    curves = spec.frontier_points == "all"
    if fixed and curves:
        return {"kind": "fixed-budget envelope", "note": (
            "every size was trained for the same tokens and the frontier is the envelope of their learning "
            "curves: mid-run points of a decaying schedule lie above a run of that length (Chinchilla), so the "
            "frontier and its exponent are those of a fixed-budget envelope, not of compute-efficient runs")}
    if fixed:
        return {"kind": "fixed-budget final points", "note": (
            "every size was trained for the same tokens: each final point is near-optimal for that budget, "
            "not for its size's compute-efficient budget")}
    if curves:
        return {"kind": "learning-curve points", "note": (
            "points from half of each run on: mid-run points of a decaying schedule lie above a run of that "
            "length, which biases the exponent where they make the frontier")}
    return {"kind": "final points", "note": None}


def frontier_sentence(kind: dict) -> str | None:
    """The report's one sentence on a `frontier_kind` whose points carry a bias; None where none."""
    return f"The frontier's points: {kind['kind']}: {kind['note']}." if kind["note"] else None


def fit_accounting(rows: list[dict], bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                   seed_noise: dict[str, tuple[float, int]] | None = None) -> AccountingFits:
    """Fit each method's frontier (methods with too few points are reported, not fatal)
    and judge each alternative against BP; seed_noise: {method: (sd of ln loss, dof)} where
    several seeds ran (`fit.tuning.pooled_seed_noise`), carried into that method's intervals."""
    out = AccountingFits()
    if rows:
        computes = [r["compute"] for r in rows]
        out.c_range = (min(computes), max(computes))
    spans = {}
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        computes = [r["compute"] for r in mine]
        spans[method] = (min(computes), max(computes))
        try:
            out.fits[method] = fit_frontier(computes, [r["loss"] for r in mine], [r["run"] for r in mine],
                                            [r["size"] for r in mine], bootstrap=bootstrap, seed=seed, name=method,
                                            seed_noise=(seed_noise or {}).get(method))
        except TooFewPoints as exc:
            out.unfitted[method] = str(exc)
    out.verdicts = judge_all(out.fits, REFERENCE, spans, bootstrap, seed)
    return out


def accounting_json(fits: AccountingFits) -> dict:
    return {"reference_compute": fits.reference_compute,
            "fits": {m: fit_json(f, fits.reference_compute) for m, f in fits.fits.items()},
            "unfitted": fits.unfitted, "verdicts": {m: v.to_dict() for m, v in fits.verdicts.items()}}
