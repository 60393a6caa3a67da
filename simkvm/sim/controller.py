"""The orchestrator as a SimPy process: a policy polled on its own clock, its actions carried out.

The policy objects (simkvm.policies) are the same ones the real executor
feeds from libvirt's job stats; here they see the simulated state.
"""
from __future__ import annotations

from ..policies import Policy, Snapshot
from ..result import Action
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


def apply(run: Run, action: Action) -> None:
    """Carry out one action the way libvirt would, and wake the RAM loop to look again."""
    kind = action.action
    if kind == "set_downtime":
        run.max_downtime_s = float(action.value)  # migrateSetMaxDowntime
    elif kind == "set_bandwidth":
        run.bandwidth_Bps = float(action.value)  # migrateSetMaxSpeed
    elif kind == "start_postcopy":
        if not run.aids.postcopy.enabled:
            return  # libvirt refuses: the migration was not started with VIR_MIGRATE_POSTCOPY
        run.postcopy_requested = True
    elif kind == "pause":
        if not run.guest.running:
            return
        run.pause_guest()
        _wake(run)
        return  # pause_guest records the action itself
    elif kind == "abort":
        run.abort_requested = True
    run.rec.actions.append(Action(run.env.now, kind, action.value))
    _wake(run)


def _wake(run: Run) -> None:
    run.wake()
