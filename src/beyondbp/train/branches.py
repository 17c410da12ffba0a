"""Branched budgets (warmup-stable-decay): one trunk at constant learning rate, one cooldown per budget.

A chain is one trunk run folder and the run folders of its branches, in budget order. The trunk
trains with train.schedule=constant_cooldown and train.cooldown_frac=0 (warm-up, then a constant
learning rate) up to the last branch point and keeps its state at every branch point as
`branch-STEP.pt` (`checkpoint.save_snapshot`: atomic, read with weights_only). A branch is an
ordinary constant_cooldown run of its budget: its folder starts as a copy of the trunk's state at
its cooldown start, and `loop.train` resumes it from there like any interrupted run. With a warm-up
that does not depend on the budget (train.warmup_tokens), the trunk's steps up to a branch point
are the branch's own steps, so a branch ends bit-identical to a standalone run of its budget.

CHAIN_FILE (chain.yaml in the trunk's folder) names the branches' folders and branch points; every
folder holds the run.yaml its executor wrote. A killed chain resumes: the trunk from its checkpoint
(branch points already kept are not trained again), each branch from its own checkpoint.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from ..atomic_write import atomic_write
from ..config import ConfigError, RunConfig, build_config, load_yaml
from .checkpoint import snapshot_path
from .run_folder import CHECKPOINT, DATA_RECORD, FINISHED, has_progress, read_summary
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
        return [(Path(e["dir"]), int(e["step"])) for e in raw["branches"]]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{Path(trunk_dir) / CHAIN_FILE}: not a chain file (branches: [{{dir, step}}])") from None


def seed_branch(trunk_dir: Path, branch_dir: Path, step: int) -> bool:
    """Start a branch folder from the trunk's state at `step`; False when it already holds progress
    (a branch resumes from its own checkpoint, never from the trunk's again)."""
    if has_progress(branch_dir):
        return False
    snapshot = snapshot_path(trunk_dir, step)
    if not snapshot.exists():
        raise ConfigError(f"{snapshot}: the trunk's state at step {step} is missing; move {trunk_dir} aside "
                          f"to train the trunk again")
    branch_dir.mkdir(parents=True, exist_ok=True)
    if (trunk_dir / DATA_RECORD).exists():  # the tokens the state was trained on, for the data-change check
        _copy_whole(trunk_dir / DATA_RECORD, branch_dir / DATA_RECORD)
    _copy_whole(snapshot, branch_dir / CHECKPOINT)  # last: a branch with a checkpoint is a seeded branch
    return True


def _copy_whole(source: Path, target: Path) -> None:
    """Copy under a temporary name, then one rename: the target exists whole or not at all. Every rank
    of a multi-process run copies (its own temporary name, the same bytes), so none waits for another."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".seed")
    os.close(fd)
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _diverged_before(trunk_dir: Path, branch_dir: Path, step: int, cfg) -> bool:
    """A trunk that diverged before a branch point leaves that branch diverged too (as its standalone
    run would have); its summary says so."""
    trunk = read_summary(trunk_dir) or {}
    if trunk.get("status") != "diverged" or snapshot_path(trunk_dir, step).exists():
        return False
    atomic_write(branch_dir / "summary.json", json.dumps({
        "method": cfg.method.name, "seed": cfg.seed, "status": "diverged", "final_val_loss": None,
        "error": f"its trunk ({trunk_dir}) diverged at step {trunk.get('steps')}, before this branch's step {step}",
    }, indent=2) + "\n")
    return True


def train_chain(trunk_dir: str | Path, quiet: bool = False) -> dict[str, dict]:
    """Train a chain: its trunk (from trunk_dir/run.yaml), then each branch in order. {folder: summary}."""
    from .loop import train
    trunk_dir = Path(trunk_dir)
    branches = read_chain_file(trunk_dir)
    summaries = {}
    unfinished = [(d, s) for d, s in branches if (read_summary(d) or {}).get("status") not in FINISHED]
    if not all(snapshot_path(trunk_dir, s).exists() or has_progress(d) for d, s in unfinished):
        # resumes a killed trunk; a finished one is not trained again (a lost branch point is then
        # named by seed_branch)
        train(build_config(trunk_dir / "run.yaml"), trunk_dir, quiet,
              snapshot_steps=frozenset(s for _, s in branches))
    for branch_dir, step in branches:
        cfg = build_config(branch_dir / "run.yaml")
        if not _diverged_before(trunk_dir, branch_dir, step, cfg):
            seed_branch(trunk_dir, branch_dir, step)
        summaries[str(branch_dir)] = train(cfg, branch_dir, quiet)
        if not quiet:
            print(f"{branch_dir}: branch from step {step} of {trunk_dir.name}", file=sys.stderr)
    return summaries
