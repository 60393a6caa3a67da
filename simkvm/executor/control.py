"""Who steers the real migration while it runs: the plan's aids and its policy, through libvirt.

The policy objects are the simulator's own (:mod:`simkvm.policies`): one
implementation of each. Here they see a :class:`~simkvm.policies.Snapshot`
built from libvirt's job stats (:func:`snapshot_from_stats`) every
``policy.poll_interval_s``, and their actions become libvirt calls
(:meth:`Controller.apply`, through :func:`simkvm.control.dispatch`: the
table of what each action does is there, shared with the simulator). QEMU's
own auto-converge throttle is only recorded, from ``auto_converge_throttle``
in the job stats (each rise; the reset at the end is not an action). The
plan's after-N-iterations rules fire as in the simulator
(:func:`simkvm.control.due_escalations`). Every action lands in
:attr:`Controller.actions` (time since the executor's t=0, like the
simulator's clock).

The controller runs inside the executor's polling loop (one thread talks to
the domain); it never waits on anything but the libvirt call it makes.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from ..control import dispatch, due_escalations
from ..libvirt_api import import_libvirt
from ..model.plan import Plan
from ..model.result import Action
from ..policies import Policy, Snapshot

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
    _now_s: float = 0.0  # the poll an action is carried out in
    _iteration: int = 0

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
        for kind in due_escalations(self.plan.aids, iteration, postcopy_requested=self.postcopy_requested_s is not None,
                                    paused=self.suspended_s is not None):
            self.apply(Action(now_s, kind), now_s, iteration=iteration)

    # ------------------------------------------------------------ the actions
    def apply(self, action: Action, now_s: float, *, iteration: int) -> None:
        """Carry out one action through libvirt and record it (as the simulator's controller does)."""
        libvirt = import_libvirt()

        kind, value = action.action, action.value
        self._now_s, self._iteration = now_s, iteration
        try:
            done = dispatch(self, action, postcopy_enabled=self.plan.aids.postcopy.enabled,
                            policy_name=self.policy.name if self.policy is not None else "qemu", now_s=now_s)
        except libvirt.libvirtError as exc:
            self.notes.append(f"{kind} at {now_s:.2f} s failed: {exc.get_error_message()}")
            log.warning("%s failed: %s", kind, exc.get_error_message())
            return
        if done is None:
            self.notes.append(f"unknown action {kind!r} at {now_s:.2f} s ignored")
        elif done:
            self._record(now_s, kind, value)

    # the Actuator (simkvm.control): each action as libvirt calls
    def set_downtime(self, seconds: float) -> None:
        ms = max(1, int(round(seconds * 1000)))
        self.dom.migrateSetMaxDowntime(ms, 0)
        self.max_downtime_s = ms / 1000.0
        self.on_downtime(self.max_downtime_s)

    def set_bandwidth(self, bytes_per_s: float) -> None:
        self.dom.migrateSetMaxSpeed(max(1, int(round(bytes_per_s / 2**20))), 0)

    def start_postcopy(self) -> bool:
        if self.postcopy_requested_s is not None:
            return False
        self.postcopy_requested_s = self._now_s
        if self._iteration >= 1:  # during the disk mirror, the request waits for RAM migration (tick)
            self._start_postcopy(self._now_s)
        return True

    def pause(self) -> bool:
        if self.suspended_s is not None:
            return False
        self.dom.suspend()
        self.suspended_s = self._now_s
        return True

    def abort(self, reason: str) -> None:
        self.abort_reason = reason  # the executor cancels the job

    def _start_postcopy(self, now_s: float) -> None:
        libvirt = import_libvirt()

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
