"""Live tracking in real runs: `train.tracker` sends every metrics.jsonl row of a GPT run, an MLP
run and a study's runs to TensorBoard / offline W&B, read back with the backends' own readers
(test_tracking's helpers); an uninstalled tracker is refused before anything is written; the
default (none) never imports either package."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from beyondbp.cli.main import main
from beyondbp.methods.run_builder import build_from_file
from beyondbp.config import ConfigError, load_yaml
from beyondbp.study.local_executor import run_study
from beyondbp.study.plan import plan_study
from beyondbp.study.spec import load_spec
from beyondbp.train.mlp_loop import run_mlp
from test_tracking import (assert_tensorboard_equals, by_step, offline_folders, tmp_wandb_leftovers,  # noqa: F401
                           wandb_env, wandb_history, wandb_records)

ROOT_ENV = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
ALIGNED = ["method=dfa", "train.alignment_every_evals=1"]  # rows with alignment/blockK columns too


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def needs_tensorboard():
    pytest.importorskip("tensorboard", reason='train.tracker=tensorboard needs: pip install "beyondbp[tensorboard]"')


def tensorboard_config(out) -> dict:
    """The config the run's TensorBoard log holds as text."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    return json.loads(acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode().strip("`\n"))


def test_a_gpt_run_writes_tensorboard_scalars_equal_to_its_metrics(tmp_path, tiny_overrides, capsys):
    needs_tensorboard()
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *tiny_overrides, *ALIGNED, "train.tracker=tensorboard"]) == 0
    assert f"tracking: TensorBoard events in {out / 'tensorboard'}" in capsys.readouterr().err
    rows = metrics(out)
    assert len(rows) == 6 and {"lr", "compute_flops_optimistic", "compute_flops_exact", "residual_rms",
                               "residual_common"} <= rows[-1].keys()
    assert set(rows[-1]["alignment"]) == {"block0", "block1"}
    assert_tensorboard_equals(out, rows)
    assert tensorboard_config(out) == load_yaml(out / "config.yaml", "config")


@pytest.mark.slow
def test_a_killed_run_resumes_into_the_same_tensorboard_log(tmp_path, tiny_overrides):
    """SIGKILL mid-run, rerun: TensorBoard holds every row of metrics.jsonl once, those measured
    again after the resume in place of the killed session's."""
    needs_tensorboard()
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "beyondbp", "train", "--out", str(out), *tiny_overrides,
            "train.tokens=61440", "train.n_evals=12", "train.checkpoint_every_s=0", "train.tracker=tensorboard"]
    env = dict(os.environ, **ROOT_ENV)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not ((out / "metrics.jsonl").exists() and len(metrics(out)) >= 6):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run ended ({proc.returncode}) or wrote no 6th row in 300 s")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=300)
    rows = metrics(out)
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 60  # 61440 tokens in batches of 1024
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one log, two sessions
    assert_tensorboard_equals(out, rows)


def test_an_mlp_run_writes_tensorboard_scalars_equal_to_its_metrics(tmp_path):
    needs_tensorboard()
    cfg = build_from_file(None, ["mlp.depth=2", "mlp.width=32", "mlp.epochs=2", "train.progress=off",
                                 "train.threads=1", "method=dfa", "train.tracker=tensorboard"], kind="mlp")
    out = tmp_path / "mlp"
    assert run_mlp(cfg, out, quiet=True)["status"] == "completed"
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [0, 1, 2] and "layer1" in rows[-1]["angle_hidden"]
    assert_tensorboard_equals(out, rows)


@pytest.mark.slow
def test_an_offline_wandb_run_folder_holds_the_metrics_rows_and_config(tmp_path, tiny_overrides, wandb_env):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *tiny_overrides, *ALIGNED, "train.tracker=wandb"]) == 0
    rows = metrics(out)
    [folder] = offline_folders(out)
    records = wandb_records(folder)
    assert wandb_history(records) == by_step(rows) and "alignment/block1" in wandb_history(records)[20]
    [run] = [r["run"] for r in records if r["type"] == "run"]
    assert run["display_name"] == "run" and not run.get("run_group")
    config = {k: v for k, v in run["config"]["update"].items() if k != "_wandb"}
    assert config == load_yaml(out / "config.yaml", "config")


STUDY = {"name": "tiny", "methods": ["bp", "dfa_block"], "sizes": {"a": {"n_layer": 2, "d_model": 8, "n_head": 2}},
         "tokens": 8192, "lrs": {"bp": [1e-2], "dfa_block": [1e-2]}, "seeds": [0],
         "base": {"model": {"context": 32}, "train": {"batch_tokens": 512, "n_evals": 3, "eval_tokens": 1024,
                                                       "threads": 1}}}


def write_study_spec(folder):
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    return path


@pytest.mark.slow
def test_a_study_logs_its_runs_in_one_wandb_group(tmp_path, wandb_env):
    """`study run SPEC base.train.tracker=wandb` (the override `study run` passes to load_spec):
    both runs in the group named after the study folder, each holding its metrics rows."""
    in_tmp = tmp_wandb_leftovers()
    study = tmp_path / "my-study"
    plan = plan_study(load_spec(write_study_spec(tmp_path), overrides=["base.train.tracker=wandb"]))
    assert run_study(plan, study, workers=2, quiet=True) == {"completed": 2}
    runs = sorted((study / "runs").iterdir())
    assert [r.name for r in runs] == ["bp_a_lr0.01_s0", "dfa_block_a_lr0.01_s0"]
    for run_dir in runs:
        [folder] = offline_folders(run_dir)
        records = wandb_records(folder)
        [run] = [r["run"] for r in records if r["type"] == "run"]
        assert (run["run_group"], run["display_name"]) == ("my-study", run_dir.name)
        assert wandb_history(records) == by_step(metrics(run_dir))
    assert tmp_wandb_leftovers() == in_tmp


@pytest.mark.parametrize("kind", ["tensorboard", "wandb"])
def test_an_uninstalled_tracker_is_refused_before_anything_is_written(tmp_path, tiny_overrides, monkeypatch, capsys,
                                                                      kind):
    monkeypatch.setitem(sys.modules, kind, None)  # as if not installed: found by no import
    code = main(["train", "--out", str(tmp_path / "r"), *tiny_overrides, f"train.tracker={kind}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err == (f"beyondbp: error: train.tracker={kind} needs the {kind} package, which is not installed: "
                   f'pip install "beyondbp[{kind}]"')
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match=rf"^train.tracker={kind} needs the {kind} package"):
        run_study(plan_study(load_spec(write_study_spec(tmp_path), overrides=[f"base.train.tracker={kind}"])),
                  tmp_path / "study", quiet=True)
    assert not (tmp_path / "study").exists()


def test_an_unknown_tracker_is_a_config_error(tmp_path, tiny_overrides, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), *tiny_overrides, "train.tracker=mlflow"]) == 2
    assert capsys.readouterr().err.strip() == ("beyondbp: error: train.tracker: unknown tracker 'mlflow' "
                                               "(valid: none, tensorboard, wandb)")


def test_the_default_tracker_imports_neither_package(tmp_path, tiny_overrides):
    """`import beyondbp` and a whole run with train.tracker=none load no tensorboard and no wandb
    (both are installed here: an eager import would show)."""
    script = (f"import sys, beyondbp\nfrom beyondbp.cli.main import main\n"
              f"assert main(['train', '--out', {str(tmp_path / 'r')!r}, *{tiny_overrides!r}]) == 0\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'wandb', 'tensorboardX')"
              " or m.startswith('torch.utils.tensorboard')))")
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, **ROOT_ENV), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "r" / "summary.json").exists() and not (tmp_path / "r" / "tensorboard").exists()
