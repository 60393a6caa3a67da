"""What one page costs the migration: bytes on the wire and the migration thread's CPU.

A normal page is its bytes plus a header (save_normal_page); a zero page only
a header (save_zero_page); multifd compression sends it compressed; once the
first pass is complete, XBZRLE sends a re-dirtied page still in its cache as
a delta (save_xbzrle_page). The CPU per page is the walk and the zero check,
XBZRLE's encoding, spread over multifd's channels where QEMU does that work
in them.
"""
from __future__ import annotations

from ..model.plan import Plan
from ..model.qemu import Qemu
from .guest import Guest

QEMUFILE_IOVS = 64  # migration/qemu-file.c MAX_IOV_SIZE (IOV_MAX is larger on Linux)
QEMUFILE_BUF_BYTES = 32768  # migration/qemu-file.c IO_BUF_SIZE


class WireCost:
    """Per-page wire bytes and CPU for one migration, with XBZRLE's cache as it fills."""

    def __init__(self, plan: Plan, qemu: Qemu, guest: Guest) -> None:
        self.plan = plan
        self.aids = plan.aids
        self.qemu = qemu
        self.guest = guest
        self.page_bytes = plan.vm.page_size_bytes
        self.normal_page_wire = self.page_bytes + plan.host.page_header_bytes
        self.zero_page_wire = plan.host.zero_page_bytes
        # XBZRLE: enabled once the first pass is complete; caches pages it sends from then on.
        self.xbzrle_active = False
        self.xbzrle_cached_pages = 0.0
        self.xbzrle_cached_at_sync = 0.0  # a page hits only if cached in an earlier iteration
        self.xbzrle_pages = 0.0  # pages sent as deltas, in all
        self.xbzrle_round_pages = 0.0  # ... during the current iteration

    def xbzrle_hit_share(self) -> float:
        """Share of normal pages sent as XBZRLE deltas: re-dirtied pages still in the cache.

        The cache only holds pages sent after the first pass; a re-dirtied page hits if the
        cache can hold the working set it belongs to (QEMU's cache is indexed by page address).
        """
        if not self.xbzrle_active or self.xbzrle_cached_at_sync <= 0:
            return 0.0
        wss = sum(self.guest.set_pages) or 1.0
        cache = self.aids.xbzrle.cache_size_bytes / self.page_bytes
        return min(1.0, cache / wss, self.xbzrle_cached_at_sync / wss)

    def normal_page_cost(self) -> float:
        """Wire bytes of a normal (non-zero) page: compressed in multifd, delta under XBZRLE."""
        comp = self.aids.compression
        full = (self.page_bytes * comp.ratio + self.plan.host.page_header_bytes if comp.method != "none"
                else self.normal_page_wire)
        hit = self.xbzrle_hit_share()
        if hit:
            delta = self.plan.host.page_header_bytes + self.aids.xbzrle.delta_frac * self.page_bytes
            return hit * delta + (1 - hit) * full
        return full

    def per_page(self, row: list[float]) -> float:
        """Average wire bytes per page over the pending pages of a bitmap row (zero pages last)."""
        pending = sum(row)
        if pending <= 0:
            return self.normal_page_cost()
        z = row[-1] / pending
        return z * self.zero_page_wire + (1 - z) * self.normal_page_cost()

    def flush_bytes(self, zero: float) -> float:
        """Wire bytes the main channel carries between two flushes for pages of zero share ``zero``: the
        QEMUFile flushes once its MAX_IOV_SIZE iovecs are used, two per normal page (the header, copied into
        the file's buffer, and the page, queued in place by qemu_put_buffer_async()), the headers of
        the zero pages between them joining the next header's iovec (add_to_iovec() coalesces
        adjacent buffer bytes), or once the IO_BUF_SIZE buffer of headers is full (QEMU 10.0.2
        migration/qemu-file.c)."""
        if zero >= 1.0:
            return QEMUFILE_BUF_BYTES
        normal = QEMUFILE_IOVS / 2
        zeros = normal * zero / (1.0 - zero)
        headers = normal * self.plan.host.page_header_bytes + zeros * self.zero_page_wire
        share = min(1.0, QEMUFILE_BUF_BYTES / headers) if headers > 0 else 1.0
        return share * (normal * self.normal_page_cost() + zeros * self.zero_page_wire)

    def page_cpu_s(self, zero_share: float = 0.0) -> float:
        """Migration CPU per page: the walk and zero check, XBZRLE encoding, spread over multifd channels.

        With multifd, QEMU >= 9.0 finds zero pages in the channels' threads too
        (zero-page-detection=multifd); before, the migration thread checked every page
        itself and only normal pages went to the channels, so zero pages did not spread."""
        cost = self.plan.host.page_cost_s + (self.aids.xbzrle.encode_cost_s if self.xbzrle_active else 0.0)
        mf = self.aids.multifd
        if not mf.enabled:
            return cost
        if self.qemu.multifd_finds_zero_pages:
            return cost / mf.channels
        return zero_share * cost + (1 - zero_share) * cost / mf.channels

    def first_touch_s(self) -> float:
        """The destination's time to write a normal page it never had: ram_load_precopy() copies it
        into guest RAM (qemu_get_buffer(), QEMU 7.2 and 10.0), the first write to that memory, so the
        kernel allocates it then; guest RAM is madvised MADV_HUGEPAGE (ram_block_add()), and with THP's
        defrag=madvise the fault may compact memory for a huge page. A zero page costs nothing here:
        ram_handle_compressed() (7.2) / ram_handle_zero() (10.0) write only where the page does not
        already read as zero. multifd's receive threads write their pages in parallel."""
        mf = self.aids.multifd
        return self.plan.host.first_touch_s / (mf.channels if mf.enabled else 1)

    def unlimited_pages_per_s(self, c: float, capacity_Bps: float, zero_share: float = 0.0,
                              fresh_share: float = 0.0) -> float:
        """Pages/s without max-bandwidth: the link, the migration CPU, the destination's first writes
        (``fresh_share``: normal pages never sent before, per page sent), multifd and compressor ceilings."""
        rate = 1.0 / (c / capacity_Bps + self.page_cpu_s(zero_share) + fresh_share * self.first_touch_s())
        mf, comp = self.aids.multifd, self.aids.compression
        if mf.enabled and mf.channel_throughput_Bps:
            rate = min(rate, mf.channels * mf.channel_throughput_Bps / c)
        if comp.method != "none":
            rate = min(rate, mf.channels * comp.throughput_Bps / self.page_bytes)
        return rate

    def sent(self, normal_pages: float) -> None:
        """XBZRLE's cache after ``normal_pages`` went out: deltas counted, the pages cached."""
        if self.xbzrle_active:
            hits = normal_pages * self.xbzrle_hit_share()
            self.xbzrle_pages += hits
            self.xbzrle_round_pages += hits
            self.xbzrle_cached_pages += normal_pages

    def synced(self) -> None:
        """A bitmap sync: pages cached so far can hit from now on."""
        self.xbzrle_cached_at_sync = self.xbzrle_cached_pages
