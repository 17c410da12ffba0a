"""Forward gradients by weight perturbation (Baydin et al. 2022, "Gradients without backpropagation").

For a random direction v (standard normal, every parameter at once), one forward-mode pass
(`torch.func.jvp`) gives the loss and its directional derivative d = grad(L) . v; the estimate
g = d v is unbiased, E[v v^T] = I. With `method.perturbations` = K directions per step the
update is the mean of K such estimates. No backward pass through the network is run: the
estimate is handed to the loop's one `objective.backward()` through a surrogate objective
sum_p <p, g_p> whose gradient with respect to each parameter p is g_p (an elementwise backward,
no activations), so gradient accumulation, clipping, DDP's all-reduce and the optimizer work as
for every other method.

The directions are drawn from torch's default generator: the run seed fixes them, checkpoints
save and restore its state (resumed runs draw the same directions), and every DDP rank draws the
same ones, so the mean of the ranks' estimates is the estimate on the whole batch.

Compute per token: one jvp costs about three forwards (the primal, and for each matmul the
tangent's two: dW x and W dx), so the paper count is K x 6N and the exact count K x 3 forwards.
Its variance grows with the number of parameters: expect slow learning (docs/results.md).
"""
from __future__ import annotations

import torch
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from .registry import register
from .settings import PERTURBATIONS
from .base import TrainingMethod


@register
class ForwardGradient(TrainingMethod):
    name = "forward_grad"
    summary = "forward gradients: jvp along K random weight directions, no backward; compute K x 6ND"
    supports = ("gpt", "mlp")
    settings = (PERTURBATIONS,)
    # at the shared 4,096 it ends on the unigram plateau (3.323 at 2M tokens); 4x the steps at the same
    # compute leave it (3.127): its estimate's noise, not the batch's, limits it (docs/methods.md)
    train_defaults = {"train.batch_tokens": 1024}

    def __init__(self, model, cfg, seed=0):
        super().__init__(model, cfg, seed)
        self.perturbations = cfg.perturbations

    def estimate(self, idx, targets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, {parameter name: the mean of K forward-gradient estimates})."""
        model = self.model
        params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

        def loss_of(values):
            with sdpa_kernel([SDPBackend.MATH]):  # the fused attention kernels have no forward-mode AD
                logits = functional_call(model, values, (idx,))[0]
            return model.loss_fn(logits, targets)

        estimate = {n: torch.zeros_like(p) for n, p in params.items()}
        for _ in range(self.perturbations):
            directions = {n: torch.randn_like(p) for n, p in params.items()}
            loss, slope = jvp(loss_of, (params,), (directions,))
            for n, v in directions.items():
                estimate[n].add_(v, alpha=slope.item() / self.perturbations)
        return loss, estimate

    def forward(self, idx, targets):
        loss, estimate = self.estimate(idx, targets)
        params = dict(self.model.named_parameters())
        objective = sum((params[n] * g).sum() for n, g in estimate.items())
        return loss.detach(), objective

    def compute_per_token(self):
        forward = self.model.flops_per_token()["exact"] // 3
        two_n = self.model.flops_per_token()["6N"] // 3
        k = self.perturbations
        return {"paper": k * 3 * two_n, "optimistic": k * 3 * two_n, "exact": k * 3 * forward}
