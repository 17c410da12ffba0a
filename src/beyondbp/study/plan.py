"""A study plan: every run of a normalised spec (`spec`) as a validated RunConfig.

The grid's cells, their names and labels are `grid`'s; each cell's config is built by the one run
builder (`beyondbp.methods.run_builder.build_run`) from the spec's layers (`run_layers`) with the
cell's learning rate and seed as its overrides. How a run's size and budget become a model and a length is the
track's business (`tracks.Track.plan_run`): the Transformer track counts tokens (fixed, or per
non-embedding parameter), the MLP track epochs over its dataset. With `budgets: branched` the
runs of one method, size, learning rate and seed form a chain (`chains`: one trunk, a cooldown
branched at each budget), and each run's cost is what it adds to its chain.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, RunConfig
from ..config_mlp import run_length
from ..reads import shown
from ..methods.run_builder import build_run
from .chain import make_chains
from .additions import DECISIONS, added, added_budgets, read_decisions, spec_with_sizes
from .grid import budgets as grid_budgets, grid, run_name
from .spec_types import Spec
from .tracks import get_track


@dataclass
class PlannedRun:
    name: str
    method: str  # the method's label in the study: a method name or a variant label
    size: str
    lr: float
    seed: int
    cfg: RunConfig
    n_params: int  # non-embedding parameters (Kaplan's N)
    cost: float  # exact BP training FLOPs, for scheduling and the ETA
    budget: str = ""  # the budget's label when the spec lists several, else ""

    @property
    def tokens(self) -> int:
        return run_length(self.cfg)  # training tokens; on the MLP track, examples


@dataclass
class StudyPlan:
    spec: Spec
    runs: list[PlannedRun] = field(default_factory=list)
    chains: list = field(default_factory=list)  # `chains.Chain`s of a spec with budgets: branched


def run_layers(spec: Spec, method: str, size: str) -> list[tuple[str, dict]]:
    """The layers of a run's config before its learning rate and seed (`methods.run_builder`'s
    level 4): the spec's base, the size, the variant (or the method's name), per_method."""
    variant = spec.variants.get(method)
    return [("base.", copy.deepcopy(spec.base)), ("sizes.", {get_track(spec.track).size_section: spec.sizes[size]}),
            (f"variants.{method}.", copy.deepcopy(variant)) if variant is not None else ("", {"method.name": method}),
            (f"per_method.{method}.", copy.deepcopy(spec.per_method.get(method, {})))]


def planned_run(spec: Spec, method: str, size: str, lr: float, seed: int,
                budget: tuple[str, float | None, bool]) -> PlannedRun:
    """One run of the grid (or one the adaptive planner adds) as a validated RunConfig, built by the
    one run builder; budget: (label, value, per_param) as `grid.budgets` gives it."""
    label, value, per_param = budget
    name, track = run_name(method, size, lr, seed, label), get_track(spec.track)
    try:  # every piece was checked; this is the composed run, before anything starts
        cfg = build_run(run_layers(spec, method, size), {"seed": seed, "train.lr": lr}, kind=track.kind)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    n_params, cost = track.plan_run(cfg, value, per_param)
    return PlannedRun(name, method, size, lr, seed, cfg, n_params, cost, label)


def plan_study(spec: Spec) -> StudyPlan:
    """Every run of the grid as a validated RunConfig; raises ConfigError before any run starts."""
    plan = StudyPlan(spec)
    for cell in grid(spec):
        plan.runs.append(planned_run(spec, cell.method, cell.size, cell.lr, cell.seed,
                                     (cell.budget, cell.value, cell.per_param)))
    if spec.budgets == "branched":
        plan.chains = make_chains(plan.runs, lambda r: run_name(r.method, r.size, r.lr, r.seed))
    return plan


def extend_plan(plan: StudyPlan, study_dir: str | Path, rounds: list[dict] | None = None) -> StudyPlan:
    """The plan with the runs the decision log added (the same plan where there is none)."""
    rounds = read_decisions(study_dir) if rounds is None else rounds
    sizes, runs = added(rounds, str(Path(study_dir) / DECISIONS))
    if not runs:
        return plan
    spec = spec_with_sizes(plan.spec, sizes)
    budgets = {label: (label, value, per_param) for label, value, per_param in grid_budgets(spec)}
    budgets.update({k: v for k, v in added_budgets(rounds, str(Path(study_dir) / DECISIONS)).items()
                    if k not in budgets})
    names = {r.name for r in plan.runs}
    out = StudyPlan(plan.spec, list(plan.runs), plan.chains)
    for entry in runs:
        if entry["method"] not in spec.methods or entry["size"] not in spec.sizes:
            raise ConfigError(f"{DECISIONS}: an added run names a method or size the study lacks: {shown(entry)}")
        if entry["budget"] not in budgets:
            raise ConfigError(f"{DECISIONS}: an added run names a budget the study lacks: {shown(entry)}")
        run = planned_run(spec, entry["method"], entry["size"], entry["lr"], entry["seed"], budgets[entry["budget"]])
        if run.name not in names:
            names.add(run.name)
            out.runs.append(run)
    return out
