"""Branched budgets: a branch of a trunk equals a standalone constant_cooldown run, bit for bit,
and a killed trunk or branch resumes to the same result."""
import json
import pytest
import torch
import yaml

from beyondbp.config import build_config, to_dict
from beyondbp.runs.chain import branch_point, trunk_config, write_chain_file
from beyondbp.train.chain import train_chain
from beyondbp.runs.folder import snapshot_path
from beyondbp.train.loop import train

# 10 and 20 steps of 1,024 tokens; a 2-step warm-up whatever the budget; branch points 8 and 16
BRANCHED = ["train.schedule=constant_cooldown", "train.warmup_tokens=2048", "train.cooldown_frac=0.2",
            "train.checkpoint_every_s=0"]
BUDGETS = (10240, 20480)


def _cfg(tiny, tokens, extra=()):
    return build_config(overrides=[*tiny, *BRANCHED, f"train.tokens={tokens}", *extra])


def _write_chain(tmp_path, tiny, extra=()):
    """A chain folder for BUDGETS as an executor writes it: run.yaml in every folder, chain.yaml."""
    cfgs = [_cfg(tiny, t, extra) for t in BUDGETS]
    steps = [branch_point(c) for c in cfgs]
    trunk = tmp_path / "trunk"
    dirs = [tmp_path / f"branch{t}" for t in BUDGETS]
    for d, cfg in [(trunk, trunk_config(cfgs[-1], steps[-1])), *zip(dirs, cfgs)]:
        d.mkdir(parents=True)
        (d / "run.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    write_chain_file(trunk, list(zip(dirs, steps)))
    return trunk, dirs, cfgs


def _weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["method"]


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_branch_points_and_trunk_schedule(tiny_overrides):
    cfgs = [_cfg(tiny_overrides, t) for t in BUDGETS]
    assert [branch_point(c) for c in cfgs] == [8, 16]
    trunk = trunk_config(cfgs[1], 16)
    from beyondbp.runs.schedule import learning_rate
    # the trunk's learning rates are each branch's up to its branch point: same warm-up, then constant
    for cfg, step in zip(cfgs, (8, 16)):
        assert [learning_rate(trunk, s, 16) for s in range(step)] == [learning_rate(cfg, s, step * 10 // 8)
                                                                      for s in range(step)]
    assert learning_rate(trunk, 0, 16) == pytest.approx(0.5e-2) and learning_rate(trunk, 15, 16) == 1e-2


@pytest.mark.parametrize("method", ["bp", pytest.param("dfa_block", marks=pytest.mark.slow)])
def test_branches_are_bit_identical_to_standalone_runs(tmp_path, tiny_overrides, method):
    trunk, dirs, cfgs = _write_chain(tmp_path, tiny_overrides, [f"method={method}"])
    summaries = train_chain(trunk, quiet=True)
    assert snapshot_path(trunk, 8).exists() and snapshot_path(trunk, 16).exists()
    for d, cfg in zip(dirs, cfgs):
        alone = train(cfg, tmp_path / f"alone{cfg.train.tokens}", quiet=True)
        branched = summaries[str(d)]
        assert branched["status"] == "completed" and branched["steps"] == alone["steps"]
        assert branched["final_val_loss"] == alone["final_val_loss"]  # exactly, not approximately
        assert _same_weights(d, tmp_path / f"alone{cfg.train.tokens}")
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        assert rows[0]["step"] == 0 and rows[-1]["step"] == alone["steps"]
        assert rows[-1]["val_loss"] == alone["final_val_loss"]
    # the branches differ from each other: the longer budget ends lower
    assert summaries[str(dirs[1])]["final_val_loss"] < summaries[str(dirs[0])]["final_val_loss"]


class _Killed(BaseException):
    """Stands for SIGKILL: the process stops between two steps, with only what it wrote so far."""


def _kill_at(monkeypatch, run_dir, step):
    """Make the chain die in `run_dir` before training step `step` (after the checkpoint of the one before)."""
    from beyondbp.train import loop
    original = loop._Run.step

    def step_or_die(self, state, lr, signalled):
        if self.out == run_dir and state.step == step:
            raise _Killed
        return original(self, state, lr, signalled)

    monkeypatch.setattr(loop._Run, "step", step_or_die)


@pytest.mark.parametrize("where,step", [("trunk", 12), pytest.param("branch", 18, marks=pytest.mark.slow)])
def test_killed_chain_resumes_bit_identical(tmp_path, tiny_overrides, monkeypatch, where, step):
    """Killed mid-trunk (after its first branch point) or mid-cooldown of the last branch (16 -> 20):
    rerunning ends where an uninterrupted chain ends, and the trunk is not trained again past what
    it kept."""
    full, full_dirs, _ = _write_chain(tmp_path / "full", tiny_overrides)
    expected = train_chain(full, quiet=True)
    trunk, dirs, _ = _write_chain(tmp_path / "killed", tiny_overrides)
    with monkeypatch.context() as patch:
        _kill_at(patch, trunk if where == "trunk" else dirs[1], step)
        with pytest.raises(_Killed):
            train_chain(trunk, quiet=True)
    assert not (dirs[1] / "summary.json").exists()
    assert snapshot_path(trunk, 8).exists() and snapshot_path(trunk, 16).exists() == (where == "branch")
    kept = snapshot_path(trunk, 8).read_bytes()
    if where == "branch":
        saved = torch.load(dirs[1] / "checkpoint.pt", weights_only=True)
        assert saved["step"] == step  # the branch stopped mid-cooldown, with its own checkpoint
        trunk_mtime = (trunk / "checkpoint.pt").stat().st_mtime_ns
    resumed = train_chain(trunk, quiet=True)
    assert snapshot_path(trunk, 8).read_bytes() == kept
    if where == "branch":
        assert (trunk / "checkpoint.pt").stat().st_mtime_ns == trunk_mtime  # the trunk was not touched
    for d, f in zip(dirs, full_dirs):
        assert resumed[str(d)]["final_val_loss"] == expected[str(f)]["final_val_loss"]
        assert _same_weights(d, f)


def test_a_diverged_trunk_leaves_its_later_branches_diverged(tmp_path, tiny_overrides):
    from beyondbp.methods.bp import Backprop
    from beyondbp.methods.registry import register

    class NaNAfterTen(Backprop):  # diverges at step 10: after the first branch point (8), before the second
        name = "nan_after_ten_for_test"
        calls = 0

        def forward(self, idx, targets):
            loss, objective = super().forward(idx, targets)
            NaNAfterTen.calls += 1
            return (loss * float("nan"), objective) if self.training and NaNAfterTen.calls > 10 else (loss, objective)

    register(NaNAfterTen)
    trunk, dirs, _ = _write_chain(tmp_path, tiny_overrides, ["method=nan_after_ten_for_test", "train.n_evals=1"])
    summaries = train_chain(trunk, quiet=True)
    assert json.loads((trunk / "summary.json").read_text())["status"] == "diverged"
    assert summaries[str(dirs[1])]["status"] == "diverged" and "step 16" in summaries[str(dirs[1])]["error"]
    # the first branch left the trunk at step 8, before the divergence: it trains its cooldown (and
    # diverges there too, since this method turns NaN for good; its loss is None either way)
    assert summaries[str(dirs[0])]["status"] == "diverged" and (dirs[0] / "metrics.jsonl").exists()


@pytest.mark.parametrize("planted", ["snapshot_link", "data_fifo"])
def test_a_received_trunk_state_that_is_a_link_or_fifo_is_refused_not_copied(tmp_path, planted):
    """A trunk's branch-STEP.pt linked to /dev/zero used to be copied until the disk filled, and a
    FIFO data.json hung the copy: both are refused in one line naming the file."""
    import os
    from beyondbp.config import ConfigError
    from beyondbp.runs.chain import seed_branch
    from beyondbp.runs.folder import DATA_RECORD, snapshot_path
    trunk, branch = tmp_path / "trunks" / "t", tmp_path / "runs" / "b"
    trunk.mkdir(parents=True)
    snapshot = snapshot_path(trunk, 5)
    if planted == "snapshot_link":
        snapshot.symlink_to("/dev/zero")
        bad = snapshot
    else:
        snapshot.write_bytes(b"state")
        os.mkfifo(trunk / DATA_RECORD)
        bad = trunk / DATA_RECORD
    with pytest.raises(ConfigError, match=str(bad)):
        seed_branch(trunk, branch, 5)
    assert not (branch / "checkpoint.pt").exists()
