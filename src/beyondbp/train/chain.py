"""Train a chain of branched budgets: its trunk, then each branch in budget order (`branches`).

Loads the training loop; the chain's files, branch points and seeding are `branches`', which
spec validation and planning may read without it.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..methods.run_builder import load_run_file
from ..runs.chain import read_chain_file, seed_branch
from .loop import train
from ..runs.folder import FINISHED, RunState, has_progress, read_summary, record_failure, snapshot_path


def _diverged_before(trunk_dir: Path, branch_dir: Path, step: int, cfg) -> bool:
    """A trunk that diverged before a branch point leaves that branch diverged too (as its standalone
    run would have); its summary says so."""
    trunk = read_summary(trunk_dir) or {}
    if trunk.get("status") != RunState.DIVERGED or snapshot_path(trunk_dir, step).exists():
        return False
    record_failure(branch_dir, cfg.method.name, cfg.seed, status=RunState.DIVERGED,
                   error=f"its trunk ({trunk_dir}) diverged at step {trunk.get('steps')}, before this branch's step {step}")
    return True


def train_chain(trunk_dir: str | Path, quiet: bool = False) -> dict[str, dict]:
    """Train a chain: its trunk (from trunk_dir/run.yaml), then each branch in order. {folder: summary}."""
    trunk_dir = Path(trunk_dir)
    branches = read_chain_file(trunk_dir)
    summaries = {}
    unfinished = [(d, s) for d, s in branches if (read_summary(d) or {}).get("status") not in FINISHED]
    if not all(snapshot_path(trunk_dir, s).exists() or has_progress(d) for d, s in unfinished):
        # resumes a killed trunk; a finished one is not trained again (a lost branch point is then
        # named by seed_branch)
        train(load_run_file(trunk_dir / "run.yaml"), trunk_dir, quiet,
              snapshot_steps=frozenset(s for _, s in branches))
    for branch_dir, step in branches:
        cfg = load_run_file(branch_dir / "run.yaml")
        if not _diverged_before(trunk_dir, branch_dir, step, cfg) and seed_branch(trunk_dir, branch_dir, step) \
                and not quiet:
            print(f"{branch_dir}: branched from step {step} of {trunk_dir}", file=sys.stderr)
        summaries[str(branch_dir)] = train(cfg, branch_dir, quiet)
    return summaries
