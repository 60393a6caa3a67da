"""What the executor measured: a completed job's phases and outcome, and the network probe's outage.

Once migrate3 returned, libvirt's completed-job statistics, the lifecycle
events and our own actions (a pause, a switch to post-copy) say how the
migration ended (:func:`ending`); the phases are split as the simulator
splits them (:func:`phase_times`).

A probe (on the testbed, :class:`simkvm.testbed.network.Probe`) sends an
ICMP echo to the guest every few milliseconds through the migration and
reports, for each, when it was sent and when (if ever) the reply came. The
longest time no reply arrived around the switchover is the service
interruption the users of the VM saw (:func:`probe_summary`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from ..libvirt_api import import_libvirt
from ..model.result import TimelinePoint
from ..model.units import fmt_duration
from .monitor import JobMonitor, Sample

#: (sent, replied or None) per echo, in time.monotonic() seconds.
Echoes = Sequence[tuple[float, float | None]]


class EchoProbe(Protocol):
    """Something that pings the guest through the migration."""

    def start(self) -> Any: ...

    def stop(self) -> list[tuple[float, float | None]]: ...


def longest_outage(echoes: Echoes, *, after_s: float | None = None,
                   before_s: float | None = None) -> tuple[float, float, float] | None:
    """(start, end, seconds) of the longest time no reply arrived, as a client sees it.

    Measured on reply arrival times: an echo queued in the guest's NIC when it
    paused is answered only after the resume, so send times would hide part of
    the gap. One probe interval is taken off (the probe cannot see gaps finer
    than its own rhythm). ``after_s``: only gaps still open at or after that
    time count (the switchover, not the boot); ``before_s``: only gaps that had
    begun by then.
    """
    replies = sorted(r for _, r in echoes if r is not None)
    if len(replies) < 2:
        return None
    sends = [s for s, _ in echoes]
    interval = (sends[-1] - sends[0]) / max(len(sends) - 1, 1)
    best: tuple[float, float, float] | None = None
    for a, b in zip(replies, replies[1:]):
        if (after_s is not None and b < after_s) or (before_s is not None and a > before_s):
            continue
        gap = max(b - a - interval, 0.0)
        if best is None or gap > best[2]:
            best = (a, b, gap)
    return best


def probe_summary(echoes: Echoes, *, stop_s: float, downtime_s: float
                  ) -> tuple[tuple[float, float, float] | None, dict[str, Any]]:
    """The outage around a switchover at ``stop_s`` and what the probe saw, for a result's meta.

    The meta keeps the reply gaps and the stretches of unanswered echoes over
    20 ms, so a strange figure can be explained afterwards (a guest that went
    quiet, a neighbour entry gone stale).
    """
    outage = longest_outage(echoes, after_s=stop_s - 0.25, before_s=stop_s + downtime_s + 0.25)
    replies = sorted(r for _, r in echoes if r is not None)
    gaps = [[round(a, 4), round(b, 4)] for a, b in zip(replies, replies[1:]) if b - a > 0.02]
    silent: list[list[float]] = []  # stretches of echoes sent that got no reply
    run_start: float | None = None  # the first unanswered echo of the stretch
    last = 0.0  # its last one so far
    for sent, replied in [*echoes, (math.inf, 0.0)]:  # a sentinel reply closes the last stretch
        if replied is None:
            run_start = sent if run_start is None else run_start
            last = sent
            continue
        if run_start is not None and last - run_start > 0.02:
            silent.append([round(run_start, 4), round(last, 4)])
        run_start = None
    meta = {"echoes": len(echoes), "answered": len(replies), "reply_gaps_over_20ms": gaps,
            "unanswered_over_20ms": silent, "first_reply_s": replies[0] if replies else None,
            "outage": None if outage is None else {"from_s": outage[0], "to_s": outage[1], "seconds": outage[2]}}
    return outage, meta


# ------------------------------------------------------------------ the completed job
def completed_stats(dom: Any) -> dict[str, Any]:
    """libvirt's statistics of the domain's completed job ({} when it keeps none)."""
    libvirt = import_libvirt()
    try:
        return dict(dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
    except libvirt.libvirtError:
        return {}


def with_disk_progress(completed: dict[str, Any], tail: Sample | None) -> tuple[dict[str, Any], bool]:
    """The destination's completed stats know nothing of the disk mirrors (disk_* = 0 there):
    take the source's last figures (``tail``), which include the mirrors' final catch-up up to the
    stop. Also says whether a figure came from that sample."""
    if not tail:
        return completed, False
    merged = dict(completed)
    from_sample = False
    for key in ("disk_total", "disk_processed"):
        if tail.stats.get(key, 0) > merged.get(key, 0):
            merged[key] = tail.stats[key]
            from_sample = True
    merged["disk_remaining"] = 0
    return merged, from_sample


def phase_times(monitor: JobMonitor, offset: float, stop: float, total: float, has_disks: bool) -> dict[str, float]:
    """setup (ours + libvirt's until the mirror or RAM starts), mirror, pre-copy; as the simulator splits them."""
    ram_start = monitor.ram_start_s(offset)
    mirror_start = monitor.mirror_start_s(offset) if has_disks else None
    setup = mirror_start if mirror_start is not None else (ram_start if ram_start is not None else stop)
    ram_start_or_stop = ram_start if ram_start is not None else stop
    return {
        "total_time_s": total,
        "setup_time_s": setup,
        "disk_mirror_time_s": max(ram_start_or_stop - setup, 0.0) if has_disks else 0.0,
        "precopy_time_s": max(stop - ram_start, 0.0) if ram_start is not None else 0.0,
    }


@dataclass(frozen=True)
class Handover:
    """When the guest changed hosts, as the events and our own actions saw it (our clock, s)."""

    returned_s: float  # migrate3 returned
    in_postcopy: bool  # the job switched to post-copy
    postcopy_stop_s: float | None = None  # the source suspended for post-copy (event)
    postcopy_started_s: float | None = None  # we asked libvirt to switch (controller)
    suspended_s: float | None = None  # we paused the guest to force completion (controller)
    dst_resumed_s: float | None = None  # the destination VM first ran (event)
    resumed_by_us_s: float | None = None  # we resumed it there, after our pause


@dataclass(frozen=True)
class Ending:
    """How a completed migration ended: its outcome and where its phases end."""

    outcome: str  # converged | postcopy | paused
    total_s: float
    stop_s: float  # the guest stopped on the source: the end of pre-copy
    downtime_s: float
    postcopy_s: float = 0.0
    note: str | None = None  # where the figures come from when libvirt kept none


def ending(monitor: JobMonitor, offset: float, completed: dict[str, Any], handover: Handover) -> Ending:
    """The outcome and phase ends: ``postcopy`` when the switch to post-copy happened (its downtime from
    the lifecycle events when libvirt keeps no completed stats for it), ``paused`` when we suspended the
    guest (the downtime runs from our suspend until it ran on the destination), else ``converged``
    (libvirt's own downtime, ending when its job did)."""
    total = handover.returned_s
    if "time_elapsed" in completed:
        candidate = offset + completed["time_elapsed"] / 1000.0
        last = monitor.samples[-1].t_s if monitor.samples else 0.0
        if last - 0.5 <= candidate <= handover.returned_s + 0.5:
            total = candidate
    downtime = completed.get("downtime", 0) / 1000.0
    stop = total - downtime
    if handover.in_postcopy:
        stop = next(t for t in (handover.postcopy_stop_s, handover.postcopy_started_s, stop) if t is not None)
        resume = handover.dst_resumed_s if handover.dst_resumed_s is not None else stop + downtime
        note = None
        if "downtime" not in completed:
            downtime = max(resume - stop, 0.0)
            note = ("post-copy: libvirt kept no completed job stats; downtime and the post-copy phase are "
                    "from the lifecycle events (source suspended for post-copy -> destination resumed)")
        return Ending("postcopy", total, stop, downtime, max(total - resume, 0.0), note)
    if handover.suspended_s is not None:
        stop = handover.suspended_s
        resumed = next((t for t in (handover.resumed_by_us_s, handover.dst_resumed_s) if t is not None), total)
        return Ending("paused", max(total, resumed), stop, max(resumed - stop, 0.0))
    return Ending("converged", total, stop, downtime)


def switchover_points(end: Ending, final_n: int, rounds: list[dict[str, Any]], completed: dict[str, Any]
                      ) -> list[TimelinePoint]:
    """The timeline's switchover point (and post-copy's start), estimated from the last round."""
    last_proc = rounds[-1]["memory_processed"] if rounds else None
    points = [TimelinePoint(end.stop_s, "switchover", final_n, rounds[-1].get("memory_remaining") if rounds else None,
                            last_proc, 0, completed.get("disk_processed"))]
    if end.outcome == "postcopy":
        points.append(TimelinePoint(end.stop_s + end.downtime_s, "postcopy", final_n, None, last_proc, 0,
                                    completed.get("disk_processed")))
    return points


def ending_reason(end: Ending, final_n: int) -> str:
    """One sentence on how the migration completed."""
    if end.outcome == "postcopy":
        return (f"converged via post-copy: switched at iteration {final_n} after {fmt_duration(end.stop_s)}, "
                f"downtime {fmt_duration(end.downtime_s)}, the rest of RAM followed in "
                f"{fmt_duration(end.postcopy_s)}")
    if end.outcome == "paused":
        return (f"forced by pausing the guest at {fmt_duration(end.stop_s)}: completed with "
                f"{fmt_duration(end.downtime_s)} downtime (suspend -> running on the destination)")
    return (f"converged after {max(final_n - 1, 0)} pre-copy iteration(s) in {fmt_duration(end.total_s)}, "
            f"downtime {fmt_duration(end.downtime_s)} (libvirt-measured)")


def guest_paused_s(monitor: JobMonitor, downtime_s: float, dst_resumed_s: float | None) -> float:
    """How long the guest was paused: libvirt's figure, or the one the lifecycle events show (source
    paused -> destination resumed) when longer."""
    seen = [t for t, paused in monitor.pauses if paused]
    if seen and dst_resumed_s is not None and dst_resumed_s >= seen[-1]:
        return max(downtime_s, dst_resumed_s - seen[-1])
    return downtime_s
