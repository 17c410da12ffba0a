"""Methods from outside the package: the installed example (examples/sign_symmetry, entry point
`beyondbp.methods`) and `package.module:Class` train, are listed with their origin, are checked
before any run starts, record their origin and version, and run in studies (local and Slurm).
Needs `pip install -e examples/sign_symmetry` (the README's test command installs it)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from beyondbp.cli.main import main
from beyondbp.config import ConfigError, MethodConfig, from_dict, to_dict
from beyondbp.methods.lookup import resolve_method
from beyondbp.methods.run_builder import build_from_file
from beyondbp.report.write import write_report
from beyondbp.study.local_executor import run_study
from beyondbp.study.plan import plan_study
from beyondbp.study.presets import load_preset
from beyondbp.study.spec import load_spec
from beyondbp.runs.folder import check_same_config

ORIGIN = "sign_symmetry.method:SignSymmetry"


def test_installed_method_is_listed_with_its_origin_and_settings(capsys):
    assert main(["methods", "--settings"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("sign_symmetry"))
    assert line.endswith(f"[{ORIGIN}, beyondbp-sign-symmetry 0.1.0]")
    assert "method.sign_scale = 1.0: feedback magnitude relative to mean|W| (a finite number > 0)" in out
    assert "default train.lr = 0.001" in out  # synthetic's training default
    assert "[" not in next(row for row in out.splitlines() if row.startswith("bp "))  # built-ins carry no origin


@pytest.mark.parametrize("overrides, message", [
    (["method=sign_symmetry", "method.sign_scale=-1"], "method.sign_scale: must be a finite number > 0, got -1.0"),
    (["method=sign_symmetry", "method.feedback_scale=2"],
     "method.feedback_scale: unknown setting of method 'sign_symmetry' (its settings: sign_scale)"),
    (["method=no_such_package.mod:Thing"],
     "method: cannot import 'no_such_package.mod:Thing' (ModuleNotFoundError: No module named 'no_such_package')"),
    (["method=collections:OrderedDict"], "method: 'collections:OrderedDict' is not a training method "
                                         "(a subclass of beyondbp.methods.base.TrainingMethod)"),
    (["method=sign_symetry"], "method: unknown method 'sign_symetry' (valid: bp, dfa, dfa_block, drtp, fa, forward_grad, "
                              "kolen_pollack, local, mezo, shallow, synthetic, sign_symmetry, or package.module:Class)"),
])
def test_bad_method_fails_in_one_line_before_a_run_starts(tmp_path, capsys, overrides, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *overrides]) == 2
    assert capsys.readouterr().err == f"beyondbp: error: {message}\n"
    assert not out.exists()


@pytest.mark.parametrize("spec, message", [
    ({"per_method": {"sign_symmetry": {"method.sign_scale": 0}}},
     "per_method.sign_symmetry.method.sign_scale: must be a finite number > 0, got 0.0"),
    ({"methods": ["bp", "usf"], "variants": {"usf": {"method": ORIGIN, "method.scale": 2}}},
     "variants.usf.method.scale: unknown setting of method 'sign_symmetry.method:SignSymmetry' (its settings: sign_scale)"),
    ({"methods": ["bp", "no_such_package.mod:Thing"]},
     "methods: no_such_package.mod:Thing: cannot import 'no_such_package.mod:Thing' (ModuleNotFoundError: "
     "No module named 'no_such_package')"),
])
def test_bad_method_in_a_study_spec_fails_in_one_line(spec, message):
    overrides = {"methods": ["bp", "sign_symmetry"], **spec}
    with pytest.raises(ConfigError) as err:
        plan_study(load_spec(preset="smoke", overrides=overrides))
    assert str(err.value) == message


@pytest.mark.slow
def test_smoke_study_of_bp_against_sign_symmetry_reports_a_verdict_and_refuses_another_version(tmp_path):
    spec = load_spec(preset="smoke", overrides={"methods": ["bp", "sign_symmetry"], "lrs.sign_symmetry": [1e-2],
                                                "base.train.threads": 1})
    out = tmp_path / "study"
    assert run_study(plan_study(spec), out, workers=2, quiet=True) == {"completed": 6}
    run = out / "runs" / "sign_symmetry_tiny_lr0.01_s0"
    recorded = yaml.safe_load((run / "config.yaml").read_text())["method"]
    assert recorded == {"name": "sign_symmetry", "origin": ORIGIN, "version": "0.1.0", "sign_scale": 1.0}
    losses = [row["val_loss"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    assert losses[-1] < losses[0] - 0.5  # it learns
    write_report(out, bootstrap=5)
    answer = next(line for line in (out / "report" / "verdict.md").read_text().splitlines()
                  if line.startswith("- sign_symmetry: "))
    assert "no verdict" not in answer and "frontier points lie" in answer, answer  # both frontiers were fitted

    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("version: 0.1.0", "version: 0.0.9"))
    with pytest.raises(ConfigError) as err:
        run_study(plan_study(spec), out, workers=1, quiet=True)
    assert str(err.value).startswith(f"{run}: method.version is '0.0.9' there, '0.1.0' now")


@pytest.mark.slow
def test_plugin_study_runs_on_slurm_through_submitit(tmp_path):
    pytest.importorskip("submitit")
    from test_slurm import BASE, submit, wait_for, write_spec
    spec = {"name": "plugin", "methods": ["bp", "usf"], "sizes": {"a": {"n_layer": 2, "d_model": 8, "n_head": 2}},
            "variants": {"usf": {"method": ORIGIN, "method.sign_scale": 0.5}}, "tokens": 4096,
            "lrs": {"bp": [1e-2], "usf": [1e-2]}, "seeds": [0], "base": BASE,
            "slurm": {"cluster": "local", "timeout_min": 10}}
    out = tmp_path / "study"
    plan, jobs = submit(write_spec(tmp_path, spec), out)
    wait_for(jobs, out, poll_s=0.2)
    run = out / "runs" / "usf_a_lr0.01_s0"
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    recorded = yaml.safe_load((run / "config.yaml").read_text())["method"]
    assert (recorded["origin"], recorded["sign_scale"]) == (ORIGIN, 0.5)


def test_training_defaults_sit_below_config_and_command_line(tmp_path):
    assert build_from_file(overrides=["method=synthetic"]).train.lr == 1e-3  # its default, not the shared 6e-3
    assert build_from_file(overrides=["method=bp"]).train.lr == 6e-3
    assert build_from_file(overrides=["method=forward_grad"]).train.batch_tokens == 1024  # 4,096 stays on the plateau
    assert build_from_file(overrides=["method=bp"]).train.batch_tokens == 4096
    assert build_from_file(overrides=["method=forward_grad", "train.batch_tokens=2048"]).train.batch_tokens == 2048
    config = tmp_path / "run.yaml"
    config.write_text("method: synthetic\ntrain: {lr: 3.0e-3}\n")
    assert build_from_file(config).train.lr == 3e-3
    assert build_from_file(config, ["train.lr=4e-3"]).train.lr == 4e-3
    study = {"methods": ["bp", "synthetic"], "lrs": {"bp": [1e-2]}}
    assert load_spec(preset="smoke", overrides=study).lrs["synthetic"] == {s: [1e-3] for s in ("tiny", "small", "medium")}
    shared = load_spec(preset="smoke", overrides={**study, "base.train.lr": 2e-3}).lrs["synthetic"]
    assert shared["tiny"] == [2e-3]  # a base learning rate is the spec's own: it wins
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"methods": ["bp", "forward_grad"], "tokens": 8192,
                                    "sizes": {"a": {"n_layer": 1, "d_model": 8, "n_head": 1}}}))
    batches = {r.method: r.cfg.train.batch_tokens for r in plan_study(load_spec(spec)).runs}
    assert batches == {"bp": 4096, "forward_grad": 1024}  # forward_grad's batch default, not the shared one
    given = {r.method: r.cfg.train.batch_tokens
             for r in plan_study(load_spec(spec, overrides=["base.train.batch_tokens=2048"])).runs}
    assert given == {"bp": 2048, "forward_grad": 2048}  # a base value is the spec's own: it wins


@pytest.mark.parametrize("preset", ["quick", "cpu"])
def test_presets_keep_their_runs(preset):
    """A preset names every method's rates (per size), so the per-method defaults change none of
    its runs: each run trains at a rate its preset file names for its method and size."""
    named = load_preset(preset)["lrs"]
    runs = plan_study(load_spec(preset=preset)).runs
    assert {r.method for r in runs} == set(named)
    for run in runs:
        rates = named[run.method][run.size] if isinstance(named[run.method], dict) else named[run.method]
        assert run.lr in rates and run.cfg.train.lr == run.lr, run.name


def test_a_run_folder_written_before_declared_settings_still_resumes(tmp_path):
    legacy = {"name": "bp", "feedback": "shared", "projection": "gaussian", "feedback_scale": 1.0,
              "preprojector_error": True, "blockwise": True, "asymmetric_residuals": True,
              "asymmetric_nonlinearity": True, "feedback_point": "layernorm", "error_point": "stream",
              "embedding_feedback": True, "train_last_n": 1, "perturbations": 8, "sg_conditional": True,
              "sg_scale_aware": True}
    cfg = from_dict({"method": legacy})
    cfg.method = resolve_method(cfg.method)
    assert cfg.method.settings == {}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**to_dict(cfg), "method": legacy}))
    check_same_config(tmp_path, cfg)  # no origin or version recorded then: not a difference
    with pytest.raises(ConfigError, match="method.train_last_n: unknown setting of method 'bp'"):
        resolve_method(MethodConfig("bp", train_last_n=2))  # a value someone set is not a record


def test_built_in_settings_are_read_without_torch():
    code = ("import sys; from beyondbp.config import MethodConfig; from beyondbp.methods.lookup import resolve_method;"
            "from beyondbp.study.plan import plan_study; from beyondbp.study.spec import load_spec;"
            "m = resolve_method(MethodConfig('dfa_block', feedback_point='output'));"
            "assert m.feedback_point == 'output' and m.blockwise is True, m;"
            "assert len(plan_study(load_spec(preset='zoo')).runs) == 56;"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
