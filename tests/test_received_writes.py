"""Received folders are data, never code (issue 27: writes, labels, locks): tests that attack a
study or run folder someone else sent, each asserting the exit status, the one line, that nothing outside the
folder changed and that nothing inside it was lost."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beyondbp.atomic_write import FileWriteError, make_folder, open_append
from beyondbp.cli.main import main
from beyondbp.config import ConfigError, LockHeld
from beyondbp.report.tables import table1_tex
from beyondbp.study.spec import load_spec
from beyondbp.runs.folder import PF_DAY, is_locked, lock_run
from conftest import TINY
from helpers import planned_study


# --- writes: links refused, reports all or none, full disks (cases 3, 4, 10, 11) ----------------------
def _cli(capsys, *args) -> tuple[int, list[str]]:
    code = main([str(a) for a in args])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _refused(capsys, *args, names=()) -> str:
    code, err = _cli(capsys, *args)
    assert code == 2 and len(err) == 1 and "error:" in err[0], (code, err)
    for name in names:
        assert name in err[0], err
    return err[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


WRITES_SPEC = {"name": "writes", "methods": ["bp"], "seeds": [0], "tokens_per_param": [10, 40],
               "sizes": {f"s{k}": {"n_layer": 2, "d_model": 8 * k, "n_head": 2} for k in (1, 2, 4)},
               "lrs": {"bp": [1e-2]}, "base": {"model": {"context": 32}, "train": {"batch_tokens": 512}}}


@pytest.fixture
def finished_study(tmp_path) -> Path:
    """A study folder whose runs all completed on a known law (no training)."""
    plan, study = planned_study(tmp_path, WRITES_SPEC)
    for run in plan.runs:
        run_dir = study / "runs" / run.name
        run_dir.mkdir(parents=True)
        loss = 40 * run.n_params ** -0.3 + 60 * run.tokens ** -0.3
        rows = [{"step": k, "tokens": run.tokens * k // 2, "compute_pf_days": 6 * run.n_params * run.tokens * k / 2 / PF_DAY,
                 "val_loss": loss * (1.1 if k == 1 else 1.0), "elapsed_s": float(k)} for k in (1, 2)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run_dir / "summary.json").write_text(json.dumps({"status": "completed", "final_val_loss": loss,
                                                          "elapsed_s": 2.0}))
    return study


def _report(capsys, study: Path):
    return _cli(capsys, "study", "report", study, "--bootstrap", "20")


@pytest.mark.parametrize("name", ["table1.md", "report.html", "frontier.svg"])
def test_writes_report_file_linked_out_is_refused(tmp_path, capsys, finished_study, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (finished_study / "report").mkdir()
    (finished_study / "report" / name).symlink_to(victim)
    line = _refused(capsys, "study", "report", finished_study, "--bootstrap", "20", names=[name, "is a link"])
    assert victim.read_text() == "precious", line
    assert [p.name for p in (finished_study / "report").iterdir()] == [name]  # no other file, no temporary


def test_writes_report_folder_linked_out_receives_nothing(tmp_path, capsys, finished_study):
    outside = tmp_path / "outside"
    outside.mkdir()
    (finished_study / "report").symlink_to(outside)
    _refused(capsys, "study", "report", finished_study, "--bootstrap", "20", names=["report", "is a link"])
    assert list(outside.iterdir()) == []


def test_writes_full_disk_during_the_report_keeps_the_old_report_whole(capsys, monkeypatch, finished_study):
    assert _report(capsys, finished_study)[0] == 0
    before = _files(finished_study / "report")
    assert set(before) >= {"report.html", "table1.md", "table1.tex", "frontier.svg", "results.json"}
    real_write = os.write

    def full_at_the_page(fd, data):
        if "report.html" in os.readlink(f"/proc/self/fd/{fd}"):
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_at_the_page)
    _refused(capsys, "study", "report", finished_study, "--bootstrap", "30",
             names=["report.html", "No space left on device", "previous content is kept"])
    monkeypatch.setattr(os, "write", real_write)
    assert _files(finished_study / "report") == before  # every old file whole, no temporary left


def _run_folder_of(tmp_path: Path) -> tuple[Path, Path]:
    """(spec file, study folder) of a planned, untrained study; its first run's folder exists."""
    spec = dict(WRITES_SPEC, tokens_per_param=None, tokens=2048, sizes={"s1": WRITES_SPEC["sizes"]["s1"]})
    plan, study = planned_study(tmp_path, spec)
    return tmp_path / "spec.yaml", study / "runs" / plan.runs[0].name


@pytest.mark.parametrize("planted", ["train.log", "worker.lock", "run.yaml", "summary.json"])
def test_writes_study_run_refuses_a_linked_file_in_a_run_folder(tmp_path, capsys, planted):
    spec, run_dir = _run_folder_of(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run_dir.mkdir()
    (run_dir / planted).symlink_to(victim)
    _refused(capsys, "study", "run", spec, "--out", run_dir.parent.parent, "--workers", "1",
             names=[str(run_dir / planted), "is a link"])
    assert victim.read_text() == "precious" and [p.name for p in run_dir.iterdir()] == [planted]


@pytest.mark.parametrize("linked", ["run", "runs"])
def test_writes_study_run_refuses_a_linked_run_folder(tmp_path, capsys, linked):
    spec, run_dir = _run_folder_of(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    link = run_dir if linked == "run" else run_dir.parent
    if linked == "runs":
        link.rmdir()
    link.symlink_to(outside, target_is_directory=True)
    _refused(capsys, "study", "run", spec, "--out", run_dir.parent.parent, "--workers", "1",
             names=[f"{link}: is a link"])
    assert list(outside.iterdir()) == []


def test_writes_lock_log_and_folders_never_follow_links(tmp_path):
    victim, outside, study = tmp_path / "victim.txt", tmp_path / "outside", tmp_path / "study"
    victim.write_text("precious")
    outside.mkdir()
    study.mkdir()
    (study / "runs").symlink_to(outside, target_is_directory=True)
    with pytest.raises(FileWriteError, match="runs: is a link"):
        make_folder(study / "runs" / "r1", inside=study)
    (study / "r2").mkdir()
    (study / "r2" / "worker.lock").symlink_to(victim)
    (study / "r2" / "train.log").symlink_to(victim)
    with pytest.raises(FileWriteError, match="worker.lock: is a link"):
        lock_run(study / "r2")
    with pytest.raises(FileWriteError, match="train.log: is a link"):
        open_append(study / "r2" / "train.log")
    assert victim.read_text() == "precious" and list(outside.iterdir()) == []


# --- labels and LaTeX (case 4) ------------------------------------------------------------------------
@pytest.mark.parametrize("change, key", [
    ({"methods": ["bp", "evil\ntouch pwned\n"], "variants": {"evil\ntouch pwned\n": {"method": "dfa"}}}, "variants"),
    ({"methods": ["bp", "a\x00b"]}, "methods"),
    ({"methods": ["bp", "pkg.mod:Cls\nx"]}, "methods"),
    ({"methods": ["bp", "../up:Cls"]}, "methods"),
    ({"sizes": {"a\\b": {"n_layer": 2, "d_model": 8, "n_head": 2}}}, "sizes"),
    ({"sizes": {"-rf": {"n_layer": 2, "d_model": 8, "n_head": 2}}}, "sizes"),
    ({"name": "x\n\\immediate\\write18{touch pwned}"}, "name"),
])
def test_writes_unsafe_labels_are_refused_naming_key_and_value(tmp_path, change, key):
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(dict(WRITES_SPEC, **change)))
    with pytest.raises(ConfigError) as err:
        load_spec(spec)
    bad = next(iter(change[key])) if isinstance(change[key], dict) else change[key]
    bad = bad[-1] if isinstance(bad, list) else bad
    assert str(err.value).startswith(f"{key}: {bad!r} is not a safe"), err.value
    assert "\n" not in str(err.value)


def test_writes_every_preset_and_plugin_label_stays_valid():
    from beyondbp.study.names import check_label
    from beyondbp.study.presets import preset_names
    for name in preset_names():
        load_spec(preset=name)
    assert check_label("methods", "sign_symmetry.method:SignSymmetry", method=True)
    assert check_label("variants", "literal_lr_3e-3") and check_label("sizes", "cpu-20k")


def test_writes_table1_tex_escapes_every_special_character():
    label = r"\immediate\write18{touch pwned} $x$ & #1 ^ _ % ~"
    row = {"method": label, "alpha_C": None, "alpha_C_ci": None, "C_c": None, "loss_at_reference": None,
           "loss_at_reference_ci": None, "rms_log_residual": None, "paper_alpha_C": None, "paper_C_c": None}
    line = table1_tex([row]).splitlines()[4]
    name = line.split(" & --")[0]
    assert name == (r"\textbackslash{}immediate\textbackslash{}write18\{touch pwned\} \$x\$ \& \#1 "
                    r"\textasciicircum{} \_ \% \textasciitilde{}")
    assert "\\write" not in name and "\\immediate" not in name


# --- a second `train` into a run folder (case 11) ---------------------------------------------------
def _train(out: Path, *extra: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "beyondbp", "train", "--out", str(out), *TINY, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_a_held_run_lock_is_its_own_error_and_a_one_line_config_error(tmp_path):
    fd = lock_run(tmp_path)
    try:
        with pytest.raises(LockHeld, match=r"this run is being trained by another process or job; not starting"):
            lock_run(tmp_path, wait=False)
        assert issubclass(LockHeld, ConfigError)  # uncaught: `beyondbp: error: ...`, exit status 2
    finally:
        os.close(fd)
    os.close(lock_run(tmp_path, wait=False))  # released: free again


def test_writes_a_second_train_into_one_run_folder_is_refused_at_once(tmp_path):
    out = tmp_path / "run"
    first = _train(out, "train.tokens=2048000")  # long enough that it is still training when stopped
    try:
        deadline = time.monotonic() + 120
        while not is_locked(out):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # holds its lock, trains no further
        assert is_locked(out)
        before = _files(out)
        second = _train(out, "train.tokens=2048000")
        _, err = second.communicate(timeout=120)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert second.returncode == 2 and len(lines) == 1, lines
        assert f"{out}: this run is being trained by another process" in lines[0]
        assert _files(out) == before
    finally:
        first.send_signal(signal.SIGCONT)
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
