"""Alignment: BP aligns with itself exactly, DFA starts near 0, measuring disturbs nothing."""
import math

import torch
import torch.nn.functional as F

from beyondbp.train.alignment import cosine, hidden_signal_alignment, measure_alignment
from beyondbp.config import MLPConfig, MethodConfig, ModelConfig
from beyondbp.methods.registry import build_method
from beyondbp.methods.bp import Backprop
from beyondbp.model.mlp import MLPClassifier
from beyondbp.model.gpt import GPT


def tiny_gpt(dropout=0.0):
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=3, d_model=16, n_head=2, context=8, vocab_size=20, dropout=dropout)).double()


def batch():
    gen = torch.Generator().manual_seed(3)
    return torch.randint(0, 20, (4, 8), generator=gen), torch.randint(0, 20, (4, 8), generator=gen)


def test_cosine():
    a = torch.tensor([1.0, 2.0, -3.0])
    assert cosine(a, 2.5 * a) == 1.0
    assert cosine(a, -a) == -1.0
    assert cosine(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 4.0])) == 0.0
    assert cosine(a, torch.zeros(3)) == 0.0
    assert math.isclose(cosine(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])), 1 / math.sqrt(2), rel_tol=1e-12)


def test_bp_alignment_is_one_even_with_dropout():
    bp = build_method(tiny_gpt(dropout=0.2), MethodConfig(name="bp")).train()
    alignment = measure_alignment(bp, *batch())
    assert list(alignment) == ["block0", "block1", "block2"]
    for value in alignment.values():
        assert abs(value - 1.0) < 1e-6


def test_dfa_alignment_at_init_is_small_except_the_bp_trained_last_block():
    for name in ("dfa", "dfa_block"):
        alignment = measure_alignment(build_method(tiny_gpt(), MethodConfig(name=name)), *batch())
        assert abs(alignment["block0"]) < 0.3 and abs(alignment["block1"]) < 0.3, (name, alignment)
        assert abs(alignment["block2"] - 1.0) < 1e-6


def test_measuring_leaves_grads_params_and_rng_bit_identical():
    model = tiny_gpt(dropout=0.1)
    dfa = build_method(model, MethodConfig(name="dfa_block")).train()
    x, y = batch()
    dfa(x, y)[1].backward()  # grads of a training step in progress
    grads = {n: p.grad.clone() for n, p in dfa.named_parameters()}
    grad_objects = {n: p.grad for n, p in dfa.named_parameters()}
    state = {k: v.clone() for k, v in dfa.state_dict().items()}
    torch.manual_seed(42)
    rng = torch.get_rng_state()
    measure_alignment(dfa, x, y)
    hidden_signal_alignment(dfa, x, y)
    assert torch.equal(torch.get_rng_state(), rng)
    for n, p in dfa.named_parameters():
        assert p.grad is grad_objects[n] and torch.equal(p.grad, grads[n]), n
    for k, v in dfa.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert dfa.training


def test_hidden_signal_alignment_is_the_cosine_of_b_e_and_the_backpropagated_gradient():
    torch.manual_seed(0)
    model = MLPClassifier(MLPConfig(depth=2, width=6, activation="tanh", n_inputs=4, n_classes=3)).double()
    dfa = build_method(model, MethodConfig(name="dfa", feedback="per_layer"), model_kind="mlp").double()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (8,), generator=gen)
    signals = hidden_signal_alignment(dfa, x, y)

    (W1, b1), (W2, b2) = [(b.linear.weight, b.linear.bias) for b in model.blocks]
    W3, b3 = model.output.weight, model.output.bias
    B1, B2 = [m.double() for m in dfa.feedback.matrices()]
    with torch.no_grad():
        h1 = torch.tanh(x @ W1.T + b1)
        h2 = torch.tanh(h1 @ W2.T + b2)
        e = (F.softmax(h2 @ W3.T + b3, dim=-1) - F.one_hot(y, 3).double()) / len(y)
        true2 = e @ W3  # the backpropagated gradient at each hidden layer's output
        true1 = (true2 * (1 - h2 ** 2)) @ W2
    expected = {"block0": F.cosine_similarity(e @ B1, true1, dim=1).mean().item(),
                "block1": F.cosine_similarity(e @ B2, true2, dim=1).mean().item()}
    assert set(signals) == set(expected)
    for k in expected:
        assert math.isclose(signals[k], expected[k], rel_tol=1e-9, abs_tol=1e-12)
    bp = build_method(model, MethodConfig(name="bp"), model_kind="mlp")
    assert all(abs(v - 1.0) < 1e-9 for v in hidden_signal_alignment(bp, x, y).values())


def test_alignment_is_the_cosine_of_each_blocks_flattened_update_and_bp_gradient():
    """What the number means, by hand: for each block, every parameter's update from the
    method's own backward and its true BP gradient, flattened and concatenated; their cosine."""
    model = tiny_gpt()
    x, y = batch()
    dfa = build_method(model, MethodConfig(name="dfa_block"))
    measured = measure_alignment(dfa, x, y)
    blocks = list(model.blocks)
    updates = torch.autograd.grad(dfa(x, y)[1], [p for b in blocks for p in b.parameters()])
    true = torch.autograd.grad(model(x, y)[1], [p for b in blocks for p in b.parameters()])
    offset = 0
    for i, block in enumerate(blocks):
        k = len(list(block.parameters()))
        u = torch.cat([g.flatten() for g in updates[offset:offset + k]])
        g = torch.cat([g.flatten() for g in true[offset:offset + k]])
        offset += k
        assert math.isclose(measured[f"block{i}"], (u @ g / (u.norm() * g.norm())).item(), rel_tol=1e-9, abs_tol=1e-12)
    assert abs(measured["block2"] - 1.0) < 1e-9  # the last block learns by BP


class _Ascent(Backprop):
    """A method that climbs the loss: its update is minus the BP gradient."""
    name = "ascent_for_test"

    def forward(self, idx, targets):
        loss, _ = super().forward(idx, targets)
        return loss, -loss


def test_an_update_against_the_gradient_measures_minus_one():
    alignment = measure_alignment(_Ascent(tiny_gpt(), MethodConfig(name="ascent_for_test")), *batch())
    assert all(abs(v + 1.0) < 1e-9 for v in alignment.values())


def test_blockwise_dfa_signal_at_init_is_aligned_only_as_far_as_b_resembles_the_residual_identity():
    """Why dfa_block's non-final blocks start near zero alignment: through a pre-LN residual
    stream, BP's gradient at a block's output is mostly the pre-projector error e itself (the
    identity path), so B e aligns with it only when B does with the identity. With B = I the
    signal is within a few degrees of BP's; with a Gaussian B it starts nearly orthogonal. (In
    training it rises: docs/results.md, "What alignment to expect".)"""
    gpt = tiny_gpt()
    x, y = batch()
    random_b = build_method(gpt, MethodConfig(name="dfa_block", feedback_point="output"))
    gaussian = hidden_signal_alignment(random_b, x, y)
    identity_b = build_method(gpt, MethodConfig(name="dfa_block", feedback_point="output"))
    for projection in identity_b.feedback.projections:
        projection.matrix.copy_(torch.eye(*projection.matrix.shape, dtype=projection.matrix.dtype))
    identity = hidden_signal_alignment(identity_b, x, y)
    for block in ("block0", "block1"):
        assert identity[block] > 0.85, identity
        assert abs(gaussian[block]) < 0.35, gaussian
    assert abs(gaussian["block2"] - 1.0) < 1e-9 and abs(identity["block2"] - 1.0) < 1e-9  # trained by BP
