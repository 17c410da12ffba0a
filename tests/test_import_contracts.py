"""The import contracts in pyproject.toml (`lint-imports`) hold, and they fail on a new circle or
upward import: each case copies the package, adds one import, and runs lint-imports on the copy."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "src" / "beyondbp", tmp_path / "src" / "beyondbp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path / "src" / "beyondbp"


def _add_import(module: Path, line: str) -> None:
    text = module.read_text(encoding="utf-8")
    anchor = "from __future__ import annotations\n"
    assert anchor in text, module
    module.write_text(text.replace(anchor, anchor + line + "\n", 1), encoding="utf-8")


def _lint(tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}  # the copy, not the installed package
    return subprocess.run([LINT_IMPORTS, "--config", str(tmp_path / "pyproject.toml"), "--no-cache"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_contracts_hold_on_the_package(tmp_path):
    _copy(tmp_path)
    result = _lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    # an upward import: the model room reaching for the report
    ("model/shape.py", "from ..report import results", "layers: cli > report"),
    # a circle inside one room: the step schedule importing the loop that imports it
    ("train/step.py", "from . import loop", "no import circles"),
    # fit must stay numbers in, numbers out
    ("fit/frontier.py", "from ..study import plan", "fit takes numbers"),
    # spec validation must not load torch (it would cost every `study report` ~2 s)
    ("study/spec.py", "import torch", "torch-free"),
])
def test_a_new_upward_import_or_circle_breaks_a_contract(tmp_path, module, line, contract):
    package = _copy(tmp_path)
    _add_import(package / module, line)
    result = _lint(tmp_path)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
