"""Where each VM goes: the destination hosts that can take it, and a rule that picks one.

The seed's preparation step checks that the destination has the memory and
the disk space for the VM; a drain does it for every VM against what is left
on each host after the migrations already placed there. The rule that picks
among the hosts that fit is pluggable::

    from simkvm.drain.placement import destination_rule

    @destination_rule("fewest-vms")
    def fewest(vm, hosts):
        return min(hosts, key=lambda h: h.incoming)

Built in: ``most-free-memory`` (spread, like Nova's default RAM weigher),
``best-fit`` (the fullest host that still fits: pack) and ``first-fit`` (the
first in the fleet file's order).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..model.errors import PlanError
from ..model.units import fmt_bytes


@dataclass
class HostRoom:
    """A destination host as the scheduler sees it: what is still free, and what comes in."""

    name: str
    free_memory_bytes: float  # inf: not checked
    free_disk_bytes: float
    incoming: int = 0  # migrations to it in flight
    reserved_memory_bytes: float = 0.0  # taken by the migrations in flight (given back if one fails)
    reserved_disk_bytes: float = 0.0

    def fits(self, memory_bytes: float, disk_bytes: float) -> bool:
        return memory_bytes <= self.free_memory_bytes and disk_bytes <= self.free_disk_bytes

    def may_fit(self, memory_bytes: float, disk_bytes: float) -> bool:
        """Fits if every migration in flight to it failed."""
        return (memory_bytes <= self.free_memory_bytes + self.reserved_memory_bytes
                and disk_bytes <= self.free_disk_bytes + self.reserved_disk_bytes)

    def reserve(self, memory_bytes: float, disk_bytes: float) -> None:
        self.free_memory_bytes -= memory_bytes
        self.free_disk_bytes -= disk_bytes
        self.reserved_memory_bytes += memory_bytes
        self.reserved_disk_bytes += disk_bytes
        self.incoming += 1

    def release(self, memory_bytes: float, disk_bytes: float, *, moved: bool) -> None:
        """The migration ended: the VM now lives here, or (failed) its room is free again."""
        self.reserved_memory_bytes -= memory_bytes
        self.reserved_disk_bytes -= disk_bytes
        self.incoming -= 1
        if not moved:
            self.free_memory_bytes += memory_bytes
            self.free_disk_bytes += disk_bytes

    def why_not(self, memory_bytes: float, disk_bytes: float) -> str:
        if memory_bytes > self.free_memory_bytes:
            return f"{self.name} has {fmt_bytes(self.free_memory_bytes)} memory free, needs {fmt_bytes(memory_bytes)}"
        return f"{self.name} has {fmt_bytes(self.free_disk_bytes)} disk free, needs {fmt_bytes(disk_bytes)}"


Rule = Callable[["object", Sequence[HostRoom]], HostRoom]
RULES: dict[str, Rule] = {}


def destination_rule(name: str) -> Callable[[Rule], Rule]:
    """Register a rule: (vm, hosts that fit, never empty) -> the host to use."""
    def register(fn: Rule) -> Rule:
        RULES[name] = fn
        return fn
    return register


@destination_rule("most-free-memory")
def most_free_memory(vm: object, hosts: Sequence[HostRoom]) -> HostRoom:
    return max(hosts, key=lambda h: (h.free_memory_bytes, -h.incoming))  # ties: the least busy


@destination_rule("best-fit")
def best_fit(vm: object, hosts: Sequence[HostRoom]) -> HostRoom:
    return min(hosts, key=lambda h: (h.free_memory_bytes, h.incoming))


@destination_rule("first-fit")
def first_fit(vm: object, hosts: Sequence[HostRoom]) -> HostRoom:
    return hosts[0]


def get_rule(name: str) -> Rule:
    if name not in RULES:
        raise PlanError(f"destination.rule must be one of {', '.join(sorted(RULES))}; got {name!r}")
    return RULES[name]
