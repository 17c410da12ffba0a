"""Parameter and FLOP counts against hand formulas; named sizes; model behaviour."""
import pytest
import torch

from beyondbp.config import ConfigError, ModelConfig
from beyondbp.model.gpt import GPT, relu_tanh_backward
from beyondbp.model.shape import NAMED_SIZES, n_params, resolve_model_config


def tiny(**kw):
    cfg = ModelConfig(n_layer=2, d_model=8, n_head=2, context=16, vocab_size=11, **kw)
    return resolve_model_config(cfg)


def hand_param_count(L, d, V, T, r=4, tied=False):
    per_block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * r * d + r * d) + (r * d * d + d)
    total = V * d + T * d + L * per_block + 2 * d + (0 if tied else V * d)
    nonemb = total - T * d - (0 if tied else V * d)
    return total, nonemb


@pytest.mark.parametrize("tied", [False, True])
def test_param_counts_match_hand_formula(tied):
    model = GPT(tiny(tie_embeddings=tied))
    total, nonemb = hand_param_count(2, 8, 11, 16, tied=tied)
    assert model.n_params() == total
    assert model.n_params_nonembedding() == nonemb


def test_flops_match_hand_formula():
    model = GPT(tiny())
    d, T, V, L = 8, 16, 11, 2
    forward = L * (24 * d * d + 4 * T * d) + 2 * d * V
    assert model.forward_flops_per_token() == forward
    flops = model.flops_per_token()
    assert flops["exact"] == 3 * forward
    assert flops["6N"] == 6 * model.n_params_nonembedding()


def test_cpu_140k_size_and_paper_range():
    cfg = resolve_model_config(ModelConfig(size="cpu-140k"), vocab_size=256)
    assert GPT(cfg).n_params() == 141_056
    counts = {}
    for name in ("paper-57m", "paper-509m"):
        L, d, h, T = NAMED_SIZES[name]
        counts[name] = hand_param_count(L, d, 51_200, T, tied=True)[0]
    assert 55e6 < counts["paper-57m"] < 59e6
    assert 500e6 < counts["paper-509m"] < 520e6


def test_causality_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 11, (1, 10))
    changed = idx.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % 11
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[0, :6], b[0, :6], atol=1e-6)
    assert not torch.allclose(a[0, 6:], b[0, 6:])


def test_initial_loss_near_log_vocab():
    torch.manual_seed(0)
    model = GPT(tiny())
    idx = torch.randint(0, 11, (4, 16))
    _, loss = model(idx, idx)
    assert abs(loss.item() - torch.log(torch.tensor(11.0)).item()) < 0.1


def test_relu_tanh_backward_is_asymmetric():
    x = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    y = relu_tanh_backward(x)
    assert torch.equal(y, torch.relu(x))
    y.sum().backward()
    assert torch.allclose(x.grad, 1 - torch.tanh(x.detach()) ** 2)


def test_residual_backward_off_blocks_the_skip_path():
    torch.manual_seed(0)
    block = GPT(tiny()).blocks[0].double()
    # zero both branches' output projections: the only path left from output to input is the skip
    for lin in (block.attn.c_proj, block.mlp.c_proj):
        torch.nn.init.zeros_(lin.weight)
    x = torch.randn(1, 4, 8, dtype=torch.float64, requires_grad=True)
    block(x).sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))
    x.grad = None
    block(x, residual_backward=False).sum().backward()
    assert torch.count_nonzero(x.grad) == 0


@pytest.mark.parametrize("field,value", [("d_model", 10), ("n_layer", 0)])
def test_bad_shapes_name_the_field(field, value):
    cfg = ModelConfig(n_layer=2, d_model=8, n_head=4, context=16, vocab_size=11)
    setattr(cfg, field, value)
    with pytest.raises(ConfigError, match=f"model.{field}"):
        resolve_model_config(cfg)


def test_unknown_size():
    with pytest.raises(ConfigError, match="model.size"):
        resolve_model_config(ModelConfig(size="huge", vocab_size=5))


def test_post_ln_block_normalises_after_each_residual_sum():
    torch.manual_seed(0)
    cfg = tiny()
    cfg.norm = "post"
    block = GPT(cfg).blocks[0].double()
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    with torch.no_grad():
        x1 = block.ln_1(x + block.attn(x))
        expected = block.ln_2(x1 + block.mlp(x1))
        torch.testing.assert_close(block(x), expected, rtol=0, atol=0)
        out = block(x)
    # the output of a Post-LN block is normalised: zero mean, unit variance per position (gain 1, bias 0)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 4, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(2, 4, dtype=torch.float64), rtol=0, atol=1e-4)


def test_bias_off_drops_every_bias_and_unknown_norm_is_named():
    cfg = tiny()
    cfg.bias = False
    model = GPT(cfg)
    assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]
    with_bias = GPT(tiny())
    d, L = 8, with_bias.config.n_layer
    # per block: qkv 3d, attention projection d, MLP 4d and d, two LayerNorms d each; ln_f d
    assert with_bias.n_params() - model.n_params() == L * (3 * d + d + 4 * d + d + 2 * d) + d
    bad = tiny()
    bad.norm = "middle"
    with pytest.raises(ConfigError, match="model.norm: unknown placement 'middle'"):
        resolve_model_config(bad)


@pytest.mark.parametrize("kw", [{}, {"tie_embeddings": True}, {"bias": False}, {"norm": "post", "mlp_ratio": 2}])
def test_shape_counts_without_building_equal_the_built_model(kw):
    cfg = tiny(**kw)
    model = GPT(cfg)
    assert n_params(cfg) == (model.n_params(), model.n_params_nonembedding())
