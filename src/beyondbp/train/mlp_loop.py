"""Training runs of the fully-connected track: epochs over a small in-memory dataset.

The same method objects as the Transformer track make the updates (`setup.build_trainer`, the set-up
both loops share, kind "mlp"); AdamW (`step.make_optimizer`: decay on weight matrices only) at a constant
learning rate applies them, without clipping (`step.apply_update`). The track's defaults (lr,
beta2, weight decay) are `beyondbp.config.TRACK_DEFAULTS`'s. A run directory holds
`config.yaml`, `metrics.jsonl` (one row per epoch, epoch 0 before any training),
`summary.json` (both also in the Transformer track's columns: step, tokens = examples,
val_loss = test loss, compute_*; so `beyondbp study` sweeps MLPs too), `angles.png` and
`comparison.md` (this run beside its sibling runs, `mlp_outputs`).

Alignment, per epoch, on a fixed batch of test examples (as in Lillicrap et al.'s figure):
- `angle_hidden[layerK]`: angle between the signal the method delivers to hidden layer K's
  output (B e for DFA, the FA-propagated gradient for FA, the true gradient for BP) and the
  true BP gradient there, averaged over the examples;
- `angle_weights[layerK|output]`: angle between the method's weight update and the BP gradient.
Both come from `alignment.signal_comparison`, on a float64 copy of the method with the RNG state
restored, so training is not disturbed.
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic_write import append_line, atomic_write, refuse_links
from ..config import RunConfig, dump_yaml, validate_config
from ..data.images import load_image_data
from ..methods.registry import resolve as resolve_method
from ..model.shape import resolve_mlp_config
from .alignment import signal_comparison
from .memory import check_memory
from .mlp_outputs import COMPARED_METHODS, comparison_table, plot_angles, sibling_runs
from ..runs.folder import (FINISHED, RunState, check_out_path, check_same_config, check_writable, compute_columns,
                           read_metrics, read_summary)
from .step import apply_update, pick_device, progress_bar, set_threads
from .setup import build_trainer
from .tracking import Tracker, check_tracker, run_tracker

ANGLE_EXAMPLES = 256


@dataclass
class _MLPRun:
    """One MLP run's pieces: the model, the method, AdamW, the data on the device."""
    cfg: RunConfig
    model: torch.nn.Module
    method: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @classmethod
    def build(cls, cfg: RunConfig, data, device: torch.device) -> "_MLPRun":
        model, method, optimizer = build_trainer(cfg, device)  # cfg.model.kind is "mlp" (`run_mlp`)
        tensors = [torch.from_numpy(a).to(device) for a in (data.train_x, data.train_y, data.test_x, data.test_y)]
        return cls(cfg, model, method, optimizer, *tensors)

    def epoch_row(self, epoch: int, train_loss: float | None, elapsed: float, per_example: dict) -> dict:
        """The metrics row after `epoch` epochs: test error and loss, angles, the common columns."""
        angle_hidden, angle_weights = measure_angles(self.method, self.test_x[:ANGLE_EXAMPLES],
                                                     self.test_y[:ANGLE_EXAMPLES])
        test_error, test_loss = test_metrics(self.model, self.test_x, self.test_y)
        examples = epoch * len(self.train_x)
        steps_per_epoch = math.ceil(len(self.train_x) / self.cfg.mlp.batch_examples)
        return {"epoch": epoch, "examples": examples, "train_loss": train_loss,
                "test_loss": test_loss, "test_error": test_error, "angle_hidden": angle_hidden,
                "angle_weights": angle_weights, "elapsed_s": elapsed,
                # the Transformer track's columns, so studies and reports read MLP runs alike
                "step": epoch * steps_per_epoch, "tokens": examples, "val_loss": test_loss,
                **compute_columns(examples, per_example)}


def run_mlp(cfg: RunConfig, out: str | Path, quiet: bool = False) -> dict:
    """Train one MLP run into `out` (or, with method=all, BP, FA and DFA into out/<method>)."""
    if cfg.method.name == "all":
        return run_mlp_all(cfg, out, quiet)
    out = check_out_path(out)
    validate_config(cfg)
    check_tracker(cfg.train.tracker)
    cfg.method = resolve_method(cfg.method)
    check_writable(out)
    cfg.model.kind = "mlp"
    data = load_image_data(cfg.mlp.dataset, cfg.data)
    resolve_mlp_config(cfg.mlp, data.n_inputs, data.n_classes)
    cfg.mlp.examples = cfg.mlp.epochs * len(data.train_x)
    check_same_config(out, cfg)
    done = read_summary(out)
    if done and done.get("status") in FINISHED:
        if not quiet:
            print(f"{out}: run already done; nothing to do", file=sys.stderr)
        return done
    device = pick_device(cfg)
    check_memory(cfg, cfg.mlp.batch_examples, device)
    set_threads(cfg, (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr)))
    run = _MLPRun.build(cfg, data, device)
    atomic_write(out / "config.yaml", dump_yaml(cfg))
    atomic_write(out / "metrics.jsonl", "")  # an MLP run restarts from epoch 0: no checkpoints
    with run_tracker(cfg, out) as tracker:  # an MLP run starts over from epoch 0: so does its tracker run
        if tracker.location and not quiet:
            print(f"tracking: {tracker.location}", file=sys.stderr)
        rows, elapsed, status = _train_epochs(run, out, quiet, tracker)
    summary = _summary(run, rows, elapsed, status)
    atomic_write(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    plot_angles(out / "angles.png", [(cfg.method.name, rows)])
    atomic_write(out / "comparison.md", comparison_table(sibling_runs(out)))
    if not quiet:
        err = f"test error {summary['test_error']:.4f}" if status == RunState.COMPLETED else "diverged"
        print(f"{out}: {status}: {err} after {summary['epochs']} epochs in {elapsed:.1f}s", file=sys.stderr)
    return summary


def _train_epochs(run: _MLPRun, out: Path, quiet: bool, tracker: Tracker) -> tuple[list[dict], float, str]:
    """Epoch 0 (before training) to mlp.epochs, a metrics row each; (rows, seconds, status)."""
    cfg = run.cfg
    per_example = run.method.compute_per_token()  # one "token" is one example
    shuffle = torch.Generator().manual_seed(cfg.seed)
    rows, elapsed, status = [], 0.0, RunState.COMPLETED
    bar = progress_bar(cfg, cfg.mlp.epochs, "epoch", enabled=not quiet)
    for epoch in range(cfg.mlp.epochs + 1):
        train_loss = None
        if epoch > 0:
            t0 = time.perf_counter()
            train_loss = train_epoch(run.method, run.optimizer, run.train_x, run.train_y, cfg.mlp.batch_examples,
                                     shuffle)
            elapsed += time.perf_counter() - t0
            if not math.isfinite(train_loss):
                status = RunState.DIVERGED
                break
        rows.append(run.epoch_row(epoch, train_loss, elapsed, per_example))
        append_line(out / "metrics.jsonl", json.dumps(rows[-1]))
        tracker.log_row(rows[-1])
        if epoch > 0:
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}", test_error=f"{rows[-1]['test_error']:.3f}", refresh=False)
    bar.close()
    return rows, elapsed, status


def _summary(run: _MLPRun, rows: list[dict], elapsed: float, status: str) -> dict:
    cfg, last = run.cfg, rows[-1]
    examples = last["examples"]
    return {
        "method": cfg.method.name, "seed": cfg.seed, "dataset": cfg.mlp.dataset,
        "depth": cfg.mlp.depth, "width": cfg.mlp.width, "activation": cfg.mlp.activation,
        "n_params": run.model.n_params(), "epochs": last["epoch"], "examples": examples,
        "tokens": examples, "steps": last["step"], **compute_columns(examples, run.method.compute_per_token()),
        "test_error": last["test_error"] if status == RunState.COMPLETED else None,
        "final_val_loss": last["test_loss"] if status == RunState.COMPLETED else None,
        "train_loss": last["train_loss"], "angle_hidden": last["angle_hidden"],
        "angle_weights": last["angle_weights"], "elapsed_s": elapsed, "status": status,
    }


def run_mlp_all(cfg: RunConfig, out: str | Path, quiet: bool = False) -> dict:
    """BP, FA and DFA with the same settings into out/bp, out/fa, out/dfa; table and figure in out."""
    out = check_out_path(out)
    summaries = {}
    for name in COMPARED_METHODS:
        run_cfg = copy.deepcopy(cfg)
        run_cfg.method.name = name
        refuse_links(out / name, inside=out)  # a received out/bp linked elsewhere is not trained into
        summaries[name] = run_mlp(run_cfg, out / name, quiet)
    runs = [(out / name, summaries[name]) for name in COMPARED_METHODS]
    atomic_write(out / "comparison.md", comparison_table(runs))
    plot_angles(out / "angles.png", [(name, read_metrics(out / name / "metrics.jsonl")) for name in COMPARED_METHODS])
    status = (RunState.COMPLETED if all(s["status"] == RunState.COMPLETED for s in summaries.values())
              else RunState.DIVERGED)
    return {"method": "all", "status": status, "runs": summaries}


def train_epoch(method, optimizer, x, y, batch_size: int, shuffle: torch.Generator) -> float:
    """One pass over the training set in shuffled minibatches; the mean training loss."""
    method.train()
    order = torch.randperm(len(x), generator=shuffle).to(x.device)
    total = torch.zeros((), device=x.device)
    for batch in order.split(batch_size):
        loss, objective = method(x[batch], y[batch])
        objective.backward()
        apply_update(method, optimizer, grad_clip=0.0)  # the MLP track trains without clipping
        total += loss.detach() * len(batch)
    return (total / len(x)).item()


@torch.no_grad()
def test_metrics(model, x, y) -> tuple[float, float]:
    """(test error, test loss) over the whole split."""
    logits, loss = model(x, y)
    return (logits.argmax(-1) != y).float().mean().item(), loss.item()


# --- alignment angles ---------------------------------------------------------------------
def measure_angles(method, x, y) -> tuple[dict, dict]:
    """Per layer: angle (degrees) of the method's hidden signal and weight update to BP's.

    Measured on a float64 copy of the method: the training state is not touched, and examples
    with a tiny error do not turn float32 rounding into spurious angles. None where no signal
    reaches a layer (e.g. frozen by the shallow baseline).
    """
    probe = copy.deepcopy(method).double()
    model = probe.model
    weights = {f"layer{i + 1}": b.linear.weight for i, b in enumerate(model.blocks)}
    weights["output"] = model.output.weight
    rows, grads = signal_comparison(probe, x.double(), y, weights.values())
    angle_hidden = {f"layer{i + 1}": _mean_angle(rows.get(f"block{i}")) for i in range(len(model.blocks))}
    angle_weights = {name: _angle(*pair) for name, pair in zip(weights, grads)}
    return angle_hidden, angle_weights


def _angle(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    if a is None or b is None:
        return None
    cos = torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0, eps=1e-30)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos.item()))))


def _mean_angle(cosines: torch.Tensor | None) -> float | None:
    """Mean angle (degrees) of per-example cosines; None when no example carries a signal."""
    if cosines is None or not cosines.numel():
        return None
    return torch.rad2deg(torch.acos(cosines.clamp(-1.0, 1.0))).mean().item()
