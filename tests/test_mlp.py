"""The fully-connected track: model parts and counts, datasets, training runs, alignment angles, CLI."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from beyondbp.cli.main import main
from beyondbp.config import ConfigError, DataConfig, MLPConfig, MethodConfig
from beyondbp.methods.registry import build_method
from beyondbp.data.images import load_image_data
from beyondbp.model.mlp import MLPClassifier
from beyondbp.methods.run_builder import build_from_file
from beyondbp.train.mlp_loop import measure_angles, run_mlp
from beyondbp.model.build import build_model

QUICK = ["mlp.depth=2", "mlp.width=64", "mlp.epochs=4", "train.lr=3e-3", "train.progress=off", "train.threads=1"]


def small_cfg(**kw):
    return MLPConfig(depth=2, width=8, n_inputs=5, n_classes=3, **kw)


def test_parts_counts_and_flops():
    torch.manual_seed(0)
    model = build_model(small_cfg())
    assert isinstance(model, MLPClassifier) and len(model.blocks) == 2
    n = (5 * 8 + 8) + (8 * 8 + 8) + (8 * 3 + 3)
    assert model.n_params() == model.n_params_nonembedding() == n
    assert model.flops_per_token() == {"6N": 6 * n, "exact": 3 * 2 * (5 * 8 + 8 * 8 + 8 * 3)}
    x, y = torch.randn(4, 1, 5), torch.tensor([0, 1, 2, 0])
    h = model.embed(x)
    assert h.shape == (4, 5)
    layer = model.blocks[0].linear
    torch.testing.assert_close(model.blocks[0](h), torch.tanh(h @ layer.weight.T + layer.bias))
    logits, loss = model(x, y)
    assert logits.shape == (4, 3)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))
    relu = MLPClassifier(small_cfg(activation="relu"))
    assert (relu.blocks[0](torch.randn(10, 5)) >= 0).all()
    with pytest.raises(ConfigError, match="mlp.activation"):
        MLPClassifier(small_cfg(activation="swish"))
    with pytest.raises(ConfigError, match="mlp.n_inputs"):
        MLPClassifier(MLPConfig())


def test_digits_split_is_fixed_stratified_and_standardised():
    a, b = load_image_data("digits", DataConfig()), load_image_data("digits", DataConfig())
    assert (len(a.train_x), len(a.test_x), a.n_inputs, a.n_classes) == (1347, 450, 64, 10)
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.test_y, b.test_y)
    assert (a.train_x.dtype, a.train_y.dtype) == (np.float32, np.int64)
    train_share = np.bincount(a.train_y) / len(a.train_y)
    test_share = np.bincount(a.test_y) / len(a.test_y)
    assert np.abs(train_share - test_share).max() < 0.01
    varying = a.train_x.std(0) > 0
    assert np.abs(a.train_x.mean(0)).max() < 1e-5
    np.testing.assert_allclose(a.train_x.std(0)[varying], np.ones(int(varying.sum())), rtol=1e-3, atol=0)
    with pytest.raises(ConfigError, match="mlp.dataset"):
        load_image_data("cifar", DataConfig())


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_torchvision_datasets(name):
    pytest.importorskip("torchvision", reason="MNIST/Fashion-MNIST need torchvision, which is not installed")
    try:
        data = load_image_data(name, DataConfig())
    except ConfigError as exc:
        pytest.skip(f"{name} not present and not downloadable here: {exc}")
    assert (len(data.train_x), len(data.test_x), data.n_inputs, data.n_classes) == (60000, 10000, 784, 10)


def test_bp_run_learns_and_writes_its_outputs(tmp_path):
    summary = run_mlp(build_from_file(overrides=QUICK + ["method=bp"], kind="mlp"), tmp_path / "bp", quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "bp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0]["test_error"] > 0.6 and rows[-1]["test_error"] < 0.1
    assert rows[0]["train_loss"] is None and rows[-1]["train_loss"] < 0.5
    for row in rows:  # BP's signal is the BP gradient
        assert set(row["angle_hidden"]) == {"layer1", "layer2"}
        assert set(row["angle_weights"]) == {"layer1", "layer2", "output"}
        assert max(row["angle_hidden"].values()) < 1e-2 and max(row["angle_weights"].values()) < 1e-2
    assert summary["status"] == "completed" and summary["test_error"] == rows[-1]["test_error"]
    assert summary["compute_flops"] == 4 * 1347 * 6 * summary["n_params"]
    for name in ("summary.json", "config.yaml", "angles.png", "comparison.md"):
        assert (tmp_path / "bp" / name).exists()


def test_fa_run_starts_orthogonal_and_aligns(tmp_path):
    summary = run_mlp(build_from_file(overrides=QUICK + ["method=fa"], kind="mlp"), tmp_path / "fa", quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "fa" / "metrics.jsonl").read_text().splitlines()]
    for layer in ("layer1", "layer2"):
        assert 80 < rows[0]["angle_hidden"][layer] < 100
        assert rows[-1]["angle_hidden"][layer] < rows[0]["angle_hidden"][layer] - 10
    assert rows[-1]["angle_weights"]["output"] < 1e-2  # the output layer gets its true gradient
    assert summary["test_error"] < 0.15


def test_measuring_angles_leaves_gradients_and_rng_untouched():
    torch.manual_seed(0)
    model = MLPClassifier(small_cfg())
    fa = build_method(model, MethodConfig(name="fa"), model_kind="mlp")
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = [p.grad.clone() for p in model.parameters()]
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    rng = torch.get_rng_state()
    hidden, weights = measure_angles(fa, x, y)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))
    assert 0 < hidden["layer1"] < 180 and weights["output"] < 1e-3


def test_cli_trains_and_reports_bad_keys(tmp_path, capsys):
    assert main(["mlp", "--out", str(tmp_path / "r"), "method=fa", "mlp.epochs=1", "mlp.width=16",
                 "train.progress=off"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["method"] == "fa" and summary["epochs"] == 1 and summary["width"] == 16
    assert main(["mlp", "--out", str(tmp_path / "bad"), "mlp.activation=swish"]) == 2
    assert "mlp.activation" in capsys.readouterr().err


def test_one_dfa_step_gives_each_hidden_layer_b_e_times_its_derivative():
    torch.manual_seed(0)
    model = MLPClassifier(small_cfg()).double()
    dfa = build_method(model, MethodConfig(name="dfa", feedback="per_layer"), model_kind="mlp").double()
    gen = torch.Generator().manual_seed(7)
    known = [torch.randn(m.shape, generator=gen, dtype=torch.float64) for m in dfa.feedback.matrices()]
    for projection, b in zip(dfa.feedback.projections, known):
        projection.matrix.copy_(b)  # [classes, width]: the signal is e @ B
    x, y = torch.randn(6, 5, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 2, 1, 0])

    _, objective = dfa(x, y)
    objective.backward()

    layers = [b.linear for b in model.blocks]
    with torch.no_grad():
        h0 = x
        h1 = torch.tanh(h0 @ layers[0].weight.T + layers[0].bias)
        h2 = torch.tanh(h1 @ layers[1].weight.T + layers[1].bias)
        e = (F.softmax(model.output(h2), dim=-1) - F.one_hot(y, 3).double()) / len(y)
    for layer, b, h_in, h_out in zip(layers, known, (h0, h1), (h1, h2)):
        delta = (e @ b) * (1 - h_out ** 2)  # B_i e ⊙ f'(a_i)
        torch.testing.assert_close(layer.weight.grad, delta.T @ h_in, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(layer.bias.grad, delta.sum(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(model.output.weight.grad, e.T @ h2, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_method_all_compares_bp_fa_dfa_side_by_side(tmp_path):
    result = run_mlp(build_from_file(overrides=QUICK + ["method=all"], kind="mlp", unresolved=("all",)), tmp_path, quiet=True)
    assert set(result["runs"]) == {"bp", "fa", "dfa"} and result["status"] == "completed"
    table = (tmp_path / "comparison.md").read_text().splitlines()
    assert [line.split("|")[2].strip() for line in table[2:]] == ["bp", "fa", "dfa"]
    assert (tmp_path / "angles.png").stat().st_size > 10_000
    rows = [json.loads(line) for line in (tmp_path / "dfa" / "metrics.jsonl").read_text().splitlines()]
    for layer in ("layer1", "layer2"):
        assert 80 < rows[0]["angle_hidden"][layer] < 100 and rows[-1]["angle_hidden"][layer] < 80
    assert abs(result["runs"]["dfa"]["test_error"] - result["runs"]["bp"]["test_error"]) < 0.1


def test_image_data_cache_dir_expands_the_home_folder(tmp_path, monkeypatch):
    # data.cache_dir=~/x must land under $HOME/x for MNIST as it does for token corpora
    import sys
    import types

    from beyondbp.data import images
    roots = []

    class FakeMNIST:
        def __init__(self, root, train, download):
            roots.append(root)
            n = 6 if train else 4
            self.data = torch.zeros(n, 28, 28, dtype=torch.uint8)
            self.targets = torch.arange(n) % 2

    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(MNIST=FakeMNIST, FashionMNIST=FakeMNIST))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setenv("HOME", str(tmp_path))
    train_x, train_y, test_x, test_y = images._load_torchvision("mnist", DataConfig(cache_dir="~/imgcache"))
    assert roots == [str(tmp_path / "imgcache" / "torchvision")] * 2
    assert train_x.shape == (6, 784) and test_x.shape == (4, 784)


def test_every_activation_choice_has_its_function():
    from beyondbp.config import CHOICES
    from beyondbp.model.mlp import ACTIVATIONS
    assert tuple(ACTIVATIONS) == CHOICES["mlp.activation"][0]
    x = torch.tensor([-2.0, 0.0, 3.0])
    assert torch.equal(ACTIVATIONS["relu"](x), torch.tensor([0.0, 0.0, 3.0]))
    assert torch.allclose(ACTIVATIONS["sigmoid"](x), 1 / (1 + torch.exp(-x)))
