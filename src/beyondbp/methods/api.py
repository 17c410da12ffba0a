"""The public API for writing a training method: everything an outside method needs, in one import.

    from beyondbp.methods.api import Setting, StepInfo, TrainingMethod, POSITIVE

What is here is kept stable; the modules it comes from are internals that may move. The
reference, with a worked example of each path (the simple `forward`, hooks, own optimizer
groups, an update without backward, logged metrics), is docs/method_api.md.
"""
from __future__ import annotations

from ..config import AT_LEAST_0, AT_LEAST_1, FRACTION, POSITIVE, ConfigError, MethodConfig, MLPConfig, ModelConfig, Range
from ..model.build import build_model
from .base import StepInfo, TrainingMethod
from .fa import FALinear, FeedbackLinearMode
from .registry import build_method
from .settings import Setting

__all__ = ["AT_LEAST_0", "AT_LEAST_1", "FRACTION", "POSITIVE", "ConfigError", "FALinear", "FeedbackLinearMode",
           "MLPConfig", "MethodConfig", "ModelConfig", "Range", "Setting", "StepInfo", "TrainingMethod", "build_method",
           "build_model"]
