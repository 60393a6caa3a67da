"""The hosts' CPUs in a drain: guests' vCPUs and starting destination QEMUs sharing cores.

Starting the paused destination QEMU (``host.start_destination``: process start,
machine and device setup until QMP answers, the NBD server) is CPU work,
calibrated with one migration at a time, when it had a core to itself. A
drain starts several at once, on machines whose cores the guests' vCPUs also
keep busy, and each start then takes longer. Each machine's cores are shared
max-min fairly, as the kernel's fair scheduler shares them among threads
that want less or more than an equal share: a guest takes its vCPU load
(``cpu_load``, in cores) if it can, a starting QEMU wants one core, and the
start takes ``start_destination`` of CPU at whatever share it gets, re-rated
whenever another start begins or ends or a guest moves. Measured on the
testbed (2 cores shared by hosts a and b, three TCG guests at ~0.4 core
each): one start alone took 0.55 s, two at once 0.70-0.92 s, against 0.42 s
calibrated alone (libvirt's log, Prepare to nbd-server-start).

Only the QEMU start is slowed: the migration streams are held by their
max-bandwidth far below their CPU ceiling, and a guest slowed by a starved
vCPU dirties less (not modelled). Hosts without ``cores`` are not modelled:
their starts take ``start_destination`` as in a lone ``simulate``.
"""
from __future__ import annotations

import math
from typing import Any, Hashable

import simpy

from ..sim.state import Run
from .links import max_min_fair

START_DEMAND_CORES = 1.0  # QEMU's start runs on one thread


class Cpus:
    """Each machine's cores, the guests on it and the QEMUs starting there; every start's share."""

    def __init__(self, cores: dict[str, float], machine_of: dict[str, str]) -> None:
        self.cores = cores  # machine -> cores (only the machines modelled)
        self.machine_of = machine_of  # host -> machine
        self.guests: dict[str, tuple[float, str]] = {}  # VM -> (cores it keeps busy, machine)
        self.destination: dict[Run, str] = {}  # migration -> its destination host
        self.starting: dict[Run, str] = {}  # migration starting its destination QEMU -> machine
        self.share: dict[Run, float] = {}
        self._wake: dict[Run, simpy.Event] = {}

    def place_all(self, guests: dict[str, tuple[str, float]]) -> None:
        """The guests at the drain's start: VM -> (its host, cores its vCPUs keep busy)."""
        for vm, (host, load) in guests.items():
            self.guests[vm] = (load, self.machine_of[host])
        for machine in self.cores:
            self._reallocate(machine)

    def place(self, vm: str, host: str, load_cores: float) -> None:
        """``vm``'s guest runs on ``host`` (from the drain's start, and on its destination once resumed)."""
        old = self.guests.get(vm)
        machine = self.machine_of[host]
        self.guests[vm] = (load_cores, machine)
        for m in {machine, old[1] if old else machine}:
            self._reallocate(m)

    def route(self, run: Run, destination: str) -> None:
        self.destination[run] = destination

    def start_destination(self, run: Run):
        """Start the paused destination QEMU: ``host.start_destination`` of CPU at its share of the
        destination machine's cores (a SimPy process body, on the migration's own clock)."""
        env: Any = run.env
        work = run.plan.host.start_destination_s
        machine = self.machine_of[self.destination[run]]
        if machine not in self.cores:
            yield env.timeout(work)
            return
        self.starting[run] = machine
        self._reallocate(machine)
        while work > 1e-12:
            share = self.share[run]
            wake = self._wake[run] = env.event()
            t0 = env.now
            yield env.timeout(work / share) | wake
            if not wake.triggered:
                break
            work -= (env.now - t0) * share  # re-rated: what is left, at the new share
        del self.starting[run]
        self.share.pop(run, None)
        self._wake.pop(run, None)
        self._reallocate(machine)

    def _reallocate(self, machine: str) -> None:
        if machine not in self.cores:
            return
        key = (machine, "cpu")
        flows: dict[Hashable, tuple[float, tuple[Any, ...]]] = {
            ("guest", vm): (load, (key,)) for vm, (load, m) in self.guests.items() if m == machine and load > 0}
        starts = [run for run, m in self.starting.items() if m == machine]
        for run in starts:
            flows[run] = (START_DEMAND_CORES, (key,))
        alloc = max_min_fair({key: self.cores[machine]}, flows)
        for run in starts:
            new = max(alloc[run], 1e-9)
            old = self.share.get(run)
            self.share[run] = new
            wake = self._wake.get(run)
            if old is not None and not math.isclose(old, new, rel_tol=1e-12) and wake is not None \
                    and not wake.triggered:
                wake.succeed()
