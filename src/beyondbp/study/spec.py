"""A study's spec: load it from a file or preset, apply dotted overrides, validate, normalise.

Spec keys (every one overridable as dotted KEY=VALUE):
  name, description    labels for the report
  track                transformer (default) or mlp: the fully-connected track (`beyondbp mlp`),
                       sizes then set mlp.depth/width/activation, the budget is
                       base.mlp.epochs (no tokens key), a run's length its examples
  methods              training methods or variant labels, e.g. [bp, dfa_block, shallow]
  variants             labelled configurations of a method, usable in `methods`:
                       {dfa_block_literal: {method: dfa_block, method.feedback_point: output}};
                       a variant's runs, fits and verdicts go by its label
  sizes                named sizes (beyondbp.model.shape.NAMED_SIZES) or mappings of model keys,
                       as a list ([cpu-20k, {name: tiny, n_layer: 2, d_model: 16, n_head: 2}])
                       or a mapping name -> named size / model keys
  tokens               training tokens per run (fixed, as in the paper), or
  tokens_per_param     tokens = ratio x non-embedding parameters (Kaplan's N); transformer only.
                       Either may be a list: every size is then trained once per budget
  budgets              independent (default): every budget is its own run, with the base schedule;
                       branched: per method, size, learning rate and seed one trunk at constant
                       learning rate, and a cooldown branched from it at each budget (train.cooldown_frac
                       of the budget; `beyondbp.study.chain`): several budgets for the price of about one
  lrs                  learning rates swept per method: a list for every size ({bp: [1e-3, 3e-3]})
                       or one list per size ({bp: {L4d32: [1e-2], L4d64: [6e-3]}}); the best per
                       size and budget is kept for the frontier. A method without an entry uses
                       base.train.lr
  seeds                list of seeds
  seed_sizes           extra seeds at some sizes, to measure seed noise where it is cheap:
                       {seeds: [1, 2], sizes: [L4d10, L4d12], rates: all | middle}: every method
                       trains these seeds too at the listed sizes, at all its rates of that size
                       (default) or only at the middle one of its sorted sweep (the lower middle
                       of an even count; `grid.run_seeds`)
  per_method           RunConfig keys for one method only ({dfa: {train.alignment_every_evals: 4}})
  base                 RunConfig keys shared by every run (data, model.context, train schedule,
                       evaluation schedule: train.n_evals, train.eval_tokens)
  frontier_points      final (default): each run's last evaluation, the only point of a decayed
                       schedule that is near-optimal for its length; all: every evaluation from
                       half of each run's tokens on (the paper's envelope of learning curves)
  slurm                how `--executor slurm` submits runs (beyondbp.study.slurm): partition, account,
                       gpus_per_run, nodes, cpus_per_task, mem_gb, timeout_min, setup, extra,
                       cluster (slurm | local), prepare_data; may change between invocations
"""
from __future__ import annotations

import copy
from pathlib import Path

from ..config import (POSITIVE, RANGES, ConfigError, ModelConfig, RunConfig, apply_mapping, check_choice,
                     check_number, coerce, load_yaml, parse_overrides, to_dict, validate_config)
from ..config import OLD_KEYS, MethodConfig
from ..config_mlp import current_names
from ..methods.lookup import describe, known_names, resolve_method, training_defaults
from ..model.shape import NAMED_SIZES
from .names import check_label, check_study_name
from .presets import load_preset
from .slurm_settings import normalise_slurm
from .spec_types import Spec
from .tracks import Track, get_track

SPEC_KEYS = ("name", "description", "track", "methods", "variants", "sizes", "tokens", "tokens_per_param", "budgets", "lrs",
             "seeds", "seed_sizes", "per_method", "base", "frontier_points", "slurm")
FRONTIER_POINTS = ("final", "all")
BUDGET_MODES = ("independent", "branched")
SEED_RATES = ("all", "middle")


def set_dotted(spec: dict, key: str, value) -> None:
    """spec['a']['b'] = value for key 'a.b'; top-level keys must be spec keys."""
    parts = key.split(".")
    if parts[0] not in SPEC_KEYS:
        raise ConfigError(f"unknown key {key!r} (valid spec keys: {', '.join(SPEC_KEYS)})")
    node = spec
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {'.'.join(parts[:i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value
    # the token budget is one of two forms: setting one drops the other
    if key == "tokens" and value is not None:
        spec["tokens_per_param"] = None
    if key == "tokens_per_param" and value is not None:
        spec["tokens"] = None


def load_spec(spec_file: str | Path | None = None, preset: str | None = None,
              overrides: list[str] | dict | None = None) -> Spec:
    """The normalised spec from a file or preset plus dotted overrides; raises ConfigError."""
    if (spec_file is None) == (preset is None):
        raise ConfigError("study: give exactly one of SPEC (a YAML file) or --preset NAME")
    raw = load_preset(preset) if preset is not None else load_yaml(spec_file)
    raw = copy.deepcopy(raw)
    mapping = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides or []))
    for key, value in mapping.items():
        set_dotted(raw, key, value)
    return normalise_spec(raw)


def expand_dotted(mapping: dict, where: str, base: RunConfig | None = None) -> dict:
    """{'train.lr': 1} -> {'train': {'lr': 1}} (nested), validated against RunConfig."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping of RunConfig keys, got {mapping!r}")
    mapping = {("method.name" if k == "method" and not isinstance(v, dict) else str(k)): v
               for k, v in _current_names(mapping).items()}
    # raises on unknown keys and on bad values, out-of-range numbers included
    validate_config(apply_mapping(base or RunConfig(), mapping, prefix=f"{where}."), prefix=f"{where}.")
    nested: dict = {}
    for key, value in mapping.items():
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return nested


def _current_names(mapping: dict) -> dict:
    """`mapping` with the old names of train keys (`config.OLD_KEYS`), dotted or nested, renamed, so
    an old folder's spec.yaml compares equal to the same spec written today (the MLP track's keys
    under `mlp`: `config_mlp.current_names`)."""
    out = {}
    for key, value in current_names(mapping).items():
        head, dot, rest = str(key).partition(".")
        if head == "train" and dot:
            key = f"train.{OLD_KEYS.get(rest, rest)}"
        elif head == "train" and isinstance(value, dict):
            value = {OLD_KEYS.get(str(k), k): v for k, v in value.items()}
        out[key] = value
    return out


def _size_entries(sizes, track: Track) -> list[tuple[str, object]]:
    if isinstance(sizes, dict):
        return [(str(k), v) for k, v in sizes.items()]
    if not isinstance(sizes, list):
        raise ConfigError(f"sizes: expected a list or mapping of model sizes, got {sizes!r}")
    items = []
    for entry in sizes:
        if isinstance(entry, str):
            items.append((entry, entry))
        elif isinstance(entry, dict):
            entry = dict(entry)
            name = entry.pop("name", None) or track.size_name(entry)
            items.append((str(name), entry))
        else:
            raise ConfigError(f"sizes: expected a named size or a mapping of model keys, got {entry!r}")
    return items


def _normalise_sizes(sizes, track: Track) -> dict[str, dict]:
    items = _size_entries(sizes, track)
    if not items:
        raise ConfigError("sizes: must list at least one model size")
    out: dict[str, dict] = {}
    for name, value in items:
        check_label("sizes", name)
        if name in out:
            raise ConfigError(f"sizes: size {name!r} is listed twice")
        if "_" in name or "/" in name:
            raise ConfigError(f"sizes: size name {name!r} must not contain '_' or '/' (it names run folders)")
        if isinstance(value, str):
            if not track.named_sizes:
                raise ConfigError(f"sizes.{name}: an MLP size is a mapping of model keys "
                                  f"(depth, width, activation), got {value!r}")
            if value not in NAMED_SIZES:
                raise ConfigError(f"sizes: unknown size {value!r} (valid: {', '.join(NAMED_SIZES)})")
            value = {"size": value}
        if not isinstance(value, dict) or not value:
            raise ConfigError(f"sizes.{name}: expected a named size or a mapping of model keys, got {value!r}")
        blank = type(getattr(RunConfig(), track.size_section))()  # a ModelConfig, or the MLP track's MLPConfig
        validate_config(apply_mapping(blank, value, prefix=f"sizes.{name}."), f"sizes.{name}.", track.size_section)
        out[name] = dict(value)
    return out


def _positive(value, typ, key: str):
    if value is None:
        return None
    value = coerce(value, typ, key)
    check_number(key, value, RANGES["train.tokens"] if typ is int else POSITIVE, integer=typ is int)
    return value


def _positive_list(value, typ, key: str, what: str) -> list | None:
    """None, or a non-empty list of distinct positive numbers (a scalar is a list of one)."""
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"{key}: must list at least one {what}")
    out = [_positive(v, typ, key) for v in values]
    if len(set(out)) != len(out):
        raise ConfigError(f"{key}: {what}s are listed twice: {out}")
    return out


def _method_of(label: str, variants: dict) -> str:
    return variants[label]["method"]["name"] if label in variants else label


def _normalise_methods(raw: dict, track: Track, variants: dict) -> list[str]:
    methods = raw.get("methods")
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, list) or not methods:
        raise ConfigError("methods: must list at least one training method")
    for label in methods:
        check_label("methods", label, method=True)
        method = _method_of(label, variants)
        if method not in known_names() and ":" not in str(method):
            raise ConfigError(f"methods: unknown method {label!r} (valid: {', '.join([*known_names(), *variants])}, "
                              f"or package.module:Class)")
        if track.kind not in describe(method, f"methods: {label}").supports:
            fit = [n for n in known_names() if track.kind in describe(n).supports]
            raise ConfigError(f"methods: {label!r} cannot train the {track.name} track (methods for it: {', '.join(fit)})")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"methods: a method is listed twice: {methods}")
    return [str(m) for m in methods]


def _check_method_settings(nested: dict, name: str, where: str) -> None:
    """The method.* keys of a variant or per_method entry, checked against what `name` declares."""
    settings = {k: v for k, v in (nested.get("method") or {}).items() if k not in MethodConfig.FIELDS}
    resolve_method(MethodConfig(name, **settings), f"{where}.")


def _normalise_variants(raw) -> dict[str, dict]:
    """{label: nested RunConfig keys with method.name}; labels are not method names."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"variants: expected a mapping label -> RunConfig keys, got {raw!r}")
    out = {}
    for label, mapping in raw.items():
        label = check_label("variants", label)
        if label in known_names():
            raise ConfigError(f"variants.{label}: a variant label must not be a method's name")
        nested = expand_dotted(mapping or {}, f"variants.{label}")
        if not isinstance(nested.get("method"), dict) or "name" not in nested["method"]:
            raise ConfigError(f"variants.{label}: name the method it configures (method: NAME)")
        _check_method_settings(nested, nested["method"]["name"], f"variants.{label}")  # its name, then its settings
        out[label] = nested
    return out


def _labelled_mapping(raw, key: str, labels: list[str], what: str) -> dict:
    """A spec section keyed by method or variant label (lrs, per_method), or one ConfigError naming
    the bad key."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a mapping method -> {what}, got {raw!r}")
    for m in raw:
        if m not in labels:
            raise ConfigError(f"{key}.{m}: unknown method {m!r} (valid: {', '.join(labels)})")
    return raw


def _normalise_lrs(raw, methods: list[str], labels: list[str], sizes: list[str],
                   default: dict[str, float]) -> dict[str, dict[str, list[float]]]:
    """{method: {size: [lr, ...]}} from a list per method or a list per method and size.
    Entries for methods or sizes the study leaves out (a preset narrowed by overrides) are ignored."""
    raw = _labelled_mapping(raw, "lrs", labels, "learning rates")
    out = {}
    for m in methods:
        entry = raw.get(m, default[m])
        if isinstance(entry, dict):
            missing = [s for s in sizes if s not in entry]
            if missing:
                raise ConfigError(f"lrs.{m}.{missing[0]}: no learning rates for size {missing[0]!r}")
            out[m] = {s: _positive_list(entry[s], float, f"lrs.{m}.{s}", "learning rate") for s in sizes}
        else:
            lrs = _positive_list(entry, float, f"lrs.{m}", "learning rate")
            out[m] = {s: list(lrs) for s in sizes}
    return out


def _normalise_budget(raw: dict, track: Track) -> tuple[list[int] | None, list[float] | None]:
    tokens = _positive_list(raw.get("tokens"), int, "tokens", "budget")
    ratio = _positive_list(raw.get("tokens_per_param"), float, "tokens_per_param", "budget")
    if not track.budget_keys:
        if tokens is not None or ratio is not None:
            raise ConfigError(f"{'tokens' if tokens is not None else 'tokens_per_param'}: the {track.name} track's "
                              f"budget is base.mlp.epochs; leave tokens out")
    elif (tokens is None) == (ratio is None):
        raise ConfigError("tokens: give exactly one of tokens (per run) or tokens_per_param")
    return tokens, ratio


def _normalise_seeds(raw, key: str = "seeds") -> list[int]:
    seeds = raw if isinstance(raw, list) else [raw]
    if not seeds:
        raise ConfigError(f"{key}: must list at least one seed")
    seeds = [coerce(s, int, key) for s in seeds]
    for seed in seeds:
        check_number(key, seed, RANGES["seed"], integer=True)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{key}: a seed is listed twice: {seeds}")
    return seeds


def _normalise_seed_sizes(raw, seeds: list[int], sizes: list[str]) -> dict:
    """{seeds, sizes, rates}: extra seeds, none of them in `seeds`, at some of the study's sizes."""
    if not isinstance(raw, dict):
        raise ConfigError(f"seed_sizes: expected a mapping with seeds, sizes (and rates), got {raw!r}")
    unknown = [k for k in raw if k not in ("seeds", "sizes", "rates")]
    if unknown:
        raise ConfigError(f"seed_sizes.{unknown[0]}: unknown key (valid: seeds, sizes, rates)")
    extra = _normalise_seeds(raw.get("seeds", []), "seed_sizes.seeds")
    again = [s for s in extra if s in seeds]
    if again:
        raise ConfigError(f"seed_sizes.seeds: seed {again[0]} is in seeds already (every size trains it)")
    named = raw.get("sizes")
    named = [named] if isinstance(named, str) else named
    if not isinstance(named, list) or not named:
        raise ConfigError(f"seed_sizes.sizes: must list at least one of the study's sizes, got {named!r}")
    for size in named:
        if str(size) not in sizes:
            raise ConfigError(f"seed_sizes.sizes: size {size!r} is not one of the study's sizes ({', '.join(sizes)})")
    if len(set(named)) != len(named):
        raise ConfigError(f"seed_sizes.sizes: a size is listed twice: {named}")
    rates = str(raw.get("rates") or "all")
    check_choice("seed_sizes.rates", rates, SEED_RATES)
    return {"seeds": extra, "sizes": [str(s) for s in named], "rates": rates}


def _given(mapping, dotted: str) -> bool:
    """Whether a nested or dotted mapping of RunConfig keys sets `dotted` (train.lr)."""
    if not isinstance(mapping, dict):
        return False
    if dotted in mapping:
        return True
    head, _, rest = dotted.partition(".")
    return bool(rest) and _given(mapping.get(head), rest)


def _normalise_per_method(raw, methods: list[str], labels: list[str], track: Track, variants: dict,
                          raw_base) -> dict:
    """per_method, with each method's training defaults (`train_defaults`, Transformer track) for the
    keys that neither base, its variant nor its per_method entry set (train.lr goes by `lrs`)."""
    raw = _labelled_mapping(raw, "per_method", labels, "RunConfig keys")
    out = {}
    for m in methods:  # a preset configures methods a user may leave out with methods=[...]
        given = expand_dotted(raw.get(m) or {}, f"per_method.{m}", track.base_config())
        _check_method_settings(given, _method_of(m, variants), f"per_method.{m}")
        defaults = {k: v for k, v in _track_defaults(m, variants, track).items() if k != "train.lr"
                    and not any(_given(where, k) for where in (raw_base, variants.get(m), given))}
        nested = expand_dotted({**defaults}, f"per_method.{m} (its train_defaults)", track.base_config())
        for section, values in given.items():
            nested[section] = {**nested.get(section, {}), **values} if isinstance(values, dict) else values
        if nested:
            out[m] = nested
    return out


def _track_defaults(label: str, variants: dict, track: Track) -> dict:
    """A method's training defaults; they are tuned on the Transformer track and apply there only."""
    return training_defaults(_method_of(label, variants)) if track.budget_keys else {}


def _default_lrs(methods: list[str], variants: dict, track: Track, raw_base, shared: float) -> dict[str, float]:
    """Each method's learning rate where `lrs` names none: its train_defaults' train.lr unless base
    sets train.lr, else the shared one."""
    out = {}
    for m in methods:
        own = _track_defaults(m, variants, track).get("train.lr")
        out[m] = own if own is not None and not _given(raw_base, "train.lr") else shared
    return out


def normalise_spec(raw: dict) -> Spec:
    """Validate every field and return the spec in one canonical form (`to_dict`: what spec.yaml holds)."""
    if not isinstance(raw, dict):
        raise ConfigError("spec: expected a mapping at top level")
    unknown = [k for k in raw if k not in SPEC_KEYS]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} (valid spec keys: {', '.join(SPEC_KEYS)})")
    track = get_track(raw.get("track"))
    variants = _normalise_variants(raw.get("variants"))
    methods = _normalise_methods(raw, track, variants)
    tokens, ratio = _normalise_budget(raw, track)
    sizes = _normalise_sizes(raw.get("sizes"), track)
    base_cfg = validate_config(apply_mapping(track.base_config(), raw.get("base") or {}, prefix="base."), "base.")
    base = to_dict(base_cfg)
    base.pop("method")  # a run's method comes from `methods`, its seed from `seeds`
    base.pop("seed")
    labels = [*known_names(), *methods, *variants]
    frontier_points = str(raw.get("frontier_points") or "final")
    check_choice("frontier_points", frontier_points, FRONTIER_POINTS)
    budgets = str(raw.get("budgets") or "independent")
    check_choice("budgets", budgets, BUDGET_MODES, "mode")
    if budgets == "branched" and not track.budget_keys:
        raise ConfigError(f"budgets: the {track.name} track cannot branch budgets (its budget is base.mlp.epochs)")
    spec = {
        "name": check_study_name(raw.get("name") or "study"),
        "description": str(raw.get("description") or ""),
        "track": track.name,
        "methods": methods,
        "variants": {label: v for label, v in variants.items() if label in methods},
        "sizes": sizes,
        "tokens": tokens,
        "tokens_per_param": ratio,
        "budgets": budgets,
        "lrs": _normalise_lrs(raw.get("lrs"), methods, labels, list(sizes),
                              _default_lrs(methods, variants, track, raw.get("base"), base_cfg.train.lr)),
        "seeds": _normalise_seeds(raw.get("seeds", [0])),
        "per_method": _normalise_per_method(raw.get("per_method"), methods, labels, track, variants, raw.get("base")),
        "base": base,
        "frontier_points": frontier_points,
    }
    if raw.get("seed_sizes") is not None:  # only when given: study folders written before it compare equal
        spec["seed_sizes"] = _normalise_seed_sizes(raw["seed_sizes"], spec["seeds"], list(sizes))
    if raw.get("slurm") is not None:  # execution settings; validated here, used by beyondbp.study.slurm
        spec["slurm"] = normalise_slurm(raw["slurm"])
    return Spec(**spec)
