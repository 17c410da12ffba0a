"""The properties every training method must satisfy, one function each.

Each takes a `Subject`, raises `MethodCheckError` naming the property and what was measured
when the method breaks it, and returns the numbers it measured. The checks use the training
code itself (`train()`, `accumulate_gradients`, `measure_alignment`), so a method that passes
them trains in this toolkit as the built-in methods do.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ..runs.accounting import DECLARED
from ..methods.base import StepInfo
from ..train.alignment import measure_alignment, method_update
from ..train.method_step import compute_update
from .subject import Subject

LOSS_DROP = 0.5  # nats the validation loss must fall in the tiny run (5.55 -> about 3.3 is the unigram plateau)
FLOP_TOLERANCE = 0.01  # relative gap allowed between the declared exact count and FlopCounterMode's
# (every built-in method's exact count equals the measured one: both count matmuls and attention only)
# How far below the work done a paper or optimistic count may lie, both in BP's units (the measured
# exact count over BP's exact count, the declared count over BP's 6N). On the kit's model the built-in
# counts lie at most 3.9x below (`dfa`'s optimistic 2N, which takes the feedback projection for free);
# BP's work declared as 6N / 6 lies 6x below.
PLAUSIBLE_GAP = 5.0


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def loss_falls(subject: Subject) -> dict:
    """The validation loss of the tiny run falls by at least LOSS_DROP nats over its 30 steps."""
    rows = _rows(subject.reference_run)
    first, last = rows[0]["val_loss"], rows[-1]["val_loss"]
    measured = {"initial_val_loss": first, "final_val_loss": last, "steps": rows[-1]["step"]}
    if not (math.isfinite(last) and last <= first - LOSS_DROP):
        raise subject.fail("loss_falls", f"validation loss {first:.4f} at step 0 -> {last:.4f} at step "
                                         f"{rows[-1]['step']} (must fall by >= {LOSS_DROP} nats)")
    return measured


def update_in_grad(subject: Subject) -> dict:
    """`forward(idx, targets)` returns (loss, objective) without touching `.grad` or the weights;
    `loss` is the model's cross-entropy; one `objective.backward()` then leaves a finite, nonzero
    update in the `.grad` of every trainable parameter. A method with `uses_backward = False`:
    its `update_without_backward` gives that update, and its loss is the model's (1e-3)."""
    method = subject.build()
    if not method.uses_backward:
        return _update_without_backward(subject, method)
    x, y = subject.batch()
    named = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    before = [p.detach().clone() for _, p in named]
    out = method(x, y)
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        raise subject.fail("update_in_grad", f"forward returned {type(out).__name__}, not (loss, objective) tensors")
    loss, objective = out
    if loss.numel() != 1 or objective.numel() != 1 or not objective.requires_grad:
        raise subject.fail("update_in_grad", f"loss has {loss.numel()} element(s), objective {objective.numel()} "
                                             f"(requires_grad={objective.requires_grad}); both must be scalars, "
                                             f"the objective differentiable")
    early = [n for n, p in named if p.grad is not None]
    if early:
        raise subject.fail("update_in_grad", f"forward already wrote .grad of {len(early)} parameter(s) "
                                             f"({early[0]}, ...): the update must come from objective.backward()")
    with torch.no_grad():
        true_loss = method.model(x, y)[1].item()
    if not math.isclose(loss.item(), true_loss, rel_tol=1e-4, abs_tol=1e-5):
        raise subject.fail("update_in_grad", f"loss {loss.item():.6f} is not the model's cross-entropy {true_loss:.6f}")
    objective.backward()
    return _check_grads(subject, named, before, loss.item(), true_loss, "objective.backward()")


def _update_without_backward(subject: Subject, method) -> dict:
    x, y = subject.batch()
    named = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    before = [p.detach().clone() for _, p in named]
    loss = method_update(method, x, y)
    with torch.no_grad():
        true_loss = method.model(x, y)[1].item()
    if not math.isclose(loss.item(), true_loss, rel_tol=1e-3, abs_tol=1e-4):
        raise subject.fail("update_in_grad", f"loss {loss.item():.6f} is not the model's cross-entropy {true_loss:.6f}")
    return _check_grads(subject, named, before, loss.item(), true_loss, "update_without_backward()")


def _check_grads(subject: Subject, named, before, loss: float, true_loss: float, how: str) -> dict:
    missing = [n for n, p in named if p.grad is None]
    bad = [n for n, p in named if p.grad is not None and not torch.isfinite(p.grad).all()]
    moved = [n for (n, p), b in zip(named, before) if not torch.equal(p.detach(), b)]
    norm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for _, p in named if p.grad is not None))
    for what, names in ((f"no .grad after {how}", missing), ("a non-finite .grad", bad),
                        ("weights changed by the update (the optimizer applies it)", moved)):
        if names:
            raise subject.fail("update_in_grad", f"{len(names)} of {len(named)} trainable parameters have "
                                                 f"{what}: {', '.join(names[:4])}")
    if norm == 0.0:
        raise subject.fail("update_in_grad", f"the update is zero in all {len(named)} trainable parameters")
    return {"loss": loss, "model_loss": true_loss, "grad_norm": norm, "trainable_parameters": len(named)}


def compute_declared(subject: Subject) -> dict:
    """compute_per_token() gives a positive, finite number for every accounting, and its exact
    count agrees with the FLOPs FlopCounterMode measures in one forward and backward, within
    FLOP_TOLERANCE (matmuls and attention only, as the exact count is defined); the paper and
    optimistic counts lie no more than PLAUSIBLE_GAP below that measured work, in BP's units."""
    method = subject.build()
    declared = method.compute_per_token()
    if not isinstance(declared, dict):
        raise subject.fail("compute_declared", f"compute_per_token() returned {type(declared).__name__}, not a dict")
    missing = [a for a in DECLARED if a not in declared]
    if missing:
        raise subject.fail("compute_declared", f"compute_per_token() lacks {', '.join(map(repr, missing))} "
                                               f"(has {', '.join(map(repr, declared)) or 'nothing'})")
    for key in DECLARED:
        value = declared[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise subject.fail("compute_declared", f"compute_per_token()[{key!r}] = {value!r}: "
                                                   f"must be a positive finite number")
    x, y = subject.batch()
    # the math attention path runs as matmuls FlopCounterMode sees (the fused CPU kernel is not counted)
    with FlopCounterMode(display=False) as counter, sdpa_kernel([SDPBackend.MATH]):
        method_update(method, x, y)
    measured = counter.get_total_flops() / y.numel()
    ratio = measured / declared["exact"]
    if abs(ratio - 1) > FLOP_TOLERANCE:
        raise subject.fail("compute_declared", f"declared exact {declared['exact']:,.0f} FLOPs per token, measured "
                                               f"{measured:,.0f} (ratio {ratio:.3f}, tolerance "
                                               f"{FLOP_TOLERANCE:.0%})")
    gaps = _plausible(subject, method, declared, measured)
    return {**{f"declared_{k}": float(declared[k]) for k in DECLARED}, "measured_exact": measured,
            "measured_over_declared": ratio, **gaps}


def _plausible(subject: Subject, method, declared: dict, measured: float) -> dict:
    """{f"{key}_gap"}: how many times the paper and optimistic counts lie below the measured work,
    each side in BP's units on this model; a gap above PLAUSIBLE_GAP fails, named."""
    bp = method.model.flops_per_token()
    work = measured / bp["exact"]
    gaps = {}
    for key in ("paper", "optimistic"):
        claim = declared[key] / bp["6N"]
        gaps[f"{key}_gap"] = gap = work / claim
        if gap > PLAUSIBLE_GAP:
            raise subject.fail("compute_declared", f"declared {key} count {declared[key]:,.0f} FLOPs per token "
                                                   f"({claim:.2f}x BP's 6N) lies {gap:.1f}x below the work "
                                                   f"measured ({measured:,.0f} exact, {work:.2f}x BP's exact "
                                                   f"count); at most {PLAUSIBLE_GAP:g}x is plausible")
    return gaps


def alignment_measurable(subject: Subject) -> dict:
    """measure_alignment gives a finite cosine in [-1, 1] for every block the method names."""
    method = subject.build()
    names, blocks = method.block_names(), method.block_parameters()
    if len(names) != len(blocks) or not names:
        raise subject.fail("alignment_measurable", f"block_names() has {len(names)} names, block_parameters() "
                                                   f"{len(blocks)} groups (must be equal and nonzero)")
    x, y = subject.batch()
    cosines = measure_alignment(method, x, y)
    bad = {k: v for k, v in cosines.items() if not (math.isfinite(v) and -1 - 1e-9 <= v <= 1 + 1e-9)}
    if list(cosines) != names or bad:
        raise subject.fail("alignment_measurable", f"alignment per block {cosines} (blocks {names}; "
                                                   f"each must be a finite cosine)")
    return {f"alignment_{k}": v for k, v in cosines.items()}


def bf16_autocast(subject: Subject) -> dict:
    """One training step's forward and backward under CPU bfloat16 autocast gives a finite loss
    and a finite, nonzero update (`train.dtype=bfloat16`)."""
    cfg = subject.fresh_config(**{"train.dtype": "bfloat16"})
    method = subject.build(cfg)
    x, y = subject.batch()
    loss = compute_update(method, method, x, y, cfg, torch.device("cpu"), 1, StepInfo(0, cfg.train.lr)).item()
    grads = [p.grad for p in method.trainable_parameters() if p.grad is not None]
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    if not (math.isfinite(loss) and math.isfinite(norm) and norm > 0):
        raise subject.fail("bf16_autocast", f"under bf16 autocast: loss {loss}, update norm {norm} over "
                                            f"{len(grads)} parameters (must be finite, the update nonzero)")
    return {"bf16_loss": loss, "bf16_grad_norm": norm}
