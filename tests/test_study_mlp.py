"""The study machinery runs the fully-connected track (spec `track: mlp`): plan, train, report."""
from __future__ import annotations

import json

import pytest
import yaml

from beyondbp.config import ConfigError
from beyondbp.report.write import write_report
from beyondbp.study.plan import plan_study
from beyondbp.study.spec import load_spec
from beyondbp.study.local_executor import run_study

DIGITS_TRAIN = 1347  # 1,797 digits, a quarter held out for test
MLP_SPEC = {
    "name": "tiny-mlp",
    "track": "mlp",
    "methods": ["bp", "fa", "dfa"],
    "sizes": {"w8": {"depth": 2, "width": 8}, "w32": {"depth": 2, "width": 32}, "w128": {"depth": 2, "width": 128}},
    "lrs": {"bp": [3e-3], "fa": [3e-3], "dfa": [3e-3]},
    "seeds": [0],
    "base": {"mlp": {"dataset": "digits", "epochs": 4}, "train": {"threads": 1}},
}


def spec_file(tmp_path, spec=MLP_SPEC, **changes):
    path = tmp_path / "mlp.yaml"
    path.write_text(yaml.safe_dump({**spec, **changes}))
    return path


def test_mlp_plan_counts_examples_and_flops(tmp_path):
    plan = plan_study(load_spec(spec_file(tmp_path)))
    assert len(plan.runs) == 9
    for run in plan.runs:
        w = run.cfg.mlp.width
        assert run.cfg.model.kind == "mlp" and run.cfg.mlp.depth == 2
        assert run.tokens == run.cfg.mlp.examples == 4 * DIGITS_TRAIN  # a run's length is its examples
        assert run.n_params == (64 * w + w) + (w * w + w) + (w * 10 + 10)
        assert run.cost == pytest.approx(3 * 2 * (64 * w + w * w + w * 10) * 4 * DIGITS_TRAIN)
        # the MLP track's optimizer defaults, not the Transformer's
        assert (run.cfg.train.weight_decay, run.cfg.train.beta2) == (3.0, 0.999)


def test_mlp_preset_plans_a_width_sweep():
    plan = plan_study(load_spec(preset="mlp"))
    assert plan.spec.track == "mlp" and set(plan.spec.methods) == {"bp", "fa", "dfa"}
    widths = sorted({r.cfg.mlp.width for r in plan.runs})
    assert len(widths) >= 5 and widths[-1] / widths[0] >= 16


@pytest.mark.parametrize("changes, message", [
    ({"methods": ["bp", "dfa_block"]}, "methods: 'dfa_block' cannot train the mlp track"),
    ({"tokens": 1000}, "tokens: the mlp track's budget is base.mlp.epochs"),
    ({"sizes": ["cpu-20k"]}, "sizes.cpu-20k: an MLP size is a mapping of model keys"),
    ({"track": "cnn"}, "track: unknown track 'cnn'"),
    ({"sizes": {"w8": {"depth": 2, "width": 8, "activation": "gelu"}}}, "sizes.w8.activation: unknown activation 'gelu'"),
])
def test_mlp_spec_errors_name_the_field(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        plan_study(load_spec(spec_file(tmp_path, **changes)))


@pytest.mark.slow
def test_mlp_study_trains_and_reports(tmp_path):
    out = tmp_path / "study"
    counts = run_study(plan_study(load_spec(spec_file(tmp_path))), out, workers=2, quiet=True)
    assert counts == {"completed": 9}
    for method, per_example in (("bp", 6), ("fa", 6), ("dfa", 4)):  # the paper's accounting, per parameter
        run_dir = out / "runs" / f"{method}_w32_lr0.003_s0"
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]
        assert rows[-1]["tokens"] == 4 * DIGITS_TRAIN and rows[-1]["step"] == 4 * 22  # 22 batches of 64
        assert set(rows[-1]["angle_hidden"]) == {"layer1", "layer2"}  # trained by `beyondbp mlp`
        assert rows[-1]["compute_flops"] == per_example * summary["n_params"] * rows[-1]["tokens"]
        assert summary["final_val_loss"] == rows[-1]["test_loss"] < rows[0]["test_loss"]
        assert summary["test_error"] < 0.5
    report = write_report(out, bootstrap=20)
    results = json.loads((report / "results.json").read_text())
    fits = results["accountings"]["paper"]
    assert set(fits["fits"]) == {"bp", "fa", "dfa"}
    assert all(fits["fits"][m]["alpha_C"] < 0 for m in fits["fits"])  # loss falls with compute
    table = (report / "table1.md").read_text()
    assert "| bp |" in table and "-0.071" not in table  # the paper's GPT numbers are not an MLP's
    assert (report / "frontier.png").stat().st_size > 10_000
