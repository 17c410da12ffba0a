"""The typed study spec: `Spec`, what `spec.normalise_spec` returns and every part of a study reads.

Its attributes are the spec's keys (`spec.SPEC_KEYS`), in the order spec.yaml holds them;
`to_dict` gives that mapping back (what spec.yaml holds and what a resumed study is compared
with), and `from_dict` reads a stored spec.yaml as it was written, without validating it again
(the report reads study folders without resolving a method). The sections that hold RunConfig
keys (base, sizes, variants, per_method) or per-method sweeps (lrs) stay nested mappings.
Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from ..config import ConfigError

OPTIONAL = ("seed_sizes", "slurm")  # in spec.yaml only when given: older folders compare equal
REQUIRED = ("name", "methods", "sizes", "lrs", "seeds", "base")  # every spec.yaml ever written holds these


@dataclass(frozen=True)
class Spec:
    """A normalised study spec (see `beyondbp.study.spec` for what each key means)."""
    name: str
    description: str
    track: str  # transformer or mlp (`beyondbp.study.tracks`)
    methods: list[str]  # method names or variant labels
    variants: dict[str, dict]  # label -> nested RunConfig keys with method.name
    sizes: dict[str, dict]  # size name -> model keys ({size: NAME} for a named size)
    tokens: list[int] | None  # training tokens per run, one run per budget; or
    tokens_per_param: list[float] | None  # tokens = ratio x non-embedding parameters
    budgets: str  # independent or branched
    lrs: dict[str, dict[str, list[float]]]  # method -> size -> learning rates
    seeds: list[int]
    per_method: dict[str, dict]  # method -> nested RunConfig keys
    base: dict  # nested RunConfig keys shared by every run (no method, no seed)
    frontier_points: str  # final or all
    seed_sizes: dict | None = None  # {seeds, sizes, rates}: extra seeds at some sizes
    slurm: dict | None = None  # the canonical slurm: section (`slurm_settings.normalise_slurm`)

    def to_dict(self) -> dict:
        """The spec as spec.yaml holds it: every key in order, the optional ones only when given."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in OPTIONAL or getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, mapping: dict, where: str = "spec.yaml") -> Spec:
        """A stored spec (spec.yaml as an executor wrote it) as it is; the keys folders written
        before them lack take the values they had then."""
        if not isinstance(mapping, dict):
            raise ConfigError(f"{where}: expected a mapping at top level")
        names = [f.name for f in fields(cls)]
        unknown = [k for k in mapping if k not in names]
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} (valid spec keys: {', '.join(names)})")
        missing = [k for k in REQUIRED if k not in mapping]
        if missing:
            raise ConfigError(f"{where}: no {missing[0]!r} (not a spec an executor wrote)")
        defaults = {"description": "", "track": "transformer", "variants": {}, "tokens": None,
                    "tokens_per_param": None, "budgets": "independent", "per_method": {},
                    "frontier_points": "final"}
        given = {k: v for k, v in mapping.items() if not (k in ("variants", "per_method") and v is None)}
        return cls(**{**defaults, **given})
