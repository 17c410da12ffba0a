"""Shallow baseline: top block and head get BP's gradients, the rest stays bit-identical, compute 2N."""
import pytest
import torch
import yaml

from beyondbp.config import ConfigError, MLPConfig, MethodConfig, ModelConfig, build_config, from_dict
from beyondbp.methods.registry import build_method
from beyondbp.model.mlp import MLPClassifier
from beyondbp.model.build import build_model
from beyondbp.model.gpt import GPT
from beyondbp.train.loop import train


def tiny_gpt(n_layer=3):
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=n_layer, d_model=16, n_head=2, context=16, vocab_size=20)).double()


def test_only_top_blocks_and_head_are_trained_with_their_bp_gradients():
    bp_model, model = tiny_gpt(), tiny_gpt()
    shallow = build_method(model, MethodConfig(name="shallow", train_last_n=2), seed=0)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {n for n, _ in model.named_parameters()
                       if n.startswith(("blocks.1.", "blocks.2.", "ln_f.", "lm_head."))}
    assert {id(p) for p in shallow.trainable_parameters()} == {id(p) for n, p in model.named_parameters() if n in trained}
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 20, (2, 16), generator=gen), torch.randint(0, 20, (2, 16), generator=gen)
    loss, objective = shallow(x, y)
    objective.backward()
    bp_model(x, y)[1].backward()
    bp_grads = dict(bp_model.named_parameters())
    for name, p in model.named_parameters():
        if name in trained:
            torch.testing.assert_close(p.grad, bp_grads[name].grad, rtol=1e-12, atol=1e-15)
        else:
            assert p.grad is None
    assert shallow.block_names() == ["block1", "block2"]


def test_train_last_n_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="method.train_last_n"):
        build_method(tiny_gpt(2), MethodConfig(name="shallow", train_last_n=3))


def test_compute_is_2n_and_exact_counts_the_trained_backward():
    model = tiny_gpt(3)
    shallow = build_method(model, MethodConfig(name="shallow"))
    per_token = shallow.compute_per_token()
    assert per_token["paper"] * 3 == model.flops_per_token()["6N"]
    assert per_token["exact"] == (model.forward_flops_per_token()
                                  + 2 * (model.block_forward_flops_per_token() + model.head_forward_flops_per_token()))
    mlp = MLPClassifier(MLPConfig(depth=2, width=8, n_inputs=5, n_classes=3))
    per_example = build_method(mlp, MethodConfig(name="shallow"), model_kind="mlp").compute_per_token()
    assert per_example["paper"] == 2 * mlp.n_params()
    forward = 2 * (5 * 8 + 8 * 8 + 8 * 3)
    assert per_example["exact"] == forward + 2 * 2 * (8 * 8 + 8 * 3)


def test_frozen_parameters_bit_identical_after_training_and_compute_ratio(tmp_path, tiny_overrides):
    short = tiny_overrides + ["train.tokens=4096", "train.n_evals=2", "model.n_layer=2"]
    summaries = {}
    for name in ("bp", "shallow"):
        cfg = build_config(overrides=short + [f"method={name}"])
        summaries[name] = train(cfg, tmp_path / name, quiet=True)
    assert summaries["shallow"]["status"] == "completed"
    assert summaries["shallow"]["compute_flops"] * 3 == summaries["bp"]["compute_flops"]

    cfg = from_dict(yaml.safe_load((tmp_path / "shallow" / "config.yaml").read_text()))  # the resolved config
    torch.manual_seed(cfg.seed)
    initial = build_model(cfg.model).state_dict()
    state = torch.load(tmp_path / "shallow" / "checkpoint.pt", weights_only=False)["method"]
    frozen = [n for n in initial if n.startswith(("wte.", "wpe.", "blocks.0."))]
    trained = [n for n in initial if n.startswith(("blocks.1.", "ln_f.", "lm_head."))]
    assert frozen and len(frozen) + len(trained) == len(initial)
    for name in frozen:
        assert torch.equal(state[f"model.{name}"], initial[name]), name
    assert all(not torch.equal(state[f"model.{name}"], initial[name]) for name in trained if "weight" in name)
