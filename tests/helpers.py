"""Small helpers several test modules share."""
from __future__ import annotations

import json


def strict_loads(text: str):
    """json.loads that refuses Infinity, -Infinity and NaN, as strict JSON readers do."""
    def refuse(constant):
        raise ValueError(f"non-finite constant {constant} in JSON")
    return json.loads(text, parse_constant=refuse)
