"""One training run of the Transformer track: the loop, evaluation, checkpoint/resume, metrics.jsonl.

A run directory holds `config.yaml` (the resolved config), `data.json` (the tokens it trains
on), `metrics.jsonl` (one JSON object per evaluation, append-only), `summary.json` and
`checkpoint.pt` (with `checkpoint.prev.pt`, `beyondbp.train.checkpoint`). Rerunning the same command
on the same directory resumes from the checkpoint; a completed run is not trained again; a run
whose corpus now gives other tokens is refused (or restarted, train.on_data_change=restart);
a run that cannot fit in memory is refused before its model is built (`memory_check`).
Batches are a pure function of the step, so a resumed run sees exactly the batches an
uninterrupted one would. A checkpoint is resumed only once it proved it is this run's and fits
its model and optimizer (`provenance`); a run whose final weights are not finite is `failed`.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic_write import append_line, atomic_write, remove_leftovers
from ..config import ConfigError, RunConfig, check_run_length, dump_yaml
from ..data.cache import cache_entry
from ..data.tokens import load_token_data
from ..methods.registry import check_complete
from ..methods.registry import resolve as resolve_method
from ..model.shape import resolve_model_config
from . import distributed as dist_utils
from .checkpoint import load_checkpoint, save_checkpoint, save_snapshot
from .memory import check_memory
from .setup import build_trainer
from .provenance import check_model_state, check_resumable, first_non_finite, run_identity
from ..runs.folder import (DATA_RECORD, FINISHED, Interrupted, RunState, check_out_path, check_same_config, check_writable,
                         checkpoint_files,
                         compute_columns, data_change, read_metrics, read_summary,
                         refuse_data_change, set_aside)
from .sample_run import tokenizer_record
from ..runs.schedule import learning_rate, step_schedule
from .method_step import (MethodMetrics, StepInfo, compute_update, finish_update, per_token_record,
                          set_rates)
from .step import autocast_context, pick_device, progress_bar, set_threads
from .tracking import Tracker, check_tracker, run_tracker


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


def residual_stats(h: torch.Tensor) -> dict[str, float]:
    """How the residual stream entering the final LayerNorm looks ([..., d_model] activations).

    `residual_rms`: root mean square of its entries; `residual_common`: norm of the mean vector
    over all positions divided by the mean norm of a position's vector — 0 for directions that
    vary freely between positions, 1 when every position carries the same vector (the final
    LayerNorm then gives every position the same prediction: the collapse to the unigram
    plateau that `dfa_block` shows on small deep models, see docs/results.md)."""
    flat = h.detach().float().reshape(-1, h.shape[-1])
    norms = flat.norm(dim=1)
    return {"residual_rms": flat.pow(2).mean().sqrt().item(),
            "residual_common": (flat.mean(0).norm() / norms.mean().clamp_min(1e-30)).item()}


@torch.no_grad()
def validation_loss(model, data, cfg: RunConfig, device, n_seqs: int) -> tuple[float, dict[str, float]]:
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


@dataclass
class _State:
    """What a checkpoint restores: the step reached, the time spent, the losses since the last evaluation."""
    step: int = 0
    elapsed: float = 0.0
    train_losses: list = field(default_factory=list)


class _Run:
    """One run's pieces, built once: data, model, method, optimizer, step schedule, files. `train` drives it.

    Everything that can refuse the run (the config, the folder's files, the tokens it was trained
    on, the memory it needs) is checked here, before the model is built or a file is written."""

    def __init__(self, cfg: RunConfig, out: Path, quiet: bool):
        self.cfg, self.out, self.quiet = cfg, out, quiet
        self.ctx = dist_utils.context()
        self.tracker = Tracker()  # the real one opens once the step the run resumes from is known
        check_tracker(cfg.train.tracker)
        if self.ctx.is_main:
            check_writable(out)
        self.schedule = step_schedule(cfg, self.ctx.world_size)
        learning_rate(cfg, 0, self.schedule.n_steps)  # validates the schedule name before any work
        self.device = dist_utils.device_for(self.ctx, pick_device(cfg))
        self.micro_seqs = self.schedule.n_seqs // self.schedule.accum // self.ctx.world_size
        self.summary = read_summary(out)
        finished = bool(self.summary and self.summary.get("status") in FINISHED)
        entry = cache_entry(cfg.data)  # a stat per corpus file (re-hashed where one changed); nothing read
        self.data_changed = data_change(out, cfg.data.corpus, entry.name)
        restart = cfg.train.on_data_change == "restart"
        if self.data_changed and not restart and not finished:
            raise refuse_data_change(self.data_changed)  # before preparing the new tokens
        if not finished or (self.data_changed and restart):
            check_memory(cfg, self.micro_seqs, self.device)
        self.data = load_token_data(cfg.data)
        self.data_changed = self.data_changed or data_change(out, cfg.data.corpus, entry.name, self.data.fingerprint)
        if self.data_changed and not restart and not finished:
            raise refuse_data_change(self.data_changed)
        self.data_record = {"corpus": cfg.data.corpus, "tokenizer": cfg.data.tokenizer, "entry": entry.name,
                            "fingerprint": self.data.fingerprint, "tokens": self.data.meta["tokens"]}
        resolve_model_config(cfg.model, self.data.vocab_size)
        if cfg.model.vocab_size < self.data.vocab_size:
            raise ConfigError(f"model.vocab_size: {cfg.model.vocab_size} is smaller than the tokenizer's "
                              f"{self.data.vocab_size}")
        self.data.check(self.schedule.n_seqs, cfg.model.context)

    @property
    def main(self) -> bool:
        return self.ctx.is_main

    def say(self, text: str) -> None:
        if self.main and not self.quiet:
            print(text, file=sys.stderr)

    def restart_on_new_data(self) -> None:
        """train.on_data_change=restart: the old results go to out/replaced-N/, the run starts over."""
        if self.main:
            folder = set_aside(self.out)
            self.say(f"{self.out}: {self.data_changed}; restarting from step 0 (train.on_data_change=restart); "
                     f"the earlier results are in {folder}")
        self.summary = None

    def build(self) -> None:
        cfg = self.cfg
        self.model, self.method, self.optimizer = build_trainer(cfg, self.device)  # AdamW, plus the method's groups
        self.method_metrics = MethodMetrics()
        self.per_token = self.method.compute_per_token()
        tokens_needed = self.schedule.n_steps * cfg.train.batch_tokens
        epochs = self.data.epochs_for(tokens_needed)
        if epochs > 1:
            self.say(f"warning: the run needs {tokens_needed:,} tokens but the training split holds "
                     f"{len(self.data.train):,}; it will make {epochs:.2f} epochs")
        self.identity = run_identity(cfg, self.data_record["fingerprint"])
        self.wrapped = dist_utils.wrap(self.method, self.ctx, self.device)
        if cfg.train.compile:  # graph-compiles the method's forward; the feedback tap stays a custom Function
            self.wrapped = torch.compile(self.wrapped)

    # --- checkpoint and files -------------------------------------------------------------
    def _restore(self, saved: dict) -> None:
        """Load a checkpoint that proved it is this run's and fits its model and optimizer (`provenance`)."""
        check_resumable(saved, self.identity, self.cfg, self.schedule.n_steps, self.method, self.optimizer,
                        self.rows_on_disk)
        cuda_rng = saved.get("rng_cuda") if self.device.type == "cuda" else None
        if cuda_rng is not None:
            check_model_state({"rng": cuda_rng}, {"rng": torch.cuda.get_rng_state()}, "random number generator")
        self.method.load_state_dict(saved["method"])
        # the moments only: the groups' settings stay the ones this run's config gave its optimizer
        self.optimizer.load_state_dict({"state": saved["optimizer"]["state"],
                                        "param_groups": self.optimizer.state_dict()["param_groups"]})
        # generator states are CPU byte tensors; map_location moved them to the run's device
        torch.set_rng_state(saved["rng_cpu"].cpu())
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng.cpu())

    def resume(self, fresh: bool = False) -> _State:
        """The state of the newest readable checkpoint (a fresh one without, or when `fresh`).

        The metrics rows come back from the checkpoint itself, so a row cut from metrics.jsonl
        (a kill or a full disk mid-line) is restored; rows past the checkpoint are measured again."""
        state, rows = _State(), []
        # read once, before any checkpoint: a bad metrics.jsonl is named as such, not blamed on the checkpoint
        self.rows_on_disk = [] if fresh or not checkpoint_files(self.out) else read_metrics(self.out / "metrics.jsonl")
        saved = None if fresh else load_checkpoint(self.out, self.device, self._restore, self.say)
        if saved is not None:
            state = _State(saved["step"], saved["elapsed_s"], saved["train_losses"])
            rows = saved["metrics"] if "metrics" in saved else self.rows_on_disk
            self.method_metrics.restore(saved.get("method_metrics"))
        self.rows = [r for r in rows if r["step"] <= state.step and state.step > 0]
        self.logged = {r["step"]: r for r in self.rows}
        if self.main:
            remove_leftovers(self.out)  # a checkpoint half-written when a kill came
            on_disk = self.rows_on_disk if self.rows else []  # nothing to restore: not read
            if len(on_disk) < len(self.rows):
                self.say(f"{self.out / 'metrics.jsonl'}: {len(self.rows) - len(on_disk)} row(s) cut short; "
                         f"restored from the checkpoint (rows past step {state.step} are measured again)")
            atomic_write(self.out / "config.yaml", dump_yaml(self.cfg))
            atomic_write(self.out / DATA_RECORD, json.dumps(self.data_record, indent=2) + "\n")
            atomic_write(self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.rows))
        return state

    def _payload(self, state: _State) -> dict:
        return {
            "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(), "step": state.step,
            "elapsed_s": state.elapsed, "train_losses": list(state.train_losses), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
            "metrics": list(self.rows), "data_fingerprint": self.data_record["fingerprint"],
            "identity": self.identity, "tokenizer": tokenizer_record(self.data.tokenizer),
            "method_metrics": self.method_metrics.state(),
        }

    def save_checkpoint(self, state: _State) -> None:
        if self.main:
            save_checkpoint(self.out, self._payload(state))

    def save_snapshot(self, state: _State) -> None:
        """The state at a branch point, kept beside the checkpoint (`checkpoint.save_snapshot`)."""
        if self.main:
            save_snapshot(self.out, self._payload(state))

    def finish(self, state: _State, val_loss: float | None) -> str:
        """A run that reached its last step: completed (its checkpoint saved), or failed when its final
        weights or validation loss are not finite (nothing saved; a rerun resumes the last good checkpoint)."""
        bad = first_non_finite(self.method.state_dict())
        if bad is not None or (self.main and (val_loss is None or not math.isfinite(val_loss))):  # rank 0 evaluates
            what = f"weight {bad} holds NaN or infinite values" if bad else f"validation loss is {val_loss}"
            self.error = f"at the final step ({state.step}) the {what}; not saved, not completed"
            return RunState.FAILED
        self.save_checkpoint(state)
        return RunState.COMPLETED

    def write_summary(self, state: _State, status: str, final_val: float | None) -> dict | None:
        if not self.main:
            return None
        cfg = self.cfg
        tokens = state.step * cfg.train.batch_tokens
        summary = {
            "method": self.cfg.method.name, "seed": self.cfg.seed,
            "n_params": self.model.n_params(), "n_params_nonembedding": self.model.n_params_nonembedding(),
            "tokens": tokens, "steps": state.step, **compute_columns(tokens, self.per_token),
            "final_val_loss": final_val, "tokens_per_s": tokens / state.elapsed if state.elapsed > 0 else None,
            "elapsed_s": state.elapsed, "status": status, "data_fingerprint": self.data_record["fingerprint"],
        }
        if status == RunState.FAILED:
            summary["error"] = self.error
        summary["flops_per_token"] = per_token_record(self.method, self.per_token, self.data, cfg, self.device,
                                                      measure=status == "completed")
        atomic_write(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

    # --- evaluation and steps -----------------------------------------------------------------
    def log_evaluation(self, state: _State, n_evals_done: int, lr: float) -> float:
        """The validation loss at this step: measured and logged, or read back if logged before a kill."""
        method_means = self.method_metrics.take()  # the method's logged scalars since the last evaluation
        if state.step in self.logged:
            self.tracker.log_row(self.logged[state.step])  # the tracker dropped what it had from the step resumed
            return self.logged[state.step]["val_loss"]
        cfg, extra = self.cfg, {}
        if cfg.train.alignment_every_evals and n_evals_done % cfg.train.alignment_every_evals == 0 and state.step > 0:
            from .alignment import measure_alignment
            x, y = self.data.train_batch(state.step, self.schedule.n_seqs, cfg.model.context, cfg.seed)
            x, y = x[:self.micro_seqs].to(self.device), y[:self.micro_seqs].to(self.device)
            extra["alignment"] = measure_alignment(self.method, x, y,
                                                   autocast=lambda: autocast_context(cfg, self.device))
        val_loss, residual = validation_loss(self.model, self.data, cfg, self.device, self.micro_seqs)
        tokens = state.step * cfg.train.batch_tokens
        row = {"step": state.step, "tokens": tokens, **compute_columns(tokens, self.per_token),
               "train_loss": float(np.mean(state.train_losses)) if state.train_losses else None,
               "val_loss": val_loss, "lr": lr, "elapsed_s": state.elapsed, **extra, **residual, **method_means}
        append_line(self.out / "metrics.jsonl", json.dumps(row))
        self.rows.append(row)
        self.tracker.log_row(row)
        return val_loss

    def step(self, state: _State, lr: float, signalled: bool) -> tuple[float, bool]:
        """One optimizer step on global batch `state.step`; (loss over all ranks, whether any rank got a signal)."""
        cfg, schedule = self.cfg, self.schedule
        set_rates(self.optimizer, lr)
        info = StepInfo(state.step, lr)  # what the method's hooks are told (`method_step`)
        x, y = self.data.train_batch(state.step, schedule.n_seqs, cfg.model.context, cfg.seed)
        x, y = dist_utils.shard(x, self.ctx), dist_utils.shard(y, self.ctx)
        step_loss = compute_update(self.wrapped, self.method, x, y, cfg, self.device, schedule.accum, info)
        # one all-reduce: the global loss and whether any rank got a signal, so all stop together
        step_loss, stop = dist_utils.step_consensus(step_loss, signalled, self.ctx)
        if math.isfinite(step_loss):
            finish_update(self.method, self.optimizer, cfg.train.grad_clip, info)
        self.method_metrics.add(self.method)
        return step_loss, stop


def train(cfg: RunConfig, out: str | Path, quiet: bool = False, snapshot_steps=()) -> dict:
    """Train one run into `out` (resuming if it holds a checkpoint); return the summary.

    At each step of `snapshot_steps` the run's state is also kept as `branch-STEP.pt` (the trunk
    of branched budgets, `beyondbp.runs.chain`)."""
    cfg.method = resolve_method(cfg.method)  # settings checked, origin and version recorded in config.yaml
    check_complete(cfg.method.name)  # before the folder is made
    check_run_length(cfg)
    run = _Run(cfg, check_out_path(out), quiet)
    set_threads(cfg, run.say)
    check_same_config(run.out, cfg)
    # here with changed data only when train.on_data_change=restart, or for a finished run (left as it is)
    fresh = bool(run.data_changed) and cfg.train.on_data_change == "restart"
    if fresh:
        run.restart_on_new_data()
    if run.summary and run.summary.get("status") in FINISHED:
        run.say(f"{out}: run already {run.summary['status']}; nothing to do")
        return run.summary
    run.build()
    state = run.resume(fresh)
    with run_tracker(cfg, run.out, resume_step=state.step, enabled=run.main) as run.tracker:
        if run.tracker.location:
            run.say(f"tracking: {run.tracker.location}")
        status, val_loss = _train_steps(run, state, quiet, snapshot_steps)
    summary = run.write_summary(state, status, val_loss if status == RunState.COMPLETED else None)
    if run.main:  # only rank 0 evaluates: the others have no validation loss to tell
        msg = (f"final val loss {val_loss:.4f}" if status == RunState.COMPLETED else run.error if status == RunState.FAILED
               else f"diverged at step {state.step}")
        run.say(f"{out}: {status}: {msg}, {state.step * cfg.train.batch_tokens:,} tokens in {state.elapsed:.1f}s")
    return summary


def _train_steps(run: _Run, state: _State, quiet: bool, snapshot_steps=()) -> tuple[str, float | None]:
    """Step and evaluate from `state` to the end of the schedule; (status, last validation loss)."""
    cfg = run.cfg
    schedule, batch = run.schedule, cfg.train.batch_tokens
    eval_set = set(schedule.eval_steps)
    n_evals_done = sum(1 for s in schedule.eval_steps if s < state.step)
    last_ckpt = time.monotonic()
    bar = progress_bar(cfg, schedule.n_steps * batch, "tok", state.step * batch, run.main and not quiet,
                       unit_scale=True)
    status, val_loss = RunState.COMPLETED, None
    run.method.train()
    with _SignalFlag() as flag:
        while True:
            lr = learning_rate(cfg, min(state.step, schedule.n_steps - 1), schedule.n_steps)
            if state.step in eval_set and run.main:
                val_loss = run.log_evaluation(state, n_evals_done, lr)
                state.train_losses = []
                n_evals_done += 1
            if state.step >= schedule.n_steps:
                break
            t0 = time.perf_counter()
            step_loss, stop = run.step(state, lr, flag.signum is not None)
            if not math.isfinite(step_loss):
                status = RunState.DIVERGED
                break
            state.train_losses.append(step_loss)
            state.step += 1
            state.elapsed += time.perf_counter() - t0
            bar.update(batch)
            bar.set_postfix(loss=f"{step_loss:.3f}", refresh=False)
            if state.step in snapshot_steps:
                run.save_snapshot(state)
            if stop:
                run.save_checkpoint(state)
                bar.close()
                raise Interrupted(f"interrupted by signal {flag.signum or 'on another process'} at step "
                                  f"{state.step}; rerun the same command to resume")
            # the last step's state is saved by `finish`, once its weights are known to be finite
            if state.step < schedule.n_steps and time.monotonic() - last_ckpt > cfg.train.checkpoint_every_s:
                run.save_checkpoint(state)
                last_ckpt = time.monotonic()
    bar.close()
    if status == RunState.COMPLETED:
        status = run.finish(state, val_loss)
    return status, val_loss

