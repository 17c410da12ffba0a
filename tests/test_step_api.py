"""The step API (`methods.base`, `train.method_step`): hooks with the step and its rate, a method's
own optimizer groups, updates without a backward, logged metrics in metrics.jsonl that survive a
resume; an outside package written from docs/method_api.md alone; the cases a method author hits
(no compute_per_token, an MLP run of a hooked method, the kit without pytest)."""
import ast
import json
import tomllib
from pathlib import Path

import pytest
import torch

from beyondbp.cli.main import main
from beyondbp.config import ConfigError, MLPConfig, MethodConfig, ModelConfig, RunConfig, build_config
from beyondbp.methods import api
from beyondbp.methods.base import StepInfo
from beyondbp.methods.bp import Backprop
from beyondbp.methods.registry import REGISTRY, build_method
from beyondbp.model.build import build_model
from beyondbp.testing import MethodCheckError, check_method
from beyondbp.train.loop import train
from beyondbp.train.method_step import build_optimizer, compute_update, set_rates
from beyondbp.runs.schedule import learning_rate

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = Path(__file__).parent / "outside"


def tiny_cfg(tmp_path, tiny_overrides, name):
    pairs = dict(o.split("=", 1) for o in tiny_overrides)
    return build_config(overrides={**pairs, "method.name": name, "data.corpus": "shakespeare",
                                   "data.tokenizer": "byte", "train.tokens": 8192})


class Recorder(Backprop):
    """Records each hook: its step and rate, whether the weights moved yet and whether .grad is set."""
    name = "recorder_for_test"

    def __init__(self, model, cfg, seed=0):
        super().__init__(model, cfg, seed)
        self.calls = []

    def _seen(self, hook, step):
        w = self.model.lm_head.weight
        self.calls.append((hook, step.step, step.lr, w.detach().clone(), w.grad is not None))

    def after_backward(self, step):
        self._seen("after_backward", step)

    def after_optimizer_step(self, step):
        self._seen("after_optimizer_step", step)
        self.log("step_seen", step.step)


@pytest.mark.slow
def test_hooks_run_in_order_with_the_step_and_its_rate_and_logs_reach_metrics(tmp_path, tiny_overrides,
                                                                                monkeypatch):
    monkeypatch.setitem(REGISTRY, Recorder.name, Recorder)
    built = []
    monkeypatch.setattr(Recorder, "__init__", lambda self, *a: (Backprop.__init__(self, *a),
                                                                setattr(self, "calls", []), built.append(self))[0])
    cfg = tiny_cfg(tmp_path, tiny_overrides, Recorder.name)
    train(cfg, tmp_path / "run", quiet=True)
    calls = built[0].calls
    n_steps = len(calls) // 2
    assert n_steps == 8 and [c[0] for c in calls] == ["after_backward", "after_optimizer_step"] * n_steps
    for s in range(n_steps):
        before, after = calls[2 * s], calls[2 * s + 1]
        assert before[1] == after[1] == s
        assert before[2] == after[2] == learning_rate(cfg, s, n_steps)
        assert before[4] and not after[4]  # .grad set before the optimizer step, cleared after
        assert not torch.equal(before[3], after[3])  # the optimizer step lies between the two
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "method" not in rows[0]  # nothing logged before the first step
    steps = [r["step"] for r in rows]
    for previous, row in zip(steps, rows[1:]):  # the mean of the steps since the last evaluation
        assert row["method"] == {"step_seen": pytest.approx(sum(range(previous, row["step"])) / (row["step"] - previous))}


class OwnGroup(Backprop):
    name = "own_group_for_test"

    def __init__(self, model, cfg, seed=0):
        super().__init__(model, cfg, seed)
        self.extra = torch.nn.Parameter(torch.ones(3), requires_grad=False)

    def parameter_groups(self):
        return [{"params": [self.extra], "lr_scale": 0.5, "weight_decay_scale": 2.0, "betas": (0.5, 0.6)}]


def test_a_method_s_own_group_keeps_its_settings_and_scaled_rate():
    method = OwnGroup(build_model(ModelConfig(kind="gpt", n_layer=1, d_model=8, n_head=2, context=4, vocab_size=11)),
                      MethodConfig("own_group_for_test"))
    cfg = RunConfig()
    optimizer = build_optimizer(cfg, method)
    set_rates(optimizer, 0.2)
    group = optimizer.param_groups[-1]
    assert group["params"] == [method.extra] and group["betas"] == (0.5, 0.6)
    assert group["weight_decay"] == 2.0 * cfg.train.weight_decay and group["lr"] == 0.1
    assert [g["lr"] for g in optimizer.param_groups[:-1]] == [0.2, 0.2]
    method.extra.requires_grad_(True)  # now trainable_parameters() yields it too
    with pytest.raises(TypeError, match=r"parameter_groups\(\)\[0\]: holds a parameter that trainable_parameters"):
        build_optimizer(cfg, method)


class MicroBatchSized(Backprop):
    """Its update is its micro-batch's index plus one, in every weight."""
    name = "micro_batch_for_test"
    uses_backward = False

    def update_without_backward(self, idx, targets, step):
        assert not torch.is_grad_enabled()
        return torch.tensor(float(step.micro_batch)), ((p, torch.full_like(p, step.micro_batch + 1.0))
                                                       for p in self.trainable_parameters())


def test_updates_without_backward_are_averaged_over_micro_batches():
    method = MicroBatchSized(build_model(ModelConfig(kind="gpt", n_layer=1, d_model=8, n_head=2, context=4,
                                                     vocab_size=11)), MethodConfig(MicroBatchSized.name))
    x = torch.zeros(4, 4, dtype=torch.long)
    loss = compute_update(method, method, x, x, RunConfig(), torch.device("cpu"), 4, StepInfo(0, 1e-3))
    assert loss.item() == pytest.approx(1.5)  # the micro-batches' losses 0, 1, 2, 3 averaged
    assert all(torch.equal(p.grad, torch.full_like(p, 2.5)) for p in method.trainable_parameters())


@pytest.mark.slow
def test_an_outside_package_written_from_the_docs_trains_with_its_hook_and_metric(tmp_path, tiny_overrides,
                                                                                   monkeypatch):
    monkeypatch.syspath_prepend(str(OUTSIDE))
    out = tmp_path / "run"
    assert main(["train", "method=average_method.method:BackpropWithAverage", "method.decay=0.5",
                 *tiny_overrides, "train.tokens=8192", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["method"]["distance_to_average"] > 0 for r in rows[1:])
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["method"]
    # the average of the last step is (last weights + the previous average) / 2: not the weights themselves
    assert not torch.equal(saved["average_0"], saved["model.wte.weight"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flops_per_token"]["measured_exact"] == summary["flops_per_token"]["exact"]
    source = (OUTSIDE / "average_method" / "method.py").read_text()
    imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert imported == {"beyondbp.methods.api"}


def test_a_method_without_compute_per_token_is_named_exit_2_and_nothing_is_created(tmp_path, tiny_overrides,
                                                                                      monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(OUTSIDE))
    out = tmp_path / "run"
    assert main(["train", "method=average_method.method:NoAccounting", *tiny_overrides, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("beyondbp: error: method 'no_accounting' (average_method.method:NoAccounting) does not define "
                   "compute_per_token(); it must return its training FLOPs per token as {'paper': ..., "
                   "'optimistic': ..., 'exact': ...} (docs/method_api.md)")
    assert not out.exists()
    from average_method.method import NoAccounting
    with pytest.raises(MethodCheckError, match=r"raised NotImplementedError: method 'no_accounting' "
                                               r"\(average_method.method:NoAccounting\) does not define "
                                               r"compute_per_token\(\)"):
        check_method(NoAccounting, checks=["compute_declared"])


class HookedMLP(Backprop):
    name = "hooked_mlp_for_test"
    supports = ("gpt", "mlp")

    def after_optimizer_step(self, step):
        pass


def test_a_hooked_method_is_refused_on_the_mlp_track_in_one_line(monkeypatch):
    monkeypatch.setitem(REGISTRY, HookedMLP.name, HookedMLP)
    model = build_model(MLPConfig(depth=2, width=5, n_inputs=4, n_classes=3))
    with pytest.raises(ConfigError, match=r"^method: 'hooked_mlp_for_test' uses the step API "
                                          r"\(after_optimizer_step\), which only model.kind=gpt runs$"):
        build_method(model, MethodConfig(HookedMLP.name), model_kind="mlp")


def test_pytest_is_the_testing_extra_and_its_absence_is_named(monkeypatch):
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("pytest") for r in extras["testing"])
    import sys
    from beyondbp.testing import parametrize_with_checks
    monkeypatch.setitem(sys.modules, "pytest", None)
    with pytest.raises(ImportError, match=r"needs pytest: pip install 'beyondbp\[testing\]'"):
        parametrize_with_checks([Backprop])


def test_the_reference_page_documents_the_public_api_and_the_example_imports_only_it():
    page = (ROOT / "docs" / "method_api.md").read_text()
    for name in api.__all__ + ["after_backward", "after_optimizer_step", "parameter_groups",
                               "update_without_backward", "uses_backward", "self.log", "register_buffer",
                               "self.generator", "compute_per_token", "model.embed", "model.blocks", "model.head",
                               "model.loss_fn", "d_model", "vocab_size"]:
        assert name in page, name
    for path in (ROOT / "examples" / "sign_symmetry").rglob("*.py"):
        modules = {n.module for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)}
        assert {m for m in modules if m and m.startswith("beyondbp")} <= {"beyondbp.methods.api", "beyondbp.testing"}
