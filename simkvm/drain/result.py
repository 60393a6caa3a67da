"""What a drain did (or will do): each VM's migration in time, and the links' use.

``DrainResult.to_dict()`` is the JSON of ``simkvm drain --json``: ``makespan_s``
and ``vms``, each with ``name``, ``converged``, ``start_s``, ``end_s``,
``total_time_s``, ``downtime_s`` (the interface scripts rely on), plus where it
went and why it ended as it did. Predicted and measured drains share it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..model.result import Result
from ..model.units import fmt_duration


@dataclass
class VMRecord:
    name: str
    source: str
    destination: str | None
    start_s: float  # when its migration started (drain clock)
    end_s: float  # when it ended: start_s + result.total_time_s, on the drain's clock
    result: Result

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {"name": self.name, "converged": r.converged, "outcome": r.outcome, "source": self.source,
                "destination": self.destination, "start_s": self.start_s, "end_s": self.end_s,
                "total_time_s": r.total_time_s, "downtime_s": r.downtime_s,
                "iterations": r.iterations, "reason": r.reason,
                "setup_time_s": r.setup_time_s, "disk_mirror_time_s": r.disk_mirror_time_s,
                "precopy_time_s": r.precopy_time_s, "ram_transferred_bytes": r.ram_transferred_bytes,
                "disk_transferred_bytes": r.disk_transferred_bytes}


@dataclass
class DrainResult:
    name: str
    source: str  # simulated | measured
    concurrency: str
    order: list[str]
    vms: list[VMRecord]
    #: "host/out" -> [(time_s, migrations_Bps, background_Bps)], a step function
    link_usage: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    link_capacity_Bps: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def makespan_s(self) -> float:
        return max((v.end_s for v in self.vms), default=0.0)

    @property
    def converged(self) -> int:
        return sum(v.result.converged for v in self.vms)

    def record(self, name: str) -> VMRecord:
        return next(v for v in self.vms if v.name == name)

    def mean_utilisation(self, link: str) -> float:
        """Share of the link's capacity given to migrations, averaged over the makespan."""
        series, end = self.link_usage.get(link, []), self.makespan_s
        if not series or end <= 0:
            return 0.0
        total = 0.0
        for (t, used, _), nxt in zip(series, series[1:] + [(end, 0.0, 0.0)]):
            total += used * max(min(nxt[0], end) - t, 0.0)
        return total / end / self.link_capacity_Bps[link]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "source": self.source, "concurrency": self.concurrency,
            "makespan_s": self.makespan_s, "converged": self.converged, "vm_count": len(self.vms),
            "order": self.order,
            "vms": [v.to_dict() for v in sorted(self.vms, key=lambda v: (v.start_s, v.name))],
            "links": {link: {"capacity_Bps": self.link_capacity_Bps[link],
                             "mean_utilisation": self.mean_utilisation(link),
                             "usage": [{"time_s": t, "migrations_Bps": m, "background_Bps": b}
                                       for t, m, b in series]}
                      for link, series in self.link_usage.items()},
            "meta": self.meta,
        }

    def summary_line(self) -> str:
        return (f"{self.converged}/{len(self.vms)} VMs converged, makespan {fmt_duration(self.makespan_s)} "
                f"({self.concurrency})")
