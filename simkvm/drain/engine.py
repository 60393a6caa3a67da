"""A whole drain in one SimPy run: the scheduler and every migration, over shared links.

The scheduler reads like an orchestrator draining a host: take the queue in
order; start each VM whose source, the drain and some destination still
have a free slot and room (memory, disk); when nothing more can start, wait
until a migration ends, then look again. Each migration is the simulator's
own process (:func:`simkvm.sim.start_migration`) with its own clock starting
at its start, so policies and results read exactly as for one migration; its
link is its share of the hosts' NICs (:mod:`.links`).
"""
from __future__ import annotations

import dataclasses
import heapq
from typing import Any, Sequence, cast

import simpy

from ..model.result import Result
from ..sim import start_migration
from ..sim.state import Run
from .cpu import Cpus
from .links import Network
from .placement import HostRoom, get_rule
from .result import DrainResult, VMRecord
from .spec import Fleet, VMSpec


class LocalClock:
    """A migration's view of the drain's environment: the same events, time counted from its start.

    A timeout it schedules ends at exactly its own ``now + delay`` (not ``(t0 + now + delay) - t0``,
    which rounds): the migration's clock then runs exactly as in a lone ``simulate``."""

    def __init__(self, env: simpy.Environment) -> None:
        self._env = env
        self.t0 = env.now
        self._due: dict[float, float] = {}  # global time of a timeout -> its local time
        self._heap: list[float] = []

    @property
    def now(self) -> float:
        g = self._env.now
        local = self._due.get(g)
        return g - self.t0 if local is None else local

    def timeout(self, delay: float, value: Any = None) -> simpy.Timeout:
        event = self._env.timeout(delay, value)
        g = self._env.now + delay
        local = self.now + delay
        if g not in self._due:
            if len(self._heap) > 32:  # forget timeouts already past
                while self._heap and self._heap[0] < self._env.now:
                    self._due.pop(heapq.heappop(self._heap), None)
            heapq.heappush(self._heap, g)
            self._due[g] = local
        elif local > self._due[g]:  # a delay too small to move the drain's clock still moves ours
            self._due[g] = local
        return event

    def event(self) -> simpy.Event:
        return self._env.event()

    def process(self, generator: Any) -> simpy.Process:
        return self._env.process(generator)


class Drain:
    """The scheduler's state: the queue, what is in flight, what each destination has left."""

    def __init__(self, fleet: Fleet, order: Sequence[str] | None = None, *, timeline: bool = False) -> None:
        self.fleet = fleet
        self.env = simpy.Environment()
        self.network = Network(self.env, {h.name: h.nic_Bps for h in fleet.hosts},
                               {h.name: h.background_Bps for h in fleet.hosts})
        cores = {h.machine: h.cores for h in fleet.hosts if h.cores is not None}
        self.cpus = Cpus(cores, {h.name: h.machine for h in fleet.hosts}) if cores else None
        by_name = {vm.name: vm for vm in fleet.vms}
        names = list(order) if order is not None else list(by_name)
        if sorted(names) != sorted(by_name):
            raise ValueError("order must name every VM of the fleet exactly once")
        self.queue: list[VMSpec] = [by_name[n] for n in names]
        self.order = names
        self.rooms = {h.name: HostRoom(h.name, h.free_memory_bytes, h.free_disk_bytes) for h in fleet.destinations}
        self.rule = get_rule(fleet.destination_rule)
        self.c = fleet.concurrency
        self.outgoing: dict[str, list[Run]] = {h.name: [] for h in fleet.hosts}
        self.in_flight = 0
        self.records: list[VMRecord] = []
        self.freed: dict[str, float] = {}  # VM -> when its slot was freed
        self.timeline = timeline
        self.changed = self.env.event()

    # ------------------------------------------------------------ the story
    def run(self) -> DrainResult:
        self.network.start()
        if self.cpus is not None:
            self.cpus.place_all({vm.name: (vm.source, vm.cpu_load) for vm in self.fleet.vms})
        self.env.run(until=self.env.process(self.scheduler()))
        return DrainResult(
            name=self.fleet.name, source="simulated", concurrency=self.c.describe(), order=self.order,
            vms=self.records,
            link_usage={f"{h}/{way}": s for (h, way), s in sorted(self.network.usage.items())
                        if any(r[1] > 0 for r in s)},
            link_capacity_Bps={f"{h}/{way}": c for (h, way), c in self.network.capacity.items()},
            meta={"reallocations": self.network.reallocations, "slot_freed_s": self.freed},
        )

    def scheduler(self):
        while self.queue:
            self.start_what_fits()
            if not self.queue:
                break
            if not self.in_flight:  # nothing runs, so nothing will free a slot or room: the rest cannot go
                for vm in list(self.queue):
                    self.refuse(vm, self.why_waiting(vm))
                break
            self.changed = self.env.event()
            yield self.changed
        while self.in_flight:
            self.changed = self.env.event()
            yield self.changed

    def start_what_fits(self) -> None:
        """Start, in queue order, every VM that has a slot and a destination with room; the ones
        started at the same instant start together (an oVirt-style split counts them all)."""
        batch = self.what_fits()
        after = {vm.source: len(self.outgoing[vm.source]) for vm, _ in batch}
        for vm, _ in batch:
            after[vm.source] += 1
        for vm, room in batch:
            self.start(vm, room, sharing=after[vm.source])

    def what_fits(self) -> list[tuple[VMSpec, HostRoom]]:
        per_source = self.c.per_source
        going = {s: len(runs) for s, runs in self.outgoing.items()}
        open_sources = {s for s, n in going.items() if not per_source or n < per_source}
        batch: list[tuple[VMSpec, HostRoom]] = []
        for vm in list(self.queue):
            if (self.c.max_parallel and self.in_flight >= self.c.max_parallel) or not open_sources:
                break
            if vm.source not in open_sources:
                continue
            room_now = [r for r in self.rooms.values() if r.fits(vm.memory_bytes, vm.disk_bytes)]
            slot = [r for r in room_now if not (self.c.per_destination and r.incoming >= self.c.per_destination)]
            if slot:
                room = self.rule(vm, slot)
                self.queue.remove(vm)
                room.reserve(vm.memory_bytes, vm.disk_bytes)
                self.in_flight += 1
                batch.append((vm, room))
                going[vm.source] += 1
                if per_source and going[vm.source] >= per_source:
                    open_sources.discard(vm.source)
            elif room_now:
                continue  # a destination has room but no free slot: wait for one
            elif self.fleet.when_full == "wait" and any(r.may_fit(vm.memory_bytes, vm.disk_bytes)
                                                        for r in self.rooms.values()):
                continue  # room comes back if a migration in flight fails
            else:
                self.refuse(vm, self.why_waiting(vm))
        return batch

    def start(self, vm: VMSpec, room: HostRoom, sharing: int) -> None:
        """Start ``vm``'s migration to ``room`` (already reserved); ``sharing``: migrations from its
        source once this batch has started (an oVirt-style split gives each 1/sharing)."""
        plan = vm.plan
        runs = self.outgoing[vm.source]
        bandwidth = self.c.bandwidth_per_migration_Bps
        if self.c.split_bandwidth:
            bandwidth = self._split_Bps(vm.source) / sharing
        if bandwidth:
            plan = dataclasses.replace(plan, link=dataclasses.replace(plan.link, bandwidth_Bps=min(
                bandwidth, plan.capacity_Bps)))
        clock = cast(simpy.Environment, LocalClock(self.env))  # all a migration uses of an Environment
        run, process = start_migration(clock, plan, timeline=self.timeline, link=self.network, cpus=self.cpus)
        self.network.route(run, vm.source, room.name)
        if self.cpus is not None:
            self.cpus.route(run, room.name)
        runs.append(run)
        if self.c.split_bandwidth:
            self._resplit(vm.source)
        self.env.process(self.migration(vm, room, run, process))

    def migration(self, vm: VMSpec, room: HostRoom, run: Run, process: simpy.Process):
        start = self.env.now
        result: Result = yield process
        self.network.leave(run)
        self.records.append(VMRecord(vm.name, vm.source, room.name, start, self.env.now, result))
        if result.converged:
            if self.cpus is not None:
                self.cpus.place(vm.name, room.name, vm.cpu_load)
            # The VM runs on the destination; the migration call returns, and the slot (and an
            # oVirt-style share) is free, once libvirt's Confirm has stopped the source QEMU.
            yield self.env.timeout(run.plan.host.source_stop_s)
        self.outgoing[vm.source].remove(run)
        self.freed[vm.name] = self.env.now
        room.release(vm.memory_bytes, vm.disk_bytes, moved=result.converged)
        self.in_flight -= 1
        if self.c.split_bandwidth:
            self._resplit(vm.source)
        # Each completion is handled on its own, as it comes (an orchestrator's per-migration event):
        # two migrations that end at the same instant free their slots one after the other, and the
        # VM started in the first slot still counts the second migration in an oVirt-style split. On
        # the testbed two sources never stop together: libvirt notices each exit on its own 200 ms poll.
        if self.queue:
            self.start_what_fits()
        if not self.changed.triggered:
            self.changed.succeed()

    # ------------------------------------------------------------ oVirt's bandwidth split
    def _split_Bps(self, source: str) -> float:
        return self.c.split_bandwidth_Bps or self.fleet.host(source).nic_Bps

    def _resplit(self, source: str) -> None:
        """Every migration from ``source`` gets the bandwidth / how many are in flight
        (oVirt re-sets it with virDomainMigrateSetMaxSpeed as migrations start and finish)."""
        runs = self.outgoing[source]
        if not runs:
            return
        each = self._split_Bps(source) / len(runs)
        for run in runs:
            new = min(each, run.plan.capacity_Bps)
            if run.bandwidth_Bps != new:
                run.bandwidth_Bps = new
                run.rate_changed()

    # ------------------------------------------------------------ refusals
    def why_waiting(self, vm: VMSpec) -> str:
        if not self.rooms:
            return "refused: no destination host"
        return "refused: no destination can take it: " + "; ".join(
            r.why_not(vm.memory_bytes, vm.disk_bytes) for r in self.rooms.values())

    def refuse(self, vm: VMSpec, reason: str) -> None:
        self.queue.remove(vm)
        result = Result(converged=False, outcome="refused", reason=reason, source="simulated")
        self.records.append(VMRecord(vm.name, vm.source, None, self.env.now, self.env.now, result))


def drain(fleet: Fleet, order: Sequence[str] | None = None, *, timeline: bool = False) -> DrainResult:
    """Predict a drain: every VM of ``fleet`` moved (in ``order``, default the file's) within its limits."""
    if not fleet.vms:
        return DrainResult(fleet.name, "simulated", fleet.concurrency.describe(), [], [])
    return Drain(fleet, order, timeline=timeline).run()

