"""Study specs, planning, resumable execution (SIGKILL mid-way), status and failed runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from beyondbp.config import ConfigError
from beyondbp.report.write import write_report
from beyondbp.study.plan import plan_study
from beyondbp.study.presets import preset_names
from beyondbp.study.spec import load_spec
from beyondbp.study.local_executor import run_study
from beyondbp.runs.folder import run_state

TINY_SPEC = {
    "name": "tiny",
    "methods": ["bp", "dfa_block"],
    "sizes": {"a": {"n_layer": 2, "d_model": 8, "n_head": 2}, "b": {"n_layer": 2, "d_model": 16, "n_head": 2}},
    "tokens": 8192,
    "lrs": {"bp": [1e-2], "dfa_block": [1e-2]},
    "seeds": [0],
    "base": {"model": {"context": 32},
             "train": {"batch_tokens": 512, "n_evals": 5, "eval_tokens": 1024, "checkpoint_every_s": 0,
                       "threads": 1}},
}


def write_spec(tmp_path: Path, spec: dict = TINY_SPEC) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_every_preset_plans(tmp_path):
    assert {"smoke", "quick", "cpu", "gpu", "paper"} <= set(preset_names())
    for name in preset_names():
        plan = plan_study(load_spec(preset=name))
        assert plan.runs, name
        names = [r.name for r in plan.runs]
        assert len(set(names)) == len(names)


def test_cpu_preset_shape():
    """The design the preset documents: 4-block models over more than a decade of compute, a budget
    that grows with size (80 tokens per parameter), and the DFAs' own learning-rate sweeps."""
    plan = plan_study(load_spec(preset="cpu"))
    spec = plan.spec
    assert spec.methods == ["bp", "dfa", "dfa_block", "shallow", "fa"]
    assert spec.tokens_per_param == [80.0] and spec.frontier_points == "final"
    assert_fair_sweeps(spec)
    bp_runs = [r for r in plan.runs if r.method == "bp" and r.seed == 0 and r.lr == sorted(spec.lrs["bp"]["L4d12"])[1]]
    assert len(bp_runs) == len(spec.sizes) == 5
    assert all(r.cfg.model.n_layer == 4 and r.cfg.train.batch_tokens == 1024 for r in bp_runs)
    assert all(abs(r.tokens / r.n_params - 80) < 1 for r in bp_runs)
    compute = sorted(r.n_params * r.tokens for r in bp_runs)
    assert compute[-1] / compute[0] >= 10 ** 1.4
    assert len(plan.runs) == 5 * 5 * 3 + 5 * 2 * 1  # 3 rates each; a second seed at two sizes' middle rates


def assert_fair_sweeps(spec: dict) -> None:
    """Every method sweeps the same number (3 or more) of rates spread over the same ratio, BP
    included, and 2 or more seeds run at 2 or more sizes (issue 26: fair tuning, measured seed noise)."""
    spans = {(len(lrs), round(max(lrs) / min(lrs), 6)) for by_size in spec.lrs.values() for lrs in by_size.values()}
    assert len(spans) == 1 and next(iter(spans))[0] >= 3, spans
    extra = spec.seed_sizes
    assert len(extra["sizes"]) >= 2 and len(spec.seeds) + len(extra["seeds"]) >= 2


def test_quick_preset_shape():
    plan = plan_study(load_spec(preset="quick"))
    spec = plan.spec
    assert spec.methods == ["bp", "dfa_block", "shallow"] and len(spec.sizes) >= 4
    assert_fair_sweeps(spec)
    assert all(r.cfg.model.n_layer == 4 for r in plan.runs)


def test_ablation_preset_runs_each_variant_of_dfa_block_on_both_models():
    plan = plan_study(load_spec(preset="dfa-ablation"))
    literal = [r for r in plan.runs if r.method == "literal"]
    assert {r.size for r in literal} == {"L9d24", "L4d32"}
    assert all(r.cfg.method.name == "dfa_block" and r.cfg.method.feedback_point == "output" for r in literal)
    postln = next(r for r in plan.runs if r.method == "postln")
    assert postln.cfg.model.norm == "post"
    assert next(r for r in plan.runs if r.method == "literal_lr_3e-3").lr == 3e-3
    default = next(r for r in plan.runs if r.method == "dfa_block")
    assert default.cfg.method.feedback_point == "layernorm" and default.lr == 1e-2


def test_plan_names_and_overrides(tmp_path):
    plan = plan_study(load_spec(write_spec(tmp_path), overrides=["seeds=[0,1]", "lrs.bp=[1e-3,3e-3]",
                                                                  "base.train.weight_decay=0.0"]))
    names = sorted(r.name for r in plan.runs)
    assert len(names) == 2 * (2 + 1) * 2
    assert "bp_a_lr0.001_s1" in names and "dfa_block_b_lr0.01_s0" in names
    run = next(r for r in plan.runs if r.name == "bp_b_lr0.003_s1")
    assert (run.cfg.train.lr, run.cfg.seed, run.cfg.model.d_model) == (3e-3, 1, 16)
    assert run.cfg.train.weight_decay == 0.0 and run.cfg.method.name == "bp"


def test_tokens_per_param_scales_with_model(tmp_path):
    plan = plan_study(load_spec(write_spec(tmp_path), overrides=["tokens_per_param=20"]))
    for run in plan.runs:
        assert run.tokens == max(512, int(20 * run.n_params) // 512 * 512)
    small, large = (next(r for r in plan.runs if r.size == s and r.method == "bp") for s in ("a", "b"))
    assert large.tokens > small.tokens


@pytest.mark.parametrize("override, field", [
    (["methods=[bp,nonsense]"], "methods"),
    (["sizes=[]"], "sizes"),
    (["tokens=-5"], "tokens"),
    (["colour=blue"], "colour"),
    (["base.train.nonsense=1"], "base.train.nonsense"),
    (["lrs.bp=[-1e-3]"], "lrs.bp"),
    (["sizes.a.n_heads=3"], "sizes.a.n_heads"),
    (["lrs.nope=[1e-2]"], "lrs.nope: unknown method 'nope'"),
    (["per_method.nope.train.beta1=0.8"], "per_method.nope: unknown method 'nope'"),
    (["lrs=[1e-2]"], "lrs: expected a mapping method -> learning rates"),
])
def test_bad_specs_fail_with_one_line_naming_the_field(tmp_path, override, field):
    with pytest.raises(ConfigError) as info:
        plan_study(load_spec(write_spec(tmp_path), overrides=override))
    message = str(info.value)
    assert field in message and "\n" not in message


def test_bad_spec_from_cli_starts_no_run(tmp_path):
    out = tmp_path / "study"
    proc = subprocess.run([sys.executable, "-m", "beyondbp", "study", "run", str(write_spec(tmp_path)),
                           "--out", str(out), "methods=[bp,nonsense]"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "methods" in proc.stderr
    assert not out.exists()


def test_study_folder_refuses_another_spec(tmp_path):
    from beyondbp.study.folder import prepare_study_dir
    spec = load_spec(write_spec(tmp_path))
    prepare_study_dir(tmp_path / "s", spec)
    prepare_study_dir(tmp_path / "s", load_spec(write_spec(tmp_path), overrides=["base.train.threads=3"]))
    with pytest.raises(ConfigError, match="tokens"):
        prepare_study_dir(tmp_path / "s", load_spec(write_spec(tmp_path), overrides=["tokens=16384"]))


def _study_cmd(spec_path: Path, out: Path) -> list[str]:
    # one worker: runs go one after another, so the kill lands after the first and inside the second
    return [sys.executable, "-m", "beyondbp", "study", "run", str(spec_path), "--out", str(out),
            "--workers", "1", "--bootstrap", "5"]


@pytest.mark.slow
def test_killed_study_resumes_to_the_same_table(tmp_path):
    """SIGKILL the study mid-way, rerun: completed runs are not retrained, Table 1 is unchanged."""
    spec_path = write_spec(tmp_path, dict(TINY_SPEC, sizes={"b": TINY_SPEC["sizes"]["b"]}))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    reference = tmp_path / "reference"
    assert run_study(plan_study(load_spec(spec_path)), reference, workers=1, quiet=True) == {"completed": 2}
    write_report(reference, bootstrap=5)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_study_cmd(spec_path, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    runs = killed / "runs"
    deadline = time.monotonic() + 300
    while True:  # kill once a run has completed and another is part-way
        states = [run_state(d) for d in runs.iterdir()] if runs.exists() else []
        if "completed" in states and "running" in states and any(
                (d / "checkpoint.pt").exists() and run_state(d) == "running" for d in runs.iterdir()):
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the study never had a completed and a checkpointed running run: {states}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    # the runs die with the study (PR_SET_PDEATHSIG); a run's lock is held until its process is gone
    while any(run_state(d) == "running" for d in runs.iterdir()):
        assert time.monotonic() < deadline, "a run outlived the killed study by 60 s"
        time.sleep(0.05)
    done = {d.name: (d / "summary.json").stat().st_mtime_ns for d in runs.iterdir() if run_state(d) == "completed"}
    assert len(done) == 1
    assert all(run_state(d) in ("completed", "interrupted", "pending") for d in runs.iterdir())

    subprocess.run(_study_cmd(spec_path, killed), check=True, capture_output=True, env=env)
    for name, mtime in done.items():
        assert (runs / name / "summary.json").stat().st_mtime_ns == mtime  # not retrained
    assert all(run_state(d) == "completed" for d in runs.iterdir())
    assert (killed / "report" / "table1.csv").read_text() == (reference / "report" / "table1.csv").read_text()
    for run in plan_study(load_spec(spec_path)).runs:  # every run's curve is the uninterrupted one
        a = [json.loads(x)["val_loss"] for x in (reference / "runs" / run.name / "metrics.jsonl").open()]
        b = [json.loads(x)["val_loss"] for x in (runs / run.name / "metrics.jsonl").open()]
        assert a == b


@pytest.mark.slow
def test_failed_run_is_recorded_and_the_study_continues(tmp_path, monkeypatch):
    spec = load_spec(write_spec(tmp_path), overrides=["methods=[bp]", "sizes=[{name: ok, n_layer: 1, d_model: 8, "
                                                                       "n_head: 2}]", "seeds=[0,1]"])
    plan = plan_study(spec)
    broken = plan.runs[1]
    broken.cfg.model.vocab_size = 100  # smaller than the byte tokenizer's 256: fails inside its worker
    counts = run_study(plan, tmp_path / "s", workers=2, quiet=True)
    assert counts == {"completed": 1, "failed": 1}
    summary = json.loads((tmp_path / "s" / "runs" / broken.name / "summary.json").read_text())
    assert summary["status"] == "failed" and "model.vocab_size" in summary["error"]
    status = subprocess.run([sys.executable, "-m", "beyondbp", "study", "status", str(tmp_path / "s")],
                            capture_output=True, text=True, check=True).stdout
    assert "1 completed, 1 failed" in status and f"{broken.name}" in status


def test_a_study_folder_from_before_tracks_still_resumes(tmp_path):
    from beyondbp.study.folder import prepare_study_dir
    spec = load_spec(write_spec(tmp_path))
    old = spec.to_dict()
    del old["track"]  # spec.yaml as written before the MLP track existed
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "spec.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    assert prepare_study_dir(tmp_path / "study", spec) == tmp_path / "study"
    other = load_spec(write_spec(tmp_path), overrides=["tokens=16384"])
    with pytest.raises(ConfigError, match="holds a study with a different spec: tokens"):
        prepare_study_dir(tmp_path / "study", other)


def test_variants_are_labelled_configurations_of_a_method(tmp_path):
    spec = dict(TINY_SPEC, methods=["bp", "literal"],
                variants={"literal": {"method": "dfa_block", "method.feedback_point": "output",
                                      "model.norm": "post"}},
                lrs={"bp": [1e-2], "literal": [3e-3]}, per_method={"literal": {"train.alignment_every_evals": 2}})
    plan = plan_study(load_spec(write_spec(tmp_path, spec)))
    literal = [r for r in plan.runs if r.method == "literal"]
    assert sorted(r.name for r in literal) == ["literal_a_lr0.003_s0", "literal_b_lr0.003_s0"]
    cfg = literal[0].cfg
    assert (cfg.method.name, cfg.method.feedback_point, cfg.model.norm, cfg.train.alignment_every_evals,
            cfg.train.lr) == ("dfa_block", "output", "post", 2, 3e-3)
    bp = next(r for r in plan.runs if r.method == "bp")
    assert (bp.cfg.method.name, bp.cfg.model.norm, bp.cfg.method.settings) == ("bp", "pre", {})  # BP has no settings


@pytest.mark.parametrize("variants, message", [
    ({"literal": {"method.feedback_point": "output"}}, "variants.literal: name the method it configures"),
    ({"literal": {"method": "nonsense"}}, "variants.literal.method: unknown method 'nonsense'"),
    ({"literal": {"method": "dfa_block", "method.nonsense": 1}}, "variants.literal.method.nonsense"),
    ({"bp": {"method": "dfa_block"}}, "variants.bp: a variant label must not be a method's name"),
])
def test_bad_variants_are_named(tmp_path, variants, message):
    spec = dict(TINY_SPEC, methods=["bp", *[v for v in variants if v != "bp"]], variants=variants, lrs={})
    with pytest.raises(ConfigError, match=message):
        load_spec(write_spec(tmp_path, spec))


def test_a_budget_list_trains_every_size_once_per_budget(tmp_path):
    plan = plan_study(load_spec(write_spec(tmp_path), overrides=["tokens_per_param=[20,80]", "methods=[bp]"]))
    names = sorted(r.name for r in plan.runs)
    assert names == ["bp_a_tpp20_lr0.01_s0", "bp_a_tpp80_lr0.01_s0", "bp_b_tpp20_lr0.01_s0", "bp_b_tpp80_lr0.01_s0"]
    for run in plan.runs:
        ratio = int(run.budget[3:])
        assert run.tokens == max(512, int(ratio * run.n_params) // 512 * 512)
    plan = plan_study(load_spec(write_spec(tmp_path), overrides=["tokens=[8192,16384]", "methods=[bp]"]))
    assert {r.budget: r.tokens for r in plan.runs} == {"8.19k": 8192, "16.4k": 16384}
    single = plan_study(load_spec(write_spec(tmp_path), overrides=["methods=[bp]"]))
    assert sorted(r.name for r in single.runs) == ["bp_a_lr0.01_s0", "bp_b_lr0.01_s0"]  # one budget: no tag


def test_learning_rates_per_size(tmp_path):
    plan = plan_study(load_spec(write_spec(tmp_path), overrides=["methods=[bp]", "lrs.bp={a: [1e-2], b: [3e-3, 1e-3]}"]))
    assert sorted((r.size, r.lr) for r in plan.runs) == [("a", 1e-2), ("b", 1e-3), ("b", 3e-3)]
    with pytest.raises(ConfigError, match="lrs.bp.b: no learning rates for size 'b'"):
        load_spec(write_spec(tmp_path), overrides=["methods=[bp]", "lrs.bp={a: [1e-2]}"])
    with pytest.raises(ConfigError, match="frontier_points: unknown value 'some'"):
        load_spec(write_spec(tmp_path), overrides=["frontier_points=some"])


def test_spec_is_typed_and_spec_yaml_keeps_its_keys_in_order(tmp_path):
    import dataclasses
    from beyondbp.study.folder import prepare_study_dir
    from beyondbp.study.spec import normalise_spec
    from beyondbp.study.spec_types import Spec
    spec = load_spec(write_spec(tmp_path), overrides=["seed_sizes={seeds: [7], sizes: [a]}"])
    assert isinstance(spec, Spec) and spec.tokens == [8192] and spec.lrs["bp"] == {"a": [1e-2], "b": [1e-2]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seeds = [1]
    prepare_study_dir(tmp_path / "s", spec)
    written = yaml.safe_load((tmp_path / "s" / "spec.yaml").read_text())
    assert list(written) == ["name", "description", "track", "methods", "variants", "sizes", "tokens",
                             "tokens_per_param", "budgets", "lrs", "seeds", "per_method", "base", "frontier_points",
                             "seed_sizes"]  # slurm: only when the spec gives it
    assert written["seed_sizes"] == {"seeds": [7], "sizes": ["a"], "rates": "all"}
    assert Spec.from_dict(written) == spec == normalise_spec(spec.to_dict())
    old = {k: v for k, v in written.items() if k not in ("track", "frontier_points", "seed_sizes")}
    assert (Spec.from_dict(old).track, Spec.from_dict(old).frontier_points, Spec.from_dict(old).seed_sizes) == \
        ("transformer", "final", None)
    with pytest.raises(ConfigError, match="spec.yaml: unknown key 'colour'"):
        Spec.from_dict({**written, "colour": "red"})
