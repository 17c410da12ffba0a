"""The method under test: its class and settings, the tiny run the checks train, and what they share.

Every check builds its run configuration the way a user's command line does (`build_config`
with `method.KEY=VALUE` settings), so a setting the method does not accept fails here with the
same one-line error as on the command line. The class is registered under its `name` for the
duration of a check (and restored after), so an out-of-tree class runs through the same
`train()` and `build_method` as a built-in one.
"""
from __future__ import annotations

import contextlib
import functools
import tempfile
from pathlib import Path
from unittest import mock

import torch

from ..config import RunConfig, build_config
from ..data.tokens import load_token_data
from ..methods import registry
from ..methods.base import TrainingMethod
from ..methods.lookup import info_from_class, resolve_method
from ..model.build import build_model
from ..model.shape import resolve_model_config
from .errors import MethodCheckError

# A 2-block GPT of width 16 on the built-in corpus with the byte tokenizer: 30 steps of 32
# sequences of 32 tokens take a few seconds on one CPU core, and the built-in methods (forward
# gradients at a higher learning rate) leave the initial loss (ln 256 = 5.55) in that budget.
TINY_RUN = {
    "model.kind": "gpt", "model.n_layer": 2, "model.d_model": 16, "model.n_head": 2, "model.context": 32,
    "model.dropout": 0.0, "train.tokens": 30 * 1024, "train.batch_tokens": 1024, "train.eval_tokens": 4096,
    "train.n_evals": 4, "train.lr": 1e-2, "train.device": "cpu", "train.dtype": "float32",
    "train.progress": "off", "train.checkpoint_every_s": 1e9, "train.compile": False,
    "train.alignment_every_evals": 0, "data.corpus": "shakespeare", "data.tokenizer": "byte", "seed": 0,
}


class Subject:
    """One method class with its settings, as every check sees it.

    `run_overrides` ({dotted key: value}) changes the tiny run (a method that needs another
    learning rate to learn in 30 steps says so here). The uninterrupted reference run is
    trained once and shared by the checks that read it (`loss_falls`, `resume_bit_identical`)."""

    def __init__(self, cls: type, settings: dict | None = None, run_overrides: dict | None = None):
        self.cls = cls
        self.settings = dict(settings or {})
        self.run_overrides = dict(run_overrides or {})
        self._workdir: tempfile.TemporaryDirectory | None = None
        self.reference_method = None  # the method object of the reference run, once trained

    @property
    def label(self) -> str:
        name = getattr(self.cls, "name", "") or getattr(self.cls, "__name__", repr(self.cls))
        extra = ",".join(f"{k}={v}" for k, v in self.settings.items())
        return f"{name}[{extra}]" if extra else name

    def fail(self, prop: str, measured: str) -> MethodCheckError:
        return MethodCheckError(prop, f"{self.label}: property {prop!r} broken: {measured}")

    def check_declaration(self) -> None:
        if not (isinstance(self.cls, type) and issubclass(self.cls, TrainingMethod)):
            raise self.fail("declaration", f"{self.cls!r} is not a subclass of beyondbp.methods.base.TrainingMethod")
        if not self.cls.name:
            raise self.fail("declaration", f"{self.cls.__name__} has no `name` class attribute")
        if "gpt" not in self.cls.supports:
            raise self.fail("declaration", f"supports={self.cls.supports!r}: the kit checks methods on a GPT")

    @functools.cached_property
    def config(self) -> RunConfig:
        """The tiny run's configuration, built as the command line builds one (fresh on each call
        of `fresh_config`)."""
        return self.fresh_config()

    def fresh_config(self, **overrides) -> RunConfig:
        self.check_declaration()
        mapping = {**TINY_RUN, **self.run_overrides, **overrides, "method.name": self.cls.name}
        mapping.update({f"method.{key}": value for key, value in self.settings.items()})
        cfg = build_config(overrides=mapping)
        cfg.method = resolve_method(cfg.method, info=info_from_class(self.cls))  # its settings, checked
        return cfg

    @functools.cached_property
    def data(self):
        cfg = self.config
        data = load_token_data(cfg.data, quiet=True)
        resolve_model_config(cfg.model, data.vocab_size)
        return data

    @property
    def n_seqs(self) -> int:
        return self.config.train.batch_tokens // self.config.model.context

    def batch(self, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        return self.data.train_batch(step, self.n_seqs, cfg.model.context, cfg.seed)

    def build(self, cfg: RunConfig | None = None) -> TrainingMethod:
        """A fresh method around a fresh model, seeded as `train()` seeds them."""
        cfg = cfg or self.config
        self.data  # resolves the model's vocabulary size
        resolve_model_config(cfg.model, self.data.vocab_size)
        torch.manual_seed(cfg.seed)
        with self.registered():
            return registry.build_method(build_model(cfg.model), cfg.method, cfg.seed, cfg.model.kind)

    @contextlib.contextmanager
    def registered(self):
        """The class findable by its name while the block runs; the registry as it was after."""
        registry.available()  # the built-in modules register first, so they cannot overwrite it later
        name = self.cls.name
        before = registry.REGISTRY.get(name)
        registry.REGISTRY[name] = self.cls
        try:
            yield
        finally:
            if before is None:
                registry.REGISTRY.pop(name, None)
            else:
                registry.REGISTRY[name] = before

    @contextlib.contextmanager
    def capturing(self):
        """A list that receives every instance of the class built inside the block (the method a
        `train()` call builds, which the resume check compares attribute by attribute)."""
        built, original = [], self.cls.__init__

        def init(method, *args, **kwargs):
            original(method, *args, **kwargs)
            built.append(method)

        with mock.patch.object(self.cls, "__init__", init):
            yield built

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="beyondbp-check-")
        return Path(self._workdir.name)

    @functools.cached_property
    def reference_run(self) -> Path:
        """The folder of one uninterrupted tiny run (trained on first use)."""
        from ..train.loop import train
        out = self.workdir / "uninterrupted"
        with self.registered(), self.capturing() as built:
            train(self.config, out, quiet=True)
        self.reference_method = built[-1] if built else None
        return out
