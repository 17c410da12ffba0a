"""GPT-like causal decoder-only Transformer, as in the paper; single-device, nanoGPT-sized.

Token + learned position embeddings, pre-LayerNorm blocks (causal self-attention, ReLU MLP
of 4x width), final LayerNorm, linear projector to the vocabulary (tying optional).

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
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ConfigError, ModelConfig

# name: (n_layer, d_model, n_head, context)
NAMED_SIZES: dict[str, tuple[int, int, int, int]] = {
    # CPU sizes (byte vocabulary): tens of thousands to a few million parameters
    "cpu-20k": (2, 24, 2, 128),
    "cpu-60k": (2, 48, 4, 128),
    "cpu-140k": (2, 64, 4, 128),
    "cpu-400k": (4, 88, 4, 128),
    "cpu-1m": (6, 112, 4, 128),
    "cpu-3m": (8, 176, 4, 128),
    # the paper's range: context 512, vocabulary 51,200, tied embeddings (57M to 509M parameters)
    "paper-57m": (7, 576, 9, 512),
    "paper-106m": (9, 768, 12, 512),
    "paper-204m": (12, 1024, 16, 512),
    "paper-362m": (15, 1280, 20, 512),
    "paper-509m": (18, 1408, 22, 512),
}
PAPER_VOCAB = 51_200


def resolve_model_config(cfg: ModelConfig, vocab_size: int | None = None) -> ModelConfig:
    """Apply a named size and the tokenizer's vocabulary; validate shapes."""
    if cfg.size is not None:
        if cfg.size not in NAMED_SIZES:
            raise ConfigError(f"model.size: unknown size {cfg.size!r} (valid: {', '.join(NAMED_SIZES)})")
        cfg.n_layer, cfg.d_model, cfg.n_head, cfg.context = NAMED_SIZES[cfg.size]
        if cfg.size.startswith("paper-"):
            cfg.tie_embeddings = True
    if vocab_size is not None and cfg.vocab_size is None:
        cfg.vocab_size = vocab_size
    for name in ("n_layer", "d_model", "n_head", "context", "mlp_ratio"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"model.{name}: must be >= 1, got {getattr(cfg, name)}")
    if cfg.d_model % cfg.n_head:
        raise ConfigError(f"model.d_model: {cfg.d_model} is not divisible by model.n_head={cfg.n_head}")
    if cfg.vocab_size is None or cfg.vocab_size < 2:
        raise ConfigError(f"model.vocab_size: must be >= 2, got {cfg.vocab_size}")
    return cfg


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
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model)
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


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model)
        self.c_proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor] = F.relu) -> torch.Tensor:
        return self.c_proj(act(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, residual_backward: bool = True,
                act: Callable[[torch.Tensor], torch.Tensor] = F.relu) -> torch.Tensor:
        """residual_backward=False: residual paths carry the forward value but no gradient."""
        skip = (lambda t: t) if residual_backward else (lambda t: t.detach())
        x = skip(x) + self.attn(self.ln_1(x))
        return skip(x) + self.mlp(self.ln_2(x), act)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
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

    @staticmethod
    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        logits = self.head(x)
        loss = None if targets is None else self.loss_fn(logits, targets)
        return logits, loss

    # --- counts ------------------------------------------------------------------------
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def n_params_nonembedding(self) -> int:
        n = self.n_params() - self.wpe.weight.numel()
        if not self.config.tie_embeddings:
            n -= self.wte.weight.numel()
        return n

    def block_forward_flops_per_token(self) -> int:
        """Exact matmul FLOPs of one block's forward, per token, attention over the full context."""
        d, T, r = self.config.d_model, self.config.context, self.config.mlp_ratio
        linear = 2 * (3 * d * d + d * d + 2 * r * d * d)
        attention = 2 * 2 * T * d  # scores q.k and the weighted sum of values
        return linear + attention

    def head_forward_flops_per_token(self) -> int:
        return 2 * self.config.d_model * self.config.vocab_size

    def forward_flops_per_token(self) -> int:
        return self.config.n_layer * self.block_forward_flops_per_token() + self.head_forward_flops_per_token()

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


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.kind == "gpt":
        return GPT(cfg)
    if cfg.kind == "mlp":
        from .mlp import MLPClassifier  # the fully-connected track
        return MLPClassifier(cfg)
    raise ConfigError(f"model.kind: unknown kind {cfg.kind!r} (valid: gpt, mlp)")
