"""The conformance kit (`beyondbp.testing`): every built-in method passes it, and deliberately
broken methods fail it with the broken property named and the numbers measured."""
import math
import re

import pytest
import torch

from beyondbp.config import ConfigError
from beyondbp.methods.bp import Backprop
from beyondbp.methods.registry import REGISTRY, available
from beyondbp.testing import PROPERTIES, MethodCheckError, check_method, method_checks, parametrize_with_checks
from beyondbp.testing.properties import LOSS_DROP

# forward gradients learn slowly: with their default 8 directions at the kit's learning rate
# (1e-2) the tiny run's loss falls 0.35 nats in its 30 steps, short of the 0.5 the property asks;
# 4 directions at 3e-2 (as in test_distributed) fall 0.59 in half the time
# zeroth-order SGD likewise: with one direction at 3e-2 the loss falls 0.18 nats, with 8 at 3e-2 0.69
SETTINGS = {"forward_grad": ({"perturbations": 4}, {"train.lr": 3e-2}),
            "mezo": ({"perturbations": 8}, {"train.lr": 3e-2})}
BUILT_IN = [(cls, *SETTINGS.get(name, ({}, {}))) for name, cls in available().items()]
# every property but ddp_matches_single: that two processes train every built-in method as one
# does is test_distributed's (torchrun through the whole loop); the property itself is checked
# below on a method that breaks it, and in full on the example's outside method
KIT = [name for name in PROPERTIES if name != "ddp_matches_single"]
SLOW = {"forward_grad"}  # the slowest tiny runs of the kit: a jvp per direction per step


@parametrize_with_checks([entry for entry in BUILT_IN if entry[0].name not in SLOW], checks=KIT)
def test_every_built_in_method_passes_the_kit(check):
    check()


@pytest.mark.slow
@parametrize_with_checks([entry for entry in BUILT_IN if entry[0].name in SLOW], checks=KIT)
def test_the_slowest_built_in_methods_pass_the_kit(check):
    check()


class NoGradient(Backprop):
    """Returns an objective whose backward leaves zeros: the update never reaches .grad."""
    name = "no_gradient_for_test"

    def forward(self, idx, targets):
        loss, objective = super().forward(idx, targets)
        return loss, objective * 0.0


class ForgetsItsNoise(Backprop):
    """Scales its objective by noise from a private generator that no checkpoint holds."""
    name = "forgets_noise_for_test"

    def __init__(self, model, cfg, seed=0):
        super().__init__(model, cfg, seed)
        self.noise = torch.Generator().manual_seed(1)

    def forward(self, idx, targets):
        loss, objective = super().forward(idx, targets)
        return loss, objective * (1 + 0.1 * torch.rand((), generator=self.noise))


class MissingAccounting(Backprop):
    name = "missing_accounting_for_test"

    def compute_per_token(self):
        per_token = super().compute_per_token()
        del per_token["optimistic"]
        return per_token


class OvercountedFlops(Backprop):
    name = "overcounted_for_test"

    def compute_per_token(self):
        return {**super().compute_per_token(), "exact": 1.5 * self.model.flops_per_token()["exact"]}


class LocalRunningLoss(Backprop):
    """Keeps a buffer updated from its own rows of the batch: two ranks drift apart."""
    name = "local_buffer_for_test"

    def __init__(self, model, cfg, seed=0):
        super().__init__(model, cfg, seed)
        self.register_buffer("running_loss", torch.zeros(()))

    def forward(self, idx, targets):
        loss, objective = super().forward(idx, targets)
        self.running_loss.mul_(0.9).add_(0.1 * loss.detach())
        return loss, objective


class Float32Only(Backprop):
    name = "float32_only_for_test"

    def forward(self, idx, targets):
        loss, objective = super().forward(idx, targets)
        if torch.is_autocast_enabled("cpu"):
            raise TypeError("this method computes its update in float32 only")
        return loss, objective


class PlainAttribute(Backprop):
    """Keeps a fixed matrix as a plain attribute, not a buffer."""
    name = "plain_attribute_for_test"

    def __init__(self, model, cfg, seed=0):
        super().__init__(model, cfg, seed)
        self.projection = [torch.randn(4, 4, generator=self.generator())]


class UnderCounted(Backprop):
    """Does BP's work and declares a sixth of BP's 6N."""
    name = "under_counted_for_test"

    def compute_per_token(self):
        return {**super().compute_per_token(), "paper": self.model.flops_per_token()["6N"] / 6}


@pytest.mark.parametrize("cls, prop, says", [
    (PlainAttribute, "moves_with_device", "after method.to('meta') the tensor self.projection[0] is still on cpu "
                                          "(1 such): a tensor kept as a plain attribute does not move"),
    (UnderCounted, "compute_declared", "declared paper count 10,688 FLOPs per token (0.17x BP's 6N) lies 6.0x "
                                       "below the work measured (73,728 exact, 1.00x BP's exact count)"),
    (ForgetsItsNoise, "resume_bit_identical", "the method's attribute self.noise differs between the runs "
                                              "(uninterrupted Generator, resumed Generator)"),
    (NoGradient, "update_in_grad", "the update is zero in all 29 trainable parameters"),
    (ForgetsItsNoise, "resume_bit_identical", "differ from the uninterrupted run's"),
    (MissingAccounting, "compute_declared", "lacks 'optimistic'"),
    (OvercountedFlops, "compute_declared", "declared exact 110,592 FLOPs per token, measured 73,728 (ratio 0.667"),
    (LocalRunningLoss, "ddp_matches_single", "ranks 0 and 1 hold different running_loss"),
    (Float32Only, "bf16_autocast", "raised TypeError: this method computes its update in float32 only"),
])
def test_a_broken_method_fails_with_the_property_named(cls, prop, says):
    with pytest.raises(MethodCheckError) as failure:
        check_method(cls, checks=[prop])
    assert failure.value.property == prop
    assert f"{cls.name}: property {prop!r} broken: " in str(failure.value)
    assert says in str(failure.value)
    assert cls.name not in REGISTRY  # the registry is left as it was


def test_a_method_without_gradient_also_fails_to_learn():
    with pytest.raises(MethodCheckError) as failure:
        check_method(NoGradient, checks=["loss_falls"])
    measured = re.search(r"loss_falls.* ([\d.]+) at step 0 -> ([\d.]+) at step 30 ", str(failure.value))
    first, last = map(float, measured.groups())
    assert abs(first - math.log(256)) < 0.05  # the untrained byte model: about uniform over 256 bytes
    assert first - last < LOSS_DROP  # it does not learn what the property asks


def test_the_report_gives_the_numbers_measured():
    report = check_method(Backprop, checks=["update_in_grad", "compute_declared", "alignment_measurable"])
    assert report["update_in_grad"]["loss"] == pytest.approx(report["update_in_grad"]["model_loss"])
    # 2 blocks of width 16, context 32, 256 bytes: forward 2 x 6,144 + 2 x 2,048 (attention) + 8,192 (projector)
    assert report["compute_declared"]["declared_exact"] == report["compute_declared"]["measured_exact"] == 3 * 24_576
    # BP's update is the BP gradient: cosine 1 in every block
    assert report["alignment_measurable"] == pytest.approx({"alignment_block0": 1.0, "alignment_block1": 1.0})


@pytest.mark.parametrize("cls, settings, match", [
    (int, {}, r"int.*is not a subclass of beyondbp\.methods\.base\.TrainingMethod"),
    (Backprop, {"no_such_key": 1}, r"method\.no_such_key: unknown setting of method 'bp' \(its settings: none\)"),
])
def test_bad_input_is_named_before_any_check_runs(cls, settings, match):
    with pytest.raises((MethodCheckError, ConfigError), match=match):
        method_checks(cls, **settings)  # building the checks, not running one


def test_an_unknown_property_is_named():
    with pytest.raises(ValueError, match=r"checks: unknown property 'fast' \(valid: update_in_grad, "):
        check_method(Backprop, checks=["fast"])


def test_ddp_check_is_skipped_with_its_reason_without_gloo(monkeypatch):
    import beyondbp.testing.ddp as ddp_check
    monkeypatch.setattr(ddp_check.dist, "is_gloo_available", lambda: False)
    report = check_method(Backprop, checks=["ddp_matches_single"])
    assert report == {"ddp_matches_single": {"skipped": "ddp_matches_single skipped: this PyTorch build has no "
                                                        "gloo backend"}}


def test_the_pytest_helper_skips_what_the_platform_cannot_run(monkeypatch):
    import beyondbp.testing.ddp as ddp_check
    mark = parametrize_with_checks([(Backprop, {}, {"train.lr": 2e-2})], checks=["ddp_matches_single"])
    assert mark.args[0] == "check" and mark.kwargs["ids"] == ["bp-ddp_matches_single"]
    monkeypatch.setattr(ddp_check.dist, "is_gloo_available", lambda: False)
    with pytest.raises(pytest.skip.Exception, match="no gloo backend"):
        mark.args[1][0]()
