"""Direct Feedback Alignment (Nøkland 2016), the canonical variant of the paper's Table 2.

Every layer receives a fixed random projection B e of the global error instead of the gradient
backpropagated from the layer above: dW_i = -[(B e) ⊙ f'(a_i)] h_{i-1}^T. Here e is the
gradient of the mean loss at the logits (softmax - onehot, already divided by the number of
tokens).

How the feedback enters, in one backward: every injection point's output goes to the next layer
DETACHED (no gradient flows between layers, and no layer computes the gradient of its input —
this is what makes DFA's 4N real) and also into `FeedbackTap`, an identity placed on the error
point z. In the backward the tap receives g = dLoss/dz, passes g on to z unchanged and hands
B_i g to every injection point, from which autograd computes the layer's weight gradients.
One `objective.backward()` does everything: no hooks, no nested backward, so DDP works.

Injection points:
- GPT: the embedding output (the first layer) and, in every block but the last, every layer
  with parameters: ln_1, the qkv projection, the attention output projection, ln_2, the MLP
  hidden activation (so the signal is B e ⊙ f'(a)) and the MLP output projection. Each layer's
  input is detached, so a block's backward is its four weight-gradient matmuls and nothing
  else: no input gradients, no backward through the softmax attention (it has no parameters).
  With the shared B, layers of one width get the same columns of B e. The last block and the
  head are trained with backpropagation (the paper's rule).
- Any other model with `embed`/`blocks`/`head`/`loss_fn` (the MLP track): every block is one
  injection point and the output layer gets its true gradient (Nøkland's DFA).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .feedback import FeedbackBank
from ..model.gpt import Block, relu_tanh_backward
from .registry import register
from .settings import FEEDBACK, FEEDBACK_SCALE, PROJECTION
from .base import TrainingMethod


class FeedbackTap(torch.autograd.Function):
    """Identity on z; in the backward, g = dLoss/dz goes on to z and B_i g to each injection point."""

    @staticmethod
    def forward(ctx, feedback: FeedbackBank, z: torch.Tensor, *points: torch.Tensor):
        ctx.feedback = feedback
        ctx.point_shapes = [(p.shape, p.dtype) for p in points]
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad_z):
        signals = ctx.feedback(grad_z)
        point_grads = [s.reshape(shape).to(dtype) if needed else None
                       for s, (shape, dtype), needed in zip(signals, ctx.point_shapes, ctx.needs_input_grad[2:])]
        return (None, grad_z, *point_grads)


@dataclass(frozen=True)
class Switches:
    """The paper's four changes to DFA for Transformers and the readings they leave open (see
    dfa_block.py); the defaults here are canonical DFA."""
    preprojector_error: bool = False
    blockwise: bool = False
    asymmetric_residuals: bool = False
    asymmetric_nonlinearity: bool = False
    feedback_point: str = "output"  # blockwise: B e at the raw block output, or through a LayerNorm of it
    error_point: str = "stream"  # preprojector_error: gradient at the last block's output, or at ln_f's output
    embedding_feedback: bool = True  # the embedding output is an injection point (else it learns through block 0)


def per_layer_block_forward(block: Block, x: torch.Tensor, act=F.relu) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A GPT block's forward with every layer's input detached.

    Returns (output, injection points): the outputs of ln_1, the qkv projection, the attention
    output projection, ln_2, the MLP hidden activation and the MLP output projection (Post-LN
    blocks: qkv, attention projection, ln_1, MLP hidden, MLP projection, ln_2, in the order
    they run). Each layer sees a detached input, so the backward computes weight gradients
    only (the softmax attention itself has no parameters and no backward)."""
    x = x.detach()
    if block.post_norm:
        qkv = block.attn.c_attn(x)
        attn_out = block.attn.c_proj(block.attn.attend(qkv.detach()))
        ln1 = block.ln_1(x + attn_out.detach())
        hidden = act(block.mlp.c_fc(ln1.detach()))
        mlp_out = block.mlp.c_proj(hidden.detach())
        ln2 = block.ln_2(ln1.detach() + mlp_out.detach())
        return ln2.detach(), [qkv, attn_out, ln1, hidden, mlp_out, ln2]
    ln1 = block.ln_1(x)
    qkv = block.attn.c_attn(ln1.detach())
    attn_out = block.attn.c_proj(block.attn.attend(qkv.detach()))
    x = x + attn_out.detach()
    ln2 = block.ln_2(x)
    hidden = act(block.mlp.c_fc(ln2.detach()))
    mlp_out = block.mlp.c_proj(hidden.detach())
    return x + mlp_out.detach(), [ln1, qkv, attn_out, ln2, hidden, mlp_out]


def per_layer_widths(block: Block, d: int, r: int) -> list[int]:
    """Widths of `per_layer_block_forward`'s injection points, in its order."""
    return [3 * d, d, d, r * d, d, d] if block.post_norm else [d, 3 * d, d, d, r * d, d]


def gpt_block_matmul_flops(cfg) -> dict[str, int]:
    """Forward FLOPs per token of each matmul of a GPT block (they sum to block_forward_flops_per_token)."""
    d, r, T = cfg.d_model, cfg.mlp_ratio, cfg.context
    return {"qkv": 6 * d * d, "attention": 4 * T * d, "attn_proj": 2 * d * d,
            "fc": 2 * r * d * d, "mlp_proj": 2 * r * d * d}


def output_width(module: nn.Module) -> int:
    """Width of what a block (or model) outputs: its last Linear layer's out_features."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(f"{type(module).__name__} has no Linear layer to read its output width from")
    return linears[-1].out_features


@register
class DirectFeedbackAlignment(TrainingMethod):
    name = "dfa"
    summary = "direct feedback alignment: random projection of the logits' error to every layer; compute 4ND"
    supports = ("gpt", "mlp")
    settings = (FEEDBACK, PROJECTION, FEEDBACK_SCALE)

    def __init__(self, model, cfg, seed=0):
        super().__init__(model, cfg, seed)
        self.switches = self.make_switches(cfg)
        self.transformer = all(isinstance(b, Block) for b in model.blocks)
        if self.switches.preprojector_error:
            d_err = output_width(model.blocks[-1])
        else:
            d_err = output_width(model)  # the projector to the logits is the model's last Linear
        self.feedback = FeedbackBank(cfg, d_err, self.injection_widths(), self.generator(offset=2))

    @staticmethod
    def make_switches(cfg) -> Switches:
        return Switches()  # canonical DFA: none of the paper's changes

    def injection_widths(self) -> list[int]:
        model = self.model
        if not self.transformer:
            return [output_width(b) for b in model.blocks]
        d, r = model.config.d_model, model.config.mlp_ratio
        per_block = [d] if self.switches.blockwise else per_layer_widths(model.blocks[0], d, r)
        embedding = [d] if self.switches.embedding_feedback else []
        return embedding + per_block * (len(model.blocks) - 1)  # the embedding output first

    def forward(self, idx, targets):
        logits = self.logits_with_feedback(idx)
        loss = self.model.loss_fn(logits, targets)
        return loss, loss

    def logits_with_feedback(self, idx: torch.Tensor) -> torch.Tensor:
        model, switches = self.model, self.switches
        h = model.embed(idx)
        points = []
        if self.transformer:
            if switches.embedding_feedback:
                points.append(h)
                h = h.detach()
            act = relu_tanh_backward if switches.asymmetric_nonlinearity else F.relu
            for block in model.blocks[:-1]:
                if switches.blockwise:
                    out = block(h, residual_backward=not switches.asymmetric_residuals, act=act)
                    points.append(self.block_injection_point(out))
                    h = out.detach()
                else:
                    h, layer_outputs = per_layer_block_forward(block, h, act)
                    points += layer_outputs
            top = model.blocks[-1](h)  # the last block learns by backpropagation
        else:
            for block in model.blocks:
                out = block(h)
                points.append(out)
                h = out.detach()
            top = h  # the output layer gets its true gradient, nothing below it does
        if not switches.preprojector_error:
            return FeedbackTap.apply(self.feedback, model.head(top), *points)
        if switches.error_point == "projector":  # the projector's own input: after the final LayerNorm
            return model.lm_head(FeedbackTap.apply(self.feedback, model.ln_f(top), *points))
        return model.head(FeedbackTap.apply(self.feedback, top, *points))

    def block_injection_point(self, out: torch.Tensor) -> torch.Tensor:
        """Where B e enters a block: its output, or a parameter-free LayerNorm of it, so that the
        block receives the LayerNorm's Jacobian applied to B e (per token: the mean and the
        component along the output itself removed, scaled by 1 / the output's deviation)."""
        if self.switches.feedback_point == "layernorm":
            return F.layer_norm(out, out.shape[-1:])
        return out

    def compute_per_token(self):
        n = self.model.n_params_nonembedding()
        return {"paper": 4 * n, "optimistic": 2 * n, "exact": self.exact_flops_per_token()}

    def exact_flops_per_token(self) -> int:
        """Forward + the backward matmuls autograd runs + the feedback projection(s)."""
        model = self.model
        forward = model.flops_per_token()["exact"] // 3  # BP's exact count is 3x the forward
        if not self.transformer:
            return 2 * forward + self.feedback.flops_per_token()  # weight gradients only
        m = gpt_block_matmul_flops(model.config)
        full_backward = 2 * sum(m.values())
        if self.switches.blockwise:
            lower_backward = full_backward  # within a block everything is backpropagated
        else:  # weight gradients only: every layer's input is detached, attention has no backward
            lower_backward = m["qkv"] + m["attn_proj"] + m["fc"] + m["mlp_proj"]
        head_backward = 2 * model.head_forward_flops_per_token()  # its input gradient feeds the last block
        backward = (len(model.blocks) - 1) * lower_backward + full_backward + head_backward
        return forward + backward + self.feedback.flops_per_token()
