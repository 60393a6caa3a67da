"""Steering a running migration: what each controller action does, and when the plan's own rules fire.

One implementation, two drivers. A controller (a policy, or the plan's
after-N-iterations rules) decides :class:`~simkvm.model.result.Action` s; an
:class:`Actuator` carries them out: the simulator's (:mod:`simkvm.sim.controller`)
changes the simulated run, the executor's (:mod:`simkvm.executor.control`) calls
libvirt. :func:`dispatch` maps each action onto the actuator the same way for both,
:func:`due_escalations` says when the plan's rules fire, :func:`abort_message` is
what an aborted migration says.

==================  ==========================================  ===========================
action              libvirt                                     refused when
==================  ==========================================  ===========================
set_downtime        ``virDomainMigrateSetMaxDowntime``
set_bandwidth       ``virDomainMigrateSetMaxSpeed``
start_postcopy      ``virDomainMigrateStartPostCopy``           the job has no POSTCOPY flag
pause               ``virDomainSuspend`` (forced completion)    the guest is paused already
abort               the job is cancelled (``virDomainAbortJob``)
==================  ==========================================  ===========================
"""
from __future__ import annotations

from typing import Protocol

from ..model.plan import Aids
from ..model.result import Action
from ..model.units import fmt_duration

ACTIONS = ("set_downtime", "set_bandwidth", "start_postcopy", "pause", "abort")


class Actuator(Protocol):
    """What a driver can do to its migration. ``start_postcopy`` and ``pause`` return False when
    there was nothing to do (already requested, already paused): the action is then not recorded."""

    def set_downtime(self, seconds: float) -> None: ...

    def set_bandwidth(self, bytes_per_s: float) -> None: ...

    def start_postcopy(self) -> bool: ...

    def pause(self) -> bool: ...

    def abort(self, reason: str) -> None: ...


def dispatch(actuator: Actuator, action: Action, *, postcopy_enabled: bool, policy_name: str,
             now_s: float) -> bool | None:
    """Carry out ``action``: True if done, False if refused (not recorded), None if unknown."""
    kind = action.action
    if kind == "set_downtime":
        actuator.set_downtime(float(action.value))  # type: ignore[arg-type]
    elif kind == "set_bandwidth":
        actuator.set_bandwidth(float(action.value))  # type: ignore[arg-type]
    elif kind == "start_postcopy":
        # libvirt refuses unless the migration was started with VIR_MIGRATE_POSTCOPY
        return postcopy_enabled and actuator.start_postcopy()
    elif kind == "pause":
        return actuator.pause()
    elif kind == "abort":
        actuator.abort(abort_message(policy_name, now_s))
    else:
        return None
    return True


def due_escalations(aids: Aids, iteration: int, *, postcopy_requested: bool, paused: bool) -> list[str]:
    """The plan's own escalation, due once more than N iterations are done: post-copy
    (``aids.postcopy.after_iterations``) and forced completion (``aids.pause.after_iterations``)."""
    due = []
    pc, pause = aids.postcopy, aids.pause
    if pc.enabled and pc.after_iterations and iteration > pc.after_iterations and not postcopy_requested:
        due.append("start_postcopy")
    if pause.after_iterations and iteration > pause.after_iterations and not paused:
        due.append("pause")
    return due


def abort_message(policy_name: str, at_s: float) -> str:
    """What a migration aborted by its controller says (the VM never left the source)."""
    return f"aborted by policy {policy_name!r} at {fmt_duration(at_s)}; the VM keeps running on the source"
