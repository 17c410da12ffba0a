"""Direct Random Target Projection (Frenkel, Lefebvre and Bol 2021, "Learning without feedback"):
each hidden block is taught by a fixed random projection of the target, not of the error.

DFA sends B e, e = softmax - onehot(y), to every hidden layer; DRTP drops the prediction from
it and sends B (-onehot(y)) = -B[y], which is known before the forward pass: no error, no
feedback path, no waiting for the output. Here, on a GPT, the signal -B[y] / (tokens) enters at
the embedding output and at each block's output but the last (through a parameter-free
LayerNorm of it, `method.target_point`) and is backpropagated within that block; every block's
input is detached. The last block and the head learn by backpropagation from the loss, the
paper's rule for the output layer. B is one registered buffer (vocabulary x d_model, Gaussian
with standard deviation `method.feedback_scale` / sqrt(vocabulary)), drawn once from the run
seed; one objective, loss + sum over points of <point, signal>, carries everything in one
backward, so DDP and autocast need nothing of their own.

Compute: like the block-wise DFA, each block's backward is the one BP pays (~6N); the signal is
a row lookup (no matmul), so the exact count is the forward, every block's backward and the head's.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import TrainingMethod
from .dfa import gpt_block_matmul_flops
from .registry import register
from .settings import FEEDBACK_SCALE, TARGET_POINT


@register
class DirectRandomTargetProjection(TrainingMethod):
    name = "drtp"
    summary = "direct random target projection: each hidden block taught by B applied to the target; compute ~6ND"
    supports = ("gpt",)
    settings = (FEEDBACK_SCALE, TARGET_POINT)

    def __init__(self, model, cfg, seed=0):
        super().__init__(model, cfg, seed)
        vocab, width = model.config.vocab_size, model.config.d_model
        projection = torch.randn(vocab, width, generator=self.generator(offset=3)) * cfg.feedback_scale / math.sqrt(vocab)
        self.register_buffer("projection", projection)

    def signal(self, targets: torch.Tensor) -> torch.Tensor:
        """-B[y] / (number of targets): the teaching signal at every hidden point, [batch, T, d_model]."""
        return -self.projection[targets] / targets.numel()

    def forward(self, idx, targets):
        model = self.model
        h = model.embed(idx)
        points = [h]
        h = h.detach()
        for block in model.blocks[:-1]:
            out = block(h)
            points.append(F.layer_norm(out, out.shape[-1:]) if self.cfg.target_point == "layernorm" else out)
            h = out.detach()
        logits = model.head(model.blocks[-1](h))  # the last block and the head: backpropagation
        loss = model.loss_fn(logits, targets)
        signal = self.signal(targets)
        taught = sum((point * signal.to(point.dtype)).sum() for point in points)
        return loss, loss + taught

    def compute_per_token(self):
        model = self.model
        full_backward = 2 * sum(gpt_block_matmul_flops(model.config).values())
        exact = model.forward_flops_per_token() + len(model.blocks) * full_backward \
            + 2 * model.head_forward_flops_per_token()
        six_n = 6 * model.n_params_nonembedding()
        return {"paper": six_n, "optimistic": six_n, "exact": exact}
