"""One training run: determinism, a falling loss, resume equivalence, outputs and errors."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from beyondbp.cli.main import main
from beyondbp.config import build_config
from beyondbp.methods.registry import register
from beyondbp.methods.bp import Backprop
from beyondbp.train.loop import train
from beyondbp.runs.schedule import learning_rate, step_schedule


def run(tmp_path, name, overrides):
    cfg = build_config(overrides=overrides)
    return train(cfg, tmp_path / name, quiet=True), tmp_path / name


def metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_and_outputs_are_complete(tmp_path, tiny_overrides):
    summary, out = run(tmp_path, "a", tiny_overrides)
    rows = metrics(out)
    assert rows[0]["step"] == 0 and rows[-1]["step"] == summary["steps"] == 20
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 1.0
    for key in ("step", "tokens", "compute_flops", "compute_pf_days", "train_loss", "val_loss", "lr", "elapsed_s",
                "residual_rms", "residual_common"):
        assert key in rows[-1]
    assert 0.0 <= rows[-1]["residual_common"] <= 1.0 + 1e-6 and rows[-1]["residual_rms"] > 0
    for key in ("method", "n_params", "n_params_nonembedding", "tokens", "compute_flops", "compute_pf_days",
                "final_val_loss", "tokens_per_s", "status"):
        assert key in summary
    assert summary["status"] == "completed" and summary["final_val_loss"] == rows[-1]["val_loss"]
    assert summary["compute_flops"] == 6 * summary["n_params_nonembedding"] * summary["tokens"]
    assert (out / "config.yaml").exists() and (out / "checkpoint.pt").exists()


def test_same_seed_same_losses(tmp_path, tiny_overrides):
    a = [r["val_loss"] for r in metrics(run(tmp_path, "a", tiny_overrides)[1])]
    b = [r["val_loss"] for r in metrics(run(tmp_path, "b", tiny_overrides)[1])]
    c = [r["val_loss"] for r in metrics(run(tmp_path, "c", tiny_overrides + ["seed=1"])[1])]
    assert a == b
    assert a != c


def test_eval_points_are_log_spaced():
    cfg = build_config(overrides=["train.tokens=1_000_000", "train.batch_tokens=1024", "model.context=128",
                                  "train.n_evals=24"])
    plan = step_schedule(cfg)
    assert plan.eval_steps[0] == 0 and plan.eval_steps[-1] == plan.n_steps == 976
    assert len(plan.eval_steps) >= 20
    gaps = [b / a for a, b in zip(plan.eval_steps[1:], plan.eval_steps[2:])]
    assert max(gaps) <= 2.0


@pytest.mark.parametrize("schedule", ["cosine", "constant_cooldown"])
def test_schedules_warm_up_then_decay_to_min(schedule):
    cfg = build_config(overrides=[f"train.schedule={schedule}", "train.lr=1.0", "train.min_lr_ratio=0.1",
                                  "train.warmup_frac=0.1"])
    lrs = [learning_rate(cfg, s, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1, abs=0.02)
    assert all(b <= a + 1e-12 for a, b in zip(lrs[10:], lrs[11:]))


def test_completed_run_is_not_retrained(tmp_path, tiny_overrides):
    summary, out = run(tmp_path, "a", tiny_overrides)
    mtime = os.stat(out / "checkpoint.pt").st_mtime_ns
    again, _ = run(tmp_path, "a", tiny_overrides)
    assert again == summary and os.stat(out / "checkpoint.pt").st_mtime_ns == mtime


def _cli(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "beyondbp", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_for_rows(path, n, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("run made no progress")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_the_same_final_loss(tmp_path, tiny_overrides, sig):
    overrides = tiny_overrides + ["train.tokens=61440", "train.n_evals=12", "train.checkpoint_every_s=0"]
    full, _ = run(tmp_path, "full", overrides)
    out = tmp_path / "killed"
    proc = _cli(["train", "--out", str(out), *overrides])
    _wait_for_rows(out / "metrics.jsonl", 6, proc)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode == (130 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert not (out / "summary.json").exists()
    proc = _cli(["train", "--out", str(out), *overrides])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["final_val_loss"] == pytest.approx(full["final_val_loss"], abs=1e-6)
    assert [r["step"] for r in metrics(out)] == [r["step"] for r in metrics(tmp_path / "full")]
    assert [r["val_loss"] for r in metrics(out)] == pytest.approx([r["val_loss"] for r in metrics(tmp_path / "full")], abs=1e-6)


class _NaNMethod(Backprop):
    name = "nan_for_test"

    def forward(self, idx, targets):
        loss, objective = super().forward(idx, targets)
        return loss * float("nan"), objective


def test_nan_loss_marks_run_diverged(tmp_path, tiny_overrides):
    register(_NaNMethod)
    summary, out = run(tmp_path, "nan", tiny_overrides + ["method=nan_for_test"])
    assert summary["status"] == "diverged" and summary["final_val_loss"] is None
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize("extra,match", [
    (["model.n_layers=3"], "model.n_layers"),
    (["train.lr=fast"], "train.lr"),
    (["data.corpus=/nonexistent/corpus.txt"], "data.corpus"),
    (["train.batch_tokens=1000"], "train.batch_tokens"),
    (["method=sgd_magic"], "method"),
])
def test_bad_input_gets_one_line_error(tmp_path, tiny_overrides, capsys, extra, match):
    code = main(["train", "--out", str(tmp_path / "r"), *tiny_overrides, *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and match in err and len(err.splitlines()) == 1


def test_corpus_smaller_than_one_batch(tmp_path, tiny_overrides, capsys):
    small = tmp_path / "small.txt"
    small.write_text("tiny corpus " * 20)
    code = main(["train", "--out", str(tmp_path / "r"), *tiny_overrides, f"data.corpus={small}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "data.corpus" in err and len(err.splitlines()) == 1


def test_unwritable_output_folder(tmp_path, tiny_overrides, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["train", "--out", str(blocker / "run"), *tiny_overrides])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--out" in err and len(err.splitlines()) == 1


def test_other_config_in_existing_run_dir_is_refused_and_nothing_lost(tmp_path, tiny_overrides, capsys):
    _, out = run(tmp_path, "a", tiny_overrides)
    (out / "worker.lock").touch()  # as `beyondbp train` leaves it
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code = main(["train", "--out", str(out), *tiny_overrides, "train.lr=0.1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "train.lr" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_sample_generates_text(tmp_path, tiny_overrides, capsys):
    _, out = run(tmp_path, "a", tiny_overrides)
    assert main(["sample", "--run", str(out), "--prompt", "ROMEO:", "--tokens", "20"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("ROMEO:") and len(text.encode()) >= len("ROMEO:") + 20 - 3


def test_residual_stats_measure_how_alike_the_positions_are():
    from beyondbp.train.loop import residual_stats
    row = torch.tensor([3.0, -4.0, 0.0, 0.0])
    same = residual_stats(row.expand(2, 5, 4))  # every position the same vector
    assert same["residual_common"] == pytest.approx(1.0) and same["residual_rms"] == pytest.approx(2.5)
    opposite = residual_stats(torch.stack([row, -row]))  # the mean vector is zero
    assert opposite["residual_common"] == pytest.approx(0.0)
    mixed = residual_stats(torch.stack([row, torch.tensor([0.0, 0.0, 5.0, 0.0])]))
    assert mixed["residual_common"] == pytest.approx(torch.tensor([3.0, -4.0, 5.0, 0.0]).norm().item() / 2 / 5)
