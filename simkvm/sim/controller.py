"""The orchestrator as a SimPy process: a policy polled on its own clock, its actions carried out.

The policy objects (simkvm.policies) are the same ones the real executor
feeds from libvirt's job stats; here they see the simulated state.
"""
from __future__ import annotations

from ..control import dispatch, due_escalations
from ..model.result import Action
from ..policies import Policy, Snapshot
from .state import Run


def snapshot(run: Run) -> Snapshot:
    memory_remaining = run.pending_now_bytes() if run.iteration else run.plan.vm.memory_bytes
    disk_remaining = run.disk_remaining_now()
    return Snapshot(
        elapsed_s=run.env.now,
        iteration=run.iteration,
        memory_remaining=memory_remaining,
        data_remaining=memory_remaining + disk_remaining,
        memory_total=run.plan.vm.memory_bytes,
        in_postcopy=run.in_postcopy,
        paused=not run.guest.running,
        max_downtime_s=run.max_downtime_s,
    )


def controller(run: Run, policy: Policy):
    env = run.env
    for action in policy.start(env.now):
        apply(run, action)
    tick_s = env.now
    while run.phase not in ("done", "aborted"):
        tick_s += policy.poll_interval_s  # a fixed grid, as the executor's controller keeps
        yield env.timeout(tick_s + run.plan.host.job_query_s - env.now)
        if run.phase in ("done", "aborted", "switchover", "postcopy"):
            continue
        for action in policy.observe(snapshot(run)):
            apply(run, action)


class SimActuator:
    """The simulated run as libvirt would change it (simkvm.control.Actuator)."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def set_downtime(self, seconds: float) -> None:
        self.run.max_downtime_s = seconds  # migrateSetMaxDowntime

    def set_bandwidth(self, bytes_per_s: float) -> None:
        self.run.bandwidth_Bps = bytes_per_s  # migrateSetMaxSpeed

    def start_postcopy(self) -> bool:
        self.run.postcopy_requested = True
        return True

    def pause(self) -> bool:
        if not self.run.guest.running:
            return False
        self.run.pause_guest()  # records the action itself
        return True

    def abort(self, reason: str) -> None:
        self.run.abort_requested = True  # the engine says why when it ends the run


def apply(run: Run, action: Action, *, wake: bool = True) -> None:
    """Carry out one action the way libvirt would and record it; wake the RAM loop to look again."""
    done = dispatch(SimActuator(run), action, postcopy_enabled=run.aids.postcopy.enabled,
                    policy_name=run.plan.policy.name, now_s=run.env.now)
    if done is False:
        return
    if action.action != "pause":
        run.rec.actions.append(Action(run.env.now, action.action, action.value))
    if wake:
        _wake(run)


def after_iterations_rules(run: Run) -> None:
    """The plan's own escalation, from inside the RAM loop (no wake: the loop is running)."""
    for kind in due_escalations(run.aids, run.iteration, postcopy_requested=run.postcopy_requested,
                                paused=not run.guest.running):
        apply(run, Action(run.env.now, kind), wake=False)


def _wake(run: Run) -> None:
    run.wake()
