"""The track registry: everything that differs between the kinds of study a spec's `track` names.

- `transformer` (default): GPT-like models on a token corpus; a budget is tokens per run (fixed,
  or per non-embedding parameter); one run is what `beyondbp train` trains.
- `mlp`: fully-connected classifiers on small image data sets; the budget is base.mlp.epochs, a
  run's length its training examples (mlp.examples), the loss is the test cross-entropy; one run is what
  `beyondbp mlp` trains.

The spec, the plan, the executors and the report ask a `Track` for what they need instead of
testing a track's name, so a new track is one more entry here. Reading the registry never loads
torch (spec validation, `study plan` and `study report` go through it). What trains a run of a
model kind is `beyondbp.train.start`'s; what prepares its data, `beyondbp.study.preamble`'s.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Callable

from ..config import TRACK_DEFAULTS, ConfigError, RunConfig, apply_mapping, check_choice, check_run_length
from ..data.images import image_data_shape
from ..data.tokenizers import planned_vocab_size
from ..model import shape
from ..runs.schedule import learning_rate, step_schedule

@dataclass(frozen=True)
class Track:
    name: str  # the spec's `track`
    kind: str  # the model.kind of its runs (methods declare the kinds they can train)
    unit: str  # what a budget counts
    loss_label: str  # what a run's val_loss is
    budget_keys: bool  # tokens / tokens_per_param set the budget (else base.mlp.epochs)
    named_sizes: bool  # sizes may name beyondbp.model.shape.NAMED_SIZES
    size_section: str  # the RunConfig section a size's keys set: model (a GPT's) or mlp
    paper_columns: bool  # the paper's Table 1 (about GPTs) is printed beside the fits
    memory_preflight: bool  # the local executor checks each run's memory before any starts
    base_config: Callable[[], RunConfig]  # the defaults a run starts from, before the spec's base
    # (config.TRACK_DEFAULTS of its kind over RunConfig's; `methods.run_builder` builds every run)
    size_name: Callable[[dict], str]  # the name of a size given as a mapping without `name`
    plan_run: Callable[[RunConfig, float | None, bool], tuple[int, float]]
    # plan_run(cfg, budget, per_param) fixes cfg's length; returns (N, exact BP training FLOPs)


# --- the Transformer track ----------------------------------------------------------------------

def track_defaults(kind: str) -> RunConfig:
    """RunConfig's defaults with those of the track that trains `kind` over them (config.TRACK_DEFAULTS,
    by model.kind). The MLP track's AdamW has a strong decoupled weight decay: it makes the forward
    weights forget their random initialisation; without it the first hidden layer of a 3-layer
    DFA/FA net stays ~70 degrees from BP on digits (layers 2-3 align either way) at the same test error."""
    return apply_mapping(RunConfig(), TRACK_DEFAULTS[kind])


def _transformer_size_name(entry: dict) -> str:
    return f"L{entry.get('n_layer', '?')}d{entry.get('d_model', '?')}"


def model_counts(cfg: RunConfig) -> tuple[int, int]:
    """(non-embedding parameters, exact forward FLOPs per token) of a GPT config, without building it."""
    model_cfg = shape.resolve_model_config(copy.deepcopy(cfg.model), planned_vocab_size(cfg))
    return shape.n_params(model_cfg)[1], shape.forward_flops(model_cfg)


def _plan_transformer_run(cfg: RunConfig, budget: float, per_param: bool) -> tuple[int, float]:
    """Set cfg.train.tokens from the budget (whole batches); (N, exact BP FLOPs) of the run."""
    n_params, forward_flops = model_counts(cfg)
    tokens = int(budget * n_params) if per_param else int(budget)
    batch = cfg.train.batch_tokens
    cfg.train.tokens = tokens // batch * batch if batch > 0 else tokens
    check_run_length(cfg, f"tokens_per_param: {budget:g} x {n_params:,} parameters" if per_param else "tokens")
    step_schedule(cfg)
    learning_rate(cfg, 0, 1)
    return n_params, 3.0 * forward_flops * cfg.train.tokens


# --- the MLP track --------------------------------------------------------------------------------

def _mlp_size_name(entry: dict) -> str:
    return f"D{entry.get('depth', 3)}w{entry.get('width', 256)}"


def _plan_mlp_run(cfg: RunConfig, budget: float | None = None, per_param: bool = False) -> tuple[int, float]:
    """Resolve the model's shape from the dataset and set cfg.mlp.examples to epochs x training
    examples (the budget is base.mlp.epochs); (N, exact BP FLOPs) of the run."""
    cfg.model.kind = "mlp"
    n_inputs, n_classes, n_train = image_data_shape(cfg.mlp.dataset, cfg.data)
    shape.resolve_mlp_config(cfg.mlp, n_inputs, n_classes)
    cfg.mlp.examples = cfg.mlp.epochs * n_train
    return shape.mlp_n_params(cfg.mlp), 3.0 * shape.mlp_forward_flops(cfg.mlp) * cfg.mlp.examples


TRACKS: dict[str, Track] = {
    "transformer": Track(
        name="transformer", kind="gpt", unit="tokens", loss_label="validation loss",
        budget_keys=True, named_sizes=True, size_section="model", paper_columns=True, memory_preflight=True,
        base_config=functools.partial(track_defaults, "gpt"), size_name=_transformer_size_name,
        plan_run=_plan_transformer_run),
    "mlp": Track(
        name="mlp", kind="mlp", unit="examples", loss_label="test loss",
        budget_keys=False, named_sizes=False, size_section="mlp", paper_columns=False, memory_preflight=False,
        base_config=functools.partial(track_defaults, "mlp"), size_name=_mlp_size_name, plan_run=_plan_mlp_run),
}
DEFAULT = "transformer"


def get_track(name: str | None) -> Track:
    name = str(name or DEFAULT)
    check_choice("track", name, tuple(TRACKS), "track")
    return TRACKS[name]


def track_of(cfg: RunConfig) -> Track:
    """The track whose runs train cfg's model kind."""
    for track in TRACKS.values():
        if track.kind == cfg.model.kind:
            return track
    raise ConfigError(f"model.kind: no track trains {cfg.model.kind!r}")
