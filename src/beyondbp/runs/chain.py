"""Branched budgets (warmup-stable-decay): one trunk at constant learning rate, one cooldown per budget.

A chain is one trunk run folder and the run folders of its branches, in budget order. The trunk
trains with train.schedule=constant_cooldown and train.cooldown_frac=0 (warm-up, then a constant
learning rate) up to the last branch point and keeps its state at every branch point as
`branch-STEP.pt` (`checkpoint.save_snapshot`: atomic, read with weights_only). A branch is an
ordinary constant_cooldown run of its budget: its folder starts as a copy of the trunk's state at
its cooldown start, and `loop.train` resumes it from there like any interrupted run. With a warm-up
that does not depend on the budget (train.warmup_tokens), the trunk's steps up to a branch point
are the branch's own steps, so a branch ends bit-identical to a standalone run of its budget.

`chain.train_chain` trains a chain; this module (its files, branch points and seeding) does not load
the training loop, so planning reads it. CHAIN_FILE (chain.yaml in the trunk's folder) names the branches' folders and branch points; every
folder holds the run.yaml its executor wrote. A killed chain resumes: the trunk from its checkpoint
(branch points already kept are not trained again), each branch from its own checkpoint.
"""
from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import yaml

from ..atomic_write import atomic_write, refuse_links, stream_atomically
from ..config import ConfigError, RunConfig, load_yaml
from ..reads import is_regular_file, open_regular
from .folder import CHECKPOINT, DATA_RECORD, has_progress, snapshot_path
from .schedule import cooldown_start, step_schedule

CHAIN_FILE = "chain.yaml"


def branch_point(cfg: RunConfig) -> int:
    """The step where a constant_cooldown run of cfg's budget leaves the trunk: its cooldown start."""
    return cooldown_start(cfg, step_schedule(cfg).n_steps)


def trunk_config(branch_cfg: RunConfig, last_step: int) -> RunConfig:
    """The trunk of a chain whose last branch point is `last_step`: a branch's config with a
    constant learning rate after the warm-up (no cooldown), trained for last_step steps."""
    cfg = copy.deepcopy(branch_cfg)
    cfg.train.tokens = last_step * cfg.train.batch_tokens
    cfg.train.schedule, cfg.train.cooldown_frac = "constant_cooldown", 0.0
    return cfg


def write_chain_file(trunk_dir: Path, branches: list[tuple[Path, int]]) -> None:
    """Record a chain in its trunk's folder: [(branch folder, branch point step)] in budget order."""
    trunk_dir.mkdir(parents=True, exist_ok=True)
    entries = [{"dir": str(d), "step": int(step)} for d, step in branches]
    atomic_write(trunk_dir / CHAIN_FILE, yaml.safe_dump({"branches": entries}, sort_keys=False))


def read_chain_file(trunk_dir: Path) -> list[tuple[Path, int]]:
    raw = load_yaml(Path(trunk_dir) / CHAIN_FILE, "the chain's branches")
    try:
        branches = [(Path(e["dir"]), int(e["step"])) for e in raw["branches"]]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{Path(trunk_dir) / CHAIN_FILE}: not a chain file (branches: [{{dir, step}}])") from None
    for branch_dir, _ in branches:
        _check_branch_dir(Path(trunk_dir), branch_dir)
    return branches


def _check_branch_dir(trunk_dir: Path, branch_dir: Path) -> None:
    """A branch lies inside the trunk's own study (DIR of DIR/trunks/NAME; its runs are DIR/runs/RUN)
    and is not a link: a received chain.yaml must not send a branch's reads and writes out of it."""
    study, where = trunk_dir.parent.parent.resolve(), branch_dir.resolve()
    if where == study or not where.is_relative_to(study):
        raise ConfigError(f"{trunk_dir / CHAIN_FILE}: branch folder {str(branch_dir)!r} is not inside the trunk's "
                          f"study ({trunk_dir.parent.parent}); not trained")
    refuse_links(branch_dir, inside=trunk_dir.parent.parent)


def seed_branch(trunk_dir: Path, branch_dir: Path, step: int) -> bool:
    """Start a branch folder from the trunk's state at `step`; False when it already holds progress
    (a branch resumes from its own checkpoint, never from the trunk's again)."""
    if has_progress(branch_dir):
        return False
    snapshot = snapshot_path(trunk_dir, step)
    if not is_regular_file(snapshot, "the trunk's state"):  # a link, FIFO or device there: one line
        raise ConfigError(f"{snapshot}: the trunk's state at step {step} is missing; move {trunk_dir} aside "
                          f"to train the trunk again")
    branch_dir.mkdir(parents=True, exist_ok=True)
    if is_regular_file(trunk_dir / DATA_RECORD, "the trunk's data record"):  # the tokens the state was
        _copy_whole(trunk_dir / DATA_RECORD, branch_dir / DATA_RECORD)  # trained on, for the data-change check
    _copy_whole(snapshot, branch_dir / CHECKPOINT)  # last: a branch with a checkpoint is a seeded branch
    return True


def _copy_whole(source: Path, target: Path) -> None:
    """Copy atomically and durably: the target exists whole or not at all. Every rank of a
    multi-process run copies (its own temporary name, the same bytes), so none waits for another;
    the .seed suffix keeps rank 0's clean-up of .tmp leftovers off the other ranks' copies."""
    with os.fdopen(open_regular(source, "the trunk's state", None), "rb") as src:  # no link, FIFO, device
        stream_atomically(target, lambda f: shutil.copyfileobj(src, f), suffix=".seed")
