"""The runs a study's planner added to its grid (`study run --until-decided`), read back from its
decision log, DIR/decisions.jsonl: one JSON object per round (`beyondbp.study.adaptive` writes it).

A round that chose runs lists them under `runs` ({method, size, lr, seed, budget}) and the model
keys of any size it added beyond the spec's under `new_sizes` ({name: model keys}). `extend_plan`
appends those runs to the grid the spec plans, so that the executors, `study status` and the
report see one study; the spec itself (DIR/spec.yaml) never changes. The log is replaced whole
on every write (`write_decisions`), so a kill leaves the previous rounds or the new one, never a
cut line. Torch-free.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from ..atomic_write import atomic_write
from ..config import ConfigError
from ..reads import read_text, shown
from .plan import StudyPlan, _budgets, planned_run

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
        return {"method": str(entry["method"]), "size": str(entry["size"]), "lr": float(entry["lr"]),
                "seed": int(entry["seed"]), "budget": str(entry["budget"])}
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: an added run has a bad value: {shown(entry)}") from None


def added(rounds: list[dict], where: str = DECISIONS) -> tuple[dict[str, dict], list[dict]]:
    """(new sizes {name: model keys}, added runs) over every round, in the order they were chosen."""
    sizes: dict[str, dict] = {}
    runs: list[dict] = []
    for entry in rounds:
        new = entry.get("new_sizes") or {}
        if not isinstance(new, dict) or not all(isinstance(v, dict) for v in new.values()):
            raise ConfigError(f"{where}: new_sizes must map size names to model keys, got {shown(new)}")
        sizes.update({str(k): dict(v) for k, v in new.items()})
        runs += [_check_run(r, where) for r in entry.get("runs") or []]
    return sizes, runs


def spec_with_sizes(spec: dict, sizes: dict[str, dict]) -> dict:
    """A copy of the spec whose `sizes` also hold the planner's sizes (to build their runs' configs)."""
    out = copy.deepcopy(spec)
    out["sizes"] = {**out["sizes"], **{k: v for k, v in sizes.items() if k not in out["sizes"]}}
    return out


def extend_plan(plan: StudyPlan, study_dir: str | Path, rounds: list[dict] | None = None) -> StudyPlan:
    """The plan with the runs the decision log added (the same plan where there is none)."""
    rounds = read_decisions(study_dir) if rounds is None else rounds
    sizes, runs = added(rounds, str(Path(study_dir) / DECISIONS))
    if not runs:
        return plan
    spec = spec_with_sizes(plan.spec, sizes)
    budgets = {label: (label, value, per_param) for label, value, per_param in _budgets(spec)}
    names = {r.name for r in plan.runs}
    out = StudyPlan(plan.spec, list(plan.runs), plan.chains)
    for entry in runs:
        if entry["method"] not in spec["methods"] or entry["size"] not in spec["sizes"]:
            raise ConfigError(f"{DECISIONS}: an added run names a method or size the study lacks: {shown(entry)}")
        if entry["budget"] not in budgets:
            raise ConfigError(f"{DECISIONS}: an added run names a budget the study lacks: {shown(entry)}")
        run = planned_run(spec, entry["method"], entry["size"], entry["lr"], entry["seed"], budgets[entry["budget"]])
        if run.name not in names:
            names.add(run.name)
            out.runs.append(run)
    return out
