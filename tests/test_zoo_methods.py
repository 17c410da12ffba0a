"""Block-local learning, synthetic gradients and forward gradients: what each writes into .grad,
by hand in float64; their compute; training; resuming after a kill."""
import json
import math
import signal

import pytest
import torch
import torch.nn.functional as F

from beyondbp.config import ConfigError, MLPConfig, MethodConfig, ModelConfig, build_config
from beyondbp.methods.run_builder import build_from_file
from beyondbp.methods.registry import build_method
from beyondbp.model.mlp import MLPClassifier
from beyondbp.model.gpt import GPT
from beyondbp.train.loop import train

TOL = dict(rtol=1e-10, atol=1e-13)


def tiny_gpt(n_layer=3):
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=n_layer, d_model=16, n_head=2, context=8, vocab_size=20)).double()


def batch():
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 20, (2, 8), generator=gen), torch.randint(0, 20, (2, 8), generator=gen)


def grads_of(method, x, y) -> dict:
    """.grad of every parameter after the method's one objective.backward(), by name."""
    method.zero_grad(set_to_none=True)
    method(x, y)[1].backward()
    return {n: p.grad for n, p in method.named_parameters() if p.grad is not None}


def by_name(module, names, values) -> dict:
    return dict(zip(names, values))


def randomise(module):
    with torch.no_grad():
        gen = torch.Generator().manual_seed(7)
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)


# --- local ----------------------------------------------------------------------------------------
def test_local_update_is_each_blocks_own_auxiliary_loss_gradient():
    model = tiny_gpt()
    local = build_method(model, MethodConfig(name="local")).double()
    randomise(local.aux_norms)  # gains and biases away from 1 and 0, so using them shows
    x, y = batch()
    grads = grads_of(local, x, y)

    W = model.lm_head.weight.detach()
    h = model.embed(x)
    expected = {}
    for k, block in enumerate(model.blocks[:-1]):
        out = block(h)
        aux = F.cross_entropy(F.linear(local.aux_norms[k](out), W).view(-1, 20), y.reshape(-1))
        names = [f"model.blocks.{k}.{n}" for n, _ in block.named_parameters()]
        names += [f"aux_norms.{k}.{n}" for n, _ in local.aux_norms[k].named_parameters()]
        params = list(block.parameters()) + list(local.aux_norms[k].parameters())
        if k == 0:  # the embedding belongs to the first block's module
            names += ["model.wte.weight", "model.wpe.weight"]
            params += [model.wte.weight, model.wpe.weight]
        expected.update(zip(names, torch.autograd.grad(aux, params)))
        h = out.detach()
    loss = model.loss_fn(model.head(model.blocks[-1](h)), y)
    top = [(f"model.{n}", p) for n, p in model.named_parameters() if n.startswith(("blocks.2.", "ln_f.", "lm_head."))]
    expected.update(zip([n for n, _ in top], torch.autograd.grad(loss, [p for _, p in top])))
    assert set(grads) == set(expected)
    for name, g in expected.items():
        torch.testing.assert_close(grads[name], g, **TOL)


def test_local_on_the_mlp_uses_the_stopped_output_layer_as_each_head():
    torch.manual_seed(0)
    model = MLPClassifier(MLPConfig(depth=2, width=5, activation="tanh", n_inputs=4, n_classes=3)).double()
    local = build_method(model, MethodConfig(name="local"), model_kind="mlp").double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    grads = grads_of(local, x, y)
    h1 = model.blocks[0](x)
    aux = F.cross_entropy(F.linear(h1, model.output.weight.detach(), model.output.bias.detach()), y)
    expected = torch.autograd.grad(aux, [model.blocks[0].linear.weight])[0]
    torch.testing.assert_close(grads["model.blocks.0.linear.weight"], expected, **TOL)
    top = F.cross_entropy(model.output(model.blocks[1](h1.detach())), y)
    torch.testing.assert_close(grads["model.output.weight"], torch.autograd.grad(top, [model.output.weight])[0], **TOL)


# --- synthetic -------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale_aware", [True, False])
def test_synthetic_gradients_update_blocks_and_train_predictors_toward_the_gradient_from_above(scale_aware):
    model = tiny_gpt()
    sg = build_method(model, MethodConfig(name="synthetic", sg_scale_aware=scale_aware)).double()
    assert all(torch.count_nonzero(p) == 0 for p in sg.predictors.parameters())  # zero at initialisation
    randomise(sg.predictors)
    x, y = batch()
    grads = grads_of(sg, x, y)

    flat = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
    M0, M1 = sg.predictors

    def predict(M, out):
        """The code c = W LN(out) + b + E[y] by hand, and the scale: out's standard deviation or 1."""
        normed = (out - out.mean(-1, keepdim=True)) / (out.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        code = normed @ M.linear.weight.T + M.linear.bias + M.by_target.weight[y]
        scale = (out.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt() if scale_aware else torch.ones_like(out[..., :1])
        return code.detach(), scale.detach(), normed.detach()

    h0 = model.embed(x)
    out0 = model.blocks[0](h0)
    c0, s0, normed0 = predict(M0, out0)
    h1 = out0.detach().requires_grad_()
    out1 = model.blocks[1](h1)
    c1, s1, normed1 = predict(M1, out1)
    h2 = out1.detach().requires_grad_()
    loss = model.loss_fn(model.head(model.blocks[2](h2)), y)

    n_pos = x.numel()  # the block's update is J^T prediction / positions, the prediction code / scale
    g2 = torch.autograd.grad(loss, h2, retain_graph=True)[0]  # the true gradient reaching block 1's output
    g1 = torch.autograd.grad(out1, h1, c1 / s1 / n_pos, retain_graph=True)[0]  # block 1's backward of its prediction
    block0 = list(model.blocks[0].parameters()) + [model.wte.weight, model.wpe.weight]
    expected = dict(zip([f"model.blocks.0.{n}" for n, _ in model.blocks[0].named_parameters()]
                        + ["model.wte.weight", "model.wpe.weight"],
                        torch.autograd.grad(out0, block0, c0 / s0 / n_pos)))
    expected.update(zip([f"model.blocks.1.{n}" for n, _ in model.blocks[1].named_parameters()],
                        torch.autograd.grad(out1, list(model.blocks[1].parameters()), c1 / s1 / n_pos)))
    top = [(f"model.{n}", p) for n, p in model.named_parameters() if n.startswith(("blocks.2.", "ln_f.", "lm_head."))]
    expected.update(zip([n for n, _ in top], torch.autograd.grad(loss, [p for _, p in top])))
    # each predictor: the gradient of 1/2 mean ||code - n x scale x the gradient from above||^2
    for k, (code, scale, target, normed) in enumerate([(c0, s0, g1, normed0), (c1, s1, g2, normed1)]):
        diff = flat(code / n_pos - scale * target)
        expected[f"predictors.{k}.linear.weight"] = diff.T @ flat(normed)
        expected[f"predictors.{k}.linear.bias"] = diff.sum(0)
        embedding = torch.zeros(20, 16, dtype=torch.float64).index_add_(0, y.flatten(), diff)
        expected[f"predictors.{k}.by_target.weight"] = embedding
    assert set(grads) == set(expected)
    for name, g in expected.items():
        torch.testing.assert_close(grads[name], g, **TOL)


# --- forward gradients -----------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_forward_gradient_is_the_mean_of_directional_derivatives_times_directions(k):
    model = tiny_gpt(n_layer=2)
    fg = build_method(model, MethodConfig(name="forward_grad", perturbations=k)).double()
    x, y = batch()
    torch.manual_seed(123)
    grads = grads_of(fg, x, y)

    named = [(n, p) for n, p in model.named_parameters()]
    true = torch.autograd.grad(model(x, y)[1], [p for _, p in named])
    torch.manual_seed(123)  # the same directions, drawn in the same order
    expected = {f"model.{n}": torch.zeros_like(p) for n, p in named}
    for _ in range(k):
        directions = [torch.randn_like(p) for _, p in named]
        slope = sum((g * v).sum() for g, v in zip(true, directions))
        for (n, _), v in zip(named, directions):
            expected[f"model.{n}"] += slope * v / k
    for name, g in expected.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_forward_gradient_is_unbiased_and_its_alignment_grows_with_the_perturbations():
    """The mean of many estimates approaches the gradient (E[v v^T] = I); one estimate's cosine
    with it is ~sqrt(K / number of parameters)."""
    model = tiny_gpt(n_layer=2)
    x, y = batch()
    true = torch.cat([g.flatten() for g in torch.autograd.grad(model(x, y)[1], list(model.parameters()))])
    fg = build_method(model, MethodConfig(name="forward_grad", perturbations=400)).double()
    torch.manual_seed(0)
    estimate = torch.cat([g.flatten() for g in fg.estimate(x, y)[1].values()])
    cosine = (estimate @ true / (estimate.norm() * true.norm())).item()
    n = true.numel()
    assert cosine == pytest.approx(math.sqrt(400 / (400 + n)), abs=0.1)  # ~0.5 for these 1,216 parameters


def test_forward_gradient_needs_a_direction():
    with pytest.raises(ConfigError, match="method.perturbations: must be an integer >= 1, got 0"):
        build_method(tiny_gpt(), MethodConfig(name="forward_grad", perturbations=0))


# --- compute ---------------------------------------------------------------------------------------
def test_compute_counts_the_extra_heads_predictors_and_jvps():
    model = tiny_gpt()
    n, d, V, L = model.n_params_nonembedding(), 16, 20, 3
    bp = model.flops_per_token()
    local = build_method(model, MethodConfig(name="local")).compute_per_token()
    assert local["paper"] == 6 * n + (L - 1) * 4 * d * V and local["exact"] == bp["exact"] + (L - 1) * 4 * d * V
    synthetic = build_method(model, MethodConfig(name="synthetic")).compute_per_token()
    assert synthetic["paper"] == 6 * n + (L - 1) * 4 * d * d
    fg = build_method(model, MethodConfig(name="forward_grad", perturbations=5)).compute_per_token()
    assert fg["paper"] == 5 * 6 * n and fg["exact"] == 5 * bp["exact"]  # a jvp: ~3 forwards, like BP's step


# --- training ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, extra", [("local", []), ("synthetic", []),
                                           pytest.param("forward_grad", ["method.perturbations=4", "train.lr=3e-2",
                                                                         "train.tokens=61440"], marks=pytest.mark.slow)])
def test_loss_falls_and_alignment_is_logged(tmp_path, tiny_overrides, method, extra):
    cfg = build_config(overrides=tiny_overrides + [f"method={method}", "train.alignment_every_evals=2", *extra])
    summary = train(cfg, tmp_path / method, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert summary["final_val_loss"] < rows[0]["val_loss"] - (0.5 if method == "forward_grad" else 1.5)
    aligned = [r["alignment"] for r in rows if r.get("alignment")]
    assert aligned and set(aligned[-1]) == {"block0", "block1"}
    assert abs(aligned[-1]["block1"] - (1.0 if method != "forward_grad" else aligned[-1]["block1"])) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("method", ["local", "synthetic", "forward_grad"])
def test_killed_run_resumes_to_the_same_curve(tmp_path, tiny_overrides, method):
    from test_train import _cli, _wait_for_rows, metrics
    own = ["method.perturbations=2"] if method == "forward_grad" else []  # another method has no such setting
    overrides = tiny_overrides + [f"method={method}", *own, "train.tokens=61440",
                                  "train.n_evals=12", "train.checkpoint_every_s=0"]
    full = train(build_from_file(overrides=overrides), tmp_path / "full", quiet=True)  # as `beyondbp train` builds it
    out = tmp_path / "killed"
    proc = _cli(["train", "--out", str(out), *overrides])
    _wait_for_rows(out / "metrics.jsonl", 6, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (out / "summary.json").exists()
    proc = _cli(["train", "--out", str(out), *overrides])
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert json.loads((out / "summary.json").read_text())["final_val_loss"] == pytest.approx(full["final_val_loss"], abs=1e-6)
    assert [r["val_loss"] for r in metrics(out)] == pytest.approx([r["val_loss"] for r in metrics(tmp_path / "full")], abs=1e-6)
