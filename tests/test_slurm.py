"""The Slurm executor through submitit's local cluster: real jobs on this machine, no Slurm.

A study's jobs are killed (SIGKILL) and preempted (USR2, as Slurm signals a job before its time
limit); resubmitting finishes the study without retraining finished runs, and every resumed
run ends with the loss of an uninterrupted run. Misconfigurations fail with one line.
"""
from __future__ import annotations

import builtins
import copy
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from beyondbp.cli.main import main
from beyondbp.config import ConfigError
from beyondbp.study.spec import load_spec
from beyondbp.train.loop import train

pytest.importorskip("submitit")
from beyondbp.study.slurm import plan_for_slurm, run_status, submit_study, wait_for  # noqa: E402
from beyondbp.study.slurm_settings import parse_time_minutes, resolve_settings  # noqa: E402

BASE = {"model": {"context": 32},
        "train": {"batch_tokens": 512, "n_evals": 5, "eval_tokens": 1024, "checkpoint_every_s": 0,
                  "threads": 1, "device": "cpu", "progress": "off"}}
SPEC = {
    "name": "tiny",
    "methods": ["bp"],
    "sizes": {"a": {"n_layer": 2, "d_model": 8, "n_head": 2}},
    "tokens": 8192,
    "lrs": {"bp": [1e-2]},
    "seeds": [0],
    "base": BASE,
    "slurm": {"cluster": "local", "timeout_min": 10},
}


TOKENS = 96 * 512


def write_spec(tmp_path: Path, spec: dict) -> Path:
    import yaml
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def submit(spec_path: Path, out: Path, cli: dict | None = None):
    spec = load_spec(spec_path)
    settings = resolve_settings(spec.slurm, cli or {})
    plan = plan_for_slurm(spec, settings)
    return plan, submit_study(plan, out, settings, quiet=True)


def wait_until(predicate, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def n_metrics(run_dir: Path) -> int:
    try:
        return len((run_dir / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def task_pid(run_dir: Path) -> int:
    return json.loads((run_dir / "slurm_task.json").read_text())["pid"]


def uninterrupted_loss(plan, name: str, out: Path) -> float:
    cfg = copy.deepcopy(next(r.cfg for r in plan.runs if r.name == name))
    return train(cfg, out, quiet=True)["final_val_loss"]


@pytest.mark.slow
def test_killed_and_preempted_jobs_resume_and_finished_runs_are_not_retrained(tmp_path):
    # two runs: seed 0 is SIGKILLed mid-way; seed 1 gets Slurm's pre-timeout USR2 mid-way
    spec_path, out = write_spec(tmp_path, dict(SPEC, tokens=TOKENS, seeds=[0, 1])), tmp_path / "study"
    plan, jobs = submit(spec_path, out)
    assert len(jobs) == 2
    killed, preempted = (out / "runs" / f"bp_a_lr0.01_s{seed}" for seed in (0, 1))
    for run_dir in (killed, preempted):
        assert json.loads((run_dir / "slurm_job.json").read_text())["job_id"] == str(jobs[run_dir.name].job_id)
    signals = {killed: signal.SIGKILL, preempted: signal.SIGUSR2}

    def signal_each_mid_way() -> bool:
        for run_dir, signum in list(signals.items()):
            if n_metrics(run_dir) >= 2:  # evaluated at steps 0 and 1 of 96, checkpointed every step
                os.kill(task_pid(run_dir), signals.pop(run_dir))
        return not signals

    wait_until(signal_each_mid_way)
    wait_for(jobs, out, poll_s=0.1)

    assert run_status(preempted)[0] == "completed"  # requeued by submitit, resumed from its checkpoint
    state, detail = run_status(killed)
    assert state == "failed" and "study run` again resumes it" in detail
    assert (killed / "checkpoint.pt").exists() and not (killed / "summary.json").exists()
    log = "".join(p.read_text() for p in (preempted / "slurm").glob("*_log.*"))
    assert "Calling checkpoint method" in log and log.count("Starting with JobEnvironment") == 2

    mtime = (preempted / "summary.json").stat().st_mtime_ns
    _, jobs = submit(spec_path, out)
    assert list(jobs) == [killed.name]  # nothing finished is submitted again
    record = json.loads((killed / "slurm_job.json").read_text())
    assert record["previous_job_ids"] and record["job_id"] == str(jobs[killed.name].job_id)
    wait_for(jobs, out, poll_s=0.1)

    assert (preempted / "summary.json").stat().st_mtime_ns == mtime
    for run_dir in (killed, preempted):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["tokens"] == TOKENS
        reference = uninterrupted_loss(plan, run_dir.name, tmp_path / f"ref_{run_dir.name}")
        assert summary["final_val_loss"] == pytest.approx(reference, rel=1e-6, abs=0)


@pytest.mark.slow
def test_two_process_job_trains_one_run_on_two_ranks(tmp_path, capsys):
    """gpus_per_run=2 on CPU: two submitit tasks, each a torch.distributed rank (gloo), train one
    run. (That two processes train the same run as one is test_distributed's.)"""
    spec_path, out = write_spec(tmp_path, SPEC), tmp_path / "study"
    rc = main(["study", "run", str(spec_path), "--out", str(out), "--executor", "slurm", "--cluster", "local",
               "--gpus-per-run", "2", "--wait", "--bootstrap", "5"])
    assert rc == 0
    run_dir = out / "runs" / "bp_a_lr0.01_s0"
    job_id = json.loads((run_dir / "slurm_job.json").read_text())["job_id"]
    assert f"{job_id}\tbp_a_lr0.01_s0" in capsys.readouterr().out
    assert json.loads((run_dir / "slurm_task.json").read_text())["tasks"] == 2
    assert (out / "report" / "report.html").exists()
    _, jobs = submit(spec_path, out)
    assert jobs == {}  # nothing left to submit
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["tokens"] == SPEC["tokens"]
    rc = main(["study", "status", str(out)])
    assert rc == 0 and "1 runs: 1 completed" in capsys.readouterr().out


def one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_missing_partition_is_one_line(tmp_path, capsys):
    spec = dict(SPEC)
    spec.pop("slurm")
    spec_path = write_spec(tmp_path, spec)
    err = one_line_error(["study", "run", str(spec_path), "--out", str(tmp_path / "s"), "--executor", "slurm"], capsys)
    assert "--partition" in err and "slurm.partition" in err
    assert not (tmp_path / "s").exists()


def test_missing_submitit_is_one_line(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_submitit(name, *args, **kwargs):
        if name == "submitit" or name.startswith("submitit."):
            raise ImportError("No module named 'submitit'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_submitit)
    monkeypatch.delitem(sys.modules, "submitit", raising=False)
    err = one_line_error(["study", "run", str(write_spec(tmp_path, SPEC)), "--out", str(tmp_path / "s"),
                          "--executor", "slurm", "--partition", "gpu"], capsys)
    assert "pip install beyondbp[slurm]" in err


def test_batch_not_splitting_over_gpus_is_one_line(tmp_path, capsys):
    # 512-token batches of 32-token sequences: 16 sequences do not split over 3 processes
    err = one_line_error(["study", "run", str(write_spec(tmp_path, SPEC)), "--out", str(tmp_path / "s"),
                          "--executor", "slurm", "--gpus-per-run", "3"], capsys)
    assert err.startswith("beyondbp: error: --gpus-per-run: 3 processes") and "train.batch_tokens" in err


def test_sbatch_missing_and_misplaced_flags_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    spec_path = write_spec(tmp_path, SPEC)
    err = one_line_error(["study", "run", str(spec_path), "--out", str(tmp_path / "s"), "--executor", "slurm",
                          "--cluster", "slurm", "--partition", "gpu"], capsys)
    assert "sbatch" in err and "--cluster local" in err
    err = one_line_error(["study", "run", str(spec_path), "--out", str(tmp_path / "s"), "--partition", "gpu"], capsys)
    assert "--partition: applies to --executor slurm only" in err


def test_slurm_settings_and_time_limits():
    assert parse_time_minutes("72:00:00") == 72 * 60
    assert parse_time_minutes("1-12:00:00") == 36 * 60
    assert parse_time_minutes("90") == 90 and parse_time_minutes("10:30") == 11
    with pytest.raises(ConfigError, match="--time"):
        parse_time_minutes("3 days")
    section = {"partition": "gpu", "gpus_per_run": 8, "nodes": 2, "timeout_min": "2:00:00"}
    settings = resolve_settings(section, {"account": "proj", "gpus_per_run": 16})
    assert (settings.partition, settings.account, settings.gpus_per_run, settings.timeout_min) == \
        ("gpu", "proj", 16, 120)
    with pytest.raises(ConfigError, match="slurm.gpus_per_run"):
        resolve_settings({"partition": "gpu", "gpus_per_run": 3, "nodes": 2}, {})
    with pytest.raises(ConfigError, match="slurm.qos: unknown key"):
        resolve_settings({"partition": "gpu", "qos": "high"}, {})


@pytest.mark.parametrize("scheduler, files, expected", [
    ("PENDING", {}, "queued"),
    ("REQUEUED", {"checkpoint.pt": ""}, "queued"),
    ("RUNNING", {}, "running"),
    ("TIMEOUT", {"checkpoint.pt": ""}, "failed"),
    ("COMPLETED", {"summary.json": '{"status": "completed", "final_val_loss": 2.0}'}, "completed"),
    (None, {}, "queued"),  # no sacct/squeue: a submitted run with no files yet
    (None, {"metrics.jsonl": ""}, "interrupted"),
])
def test_status_from_scheduler_states(tmp_path, monkeypatch, scheduler, files, expected):
    import beyondbp.study.slurm as slurm_module
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "slurm_job.json").write_text(json.dumps({"job_id": "4242", "cluster": "slurm"}))
    for name, text in files.items():
        (run_dir / name).write_text(text)
    monkeypatch.setattr(slurm_module, "scheduler_state", lambda record, path: scheduler)
    state, detail = run_status(run_dir)
    assert state == expected
    assert expected == "completed" or "job 4242" in detail
