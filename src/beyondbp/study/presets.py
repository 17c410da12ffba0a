"""The built-in study specs (`--preset NAME`): src/beyondbp/presets/NAME.yaml. Imports only the
config layer, so that the command line lists the names without loading the method catalogue."""
from __future__ import annotations

from importlib import resources

from ..config import ConfigError
from ..reads import parse_yaml


def preset_names() -> list[str]:
    folder = resources.files("beyondbp") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict:
    if name not in preset_names():
        raise ConfigError(f"--preset: unknown preset {name!r} (valid: {', '.join(preset_names())})")
    text = (resources.files("beyondbp") / "presets" / f"{name}.yaml").read_text()
    return parse_yaml(text) or {}  # the grammar of every spec file (`reads.parse_yaml`)
