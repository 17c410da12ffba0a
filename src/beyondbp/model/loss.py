"""The training loss both model kinds share: cross-entropy over the last dimension's scores."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of scores [..., classes] against class indices [...], in float32
    under autocast (a bf16 log-softmax over a large vocabulary loses digits)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
