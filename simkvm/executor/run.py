"""Run a plan's migration for real through libvirt, and measure it in the simulator's schema.

``execute()`` reads like the migration it performs:

1. **Preparation** (t=0 here, as in the simulator): check the destination's
   memory and storage, create the empty disk images there
   (:mod:`.prepare`). A refusal changes nothing.
2. **Migration**: set the downtime limit (or the policy's initial one), then
   ``virDomainMigrate3`` (live, non-shared storage, the plan's bandwidth and
   aids as flags/params: :mod:`.flags`) in a worker thread, because it blocks until the end;
   meanwhile the calling thread polls the job stats every ``poll_s`` and the
   libvirt event loop records each iteration event (:mod:`.monitor`). Each poll
   also drives the plan's policy and after-N-iterations rules
   (:mod:`.control`: the simulator's own policy objects, their actions done
   through libvirt). The plan's max time and max iterations are enforced here,
   like guestperf does.
3. **Completion**: verify the destination VM runs (resuming it when we paused
   the guest to force completion), read the completed job's statistics and
   fill a :class:`~simkvm.model.result.Result` (``source='measured'``, outcome
   ``converged``, ``postcopy`` or ``paused``, with every action taken;
   :mod:`.measure`).

Whatever goes wrong (a limit, a libvirt error, Ctrl-C or SIGTERM), the job is
aborted, we wait for libvirt to finish the abort, check that the VM runs on
the source (resuming it if libvirt left it paused), and delete only the
destination images we created. The executor never deletes anything else and
never declares success before the destination VM is running.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..libvirt_api import ensure_event_loop, host_info, import_libvirt, lookup_domain, state_name, version_text
from ..model.errors import EnvironmentProblem, MigrationFailed, UserError
from ..model.plan import Plan
from ..model.result import Measurement, Result
from ..model.units import fmt_bytes, fmt_duration
from ..policies import Policy, make_policy
from .connection import CONNECT_TIMEOUT_S, open_connection
from .control import Controller
from .flags import Transport, aid_support_problem, check_plan, default_migrate_uri, migration_call
from .journal import Journal, NoJournal
from .locate import (
    ASK_TIMEOUT_S,
    Location,
    Pending,
    Unanswered,
    call_with_timeout,
    disk_target,
    locate,
    qemu_answers,
    redact_uri,
    settle,
)
from .measure import (
    EchoProbe,
    Handover,
    completed_stats,
    ending,
    ending_reason,
    guest_paused_s,
    phase_times,
    probe_summary,
    switchover_points,
    with_disk_progress,
)
from .monitor import PREPARED, JobMonitor, Sample, build_rounds, build_timeline, log_progress
from .prepare import (
    DestinationDisks,
    DiskPlacement,
    DomainDisk,
    Refusal,
    check_destination,
    check_no_domain_there,
    create_disks,
    domain_disks,
)
from .signals import Interrupts, signals_as_interrupt

log = logging.getLogger("simkvm.executor")

DEFAULT_MIGRATE_URI = "tcp://127.0.0.1"  # the testbed's; real hosts: default_migrate_uri(dst_uri)
POLL_S = 0.05  # <= 50 ms: iterations under TCG can be a few hundred ms long
#: How long libvirt may take to cancel a job before simkvm acts on what it sees (see Execution._cancel_stuck):
#: a cancel normally ends within a second; one that waits on a dead connection ends only when TCP gives up.
CANCEL_WAIT_S = 30.0
#: How long libvirt may take to notice a destination QEMU that died at its resume (its monitor's EOF).
EOF_SETTLE_S = 3.0
STATS_WAIT_S = 2.0  # how long the polling loop waits for one job-stats answer before it checks its limits again
POLL_ERROR_GRACE_S = 10.0  # job-stat errors tolerated while migrate3 is still running
SLOW_POLL_S = 0.5
NOTHING_CHANGED = "running on the source (nothing was changed)"


@dataclass
class _Stop:
    """Why we stop watching before migrate3 returned."""

    outcome: str  # not_converged (a plan limit) | aborted (user) | error
    reason: str


# ----------------------------------------------------------------- the run
@dataclass
class Execution:
    """One real migration; holds the connections, the monitor and what we created."""

    plan: Plan
    domain: str
    src_uri: str
    dst_uri: str
    migrate_uri: str | None = None  # default: the destination URI's host (default_migrate_uri)
    timeout_s: float | None = None  # default: plan.max_time_s
    poll_s: float = POLL_S
    persist: bool = True  # a persistent source definition is defined on the destination too
    undefine_source: bool = True  # ... and removed from the source (when it was persistent)
    tls: bool = False
    peer_to_peer: bool = False
    tunnelled: bool = False
    # Optional: something that pings the guest (.measure.EchoProbe, e.g. the testbed's
    # simkvm.testbed.network.Probe): the service interruption is then measured.
    probe: EchoProbe | None = None

    downtime_bound_s: float = 0.0  # default: downtime_bound(plan)
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    remove_source_images: bool = False  # after a success, delete the source's copies of the migrated disks

    t0: float = 0.0
    conn: Any = None
    dconn: Any = None
    dom: Any = None
    disks: list[DomainDisk] = field(default_factory=list)
    created: DestinationDisks = field(default_factory=DestinationDisks)
    monitor: JobMonitor | None = None
    policy: Policy | None = None
    controller: Controller | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # for people: what was seen and done
    measurement: Measurement = field(default_factory=Measurement)  # what code acts on
    _worker: threading.Thread | None = None
    _done: threading.Event = field(default_factory=threading.Event)
    _ddom: Any = None
    _error: BaseException | None = None
    _t_call: float | None = None
    _t_returned: float | None = None
    interrupts: Interrupts = field(default_factory=Interrupts)
    journal: Any = field(default_factory=NoJournal)  # a .journal.Journal once run() starts
    _event_ids: list[int] = field(default_factory=list)
    _dst_event_ids: list[int] = field(default_factory=list)
    _postcopy_stop_s: float | None = None  # source suspended for the post-copy switch (event)
    _dst_resumed_s: float | None = None  # the destination VM first ran (event)

    def now(self) -> float:
        return time.monotonic() - self.t0

    # ------------------------------------------------------------ the story
    def run(self) -> Result:
        self.t0 = time.monotonic()
        if self.migrate_uri is None:
            self.migrate_uri = default_migrate_uri(self.dst_uri)
        check_plan(self.plan)
        self.downtime_bound_s = self.downtime_bound_s or downtime_bound(self.plan)
        if self.plan.policy.name != "qemu":  # as simulate(): the orchestrator's own settings first
            self.policy = make_policy(self.plan)
            self.plan = self.policy.configure(self.plan)
        ensure_event_loop()
        self.journal = Journal(self.domain, self.src_uri, self.dst_uri)
        self.meta["journal"] = str(self.journal.path)
        if self.journal.problem:
            log.warning("%s: simkvm recover will know less if this run is cut short", self.journal.problem)
        with signals_as_interrupt() as self.interrupts:
            stop: _Stop | None = None
            try:
                try:
                    # ---- 1. preparation (a refusal changes nothing)
                    self.connect_and_check_aids()
                    self.prepare()
                    # ---- 2. migration
                    if self.probe is not None:
                        self.probe.start()
                    self.start_job()
                    stop = self.watch()
                except Refusal as refusal:
                    return self.refused(str(refusal))
                except KeyboardInterrupt as exc:
                    why = exc.args[0] if exc.args else "SIGINT"
                    stop = _Stop("aborted", f"aborted: interrupted by {why} after {fmt_duration(self.now())}")
                except (UserError, EnvironmentProblem) as exc:
                    if self._worker is None and not self.created.paths:
                        raise  # nothing was changed yet: the user's mistake or an unready machine
                    stop = self._error_stop(exc)
                except Exception as exc:  # noqa: BLE001 - every failure ends in the same safe abort
                    stop = self._error_stop(exc)
                # ---- 3. completion (or the abort)
                if stop is None:
                    with self.interrupts.held("completing the migration (the VM already switched over)"):
                        return self.measure_network(self.complete())
                return self.abort(stop)
            finally:
                if self.probe is not None:
                    with contextlib.suppress(Exception):
                        self.probe.stop()  # a no-op when measure_network already stopped it
                self.close()
                self.journal.write("done", vm_location=self.measurement.vm_location)
                self.journal.close()

    def dry_run(self) -> dict[str, Any]:
        """Everything up to the migration, changing nothing: connect, check the destination, and say
        which images would be created and which flags and parameters libvirt would get."""
        libvirt = import_libvirt()
        if self.migrate_uri is None:
            self.migrate_uri = default_migrate_uri(self.dst_uri)
        check_plan(self.plan)
        try:
            self.connect_and_check_aids()
            dst_name = self.meta["destination"].get("hostname") or redact_uri(self.dst_uri)
            refusal = None
            placements = []
            try:
                placements = self.check_destination(dst_name)
            except Refusal as exc:
                refusal = str(exc)
            flags, params = self.flags_and_params()
        finally:
            self.close()
        names = {v: k for k, v in vars(libvirt).items() if k.startswith("VIR_MIGRATE_") and isinstance(v, int)
                 and not k.startswith("VIR_MIGRATE_PARAM") and v and not v & (v - 1)}
        return {
            "would_migrate": refusal is None, "refused": refusal, "domain": self.domain,
            "source": redact_uri(self.src_uri), "destination": redact_uri(self.dst_uri),
            "migrate_uri": self.migrate_uri if not self.tunnelled else "(tunnelled through libvirtd)",
            "flags": [names.get(1 << i, f"bit {i}") for i in range(flags.bit_length()) if flags >> i & 1],
            "params": {k: v for k, v in params.items()},
            "images_to_create": [f"{p.disk.path} ({fmt_bytes(p.disk.capacity_bytes)} {p.disk.format}, pool "
                                 f"{p.pool.name()})" for p in placements],
            "definitions": self.meta.get("definitions"),
            "notes": self.meta.get("notes", []),
        }

    def _error_stop(self, exc: BaseException) -> "_Stop":
        libvirt = import_libvirt()
        text = exc.get_error_message() if isinstance(exc, libvirt.libvirtError) else str(exc) or repr(exc)
        self.meta["error"] = redact_uri(text)
        return _Stop("error", f"{type(exc).__name__} while migrating: {redact_uri(text)}")

    # ------------------------------------------------------------ 1. preparation
    def connect(self) -> None:
        libvirt = import_libvirt()
        self.conn = open_connection(self.src_uri, "source", self.connect_timeout_s)
        self.dconn = open_connection(self.dst_uri, "destination", self.connect_timeout_s)
        self.dom = lookup_domain(self.conn, self.domain, self.src_uri)
        state = self.dom.state()[0]
        if state != libvirt.VIR_DOMAIN_RUNNING:
            src = redact_uri(self.src_uri)
            if state == libvirt.VIR_DOMAIN_PAUSED:
                hint = (f"it is paused: check it runs nowhere else (virsh -c {redact_uri(self.dst_uri)} domstate "
                        f"{self.domain}), then resume it (virsh -c {src} resume {self.domain}) or run "
                        f"{self.recover_command()}")
            else:
                hint = f"start it first (virsh -c {src} start {self.domain})"
            raise UserError(f"domain {self.domain!r} on {src} is not running (state {state_name(state)}); {hint}")
        self.meta.update(
            domain=self.domain,
            source=host_info(self.conn, self.src_uri),
            destination=host_info(self.dconn, self.dst_uri),
            client={"hostname": socket.gethostname(), "libvirt_version": version_text(libvirt.getVersion())},
            migrate_uri=self.migrate_uri,
            poll_interval_s=self.poll_s,
            policy=self.plan.policy.name,
        )
        self.journal.write("connected", source=self.meta["source"].get("hostname"),
                           destination=self.meta["destination"].get("hostname"),
                           persistent=bool(self.dom.isPersistent()))

    def connect_and_check_aids(self) -> None:
        self.connect()
        problem = aid_support_problem(self.plan, self.meta["source"].get("libvirt_version"),
                                      self.meta["source"].get("hypervisor_version"))
        if problem:
            raise EnvironmentProblem(problem)

    def prepare(self) -> None:
        """Check the destination, then create the empty disks (remembered for the abort)."""
        dst_name = self.meta["destination"].get("hostname") or redact_uri(self.dst_uri)
        placements = self.check_destination(dst_name)
        self.meta["checked_destination_s"] = self.now()
        for placement in placements:
            self.journal.write("creating_disk", path=placement.disk.path, pool=placement.pool.name())
        create_disks(placements, dst_name, incremental=self.plan.migration.storage == "non_shared_inc",
                     into=self.created)
        self.meta["created_disks"] = self.created.paths
        for path in self.created.paths:
            self.journal.write("created_disk", path=path)
        self.meta["disks"] = [d.__dict__ for d in self.disks]
        log.info("prepared %s: %d disk image(s) created on the destination", self.domain, len(self.created.paths))

    def check_destination(self, dst_name: str) -> list[DiskPlacement]:
        """Refusal unless the destination can take the VM (no domain of that name there, its memory, a pool
        for each disk); where each migrated disk goes."""
        defined = check_no_domain_there(self.dconn, self.domain, dst_name, self.recover_command())
        # recover removes an inactive definition left on the destination only if it was not there before
        self.journal.write("destination_checked", defined=defined)
        self.disks = domain_disks(self.dom, self.conn) if self.plan.migration.storage != "shared" else []
        return check_destination(self.plan, self.dom, self.dconn, self.disks, dst_name, redact_uri(self.dst_uri))

    def recover_command(self) -> str:
        return f"simkvm recover --domain {self.domain} --src {redact_uri(self.src_uri)} --dst {redact_uri(self.dst_uri)}"

    def refused(self, reason: str) -> Result:
        t = self.now()
        self.measurement.vm_location = NOTHING_CHANGED
        return Result(converged=False, outcome="refused", reason=reason, source="measured", total_time_s=t,
                      setup_time_s=t, timeline_records=[PREPARED],
                      actions=self._actions(), plan=self.plan.to_dict(), measurement=self.measurement, meta=self.meta)

    # ------------------------------------------------------------ 2. migration
    def flags_and_params(self) -> tuple[int, dict[str, Any]]:
        targets = [d.target for d in self.disks]
        call = migration_call(self.plan, persistent=bool(self.dom.isPersistent()), persist=self.persist,
                              undefine_source=self.undefine_source, transport=self.transport(),
                              disk_targets=targets, source_libvirt=self.meta.get("source", {}).get("libvirt_version"))
        self.meta["definitions"] = call.definitions
        self.meta.update(flags=call.flags, bandwidth_MiBps=call.bandwidth_MiBps, notes=call.notes, migrate_disks=targets)
        return call.flags, call.params

    def transport(self) -> Transport:
        return Transport(self.migrate_uri, tls=self.tls, peer_to_peer=self.peer_to_peer, tunnelled=self.tunnelled)

    def start_job(self) -> None:
        """Downtime limit first (there is no migrate3 parameter for it), then migrate3 in a thread."""
        libvirt = import_libvirt()
        flags, params = self.flags_and_params()
        downtime_ms = max(1, int(round(self.plan.migration.max_downtime_s * 1000)))
        self.dom.migrateSetMaxDowntime(downtime_ms, 0)
        self.meta["max_downtime_ms_set"] = downtime_ms
        self.monitor = JobMonitor(max_downtime_s=downtime_ms / 1000.0)
        monitor = self.monitor

        def downtime_changed(limit_s: float) -> None:
            monitor.max_downtime_s = limit_s
            self.meta["max_downtime_ms_set"] = max(1, int(round(limit_s * 1000)))

        self.controller = Controller(self.plan, self.dom, self.policy, max_downtime_s=downtime_ms / 1000.0,
                                     on_downtime=downtime_changed)
        self.controller.start(self.now())  # the policy's initial downtime, before the job (simulator: t=0)
        downtime_ms = self.meta["max_downtime_ms_set"]
        controller = self.controller

        def on_iteration(_conn: Any, _dom: Any, iteration: int, _opaque: Any) -> None:
            monitor.add_event(self.now(), iteration)

        def on_lifecycle(_conn: Any, _dom: Any, event: int, detail: int, _opaque: Any) -> None:
            # The source pausing is the switchover (polling the state instead made
            # each poll wait up to 5 s for the domain lock on the testbed).
            if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
                self.journal.write("switchover", detail=detail)
                monitor.set_paused(self.now(), True)
                if detail == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY:
                    self._postcopy_stop_s = self.now()
                    controller.in_postcopy = True
            elif event == libvirt.VIR_DOMAIN_EVENT_RESUMED:
                monitor.set_paused(self.now(), False)

        def on_destination(_conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
            # When the VM first runs on the destination: the end of the downtime (post-copy: its start).
            if event == libvirt.VIR_DOMAIN_EVENT_RESUMED and dom.name() == self.domain \
                    and self._dst_resumed_s is None:
                self._dst_resumed_s = self.now()
                if detail == libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY:
                    controller.in_postcopy = True

        for event_id, callback in ((libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION, on_iteration),
                                   (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle)):
            try:
                self._event_ids.append(self.conn.domainEventRegisterAny(self.dom, event_id, callback, None))
            except libvirt.libvirtError as exc:  # polling alone still works
                self.meta.setdefault("notes", []).append(f"no events {event_id}: {exc.get_error_message()}")
        try:
            self._dst_event_ids.append(self.dconn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_destination, None))
        except libvirt.libvirtError as exc:
            self.meta.setdefault("notes", []).append(f"no destination events: {exc.get_error_message()}")

        def migrate() -> None:
            try:
                if flags & libvirt.VIR_MIGRATE_PEER2PEER:  # the source's libvirtd talks to the destination's
                    self.dom.migrateToURI3(self.dst_uri, params, flags)
                    self._ddom = self.dconn.lookupByName(self.domain)
                else:
                    self._ddom = self.dom.migrate3(self.dconn, params, flags)
            except BaseException as exc:  # noqa: BLE001 - handed to the watching thread
                self._error = exc
            finally:
                self._t_returned = self.now()
                self.journal.write("migrate3_returned", ok=self._ddom is not None,
                                   error=None if self._error is None else redact_uri(_error_text(self._error)))
                self._done.set()

        # where the data goes: recover --reset-stuck-connections looks for the source QEMU's connections there
        self.journal.write("migrate3", flags=flags, persist=bool(flags & libvirt.VIR_MIGRATE_PERSIST_DEST),
                           migrate_uri=None if self.tunnelled else self.migrate_uri, tunnelled=self.tunnelled)

        self._t_call = self.now()
        self.meta["migrate3_called_s"] = self._t_call
        self._worker = threading.Thread(target=migrate, name=f"migrate3-{self.domain}", daemon=True)
        self._worker.start()
        log.info("migrating %s to %s at %d MiB/s, max downtime %d ms", self.domain, self.dst_uri,
                 self.meta["bandwidth_MiBps"], downtime_ms)

    def watch(self) -> _Stop | None:
        """Poll job stats until migrate3 returns; a _Stop when a plan limit says give up.

        Each job-stats call is waited for STATS_WAIT_S at a time (one call at a
        time): libvirt answers it through the QEMU monitor, which can stop
        answering (a busy monitor, a QEMU stuck on a dead connection), and the
        plan's max time and downtime bound must hold all the same.
        """
        libvirt = import_libvirt()
        plan = self.plan
        deadline = self.timeout_s if self.timeout_s is not None else plan.max_time_s
        max_iterations = plan.max_iterations  # 0: none (the default under a policy)
        monitor, controller = self.monitor, self.controller
        assert monitor is not None and controller is not None
        reapplied = False
        errors_since: float | None = None
        last_iteration = 0
        last_log = 0.0
        last: Sample | None = None
        call: Pending[dict[str, Any]] | None = None
        while not self._done.is_set():
            if call is None:
                call = Pending(functools.partial(self.dom.jobStats, 0), "job stats")
            if not call.wait(STATS_WAIT_S):
                stop = self._limits(deadline, paused=monitor.paused, last_seen=(
                    f"libvirt has not answered job stats for {call.waiting_s:.0f} s"
                    + (f"; before that: iteration {last.iteration}, {last.remaining_text()}" if last else "")))
                if stop is not None:
                    return stop
                continue
            t_a, rpc_s = call.started - self.t0, call.took_s or 0.0
            try:
                stats = call.result()
                errors_since = None
            except libvirt.libvirtError as exc:
                if self._done.wait(0.2):
                    break
                errors_since = errors_since if errors_since is not None else t_a
                if t_a - errors_since > POLL_ERROR_GRACE_S:
                    raise
                log.debug("job stats failed (%s); retrying", exc.get_error_message())
                continue
            finally:
                call = None
            sample = Sample(t_s=t_a, stats=stats, paused=monitor.paused, rpc_s=rpc_s,
                            max_downtime_s=controller.max_downtime_s)
            monitor.add_sample(sample)
            last = sample
            if sample.active and not reapplied:
                reapplied = True
                self._reapply_downtime()
            iteration = monitor.iteration
            if iteration != last_iteration or t_a - last_log >= 2.0:
                log_progress(sample, t_a)
                last_iteration, last_log = iteration, t_a
            # the policy and the plan's after-N-iterations rules
            if sample.active:
                controller.tick(stats, self.now(), iteration=iteration, paused=sample.paused)
            if controller.abort_reason:
                return _Stop("aborted", controller.abort_reason)
            # guestperf's rules: give up after max_iterations syncs, or at max time.
            if max_iterations and iteration > max_iterations and not sample.paused:
                return _Stop("not_converged", f"not converged: memory_iteration {iteration} exceeded "
                                              f"migration.max_iterations {max_iterations}")
            stop = self._limits(deadline, paused=sample.paused,
                                last_seen=f"iteration {iteration}, {sample.remaining_text()}")
            if stop is not None:
                return stop
            self._done.wait(max(0.0, self.poll_s - (self.now() - t_a)))
        return None

    def _limits(self, deadline: float, *, paused: bool, last_seen: str) -> _Stop | None:
        """The bounds simkvm defends whether or not libvirt answers: the plan's downtime and max time."""
        monitor, controller = self.monitor, self.controller
        assert monitor is not None and controller is not None
        # The plan's downtime is a bound we defend: a switchover that keeps the guest paused far
        # longer (a destination frozen or dying at the handover) is cancelled while it still can be.
        stopped_s = monitor.stopped_s
        if (stopped_s is not None and controller.suspended_s is None and not controller.in_postcopy
                and self._dst_resumed_s is None and self.now() - stopped_s > self.downtime_bound_s):
            return _Stop("error", f"the guest stayed paused {fmt_duration(self.now() - stopped_s)} in the "
                         f"switchover, beyond the downtime bound {fmt_duration(self.downtime_bound_s)} "
                         f"(migration.max_downtime {fmt_duration(self.plan.migration.max_downtime_s)}); "
                         f"cancelled the switchover")
        if self.now() > deadline and not paused:
            what = "--timeout" if self.timeout_s is not None else "migration.max_time"
            return _Stop("not_converged", f"not converged within {fmt_duration(deadline)} ({what}); "
                         f"last seen: {last_seen}")
        return None

    def _note_slow_polls(self, monitor: JobMonitor) -> None:
        """Say when libvirt kept a job-stats call waiting: the policy's decisions were that late too.

        A busy QEMU monitor (TCG on few cores, a disk mirror finishing) can hold
        virDomainGetJobStats for seconds; a real orchestrator polling the same
        way is delayed alike, so this is part of the measurement, not noise.
        """
        if not monitor.samples:
            return
        slow = max(monitor.samples, key=lambda s: s.rpc_s)
        self.meta.update(slowest_poll_s=slow.rpc_s, slowest_poll_at_s=slow.t_s)
        if slow.rpc_s >= SLOW_POLL_S:
            self.meta.setdefault("notes", []).append(
                f"libvirt answered job stats {slow.rpc_s:.1f} s late at t={slow.t_s:.1f} s: "
                f"policy decisions and samples around then were delayed as much")

    def _reapply_downtime(self) -> None:
        """Set the limit again inside the job and read it back: the value in force is what we report."""
        libvirt = import_libvirt()
        ms = self.meta["max_downtime_ms_set"]
        try:
            self.dom.migrateSetMaxDowntime(ms, 0)
            self.meta["max_downtime_ms_in_force"] = int(self.dom.migrateGetMaxDowntime(0))
        except (libvirt.libvirtError, AttributeError) as exc:
            self.meta.setdefault("notes", []).append(f"could not re-apply the downtime limit: {exc}")

    # ------------------------------------------------------------ 3. completion
    def complete(self, note: str | None = None) -> Result:
        """migrate3 returned a destination domain: verify it runs, then read the completed stats.

        Outcome ``postcopy`` when the switch to post-copy happened (its downtime and
        phase from the lifecycle events when libvirt keeps no completed stats for it),
        ``paused`` when we suspended the guest to force completion (we resume it on the
        destination: the downtime runs from our suspend until then), else ``converged``.
        """
        libvirt = import_libvirt()
        if self._error is not None:
            return self.abort(_Stop("error", f"libvirt: {redact_uri(_error_text(self._error))}"))
        ddom = self._ddom
        controller = self.controller
        assert controller is not None
        resumed_by_us_s = self._destination_running(ddom, controller)
        self.measurement.vm_location = f"running on the destination ({self.meta['destination'].get('hostname')})"
        completed = completed_stats(ddom)
        self.meta["completed_stats"] = dict(completed)
        monitor = self.monitor
        assert monitor is not None and self._t_returned is not None
        if self.disks:
            completed, from_sample = with_disk_progress(completed, monitor.last_active)
            if from_sample:
                self.meta["disk_stats_from_last_sample"] = True
        try:
            self.meta["completed_stats_source"] = completed_stats(self.conn.lookupByName(self.domain))
        except libvirt.libvirtError:
            pass
        self.meta["source_after"] = self._source_state()
        source_images = self._source_images()
        offset = monitor.libvirt_offset_s(fallback=self._t_call or 0.0)
        end = ending(monitor, offset, completed, Handover(
            returned_s=self._t_returned, in_postcopy=controller.in_postcopy, postcopy_stop_s=self._postcopy_stop_s,
            postcopy_started_s=controller.postcopy_started_s, suspended_s=controller.suspended_s,
            dst_resumed_s=self._dst_resumed_s, resumed_by_us_s=resumed_by_us_s))
        if end.note:
            self.meta.setdefault("notes", []).append(end.note)
        rounds = build_rounds(monitor, offset, end_s=end.total_s, completed=completed or None, stop_s=end.stop_s)
        timeline = build_timeline(monitor, offset, has_disks=bool(self.disks), end_s=end.total_s, end_phase="done",
                                  completed=completed or None)
        final_n = max(int(completed.get("memory_iteration") or 0), monitor.iteration,
                      rounds[-1]["memory_iteration"] if rounds else 0)
        timeline += switchover_points(end, final_n, rounds, completed)
        timeline.sort(key=lambda p: p.time_s)
        self._note_slow_polls(monitor)
        self.meta.update(libvirt_time_offset_s=offset, migrate3_returned_s=self._t_returned, samples=len(
            monitor.samples), iteration_events=len(monitor.events), final_row_estimated=True,
            service_interruption="equals the measured downtime: no network measurement yet")
        tail = monitor.last_active
        ram = float(completed.get("memory_processed") or (tail.stats.get("memory_processed", 0) if tail else 0))
        if "memory_processed" not in completed:
            self.meta.setdefault("notes", []).append("RAM transferred: the last sample's figure (a lower bound: "
                                                     "no completed stats)")
        disk = float(completed.get("disk_processed", 0))
        reason = ending_reason(end, final_n)
        if note:
            reason = f"{reason} ({note})"
        if source_images:
            reason = f"{reason}; {source_images}"
        self.meta["downtime_bound_s"] = self.downtime_bound_s
        paused_s = guest_paused_s(monitor, end.downtime_s, self._dst_resumed_s)
        if end.outcome == "converged" and paused_s > self.downtime_bound_s:
            self.measurement.downtime_bound_exceeded = True
            reason = (f"completed, but the guest was paused {fmt_duration(paused_s)}, beyond the downtime bound "
                      f"{fmt_duration(self.downtime_bound_s)} (migration.max_downtime "
                      f"{fmt_duration(self.plan.migration.max_downtime_s)}): {reason}")
        return Result(
            converged=True, outcome=end.outcome, reason=reason, source="measured",
            **phase_times(monitor, offset, end.stop_s, end.total_s, bool(self.disks)),
            downtime_s=end.downtime_s, service_interruption_s=end.downtime_s, postcopy_time_s=end.postcopy_s,
            ram_transferred_bytes=ram, disk_transferred_bytes=disk, total_transferred_bytes=ram + disk,
            zero_pages=float(completed.get("memory_constant", 0)),
            normal_pages=float(completed.get("memory_normal", 0)),
            iterations=final_n, round_records=rounds, timeline_records=timeline, actions=self._actions(),
            plan=self.plan.to_dict(), measurement=self.measurement, meta=self.meta,
        )

    def _destination_running(self, ddom: Any, controller: Controller) -> float | None:
        """Check the VM runs on the destination, resuming it there when we paused it (forced completion):
        when we resumed it, or None. A MigrationFailed saying where the VM is when it does not run."""
        libvirt = import_libvirt()
        resumed_by_us_s = None
        try:
            state, reason = call_with_timeout(ddom.state, ASK_TIMEOUT_S, "the destination's domstate")
            if state == libvirt.VIR_DOMAIN_PAUSED and controller.suspended_s is not None:
                # the guest was paused on purpose (forced completion): it runs on the destination now
                call_with_timeout(ddom.resume, ASK_TIMEOUT_S, "resume on the destination")
                resumed_by_us_s = self.now()
                state, reason = call_with_timeout(ddom.state, ASK_TIMEOUT_S, "the destination's domstate")
                self.meta.setdefault("notes", []).append(
                    "simkvm resumed the destination VM it had paused on the source")
        except (libvirt.libvirtError, Unanswered) as exc:
            state, reason = None, _error_text(exc)
        if state == libvirt.VIR_DOMAIN_RUNNING:
            state, reason = self._destination_state_confirmed(ddom, state, reason)
        if state != libvirt.VIR_DOMAIN_RUNNING:
            what = state_name(state) if state is not None else f"unknown ({redact_uri(str(reason))})"
            location = self._locate()
            raise self._failed(f"migration finished but the destination VM is {what}; check it with "
                               f"virsh -c {redact_uri(self.dst_uri)} domstate {self.domain} --reason",
                               location.text())
        return resumed_by_us_s

    def _destination_state_confirmed(self, ddom: Any, state: int, reason: Any) -> tuple[int | None, Any]:
        """libvirt's "running" for the destination, checked against its QEMU: a monitor round trip
        (``query-blockstats`` through :meth:`blockStats`) right after migrate3 returned.

        libvirt learns of a QEMU that died from its monitor's end of file, which its event loop handles
        apart from the migration's Finish (qemuProcessHandleMonitorEOF queues the cleanup for a worker
        thread), so a state read just after Finish can still say running for a QEMU killed at its resume
        (tests/faults: test_destination_qemu_killed[resumed]). A question that must reach QEMU fails at once
        then; libvirt's state is read again until it no longer says running (at most EOF_SETTLE_S), and an
        error that never turns into another state is reported as unknown, never as running."""
        libvirt = import_libvirt()
        try:
            dev = next((d.target for d in self.disks if d.target), None) or disk_target(ddom)
        except libvirt.libvirtError:
            dev = None
        if dev is None:
            return state, reason
        try:
            call_with_timeout(functools.partial(ddom.blockStats, dev), ASK_TIMEOUT_S,
                              "block stats on the destination")
            return state, reason
        except Unanswered as exc:
            return None, f"its QEMU does not answer ({_error_text(exc)})"
        except libvirt.libvirtError as exc:
            error = _error_text(exc)
        deadline = time.monotonic() + EOF_SETTLE_S
        while time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                state, reason = call_with_timeout(ddom.state, ASK_TIMEOUT_S, "the destination's domstate")
            except (libvirt.libvirtError, Unanswered) as exc:
                return None, _error_text(exc)
            if state != libvirt.VIR_DOMAIN_RUNNING:
                return state, reason
        return None, f"libvirt says running but its QEMU refused a monitor command: {error}"

    def _source_images(self) -> str:
        """After a success: the source's copies of the migrated disks (a later migration back is refused while
        they exist). Deleted with ``remove_source_images`` once the source no longer runs the VM; else said."""
        libvirt = import_libvirt()
        paths = [d.path for d in self.disks]
        if not paths:
            return ""
        src_host = self.meta.get("source", {}).get("hostname") or redact_uri(self.src_uri)
        if self.remove_source_images and self.meta.get("source_after") in ("absent", "shut off"):
            removed, problems = [], []

            def delete(path: str) -> None:
                self.conn.storageVolLookupByPath(path).delete(0)

            for path in paths:
                try:
                    call_with_timeout(functools.partial(delete, path), ASK_TIMEOUT_S, "vol-delete on the source")
                    removed.append(path)
                except (libvirt.libvirtError, Unanswered) as exc:
                    problems.append(f"{path} ({_error_text(exc)})")
            self.meta["removed_source_images"] = removed
            if problems:
                return f"could not delete the source image(s) {', '.join(problems)} on {src_host}"
            return f"deleted the source image(s) {', '.join(removed)} on {src_host}"
        self.meta["source_images_kept"] = paths
        how = "; ".join(f"virsh -c {redact_uri(self.src_uri)} vol-delete {p}" for p in paths)
        return (f"the source image(s) {', '.join(paths)} stay on {src_host} (a migration back needs them gone: "
                f"{how}, or --remove-source-image next time)")

    def measure_network(self, result: Result, settle_s: float = 1.0) -> Result:
        """With a probe: the service interruption is the longest time no reply came, around the switch.

        Without one it stays equal to the downtime (and the meta says so).
        """
        if self.probe is None or not result.converged:
            return result
        time.sleep(max(0.0, settle_s - (self.now() - result.total_time_s)))  # replies after the resume
        echoes = [(s - self.t0, None if r is None else r - self.t0) for s, r in self.probe.stop()]
        # the switchover: the VM stopped at the end of pre-copy and ran again a downtime later
        stop_s = result.setup_time_s + result.disk_mirror_time_s + result.precopy_time_s
        outage, self.meta["network_probe"] = probe_summary(echoes, stop_s=stop_s, downtime_s=result.downtime_s)
        if outage is None:
            self.meta["service_interruption"] = "probe got too few replies; equals the measured downtime"
            return result
        result.service_interruption_s = outage[2]
        self.measurement.service_interruption_measured = True
        self.meta["service_interruption"] = ("measured: the longest time no reply came to ICMP echoes every "
                                             f"{1000 * (echoes[-1][0] - echoes[0][0]) / max(len(echoes) - 1, 1):.0f}"
                                             " ms, around the switchover")
        return result

    def _actions(self) -> list:
        """Every action taken (policy, aids' rules, QEMU's throttle steps), in time order."""
        controller = self.controller
        if controller is None:
            return []
        if controller.notes:
            self.meta.setdefault("notes", []).extend(controller.notes)
            controller.notes = []
        return sorted(controller.actions, key=lambda a: a.time_s)

    # ------------------------------------------------------------ the abort
    def abort(self, stop: _Stop) -> Result:
        """Cancel the job, make sure the VM runs on exactly one host, delete only our images."""
        with self.interrupts.held("aborting the migration"):
            return self._abort(stop)

    def _abort(self, stop: _Stop) -> Result:
        t_abort = self.now()
        self.journal.write("aborting", reason=stop.reason)
        log.warning("%s; aborting the migration job", stop.reason)
        if self.dom is None:  # interrupted while connecting: nothing was changed
            self.measurement.vm_location = NOTHING_CHANGED
            return self.partial_result(stop, t_abort)
        if self._worker is not None and not self._done.is_set():
            monitor = self.monitor
            stopped_s = monitor.stopped_s if monitor is not None else None
            if stopped_s is None and monitor is not None and self._paused_for_switchover():
                stopped_s = self.now()  # Ctrl-C in the switchover's first ms: libvirt's event is still on its way
            if stopped_s is not None and self.controller is not None and self.controller.suspended_s is None:
                # The switchover is under way: cancelling now races libvirt's completion of the disk
                # mirrors (a job stuck with its mirror "concluded" blocked every later migration).
                # It lasts at most the downtime bound: let it end, then see where the VM is.
                log.warning("the switchover is under way: letting it end (at most %s)",
                            fmt_duration(self.downtime_bound_s))
                self._done.wait(max(self.downtime_bound_s - (self.now() - stopped_s), 0.0))
            t_cancel = self.now()
            accepted = self._cancel_job(until_s=t_cancel + CANCEL_WAIT_S) if not self._done.is_set() else True
            if not self._done.wait(max(t_cancel + CANCEL_WAIT_S - self.now(), 0.0)):
                return self._cancel_stuck(stop, t_abort, accepted=accepted)
        if self._ddom is not None and self._error is None:
            log.warning("the migration completed before the abort took effect")
            return self.complete(note=f"{stop.reason}, but the migration completed before the abort")
        location = self._locate()
        where = location.text()
        on_source = location.on_source
        problems: list[str] = []
        if (on_source and location.destination.not_running_for_sure) or location.lost_before_handover:
            paths = self.created.paths  # a partial copy: the source's disks are the current ones
            problems = self.created.remove()
            self.journal.write("removed_disks", paths=[p for p in paths if not any(p in m for m in problems)])
        elif self.created.paths:
            why = ("the VM is not safely on the source" if not on_source else
                   f"the destination could not be asked ({location.destination.error})")
            problems = [f"kept the destination images {self.created.paths}: {why}; once the VM is known to "
                        f"run on the source only, delete them with " + "; ".join(
                            f"virsh -c {redact_uri(self.dst_uri)} vol-delete {p}" for p in self.created.paths)]
        self.measurement.vm_location = where
        self.meta.update(abort_requested_s=t_abort, abort_finished_s=self.now(),
                         removed_disks=[] if problems else self.meta.get("created_disks", []),
                         cleanup_problems=problems)
        if self._error is not None:
            self.meta["migrate3_error"] = redact_uri(_error_text(self._error))
        if stop.outcome == "error" or not on_source:
            raise self._failed(stop.reason + (f"; {'; '.join(problems)}" if problems else ""), where, stop, t_abort)
        return self.partial_result(stop, t_abort)

    def _cancel_job(self, until_s: float) -> bool:
        """Ask libvirt to cancel the job (abortJob), again until it accepts or migrate3 returns, until ``until_s``.

        abortJob waits for libvirt's job lock, which a job-stats call stuck in
        the QEMU monitor can hold; each try is bounded. True when libvirt
        accepted the cancel: QEMU's migrate_cancel then ends the migration
        stream (it shuts the socket down), so the guest can no longer move.
        """
        libvirt = import_libvirt()
        while not self._done.is_set():
            left = until_s - self.now()
            if left <= 0:
                return False
            try:
                call_with_timeout(self.dom.abortJob, min(ASK_TIMEOUT_S, left), "abortJob")
                self.journal.write("cancel_accepted")
                return True
            except (libvirt.libvirtError, Unanswered) as exc:
                self.meta.setdefault("notes", []).append(f"abortJob at {self.now():.1f} s: {_error_text(exc)}")
            self._done.wait(min(1.0, max(until_s - self.now(), 0.0)))
        return False

    def _cancel_stuck(self, stop: _Stop, t_abort: float, *, accepted: bool) -> Result:
        """libvirt has not ended the job CANCEL_WAIT_S after the cancel: say where the VM is, within a bound.

        Why a cancel can hang: libvirt cancels a migration with disks by
        cancelling QEMU's migration (migrate_cancel), then force-cancelling
        each disk mirror and waiting, with no time limit, until QEMU reports
        it gone (libvirt's qemu_migration.c: qemuMigrationSrcRun's error path
        -> qemuMigrationSrcCancel, qemuMigrationSrcNBDCopyCancel ->
        qemuDomainObjWait); a mirror first waits for its writes in flight to
        the destination's NBD server (QEMU's block/mirror.c, mirror_run), and
        QEMU's NBD client cannot cut them short (block/nbd.c,
        nbd_cancel_in_flight only stops a reconnection). Measured with the
        link between the hosts cut (tests/faults; QEMU 7.2, libvirt 9.0):
        QEMU answered migrate_cancel, then no monitor command at all, and its
        vCPUs stopped, while libvirt kept saying "running".

        When libvirt accepted the cancel and the guest never stopped on the
        source, the destination's QEMU holds an incomplete guest it cannot
        run: simkvm destroys it, as libvirt does with an unfinished incoming
        migration whose client went away (qemuMigrationAnyConnectionClosed),
        and deletes the images it created there. A source QEMU that answers
        no monitor command is said frozen, not running, with what unfreezes
        it without a reboot (:mod:`.unfreeze`: nothing else ever will).
        """
        location = self._locate()
        src, dst = location.source, location.destination
        src_virsh = f"virsh -c {redact_uri(self.src_uri)}"
        lingering = (f"libvirt has not finished cancelling the migration job on the source "
                     f"{fmt_duration(self.now() - t_abort)} after the abort (it waits for QEMU, which cannot end "
                     f"its disk mirror's writes to the destination while their connection carries nothing); until "
                     f"then the VM cannot be migrated again: watch it with {src_virsh} domjobinfo {self.domain}")
        self.meta["cancel_pending"] = True
        if not (accepted and src.running and not location.stopped_on_source):
            where = location.text()
            if not accepted:
                lingering = (f"libvirt did not accept the cancel within {CANCEL_WAIT_S:.0f} s; the job may still "
                             f"be running: check {src_virsh} domjobinfo {self.domain}, cancel it with {src_virsh} "
                             f"domjobabort {self.domain}, then {self.recover_command()}")
            raise self._failed(f"{stop.reason}; {lingering}", where, stop, t_abort)
        problems = self._destroy_incoming() if dst.state == "paused" else []
        if self.created.paths and not problems and dst.state in ("paused", "absent", "shut off"):
            paths = self.created.paths
            try:
                problems = call_with_timeout(self.created.remove, ASK_TIMEOUT_S, "vol-delete on the destination")
            except Unanswered as exc:
                problems = [f"could not delete {', '.join(paths)} on the destination: {exc}"]
            self.journal.write("removed_disks", paths=[p for p in paths if not any(p in m for m in problems)])
        elif self.created.paths:
            why = problems[-1] if problems else f"the destination could not be asked ({dst.error})"
            problems.append(f"kept the destination images {self.created.paths} ({why}); once the destination "
                            f"holds no copy of the VM, delete them with " + "; ".join(
                                f"virsh -c {redact_uri(self.dst_uri)} vol-delete {p}" for p in self.created.paths))
        location = self._locate()
        if location.on_source and not qemu_answers(self.dom):
            # Measured (tests/faults, link cut until simkvm ended): from libvirt's cancel on, the source QEMU
            # answers no monitor command and its vCPUs use no CPU; libvirt still says running. What frees it
            # without a reboot is in .unfreeze (simkvm recover --reset-stuck-connections, on the source host).
            location = dataclasses.replace(location, source_frozen=True)
            self.meta["source_qemu_unanswered"] = True
        where = location.text()
        self.measurement.vm_location = where
        self.meta.update(abort_requested_s=t_abort, abort_finished_s=self.now(), cleanup_problems=problems,
                         removed_disks=[] if problems else self.meta.get("created_disks", []))
        reason = "; ".join([stop.reason, lingering, *problems])
        if stop.outcome == "error" or not location.on_source:  # a frozen source is not "on the source"
            raise self._failed(reason, where, stop, t_abort)
        return self.partial_result(_Stop(stop.outcome, reason), t_abort)

    def _destroy_incoming(self) -> list[str]:
        """Destroy the destination's incoming copy (paused, never run: the guest did not stop on the source)."""
        libvirt = import_libvirt()

        def destroy() -> None:
            self.dconn.lookupByName(self.domain).destroy()

        self.journal.write("destroying_incoming")
        try:
            call_with_timeout(destroy, ASK_TIMEOUT_S, "destroy on the destination")
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                return [f"could not destroy the destination's incoming copy: {_error_text(exc)}"]
        except Unanswered as exc:
            return [f"could not destroy the destination's incoming copy: {exc}"]
        self.meta.setdefault("notes", []).append(
            "simkvm destroyed the destination's incoming copy (paused, never run) while libvirt's cancel lingered")
        return []

    def _failed(self, message: str, where: str, stop: _Stop | None = None, t_s: float | None = None
                ) -> MigrationFailed:
        """A MigrationFailed carrying what was measured (``.result``), so --json always has a result."""
        self.measurement.vm_location = where
        t_s = self.now() if t_s is None else t_s
        try:
            result = self.partial_result(stop or _Stop("error", message), t_s)
        except Exception:  # noqa: BLE001 - the failure matters more than a partial measurement
            result = Result(converged=False, outcome="aborted", reason=message, source="measured",
                            total_time_s=t_s, setup_time_s=t_s, plan=self.plan.to_dict(), measurement=self.measurement, meta=self.meta)
        result.reason = message
        if self.journal.path.exists():
            message = f"{message} (journal: {self.journal.path})"
        exc = MigrationFailed(message, where)
        exc.result = result  # type: ignore[attr-defined]
        return exc

    def partial_result(self, stop: _Stop, t_abort: float) -> Result:
        """What was measured up to the abort, in the same schema."""
        monitor = self.monitor
        if monitor is None:  # interrupted during preparation
            return Result(converged=False, outcome=stop.outcome, reason=stop.reason, source="measured",
                          total_time_s=t_abort, setup_time_s=t_abort, actions=self._actions(),
                          plan=self.plan.to_dict(), measurement=self.measurement, meta=self.meta)
        offset = monitor.libvirt_offset_s(fallback=self._t_call or 0.0)
        tail = monitor.last_active
        st = tail.stats if tail else {}
        rounds = build_rounds(monitor, offset, end_s=t_abort)
        timeline = build_timeline(monitor, offset, has_disks=bool(self.disks), end_s=t_abort, end_phase="aborted")
        self._note_slow_polls(monitor)
        self.meta.update(libvirt_time_offset_s=offset, samples=len(monitor.samples),
                         iteration_events=len(monitor.events))
        ram = float(st.get("memory_processed", 0))
        disk = float(st.get("disk_processed", 0))
        return Result(
            converged=False, outcome=stop.outcome if stop.outcome != "error" else "aborted", reason=stop.reason,
            source="measured", **phase_times(monitor, offset, t_abort, t_abort, bool(self.disks)),
            ram_transferred_bytes=ram, disk_transferred_bytes=disk, total_transferred_bytes=ram + disk,
            zero_pages=float(st.get("memory_constant", 0)), normal_pages=float(st.get("memory_normal", 0)),
            iterations=monitor.iteration, round_records=rounds, timeline_records=timeline,
            actions=self._actions(), plan=self.plan.to_dict(), measurement=self.measurement, meta=self.meta,
        )

    def _source_state(self) -> str:
        libvirt = import_libvirt()
        try:
            state, reason = self.conn.lookupByName(self.domain).state()
            return state_name(state)
        except libvirt.libvirtError:
            return "absent"

    def _paused_for_switchover(self) -> bool:
        """The source says the guest is paused for the migration's switchover (asked with a short bound)."""
        libvirt = import_libvirt()
        try:
            state, reason = call_with_timeout(self.dom.state, 2.0, "domstate")
        except (libvirt.libvirtError, Unanswered):
            return False
        return bool(state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_MIGRATION)

    def _stopped_on_source(self) -> bool:
        """The guest stopped on the source for a switchover (libvirt's or our pause): from then on the
        destination may have received it whole and run it. Unknown counts as stopped."""
        if self._worker is None:
            return False
        if self.controller is not None and self.controller.suspended_s is not None:
            return True
        if self.monitor is None or len(self._event_ids) < 2:  # no lifecycle events: we cannot tell
            return True
        return any(paused for _, paused in self.monitor.pauses)

    def _locate(self) -> Location:
        """Where the VM is now; resumes a source VM libvirt left paused only when the destination
        surely does not run it (:mod:`.locate`)."""
        src_host = self.meta.get("source", {}).get("hostname") or redact_uri(self.src_uri)
        dst_host = self.meta.get("destination", {}).get("hostname") or redact_uri(self.dst_uri)
        where = locate(self.conn, self.dconn, self.domain, src=(self.src_uri, src_host),
                       dst=(self.dst_uri, dst_host), stopped_on_source=self._stopped_on_source())
        settled = settle(where, self.conn)
        if settled.resumed_source:
            self.meta.setdefault("notes", []).append("simkvm resumed the source VM that libvirt left paused")
        elif where.source.state == "paused" and not where.destination.known:
            self.meta.setdefault("notes", []).append(
                "simkvm did not resume the paused source VM: the destination's state is unknown")
        self.meta["hosts_seen"] = {v.role: {"state": v.state, "reason": v.reason, "error": v.error}
                                   for v in (settled.source, settled.destination)}
        return settled

    def close(self) -> None:
        libvirt = import_libvirt()
        for event_id in self._event_ids:
            try:
                self.conn.domainEventDeregisterAny(event_id)
            except libvirt.libvirtError:
                pass
        for event_id in self._dst_event_ids:
            try:
                self.dconn.domainEventDeregisterAny(event_id)
            except libvirt.libvirtError:
                pass
        for c in (self.conn, self.dconn):
            if c is not None:
                try:
                    c.close()
                except libvirt.libvirtError:
                    pass


def execute(plan: Plan, domain: str, src_uri: str, dst_uri: str, *, migrate_uri: str | None = None,
            timeout_s: float | None = None, poll_s: float = POLL_S, persist: bool = True,
            probe: EchoProbe | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S,
            remove_source_images: bool = False, undefine_source: bool = True, tls: bool = False,
            peer_to_peer: bool = False, tunnelled: bool = False) -> Result:
    """Migrate ``domain`` from ``src_uri`` to ``dst_uri`` as ``plan`` says, and measure it.

    Returns a measured :class:`Result` (outcome ``converged``, ``not_converged``
    when a plan limit or ``timeout_s`` stopped it, ``aborted`` on Ctrl-C/SIGTERM,
    ``refused`` when the destination cannot take the VM; ``measurement.vm_location``
    says where the VM is). Raises :class:`MigrationFailed` (with ``.result``)
    when libvirt failed or the VM is not safely running on the source.
    ``probe`` (e.g. :meth:`simkvm.testbed.network.GuestNetwork.probe`): pings the
    guest through the migration; ``service_interruption_s`` is then measured.
    """
    if poll_s <= 0 or poll_s > 0.05:
        raise UserError(f"poll interval must be in (0, 50 ms], got {poll_s * 1000:g} ms")
    return Execution(plan=plan, domain=domain, src_uri=src_uri, dst_uri=dst_uri, migrate_uri=migrate_uri,
                     timeout_s=timeout_s, poll_s=poll_s, persist=persist, probe=probe,
                     connect_timeout_s=connect_timeout_s, remove_source_images=remove_source_images,
                     undefine_source=undefine_source, tls=tls, peer_to_peer=peer_to_peer, tunnelled=tunnelled).run()


#: The downtime we defend: this many times the plan's limit (QEMU's own estimate overshoots by a few
#: rounds' worth on a busy link), and never under DOWNTIME_BOUND_MIN_S (libvirt's handover itself).
DOWNTIME_BOUND_FACTOR = 10.0
DOWNTIME_BOUND_MIN_S = 2.0


def downtime_bound(plan: Plan) -> float:
    """How long the guest may stay paused at the switchover before simkvm cancels it or calls it a failure."""
    return max(DOWNTIME_BOUND_FACTOR * plan.migration.max_downtime_s, DOWNTIME_BOUND_MIN_S)


def _error_text(exc: BaseException) -> str:
    msg = getattr(exc, "get_error_message", None)
    return msg() if callable(msg) else repr(exc)
