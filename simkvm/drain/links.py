"""Host NICs shared by the migrations of a drain: flows with max-min fair sharing.

Every migration is a flow from its source's NIC (outbound) to its
destination's NIC (inbound); NICs are full duplex, so each direction is a
link of its own. A flow asks for at most its *demand* (QEMU's max-bandwidth
while it pre-copies, libvirt's mirror speed while the disks copy, everything
during the stop-and-copy, when QEMU lifts the limit); the links are shared
max-min fairly (progressive filling, as SimGrid shares its links): no flow
can get more without taking from one that has less. Background traffic is a
flow of its own that never ends.

What a migration is told (:meth:`Network.share_Bps`) is the capacity left to
it: on its most loaded link, the capacity less what the other flows take.
For a flow held back by its own limit that is more than it uses; alone on
the link it is the whole NIC, which is why a lone migration in a drain is
exactly the migration ``simulate`` predicts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable

from ..sim.state import Run

LinkKey = tuple[str, str]  # (host, "out" | "in")


def max_min_fair(capacity: dict[LinkKey, float],
                 flows: dict[Hashable, tuple[float, tuple[LinkKey, ...]]]) -> dict[Hashable, float]:
    """Progressive filling: raise every flow's rate together; a flow stops at its demand or when
    one of its links is full. ``flows``: demand (B/s, may be inf) and the links it crosses."""
    remaining = dict(capacity)
    count = {link: 0 for link in capacity}
    for _, links in flows.values():
        for link in links:
            count[link] += 1
    active = dict(flows)
    alloc: dict[Hashable, float] = {}
    while active:
        level = min((remaining[link] / n for link, n in count.items() if n > 0), default=math.inf)
        fixed = {f: d for f, (d, _) in active.items() if d <= level}
        if not fixed:  # the fullest link(s): their flows stop at the common level
            full = {link for link, n in count.items() if n > 0 and remaining[link] / n <= level * (1 + 1e-12)}
            fixed = {f: level for f, (_, links) in active.items() if full.intersection(links)}
        for f, rate in fixed.items():
            alloc[f] = rate
            for link in active.pop(f)[1]:
                remaining[link] -= rate
                count[link] -= 1
    return alloc


def demand_Bps(run: Run) -> float:
    """What a migration would send now if the wire let it (QEMU's and libvirt's own limits)."""
    if run.phase in ("switchover", "postcopy", "done"):
        return math.inf  # ram_save_complete() and the post-copy push ignore max-bandwidth
    if run.phase == "mirror":
        return run.plan.disk_bandwidth_Bps * len(run.plan.migrated_disks)
    return run.bandwidth_Bps + run.mirror_bg_Bps


@dataclass
class Network:
    """The NICs of a drain's hosts and the flows on them; records each link's use over time."""

    env: Any
    nic_Bps: dict[str, float]
    background_Bps: dict[str, float] = field(default_factory=dict)
    routes: dict[Run, tuple[LinkKey, LinkKey]] = field(default_factory=dict)
    demand: dict[Run, float] = field(default_factory=dict)  # flows on the wire
    share: dict[Run, float] = field(default_factory=dict)
    #: per link: (time_s, bytes/s given to migrations, bytes/s of background), at every change
    usage: dict[LinkKey, list[tuple[float, float, float]]] = field(default_factory=dict)
    reallocations: int = 0

    def __post_init__(self) -> None:
        self.capacity: dict[LinkKey, float] = {}
        for host, nic in self.nic_Bps.items():
            for way in ("out", "in"):
                self.capacity[(host, way)] = nic
        self._background = {("background", host, way): (rate, ((host, way),))
                            for host, rate in self.background_Bps.items() if rate > 0 for way in ("out", "in")}

    def route(self, run: Run, source: str, destination: str) -> None:
        """``run`` goes from ``source`` to ``destination``; it joins the wire when it first sends."""
        self.routes[run] = ((source, "out"), (destination, "in"))

    def share_Bps(self, run: Run) -> float:
        """The capacity left to ``run`` now (Run.capacity_Bps asks it whenever it re-rates a send)."""
        demand = demand_Bps(run)
        if self.demand.get(run) != demand:  # joins, or its own limit changed: its neighbours are re-rated
            self.demand[run] = demand
            self._reallocate(self.routes[run], caller=run)
        return self.share[run]

    def leave(self, run: Run) -> None:
        """The migration ended (switched over, aborted or refused)."""
        links = self.routes.pop(run, ())
        self.share.pop(run, None)
        if self.demand.pop(run, None) is not None:
            self._reallocate(links, caller=None)

    def start(self) -> None:
        """Record the background traffic from the start."""
        self._reallocate(tuple(self.capacity), caller=None)

    def _component(self, links: Iterable[LinkKey]) -> tuple[set[LinkKey], list[Run]]:
        """The links and flows that share capacity, directly or through others, with ``links``:
        only their rates can change (max-min fairness is decided per connected component)."""
        todo, seen, runs = list(links), set(links), []
        by_link: dict[LinkKey, list[Run]] = {}
        for run in self.demand:
            for link in self.routes[run]:
                by_link.setdefault(link, []).append(run)
        taken: set[Run] = set()
        while todo:
            for run in by_link.get(todo.pop(), ()):
                if run not in taken:
                    taken.add(run)
                    runs.append(run)
                    for link in self.routes[run]:
                        if link not in seen:
                            seen.add(link)
                            todo.append(link)
        return seen, runs

    def _reallocate(self, links: Iterable[LinkKey], caller: Run | None) -> None:
        component, runs = self._component(links)
        capacity = {link: self.capacity[link] for link in component}
        flows: dict[Hashable, tuple[float, tuple[LinkKey, ...]]] = {
            key: flow for key, flow in self._background.items() if flow[1][0] in component}
        for run in runs:
            flows[run] = (self.demand[run], self.routes[run])
        alloc = max_min_fair(capacity, flows)
        used = dict.fromkeys(component, 0.0)
        for f, rate in alloc.items():
            for link in flows[f][1]:
                used[link] += rate
        self.reallocations += 1
        for run in runs:
            own = alloc[run]
            share = max(min(self.capacity[link] - (used[link] - own) for link in self.routes[run]), 1e-9)
            old = self.share.get(run)
            self.share[run] = share
            if run is not caller and old is not None and not math.isclose(old, share, rel_tol=1e-12):
                run.rate_changed()  # its send in flight is re-rated now
        self._record(component, alloc, flows)

    def _record(self, component: set[LinkKey], alloc: dict[Hashable, float],
                flows: dict[Hashable, tuple[float, tuple[LinkKey, ...]]]) -> None:
        now = self.env.now
        migrations = dict.fromkeys(component, 0.0)
        background = dict.fromkeys(component, 0.0)
        for f, rate in alloc.items():
            target = background if isinstance(f, tuple) else migrations
            for link in flows[f][1]:
                target[link] += min(rate, self.capacity[link])
        for link in component:
            series = self.usage.setdefault(link, [])
            row = (now, migrations[link], background[link])
            if series and series[-1][0] == now:
                series[-1] = row
            elif not series or series[-1][1:] != row[1:]:
                series.append(row)

    def links_used(self) -> Iterable[LinkKey]:
        return (link for link, series in self.usage.items() if any(r[1] > 0 for r in series))
