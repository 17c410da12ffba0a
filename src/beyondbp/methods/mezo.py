"""Zeroth-order SGD as MeZO does it (Malladi et al. 2023, "Fine-Tuning Language Models with Just
Forward Passes"): two forward passes with a seeded perturbation, no backward.

For a direction z (standard normal, every weight at once) the loss is measured at theta + eps z
and theta - eps z; g = (L+ - L-) / (2 eps) estimates the directional derivative, and g z the
gradient (SPSA). With `method.perturbations` = K directions a step's update is the mean of K
such estimates. z is never stored: it is drawn from a generator seeded by (run seed, step,
micro-batch, direction), once for each of the two passes (their losses in float64) and once more as the update is handed
over, parameter by parameter (`update_without_backward`; the weights themselves are never
changed in place, the passes see theta +- eps z as a transient copy, so no rounding drift
accumulates). The update goes to the optimizer as every other method's does: averaged over
micro-batches and DDP ranks (every rank draws the same z), clipped, AdamW. Every DDP rank and
a resumed run draw the same directions, since the seed is a function of the step.

Compute: 2 forwards per direction, no backward: paper and optimistic 2 x 2N x K, exact 2 x the
forward's FLOPs x K (drawing z is O(N) per step, neglected as the optimizer is).
"""
from __future__ import annotations

import hashlib

import torch
from torch.func import functional_call

from .base import StepInfo, TrainingMethod
from .registry import register
from .settings import EPSILON, ZO_PERTURBATIONS


@register
class MeZO(TrainingMethod):
    name = "mezo"
    summary = "zeroth-order SGD (MeZO): two forwards with a seeded perturbation, no backward; compute K x 4ND"
    supports = ("gpt",)
    settings = (EPSILON, ZO_PERTURBATIONS)
    uses_backward = False
    # as forward gradients: the estimate's noise, not the batch's, limits it, so more steps help
    train_defaults = {"train.batch_tokens": 1024}

    def directions(self, step: StepInfo, k: int):
        """(name, parameter, z) for every trainable parameter, z drawn afresh from the seed of
        (run seed, step, micro-batch, direction k): the same z each call."""
        key = f"mezo {self.seed} {step.step} {step.micro_batch} {k}".encode()
        seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
        generators = {}
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                gen = generators.get(param.device)
                if gen is None:
                    gen = generators[param.device] = torch.Generator(device=param.device).manual_seed(seed)
                yield name, param, torch.randn(param.shape, generator=gen, device=param.device, dtype=param.dtype)

    def perturbed_loss(self, idx, targets, step: StepInfo, k: int, sign: float) -> torch.Tensor:
        eps = self.cfg.epsilon
        values = {name: param + sign * eps * z for name, param, z in self.directions(step, k)}
        logits = functional_call(self.model, values, (idx,))[0]
        # in float64: the difference of two near-equal losses keeps its digits, and a DDP rank's mean
        # over its rows averages to the whole batch's without float32's rounding (which the division
        # by 2 eps would amplify)
        return self.model.loss_fn(logits.double(), targets)

    @torch.no_grad()
    def update_without_backward(self, idx, targets, step: StepInfo):
        k_total = self.perturbations
        slopes, losses = [], []
        for k in range(k_total):
            plus = self.perturbed_loss(idx, targets, step, k, 1.0)
            minus = self.perturbed_loss(idx, targets, step, k, -1.0)
            slopes.append((plus - minus) / (2 * self.cfg.epsilon))
            losses.append((plus + minus) / 2)
        self.log("projected_grad_rms", torch.stack(slopes).pow(2).mean().sqrt())

        def updates():
            for k, slope in enumerate(slopes):
                for _, param, z in self.directions(step, k):
                    yield param, z * (slope / k_total).to(z.dtype)
        return torch.stack(losses).mean(), updates()

    @property
    def perturbations(self) -> int:
        return self.cfg.perturbations

    def compute_per_token(self):
        k = self.perturbations
        forward = self.model.forward_flops_per_token()
        two_n = 2 * self.model.n_params_nonembedding()
        return {"paper": 2 * two_n * k, "optimistic": 2 * two_n * k, "exact": 2 * forward * k}
