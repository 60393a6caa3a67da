"""The plan: one description of a migration, read by both the simulator and the executor.

A plan is a tree of frozen dataclasses. Field names carry their SI unit
(``memory_bytes``, ``max_downtime_s``, ``bandwidth_Bps``); the YAML/dict key is
the same name without the unit suffix (``memory``, ``max_downtime``,
``bandwidth``) and accepts human units ("16GiB", "300ms", "10Gbit/s") or bare
SI numbers. That naming rule is the only (de)serialisation code: one generic
converter walks the dataclass fields, so adding a knob is adding a field.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import codec
from .errors import PlanError
from .limits import LIMIT_CHECKS
from .qemu import KNOWN as QEMU_VERSIONS
from .qemu import normalise as normalise_qemu
from .qemu import qemu as qemu_version
from .units import PAGE_BYTES, parse_rate


# --------------------------------------------------------------------- the VM
@dataclass(frozen=True)
class Disk:
    """A disk migrated with non-shared storage (copied by a block mirror)."""

    path: str = "/var/lib/libvirt/images/vm.qcow2"
    size_bytes: float = 0.0
    allocated_bytes: float | None = None  # None: fully allocated
    format: str = "qcow2"

    @property
    def allocation_bytes(self) -> float:
        return self.size_bytes if self.allocated_bytes is None else self.allocated_bytes


@dataclass(frozen=True)
class VM:
    memory_bytes: float = 4 * 2**30
    zero_fraction: float = 0.0  # share of guest RAM that is zero pages (sent as headers only)
    # Where pages sit in guest-physical RAM, which is the order QEMU's bitmap walk
    # meets them (simkvm.sim.layout): "spread" (mixed in evenly), "start"/"end"
    # (contiguous at the bottom/top), or shares per equal part of RAM, bottom to
    # top, as measured (the testbed guest reports its own from page-frame numbers).
    zero_layout: str | tuple[float, ...] = "spread"  # end: the untouched top of a fresh guest's RAM
    wss_layout: str | tuple[float, ...] = "spread"  # the workload's working set
    disks: tuple[Disk, ...] = ()
    background_dirty_rate_Bps: float = 0.0  # the guest OS's own page writes (kernel, timers, buffers)
    background_wss_bytes: float = 16 * 2**20
    # Pages the guest OS rewrites all the time (kernel stacks, per-CPU data, timer wheels, its
    # programs' own bookkeeping): dirty again at every sync, however short the round. A rate
    # over a large set cannot stand for them: it under-counts short rounds, over-counts long ones.
    background_hot_bytes: float = 0.0
    vcpus: int = 1
    page_size_bytes: float = PAGE_BYTES


# --------------------------------------------------------------- the workload
@dataclass(frozen=True)
class DirtySet:
    """Part of guest RAM the workload writes to: ``dirty_rate`` bytes/s of page writes over ``wss``."""

    wss_bytes: float = 0.0
    dirty_rate_Bps: float = 0.0
    pattern: str = "uniform"  # uniform (random) | sequential


@dataclass(frozen=True)
class Phase:
    """A stretch of time during which every dirty set's rate is multiplied by ``scale``."""

    duration_s: float = math.inf
    scale: float = 1.0


@dataclass(frozen=True)
class MemoryWorkload:
    """How the guest dirties RAM.

    ``model``: ``idle``; ``uniform`` or ``sequential`` (one set: ``dirty_rate``
    over ``wss``); ``hotcold`` (``sets``, each uniform over its own set);
    ``curve`` (``points``: measured unique dirtied bytes against interval
    length, e.g. from calc-dirty-rate at several periods).
    """

    model: str = "idle"
    dirty_rate_Bps: float = 0.0
    wss_bytes: float | None = None
    sets: tuple[DirtySet, ...] = ()
    points: tuple[tuple[float, float], ...] = ()  # (interval_s, unique_bytes)
    phases: tuple[Phase, ...] = ()
    # Share of a vCPU the dirtier needs at its nominal rate. 1 (default): CPU-bound, a CPU
    # throttle of t cuts its rate to (1 - t), as QEMU's docs assume; a rate-paced program
    # needing u < 1 keeps its rate until 1 - t < u, then runs at (1 - t) / u of it.
    cpu_demand_frac: float = 1.0

    def working_set_bytes(self) -> float:
        """RAM the workload has written, which holds data whether it is written again or not: ``wss``
        (on an idle workload too: what the guest wrote once), the sets' sum for ``hotcold``, and for
        ``curve`` its ``wss`` or else its largest unique bytes. What ``vm.zero_fraction: auto`` leaves
        non-zero (:func:`simkvm.guestos.auto_zero_fraction`)."""
        if self.model == "hotcold":
            return float(sum(s.wss_bytes for s in self.sets))
        if self.model == "curve" and self.wss_bytes is None:
            return float(max((b for _t, b in self.points), default=0.0))
        return float(self.wss_bytes or 0.0)

    def dirty_sets(self) -> tuple[DirtySet, ...]:
        """Every model as a list of sets, which is all the simulator sees (curve excepted)."""
        if self.model in ("uniform", "sequential"):
            pattern = "uniform" if self.model == "uniform" else "sequential"
            return (DirtySet(wss_bytes=self.wss_bytes or 0.0, dirty_rate_Bps=self.dirty_rate_Bps, pattern=pattern),)
        if self.model == "hotcold":
            return self.sets
        return ()


@dataclass(frozen=True)
class DiskWorkload:
    """Guest writes to its first disk: ``write_rate`` bytes/s in ``io_size`` writes over ``wss``.

    ``pattern``: uniform (random offsets) or sequential (a cycle through the working set). The
    disk mirror sees them very differently: consecutive small writes of a sequential writer fall
    in the same mirror granule, random ones each dirty a granule of their own.
    """

    write_rate_Bps: float = 0.0
    wss_bytes: float | None = None
    io_size_bytes: float = 4096  # one default for plans, CLI and fleet CSVs: the page / file system block
    pattern: str = "uniform"  # uniform (random) | sequential


@dataclass(frozen=True)
class Workload:
    memory: MemoryWorkload = MemoryWorkload()
    disk: DiskWorkload = DiskWorkload()


# ----------------------------------------------------------- link, migration
@dataclass(frozen=True)
class Link:
    """``bandwidth``: what the migration may use (libvirt's bandwidth parameter, QEMU's
    max-bandwidth, also each disk mirror's speed). ``capacity``: what the wire can carry
    when QEMU lifts the rate limit for the final stop-and-copy (default: ``bandwidth``)."""

    bandwidth_Bps: float = 125e6
    capacity_Bps: float | None = None
    efficiency: float = 1.0  # goodput / line rate (TCP/IP overhead)


@dataclass(frozen=True)
class Migration:
    max_downtime_s: float = 0.3
    max_iterations: int | None = None  # None: 30 under plain QEMU (like guestperf), no limit under a policy
    max_time_s: float | None = None  # None: 300 s under plain QEMU, 24 h under a policy (it decides)
    storage: str = "non_shared_disk"  # non_shared_disk | non_shared_inc | shared
    mirror_mode: str = "background"  # background | write_blocking
    disk_bandwidth_Bps: float | None = None  # default: link bandwidth
    avail_switchover_bandwidth_Bps: float | None = None  # QEMU >= 8.2 override for the threshold


# ------------------------------------------------------- convergence aids
@dataclass(frozen=True)
class AutoConverge:
    """QEMU auto-converge: throttle the vCPUs when dirtying outpaces sending."""

    enabled: bool = False
    initial_frac: float = 0.20  # cpu-throttle-initial
    increment_frac: float = 0.10  # cpu-throttle-increment
    max_frac: float = 0.99  # max-cpu-throttle
    trigger_threshold_frac: float = 0.50  # throttle-trigger-threshold


@dataclass(frozen=True)
class Postcopy:
    """Post-copy: after N iterations (0: only when a policy starts it) the VM runs on the
    destination and the rest of RAM follows, faulted in on demand."""

    enabled: bool = False
    after_iterations: int = 0
    fault_latency_s: float = 0.0005  # one page fault's round trip over the link


@dataclass(frozen=True)
class Xbzrle:
    """XBZRLE: re-dirtied pages still in the cache are sent as a delta (after the first pass)."""

    enabled: bool = False
    cache_size_bytes: float = 64 * 2**20
    delta_frac: float = 0.10  # delta size / page size for a cache hit
    encode_cost_s: float = 1e-6  # CPU per page encoded


@dataclass(frozen=True)
class Multifd:
    """Multiple migration channels (libvirt PARALLEL): page CPU spread over channels."""

    enabled: bool = False
    channels: int = 2
    channel_throughput_Bps: float | None = None  # per-channel ceiling (None: none)


@dataclass(frozen=True)
class Compression:
    """Compression in multifd: wire bytes x ratio, input limited by compressor throughput."""

    method: str = "none"  # none | zlib | zstd
    ratio: float = 0.5  # compressed / original for normal pages
    throughput_Bps: float = 300 * 2**20  # per channel, input bytes/s


@dataclass(frozen=True)
class DirtyLimit:
    """dirty-limit: cap each vCPU's dirty rate once the auto-converge trigger fires."""

    enabled: bool = False
    vcpu_rate_Bps: float = 2**20  # vcpu-dirty-limit (1 MB/s in QEMU)


@dataclass(frozen=True)
class Pause:
    """Suspend the guest after N iterations (0: only on a policy's command): forced completion."""

    after_iterations: int = 0


@dataclass(frozen=True)
class Aids:
    auto_converge: AutoConverge = AutoConverge()
    postcopy: Postcopy = Postcopy()
    xbzrle: Xbzrle = Xbzrle()
    multifd: Multifd = Multifd()
    compression: Compression = Compression()
    dirty_limit: DirtyLimit = DirtyLimit()
    pause: Pause = Pause()


@dataclass(frozen=True)
class PolicySpec:
    """Which orchestration policy drives the migration (``policy: nova`` or a mapping with
    ``name`` and that policy's parameters, see simkvm.policies)."""

    name: str = "qemu"
    params: tuple[tuple[str, Any], ...] = ()

    def options(self) -> dict[str, Any]:
        return dict(self.params)

    def as_data(self) -> dict[str, Any]:
        """The YAML form: ``{name, option: value, ...}`` (options flat, as a plan file writes them)."""
        return {"name": self.name, **dict(self.params)}


@dataclass(frozen=True)
class Destination:
    """What the destination host has free (None: not checked)."""

    free_memory_bytes: float | None = None
    free_disk_bytes: float | None = None


@dataclass(frozen=True)
class Host:
    """Host-specific constants: defaults are QEMU's; ``simkvm calibrate`` fits them."""

    check_destination_s: float = 0.05
    create_disk_s: float = 0.05  # per disk
    start_destination_s: float = 0.3  # paused QEMU with -incoming + NBD server
    setup_s: float = 0.05  # migration setup (QEMU 'setup-time')
    page_header_bytes: float = 8
    zero_page_bytes: float = 9  # header + 1 byte
    page_cost_s: float = 2.5e-7  # migration thread's CPU per page (bitmap walk, zero check)
    # The destination writing a normal page it never received before, in the stop-and-copy: its first
    # write to that memory, which the kernel allocates then (guest RAM is madvised MADV_HUGEPAGE, so a
    # fault may compact memory for a huge page). Default: ~10 us, as campaigns v5-idle, v6 and q10
    # measured (README, "after v6"); `simkvm calibrate` searches it.
    first_touch_s: float = 1e-5
    sync_s_per_GiB: float = 1e-4  # cost of one dirty-bitmap sync per GiB of guest RAM
    device_state_bytes: float = 256 * 1024
    switchover_overhead_s: float = 0.01  # libvirt pause-before-switchover round trip
    resume_s: float = 0.01  # destination loads device state and starts the CPUs
    mirror_granularity_bytes: float = 65536
    mirror_zero_accounted: bool = True  # zero blocks count against the mirror speed limit
    mirror_complete_s: float = 0.005
    mirror_drain_s: float = 0.0  # more, when the guest writes its disk: in-flight I/O drains at the stop
    # After the guest resumes on the destination, libvirt's Confirm phase stops the source QEMU and
    # polls every 200 ms until the process is gone (virProcessKillPainfullyDelay): the migration call
    # returns, and an orchestrator frees its slot, only then. A drain holds the slot this long.
    source_stop_s: float = 0.2
    dirty_rate_factor: float = 1.0  # real page writes per nominal one (TCG guests run slower)
    # One virDomainGetJobStats round trip: an orchestrator's poll reads the clock
    # this long after its tick, so a deadline on its poll grid has already passed
    # (Nova's "elapsed > step time" fires at the tick, not one poll later).
    job_query_s: float = 0.002
    # The QEMU version whose migration loop to follow (simkvm.model.qemu: what changed since 7.2).
    qemu: str = "7.2"


@dataclass(frozen=True)
class Network:
    """QEMU's self-announce (RARP) after resume, and the fabric's own re-learning time."""

    announce_rounds: int = 5
    announce_initial_s: float = 0.05
    announce_step_s: float = 0.1
    announce_max_s: float = 0.55
    learn_after_announces: int = 1
    reconvergence_s: float = 0.0


@dataclass(frozen=True)
class Plan:
    name: str = "plan"
    vm: VM = VM()
    workload: Workload = Workload()
    link: Link = Link()
    migration: Migration = Migration()
    destination: Destination = Destination()
    host: Host = Host()
    network: Network = Network()
    aids: Aids = Aids()
    policy: PolicySpec = PolicySpec()

    # ---------------------------------------------------------------- input
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Plan":
        """Build and validate a plan from the YAML structure (human units allowed).

        A ``profile:`` file and the policy's own options are read by :func:`simkvm.load.plan_from_dict`
        (profiles and policies live above the model); here ``profile`` may only be a loaded profile.
        """
        if not isinstance(data, Mapping):
            raise PlanError(f"a plan must be a mapping of sections, got {type(data).__name__}")
        data = dict(data)
        if "policy" in data:
            data["policy"] = _policy_data(data["policy"])
        prof = data.pop("profile", None) or {}
        if not isinstance(prof, Mapping):
            raise PlanError(f"profile {prof!r}: a profile file is read by simkvm.load_plan (or a plan file), "
                            f"not by Plan.from_dict")
        own_host = data.get("host")
        if isinstance(own_host, Mapping) and "qemu" in own_host:
            data["host"] = own_host = {**own_host, "qemu": normalise_qemu(own_host["qemu"])}
        if prof.get("host"):
            calibrated = prof["host"].get("qemu")
            if calibrated is not None:
                prof = {**prof, "host": {**prof["host"], "qemu": normalise_qemu(calibrated)}}
                asked = own_host.get("qemu") if isinstance(own_host, Mapping) else None
                if asked is not None and asked != prof["host"]["qemu"]:
                    warnings.warn(f"the profile was calibrated on QEMU {prof['host']['qemu']}; this plan "
                                  f"predicts QEMU {asked} (host.qemu): its constants may not carry over",
                                  VersionWarning, stacklevel=2)
            data["host"] = {**prof["host"], **dict(data.get("host") or {})}
        plan = codec.build(cls, data, "")
        capacity = (prof.get("link") or {}).get("capacity")
        if capacity is not None and plan.link.capacity_Bps is None:
            # the profile's raw link speed, never below the bandwidth this plan asks for
            cap = max(parse_rate(capacity, "profile link.capacity"), plan.link.bandwidth_Bps)
            plan = dataclasses.replace(plan, link=dataclasses.replace(plan.link, capacity_Bps=cap))
        plan.validate()
        return plan

    def to_dict(self) -> dict[str, Any]:
        """The plan with YAML keys and SI numbers; ``from_dict`` reads it back unchanged."""
        return codec.unbuild(self)

    def with_(self, **changes: Any) -> "Plan":
        """A copy with fields changed by dotted YAML key, validated: the one way to change a plan.

        ``plan.with_(**{"link.bandwidth": 1.25e9, "migration.max_downtime": 0.3})``. Values go
        through their field's unit rule (SI numbers pass as they are; a string such as
        "10Gbit/s" is parsed), only the sections on each path are copied (no dict round trip)
        and only the checks that read a changed section run.
        """
        tree = codec.Changes()
        for key, value in changes.items():
            if key == "policy":
                value = _policy_data(value)
            path, name, hint = codec.resolve(self, key)
            codec.put(tree, path, codec.convert(name, hint, value, key))
        plan: Plan = codec.apply(self, tree)
        for check, sections in SECTION_CHECKS:  # only what the changed sections can break
            if not sections.isdisjoint(tree):
                check(plan)
        return plan

    # -------------------------------------------------------------- checks
    def validate(self) -> None:
        """Every section's check (:data:`SECTION_CHECKS`); PlanError, one line, at the first problem."""
        for check, _sections in SECTION_CHECKS:
            check(self)

    # ---------------------------------------------------------- derived
    @property
    def max_time_s(self) -> float:
        if self.migration.max_time_s is not None:
            return self.migration.max_time_s
        return 300.0 if self.policy.name == "qemu" else 86400.0

    @property
    def max_iterations(self) -> int:
        """0 means no limit."""
        if self.migration.max_iterations is not None:
            return self.migration.max_iterations
        return 30 if self.policy.name == "qemu" else 0

    @property
    def disk_bandwidth_Bps(self) -> float:
        return self.migration.disk_bandwidth_Bps or self.link.bandwidth_Bps

    @property
    def capacity_Bps(self) -> float:
        return (self.link.capacity_Bps or self.link.bandwidth_Bps) * self.link.efficiency

    @property
    def migrated_disks(self) -> tuple[Disk, ...]:
        return () if self.migration.storage == "shared" else self.vm.disks


# ------------------------------------------------------------ checks, one per section
def check_vm(plan: Plan) -> None:
    """The VM's memory: at least one page."""
    vm = plan.vm
    if vm.memory_bytes <= 0:
        raise PlanError(f"vm.memory must be > 0, got {vm.memory_bytes:g} bytes")
    if vm.memory_bytes < vm.page_size_bytes:
        raise PlanError("vm.memory must be at least one page (4KiB)")


def check_link(plan: Plan) -> None:
    """Bandwidth, capacity (never below the bandwidth), efficiency."""
    if plan.link.bandwidth_Bps <= 0:
        raise PlanError("link.bandwidth must be > 0 (e.g. '1Gbit/s'), got 0")
    if plan.link.capacity_Bps is not None and plan.link.capacity_Bps < plan.link.bandwidth_Bps * 0.999999:
        raise PlanError("link.capacity must be >= link.bandwidth (capacity is the raw link; bandwidth the limit)")
    if not 0 < plan.link.efficiency <= 1:
        raise PlanError(f"link.efficiency must be in (0, 1], got {plan.link.efficiency}")


def check_migration(plan: Plan) -> None:
    """QEMU's limits on downtime, time and iterations; storage and mirror modes."""
    if plan.migration.max_downtime_s <= 0:
        raise PlanError("migration.max_downtime must be > 0 (e.g. '300ms')")
    if plan.migration.max_downtime_s > 2000:
        raise PlanError("migration.max_downtime must be <= 2000s (QEMU's maximum)")
    if plan.migration.max_time_s is not None and plan.migration.max_time_s <= 0:
        raise PlanError("migration.max_time must be > 0 (e.g. '300s')")
    if plan.migration.max_iterations is not None and plan.migration.max_iterations < 0:
        raise PlanError("migration.max_iterations must be >= 0 (0 = no limit)")
    _choice(plan.migration.storage, ("non_shared_disk", "non_shared_inc", "shared"), "migration.storage")
    _choice(plan.migration.mirror_mode, ("background", "write_blocking"), "migration.mirror_mode")


def check_layout(plan: Plan) -> None:
    """Where the zero pages and the working sets sit; the guest OS's own dirtying."""
    vm, mem = plan.vm, plan.workload.memory
    _choice(mem.model, ("idle", "uniform", "sequential", "hotcold", "curve"), "workload.memory.model")
    _layout(vm.zero_layout, ("spread", "end"), "vm.zero_layout")
    _layout(vm.wss_layout, ("spread", "start", "end"), "vm.wss_layout")
    if vm.background_dirty_rate_Bps > 0 and not 0 < vm.background_wss_bytes <= vm.memory_bytes:
        raise PlanError("vm.background_wss must be > 0 and at most vm.memory")
    if not 0 <= vm.background_hot_bytes <= vm.memory_bytes:
        raise PlanError("vm.background_hot must be between 0 and vm.memory")


def check_memory_workload(plan: Plan) -> None:
    """Each memory model's own keys, every set within the VM's memory."""
    vm, mem = plan.vm, plan.workload.memory
    usable = vm.memory_bytes
    if mem.model in ("uniform", "sequential"):
        if mem.wss_bytes is None:
            raise PlanError(f"workload.memory.wss is required for model {mem.model!r} (e.g. wss: 1GiB)")
        if mem.wss_bytes > usable:
            raise PlanError(
                f"workload.memory.wss ({mem.wss_bytes / 2**30:.3g} GiB) is larger than vm.memory "
                f"({usable / 2**30:.3g} GiB)"
            )
        if mem.wss_bytes <= 0 and mem.dirty_rate_Bps > 0:
            raise PlanError("workload.memory.wss must be > 0 when dirty_rate > 0")
    if mem.model == "idle" and mem.wss_bytes is not None and not 0 <= mem.wss_bytes <= usable:
        raise PlanError(f"workload.memory.wss of an idle workload (what the guest wrote once) must be between 0 "
                        f"and vm.memory ({usable / 2**30:.3g} GiB), got {mem.wss_bytes / 2**30:.3g} GiB")
    if mem.model == "hotcold":
        if not mem.sets:
            raise PlanError("workload.memory.sets must list at least one {wss, dirty_rate} for model 'hotcold'")
        total = sum(s.wss_bytes for s in mem.sets)
        if total > usable:
            raise PlanError(
                f"workload.memory.sets add up to {total / 2**30:.3g} GiB, more than vm.memory "
                f"({usable / 2**30:.3g} GiB)"
            )
        for i, s in enumerate(mem.sets):
            _choice(s.pattern, ("uniform", "sequential"), f"workload.memory.sets[{i}].pattern")
            if s.wss_bytes <= 0 and s.dirty_rate_Bps > 0:
                raise PlanError(f"workload.memory.sets[{i}].wss must be > 0")
    if mem.model == "curve":
        if len(mem.points) < 1:
            raise PlanError("workload.memory.points must list [interval, unique bytes] pairs for model 'curve'")
        last_t, last_b = 0.0, 0.0
        for t, b in mem.points:
            if t <= last_t or b < last_b:
                raise PlanError("workload.memory.points must increase in interval and not decrease in bytes")
            if b > usable:
                raise PlanError("workload.memory.points: unique dirtied bytes cannot exceed vm.memory")
            last_t, last_b = t, b
    if mem.cpu_demand_frac <= 0:
        raise PlanError("workload.memory.cpu_demand must be > 0 (a share of one vCPU, e.g. 0.1)")
    for i, p in enumerate(mem.phases):
        if p.duration_s <= 0 or p.scale < 0:
            raise PlanError(f"workload.memory.phases[{i}]: duration must be > 0 and scale >= 0")


def check_disks(plan: Plan) -> None:
    """Disk writes need a disk (and a working set within it); allocation within size."""
    vm = plan.vm
    dsk = plan.workload.disk
    if dsk.write_rate_Bps > 0:
        if not vm.disks:
            raise PlanError("workload.disk.write_rate is set but vm.disks is empty; add a disk or drop the rate")
        if plan.migration.storage != "shared":
            if dsk.wss_bytes is None:
                raise PlanError("workload.disk.wss is required when workload.disk.write_rate > 0")
            if dsk.wss_bytes > vm.disks[0].size_bytes:
                raise PlanError("workload.disk.wss is larger than the first disk's size")
        if dsk.io_size_bytes <= 0:
            raise PlanError("workload.disk.io_size must be > 0")
        _choice(dsk.pattern, ("uniform", "sequential"), "workload.disk.pattern")
    for i, d in enumerate(vm.disks):
        if d.size_bytes <= 0:
            raise PlanError(f"vm.disks[{i}].size must be > 0")
        if d.allocation_bytes > d.size_bytes:
            raise PlanError(f"vm.disks[{i}].allocated is larger than its size")


def check_network_host(plan: Plan) -> None:
    """Announce counts and the host's dirty-rate factor are never negative."""
    if plan.network.announce_rounds < 0 or plan.network.learn_after_announces < 0:
        raise PlanError("network.announce_rounds and learn_after_announces must be >= 0")
    if plan.host.dirty_rate_factor < 0:
        raise PlanError("host.dirty_rate_factor must be >= 0")


def check_qemu(plan: Plan) -> None:
    """A QEMU version the model follows, and only what that version can do."""
    if plan.host.qemu not in QEMU_VERSIONS:
        raise PlanError(f"host.qemu must be one of {', '.join(QEMU_VERSIONS)} (the QEMU versions the model "
                        f"follows); got {plan.host.qemu!r}")
    version = qemu_version(plan.host.qemu)
    if plan.aids.dirty_limit.enabled and not version.has_dirty_limit:
        raise PlanError(f"aids.dirty_limit needs QEMU >= 8.1 (the dirty-limit capability); host.qemu is "
                        f"{plan.host.qemu}")
    if plan.migration.avail_switchover_bandwidth_Bps and not version.has_avail_switchover_bandwidth:
        raise PlanError(f"migration.avail_switchover_bandwidth needs QEMU >= 8.2; host.qemu is {plan.host.qemu}")


def check_aids(plan: Plan) -> None:
    """Convergence aids: throttle bounds, channels, compression (needs multifd)."""
    aids = plan.aids
    ac = aids.auto_converge
    if ac.max_frac >= 1.0 or ac.initial_frac > ac.max_frac:
        raise PlanError("aids.auto_converge: need initial <= max < 100%")
    if aids.multifd.channels < 1:
        raise PlanError("aids.multifd.channels must be >= 1")
    _choice(aids.compression.method, ("none", "zlib", "zstd"), "aids.compression.method")
    if aids.compression.method != "none":
        if not 0 < aids.compression.ratio <= 1:
            raise PlanError("aids.compression.ratio must be in (0, 1]")
        if not aids.multifd.enabled:
            raise PlanError("aids.compression needs aids.multifd.enabled: true (QEMU compresses in multifd)")
    if aids.postcopy.after_iterations < 0 or aids.pause.after_iterations < 0:
        raise PlanError("after_iterations must be >= 0")
    if aids.xbzrle.enabled and aids.xbzrle.cache_size_bytes <= 0:
        raise PlanError("aids.xbzrle.cache_size must be > 0")


#: Every check with the sections it reads, in the order their first error is reported.
SECTION_CHECKS: tuple[tuple[Callable[[Plan], None], frozenset[str]], ...] = (
    (check_vm, frozenset({"vm"})),
    (check_link, frozenset({"link"})),
    (check_migration, frozenset({"migration"})),
    (check_layout, frozenset({"vm", "workload"})),
    (check_memory_workload, frozenset({"vm", "workload"})),
    (check_disks, frozenset({"vm", "workload", "migration"})),
    (check_network_host, frozenset({"network", "host"})),
    (check_aids, frozenset({"aids"})),
    (check_qemu, frozenset({"host", "aids", "migration"})),
    *LIMIT_CHECKS,  # every number within QEMU's and libvirt's own bounds (simkvm.model.limits)
)


def _policy_data(policy: Any) -> Any:
    """``policy: nova`` or ``{name, option: value, ...}`` as the PolicySpec mapping ``{name, params}``."""
    if isinstance(policy, str):
        return {"name": policy}
    if isinstance(policy, Mapping):
        policy = dict(policy)
        name = policy.pop("name", "qemu")
        params = policy.pop("params", None) or {}
        if not isinstance(name, str) or not isinstance(params, Mapping):
            raise PlanError(f"policy must be a name or a mapping {{name: NAME, option: value}}, got {policy!r}")
        return {"name": name, "params": {**dict(params), **policy}}
    return policy


class VersionWarning(UserWarning):
    """A plan predicts another QEMU version than its profile was calibrated on."""


def _choice(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise PlanError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")


def _layout(value: Any, names: tuple[str, ...], where: str) -> None:
    if isinstance(value, str):
        _choice(value, names, where)
        return
    if (not value or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 for v in value)
            or sum(value) <= 0):
        raise PlanError(f"{where} must be one of {', '.join(names)} or a list of shares per equal part of RAM "
                        f"(non-negative numbers, bottom to top, not all zero), got {list(value)!r}")
