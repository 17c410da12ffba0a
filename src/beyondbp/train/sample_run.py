"""A trained run for `beyondbp sample`: its model from the checkpoint, its tokenizer, nothing else.

Sampling reads two things of a run folder, `config.yaml` (the model's shape) and its newest
readable checkpoint. It never prepares a corpus or writes a cache, whatever `data.corpus` and
`data.cache_dir` of a received `config.yaml` say: the tokenizer comes from the checkpoint (a
trained BPE is stored in it as JSON; byte and GPT-2 need nothing stored). Before the model is
built, its memory is checked the way `train` checks it (`memory.training_bytes`: the model, and
the checkpoint's weights and AdamW moments, all in memory while the checkpoint loads); the
checkpoint's tensors must match the model's names, shapes and dtypes and be finite
(`provenance.check_model_state`). Each refusal is one line naming the file.
"""
from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

from ..config import ConfigError, DataConfig, RunConfig, from_dict, load_yaml, validate_config
from ..data.cache import cache_root
from ..data.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer, entry_tokenizer, load_gpt2
from ..methods.registry import build_method
from ..model.build import build_model
from .checkpoint import load_checkpoint
from .memory import GiB, available_bytes, training_bytes
from .provenance import check_model_state
from ..runs.folder import CHECKPOINT, checkpoint_files, read_data_record

ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def tokenizer_record(tokenizer: Tokenizer) -> dict:
    """What a checkpoint keeps of the run's tokenizer: its name, and a trained BPE's JSON."""
    record = {"name": tokenizer.name}
    if tokenizer.name == "bpe":
        record["json"] = tokenizer.to_json()
    return record


def check_sample_memory(cfg: RunConfig, config_path: Path) -> None:
    """Refuse, before anything is built, a model whose weights and checkpoint cannot fit in memory."""
    cpu = copy.deepcopy(cfg)
    cpu.train.device = "cpu"
    need = training_bytes(cpu, 0, bf16=False)
    estimate = need["weights"] + need["gradients_and_optimizer"]
    limit, what = available_bytes()
    if limit is not None and estimate > limit:
        raise ConfigError(f"{config_path}: model: {need['parameters']:.3g} parameters; loading the checkpoint into "
                          f"them needs about {estimate / GiB:.1f} GiB (the model, and the checkpoint's weights and "
                          f"AdamW moments) but what this process can use ({what}) is {limit / GiB:.1f} GiB")


def _read_config(run_dir: Path) -> RunConfig:
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise ConfigError(f"--run: {run_dir} is not a run directory (no config.yaml)")
    if not checkpoint_files(run_dir):
        raise ConfigError(f"--run: {run_dir} has no checkpoint.pt yet")
    try:
        cfg = validate_config(from_dict(load_yaml(config_path, "the run's config")))
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from None
    if cfg.model.kind != "gpt" or cfg.model.vocab_size is None:
        raise ConfigError(f"{config_path}: model: sample needs a GPT run's config as `train` writes it "
                          f"(model.kind gpt, model.vocab_size set), got kind {cfg.model.kind!r}, "
                          f"vocab_size {cfg.model.vocab_size!r}")
    return cfg


def _cached_bpe(run_dir: Path) -> Tokenizer | None:
    """A BPE from this machine's own token cache (never data.cache_dir of a received config), by
    the cache entry data.json names: for checkpoints written before they carried their tokenizer."""
    record = read_data_record(run_dir) or {}
    entry = str(record.get("entry", ""))
    folder = cache_root(DataConfig(cache_dir=None)) / entry
    if not ENTRY_NAME.fullmatch(entry) or not (folder / "tokenizer.json").is_file():
        return None
    return entry_tokenizer(folder, "bpe")


def saved_tokenizer(saved: dict, cfg: RunConfig, run_dir: Path) -> Tokenizer:
    """The run's tokenizer: from the checkpoint's record, else by the config's name."""
    record = saved.get("tokenizer") if isinstance(saved.get("tokenizer"), dict) else {}
    name = record.get("name", cfg.data.tokenizer)
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        return load_gpt2()
    if name == "bpe" and isinstance(record.get("json"), str):
        from tokenizers import Tokenizer as HFTk
        try:
            return HFTokenizer(HFTk.from_str(record["json"]), "bpe")
        except Exception as exc:  # the tokenizers library raises its own exception types
            raise ConfigError(f"{run_dir / CHECKPOINT}: its bpe tokenizer does not load "
                              f"({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
    cached = _cached_bpe(run_dir) if name == "bpe" else None
    if cached is None:
        raise ConfigError(f"{run_dir / CHECKPOINT}: carries no usable tokenizer (name {str(name)[:40]!r}) and its bpe "
                          f"tokenizer is not in this machine's token cache; sample it where its corpus was prepared")
    return cached


def load_run(run_dir: str | Path, device: str = "cpu"):
    """(config, model, tokenizer) of a run directory, from its newest readable checkpoint."""
    run_dir = Path(run_dir)
    cfg = _read_config(run_dir)
    check_sample_memory(cfg, run_dir / "config.yaml")
    model = build_model(cfg.model)
    method = build_method(model, cfg.method, cfg.seed, cfg.model.kind)
    expected = method.state_dict()

    def restore(saved: dict) -> None:
        check_model_state(saved["method"], expected)
        method.load_state_dict(saved["method"])

    saved = load_checkpoint(run_dir, device, restore, say=lambda text: print(text, file=sys.stderr))
    tokenizer = saved_tokenizer(saved, cfg, run_dir)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"{run_dir / 'config.yaml'}: model.vocab_size: {cfg.model.vocab_size} is smaller than "
                          f"the {tokenizer.name} tokenizer's {tokenizer.vocab_size}")
    return cfg, model.to(device).eval(), tokenizer
