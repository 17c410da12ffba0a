"""A run's step schedule, torch-free: steps, batch split, evaluation steps and learning rates.

Planning a study (`beyondbp.study.tracks`) uses it to check every run before any starts, the loop
(`loop.train`) to drive one. (`StepSchedule` is one run's steps; a study's grid of runs is
`beyondbp.study.plan.StudyPlan`.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import ConfigError, RunConfig


@dataclass
class StepSchedule:
    """A run's steps: how many, the sequences of a global batch, the micro-batches per step, and
    the steps evaluated (0, geometrically spaced ones, the last)."""
    n_steps: int
    n_seqs: int
    accum: int
    eval_steps: list[int]


def step_schedule(cfg: RunConfig, world_size: int = 1) -> StepSchedule:
    """The schedule of cfg's run over `world_size` processes; ConfigError when the batch does not split."""
    t, context = cfg.train, cfg.model.context
    if t.tokens <= 0:
        raise ConfigError(f"train.tokens: must be positive, got {t.tokens}")
    if t.batch_tokens <= 0 or t.batch_tokens % context:
        raise ConfigError(f"train.batch_tokens: {t.batch_tokens} must be a positive multiple of model.context={context}")
    n_seqs = t.batch_tokens // context
    micro = t.micro_batch_tokens or t.batch_tokens
    if micro % context or t.batch_tokens % micro:
        raise ConfigError(f"train.micro_batch_tokens: {micro} must be a multiple of model.context and divide train.batch_tokens")
    accum = t.batch_tokens // micro
    if n_seqs % (accum * world_size):
        raise ConfigError(f"train.batch_tokens: {n_seqs} sequences per batch do not split over "
                          f"{world_size} processes x {accum} micro-batches; change train.batch_tokens or the process count")
    n_steps = max(1, t.tokens // t.batch_tokens)
    if t.n_evals < 1:
        raise ConfigError(f"train.n_evals: must be >= 1, got {t.n_evals}")
    log_steps = np.unique(np.round(np.geomspace(1, n_steps, t.n_evals)).astype(int))
    return StepSchedule(n_steps, n_seqs, accum, sorted({0, *log_steps.tolist(), n_steps}))


def warmup_steps(cfg: RunConfig, n_steps: int) -> int:
    """Warm-up steps: train.warmup_tokens in whole batches when set (the same for every length, so
    that runs of several budgets share their first steps), else train.warmup_frac of the run."""
    t = cfg.train
    if t.warmup_tokens:
        return max(1, t.warmup_tokens // t.batch_tokens)
    return max(1, int(t.warmup_frac * n_steps))


def cooldown_start(cfg: RunConfig, n_steps: int) -> int:
    """The first step of a constant_cooldown run's linear decay (train.cooldown_frac of its steps)."""
    return int(n_steps * (1 - cfg.train.cooldown_frac))


def learning_rate(cfg: RunConfig, step: int, n_steps: int) -> float:
    """The learning rate at `step` of `n_steps`: linear warm-up, then cosine decay or constant with a
    linear cool-down, down to lr x min_lr_ratio."""
    t = cfg.train
    warmup = warmup_steps(cfg, n_steps)
    if step < warmup:
        return t.lr * (step + 1) / warmup
    min_lr = t.lr * t.min_lr_ratio
    if t.schedule == "cosine":
        progress = (step - warmup) / max(1, n_steps - 1 - warmup)
        return min_lr + 0.5 * (t.lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))
    if t.schedule == "constant_cooldown":
        start = cooldown_start(cfg, n_steps)
        if step < start:
            return t.lr
        return t.lr - (t.lr - min_lr) * (step - start) / max(1, n_steps - 1 - start)
    raise ConfigError(f"train.schedule: unknown schedule {t.schedule!r} (valid: cosine, constant_cooldown)")
