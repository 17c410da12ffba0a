"""The states of a run (`RunState`); `beyondbp.runs.folder` reads them off a run folder."""
from __future__ import annotations

import enum


class RunState(enum.StrEnum):
    """What a run folder (and, for QUEUED, a scheduler) says of a run. A str: a RunState equals and
    prints as the word summary.json records, so files written before the enum read the same."""
    COMPLETED = "completed"
    DIVERGED = "diverged"
    FAILED = "failed"
    RUNNING = "running"
    QUEUED = "queued"  # submitted to a scheduler, not started (`study.slurm.run_status`)
    INTERRUPTED = "interrupted"
    PENDING = "pending"
