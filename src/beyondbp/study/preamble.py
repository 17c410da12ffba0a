"""What every executor does before its first run starts, written once (the local executor and
Slurm's submitter call it): the study folder checked against the spec, its folders and files
refused where they are links or special files, trackers and method records checked, runs whose
corpus changed found, each data set prepared once, spec.yaml written, and DIR/plan.json: the
plan's runs as planned (name, labels, N, tokens), which `study report` reads instead of planning
the study again.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..config import RunConfig
from ..data.images import image_data_shape
from ..data.tokens import load_token_data
from ..train.tracking import check_trackers
from .folder import (check_method_records, check_study_dir, prepare_study_dir, refuse_linked_folders, runs_to_retrain,
                     write_plan_record)
from .plan import StudyPlan

DATA_CHECKS = {"gpt": lambda cfg: load_token_data(cfg.data),  # by model.kind: prepare or load, failing in one line
               "mlp": lambda cfg: image_data_shape(cfg.mlp.dataset, cfg.data)}


def open_study(plan: StudyPlan, out: str | Path, retrain: bool = True) -> tuple[Path, set[str]]:
    """(the study folder, the names of runs to train again because their corpus changed; none
    without `retrain`), after every check that reads the folder; writes nothing."""
    study_dir = check_study_dir(out, plan.spec)
    refuse_linked_folders(plan, study_dir)
    check_trackers(r.cfg for r in plan.runs)
    check_method_records(plan, study_dir)
    return study_dir, ({r.name for r in runs_to_retrain(plan, study_dir)} if retrain else set())


def prepare_data(configs: list[RunConfig]) -> None:
    """Prepare (tokenize, cache) or load each distinct data set once, before any run starts: a bad
    corpus fails here with one line, and K workers do not tokenize one corpus K times."""
    seen = set()
    for cfg in configs:
        key = json.dumps([dataclasses.asdict(cfg.data), cfg.mlp.dataset], sort_keys=True)
        if key not in seen:
            seen.add(key)
            DATA_CHECKS[cfg.model.kind](cfg)


def ready_study(plan: StudyPlan, study_dir: Path, data_of: list[RunConfig] | None) -> Path:
    """Prepare the data of `data_of` (None: leave it to the jobs), then write spec.yaml and
    plan.json: the last step before the first run starts."""
    if data_of is not None:
        prepare_data(data_of)
    study_dir = prepare_study_dir(study_dir, plan.spec)
    write_plan_record(plan, study_dir)
    return study_dir
