"""What `study report` knows of a study folder's runs, read from what the study and its runs
recorded: the study is not planned again and no method is resolved.

The runs are the grid of the folder's spec.yaml (`beyondbp.study.grid`) and the runs its planner
added (DIR/decisions.jsonl, `beyondbp.study.additions`), which name each run and give its labels;
its N (non-embedding parameters) and planned tokens come from DIR/plan.json,
which the executors write, or, in a folder written before it, from the run's own records: the
summary of a completed run, else the config it recorded (config.yaml, or the run.yaml its executor
wrote). A run that recorded neither has no N or tokens to show.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, ModelConfig, RunConfig, apply_mapping, from_dict, load_yaml
from ..config_mlp import run_length
from ..model.shape import mlp_n_params
from ..reads import read_text
from ..runs.folder import RunState
from ..study.additions import DECISIONS, added, read_decisions, spec_with_sizes
from ..study.grid import PLAN_RECORD, Cell, budgets, grid, run_name
from ..study.spec_types import Spec
from ..study.tracks import get_track, model_counts


@dataclass(frozen=True)
class RecordedRun:
    """A run of the study by its labels, with its N and planned tokens where recorded."""
    name: str
    method: str  # the method's label in the study: a method name or a variant label
    size: str
    lr: float
    seed: int
    n_params: int | None
    tokens: int | None
    budget: str = ""
    model: ModelConfig | None = None  # the model keys the spec gives it (a named size left unresolved)
    cost: float | None = None  # exact BP training FLOPs as planned (plan.json)


def read_spec(study_dir: str | Path) -> Spec:
    """The spec a study folder holds (spec.yaml, in the canonical form the executors wrote)."""
    path = Path(study_dir) / "spec.yaml"
    if not path.exists():
        raise ConfigError(f"DIR: {study_dir} is not a study folder (no spec.yaml)")
    return Spec.from_dict(load_yaml(path, "the study's spec"), str(path))


def _model(spec: Spec, method: str, size: str) -> ModelConfig:
    """A run's model keys as its layers give them: base, size (the MLP track's: its mlp section),
    variant, per_method; an old spec.yaml's MLP keys in `model` read as the mlp section's."""
    variant = spec.variants.get(method) or {}
    own = spec.per_method.get(method) or {}
    cfg, section = RunConfig(), get_track(spec.track).size_section
    for part, keys in (("model", spec.base.get("model")), (section, spec.sizes[size]),
                       ("model", variant.get("model")), ("model", own.get("model"))):
        apply_mapping(cfg, {part: keys or {}})
    return cfg.model


def study_cells(spec: Spec, study_dir: Path) -> tuple[Spec, list[Cell]]:
    """(the spec with the planner's sizes, every run's cell): the grid, then the runs the decision
    log added, as `study.plan.extend_plan` orders them."""
    sizes, runs = added(read_decisions(study_dir), str(study_dir / DECISIONS))
    cells = grid(spec)  # the spec's own grid; the planner's sizes only for the runs it added
    spec = spec_with_sizes(spec, sizes) if sizes else spec
    names, by_label = {c.name for c in cells}, {b[0]: b for b in budgets(spec)}
    for entry in runs:
        label, value, per_param = by_label.get(entry["budget"], (entry["budget"], None, False))
        name = run_name(entry["method"], entry["size"], entry["lr"], entry["seed"], label)
        if name not in names and entry["method"] in spec.methods and entry["size"] in spec.sizes:
            names.add(name)
            cells.append(Cell(name, entry["method"], entry["size"], label, value, per_param, entry["lr"], entry["seed"]))
    return spec, cells


def _count(value) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def _plan_record(study_dir: Path) -> dict[str, dict]:
    """{run name: its entry} of DIR/plan.json; {} where the folder has none (written before it)."""
    path = study_dir / PLAN_RECORD
    try:
        runs = json.loads(read_text(path, "the study's plan record", "json"))["runs"]
        entries = {entry["name"]: entry for entry in runs}
        if all(isinstance(n, str) and _count(e["n_params"]) and _count(e["tokens"]) for n, e in entries.items()):
            return entries
        raise ValueError("a run's n_params or tokens is not a count")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:  # ConfigError (a link, a FIFO) is a ValueError
        raise ConfigError(f"{path}: not the plan record beyondbp writes ({exc})") from None


def _from_config(run_dir: Path, kind: str) -> tuple[int | None, int | None]:
    """(N, planned tokens) from the config a run recorded; (None, None) where it recorded none."""
    for name in ("config.yaml", "run.yaml"):
        if (run_dir / name).exists():
            cfg = from_dict(load_yaml(run_dir / name, "the run's config"))
            if kind == "mlp":
                counted = mlp_n_params(cfg.mlp) if cfg.mlp.n_inputs and cfg.mlp.n_classes else None
            else:
                counted = model_counts(cfg)[0]
            return counted, run_length(cfg)
    return None, None


def _from_run(run_dir: Path, summary: dict | None, kind: str) -> tuple[int | None, int | None]:
    summary = summary or {}
    n_params = summary.get("n_params_nonembedding" if kind == "gpt" else "n_params")
    if summary.get("status") == RunState.COMPLETED and n_params is not None and summary.get("tokens") is not None:
        return n_params, summary["tokens"]
    return _from_config(run_dir, kind)


def recorded_runs(study_dir: str | Path, spec: dict, cells: list[Cell],
                  summaries: dict[str, dict | None]) -> list[RecordedRun]:
    """Every run of the study folder (`study_cells`), in the plan's order; `summaries`: {run name:
    its summary.json, or None}, as the caller read them."""
    study_dir = Path(study_dir)
    planned = _plan_record(study_dir)
    kind = get_track(spec.track).kind
    runs, models = [], {}
    for cell in cells:
        if (cell.method, cell.size) not in models:
            models[cell.method, cell.size] = _model(spec, cell.method, cell.size)
        entry = planned.get(cell.name)
        cost = entry.get("cost") if entry is not None else None
        if entry is not None:
            n_params, tokens = entry["n_params"], entry["tokens"]
        else:
            n_params, tokens = _from_run(study_dir / "runs" / cell.name, summaries.get(cell.name), kind)
        runs.append(RecordedRun(cell.name, cell.method, cell.size, cell.lr, cell.seed, n_params, tokens, cell.budget,
                                models[cell.method, cell.size], cost if isinstance(cost, (int, float)) else None))
    return runs
