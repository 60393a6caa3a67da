"""Preparation: can the destination take this VM, and its empty disks there.

This is the seed's step 1, done by us before libvirt's job starts (libvirt
itself would only fail half-way through with a less helpful message):

1. the destination has the memory for the guest (node memory stats),
2. for each migrated disk, the destination has an active storage pool whose
   directory holds the disk's directory, with room for the disk's allocation,
   and no file of that name yet (we never overwrite anything),
3. empty images of the same capacity and format are created at the same paths
   through libvirt's storage API (``virStorageVolCreateXML``; no ssh), and we
   remember exactly which ones, so an abort removes only those.

A failed check is a *refusal*: the VM is untouched and nothing was created.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from ..libvirt_api import import_libvirt
from ..model.plan import Plan
from ..model.units import fmt_bytes

#: qcow2 header, refcount table and first refcount block, rounded up.
QCOW2_HEADER_BYTES = 1 * 2**20
#: What a running QEMU needs beyond guest RAM (TCG translation cache, device emulation).
QEMU_OVERHEAD_BYTES = 64 * 2**20


@dataclass(frozen=True)
class DomainDisk:
    """A disk of the running domain as the source sees it."""

    target: str  # vda
    path: str
    format: str  # qcow2 | raw
    capacity_bytes: int
    allocation_bytes: int  # what it occupies on the source now
    backing_path: str | None = None
    backing_format: str | None = None

    @property
    def growth_bytes(self) -> int:
        """What the destination's copy can grow to while the guest keeps writing: the virtual size
        (a mirror copies every cluster the guest writes, up to all of them), plus qcow2's metadata
        (one 8-byte L2 entry per 64 KiB cluster, refcounts, header) for qcow2."""
        if self.format == "qcow2":
            return self.capacity_bytes + self.capacity_bytes // 4096 + QCOW2_HEADER_BYTES
        return self.capacity_bytes


class Refusal(Exception):
    """The destination cannot take the VM; nothing was changed."""


@dataclass
class CreatedVolume:
    path: str
    pool_name: str
    vol: Any  # libvirt.virStorageVol


@dataclass
class DestinationDisks:
    """The images we created on the destination: the only ones we ever delete."""

    created: list[CreatedVolume] = field(default_factory=list)

    def remove(self) -> list[str]:
        """Delete every image we created; returns messages about the ones that could not be."""
        libvirt = import_libvirt()

        problems = []
        for cv in reversed(self.created):
            try:
                cv.vol.delete(0)
            except libvirt.libvirtError as exc:
                problems.append(f"could not delete {cv.path} on the destination: {exc}")
        self.created.clear()
        return problems

    @property
    def paths(self) -> list[str]:
        return [cv.path for cv in self.created]


def domain_disks(dom: Any, src_conn: Any) -> list[DomainDisk]:
    """File-backed, writable, unshared disks of ``dom`` (the ones a non-shared migration copies)."""
    libvirt = import_libvirt()

    root = ET.fromstring(dom.XMLDesc(0))
    disks = []
    for d in root.findall("./devices/disk"):
        if d.get("device", "disk") != "disk" or d.find("readonly") is not None or d.find("shareable") is not None:
            continue
        source, target = d.find("source"), d.find("target")
        if source is None or target is None or d.get("type") not in ("file", None):
            continue
        path = source.get("file")
        if not path:
            continue
        driver = d.find("driver")
        fmt = driver.get("type", "raw") if driver is not None else "raw"
        capacity, allocation, physical = dom.blockInfo(target.get("dev"), 0)
        try:  # the source pool's view counts the blocks really in use
            allocation = int(src_conn.storageVolLookupByPath(path).info()[2])
        except libvirt.libvirtError:
            allocation = int(max(allocation, physical))
        backing_path = backing_format = None
        backing = d.find("backingStore/source")
        if backing is not None and backing.get("file"):
            backing_path = backing.get("file")
            bfmt = d.find("backingStore/format")
            backing_format = bfmt.get("type") if bfmt is not None else None
        disks.append(DomainDisk(target.get("dev", ""), path, fmt, int(capacity), int(allocation),
                                backing_path, backing_format))
    return disks


def destination_memory_available(dst_conn: Any) -> int:
    """Bytes of memory a new guest can get on the destination: free + buffers + page cache.

    ``virNodeGetFreeMemory`` is MemFree only, which a busy page cache makes
    look tiny; the node memory stats let us count reclaimable cache too.
    """
    libvirt = import_libvirt()

    try:
        st = dst_conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
        return int((st.get("free", 0) + st.get("buffers", 0) + st.get("cached", 0)) * 1024)
    except libvirt.libvirtError:
        return int(dst_conn.getFreeMemory())


def _pool_dirs(dst_conn: Any) -> list[tuple[str, Any, bool]]:
    """(target directory, pool, active) for every storage pool on the destination."""
    out = []
    for pool in dst_conn.listAllStoragePools(0):
        path = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path")
        if path:
            out.append((os.path.normpath(path), pool, bool(pool.isActive())))
    return out


@dataclass
class DiskPlacement:
    disk: DomainDisk
    pool: Any


def check_no_domain_there(dst_conn: Any, domain: str, dst_name: str, recover_command: str) -> bool:
    """Refuse when the destination has a domain of that name running or paused (an incoming one); else
    whether it has an (inactive) definition of it."""
    libvirt = import_libvirt()
    try:
        state, reason = dst_conn.lookupByName(domain).state()
    except libvirt.libvirtError:
        state = None
    if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
        raise Refusal(f"refused: a domain named {domain!r} is already running on {dst_name}")
    if state == libvirt.VIR_DOMAIN_PAUSED:
        what = ("an incoming migration of it is under way or was cut short there"
                if reason == libvirt.VIR_DOMAIN_PAUSED_MIGRATION else "it is paused there")
        raise Refusal(f"refused: a domain named {domain!r} exists on {dst_name} ({what}); if no other "
                      f"migration runs, settle it with {recover_command}")
    return state is not None


def check_destination(plan: Plan, dom: Any, dst_conn: Any, disks: list[DomainDisk], dst_name: str,
                      dst_uri: str | None = None) -> list[DiskPlacement]:
    """Raise :class:`Refusal` unless the destination can take the VM; returns where each disk goes."""
    libvirt = import_libvirt()

    need_mem = int(dom.maxMemory()) * 1024 + QEMU_OVERHEAD_BYTES
    have_mem = destination_memory_available(dst_conn)
    if have_mem < need_mem:
        raise Refusal(
            f"refused: destination {dst_name} has {fmt_bytes(have_mem)} of memory available, the VM needs "
            f"{fmt_bytes(need_mem)} (guest RAM + {fmt_bytes(QEMU_OVERHEAD_BYTES)} QEMU overhead); "
            f"free memory there or pick another host"
        )
    if plan.migration.storage == "shared":
        return []
    pools = _pool_dirs(dst_conn)
    placements: list[DiskPlacement] = []
    need_per_pool: dict[str, int] = {}
    for disk in disks:
        directory = os.path.dirname(os.path.normpath(disk.path))
        match = [(p, active) for path, p, active in pools if path == directory]
        if not match:
            raise Refusal(
                f"refused: no storage pool on {dst_name} has directory {directory} (for disk {disk.target} "
                f"{disk.path}); define one, e.g. virsh pool-define-as images dir --target {directory} "
                f"&& virsh pool-start images"
            )
        pool, active = match[0]
        if not active:
            raise Refusal(f"refused: storage pool {pool.name()!r} on {dst_name} ({directory}) is not active; "
                          f"start it with virsh pool-start {pool.name()}")
        try:
            pool.refresh(0)  # see files created outside libvirt
        except libvirt.libvirtError:
            pass
        name = os.path.basename(disk.path)
        try:
            pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            pass
        else:
            raise Refusal(
                f"refused: {disk.path} already exists on {dst_name}; simkvm never overwrites a disk. If it is a "
                f"leftover, delete it with virsh{' -c ' + dst_uri if dst_uri else ''} vol-delete {name} "
                f"--pool {pool.name()}"
            )
        need_per_pool[pool.name()] = need_per_pool.get(pool.name(), 0) + disk.growth_bytes
        placements.append(DiskPlacement(disk, pool))
    for placement in placements:
        pool = placement.pool
        available = int(pool.info()[3])
        need = need_per_pool[pool.name()]
        if available < need:
            raise Refusal(
                f"refused: storage pool {pool.name()!r} on {dst_name} has {fmt_bytes(available)} free, the VM's "
                f"disks there can grow to {fmt_bytes(need)} (their virtual size: the guest may write all of it "
                f"during the copy); free space there or use shared storage"
            )
    return placements


def volume_xml(disk: DomainDisk) -> str:
    """An empty image of the same capacity and format (and backing file, for incremental copies)."""
    backing = ""
    if disk.backing_path:
        fmt = f"<format type='{escape(disk.backing_format)}'/>" if disk.backing_format else ""
        backing = f"<backingStore><path>{escape(disk.backing_path)}</path>{fmt}</backingStore>"
    return (
        f"<volume><name>{escape(os.path.basename(disk.path))}</name>"
        f"<capacity unit='bytes'>{disk.capacity_bytes}</capacity><allocation unit='bytes'>0</allocation>"
        f"<target><format type='{escape(disk.format)}'/></target>{backing}</volume>"
    )


def create_disks(placements: list[DiskPlacement], dst_name: str, incremental: bool,
                 into: DestinationDisks | None = None) -> DestinationDisks:
    """Create each empty image; on any failure delete the ones already made and refuse.

    ``into`` is filled as we go, so an interrupt between two creations still
    knows which images are ours.
    """
    libvirt = import_libvirt()

    made = into if into is not None else DestinationDisks()
    for p in placements:
        disk = p.disk if incremental else DomainDisk(p.disk.target, p.disk.path, p.disk.format,
                                                     p.disk.capacity_bytes, p.disk.allocation_bytes)
        try:
            vol = p.pool.createXML(volume_xml(disk), 0)
        except libvirt.libvirtError as exc:
            made.remove()
            raise Refusal(f"refused: could not create {disk.path} on {dst_name}: {exc}") from None
        if os.path.normpath(vol.path()) != os.path.normpath(disk.path):
            made.created.append(CreatedVolume(vol.path(), p.pool.name(), vol))
            made.remove()
            raise Refusal(f"refused: the pool on {dst_name} put the image at {vol.path()}, not {disk.path}")
        made.created.append(CreatedVolume(disk.path, p.pool.name(), vol))
    return made
