"""Branched budgets in a plan (`budgets: branched`): one chain per (method, size, learning rate, seed).

A chain trains one trunk at constant learning rate after a warm-up and branches a cooldown from it at
each budget's cooldown start (train.cooldown_frac of the budget; warmup-stable-decay, Hägele et al.
2024). Each branch stays an ordinary run of the plan (its folder, metrics, summary, one frontier
point): its config is the standalone train.schedule=constant_cooldown run of its budget, with a
warm-up that does not depend on the budget (train.warmup_tokens; by default train.warmup_frac of the
chain's smallest budget), so the branch is bit-identical to that standalone run. The trunk lives in
DIR/trunks/<chain name>/ (`beyondbp.train.chain` trains a chain). Torch-free; `plan.plan_study`
calls it (PlannedRun and StudyPlan are plan's).

Costs: a branch's `cost` is what it adds to the chain (its cooldown plus the trunk from the previous
branch point), so a plan's costs still add up to what it trains: budgets 20/40/80/160 tokens per
parameter with a 20% cooldown cost 128 + 4 + 8 + 16 + 32 = 188 units instead of 300.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from ..atomic_write import atomic_write
from ..config import ConfigError, RunConfig, to_dict
from ..runs.chain import branch_point, trunk_config, write_chain_file
from ..runs.schedule import step_schedule, warmup_steps

TRUNKS = "trunks"  # DIR/trunks/<chain name>/: the trunks' run folders


@dataclass
class Chain:
    name: str  # the trunk's folder name: the runs' name without a budget
    trunk: RunConfig
    runs: list[PlannedRun] = field(default_factory=list)  # its branches, shortest budget first
    steps: list[int] = field(default_factory=list)  # each branch's branch point
    cost: float = 0.0  # exact BP FLOPs of trunk and branches
    standalone_cost: float = 0.0  # the same budgets trained as independent runs
    tokens: int = 0  # tokens trained by trunk and branches
    standalone_tokens: int = 0

    def trunk_dir(self, study_dir: str | Path) -> Path:
        return Path(study_dir) / TRUNKS / self.name


def _warmup_tokens(runs: list[PlannedRun]) -> int:
    """The chain's warm-up: base.train.warmup_tokens if set, else warmup_frac of the smallest budget
    (whole batches, at least one), the warm-up a standalone run of that budget would have."""
    cfg = runs[0].cfg
    if cfg.train.warmup_tokens:
        return cfg.train.warmup_tokens
    smallest = min(r.tokens for r in runs)
    return max(1, int(cfg.train.warmup_frac * (smallest // cfg.train.batch_tokens))) * cfg.train.batch_tokens


def _make_chain(name: str, runs: list[PlannedRun]) -> Chain:
    runs = sorted(runs, key=lambda r: r.tokens)
    warmup = _warmup_tokens(runs)
    chain = Chain(name, runs[0].cfg, runs)
    previous = 0
    for run in runs:
        per_token = run.cost / run.tokens
        chain.standalone_cost += run.cost
        chain.standalone_tokens += run.tokens
        run.cfg.train.schedule, run.cfg.train.warmup_tokens = "constant_cooldown", warmup
        n_steps, step = step_schedule(run.cfg).n_steps, branch_point(run.cfg)
        if warmup_steps(run.cfg, n_steps) >= step:
            raise ConfigError(f"{run.name}: train.warmup_tokens: a warm-up of {warmup:,} tokens reaches past the "
                              f"cooldown start of this budget (step {step}); lower it or raise the budget")
        batch = run.cfg.train.batch_tokens
        run.cost = per_token * batch * (max(step, previous) - previous + n_steps - step)
        chain.steps.append(step)
        chain.tokens += batch * (max(step, previous) - previous + n_steps - step)
        previous = max(step, previous)
        chain.cost += run.cost
    chain.trunk = trunk_config(runs[-1].cfg, max(chain.steps))
    return chain


def make_chains(runs: list[PlannedRun], chain_name: Callable[[PlannedRun], str]) -> list[Chain]:
    """Group a plan's runs into chains (one per `chain_name`: method, size, learning rate, seed) and
    turn every run into its branch: constant_cooldown, the chain's warm-up, its marginal cost.
    ConfigError when a warm-up would not end before a budget's cooldown."""
    groups: dict[str, list[PlannedRun]] = {}
    for run in runs:
        groups.setdefault(chain_name(run), []).append(run)
    return [_make_chain(name, runs) for name, runs in groups.items()]


def plan_totals(plan, chains: list[Chain]) -> dict[str, float]:
    """FLOPs and tokens the plan trains, and what the same runs would take as independent runs."""
    if not chains:
        cost, tokens = sum(r.cost for r in plan.runs), sum(r.tokens for r in plan.runs)
        return {"cost": cost, "standalone_cost": cost, "tokens": tokens, "standalone_tokens": tokens}
    return {"cost": sum(c.cost for c in chains), "standalone_cost": sum(c.standalone_cost for c in chains),
            "tokens": sum(c.tokens for c in chains), "standalone_tokens": sum(c.standalone_tokens for c in chains)}



def group_jobs(plan, todo: list) -> list[tuple[Chain | None, list]]:
    """What each executor job finishes, as (its chain or None, its runs): one job per unfinished run,
    or per chain with an unfinished branch (a chain's finished branches left out); longest first, so
    the last jobs to finish are short ones."""
    names = {r.name for r in todo}
    if plan.chains:
        jobs = [(c, [r for r in c.runs if r.name in names]) for c in plan.chains if any(r.name in names for r in c.runs)]
    else:
        jobs = [(None, [r]) for r in todo]
    return sorted(jobs, key=lambda job: -sum(r.cost for r in job[1]))


def write_run_yaml(folder: Path, cfg: RunConfig, prepare: Callable[[RunConfig], RunConfig]) -> RunConfig:
    """FOLDER/run.yaml: a copy of cfg with `prepare` applied, as a job trains it; returns that copy."""
    cfg = prepare(copy.deepcopy(cfg))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "run.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return cfg


def write_chain(chain: Chain, study_dir: str | Path, prepare: Callable[[RunConfig], RunConfig]) -> Path:
    """Write a chain's folders as an executor hands them to a job: run.yaml in the trunk's folder and
    in each branch's (DIR/runs/NAME), with `prepare` applied (threads, progress), and chain.yaml.
    Returns the trunk's folder."""
    trunk_dir = chain.trunk_dir(study_dir)
    dirs = [Path(study_dir) / "runs" / run.name for run in chain.runs]
    for folder, cfg in [(trunk_dir, chain.trunk), *((d, r.cfg) for d, r in zip(dirs, chain.runs))]:
        write_run_yaml(folder, cfg, prepare)
    write_chain_file(trunk_dir, list(zip(dirs, chain.steps)))
    return trunk_dir
