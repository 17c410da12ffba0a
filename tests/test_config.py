"""Config parsing: dotted overrides, types, YAML, and one-line errors naming the key."""
import pytest

from beyondbp.config import ConfigError, build_config, describe_keys, dump_yaml, from_dict, to_dict


def test_overrides_set_nested_fields_with_types():
    cfg = build_config(overrides=["method=dfa", "method.feedback=per_layer", "model.n_layer=3",
                                  "train.lr=1e-3", "train.tokens=2_000_000", "data.vocab_size=null",
                                  "model.tie_embeddings=true"])
    assert cfg.method.name == "dfa" and cfg.method.feedback == "per_layer"
    assert cfg.model.n_layer == 3 and isinstance(cfg.model.n_layer, int)
    assert cfg.train.lr == 1e-3 and cfg.train.tokens == 2_000_000
    assert cfg.data.vocab_size is None and cfg.model.tie_embeddings is True


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: {name: shallow}\nmodel:\n  d_model: 32\ntrain: {lr: 0.01}\n")
    cfg = build_config(path, ["train.lr=0.02"])
    assert cfg.method.name == "shallow" and cfg.model.d_model == 32 and cfg.train.lr == 0.02


def test_round_trip_through_dict_and_yaml():
    cfg = build_config(overrides=["method=dfa_block", "seed=7"])
    assert from_dict(to_dict(cfg)) == cfg
    assert "dfa_block" in dump_yaml(cfg)


@pytest.mark.parametrize("item,match", [
    ("model.n_layers=3", "model.n_layers"),
    ("nonsense=1", "nonsense"),
    ("model.n_layer=three", "model.n_layer"),
    ("train.lr=fast", "train.lr"),
    ("model.tie_embeddings=maybe", "model.tie_embeddings"),
    ("model.n_layer=2.5", "model.n_layer"),
    ("noequals", "KEY=VALUE"),
])
def test_bad_overrides_name_the_key(item, match):
    with pytest.raises(ConfigError, match=match) as info:
        build_config(overrides=[item])
    assert "\n" not in str(info.value)


def test_missing_and_invalid_config_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        build_config(bad)


def test_describe_keys_lists_interface_keys():
    keys = dict(describe_keys())
    for key in ("method.name", "seed", "model.n_layer", "model.d_model", "model.n_head", "model.context",
                "train.tokens", "train.batch_tokens", "train.lr", "train.schedule",
                "data.corpus", "data.tokenizer", "data.vocab_size"):
        assert key in keys
