"""A study plan: every run of a normalised spec (`spec`) as a validated RunConfig.

The grid is methods (or variant labels) x sizes x budgets x learning rates x seeds (with
`seed_sizes`, more seeds at some sizes: `run_seeds`). Each run
has its own folder name, `<method>_<size>[_<budget>]_lr<lr>_s<seed>` (the budget appears only
when the spec lists several). How a run's size and budget become a model and a length is the
track's business (`tracks.Track.plan_run`): the Transformer track counts tokens (fixed, or per
non-embedding parameter), the MLP track epochs over its dataset. With `budgets: branched` the
runs of one method, size, learning rate and seed form a chain (`chains`: one trunk, a cooldown
branched at each budget), and each run's cost is what it adds to its chain.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..config import ConfigError, RunConfig, apply_mapping, validate_config
from .chain import make_chains
from ..methods.lookup import resolve_method
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
        return self.cfg.train.tokens


@dataclass
class StudyPlan:
    spec: dict
    runs: list[PlannedRun] = field(default_factory=list)
    chains: list = field(default_factory=list)  # `chains.Chain`s of a spec with budgets: branched


def budget_label(value: float, per_param: bool) -> str:
    """A short folder-name tag: 'tpp20' (tokens per parameter) or '1.2M' (tokens)."""
    if per_param:
        return f"tpp{value:g}"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:g}"


def run_name(method: str, size: str, lr: float, seed: int, budget: str = "") -> str:
    middle = f"{size}_{budget}" if budget else size
    return f"{method}_{middle}_lr{lr:g}_s{seed}"


def _budgets(spec: dict) -> list[tuple[str, float | None, bool]]:
    """(label, value, per_param) of each budget; labels only when there are several."""
    if spec.get("tokens_per_param"):
        values, per_param = spec["tokens_per_param"], True
    elif spec.get("tokens"):
        values, per_param = spec["tokens"], False
    else:
        return [("", None, False)]  # the MLP track: the budget is base.train.epochs
    values = values if isinstance(values, list) else [values]
    return [(budget_label(v, per_param) if len(values) > 1 else "", v, per_param) for v in values]


def run_seeds(spec: dict, size: str, lrs: list[float], lr: float) -> list[int]:
    """The seeds of one (size, learning rate): the spec's seeds, then `seed_sizes`' extra seeds where
    they apply (its sizes; every rate, or with rates: middle only the middle of the sorted sweep)."""
    extra = spec.get("seed_sizes")
    if not extra or size not in extra["sizes"]:
        return list(spec["seeds"])
    if extra["rates"] == "middle" and lr != sorted(lrs)[(len(lrs) - 1) // 2]:
        return list(spec["seeds"])
    return [*spec["seeds"], *extra["seeds"]]


def run_config(spec: dict, method: str, size: str) -> RunConfig:
    """A run's config before its learning rate, seed and budget: base, size, variant, per_method."""
    cfg = apply_mapping(get_track(spec.get("track")).base_config(), copy.deepcopy(spec["base"]), prefix="base.")
    apply_mapping(cfg, {"model": spec["sizes"][size]}, prefix="sizes.")
    variant = (spec.get("variants") or {}).get(method)
    if variant is not None:
        apply_mapping(cfg, copy.deepcopy(variant), prefix=f"variants.{method}.")
    else:
        cfg.method.name = method
    apply_mapping(cfg, copy.deepcopy(spec["per_method"].get(method, {})), prefix=f"per_method.{method}.")
    return cfg


def planned_run(spec: dict, method: str, size: str, lr: float, seed: int,
                budget: tuple[str, float | None, bool]) -> PlannedRun:
    """One run of the grid (or one the adaptive planner adds) as a validated RunConfig;
    budget: (label, value, per_param) as `_budgets` gives it."""
    label, value, per_param = budget
    cfg = run_config(spec, method, size)
    cfg.seed, cfg.train.lr = seed, lr
    try:  # every piece was checked; this is the composed run, before anything starts
        validate_config(cfg)
        cfg.method = resolve_method(cfg.method)
    except ConfigError as exc:
        raise ConfigError(f"{run_name(method, size, lr, seed, label)}: {exc}") from None
    n_params, cost = get_track(spec.get("track")).plan_run(cfg, value, per_param)
    return PlannedRun(run_name(method, size, lr, seed, label), method, size, lr, seed, cfg, n_params, cost, label)


def plan_study(spec: dict) -> StudyPlan:
    """Every run of the grid as a validated RunConfig; raises ConfigError before any run starts."""
    plan = StudyPlan(spec)
    for method in spec["methods"]:
        for size in spec["sizes"]:
            for budget, value, per_param in _budgets(spec):
                lrs = spec["lrs"][method]
                lrs = lrs[size] if isinstance(lrs, dict) else lrs
                for lr in lrs:
                    for seed in run_seeds(spec, size, lrs, lr):
                        plan.runs.append(planned_run(spec, method, size, lr, seed, (budget, value, per_param)))
    if spec.get("budgets") == "branched":
        plan.chains = make_chains(plan.runs, lambda r: run_name(r.method, r.size, r.lr, r.seed))
    return plan
