"""The simulated executor (`study run --executor simulated --truth TRUTH.yaml`): every run's
metrics from known laws instead of training, so that a planner, a report or a benchmark can be
tested against a known answer.

TRUTH.yaml maps each method label of the study to its law:

  bp: {E: 1.2, A: 30, a: 0.35, B: 40, b: 0.3, lr_opt: 1.0e-2, lr_sensitivity: 0.1, seed_sd: 0.004}

A run of N non-embedding parameters trained on D tokens at learning rate lr ends at
L = (E + A / N^a + B / D^b) x (1 + c log10(lr / lr_opt)^2) x exp(seed_sd z), c = lr_sensitivity,
z a standard normal drawn from the run's name (its method, size, budget, rate and seed), so a run
gives the same loss every time it is simulated. Each evaluation at d tokens reads the same law at
d (a run's noise is one offset for all its evaluations). Optional per method:
`flops_per_param_token` (the paper's count, default 6: BP's 6ND) and `seconds_per_pflop` (the
`elapsed_s` it records, default 1, so the wall-clock accounting has numbers) and `noise_seed`
(default 0: another integer draws every run's noise anew, for replicates of one truth).

The runs are ordinary run folders (config.yaml, metrics.jsonl, summary.json with status
completed; `beyondbp.runs.folder`), so `study status` and `study report` read them as they
read trained runs. Torch-free.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic_write import atomic_write, make_folder
from ..reads import shown
from ..config import PF_DAY, ConfigError, dump_yaml, load_yaml
from ..runs.folder import FINISHED, compute_columns, run_state
from ..runs.schedule import step_schedule
from .folder import check_study_dir, prepare_study_dir, refuse_linked_folders, study_counts, write_plan_record
from .plan import PlannedRun, StudyPlan

LAW_KEYS = ("E", "A", "a", "B", "b", "lr_opt", "lr_sensitivity", "seed_sd")
OPTIONAL = {"flops_per_param_token": 6.0, "seconds_per_pflop": 1.0, "noise_seed": 0}


@dataclass(frozen=True)
class Truth:
    E: float
    A: float
    a: float
    B: float
    b: float
    lr_opt: float
    lr_sensitivity: float
    seed_sd: float
    flops_per_param_token: float = 6.0
    seconds_per_pflop: float = 1.0
    noise_seed: int = 0  # another draw of every run's noise (replicates of one truth)

    def loss(self, n_params: float, tokens, lr: float, z: float = 0.0) -> np.ndarray:
        """The law at N and D (tokens may be an array), times the rate's and the seed's factors."""
        base = self.E + self.A / n_params ** self.a + self.B / np.asarray(tokens, dtype=float) ** self.b
        detune = 1.0 + self.lr_sensitivity * math.log10(lr / self.lr_opt) ** 2
        return base * detune * math.exp(self.seed_sd * z)

    def compute_pf_days(self, n_params: float, tokens: float) -> float:
        """The paper's count of a run: flops_per_param_token x N x D, in PF-days."""
        return self.flops_per_param_token * n_params * tokens / PF_DAY


def _law(method: str, entry, where: str) -> Truth:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: {method}: expected a mapping of {', '.join(LAW_KEYS)}, got {shown(entry)}")
    unknown = [k for k in entry if k not in LAW_KEYS and k not in OPTIONAL]
    missing = [k for k in LAW_KEYS if k not in entry]
    if unknown or missing:
        bad = f"unknown key {unknown[0]!r}" if unknown else f"missing key {missing[0]!r}"
        raise ConfigError(f"{where}: {method}.{(unknown or missing)[0]}: {bad} (keys: {', '.join(LAW_KEYS)})")
    values = {}
    for key, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: {method}.{key}: expected a finite number, got {shown(value)}")
        floor = 0.0 if key in ("E", "lr_sensitivity", "seed_sd", "noise_seed") else None
        if (floor is None and value <= 0) or (floor is not None and value < floor):
            raise ConfigError(f"{where}: {method}.{key}: must be {'>= 0' if floor is not None else '> 0'}, "
                              f"got {value!r}")
        values[key] = int(value) if key == "noise_seed" else float(value)
    return Truth(**values)


def load_truth(path: str | Path, methods: list[str] | None = None) -> dict[str, Truth]:
    """{method: Truth} from TRUTH.yaml; every method of `methods` must have a law."""
    raw = load_yaml(path, "the simulated executor's truth")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"--truth: {path}: expected a mapping method -> law ({', '.join(LAW_KEYS)})")
    truth = {str(m): _law(str(m), entry, f"--truth: {path}") for m, entry in raw.items()}
    for method in methods or []:
        if method not in truth:
            raise ConfigError(f"--truth: {path}: no law for method {method!r} (it has {', '.join(truth)})")
    return truth


def run_noise(name: str, noise_seed: int = 0) -> float:
    """A standard normal drawn from a run's name: the same run always gets the same noise."""
    key = name if not noise_seed else f"{name}#{noise_seed}"
    seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    return float(np.random.default_rng(seed).standard_normal())


def _rows(run: PlannedRun, law: Truth, z: float) -> list[dict]:
    """metrics.jsonl rows at the run's evaluation steps, in the columns the training loop writes."""
    cfg, schedule = run.cfg, step_schedule(run.cfg)
    per_token = {key: law.flops_per_param_token * run.n_params for key in ("paper", "optimistic", "exact")}
    rows = []
    for step in schedule.eval_steps:
        tokens = step * cfg.train.batch_tokens
        loss = float(law.loss(run.n_params, max(tokens, cfg.train.batch_tokens), run.lr, z)) if step else None
        columns = compute_columns(tokens, per_token)
        rows.append({"step": step, "tokens": tokens, **columns, "train_loss": loss,
                     "val_loss": loss if step else float(law.loss(run.n_params, 1.0, run.lr, z)), "lr": run.lr,
                     "elapsed_s": columns["compute_pf_days"] * 1e-15 * PF_DAY * law.seconds_per_pflop})
    return rows


def simulate_run(run: PlannedRun, law: Truth, run_dir: Path) -> dict:
    """Write one run folder as a trained run leaves it; return its summary."""
    rows = _rows(run, law, run_noise(run.name, law.noise_seed))
    last = rows[-1]
    summary = {"method": run.cfg.method.name, "seed": run.seed, "n_params": run.n_params,
               "n_params_nonembedding": run.n_params, "tokens": last["tokens"], "steps": last["step"],
               **{k: last[k] for k in ("compute_flops", "compute_pf_days", "compute_flops_optimistic",
                                       "compute_flops_exact")},
               "final_val_loss": last["val_loss"],
               "tokens_per_s": last["tokens"] / last["elapsed_s"] if last["elapsed_s"] > 0 else None,
               "elapsed_s": last["elapsed_s"], "status": "completed", "data_fingerprint": "simulated"}
    atomic_write(run_dir / "config.yaml", dump_yaml(run.cfg), durable=False)
    atomic_write(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows), durable=False)
    atomic_write(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n", durable=False)
    return summary


def run_simulated(plan: StudyPlan, study_dir: str | Path, truth: dict[str, Truth]) -> dict[str, int]:
    """Simulate every unfinished run of the plan into DIR/runs/; return {state: count}."""
    study_dir = check_study_dir(study_dir, plan.spec)
    refuse_linked_folders(plan, study_dir)
    missing = sorted({r.method for r in plan.runs} - set(truth))
    if missing:
        raise ConfigError(f"--truth: no law for method {missing[0]!r} (it has {', '.join(truth)})")
    write_plan_record(plan, prepare_study_dir(study_dir, plan.spec))  # as every executor: for the report
    for run in plan.runs:
        run_dir = study_dir / "runs" / run.name
        if run_state(run_dir) in FINISHED:
            continue
        make_folder(run_dir, inside=study_dir)
        simulate_run(run, truth[run.method], run_dir)
    return study_counts(plan, study_dir)
