"""How many migrations run at once, and with what bandwidth: the knobs real stacks expose.

* Nova: ``max_concurrent_live_migrations`` outgoing per compute host (default 1;
  nova/conf/compute.py), ``live_migration_bandwidth`` (0: unlimited).
* KubeVirt: ``parallelMigrationsPerCluster`` (5), ``parallelOutboundMigrationsPerNode``
  (2), ``bandwidthPerMigration`` (0: unlimited) in the cluster's migration config.
* oVirt: ``maxMigrations`` outgoing per host (2) and an incoming limit (2); the
  migration bandwidth of the cluster is divided among the migrations in flight, and
  re-divided (virDomainMigrateSetMaxSpeed) whenever one starts or finishes.
* explicit: ``max_parallel`` in the whole drain, ``per_source``, ``per_destination``,
  ``bandwidth_per_migration``.

Knobs are given in the fleet file's ``concurrency`` section, e.g.
``concurrency: {stack: kubevirt, parallelOutboundMigrationsPerNode: 1}``, or
``concurrency: nova``, or ``concurrency: {max_parallel: 3}``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from ..model.errors import PlanError
from ..model.units import fmt_rate, parse_rate

STACKS = ("explicit", "nova", "kubevirt", "ovirt")


@dataclass(frozen=True)
class Concurrency:
    """Limits a drain respects; None: no limit. Bandwidths in B/s of QEMU max-bandwidth."""

    stack: str = "explicit"
    max_parallel: int | None = None  # migrations in flight in the whole drain
    per_source: int | None = None  # outgoing per host
    per_destination: int | None = None  # incoming per host
    bandwidth_per_migration_Bps: float | None = None  # a fixed max-bandwidth for each migration
    # oVirt: each source's migration bandwidth, divided among its migrations in flight (None: its NIC)
    split_bandwidth: bool = False
    split_bandwidth_Bps: float | None = None

    def describe(self) -> str:
        parts = []
        if self.max_parallel:
            parts.append(f"{self.max_parallel} in flight")
        if self.per_source:
            parts.append(f"{self.per_source} per source")
        if self.per_destination:
            parts.append(f"{self.per_destination} per destination")
        if self.bandwidth_per_migration_Bps:
            parts.append(f"{fmt_rate(self.bandwidth_per_migration_Bps)} each")
        if self.split_bandwidth:
            total = fmt_rate(self.split_bandwidth_Bps) if self.split_bandwidth_Bps else "the NIC"
            parts.append(f"{total} split among those in flight")
        return f"{self.stack}: " + (", ".join(parts) if parts else "no limit")


# knob name (snake_case and the stack's own spelling) -> (field, kind)
_KNOBS: dict[str, dict[str, tuple[str, str]]] = {
    "explicit": {
        "max_parallel": ("max_parallel", "count"),
        "per_source": ("per_source", "count"),
        "per_destination": ("per_destination", "count"),
        "bandwidth_per_migration": ("bandwidth_per_migration_Bps", "rate"),
    },
    "nova": {
        "max_concurrent_live_migrations": ("per_source", "count"),
        "live_migration_bandwidth": ("bandwidth_per_migration_Bps", "rate"),
    },
    "kubevirt": {
        "parallel_migrations_per_cluster": ("max_parallel", "count"),
        "parallelMigrationsPerCluster": ("max_parallel", "count"),
        "parallel_outbound_migrations_per_node": ("per_source", "count"),
        "parallelOutboundMigrationsPerNode": ("per_source", "count"),
        "bandwidth_per_migration": ("bandwidth_per_migration_Bps", "rate"),
        "bandwidthPerMigration": ("bandwidth_per_migration_Bps", "rate"),
    },
    "ovirt": {
        "max_migrations": ("per_source", "count"),
        "maxMigrations": ("per_source", "count"),
        "max_incoming_migrations": ("per_destination", "count"),
        "bandwidth": ("split_bandwidth_Bps", "rate"),
    },
}

DEFAULTS: dict[str, Concurrency] = {
    "explicit": Concurrency(),
    "nova": Concurrency(stack="nova", per_source=1),
    "kubevirt": Concurrency(stack="kubevirt", max_parallel=5, per_source=2),
    "ovirt": Concurrency(stack="ovirt", per_source=2, per_destination=2, split_bandwidth=True),
}


def parse_concurrency(data: Any, where: str = "concurrency") -> Concurrency:
    """``nova`` | ``{stack: kubevirt, <its knobs>}`` | ``{max_parallel: 2, ...}`` | a bare number."""
    if data is None:
        return Concurrency(max_parallel=1)
    if isinstance(data, bool):
        raise PlanError(f"{where} must be a stack name ({', '.join(STACKS[1:])}) or a mapping of limits, got {data!r}")
    if isinstance(data, int):
        data = {"max_parallel": data}
    if isinstance(data, str):
        data = {"stack": data}
    if not isinstance(data, Mapping):
        raise PlanError(f"{where} must be a stack name ({', '.join(STACKS[1:])}) or a mapping of limits, got {data!r}")
    data = dict(data)
    stack = data.pop("stack", "explicit")
    if stack not in STACKS:
        raise PlanError(f"{where}.stack must be one of {', '.join(STACKS)}; got {stack!r}")
    knobs = _KNOBS[stack]
    out = DEFAULTS[stack]
    for key, value in data.items():
        if key not in knobs:
            raise PlanError(f"unknown key {where}.{key} for stack {stack!r}; known: {', '.join(sorted(knobs))}")
        name, kind = knobs[key]
        if kind == "count":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PlanError(f"{where}.{key} must be a whole number >= 0 (0: no limit), got {value!r}")
            change: dict[str, Any] = {name: value or None}
            out = replace(out, **change)
        else:
            rate = parse_rate(value, f"{where}.{key}")
            change = {name: rate or None}  # 0 = unlimited, as in every stack
            out = replace(out, **change)
    return out
