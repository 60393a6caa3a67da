"""A drain for real: the fleet's guests moved from testbed host a to b, with the same limits.

Each migration is the executor's own (:func:`simkvm.executor.execute`, in a
thread of its own), started in the fleet's order whenever the concurrency
model has a free slot. The testbed's hosts talk over loopback, so the one
capped link is made the way oVirt makes it: each migration's max-bandwidth is
the link's bandwidth divided by the migrations in flight, re-set with
virDomainMigrateSetMaxSpeed whenever one starts or finishes (or a fixed
bandwidth per migration, KubeVirt's way). The prediction models exactly that
(:mod:`.engine`, ``split_bandwidth``), from plans read off the running guests,
so predicted and measured drains are the same records, compared VM by VM.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import threading
import time
from typing import Any

from ..libvirt_api import ensure_event_loop, import_libvirt
from ..model.errors import EnvironmentProblem, MigrationFailed, UserError
from ..model.result import Measurement, Result
from ..model.units import fmt_duration
from .engine import drain
from .result import DrainResult, VMRecord
from .spec import Fleet, VMSpec

log = logging.getLogger("simkvm.drain")
MiB = 2**20


def testbed_fleet(fleet: Fleet) -> Fleet:
    """Check that the fleet can run on the testbed: one source (a) drained onto one destination (b)."""
    names = [h.name for h in fleet.hosts]
    if len(fleet.drain) != 1 or len(fleet.destinations) != 1:
        raise UserError(f"--execute moves guests from testbed host a to b: the fleet must drain one host onto "
                        f"one other, got hosts {', '.join(names)} draining {', '.join(fleet.drain)}")
    c = fleet.concurrency
    if not (c.split_bandwidth or c.bandwidth_per_migration_Bps):
        raise UserError("--execute shares the link by QEMU's max-bandwidth (the testbed's hosts talk over "
                        "loopback): use concurrency {stack: ovirt, bandwidth: 64MiB/s} (split among the "
                        "migrations in flight) or a bandwidth per migration")
    return fleet


def execute_drain(fleet: Fleet, args: argparse.Namespace) -> int:
    from ..testbed.hosts import Testbed

    tb = Testbed()
    predicted, measured = predict_and_run(fleet, tb.uri("a"), tb.uri("b"))
    if args.json:
        json.dump({"predicted": predicted.to_dict(), "measured": measured.to_dict(),
                   "makespan_error": makespan_error(predicted, measured)}, sys.stdout,
                  indent=None if args.compact else 2)
        sys.stdout.write("\n")
    else:
        print(format_comparison(predicted, measured))
    if args.plot:
        from ..plot import save
        from .plot import gantt

        save(gantt(measured, title=f"{fleet.name}: measured, {measured.summary_line()}"), args.plot)
    failed = [v for v in measured.vms if not v.result.converged]
    if failed:
        where = ", ".join(f"{v.name} on {v.result.measurement.vm_location or 'unknown'}" for v in failed)
        raise MigrationFailed(f"{len(failed)} migration(s) of the drain did not complete ({where})",
                              "see each VM above")
    return 0


def predict_and_run(fleet: Fleet, src_uri: str, dst_uri: str) -> tuple[DrainResult, DrainResult]:
    """Predict the drain of the guests as they are, then run it for real.

    Each guest is mapped as the validation campaign maps one: its workload, RAM and disks read from it,
    then the fleet's profile forced, its guest section included (the testbed guest's kernel reserve and
    its own dirtying), and the cores its vCPUs keep busy measured. The testbed's hosts are one machine:
    they share its cores (the fleet's, else this machine's)."""
    from ..profile import apply_profile, check_guest_image
    from ..testbed.guest import guest_image_id
    from ..testbed.guestplan import plan_for_domain

    testbed_fleet(fleet)
    if fleet.profile is not None:
        check_guest_image(fleet.profile, guest_image_id())
    loads = guest_cpu_loads([vm.name for vm in fleet.vms], src_uri)

    def as_measured(vm: VMSpec) -> VMSpec:
        plan = plan_for_domain(vm.plan, vm.name, src_uri)
        if fleet.profile is not None:
            plan = apply_profile(plan, fleet.profile)
        return dataclasses.replace(vm, plan=plan, cpu_load=loads[vm.name])

    vms = tuple(as_measured(vm) for vm in fleet.vms)
    cores = next((h.cores for h in fleet.hosts if h.cores), None) or float(os.cpu_count() or 1)
    hosts = tuple(dataclasses.replace(h, machine="testbed", cores=cores) for h in fleet.hosts)
    fleet = dataclasses.replace(fleet, vms=vms, hosts=hosts)
    predicted = drain(fleet)
    log.info("drain: predicted %s", predicted.summary_line())
    return predicted, run_drain(fleet, src_uri, dst_uri)


def guest_cpu_loads(names: list[str], uri: str, window_s: float = 1.0) -> dict[str, float]:
    """Cores each running guest keeps busy: its QEMU's CPU time over ``window_s`` (virDomainGetInfo)."""
    libvirt = import_libvirt()
    conn = libvirt.open(uri)
    try:
        doms = {n: conn.lookupByName(n) for n in names}
        t0, before = time.monotonic(), {n: d.info()[4] for n, d in doms.items()}
        time.sleep(window_s)
        t1, after = time.monotonic(), {n: d.info()[4] for n, d in doms.items()}
    except libvirt.libvirtError as exc:
        raise EnvironmentProblem(f"cannot read the guests' CPU time on {uri}: {exc.get_error_message()}") from None
    finally:
        conn.close()
    return {n: max(0.0, (after[n] - before[n]) / 1e9 / (t1 - t0)) for n in names}


def makespan_error(predicted: DrainResult, measured: DrainResult) -> float:
    return (predicted.makespan_s - measured.makespan_s) / measured.makespan_s if measured.makespan_s else 0.0


def format_comparison(predicted: DrainResult, measured: DrainResult) -> str:
    """Each VM predicted/measured: when it started and ended, its phases (preparation, disk mirror,
    pre-copy), when its slot was freed (the source QEMU gone), its downtime; then the makespans."""
    lines = [f"simkvm drain --execute: {measured.name} ({measured.concurrency})", "",
             f"{'VM':<10} {'start':>11} {'setup':>11} {'mirror':>11} {'precopy':>11} {'end':>11} {'freed':>11} "
             f"{'downtime':>11}  outcome   (predicted/measured)"]

    def pair(p: float | None, m: float | None, unit: str = "s", scale: float = 1.0) -> str:
        def one(x: float | None) -> str:
            return "-" if x is None else f"{x * scale:.{0 if scale > 1 else 1}f}"
        return f"{one(p) + '/' + one(m) + unit:>11}"

    freed_p, freed_m = predicted.meta.get("slot_freed_s", {}), measured.meta.get("slot_freed_s", {})
    for m in sorted(measured.vms, key=lambda v: v.start_s):
        p = predicted.record(m.name)
        pr, mr = p.result, m.result
        lines.append(f"{m.name:<10} {pair(p.start_s, m.start_s)} {pair(pr.setup_time_s, mr.setup_time_s)} "
                     f"{pair(pr.disk_mirror_time_s, mr.disk_mirror_time_s)} "
                     f"{pair(pr.precopy_time_s, mr.precopy_time_s)} {pair(p.end_s, m.end_s)} "
                     f"{pair(freed_p.get(m.name), freed_m.get(m.name))} "
                     f"{pair(pr.downtime_s, mr.downtime_s, 'ms', 1000.0)}  {pr.outcome}/{mr.outcome}")
    lines.append("")
    lines.append(f"makespan predicted {fmt_duration(predicted.makespan_s)}, measured {fmt_duration(measured.makespan_s)} "
                 f"({makespan_error(predicted, measured):+.1%})")
    return "\n".join(lines)


class _Flight:
    """One migration in flight: its thread, where its result lands, and its share of the link.

    ``mibps`` is the max-bandwidth in force: migrate3's own bandwidth until the drain changes it.
    libvirt applies that bandwidth when its Perform phase starts (qemuMigrationSrcRun), so a
    virDomainMigrateSetMaxSpeed that lands earlier (during the executor's preparation, or
    libvirt's Begin and Prepare) is overwritten: a new share (``want``) waits until the job
    moves data (``moving``), then it sticks."""

    def __init__(self, name: str, start_s: float, mibps: int) -> None:
        self.name = name
        self.start_s = start_s
        self.result: Result | None = None
        self.end_s = 0.0
        self.thread: threading.Thread | None = None
        self.mibps = mibps
        self.want = mibps
        self.moving = False
        self.freed_s: float | None = None  # its slot freed: the source no longer runs the VM


class _SourceEvents:
    """What the source's lifecycle events say of the drain's VMs: which migrations have switched over,
    and when each VM left the source; learnt without a call on the domain.

    Why not ask the domain: once a migration has switched over, libvirt's Confirm phase stops the
    source QEMU with the domain locked until the process is gone (qemuMigrationSrcConfirmPhase ->
    qemuProcessStop -> qemuProcessKill -> virProcessKillPainfullyDelay: 1.2-2.0 s on the testbed, the
    exited QEMU's reaping). Any call on that domain (virDomainIsActive, virDomainMigrateSetMaxSpeed)
    waits that long in its lookup (virDomainObjListFindByName locks the domain while it holds the
    domain list's read lock), and meanwhile the other migration's Confirm cannot remove its own
    domain (virDomainObjListRemove takes the list's write lock). Measured on the testbed drain (three
    runs, 2026-12-01): the drain's loop, held on one source in Confirm, started the third VM only once
    the *second* source was gone (0.04-0.98 s after the first), and the pair's migrate3 calls returned
    within 3 ms of each other every time although their sources stopped up to 1 s apart."""

    def __init__(self, libvirt: Any, conn: Any, t0: float, wake: threading.Event) -> None:
        self.libvirt = libvirt
        self.t0 = t0
        self.wake = wake
        self.watched: dict[str, str] = {}  # UUID -> VM: the domains whose migration has started
        self.switched: set[str] = set()  # paused on the source for the switchover: no more share changes
        self.left: dict[str, float] = {}  # VM -> when the source stopped running it (drain time)
        self.conn = conn
        self.callback_id: int | None = None
        try:
            self.callback_id = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                           self._on_lifecycle, None)
        except libvirt.libvirtError as exc:  # then the domains are asked, as before
            log.info("drain: no lifecycle events from the source (%s): polling it", exc.get_error_message())

    @property
    def working(self) -> bool:
        return self.callback_id is not None

    def watch(self, name: str) -> None:
        """``name``'s migration starts: its domain's events count from now (by UUID, so that an earlier
        domain of the same name, whose late events may still arrive, is not taken for it)."""
        try:
            self.watched[self.conn.lookupByName(name).UUIDString()] = name
        except self.libvirt.libvirtError:
            pass  # the executor says what is wrong with it

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, _detail: int, _opaque: Any) -> None:
        lv, name = self.libvirt, self.watched.get(dom.UUIDString())
        if name is None:
            return
        if event == lv.VIR_DOMAIN_EVENT_SUSPENDED:  # the switchover (or post-copy's start)
            self.switched.add(name)
        elif event == lv.VIR_DOMAIN_EVENT_RESUMED:  # running on the source again (a cancelled switchover)
            self.switched.discard(name)
        elif event in (lv.VIR_DOMAIN_EVENT_STOPPED, lv.VIR_DOMAIN_EVENT_UNDEFINED):
            self.left.setdefault(name, time.monotonic() - self.t0)
            self.wake.set()

    def close(self) -> None:
        if self.callback_id is not None:
            try:
                self.conn.domainEventDeregisterAny(self.callback_id)
            except self.libvirt.libvirtError:
                pass


def run_drain(fleet: Fleet, src_uri: str, dst_uri: str, *, poll_s: float = 0.02) -> DrainResult:
    """Run ``fleet``'s migrations for real, in its order, within its limits; measured records."""
    from ..executor import execute

    libvirt = import_libvirt()

    c = fleet.concurrency
    slots = min(x for x in (c.max_parallel, c.per_source, c.per_destination, len(fleet.vms)) if x)
    queue = list(fleet.vms)
    flying: dict[str, _Flight] = {}
    finishing: list[_Flight] = []  # arrived, the executor still finishing
    records: list[VMRecord] = []
    freed: dict[str, float] = {}  # VM -> when its slot was freed (drain time)
    shares: list[tuple[float, str, int]] = []  # (drain time, VM, MiB/s) each max-bandwidth set
    done = threading.Event()
    ensure_event_loop()  # (events only reach connections opened after it)
    conn = libvirt.open(src_uri)
    t0 = time.monotonic()
    events = _SourceEvents(libvirt, conn, t0, done)

    def each_Bps(n: int) -> float:
        if c.split_bandwidth:
            total = c.split_bandwidth_Bps or fleet.host(fleet.drain[0]).nic_Bps
            return total / n
        return float(c.bandwidth_per_migration_Bps or 0.0)

    def resplit() -> None:
        """Every migration in flight gets the link / how many are in flight (MiB/s, as libvirt takes it)."""
        if not c.split_bandwidth or not flying:
            return
        mibps = max(int(each_Bps(len(flying)) / MiB), 1)
        for f in flying.values():
            f.want = mibps
        apply_shares()

    def moves_data(f: _Flight) -> bool:
        """Its job moves data (a disk mirror or RAM): libvirt has applied migrate3's bandwidth."""
        try:
            stats = conn.lookupByName(f.name).jobStats(0)
        except libvirt.libvirtError:
            return False
        return bool(stats.get("disk_total") or stats.get("memory_total"))

    def apply_shares() -> None:
        """virDomainMigrateSetMaxSpeed where a share changed, once it can no longer be overwritten, and
        never once the migration has switched over (its RAM is sent; its domain is busy in Confirm)."""
        for f in flying.values():
            if f.want == f.mibps or f.name in events.switched:
                continue
            if not f.moving:
                f.moving = moves_data(f)
                if not f.moving:
                    continue  # looked at again at the next poll
            try:
                conn.lookupByName(f.name).migrateSetMaxSpeed(f.want, 0)
                f.mibps = f.want
                shares.append((time.monotonic() - t0, f.name, f.want))
            except libvirt.libvirtError as exc:  # it may just have finished
                log.info("drain: %s: max speed not changed (%s)", f.name, exc.get_error_message())
                f.want = f.mibps

    def left_source(name: str) -> bool:
        """The source no longer runs the VM (libvirt stops it there once the destination has resumed):
        the source's event says so; without events, the domain is asked."""
        if events.working:
            return name in events.left
        try:
            return not conn.lookupByName(name).isActive()
        except libvirt.libvirtError:
            return True  # undefined on the source: it moved (a persistent definition goes along)

    def run_one(flight: _Flight, plan: Any) -> None:
        try:
            flight.result = execute(plan, flight.name, src_uri, dst_uri)
        except MigrationFailed as exc:
            partial = getattr(exc, "result", None)
            flight.result = partial or Result(converged=False, outcome="aborted", reason=str(exc),
                                              source="measured", measurement=Measurement(exc.vm_location))
        except Exception as exc:  # noqa: BLE001 - recorded, the other migrations go on
            flight.result = Result(converged=False, outcome="aborted", reason=f"{type(exc).__name__}: {exc}",
                                   source="measured", measurement=Measurement("unknown"))
        flight.end_s = time.monotonic() - t0
        done.set()

    try:
        while queue or flying or finishing:
            sharing = len(flying) + min(slots - len(flying), len(queue))  # those starting now start together
            started = False
            while queue and len(flying) < slots:
                vm = queue.pop(0)
                bandwidth = each_Bps(sharing)
                if c.split_bandwidth:
                    bandwidth = max(int(bandwidth / MiB), 1) * MiB  # libvirt's bandwidth is whole MiB/s
                plan = dataclasses.replace(vm.plan, link=dataclasses.replace(vm.plan.link, bandwidth_Bps=bandwidth))
                events.watch(vm.name)
                flight = _Flight(vm.name, time.monotonic() - t0, int(bandwidth / MiB))
                shares.append((flight.start_s, vm.name, flight.mibps))
                flying[vm.name] = flight
                flight.thread = threading.Thread(target=run_one, args=(flight, plan), name=f"drain-{vm.name}",
                                                 daemon=True)
                flight.thread.start()
                started = True
            if started:  # once the whole batch is in flight (each of them started with its share already)
                resplit()
            # Its slot is free once the source no longer runs the VM: libvirt's Confirm has stopped
            # the source QEMU (host.source_stop after the resume, as the simulator holds it); the
            # executor may still be reading the completed job's figures. One departure at a time, the
            # next VM started at once (the simulator handles each completion on its own, as it comes).
            gone = [name for name, f in flying.items() if f.result is not None or left_source(name)]
            left = min(gone, key=lambda name: events.left.get(name, math.inf), default=None)  # the first to go
            if left is not None:
                flying[left].freed_s = events.left.get(left, time.monotonic() - t0)
                finishing.append(flying.pop(left))
                resplit()
            else:
                done.wait(poll_s)
                done.clear()
            apply_shares()
            for f in list(finishing):
                if f.result is not None:
                    assert f.thread is not None
                    f.thread.join()
                    finishing.remove(f)
                    records.append(VMRecord(f.name, fleet.drain[0], fleet.destinations[0].name, f.start_s,
                                            f.start_s + f.result.total_time_s, f.result))
                    if f.freed_s is not None:
                        freed[f.name] = f.freed_s
    finally:
        for f in list(flying.values()) + finishing:  # interrupted: each executor finishes or aborts safely
            if f.thread is not None:
                f.thread.join()
        events.close()
        conn.close()
    return DrainResult(name=fleet.name, source="measured", concurrency=c.describe(),
                       order=[vm.name for vm in fleet.vms], vms=records,
                       meta={"slot_freed_s": freed,
                             "max_bandwidth_set": [{"time_s": t, "name": n, "MiBps": b} for t, n, b in shares]})
