"""One simulated migration with non-shared storage, phase by phase.

``migration()`` reads like the seed's description: preparation (check the
destination, create the disks, start the paused destination VM), migration
(disk mirror, then RAM pre-copy while the mirror follows new writes), switch
(downtime, then the network). Each step is a SimPy process in its own module.
"""
from __future__ import annotations

import math

import simpy

from ..control import abort_message
from ..model.plan import Plan
from ..model.result import Result
from ..model.units import fmt_bytes, fmt_duration
from ..policies import make_policy
from .controller import controller
from .diagnose import converged_reason, memory_reason
from .mirror import mirror, mirror_limit_reason
from .postcopy import postcopy
from .ram import precopy
from .state import Run, SharedCpus, SharedLink
from .switchover import network_convergence_s, switchover


def simulate(plan: Plan, *, reference: bool = False, timeline: bool = True) -> Result:
    """Predict one migration. ``reference`` walks QEMU's loop check by check (slow, for proofs)."""
    env = simpy.Environment()
    _, process = start_migration(env, plan, reference=reference, timeline=timeline)
    return env.run(until=process)  # type: ignore[return-value]  # the process returns the Result


def start_migration(env: simpy.Environment, plan: Plan, *, reference: bool = False, timeline: bool = True,
                    link: SharedLink | None = None, cpus: SharedCpus | None = None) -> tuple[Run, simpy.Process]:
    """One migration (and its orchestrator) as processes in ``env``; the process's value is the Result.
    A drain starts many in one environment, each over its share of a ``link`` and of its hosts' ``cpus``."""
    policy = make_policy(plan) if plan.policy.name != "qemu" else None
    if policy is not None:
        plan = policy.configure(plan)  # the orchestrator's own settings (aids, ...)
    run = Run(env, plan, reference=reference, keep_timeline=timeline, link=link, cpus=cpus)
    process = env.process(_labelled(migration(run), plan.policy.name))
    if policy is not None:
        run.has_controller = True
        env.process(controller(run, policy))
    return run, process


def _labelled(process, policy: str):
    result = yield from process
    result.meta["policy"] = policy
    return result


def migration(run: Run):
    env, plan = run.env, run.plan
    # ---- 1. preparation (done by the client before libvirt's job: our executor does the same)
    refusal = destination_refusal(plan)
    yield env.timeout(plan.host.check_destination_s)
    if refusal:
        return _finish(run, converged=False, outcome="refused", reason=refusal)
    if run.cpus is None:
        yield env.timeout(plan.host.create_disk_s * len(plan.migrated_disks) + plan.host.start_destination_s)
    else:  # a drain: the destination QEMU starts on its share of the machine's cores
        yield env.timeout(plan.host.create_disk_s * len(plan.migrated_disks))
        yield from run.cpus.start_destination(run)
    yield env.timeout(plan.host.setup_s)
    run.setup_done_s = env.now
    # ---- 2. migration: disks first, then RAM
    ready = yield from mirror(run)
    run.mirror_ready_s = env.now
    if run.abort_requested:
        return _abort(run, _policy_abort_reason(run), outcome="aborted")
    if not ready:
        return _abort(run, mirror_limit_reason(run))
    outcome = yield from precopy(run)
    if outcome == "aborted":
        return _abort(run, _policy_abort_reason(run), outcome="aborted")
    if outcome in ("max_iterations", "max_time"):
        return _abort(run, memory_reason(run, outcome))
    # ---- 3. switch
    if outcome == "postcopy":
        yield from postcopy(run)
        return _finish(run, converged=True, outcome="postcopy", reason=(
            f"converged via post-copy: switched at iteration {run.iteration}, the rest of RAM followed in "
            f"{fmt_duration(run.env.now - run.resume_s)} ({run.postcopy_pages:,.0f} pages faulted on demand)"))
    yield from switchover(run)
    if not math.isnan(run.paused_s):
        return _finish(run, converged=True, outcome="paused", reason=(
            f"forced by pausing the guest at {fmt_duration(run.paused_s)}: completed with "
            f"{fmt_duration(run.resume_s - run.stop_s)} downtime"))
    return _finish(run, converged=True, outcome="converged", reason=converged_reason(run))


def _policy_abort_reason(run: Run) -> str:
    return abort_message(run.plan.policy.name, run.env.now)


def destination_refusal(plan: Plan) -> str | None:
    """Why the destination cannot take this VM, or None."""
    dst = plan.destination
    if dst.free_memory_bytes is not None and dst.free_memory_bytes < plan.vm.memory_bytes:
        return (f"refused: destination has {fmt_bytes(dst.free_memory_bytes)} free memory, the VM needs "
                f"{fmt_bytes(plan.vm.memory_bytes)}")
    need = sum(d.allocation_bytes for d in plan.migrated_disks)
    if dst.free_disk_bytes is not None and dst.free_disk_bytes < need:
        return (f"refused: destination has {fmt_bytes(dst.free_disk_bytes)} free disk, the VM's disks need "
                f"{fmt_bytes(need)}")
    return None


def _abort(run: Run, reason: str, outcome: str = "not_converged") -> Result:
    """The stack gives up: the job is cancelled and the VM keeps running on the source."""
    run.rec.close_last_round(run.env.now, run.ram_sent)
    run.point("aborted")
    run.phase = "aborted"
    if run.guest.cpu_lost_s or run.guest.throttle:
        run.guest.set_throttle(0.0)  # settle the CPU-lost account
    return _finish(run, converged=False, outcome=outcome, reason=reason)


def _finish(run: Run, *, converged: bool, outcome: str, reason: str) -> Result:
    now = run.env.now
    downtime = (run.resume_s - run.stop_s) if converged else 0.0
    if converged:
        run.guest.set_throttle(run.guest.throttle)  # settle the CPU-lost account up to now
    network = network_convergence_s(run) if converged else 0.0
    ram_start = run.ram_start_s if run.ram_start_s else now
    stop = run.stop_s if converged else now
    if outcome == "postcopy":
        now = run.env.now
    result = Result(
        converged=converged,
        outcome=outcome,
        reason=reason,
        source="simulated",
        total_time_s=now,
        downtime_s=downtime,
        service_interruption_s=downtime + network,
        setup_time_s=run.setup_done_s,
        disk_mirror_time_s=(run.mirror_ready_s - run.setup_done_s) if run.plan.migrated_disks else 0.0,
        precopy_time_s=max(stop - ram_start, 0.0) if run.ram_start_s else 0.0,
        network_convergence_s=network,
        postcopy_time_s=(now - run.resume_s) if outcome == "postcopy" else 0.0,
        postcopy_pages_on_demand=run.postcopy_pages,
        postcopy_degradation_s=run.postcopy_degradation_s,
        ram_transferred_bytes=run.ram_sent,
        disk_transferred_bytes=run.disk_processed,
        disk_background_bytes=run.disk_background,
        total_transferred_bytes=run.ram_sent + run.disk_processed,  # libvirt's data_processed
        zero_pages=run.zero_pages,
        normal_pages=run.normal_pages,
        iterations=run.iteration,
        guest_cpu_lost_s=run.guest.cpu_lost_s,
        round_records=run.rec.rounds,
        timeline_records=run.rec.timeline,
        actions=run.rec.actions,
    )
    # What crossed the link: RAM, the mirror's copies (zero ranges skipped) and its background copies.
    result.meta["wire_bytes"] = run.ram_sent + run.disk_wire
    result.meta["qemu"] = run.plan.host.qemu  # whose migration loop the prediction followed
    if not math.isfinite(result.total_time_s):  # pragma: no cover - guarded by validation
        raise RuntimeError("simulation produced an infinite time")
    return result
