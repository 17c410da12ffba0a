"""Whose a checkpoint is, and whether it fits this run: checked before anything is loaded.

A run folder may come from someone else, and a checkpoint file may be copied between folders. A
checkpoint is therefore taken only when it proves it belongs here (`check_identity`): the identity
recorded when it was written (`run_identity`: a digest of the run's config without the settings
that may change on a resume, the seed, and the fingerprint of the tokens trained on) equals this
run's, or it is a trunk's state at or before this branch's cooldown start (branched budgets: the
same config but for the length and the schedule). Its contents must fit what this run builds
(`check_state`): every model tensor's name, shape and dtype, every AdamW state tensor against its
parameter (a wrongly shaped moment would be written out of bounds by the fused kernel), the
parameter groups and their sizes, the step within [0, the run's steps], finite weights and moments,
the RNG state, and metrics rows that agree with the folder's metrics.jsonl. Anything else raises
`CheckpointMismatch` (one line), which the checkpoint reader treats like a damaged file.

A checkpoint written before identities were recorded is accepted after all the other checks
(its data fingerprint, which those checkpoints carry, included): the rows check still refuses
another seed's checkpoint copied into a run that logged rows of its own.
"""
from __future__ import annotations

import hashlib
import json
import math

from ..config import OLD_KEYS, RunConfig, to_dict
from ..config_mlp import old_layout
from ..runs.folder import EXECUTION_KEYS
from ..runs.schedule import cooldown_start

BRANCH_KEYS = ("tokens", "schedule", "cooldown_frac")  # where a trunk's config differs from its branches'
ADAM_KEYS = {"step", "exp_avg", "exp_avg_sq"}


class CheckpointMismatch(ValueError):
    """A checkpoint of another run, or with contents this run's model and optimizer cannot take."""


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


_DIGEST_NAMES = {new: old for old, new in OLD_KEYS.items()}  # digests keep the names checkpoints were written with


def run_identity(cfg: RunConfig, data_fingerprint: str | None) -> dict:
    """What a checkpoint records about the run that wrote it (plain values only)."""
    config = old_layout(to_dict(cfg))  # the layout checkpoints were written with, before the mlp section
    config["method"] = {k: v for k, v in config["method"].items() if k not in ("origin", "version")}
    config["train"] = {_DIGEST_NAMES.get(k, k): v for k, v in config["train"].items() if k not in EXECUTION_KEYS}
    lineage = {**config, "train": {k: v for k, v in config["train"].items() if k not in BRANCH_KEYS}}
    trunk = cfg.train.schedule == "constant_cooldown" and cfg.train.cooldown_frac == 0
    return {"config": _digest(config), "lineage": _digest(lineage), "trunk": trunk, "seed": cfg.seed,
            "data_fingerprint": data_fingerprint}


def check_identity(saved: dict, mine: dict, cfg: RunConfig, n_steps: int) -> None:
    """Refuse a checkpoint whose recorded identity is another run's (seed, tokens, config)."""
    fingerprint = saved.get("data_fingerprint")
    if fingerprint is not None and fingerprint != mine["data_fingerprint"]:
        raise CheckpointMismatch(f"it was trained on other tokens (fingerprint {str(fingerprint)[:12]}, "
                                 f"this run's {str(mine['data_fingerprint'])[:12]})")
    ident = saved.get("identity")
    if ident is None:
        return  # written before identities were recorded: the other checks decide
    if not isinstance(ident, dict):
        raise CheckpointMismatch(f"its identity is a {type(ident).__name__}, not the record beyondbp writes")
    if ident.get("seed") != mine["seed"]:
        raise CheckpointMismatch(f"it is a checkpoint of seed {ident.get('seed')!r}, this run is seed {mine['seed']}")
    if ident.get("config") == mine["config"]:
        return
    if (ident.get("trunk") is True and ident.get("lineage") == mine["lineage"]
            and cfg.train.schedule == "constant_cooldown" and saved["step"] <= cooldown_start(cfg, n_steps)):
        return  # a trunk's state at a branch point: this branch's own first steps
    raise CheckpointMismatch(f"it was written by a run of another config (config digest "
                             f"{str(ident.get('config'))[:16]}, this run's {mine['config']})")


def check_step(saved: dict, n_steps: int) -> None:
    step = saved["step"]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= n_steps:
        raise CheckpointMismatch(f"step {step!r} is outside this run's schedule [0, {n_steps}]")


def _describe(value) -> str:
    import torch
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} {tuple(value.shape)}" + ("" if value.layout == torch.strided else f" {value.layout}")
    return type(value).__name__


def _check_tensor(got, want, what: str) -> None:
    import torch
    if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype \
            or got.layout != want.layout:
        raise CheckpointMismatch(f"{what} is {_describe(got)}, this run's is {_describe(want)}")
    if got.is_meta:
        raise CheckpointMismatch(f"{what} holds no values (a meta tensor)")
    if got.is_floating_point() and not bool(torch.isfinite(got).all()):
        raise CheckpointMismatch(f"{what} holds NaN or infinite values")


def first_non_finite(state: dict) -> str | None:
    """The name of the first floating tensor of a state dict holding NaN or inf, else None."""
    import torch
    return next((name for name, t in state.items() if isinstance(t, torch.Tensor) and t.is_floating_point()
                 and not bool(torch.isfinite(t).all())), None)


def check_model_state(saved, expected: dict, what: str = "model tensor") -> None:
    """Every entry of a saved state dict against this run's (same names, shapes, dtypes; finite)."""
    import torch
    if not isinstance(saved, dict):
        raise CheckpointMismatch(f"its {what}s are a {type(saved).__name__}, not a state dict")
    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected), key=str)
    if missing or extra:
        raise CheckpointMismatch(f"its {what}s are not this run's ("
                                 + (f"missing {missing[0]}" if missing else f"unexpected {extra[0]!r}") + ")")
    for name, want in expected.items():
        if isinstance(want, torch.Tensor):
            _check_tensor(saved[name], want, f"{what} {name}")


def _param_ids(optimizer) -> dict[int, object]:
    """The optimizer's parameters by the ids its state dict uses (numbered in group order)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return dict(enumerate(params))


def check_optimizer_state(saved, optimizer, max_step: int) -> None:
    """AdamW's saved state against this run's optimizer: groups, their sizes, every moment's shape."""
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict) \
            or not isinstance(saved.get("param_groups"), list):
        raise CheckpointMismatch("its optimizer state is not an optimizer state dict")
    mine = optimizer.state_dict()["param_groups"]
    if len(saved["param_groups"]) != len(mine):
        raise CheckpointMismatch(f"its optimizer has {len(saved['param_groups'])} parameter groups, "
                                 f"this run's {len(mine)}")
    for i, (got, want) in enumerate(zip(saved["param_groups"], mine)):
        params = got.get("params") if isinstance(got, dict) else None
        if params != want["params"]:
            size = len(params) if isinstance(params, list) else "no"
            raise CheckpointMismatch(f"its optimizer's group {i} holds {size} parameters, "
                                     f"this run's {len(want['params'])}")
    by_id = _param_ids(optimizer)
    for pid, entry in saved["state"].items():
        if pid not in by_id or not isinstance(entry, dict) or set(entry) != ADAM_KEYS:
            raise CheckpointMismatch(f"its optimizer state for parameter {pid!r} is not AdamW's "
                                     f"({', '.join(sorted(ADAM_KEYS))})")
        param = by_id[pid]
        for key in ("exp_avg", "exp_avg_sq"):
            _check_tensor(entry[key], param.detach(), f"optimizer {key} of parameter {pid}")
        if bool((entry["exp_avg_sq"] < 0).any()):  # an average of squares: its square root would be NaN
            raise CheckpointMismatch(f"optimizer exp_avg_sq of parameter {pid} holds negative values")
        _check_adam_step(entry["step"], pid, max_step)


def _check_adam_step(step, pid, max_step: int) -> None:
    import torch
    value = step.item() if isinstance(step, torch.Tensor) and step.numel() == 1 else step
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= max_step:
        shown = _describe(step) if value is step else repr(value)
        raise CheckpointMismatch(f"optimizer step of parameter {pid} is {shown}, not a count in [0, {max_step}]")


def check_progress(saved: dict, rng_shape) -> None:
    """The RNG state, the elapsed time, the training losses and the metrics rows a checkpoint restores."""
    import torch
    rng = saved.get("rng_cpu")
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or tuple(rng.shape) != tuple(rng_shape):
        raise CheckpointMismatch(f"its random number generator state is {_describe(rng)}, not torch's")
    elapsed = saved.get("elapsed_s")
    if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not 0 <= elapsed < math.inf:
        raise CheckpointMismatch(f"its elapsed time is {elapsed!r}, not a finite number of seconds")
    losses = saved.get("train_losses")
    if not isinstance(losses, list) or not all(isinstance(x, float) for x in losses):
        raise CheckpointMismatch("its training losses are not a list of numbers")
    rows = saved.get("metrics", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) and type(r.get("step")) is int
                                             and 0 <= r["step"] <= saved["step"] and type(r.get("val_loss")) is float
                                             for r in rows):
        raise CheckpointMismatch(f"its metrics rows are not rows of steps 0 to {saved['step']} with a val_loss")


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def check_rows_agree(saved_rows: list[dict], on_disk: list[dict]) -> None:
    """The checkpoint's rows and metrics.jsonl's tell the same curve wherever both have a step."""
    logged = {r["step"]: r for r in on_disk}
    for row in saved_rows:
        other = logged.get(row["step"])
        if other is not None and not all(_same(row.get(k), other.get(k)) for k in ("tokens", "val_loss")):
            raise CheckpointMismatch(f"its metrics row of step {row['step']} (val_loss {row.get('val_loss')!r}) is not "
                                     f"the one in metrics.jsonl ({other.get('val_loss')!r}): another run's checkpoint")


def check_resumable(saved: dict, identity: dict, cfg: RunConfig, n_steps: int, method, optimizer,
                    on_disk: list[dict]) -> None:
    """Everything above, in the order that names the likeliest cause first; nothing is loaded."""
    import torch
    check_step(saved, n_steps)
    check_identity(saved, identity, cfg, n_steps)
    check_model_state(saved["method"], method.state_dict())
    check_optimizer_state(saved.get("optimizer"), optimizer, saved["step"])
    check_progress(saved, torch.get_rng_state().shape)
    check_rows_agree(saved.get("metrics", []), on_disk)
