"""Will a run fit? An estimate of its memory, made before anything is allocated, against what
this process can use.

The estimate (`training_bytes`), from the shape alone (`model_shape.n_params`; nothing built):
- weights: every parameter in float32 (also under bf16 autocast: the master weights);
- gradients and AdamW's two moments: three more float32 copies;
- activations of one micro-batch kept for the backward: per token and block the LayerNorm
  inputs and outputs, q/k/v, the attention output, the residual sum and the MLP's hidden layer
  before and after the ReLU ((8 + 2 x mlp_ratio) x d_model values, with attention that keeps no
  T x T scores), plus the logits and their log-softmax (2 x vocabulary values); 2 bytes a value
  under bf16 autocast, else 4.
A method's own state (DFA's feedback matrices, synthetic-gradient predictors) and the
allocator's slack are not counted, so a run refused here could never fit.

The limit (`available_bytes`): on a CPU the smaller of MemAvailable and what the process's
cgroup (v1 or v2, every level up to the root) still allows; divided among the processes of one
node that train one run on the CPU. On a GPU the device's free memory (torch.cuda.mem_get_info).
`train.memory_check=false` skips the check.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

from ..config import ConfigError, RunConfig
from ..data.tokenizers import planned_vocab_size
from ..model import shape as model_shape

CGROUP_ROOT = Path("/sys/fs/cgroup")
GiB = 2**30


def training_bytes(cfg: RunConfig, micro_seqs: int, bf16: bool, vocab_size: int | None = None) -> dict[str, int]:
    """{parameters, weights, gradients_and_optimizer, activations, total} of a run, in bytes (the
    parameter count as a count). A GPT: `micro_seqs` sequences; an MLP: `micro_seqs` examples."""
    model = copy.deepcopy(cfg.mlp if cfg.model.kind == "mlp" else cfg.model)
    if cfg.model.kind == "mlp":
        model.n_inputs, model.n_classes = model.n_inputs or 1, model.n_classes or 2
        n_total = model_shape.mlp_n_params(model)
        activations = micro_seqs * 2 * sum(model_shape.mlp_widths(model)) * 4
    else:
        model = model_shape.resolve_model_config(model, vocab_size or planned_vocab_size(cfg))
        n_total, _ = model_shape.n_params(model)
        per_value = 2 if bf16 else 4
        per_token = model.n_layer * (8 + 2 * model.mlp_ratio) * model.d_model * per_value
        per_token += 2 * model.d_model * 4 + 2 * model.vocab_size * 4  # final LayerNorm, logits, log-softmax
        activations = micro_seqs * model.context * per_token
    out = {"weights": 4 * n_total, "gradients_and_optimizer": 12 * n_total, "activations": activations}
    out["total"] = sum(out.values())
    out["parameters"] = n_total
    return out


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    """The least (limit - usage) over this process's memory cgroup and its ancestors."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            base, limit_file, usage_file = CGROUP_ROOT, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):  # v1
            base, limit_file, usage_file = CGROUP_ROOT / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        folder = base / path.lstrip("/")
        while True:
            limit, usage = _read_int(folder / limit_file), _read_int(folder / usage_file)
            if limit is not None and limit < 2**60:  # v1 writes "no limit" as a huge number
                found.append(max(0, limit - (usage or 0)))
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return min(found) if found else None


def available_bytes() -> tuple[int | None, str]:
    """(bytes this process can still use on the host, where the figure comes from)."""
    options = [(v, what) for v, what in ((_meminfo_available(), "MemAvailable"), (_cgroup_headroom(), "cgroup limit"))
               if v is not None]
    if not options:
        return None, "unknown"
    value, what = min(options)
    text = os.environ.get("LOCAL_WORLD_SIZE", "1").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"LOCAL_WORLD_SIZE: must be a whole number >= 1, got {text!r}")
    processes = int(text)
    if processes > 1:
        return value // processes, f"{what} / {processes} processes"
    return value, what


def gpu_free_bytes(device) -> int | None:
    import torch
    try:
        return torch.cuda.mem_get_info(device)[0]
    except (RuntimeError, AssertionError):
        return None


def _count(n: int) -> str:
    return f"{n / 1e6:,.1f}M" if n < 1e12 else f"{n:.3g}"


def check_state_fits_host(cfg: RunConfig) -> None:
    """The part of the check that needs no torch (the CLI runs it before importing torch):
    the weights (and on a CPU their gradients and AdamW state) against the host's memory."""
    if not cfg.train.memory_check or cfg.model.kind != "gpt":
        return
    need = training_bytes(cfg, 0, bf16=False)
    host, what = available_bytes()
    on_cpu = cfg.train.device == "cpu"
    estimate = need["weights"] + (need["gradients_and_optimizer"] if on_cpu else 0)
    if host is not None and estimate > host:
        what_needs = "its weights, gradients and AdamW state need" if on_cpu else "its weights alone need"
        raise ConfigError(f"model: {_count(need['parameters'])} parameters; {what_needs} {estimate / GiB:.1f} GiB "
                          f"but {'what this process can use' if on_cpu else 'host memory'} ({what}) is "
                          f"{host / GiB:.1f} GiB; use a smaller model, or set train.memory_check=false to try anyway")


def check_memory(cfg: RunConfig, micro_seqs: int, device, share: int = 1) -> dict[str, int]:
    """Raise a one-line ConfigError when the run cannot fit; return the estimate. `device`: a
    torch.device or "cpu"/"cuda"; `share`: runs that will share this host's memory at once."""
    kind = getattr(device, "type", device)
    bf16 = cfg.train.dtype == "bfloat16" or (cfg.train.dtype == "auto" and kind == "cuda")
    need = training_bytes(cfg, micro_seqs, bf16)
    if not cfg.train.memory_check:
        return need
    check_state_fits_host(cfg)
    if kind == "cuda":
        limit, where = gpu_free_bytes(device), "the GPU's free memory"
    else:
        limit, what = available_bytes()
        if limit is not None and share > 1:
            limit, what = limit // share, f"{what} / {share} runs at once"
        where = f"what this process can use ({what})"
    if limit is not None and need["total"] > limit:
        raise ConfigError(
            f"model: {_count(need['parameters'])} parameters; the run needs about {need['total'] / GiB:.1f} GiB "
            f"(weights {need['weights'] / GiB:.1f}, gradients and AdamW {need['gradients_and_optimizer'] / GiB:.1f}, "
            f"activations of one micro-batch {need['activations'] / GiB:.1f}) but {where} is {limit / GiB:.1f} GiB; "
            f"use a smaller model or train.micro_batch_tokens, or set train.memory_check=false to try anyway")
    return need
