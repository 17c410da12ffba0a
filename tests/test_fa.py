"""Feedback alignment: the hand-computed FA chain, exact head gradients, fixed seeded B, a falling loss."""
import torch
import torch.nn.functional as F

from beyondbp.config import MLPConfig, MethodConfig, ModelConfig
from beyondbp.methods.registry import build_method
from beyondbp.model.mlp import MLPClassifier
from beyondbp.model.gpt import GPT


def tiny_mlp():
    torch.manual_seed(0)
    cfg = MLPConfig(depth=2, width=5, activation="tanh", n_inputs=4, n_classes=3)
    return MLPClassifier(cfg).double()


def test_one_fa_step_is_the_hand_computed_chain_with_b_in_place_of_w():
    model = tiny_mlp()
    fa = build_method(model, MethodConfig(name="fa"), seed=0, model_kind="mlp").double()
    gen = torch.Generator().manual_seed(123)
    known = {name: torch.randn(b.shape, generator=gen, dtype=torch.float64) for name, b in fa.feedback_matrices().items()}
    for name, b in fa.feedback_matrices().items():
        b.copy_(known[name])
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])

    _, objective = fa(x, y)
    objective.backward()

    W1, b1 = model.blocks[0].linear.weight, model.blocks[0].linear.bias
    W2, b2 = model.blocks[1].linear.weight, model.blocks[1].linear.bias
    W3, b3 = model.output.weight, model.output.bias
    with torch.no_grad():
        h1 = torch.tanh(x @ W1.T + b1)
        h2 = torch.tanh(h1 @ W2.T + b2)
        e = (F.softmax(h2 @ W3.T + b3, dim=-1) - F.one_hot(y, 3).double()) / len(y)
        da2 = (e @ known["output"]) * (1 - h2 ** 2)  # B_3 in place of W_3
        da1 = (da2 @ known["blocks.1.linear"]) * (1 - h1 ** 2)  # B_2 in place of W_2
    torch.testing.assert_close(W3.grad, e.T @ h2, rtol=1e-12, atol=1e-14)  # the output layer: its true gradient
    torch.testing.assert_close(b3.grad, e.sum(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(W2.grad, da2.T @ h1, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(b2.grad, da2.sum(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(W1.grad, da1.T @ x, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(b1.grad, da1.sum(0), rtol=1e-12, atol=1e-14)
    bp_grad_w1 = torch.autograd.grad(model(x, y)[1], W1)[0]
    assert not torch.allclose(W1.grad, bp_grad_w1)


def tiny_gpt():
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=2, d_model=16, n_head=2, context=16, vocab_size=20)).double()


def test_gpt_projector_gets_its_true_gradient_and_lower_layers_do_not():
    model = tiny_gpt()
    fa = build_method(model, MethodConfig(name="fa"), seed=0).double()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 20, (3, 16), generator=gen), torch.randint(0, 20, (3, 16), generator=gen)
    loss, objective = fa(x, y)
    fa_grads = torch.autograd.grad(objective, list(model.parameters()))
    bp_loss = model(x, y)[1]
    bp_grads = torch.autograd.grad(bp_loss, list(model.parameters()))
    names = [n for n, _ in model.named_parameters()]
    by_name = {n: (f, b) for n, f, b in zip(names, fa_grads, bp_grads)}
    assert loss.item() == bp_loss.item()  # the forward is unchanged
    torch.testing.assert_close(*by_name["lm_head.weight"], rtol=1e-12, atol=0)
    cos = F.cosine_similarity(*(g.flatten() for g in by_name["blocks.0.mlp.c_fc.weight"]), dim=0)
    assert abs(cos.item()) < 0.5


def test_feedback_matrices_are_seeded_buffers_scaled_like_the_weights():
    model = tiny_gpt().float()
    a = build_method(model, MethodConfig(name="fa"), seed=3)
    b = build_method(model, MethodConfig(name="fa"), seed=3)
    c = build_method(model, MethodConfig(name="fa"), seed=4)
    assert {k for k in a.state_dict() if k.startswith("feedback_")} == {
        "feedback_" + n.replace(".", "_") for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    for name, mat in a.feedback_matrices().items():
        weight = model.get_submodule(name).weight
        assert mat.shape == weight.shape
        assert torch.equal(mat, b.feedback_matrices()[name])
        assert not torch.equal(mat, c.feedback_matrices()[name])
        assert 0.8 < mat.std().item() / weight.std().item() < 1.25
    flops = model.flops_per_token()
    assert a.compute_per_token() == {"paper": flops["6N"], "optimistic": flops["6N"], "exact": flops["exact"]}


def test_fa_loss_falls_on_a_tiny_gpt():
    model = tiny_gpt().float()
    fa = build_method(model, MethodConfig(name="fa"), seed=0)
    gen = torch.Generator().manual_seed(0)
    pattern = torch.randint(0, 20, (8,), generator=gen)
    x = pattern.repeat(4, 3)[:, :16]  # a periodic sequence: predictable from context
    y = pattern.repeat(4, 3)[:, 1:17]
    opt = torch.optim.AdamW(fa.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, objective = fa(x, y)
        objective.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[0] > 2.9 and losses[-1] < 0.5 * losses[0]
