"""The import contracts in pyproject.toml (`lint-imports`) fail on a new circle, upward import,
or forbidden import: the test copies the package, adds one bad import per contract, and runs
lint-imports on the copy. (That they hold on the package is lint-imports' own run in .ci/run.)"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


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


# one bad import per kind of contract: (module, the line added, the contract it must break)
BAD_IMPORTS = [
    # an upward import: the model room reaching for the report
    ("model/shape.py", "from ..report import results", "layers: cli > report"),
    # a circle inside one room: the floor fit importing the frontier fit that imports it
    ("fit/floor_fit.py", "from . import frontier", "no import circles"),
    # fit must stay numbers in, numbers out
    ("fit/frontier.py", "from ..study import plan", "fit takes numbers"),
    # spec validation must not load torch (it would cost every `study report` ~2 s)
    ("study/spec.py", "import torch", "torch-free"),
]


def test_each_kind_of_bad_import_breaks_its_contract(tmp_path):
    """One copy, one lint-imports run: every contract named is broken, naming the module that broke it."""
    package = _copy(tmp_path)
    for module, line, _ in BAD_IMPORTS:
        _add_import(package / module, line)
    result = _lint(tmp_path)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    starts = {contract: broken.find(contract) for _, _, contract in BAD_IMPORTS}
    assert -1 not in starts.values(), result.stdout
    ends = sorted([*starts.values(), len(broken)])
    for module, _, contract in BAD_IMPORTS:  # each contract's part of the report names the module
        section = broken[starts[contract]:ends[ends.index(starts[contract]) + 1]]
        assert Path(module).stem in section, (contract, result.stdout)
