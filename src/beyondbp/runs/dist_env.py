"""The environment torchrun sets (WORLD_SIZE, RANK, LOCAL_RANK), read and checked without torch, so
that `beyondbp train` refuses a bad one in one line before it creates or locks its folder."""
from __future__ import annotations

import os

from ..config import ConfigError


def env_int(name: str, default: str | None, low: int, high: int | None = None) -> int:
    """An integer environment variable torchrun sets, or one ConfigError naming it."""
    text = os.environ.get(name, default)
    if text is None:
        raise ConfigError(f"{name}: not set, but WORLD_SIZE={os.environ['WORLD_SIZE']} asks for several "
                          f"processes; start them with torchrun, or unset WORLD_SIZE")
    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigError(f"{name}: must be a whole number, got {text!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name}: must be {bounds}, got {value}")
    return value


def ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the environment, each checked; (0, 1, 0) outside torchrun."""
    world = env_int("WORLD_SIZE", "1", 1, 65536)
    if world <= 1:
        return 0, 1, 0
    return env_int("RANK", None, 0, world - 1), world, env_int("LOCAL_RANK", "0", 0, world - 1)


def check_environment() -> None:
    """The variables torchrun sets, checked before a run folder is created or locked (one line
    naming a bad one); `distributed.context()` reads them again when training starts."""
    if ranks()[1] > 1:
        if not os.environ.get("MASTER_ADDR", "").strip():  # torch's env:// rendezvous needs both
            raise ConfigError(f"MASTER_ADDR: not set, but WORLD_SIZE={os.environ['WORLD_SIZE']} asks for several "
                              f"processes; start them with torchrun, or unset WORLD_SIZE")
        env_int("MASTER_PORT", None, 1, 65535)
