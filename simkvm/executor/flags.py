"""What libvirt is asked: the plan as ``virDomainMigrate3`` flags and typed parameters.

"Which flag does this aid set?", "why was this knob ignored?", "can this
source run that?" are answered here, with no connection: the functions take
the plan and what the hosts said, and return flags, parameters and the notes
a result carries about every rounding or knob libvirt has no word for.
"""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from ..libvirt_api import import_libvirt
from ..model.errors import EnvironmentProblem, UserError
from ..model.plan import Plan
from ..model.units import MiB, fmt_bytes, fmt_rate

#: libvirt release that added multifd compression methods zlib/zstd (VIR_MIGRATE_PARAM_COMPRESSION).
MULTIFD_COMPRESSION_LIBVIRT = (9, 4, 0)
MULTIFD_COMPRESSION_QEMU = (5, 0, 0)
#: libvirt release that passes QEMU's avail-switchover-bandwidth on (VIR_MIGRATE_PARAM_BANDWIDTH_AVAIL_SWITCHOVER).
AVAIL_SWITCHOVER_LIBVIRT = (11, 1)


@dataclass(frozen=True)
class Transport:
    """How the migration stream travels: where to (``migrate_uri``; None lets libvirt choose), TLS,
    peer-to-peer (the source's libvirtd drives the migration), tunnelled (through libvirtd's own
    connection; needs peer-to-peer)."""

    migrate_uri: str | None = None
    tls: bool = False
    peer_to_peer: bool = False
    tunnelled: bool = False

    def flags(self) -> int:
        libvirt = import_libvirt()
        flags = libvirt.VIR_MIGRATE_TLS if self.tls else 0
        if self.peer_to_peer or self.tunnelled:
            flags |= libvirt.VIR_MIGRATE_PEER2PEER
        if self.tunnelled:
            flags |= libvirt.VIR_MIGRATE_TUNNELLED
        return flags


@dataclass(frozen=True)
class MigrationCall:
    """The arguments of one ``virDomainMigrate3`` and what the result says about them."""

    flags: int
    params: dict[str, Any]
    bandwidth_MiBps: int
    definitions: str  # what happens to the domain's definitions (definitions_text)
    notes: list[str]  # knobs rounded or ignored


def migration_call(plan: Plan, *, persistent: bool, persist: bool, undefine_source: bool, transport: Transport,
                   disk_targets: list[str], source_libvirt: str | None) -> MigrationCall:
    """The flags and parameters that run ``plan`` (``disk_targets``: the disks to mirror, ``persistent``: the
    source's definition is persistent, ``persist``/``undefine_source``: what to do with it)."""
    libvirt = import_libvirt()
    mig = plan.migration
    flags = libvirt.VIR_MIGRATE_LIVE
    if mig.storage == "non_shared_disk":
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
    elif mig.storage == "non_shared_inc":
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
    if mig.mirror_mode == "write_blocking" and mig.storage != "shared":
        sync = getattr(libvirt, "VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES", None)
        if sync is None:
            raise EnvironmentProblem("migration.mirror_mode write_blocking needs libvirt >= 8.0 "
                                     "(VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES); use background")
        flags |= sync
    aid_flags, aid_params, aid_notes = aid_flags_and_params(plan)
    flags |= aid_flags
    if persist and persistent:
        flags |= libvirt.VIR_MIGRATE_PERSIST_DEST
    if undefine_source and persistent:
        flags |= libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    flags |= transport.flags()
    bandwidth_MiBps = max(1, int(round(plan.link.bandwidth_Bps / MiB)))
    params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: bandwidth_MiBps}
    uri = transport.migrate_uri if not transport.tunnelled else None  # tunnelled: through the libvirtd connection
    if uri:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = uri
    definitions = definitions_text(persistent, bool(flags & libvirt.VIR_MIGRATE_PERSIST_DEST),
                                   bool(flags & libvirt.VIR_MIGRATE_UNDEFINE_SOURCE))
    listen = urllib.parse.urlsplit(uri).hostname if uri else None
    if listen:  # the destination listens (migration stream, NBD export) where we send, not on 0.0.0.0
        params[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] = listen
    if disk_targets and mig.storage != "shared":
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(disk_targets)
    params.update(aid_params)
    notes = list(aid_notes)
    if abs(bandwidth_MiBps * MiB - plan.link.bandwidth_Bps) > 0.01 * plan.link.bandwidth_Bps:
        notes.append(f"link.bandwidth {fmt_rate(plan.link.bandwidth_Bps)} rounded to {bandwidth_MiBps} MiB/s")
    if mig.disk_bandwidth_Bps and mig.disk_bandwidth_Bps != plan.link.bandwidth_Bps:
        notes.append("migration.disk_bandwidth ignored: libvirt's bandwidth caps RAM and each mirror alike")
    if mig.avail_switchover_bandwidth_Bps:
        # The key by name: a libvirt-python built against libvirt < 11.1 lacks the constant but
        # passes the typed parameter on to a daemon that knows it (libvirt >= 11.1, in MiB/s like
        # VIR_MIGRATE_PARAM_BANDWIDTH: bytes here made QEMU switch over at once, 6 s downtime).
        key = getattr(libvirt, "VIR_MIGRATE_PARAM_BANDWIDTH_AVAIL_SWITCHOVER", "bandwidth.avail.switchover")
        if (version_tuple(source_libvirt) or (0,)) < AVAIL_SWITCHOVER_LIBVIRT:
            notes.append(f"migration.avail_switchover_bandwidth ignored: the source runs libvirt "
                         f"{source_libvirt or 'unknown'}, it needs >= 11.1 (and QEMU >= 8.2)")
        else:
            params[key] = max(1, int(round(mig.avail_switchover_bandwidth_Bps / MiB)))
    if disk_targets:
        notes.append("disk_processed is libvirt's: it stops counting mirror progress once RAM migration "
                     "starts, so guest writes mirrored after that are not in disk_transferred_bytes")
    return MigrationCall(flags, params, bandwidth_MiBps, definitions, notes)


def aid_flags_and_params(plan: Plan) -> tuple[int, dict[str, Any], list[str]]:
    """libvirt flags/params for the plan's aids (pause and the after-N rules are run by .control)."""
    libvirt = import_libvirt()
    aids = plan.aids
    flags = 0
    params: dict[str, Any] = {}
    notes: list[str] = []
    ac = aids.auto_converge
    if ac.enabled:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = int(round(ac.initial_frac * 100))
        params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = int(round(ac.increment_frac * 100))
        if ac.max_frac != 0.99 or ac.trigger_threshold_frac != 0.5:
            notes.append("aids.auto_converge max/trigger: libvirt has no parameter for them; QEMU defaults used")
    if aids.postcopy.enabled:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY  # switched by migrateStartPostCopy (.control)
    if aids.multifd.enabled:
        flags |= libvirt.VIR_MIGRATE_PARALLEL
        params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = int(aids.multifd.channels)
    methods = []
    if aids.xbzrle.enabled:
        methods.append("xbzrle")
        cache = int(aids.xbzrle.cache_size_bytes)
        power = 1 << max(cache.bit_length() - 1, 12)  # QEMU wants a power of two, at least a page
        if power != cache:
            notes.append(f"aids.xbzrle.cache_size {fmt_bytes(cache)} rounded down to {fmt_bytes(power)} "
                         f"(a power of two)")
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION_XBZRLE_CACHE] = power
    if aids.compression.method != "none":
        methods.append(aids.compression.method)  # multifd compression (checked by aid_support_problem)
    if methods:
        flags |= libvirt.VIR_MIGRATE_COMPRESSED
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = methods if len(methods) > 1 else methods[0]
    return flags, params, notes


def check_plan(plan: Plan) -> None:
    """Every policy and aid runs for real except dirty-limit, which libvirt cannot switch on."""
    if plan.aids.dirty_limit.enabled:
        raise UserError("the executor cannot run aids.dirty_limit: libvirt has no migration flag or parameter "
                        "for QEMU's dirty-limit capability; disable it in the plan (auto_converge is the "
                        "throttling aid libvirt offers)")


def aid_support_problem(plan: Plan, libvirt_version: str | None, qemu_version: str | None) -> str | None:
    """Why the source cannot run the plan's aids (one sentence naming the fix), or None.

    Only multifd compression needs a check: libvirt learnt the zlib/zstd methods in
    9.4.0 (older releases know xbzrle and QEMU's removed multithreaded 'mt' only)."""
    method = plan.aids.compression.method
    if method == "none":
        return None
    have = version_tuple(libvirt_version)
    if have is None or have < MULTIFD_COMPRESSION_LIBVIRT:
        need = ".".join(map(str, MULTIFD_COMPRESSION_LIBVIRT))
        return (f"aids.compression {method} needs libvirt >= {need} on the source (multifd compression "
                f"methods zlib/zstd), it runs libvirt {libvirt_version or 'unknown'}; drop aids.compression "
                f"from the plan or upgrade libvirt")
    qemu = version_tuple(qemu_version)
    if qemu is not None and qemu < MULTIFD_COMPRESSION_QEMU:
        return (f"aids.compression {method} needs QEMU >= 5.0 (multifd-compression), the source runs "
                f"{qemu_version}; drop aids.compression from the plan")
    return None


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    """"9.4.0" as (9, 4, 0); None when it is not a version."""
    try:
        return tuple(int(x) for x in str(text).split(".")[:3])
    except (TypeError, ValueError):
        return None


def default_migrate_uri(dst_uri: str) -> str | None:
    """Where the migration data goes by default: the destination libvirt URI's own host
    (qemu+ssh://root@b.example/system -> tcp://b.example); None for a local URI (libvirt then uses the
    destination's hostname). Never 127.0.0.1 unless the destination is addressed as that."""
    try:
        host = urllib.parse.urlsplit(dst_uri).hostname
    except ValueError:
        return None
    if not host:
        # A private libvirtd on this machine reached by its socket (the testbed's hosts): loopback.
        return "tcp://127.0.0.1" if "socket=" in urllib.parse.urlsplit(dst_uri).query else None
    return f"tcp://[{host}]" if ":" in host else f"tcp://{host}"


def definitions_text(persistent: bool, persist_dest: bool, undefine_source: bool) -> str:
    """What happens to the domain's definitions, said before the migration (and in the result)."""
    if not persistent:
        return "transient domain: no definition on either host before or after"
    dest = "defined persistently on the destination" if persist_dest else "transient on the destination"
    src = "its definition removed from the source" if undefine_source else "its definition kept (inactive) on the source"
    return f"{dest}, {src}"
