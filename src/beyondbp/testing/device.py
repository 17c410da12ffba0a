"""Property `moves_with_device`: every tensor the method holds moves with `.to(device)`.

A fixed matrix kept as a plain attribute (`self.B = torch.randn(...)`) instead of a registered
buffer stays on the CPU when the run moves the method to a GPU, and is missing from checkpoints;
on a CPU-only machine nothing shows it. The method is moved to CUDA where there is one, else to
PyTorch's `meta` device (tensors with shapes and no data, which every method can be moved to),
and every tensor reachable from its modules' attributes (lists, tuples and dicts of them
included) must be on that device afterwards. On CUDA one update is also taken there.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..train.alignment import method_update
from .subject import Subject

_MODULE_INTERNALS = frozenset(vars(nn.Module()))
_KIT_OWN = frozenset({"_logged"})  # the method's logged scalars, the trainer's to take


def _tensors(value, path: str):
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{path}[{key!r}]")


def stray_tensors(method: nn.Module, device: torch.device) -> list[tuple[str, torch.device]]:
    """(attribute path, its device) of every tensor held outside parameters and buffers and not
    on `device`."""
    found = []
    for module_name, module in method.named_modules():
        for attr, value in vars(module).items():
            if attr in _MODULE_INTERNALS or attr in _KIT_OWN:
                continue
            where = f"{module_name}.{attr}" if module_name else attr
            found += [(path, t.device) for path, t in _tensors(value, where) if t.device.type != device.type]
    return found


def moves_with_device(subject: Subject) -> dict:
    """After `method.to(device)` (CUDA where present, else meta) no tensor it holds is left behind."""
    method = subject.build()
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("meta")
    method.to(device)
    stray = stray_tensors(method, device)
    if stray:
        path, where = stray[0]
        raise subject.fail("moves_with_device", f"after method.to({device.type!r}) the tensor self.{path} is still "
                                                f"on {where.type} ({len(stray)} such): a tensor kept as a plain "
                                                f"attribute does not move with the model nor reach checkpoints; "
                                                f"register it (self.register_buffer(name, tensor))")
    measured = {"device": device.type, "tensors_checked": len(method.state_dict())}
    if device.type == "cuda":
        x, y = subject.batch()
        loss = method_update(method, x.to(device), y.to(device)).item()
        if not math.isfinite(loss):
            raise subject.fail("moves_with_device", f"one update on CUDA gave the loss {loss}")
        measured["cuda_loss"] = loss
    return measured
