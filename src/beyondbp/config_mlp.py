"""The MLP track's section of a run's config (`mlp:`), and the names its keys had before it had one.

A fully-connected run (model.kind=mlp, `beyondbp mlp`, a study's `track: mlp`) reads its shape
(depth, width, activation, inputs, classes), its data set, its length (epochs over the data set, minibatches of
`batch_examples`) and the number of training examples it sees (`examples`: epochs x the training
split's size, set when the run is planned or trained) from here; the Transformer track reads none
of them. Each key is listed, with its default and range, in the configuration page of the docs.

Until this section existed the keys rode in the Transformer's sections, as model.depth,
model.width, model.activation, model.n_inputs, model.n_classes, train.epochs,
train.batch_examples and data.dataset; and an MLP run recorded its examples as `train.tokens`. Files written then
(run folders' config.yaml and run.yaml, spec.yaml, presets, command lines) still read:
`current_names` renames the moved keys wherever a mapping is applied to a RunConfig, and
`record_names` reads an MLP run's recorded `train.tokens` as `mlp.examples`, on that track only
(`train.tokens` is the Transformer track's length).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MLPConfig:
    dataset: str = "digits"  # digits | mnist | fashion_mnist (beyondbp.data.images)
    depth: int = 3  # hidden layers
    width: int = 256  # units per hidden layer
    activation: str = "tanh"  # tanh | relu | sigmoid
    n_inputs: int | None = None  # None: taken from the dataset
    n_classes: int | None = None  # None: taken from the dataset
    epochs: int = 20  # passes over the training split: the track's budget
    batch_examples: int = 64  # examples per minibatch
    examples: int | None = None  # training examples over the run (epochs x the split's size); set, not given


MLP_RANGES = {"mlp.depth": (1, None), "mlp.width": (1, None), "mlp.n_inputs": (1, None), "mlp.n_classes": (2, None),
              "mlp.epochs": (0, 10**6), "mlp.batch_examples": (1, None), "mlp.examples": (0, None)}
ACTIVATIONS = ("tanh", "relu", "sigmoid")
MOVED = {("model", "depth"), ("model", "width"), ("model", "activation"), ("model", "n_inputs"),
         ("model", "n_classes"), ("train", "epochs"), ("train", "batch_examples"), ("data", "dataset")}  # (old section, key) -> mlp.key
NOT_COMPARED = {("train", "tokens"), ("mlp", "examples")}  # on the MLP track: not its length / derived from epochs


def current_names(mapping: dict) -> dict:
    """`mapping` (nested or dotted RunConfig keys) with the moved keys (`MOVED`) under `mlp`, as they
    were given (dotted mlp.KEY, or in a nested `mlp` section); every other key as given, in order."""
    if not isinstance(mapping, dict):
        return mapping
    out: dict = {}
    for key, value in mapping.items():
        head, dot, rest = str(key).partition(".")
        if dot and (head, rest) in MOVED:
            out[f"mlp.{rest}"] = value
        elif not dot and head in ("model", "train", "data") and isinstance(value, dict):
            out[key] = {k: v for k, v in value.items() if (head, str(k)) not in MOVED}
            moved = {k: v for k, v in value.items() if (head, str(k)) in MOVED}
            if moved:
                out["mlp"] = {**out["mlp"], **moved} if isinstance(out.get("mlp"), dict) else moved
        elif key == "mlp" and isinstance(value, dict) and isinstance(out.get("mlp"), dict):
            out["mlp"] = {**out["mlp"], **value}
        else:
            out[key] = value
    return out


def _kind(mapping: dict) -> object:
    model = mapping.get("model")
    return model.get("kind") if isinstance(model, dict) else mapping.get("model.kind")


def record_names(mapping: dict) -> dict:
    """A run's recorded config (config.yaml, run.yaml) in today's names: `current_names`, and on the
    MLP track a `train.tokens` (its examples, as MLP runs recorded them) read as `mlp.examples`."""
    mapping = current_names(mapping)
    if not isinstance(mapping, dict) or _kind(mapping) != "mlp":
        return mapping
    train, section = mapping.get("train"), mapping.get("mlp")
    if isinstance(train, dict) and "tokens" in train:
        mapping = {**mapping, "train": {k: v for k, v in train.items() if k != "tokens"},
                   "mlp": {"examples": train["tokens"], **(section if isinstance(section, dict) else {})}}
    elif "train.tokens" in mapping:
        mapping = {("mlp.examples" if k == "train.tokens" else k): v for k, v in mapping.items()}
    return mapping


def old_layout(config: dict) -> dict:
    """A `to_dict` of a RunConfig in the layout before the `mlp` section (the moved keys back in
    model, train and data, `examples` left out): what checkpoints' config digests were computed over."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items() if k != "mlp"}
    for section, key in MOVED:
        out[section][key] = config["mlp"][key]
    return out


def run_length(cfg) -> int:
    """What a run's budget counts: its training tokens, or on the MLP track its training examples."""
    return cfg.mlp.examples if cfg.model.kind == "mlp" else cfg.train.tokens


def shape_section(cfg):
    """The section of a RunConfig that gives its model's shape: `mlp` on the MLP track, else `model`."""
    return cfg.mlp if cfg.model.kind == "mlp" else cfg.model
