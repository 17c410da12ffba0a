"""Live tracking: what a tracker writes is read back with the backend's own reader and must equal
the metrics rows it was given (TensorBoard: EventAccumulator; W&B: `wandb leet inspect --json`,
W&B's reader of the offline .wandb transaction log)."""
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from beyondbp.config import ConfigError
from beyondbp.train.tracking import Tracker, flatten_row, make_tracker

CONFIG = {"model": {"n_layer": 2, "d_model": 16, "kind": "gpt"}, "method": {"name": "dfa"},
          "train": {"lr": 0.01, "tracker": "tensorboard", "micro_batch_tokens": None}, "seed": 3}


def metrics_row(step: int, val_loss: float, alignment: bool = True) -> dict:
    """A row with every column `_Run.evaluate` writes (train_loss None at step 0, as there)."""
    tokens = step * 1024
    row = {"step": step, "tokens": tokens, "compute_flops": tokens * 6.1e5, "compute_pf_days": tokens * 6.1e5 / 8.64e19,
           "compute_flops_optimistic": tokens * 4.1e5, "compute_flops_exact": tokens * 6.3e5,
           "train_loss": None if step == 0 else val_loss + 0.0123, "val_loss": val_loss, "lr": 0.01 * (1 - step / 100),
           "elapsed_s": 0.37 * step, "residual_rms": 3.25 + step / 7, "residual_common": 0.9 - step / 300}
    if alignment and step > 0:
        row["alignment"] = {"block0": 0.1 + step / 1000, "block1": -0.05 + step / 997}
    return row


ROWS = [metrics_row(step, 5.5 / (1 + step / 10)) for step in (0, 10, 20, 30)]
LATER = [metrics_row(step, 4.0 / (1 + step / 10)) for step in (30, 40, 50)]  # another value at step 30


def by_step(rows) -> dict[int, dict]:
    return {row["step"]: flatten_row(row) for row in rows}


# --- reading back ---------------------------------------------------------------------------

def tensorboard_points(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} as TensorBoard shows them (purged points dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(event.step, event.value) for event in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_tensorboard_equals(run_dir: Path, rows) -> None:
    """Every number of every row is a point at its step, equal to float32 rounding; nothing else."""
    expected = {}
    for step, flat in by_step(rows).items():
        for tag, value in flat.items():
            expected.setdefault(tag, []).append((step, float(np.float32(value))))
    assert tensorboard_points(run_dir) == expected


def wandb_records(run_folder: Path) -> list[dict]:
    """The records of one offline run folder, by W&B's own reader of its .wandb log."""
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_folder)],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def wandb_history(records) -> dict[int, dict]:
    """{step: the row's numbers}, without W&B's own `_step`, `_runtime`, `_timestamp`."""
    history = [r["history"] for r in records if r["type"] == "history"]
    return {int(h["step"]["num"]): {k: v for k, v in h["item"].items() if not k.startswith("_")} for h in history}


def offline_folders(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))  # the name starts with the start time


@functools.cache
def _wandb_can_read_offline_runs() -> bool:
    probe = [sys.executable, "-m", "wandb", "leet", "inspect", "--help"]
    return subprocess.run(probe, capture_output=True, stdin=subprocess.DEVNULL).returncode == 0


def tmp_wandb_leftovers() -> set[Path]:
    """What wandb's module-level temporary folders leave in /tmp when a process dies by SIGKILL."""
    return set(Path("/tmp").glob("tmp*wandb-*"))


@pytest.fixture
def wandb_env(tmp_path, tmp_path_factory, monkeypatch):
    """Offline by default (no WANDB_MODE), nothing written to the home folder or /tmp, and no
    WANDB_SERVICE (which wandb.init sets) left for later tests' subprocesses; skip without wandb."""
    # wandb makes its media and artifact folders on import: in this session's folder, also for the
    # subprocesses (a killed one leaves them behind); a per-test folder could be gone at exit
    scratch = tmp_path_factory.getbasetemp() / "tmp"
    scratch.mkdir(exist_ok=True)
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    pytest.importorskip("wandb", reason='train.tracker=wandb needs the extra: pip install "beyondbp[wandb]"')
    if not _wandb_can_read_offline_runs():
        pytest.skip("this wandb has no `wandb leet inspect` to read the offline run back")
    for name in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_SERVICE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))


# --- no tracker, bad input -----------------------------------------------------------------

def test_flatten_row_keeps_numbers_by_tag():
    row = {"step": 7, "val_loss": 2.5, "train_loss": None, "method": "dfa", "ok": True, "tokens": 7168,
           "alignment": {"block0": 0.25, "block1": None, "deeper": {"x": 1}}}
    assert flatten_row(row) == {"val_loss": 2.5, "tokens": 7168, "alignment/block0": 0.25, "alignment/deeper/x": 1}


def test_none_and_other_ranks_write_nothing(tmp_path):
    for tracker in (make_tracker("none", run_dir=tmp_path, run_name="r", config=CONFIG),
                    make_tracker("tensorboard", run_dir=tmp_path, run_name="r", config=CONFIG, enabled=False),
                    make_tracker("wandb", run_dir=tmp_path, run_name="r", config=CONFIG, enabled=False)):
        assert type(tracker) is Tracker and tracker.location == ""
        with tracker:
            for row in ROWS:
                tracker.log_row(row)
    assert list(tmp_path.iterdir()) == []


def test_unknown_tracker_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^train.tracker: unknown tracker 'mlflow' \(valid: none, tensorboard, wandb\)$"):
        make_tracker("mlflow", run_dir=tmp_path, run_name="r")


@pytest.mark.parametrize("kind, blocked", [("tensorboard", ["tensorboard", "torch.utils.tensorboard"]),
                                           ("wandb", ["wandb"])])
def test_missing_package_names_the_key_and_the_extra(tmp_path, monkeypatch, kind, blocked):
    for module in list(sys.modules):
        if any(module == name or module.startswith(name + ".") for name in blocked):
            monkeypatch.delitem(sys.modules, module)
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    with pytest.raises(ConfigError) as err:
        make_tracker(kind, run_dir=tmp_path, run_name="r", config=CONFIG)
    message = str(err.value)
    assert message.startswith(f"train.tracker={kind} needs the {kind} package")
    assert message.endswith(f'pip install "beyondbp[{kind}]"') and "\n" not in message
    assert list(tmp_path.iterdir()) == []


# --- TensorBoard --------------------------------------------------------------------------------

def test_tensorboard_scalars_equal_the_rows_and_hold_the_config(tmp_path):
    pytest.importorskip("tensorboard", reason='train.tracker=tensorboard needs: pip install "beyondbp[tensorboard]"')
    with make_tracker("tensorboard", run_dir=tmp_path, run_name="dfa_s3", group="study1", config=CONFIG) as tracker:
        assert str(tmp_path / "tensorboard") in tracker.location
        for row in ROWS:
            tracker.log_row(row)
    assert_tensorboard_equals(tmp_path, ROWS)
    assert tensorboard_points(tmp_path)["alignment/block1"][0] == (10, float(np.float32(-0.05 + 10 / 997)))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(text.strip("`\n")) == CONFIG
    from tensorboard.plugins.hparams import plugin_data_pb2
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["model.d_model"].number_value == 16 and hparams["method.name"].string_value == "dfa"
    assert hparams["group"].string_value == "study1" and hparams["train.micro_batch_tokens"].string_value == "None"


def test_tensorboard_resume_after_a_kill_has_no_duplicate_points(tmp_path):
    """The killed session logged up to step 30, its checkpoint was at step 25: the resumed session
    logs from 25 on, and TensorBoard keeps its step 30, not the killed one's."""
    pytest.importorskip("tensorboard", reason='train.tracker=tensorboard needs: pip install "beyondbp[tensorboard]"')
    killed = make_tracker("tensorboard", run_dir=tmp_path, run_name="r", config=CONFIG)
    for row in ROWS:
        killed.log_row(row)  # never closed: a kill after the row was written
    with make_tracker("tensorboard", run_dir=tmp_path, run_name="r", config=CONFIG, resume_step=25) as tracker:
        for row in LATER:
            tracker.log_row(row)
    assert_tensorboard_equals(tmp_path, ROWS[:3] + LATER)
    val = dict(tensorboard_points(tmp_path)["val_loss"])
    assert val[30] == float(np.float32(4.0 / 4)) != float(np.float32(5.5 / 4))

    with make_tracker("tensorboard", run_dir=tmp_path, run_name="r", config=CONFIG, resume_step=0) as tracker:
        tracker.log_row(LATER[0])  # a run started over: nothing of the earlier sessions stays
    assert_tensorboard_equals(tmp_path, LATER[:1])
    killed.close()


# --- Weights & Biases, offline ----------------------------------------------------------------

def test_wandb_offline_run_holds_the_rows_and_the_config(tmp_path, wandb_env):
    with make_tracker("wandb", run_dir=tmp_path, run_name="dfa_s3", group="study1", config=CONFIG) as tracker:
        for row in ROWS:
            tracker.log_row(row)
    run_id = json.loads((tmp_path / "wandb" / "beyondbp_tracker.json").read_text())["id"]
    assert tracker.location.startswith(f"W&B run {run_id}, offline in {tmp_path / 'wandb'}")
    [folder] = offline_folders(tmp_path)
    assert folder.name.endswith(run_id)
    records = wandb_records(folder)
    assert wandb_history(records) == by_step(ROWS)  # exact: W&B keeps float64
    [run] = [r["run"] for r in records if r["type"] == "run"]
    assert (run["run_id"], run["display_name"], run["run_group"], run["project"]) == (run_id, "dfa_s3", "study1", "beyondbp")
    config = {k: v for k, v in run["config"]["update"].items() if k != "_wandb"}
    assert config == CONFIG
    assert [r["exit"]["exit_code"] for r in records if r["type"] == "exit"] == [0]


KILLED_SESSION = textwrap.dedent("""
    import sys, time
    from beyondbp.train.tracking import make_tracker
    sys.path.insert(0, sys.argv[2])
    from test_tracking import CONFIG, ROWS
    tracker = make_tracker("wandb", run_dir=sys.argv[1], run_name="r", group="g", config=CONFIG)
    for row in ROWS:
        tracker.log_row(row)
    print("logged", flush=True)
    time.sleep(600)
""")


def wait_for_history(run_dir: Path, rows, timeout_s: float = 120) -> None:
    """Until W&B's reader finds every row of `rows` in the run's offline .wandb log."""
    deadline = time.monotonic() + timeout_s
    while True:
        folders = offline_folders(run_dir)
        if folders:
            out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(folders[0])],
                                 capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            if out.returncode == 0 and wandb_history(records) == by_step(rows):
                return
        assert time.monotonic() < deadline, f"the .wandb log held not every row after {timeout_s} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_wandb_resume_continues_the_run_after_a_hard_kill(tmp_path, wandb_env):
    """A SIGKILL once every row is in the .wandb log keeps every row; the resumed session is the
    same run, and the killed process leaves nothing in /tmp."""
    in_tmp = tmp_wandb_leftovers()
    # its own wandb-core, as a run of its own has: not the service this test process may have started
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    worker = subprocess.Popen([sys.executable, "-c", KILLED_SESSION, str(tmp_path), str(Path(__file__).parent)],
                              stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, env=env)
    try:
        assert worker.stdout.readline().strip() == "logged"
        wait_for_history(tmp_path, ROWS)  # W&B flushes its .wandb log about once a second
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=60)
    with make_tracker("wandb", run_dir=tmp_path, run_name="r", group="g", config=CONFIG, resume_step=25) as tracker:
        for row in LATER:
            tracker.log_row(row)
    first, second = offline_folders(tmp_path)
    run_id = json.loads((tmp_path / "wandb" / "beyondbp_tracker.json").read_text())["id"]
    assert first.name.endswith(run_id) and second.name.endswith(run_id)
    killed, resumed = wandb_records(first), wandb_records(second)
    assert wandb_history(killed) == by_step(ROWS) and not [r for r in killed if r["type"] == "exit"]
    assert wandb_history(resumed) == by_step(LATER)
    [run] = [r["run"] for r in resumed if r["type"] == "run"]
    assert run["run_id"] == run_id and run["resume"] is True

    with make_tracker("wandb", run_dir=tmp_path, run_name="r", config=CONFIG, resume_step=0):
        pass  # a run that starts over is another W&B run
    assert json.loads((tmp_path / "wandb" / "beyondbp_tracker.json").read_text())["id"] != run_id
    assert tmp_wandb_leftovers() == in_tmp
