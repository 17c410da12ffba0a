"""Small helpers several test modules share."""
from __future__ import annotations

import json
from pathlib import Path

import yaml


def strict_loads(text: str):
    """json.loads that refuses Infinity, -Infinity and NaN, as strict JSON readers do."""
    def refuse(constant):
        raise ValueError(f"non-finite constant {constant} in JSON")
    return json.loads(text, parse_constant=refuse)


def planned_study(tmp_path: Path, spec: dict):
    """(plan, study folder): `spec` written to tmp_path/spec.yaml, loaded and planned as `study run`
    does, and its study folder (tmp_path/study) prepared as an executor prepares it (spec.yaml and
    the plan record the report reads), with no run trained."""
    from beyondbp.study.preamble import ready_study
    from beyondbp.study.plan import plan_study
    from beyondbp.study.spec import load_spec
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    plan = plan_study(load_spec(path))
    return plan, ready_study(plan, tmp_path / "study", None)
