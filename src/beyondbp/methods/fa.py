"""Feedback Alignment (Lillicrap et al. 2016): the layer-by-layer backward with fixed random weights.

Every linear layer propagates the gradient to its input through a fixed random matrix B of the
weight's shape instead of W itself (grad_x = grad_out @ B, not grad_out @ W); its own weight and
bias gradients stay exact given that incoming signal. Everything else (embeddings, LayerNorm,
attention scores, non-linearities, residual sums) is differentiated exactly, so the output layer
receives its true gradient and each layer below receives the FA-propagated one.

The model is not changed: during the method's forward a `TorchFunctionMode` redirects each
`F.linear` call whose weight is one of the model's linear weights to `FALinear` with that
weight's B. Each B is a registered buffer drawn once from the run seed, Gaussian with the
standard deviation the weight had at initialisation (times `method.feedback_scale`), so the
FA signal starts at the size the BP signal would have.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .registry import register
from .settings import FEEDBACK_SCALE
from .base import TrainingMethod


class FALinear(torch.autograd.Function):
    """y = x W^T + b in the forward; in the backward the input gradient goes through B, not W."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback):
        ctx.save_for_backward(x, weight, feedback)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, feedback = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_out @ feedback.to(grad_out.dtype)).to(x.dtype)
        if ctx.needs_input_grad[1]:
            flat_out = grad_out.reshape(-1, grad_out.shape[-1])
            flat_x = x.reshape(-1, x.shape[-1]).to(grad_out.dtype)
            grad_w = (flat_out.t() @ flat_x).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.reshape(-1, grad_out.shape[-1]).sum(0)
        return grad_x, grad_w, grad_b, None


class FeedbackLinearMode(TorchFunctionMode):
    """Routes F.linear calls on known weights (matched by identity: {id(weight): B}) through
    FALinear; outside methods with another feedback matrix use it too (examples/sign_symmetry)."""

    def __init__(self, feedback_by_weight: dict[int, torch.Tensor]):
        super().__init__()
        self.feedback_by_weight = feedback_by_weight

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight, bias = _linear_args(*args, **kwargs)
            feedback = self.feedback_by_weight.get(id(weight))
            if feedback is not None:
                return FALinear.apply(x, weight, bias, feedback)
        return func(*args, **kwargs)


def _linear_args(input, weight, bias=None):
    return input, weight, bias


def _buffer_name(module_name: str) -> str:
    return "feedback_" + module_name.replace(".", "_")


@register
class FeedbackAlignment(TrainingMethod):
    name = "fa"
    summary = "feedback alignment: layer-by-layer backward through fixed random B; compute 6ND"
    supports = ("gpt", "mlp")
    settings = (FEEDBACK_SCALE,)

    def __init__(self, model, cfg, seed=0):
        super().__init__(model, cfg, seed)
        self.linear_names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        gen = self.generator(offset=1)
        for module_name in self.linear_names:
            weight = model.get_submodule(module_name).weight.detach()
            std = weight.float().std().item() * cfg.feedback_scale
            feedback = torch.randn(weight.shape, generator=gen) * std
            self.register_buffer(_buffer_name(module_name), feedback.to(weight.dtype))

    def feedback_matrices(self) -> dict[str, torch.Tensor]:
        """Linear module name -> its fixed feedback matrix B (same shape as the weight)."""
        return {n: getattr(self, _buffer_name(n)) for n in self.linear_names}

    def forward(self, idx, targets):
        feedback_by_weight = {id(self.model.get_submodule(n).weight): b
                              for n, b in self.feedback_matrices().items()}
        with FeedbackLinearMode(feedback_by_weight):
            _, loss = self.model(idx, targets)
        return loss, loss

    def compute_per_token(self):
        flops = self.model.flops_per_token()  # the same work as BP, only another matrix
        return {"paper": flops["6N"], "optimistic": flops["6N"], "exact": flops["exact"]}
