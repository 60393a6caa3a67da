"""The state one simulated migration shares between its processes.

QEMU keeps this in ``MigrationState`` and ``RAMState``: the dirty bitmap, the
counters libvirt reads as job stats, the knobs a controller can turn while
the job runs (downtime limit, bandwidth, throttle). Keeping it in one object
lets the RAM, mirror, switchover and controller processes read like the
algorithms they mirror. Three parts have modules of their own: the bitmap
and the walk (:mod:`.bitmap`), what a page costs on the wire and in CPU
(:mod:`.wire`, XBZRLE's cache included), the dirty-rate period and the
throttle steps (:mod:`.throttle`).
"""
from __future__ import annotations

import math
from typing import Any, Protocol

import simpy

from ..model.limits import MAX_ITERATIONS
from ..model.plan import Plan
from ..model.qemu import qemu
from .bitmap import DirtyBitmap
from .guest import Guest
from .recorder import Recorder
from .throttle import Throttle
from .wire import WireCost

WINDOW_S = 0.1  # BUFFER_DELAY: bandwidth is measured and the rate limit reset every 100 ms
ITERATE_MAX_S = 0.05  # ram_save_iterate() returns after 50 ms even if the budget is not spent


class SharedLink(Protocol):
    def share_Bps(self, run: "Run") -> float:
        """What the wire carries for ``run`` now (its max-min fair share of the link)."""


class SharedCpus(Protocol):
    def start_destination(self, run: "Run") -> Any:
        """Start the paused destination QEMU on its share of the machine's cores (a process body)."""


class Run:
    """Everything one simulated migration knows; times in s, sizes in bytes, rates in B/s."""

    def __init__(self, env: simpy.Environment, plan: Plan, *, reference: bool = False,
                 keep_timeline: bool = True, link: SharedLink | None = None,
                 cpus: SharedCpus | None = None) -> None:
        self.env = env
        self.plan = plan
        # None: the plan's own link, whole. A drain's shared link (simkvm.drain.links) instead gives
        # this migration its share of the source's NIC, which changes as other migrations come and go.
        self.link = link
        # None: the destination QEMU starts in host.start_destination. A drain's hosts' CPUs
        # (simkvm.drain.cpu) may give it less than a core while other starts and guests run.
        self.cpus = cpus
        # QEMU's bandwidth figure: what the RAM stream carried over the last 100 ms window. The
        # meter keeps (time, ram_sent) where the send rate changed, back to one window ago.
        self._meter: list[tuple[float, float]] = []
        # The rate limit's current 100 ms window (its index on the grid from the start of RAM
        # migration): whether the sender burst in it, how far ahead of the budget's pace it is
        # (wire bytes), and the bandwidth figure its checks compare with (see window_budget()).
        self._window_index = -1
        self._window_burst = False
        self._window_ahead = 0.0
        self._window_figure = 0.0
        self.reference = reference
        self.qemu = qemu(plan.host.qemu)  # whose migration loop: what changed since 7.2
        # QEMU >= 9.2 with auto-converge: a timer forces a bitmap sync when none came for 5 s.
        self.periodic_sync_s = self.qemu.periodic_sync_s if plan.aids.auto_converge.enabled else 0.0
        self.sync_requested: int | None = None  # the iteration a timer asked a sync in
        self.guest = Guest(env, plan)
        self.rec = Recorder(keep_timeline)
        self.page_bytes = plan.vm.page_size_bytes
        # The parts QEMU keeps in RAMState: the bitmap and the walk, what a page costs, the throttle.
        self.dirty_bitmap = DirtyBitmap()
        self.wire = WireCost(plan, self.qemu, self.guest)
        self.throttle = Throttle(env, plan, self.guest, self.rec)
        # Knobs a controller may turn during the job.
        self.max_downtime_s = plan.migration.max_downtime_s
        self.bandwidth_Bps = plan.link.bandwidth_Bps  # QEMU max-bandwidth (libvirt's bandwidth)
        self.deadline_s = plan.max_time_s
        # 0 (no limit, as in QEMU): the simulator still stops, so a prediction always ends
        self.max_iterations = plan.max_iterations or MAX_ITERATIONS
        self.aids = plan.aids
        # Requests a controller (policy) or an after-N-iterations rule makes.
        self.postcopy_requested = False
        self.postcopy_pages = 0.0  # pages the destination faulted in over the network (post-copy)
        self.postcopy_degradation_s = 0.0  # guest time spent waiting on those faults
        self.abort_requested = False
        self.paused_s = math.nan  # when the guest was suspended (pause aid), if it was
        self.in_postcopy = False
        self.has_controller = False
        # Counters (libvirt job stats).
        self.phase = "prepare"
        self.iteration = 0  # dirty-sync-count
        self.ram_sent = 0.0  # wire bytes
        self.zero_pages = 0.0
        self.normal_pages = 0.0
        self.disk_processed = 0.0
        self.disk_total = sum(d.size_bytes for d in plan.migrated_disks)
        self.disk_wire = 0.0
        self.disk_background = 0.0  # mirror traffic for guest writes after the mirror became ready
        self.mirror_bg_Bps = 0.0  # background mirror traffic while RAM migrates
        self._mirror_follow_s = 0.0
        self.ram_start_s = 0.0
        self.setup_done_s = 0.0
        self.mirror_ready_s = 0.0
        self.stop_s = math.nan
        self.resume_s = math.nan
        # The send in flight (for snapshots between events).
        self._sending_since = 0.0
        self._sending_pages_per_s = 0.0
        self._disk_since = 0.0
        self._disk_rate = 0.0
        self.ended: str | None = None  # why the job stopped early (abort reason key)
        self.wakeup: simpy.Event | None = None  # set by a controller to interrupt a long send

    # ------------------------------------------------------------- bitmap
    @property
    def pending_pages(self) -> float:
        return self.dirty_bitmap.pending_pages

    @property
    def pending_bytes(self) -> float:
        return self.pending_pages * self.page_bytes

    def init_bitmap(self) -> None:
        """ram_list_init_bitmaps(): every page starts dirty; the walk starts at the bottom of RAM."""
        self.dirty_bitmap.init(self.plan.vm, self.page_bytes, self.guest.set_pages, self.guest.os_sets)

    # ---------------------------------------------------------- transfer
    def segment_pages(self) -> float:
        """Pages left in the slice the walk is in: they go at one per-page cost."""
        return sum(self.dirty_bitmap.row()) if self.dirty_bitmap.cells else 0.0

    def wire_bytes_per_page(self) -> float:
        """Average bytes on the wire for the pages the walk sends now (zero pages: a header)."""
        if not self.dirty_bitmap.cells:
            return self.wire.normal_page_cost()
        return self.wire.per_page(self.dirty_bitmap.row())

    def wire_bytes_all_pending(self) -> float:
        """Average wire bytes per page over everything pending (the stop-and-copy sends it all)."""
        if not self.dirty_bitmap.cells:
            return self.wire.normal_page_cost()
        return self.wire.per_page(self.dirty_bitmap.totals)

    def capacity_Bps(self) -> float:
        """What the wire carries for this migration now: the plan's link, or its share of a shared one."""
        return self.plan.capacity_Bps if self.link is None else self.link.share_Bps(self)

    def link_capacity_Bps(self) -> float:
        return max(self.capacity_Bps() - self.mirror_bg_Bps, 1e-9)

    def send_rate(self) -> tuple[float, float, float]:
        """(pages/s, wire bytes/s, seconds between checks) for ram_save_iterate() now.

        The sender is limited by max-bandwidth (budget per 100 ms window, then it
        sleeps to the window's end: checks every 100 ms), or else by the link and
        the migration thread's per-page CPU cost (ram_save_iterate returns every 50 ms).
        """
        c = self.wire_bytes_per_page()
        unlimited = self.wire.unlimited_pages_per_s(c, self.link_capacity_Bps(), self.dirty_bitmap.zero_share())
        if self.bandwidth_Bps / c <= unlimited:
            # the budget binds; QEMU >= 8.2 overshoots it by half a flush a window, up to what the link carries
            limited = min((self.bandwidth_Bps + self.rate_limit_overshoot_Bps()) / c, unlimited)
            return limited, limited * c, WINDOW_S
        return unlimited, unlimited * c, ITERATE_MAX_S

    def rate_limit_overshoot_Bps(self) -> float:
        """What a rate-limited window carries beyond max-bandwidth's budget, per second: from QEMU 8.2
        the limit counts only flushed bytes, so a window ends at the flush that crosses its budget,
        half a flush past it on average (simkvm/model/qemu.py). multifd's channels count their
        bytes per packet instead, which is not modelled (0 here)."""
        if not self.qemu.rate_limit_counts_flushed or self.aids.multifd.enabled or not self.dirty_bitmap.cells:
            return 0.0
        return self.wire.flush_bytes(self.dirty_bitmap.zero_share()) / 2 / WINDOW_S

    def burst_pages_per_s(self) -> float:
        """Pages/s for the slice the walk is in without the rate limit: a window's burst."""
        return self.wire.unlimited_pages_per_s(self.wire_bytes_per_page(), self.link_capacity_Bps(),
                                               self.dirty_bitmap.zero_share())

    def meter(self) -> None:
        """Note what the RAM stream has carried so far (called where the send rate may change)."""
        now, points = self.env.now, self._meter
        if points and points[-1][0] == now:
            points[-1] = (now, self.ram_sent)
        else:
            points.append((now, self.ram_sent))
        while len(points) > 2 and points[1][0] <= now - WINDOW_S:
            del points[0]

    def bandwidth_estimate_Bps(self, bandwidth_Bps: float) -> float:
        """QEMU's bandwidth figure behind threshold_size and expected-downtime.

        migration_update_counters() divides the bytes the migration stream carried since the
        window began by the window's length, once >= 100 ms have passed (BUFFER_DELAY); the
        count is the RAM stream's (QEMUFile + multifd), not the disk mirror's NBD connection.
        So after the walk crosses from zero pages (a header each, CPU-bound) into normal ones,
        or after a rate change, the figure still shows the last window's mix. Before a full
        window has passed it is the rate being sent (``bandwidth_Bps``).
        """
        now, points = self.env.now, self._meter
        since = now - WINDOW_S
        if not points or points[0][0] > since + 1e-12:
            return bandwidth_Bps
        sent_then = points[0][1]
        for (t0, b0), (t1, b1) in zip(points, points[1:]):
            if t1 >= since:
                sent_then = b0 + (b1 - b0) * (since - t0) / (t1 - t0) if t1 > t0 else b1
                break
        else:
            sent_then = points[-1][1]
        return (self.ram_sent - sent_then) / WINDOW_S

    def meter_pause(self, seconds: float) -> None:
        """A pause the bandwidth figure does not see: under max-bandwidth QEMU sends each 100 ms
        window's byte budget whatever a sync took of it (migration_rate_limit sleeps only what is
        left), while the simulator sends at the budget's pace: its figure must skip the pause."""
        self._meter = [(t + seconds, b) for t, b in self._meter]

    def window_budget(self, rate_Bps: float) -> tuple[float, float]:
        """(wire bytes the current rate-limited window may still send, seconds to its end).

        QEMU's rate limit is a byte budget per 100 ms window, not a pace: ram_save_iterate()
        sends at the wire's (and the migration thread's) speed until qemu_file_rate_limit()
        says the budget is spent, then migration_rate_limit() sleeps to the window's end
        (migration.c, QEMU 7.2 and 10.0 alike; from 8.2 the budget is seen spent only at a flush,
        rate_limit_overshoot_Bps()). The simulator sends at the budget's pace,
        which leaves the same pending at every window's start; what it sent ahead of that pace
        in bursts (burst_sent()) is taken off the budget."""
        k = math.floor((self.env.now - self.ram_start_s) / WINDOW_S + 1e-9)
        if k != self._window_index:
            self._window_index, self._window_burst, self._window_ahead = k, False, 0.0
        left_s = max(self.ram_start_s + (k + 1) * WINDOW_S - self.env.now, 0.0)
        return rate_Bps * left_s - self._window_ahead, left_s

    @property
    def window_burst(self) -> bool:
        """The sender burst in the current window: it keeps to the budget left until the window's end."""
        k = math.floor((self.env.now - self.ram_start_s) / WINDOW_S + 1e-9)
        return self._window_burst and k == self._window_index

    def burst_sent(self, wire_bytes: float, seconds: float, rate_Bps: float, figure_Bps: float | None = None) -> None:
        """Account a send of ``wire_bytes`` over ``seconds`` in this window against its budget (paced at
        ``rate_Bps``). ``figure_Bps``: a burst begins; the bandwidth figure the window's checks use."""
        if figure_Bps is not None:
            if not self.window_burst:
                self._window_figure = figure_Bps
            self._window_burst = True
        self._window_ahead += wire_bytes - rate_Bps * seconds

    def window_figure_Bps(self, bandwidth_Bps: float) -> float:
        """The bandwidth figure behind a check: within a window the sender burst in, the one it had at
        the burst (migration_update_counters() sets threshold_size only once a window has passed;
        the simulator's sliding figure would count the burst in the middle of the window)."""
        return self._window_figure if self.window_burst else bandwidth_Bps

    def meter_peak_Bps(self) -> float:
        """The fastest rate sent within the last window (0 when nothing was): while it is at most
        the rate sent now, QEMU's figure can only rise toward that rate."""
        points, since = self._meter, self.env.now - WINDOW_S
        return max(((b1 - b0) / (t1 - t0) for (t0, b0), (t1, b1) in zip(points, points[1:])
                    if t1 > since and t1 > t0), default=0.0)

    def threshold_bytes(self, bandwidth_Bps: float) -> float:
        """threshold_size = bandwidth x downtime limit (avail-switchover-bandwidth overrides)."""
        bw = self.plan.migration.avail_switchover_bandwidth_Bps or bandwidth_Bps
        return bw * self.max_downtime_s

    def send_pages(self, pages: float) -> None:
        """Send ``pages`` in walk order: evenly from the slice the walk is in, then the next ones."""
        bitmap = self.dirty_bitmap
        while pages > 1e-12 and bitmap.cells:
            row = bitmap.row()
            here = sum(row)
            if here <= 1e-9:
                break  # nothing pending anywhere
            c = self.wire.per_page(row)
            take = min(pages, here)
            if here - take < 1e-6:
                take = here  # a millionth of a page left over is float dust: leaving it pending would
                # make the walk chase slivers the clock cannot resolve (sends of ~1e-16 s)
            zero_sent = bitmap.clear(row, take / here)
            pages -= take
            self.ram_sent += take * c
            self.zero_pages += zero_sent
            self.normal_pages += take - zero_sent
            self.wire.sent(take - zero_sent)

    def pause_guest(self) -> None:
        """Suspend the guest (libvirt suspend): no more dirtying; the downtime starts now."""
        if self.guest.running:
            self.guest.pause()
            self.paused_s = self.env.now
            self.rec.action(self.env.now, "pause")

    # ------------------------------------------------------- in flight
    @property
    def wakeable(self) -> bool:
        """A controller or a shared link may change the rates mid-send: long sends can be cut short."""
        return self.has_controller or self.link is not None or bool(self.periodic_sync_s)

    def wake(self) -> None:
        """Cut the send in flight short: the process accounts what was sent and looks again."""
        if self.wakeup is not None and not self.wakeup.triggered:
            self.wakeup.succeed()

    def rate_changed(self) -> None:
        """The link share or max-bandwidth changed: re-rate the send in flight now; QEMU's bandwidth
        figure (and so its threshold) follows in the next 100 ms window, when we look again."""
        self.env.timeout(WINDOW_S).callbacks.append(lambda _event: self.wake())
        self.wake()

    def sending(self, pages_per_s: float) -> None:
        self._sending_since = self.env.now
        self._sending_pages_per_s = pages_per_s

    def wait(self, seconds: float):
        """Sleep ``seconds``, or less if a controller wakes us; returns the time slept."""
        start = self.env.now
        if self.wakeable:
            self.wakeup = self.env.event()
            yield self.env.timeout(seconds) | self.wakeup
        else:
            yield self.env.timeout(seconds)
        return self.env.now - start

    def disk_copying(self, rate_Bps: float) -> None:
        self._disk_since = self.env.now
        self._disk_rate = rate_Bps

    def disk_remaining_now(self) -> float:
        flying = self._disk_rate * (self.env.now - self._disk_since)
        return max(self.disk_total - self.disk_processed - flying, 0.0)

    def pending_now_bytes(self) -> float:
        """Pending bytes at this instant, counting the send in flight (for controllers)."""
        flying = self._sending_pages_per_s * (self.env.now - self._sending_since)
        return max(self.pending_pages - flying, 0.0) * self.page_bytes

    def sync_cost_s(self) -> float:
        return self.plan.host.sync_s_per_GiB * self.plan.vm.memory_bytes / 2**30

    def bitmap_sync(self) -> float:
        """migration_bitmap_sync(): add what the guest dirtied since the last sync; returns new pages."""
        self.point()  # the bitmap just before the sync: the timeline shows the saw-tooth
        new_pages = self.dirty_bitmap.merge(self.guest.collect_memory(), self.guest.set_pages)
        self.iteration += 1
        self.wire.synced()
        self.throttle.synced(new_pages, self.ram_sent, self.in_postcopy)
        return new_pages

    # ------------------------------------------------------------ record
    def follow_disk_writes(self) -> None:
        """The ready mirror copies new guest writes in the background while RAM migrates."""
        now = self.env.now
        if self.mirror_bg_Bps > 0 and now > self._mirror_follow_s:
            copied = self.mirror_bg_Bps * (now - self._mirror_follow_s)
            self.disk_background += copied  # libvirt's disk_processed stops counting once RAM starts
            self.disk_wire += copied
        self._mirror_follow_s = now

    def record_round(self, dirtied_pages: float, bandwidth_Bps: float) -> None:
        self.follow_disk_writes()
        remaining = self.pending_bytes
        self.rec.round_started(
            memory_iteration=self.iteration,
            time_elapsed_s=self.env.now,
            memory_processed=self.ram_sent,
            memory_remaining=remaining,
            memory_dirty_rate=self.throttle.dirty_rate_pps,
            memory_bps=bandwidth_Bps,
            disk_processed=self.disk_processed,
            disk_remaining=max(self.disk_total - self.disk_processed, 0.0),
            downtime_expected_s=remaining / bandwidth_Bps if bandwidth_Bps > 0 else math.inf,
            threshold_bytes=self.threshold_bytes(bandwidth_Bps),
            dirtied_bytes=dirtied_pages * self.page_bytes,
            throttle=self.guest.throttle,
            max_downtime_s=self.max_downtime_s,
            xbzrle_pages=0.0,
        )
        if len(self.rec.rounds) >= 2:
            self.rec.rounds[-2]["xbzrle_pages"] = self.wire.xbzrle_round_pages
        self.wire.xbzrle_round_pages = 0.0
        self.point()

    def point(self, phase: str | None = None) -> None:
        self.rec.point(self.env.now, phase or self.phase, self.iteration, self.pending_bytes, self.ram_sent,
                       max(self.disk_total - self.disk_processed, 0.0), self.disk_processed)
