"""Received folders are data, never code (docs/security.md)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from beyondbp.cli.main import main
from beyondbp.methods.run_builder import build_from_file
from beyondbp.study.local_executor import run_study
from beyondbp.study.plan import plan_study
from beyondbp.study.spec import load_spec
from beyondbp.train.loop import train
from test_study import TINY_SPEC

ZEN = "Beautiful is better than ugly"
TINY_RUN = ["model.n_layer=1", "model.d_model=8", "model.n_head=2", "model.context=32", "train.tokens=2048",
            "train.batch_tokens=512", "train.n_evals=2", "train.eval_tokens=512", "train.threads=1",
            "train.progress=off", "train.checkpoint_every_s=0"]


def _imports_spec(method: str) -> dict:
    return dict(TINY_SPEC, methods=["bp", method], sizes={"a": TINY_SPEC["sizes"]["a"]}, tokens=2048,
                lrs={"bp": [1e-2], method: [1e-2]})


@pytest.fixture
def hostile_modules(monkeypatch, tmp_path):
    """`this` and `venv.__main__` are imported afresh if anything imports them; venv's command line
    would then create tmp_path/venv-made (as it did in a received study)."""
    for name in ("this", "venv.__main__"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "argv", ["venv", str(tmp_path / "venv-made")])
    return tmp_path / "venv-made"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("method", ["this:Foo", "venv.__main__:Foo"])
def test_imports_read_only_commands_never_import_a_module_the_spec_names(tmp_path, capsys, hostile_modules, method):
    study = tmp_path / "study"
    study.mkdir()
    (study / "spec.yaml").write_text(yaml.safe_dump(_imports_spec(method)))
    assert main(["study", "status", str(study)]) == 0
    status = capsys.readouterr()
    assert f"{method}_a_lr0.01_s0" in status.out and "2 runs: 2 pending" in status.out
    assert main(["study", "report", str(study), "--bootstrap", "5"]) == 0
    assert main(["study", "plan", str(study / "spec.yaml")]) == 0
    out = capsys.readouterr()
    assert ZEN not in status.out + out.out and "usage: venv" not in status.err + out.err
    assert "2 runs, " in out.out and (study / "report" / "report.html").exists()
    assert not hostile_modules.exists() and "this" not in sys.modules and "venv.__main__" not in sys.modules


def test_imports_study_run_refuses_a_module_only_the_spec_names_unless_opted_in(tmp_path, capsys, hostile_modules):
    study = tmp_path / "study"
    study.mkdir()
    (study / "spec.yaml").write_text(yaml.safe_dump(_imports_spec("this:Foo")))
    before = _files(study)
    assert main(["study", "run", str(study / "spec.yaml"), "--out", str(study)]) == 2
    out = capsys.readouterr()
    assert out.err == (f"beyondbp: error: {study / 'spec.yaml'}: methods: this:Foo: 'this:Foo' would import module "
                       f"'this', named in this file rather than on the command line; type it there or add "
                       f"--trust-method-imports to import it (importing runs its code)\n")
    assert ZEN not in out.out and "this" not in sys.modules and _files(study) == before
    assert main(["study", "run", str(study / "spec.yaml"), "--out", str(study), "--trust-method-imports"]) == 2
    out = capsys.readouterr()  # opted in: imported (the Zen is printed); not a method, so still refused
    assert ZEN in out.out and "cannot import 'this:Foo' (AttributeError" in out.err and _files(study) == before


def test_imports_train_imports_a_name_typed_on_its_command_line_but_not_one_its_config_file_names(
        tmp_path, capsys, hostile_modules):
    config = tmp_path / "run.yaml"
    config.write_text("method: this:Foo\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    out = capsys.readouterr()
    assert out.err.startswith(f"beyondbp: error: {config}: method: 'this:Foo' would import module 'this'")
    assert ZEN not in out.out and not (tmp_path / "r").exists()
    assert main(["train", "--out", str(tmp_path / "r"), "method=this:Foo"]) == 2  # typed: imported
    assert ZEN in capsys.readouterr().out and not (tmp_path / "r").exists()


def test_imports_sample_never_imports_a_method_a_run_folder_names(tmp_path, capsys, hostile_modules):
    run = tmp_path / "run"
    assert train(build_from_file(overrides=TINY_RUN), run, quiet=True)["status"] == "completed"
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["method"]["name"] = "this:Foo"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["sample", "--run", str(run), "--tokens", "5"]) == 2
    out = capsys.readouterr()
    assert out.err == (f"beyondbp: error: {run / 'config.yaml'}: method: 'this:Foo' would import module 'this', "
                       f"named in this file rather than on the command line; add --trust-method-imports to "
                       f"import it (importing runs its code)\n")
    assert ZEN not in out.out and "this" not in sys.modules


OUTSIDE = """
from pathlib import Path
Path({marker!r}).write_text("imported")
from beyondbp.methods.bp import Backprop


class Outside(Backprop):
    name = "outside"
"""


@pytest.mark.slow
def test_imports_report_reads_the_runs_of_a_method_it_does_not_import(tmp_path, monkeypatch):
    """A study trained with an outside `module:Class`: its report and status come from what the
    runs recorded; the module is not imported again."""
    marker = tmp_path / "imported"
    (tmp_path / "outside_method_x.py").write_text(OUTSIDE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_imports_spec("outside_method_x:Outside")))
    study = tmp_path / "study"
    assert run_study(plan_study(load_spec(path)), study, workers=1, quiet=True) == {"completed": 2}
    marker.unlink()
    out = ""
    for command in (["status", str(study)], ["report", str(study), "--bootstrap", "5"]):  # fresh processes
        done = subprocess.run([sys.executable, "-m", "beyondbp", "study", *command], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        out += done.stdout
    row = next(line for line in out.splitlines() if line.startswith("outside_method_x:Outside_a_lr0.01_s0 "))
    assert row.split()[1:3] == ["completed", "val"] and "2 runs: 2 completed" in out
    assert "outside_method_x:Outside" in (study / "report" / "table1.md").read_text()
    assert not marker.exists()
