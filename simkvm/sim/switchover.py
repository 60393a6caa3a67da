"""Switchover and after: the downtime, then the network learning where the VM went.

Order (migration_completion() with libvirt's pause-before-switchover):
stop the VM -> libvirt completes the disk mirrors -> final bitmap sync ->
every remaining page and the device state, with the rate limit lifted ->
the destination loads the state and starts the CPUs. libvirt's downtime is
that whole span, as libvirt 9.0 measures it: from its handling of QEMU's STOP
event (qemuProcessHandleStop()) to after `cont` in qemuMigrationDstFinishFresh()
(qemuDomainJobDataUpdateDowntime()), so the Finish phase's monitor calls and
the persistent definition it writes are in it too (``resume_s``). Service
interruption adds the network's re-learning: QEMU
announces the VM's MAC (RARP/gratuitous ARP) right after the resume, then
after growing gaps; the fabric may also need its own reconvergence time.
"""
from __future__ import annotations

import math

from .mirror import mirror_backlog_bytes, stop_reply_stalls_s
from .state import Run


def stop_and_complete_mirrors(run: Run):
    """vm_stop_force_state(FINISH_MIGRATE), then libvirt completes every mirror while paused."""
    env, plan, host = run.env, run.plan, run.plan.host
    run.stop_s = run.paused_s if not math.isnan(run.paused_s) else env.now
    run.follow_disk_writes()
    run.mirror_bg_Bps = 0.0
    run.guest.pause()
    backlog = mirror_backlog_bytes(run)
    complete = mirror_completion_s(plan)
    yield env.timeout(host.switchover_overhead_s + backlog / run.capacity_Bps() + stop_reply_stalls_s(run)
                      + complete)
    run.disk_background += backlog
    run.disk_wire += backlog


def mirror_completion_s(plan) -> float:
    """libvirt completing the mirrors while the VM is paused: a round trip per job, plus, when
    the guest writes its disk, the drain of its in-flight writes and the mirror's copies (the
    stop waits for all block I/O; under TCG that is tens of milliseconds)."""
    if not plan.migrated_disks:
        return 0.0
    host = plan.host
    busy = plan.workload.disk.write_rate_Bps > 0
    return host.mirror_complete_s + (host.mirror_drain_s if busy else 0.0)


def switchover(run: Run):
    env, host = run.env, run.plan.host
    run.phase = "switchover"
    yield from stop_and_complete_mirrors(run)
    capacity = run.capacity_Bps()  # the rate limit is lifted: all the link (or share) gives
    # ram_save_complete(): final sync, then all remaining pages without the rate limit.
    dirtied = run.bitmap_sync()
    run.record_round(dirtied, capacity)
    pages = run.pending_pages
    bitmap = run.dirty_bitmap
    # The destination resumes only once it has loaded every page, so its time is on the downtime's
    # path: a normal page it never had (a switchover during the first pass, or on its tail) is its
    # first write to that memory (WireCost.first_touch_s). Before the stop the source runs ahead of
    # it by the sockets' buffers and its own clock sets the checks: pre-copy does not see this cost.
    send_s = pages / run.wire.unlimited_pages_per_s(run.wire_bytes_all_pending(), capacity,
                                                  bitmap.zero_share(bitmap.totals), bitmap.fresh_normal_share(whole=True))
    yield env.timeout(run.sync_cost_s() + send_s + host.device_state_bytes / capacity)
    run.send_pages(pages)
    run.ram_sent += host.device_state_bytes
    yield env.timeout(host.resume_s)  # destination: load device state, start CPUs
    run.resume_s = env.now
    run.rec.close_last_round(env.now, run.ram_sent)
    run.phase = "done"
    run.point()


def fixed_downtime_s(plan) -> float:
    """The part of the downtime that the limit does not bound: QEMU's limit covers the RAM left
    at the last sync; the device state, the bitmap sync, libvirt's pause-before-switchover
    round trip, mirror completion and the destination's resume come on top."""
    host = plan.host
    return (host.switchover_overhead_s + mirror_completion_s(plan) + host.sync_s_per_GiB * plan.vm.memory_bytes / 2**30
            + host.device_state_bytes / plan.capacity_Bps + host.resume_s)


def network_convergence_s(run: Run) -> float:
    """Time from resume until the network delivers the VM's traffic to the destination."""
    net = run.plan.network
    learn_at = 0.0
    if 0 < net.learn_after_announces <= net.announce_rounds:
        for k in range(1, net.learn_after_announces):
            learn_at += min(net.announce_initial_s + (k - 1) * net.announce_step_s, net.announce_max_s)
    return learn_at + net.reconvergence_s
