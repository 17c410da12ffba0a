"""Property `ddp_matches_single`: two DDP processes (gloo, CPU) train as one process does on the
same global batches.

Both ranks are forked from this process (so a class defined in a test file needs no import by
name), join a gloo group through a file store, wrap the method with the training code's own
`distributed.wrap`, and take STEPS optimizer steps on their halves of the global batches with
`method_step.compute_update` and `finish_update` (every path of the step API: hooks, the
method's own optimizer groups, updates made without a backward). The first step's gradients and the state after it
must equal one process's on the whole batches, up to the float rounding of the all-reduce, and
both ranks must end every step with bit-identical state (weights and buffers).

Only the first step is compared with one process: later steps start from weights that differ
by that rounding, which a high-variance estimate can amplify (forward gradients: 1e-7 in the
weights after step 1 became 6e-4 in step 2's estimate, with no fault in the method).
"""
from __future__ import annotations

import multiprocessing
import time

import torch
import torch.distributed as dist

from ..train import distributed as dist_utils
from ..methods.base import StepInfo
from ..train.method_step import build_optimizer, compute_update, finish_update, set_rates
from .errors import MethodCheckSkipped
from .subject import Subject

STEPS = 2
WORLD = 2
TIMEOUT_S = 120.0
# The all-reduce sums in another order than one process: gradients may differ by float rounding
# (atol relative to the largest gradient entry); AdamW turns rounding noise in a zero gradient
# into steps of ~1e-6 (eps 1e-8), hence the weights' own absolute tolerance.
RTOL, GRAD_ATOL_SCALE, PARAM_ATOL = 1e-4, 1e-5, 3e-5


def _train(subject: Subject, ctx: dist_utils.DistContext) -> dict:
    """{'grad.<name>': the first step's gradient, 'step1.<key>': the method's state after it,
    'final.<key>': its state after STEPS steps}."""
    cfg, device = subject.config, torch.device("cpu")
    method = subject.build()
    wrapped = dist_utils.wrap(method, ctx, device)
    optimizer = build_optimizer(cfg, method)
    record = {}
    for step in range(STEPS):
        x, y = subject.batch(step)
        info = StepInfo(step, cfg.train.lr)
        set_rates(optimizer, info.lr)
        compute_update(wrapped, method, dist_utils.shard(x, ctx), dist_utils.shard(y, ctx), cfg, device, 1, info)
        if step == 0:
            record.update({f"grad.{n}": p.grad.detach().clone()
                           for n, p in method.named_parameters() if p.grad is not None})
        finish_update(method, optimizer, cfg.train.grad_clip, info)
        if step == 0:
            record.update({f"step1.{k}": v.detach().clone() for k, v in method.state_dict().items()})
    record.update({f"final.{k}": v.detach().clone() for k, v in method.state_dict().items()})
    return record


def _rank_main(rank: int, subject: Subject, store: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        record = _train(subject, dist_utils.DistContext(rank, WORLD, rank))
        torch.save(record, subject.workdir / f"ddp_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _skip_reason() -> str | None:
    if not dist.is_available() or not dist.is_gloo_available():
        return "this PyTorch build has no gloo backend"
    if "fork" not in multiprocessing.get_all_start_methods():
        return "the platform cannot fork processes"
    if dist.is_initialized():
        return "this process is already in a process group"
    return None


def _run_ranks(subject: Subject) -> list[dict]:
    import torch.multiprocessing as tmp
    subject.data  # loaded once, inherited by both ranks
    store = subject.workdir / "ddp_store"
    store.unlink(missing_ok=True)
    ctx = tmp.start_processes(_rank_main, args=(subject, str(store)), nprocs=WORLD, join=False,
                              start_method="fork")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {WORLD} processes did not finish within {TIMEOUT_S:.0f} s")
    finally:
        for process in ctx.processes:
            if process.is_alive():
                process.kill()
    return [torch.load(subject.workdir / f"ddp_rank{r}.pt", weights_only=True) for r in range(WORLD)]


def ddp_matches_single(subject: Subject) -> dict:
    reason = _skip_reason()
    if reason:
        raise MethodCheckSkipped(f"ddp_matches_single skipped: {reason}")
    with subject.registered():
        ranks = _run_ranks(subject)
        single = _train(subject, dist_utils.DistContext())
    if ranks[0].keys() != single.keys():
        missing = sorted(set(single) ^ set(ranks[0]))
        raise subject.fail("ddp_matches_single", f"{WORLD} processes and one produce different gradients "
                                                 f"or state: {', '.join(missing[:4])}")
    for name in ranks[0]:
        if name.startswith("final.") and not torch.equal(ranks[0][name], ranks[1][name]):
            gap = (ranks[0][name].double() - ranks[1][name].double()).abs().max().item()
            raise subject.fail("ddp_matches_single", f"after {STEPS} steps ranks 0 and 1 hold different "
                                                     f"{name[6:]} (max abs difference {gap:.3g})")
    scale = max(v.abs().max().item() for k, v in single.items() if k.startswith("grad.") and v.numel())
    worst, worst_name = 0.0, ""
    for name, want in single.items():
        if name.startswith("final.") or not want.is_floating_point() or not want.numel():
            continue
        atol = GRAD_ATOL_SCALE * scale if name.startswith("grad.") else PARAM_ATOL
        excess = ((ranks[0][name] - want).abs() - (RTOL * want.abs() + atol)).max().item()
        if excess > worst:
            worst, worst_name = excess, name
    if worst > 0:
        gap = (ranks[0][worst_name] - single[worst_name]).abs().max().item()
        raise subject.fail("ddp_matches_single", f"{worst_name} differs between {WORLD} processes and one by up to "
                                                 f"{gap:.3g} (allowed {gap - worst:.3g})")
    return {"processes": WORLD, "steps": STEPS, "tensors_compared": len(single), "largest_grad": scale}
