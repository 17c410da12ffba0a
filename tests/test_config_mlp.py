"""The MLP track's own config section (`mlp:`), and the files written before it still reading."""
import pytest
import yaml

from beyondbp.config import ConfigError, RunConfig, build_config, from_dict, to_dict
from beyondbp.config_mlp import old_layout
from beyondbp.runs.folder import check_same_config
from beyondbp.study.spec import normalise_spec
from beyondbp.train.provenance import run_identity

MOVED = ("depth", "width", "activation", "n_inputs", "n_classes")


def test_mlp_keys_live_in_their_own_section():
    cfg = build_config(overrides=["model.kind=mlp", "mlp.depth=2", "mlp.width=7", "mlp.epochs=3",
                                  "mlp.batch_examples=5", "mlp.activation=relu"])
    d = to_dict(cfg)
    assert d["mlp"] == {"dataset": "digits", "depth": 2, "width": 7, "activation": "relu", "n_inputs": None, "n_classes": None,
                        "epochs": 3, "batch_examples": 5, "examples": None}
    assert not set(MOVED) & set(d["model"]) and not {"epochs", "batch_examples"} & set(d["train"])
    assert "dataset" not in d["data"]
    assert from_dict(yaml.safe_load(yaml.safe_dump(d))) == cfg


@pytest.mark.parametrize("item, key", [("mlp.width=0", "mlp.width"), ("mlp.activation=gelu", "mlp.activation"),
                                       ("mlp.epochs=-1", "mlp.epochs"), ("mlp.n_classes=1", "mlp.n_classes")])
def test_bad_mlp_values_name_the_key(item, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        build_config(overrides=[item])


def test_old_names_on_the_command_line_and_in_files_read_as_mlp_keys(tmp_path):
    new = build_config(overrides=["model.kind=mlp", "mlp.width=7", "mlp.epochs=3", "mlp.batch_examples=5",
                                  "mlp.dataset=mnist"])
    dotted = build_config(overrides=["model.kind=mlp", "model.width=7", "train.epochs=3", "train.batch_examples=5",
                                     "data.dataset=mnist"])
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"model": {"kind": "mlp", "width": 7}, "train": {"epochs": 3, "batch_examples": 5},
                                    "data": {"dataset": "mnist"}}))
    assert dotted == new and build_config(path) == new


def _old_record(cfg: RunConfig, tokens: int) -> dict:
    """A config.yaml as beyondbp wrote it before the mlp section: MLP keys in model and train,
    an MLP run's examples as train.tokens."""
    old = old_layout(to_dict(cfg))
    old["train"]["tokens"] = tokens
    return old


def test_an_old_mlp_record_reads_its_train_tokens_as_examples_and_a_gpt_record_keeps_them():
    mlp = build_config(overrides=["model.kind=mlp", "mlp.width=32", "mlp.epochs=3"])
    got = from_dict(_old_record(mlp, 4041))
    assert (got.mlp.examples, got.mlp.width, got.mlp.epochs, got.train.tokens) == (4041, 32, 3, 2_000_000)
    gpt = from_dict(_old_record(RunConfig(), 8192))
    assert (gpt.train.tokens, gpt.mlp.examples) == (8192, None)


def test_an_old_mlp_run_folder_resumes_with_the_same_config_and_refuses_another(tmp_path):
    cfg = build_config(overrides=["model.kind=mlp", "mlp.width=32", "mlp.epochs=3"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_old_record(cfg, 4041)))
    cfg.mlp.examples = 4041
    check_same_config(tmp_path, cfg)
    cfg.mlp.width = 64
    with pytest.raises(ConfigError, match="^mlp.width: .* holds a run with mlp.width=32, not 64"):
        check_same_config(tmp_path, cfg)


def test_an_old_gpt_run_folder_resumes_and_its_checkpoint_identity_is_unchanged(tmp_path):
    cfg = build_config(overrides=["model.n_layer=3", "train.tokens=8192"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_old_record(cfg, 8192)))
    check_same_config(tmp_path, cfg)
    # digests computed by the version before the mlp section (checkpoints written then still load)
    assert run_identity(RunConfig(), "abc")["config"] == "323001308d1f94c5"
    assert run_identity(cfg, "abc")["config"] == "554ae096f29d3141"


def test_an_old_mlp_spec_normalises_as_the_same_spec_in_new_names():
    common = {"track": "mlp", "methods": ["bp"], "sizes": {"s": {"depth": 2, "width": 8}}}
    old = normalise_spec({**common, "base": {"model": {"activation": "relu"}, "train": {"epochs": 4},
                                             "data": {"dataset": "digits"}},
                          "per_method": {"bp": {"train.batch_examples": 32}}})
    new = normalise_spec({**common, "base": {"mlp": {"activation": "relu", "epochs": 4}},
                          "per_method": {"bp": {"mlp.batch_examples": 32}}})
    assert old == new and new.base["mlp"]["epochs"] == 4 and "epochs" not in new.base["train"]
