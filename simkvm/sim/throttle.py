"""QEMU's dirty-pages-rate and what auto-converge or dirty-limit does with it.

migration_bitmap_sync() accumulates the pages each sync newly set in the
bitmap (a page still pending counts once: cpu_physical_memory_sync_dirty_bitmap)
and, once more than 1000 ms passed on the millisecond clock, recomputes
``dirty-pages-rate`` and calls migration_trigger_throttle(): every 2nd such
period whose dirtying exceeds the trigger share of what was sent, the vCPUs
are throttled one step more (mig_throttle_guest_down), or their dirty rate
capped (dirty-limit).
"""
from __future__ import annotations

import simpy

from ..model.plan import Plan
from .guest import Guest
from .recorder import Recorder


class Throttle:
    """The dirty-rate period and the throttle steps of one migration."""

    def __init__(self, env: simpy.Environment, plan: Plan, guest: Guest, rec: Recorder) -> None:
        self.env = env
        self.plan = plan
        self.guest = guest
        self.rec = rec
        self.dirty_rate_pps = 0.0  # QEMU's dirty-pages-rate (recomputed at syncs >= 1 s apart)
        self.period_start_s = 0.0
        self.period_pages = 0.0  # pages newly dirtied in this period
        self.bytes_xfer_prev = 0.0  # RAM sent when the period began
        self.high_count = 0  # periods in a row whose dirtying exceeded the trigger share

    def synced(self, new_pages: float, ram_sent: float, in_postcopy: bool) -> None:
        """migration_bitmap_sync()'s tail: count the sync's new pages; at the end of a period (more than
        1000 ms on the millisecond clock), maybe throttle, then recompute the rate."""
        now = self.env.now
        self.period_pages += new_pages
        if round(now * 1000) - round(self.period_start_s * 1000) > 1000:
            self.trigger(ram_sent, in_postcopy)
            self.dirty_rate_pps = self.period_pages / (now - self.period_start_s)
            self.period_start_s = now
            self.period_pages = 0.0
            self.bytes_xfer_prev = ram_sent

    def trigger(self, ram_sent: float, in_postcopy: bool) -> None:
        """migration_trigger_throttle(): every 2nd period whose dirtying exceeds the trigger share
        of what was sent, throttle the vCPUs one step more (or cap their dirty rate)."""
        aids = self.plan.aids
        ac, dl = aids.auto_converge, aids.dirty_limit
        if not (ac.enabled or dl.enabled) or in_postcopy:
            return
        sent = ram_sent - self.bytes_xfer_prev
        dirtied = self.period_pages * self.plan.vm.page_size_bytes
        if dirtied > sent * ac.trigger_threshold_frac:
            self.high_count += 1
            if self.high_count >= 2:
                self.high_count = 0
                if dl.enabled:  # dirty-limit replaces CPU throttling when both are on
                    nominal = self.guest.nominal_page_writes_per_s * self.plan.vm.page_size_bytes
                    cap = self.plan.vm.vcpus * dl.vcpu_rate_Bps
                    share = min(1.0, cap / nominal) if nominal > 0 else 1.0
                    if share != self.guest.dirty_share:
                        self.guest.set_dirty_share(share)
                        self.rec.action(self.env.now, "throttle", 1.0 - share)
                    return
                now_t = self.guest.throttle
                new = ac.initial_frac if now_t == 0 else round(min(now_t + ac.increment_frac, ac.max_frac), 9)
                if new != self.guest.throttle:
                    self.guest.set_throttle(new)
                    self.rec.action(self.env.now, "throttle", new)
