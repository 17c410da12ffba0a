"""A method's declared settings (`method.KEY=VALUE`) and the built-in methods' settings, torch-free.

A method class lists its settings as `settings = (Setting(...), ...)`: name, type, default,
one line of help, and optionally a range (`config.Range`) or choices. `lookup.resolve_method`
checks a run's `method.*` values against them with the same one-line errors every other key
gets (`config.check_number`, `config.check_choice`) and fills in the defaults. The built-in
methods' settings are named here so that the torch-free catalogue can read them and so that the
methods sharing one (DFA's feedback, scale, projection) share its one definition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import AT_LEAST_1, POSITIVE, ConfigError, Range, check_choice, check_number, coerce

RESERVED = ("name", "origin", "version")  # MethodConfig's own fields, never a setting's name
TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class Setting:
    """One `method.NAME` setting: its type (bool, int, float or str), default and one line of help;
    `range` bounds a number, `choices` lists a string's valid values."""
    name: str
    type: type
    default: Any
    help: str
    range: Range | None = None
    choices: tuple[str, ...] | None = None

    def __post_init__(self):
        if not self.name.isidentifier() or self.name in RESERVED:
            raise TypeError(f"Setting {self.name!r}: a setting's name must be an identifier other than "
                            f"{', '.join(RESERVED)}")
        if self.type not in TYPES:
            raise TypeError(f"Setting {self.name!r}: type must be one of bool, int, float, str")
        self.check(self.default, f"Setting {self.name!r} default")

    def check(self, value: Any, key: str) -> Any:
        """value (from YAML or a command line) as this setting's type, or one ConfigError naming key."""
        value = coerce(value, self.type, key)
        if self.range is not None:
            check_number(key, value, self.range, integer=self.type is int)
        if self.choices is not None:
            check_choice(key, value, self.choices)
        return value

    def describe(self) -> str:
        """`name = default  help [range or choices]`, for `beyondbp methods --settings`."""
        allowed = (f" ({self.range.describe(self.type is int)})" if self.range is not None else
                   f" ({' | '.join(self.choices)})" if self.choices else "")
        return f"{self.name} = {self.default}: {self.help}{allowed}"


def check_settings(settings, owner: str) -> tuple[Setting, ...]:
    """A class's `settings` attribute as a tuple of distinct Settings, or a TypeError naming owner."""
    settings = tuple(settings)
    bad = [s for s in settings if not isinstance(s, Setting)]
    if bad:
        raise TypeError(f"{owner}: settings must be Setting(...) objects, got {bad[0]!r}")
    names = [s.name for s in settings]
    if len(set(names)) != len(names):
        raise TypeError(f"{owner}: a setting is declared twice: {names}")
    return settings


def unknown_setting(key: str, method: str, settings: tuple[Setting, ...]) -> ConfigError:
    valid = ", ".join(s.name for s in settings) or "none"
    return ConfigError(f"{key}: unknown setting of method {method!r} (its settings: {valid})")


# --- the built-in methods' settings ---------------------------------------------------------------
FEEDBACK = Setting("feedback", str, "shared", "one random feedback matrix B for every layer, or one per layer",
                   choices=("shared", "per_layer"))
PROJECTION = Setting("projection", str, "gaussian", "the entries of B: Gaussian, uniform, or an optical "
                     "co-processor's (ternarised input, complex Gaussian, intensity)",
                     choices=("gaussian", "uniform", "optical"))
FEEDBACK_SCALE = Setting("feedback_scale", float, 1.0, "scale of the random feedback matrices", range=POSITIVE)
PREPROJECTOR_ERROR = Setting("preprojector_error", bool, True, "the error is the gradient before the final "
                             "projector (d_model wide), not at the logits")
BLOCKWISE = Setting("blockwise", bool, True, "B e enters at each block's output and is backpropagated "
                    "within the block; the last block trains with BP")
ASYMMETRIC_RESIDUALS = Setting("asymmetric_residuals", bool, True, "residual paths used in the forward, "
                               "ignored in the backward")
ASYMMETRIC_NONLINEARITY = Setting("asymmetric_nonlinearity", bool, True, "ReLU in the forward, the "
                                  "derivative of tanh in the backward")
FEEDBACK_POINT = Setting("feedback_point", str, "layernorm", "B e enters at the block output (output) or "
                         "through a LayerNorm of it", choices=("layernorm", "output"))
ERROR_POINT = Setting("error_point", str, "stream", "pre-projector error at the last block's output (stream) "
                      "or after ln_f (projector)", choices=("stream", "projector"))
EMBEDDING_FEEDBACK = Setting("embedding_feedback", bool, True, "the embedding output receives B e (else it "
                             "learns through block 0)")
TRAIN_LAST_N = Setting("train_last_n", int, 1, "number of topmost blocks trained", range=AT_LEAST_1)
PERTURBATIONS = Setting("perturbations", int, 8, "random weight directions (one jvp each) per step",
                        range=AT_LEAST_1)
SG_CONDITIONAL = Setting("sg_conditional", bool, True, "the gradient predictors also see each position's "
                         "target (cDNI)")
SG_SCALE_AWARE = Setting("sg_scale_aware", bool, True, "a predictor outputs sigma(out) x the gradient and is "
                         "divided by the block output's deviation")
# the step API's built-ins (added after settings were declared: not among the legacy records below)
FEEDBACK_DECAY = Setting("feedback_decay", float, 1.0, "weight decay of the feedback matrices relative to "
                         "train.weight_decay (1: Kolen-Pollack's rule, B decays as W does)", range=Range(0.0))
TARGET_POINT = Setting("target_point", str, "layernorm", "the target's projection enters at the block output "
                       "(output) or through a LayerNorm of it", choices=("layernorm", "output"))
EPSILON = Setting("epsilon", float, 1e-3, "size of the seeded perturbation of every weight", range=POSITIVE)
ZO_PERTURBATIONS = Setting("perturbations", int, 1, "seeded random directions per step (two forwards each)",
                           range=AT_LEAST_1)

BUILT_IN = (FEEDBACK, PROJECTION, FEEDBACK_SCALE, PREPROJECTOR_ERROR, BLOCKWISE, ASYMMETRIC_RESIDUALS,
            ASYMMETRIC_NONLINEARITY, FEEDBACK_POINT, ERROR_POINT, EMBEDDING_FEEDBACK, TRAIN_LAST_N,
            PERTURBATIONS, SG_CONDITIONAL, SG_SCALE_AWARE)
# Before methods declared their settings, every run's config.yaml held all of these under method:
# a key a method does not read, at this default, is such a record and is dropped, not refused.
LEGACY_DEFAULTS = {s.name: s.default for s in BUILT_IN}
NAMESPACE = {"Setting": Setting, "Range": Range, "POSITIVE": POSITIVE, "AT_LEAST_1": AT_LEAST_1,
             "bool": bool, "int": int, "float": float, "str": str,
             **{name: value for name, value in globals().items() if isinstance(value, Setting)}}
