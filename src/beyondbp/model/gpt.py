"""GPT-like causal decoder-only Transformer, as in the paper; single-device, nanoGPT-sized.

Token + learned position embeddings, pre-LayerNorm blocks (causal self-attention, ReLU MLP
of 4x width), final LayerNorm, linear projector to the vocabulary (tying optional).
`model.norm=post` gives Post-LN blocks instead (LayerNorm after each residual sum, as in the
original Transformer and the Post-LN models DFA was first scaled on); `model.bias=false`
drops every bias.

The model is written so that training methods can compose its parts (`embed`, `blocks`,
`head`) and ask a block for its asymmetric variants (residuals ignored in the backward,
another backward for the non-linearity) without touching this file.

Compute conventions (see `flops_per_token`):
- `n_params_nonembedding` excludes the token and position embeddings; the projector to the
  vocabulary counts (it is a matmul every token pays), also when it is tied.
- "6N" uses N = n_params_nonembedding (Kaplan's convention).
- The exact count is 2 FLOPs per multiply-accumulate of every matmul, attention scores and
  weighted sums included over the full context (what dense attention kernels compute);
  LayerNorm, softmax, biases and the optimizer are neglected.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from . import shape as model_shape
from .parts import BlockStack


def relu_tanh_backward(x: torch.Tensor) -> torch.Tensor:
    """ReLU in the forward, derivative of tanh in the backward (the paper's asymmetric non-linearity)."""
    return _ReLUTanhBackward.apply(x)


class _ReLUTanhBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.relu(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        slope = torch.tanh(x)
        return grad_out * slope.mul_(slope).neg_().add_(1.0)  # 1 - tanh^2, bit for bit, in one buffer


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.attend(self.c_attn(x)))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Causal attention of the heads in qkv ([B, T, 3C]) -> [B, T, C], before the output projection."""
        B, T, C3 = qkv.shape
        C = C3 // 3
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in qkv.split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return y.transpose(1, 2).contiguous().view(B, T, C)


class FeedForward(nn.Module):
    """A block's position-wise MLP: d_model -> mlp_ratio x d_model -> d_model."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor] = F.relu) -> torch.Tensor:
        return self.c_proj(act(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.post_norm = cfg.norm == "post"
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = FeedForward(cfg)

    def forward(self, x: torch.Tensor, residual_backward: bool = True,
                act: Callable[[torch.Tensor], torch.Tensor] = F.relu) -> torch.Tensor:
        """residual_backward=False: residual paths carry the forward value but no gradient."""
        skip = (lambda t: t) if residual_backward else (lambda t: t.detach())
        if self.post_norm:
            x = self.ln_1(skip(x) + self.attn(x))
            return self.ln_2(skip(x) + self.mlp(x, act))
        x = skip(x) + self.attn(self.ln_1(x))
        return skip(x) + self.mlp(self.ln_2(x), act)


class GPT(BlockStack):
    def __init__(self, cfg: ModelConfig, init_weights: bool = True):
        """init_weights=False leaves PyTorch's default initialisation (for counting on the meta
        device, where drawing the GPT-2 initialisation costs seconds)."""
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        if not init_weights:
            return
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2's scaled init of residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # --- parts, for training methods -------------------------------------------------
    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        if T > self.config.context:
            raise ValueError(f"sequence length {T} exceeds model.context={self.config.context}")
        pos = torch.arange(T, device=idx.device)
        return self.drop(self.wte(idx) + self.wpe(pos))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.ln_f(x))

    @property
    def projector(self) -> nn.Linear:
        """The linear map from the (normalised) stream to the vocabulary scores."""
        return self.lm_head

    # --- counts ------------------------------------------------------------------------
    def n_params_nonembedding(self) -> int:
        n = self.n_params() - self.wpe.weight.numel()
        if not self.config.tie_embeddings:
            n -= self.wte.weight.numel()
        return n

    def block_forward_flops_per_token(self) -> int:
        """Exact matmul FLOPs of one block's forward, per token, attention over the full context."""
        return model_shape.block_forward_flops(self.config)

    def head_forward_flops_per_token(self) -> int:
        return model_shape.head_forward_flops(self.config)

    def forward_flops_per_token(self) -> int:
        return model_shape.forward_flops(self.config)

    def flops_per_token(self) -> dict[str, int]:
        """BP training FLOPs per token: the 6N convention and the exact count (backward = 2x forward)."""
        return {"6N": 6 * self.n_params_nonembedding(), "exact": 3 * self.forward_flops_per_token()}

    # --- generation ----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.context:])
            logits = logits[:, -1, :] / max(temperature, 1e-6)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            probs = F.softmax(logits.float(), dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, 1, generator=generator)), dim=1)
        return idx

