"""Bad and hostile inputs (issue 18): each gets one line naming the field or file and a non-zero
exit, or the documented safe thing said in one line; nothing already written is lost, nothing
in a shared folder runs code, runs never mix corpora, and a refused command leaves nothing that
blocks the corrected one."""
from __future__ import annotations

import builtins
import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import beyondbp.train.loop as train_mod
import beyondbp.train.setup as trainer_setup
from beyondbp.train import memory as memory_check
from beyondbp.cli.main import main
from beyondbp.config import build_config
from beyondbp.data.cache import cache_entry
from beyondbp.data.tokens import load_token_data
from beyondbp.data.prepare import ShardWriter
from beyondbp.train.loop import train
from conftest import TINY

RESUMABLE = TINY + ["train.checkpoint_every_s=0"]  # 20 steps, a checkpoint after each


# --- helpers ------------------------------------------------------------------------------------
def cli(capsys, *args) -> tuple[int, list[str]]:
    code = main([str(a) for a in args])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def refused(capsys, *args, names=(), code=2) -> str:
    """Run the CLI; assert the exit status and exactly one error line naming every `names`."""
    got, err = cli(capsys, *args)
    assert got == code, err
    assert len(err) == 1 and "error:" in err[0], err
    for name in names:
        assert name in err[0], err
    return err[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def interrupted_run(out: Path, overrides: list[str], at_step: int, monkeypatch) -> None:
    """A run stopped (in this process) just before step `at_step`: checkpoints at at_step and at_step - 1,
    and the lock file `beyondbp train` leaves."""
    original = train_mod._Run.step

    def step(self, state, lr, signalled):
        if state.step == at_step:
            raise KeyboardInterrupt
        return original(self, state, lr, signalled)

    with monkeypatch.context() as patch:
        patch.setattr(train_mod._Run, "step", step)
        with pytest.raises(KeyboardInterrupt):
            train(build_config(overrides=overrides), out, quiet=True)
    (out / "worker.lock").touch()


def same_curve(a: Path, b: Path) -> None:
    assert [r["step"] for r in rows(a)] == [r["step"] for r in rows(b)]
    assert [r["val_loss"] for r in rows(a)] == pytest.approx([r["val_loss"] for r in rows(b)], abs=1e-6)


@pytest.fixture
def full_run(tmp_path):
    out = tmp_path / "full"
    train(build_config(overrides=RESUMABLE), out, quiet=True)
    return out


def write_corpus(path: Path, seed: int = 0) -> Path:
    import random
    rng = random.Random(seed)
    words = "the quick brown fox jumps over lazy dogs while cats and birds sing".split()
    path.write_text("\n\n".join(" ".join(rng.choice(words) for _ in range(300)) for _ in range(40)))
    return path


def edit_keeping_size_and_mtime(path: Path, at: int = 100) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[at:at + 5] = b"XXXXX"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


class _CodeOnLoad:
    """A harmless payload: unpickling it (if anything ever did) creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def plant_crafted_checkpoint(run_dir: Path, marker: Path) -> None:
    torch.save({"method": _CodeOnLoad(marker), "optimizer": {}, "step": 3}, run_dir / "checkpoint.pt")


# --- 1. loading a checkpoint never runs code ----------------------------------------------------------
@pytest.mark.parametrize("command", ["train", "sample"])
def test_crafted_checkpoint_is_refused_in_one_line_and_never_runs(tmp_path, capsys, monkeypatch, command):
    out, marker = tmp_path / "run", tmp_path / "MARKER"
    interrupted_run(out, RESUMABLE, 3, monkeypatch)
    plant_crafted_checkpoint(out, marker)
    (out / "checkpoint.prev.pt").unlink()
    before = snapshot(out)
    args = ["train", "--out", out, *RESUMABLE] if command == "train" else ["sample", "--run", out]
    line = refused(capsys, *args, names=["checkpoint.pt", "refused to load", "asks to import io.open"])
    assert "nothing run" in line
    assert not marker.exists() and snapshot(out) == before


def test_crafted_checkpoint_is_refused_even_with_a_good_one_beside_it(tmp_path, capsys, monkeypatch):
    """A crafted file is not 'damaged': no fallback, the folder is not trusted."""
    out, marker = tmp_path / "run", tmp_path / "MARKER"
    interrupted_run(out, RESUMABLE, 3, monkeypatch)
    plant_crafted_checkpoint(out, marker)
    refused(capsys, "train", "--out", out, *RESUMABLE, names=["checkpoint.pt", "refused to load"])
    assert not marker.exists()


# --- 2. results never mix corpora ------------------------------------------------------------------
def test_resume_on_a_corpus_edited_in_place_is_refused_then_restarted_on_request(tmp_path, capsys, monkeypatch):
    corpus, out = write_corpus(tmp_path / "corpus.txt"), tmp_path / "run"
    overrides = RESUMABLE + [f"data.corpus={corpus}"]
    interrupted_run(out, overrides, 6, monkeypatch)
    old_fingerprint = json.loads((out / "data.json").read_text())["fingerprint"]
    edit_keeping_size_and_mtime(corpus)
    before = snapshot(out)
    line = refused(capsys, "train", "--out", out, *overrides, names=["data.corpus", "mix corpora",
                                                                      "train.on_data_change=restart"])
    assert snapshot(out) == before, line

    code, err = cli(capsys, "train", "--out", out, *overrides, "train.on_data_change=restart")
    assert code == 0, err
    assert any("restarting from step 0" in e and "replaced-1" in e for e in err)
    assert snapshot(out / "replaced-1") == {k: v for k, v in before.items() if k not in ("config.yaml", "worker.lock")}
    new = json.loads((out / "data.json").read_text())["fingerprint"]
    assert new != old_fingerprint and json.loads((out / "summary.json").read_text())["data_fingerprint"] == new
    assert [r["step"] for r in rows(out)][0] == 0 and json.loads((out / "summary.json").read_text())["steps"] == 20


def test_a_run_stopped_before_its_first_checkpoint_simply_starts_on_the_edited_corpus(tmp_path, capsys, monkeypatch):
    corpus, out = write_corpus(tmp_path / "corpus.txt"), tmp_path / "run"
    overrides = RESUMABLE + [f"data.corpus={corpus}"]
    interrupted_run(out, overrides, 0, monkeypatch)  # data.json and the step-0 row, no checkpoint
    assert (out / "data.json").exists() and not (out / "checkpoint.pt").exists()
    edit_keeping_size_and_mtime(corpus)
    code, err = cli(capsys, "train", "--out", out, *overrides)
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["data_fingerprint"] == \
        load_token_data(build_config(overrides=overrides).data).fingerprint


def test_prepare_retokenizes_an_edit_that_keeps_size_and_mtime_and_not_a_touch(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    cfg = build_config(overrides=[f"data.corpus={corpus}"]).data
    first = load_token_data(cfg)
    assert cli(capsys, "data", "prepare", "--quiet", f"data.corpus={corpus}")[0] == 0
    edit_keeping_size_and_mtime(corpus, at=10)
    assert cli(capsys, "data", "prepare", "--quiet", f"data.corpus={corpus}")[0] == 0
    edited = load_token_data(cfg)
    assert edited.fingerprint != first.fingerprint
    text = bytes(edited.train[:20]).decode() + bytes(edited.val[:20]).decode()
    assert "XXXXX" in bytes(edited.train).decode() + bytes(edited.val).decode(), text
    entry = cache_entry(cfg)
    os.utime(corpus)  # a touch: new mtime and ctime, same content -> re-hashed, same entry
    assert cache_entry(cfg) == entry and load_token_data(cfg).fingerprint == edited.fingerprint


STUDY = {
    "name": "hostile", "methods": ["bp"], "sizes": {"a": {"n_layer": 1, "d_model": 8, "n_head": 2}},
    "tokens": 4096, "lrs": {"bp": [1e-2]}, "seeds": [0],
    "base": {"model": {"context": 32}, "train": {"batch_tokens": 512, "n_evals": 3, "eval_tokens": 1024,
                                                  "checkpoint_every_s": 0, "threads": 1}},
}


def study_with_an_interrupted_run(tmp_path, monkeypatch, spec_dict) -> tuple[Path, Path, Path]:
    """(spec file, study folder, run folder): a study whose one run stopped at step 3."""
    from helpers import planned_study
    plan, study = planned_study(tmp_path, spec_dict)
    spec = tmp_path / "spec.yaml"
    run_dir = study / "runs" / plan.runs[0].name
    original = train_mod._Run.step

    def step(self, state, lr, signalled):
        if state.step == 3:
            raise KeyboardInterrupt
        return original(self, state, lr, signalled)

    with monkeypatch.context() as patch:
        patch.setattr(train_mod._Run, "step", step)
        with pytest.raises(KeyboardInterrupt):
            train(plan.runs[0].cfg, run_dir, quiet=True)
    return spec, study, run_dir


@pytest.mark.slow
def test_study_refuses_crafted_checkpoints_and_an_edited_corpus(tmp_path, capsys, monkeypatch):
    corpus, marker = write_corpus(tmp_path / "corpus.txt"), tmp_path / "MARKER"
    spec, study, run_dir = study_with_an_interrupted_run(
        tmp_path, monkeypatch, {**STUDY, "base": {**STUDY["base"], "data": {"corpus": str(corpus)}}})
    (run_dir / "checkpoint.prev.pt").unlink()
    plant_crafted_checkpoint(run_dir, marker)
    code, err = cli(capsys, "study", "run", spec, "--out", study, "--workers", 1, "--bootstrap", 0)
    assert code == 1 and not marker.exists()
    failure = json.loads((run_dir / "summary.json").read_text())
    assert failure["status"] == "failed" and "checkpoint.pt: refused to load" in failure["error"]

    edit_keeping_size_and_mtime(corpus)
    before = snapshot(study)
    refused(capsys, "study", "run", spec, "--out", study, "--workers", 1, names=["data.corpus", run_dir.name,
                                                                                "on_data_change=restart"])
    assert snapshot(study) == before


# --- 3. every number is validated before anything is written ---------------------------------------
@pytest.mark.parametrize("override,key", [
    ("train.lr=nan", "train.lr"), ("train.lr=-1", "train.lr"), ("train.lr=inf", "train.lr"), ("train.lr=0", "train.lr"),
    ("train.beta1=1", "train.beta1"), ("train.beta2=-0.1", "train.beta2"), ("train.weight_decay=-1", "train.weight_decay"),
    ("train.grad_clip=nan", "train.grad_clip"), ("train.min_lr_ratio=1.5", "train.min_lr_ratio"),
    ("train.warmup_frac=-0.1", "train.warmup_frac"), ("train.cooldown_frac=inf", "train.cooldown_frac"),
    ("train.tokens=0", "train.tokens"), ("train.tokens=1e30", "train.tokens"), ("train.eval_tokens=-5", "train.eval_tokens"),
    ("train.n_evals=0", "train.n_evals"), ("train.checkpoint_every_s=nan", "train.checkpoint_every_s"),
    ("train.alignment_every_evals=-1", "train.alignment_every_evals"), ("train.micro_batch_tokens=0", "train.micro_batch_tokens"),
    ("train.dtype=float16", "train.dtype"), ("train.on_data_change=ignore", "train.on_data_change"),
    ("model.dropout=1.5", "model.dropout"), ("model.dropout=nan", "model.dropout"), ("model.d_model=-16", "model.d_model"),
    ("model.vocab_size=1", "model.vocab_size"), ("seed=-5", "seed"), ("seed=1e40", "seed"),
    ("method.feedback_scale=0", "method.feedback_scale"), ("method.feedback_scale=nan", "method.feedback_scale"),
    ("method.perturbations=0", "method.perturbations"), ("data.val_fraction=0", "data.val_fraction"),
    ("data.val_fraction=nan", "data.val_fraction"), ("data.workers=-1", "data.workers"),
    ("data.shard_tokens=0", "data.shard_tokens"), ("data.max_tokens=-1", "data.max_tokens"),
])
def test_bad_numbers_are_refused_before_anything_is_written(tmp_path, capsys, override, key):
    out = tmp_path / "run"
    line = refused(capsys, "train", "--out", out, *TINY, override, names=[f"error: {key}:"])
    assert "must be" in line or "unknown" in line
    assert not out.exists()


def test_nan_in_a_yaml_config_is_named(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  lr: .nan\n")
    refused(capsys, "train", "--out", tmp_path / "run", "--config", config, *TINY[:-1], names=["train.lr", "nan"])


def test_inf_learning_rate_exits_before_training_and_the_corrected_command_runs_there(tmp_path, capsys):
    out = tmp_path / "run"
    refused(capsys, "train", "--out", out, *TINY, "train.lr=inf", names=["train.lr"])
    code, err = cli(capsys, "train", "--out", out, *TINY)
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("args,key", [
    (["mlp", "train.lr=nan"], "train.lr"), (["mlp", "train.lr=inf"], "train.lr"),
    (["mlp", "mlp.epochs=-1"], "mlp.epochs"), (["data", "prepare", "data.val_fraction=nan"], "data.val_fraction"),
    (["data", "prepare", "data.workers=-2"], "data.workers"),
])
def test_mlp_and_data_paths_give_the_same_message(tmp_path, capsys, args, key):
    extra = ["--out", tmp_path / "run"] if args[0] == "mlp" else []
    line = refused(capsys, *args[:-1], *extra, args[-1], names=[f"error: {key}: must be"])
    assert not (tmp_path / "run").exists(), line


@pytest.mark.parametrize("override,key", [
    ("lrs.bp=[nan]", "lrs.bp"), ("lrs.bp=[.inf]", "lrs.bp"), ("lrs.bp=[-1e-3]", "lrs.bp"), ("seeds=[-5]", "seeds"),
    ("tokens_per_param=nan", "tokens_per_param"), ("tokens=0", "tokens"), ("base.train.lr=inf", "base.train.lr"),
    ("base.model.dropout=1.5", "base.model.dropout"), ("per_method.dfa_block.train.beta1=1", "per_method.dfa_block.train.beta1"),
    ("sizes.tiny.d_model=nan", "sizes.tiny.d_model"), ("sizes.tiny.n_layer=0", "sizes.tiny.n_layer"),
    ("variants.lit={method: dfa_block, method.feedback_scale: -1}", "variants.lit.method.feedback_scale"),
    ("sizes={../up: {n_layer: 1, d_model: 8, n_head: 2}}", "sizes"),
])
def test_bad_study_numbers_fail_plan_and_run_before_anything_is_written(tmp_path, capsys, override, key):
    refused(capsys, "study", "plan", "--preset", "smoke", override, names=[key])
    refused(capsys, "study", "run", "--preset", "smoke", "--out", tmp_path / "s", override, names=[key])
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("args,flag", [
    (["sample", "--run", "nowhere", "--top-k", "0"], "--top-k"), (["sample", "--run", "nowhere", "--temperature", "nan"], "--temperature"),
    (["sample", "--run", "nowhere", "--temperature", "-1"], "--temperature"), (["sample", "--run", "nowhere", "--tokens", "-5"], "--tokens"),
    (["sample", "--run", "nowhere", "--seed", "-1"], "--seed"),
    (["study", "report", "nowhere", "--bootstrap", "-1"], "--bootstrap"),
    (["study", "run", "--preset", "smoke", "--out", "S", "--bootstrap", "-1"], "--bootstrap"),
    (["study", "run", "--preset", "smoke", "--out", "S", "--workers", "0"], "--workers"),
])
def test_bad_flags_are_named(tmp_path, capsys, monkeypatch, args, flag):
    monkeypatch.chdir(tmp_path)
    refused(capsys, *args, names=[f"error: {flag}: must be"])
    assert not (tmp_path / "S").exists()


def test_fit_bootstrap_and_seed_ranges(tmp_path, capsys):
    points = tmp_path / "p.csv"
    points.write_text("method,compute_pf_days,loss\nbp,1e-9,3.0\n")
    for flag, value in (("--bootstrap", "-1"), ("--seed", "-3")):
        code = main(["fit", str(points), flag, value])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and f"{flag}: must be" in err[0]


# --- 4. a model that cannot fit is refused before it is built -----------------------------------------
def test_a_model_larger_than_the_machine_is_refused_without_building_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trainer_setup, "build_model", lambda *a, **k: pytest.fail("the model was built"))
    out = tmp_path / "run"
    line = refused(capsys, "train", "--out", out, *TINY, "model.d_model=16384", "model.n_layer=64", "model.n_head=64",
                   names=["GiB", "train.memory_check=false"])
    need = memory_check.training_bytes(build_config(overrides=TINY + ["model.d_model=16384", "model.n_layer=64",
                                                                      "model.n_head=64"]), 32, bf16=False)
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert need["weights"] > machine and f"weights alone need {need['weights'] / 2**30:.1f} GiB" in line
    assert not out.exists()  # refused before the folder was made (and before torch loaded the model code)


def test_memory_limit_key_and_the_estimate(tmp_path, capsys, monkeypatch):
    cfg = build_config(overrides=TINY)
    need = memory_check.training_bytes(cfg, 32, bf16=False)
    from beyondbp.model.build import build_model
    from beyondbp.model.shape import resolve_model_config
    model = build_model(resolve_model_config(cfg.model, 256))
    assert need["weights"] == 4 * sum(p.numel() for p in model.parameters())
    assert need["gradients_and_optimizer"] == 3 * need["weights"]
    assert memory_check.training_bytes(cfg, 64, bf16=False)["activations"] == 2 * need["activations"]

    monkeypatch.setattr(memory_check, "available_bytes", lambda: (need["total"] - 1, "test limit"))
    refused(capsys, "train", "--out", tmp_path / "a", *TINY, names=["test limit", "train.memory_check=false"])
    assert cli(capsys, "train", "--out", tmp_path / "a", *TINY, "train.memory_check=false")[0] == 0

    on_gpu = memory_check.training_bytes(cfg, 32, bf16=True)  # train.dtype=auto: bf16 autocast on a GPU
    assert on_gpu["activations"] < need["activations"] and on_gpu["weights"] == need["weights"]
    monkeypatch.setattr(memory_check, "gpu_free_bytes", lambda device: on_gpu["total"] - 1)
    monkeypatch.setattr(memory_check, "available_bytes", lambda: (2**40, "host"))
    with pytest.raises(Exception, match="the GPU's free memory"):
        memory_check.check_memory(cfg, 32, "cuda")


def test_study_refuses_a_size_that_cannot_fit_before_writing(tmp_path, capsys):
    out = tmp_path / "s"
    refused(capsys, "study", "run", "--preset", "smoke", "--out", out, "sizes.tiny.d_model=16384",
            "sizes.tiny.n_layer=64", "sizes.tiny.n_head=64", names=["tiny", "GiB"])
    assert not out.exists()


# --- 5. damaged files: fall back, or one line naming the file ---------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "other_shapes"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, monkeypatch, full_run, damage):
    out = tmp_path / "run"
    interrupted_run(out, RESUMABLE, 6, monkeypatch)
    path = out / "checkpoint.pt"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x80\x02garbage" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        train(build_config(overrides=RESUMABLE + ["model.d_model=32"]), tmp_path / "other", quiet=True)
        shutil.copy(tmp_path / "other" / "checkpoint.pt", path)
    code, err = cli(capsys, "train", "--out", out, *RESUMABLE)
    assert code == 0, err
    warnings = [e for e in err if "checkpoint.pt" in e]
    assert len(warnings) == 1 and "resuming from checkpoint.prev.pt at step 5" in warnings[0]
    same_curve(out, full_run)


def test_damaged_checkpoint_without_an_earlier_one_is_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    interrupted_run(out, RESUMABLE, 1, monkeypatch)  # one checkpoint, no previous
    assert not (out / "checkpoint.prev.pt").exists()
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 half a zip")
    before = snapshot(out)
    refused(capsys, "train", "--out", out, *RESUMABLE, names=["checkpoint.pt", "unreadable"])
    refused(capsys, "sample", "--run", out, names=["checkpoint.pt", "unreadable"])
    assert snapshot(out) == before


@pytest.mark.parametrize("content", ["{not json", "[]", "\x00\x01binary"])
def test_corrupt_summary_is_one_line_naming_it(tmp_path, capsys, monkeypatch, content):
    out = tmp_path / "run"
    interrupted_run(out, RESUMABLE, 6, monkeypatch)
    (out / "summary.json").write_text(content)
    before = snapshot(out)
    refused(capsys, "train", "--out", out, *RESUMABLE, names=["summary.json"])
    assert snapshot(out) == before


def test_corrupt_summary_in_a_study_is_named_by_status_and_run(tmp_path, capsys, monkeypatch):
    spec, study, run_dir = study_with_an_interrupted_run(tmp_path, monkeypatch, STUDY)
    (run_dir / "summary.json").write_text("[1, 2]")
    before = snapshot(study)
    refused(capsys, "study", "status", study, names=["summary.json"])
    refused(capsys, "study", "run", spec, "--out", study, names=["summary.json"])
    assert snapshot(study) == before


def test_a_cut_last_metrics_line_is_restored_not_dropped(tmp_path, capsys, monkeypatch, full_run):
    out = tmp_path / "run"
    interrupted_run(out, RESUMABLE, 6, monkeypatch)
    text = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])
    code, err = cli(capsys, "train", "--out", out, *RESUMABLE)
    assert code == 0, err
    assert any("metrics.jsonl" in e and "restored from the checkpoint" in e for e in err)
    same_curve(out, full_run)


# --- 6. full disks and planted links ------------------------------------------------------------------
def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


_real_fsync = os.fsync


def test_full_disk_at_a_checkpoint_keeps_the_last_one_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch,
                                                                                     full_run):
    out = tmp_path / "run"
    real_save, saves = torch.save, []

    def save_until_full(obj, f, *args, **kwargs):
        saves.append(obj["step"])
        if len(saves) > 6:
            f.write(b"PK\x03\x04partial")
            _full_disk()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_full)
    line = refused(capsys, "train", "--out", out, *RESUMABLE, names=["checkpoint.pt", "No space left on device",
                                                                     "previous content is kept"])
    monkeypatch.setattr(torch, "save", real_save)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], line
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 6
    assert cli(capsys, "train", "--out", out, *RESUMABLE)[0] == 0
    same_curve(out, full_run)


def test_full_disk_on_text_files_and_metrics_is_one_line(tmp_path, capsys, monkeypatch):
    import beyondbp.atomic_write as aw
    monkeypatch.setattr(aw.os, "fsync", _full_disk)
    refused(capsys, "train", "--out", tmp_path / "a", *TINY, names=["config.yaml", "No space left on device"])
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(aw.os, "fsync", _real_fsync)
    monkeypatch.setattr(aw.os, "write", _full_disk)
    refused(capsys, "train", "--out", tmp_path / "b", *TINY, names=["metrics.jsonl", "No space left on device"])


def test_full_disk_while_preparing_keeps_the_blocks_done_and_resumes(tmp_path, capsys, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus.txt")
    clean = load_token_data(build_config(overrides=[f"data.corpus={corpus}", f"data.cache_dir={tmp_path / 'c1'}"]).data)
    monkeypatch.setattr(ShardWriter, "write", _full_disk)
    refused(capsys, "data", "prepare", "--quiet", f"data.corpus={corpus}", names=["BEYONDBP_CACHE",
                                                                                   "No space left on device"])
    cache = os.environ["BEYONDBP_CACHE"]
    monkeypatch.undo()
    monkeypatch.setenv("BEYONDBP_CACHE", cache)
    assert cli(capsys, "data", "prepare", "--quiet", f"data.corpus={corpus}")[0] == 0
    assert load_token_data(build_config(overrides=[f"data.corpus={corpus}"]).data).fingerprint == clean.fingerprint


@pytest.mark.parametrize("planted", ["checkpoint.pt.tmp", "summary.json.tmp", "config.yaml.tmp"])
def test_a_planted_link_is_never_written_through(tmp_path, capsys, planted):
    out, victim = tmp_path / "run", tmp_path / "victim.txt"
    victim.write_text("precious")
    out.mkdir()
    (out / planted).symlink_to(victim)
    code, err = cli(capsys, "train", "--out", out, *TINY)
    assert code == 0, err
    assert victim.read_text() == "precious"


def test_a_checkpoint_half_written_by_a_kill_is_cleaned_up_on_resume(tmp_path, capsys, monkeypatch):
    out, victim = tmp_path / "run", tmp_path / "victim.txt"
    victim.write_text("precious")
    interrupted_run(out, RESUMABLE, 6, monkeypatch)
    (out / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"PK\x03\x04 half")
    (out / ".summary.json.pl4nt.tmp").symlink_to(victim)
    assert cli(capsys, "train", "--out", out, *RESUMABLE)[0] == 0
    assert not list(out.glob(".*.tmp")) and victim.read_text() == "precious"


@pytest.mark.parametrize("planted", ["checkpoint.pt", "summary.json", "metrics.jsonl", "config.yaml", "worker.lock"])
def test_a_planted_link_to_junk_is_refused_and_its_target_untouched(tmp_path, capsys, planted):
    out, victim = tmp_path / "run", tmp_path / "victim.txt"
    victim.write_text("precious")
    out.mkdir()
    (out / planted).symlink_to(victim)
    refused(capsys, "train", "--out", out, *TINY, names=[planted])
    assert victim.read_text() == "precious"


# --- 7. small ones ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["train"], ["mlp"], ["study", "run", "--preset", "smoke"]])
def test_empty_out_is_refused(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    refused(capsys, *command, "--out", "", *(TINY if command == ["train"] else []), names=["--out"])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", [["train", "--out", "R", "--config"], ["study", "plan"]])
def test_binary_config_or_spec_names_the_file(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    refused(capsys, *command, "bin.yaml", names=["bin.yaml", "not UTF-8"])


def test_yaml_tags_are_not_executed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.yaml").write_text("train: !!python/object/apply:os.system ['touch MARKER']\n")
    refused(capsys, "train", "--out", "R", "--config", "evil.yaml", names=["evil.yaml"])
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("content", [b"\xff\xfe\x00m\x00e\x00t", b"method,compute_pf_days,loss\nbp,1,\x00"])
def test_binary_points_file_names_the_file(tmp_path, capsys, content):
    points = tmp_path / "points.csv"
    points.write_bytes(content)
    code = main(["fit", str(points)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "points.csv" in err[0]


def test_unwritable_cache_folder_is_one_line(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BEYONDBP_CACHE", str(blocker / "cache"))
    refused(capsys, "train", "--out", tmp_path / "run", *TINY, names=["BEYONDBP_CACHE", str(blocker)])
    refused(capsys, "data", "prepare", names=["BEYONDBP_CACHE"])


def test_missing_hub_dataset_is_one_line_without_retry_noise(tmp_path, capfd, monkeypatch):
    datasets = pytest.importorskip("datasets")

    def unreachable(*args, **kwargs):
        hub = logging.getLogger("huggingface_hub.utils._http")
        for i in range(5):
            hub.warning(f"'[Errno -2] Name or service not known' thrown while requesting HEAD; Retrying in {i}s")
        raise ConnectionError("Couldn't reach 'nosuch/dataset' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    code = main(["data", "prepare", "data.corpus=hf:nosuch/dataset"])
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "hf:nosuch/dataset" in err[0], err
