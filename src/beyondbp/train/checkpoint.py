"""A run's checkpoint: written with one generation kept back, read without running any code.

`checkpoint.pt` holds tensors and plain values only (numbers, strings, lists, dicts): the
method's and optimizer's state dicts, the step, the RNG states, the metrics rows logged so far
and the fingerprint of the tokens the run trains on. It is read with
`torch.load(weights_only=True)`, PyTorch's unpickler that builds nothing else, so a pickle
crafted to run code (a shared run folder is untrusted input) is refused, not executed: one line
names the file and what it asked for. Keeping the step and the rows in the same file as the
weights keeps them consistent: there is one rename per checkpoint.

Saving keeps the checkpoint it replaces as `checkpoint.prev.pt`, moved only once the new file
is complete. A latest checkpoint that cannot be read (truncated, damaged, not a checkpoint) or
that `restore` does not accept (another run's, or not this run's shapes: `provenance` checks
both before anything is loaded) falls back to the previous one with one line saying so; with
none usable the run stops with one line naming the file.
"""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Callable

from ..atomic_write import stream_atomically
from ..config import ConfigError
from ..runs.folder import CHECKPOINT, PREVIOUS, checkpoint_files, snapshot_path

REQUIRED = ("method", "step")


class _Unreadable(Exception):
    """A checkpoint that cannot serve (damaged, foreign, wrong shapes); a fallback may."""


def save_checkpoint(out: Path, payload: dict) -> None:
    import torch
    stream_atomically(out / CHECKPOINT, lambda f: torch.save(payload, f), previous=out / PREVIOUS)


def save_snapshot(out: Path, payload: dict) -> None:
    """The state at payload's step, written atomically and read like a checkpoint (weights only)."""
    import torch
    stream_atomically(snapshot_path(out, payload["step"]), lambda f: torch.save(payload, f))


def _read(path: Path, device) -> dict:
    import torch
    try:
        with warnings.catch_warnings():  # torch's notes on a crafted file's pickle protocol: the refusal says it all
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        wanted = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if wanted:  # a well-formed pickle that asks for code: crafted, never loaded
            raise ConfigError(f"{path}: refused to load: it asks to import {wanted.group(1)}, and a "
                              f"beyondbp checkpoint holds only tensors and plain values (not loaded, "
                              f"nothing run); remove it if you do not trust this folder") from None
        raise _Unreadable(_unpickling_reason(exc)) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, IndexError, KeyError) as exc:
        raise _Unreadable(_first_line(exc)) from None
    if not isinstance(payload, dict) or any(k not in payload for k in REQUIRED):
        raise _Unreadable("not a beyondbp checkpoint (no method state or step)")
    return payload


def _unpickling_reason(exc: BaseException) -> str:
    """The informative part of PyTorch's long weights-only message ('Unsupported operand 103')."""
    for line in str(exc).splitlines():
        found = re.search(r"(Unsupported operand \d+|invalid load key.*|WeightsUnpickler error: \S.*)", line)
        if found:
            return f"not a PyTorch checkpoint: {found.group(1).rstrip('.')}"
    return "not a PyTorch checkpoint"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:160] if text else "") or type(exc).__name__


def load_checkpoint(out: Path, device, restore: Callable[[dict], None] | None = None,
                    say: Callable[[str], None] = lambda text: None) -> dict | None:
    """The newest checkpoint of `out` that reads and that `restore` accepts (None without any).

    `restore(payload)` applies it (load_state_dict ...); a failure there (shapes of another
    run) counts as unreadable, like a damaged file. Falling back says so in one line.
    """
    problems = []
    for path in checkpoint_files(out):
        try:
            payload = _read(path, device)
            if restore is not None:
                try:
                    restore(payload)
                except (RuntimeError, KeyError, ValueError, TypeError) as exc:
                    raise _Unreadable(f"does not fit this run ({_first_line(exc)})") from None
        except _Unreadable as exc:
            problems.append((path, str(exc)))
            continue
        if problems:
            bad, why = problems[0]
            say(f"warning: {bad} is unreadable ({why}); resuming from {path.name} at step {payload['step']}")
        return payload
    if problems:
        bad, why = problems[0]
        raise ConfigError(f"{bad}: unreadable checkpoint ({why}) and no earlier one to fall back to; "
                          f"move it aside to train the run from the start")
    return None
