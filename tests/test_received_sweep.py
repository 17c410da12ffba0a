"""A sweep of received-folder attacks (issue 27, second "Done when"): other module names, links,
special files, checkpoint corruptions, YAML, CSV, label and environment tricks, tried against
`study report|status|plan|run`, `sample`, `fit`, `methods` and a resuming `train`.

Every variant asserts the threat model's contract (docs/security.md): one line naming the file or
key and exit 2 where it is an error (or the documented safe behaviour, exit 0), within 5 s, with
peak memory at most 200 MB above the module's baseline; no marker written (nothing imported or
run), a decoy file outside the folder neither read (its atime) nor written, nothing new outside the
folder, and nothing inside lost. One tiny completed study and one interrupted run are trained once
for the module and copied per variant.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import beyondbp.train.loop as train_mod
from beyondbp.cli.main import main
from beyondbp.config import build_config
from beyondbp.study.local_executor import run_study
from beyondbp.study.plan import plan_study
from beyondbp.study.spec import load_spec
from beyondbp.train.loop import train

# the sweep repeats test_received_*.py's cases over every command: the fast tier keeps those
pytestmark = pytest.mark.slow

SECONDS, MEGABYTES = 5, 200
SPEC = {"name": "sweep", "methods": ["bp"], "sizes": {"a": {"n_layer": 1, "d_model": 8, "n_head": 2}},
        "tokens": [2048, 4096], "lrs": {"bp": [1e-2]}, "seeds": [0],
        "base": {"model": {"context": 32}, "train": {"batch_tokens": 512, "n_evals": 2, "eval_tokens": 512,
                                                     "checkpoint_every_s": 0, "threads": 1, "progress": "off"}}}
RUN = ["model.n_layer=1", "model.d_model=8", "model.n_head=2", "model.context=32", "train.tokens=2048",
       "train.batch_tokens=512", "train.n_evals=2", "train.eval_tokens=512", "train.threads=1",
       "train.progress=off", "train.checkpoint_every_s=0"]
RUN_NAME = "bp_a_4.1k_lr0.01_s0"  # the study's run the variants aim at
EVIL_INIT = "from pathlib import Path\nPath({marker!r}).write_text('imported')\n"


class Hang(BaseException):  # not caught by the command line's last-resort handler
    pass


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """(study, interrupted run, baseline peak RSS in KiB): trained once for the module, with the
    session's token cache (conftest's per-test setting is not in place yet for a module fixture)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BEYONDBP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        return _trained_templates(tmp_path_factory.mktemp("templates"), patch)


def _trained_templates(root: Path, patch: pytest.MonkeyPatch):
    (root / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    study = root / "study"
    assert run_study(plan_study(load_spec(root / "spec.yaml")), study, workers=2, quiet=True) == {"completed": 2}
    run = root / "run"
    original = train_mod._Run.step

    def step(self, state, lr, signalled):
        if state.step == 2:
            raise KeyboardInterrupt
        return original(self, state, lr, signalled)
    patch.setattr(train_mod._Run, "step", step)
    with pytest.raises(KeyboardInterrupt):
        train(build_config(overrides=RUN), run, quiet=True)
    patch.setattr(train_mod._Run, "step", original)
    (run / "worker.lock").touch()  # as `beyondbp train` leaves it
    assert main(["study", "report", str(study), "--bootstrap", "0"]) == 0  # warm the report's imports
    assert main(["sample", "--run", str(study / "runs" / RUN_NAME), "--tokens", "3"]) == 0
    return study, run, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Scene:
    """A fresh copy of the templates, a decoy file and folder outside it, and the checks of the contract."""

    def __init__(self, tmp_path: Path, templates, capsys):
        study, run, self.baseline = templates
        self.root, self.capsys = tmp_path, capsys
        self.study = Path(shutil.copytree(study, tmp_path / "study", symlinks=True))
        self.run = Path(shutil.copytree(run, tmp_path / "run", symlinks=True))
        self.run_dir = self.study / "runs" / RUN_NAME
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        self.decoy = self.outside / "decoy.txt"
        self.decoy.write_text("root:x:0:0:decoy:/root:/bin/bash\n")
        st = self.decoy.stat()
        os.utime(self.decoy, ns=(st.st_mtime_ns - 10**10, st.st_mtime_ns))  # atime < mtime: a read moves it
        self.marker = tmp_path / "MARKER"

    def decoy_state(self):
        """(content, mtime, atime, links); stat first, so that its own read does not count."""
        st = self.decoy.stat()
        return self.decoy.read_bytes(), st.st_mtime_ns, st.st_atime_ns, st.st_nlink

    def entries(self, folder: Path) -> dict[str, object]:
        """Every entry below `folder`: a regular file's bytes, else its kind (a link's target)."""
        found = {}
        for path in sorted(folder.rglob("*")):
            info = path.lstat()
            rel = str(path.relative_to(folder))
            if stat.S_ISREG(info.st_mode) and info.st_size > 64 << 20:
                found[rel] = ("large", info.st_size, info.st_mtime_ns)  # a sparse file: never read whole
            elif stat.S_ISREG(info.st_mode):
                found[rel] = path.read_bytes()
            elif stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif not stat.S_ISDIR(info.st_mode):
                found[rel] = ("special", stat.S_IFMT(info.st_mode))
        return found

    def attack(self, *args, expect: str = "refused", names=(), any_of=(), may_change=(), seconds: float = SECONDS):
        """Run the CLI on this scene's folders and check the contract. expect: "refused" (exit 2,
        one error line naming every `names` and one of `any_of`: the file or the key), "ok" (exit 0,
        no error line) or "either". `may_change`:
        paths (relative to tmp_path) a successful command may rewrite; metrics.jsonl may only grow."""
        before = self.entries(self.root)  # reads the decoy too: its atime is set back below
        decoy = self.decoy_state()
        os.utime(self.decoy, ns=(decoy[1] - 10**10, decoy[1]))
        decoy = (decoy[0], decoy[1], decoy[1] - 10**10, decoy[3])

        def alarm(signum, frame):
            raise Hang(f"{args} ran past {seconds} s")
        old = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            code = main([str(a) for a in args])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        out = self.capsys.readouterr()
        err = [line for line in out.err.splitlines() if line.strip()]
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.baseline) / 1024
        assert grown < MEGABYTES, f"peak memory grew {grown:.0f} MB"
        assert self.decoy_state() == decoy, "decoy read or written"
        assert sorted(p.name for p in self.outside.iterdir()) == ["decoy.txt"], "something written outside"
        assert not self.marker.exists(), "code ran"
        errors = [e for e in err if "error" in e.lower() or "Traceback" in e]
        if expect == "either":
            expect = "ok" if code == 0 else "refused"
        if expect == "refused":
            assert code == 2 and len(err) == 1 and err[0].startswith(("beyondbp: error: ", "beyondbp fit: error: ")), \
                (code, err)
            for name in names:
                assert str(name) in err[0], (name, err)
            assert not any_of or any(str(name) in err[0] for name in any_of), (any_of, err)
            after = self.entries(self.root)
            assert {k: v for k, v in after.items() if k in before} == before, "a refused command changed the folder"
            assert all(any(k.startswith(c + "/") for c in may_change) for k in after if k not in before), after.keys()
        else:
            assert code == 0 and not errors, (code, err)
            self._kept(before, self.entries(self.root), may_change)
        return code, err, out.out

    def _kept(self, before: dict, after: dict, may_change) -> None:
        changeable = {str(Path(p)) for p in may_change}
        for rel, content in before.items():
            if rel.startswith("outside"):
                continue
            assert rel in after, f"{rel} lost"
            if any(rel == c or rel.startswith(c + "/") for c in changeable):
                if rel.endswith("metrics.jsonl"):
                    assert after[rel][:len(content)] == content, f"{rel}: rows lost"
                continue
            assert after[rel] == content, f"{rel} changed"


@pytest.fixture
def scene(tmp_path, templates, capsys) -> Scene:
    return Scene(tmp_path, templates, capsys)


REPORT_OUT = ("study/report",)
STUDY_ARGS = {
    "report": lambda s: ["study", "report", s.study, "--bootstrap", "0"],
    "status": lambda s: ["study", "status", s.study],
    "plan": lambda s: ["study", "plan", s.study / "spec.yaml"],
    "run": lambda s: ["study", "run", s.study / "spec.yaml", "--out", s.study, "--workers", "1", "--bootstrap", "0"],
    "sample": lambda s: ["sample", "--run", s.run_dir, "--tokens", "3"],
    "train": lambda s: ["train", "--config", s.run_dir / "run.yaml", "--out", s.run_dir],
    "resume": lambda s: ["train", "--out", s.run, *RUN],
    "sample-run": lambda s: ["sample", "--run", s.run, "--tokens", "3"],
}
WRITES = {"report": REPORT_OUT, "run": REPORT_OUT + (f"study/runs/{RUN_NAME}",),
          "train": (f"study/runs/{RUN_NAME}",), "resume": ("run",)}


def run_command(scene: Scene, command: str, **kwargs):
    return scene.attack(*STUDY_ARGS[command](scene), may_change=WRITES.get(command, ()), **kwargs)


# --- 1. module names a folder gives -----------------------------------------------------------------
MODULES = ["os:system", "antigravity:X", "http.server:X", "sweep_evil_pkg.sub:X", "sweep_evil_pkg:X",
           "this:X", "subprocess:Popen", "shutil:rmtree", "builtins:eval", "webbrowser:open"]


@pytest.fixture
def evil_modules(scene, monkeypatch):
    """A package whose __init__ writes the marker, on sys.path; the stdlib modules named unloaded
    (so an import would run them) and the callables named wired to the marker."""
    pkg = scene.root / "pkgs" / "sweep_evil_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(EVIL_INIT.format(marker=str(scene.marker)))
    (pkg / "sub.py").write_text(EVIL_INIT.format(marker=str(scene.marker)))
    monkeypatch.syspath_prepend(str(pkg.parent))
    for name in ("antigravity", "http.server", "this", "sweep_evil_pkg", "sweep_evil_pkg.sub"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    def trap(*args, **kwargs):
        scene.marker.write_text("called")
    import builtins
    import webbrowser
    for owner, attr in ((os, "system"), (subprocess, "Popen"), (shutil, "rmtree"), (builtins, "eval"),
                        (webbrowser, "open")):
        monkeypatch.setattr(owner, attr, trap)
    return scene


def _names_module(scene: Scene, where: str, name: str) -> Path:
    if where == "spec":
        path = scene.study / "spec.yaml"
        spec = yaml.safe_load(path.read_text())
        spec["methods"].append(name)
        spec["lrs"][name] = [1e-2]
    elif where == "variant":
        path = scene.study / "spec.yaml"
        spec = yaml.safe_load(path.read_text())
        spec["methods"].append("v1")
        spec["variants"] = {"v1": {"method": name}}
        spec["lrs"]["v1"] = [1e-2]
    else:  # a run folder's config.yaml or run.yaml
        path = scene.run_dir / where
        spec = yaml.safe_load(path.read_text())
        spec["method"]["name"] = name
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("where,command", [("spec", "report"), ("spec", "status"), ("variant", "plan"),
                                           ("spec", "run"), ("config.yaml", "sample"), ("run.yaml", "train")])
def test_sweep_a_module_a_folder_names_is_never_imported(evil_modules, name, where, command):
    scene = evil_modules
    path = _names_module(scene, where, name)
    if command in ("report", "status", "plan"):  # a label: read, never imported
        code, err, out = run_command(scene, command, expect="ok")
    else:
        code, err, out = run_command(scene, command, names=[str(path), name, "--trust-method-imports"])
    assert "Beautiful is better than ugly" not in out
    for module in ("antigravity", "http.server", "this", "sweep_evil_pkg", "sweep_evil_pkg.sub"):
        assert module not in sys.modules


# --- 2. links in a received folder -------------------------------------------------------------------
LINKED = [("summary.json", "status"), ("summary.json", "report"), ("metrics.jsonl", "report"),
          ("summary.json", "train"), ("metrics.jsonl", "train"), ("config.yaml", "train"), ("data.json", "train"),
          ("checkpoint.pt", "train"), ("checkpoint.prev.pt", "train"), ("train.log", "train"),
          ("worker.lock", "train"), ("config.yaml", "sample"), ("checkpoint.pt", "sample"),
          ("checkpoint.prev.pt", "sample"), ("data.json", "sample"), ("spec.yaml", "status"),
          ("spec.yaml", "report"), ("report/table1.md", "report"), ("report/results.json", "report"),
          ("report/verdict.md", "report"), ("report/table1.tex", "report"), ("data.json", "run"),
          ("train.log", "run"), ("run.yaml", "run"), ("summary.json", "run")]


def _place(scene: Scene, name: str) -> Path:
    if name == "spec.yaml" or name.startswith("report/"):
        return scene.study / name
    return scene.run_dir / name


def _unfinished(scene: Scene, command: str) -> None:
    """`train` and `study run` resume the run: its summary moved away (its checkpoint is at the last step)."""
    if command in ("train", "run") and (scene.run_dir / "summary.json").is_file():
        (scene.run_dir / "summary.json").unlink()


@pytest.mark.parametrize("name,command", LINKED)
@pytest.mark.parametrize("kind", ["symlink", "dangling"])
def test_sweep_a_link_out_of_the_folder_is_never_followed(scene, name, command, kind):
    _unfinished(scene, command)
    path = _place(scene, name)
    path.unlink(missing_ok=True)
    path.symlink_to(scene.decoy if kind == "symlink" else scene.outside / "new.txt")
    run_command(scene, command, expect="either", names=[path.name])


@pytest.mark.parametrize("name,command", [("train.log", "run"), ("metrics.jsonl", "resume"),
                                          ("checkpoint.pt", "resume"), ("config.yaml", "resume"),
                                          ("report/table1.md", "report"), ("worker.lock", "resume")])
def test_sweep_a_hard_link_to_an_outside_file_is_never_written_through(scene, name, command):
    _unfinished(scene, command)
    path = scene.run / name if command == "resume" else _place(scene, name)
    path.unlink(missing_ok=True)
    os.link(scene.decoy, path)
    # a hard link is the folder's own file as far as a reader can tell: reading it is allowed (the
    # decoy's atime is then expected to move), writing through it is not
    before = scene.decoy.read_bytes()
    st = scene.decoy.stat()
    code = main([str(a) for a in STUDY_ARGS[command](scene)])
    scene.capsys.readouterr()
    assert scene.decoy.read_bytes() == before and scene.decoy.stat().st_mtime_ns == st.st_mtime_ns, code


# --- 3. special files in a received folder -------------------------------------------------------------
SPECIAL_PLACES = [("summary.json", "status"), ("metrics.jsonl", "report"), ("spec.yaml", "report"),
                  ("config.yaml", "sample"), ("checkpoint.pt", "sample"), ("checkpoint.pt", "train"),
                  ("checkpoint.prev.pt", "train"), ("data.json", "train"), ("metrics.jsonl", "train"),
                  ("config.yaml", "train"), ("train.log", "train"), ("worker.lock", "train"),
                  ("summary.json", "run"), ("data.json", "run"), ("train.log", "run"), ("report/table1.md", "report")]


def _make_special(path: Path, kind: str) -> socket.socket | None:
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        here = os.getcwd()
        os.chdir(path.parent)  # a socket's path is limited to 108 bytes
        try:
            server.bind(path.name)
        finally:
            os.chdir(here)
        server.listen(1)
        return server
    return None


@pytest.mark.parametrize("name,command", SPECIAL_PLACES)
@pytest.mark.parametrize("kind", ["fifo", "socket", "folder"])
def test_sweep_a_special_file_is_refused_at_once(scene, name, command, kind):
    _unfinished(scene, command)
    server = _make_special(_place(scene, name), kind)
    try:
        run_command(scene, command, expect="either", names=[name.split("/")[-1]])
    finally:
        if server is not None:
            server.close()


# --- 4. checkpoint corruptions ------------------------------------------------------------------------
class Planted(torch.Tensor):
    """A tensor subclass: the weights-only reader must not import this module to build it."""


def _first(state: dict) -> str:
    return next(k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() == 2)


def _first_weight(saved: dict) -> str:
    return _first(saved["method"])


def _set(key, make):
    def edit(saved):
        saved["method"][key(saved)] = make(saved["method"][key(saved)])
    return edit


def _opt(edit):
    def apply(saved):
        edit(saved["optimizer"])
    return apply


CHECKPOINTS = {
    "float16 weight": _set(_first_weight, lambda t: t.half()),
    "int64 weight": _set(_first_weight, lambda t: t.long()),
    "complex weight": _set(_first_weight, lambda t: t.to(torch.complex64)),
    "meta weight": _set(_first_weight, lambda t: torch.empty_like(t, device="meta")),
    "huge declared shape": _set(_first_weight, lambda t: torch.zeros(1).expand(10**6, 10**6)),
    "transposed shape": _set(_first_weight, lambda t: t.t().contiguous() if t.shape[0] != t.shape[1] else t[:1]),
    "scalar weight": _set(_first_weight, lambda t: torch.tensor(1.0)),
    "subclass weight": _set(_first_weight, lambda t: t.as_subclass(Planted)),
    "extra key": lambda s: s["method"].update({"evil.weight": torch.zeros(2)}),
    "missing key": lambda s: s["method"].pop(_first(s["method"])),
    "method a list": lambda s: s.update(method=list(s["method"].values())),
    "state for another parameter": _opt(lambda o: o["state"].update({999: o["state"][0]})),
    "moments swapped": _opt(lambda o: o["state"].update({0: o["state"][1], 1: o["state"][0]})),
    "float64 moment": _opt(lambda o: o["state"][0].update(exp_avg=o["state"][0]["exp_avg"].double())),
    "group of other params": _opt(lambda o: o["param_groups"][0].update(params=[999])),
    "negative second moment": _opt(lambda o: o["state"][0]["exp_avg_sq"].fill_(-1.0)),
    "step a float": lambda s: s.update(step=float(s["step"])),
    "step a tensor": lambda s: s.update(step=torch.tensor(s["step"])),
    "rng of floats": lambda s: s.update(rng_cpu=s["rng_cpu"].float()),
    "elapsed NaN": lambda s: s.update(elapsed_s=float("nan")),
    "metrics rows from the future": lambda s: s["metrics"].append({"step": 10**9, "val_loss": 1.0}),
    "extra top-level key": lambda s: s.update(evil="x"),
}
SAMPLE_SKIPS = {"state for another parameter", "moments swapped", "float64 moment", "group of other params",
                "negative second moment", "step a float", "step a tensor", "rng of floats", "elapsed NaN",
                "metrics rows from the future"}
WHOLE_FILE = {"empty file": b"", "truncated": None, "a list": "list", "text": b"not a checkpoint\n"}


def _edit_checkpoint(folder: Path, edit) -> None:
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        saved = torch.load(folder / name, weights_only=True)
        edit(saved)
        torch.save(saved, folder / name)


@pytest.mark.parametrize("command", ["resume", "sample-run"])
@pytest.mark.parametrize("corruption", list(CHECKPOINTS) + list(WHOLE_FILE))
def test_sweep_a_corrupt_checkpoint_is_refused_before_it_is_loaded(scene, command, corruption):
    if corruption in CHECKPOINTS:
        _edit_checkpoint(scene.run, CHECKPOINTS[corruption])
    else:
        for name in ("checkpoint.pt", "checkpoint.prev.pt"):
            path, content = scene.run / name, WHOLE_FILE[corruption]
            if content is None:
                content = path.read_bytes()[:len(path.read_bytes()) // 2]
            elif content == "list":
                torch.save([1, 2, 3], path)
                continue
            path.write_bytes(content)
    # sample loads the weights only: the optimizer, step, RNG and rows are `train`'s to check
    harmless = corruption == "extra top-level key" or (command == "sample-run" and corruption in SAMPLE_SKIPS)
    named = {"meta weight": "a meta tensor", "negative second moment": "exp_avg_sq of parameter 0 holds negative"}
    run_command(scene, command, expect="either" if harmless else "refused",
                names=["checkpoint", *([named[corruption]] if corruption in named and not harmless else [])])


# --- 5. YAML tricks in spec.yaml, config.yaml and run.yaml ---------------------------------------------
DEEP = "[" * 20000 + "]" * 20000
YAML_TRICKS = {  # name: (text put in place of a value, or a whole file when it starts with "FILE:")
    "nested anchor": "{lr: &a 0.01, x: [*a]}",
    "python object tag": "!!python/object/apply:os.system ['touch MARKER']",
    "python name tag": "!!python/name:os.system",
    "deep nesting": DEEP,
    "huge int": "1" + "0" * 5000,
    "int just under the digit limit": "1" + "0" * 4000,
    "1e400": "1.0e+400",
    ".nan": ".nan",
    "-.inf": "-.inf",
    "unhashable key": "{? [a, b] : 1}",
    "timestamp": "2001-12-14",
    "binary": "!!binary aGVsbG8=",
    "set": "!!set {a, b}",
    "FILE:a list": "- 1\n- 2\n",
    "FILE:two documents": "a: 1\n---\nb: 2\n",
    "FILE:NUL byte": "name: a\x00b\n",
    "FILE:non-string keys": "1: 2\nnull: 3\n[1, 2]: 4\n",
}
YAML_TARGETS = {  # (section, key) whose value is replaced, and the command that reads the file
    "spec.yaml": ((None, "seeds"), "status"),
    "config.yaml": (("model", "d_model"), "sample"),
    "run.yaml": (("train", "lr"), "train"),
}


def _put(path: Path, where: tuple, trick: str) -> None:
    if trick.startswith("FILE:"):
        path.write_text(YAML_TRICKS[trick].replace("MARKER", ""))
        return
    data = yaml.safe_load(path.read_text())
    section, key = where
    (data[section] if section else data)[key] = "__TRICK__"
    text = yaml.safe_dump(data, sort_keys=False)
    assert text.count("__TRICK__") == 1
    path.write_text(text.replace("__TRICK__", YAML_TRICKS[trick]))


@pytest.mark.parametrize("target", list(YAML_TARGETS))
@pytest.mark.parametrize("trick", list(YAML_TRICKS))
def test_sweep_yaml_tricks_are_one_line_naming_the_file(scene, monkeypatch, target, trick):
    where, command = YAML_TARGETS[target]
    path = scene.study / target if target == "spec.yaml" else scene.run_dir / target
    monkeypatch.chdir(scene.root)  # a tag that ran `touch MARKER` would leave MARKER here
    _put(path, where, trick)
    _unfinished(scene, command)
    run_command(scene, command, any_of=[path.name, where[1]])


def test_sweep_a_4_gib_sparse_spec_is_refused_by_its_size(scene):
    os.truncate(scene.study / "spec.yaml", 4 << 30)
    for command in ("status", "report"):
        run_command(scene, command, names=["spec.yaml", "4096.0 MiB"])


# --- 6. CSV tricks for `beyondbp fit` ----------------------------------------------------------------
POINTS = "method,compute_pf_days,loss\n" + "".join(f"bp,{c:g},{3.0 * c ** -0.05:.5f}\n"
                                                   for c in (1e-9, 3e-9, 1e-8, 3e-8, 1e-7, 3e-7))
CSV_TRICKS = {
    "quoted newline in a label": POINTS + '"b\np",1e-9,3.0\n"b\np",1e-8,2.9\n',
    "a million columns": POINTS.replace("loss\n", "loss," + ",".join(f"c{i}" for i in range(10**6)) + "\n", 1),
    "a row of a million fields": POINTS + "bp,1e-6,3.0" + ",1" * 10**6 + "\n",
    "NaN strings": POINTS + "bp,nan,3.0\nbp,1e-6,NaN\nbp,-nan,2.0\n",
    "infinity strings": POINTS + "bp,inf,3.0\nbp,1e-6,Infinity\n",
    "negative zero": POINTS + "bp,-0.0,3.0\n",
    "negative zero loss": POINTS + "bp,1e-6,-0.0\n",
    "BOM and CRLF": "\ufeff" + POINTS.replace("\n", "\r\n"),
    "NUL byte": POINTS + "bp,1e-6,2\x000\n",
    "a field past csv's limit": POINTS + "bp,1e-6," + "9" * 200_000 + "\n",
    "header only": "method,compute_pf_days,loss\n",
    "empty": "",
    "hex float": POINTS + "bp,0x1p-20,3.0\n",
    "huge integer": POINTS + "bp,1" + "0" * 5000 + ",3.0\n",
    "ragged row": POINTS + "bp,1e-6\n",
    "right-to-left mark in a label": POINTS.replace("bp,", "b\u202ep,"),
    "a 100,000-character label": POINTS.replace("bp,", "b" * 100_000 + ","),
    "lone surrogate bytes": POINTS + "bp,1e-6,3.0\ud800\n",
}


@pytest.mark.parametrize("trick", list(CSV_TRICKS))
def test_sweep_fit_csv_tricks(scene, trick):
    path = scene.root / "points.csv"
    text = CSV_TRICKS[trick]
    path.write_bytes(text.encode("utf-8", "surrogatepass"))  # a lone surrogate as its (invalid) UTF-8 bytes
    code, err, out = scene.attack("fit", path, "--bootstrap", "0", expect="either", any_of=["points.csv", "--reference"])
    if code == 0:
        assert json.loads(out)["fits"] is not None
        assert not any(ch in out for ch in "\u202e\x00"), "a control character reached the output"


# --- 7. labels ----------------------------------------------------------------------------------------
LABELS = {"cyrillic lookalike": "b\u0440", "right-to-left mark": "bp\u202e", "zero-width joiner": "b\u200dp",
          "fullwidth": "\uff42\uff50", "100,000 characters": "b" * 100_000, "dot dot": "..", "dot": ".",
          "leading dash": "-bp", "trailing newline": "bp\n", "spaces": "b p", "tab": "b\tp", "percent": "b%p"}


@pytest.mark.parametrize("where", ["methods", "sizes", "variants"])
@pytest.mark.parametrize("label", list(LABELS))
def test_sweep_unsafe_labels_are_refused_naming_the_key(scene, where, label):
    path = scene.study / "spec.yaml"
    spec = yaml.safe_load(path.read_text())
    value = LABELS[label]
    if where == "methods":
        spec["methods"].append(value)
        spec["lrs"][value] = [1e-2]
    elif where == "sizes":
        spec["sizes"][value] = dict(spec["sizes"]["a"])
    else:
        spec["methods"].append(value)
        spec["variants"] = {value: {"method": "bp"}}
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    for command in ("status", "plan"):
        run_command(scene, command, names=[where])


# --- 8. the environment ---------------------------------------------------------------------------------
ENVIRONMENTS = [
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE"), ({"WORLD_SIZE": "-1"}, "WORLD_SIZE"),
    ({"WORLD_SIZE": "99999999999999999999999"}, "WORLD_SIZE"), ({"WORLD_SIZE": "1e3"}, "WORLD_SIZE"),
    ({"WORLD_SIZE": "2", "RANK": "abc"}, "RANK"), ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "7"}, "LOCAL_RANK"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR"), ({"WORLD_SIZE": "2", "RANK": "1"}, "MASTER_ADDR"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "localhost"}, "MASTER_PORT"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "http"}, "MASTER_PORT"),
    ({"WORLD_SIZE": "1", "RANK": "5"}, None), ({"WORLD_SIZE": "", "RANK": ""}, "WORLD_SIZE"),
    ({"LOCAL_WORLD_SIZE": "-3"}, "LOCAL_WORLD_SIZE"), ({"LOCAL_WORLD_SIZE": "0"}, "LOCAL_WORLD_SIZE"),
]


@pytest.mark.parametrize("env,name", ENVIRONMENTS)
def test_sweep_a_bad_distributed_environment_is_named(scene, monkeypatch, env, name):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run_command(scene, "resume", expect="ok" if name is None else "refused", names=[f"{name}"] if name else [])


@pytest.mark.parametrize("variable", ["OMP_NUM_THREADS", "MKL_NUM_THREADS"])
def test_sweep_threads_variables_that_are_not_numbers(scene, variable):
    env = dict(os.environ, **{variable: "abc"})
    done = subprocess.run([sys.executable, "-P", "-m", "beyondbp", "sample", "--run", str(scene.run), "--tokens", "3"],
                          capture_output=True, text=True, timeout=60, env=env)
    err = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 0 and err == [f"beyondbp: note: {variable}='abc' is not a whole number > 0; ignored"], err


# --- 9. lone surrogates ------------------------------------------------------------------------------
def test_sweep_a_lone_surrogate_in_a_jsonl_corpus_is_named(scene, monkeypatch):
    """Issue 27 case 13 named this one; a corpus is a path the user typed, read as data all the same.
    Its own token cache: the refused pass's folder stays there, out of the session's shared one."""
    monkeypatch.setenv("BEYONDBP_CACHE", str(scene.root / "fresh" / "cache"))
    corpus = scene.root / "corpus.jsonl"
    good = [json.dumps({"text": "the quick brown fox " * 30}) for _ in range(60)]
    corpus.write_text("\n".join(good[:30] + ['{"text": "bad \\ud800 line"}'] + good[30:]) + "\n")
    scene.attack("train", "--out", scene.root / "fresh", *RUN, f"data.corpus={corpus}", "data.workers=1",
                 names=[f"{corpus}:31", "lone surrogate"], may_change=["fresh"])


@pytest.mark.parametrize("where,command", [("metrics val_loss", "report"), ("metrics extra", "report"),
                                           ("metrics alignment", "report"), ("summary error", "status"),
                                           ("summary error", "report"), ("summary method", "status")])
def test_sweep_a_lone_surrogate_in_a_run_record(scene, where, command):
    path = scene.run_dir / ("metrics.jsonl" if where.startswith("metrics") else "summary.json")
    if where.startswith("metrics"):
        row = json.loads(path.read_text().splitlines()[-1])
        row["step"] += 1
        key, value = {"metrics val_loss": ("val_loss", "\ud800"), "metrics extra": ("note", "\ud800"),
                      "metrics alignment": ("alignment", {"\ud800": 0.5})}[where]
        row[key] = value
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
    else:
        summary = json.loads(path.read_text())
        if where == "summary error":
            summary.update(status="failed", final_val_loss=None, error="bad \ud800 end")
        else:
            summary["method"] = "bp\ud800"
        path.write_text(json.dumps(summary))
    if where in ("summary method", "metrics extra"):  # the record is read whole: refused wherever it is
        run_command(scene, command, names=[path.name, "lone surrogate"])
    else:
        run_command(scene, command, names=[path.name])


# --- 10. JSON records: depth, digits, types -------------------------------------------------------------
JSON_TRICKS = {
    "deep nesting": "[" * 100_000 + "]" * 100_000,
    "a 5,000-digit number": "1" + "0" * 5000,
    "1e400": "1e400",
    "a list": "[1, 2]",
    "duplicate keys": None,
}


@pytest.mark.parametrize("trick", list(JSON_TRICKS))
@pytest.mark.parametrize("name,command", [("summary.json", "status"), ("metrics.jsonl", "report"),
                                          ("data.json", "train")])
def test_sweep_json_tricks_in_run_records(scene, trick, name, command):
    path = scene.run_dir / name
    value = JSON_TRICKS[trick]
    if name == "metrics.jsonl":
        row = json.loads(path.read_text().splitlines()[-1])
        text = json.dumps(dict(row, step=row["step"] + 1, val_loss="__TRICK__")).replace('"__TRICK__"', value or "1.0")
        if trick == "a list":
            text = value
        elif value is None:
            text = text.replace("{", '{"step": 0, ', 1)
        path.write_text(path.read_text() + text + "\n")
    elif value is None:
        path.write_text(path.read_text().replace("{", '{"status": "failed", ' if name == "summary.json"
                                                 else '{"entry": "x", ', 1))
    else:
        record = json.loads(path.read_text())
        key = "final_val_loss" if name == "summary.json" else "tokens"
        record[key] = "__TRICK__"
        path.write_text(json.dumps(record).replace('"__TRICK__"', value) if trick != "a list" else value)
    _unfinished(scene, command)
    # JSON's own rule: the last key wins (beyondbp never writes one twice); an infinite val_loss is
    # what a diverged run logs, and data.json's token counts are a record that decides nothing
    harmless = trick == "duplicate keys" or (trick == "1e400" and name != "summary.json")
    run_command(scene, command, expect="either" if harmless else "refused", names=[] if harmless else [name])


# --- 11. chain files: a trunk's run.yaml and chain.yaml ---------------------------------------------------
def _trunk(scene: Scene, branch_dir: str | Path, method: str | None = None) -> Path:
    """DIR/trunks/t as `study run` writes it for branched budgets: run.yaml and a chain.yaml of one branch."""
    trunk = scene.study / "trunks" / "t"
    trunk.mkdir(parents=True)
    cfg = yaml.safe_load((scene.run_dir / "run.yaml").read_text())
    if method is not None:
        cfg["method"]["name"] = method
    (trunk / "run.yaml").write_text(yaml.safe_dump(cfg))
    (trunk / "chain.yaml").write_text(yaml.safe_dump({"branches": [{"dir": str(branch_dir), "step": 2}]}))
    return trunk


@pytest.mark.parametrize("name", MODULES[:5])
def test_sweep_a_module_a_trunk_names_is_never_imported(evil_modules, name):
    scene = evil_modules
    trunk = _trunk(scene, scene.study / "runs" / "b1", method=name)
    scene.attack("chain", trunk, names=[str(trunk / "run.yaml"), name, "--trust-method-imports"])
    assert not any(module in sys.modules for module in ("antigravity", "http.server", "sweep_evil_pkg"))


@pytest.mark.parametrize("where", ["outside", "dot-dot", "link", "study folder"])
def test_sweep_a_chain_file_never_sends_a_branch_out_of_the_study(scene, where):
    runs = scene.study / "runs"
    branch = {"outside": scene.outside / "b1", "dot-dot": runs / ".." / ".." / "outside" / "b1",
              "link": runs / "b1", "study folder": scene.study}[where]
    if where == "link":
        branch.symlink_to(scene.outside, target_is_directory=True)
    trunk = _trunk(scene, branch)
    scene.attack("chain", trunk, names=["chain.yaml" if where != "link" else "b1"])


# --- 12. `methods` and the read-only commands started inside a received folder ----------------------------
@pytest.mark.parametrize("command", [["methods", "--settings"], ["study", "status", "."]])
def test_sweep_modules_and_entry_points_planted_in_the_current_folder_are_not_loaded(scene, command):
    """A received study holding yaml.py, numpy.py and an installed-looking package with a
    `beyondbp.methods` entry point; beyondbp started as documented (`python -P -m beyondbp`)."""
    code = EVIL_INIT.format(marker=str(scene.marker))
    for module in ("yaml.py", "numpy.py", "sweep_planted.py"):
        (scene.study / module).write_text(code)
    info = scene.study / "sweep_planted-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sweep-planted\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[beyondbp.methods]\nplanted = sweep_planted:Planted\n")
    done = subprocess.run([sys.executable, "-P", "-m", "beyondbp", *command], cwd=scene.study, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    assert "planted" not in done.stdout and not scene.marker.exists()
