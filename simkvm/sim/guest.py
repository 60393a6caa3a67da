"""How the guest dirties memory and disk: the dirty log the migration reads at each sync.

The guest is a SimPy process that only wakes when its behaviour changes
(workload phases, throttle, pause). Between those events it accumulates
*exposure*: effective seconds of writing at its nominal rate. What a bitmap
sync collects is then a closed form of the exposure, counting *unique* pages,
because writing the same page twice between two syncs dirties it once:

* uniform random writes of ``w`` pages/s over ``W`` pages:
  ``W (1 - exp(-w tau / W))`` unique pages after ``tau`` seconds;
* a sequential sweep: ``min(W, w tau)``, the stretch of its cycle after the
  one it wrote before (:class:`Sweep`);
* a measured curve (calc-dirty-rate at several periods): interpolated.

That is what makes the simulator's cost independent of the number of pages.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import simpy

from ..model.plan import Plan

HOT_PERIOD_S = 0.01  # how often the OS's hot pages are rewritten: dirty again within any round
#: Parts a sequential working set is tracked in, in the order the guest writes them: the bitmap
#: keeps each part's pending pages apart, so a sync knows which part the sweep wrote. Within a part
#: the merge takes the stretch and the pending pages as independent, so a part must be short next
#: to what the sweep writes between two syncs (a tail syncs every 100 ms window): with 16 parts a
#: 46 MiB/s sweep over 80 MiB wrote about one part per window and each sync counted ~1/6 of the
#: stretch as already pending (campaign q10's q-24: 4.0 MB new per window predicted, 4.84 MB
#: measured, all it wrote; 18 iterations predicted, 23 measured; 21 with 64 parts).
SWEEP_PARTS = 64


def _uniform(pages: float, writes_per_s: float) -> Callable[[float], float]:
    if pages <= 0 or writes_per_s <= 0:
        return lambda tau: 0.0
    k = writes_per_s / pages
    return lambda tau: pages * -math.expm1(-k * tau)


def _sequential(pages: float, writes_per_s: float) -> Callable[[float], float]:
    return lambda tau: min(pages, writes_per_s * tau)


class Writer:
    """One dirty set's writes as the bitmap sees them: unique pages per bitmap component."""

    parts = 1

    def __init__(self, unique: Callable[[float], float]) -> None:
        self.unique = unique  # unique pages after tau effective seconds (no side effect)

    def collect(self, tau: float) -> list[float]:
        return [self.unique(tau)]


class Sweep(Writer):
    """A sequential writer: ``rate`` pages/s in a fixed cycle over ``pages``, from where it left off.

    What it wrote since the last sync is the next stretch of its cycle, so the pages it
    wrote before, still pending in the bitmap until the walk sends them, are not hit
    again until it comes round: a sync's new dirt is the stretch, not a random draw of
    the set (which would count every pending page of the set as possibly rewritten).
    The cycle is tracked in :data:`SWEEP_PARTS` parts, each a bitmap component placed
    like the set (which page of the cycle sits where in RAM is not known).
    """

    def __init__(self, pages: float, rate: float, parts: int = SWEEP_PARTS) -> None:
        super().__init__(_sequential(pages, rate))
        self.pages, self.rate, self.parts = pages, rate, parts
        self.position = 0.0  # pages into the cycle

    def collect(self, tau: float) -> list[float]:
        out = [0.0] * self.parts
        part = self.pages / self.parts
        written = self.unique(tau)
        if self.pages <= 0 or written <= 0:
            return out
        if written >= self.pages - 1e-9:
            out = [part] * self.parts
        else:
            start = self.position
            for a, b in ((start, min(start + written, self.pages)), (0.0, max(start + written - self.pages, 0.0))):
                if b <= a:
                    continue
                for k in range(int(a / part), min(int(math.ceil(b / part)), self.parts)):
                    out[k] += max(0.0, min(b, (k + 1) * part) - max(a, k * part))
        self.position = (self.position + self.rate * tau) % self.pages
        return out


def _curve(points: tuple[tuple[float, float], ...], page: float, cap_pages: float) -> Callable[[float], float]:
    """Piecewise-linear through (0, 0) and the measured points; past the last one it keeps the
    last slope (a curve that has saturated has slope ~0), never above the guest's memory."""
    t = np.array([0.0] + [p[0] for p in points])
    b = np.array([0.0] + [p[1] / page for p in points])
    last_slope = (b[-1] - b[-2]) / (t[-1] - t[-2])

    def unique(tau: float) -> float:
        if tau <= t[-1]:
            return float(np.interp(tau, t, b))
        return min(cap_pages, float(b[-1] + last_slope * (tau - t[-1])))

    return unique


class Guest:
    """The VM's workload, as its own SimPy process (phases) plus a dirty log."""

    def __init__(self, env: simpy.Environment, plan: Plan) -> None:
        self.env = env
        page = plan.vm.page_size_bytes
        factor = plan.host.dirty_rate_factor
        mem = plan.workload.memory
        self.page_bytes = page
        # One writer per dirty set; one entry per bitmap component (a set, or a part of a
        # sequential one): its size in pages and its nominal page-write rate (pages/s).
        self.writers: list[Writer] = []
        self.set_pages: list[float] = []
        self.set_rate: list[float] = []
        if mem.model == "curve":
            cap = plan.vm.memory_bytes / page
            w = mem.points[-1][1] / page
            self._add(Writer(_curve(tuple((t * 1.0, b * factor) for t, b in mem.points), page, cap)),
                      max(w, 1.0), mem.points[0][1] / page / mem.points[0][0] * factor)
        else:
            for s in mem.dirty_sets():
                pages = s.wss_bytes / page
                rate = s.dirty_rate_Bps / page * factor
                self._add(Writer(_uniform(pages, rate)) if s.pattern == "uniform" else Sweep(pages, rate), pages, rate)
        # The OS's own dirtying, not scaled by phases: the sets after the workload's.
        os_sets: list[tuple[float, float]] = []  # (pages, page writes/s)
        if plan.vm.background_dirty_rate_Bps > 0:
            os_sets.append((plan.vm.background_wss_bytes / page, plan.vm.background_dirty_rate_Bps / page * factor))
        if plan.vm.background_hot_bytes > 0:  # rewritten every HOT_PERIOD_S: all dirty at any sync
            hot = plan.vm.background_hot_bytes / page
            os_sets.append((hot, hot / HOT_PERIOD_S))
        for pages, rate in os_sets:
            self._add(Writer(_uniform(pages, rate)), pages, rate)
        self.os_sets = len(os_sets)
        self.phases = mem.phases
        self.scale = mem.phases[0].scale if mem.phases else 1.0
        self.throttle = 0.0  # auto-converge: share of the vCPUs' time taken away
        self.dirty_share = 1.0  # dirty-limit: share of the nominal dirty rate allowed
        self.cpu_demand = mem.cpu_demand_frac
        self.running = True
        self._mem_tau = 0.0  # effective seconds since the last memory collect
        self._disk_tau = 0.0  # effective seconds since the last disk collect
        self._last = 0.0
        self.cpu_lost_s = 0.0
        # Disk: io_size writes at write_rate over wss, tracked at mirror granularity (QEMU's
        # dirty bitmap of the mirror job: one bit per granule, set by any write into it).
        dsk = plan.workload.disk
        gran = plan.host.mirror_granularity_bytes
        self.granule_bytes = gran
        self.disk_sequential = dsk.pattern == "sequential"
        if dsk.write_rate_Bps > 0 and plan.migrated_disks:
            granules = (dsk.wss_bytes or 0.0) / gran
            if self.disk_sequential:
                # Consecutive writes fill a granule before moving to the next one: the writer
                # dirties granules at its byte rate, whatever its write size.
                writes = dsk.write_rate_Bps / gran
                self._disk_unique = _sequential(granules, writes)
            else:
                # Each random write lands in a granule of its own (io_size > granule: several).
                writes = dsk.write_rate_Bps / dsk.io_size_bytes * max(1.0, dsk.io_size_bytes / gran)
                self._disk_unique = _uniform(granules, writes)
            self.disk_granules = granules
            self.disk_granule_writes_per_s = writes
        else:
            self.disk_granules = 0.0
            self.disk_granule_writes_per_s = 0.0
            self._disk_unique = lambda tau: 0.0
        self.process = env.process(self.run()) if len(self.phases) > 1 else None

    def _add(self, writer: Writer, pages: float, rate: float) -> None:
        self.writers.append(writer)
        self.set_pages += [pages / writer.parts] * writer.parts
        self.set_rate += [rate / writer.parts] * writer.parts

    # --------------------------------------------------------------- process
    def run(self):
        """Walk through the workload's phases; the last phase lasts until the end."""
        for phase, following in zip(self.phases, self.phases[1:]):
            yield self.env.timeout(phase.duration_s)
            self._settle()
            self.scale = following.scale

    def _settle(self) -> None:
        """Turn the time since the last change into exposure at the old speed."""
        now = self.env.now
        dt = now - self._last
        if dt > 0:
            if self.running:
                speed = min(1.0, (1.0 - self.throttle) / self.cpu_demand)
                self._mem_tau += dt * self.scale * speed * self.dirty_share
                self._disk_tau += dt * speed
                self.cpu_lost_s += dt * (self.throttle + (1.0 - self.dirty_share) * (1.0 - self.throttle))
            self._last = now

    # --------------------------------------------------------- what QEMU sees
    def collect_memory(self) -> list[float]:
        """KVM_GET_DIRTY_LOG: unique pages dirtied per set since the last collect; resets the log."""
        self._settle()
        tau, self._mem_tau = self._mem_tau, 0.0
        return [pages for w in self.writers for pages in w.collect(tau)]

    def peek_memory_pages(self) -> float:
        """Unique pages dirtied since the last collect, without resetting (expected downtime)."""
        self._settle()
        return sum(w.unique(self._mem_tau) for w in self.writers)

    def collect_disk_bytes(self, behind_sweep: bool = False) -> float:
        """The mirror's dirty bitmap: unique granule bytes written since the last collect.

        ``behind_sweep``: only granules written after the bulk pass's cursor (moving from the
        disk's start to its end during that time) had passed them; the bulk copies the rest.

        * A sequential writer's set is a stretch at the disk's start, where the testbed guest
          writes (just after its canary: simkvm/guest/workload.c, setup_disk/disk_writer) and
          where mirror_iteration() begins its walk of the bitmap: the cursor is past it almost
          at once, so all it wrote in the interval is behind (the pessimistic place).
        * Random writes keep the older assumption of granules spread evenly over the disk: a
          granule passed at fraction x of the interval is dirty if written in the remaining
          (1 - x); averaged over x, W (1 - (1 - e^-a) / a), a = k tau (k: writes per granule/s).
        """
        self._settle()
        tau, self._disk_tau = self._disk_tau, 0.0
        if not behind_sweep or self.disk_granules <= 0 or self.disk_sequential:
            return self._disk_unique(tau) * self.granule_bytes
        a = self.disk_granule_writes_per_s / self.disk_granules * tau
        if a <= 1e-12:
            return 0.0
        share = 1.0 - (-math.expm1(-a)) / a
        return self.disk_granules * share * self.granule_bytes

    def disk_unique_bytes(self, seconds: float) -> float:
        """Unique granule bytes an unthrottled guest writes in ``seconds`` (no side effect)."""
        return self._disk_unique(seconds) * self.granule_bytes

    @property
    def memory_speed(self) -> float:
        """How fast the guest dirties now, as a share of its nominal rate (throttle, dirty-limit)."""
        return min(1.0, (1.0 - self.throttle) / self.cpu_demand) * self.dirty_share

    def memory_unique_pages(self, seconds: float) -> float:
        """Unique pages dirtied in ``seconds`` as the guest runs now (for diagnosis; no side effect)."""
        return sum(w.unique(seconds * self.scale * self.memory_speed) for w in self.writers)

    @property
    def nominal_page_writes_per_s(self) -> float:
        return sum(self.set_rate) * self.scale

    # ------------------------------------------------------ what changes it
    def set_throttle(self, fraction: float) -> None:
        self._settle()
        self.throttle = fraction

    def set_dirty_share(self, share: float) -> None:
        """dirty-limit: the vCPUs are held to ``share`` of the guest's nominal dirty rate."""
        self._settle()
        self.dirty_share = share

    def pause(self) -> None:
        self._settle()
        self.running = False

    def resume(self) -> None:
        self._settle()
        self.running = True
