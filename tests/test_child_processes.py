"""Child processes: they never import from the current folder, and none outlives a killed parent."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_data_stream import KILLABLE, write_jsonl
from test_study import TINY_SPEC


def _proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process from /proc, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every process below `root`."""
    stats = {int(p.name): _proc_stat(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, stat in stats.items():
            if stat is not None and stat[0] == parent and pid not in found:
                found[pid] = stat[2]
                frontier.append(pid)
    return found


def _alive(processes: dict[int, int]) -> list[int]:
    """The pids still running as the same process (a zombie or a reused pid is not)."""
    return [pid for pid, start in processes.items()
            if (stat := _proc_stat(pid)) is not None and stat[1] != "Z" and stat[2] == start]


@pytest.mark.slow
def test_workers_never_import_from_the_study_folder(tmp_path):
    """A `yaml.py` planted in a received study folder, `study run --out .` from inside it: the
    worker that trains the run starts off the current folder and never imports it."""
    study = tmp_path / "study"
    study.mkdir()
    spec = dict(TINY_SPEC, methods=["bp"], sizes={"a": TINY_SPEC["sizes"]["a"]}, tokens=2048)
    (study / "spec.yaml").write_text(yaml.safe_dump(spec))
    marker = tmp_path / "imported"
    (study / "yaml.py").write_text(f"open({str(marker)!r}, 'w').write('planted yaml.py ran')\n")
    # -P: the study process itself is started as the console script would be (its folder off sys.path)
    done = subprocess.run([sys.executable, "-P", "-m", "beyondbp", "study", "run", "spec.yaml", "--out", ".",
                           "--workers", "1", "--bootstrap", "5"], cwd=study, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert not marker.exists(), (study / "runs" / "bp_a_lr0.01_s0" / "train.log").read_text()
    assert done.returncode == 0, done.stderr
    assert "1 runs: 1 completed" in done.stderr


def test_killed_prepare_leaves_no_worker_or_resource_tracker_behind(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", 1500)
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    proc = subprocess.Popen([sys.executable, str(script), f"data.corpus={tmp_path / 'c.jsonl'}",
                             f"data.cache_dir={tmp_path / 'cache'}", "data.workers=2", "data.shard_tokens=40000"])
    deadline = time.monotonic() + 120
    children: dict[int, int] = {}
    while len(children) < 3 and time.monotonic() < deadline:  # two workers and the resource tracker
        time.sleep(0.05)
        children = _descendants(proc.pid)
    assert proc.poll() is None and len(children) >= 3, children
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60  # they die of PR_SET_PDEATHSIG: at once, unless the machine is busy
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _alive(children)
    for pid in left:  # leave no orphan behind when this fails
        os.kill(pid, signal.SIGKILL)
    assert left == []
