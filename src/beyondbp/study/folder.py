"""A study folder: DIR/spec.yaml (the study's grid), DIR/runs/NAME/ (one run folder each) and
DIR/report/. Which study a folder holds, its runs' states, and which runs must train again.

`prepare_study_dir` writes spec.yaml (or checks that DIR holds this very spec) once every check
has passed; `load_study` plans the grid a folder holds (for `study status`; the report reads the
runs' records instead, `beyondbp.report.recorded`);
`runs_to_retrain` finds runs whose corpus changed under them. Torch-free. A run folder's own
files and states are `beyondbp.runs.folder`'s.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import yaml

from ..atomic_write import atomic_write, refuse_links, refuse_special
from ..reads import shown
from ..config import ConfigError, load_yaml
from ..data.cache import cache_entry
from ..runs.folder import (CHECKPOINT, DATA_RECORD, EXECUTION_KEYS, LOCK, PREVIOUS, check_out_path,
                                data_change, run_state)
from .grid import PLAN_RECORD
from .plan import PlannedRun, StudyPlan, extend_plan, plan_study
from .spec import normalise_spec
from .spec_types import Spec


def _comparable(spec: dict | Spec) -> dict:
    mapping = spec.to_dict() if isinstance(spec, Spec) else spec
    spec = normalise_spec(copy.deepcopy(mapping)).to_dict()  # folders written by earlier versions hold older forms
    spec.pop("slurm", None)
    for key in EXECUTION_KEYS:
        spec["base"]["train"].pop(key, None)
    return spec


def _first_difference(old, new, path: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            diff = _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
            if diff:
                return diff
        return None
    return None if old == new else f"{path or 'spec'} ({old!r} there, {new!r} now)"


def check_study_dir(out: str | Path, spec: Spec) -> Path:
    """DIR as a Path, refused when it holds a study with another spec; writes nothing."""
    out = check_out_path(out)
    spec_path = out / "spec.yaml"
    if spec_path.exists():
        old = load_yaml(spec_path, "the study's spec")
        diff = _first_difference(_comparable(old), _comparable(spec))
        if diff:
            raise ConfigError(f"--out: {out} holds a study with a different spec: {diff}; use another --out")
    return out


def prepare_study_dir(out: str | Path, spec: Spec) -> Path:
    """Create DIR with spec.yaml, or check that DIR holds this very spec. Executors call it once
    every check has passed, so that a refused study leaves nothing that blocks the corrected one."""
    out = check_study_dir(out, spec)
    spec_path = out / "spec.yaml"
    if spec_path.exists():
        return out
    refuse_links(out / "runs", inside=out)
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out: cannot create {out} ({exc.strerror or exc})") from None
    atomic_write(spec_path, yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return out


RUN_FILES = (LOCK, "train.log", "run.yaml", "config.yaml", DATA_RECORD, "metrics.jsonl", "summary.json",
             CHECKPOINT, PREVIOUS)  # what an executor and its worker write in a run folder


def refuse_linked_folders(plan: StudyPlan, study_dir: Path) -> None:
    """Refuse, in one line naming it, a study whose runs/, trunks/, report/ or run folder (or a
    file an executor writes in one) is a link: a received study never sends a write out of it; and
    one whose run files are FIFOs, devices, sockets or folders, which no writer may open."""
    folders = [study_dir / "runs" / run.name for run in plan.runs]
    folders += [chain.trunk_dir(study_dir) for chain in plan.chains or []]
    for folder in folders:
        refuse_links(folder, inside=study_dir)
        for name in RUN_FILES:
            refuse_links(folder / name)
            refuse_special(folder / name)
    refuse_links(study_dir / "report", inside=study_dir)


def load_study(study_dir: str | Path) -> StudyPlan:
    path = Path(study_dir) / "spec.yaml"
    if not path.exists():
        raise ConfigError(f"DIR: {study_dir} is not a study folder (no spec.yaml)")
    # with the runs its planner added (`additions`: `study run --until-decided`)
    return extend_plan(plan_study(normalise_spec(load_yaml(path, "the study's spec"))), study_dir)


def runs_to_retrain(plan: StudyPlan, study_dir: str | Path) -> list[PlannedRun]:
    """Runs whose recorded tokens (DIR/runs/NAME/data.json) are not what their corpus gives now.

    A study whose corpus changed under it is refused in one line (its runs would mix corpora),
    unless its runs ask for train.on_data_change=restart: those are then returned, to be trained
    again (their earlier results are set aside in the run folder)."""
    entries: dict[str, str] = {}
    changed = []
    for run in plan.runs:
        run_dir = Path(study_dir) / "runs" / run.name
        if not (run_dir / DATA_RECORD).exists():
            continue
        key = json.dumps(dataclasses.asdict(run.cfg.data), sort_keys=True)
        if key not in entries:
            entries[key] = cache_entry(run.cfg.data).name
        reason = data_change(run_dir, run.cfg.data.corpus, entries[key])
        if reason:
            changed.append((run, reason))
    refused = [(run, reason) for run, reason in changed if run.cfg.train.on_data_change != "restart"]
    if refused:
        raise ConfigError(f"data.corpus: {len(refused)} run(s) of {study_dir} were trained on other tokens: "
                          f"{refused[0][1]}; going on would mix corpora in one study. Restore the corpus, use "
                          f"another --out, or add base.train.on_data_change=restart to train them again")
    return [run for run, _ in changed]


def check_method_records(plan: StudyPlan, study_dir: str | Path) -> None:
    """Refuse, in one line naming the run and both values, to resume a run whose config.yaml records
    another method class (origin) or another version of its package than the plan's."""
    for run in plan.runs:
        path = Path(study_dir) / "runs" / run.name / "config.yaml"
        if not path.exists():
            continue
        recorded = load_yaml(path, "the run's config").get("method") or {}
        if not isinstance(recorded, dict):
            raise ConfigError(f"{path}: 'method' must be a mapping, got {shown(recorded)}")
        for key in ("origin", "version"):
            then, now = recorded.get(key), getattr(run.cfg.method, key)
            if then is not None and then != now:
                raise ConfigError(f"{path.parent}: method.{key} is {then!r} there, {now!r} now; resuming would mix "
                                  f"two implementations of {run.cfg.method.name!r}. Use another --out, or "
                                  f"install the version the study was run with")


def study_counts(plan: StudyPlan, study_dir: str | Path) -> dict[str, int]:
    """{state: number of runs} of a study folder (`runs.folder.run_state`)."""
    counts: dict[str, int] = {}
    for run in plan.runs:
        state = run_state(Path(study_dir) / "runs" / run.name)
        counts[state] = counts.get(state, 0) + 1
    return counts


def write_plan_record(plan: StudyPlan, study_dir: Path) -> None:
    """DIR/plan.json: each run's name, labels, N and planned tokens, for the report."""
    runs = [{"name": r.name, "method": r.method, "size": r.size, "budget": r.budget, "lr": r.lr, "seed": r.seed,
             "n_params": r.n_params, "tokens": r.tokens, "cost": r.cost} for r in plan.runs]
    atomic_write(study_dir / PLAN_RECORD, json.dumps({"runs": runs}, indent=1) + "\n")
