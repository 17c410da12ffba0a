"""The runs a study's planner added to its grid (`study run --until-decided`), read back from its
decision log, DIR/decisions.jsonl: one JSON object per round (`beyondbp.study.adaptive` writes it).

A round that chose runs lists them under `runs` ({method, size, lr, seed, budget}), the model
keys of any size it added beyond the spec's under `new_sizes` ({name: model keys}) and any budget
it added beyond the spec's under `new_budgets` ({label: [value, per_param]}). `plan.extend_plan`
appends those runs to the grid the spec plans, so that the executors, `study status` and the
report see one study; the spec itself (DIR/spec.yaml) never changes. The log is replaced whole
on every write (`write_decisions`), so a kill leaves the previous rounds or the new one, never a
cut line. Torch-free.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..atomic_write import atomic_write
from ..config import ConfigError
from ..reads import read_text, shown
from .grid import budget_label
from .names import check_label
from .spec_types import Spec

DECISIONS = "decisions.jsonl"
RUN_KEYS = ("method", "size", "lr", "seed", "budget")


def read_decisions(study_dir: str | Path) -> list[dict]:
    """The rounds of DIR/decisions.jsonl ([] without one); a line that is not a JSON object is one
    ConfigError naming the file and line."""
    path = Path(study_dir) / DECISIONS
    if not path.exists():
        return []
    rounds = []
    for number, line in enumerate(read_text(path, "the study's decision log", "metrics").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: line {number} is not a JSON object: {shown(line)}")
        rounds.append(entry)
    return rounds


def write_decisions(study_dir: str | Path, rounds: list[dict]) -> None:
    """Replace DIR/decisions.jsonl with `rounds`, one line each, atomically."""
    atomic_write(Path(study_dir) / DECISIONS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rounds))


def _check_run(entry, path: str) -> dict:
    if not isinstance(entry, dict) or any(k not in entry for k in RUN_KEYS):
        raise ConfigError(f"{path}: an added run must be a mapping with {', '.join(RUN_KEYS)}, got {shown(entry)}")
    try:
        run = {"method": str(entry["method"]), "size": str(entry["size"]), "lr": float(entry["lr"]),
               "seed": int(entry["seed"]), "budget": str(entry["budget"])}
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: an added run has a bad value: {shown(entry)}") from None
    for key in ("method", "size", "budget"):  # they name the run's folder: a received log is data
        if run[key] or key != "budget":
            check_label(f"{path}: an added run's {key}", run[key], method=key == "method")
    return run


def added(rounds: list[dict], where: str = DECISIONS) -> tuple[dict[str, dict], list[dict]]:
    """(new sizes {name: model keys}, added runs) over every round, in the order they were chosen."""
    sizes: dict[str, dict] = {}
    runs: list[dict] = []
    for entry in rounds:
        new = entry.get("new_sizes") or {}
        if not isinstance(new, dict) or not all(isinstance(v, dict) for v in new.values()):
            raise ConfigError(f"{where}: new_sizes must map size names to model keys, got {shown(new)}")
        sizes.update({check_label(f"{where}: new_sizes", k): dict(v) for k, v in new.items()})
        runs += [_check_run(r, where) for r in entry.get("runs") or []]
    return sizes, runs


def added_budgets(rounds: list[dict], where: str = DECISIONS) -> dict[str, tuple[str, float, bool]]:
    """{label: (label, value, per_param)} of the budgets the rounds added beyond the spec's."""
    out: dict[str, tuple[str, float, bool]] = {}
    for entry in rounds:
        new = entry.get("new_budgets") or {}
        if not isinstance(new, dict):
            raise ConfigError(f"{where}: new_budgets must map budget labels to [value, per_param], got {shown(new)}")
        for label, pair in new.items():
            try:
                value, per_param = pair
                value = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: new_budgets: {shown(label)} needs [value, per_param], "
                                  f"got {shown(pair)}") from None
            if not (value > 0 and math.isfinite(value)) or not isinstance(per_param, bool):
                raise ConfigError(f"{where}: new_budgets: {shown(label)} needs a positive value and a boolean, "
                                  f"got {shown(pair)}")
            if str(label) != budget_label(value, per_param):  # the label names run folders
                raise ConfigError(f"{where}: new_budgets: {shown(label)} is not the label of {shown(pair)} "
                                  f"(expected {budget_label(value, per_param)!r})")
            out[str(label)] = (str(label), value, per_param)
    return out


def spec_with_sizes(spec: Spec, sizes: dict[str, dict]) -> Spec:
    """A copy of the spec whose `sizes` also hold the planner's sizes (to build their runs' configs)."""
    out = copy.deepcopy(spec)
    return replace(out, sizes={**out.sizes, **{k: v for k, v in sizes.items() if k not in out.sizes}})


@dataclass
class Observation:
    """What the planner reads from a study folder (`beyondbp.report.decisions.observe` builds it)."""
    rows: list[dict]  # frontier points, paper's count: {method, compute, loss, run, size}
    trials: list[dict]  # finished runs: {method, size, budget, lr, seed, loss, select_loss}
    noise: dict[str, tuple[float, int]]  # pooled seed noise per method
    runs: list[dict]  # every planned run: {name, method, size, budget, lr, seed, flops, n_params, tokens,
    #                   pf_days, seconds, state}

    def spent(self, unit: str) -> float:
        return float(sum(r[unit] or 0.0 for r in self.runs))

    def per_flop(self, method: str, unit: str) -> float:
        """The method's measured `unit` (pf_days or seconds) per planned FLOP (median over its runs)."""
        ratios = [r[unit] / r["flops"] for r in self.runs if r[unit] and r["flops"] and r["method"] == method]
        ratios = ratios or [r[unit] / r["flops"] for r in self.runs if r[unit] and r["flops"]]
        return float(np.median(ratios)) if ratios else 0.0
