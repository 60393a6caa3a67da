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

Before QEMU 8.0 a mirror of scattered granules also waits on the network. Data written by small
random writes lies in fragments, so bdrv_co_block_status_above() answers short extents and
mirror_iteration() copies one granule per op (instead of up to 1 MiB); with MAX_IN_FLIGHT (16)
ops out it waits for the *oldest* (mirror_wait_for_any_operation()). QEMU 7.2's NBD server sends
each small reply on a socket it never uncorks (nbd_trip(); fixed by QEMU commit bd2cd4a441,
"nbd/server: push pending frames after sending reply", 8.0), so Nagle holds a reply until the
client's delayed ACK, 40 ms on Linux (TCP_DELACK_MIN), and the job idles that long once per
window of 16 ops. Traced on the testbed (experiments/mirror_trace.py): 4 MiB/s of 4 KiB writes
over 16 MiB, 172 MiB/s, 64 KiB ops only; QEMU 7.2 25 stalls of 43.6 ms (median) in the 1.27 s
until READY, QEMU 10.0 none of that kind (0.41 s). Windows come one after another while the
job's dirty chunks lie next to each other (the bulk pass over the written region, a catch-up
pass while most of the set is dirty); over a sparse set each mirror_iteration() issues a few
ops and yields, the client keeps sending and its requests carry the ACKs. The model charges the
bulk pass's windows over the written region when the writer's small random writes laid the disk's
data out (_fragmented_by_the_writer); the catch-up passes' windows are not modelled (on v5-v12's
random 4 KiB writers the mirror time's median error went from -17.5 % to -0.8 %, the 4 MiB/s ones
on fast links are still 20-45 % short). The stop pays the same waits on the job's backlog
(stop_reply_stalls_s): once the VM is paused nothing else flows to the NBD server, so each window
of the drain ends on a held reply. That backlog is what the guest wrote since the READY job last woke
(it sleeps 100 ms whenever it has caught up), and the stop falls anywhere in that slice: the model
takes the backlog and its waits as their means over a uniformly placed stop (a 1 MiB/s writer of
64 KiB blocks leaves a second op in 37 % of the slice, so its stop waits 15 ms on average, not 40).
Where the stop copies it (traced, experiments/mirror_trace.py --switchover, debian12-switchover-sw4):
do_vm_stop()'s bdrv_drain_all() pauses and resumes the sleeping job, and job_resume() enters it at
once, so the backlog goes out during vm_stop, alongside bdrv_flush_all(), which flushes the guest's
disk first and then the job's target BlockBackend: an NBD_CMD_FLUSH to the same server. A lone op
(a sequential writer's stretch, or one scattered granule) has no reply queued behind it unless that
flush is in flight with it, and even then the first reply is ACKed at once unless the client's socket
is in Linux's pingpong mode, which it enters when it sends within ato (TCP_ATO_MIN, 40 ms) of the last
data it received (tcp_event_data_sent()): the job's last replies came when it last woke, so a stop
within 40 ms of that wake-up, with a write since, waits one delayed ACK (lone_op_hold_share). On
v8-v22's 128 sequential writers about a third of the stops took ~40 ms more (the share this gives for
their writes: 0.13 for 64 KiB blocks at 1 MiB/s, 0.32-0.40 for the others).
"""
from __future__ import annotations

import math

from ..model.plan import Plan
from ..model.qemu import qemu
from .state import Run

MAX_IN_FLIGHT = 16  # block/mirror.c: ops a job keeps in flight
DELAYED_ACK_S = 0.040  # Linux TCP_DELACK_MIN (HZ / 25): the longest a reply waits before QEMU 8.0
#: block/mirror.c mirror_run(): a READY job with nothing dirty and nothing in flight sleeps
#: BLOCK_JOB_SLICE_TIME (include/block/blockjob_int.h, 100 ms) before it reads the bitmap again; the
#: guest's writes in between wait for that wake-up, and the stop falls at no particular moment of it.
MIRROR_SLICE_S = 0.1


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
    if done and not run.qemu.nbd_replies_uncorked and _fragmented_by_the_writer(run):  # window after window
        done = yield from _bulk_reply_waits(run)
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
    # While RAM migrates the job copies each slice's new writes when it wakes (MIRROR_SLICE_S).
    run.mirror_bg_Bps = min(mirror_speed_Bps(run, n), guest.disk_unique_bytes(MIRROR_SLICE_S) / MIRROR_SLICE_S)
    run.follow_disk_writes()
    return True


def _fragmented_by_the_writer(run: Run) -> bool:
    """Whether the written disk's data lies in fragments that the bulk pass copies granule by granule:
    small random writes (a sequential writer, or writes of a granule or more, leave whole extents)
    that allocated the disk's data. That is what a disk holding little besides the writer's region
    shows (allocated <= 1.25 x the region; the testbed's disks, 0.15-1.16 in campaigns v5-v12). A disk
    with more data had it laid out by something else (an install, a preallocation), and rewrites do
    not move allocated clusters: the model then charges no wait rather than guess the layout."""
    guest, disks = run.guest, run.plan.migrated_disks
    region = guest.disk_granules * guest.granule_bytes
    return (bool(disks) and region > 0 and not guest.disk_sequential
            and run.plan.workload.disk.io_size_bytes < guest.granule_bytes
            and disks[0].allocation_bytes <= 1.25 * region)


def _bulk_reply_waits(run: Run):
    """Before QEMU 8.0: one delayed ACK per window of MAX_IN_FLIGHT granule ops over the written region.
    False if the deadline or an abort came first."""
    guest = run.guest
    left = guest.disk_granules / MAX_IN_FLIGHT * DELAYED_ACK_S
    while left > 1e-12:
        if run.abort_requested or run.env.now >= run.deadline_s:
            return False
        left -= yield from run.wait(min(left, run.deadline_s - run.env.now))
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


BACKLOG_POINTS = 32  # midpoints of the slice for the mean backlog (a smooth function of the phase)


def stop_backlog_bytes(run: Run, phase_s: float) -> float:
    """What the mirror still has to copy when the VM stops ``phase_s`` after the job's last wake-up:
    the unique granules the guest wrote since."""
    if not run.plan.migrated_disks or run.plan.migration.mirror_mode == "write_blocking":
        return 0.0
    return run.guest.disk_unique_bytes(phase_s)


def mirror_backlog_bytes(run: Run) -> float:
    """What the mirror has to copy once the VM stops, expected over where in the job's slice the stop
    falls (uniformly: the writes of the last u seconds, u anywhere in the 100 ms, not a whole slice)."""
    return sum(stop_backlog_bytes(run, MIRROR_SLICE_S * (k + 0.5) / BACKLOG_POINTS)
               for k in range(BACKLOG_POINTS)) / BACKLOG_POINTS


def share_of_slice_above(run: Run, backlog_bytes: float) -> float:
    """The share of the job's slice in which a stop finds more than ``backlog_bytes`` to copy (the
    backlog grows with the phase, so it is the slice after the phase where it passes that size)."""
    if stop_backlog_bytes(run, MIRROR_SLICE_S) <= backlog_bytes:
        return 0.0
    lo, hi = 0.0, MIRROR_SLICE_S
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if stop_backlog_bytes(run, mid) <= backlog_bytes else (lo, mid)
    return 1.0 - hi / MIRROR_SLICE_S


#: Linux's ato at its floor (TCP_ATO_MIN, HZ / 25): a socket that sends within this long of the last data
#: it received enters pingpong mode and delays its ACKs (net/ipv4/tcp_output.c tcp_event_data_sent()).
PINGPONG_WINDOW_S = 0.040
#: The longest run of reply stalls a paused VM's drain has shown before libvirt cancels the job and the rest
#: flows (traces debian12-switchover-sw1, sw6: 5 and 6 windows, 219 and 186 granules dirty at the stop).
MAX_STOP_WINDOWS = 6
MAX_IO_BYTES = 2**20  # block/mirror.c: the largest op, over consecutive dirty granules


def stop_may_stall(plan: Plan) -> bool:
    """Whether the plan's stop can wait on the drain's reply stalls (stop_reply_stalls_s): a migrated disk
    that the guest writes, on a QEMU whose NBD server still corks its replies (before 8.0). The
    calibration asks the same question of its runs (simkvm.validation.calibrate.objective)."""
    return (bool(plan.migrated_disks) and plan.workload.disk.write_rate_Bps > 0
            and not qemu(plan.host.qemu).nbd_replies_uncorked)


def stop_reply_stalls_s(run: Run) -> float:
    """Before QEMU 8.0, the delayed ACKs the stop's drain waits for, expected over where in the job's
    slice the stop falls. Once the VM is paused nothing else flows to the destination's NBD server, so
    each window of MAX_IN_FLIGHT ops ends with the client waiting for replies that QEMU 7.2's server
    leaves corked behind Nagle (nbd_trip(); fixed by QEMU commit bd2cd4a441): one DELAYED_ACK_S per
    window. A random writer's backlog is scattered granules, an op each; a sequential writer's lies in
    one stretch that mirror_iteration() copies in ops of up to MAX_IO_BYTES. The drain runs window
    after window until libvirt's block-job-cancel, after which the rest flows (MAX_STOP_WINDOWS). A stop
    just after the job's wake-up finds a write or none, one just before it a whole slice of writes: the
    k-th window waits in the share of the slice where the backlog is more than 16 (k - 1) ops (more than
    one op for the first). A lone op waits only when the stop's flush of the target is in flight with
    it and the client delays its ACKs (lone_op_hold_share)."""
    if not stop_may_stall(run.plan):
        return 0.0
    op_bytes = MAX_IO_BYTES if run.guest.disk_sequential else run.guest.granule_bytes
    expected = lone_op_hold_share(run, op_bytes) * DELAYED_ACK_S
    for k in range(1, MAX_STOP_WINDOWS + 1):
        share = share_of_slice_above(run, op_bytes * (1 if k == 1 else MAX_IN_FLIGHT * (k - 1)))
        if share <= 0.0:
            break
        expected += share * DELAYED_ACK_S
    return expected


def lone_op_hold_share(run: Run, op_bytes: float) -> float:
    """The share of stops whose lone backlog op waits one delayed ACK: do_vm_stop() copies it beside
    bdrv_flush_all()'s flush of the target, two requests out, and the second reply waits behind Nagle
    for the client's ACK of the first, which comes at once unless the client's socket is in pingpong
    mode: only if the stop falls within PINGPONG_WINDOW_S of the job's last wake-up (its last replies)
    and the guest has written since (one write of io_size every io_size / rate seconds, so a stop u
    after the wake-up finds one with odds min(1, u / interval)), and only while the backlog is one op.
    The mean of those odds over a stop placed uniformly in the job's slice, in closed form."""
    disk = run.plan.workload.disk
    interval = disk.io_size_bytes / disk.write_rate_Bps
    lone_until = MIRROR_SLICE_S * (1.0 - share_of_slice_above(run, op_bytes))
    x = min(PINGPONG_WINDOW_S, lone_until)
    written = x * x / (2 * interval) if x <= interval else x - interval / 2
    return written / MIRROR_SLICE_S


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

