"""Strict JSON of the fits' results: no Infinity or NaN, which strict readers reject."""
from __future__ import annotations

import json
import math

import numpy as np


def jsonable(value):
    """Floats, ints, strings, lists and dicts only; NaN and infinities become None; a typed
    record (`verdict_types`) as its `to_dict()`."""
    if hasattr(value, "to_dict") and not isinstance(value, type):
        return jsonable(value.to_dict())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def dumps(value) -> str:
    """`value` as strict, indented JSON."""
    return json.dumps(jsonable(value), indent=2, allow_nan=False)
