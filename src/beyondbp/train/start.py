"""The one way a run starts: `start_run` for a RunConfig, `start_folder` for what an executor
hands a job (a run folder holding its run.yaml, or a chain's trunk folder holding chain.yaml).

`beyondbp train` and `beyondbp mlp` call `start_run`; the local executor's workers
(`beyondbp.train.worker`), a Slurm job (`beyondbp.study.slurm.TrainJob`) and `beyondbp chain`
call `start_folder`. Which loop trains a run is its model kind's (`trainer`). The loops load
torch; this module imports them only when a run starts, so the checks before it run without.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..config import RunConfig, check_run_length
from ..methods.run_builder import load_run_file
from ..runs.chain import CHAIN_FILE
from ..runs.dist_env import check_environment
from ..runs.folder import check_out_path, check_writable, hold_run_lock
from .memory import check_state_fits_host
from .tracking import check_tracker


def trainer(kind: str) -> Callable[..., dict]:
    """The loop that trains one run of a model kind: (cfg, out, quiet) -> its summary."""
    if kind == "mlp":
        from .mlp_loop import run_mlp
        return run_mlp
    from .loop import train
    return train


def check_run(cfg: RunConfig, out: Path) -> None:
    """What is refused before a run's folder is created or locked, each in one line: a model far
    too big for this host (before torch loads), an unknown tracker, a bad torchrun environment, a
    run shorter than a batch or all warm-up, a method without compute_per_token, a folder that
    cannot be written."""
    check_state_fits_host(cfg)
    check_tracker(cfg.train.tracker)
    check_environment()
    check_run_length(cfg)
    from ..methods.registry import check_complete  # loads torch: after the checks that need none
    check_complete(cfg.method.name)
    check_writable(out)


def start_run(cfg: RunConfig, out: str | Path, quiet: bool = False) -> dict:
    """Train one run into `out` after `check_run`, holding its worker.lock (a second process
    training the same folder is refused); resumes a folder that holds a checkpoint."""
    out = check_out_path(out)
    if cfg.model.kind == "gpt":
        check_run(cfg, out)
    lock = hold_run_lock(out) if cfg.model.kind == "gpt" else None
    try:
        return trainer(cfg.model.kind)(cfg, out, quiet)
    finally:
        if lock is not None:
            os.close(lock)


def start_folder(folder: str | Path, quiet: bool = False) -> dict[str, dict]:
    """Train what an executor wrote into `folder` (its caller holds the folders' locks):
    {run folder: summary}, one entry for a run, one per branch for a chain."""
    folder = Path(folder)
    if (folder / CHAIN_FILE).exists():
        from .chain import train_chain
        return train_chain(folder, quiet)
    cfg = load_run_file(folder / "run.yaml")
    return {str(folder): trainer(cfg.model.kind)(cfg, folder, quiet)}
