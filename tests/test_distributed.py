"""One run across processes: torchrun + DDP (gloo on CPU) must be the same run as one process.

Each test starts real `torchrun --nproc_per_node=2` jobs, so each takes seconds, not less.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import beyondbp.train.loop as train_module
import beyondbp.train.setup as trainer_setup
from beyondbp.config import build_config

pytestmark = pytest.mark.slow  # each test starts torchrun with two workers

TINY = ["model.n_layer=2", "model.d_model=16", "model.n_head=2", "model.context=32",
        "train.batch_tokens=1024", "train.eval_tokens=2048", "train.n_evals=5",
        "train.threads=1", "train.progress=off", "train.lr=1e-2"]
REL_TOL = 1e-5

# Trains through beyondbp.train.train() and saves this rank's method state (weights and
# feedback buffers): the trainer set-up's build_method is wrapped to keep the object train() builds.
WORKER = textwrap.dedent("""
    import os, sys
    import torch
    import beyondbp.train.loop as train_module
    import beyondbp.train.setup as trainer_setup
    from beyondbp.config import build_config

    built = []
    build_method = trainer_setup.build_method
    def keep(*args, **kwargs):
        built.append(build_method(*args, **kwargs))
        return built[-1]
    trainer_setup.build_method = keep
    out, dump = sys.argv[1], sys.argv[2]
    train_module.train(build_config(overrides=sys.argv[3:]), out, quiet=True)
    torch.save(built[-1].state_dict(), os.path.join(dump, "rank" + os.environ["RANK"] + ".pt"))
""")


def torchrun(n_procs: int, *args) -> list[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n_procs}",
            "--master_addr=127.0.0.1", f"--master_port={port}", *map(str, args)]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_single(run_dir: Path, overrides: list[str], monkeypatch) -> torch.nn.Module:
    """One process in this interpreter; returns the trained method."""
    built = []
    build_method = trainer_setup.build_method  # the one trainer set-up builds the method
    monkeypatch.setattr(trainer_setup, "build_method", lambda *a, **k: built.append(build_method(*a, **k)) or built[-1])
    train_module.train(build_config(overrides=overrides), run_dir, quiet=True)
    monkeypatch.setattr(trainer_setup, "build_method", build_method)
    return built[-1]


def assert_same_curve(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for row_a, row_b in zip(a, b):
        for key in ("val_loss", "train_loss"):
            if row_a[key] is None:
                assert row_b[key] is None
            else:
                assert row_a[key] == pytest.approx(row_b[key], rel=REL_TOL), (key, row_a["step"])


@pytest.mark.parametrize("method, extra", [
    ("bp", []),
    ("dfa", []),  # every layer an injection point, weight gradients only
    ("dfa_block", ["train.micro_batch_tokens=512"]),  # with accumulation: no_sync, then one all-reduce
    ("local", []),  # auxiliary heads: method parameters outside the model
    ("synthetic", []),  # gradient predictors trained inside the one backward
    ("forward_grad", ["method.perturbations=4", "train.lr=3e-2"]),  # every rank draws the same directions
])
def test_two_processes_train_the_same_run_as_one(tmp_path, monkeypatch, method, extra):
    overrides = TINY + [f"method.name={method}", "train.tokens=20480", *extra]
    single = train_single(tmp_path / "single", overrides, monkeypatch)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    done = subprocess.run(torchrun(2, worker, tmp_path / "ddp", tmp_path, *overrides),
                          env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert rank0.keys() == rank1.keys() == single.state_dict().keys()
    for name in rank0:  # every weight and feedback buffer bit-identical across ranks
        assert torch.equal(rank0[name], rank1[name]), name
    for name, value in single.state_dict().items():
        if name.startswith("feedback"):  # the fixed matrices: same draw as one process
            assert torch.equal(rank0[name], value), name
        else:
            # Adam turns float noise in a zero gradient (the key bias's) into ~1e-6 steps
            torch.testing.assert_close(rank0[name], value, rtol=1e-4, atol=3e-5)

    ddp_rows, single_rows = metrics(tmp_path / "ddp"), metrics(tmp_path / "single")
    assert len(ddp_rows) >= 5 and ddp_rows[-1]["step"] == 20
    learned = 0.3 if method == "forward_grad" else 0.5  # 20 steps of a 4-direction estimate learn less
    assert ddp_rows[-1]["val_loss"] < ddp_rows[0]["val_loss"] - learned
    assert_same_curve(ddp_rows, single_rows)
    # the run directory holds rank 0's outputs and nothing else
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [
        "checkpoint.pt", "config.yaml", "data.json", "metrics.jsonl", "summary.json"]


def worker_pids(torchrun_pid: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes, read from /proc."""
    pids = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != torchrun_pid:
                continue
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        rank = next((int(v[5:]) for v in environ if v.startswith(b"RANK=")), None)
        if rank is not None:
            pids[rank] = int(stat.parent.name)
    return pids


def start_cli_run(run_dir: Path, overrides: list[str]) -> subprocess.Popen:
    cmd = torchrun(2, "-m", "beyondbp", "train", "--out", run_dir, *overrides)
    return subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def checkpoint_step(run_dir: Path) -> int:
    """The step of the run's checkpoint.pt, -1 while there is none (it is replaced atomically)."""
    path = run_dir / "checkpoint.pt"
    return torch.load(path, weights_only=False)["step"] if path.exists() else -1


def wait_for_eval(run_dir: Path, proc: subprocess.Popen, min_step: int, timeout_s: float = 300,
                  checkpointed: bool = False) -> dict[int, int]:
    """Once metrics.jsonl holds a row at or after `min_step` (and, with `checkpointed`, so does
    checkpoint.pt: the row is written before the checkpoint, so a test that reads the checkpoint
    waits for it): {rank: pid} of the workers."""
    deadline = time.monotonic() + timeout_s
    path = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if (path.exists() and any(r["step"] >= min_step for r in train_module.read_metrics(path))
                and (not checkpointed or checkpoint_step(run_dir) >= min_step)):
            pids = worker_pids(proc.pid)
            assert len(pids) == 2
            return pids
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no evaluation at step >= {min_step} within {timeout_s}s")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers in /proc")
def test_killed_two_process_run_resumes_on_one_process(tmp_path, monkeypatch):
    # 48 steps, ending on the unigram plateau: the first steps ran on two processes, whose all-reduce
    # sums in another order (~4e-8 relative); once this tiny dfa_block model leaves the plateau
    # (past step ~60) that noise grows to ~2e-5, which says nothing about resuming
    overrides = TINY + ["method.name=dfa_block", "train.tokens=49152", "train.checkpoint_every_s=0"]
    run_dir = tmp_path / "run"
    proc = start_cli_run(run_dir, overrides)
    pids = wait_for_eval(run_dir, proc, min_step=3, checkpointed=True)
    # torchrun starts each worker in its own session, so killing torchrun's group would not reach them
    for pid in (*pids.values(), proc.pid):
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=30)

    n_steps = 48
    killed_at = torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"]
    assert 3 <= killed_at < n_steps - 10
    assert not (run_dir / "summary.json").exists()
    train_single(run_dir, overrides, monkeypatch)  # resumes with one process
    train_single(tmp_path / "uninterrupted", overrides, monkeypatch)

    resumed, reference = metrics(run_dir), metrics(tmp_path / "uninterrupted")
    assert resumed[-1]["step"] == n_steps
    assert_same_curve(resumed, reference)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == n_steps
    assert summary["final_val_loss"] == pytest.approx(reference[-1]["val_loss"], rel=REL_TOL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers in /proc")
def test_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    # no time-based checkpoints: the only checkpoint is the one written on interruption
    overrides = TINY + ["method.name=bp", "train.tokens=409600", "train.checkpoint_every_s=1e9"]
    run_dir = tmp_path / "run"
    proc = start_cli_run(run_dir, overrides)
    pids = wait_for_eval(run_dir, proc, min_step=4)
    os.kill(pids[1], signal.SIGTERM)  # rank 0 is not signalled; it must still stop, not hang
    _, stderr = proc.communicate(timeout=60)

    stopped = {int(m.group(1)) for m in re.finditer(r"interrupted by signal .* at step (\d+)", stderr)}
    assert "on another process" in stderr and "signal 15" in stderr, stderr[-3000:]
    assert len(stopped) == 1, stderr[-3000:]  # both ranks name the same step
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == stopped.pop() < 400


def test_process_count_not_dividing_the_batch_is_a_one_line_error(tmp_path):
    overrides = TINY + ["train.batch_tokens=96", "train.tokens=960"]  # 3 sequences over 2 processes
    done = subprocess.run(torchrun(2, "-m", "beyondbp", "train", "--out", tmp_path / "run", *overrides),
                          env=env(), capture_output=True, text=True, timeout=120)
    errors = {line for line in done.stderr.splitlines() if line.startswith("beyondbp: error:")}
    assert errors == {"beyondbp: error: train.batch_tokens: 3 sequences per batch do not split over "
                      "2 processes x 1 micro-batches; change train.batch_tokens or the process count"}
    assert str(Path(train_module.__file__).parent) not in done.stderr  # no traceback from our code
    codes = re.findall(r"exitcode\s*:\s*(\d+)", done.stderr)  # torchrun's failure report (repeats the root cause)
    assert len(codes) >= 2 and set(codes) == {"2"}  # each worker exits 2
    assert done.returncode != 0
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
