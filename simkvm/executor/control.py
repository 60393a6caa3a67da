"""Who steers the real migration while it runs: the plan's aids and its policy, through libvirt.

The policy objects are the simulator's own (:mod:`simkvm.policies`): one
implementation of each. Here they see a :class:`~simkvm.policies.Snapshot`
built from libvirt's job stats (:func:`snapshot_from_stats`) every
``policy.poll_interval_s``, and their actions become libvirt calls
(:meth:`Controller.apply`):

==================  ==========================================
set_downtime        ``virDomainMigrateSetMaxDowntime`` (ms)
set_bandwidth       ``virDomainMigrateSetMaxSpeed`` (MiB/s)
start_postcopy      ``virDomainMigrateStartPostCopy``
pause               ``virDomainSuspend`` (forced completion)
abort               the executor cancels the job (``virDomainAbortJob``)
throttle            QEMU's own auto-converge: only recorded, from
                    ``auto_converge_throttle`` in the job stats (each
                    rise; the reset at the end is not an action)
==================  ==========================================

The plan's after-N-iterations rules (``aids.postcopy.after_iterations``,
``aids.pause.after_iterations``) fire as in the simulator: once
``memory_iteration`` exceeds N. Every action lands in :attr:`Controller.actions`
(time since the executor's t=0, like the simulator's clock).

The controller runs inside the executor's polling loop (one thread talks to
the domain); it never waits on anything but the libvirt call it makes.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from ..plan import Plan
from ..policies import Policy, Snapshot
from ..result import Action

log = logging.getLogger("simkvm.executor")


def snapshot_from_stats(stats: dict[str, Any], elapsed_s: float, *, memory_total_bytes: float,
                        in_postcopy: bool = False, paused: bool = False, max_downtime_s: float = 0.3) -> Snapshot:
    """What a policy sees, from one ``virDomainGetJobStats`` answer.

    Before RAM migration starts (``memory_iteration`` 0 or absent: preparation,
    disk mirror) all of RAM counts as remaining, as in the simulator's
    snapshot; ``data_remaining`` is RAM + disk (libvirt's own figure once RAM
    migration runs, whose ``data_*`` counters include the mirrors).
    """
    iteration = int(stats.get("memory_iteration") or 0)
    total = float(stats.get("memory_total") or memory_total_bytes)
    disk_remaining = float(stats.get("disk_remaining") or 0.0)
    if iteration >= 1 and stats.get("memory_remaining") is not None:
        memory_remaining = float(stats["memory_remaining"])
    else:
        memory_remaining = total
    data_remaining = memory_remaining + disk_remaining
    if iteration >= 1 and stats.get("data_remaining") is not None:
        data_remaining = max(float(stats["data_remaining"]), memory_remaining)
    return Snapshot(elapsed_s=float(elapsed_s), iteration=iteration, memory_remaining=memory_remaining,
                    data_remaining=data_remaining, memory_total=total, in_postcopy=in_postcopy, paused=paused,
                    max_downtime_s=max_downtime_s)


@dataclass
class Controller:
    """The plan's aids and its policy, applied to one running libvirt job."""

    plan: Plan
    dom: Any  # libvirt.virDomain on the source
    policy: Policy | None
    max_downtime_s: float
    on_downtime: Callable[[float], None] = lambda _s: None  # tell the monitor the limit in force
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    suspended_s: float | None = None  # when we paused the guest (pause aid / policy)
    postcopy_requested_s: float | None = None
    postcopy_started_s: float | None = None  # when libvirt accepted migrateStartPostCopy
    in_postcopy: bool = False  # the switch happened (event)
    abort_reason: str | None = None
    _next_observe_s: float = math.inf
    _throttle: float = 0.0

    # ------------------------------------------------------------ the clock
    def start(self, now_s: float) -> None:
        """The policy's start actions (its initial downtime): before migrate3, like the simulator's t=0."""
        if self.policy is None:
            return
        self._next_observe_s = self.policy.poll_interval_s
        for action in self.policy.start(now_s):
            self.apply(Action(now_s, action.action, action.value), now_s, iteration=0)

    def tick(self, stats: dict[str, Any], now_s: float, *, iteration: int, paused: bool) -> None:
        """One poll of the executor's loop: record QEMU's throttle, fire due rules, ask the policy."""
        throttle = float(stats.get("auto_converge_throttle") or 0) / 100.0
        # QEMU only ever raises the throttle during a migration; its drop to 0 is the cleanup at
        # the end (cpu_throttle_stop), not a controller action, and the simulator records none
        if throttle > self._throttle and stats.get("type"):
            self._throttle = throttle
            self._record(now_s, "throttle", throttle)
        if self.postcopy_requested_s is not None and self.postcopy_started_s is None and iteration >= 1:
            self._start_postcopy(now_s)  # a request made during the disk mirror waits for RAM migration
        switching = paused and self.suspended_s is None  # libvirt paused it: the switchover is under way
        if iteration >= 1 and not switching and not self.in_postcopy:
            self._after_iterations_rules(now_s, iteration)
        if self.policy is None or now_s < self._next_observe_s:
            return
        while self._next_observe_s <= now_s:  # a slow libvirt call may have made us miss polls
            self._next_observe_s += self.policy.poll_interval_s
        if switching or self.in_postcopy or self.postcopy_started_s is not None:
            return  # as the simulator: no decisions during the switchover or post-copy
        snap = snapshot_from_stats(stats, now_s, memory_total_bytes=self.plan.vm.memory_bytes,
                                   in_postcopy=self.in_postcopy, paused=self.suspended_s is not None,
                                   max_downtime_s=self.max_downtime_s)
        for action in self.policy.observe(snap):
            self.apply(action, now_s, iteration=iteration)
            if self.abort_reason:
                break

    def _after_iterations_rules(self, now_s: float, iteration: int) -> None:
        """The plan's own escalation (simkvm.sim.ram._after_iterations_rules)."""
        pc, pause = self.plan.aids.postcopy, self.plan.aids.pause
        if pc.enabled and pc.after_iterations and iteration > pc.after_iterations \
                and self.postcopy_requested_s is None:
            self.apply(Action(now_s, "start_postcopy"), now_s, iteration=iteration)
        if pause.after_iterations and iteration > pause.after_iterations and self.suspended_s is None:
            self.apply(Action(now_s, "pause"), now_s, iteration=iteration)

    # ------------------------------------------------------------ the actions
    def apply(self, action: Action, now_s: float, *, iteration: int) -> None:
        """Carry out one action through libvirt and record it (as simkvm.sim.controller.apply)."""
        import libvirt

        kind, value = action.action, action.value
        try:
            if kind == "set_downtime":
                ms = max(1, int(round(float(value) * 1000)))
                self.dom.migrateSetMaxDowntime(ms, 0)
                self.max_downtime_s = ms / 1000.0
                self.on_downtime(self.max_downtime_s)
            elif kind == "set_bandwidth":
                self.dom.migrateSetMaxSpeed(max(1, int(round(float(value) / 2**20))), 0)
            elif kind == "start_postcopy":
                if not self.plan.aids.postcopy.enabled or self.postcopy_requested_s is not None:
                    return  # libvirt would refuse: the job was not started with VIR_MIGRATE_POSTCOPY
                self.postcopy_requested_s = now_s
                if iteration >= 1:
                    self._start_postcopy(now_s)
            elif kind == "pause":
                if self.suspended_s is not None:
                    return
                self.dom.suspend()
                self.suspended_s = now_s
            elif kind == "abort":
                name = self.policy.name if self.policy is not None else "qemu"
                from ..units import fmt_duration

                self.abort_reason = (f"aborted by policy {name!r} at {fmt_duration(now_s)}; "
                                     f"the VM keeps running on the source")
            else:
                self.notes.append(f"unknown action {kind!r} at {now_s:.2f} s ignored")
                return
        except libvirt.libvirtError as exc:
            self.notes.append(f"{kind} at {now_s:.2f} s failed: {exc.get_error_message()}")
            log.warning("%s failed: %s", kind, exc.get_error_message())
            return
        self._record(now_s, kind, value)

    def _start_postcopy(self, now_s: float) -> None:
        import libvirt

        try:
            self.dom.migrateStartPostCopy(0)
        except libvirt.libvirtError as exc:
            self.notes.append(f"migrateStartPostCopy at {now_s:.2f} s failed: {exc.get_error_message()}")
            log.warning("could not start post-copy: %s", exc.get_error_message())
            self.postcopy_started_s = math.nan  # do not retry every poll
            return
        self.postcopy_started_s = now_s
        log.info("t=%.1fs post-copy requested", now_s)

    def _record(self, now_s: float, kind: str, value: float | None) -> None:
        self.actions.append(Action(now_s, kind, value))
        if kind != "throttle":
            log.info("t=%.1fs %s %s", now_s, kind, "" if value is None else f"{value:g}")
