"""Study specs, planning, resumable execution (SIGKILL mid-way), status and failed runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from beyondbp.config import ConfigError
from beyondbp.report import write_report
from beyondbp.study import load_spec, plan_study, preset_names, run_state, run_study

TINY_SPEC = {
    "name": "tiny",
    "methods": ["bp", "dfa_block"],
    "sizes": {"a": {"n_layer": 2, "d_model": 8, "n_head": 2}, "b": {"n_layer": 2, "d_model": 16, "n_head": 2}},
    "tokens": 8192,
    "lrs": {"bp": [1e-2], "dfa_block": [1e-2]},
    "seeds": [0],
    "base": {"model": {"context": 32},
             "train": {"batch_tokens": 512, "n_evals": 5, "eval_tokens": 1024, "checkpoint_every_s": 0,
                       "threads": 1}},
}


def write_spec(tmp_path: Path, spec: dict = TINY_SPEC) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_every_preset_plans(tmp_path):
    assert {"smoke", "quick", "cpu", "gpu", "paper"} <= set(preset_names())
    for name in preset_names():
        plan = plan_study(load_spec(preset=name))
        assert plan.runs, name
        names = [r.name for r in plan.runs]
        assert len(set(names)) == len(names)


def test_cpu_preset_shape():
    plan = plan_study(load_spec(preset="cpu"))
    spec = plan.spec
    assert {"bp", "dfa", "dfa_block", "shallow"} <= set(spec["methods"])
    assert all(len(spec["lrs"][m]) == 3 for m in spec["methods"])
    assert len(spec["sizes"]) >= 5
    bp_runs = [r for r in plan.runs if r.method == "bp"]
    assert all(7 <= r.cfg.model.n_layer <= 18 for r in bp_runs)
    compute = [r.n_params * r.tokens for r in bp_runs]
    assert max(compute) / min(compute) >= 10 ** 1.5


def test_quick_preset_shape():
    spec = plan_study(load_spec(preset="quick")).spec
    assert {"bp", "dfa_block", "shallow"} <= set(spec["methods"]) and len(spec["sizes"]) >= 4


def test_plan_names_and_overrides(tmp_path):
    plan = plan_study(load_spec(write_spec(tmp_path), overrides=["seeds=[0,1]", "lrs.bp=[1e-3,3e-3]",
                                                                  "base.train.weight_decay=0.0"]))
    names = sorted(r.name for r in plan.runs)
    assert len(names) == 2 * (2 + 1) * 2
    assert "bp_a_lr0.001_s1" in names and "dfa_block_b_lr0.01_s0" in names
    run = next(r for r in plan.runs if r.name == "bp_b_lr0.003_s1")
    assert (run.cfg.train.lr, run.cfg.seed, run.cfg.model.d_model) == (3e-3, 1, 16)
    assert run.cfg.train.weight_decay == 0.0 and run.cfg.method.name == "bp"


def test_tokens_per_param_scales_with_model(tmp_path):
    plan = plan_study(load_spec(write_spec(tmp_path), overrides=["tokens_per_param=20"]))
    for run in plan.runs:
        assert run.tokens == max(512, int(20 * run.n_params) // 512 * 512)
    small, large = (next(r for r in plan.runs if r.size == s and r.method == "bp") for s in ("a", "b"))
    assert large.tokens > small.tokens


@pytest.mark.parametrize("override, field", [
    (["methods=[bp,nonsense]"], "methods"),
    (["sizes=[]"], "sizes"),
    (["tokens=-5"], "tokens"),
    (["colour=blue"], "colour"),
    (["base.train.nonsense=1"], "base.train.nonsense"),
    (["lrs.bp=[-1e-3]"], "lrs.bp"),
    (["sizes.a.n_heads=3"], "sizes.a.n_heads"),
])
def test_bad_specs_fail_with_one_line_naming_the_field(tmp_path, override, field):
    with pytest.raises(ConfigError) as info:
        plan_study(load_spec(write_spec(tmp_path), overrides=override))
    message = str(info.value)
    assert field in message and "\n" not in message


def test_bad_spec_from_cli_starts_no_run(tmp_path):
    out = tmp_path / "study"
    proc = subprocess.run([sys.executable, "-m", "beyondbp", "study", "run", str(write_spec(tmp_path)),
                           "--out", str(out), "methods=[bp,nonsense]"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "methods" in proc.stderr
    assert not out.exists()


def test_study_folder_refuses_another_spec(tmp_path):
    from beyondbp.study import prepare_study_dir
    spec = load_spec(write_spec(tmp_path))
    prepare_study_dir(tmp_path / "s", spec)
    prepare_study_dir(tmp_path / "s", load_spec(write_spec(tmp_path), overrides=["base.train.threads=3"]))
    with pytest.raises(ConfigError, match="tokens"):
        prepare_study_dir(tmp_path / "s", load_spec(write_spec(tmp_path), overrides=["tokens=16384"]))


def _study_cmd(spec_path: Path, out: Path) -> list[str]:
    # one worker: runs go one after another, so the kill lands after the first and inside the second
    return [sys.executable, "-m", "beyondbp", "study", "run", str(spec_path), "--out", str(out),
            "--workers", "1", "--bootstrap", "5"]


def test_killed_study_resumes_to_the_same_table(tmp_path):
    """SIGKILL the study mid-way, rerun: completed runs are not retrained, Table 1 is unchanged."""
    spec_path = write_spec(tmp_path, dict(TINY_SPEC, sizes={"b": TINY_SPEC["sizes"]["b"]}))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    reference = tmp_path / "reference"
    assert run_study(plan_study(load_spec(spec_path)), reference, workers=1, quiet=True) == {"completed": 2}
    write_report(reference, bootstrap=5)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_study_cmd(spec_path, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    runs = killed / "runs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill once a run has completed and another is part-way
        states = [run_state(d) for d in runs.iterdir()] if runs.exists() else []
        if "completed" in states and "running" in states and any(
                (d / "checkpoint.pt").exists() and run_state(d) == "running" for d in runs.iterdir()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # the runs die with the study (PR_SET_PDEATHSIG)
    done = {d.name: (d / "summary.json").stat().st_mtime_ns for d in runs.iterdir() if run_state(d) == "completed"}
    assert len(done) == 1
    assert all(run_state(d) in ("completed", "interrupted", "pending") for d in runs.iterdir())

    subprocess.run(_study_cmd(spec_path, killed), check=True, capture_output=True, env=env)
    for name, mtime in done.items():
        assert (runs / name / "summary.json").stat().st_mtime_ns == mtime  # not retrained
    assert all(run_state(d) == "completed" for d in runs.iterdir())
    assert (killed / "report" / "table1.csv").read_text() == (reference / "report" / "table1.csv").read_text()
    for run in plan_study(load_spec(spec_path)).runs:  # every run's curve is the uninterrupted one
        a = [json.loads(x)["val_loss"] for x in (reference / "runs" / run.name / "metrics.jsonl").open()]
        b = [json.loads(x)["val_loss"] for x in (runs / run.name / "metrics.jsonl").open()]
        assert a == b


def test_failed_run_is_recorded_and_the_study_continues(tmp_path, monkeypatch):
    spec = load_spec(write_spec(tmp_path), overrides=["methods=[bp]", "sizes=[{name: ok, n_layer: 1, d_model: 8, "
                                                                       "n_head: 2}]", "seeds=[0,1]"])
    plan = plan_study(spec)
    broken = plan.runs[1]
    broken.cfg.model.vocab_size = 100  # smaller than the byte tokenizer's 256: fails inside its worker
    counts = run_study(plan, tmp_path / "s", workers=2, quiet=True)
    assert counts == {"completed": 1, "failed": 1}
    summary = json.loads((tmp_path / "s" / "runs" / broken.name / "summary.json").read_text())
    assert summary["status"] == "failed" and "model.vocab_size" in summary["error"]
    status = subprocess.run([sys.executable, "-m", "beyondbp", "study", "status", str(tmp_path / "s")],
                            capture_output=True, text=True, check=True).stdout
    assert "1 completed, 1 failed" in status and f"{broken.name}" in status


def test_a_study_folder_from_before_tracks_still_resumes(tmp_path):
    from beyondbp.study import prepare_study_dir
    spec = load_spec(write_spec(tmp_path))
    old = dict(spec)
    del old["track"]  # spec.yaml as written before the MLP track existed
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "spec.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    assert prepare_study_dir(tmp_path / "study", spec) == tmp_path / "study"
    other = load_spec(write_spec(tmp_path), overrides=["tokens=16384"])
    with pytest.raises(ConfigError, match="holds a study with a different spec: tokens"):
        prepare_study_dir(tmp_path / "study", other)
