"""A conformance kit for training methods, like scikit-learn's `check_estimator`.

    from beyondbp.testing import check_method
    check_method(MyMethod, scale=0.5)          # raises MethodCheckError naming the broken property

or, in a pytest file, one test item per property:

    from beyondbp.testing import parametrize_with_checks

    @parametrize_with_checks([MyMethod, (MyMethod, {"scale": 0.5})])
    def test_my_method(check):
        check()

The properties (`PROPERTIES`, in the order they run) are what every method must satisfy to
train in this toolkit: its update lands in `.grad` after one `objective.backward()` (or its
no-backward update), its compute is declared under every accounting (its exact count matches a
measured one, its paper and optimistic counts are plausible against it), its alignment with BP
can be measured, every tensor it holds moves with the model, it survives bf16 autocast, its loss falls on a tiny model,
a killed and resumed run ends bit-identical, and two DDP processes equal one. A tiny GPT on the
built-in corpus keeps each check to seconds on a CPU.

May import: config, model, methods, data, train. Nothing imports it but user code and tests.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from ..config import ConfigError
from .ddp import ddp_matches_single
from .device import moves_with_device
from .errors import MethodCheckError, MethodCheckSkipped
from .properties import alignment_measurable, bf16_autocast, compute_declared, loss_falls, update_in_grad
from .resume import resume_bit_identical
from .subject import TINY_RUN, Subject

__all__ = ["PROPERTIES", "TINY_RUN", "MethodCheckError", "MethodCheckSkipped", "check_method", "method_checks",
           "parametrize_with_checks"]

PROPERTIES: dict[str, Callable[[Subject], dict]] = {
    "update_in_grad": update_in_grad,
    "compute_declared": compute_declared,
    "alignment_measurable": alignment_measurable,
    "moves_with_device": moves_with_device,
    "bf16_autocast": bf16_autocast,
    "loss_falls": loss_falls,
    "resume_bit_identical": resume_bit_identical,
    "ddp_matches_single": ddp_matches_single,
}


class BoundCheck:
    """One property of one method: call it to run the check (the pytest helper's parameter)."""

    def __init__(self, prop: str, subject: Subject):
        self.property, self.subject = prop, subject

    def __call__(self) -> dict:
        threads = torch.get_num_threads()
        # one thread: a tiny model gains nothing from more, and on a loaded machine OpenMP's
        # threads wait on each other (a 40-step run took 60 s with two threads, 5 s with one)
        torch.set_num_threads(1)
        try:
            return PROPERTIES[self.property](self.subject)
        except (MethodCheckError, MethodCheckSkipped, ConfigError):
            raise  # a ConfigError is a bad setting or run key: the user's to fix, not the method's
        except Exception as exc:  # a crash inside the method is the property broken, not a kit error
            first = (str(exc).strip().splitlines() or [""])[0]
            raise self.subject.fail(self.property, f"raised {type(exc).__name__}: {first}") from exc
        finally:
            torch.set_num_threads(threads)

    @property
    def id(self) -> str:
        return f"{self.subject.label}-{self.property}"


def method_checks(cls: type, *, checks: Iterable[str] | None = None, run_overrides: dict | None = None,
                  **settings) -> list[BoundCheck]:
    """The checks of `cls` with `settings` (its method.* keys), each callable on its own; they
    share one tiny reference run. `checks` picks properties by name; `run_overrides` changes
    the tiny run ({"train.lr": 3e-2})."""
    wanted = list(PROPERTIES) if checks is None else list(checks)
    unknown = [c for c in wanted if c not in PROPERTIES]
    if unknown:
        raise ValueError(f"checks: unknown propert{'y' if len(unknown) == 1 else 'ies'} "
                         f"{', '.join(map(repr, unknown))} (valid: {', '.join(PROPERTIES)})")
    subject = Subject(cls, settings, run_overrides)
    subject.fresh_config()  # a bad or unknown setting fails here, in one line, before any check runs
    return [BoundCheck(prop, subject) for prop in wanted]


def check_method(cls: type, *, checks: Iterable[str] | None = None, run_overrides: dict | None = None,
                 **settings) -> dict[str, dict]:
    """Run every property check on `cls` with `settings`; return {property: what it measured}
    ({"skipped": reason} for a check this platform cannot run). The first broken property
    raises MethodCheckError, whose `.property` names it and whose message gives the numbers."""
    report = {}
    for check in method_checks(cls, checks=checks, run_overrides=run_overrides, **settings):
        try:
            report[check.property] = check()
        except MethodCheckSkipped as skipped:
            report[check.property] = {"skipped": str(skipped)}
    return report


def parametrize_with_checks(methods: Iterable, checks: Iterable[str] | None = None):
    """A `pytest.mark.parametrize` over every property of every method, with the parameter
    `check` (call it; a skipped check calls pytest.skip). Each entry of `methods` is a class,
    (class, {setting: value}) or (class, {setting: value}, {run key: value}); ids read
    `NAME-PROPERTY`, so `pytest -k resume` picks one. Needs pytest (the `testing` extra)."""
    try:
        import pytest
    except ImportError:
        raise ImportError("parametrize_with_checks needs pytest: pip install 'beyondbp[testing]' "
                          "(check_method runs without it)") from None

    bound = []
    for entry in methods:
        cls, settings, run_overrides = (*entry, {}, {})[:3] if isinstance(entry, tuple) else (entry, {}, {})
        bound.extend(method_checks(cls, checks=checks, run_overrides=run_overrides, **settings))

    def skipping(check: BoundCheck) -> Callable[[], dict]:
        def run() -> dict:
            try:
                return check()
            except MethodCheckSkipped as skipped:
                pytest.skip(str(skipped))
        return run

    return pytest.mark.parametrize("check", [skipping(c) for c in bound], ids=[c.id for c in bound])
