"""The paper's DFA for Transformers ("ours", Figure 2 / Table 2), four switches, all on by default.

1. `method.preprojector_error`: the error is the gradient at the input of the final projector
   (the last block's output x_L, d_model wide), not at the logits (vocabulary wide). The tap sits
   on x_L, so computing the error costs only the head's backward, which BP pays too.
2. `method.blockwise`: B e enters at each decoder block's OUTPUT and is backpropagated within
   the block (off: per-layer injection as in `dfa`). Block inputs are detached either way.
3. `method.asymmetric_residuals`: blocks run with residual_backward=False — residual paths carry
   the forward value but no gradient, so inside a block the signal reaches attention only
   through the MLP.
4. `method.asymmetric_nonlinearity`: the MLP's ReLU is differentiated as tanh (1 - tanh(a)^2).

The embedding output is an injection point too, and the last block (and the head) are trained
with exact backpropagation. With all four switches off this is exactly `dfa`.

Compute: the paper counts ~6N (the within-block backward costs what BP's does) and neglects the
feedback projection; `exact` adds it. Only the projection could move to an optical
co-processor, not the within-block backward, so the optimistic count is the paper's 6N.
"""
from __future__ import annotations

from .registry import register
from .settings import (ASYMMETRIC_NONLINEARITY, ASYMMETRIC_RESIDUALS, BLOCKWISE, EMBEDDING_FEEDBACK, ERROR_POINT, FEEDBACK,
                       FEEDBACK_POINT, FEEDBACK_SCALE, PREPROJECTOR_ERROR, PROJECTION)
from .dfa import DirectFeedbackAlignment, Switches

@register
class BlockwiseDFA(DirectFeedbackAlignment):
    name = "dfa_block"
    summary = "the paper's DFA: pre-projector error, block-wise feedback, asymmetric residuals and ReLU; compute ~6ND"
    supports = ("gpt",)
    settings = (FEEDBACK, PROJECTION, FEEDBACK_SCALE, PREPROJECTOR_ERROR, BLOCKWISE, ASYMMETRIC_RESIDUALS,
                ASYMMETRIC_NONLINEARITY, FEEDBACK_POINT, ERROR_POINT, EMBEDDING_FEEDBACK)

    @staticmethod
    def make_switches(cfg) -> Switches:
        return Switches(preprojector_error=cfg.preprojector_error, blockwise=cfg.blockwise,
                        asymmetric_residuals=cfg.asymmetric_residuals,
                        asymmetric_nonlinearity=cfg.asymmetric_nonlinearity,
                        feedback_point=cfg.feedback_point, error_point=cfg.error_point,
                        embedding_feedback=cfg.embedding_feedback)

    def compute_per_token(self):
        six_n = 6 * self.model.n_params_nonembedding()
        return {"paper": six_n, "optimistic": six_n, "exact": self.exact_flops_per_token()}
