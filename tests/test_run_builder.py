"""One run builder, one run starter: every command and executor builds the same RunConfig from the
same inputs, and a run trained in a long-lived worker after other runs gives the bits it gives
in a fresh process."""
from __future__ import annotations

import copy
import json
import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from beyondbp.config import to_dict
from beyondbp.methods.run_builder import build_from_file, build_run, load_run_file
from beyondbp.study import slurm
from beyondbp.study.chain import write_chain, write_run_yaml
from beyondbp.study.local_executor import run_study
from beyondbp.study.plan import plan_study
from beyondbp.study.spec import normalise_spec
from beyondbp.train import chain as train_chain

# what a user gives: a base (no batch size: forward_grad's train_defaults bring 1,024), one size
BASE = {"model": {"context": 32}, "train": {"n_evals": 3, "eval_tokens": 512, "warmup_frac": 0.1}}
SIZE = {"n_layer": 1, "d_model": 8, "n_head": 2}
SPEC = {"name": "same", "methods": ["forward_grad", "bp"], "sizes": {"a": SIZE}, "tokens": 8192,
        "lrs": {"forward_grad": [3e-3], "bp": [1e-2]}, "seeds": [4], "base": BASE,
        "per_method": {"bp": {"train.beta2": 0.9}}}


def _command_config(tmp_path, method: str, lr: float, extra: dict, tokens: int):
    """The run as `beyondbp train --config FILE KEY=VALUE...` builds it from the same inputs."""
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump({**copy.deepcopy(BASE), "model": {**BASE["model"], **SIZE}}))
    overrides = [f"method={method}", f"train.lr={lr}", "seed=4", f"train.tokens={tokens}",
                 *(f"{k}={v}" for k, v in extra.items())]
    return build_from_file(path, overrides)


def test_train_study_planning_and_every_executor_build_the_same_run_config(tmp_path):
    plan = plan_study(normalise_spec(copy.deepcopy(SPEC)))
    by_method = {r.method: r for r in plan.runs}
    fg, bp = by_method["forward_grad"], by_method["bp"]
    assert fg.cfg.train.batch_tokens == 1024 and bp.cfg.train.batch_tokens == 4096  # the method's default
    assert bp.cfg.train.beta2 == 0.9 and fg.cfg.train.beta2 == 0.95  # per_method over base
    assert fg.cfg.method.origin == "beyondbp.methods.forward_grad:ForwardGradient"  # resolved once, recorded
    for run, extra in ((fg, {}), (bp, {"train.beta2": 0.9})):
        assert to_dict(_command_config(tmp_path, run.method, run.lr, extra, run.tokens)) == to_dict(run.cfg)
        # the local executor's workers, a Slurm job and a chain read back the run.yaml they were handed
        written = write_run_yaml(tmp_path / run.name, run.cfg, lambda cfg: cfg)
        assert to_dict(load_run_file(tmp_path / run.name / "run.yaml")) == to_dict(written) == to_dict(run.cfg)
    assert slurm.load_run_file is load_run_file and train_chain.load_run_file is load_run_file


def test_branched_budgets_read_back_the_configs_the_plan_built(tmp_path):
    base = {**BASE, "train": {**BASE["train"], "batch_tokens": 512}}
    spec = normalise_spec(dict(copy.deepcopy(SPEC), methods=["bp"], tokens=[8192, 16384], budgets="branched", base=base))
    plan = plan_study(spec)
    (chain,) = plan.chains
    trunk_dir = write_chain(chain, tmp_path, lambda cfg: cfg)
    assert to_dict(load_run_file(trunk_dir / "run.yaml")) == to_dict(chain.trunk)
    for run in chain.runs:
        assert to_dict(load_run_file(tmp_path / "runs" / run.name / "run.yaml")) == to_dict(run.cfg)
        assert run.cfg.train.schedule == "constant_cooldown"


def test_precedence_defaults_track_method_layers_overrides():
    assert build_run().train.lr == 6e-3
    assert build_run(kind="mlp").train.lr == 1e-3  # the MLP track's defaults
    assert build_run([("", {"method": "forward_grad"})]).train.batch_tokens == 1024  # the method's default
    assert build_run([("", {"method": "forward_grad"}), ("", {"train": {"batch_tokens": 512}})]).train.batch_tokens == 512
    assert build_run([("", {"train.batch_tokens": 512})], {"method": "forward_grad"}).train.batch_tokens == 512
    assert build_run([("", {"train.lr": 1e-2})], ["train.lr=2e-2"]).train.lr == 2e-2
    assert build_run([("", {"method": {"name": "forward_grad"}})], kind="mlp").train.batch_tokens == 4096  # gpt only


TINY = {"model": {"n_layer": 1, "d_model": 8, "n_head": 2, "context": 32, "dropout": 0.1},  # dropout draws
        "train": {"tokens": 4096, "batch_tokens": 512, "n_evals": 2, "eval_tokens": 512, "threads": 1,
                  "progress": "off", "checkpoint_every_s": 0}}


def _write_runs(root, names_methods):
    for name, method, seed in names_methods:
        cfg = build_run([("", copy.deepcopy(TINY))], {"method": method, "seed": seed})
        write_run_yaml(root / name, cfg, lambda c: c)
    return [root / name for name, _, _ in names_methods]


def _train_in_one_worker(folders) -> list:
    from beyondbp.train.worker import serve
    context = mp.get_context("spawn")
    ours, theirs = context.Pipe()
    proc = context.Process(target=serve, args=(theirs, os.getpid()), daemon=True)
    proc.start()
    answers = []
    for folder in folders:
        ours.send((str(folder), [str(folder)]))
        answers.append(ours.recv())
    ours.send(None)
    proc.join(60)
    return answers


def _final(folder) -> tuple:
    summary = json.loads((folder / "summary.json").read_text())
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return summary["final_val_loss"], [r["train_loss"] for r in rows if r.get("train_loss") is not None]


def test_a_run_after_others_in_one_worker_gives_the_bits_of_a_fresh_process(tmp_path):
    runs = [("first", "dfa_block", 1), ("second", "bp", 2)]
    shared = _write_runs(tmp_path / "shared", runs)
    alone = _write_runs(tmp_path / "alone", runs[1:])
    assert _train_in_one_worker(shared) == [("done", None), ("done", None)]
    assert _train_in_one_worker(alone) == [("done", None)]
    assert (shared[1] / "train.log").read_text().strip()  # each run's output went to its own log
    assert "second" not in (shared[0] / "train.log").read_text()
    assert _final(shared[1]) == _final(alone[0])
    assert _final(shared[0])[0] != _final(shared[1])[0]


def _worker_pids() -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"multiprocessing.spawn" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.slow
def test_a_worker_killed_mid_run_fails_that_run_and_a_new_worker_trains_the_rest(tmp_path):
    spec = normalise_spec(dict(copy.deepcopy(SPEC), methods=["bp"], seeds=[0, 1, 2], tokens=65536,
                               base={**BASE, "train": {**BASE["train"], "batch_tokens": 512, "threads": 1}}))
    plan = plan_study(spec)
    study = tmp_path / "study"
    killed = []

    def kill_first_worker_mid_run():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for run in plan.runs:
                if (study / "runs" / run.name / "metrics.jsonl").exists() and _worker_pids():
                    os.kill(_worker_pids()[0], signal.SIGKILL)
                    killed.append(run.name)
                    return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_first_worker_mid_run)
    watcher.start()
    counts = run_study(plan, study, workers=1, quiet=True)
    watcher.join()
    assert counts == {"completed": 2, "failed": 1}
    summary = json.loads((study / "runs" / killed[0] / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("killed by signal 9")
    assert summary["returncode"] == -9
