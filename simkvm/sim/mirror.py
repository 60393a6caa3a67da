"""Disk mirror for non-shared storage (QEMU block/mirror.c, driven by libvirt).

libvirt starts one ``blockdev-mirror`` per disk towards the destination's NBD
server, each capped at the migration bandwidth, and waits until every job is
READY before it migrates RAM (qemuMigrationSrcNBDStorageCopy polls
qemuMigrationSrcNBDStorageCopyReady). A job is ready once its dirty bitmap has been
emptied after the bulk pass: mirror_run() moves to READY when
``bdrv_get_dirty_count()`` is 0 with nothing in flight, and mirror_iteration()
clears a chunk's bits before copying it, so a guest write during the copy dirties
the granule again. Guest writes keep re-dirtying granules (64 KiB by default), so
what decides readiness is how many *granules* the guest dirties while a pass
copies the previous ones:

* random small writes each hit a granule of their own: 4 MiB/s of 4 KiB writes
  over 16 MiB dirty the whole set within a second (1024 granule hits/s over 256
  granules), more than a 30 MiB/s mirror copies; the job never gets ready;
* a sequential writer fills one granule after the other: it dirties granules at
  its byte rate, and each catch-up pass is r/s of the one before (writer rate r,
  mirror speed s), ready after a few passes whenever r < s.

In write-blocking mode guest writes go to both sides synchronously: nothing is
left to catch up, but the guest writes no faster than the mirror. libvirt asks
for it only with VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES (qemuMigrationSrcNBDStorageCopyOne's
``syncWrites``); without that flag the job runs in QEMU's default background mode.
"""
from __future__ import annotations

import math

from .state import MIRROR_LAG_S, Run


def mirror(run: Run):
    """mirror_run() for all disks at once; returns True when every job is ready."""
    plan, guest = run.plan, run.guest
    disks = plan.migrated_disks
    if not disks:
        return True
    run.phase = "mirror"
    run.point()
    n = len(disks)
    # mirror_dirty_init(): allocated data is dirty; with an NBD target that cannot promise
    # zeroes, unallocated ranges are written as zeroes and count against the speed limit.
    zero_accounted = plan.host.mirror_zero_accounted and plan.migration.storage == "non_shared_disk"
    progress = [d.size_bytes if zero_accounted else d.allocation_bytes for d in disks]
    if plan.migration.storage == "non_shared_inc":
        progress = [d.allocation_bytes for d in disks]
    run.disk_total = sum(progress)
    guest.collect_disk_bytes()
    done = yield from _copy(run, max(progress), n, n)
    if not done:
        return False
    run.disk_processed = run.disk_total
    run.disk_wire = sum(d.allocation_bytes for d in disks)
    run.point()
    if plan.migration.mirror_mode == "write_blocking":
        return True
    # Catch-up passes on the written disk (the first one): granules written behind the cursor
    # (Guest.collect_disk_bytes: a sequential writer's set at the disk's start, where the bulk
    # walk begins, so all it wrote is behind; measured: v7-02's job had exactly its 16 MiB set
    # left when the bulk pass ended, and the 59 sequential writers of the spent campaigns
    # copied 0.1 % (median) more or less than the model says).
    dirty = guest.collect_disk_bytes(behind_sweep=True)
    while dirty >= guest.granule_bytes:
        run.disk_total += dirty
        done = yield from _copy(run, dirty, 1, n)  # the written disk's job, at its speed
        if not done:
            return False
        run.disk_wire += dirty
        run.point()
        again = guest.collect_disk_bytes()
        if again >= dirty * 0.999:  # the writes outrun the copy: the job never becomes ready
            yield from _copy(run, math.inf, 0, n)
            return False
        dirty = again
    # While RAM migrates the job copies each new write after a short lag.
    run.mirror_bg_Bps = min(mirror_speed_Bps(run, n), guest.disk_unique_bytes(MIRROR_LAG_S) / MIRROR_LAG_S)
    run.follow_disk_writes()
    return True


def mirror_speed_Bps(run: Run, jobs: int) -> float:
    """Each block job's speed: libvirt's bandwidth cap, and the link (or its share) split among the jobs."""
    return min(run.plan.disk_bandwidth_Bps, run.capacity_Bps() / max(jobs, 1))


def _copy(run: Run, job_bytes: float, jobs: int, of: int):
    """``jobs`` of the ``of`` mirror jobs each copy ``job_bytes`` (``jobs`` = 0: wait, copying nothing);
    the speed is read again when a shared link wakes us. False if the deadline or an abort came first."""
    env = run.env
    speed = mirror_speed_Bps(run, of) if jobs else 0.0
    end = env.now + (job_bytes / speed if speed else math.inf)
    while env.now < end:
        if run.abort_requested:
            return False
        if end > run.deadline_s and env.now >= run.deadline_s:
            return False
        rate_Bps = speed * jobs
        run.disk_copying(rate_Bps)
        slept = yield from run.wait(min(end, run.deadline_s) - env.now)
        if rate_Bps and math.isfinite(end):
            run.disk_processed += rate_Bps * slept
        run.disk_copying(0.0)
        if jobs and run.link is not None and env.now < end:
            new = mirror_speed_Bps(run, of)
            if new != speed:  # what is left goes at the new speed
                end = env.now + (end - env.now) * speed / new
                speed = new
    return True


def mirror_backlog_bytes(run: Run) -> float:
    """What the mirror still has to copy when the VM stops (writes of the last lag)."""
    if not run.plan.migrated_disks or run.plan.migration.mirror_mode == "write_blocking":
        return 0.0
    return run.guest.disk_unique_bytes(MIRROR_LAG_S)


def mirror_limit_reason(run: Run) -> str:
    plan, guest = run.plan, run.guest
    speed = mirror_speed_Bps(run, len(plan.migrated_disks))
    granule_rate = guest.disk_granule_writes_per_s * guest.granule_bytes
    from ..model.units import fmt_rate

    return (
        f"disk writes exceed mirror bandwidth: the guest dirties {fmt_rate(granule_rate)} of disk "
        f"({fmt_rate(plan.workload.disk.write_rate_Bps)} in {plan.workload.disk.io_size_bytes / 1024:g} KiB "
        f"{'sequential' if guest.disk_sequential else 'random'} writes, "
        f"counted in {guest.granule_bytes / 1024:g} KiB mirror granules) but the mirror copies {fmt_rate(speed)}"
        if granule_rate >= speed
        else f"disk mirror not ready within {run.plan.max_time_s:g} s"
    )

