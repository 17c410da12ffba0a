"""Received checkpoints, samples and caches are data, never code (issue 27: checkpoints, sample, cache, ranges)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

import beyondbp.data.sources as sources
import beyondbp.train.method_step as method_step
from beyondbp.config import ConfigError, build_config
from beyondbp.data.cache import cache_entry
from beyondbp.data.prepare import prepare_corpus
from beyondbp.train.loop import train
from beyondbp.runs.folder import run_state
from conftest import TINY
from test_hostile_inputs import (RESUMABLE, _CodeOnLoad, cli, full_run, interrupted_run, refused, rows,  # noqa: F401
                                 same_curve, snapshot, write_corpus)


# --- checkpoints prove whose they are (cases 6, 7, 12) ------------------------------------------------
def _edit_checkpoints(out: Path, edit, names=("checkpoint.pt", "checkpoint.prev.pt")) -> None:
    for name in names:
        if (out / name).exists():
            saved = torch.load(out / name, weights_only=True)
            edit(saved)
            torch.save(saved, out / name)


def _poison(saved: dict) -> None:
    name = next(k for k, v in saved["method"].items() if v.is_floating_point())
    saved["method"][name][0] = float("nan")


@pytest.mark.slow
def test_ckpt_optimizer_moments_of_another_shape_are_refused_not_run_into_fused_adam(tmp_path, monkeypatch):
    """zeros(3) moments once made fused AdamW write out of bounds (rc 139); in a child process so a
    crash shows as a failure of this test only."""
    out = tmp_path / "run"
    interrupted_run(out, RESUMABLE, 3, monkeypatch)

    def shrink(saved):
        for entry in saved["optimizer"]["state"].values():
            entry["exp_avg"], entry["exp_avg_sq"] = torch.zeros(3), torch.zeros(3)
    _edit_checkpoints(out, shrink)
    before = snapshot(out)
    proc = subprocess.run([sys.executable, "-m", "beyondbp", "train", "--out", str(out), *RESUMABLE],
                          capture_output=True, text=True, timeout=300)
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert "checkpoint.pt" in err[0] and "exp_avg of parameter 0 is torch.float32 (3,)" in err[0]
    assert snapshot(out) == before


@pytest.mark.parametrize("legacy", [False, True])
def test_ckpt_another_seeds_checkpoint_is_refused_and_no_row_is_lost(tmp_path, capsys, monkeypatch, legacy):
    """A seed-1 checkpoint copied into a seed-0 run; `legacy`: with its identity removed, as
    checkpoints were written before, when the rows it carries give it away."""
    other, out = tmp_path / "seed1", tmp_path / "run"
    interrupted_run(other, RESUMABLE + ["seed=1"], 5, monkeypatch)
    interrupted_run(out, RESUMABLE, 5, monkeypatch)
    (out / "checkpoint.prev.pt").unlink()
    shutil.copy(other / "checkpoint.pt", out / "checkpoint.pt")
    if legacy:
        _edit_checkpoints(out, lambda saved: saved.pop("identity"))
    before, n_rows = snapshot(out), len(rows(out))
    line = refused(capsys, "train", "--out", out, *RESUMABLE, names=["checkpoint.pt", "does not fit this run"])
    assert ("another run's checkpoint" if legacy else "checkpoint of seed 1, this run is seed 0") in line
    assert len(rows(out)) == n_rows > 0 and snapshot(out) == before


def test_ckpt_a_foreign_latest_checkpoint_falls_back_to_the_runs_own(tmp_path, capsys, monkeypatch, full_run):
    other, out = tmp_path / "seed1", tmp_path / "run"
    interrupted_run(other, RESUMABLE + ["seed=1"], 6, monkeypatch)
    interrupted_run(out, RESUMABLE, 6, monkeypatch)
    shutil.copy(other / "checkpoint.pt", out / "checkpoint.pt")
    code, err = cli(capsys, "train", "--out", out, *RESUMABLE)
    assert code == 0, err
    warning = [e for e in err if "checkpoint.pt" in e]
    assert len(warning) == 1 and "seed 1" in warning[0] and "resuming from checkpoint.prev.pt at step 5" in warning[0]
    same_curve(out, full_run)


@pytest.mark.parametrize("step", [-7, 10**12, 21, "5"])
def test_ckpt_a_step_outside_the_schedule_is_refused_and_no_row_is_lost(tmp_path, capsys, monkeypatch, step):
    out = tmp_path / "run"
    interrupted_run(out, RESUMABLE, 6, monkeypatch)
    (out / "checkpoint.prev.pt").unlink()
    _edit_checkpoints(out, lambda saved: saved.update(step=step))
    before, n_rows = snapshot(out), len(rows(out))
    refused(capsys, "train", "--out", out, *RESUMABLE, names=["checkpoint.pt", f"step {step!r} is outside", "[0, 20]"])
    assert len(rows(out)) == n_rows > 0 and snapshot(out) == before and not (out / "summary.json").exists()


@pytest.mark.parametrize("damage,named", [
    (lambda s: s["method"].update({k: v.double() for k, v in list(s["method"].items())[:1]}), "torch.float64"),
    (lambda s: s["method"].pop(next(iter(s["method"]))), "missing"),
    (lambda s: s["optimizer"]["param_groups"].pop(), "1 parameter groups, this run's 2"),
    (lambda s: s["optimizer"]["param_groups"][0]["params"].pop(), "group 0 holds"),
    (lambda s: s["optimizer"]["state"][0].update(step=torch.tensor(-1.0)), "not a count"),
    (lambda s: s["optimizer"]["state"][0].pop("exp_avg_sq"), "not AdamW's"),
    (lambda s: s["optimizer"]["state"][0]["exp_avg"].fill_(float("inf")), "NaN or infinite"),
    (_poison, "NaN or infinite"),
    (lambda s: s.update(rng_cpu=torch.zeros(3, dtype=torch.uint8)), "random number generator"),
    (lambda s: s.update(metrics=[{"val_loss": 1.0}]), "metrics rows"),
    (lambda s: s["metrics"][0].pop("val_loss"), "metrics rows"),
    (lambda s: s["method"].update({k: v.to_sparse() for k, v in list(s["method"].items())[:1]}), "sparse"),
    (lambda s: s.update(identity="me"), "identity"),
])
def test_ckpt_contents_that_do_not_fit_are_refused_before_loading(tmp_path, capsys, monkeypatch, damage, named):
    out = tmp_path / "run"
    interrupted_run(out, RESUMABLE, 4, monkeypatch)
    (out / "checkpoint.prev.pt").unlink()
    _edit_checkpoints(out, damage)
    before = snapshot(out)
    refused(capsys, "train", "--out", out, *RESUMABLE, names=["checkpoint.pt", named])
    assert snapshot(out) == before


def test_ckpt_a_checkpoint_written_before_identities_still_resumes(tmp_path, capsys, monkeypatch, full_run):
    out = tmp_path / "run"
    interrupted_run(out, RESUMABLE, 6, monkeypatch)
    _edit_checkpoints(out, lambda saved: [saved.pop(k) for k in ("identity", "tokenizer")])
    code, err = cli(capsys, "train", "--out", out, *RESUMABLE)
    assert code == 0 and not [e for e in err if "warning" in e], err
    same_curve(out, full_run)


def test_ckpt_nan_weights_at_the_final_step_mark_the_run_failed(tmp_path, monkeypatch):
    original, calls = method_step.apply_update, []

    def update(method, optimizer, grad_clip):
        original(method, optimizer, grad_clip)
        calls.append(1)
        if len(calls) == 20:  # the last step's update
            with torch.no_grad():
                next(iter(method.trainable_parameters())).fill_(float("nan"))
    monkeypatch.setattr(method_step, "apply_update", update)
    out = tmp_path / "run"
    summary = train(build_config(overrides=RESUMABLE), out, quiet=True)
    assert summary["status"] == "failed" and summary["final_val_loss"] is None and "NaN" in summary["error"]
    assert run_state(out) == "failed"  # a study trains it again; never counted as done
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 19  # the NaN state is not saved


# --- sample needs only the checkpoint and the tokenizer (cases 5, 13) -------------------------------
def _edit_config(out: Path, **sections) -> None:
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    for section, values in sections.items():
        cfg[section].update(values)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_ckpt_sample_reads_no_corpus_and_writes_no_cache_that_config_yaml_names(tmp_path, capsys, full_run):
    private, outside = tmp_path / "private.txt", tmp_path / "outside"
    write_corpus(private).chmod(0o600)
    _edit_config(full_run, data={"corpus": str(private), "cache_dir": str(outside)})
    cache = Path(os.environ["BEYONDBP_CACHE"])
    listing = sorted(str(p) for p in cache.rglob("*"))
    code, err = cli(capsys, "sample", "--run", full_run, "--prompt", "ROMEO:", "--tokens", "10")
    assert code == 0, err
    assert not outside.exists() and sorted(str(p) for p in cache.rglob("*")) == listing


def test_ckpt_sample_of_a_model_too_large_for_memory_is_one_line_naming_config_yaml(tmp_path, capsys, full_run):
    _edit_config(full_run, model={"d_model": 20000})
    refused(capsys, "sample", "--run", full_run, names=[str(full_run / "config.yaml"), "model:", "GiB"])


def test_ckpt_sample_refuses_nan_weights_naming_the_checkpoint(tmp_path, capsys, full_run):
    _edit_checkpoints(full_run, _poison)
    refused(capsys, "sample", "--run", full_run, names=["checkpoint.pt", "NaN or infinite"])


def test_ckpt_sample_of_a_bpe_run_takes_its_tokenizer_from_the_checkpoint(tmp_path, capsys):
    corpus, out = write_corpus(tmp_path / "corpus.txt"), tmp_path / "bpe"
    train(build_config(overrides=TINY + [f"data.corpus={corpus}", "data.tokenizer=bpe", "data.vocab_size=300",
                                         "train.tokens=2048"]), out, quiet=True)
    _edit_config(out, data={"corpus": str(tmp_path / "gone.txt"), "cache_dir": str(tmp_path / "elsewhere")})
    code, err = cli(capsys, "sample", "--run", out, "--prompt", "the quick", "--tokens", "5")
    assert code == 0, err
    assert not (tmp_path / "elsewhere").exists()


def test_ckpt_no_pickle_protocol_warning_ahead_of_a_refusal(tmp_path, capsys, monkeypatch):
    out, marker = tmp_path / "run", tmp_path / "MARKER"
    interrupted_run(out, RESUMABLE, 3, monkeypatch)
    (out / "checkpoint.prev.pt").unlink()
    torch.save({"method": _CodeOnLoad(marker), "step": 3}, out / "checkpoint.pt",
               _use_new_zipfile_serialization=False, pickle_protocol=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refused(capsys, "sample", "--run", out, names=["checkpoint.pt", "refused to load"])
    assert not [w for w in caught if "pickle protocol" in str(w.message)] and not marker.exists()


# --- ranges that mean something (case 12) -----------------------------------------------------------
def test_ckpt_threads_beyond_the_usable_cores_are_capped_with_one_note(tmp_path, capsys):
    threads, cores = torch.get_num_threads(), len(os.sched_getaffinity(0))
    try:
        code, err = cli(capsys, "train", "--out", tmp_path / "run", *TINY, "train.tokens=2048", "train.threads=1000")
        assert torch.get_num_threads() == cores
    finally:
        torch.set_num_threads(threads)
    notes = [e for e in err if "train.threads" in e]
    assert code == 0 and len(notes) == 1 and f"more than the {cores} cores" in notes[0]


@pytest.mark.parametrize("override,key", [("train.tokens=512", "train.tokens"),
                                          ("train.warmup_tokens=20480", "train.warmup_tokens"),
                                          ("train.warmup_tokens=4611686018427387904", "train.warmup_tokens")])
def test_ckpt_a_run_shorter_than_a_batch_or_its_warmup_is_refused(tmp_path, capsys, override, key):
    refused(capsys, "train", "--out", tmp_path / "run", *TINY, override, names=[key])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("budget,key", [({"tokens_per_param": 1e-300}, "tokens_per_param"),
                                        ({"tokens": 100}, "tokens")])
def test_ckpt_a_study_budget_under_one_batch_is_refused_at_planning(tmp_path, capsys, budget, key):
    spec = yaml.safe_load((Path(sources.__file__).parent.parent / "presets" / "smoke.yaml").read_text())
    spec.pop("tokens")
    spec.update(budget)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    line = refused(capsys, "study", "plan", tmp_path / "spec.yaml", names=[key, "less than one batch"])
    assert "train.batch_tokens=1,024" in line


# --- a cache entry named after what was tokenized (cases 8, 13) ---------------------------------------
def _edit_midway(monkeypatch, corpus: Path) -> bytes:
    """The reader returns the first half of the original and the second of an edit made while it reads."""
    original, real = corpus.read_bytes(), sources._read_bytes

    def reader(path, offset=0, size=-1):
        raw = real(path, offset, size)
        if Path(path).resolve() == corpus.resolve() and offset == 0 and len(raw) > 100:
            edited = original.replace(b"the", b"THE")
            corpus.write_bytes(edited)  # same size, in place
            return raw[:len(raw) // 2] + edited[len(raw) // 2:len(raw)]
        return raw
    monkeypatch.setattr(sources, "_read_bytes", reader)
    return original


@pytest.mark.parametrize("streamed", [False, True])
def test_ckpt_a_corpus_edited_while_read_is_not_cached_under_its_old_name(tmp_path, monkeypatch, streamed):
    corpus = tmp_path / "corpus.jsonl"  # many documents, also when streamed
    corpus.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in write_corpus(tmp_path / "c.txt")
                              .read_text().split("\n\n")))
    cfg = build_config(overrides=[f"data.corpus={corpus}", "data.workers=1"]).data
    if streamed:
        monkeypatch.setattr(sources, "SMALL_CORPUS_BYTES", 1000)
    named = cache_entry(cfg)
    partials_before = set(named.parent.glob("*.partial"))  # the cache is the session's: other tests' leftovers
    with monkeypatch.context() as patch:
        original = _edit_midway(patch, corpus)
        with pytest.raises(ConfigError, match=f"data.corpus: {corpus} changed while it was being read"):
            prepare_corpus(cfg, quiet=True)
    assert not named.exists() and set(named.parent.glob("*.partial")) == partials_before
    corpus.write_bytes(original)  # restored: prepared again from what it holds now
    assert prepare_corpus(cfg, quiet=True) == cache_entry(cfg) == named
    copy = tmp_path / "copy" / "corpus.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(original)
    pristine = json.loads((prepare_corpus(build_config(overrides=[f"data.corpus={copy}", "data.workers=1"]).data,
                                          quiet=True) / "meta.json").read_text())
    assert json.loads((named / "meta.json").read_text())["fingerprint"] == pristine["fingerprint"]


def test_ckpt_a_single_document_that_hashes_to_validation_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    """Case 13's 200 MB one-line .txt, smaller: streamed, its one document goes to validation."""
    monkeypatch.setattr(sources, "SMALL_CORPUS_BYTES", 1000)
    text = next(t for t in (f"{'word ' * 1000}{i}\n" for i in range(1000)) if sources.hash_split(t.encode(), 0.05))
    corpus = tmp_path / "one-line.txt"
    corpus.write_text(text)
    cfg = build_config(overrides=[f"data.corpus={corpus}", "data.workers=1"]).data
    with pytest.raises(ConfigError, match="all 1 document.s. of .* went to the validation split"):
        prepare_corpus(cfg, quiet=True)
    entry = cache_entry(cfg)
    assert not entry.exists() and not entry.with_name(entry.name + ".partial").exists()


def test_ckpt_a_bad_metrics_row_is_named_not_blamed_on_a_good_checkpoint(tmp_path, monkeypatch, capsys):
    """A resumable run whose metrics.jsonl holds a bad row: the one line names metrics.jsonl (it
    used to say the checkpoint 'does not fit this run' and advise moving good checkpoints aside)."""
    out = tmp_path / "run"
    interrupted_run(out, RESUMABLE, 10, monkeypatch)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join([json.dumps({"step": "x"}), *lines[1:]]) + "\n")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    line = refused(capsys, "train", "--out", out, *RESUMABLE, names=["metrics.jsonl:1", "'step'"])
    assert "checkpoint" not in line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing lost


def test_ckpt_a_config_section_that_is_not_a_mapping_is_named(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    interrupted_run(out, RESUMABLE, 10, monkeypatch)
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["model"] = 5
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    refused(capsys, "train", "--out", out, *RESUMABLE, names=[str(out / "config.yaml"), "'model' must be a mapping"])
