"""Nested dataclass configs, YAML files, dotted KEY=VALUE overrides, and the one validation layer.

One `RunConfig` describes one training run completely; it is what a run directory's
`config.yaml` holds and what `beyondbp train` builds from a file plus overrides.
`validate_config` checks every ranged key (finite, in range) and every named choice before
anything is written; `check_number` gives command-line flags the same message form:
`KEY: must be <what>, got <value>`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config_mlp import ACTIVATIONS, MLP_RANGES, MLPConfig, current_names, record_names
from .reads import ConfigError, LockHeld, TooFewPoints, YAMLRefused, parse_yaml, read_text, shown  # noqa: F401


def check_choice(key: str, value, valid, what: str = "value") -> None:
    """Raise `KEY: unknown WHAT 'x' (valid: a, b)` unless value is one of `valid`."""
    if value not in valid:
        raise ConfigError(f"{key}: unknown {what} {value!r} (valid: {', '.join(map(str, valid))})")


@dataclass
class ModelConfig:
    kind: str = "gpt"  # gpt | mlp
    size: str | None = None  # a named size from beyondbp.model.shape.NAMED_SIZES; overrides the fields below
    n_layer: int = 2
    d_model: int = 64
    n_head: int = 4
    context: int = 128
    vocab_size: int | None = None  # None: taken from the tokenizer
    mlp_ratio: int = 4
    tie_embeddings: bool = False
    dropout: float = 0.0
    norm: str = "pre"  # pre: LayerNorm before attention/MLP (GPT-2/3); post: after each residual sum
    bias: bool = True  # biases in the Linear and LayerNorm layers


class MethodConfig:
    """The training method (`method=NAME`) and its settings (`method.KEY=VALUE`).

    NAME is a built-in method, a method an installed package offers (entry-point group
    `beyondbp.methods`) or an importable class `package.module:Class`. Which settings a method has
    (type, default, range) the method declares (`beyondbp.methods.settings`); here they are held as
    given, in any order, and `beyondbp.methods.lookup.resolve_method` checks them and fills in the
    defaults once the method is known. `origin` and `version` record the class's import path and
    its package's version; resolving writes them. Settings read as attributes: `cfg.feedback_scale`.
    """
    FIELDS = ("name", "origin", "version")

    def __init__(self, name: str = "bp", origin: str | None = None, version: str | None = None, **settings):
        self.name, self.origin, self.version = name, origin, version
        self.settings: dict[str, Any] = dict(settings)

    def __getattr__(self, key: str):
        settings = self.__dict__.get("settings", {})
        if key in settings:
            return settings[key]
        raise AttributeError(f"method {self.__dict__.get('name')!r} has no setting {key!r}")

    def __eq__(self, other) -> bool:
        return isinstance(other, MethodConfig) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return f"MethodConfig({', '.join(f'{k}={v!r}' for k, v in self.as_dict().items())})"

    def set(self, key: str, value: Any, full_key: str) -> None:
        if key in self.FIELDS:
            setattr(self, key, coerce(value, str | None if key != "name" else str, full_key))
        elif not key.isidentifier():
            raise ConfigError(f"unknown key {full_key!r} (method settings are method.NAME=VALUE)")
        else:
            self.settings[key] = value  # checked against the method's declaration when it is resolved

    def as_dict(self) -> dict[str, Any]:
        """name, the recorded origin and version (once resolved), then the settings."""
        record = {k: getattr(self, k) for k in self.FIELDS[1:] if getattr(self, k) is not None}
        return {"name": self.name, **record, **self.settings}


@dataclass
class TrainConfig:
    tokens: int = 2_000_000  # the Transformer track's length (the MLP track's is mlp.epochs)
    batch_tokens: int = 4_096
    micro_batch_tokens: int | None = None  # gradient accumulation when smaller than batch_tokens
    lr: float = 6e-3
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"  # cosine | constant_cooldown
    warmup_frac: float = 0.05
    warmup_tokens: int = 0  # > 0: a warm-up of this many tokens whatever the run's length (branched budgets)
    cooldown_frac: float = 0.2
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    n_evals: int = 24
    eval_tokens: int = 65_536
    alignment_every_evals: int = 0  # evaluations between alignment measurements; 0 = off (was alignment_every)
    checkpoint_every_s: float = 60.0
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bf16 autocast on CUDA) | float32 | bfloat16
    compile: bool = False
    threads: int = 0  # torch intra-op threads; 0 = leave as is
    progress: str = "auto"  # auto | on | off
    memory_check: bool = True  # refuse a run whose estimated memory exceeds what this process can use
    on_data_change: str = "refuse"  # refuse | restart: resuming a run whose corpus now gives other tokens
    tracker: str = "none"  # none | tensorboard | wandb: each metrics row also goes there (train.tracking)
    tracker_group: str | None = None  # the tracker's group of runs; a study sets its folder's name


@dataclass
class DataConfig:
    corpus: str = "shakespeare"  # built-in name, a .txt/.jsonl file, a folder, or hf:NAME[:CONFIG]
    tokenizer: str = "byte"  # byte | bpe | gpt2
    vocab_size: int | None = None  # for bpe
    text_field: str = "text"
    hf_split: str = "train"
    hf_streaming: bool = False
    hf_max_docs: int | None = None
    hf_data_files: str | None = None  # local files for hf:json / hf:text / hf:csv (a path or glob)
    val_fraction: float = 0.05
    cache_dir: str | None = None  # default: ~/.cache/beyondbp
    max_tokens: int | None = None  # cap on the training split's tokens (the corpus is read no further)
    shard_tokens: int = 1 << 27  # tokens per shard file (128 MiB of bytes, 256 MiB of uint16)
    bpe_sample_mb: int = 64  # bpe is trained on the first this-many MiB of training text
    workers: int = 0  # tokenizer processes for large corpora: 0 = one per core (at most 8), 1 = this process


@dataclass
class RunConfig:
    method: MethodConfig = field(default_factory=MethodConfig)  # not a dataclass: its keys are the method's
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mlp: MLPConfig = field(default_factory=MLPConfig)  # the MLP track's shape and length (beyondbp.config_mlp)


@functools.cache  # a dataclass's field types never change; get_type_hints costs ~1 ms a call
def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert `value` (from YAML or a command-line string) to `typ`, or raise ConfigError."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return coerce(value, args[0], key)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(f)
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(str(value).replace("_", "")) if isinstance(value, str) else float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: a 4,000-digit integer
            raise ConfigError(f"{key}: expected a number, got {shown(value)}") from None
    if typ is str:
        if isinstance(value, bool):  # YAML reads on/off/yes/no as booleans; `progress=off` means "off"
            return "on" if value else "off"
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _set_method(method: MethodConfig, path: list[str], value: Any, full_key: str) -> None:
    if not path:
        if not isinstance(value, dict):  # `method=dfa` names the method
            method.set("name", value, full_key)
            return
        for k, v in value.items():
            _set_method(method, [str(k)], v, f"{full_key}.{k}")
        return
    method.set(".".join(path), value, full_key)


def _set(obj: Any, path: list[str], value: Any, full_key: str) -> None:
    if isinstance(obj, RunConfig) and path[0] == "method":
        _set_method(obj.method, path[1:], value, full_key)
        return
    types_ = _field_types(type(obj))
    name = OLD_KEYS.get(path[0], path[0]) if isinstance(obj, TrainConfig) else path[0]
    if name not in types_:
        valid = ", ".join(sorted(types_))
        raise ConfigError(f"unknown key {full_key!r} (valid keys here: {valid})")
    current = getattr(obj, name)
    if dataclasses.is_dataclass(current):
        if len(path) == 1:
            if not isinstance(value, dict):
                raise ConfigError(f"{full_key}: expected a mapping of keys, got {value!r}")
            for k, v in value.items():
                _set(current, [str(k)], v, f"{full_key}.{k}")
            return
        _set(current, path[1:], value, full_key)
        return
    if len(path) > 1:
        raise ConfigError(f"unknown key {full_key!r} ({'.'.join(full_key.split('.')[:-len(path)+1])} is not a section)")
    setattr(obj, name, coerce(value, types_[name], full_key))


def apply_mapping(cfg: Any, mapping: dict, prefix: str = "") -> Any:
    if not isinstance(mapping, dict):
        raise ConfigError(f"config{(' ' + prefix) if prefix else ''}: expected a mapping, got {type(mapping).__name__}")
    for k, v in (current_names(mapping) if isinstance(cfg, RunConfig) else mapping).items():  # old names read
        key = f"{prefix}{k}"
        _set(cfg, str(k).split("."), v, key)
    return cfg


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['a.b=1', 'c=x'] -> {'a.b': 1, 'c': 'x'}; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = parse_yaml(raw) if raw != "" else ""
        except YAMLRefused as exc:  # an alias bomb or a key given twice in a value: never expanded
            raise ConfigError(f"{key}: {exc.why} (in the command-line value)") from None
        except yaml.YAMLError:
            value = raw
        out[key] = value
    return out


def read_text_file(path: str | Path, what: str, kind: str = "yaml") -> str:
    """A UTF-8 text file's content, or one ConfigError naming it (missing, unreadable, binary, a
    link, not a regular file, larger than its kind's limit: `beyondbp.reads`)."""
    try:
        return read_text(path, what, kind)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {Path(path)}") from None


def load_yaml(path: str | Path, what: str = "config file") -> dict:
    """A YAML file's top-level mapping; anything else is one ConfigError naming the file (and the
    line of an alias, anchor or key given twice: `beyondbp.reads.parse_yaml`)."""
    p = Path(path)
    text = read_text_file(p, what)
    try:
        data = parse_yaml(text) or {}
    except YAMLRefused as exc:
        raise ConfigError(f"{what} {p}:{exc.line}: {exc.why}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {p}: expected a mapping at top level")
    return data


def build_config(config_file: str | Path | None = None, overrides: list[str] | dict | None = None,
                 base: RunConfig | None = None) -> RunConfig:
    cfg = base if base is not None else RunConfig()
    if config_file is not None:
        apply_mapping(cfg, load_yaml(config_file))
    if overrides:
        mapping = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides))
        apply_mapping(cfg, mapping)
    return validate_config(cfg)


def to_dict(cfg: Any) -> dict:
    if isinstance(cfg, MethodConfig):
        return cfg.as_dict()
    out = dataclasses.asdict(cfg)
    if isinstance(cfg, RunConfig):
        out["method"] = cfg.method.as_dict()
    return out


def from_dict(data: dict) -> RunConfig:
    return apply_mapping(RunConfig(), record_names(data))


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def describe_keys(cls=RunConfig, prefix: str = "") -> list[tuple[str, Any]]:
    """Every dotted key with its default, for --help and the configuration page of the docs (docs/configuration.md)."""
    rows: list[tuple[str, Any]] = []
    default = cls()
    for f in dataclasses.fields(cls):
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(describe_keys(type(value), f"{prefix}{f.name}."))
        elif isinstance(value, MethodConfig):  # its settings are the method's (`beyondbp methods --settings`)
            rows.append((f"{prefix}{f.name}.name", value.name))
        else:
            rows.append((f"{prefix}{f.name}", value))
    return rows


# --- the one validation layer ------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """An allowed interval; a float must also be finite (NaN and inf are never a setting)."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False

    def holds(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self, integer: bool) -> str:
        kind = "an integer" if integer else "a finite number"
        if self.low is not None and self.high is not None:
            return (f"{kind} in {'(' if self.low_open else '['}{_bound(self.low)}, {_bound(self.high)}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {_bound(self.low)}"
        return kind


def _bound(value: float) -> str:
    """2^62 and 2^63-1 as such; other bounds as written."""
    for k in range(40, 65):
        if value in (2**k, 2**k - 1):
            return f"2^{k}" + ("-1" if value == 2**k - 1 else "")
    return f"{value:g}"


POSITIVE = Range(0.0, low_open=True)
AT_LEAST_0, AT_LEAST_1 = Range(0), Range(1)
FRACTION = Range(0.0, 1.0)
BIG = 2**62  # counts stay far from int64 overflow in NumPy/torch arithmetic
BOOTSTRAP = Range(0, 100_000)  # --bootstrap of `study run`, `study report` and `fit`
PF_DAY = 8.64e19  # FLOPs in one petaflop/s-day (the paper's compute unit); the one definition
TRACK_DEFAULTS = {"gpt": {}, "mlp": {"model.kind": "mlp", "train.lr": 1e-3, "train.beta2": 0.999, "train.weight_decay": 3.0}}
OLD_KEYS = {"alignment_every": "alignment_every_evals"}  # train.OLD -> its name now: old folders' files still read
METHOD_IMPORTS_OPT_IN = "--trust-method-imports"  # the flag that lets files name methods to import (methods.import_policy)

RANGES: dict[str, Range] = {
    "seed": Range(0, 2**63 - 1),
    "model.n_layer": Range(1, BIG), "model.d_model": Range(1, BIG), "model.n_head": Range(1, BIG),
    "model.context": Range(1, BIG), "model.vocab_size": Range(2, BIG), "model.mlp_ratio": Range(1, BIG),
    "model.dropout": Range(0.0, 1.0, high_open=True),
    **{key: Range(low, BIG if high is None else high) for key, (low, high) in MLP_RANGES.items()},
    "train.tokens": Range(1, BIG), "train.batch_tokens": Range(1, BIG), "train.micro_batch_tokens": Range(1, BIG),
    "train.lr": POSITIVE, "train.min_lr_ratio": FRACTION, "train.warmup_frac": FRACTION,
    "train.warmup_tokens": Range(0, BIG),
    "train.cooldown_frac": FRACTION, "train.weight_decay": Range(0.0), "train.beta1": Range(0.0, 1.0, high_open=True),
    "train.beta2": Range(0.0, 1.0, high_open=True), "train.grad_clip": Range(0.0), "train.n_evals": Range(1, 10_000),
    "train.eval_tokens": Range(1, BIG), "train.alignment_every_evals": AT_LEAST_0, "train.checkpoint_every_s": Range(0.0),
    "train.threads": AT_LEAST_0,
    "data.vocab_size": Range(2, BIG), "data.val_fraction": Range(0.0, 1.0, low_open=True, high_open=True),
    "data.hf_max_docs": Range(1, BIG), "data.max_tokens": Range(1, BIG), "data.shard_tokens": Range(1, BIG),
    "data.bpe_sample_mb": Range(1, 2**40), "data.workers": Range(0, 4096),
}
CHOICES: dict[str, tuple[tuple[str, ...], str]] = {  # key: (valid values, what they are)
    "model.kind": (("gpt", "mlp"), "kind"), "model.norm": (("pre", "post"), "placement"),
    "mlp.activation": (ACTIVATIONS, "activation"),
    "train.schedule": (("cosine", "constant_cooldown"), "schedule"),
    "train.device": (("auto", "cpu", "cuda"), "device"), "train.dtype": (("auto", "float32", "bfloat16"), "dtype"),
    "train.progress": (("auto", "on", "off"), "value"), "train.on_data_change": (("refuse", "restart"), "value"),
    "train.tracker": (("none", "tensorboard", "wandb"), "tracker"),
    "data.tokenizer": (("byte", "bpe", "gpt2"), "tokenizer"),
    # a study's, not a RunConfig's: `study run --executor`, a spec's `slurm.cluster` (or `--cluster`)
    "study.executor": (("local", "slurm", "simulated"), "executor"), "slurm.cluster": (("slurm", "local"), "cluster"),
}


def check_number(key: str, value, rng: Range, integer: bool = False) -> None:
    """Raise `KEY: must be <range>, got <value>` unless value lies in rng (and is finite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not rng.holds(value):
        raise ConfigError(f"{key}: must be {rng.describe(integer)}, got {shown(value)}")


def validate_config(cfg: Any, prefix: str = "", section: str = "") -> Any:
    """Check every ranged key and named choice of a config (or one section of it, e.g. a
    ModelConfig as `section="model"`); keys in messages carry `prefix` (`base.`, `sizes.L4d16.`).
    Returns cfg. Called before anything is written, on every path that builds a config."""
    types_ = _field_types(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{section}.{f.name}" if section else f.name
        if dataclasses.is_dataclass(value):
            validate_config(value, f"{prefix}{f.name}.", key)
        elif value is None:
            continue
        elif key in RANGES:
            check_number(prefix + f.name, value, RANGES[key], integer=int in typing.get_args(types_[f.name])
                         or types_[f.name] is int)
        elif key in CHOICES:
            check_choice(prefix + f.name, value, *CHOICES[key])
    return cfg


def check_run_length(cfg: RunConfig, budget_key: str = "train.tokens") -> None:
    """A Transformer run's length against its batch and its warm-up (keys of one run, checked
    together once its length is known: `loop.train`, and study planning with `budget_key` the
    spec's budget). Shorter than one batch would train one batch anyway; a warm-up as long as
    the run would never reach the learning rate asked for."""
    t = cfg.train
    if cfg.model.kind != "gpt":
        return
    if t.tokens < t.batch_tokens:
        raise ConfigError(f"{budget_key}: gives {t.tokens:,} training tokens, less than one batch "
                          f"(train.batch_tokens={t.batch_tokens:,}); raise it or use a smaller batch")
    if t.warmup_tokens >= t.tokens:
        raise ConfigError(f"train.warmup_tokens: {t.warmup_tokens:,} is not less than the run's {t.tokens:,} training "
                          f"tokens ({budget_key}): the run would never leave its warm-up")
