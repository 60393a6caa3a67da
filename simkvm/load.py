"""A plan from what a user gives: a plan file or a dict, with its host profile and its policy checked.

The model (:class:`simkvm.model.plan.Plan`) builds and checks the plan's own
sections; what lives above it is resolved here: a ``profile:`` key names a host
profile file (:mod:`simkvm.profile`) whose ``host`` and ``link`` sections the plan's own
values override, and the policy's name and options are checked against the
registered policies (:mod:`simkvm.policies`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .io import read_yaml
from .model.errors import PlanError
from .model.plan import Plan
from .policies import validate_policy
from .profile import load_profile


def plan_from_dict(data: Mapping[str, Any]) -> Plan:
    """Build and check a plan from the YAML structure (human units allowed, ``profile:`` a file or mapping)."""
    if not isinstance(data, Mapping):
        raise PlanError(f"a plan must be a mapping of sections, got {type(data).__name__}")
    profile = data.get("profile")
    if profile is not None:
        data = {**data, "profile": load_profile(profile)}
    plan = Plan.from_dict(data)
    validate_policy(plan.policy)
    return plan


def plan_from_file(path: str | Path) -> Plan:
    """A plan file; its name defaults to the file's stem."""
    data = read_yaml(path)
    if isinstance(data, Mapping) and "name" not in data:
        data = {**data, "name": Path(path).stem}
    return plan_from_dict(data)


def load_plan(source: str | Path | Mapping[str, Any]) -> Plan:
    """A plan from a file path or a dict (what a notebook or a script gives)."""
    return plan_from_dict(source) if isinstance(source, Mapping) else plan_from_file(source)
