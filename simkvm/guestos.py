"""What a Linux guest leaves zero that its own memory report counts as used.

Why this matters: QEMU sends a zero page as a header only, so the zero share of
RAM decides most of the first pass. The testbed guest (and any guest judged by
``/proc/meminfo``) counts ``MemTotal - MemAvailable`` as used, but
``MemAvailable`` (mm/show_mem.c ``si_mem_available``) subtracts the kernel's
free-page reserve, ``totalreserve_pages``: pages that are free, never written,
and so zero to QEMU's zero-page check.

That reserve grows with RAM. It is each zone's high watermark plus its largest
``lowmem_reserve`` (mm/page_alloc.c ``calculate_totalreserve_pages``); the
watermarks follow ``min_free_kbytes`` (``__setup_per_zone_wmarks``: high =
min + 2 x max(min / 4, 0.1 % of the zone)), and with transparent huge pages on
(Debian's kernels: ``CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS=y``) khugepaged raises
``min_free_kbytes`` to 11 pageblocks per zone, capped at 5 % of RAM
(mm/khugepaged.c ``set_recommended_min_free_kbytes``). Measured on the testbed
(Debian 6.1 kernel, memory dumped with QMP ``pmemsave``): a 256 MiB guest
reports 24.6 MiB used, a 1 GiB guest 100.5 MiB; QEMU saw 11 MiB and 80 MiB of
the reported non-zero memory as zero pages. This reserve accounts for 70 MiB of
the 1 GiB guest's; the 256 MiB guest has THP off (below) and a reserve of 3 MiB.

The raise happens only where THP is on, and the kernel leaves THP off on small guests:
hugepage_init() (mm/huge_memory.c) clears ``transparent_hugepage_flags`` and never starts
khugepaged when ``totalram_pages()`` is below 512 MiB (:func:`thp_enabled`). The testbed guest
switches between 576 MiB of RAM (THP never, min_free_kbytes 2891) and 584 MiB (always, 26320):
below it the reserve is a few MiB, not 5 % of RAM. Taking THP as always on had counted 12-35 MiB
of a small guest's non-zero memory as zero (normal pages 10-13 % short on the guests of 256-576 MiB
in campaigns v11-v13).

It also holds the rule behind a plan's ``vm.zero_fraction: auto`` (:func:`auto_zero_fraction`): the
zero share a planner writes when it does not know its guest's memory, resolved where a plan is
loaded (:func:`simkvm.load.plan_from_dict`) and used by the campaign report's blind plans.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

PAGE = 4096
PAGEBLOCK_PAGES = 512  # a 2 MiB pageblock of 4 KiB pages (x86-64, pageblock_order = HPAGE_PMD_ORDER)
MIGRATE_PCPTYPES = 3
DMA_BYTES = 16 * 2**20  # ZONE_DMA: the first 16 MiB
KERNEL_BYTES = 46 * 2**20  # RAM MemTotal never shows besides the page array (measured: Debian 6.1 guest)
MEMMAP_SHARE = 64 / 4096  # struct page per 4 KiB page: not in MemTotal either
LOWMEM_TOP_BYTES = 3.5 * 2**30  # QEMU's pc machine puts RAM above this above 4 GiB (ZONE_NORMAL)
LOWMEM_RESERVE_RATIO = 256  # sysctl_lowmem_reserve_ratio for ZONE_DMA and ZONE_DMA32
WATERMARK_SCALE = 10 / 10000  # watermark_scale_factor = 10
MiB = 2**20
THP_MIN_TOTALRAM_BYTES = 512 * MiB  # hugepage_init(): THP off below this much managed RAM (totalram_pages)
#: What the guest kernel frees after hugepage_init() runs (its init sections, the initramfs), measured
#: on the testbed (experiments/guest_thp.py, data/experiments/guest-thp/): THP off up to 576 MiB of RAM
#: (MemTotal 518.7 MiB), on from 584 MiB (526.7 MiB), so 7-15 MiB; 12 MiB puts the model's switch
#: (on its own MemTotal estimate, 3 MiB above the kernel's) between the same two sizes.
INIT_FREED_BYTES = 12 * MiB
#: ``vm.zero_fraction: auto``: half of RAM at most (issue 11's planner who does not know its guest).
AUTO_ZERO_FRACTION_MAX = 0.5


def _zone_pages(memory_bytes: float) -> list[float]:
    """Pages in ZONE_DMA, ZONE_DMA32 and ZONE_NORMAL: what the kernel manages (MemTotal), RAM less
    its page array and its own image (in ZONE_DMA32)."""
    lowmem = min(memory_bytes, LOWMEM_TOP_BYTES)
    zones = [min(DMA_BYTES, lowmem), max(lowmem - DMA_BYTES - KERNEL_BYTES, 0.0),
             max(memory_bytes - LOWMEM_TOP_BYTES, 0.0)]
    return [max(z * (1 - MEMMAP_SHARE), 0.0) / PAGE for z in zones]


def thp_enabled(memory_bytes: float) -> bool:
    """Whether the guest kernel turns transparent huge pages on (and so khugepaged's raise of
    min_free_kbytes): hugepage_init() (mm/huge_memory.c) clears transparent_hugepage_flags and
    never starts khugepaged when totalram_pages() is below 512 MiB. It runs as a subsys_initcall,
    before the kernel frees its init sections and the initramfs, so it sees MemTotal less those."""
    return sum(_zone_pages(memory_bytes)) * PAGE - INIT_FREED_BYTES >= THP_MIN_TOTALRAM_BYTES


def kernel_free_reserve_bytes(memory_bytes: float, thp: bool | None = None) -> float:
    """Bytes of free (zero) pages a Linux guest of ``memory_bytes`` keeps out of MemAvailable
    (``thp``: whether transparent huge pages are on; by default as the kernel decides, :func:`thp_enabled`)."""
    if thp is None:
        thp = thp_enabled(memory_bytes)
    pages = _zone_pages(memory_bytes)
    total = sum(pages)
    if total <= 0:
        return 0.0
    # init_per_zone_wmark_min(): min_free_kbytes = sqrt(16 x lowmem kbytes), within [128 KiB, 256 MiB]
    min_kb = min(max(math.sqrt(16 * total * PAGE / 1024), 128.0), 262144.0)
    if thp:  # set_recommended_min_free_kbytes(): raised for huge pages, at most 5 % of RAM
        populated = sum(1 for p in pages if p > 0)
        recommended = PAGEBLOCK_PAGES * populated * (2 + MIGRATE_PCPTYPES * MIGRATE_PCPTYPES)
        min_kb = max(min_kb, min(recommended, total / 20) * PAGE / 1024)
    min_pages = min_kb * 1024 / PAGE
    reserve = 0.0
    for i, p in enumerate(pages):
        if p <= 0:
            continue
        zone_min = min_pages * p / total  # the minimum is shared out by zone size
        high = zone_min + 2 * max(zone_min / 4, p * WATERMARK_SCALE)
        # setup_per_zone_lowmem_reserve(): what this zone holds back from allocations meant for
        # the zones above it (the largest of them counts)
        lowmem = sum(pages[i + 1:]) / LOWMEM_RESERVE_RATIO
        reserve += min(p, high + lowmem)
    return reserve * PAGE


def os_nonzero_bytes(memory_bytes: float, residual_bytes: float, kernel_reserve: bool) -> float:
    """RAM non-zero beyond what the guest reported: a profile's fitted constant, less the
    kernel's reserve when the profile says its reports count the reserve as used."""
    return residual_bytes - (kernel_free_reserve_bytes(memory_bytes) if kernel_reserve else 0.0)


#: The testbed guest's kernel at READY, measured (MemTotal and MemTotal - MemAvailable): 256 MiB ->
#: 206 MiB seen, 25 MiB used; 2 GiB -> 1967 MiB seen, 106 MiB used. Linear in between.
def guest_kernel_estimate(memory_bytes: float) -> tuple[float, float]:
    """(MemTotal, used) bytes the testbed guest's kernel reports at READY, interpolated."""
    m = memory_bytes / MiB
    mem_total = m - (45.6 + 0.0173 * m)
    used = 13.4 + 0.0452 * m
    return mem_total * MiB, used * MiB


def guest_os_nonzero_estimate(memory_bytes: float, guest: Mapping[str, Any] | None = None) -> float:
    """RAM the guest OS keeps non-zero besides the workload's working set, without a guest report:
    the testbed guest's kernel at its measured size (:func:`guest_kernel_estimate`: used + what
    MemTotal never shows) plus the profile's fitted residual (``guest``: a profile's guest section,
    ``os_nonzero`` and ``kernel_reserve``, as :func:`simkvm.profile.apply_profile` applies them).
    Without a guest section, no residual; the kernel's free-page reserve is zero to QEMU either way.
    """
    guest = guest or {}
    # as apply_profile: a residual fitted without the reserve already holds it at the calibration sizes
    reserve = bool(guest.get("kernel_reserve")) if guest.get("os_nonzero") is not None else True
    mem_total, used = guest_kernel_estimate(memory_bytes)
    return used + max(0.0, memory_bytes - mem_total) + os_nonzero_bytes(
        memory_bytes, float(guest.get("os_nonzero") or 0.0), reserve)


def auto_zero_fraction(memory_bytes: float, wss_bytes: float, guest: Mapping[str, Any] | None = None) -> float:
    """``vm.zero_fraction: auto``: half of RAM (:data:`AUTO_ZERO_FRACTION_MAX`), but never more than
    the working set and the guest OS leave.

    Why: every page the workload writes holds data, and QEMU sends a page as a header only when
    it is all zero (``buffer_is_zero()`` in migration/ram.c ``save_zero_page()``), so the working
    set is non-zero however idle the workload is now; so is the guest OS's own memory
    (:func:`guest_os_nonzero_estimate`). That is the guest-informed non-zero memory
    (:func:`simkvm.testbed.guestplan.reported_nonzero_bytes` and the profile's ``guest`` section
    through :func:`simkvm.profile.apply_profile`: kernel used + arena + what MemTotal never shows +
    the fitted residual) with the working set as the arena (in whole pages, as the testbed guest's
    workload.c allocates it) and the kernel at its measured size instead of its report. Nothing
    here is fitted: the kernel sizes were measured on the testbed's guest image, the residual comes
    from the profile's calibration runs.
    """
    wss = math.ceil(max(wss_bytes, 0.0) / PAGE) * PAGE  # workload.c rounds its working set up to a page
    kernel = guest_os_nonzero_estimate(memory_bytes, guest)
    return min(AUTO_ZERO_FRACTION_MAX, max(0.0, 1.0 - (wss + kernel) / memory_bytes))
