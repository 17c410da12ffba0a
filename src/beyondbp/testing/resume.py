"""Property `resume_bit_identical`: a run killed mid-step and resumed ends bit-identical to the
uninterrupted run.

The kill is simulated in this process: a global forward pre-hook raises at the method's
forward of step KILL_AT + 1, after the loop checkpointed step KILL_AT (`train.checkpoint_every_s=0`
checkpoints every step), so the run stops where a SIGKILL during that step would leave it. The
resumed run is built from the folder alone, as after a real kill: a new method object, the
checkpoint's weights, optimizer and RNG state. Whatever the method keeps outside its
`state_dict` (a step counter in a Python attribute, a private generator, Python's `random`) is
what this property catches; where such an attribute of the method differs between the two
runs at the end, the failure names it. A method without a backward (`uses_backward = False`)
is killed the same way, in its `update_without_backward`.
"""
from __future__ import annotations

import json
import shutil
from unittest import mock

import torch
from torch.nn.modules.module import register_module_forward_pre_hook

from ..runs.folder import CHECKPOINT
from ..train.loop import train
from .subject import Subject

KILL_AT = 12  # the step checkpointed before the kill: mid-run, between two evaluations


class SimulatedKill(BaseException):
    """Stops the run as a kill would; a BaseException, so a method's `except Exception` cannot swallow it."""


def _final_state(run_dir) -> dict:
    saved = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    return {**{f"method.{k}": v for k, v in saved["method"].items()},
            **{f"optimizer.{k}": v for k, v in _flat_optimizer(saved["optimizer"]).items()}}


def _flat_optimizer(state: dict) -> dict:
    return {f"{index}.{key}": value for index, slots in state["state"].items() for key, value in slots.items()
            if isinstance(value, torch.Tensor)}


def _killed_run(subject: Subject, cfg, out) -> None:
    micro_batches = cfg.train.batch_tokens // (cfg.train.micro_batch_tokens or cfg.train.batch_tokens)
    calls, kill_after = [0], KILL_AT * micro_batches

    def kill_during_next_step(module, inputs):
        if isinstance(module, subject.cls):
            calls[0] += 1
            if calls[0] > kill_after:
                raise SimulatedKill()

    original = subject.cls.update_without_backward

    def update_until_killed(method, *args, **kwargs):
        kill_during_next_step(method, args)
        return original(method, *args, **kwargs)

    handle = register_module_forward_pre_hook(kill_during_next_step)
    patch = mock.patch.object(subject.cls, "update_without_backward", update_until_killed)
    try:
        with subject.registered(), patch:
            train(cfg, out, quiet=True)
    except SimulatedKill:
        pass
    finally:
        handle.remove()


def resume_bit_identical(subject: Subject) -> dict:
    """Kill the tiny run during step KILL_AT + 1, rerun it on its folder, and compare its final
    weights, optimizer state, every logged validation loss and the method's logged metrics with
    the uninterrupted run's."""
    reference = subject.reference_run
    out = subject.workdir / "killed"
    shutil.rmtree(out, ignore_errors=True)
    cfg = subject.fresh_config(**{"train.checkpoint_every_s": 0.0})  # a checkpoint after every step
    _killed_run(subject, cfg, out)
    resumed_from = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)["step"]
    if (out / "summary.json").exists() or resumed_from != KILL_AT:
        raise subject.fail("resume_bit_identical", f"the simulated kill did not stop the run at step {KILL_AT} "
                                                   f"(checkpoint at step {resumed_from})")
    with subject.registered(), subject.capturing() as built:
        train(cfg, out, quiet=True)
    blame = stray_attribute(subject.reference_method, built[-1] if built else None)
    want, got = _final_state(reference), _final_state(out)
    differ = sorted(set(want) ^ set(got)) + [k for k in want if k in got and not torch.equal(want[k], got[k])]
    if differ:
        key = differ[0]
        gap = ((want[key].double() - got[key].double()).abs().max().item()
               if key in want and key in got and want[key].shape == got[key].shape else "shape or presence")
        raise subject.fail("resume_bit_identical", f"resumed at step {KILL_AT}, {len(differ)} of {len(want)} final "
                                                   f"tensors differ from the uninterrupted run's; first {key} "
                                                   f"(max abs difference {gap}){blame}")
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (reference, out)]
    losses = [[row["val_loss"] for row in runs] for runs in rows]
    if losses[0] != losses[1]:
        raise subject.fail("resume_bit_identical", f"validation losses differ: uninterrupted {losses[0]}, "
                                                   f"resumed {losses[1]}{blame}")
    logged = [[row.get("method") for row in runs] for runs in rows]
    if logged[0] != logged[1]:
        raise subject.fail("resume_bit_identical", f"the method's logged metrics differ: uninterrupted {logged[0]}, "
                                                   f"resumed {logged[1]}{blame}")
    return {"killed_at_step": KILL_AT, "tensors_compared": len(want), "final_val_loss": losses[1][-1]}


_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))


def _same(a, b) -> bool:
    """Whether two attribute values are equal; True for kinds this check cannot compare."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, torch.Generator):
        return isinstance(b, torch.Generator) and torch.equal(a.get_state(), b.get_state())
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (bool, int, float, str, type(None))):
        return a == b
    return True


def _shown(value) -> str:
    if isinstance(value, (bool, int, float, str, type(None))):
        return repr(value)
    return type(value).__name__


def stray_attribute(reference, resumed) -> str:
    """'; ...' naming the first attribute of the method's own modules (the model's left out) that
    differs between the uninterrupted and the resumed run's method objects; '' where none does."""
    if reference is None or resumed is None:
        return ""
    theirs = dict(resumed.named_modules())
    for name, module in reference.named_modules():
        if name == "model" or name.startswith("model.") or name not in theirs:
            continue
        other = vars(theirs[name])
        for attr, value in vars(module).items():
            if attr in _MODULE_INTERNALS or attr == "_logged" or attr not in other or _same(value, other[attr]):
                continue
            where = f"self.{name + '.' if name else ''}{attr}"
            return (f"; the method's attribute {where} differs between the runs (uninterrupted {_shown(value)}, "
                    f"resumed {_shown(other[attr])}): state kept outside the state_dict is lost when a run "
                    f"resumes; keep it in a buffer (self.register_buffer) or derive it from the step")
    return ""
