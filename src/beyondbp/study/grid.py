"""A study's grid: every run's name and labels from a normalised spec, without building a config.

The grid is methods (or variant labels) x sizes x budgets x learning rates x seeds (with
`seed_sizes`, more seeds at some sizes: `run_seeds`). Each run has its own folder name,
`<method>_<size>[_<budget>]_lr<lr>_s<seed>` (the budget appears only when the spec lists
several). `plan.plan_study` builds each cell's RunConfig; the report reads the cells of a study
folder's spec.yaml and what each run recorded, and so never resolves a method. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass

from .spec_types import Spec

PLAN_RECORD = "plan.json"  # DIR/plan.json: each run's labels, N and tokens as planned (`preamble`)


@dataclass(frozen=True)
class Cell:
    """One run of the grid, by its labels."""
    name: str
    method: str  # the method's label in the study: a method name or a variant label
    size: str
    budget: str  # the budget's label when the spec lists several, else ""
    value: float | None  # the budget: tokens, tokens per parameter, or None (the MLP track: epochs)
    per_param: bool
    lr: float
    seed: int


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


def budgets(spec: Spec) -> list[tuple[str, float | None, bool]]:
    """(label, value, per_param) of each budget; labels only when there are several."""
    if spec.tokens_per_param:
        values, per_param = spec.tokens_per_param, True
    elif spec.tokens:
        values, per_param = spec.tokens, False
    else:
        return [("", None, False)]  # the MLP track: the budget is base.mlp.epochs
    values = values if isinstance(values, list) else [values]
    return [(budget_label(v, per_param) if len(values) > 1 else "", v, per_param) for v in values]


def run_seeds(spec: Spec, size: str, lrs: list[float], lr: float) -> list[int]:
    """The seeds of one (size, learning rate): the spec's seeds, then `seed_sizes`' extra seeds where
    they apply (its sizes; every rate, or with rates: middle only the middle of the sorted sweep)."""
    extra = spec.seed_sizes
    if not extra or size not in extra["sizes"]:
        return list(spec.seeds)
    if extra["rates"] == "middle" and lr != sorted(lrs)[(len(lrs) - 1) // 2]:
        return list(spec.seeds)
    return [*spec.seeds, *extra["seeds"]]


def grid(spec: Spec) -> list[Cell]:
    """Every run of a normalised spec, in the plan's order."""
    cells = []
    for method in spec.methods:
        for size in spec.sizes:
            for budget, value, per_param in budgets(spec):
                lrs = spec.lrs[method]
                lrs = lrs[size] if isinstance(lrs, dict) else lrs
                for lr in lrs:
                    for seed in run_seeds(spec, size, lrs, lr):
                        cells.append(Cell(run_name(method, size, lr, seed, budget), method, size, budget, value,
                                          per_param, lr, seed))
    return cells
