"""One training run: loop, schedule, evaluation, checkpoint/resume, metrics.jsonl.

A run directory holds `config.yaml` (the resolved config), `metrics.jsonl` (one JSON object
per evaluation, append-only), `summary.json` and `checkpoint.pt`. Rerunning the same command
on the same directory resumes from the checkpoint; a completed run is not trained again.
Batches are a pure function of the step, so a resumed run sees exactly the batches an
uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import distributed as dist_utils
from .config import ConfigError, RunConfig, dump_yaml, from_dict, to_dict
from .data import load_token_data
from .methods import build_method
from .model import build_model, resolve_model_config

PF_DAY = 8.64e19  # FLOPs in one petaflop/s-day


class Interrupted(Exception):
    """Raised after a checkpoint was written because the process got SIGTERM/SIGINT."""


@dataclass
class Plan:
    n_steps: int
    n_seqs: int
    accum: int
    eval_steps: list[int]


def make_plan(cfg: RunConfig, world_size: int = 1) -> Plan:
    t, context = cfg.train, cfg.model.context
    if t.tokens <= 0:
        raise ConfigError(f"train.tokens: must be positive, got {t.tokens}")
    if t.batch_tokens <= 0 or t.batch_tokens % context:
        raise ConfigError(f"train.batch_tokens: {t.batch_tokens} must be a positive multiple of model.context={context}")
    n_seqs = t.batch_tokens // context
    micro = t.micro_batch_tokens or t.batch_tokens
    if micro % context or t.batch_tokens % micro:
        raise ConfigError(f"train.micro_batch_tokens: {micro} must be a multiple of model.context and divide train.batch_tokens")
    accum = t.batch_tokens // micro
    if n_seqs % (accum * world_size):
        raise ConfigError(f"train.batch_tokens: {n_seqs} sequences per batch do not split over "
                          f"{world_size} processes x {accum} micro-batches; change train.batch_tokens or the process count")
    n_steps = max(1, t.tokens // t.batch_tokens)
    if t.n_evals < 1:
        raise ConfigError(f"train.n_evals: must be >= 1, got {t.n_evals}")
    log_steps = np.unique(np.round(np.geomspace(1, n_steps, t.n_evals)).astype(int))
    return Plan(n_steps, n_seqs, accum, sorted({0, *log_steps.tolist(), n_steps}))


def learning_rate(cfg: RunConfig, step: int, n_steps: int) -> float:
    t = cfg.train
    warmup = max(1, int(t.warmup_frac * n_steps))
    if step < warmup:
        return t.lr * (step + 1) / warmup
    min_lr = t.lr * t.min_lr_ratio
    if t.schedule == "cosine":
        progress = (step - warmup) / max(1, n_steps - 1 - warmup)
        return min_lr + 0.5 * (t.lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))
    if t.schedule == "constant_cooldown":
        cooldown_start = int(n_steps * (1 - t.cooldown_frac))
        if step < cooldown_start:
            return t.lr
        return t.lr - (t.lr - min_lr) * (step - cooldown_start) / max(1, n_steps - 1 - cooldown_start)
    raise ConfigError(f"train.schedule: unknown schedule {t.schedule!r} (valid: cosine, constant_cooldown)")


def make_optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    params = list(params)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel over all tensors instead of a Python loop per tensor (2x faster on CPU at 10M params)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2), fused=fused)


def pick_device(cfg: RunConfig) -> torch.device:
    want = cfg.train.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA device is available")
    if want not in ("cpu", "cuda"):
        raise ConfigError(f"train.device: unknown device {want!r} (valid: auto, cpu, cuda)")
    return torch.device(want)


def autocast_context(cfg: RunConfig, device: torch.device):
    dtype = cfg.train.dtype
    if dtype not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"train.dtype: unknown dtype {dtype!r} (valid: auto, float32, bfloat16)")
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out: cannot write to {out} ({exc.strerror or exc})") from None


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            break
    return rows


def check_same_config(out: Path, cfg: RunConfig) -> None:
    """A run directory belongs to one config: refuse to resume it with another."""
    old_path = out / "config.yaml"
    if not old_path.exists():
        return
    import yaml
    old, new = yaml.safe_load(old_path.read_text()), to_dict(cfg)
    for section, values in new.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if key in ("progress", "threads", "checkpoint_every_s"):
                    continue
                if old.get(section, {}).get(key) != value:
                    raise ConfigError(f"{section}.{key}: {out} holds a run with {section}.{key}="
                                      f"{old.get(section, {}).get(key)!r}, not {value!r}; use another --out")
        elif old.get(section) != values:
            raise ConfigError(f"{section}: {out} holds a run with {section}={old.get(section)!r}, "
                              f"not {values!r}; use another --out")


class _SignalFlag:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _progress(cfg: RunConfig, total: int, initial: int, enabled: bool):
    from tqdm import tqdm
    mode = cfg.train.progress
    disable = not enabled or mode == "off" or (mode == "auto" and not sys.stderr.isatty())
    return tqdm(total=total, initial=initial, unit="tok", unit_scale=True, disable=disable,
                dynamic_ncols=True, leave=False)


def residual_stats(h: torch.Tensor) -> dict[str, float]:
    """How the residual stream entering the final LayerNorm looks ([..., d_model] activations).

    `residual_rms`: root mean square of its entries; `residual_common`: norm of the mean vector
    over all positions divided by the mean norm of a position's vector — 0 for directions that
    vary freely between positions, 1 when every position carries the same vector (the final
    LayerNorm then gives every position the same prediction: the collapse to the unigram
    plateau that `dfa_block` shows on small deep models, see the README)."""
    flat = h.detach().float().reshape(-1, h.shape[-1])
    norms = flat.norm(dim=1)
    return {"residual_rms": flat.pow(2).mean().sqrt().item(),
            "residual_common": (flat.mean(0).norm() / norms.mean().clamp_min(1e-30)).item()}


@torch.no_grad()
def evaluate(model, data, cfg: RunConfig, device, n_seqs: int) -> tuple[float, dict[str, float]]:
    """(mean validation loss, residual_stats of the first validation batch, for a GPT)."""
    was_training = model.training
    model.eval()
    total, count, stats = 0.0, 0, {}

    def first_batch_stats(module, inputs, output):
        if not stats:
            stats.update(residual_stats(inputs[0]))

    final_norm = getattr(model, "ln_f", None)
    handle = final_norm.register_forward_hook(first_batch_stats) if final_norm is not None else None
    try:
        for x, y in data.val_batches(n_seqs, cfg.model.context, cfg.train.eval_tokens):
            x, y = x.to(device), y.to(device)
            with autocast_context(cfg, device):
                _, loss = model(x, y)
            total += loss.item() * y.numel()
            count += y.numel()
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    return total / max(count, 1), stats


def train(cfg: RunConfig, out: str | Path, quiet: bool = False) -> dict:
    """Train one run into `out` (resuming if it holds a checkpoint); return the summary."""
    out = Path(out)
    ctx = dist_utils.context()
    if ctx.is_main:
        check_writable(out)
    data = load_token_data(cfg.data)
    resolve_model_config(cfg.model, data.vocab_size)
    if cfg.model.vocab_size < data.vocab_size:
        raise ConfigError(f"model.vocab_size: {cfg.model.vocab_size} is smaller than the tokenizer's {data.vocab_size}")
    plan = make_plan(cfg, ctx.world_size)
    data.check(plan.n_seqs, cfg.model.context)
    learning_rate(cfg, 0, plan.n_steps)  # validates the schedule name before any work
    device = dist_utils.device_for(ctx, pick_device(cfg))
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)

    summary_path = out / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        check_same_config(out, cfg)
        if summary.get("status") in ("completed", "diverged"):
            if not quiet and ctx.is_main:
                print(f"{out}: run already {summary['status']}; nothing to do", file=sys.stderr)
            return summary
    check_same_config(out, cfg)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(device)
    method = build_method(model, cfg.method, cfg.seed, cfg.model.kind).to(device)
    optimizer = make_optimizer(cfg, method.trainable_parameters())
    per_token = method.compute_per_token()
    tokens_needed = plan.n_steps * cfg.train.batch_tokens
    epochs = data.epochs_for(tokens_needed)
    if epochs > 1 and ctx.is_main and not quiet:
        print(f"warning: the run needs {tokens_needed:,} tokens but the training split holds "
              f"{len(data.train):,}; it will make {epochs:.2f} epochs", file=sys.stderr)

    step, elapsed, train_losses = 0, 0.0, []
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed, train_losses = state["step"], state["elapsed_s"], state["train_losses"]
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"])
    if ctx.is_main:
        atomic_write(out / "config.yaml", dump_yaml(cfg))
        kept = [r for r in read_metrics(out / "metrics.jsonl") if r["step"] <= step and step > 0]
        atomic_write(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
        logged_steps = {r["step"] for r in kept}
    wrapped = dist_utils.wrap(method, ctx, device)
    if cfg.train.compile:  # graph-compiles the method's forward; the feedback tap stays a custom Function
        wrapped = torch.compile(wrapped)

    def save_checkpoint():
        if not ctx.is_main:
            return
        atomic_torch_save({
            "method": method.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "elapsed_s": elapsed, "train_losses": train_losses, "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
        }, ckpt_path)

    def write_summary(status: str, final_val: float | None):
        if not ctx.is_main:
            return None
        tokens = step * cfg.train.batch_tokens
        summary = {
            "method": cfg.method.name, "seed": cfg.seed,
            "n_params": model.n_params(), "n_params_nonembedding": model.n_params_nonembedding(),
            "tokens": tokens, "steps": step,
            "compute_flops": tokens * per_token["paper"],
            "compute_pf_days": tokens * per_token["paper"] / PF_DAY,
            "compute_flops_optimistic": tokens * per_token["optimistic"],
            "compute_flops_exact": tokens * per_token["exact"],
            "final_val_loss": final_val, "tokens_per_s": tokens / elapsed if elapsed > 0 else None,
            "elapsed_s": elapsed, "status": status,
        }
        atomic_write(summary_path, json.dumps(summary, indent=2) + "\n")
        return summary

    def log_eval(val_loss: float, lr: float, extra: dict):
        tokens = step * cfg.train.batch_tokens
        row = {
            "step": step, "tokens": tokens,
            "compute_flops": tokens * per_token["paper"],
            "compute_pf_days": tokens * per_token["paper"] / PF_DAY,
            "compute_flops_optimistic": tokens * per_token["optimistic"],
            "compute_flops_exact": tokens * per_token["exact"],
            "train_loss": float(np.mean(train_losses)) if train_losses else None,
            "val_loss": val_loss, "lr": lr, "elapsed_s": elapsed, **extra,
        }
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    eval_set = set(plan.eval_steps)
    n_evals_done = sum(1 for s in plan.eval_steps if s < step)
    micro_seqs = plan.n_seqs // plan.accum // ctx.world_size
    last_ckpt = time.monotonic()
    bar = _progress(cfg, plan.n_steps * cfg.train.batch_tokens, step * cfg.train.batch_tokens,
                    ctx.is_main and not quiet)
    status, val_loss = "completed", None
    method.train()
    with _SignalFlag() as flag:
        while True:
            lr = learning_rate(cfg, min(step, plan.n_steps - 1), plan.n_steps)
            if step in eval_set and ctx.is_main and step in logged_steps:  # logged before a kill
                val_loss = next(r["val_loss"] for r in kept if r["step"] == step)
                train_losses = []
                n_evals_done += 1
            elif step in eval_set and ctx.is_main:
                extra = {}
                if cfg.train.alignment_every and n_evals_done % cfg.train.alignment_every == 0 and step > 0:
                    from .alignment import measure_alignment
                    x, y = data.train_batch(step, plan.n_seqs, cfg.model.context, cfg.seed)
                    extra["alignment"] = measure_alignment(method, x[:micro_seqs].to(device), y[:micro_seqs].to(device),
                                                           autocast=lambda: autocast_context(cfg, device))
                val_loss, residual = evaluate(model, data, cfg, device, micro_seqs)
                log_eval(val_loss, lr, {**extra, **residual})
                train_losses = []
                n_evals_done += 1
            if step >= plan.n_steps:
                break
            t0 = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = data.train_batch(step, plan.n_seqs, cfg.model.context, cfg.seed)
            x, y = dist_utils.shard(x, ctx), dist_utils.shard(y, ctx)
            step_loss = 0.0
            for micro in range(plan.accum):
                xs = x[micro * micro_seqs:(micro + 1) * micro_seqs].to(device, non_blocking=True)
                ys = y[micro * micro_seqs:(micro + 1) * micro_seqs].to(device, non_blocking=True)
                with dist_utils.maybe_no_sync(wrapped, micro < plan.accum - 1), autocast_context(cfg, device):
                    loss, objective = wrapped(xs, ys)
                (objective / plan.accum).backward()
                step_loss += loss.detach().float() / plan.accum
            # one all-reduce: the global loss and whether any rank got a signal, so all stop together
            step_loss, stop = dist_utils.step_consensus(step_loss, flag.signum is not None, ctx)
            if not math.isfinite(step_loss):
                status = "diverged"
                break
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(list(method.trainable_parameters()), cfg.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            train_losses.append(step_loss)
            step += 1
            elapsed += time.perf_counter() - t0
            bar.update(cfg.train.batch_tokens)
            bar.set_postfix(loss=f"{step_loss:.3f}", refresh=False)
            if stop:
                save_checkpoint()
                bar.close()
                raise Interrupted(f"interrupted by signal {flag.signum or 'on another process'} at step {step}; "
                                  f"rerun the same command to resume")
            if time.monotonic() - last_ckpt > cfg.train.checkpoint_every_s:
                save_checkpoint()
                last_ckpt = time.monotonic()
    bar.close()
    if status == "completed":
        save_checkpoint()
    summary = write_summary(status, val_loss if status == "completed" else None)
    if not quiet and ctx.is_main:
        msg = (f"final val loss {val_loss:.4f}" if status == "completed" else f"diverged at step {step}")
        print(f"{out}: {status}: {msg}, {step * cfg.train.batch_tokens:,} tokens in {elapsed:.1f}s", file=sys.stderr)
    return summary


def load_run(run_dir: str | Path, device: str = "cpu"):
    """(config, model, tokenizer) of a run directory, from its latest checkpoint."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise ConfigError(f"--run: {run_dir} is not a run directory (no config.yaml)")
    if not (run_dir / "checkpoint.pt").exists():
        raise ConfigError(f"--run: {run_dir} has no checkpoint.pt yet")
    import yaml
    cfg = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    data = load_token_data(cfg.data)
    model = build_model(cfg.model)
    method = build_method(model, cfg.method, cfg.seed, cfg.model.kind)
    state = torch.load(run_dir / "checkpoint.pt", map_location=device, weights_only=False)
    method.load_state_dict(state["method"])
    return cfg, model.to(device).eval(), data.tokenizer
