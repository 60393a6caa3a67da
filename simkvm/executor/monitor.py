"""What libvirt showed us while the job ran, turned into the simulator's rows.

The executor polls ``virDomainGetJobStats`` every few tens of milliseconds and
listens for ``VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION``; this module keeps
those observations (:class:`JobMonitor`) and, once the job is over, builds the
``rounds`` and ``timeline`` tables of :mod:`simkvm.model.result` from them
(:func:`build_rounds`, :func:`build_timeline`). It talks to no daemon, so the
conversion is tested with made-up samples.

Clocks. Every time here is seconds since the executor started preparing
(t=0 when it began checking the destination), the simulator's clock. libvirt
reports ``time_elapsed`` in ms since *its* job started (the source's Begin
phase); :meth:`JobMonitor.libvirt_offset_s` is the median of (our clock at
the sample - libvirt's elapsed time), which converts one into the other
without the jitter of single RPC round trips.

Row semantics (as in :mod:`simkvm.model.result`): row *i* is the period during
which ``memory_iteration`` equals *i*. Its start time is the iteration event
for *i* when that arrived before the first sample showing *i* (events come
right at QEMU's bitmap sync; samples up to one poll interval later), else
that sample's time; its counters are the first sample's. An iteration that
began and ended between two samples still gets a row (the event gives its
time; counters are interpolated in time, remaining and rates left unknown),
so ``len(rounds) == iterations``. The last row, the stop-and-copy period,
comes from the completed job's statistics.
"""
from __future__ import annotations

import logging
import math
import statistics
import threading
from dataclasses import dataclass, field
from typing import Any

from ..model.result import TimelinePoint
from ..model.units import fmt_bytes, fmt_rate

log = logging.getLogger("simkvm.executor")

#: Stat keys copied into each timeline/round row (libvirt names).
MEMORY_KEYS = ("memory_processed", "memory_remaining", "memory_dirty_rate", "memory_bps")
DISK_KEYS = ("disk_processed", "disk_remaining")
#: The timeline's first point: preparation starts at t=0, nothing copied yet.
PREPARED = TimelinePoint(0.0, "prepare", 0, None, None, None, None)


@dataclass
class Sample:
    """One ``jobStats()`` answer and the domain state polled with it."""

    t_s: float  # our clock when we asked
    stats: dict[str, Any]
    paused: bool = False  # the source VM was paused (switchover under way)
    rpc_s: float = 0.0  # how long the jobStats call took (a busy QEMU monitor makes it seconds)
    max_downtime_s: float | None = None  # the downtime limit in force when it was taken (a policy changes it)

    @property
    def iteration(self) -> int:
        return int(self.stats.get("memory_iteration") or 0)

    @property
    def active(self) -> bool:
        """libvirt has a migration job (type != VIR_DOMAIN_JOB_NONE) with timing."""
        return bool(self.stats.get("type")) and "time_elapsed" in self.stats

    @property
    def mirror_started(self) -> bool:
        return bool(self.stats.get("disk_total"))

    def remaining_text(self) -> str:
        """What is left to copy, for messages: RAM once pre-copy runs, else the disks."""
        st = self.stats
        if self.iteration >= 1:
            return f"{fmt_bytes(st.get('memory_remaining', 0))} of RAM remaining"
        return f"{fmt_bytes(st.get('disk_remaining', 0))} of disk remaining (mirror not ready)"


def log_progress(sample: Sample, t: float) -> None:
    """One progress line (INFO) for an active sample: the iteration, or the mirrors' progress before it."""
    st = sample.stats
    if not sample.active:
        return
    if sample.iteration >= 1:
        log.info("t=%.1fs iteration %d: %s remaining, %s, dirty %.0f pages/s", t, sample.iteration,
                 fmt_bytes(st.get("memory_remaining", 0)), fmt_rate(st.get("memory_bps", 0)),
                 st.get("memory_dirty_rate", 0))
    elif sample.mirror_started:
        log.info("t=%.1fs disk mirror: %s of %s copied", t, fmt_bytes(st.get("disk_processed", 0)),
                 fmt_bytes(st.get("disk_total", 0)))


@dataclass
class JobMonitor:
    """Collects samples (main thread) and iteration events (event-loop thread)."""

    max_downtime_s: float
    samples: list[Sample] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)  # (our time, iteration)
    pauses: list[tuple[float, bool]] = field(default_factory=list)  # (our time, paused?) from lifecycle events
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_paused(self, t_s: float, paused: bool) -> None:
        with self._lock:
            self.pauses.append((t_s, paused))

    @property
    def paused(self) -> bool:
        """The source VM is paused now (the switchover), as the lifecycle events say."""
        with self._lock:
            return bool(self.pauses) and self.pauses[-1][1]

    @property
    def stopped_s(self) -> float | None:
        """When the source VM was last paused (start of the downtime), if it still is."""
        with self._lock:
            return self.pauses[-1][0] if self.pauses and self.pauses[-1][1] else None

    def add_sample(self, sample: Sample) -> None:
        self.samples.append(sample)

    def add_event(self, t_s: float, iteration: int) -> None:
        with self._lock:
            self.events.append((t_s, int(iteration)))

    @property
    def iteration(self) -> int:
        """Highest memory_iteration seen so far, from samples or events."""
        with self._lock:
            from_events = max((i for _, i in self.events), default=0)
        from_samples = max((s.iteration for s in self.samples[-3:]), default=0)
        return max(from_events, from_samples)

    @property
    def last_active(self) -> Sample | None:
        for s in reversed(self.samples):
            if s.active:
                return s
        return None

    def libvirt_offset_s(self, fallback: float) -> float:
        """Our clock minus libvirt's ``time_elapsed`` (s), the median over quick samples.

        libvirt takes the elapsed time when the call arrives; a call that then
        waits seconds for a busy QEMU monitor says nothing about the offset.
        """
        active = [s for s in self.samples if s.active]
        quick = [s for s in active if s.rpc_s <= 0.02] or active
        diffs = [s.t_s + s.rpc_s / 2 - s.stats["time_elapsed"] / 1000.0 for s in quick]
        return statistics.median(diffs) if diffs else fallback

    def event_times(self) -> dict[int, float]:
        """Earliest event time per iteration."""
        with self._lock:
            out: dict[int, float] = {}
            for t, i in self.events:
                out[i] = min(t, out.get(i, math.inf))
            return out

    # ------------------------------------------------------------- milestones
    def mirror_start_s(self, offset: float) -> float | None:
        """When the first disk mirror showed up in the job stats."""
        for s in self.samples:
            if s.active and s.mirror_started:
                return _time(s, offset)
        return None

    def ram_start_s(self, offset: float) -> float | None:
        """When RAM migration began (dirty-sync-count became 1)."""
        first_sample = next((_time(s, offset) for s in self.samples if s.active and s.iteration >= 1), None)
        ev = self.event_times().get(1)
        candidates = [t for t in (first_sample, ev) if t is not None]
        return min(candidates) if candidates else None


def _time(sample: Sample, offset: float) -> float:
    """A sample's time on our clock, from libvirt's elapsed time when it has one."""
    if "time_elapsed" in sample.stats:
        return offset + sample.stats["time_elapsed"] / 1000.0
    return sample.t_s


def _row_from_sample(sample: Sample, t: float, max_downtime_s: float) -> dict[str, Any]:
    st = sample.stats
    if sample.max_downtime_s is not None:
        max_downtime_s = sample.max_downtime_s
    bps = st.get("memory_bps")
    row: dict[str, Any] = {
        "memory_iteration": sample.iteration,
        "time_elapsed_s": t,
        "memory_processed": st.get("memory_processed"),
        "memory_remaining": st.get("memory_remaining"),
        "memory_dirty_rate": st.get("memory_dirty_rate"),
        "memory_bps": bps,
        "disk_processed": st.get("disk_processed", 0),
        "disk_remaining": st.get("disk_remaining", 0),
        "downtime_expected_s": st["downtime"] / 1000.0 if "downtime" in st else None,
        "threshold_bytes": bps * max_downtime_s if bps is not None else None,
        "throttle": st.get("auto_converge_throttle", 0) / 100.0,
        "max_downtime_s": max_downtime_s,
        "xbzrle_pages": None,  # libvirt reports compression_pages cumulatively; per-period not derived yet
        "_sample_t_s": t,  # when these counters were read (row time may be the earlier event)
    }
    return row


def _interpolate(t: float, t0: float, v0: float | None, t1: float, v1: float | None) -> float | None:
    if v0 is None or v1 is None:
        return None
    if t1 <= t0:
        return v1
    return v0 + (v1 - v0) * min(max((t - t0) / (t1 - t0), 0.0), 1.0)


def build_rounds(
    monitor: JobMonitor,
    offset: float,
    *,
    end_s: float,
    completed: dict[str, Any] | None = None,
    stop_s: float | None = None,
) -> list[dict[str, Any]]:
    """The per-iteration rows, in the simulator's schema.

    ``end_s``: when the last period ended (destination running, or the abort).
    ``completed``: the completed job's stats; with it the final row is the
    stop-and-copy period (iteration = completed ``memory_iteration``) that began
    at ``stop_s`` (source paused), unless a sample already saw it.
    """
    events = monitor.event_times()
    firsts: dict[int, dict[str, Any]] = {}
    last_before: dict[int, Sample] = {}  # the last sample of each iteration
    for s in monitor.samples:
        if not s.active or s.iteration < 1:
            continue
        i = s.iteration
        last_before[i] = s
        if i not in firsts:
            t = _time(s, offset)
            ev = events.get(i)
            row = _row_from_sample(s, t, monitor.max_downtime_s)
            if ev is not None and ev < t:
                row["time_elapsed_s"] = ev
            firsts[i] = row
        elif firsts[i]["memory_bps"] is None and s.stats.get("memory_bps"):
            # QEMU measures bandwidth only after its first 100 ms window: take the first figure.
            firsts[i]["memory_bps"] = bps = s.stats["memory_bps"]
            firsts[i]["threshold_bytes"] = bps * firsts[i]["max_downtime_s"]
    final_n = int(completed.get("memory_iteration") or 0) if completed else 0
    seen_max = max(list(firsts) + list(events) + [final_n], default=0)
    rows: list[dict[str, Any]] = []
    for i in range(1, seen_max + 1):
        if i in firsts:
            rows.append(firsts[i])
            continue
        if completed and i == final_n:
            rows.append(_final_row(monitor, completed, i, stop_s if stop_s is not None else end_s,
                                   events.get(i), last_before))
            continue
        rows.append(_missed_row(monitor, i, events.get(i), rows, firsts, offset,
                                stop_s if completed and stop_s is not None else end_s))
    # A row's time is when we first saw its iteration (a poll's answer, an event's delivery): no later
    # than that, but the next iteration's start bounds it too. Two syncs can come a millisecond or less
    # apart (the validation campaigns' MIGRATION_PASS events, on QEMU 7.2 and 10), so a poll answered
    # just after the second sync's event may be the first to show the iteration between them: that
    # iteration then starts no later than the next one.
    for row, nxt in zip(reversed(rows[:-1]), reversed(rows[1:])):
        row["time_elapsed_s"] = min(row["time_elapsed_s"], nxt["time_elapsed_s"])
    # Close each period with the start of the next one.
    for row, nxt in zip(rows, rows[1:]):
        row["duration_s"] = nxt["time_elapsed_s"] - row["time_elapsed_s"]
        row["sent_bytes"] = _diff(nxt["memory_processed"], row["memory_processed"])
    if rows:
        last = rows[-1]
        last["duration_s"] = max(end_s - last["time_elapsed_s"], 0.0)
        if completed:
            last["sent_bytes"] = _diff(completed.get("memory_processed"), last["memory_processed"])
        else:
            tail = monitor.last_active
            last["sent_bytes"] = _diff(tail.stats.get("memory_processed") if tail else None,
                                       last["memory_processed"])
    # Pages the sync that opened each period found newly dirtied (estimate: what the
    # bitmap held at the period's start minus what the last sample of the previous
    # period saw left, plus what was sent in between).
    for row in rows:
        i = row["memory_iteration"]
        prev = last_before.get(i - 1)
        row["dirtied_bytes"] = 0.0 if i == 1 else None
        if prev is not None and row.get("memory_remaining") is not None and not row.get("_estimated"):
            rem0, proc0 = prev.stats.get("memory_remaining"), prev.stats.get("memory_processed")
            if rem0 is not None and proc0 is not None and row["memory_processed"] is not None:
                row["dirtied_bytes"] = max(row["memory_remaining"] - rem0 + (row["memory_processed"] - proc0), 0)
        row.setdefault("duration_s", 0.0)
        row.setdefault("sent_bytes", 0.0)
    return rows


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _missed_row(monitor: JobMonitor, i: int, event_t: float | None, rows: list[dict[str, Any]],
                firsts: dict[int, dict[str, Any]], offset: float, end_s: float) -> dict[str, Any]:
    """An iteration no sample saw: time from its event (or between its neighbours), counters interpolated."""
    before = rows[-1] if rows else None
    after = next((firsts[k] for k in sorted(firsts) if k > i), None)
    t_before = before["time_elapsed_s"] if before else offset
    t_after = after["time_elapsed_s"] if after else end_s
    t = event_t if event_t is not None else (t_before + t_after) / 2
    row: dict[str, Any] = {
        "memory_iteration": i, "time_elapsed_s": t, "memory_remaining": None, "memory_dirty_rate": None,
        "downtime_expected_s": None, "max_downtime_s": monitor.max_downtime_s, "throttle": None,
        "_estimated": True,
    }
    for key in ("memory_processed", "disk_processed", "disk_remaining"):
        row[key] = _interpolate(t, t_before, before.get(key) if before else None,
                                t_after, after.get(key) if after else None) if before and after else (
            before.get(key) if before else None)
    row["memory_bps"] = before.get("memory_bps") if before else None
    row["threshold_bytes"] = (row["memory_bps"] * monitor.max_downtime_s if row["memory_bps"] is not None
                              else None)
    return row


def _final_row(monitor: JobMonitor, completed: dict[str, Any], i: int, stop_s: float,
               event_t: float | None, last_before: dict[int, Sample]) -> dict[str, Any]:
    """The stop-and-copy period, from the completed stats and the last sample before the stop.

    libvirt does not report what the final bitmap sync found; ``memory_remaining`` is
    estimated as the wire bytes sent after the last sample (an upper bound: it also holds
    the device state and the tail of the previous pass).
    """
    tail = last_before[max(last_before)] if last_before else None
    processed = tail.stats.get("memory_processed") if tail else None
    total = completed.get("memory_processed")
    bps = completed.get("memory_bps")
    return {
        "memory_iteration": i,
        "time_elapsed_s": event_t if event_t is not None and event_t >= stop_s - 0.05 else stop_s,
        "memory_processed": processed,
        "memory_remaining": _diff(total, processed),
        "memory_dirty_rate": completed.get("memory_dirty_rate"),
        "memory_bps": bps,
        "disk_processed": completed.get("disk_processed", 0),
        "disk_remaining": completed.get("disk_remaining", 0),
        "downtime_expected_s": None,
        "threshold_bytes": bps * monitor.max_downtime_s if bps is not None else None,
        "throttle": completed.get("auto_converge_throttle", 0) / 100.0,
        "max_downtime_s": monitor.max_downtime_s,
        "_estimated": True,
    }


def phase_of(sample: Sample, *, has_disks: bool) -> str:
    """The simulator's phase names: prepare | mirror | precopy | switchover."""
    if not sample.active:
        return "prepare"
    if sample.iteration < 1:
        return "mirror" if has_disks and sample.mirror_started else "prepare"
    if sample.paused:
        return "switchover"
    return "precopy"


def build_timeline(monitor: JobMonitor, offset: float, *, has_disks: bool, end_s: float, end_phase: str,
                   completed: dict[str, Any] | None = None) -> list[TimelinePoint]:
    """One point per sample, framed by t=0 ('prepare') and the end point."""
    out = [PREPARED]
    last: Sample | None = None
    for s in monitor.samples:
        if not s.active:
            continue
        st = s.stats
        started = s.iteration >= 1
        out.append(TimelinePoint(
            time_s=min(_time(s, offset), end_s),  # libvirt's clock mapped onto ours can overshoot the end a little
            phase=phase_of(s, has_disks=has_disks), memory_iteration=s.iteration,
            memory_remaining=st.get("memory_remaining") if started else None,
            memory_processed=st.get("memory_processed") if started else None,
            disk_remaining=st.get("disk_remaining"), disk_processed=st.get("disk_processed"),
        ))
        last = s
    src = completed or (last.stats if last else {})
    if src:
        done = bool(completed)
        out.append(TimelinePoint(end_s, end_phase, int(src.get("memory_iteration") or 0),
                                 0 if done else src.get("memory_remaining"), src.get("memory_processed"),
                                 0 if done else src.get("disk_remaining"), src.get("disk_processed")))
    out.sort(key=lambda p: p.time_s)
    return out
