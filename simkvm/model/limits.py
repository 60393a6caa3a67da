"""How big and how small every number in a plan may be, and why.

A plan is a question about a real migration, so each value is bounded by what
QEMU or libvirt would accept for it (their checks are cited), or, where they
have no limit, by what keeps one prediction bounded in time and memory: a
simulation costs ~35 us per iteration and ~9 us per policy poll, so a week of
simulated time and 100,000 iterations are seconds, not hours. Values outside
the bounds are refused with one line saying the bound and its reason; nothing
is clamped silently.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

from .errors import PlanError
from .units import KiB, MiB

#: QEMU's max-bandwidth and avail-switchover-bandwidth are uint64 bytes/s at most SIZE_MAX
#: (migration/options.c migrate_params_check); every size and rate is bounded by that too.
MAX_UINT64 = float(2**64 - 1)
#: x86-64 guest-physical addresses are 52 bits: no guest has more RAM than this.
MAX_MEMORY_BYTES = float(2**52)
#: QEMU's block layer keeps image lengths in an int64 (BDRV_MAX_LENGTH, include/block/block_int-common.h).
MAX_DISK_BYTES = float(2**63)
#: QEMU's downtime-limit is whole milliseconds up to 2000 s (MAX_MIGRATE_DOWNTIME_SECONDS in
#: migration/options.c); libvirt's virDomainMigrateSetMaxDowntime takes milliseconds too.
MIN_DOWNTIME_S, MAX_DOWNTIME_S = 0.001, 2000.0
#: Neither QEMU nor libvirt limits a migration's length; a week keeps a simulation's policy polls
#: (every 0.5 s for Nova) under ~10 s of CPU.
MAX_TIME_S = 7 * 86400.0
#: A host's fixed steps (check, create each disk, start the destination, setup): at most an hour each and
#: together; a policy polls through them (every 0.4-1 s), so a week of setup was 1.4 M polls (30 s of CPU).
MAX_HOST_STEP_S = 3600.0
#: Neither limits the iteration count either; the simulator stops here even under "no limit" (~4 s).
MAX_ITERATIONS = 100_000
#: A link slower than 1 kbit/s carries no migration; the bound keeps times finite.
MIN_BANDWIDTH_BPS = 125.0
#: Per-list bounds: each item is simulated (a mirror job, a dirty set, a phase) or walked per round.
MAX_DISKS, MAX_LIST_ITEMS, MAX_LAYOUT_PARTS = 256, 1024, 4096
#: q35's max_cpus (hw/i386/pc_q35.c pc_q35_machine_options, QEMU >= 9.0).
MAX_VCPUS = 4096
#: Target pages from 1 KiB (arm, TARGET_PAGE_BITS_MIN 10) to 64 KiB (ppc64/aarch64 64K host pages).
PAGE_SIZES = tuple(2**k for k in range(10, 17))


@dataclass(frozen=True)
class Bound:
    low: float
    high: float
    why: str
    low_open: bool = False  # low itself not allowed


#: Dotted field paths (dataclass attribute names) and their bounds. Lists are checked in check_lists.
BOUNDS: dict[str, Bound] = {
    "vm.memory_bytes": Bound(4096, MAX_MEMORY_BYTES, "x86-64 has 52-bit guest-physical addresses"),
    "vm.vcpus": Bound(1, MAX_VCPUS, "QEMU's q35 machine takes at most 4096 vCPUs"),
    "vm.background_dirty_rate_Bps": Bound(0, MAX_UINT64, "a uint64 of bytes/s"),
    "workload.memory.dirty_rate_Bps": Bound(0, MAX_UINT64, "a uint64 of bytes/s"),
    "workload.memory.cpu_demand_frac": Bound(0, 1, "a share of one vCPU", low_open=True),
    "workload.disk.write_rate_Bps": Bound(0, MAX_UINT64, "a uint64 of bytes/s"),
    "workload.disk.io_size_bytes": Bound(512, 64 * MiB, "one sector (512 B) to QEMU's largest mirror chunk (64 MiB)"),
    "link.bandwidth_Bps": Bound(MIN_BANDWIDTH_BPS, MAX_UINT64,
                                "1 kbit/s up to QEMU's max-bandwidth limit, SIZE_MAX bytes/s"),
    "link.capacity_Bps": Bound(MIN_BANDWIDTH_BPS, MAX_UINT64, "1 kbit/s up to SIZE_MAX bytes/s"),
    "migration.max_downtime_s": Bound(MIN_DOWNTIME_S, MAX_DOWNTIME_S,
                                      "QEMU's downtime-limit is whole milliseconds up to 2000 s"),
    "migration.max_iterations": Bound(0, MAX_ITERATIONS, "the simulator stops at 100,000 iterations"),
    "migration.max_time_s": Bound(0, MAX_TIME_S, "a migration is simulated for at most a week", low_open=True),
    "migration.disk_bandwidth_Bps": Bound(0, MAX_UINT64, "a uint64 of bytes/s"),
    "migration.avail_switchover_bandwidth_Bps": Bound(0, MAX_UINT64, "a uint64 of bytes/s"),
    "host.dirty_rate_factor": Bound(0, 1000, "real page writes per nominal one"),
    "host.sync_s_per_GiB": Bound(0, 3600, "seconds per GiB synced"),
    "host.page_header_bytes": Bound(0, 64 * KiB, "a page's header is smaller than a page"),
    "host.zero_page_bytes": Bound(0, 64 * KiB, "a zero page's record is smaller than a page"),
    **{f"host.{name}": Bound(0, MAX_HOST_STEP_S, "one host step; calibrated ones take milliseconds")
       for name in ("check_destination_s", "create_disk_s", "start_destination_s", "setup_s", "switchover_overhead_s",
                    "resume_s", "mirror_complete_s", "mirror_drain_s", "job_query_s", "source_stop_s")},
    "host.page_cost_s": Bound(0, 1.0, "CPU time per page"),
    "host.first_touch_s": Bound(0, 1.0, "time per page"),
    "host.mirror_granularity_bytes": Bound(512, 64 * MiB, "QEMU's drive-mirror granularity is 512 B to 64 MiB "
                                                          "(blockdev.c blockdev_mirror_common)"),
    "network.announce_rounds": Bound(0, 1000, "QEMU's announce-rounds is at most 1000 (migrate_params_check)"),
    "network.announce_initial_s": Bound(0, 100.0, "QEMU's announce-initial is at most 100000 ms"),
    "network.announce_max_s": Bound(0, 100.0, "QEMU's announce-max is at most 100000 ms"),
    "network.announce_step_s": Bound(0.001, 10.0, "QEMU's announce-step is 1 to 10000 ms"),
    "network.learn_after_announces": Bound(0, 1000, "at most QEMU's 1000 announce rounds"),
    "aids.auto_converge.initial_frac": Bound(0.01, 0.99, "QEMU's cpu-throttle-initial is 1 to 99 %"),
    "aids.auto_converge.increment_frac": Bound(0.01, 0.99, "QEMU's cpu-throttle-increment is 1 to 99 %"),
    "aids.auto_converge.max_frac": Bound(0.01, 0.99, "QEMU's max-cpu-throttle is at most 99 %"),
    "aids.auto_converge.trigger_threshold_frac": Bound(0.01, 1.0, "QEMU's throttle-trigger-threshold is 1 to 100 %"),
    "aids.postcopy.after_iterations": Bound(0, MAX_ITERATIONS, "at most the 100,000 iterations simulated"),
    "aids.postcopy.fault_latency_s": Bound(0, 60.0, "one page fault's round trip"),
    "aids.xbzrle.encode_cost_s": Bound(0, 1.0, "CPU time per page"),
    "aids.multifd.channels": Bound(1, 255, "QEMU's multifd-channels is 1 to 255 (migrate_params_check)"),
    "aids.multifd.channel_throughput_Bps": Bound(MIN_BANDWIDTH_BPS, MAX_UINT64, "1 kbit/s up to SIZE_MAX bytes/s"),
    "aids.compression.ratio": Bound(0, 1, "compressed / original", low_open=True),
    "aids.compression.throughput_Bps": Bound(MIN_BANDWIDTH_BPS, MAX_UINT64, "1 kbit/s up to SIZE_MAX bytes/s"),
    "aids.dirty_limit.vcpu_rate_Bps": Bound(1e6, MAX_UINT64, "QEMU's vcpu-dirty-limit is at least 1 MB/s"),
    "aids.pause.after_iterations": Bound(0, MAX_ITERATIONS, "at most the 100,000 iterations simulated"),
}


def _key(path: str) -> str:
    """The YAML key of a dotted field path: field names without their unit suffix (the plan's naming rule)."""
    return re.sub(r"_(bytes|Bps|s|frac)(?=\.|$)", "", path)


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _check(value: Any, bound: Bound, where: str) -> None:
    if value is None:
        return
    x = float(value)
    if not math.isfinite(x) or x < bound.low or x > bound.high or (bound.low_open and x == bound.low):
        lo = f"> {bound.low:g}" if bound.low_open else f">= {bound.low:g}"
        raise PlanError(f"{where} must be {lo} and <= {bound.high:g} ({bound.why}), got {x:g}")


def _each(items: Iterable[Any], where: str, limit: int, why: str) -> list[Any]:
    items = list(items)
    if len(items) > limit:
        raise PlanError(f"{where} has {len(items):,} entries; at most {limit:,} ({why})")
    return items


def _check_fields(plan: Any, section: str) -> None:
    for path, bound in BOUNDS.items():
        if path.split(".", 1)[0] == section:
            _check(_get(plan, path), bound, _key(path))


def check_vm_limits(plan: Any) -> None:
    """The VM: memory, vCPUs, page size, disks and the layouts' grid within bounds."""
    _check_fields(plan, "vm")
    vm = plan.vm
    if vm.page_size_bytes not in PAGE_SIZES:
        raise PlanError(f"vm.page_size must be a power of two from 1KiB to 64KiB (QEMU's target and host pages), "
                        f"got {vm.page_size_bytes:g}")
    for i, d in enumerate(_each(vm.disks, "vm.disks", MAX_DISKS, "one block mirror each")):
        _check(d.size_bytes, Bound(0, MAX_DISK_BYTES, "QEMU's largest image, 2^63 bytes"), f"vm.disks[{i}].size")
    lengths = []
    for name in ("zero_layout", "wss_layout"):
        layout = getattr(vm, name)
        if not isinstance(layout, str):
            _each(layout, f"vm.{name}", MAX_LAYOUT_PARTS, "parts of RAM the layout is walked in")
            if not all(math.isfinite(x) for x in layout):
                raise PlanError(f"vm.{name}: every share must be a finite number")
            lengths.append(len(layout))
    # The simulator places both layouts on one grid of lcm(64, their lengths) slices (simkvm/sim/layout.py).
    if lengths and math.lcm(64, *lengths) > MAX_LAYOUT_PARTS:
        raise PlanError(f"vm.zero_layout/vm.wss_layout have {' and '.join(map(str, lengths))} shares: RAM is cut into "
                        f"lcm(64, {', '.join(map(str, lengths))}) = {math.lcm(64, *lengths):,} slices, more than "
                        f"{MAX_LAYOUT_PARTS:,}; give share counts that divide {MAX_LAYOUT_PARTS} (64, 128, ... 4096)")


def check_workload_limits(plan: Any) -> None:
    """The workload: rates, and how many sets, curve points and phases are simulated."""
    _check_fields(plan, "workload")
    mem = plan.workload.memory
    for i, s in enumerate(_each(mem.sets, "workload.memory.sets", MAX_LIST_ITEMS, "each is simulated")):
        _check(s.dirty_rate_Bps, BOUNDS["workload.memory.dirty_rate_Bps"], f"workload.memory.sets[{i}].dirty_rate")
    _each(mem.points, "workload.memory.points", MAX_LIST_ITEMS, "each is interpolated every round")
    for i, p in enumerate(_each(mem.phases, "workload.memory.phases", MAX_LIST_ITEMS, "each is an event")):
        if math.isfinite(p.duration_s):
            _check(p.duration_s, Bound(0.001, MAX_TIME_S, "a phase is 1 ms to a week"),
                   f"workload.memory.phases[{i}].duration")
        _check(p.scale, Bound(0, 1e6, "a multiplier of the dirty rate"), f"workload.memory.phases[{i}].scale")


def check_host_limits(plan: Any) -> None:
    """Host constants, QEMU's mirror granularity a power of two, the preparation at most an hour."""
    _check_fields(plan, "host")
    host = plan.host
    prep = (host.check_destination_s + host.create_disk_s * len(plan.migrated_disks) + host.start_destination_s
            + host.setup_s)
    if prep > MAX_HOST_STEP_S:
        raise PlanError(f"host.check_destination + host.create_disk x {len(plan.migrated_disks)} disk(s) + "
                        f"host.start_destination + host.setup is {prep:g} s; at most {MAX_HOST_STEP_S:g} s "
                        f"(the preparation before the copy)")
    gran = plan.host.mirror_granularity_bytes
    if gran not in (2**k for k in range(9, 27)):
        raise PlanError(f"host.mirror_granularity must be a power of two from 512 to 64MiB (QEMU's drive-mirror "
                        f"granularity), got {gran:g}")


def check_aids_limits(plan: Any) -> None:
    """QEMU's own parameter checks for the convergence aids (migrate_params_check)."""
    _check_fields(plan, "aids")
    if plan.aids.xbzrle.enabled and plan.aids.xbzrle.cache_size_bytes < plan.vm.page_size_bytes:
        raise PlanError("aids.xbzrle.cache_size must be at least one page (QEMU's xbzrle-cache-size check)")


def _section(name: str):
    def check(plan: Any) -> None:
        _check_fields(plan, name)
    check.__name__ = check.__doc__ = f"check_{name}_limits"
    return check


#: The bounds as section checks (check, the sections it reads), added to the plan's own.
LIMIT_CHECKS = (
    (check_vm_limits, frozenset({"vm"})),
    (check_workload_limits, frozenset({"workload"})),
    (_section("link"), frozenset({"link"})),
    (_section("migration"), frozenset({"migration"})),
    (_section("network"), frozenset({"network"})),
    (check_host_limits, frozenset({"host", "vm", "migration"})),  # the preparation counts the migrated disks
    (check_aids_limits, frozenset({"aids", "vm"})),
)


def check_limits(plan: Any) -> None:
    """Every bounded field of ``plan`` within its bounds (PlanError naming the key, bound and reason)."""
    for check, _sections in LIMIT_CHECKS:
        check(plan)
