"""Fixed random projections of the error, for Direct Feedback Alignment.

DFA sends a fixed random projection B e of one global error e to each injection point. A
projection maps the last dimension of the error (d_err: the vocabulary at the logits, d_model
before the projector) to an injection point's width d_out, token by token.

- Gaussian: B has i.i.d. entries N(0, feedback_scale^2 / d_err), so every component of B e
  has, in expectation, the root-mean-square of e's components (||B e||^2 ~ ||e||^2 d_out / d_err).
- Uniform: i.i.d. entries uniform with the same variance.
- Optical: a SIMULATION of the random projection LightOn's optical processing unit (OPU)
  computes. The device takes binary inputs and reads out the intensity |R x|^2 of a fixed
  complex Gaussian medium R, so (1) the error is ternarised per token (sign where |e| exceeds
  `TERNARY_THRESHOLD` standard deviations of that token's error, 0 elsewhere); (2) the linear
  part is recovered with a fixed reference ("anchor") input a from two intensity reads:
  |R(t + a)|^2 - |R(t - a)|^2 = 4 Re(conj(R a) * R t), which is linear in t; (3) the result is
  rescaled per token to the norm the Gaussian projection gives in expectation. The simulation
  is float32 arithmetic on the GPU/CPU; it costs more than the Gaussian product, not less.

`FeedbackBank` holds the projections a method needs: one shared projection (as wide as the
widest injection point; narrower points take its first columns, so B e is computed once per
step) or one per injection point. The matrices are registered buffers drawn once from a seeded
`torch.Generator`, so checkpoints save them and DDP broadcasts them.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config import MethodConfig

TERNARY_THRESHOLD = 0.5  # in standard deviations of a token's error: below it the OPU input pixel is off


class GaussianProjection(nn.Module):
    def __init__(self, d_err: int, d_out: int, scale: float, generator: torch.Generator):
        super().__init__()
        std = scale / math.sqrt(d_err)
        self.register_buffer("matrix", torch.randn(d_err, d_out, generator=generator) * std)

    def forward(self, error: torch.Tensor) -> torch.Tensor:
        return error @ self.matrix.to(error.dtype)

    def flops_per_token(self) -> int:
        d_err, d_out = self.matrix.shape
        return 2 * d_err * d_out


class UniformProjection(GaussianProjection):
    """Entries uniform in [-a, a] with a = sqrt(3) scale / sqrt(d_err): the Gaussian's variance,
    the distribution of the reference Transformer DFA code (uniform, scaled by 1 / sqrt(width))."""

    def __init__(self, d_err: int, d_out: int, scale: float, generator: torch.Generator):
        nn.Module.__init__(self)
        bound = math.sqrt(3.0) * scale / math.sqrt(d_err)
        self.register_buffer("matrix", (torch.rand(d_err, d_out, generator=generator) * 2 - 1) * bound)


class OpticalProjection(nn.Module):
    """Simulated OPU: ternarised input, complex Gaussian medium, intensity read-out, anchor trick."""

    def __init__(self, d_err: int, d_out: int, scale: float, generator: torch.Generator):
        super().__init__()
        self.scale = scale
        # complex entries with unit variance: real and imaginary parts N(0, 1/2)
        self.register_buffer("medium_real", torch.randn(d_err, d_out, generator=generator) / math.sqrt(2))
        self.register_buffer("medium_imag", torch.randn(d_err, d_out, generator=generator) / math.sqrt(2))
        anchor = torch.randint(0, 2, (d_err,), generator=generator).float() * 2 - 1
        self.register_buffer("anchor", anchor)

    def forward(self, error: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(error.dtype, torch.float32)  # intensities differ by cancellation
        e, real, imag = error.to(dtype), self.medium_real.to(dtype), self.medium_imag.to(dtype)
        t = ternarise(e)
        rt_real, rt_imag = t @ real, t @ imag
        anchor = self.anchor.to(dtype)
        ra_real, ra_imag = anchor @ real, anchor @ imag
        intensity_plus = (rt_real + ra_real) ** 2 + (rt_imag + ra_imag) ** 2
        intensity_minus = (rt_real - ra_real) ** 2 + (rt_imag - ra_imag) ** 2
        linear = intensity_plus - intensity_minus  # = 4 Re(conj(R a) * R t)
        d_err, d_out = real.shape
        target_norm = e.norm(dim=-1, keepdim=True) * math.sqrt(d_out / d_err) * self.scale
        out = linear * (target_norm / linear.norm(dim=-1, keepdim=True).clamp_min(1e-30))
        return out.to(error.dtype)

    def effective_matrix(self) -> torch.Tensor:
        """The real matrix M with linear(t) = t @ M (before the per-token rescaling)."""
        ra_real, ra_imag = self.anchor @ self.medium_real, self.anchor @ self.medium_imag
        return 4 * (ra_real * self.medium_real + ra_imag * self.medium_imag)

    def flops_per_token(self) -> int:
        d_err, d_out = self.medium_real.shape
        return 2 * 2 * d_err * d_out  # the real and the imaginary part of R t


def ternarise(error: torch.Tensor) -> torch.Tensor:
    """Per token (last dimension): sign(e) where |e| > TERNARY_THRESHOLD * std(e), else 0."""
    threshold = TERNARY_THRESHOLD * error.std(dim=-1, keepdim=True, unbiased=False)
    return torch.sign(error) * (error.abs() > threshold)


class FeedbackBank(nn.Module):
    """The fixed projections from an error of width d_err to each injection point's width."""

    def __init__(self, cfg: MethodConfig, d_err: int, widths: list[int], generator: torch.Generator):
        super().__init__()  # cfg's feedback, projection and scale are checked by their settings
        self.shared = cfg.feedback == "shared"
        self.widths = list(widths)
        cls = {"gaussian": GaussianProjection, "uniform": UniformProjection, "optical": OpticalProjection}[cfg.projection]
        out_widths = [max(widths)] if self.shared and widths else widths
        self.projections = nn.ModuleList(cls(d_err, w, cfg.feedback_scale, generator) for w in out_widths)

    def forward(self, error: torch.Tensor) -> list[torch.Tensor]:
        """One feedback signal per injection point, each of shape error.shape[:-1] + (width,)."""
        if self.shared and self.projections:
            signal = self.projections[0](error)
            return [signal if w == signal.shape[-1] else signal[..., :w] for w in self.widths]
        return [projection(error) for projection in self.projections]

    def matrices(self) -> list[torch.Tensor]:
        """The linear map of each projection (for an optical one, its effective real matrix)."""
        return [p.effective_matrix() if isinstance(p, OpticalProjection) else p.matrix for p in self.projections]

    def flops_per_token(self) -> int:
        return sum(p.flops_per_token() for p in self.projections)
