"""Throughput, FLOP/s, memory and data-wait of each training method, against a plain PyTorch GPT.

For one model size, every contestant — each method through beyondbp's own training step, and
the plain reference of `bench/reference_gpt.py` (same config, `loss.backward()`, AdamW) —
is built in this process and timed on the same batches, round-robin (one step of each in turn,
the order rotating every round) after a warm-up, so drift of a noisy machine hits them all
alike; a figure is the median over the timed steps.

- step CPU time (process CPU seconds per step) is reported beside wall time: on a machine other
  programs share, wall time swings with their load while CPU time — with --threads 1 — tracks
  the work done; the `cpu` ratios are the ones to trust there.

- tokens/s: batch tokens / median step time; a step is the training loop's own code
  (`train.step`): fetch the batch, method forward, objective.backward(), gradient clipping,
  AdamW step.
- achieved FLOP/s: the method's exact FLOPs per token (`compute_per_token()["exact"]`; the
  reference counts BP's) x tokens/s; its fraction of the machine's dense matmul peak, measured
  here (largest of a few square fp32 matmuls on CPU, bf16 on GPU).
- data wait: the share of a step spent fetching the batch and moving it to the device.
- peak memory: on CUDA, torch's peak allocated bytes above what was allocated before the
  contestant was built. On CPU torch keeps no allocator statistics, so it is the peak resident
  set size (Linux VmHWM, reset through /proc/self/clear_refs) above the resident size before the
  contestant was built (after freeing malloc's cached pages), over building it and two training
  steps: weights, gradients, optimizer state and the activations of a step. Measured after the
  timing, so one-off library initialisation is not charged to whichever contestant runs first.
"""
from __future__ import annotations

import ctypes
import gc
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..config import ConfigError, DataConfig, RunConfig
from ..data.tokens import load_token_data
from ..methods.registry import build_method, get_method_class
from ..model.build import build_model
from ..model.shape import resolve_model_config
from ..train.step import accumulate_gradients, apply_update, autocast_context, make_optimizer, set_learning_rate
from . import reference_gpt

# size: (n_layer, d_model, n_head, batch_tokens); byte vocabulary 256, context 128
SIZES: dict[str, tuple[int, int, int, int]] = {
    "0.1M": (2, 64, 4, 4096),
    "1M": (6, 112, 4, 4096),
    "10M": (8, 320, 8, 2048),
}
CONTEXT = 128
REFERENCE = "reference"
# step time relative to our BP step (bp: tokens/s relative to the reference), and the direction
TARGETS: dict[str, tuple[str, float]] = {"bp": ("ratio_vs_ref>=", 1.0), "dfa": ("step_time_ratio_vs_bp<=", 0.72),
                                         "dfa_block": ("step_time_ratio_vs_bp<=", 1.10),
                                         "shallow": ("step_time_ratio_vs_bp<=", 0.40)}
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_flops(device: torch.device, n: int | None = None, repeats: int = 3) -> float:
    """Dense matmul FLOP/s of this machine: the best of a few n x n products (fp32 CPU, bf16 GPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b  # warm-up: thread pools, kernel selection
    best = float("inf")
    for _ in range(repeats if device.type == "cpu" else 10 * repeats):
        synchronize(device)
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


class Contestant:
    """One training setup; `step(i)` runs training step i, returning (data seconds, step seconds)."""

    name: str
    flops_per_token: int
    n_params: int
    batch_tokens: int

    def __init__(self, data, device: torch.device):
        self.data, self.device = data, device

    def fetch(self, step: int):
        x, y = self.data.train_batch(step, self.batch_tokens // CONTEXT, CONTEXT, 0)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def step(self, step: int) -> tuple[float, float, float]:
        """(data wall seconds, step wall seconds, step CPU seconds of this process)."""
        synchronize(self.device)
        c0, t0 = time.process_time(), time.perf_counter()
        x, y = self.fetch(step)
        t1 = time.perf_counter()
        self.train_step(x, y)
        synchronize(self.device)
        return t1 - t0, time.perf_counter() - t0, time.process_time() - c0

    def train_step(self, x, y) -> None:
        raise NotImplementedError

    def forward(self, x, y) -> None:
        """The step's forward (what its backward will need is saved here)."""
        raise NotImplementedError

    def activation_bytes(self, step: int = 0) -> int:
        """Bytes autograd keeps from one forward for the backward: the distinct storages of
        every saved tensor, parameters left out (they are resident either way). Exact and
        allocator-independent, unlike the peak resident set."""
        params = {p.untyped_storage().data_ptr() for p in self.parameters()}
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                saved[storage.data_ptr()] = storage.nbytes()
            return t

        x, y = self.fetch(step)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            self.forward(x, y)
        return sum(saved.values())

    def parameters(self):
        raise NotImplementedError


class MethodContestant(Contestant):
    """A method through the training loop's step (`train.step`; one micro-batch, one process)."""

    def __init__(self, method_name: str, n_layer: int, d_model: int, n_head: int, batch_tokens: int,
                 data, device: torch.device, compile_model: bool = False):
        super().__init__(data, device)
        cfg = RunConfig()
        cfg.method.name = method_name
        cfg.model.n_layer, cfg.model.d_model, cfg.model.n_head, cfg.model.context = n_layer, d_model, n_head, CONTEXT
        cfg.train.batch_tokens, cfg.train.device, cfg.train.compile = batch_tokens, device.type, compile_model
        resolve_model_config(cfg.model, data.vocab_size)
        self.cfg, self.name, self.batch_tokens = cfg, method_name, batch_tokens
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model).to(device)
        self.method = build_method(model, cfg.method, cfg.seed, cfg.model.kind).to(device)
        self.optimizer = make_optimizer(cfg, self.method.trainable_parameters())
        self.wrapped = torch.compile(self.method) if compile_model else self.method
        self.method.train()
        self.n_params = model.n_params()
        self.flops_per_token = self.method.compute_per_token()["exact"]

    def parameters(self):
        return self.method.parameters()

    def forward(self, x, y) -> None:
        with autocast_context(self.cfg, self.device):
            self.method(x, y)  # eager, also under --compile: saved-tensor hooks see eager autograd

    def train_step(self, x, y) -> None:
        """The training loop's own step (`train.step`), as `train.loop` takes it in one process."""
        set_learning_rate(self.optimizer, self.cfg.train.lr)
        loss = accumulate_gradients(self.wrapped, x, y, self.cfg, self.device)
        loss.item()  # the loop reads the step loss (divergence check, logging): it waits for the device
        apply_update(self.method, self.optimizer, self.cfg.train.grad_clip)


class ReferenceContestant(Contestant):
    """bench/reference_gpt.py: the plain GPT, loss.backward() and AdamW."""

    def __init__(self, n_layer: int, d_model: int, n_head: int, batch_tokens: int, data,
                 device: torch.device, compile_model: bool = False):
        super().__init__(data, device)
        ref = reference_gpt
        torch.manual_seed(0)
        model = ref.ReferenceGPT(data.vocab_size, CONTEXT, n_layer, d_model, n_head).to(device)
        self.n_params = sum(p.numel() for p in model.parameters())
        autocast_dtype = torch.bfloat16 if device.type == "cuda" else None
        self.trainer = ref.ReferenceTrainer(torch.compile(model) if compile_model else model,
                                            autocast_dtype=autocast_dtype)
        self.eager_model = model
        self.name, self.batch_tokens = REFERENCE, batch_tokens
        cfg = RunConfig()
        cfg.model.n_layer, cfg.model.d_model, cfg.model.n_head, cfg.model.context = n_layer, d_model, n_head, CONTEXT
        cfg.model.vocab_size = data.vocab_size
        self.flops_per_token = build_model(cfg.model).flops_per_token()["exact"]  # BP's count, same shapes

    def parameters(self):
        return self.eager_model.parameters()

    def forward(self, x, y) -> None:
        with torch.autocast(x.device.type, dtype=self.trainer.autocast_dtype or torch.bfloat16,
                            enabled=self.trainer.autocast_dtype is not None):
            self.eager_model(x, y)

    def train_step(self, x, y) -> None:
        self.trainer.step(x, y)


def time_interleaved(contestants: list[Contestant], steps: int, warmup: int) -> dict[str, dict]:
    """Median step, data and CPU seconds of each contestant over `steps` steps, taken round-robin one
    step each, the order rotating every round, so a burst of load on the machine hits all alike."""
    for c in contestants:
        for i in range(warmup):
            c.step(i)
    times: dict[str, list[tuple[float, float, float]]] = {c.name: [] for c in contestants}
    for r in range(steps):
        shift = r % len(contestants)
        for c in contestants[shift:] + contestants[:shift]:
            times[c.name].append(c.step(warmup + r))
    return {name: {"step_s": statistics.median(t for _, t, _ in ts), "data_s": statistics.median(d for d, _, _ in ts),
                   "cpu_s": statistics.median(c for _, _, c in ts), "n_steps": len(ts)}
            for name, ts in times.items()}


def _rss_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1))


def _release_freed_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # return malloc's freed pages, so RSS is what is live
    except (OSError, AttributeError):
        pass


def peak_memory_mb(build: Callable[[], Contestant], device: torch.device, n_steps: int = 2) -> float | None:
    """Peak memory of building a contestant and training it n_steps steps, above the memory before."""
    _release_freed_memory()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            before = _rss_kib("VmRSS") * 1024
        except OSError:
            return None  # not Linux: no resettable peak resident size
    contestant = build()
    for i in range(n_steps):
        contestant.step(i)
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _rss_kib("VmHWM") * 1024
    del contestant
    return (peak - before) / 2 ** 20


@dataclass
class BenchOptions:
    sizes: list[str]
    methods: list[str]
    device: str = "cpu"
    steps: int = 10
    warmup: int = 2
    batch_tokens: int | None = None  # None: the size's default
    compile: bool = False
    matmul_n: int | None = None  # None: 2048 on CPU, 8192 on GPU


def validate(opts: BenchOptions) -> torch.device:
    for size in opts.sizes:
        if size not in SIZES:
            raise ConfigError(f"--sizes: unknown size {size!r} (valid: {', '.join(SIZES)})")
    for name in opts.methods:
        try:
            get_method_class(name)
        except ConfigError:
            raise ConfigError(f"--methods: unknown method {name!r}") from None
    if opts.device not in ("cpu", "cuda"):
        raise ConfigError(f"--device: unknown device {opts.device!r} (valid: cpu, cuda)")
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: cuda requested but no CUDA device is available")
    if opts.steps < 1:
        raise ConfigError(f"--steps: must be >= 1, got {opts.steps}")
    if opts.batch_tokens is not None and (opts.batch_tokens < CONTEXT or opts.batch_tokens % CONTEXT):
        raise ConfigError(f"--batch-tokens: {opts.batch_tokens} must be a positive multiple of the context {CONTEXT}")
    return torch.device(opts.device)


def bench_size(size: str, opts: BenchOptions, device: torch.device, data, peak_flops: float) -> list[dict]:
    n_layer, d_model, n_head, default_batch = SIZES[size]
    batch_tokens = opts.batch_tokens or default_batch
    methods = opts.methods if "bp" in opts.methods else ["bp", *opts.methods]  # bp: the step-time yardstick
    builders: dict[str, Callable[[], Contestant]] = {
        REFERENCE: lambda: ReferenceContestant(n_layer, d_model, n_head, batch_tokens, data, device, opts.compile)}
    for name in methods:
        builders[name] = (lambda name=name: MethodContestant(name, n_layer, d_model, n_head, batch_tokens,
                                                               data, device, opts.compile))
    contestants = [build() for build in builders.values()]
    info = {c.name: (c.n_params, c.flops_per_token) for c in contestants}
    activations = {c.name: c.activation_bytes() / 2 ** 20 for c in contestants}
    timing = time_interleaved(contestants, opts.steps, opts.warmup)
    del contestants
    memory = {name: peak_memory_mb(build, device) for name, build in builders.items()}

    ref, bp = timing[REFERENCE], timing["bp"]
    ref_tokens_per_s = batch_tokens / ref["step_s"]
    ref_flops = info[REFERENCE][1] * ref_tokens_per_s
    rows = []
    for name in opts.methods:
        t, (n_params, flops_per_token) = timing[name], info[name]
        tokens_per_s = batch_tokens / t["step_s"]
        flops = flops_per_token * tokens_per_s
        row = {
            "size": size, "method": name, "device": device.type, "threads": torch.get_num_threads(),
            "n_params": n_params, "ref_n_params": info[REFERENCE][0], "batch_tokens": batch_tokens,
            "timed_steps": t["n_steps"], "step_time_s": t["step_s"], "ref_step_time_s": ref["step_s"],
            "tokens_per_s": tokens_per_s, "ref_tokens_per_s": ref_tokens_per_s,
            "ratio_vs_ref": tokens_per_s / ref_tokens_per_s,
            "step_time_ratio_vs_bp": t["step_s"] / bp["step_s"],
            "step_cpu_time_s": t["cpu_s"], "ref_step_cpu_time_s": ref["cpu_s"],
            "cpu_ratio_vs_ref": ref["cpu_s"] / t["cpu_s"], "cpu_time_ratio_vs_bp": t["cpu_s"] / bp["cpu_s"],
            "flops_per_token": flops_per_token, "flops_ratio_vs_bp": flops_per_token / info["bp"][1],
            "achieved_flops_per_s": flops, "ref_achieved_flops_per_s": ref_flops,
            "flops_per_s_ratio_vs_ref": flops / ref_flops,
            "matmul_peak_flops_per_s": peak_flops,
            "achieved_flops_fraction_of_peak": flops / peak_flops,
            "ref_achieved_flops_fraction_of_peak": ref_flops / peak_flops,
            "peak_mem_mb": memory[name], "ref_peak_mem_mb": memory[REFERENCE],
            "peak_mem_ratio_vs_ref": _ratio(memory[name], memory[REFERENCE]),
            "peak_mem_ratio_vs_bp": _ratio(memory[name], memory["bp"]),
            "activation_mb": activations[name], "ref_activation_mb": activations[REFERENCE],
            "activation_ratio_vs_bp": _ratio(activations[name], activations["bp"]),
            "data_wait_fraction": t["data_s"] / t["step_s"],
            "ref_data_wait_fraction": ref["data_s"] / ref["step_s"],
        }
        row["target"], row["meets_target"] = _target(row)
        rows.append(row)
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _target(row: dict) -> tuple[str | None, bool | None]:
    if row["method"] not in TARGETS:
        return None, None
    field_op, bound = TARGETS[row["method"]]
    field, op = field_op[:-2], field_op[-2:]
    value = row[field]
    ok = value >= bound if op == ">=" else value <= bound
    if row["method"] == "dfa" and row["peak_mem_ratio_vs_bp"] is not None:
        ok = ok and row["peak_mem_ratio_vs_bp"] <= 1.0
        return f"{field}{op}{bound} and peak_mem<=bp", ok
    return f"{field}{op}{bound}", ok


def run_bench(opts: BenchOptions) -> Iterator[dict]:
    """One row per (size, method), size by size."""
    device = validate(opts)
    data = load_token_data(DataConfig())
    peak = 0.0
    for size in opts.sizes:
        # re-measured before each size, the best kept: a peak taken while the machine was busy is too low
        peak = max(peak, matmul_peak_flops(device, opts.matmul_n))
        yield from bench_size(size, opts, device, data, peak)


TABLE_COLUMNS = [("size", "size", "{}"), ("method", "method", "{}"), ("params", "n_params", "{:,}"),
                 ("tok/s", "tokens_per_s", "{:,.0f}"), ("ref tok/s", "ref_tokens_per_s", "{:,.0f}"),
                 ("x ref", "ratio_vs_ref", "{:.2f}"), ("step/bp", "step_time_ratio_vs_bp", "{:.2f}"),
                 ("cpu x ref", "cpu_ratio_vs_ref", "{:.2f}"), ("cpu/bp", "cpu_time_ratio_vs_bp", "{:.2f}"),
                 ("FLOP/bp", "flops_ratio_vs_bp", "{:.2f}"), ("GFLOP/s", "achieved_flops_per_s", "{:.3g}"),
                 ("% peak", "achieved_flops_fraction_of_peak", "{:.1%}"),
                 ("ref % peak", "ref_achieved_flops_fraction_of_peak", "{:.1%}"),
                 ("MB", "peak_mem_mb", "{:.0f}"), ("ref MB", "ref_peak_mem_mb", "{:.0f}"),
                 ("act MB", "activation_mb", "{:.0f}"), ("ref act MB", "ref_activation_mb", "{:.0f}"),
                 ("data wait", "data_wait_fraction", "{:.1%}"), ("target", "target", "{}"),
                 ("met", "meets_target", "{}")]


def format_row(row: dict) -> list[str]:
    cells = []
    for _, key, fmt in TABLE_COLUMNS:
        value = row[key]
        if key == "achieved_flops_per_s":
            value = value / 1e9
        cells.append("-" if value is None else fmt.format(value))
    return cells


def format_table(rows: list[dict], markdown: bool = False) -> str:
    header = [title for title, _, _ in TABLE_COLUMNS]
    body = [format_row(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(header)]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(cells, widths)) for cells in [header, *body])


def machine_line(device: torch.device, peak_flops: float | None = None) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    peak = f", matmul peak {peak_flops / 1e9:.1f} GFLOP/s" if peak_flops else ""
    return (f"{name}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"python {sys.version.split()[0]}{peak}")


def cpu_name() -> str:
    import os
    import platform
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        match = None
    return f"{match.group(1) if match else platform.machine()}, {os.cpu_count()} cores"
