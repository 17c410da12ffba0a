"""sign_symmetry: one step equals the hand-computed chain with B = s mean|W| sign(W); its setting is
checked; it passes beyondbp's conformance kit."""
import pytest
import torch
import torch.nn.functional as F

from beyondbp.methods.api import ConfigError, MethodConfig, MLPConfig, build_method, build_model
from beyondbp.testing import parametrize_with_checks
from sign_symmetry import SignSymmetry


def tiny_mlp():
    torch.manual_seed(0)
    cfg = MLPConfig(depth=2, width=5, activation="tanh", n_inputs=4, n_classes=3)
    return build_model(cfg).double()


def uniform_sign(w, scale):
    return scale * w.abs().mean() * torch.sign(w)


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_one_step_is_the_hand_computed_chain_with_uniform_sign_feedback(scale):
    model = tiny_mlp()
    method = build_method(model, MethodConfig("sign_symmetry", sign_scale=scale), model_kind="mlp")
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 4, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    _, objective = method(x, y)
    objective.backward()
    W1, b1 = model.blocks[0].linear.weight, model.blocks[0].linear.bias
    W2, b2 = model.blocks[1].linear.weight, model.blocks[1].linear.bias
    W3, b3 = model.output.weight, model.output.bias
    with torch.no_grad():
        h1 = torch.tanh(x @ W1.T + b1)
        h2 = torch.tanh(h1 @ W2.T + b2)
        e = (F.softmax(h2 @ W3.T + b3, dim=-1) - F.one_hot(y, 3).double()) / len(y)
        da2 = (e @ uniform_sign(W3, scale)) * (1 - h2 ** 2)
        da1 = (da2 @ uniform_sign(W2, scale)) * (1 - h1 ** 2)
    torch.testing.assert_close(W3.grad, e.T @ h2, rtol=1e-12, atol=1e-14)  # the output layer: its true gradient
    torch.testing.assert_close(W2.grad, da2.T @ h1, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(W1.grad, da1.T @ x, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(b1.grad, da1.sum(0), rtol=1e-12, atol=1e-14)
    assert not torch.allclose(W1.grad, torch.autograd.grad(model(x, y)[1], W1)[0])  # not BP's gradient


def test_a_bad_or_unknown_setting_is_one_line_naming_it():
    with pytest.raises(ConfigError, match=r"^method.sign_scale: must be a finite number > 0, got -1.0$"):
        build_method(tiny_mlp(), MethodConfig("sign_symmetry", sign_scale=-1), model_kind="mlp")
    with pytest.raises(ConfigError, match=r"^method.feedback_scale: unknown setting of method 'sign_symmetry' "
                                          r"\(its settings: sign_scale\)$"):
        build_method(tiny_mlp(), MethodConfig("sign_symmetry", feedback_scale=2.0), model_kind="mlp")


@parametrize_with_checks([SignSymmetry])
def test_it_passes_the_conformance_kit(check):
    check()
