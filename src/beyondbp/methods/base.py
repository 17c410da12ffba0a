"""The small interface every training method implements.

A method decides how gradients are made; the loop, optimizer and data are shared. A method
is an `nn.Module` that wraps the model, so that parallel wrappers (DDP) and checkpoints treat
its fixed feedback matrices (registered buffers) like any other state: `forward(idx, targets)`
returns `(loss, objective)`, and one `objective.backward()` leaves the method's update in every
trainable parameter's `.grad`. `loss` is the true cross-entropy, for logging.

Beyond that simple case a method may use the step API (`docs/method_api.md`): hooks after the
backward (`after_backward`) and after the optimizer step (`after_optimizer_step`), each given the
step's number and learning rate (`StepInfo`); optimizer groups of its own with their own settings
(`parameter_groups`); a step without any backward (`uses_backward = False` and
`update_without_backward`), for methods that compute their updates themselves; and named scalars
(`log`) that reach metrics.jsonl and the tracker.

A subclass states `name`, `summary`, `supports` and `settings` (its `method.*` settings,
`settings.Setting`) and may state `train_defaults` (its defaults for training keys, applied
below a config's and the command line's values). A built-in one states them as literal class
attributes: the torch-free catalogue (`catalogue`) reads them from the source.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Iterator

import torch
import torch.nn as nn

from ..config import MethodConfig
from .settings import Setting


@dataclass(frozen=True)
class StepInfo:
    """Where a hook or a no-backward update is called: `step` is the optimizer step (0 for the
    first; the global batch it trains on), `lr` its learning rate from the schedule; `micro_batch`
    of `accum` micro-batches this step is split into (the update of each is averaged)."""
    step: int
    lr: float
    micro_batch: int = 0
    accum: int = 1


HOOKS = ("after_backward", "after_optimizer_step", "parameter_groups", "update_without_backward")


class TrainingMethod(nn.Module):
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for `beyondbp methods`
    supports: ClassVar[tuple[str, ...]] = ("gpt",)  # model kinds this method can train
    settings: ClassVar[tuple[Setting, ...]] = ()  # its method.* settings, read as cfg.<name>
    train_defaults: ClassVar[dict[str, Any]] = {}  # dotted training keys -> this method's default
    uses_backward: ClassVar[bool] = True  # False: `update_without_backward` makes each update, no backward

    def __init__(self, model: nn.Module, cfg: MethodConfig, seed: int = 0):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.seed = seed
        self._logged: dict[str, list] = {}  # name -> [sum, count] since the trainer last took them

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not define forward(idx, targets) -> "
                                  f"(loss, objective)")

    # --- the step API: each a no-op here, so the simple case is unchanged --------------------------
    def update_without_backward(self, idx: torch.Tensor, targets: torch.Tensor, step: StepInfo
                                ) -> tuple[torch.Tensor, Iterable[tuple[nn.Parameter, torch.Tensor]]]:
        """A method with `uses_backward = False`: (the loss on this micro-batch, its update as
        (parameter, update) pairs, which may be produced lazily). Runs under `torch.no_grad()` and
        the run's autocast; the trainer adds each update to `.grad` (averaged over micro-batches and
        DDP ranks), then clips and steps the optimizer as for every other method."""
        raise NotImplementedError(f"{type(self).__name__} sets uses_backward = False but does not define "
                                  f"update_without_backward(idx, targets, step)")

    def after_backward(self, step: StepInfo) -> None:
        """Called once per step when the update is complete in `.grad` (averaged over micro-batches
        and DDP ranks, clipped), before the optimizer step: change it, add to it, log it."""

    def after_optimizer_step(self, step: StepInfo) -> None:
        """Called once per step after the optimizer step (and after `.grad` was cleared)."""

    def parameter_groups(self) -> list[dict]:
        """Optimizer groups of the method's own parameters, each {"params": [...], plus any of
        "weight_decay" (else train.weight_decay times "weight_decay_scale", default 1), "betas",
        "eps", "lr_scale" (times the schedule's rate)}. Their parameters
        must not be among `trainable_parameters()`: they are left out of clipping and of DDP's
        gradient reduction, and updated from the `.grad` the method's hooks give them."""
        return []

    def log(self, name: str, value) -> None:
        """Record a named scalar for this step: metrics.jsonl and the tracker get its mean over
        the steps since the last evaluation, under `method/NAME`."""
        if not name.isidentifier():
            raise ValueError(f"log: metric name {name!r} must be an identifier")
        value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
        total = self._logged.setdefault(name, [0.0, 0])
        total[0] = total[0] + value
        total[1] += 1

    @contextlib.contextmanager
    def unlogged(self):
        """What is logged inside the block is dropped (a measurement outside training)."""
        kept = self.take_logged()
        try:
            yield
        finally:
            self._logged = kept

    def take_logged(self) -> dict[str, list]:
        """{name: [sum, count]} logged since the last call, and forget them (the trainer's)."""
        logged, self._logged = self._logged, {}
        return logged

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The model's trainable parameters, then the method's own (auxiliary heads, predictors)."""
        return (p for p in self.parameters() if p.requires_grad)

    def compute_per_token(self) -> dict[str, float]:
        """Training FLOPs per token under each accounting: 'paper', 'optimistic' and 'exact'."""
        raise NotImplementedError(missing_compute(type(self)))

    def block_names(self) -> list[str]:
        """Names of the units alignment is reported for, matching `block_parameters`."""
        return [f"block{i}" for i in range(len(self.model.blocks))]

    def block_parameters(self) -> list[list[nn.Parameter]]:
        return [list(b.parameters()) for b in self.model.blocks]

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the run seed, for fixed random feedback matrices."""
        return torch.Generator().manual_seed(10_007 * (self.seed + 1) + offset)


def missing_compute(cls: type) -> str:
    return (f"method {getattr(cls, 'name', '') or cls.__name__!r} ({cls.__module__}:{cls.__qualname__}) does not "
            f"define compute_per_token(); it must return its training FLOPs per token as "
            f"{{'paper': ..., 'optimistic': ..., 'exact': ...}} (docs/method_api.md)")


def overridden(method: type, name: str) -> bool:
    """Whether a method class defines `name` itself, not the base's."""
    return getattr(method, name, None) is not getattr(TrainingMethod, name)
