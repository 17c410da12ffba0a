"""Training methods: one file per method, found by the registry (`methods.registry`)."""
from .registry import REGISTRY, TrainingMethod, available, build_method, get_method_class, register  # noqa: F401
