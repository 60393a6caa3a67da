"""A plan from what a user gives: a plan file or a dict, with its host profile and its policy checked.

The model (:class:`simkvm.model.plan.Plan`) builds and checks the plan's own
sections; what lives above it is resolved here: a ``profile:`` key names a host
profile file (:mod:`simkvm.profile`) whose ``host`` and ``link`` sections the plan's own
values override, and the policy's name and options are checked against the
registered policies (:mod:`simkvm.policies`). ``vm.zero_fraction: auto`` is resolved here too
(:func:`simkvm.guestos.auto_zero_fraction`, with the profile's ``guest`` section): once, from the
plan as read; a later change of its memory or working set keeps the share.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .guestos import auto_zero_fraction
from .io import read_yaml
from .model.codec import WORDS
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
    auto = zero_fraction_is_auto(data)
    if auto:  # built with no zero pages, then the rule's share from the built plan's memory and working set
        data = {**data, "vm": {**data["vm"], "zero_fraction": 0.0}}
    plan = Plan.from_dict(data)
    if auto:
        guest = (data.get("profile") or {}).get("guest")
        plan = plan.with_(**{"vm.zero_fraction": resolve_zero_fraction(plan, guest)})
    validate_policy(plan.policy)
    return plan


def zero_fraction_is_auto(data: Mapping[str, Any]) -> bool:
    """Whether a plan's YAML structure says ``vm.zero_fraction: auto``."""
    vm = data.get("vm")
    value = vm.get("zero_fraction") if isinstance(vm, Mapping) else None
    return isinstance(value, str) and value.strip() == WORDS["zero_fraction"][0]


def resolve_zero_fraction(plan: Plan, guest: Mapping[str, Any] | None = None) -> float:
    """What ``vm.zero_fraction: auto`` is for ``plan`` (its memory and its workload's working set) with a
    profile's ``guest`` section."""
    return auto_zero_fraction(plan.vm.memory_bytes, plan.workload.memory.working_set_bytes(), guest)


def plan_from_file(path: str | Path) -> Plan:
    """A plan file; its name defaults to the file's stem."""
    data = read_yaml(path)
    if isinstance(data, Mapping) and "name" not in data:
        data = {**data, "name": Path(path).stem}
    return plan_from_dict(data)


def load_plan(source: str | Path | Mapping[str, Any]) -> Plan:
    """A plan from a file path or a dict (what a notebook or a script gives)."""
    return plan_from_dict(source) if isinstance(source, Mapping) else plan_from_file(source)
