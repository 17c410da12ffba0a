"""BP with an exponential moving average of the weights (docs/method_api.md, "A hook after the
optimizer step, and a metric"), and a class that lacks compute_per_token."""
import torch

from beyondbp.methods.api import FRACTION, Setting, StepInfo, TrainingMethod


class BackpropWithAverage(TrainingMethod):
    name = "bp_average"
    summary = "BP, keeping an exponential moving average of the weights; compute 6ND"
    supports = ("gpt",)
    settings = (Setting("decay", float, 0.9, "the average's decay per step", range=FRACTION),)

    def __init__(self, model, cfg, seed=0):
        super().__init__(model, cfg, seed)
        for i, p in enumerate(model.parameters()):
            self.register_buffer(f"average_{i}", p.detach().clone())

    def forward(self, idx, targets):
        _, loss = self.model(idx, targets)
        return loss, loss

    def after_optimizer_step(self, step: StepInfo):
        with torch.no_grad():
            gap = 0.0
            for i, p in enumerate(self.model.parameters()):
                average = getattr(self, f"average_{i}")
                average.lerp_(p, 1 - self.cfg.decay)
                gap += (p - average).pow(2).sum()
        self.log("distance_to_average", gap ** 0.5)

    def compute_per_token(self):
        flops = self.model.flops_per_token()
        return {"paper": flops["6N"], "optimistic": flops["6N"], "exact": flops["exact"]}


class NoAccounting(TrainingMethod):
    name = "no_accounting"
    summary = "BP that forgot to declare its compute"
    supports = ("gpt",)
    settings = ()

    def forward(self, idx, targets):
        _, loss = self.model(idx, targets)
        return loss, loss
