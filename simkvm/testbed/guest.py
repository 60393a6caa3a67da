"""The testbed guest: a distro kernel + a tiny initramfs whose /init dirties
memory and disk at set rates (simkvm/guest/workload.c).

Why this guest: a migration's behaviour is decided by the guest's dirty rate,
working set, zero pages and disk writes. A real OS would set those by
accident; this guest sets them on purpose (kernel command line), reports the
rates it achieved and checks canaries in memory and on disk, so a migration
can be judged against the prediction and for correctness.

The workload is also stored in the domain XML ``<metadata>``, so a program
that only holds the libvirt domain (the executor, on either host, before or
after migration) can read it back with :func:`read_guest_workload`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from xml.sax.saxutils import escape, quoteattr

from ..libvirt_api import import_libvirt
from ..model.errors import EnvironmentProblem, UserError
from .hosts import POOL_NAME, Testbed
from .libvirtd import SETUP_HINT
from .network import GuestNetwork, guest_mac

METADATA_URI = "urn:x-simkvm:workload:1"
METADATA_PREFIX = "simkvm"
GUEST_SRC_DIR = Path(__file__).resolve().parent.parent / "guest"
PAGE_BYTES = 4096
#: Pages the guest rewrites all the time by construction: its two TLB-flush regions (64 pages each,
#: see tlb_keeper() in workload.c), dirty again at every sync (the model's vm.background_hot).
GUEST_HOT_BYTES = 2 * 64 * PAGE_BYTES
#: How much of its vCPU the guest's writers behave as needing under a CPU throttle (the plan's
#: workload.memory.cpu_demand). They are paced in 10 ms slices and catch up at most 100 ms after a
#: pause (workload.c: SLICE_NS, MAX_BACKLOG_SLICES); QEMU's auto-converge at throttle t runs the
#: vCPU 10 ms, then sleeps t / (1 - t) x 10 ms (cpu_throttle_thread), so each cycle writes 110 ms
#: of work in 10 / (1 - t) ms: min(1, 11 (1 - t)) of the rate, as a demand of 1/11 gives, as long
#: as 110 ms of writing fits in 10 ms of vCPU.
GUEST_WRITER_CPU_DEMAND = 1.0 / 11.0
# virtio_blk and its dependencies: without them /dev/vda never appears.
_REQUIRED_MODULES = ("virtio_ring", "virtio", "virtio_pci", "virtio_blk")


# ------------------------------------------------------------------ workload
@dataclass(frozen=True)
class GuestWorkload:
    """What the guest does; field names carry their units (bytes, B/s)."""

    memory_bytes: int = 512 * 2**20
    disk_bytes: int = 256 * 2**20
    dirty_rate_Bps: float = 0.0
    wss_bytes: int = 64 * 2**20
    pattern: str = "random"  # random | seq
    zero_fraction: float = 0.5
    disk_write_rate_Bps: float = 0.0
    disk_wss_bytes: int = 16 * 2**20
    io_size_bytes: int = 4096

    def __post_init__(self) -> None:
        if self.memory_bytes < 128 * 2**20:
            raise UserError(f"guest memory must be at least 128MiB (the kernel needs room), got {self.memory_bytes} bytes")
        if self.disk_bytes < 4 * 2**20:
            raise UserError(f"guest disk must be at least 4MiB (1 MiB canary + working set), got {self.disk_bytes} bytes")
        if self.pattern not in ("random", "seq"):
            raise UserError(f"pattern must be 'random' or 'seq', got {self.pattern!r}")
        if not 0.0 <= self.zero_fraction <= 1.0:
            raise UserError(f"zero fraction must be between 0 and 1, got {self.zero_fraction}")
        if self.dirty_rate_Bps < 0 or self.disk_write_rate_Bps < 0:
            raise UserError("dirty rate and disk write rate must not be negative")
        if self.wss_bytes < PAGE_BYTES:
            raise UserError(f"working set must be at least one page (4KiB), got {self.wss_bytes} bytes")
        if self.wss_bytes > self.memory_bytes - 64 * 2**20:
            raise UserError(
                f"working set ({self.wss_bytes} bytes) must leave 64MiB of the guest's {self.memory_bytes} bytes "
                "for its kernel; lower --wss or raise --memory"
            )
        if self.io_size_bytes < 512 or self.io_size_bytes % 512:
            raise UserError(f"io size must be a positive multiple of 512 bytes (O_DIRECT), got {self.io_size_bytes}")
        if self.disk_wss_bytes < self.io_size_bytes:
            raise UserError(f"disk working set ({self.disk_wss_bytes}) must hold at least one io ({self.io_size_bytes})")
        if self.disk_wss_bytes > self.disk_bytes - 2**20:
            raise UserError(
                f"disk working set ({self.disk_wss_bytes} bytes) must fit the disk ({self.disk_bytes} bytes) "
                "minus its 1MiB canary; lower --disk-wss or raise --disk"
            )

    def kernel_cmdline(self) -> str:
        """The guest's workload as kernel parameters, read by workload.c."""
        return " ".join([
            "console=ttyS0", "quiet", "panic=-1",
            f"simkvm.dirty_rate={self.dirty_rate_Bps:.0f}",
            f"simkvm.wss={int(self.wss_bytes)}",
            f"simkvm.pattern={self.pattern}",
            f"simkvm.zero_fraction={self.zero_fraction:.6g}",
            f"simkvm.disk_rate={self.disk_write_rate_Bps:.0f}",
            f"simkvm.disk_wss={int(self.disk_wss_bytes)}",
            f"simkvm.io_size={int(self.io_size_bytes)}",
        ])

    def metadata_xml(self) -> str:
        """The ``<simkvm:workload>`` element stored in the domain's <metadata>."""
        fields = "".join(
            f"<{METADATA_PREFIX}:{f.name}>{escape(str(getattr(self, f.name)))}</{METADATA_PREFIX}:{f.name}>"
            for f in dataclasses.fields(self)
        )
        return f"<{METADATA_PREFIX}:workload xmlns:{METADATA_PREFIX}={quoteattr(METADATA_URI)}>{fields}</{METADATA_PREFIX}:workload>"

    @classmethod
    def from_metadata_xml(cls, text: str) -> "GuestWorkload":
        root = ET.fromstring(text)
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for child in root:
            key = child.tag.rsplit("}", 1)[-1]
            if key not in types or child.text is None:
                continue
            kind = types[key]
            values[key] = (
                int(float(child.text)) if kind == "int" else float(child.text) if kind == "float" else child.text
            )
        return cls(**values)


# ---------------------------------------------------------------- the image
@dataclass(frozen=True)
class GuestImage:
    """Kernel + initramfs both hosts' QEMUs boot (kept outside their tmpfs)."""

    kernel_path: Path
    initrd_path: Path
    kernel_version: str


def find_guest_kernel() -> tuple[str, Path]:
    """The newest installed distro kernel that ships virtio modules.

    Not ``uname -r``: the machine may run a kernel (a container's, a cloud
    VM's) whose image and modules are not installed.
    """
    def version_key(v: str) -> list[Any]:
        return [int(p) if p.isdigit() else p for p in re.split(r"[.-]", v)]

    candidates = []
    for vmlinuz in Path("/boot").glob("vmlinuz-*"):
        kver = vmlinuz.name[len("vmlinuz-"):]
        moddir = Path("/lib/modules") / kver / "kernel"
        if moddir.is_dir() and any(moddir.rglob("virtio_blk.ko*")):
            candidates.append(kver)
    if not candidates:
        raise EnvironmentProblem(f"no kernel in /boot with virtio modules in /lib/modules; {SETUP_HINT}")
    kver = max(candidates, key=version_key)
    return kver, Path("/boot") / f"vmlinuz-{kver}"


def guest_image_id(kver: str | None = None, vmlinuz: Path | None = None) -> str:
    """The testbed guest image's identity: a hash of its workload, build script and kernel.

    A profile calibrated on one image carries it (``fit.guest_image``), so a run on another image (a new
    kernel, a changed workload) can say the profile's guest constants were measured on a different guest.
    """
    if kver is None or vmlinuz is None:
        kver, vmlinuz = find_guest_kernel()
    digest = hashlib.sha256()
    for path in (GUEST_SRC_DIR / "workload.c", GUEST_SRC_DIR / "build.sh", vmlinuz):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    digest.update(kver.encode())
    return digest.hexdigest()[:16]


def build_initramfs(testbed: Testbed | None = None) -> GuestImage:
    """Build (or reuse) the guest image, cached by a hash of everything in it.

    The cache lives in the testbed state dir, outside the hosts' tmpfs mounts,
    so both hosts read the same kernel and initramfs.
    """
    tb = testbed or Testbed()
    kver, vmlinuz = find_guest_kernel()
    if shutil.which("gcc") is None or shutil.which("cpio") is None:
        raise EnvironmentProblem(f"gcc and cpio are needed to build the guest; {SETUP_HINT}")
    out = tb.cache_dir / f"guest-{guest_image_id(kver, vmlinuz)}"
    image = GuestImage(out / "vmlinuz", out / "initramfs.cpio.gz", kver)
    if image.kernel_path.exists() and image.initrd_path.exists():
        return image
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["bash", str(GUEST_SRC_DIR / "build.sh"), str(out), kver], capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise EnvironmentProblem(f"building the guest initramfs failed: {result.stderr.strip()[-800:]}; {SETUP_HINT}")
    shutil.copyfile(vmlinuz, out / "vmlinuz.tmp")
    (out / "vmlinuz.tmp").replace(image.kernel_path)
    for path in (image.kernel_path, image.initrd_path):
        path.chmod(0o644)
    return image


# ------------------------------------------------------------------- domain
def volume_path(name: str) -> str:
    """Where a guest's disk lives on every host (same path: libvirt's
    non-shared-storage migration expects it there on the destination)."""
    return f"/var/lib/libvirt/images/{name}.qcow2"


def console_path(name: str, testbed: Testbed | None = None) -> Path:
    """The guest's serial console log, shared by source and destination QEMU."""
    return (testbed or Testbed()).console_dir / f"{name}.log"


def domain_xml(
    name: str, workload: GuestWorkload, image: GuestImage, console: Path, accel: str = "qemu",
    tlb_flush: bool = True, network: "GuestNetwork | None" = None, ip: str | None = None,
) -> str:
    """Domain XML: 1 vCPU, direct kernel boot, virtio qcow2 disk, serial to a file.

    The console is a file chardev with append='on' in a directory both hosts
    see: after a migration the destination QEMU opens the same file and
    appends, so one log covers the guest's whole life.
    """
    if accel not in ("qemu", "kvm"):
        raise UserError(f"accel must be 'qemu' (TCG, the testbed default) or 'kvm', got {accel!r}")
    memory_kib = int(workload.memory_bytes) // 1024
    cmdline = workload.kernel_cmdline() + ("" if tlb_flush else " simkvm.tlb_flush=0")
    nic = ""
    if network is not None and ip:
        cmdline += f" simkvm.ip={ip}/24"
        nic = network.interface_xml(guest_mac(name))
    return f"""<domain type='{accel}'>
  <name>{escape(name)}</name>
  <metadata>{workload.metadata_xml()}</metadata>
  <memory unit='KiB'>{memory_kib}</memory>
  <currentMemory unit='KiB'>{memory_kib}</currentMemory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(image.kernel_path))}</kernel>
    <initrd>{escape(str(image.initrd_path))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file={quoteattr(volume_path(name))}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path={quoteattr(str(console))} append='on'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path={quoteattr(str(console))} append='on'/>
      <target type='serial' port='0'/>
    </console>
    {nic}
    <memballoon model='none'/>
  </devices>
</domain>
"""


def volume_xml(name: str, capacity_bytes: int) -> str:
    """A sparse qcow2 (allocation 0): what libvirt's migration expects to find
    on the destination, and what the guest starts from on the source."""
    return (
        f"<volume><name>{escape(name)}.qcow2</name><capacity unit='bytes'>{int(capacity_bytes)}</capacity>"
        "<allocation unit='bytes'>0</allocation><target><format type='qcow2'/></target></volume>"
    )


def delete_volume(conn: Any, name: str) -> bool:
    """Delete ``<name>.qcow2`` from the host's default pool, if there; True if it was. For the image a
    migration leaves on its source (simkvm never overwrites a disk, so migrating back needs it gone)."""
    libvirt = import_libvirt()
    pool = conn.storagePoolLookupByName(POOL_NAME)
    pool.refresh(0)
    try:
        pool.storageVolLookupByName(f"{name}.qcow2").delete(0)
    except libvirt.libvirtError:
        return False
    return True


def create_volume(conn: Any, name: str, capacity_bytes: int, *, replace: bool = False) -> str:
    """Create ``<name>.qcow2`` in the host's default pool; return its path."""
    libvirt = import_libvirt()
    if replace:
        delete_volume(conn, name)
    pool = conn.storagePoolLookupByName(POOL_NAME)
    pool.refresh(0)
    try:
        pool.storageVolLookupByName(f"{name}.qcow2")
    except libvirt.libvirtError:
        pass
    else:
        raise UserError(f"volume {name}.qcow2 already exists on {conn.getURI()}; remove the guest first")
    try:
        vol = pool.createXML(volume_xml(name, capacity_bytes), 0)
    except libvirt.libvirtError as exc:
        raise EnvironmentProblem(f"cannot create volume {name}.qcow2 on {conn.getURI()}: {exc}") from None
    return str(vol.path())


def define_guest(
    name: str,
    memory_bytes: int,
    disk_bytes: int,
    *,
    dirty_rate_Bps: float = 0.0,
    wss_bytes: int = 64 * 2**20,
    pattern: str = "random",
    zero_fraction: float = 0.5,
    disk_write_rate_Bps: float = 0.0,
    disk_wss_bytes: int = 16 * 2**20,
    io_size_bytes: int = 4096,
    accel: str = "qemu",
    host: str = "a",
    replace: bool = False,
    tlb_flush: bool | None = None,
    testbed: Testbed | None = None,
    network: "GuestNetwork | None" = None,
    ip: str | None = None,
) -> Any:
    """Create the disk, define and start guest ``name`` on ``host``; return the
    ``libvirt.virDomain`` (its connection stays open as long as the object lives).

    ``replace=True`` removes an existing guest of that name (on every host)
    first; otherwise an existing one is a UserError.

    ``tlb_flush``: the guest's workaround for QEMU TCG losing dirty pages
    during migration (see flush_tlb() in workload.c). None: what the
    testbed's stack needs (:attr:`~simkvm.testbed.stack.Stack.tlb_flush`,
    measured with ``simkvm testbed canaries``); False only to reproduce the
    bug; under KVM the workaround is merely a small cost.

    ``network`` (a :class:`~simkvm.testbed.network.GuestNetwork` that is up) and
    ``ip``: a virtio NIC on the testbed bridge, eth0 configured with ``ip``/24 by
    the guest, so a prober can measure the service interruption of a migration.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise UserError(f"guest name must be letters, digits, '_', '.', '-' (max 64), got {name!r}")
    workload = GuestWorkload(
        memory_bytes=int(memory_bytes), disk_bytes=int(disk_bytes), dirty_rate_Bps=float(dirty_rate_Bps),
        wss_bytes=int(wss_bytes), pattern=pattern, zero_fraction=float(zero_fraction),
        disk_write_rate_Bps=float(disk_write_rate_Bps), disk_wss_bytes=int(disk_wss_bytes),
        io_size_bytes=int(io_size_bytes),
    )
    libvirt = import_libvirt()
    tb = testbed or Testbed()
    if tlb_flush is None:
        tlb_flush = tb.stack.tlb_flush
    if network is not None and any(state.netns for state in tb.iter_hosts()):
        raise UserError("a guest NIC on the probe bridge cannot reach hosts started with 'up --link' (they live "
                        "in network namespaces of their own); bring the testbed up without --link for --network")
    image = build_initramfs(tb)
    if replace:
        remove_guest(name, testbed=tb)
    conn = tb.connect(host)
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError:
        pass
    else:
        raise UserError(f"guest {name!r} already exists on host {host}; remove it or pass replace=True")
    console = console_path(name, tb)
    console.parent.mkdir(parents=True, exist_ok=True)
    console.write_bytes(b"")  # a fresh log: wait_ready must not see an old READY
    create_volume(conn, name, workload.disk_bytes, replace=replace)
    try:
        dom = conn.defineXML(domain_xml(name, workload, image, console, accel, tlb_flush, network, ip))
        dom.create()
    except libvirt.libvirtError as exc:
        raise EnvironmentProblem(f"cannot start guest {name} on host {host}: {exc}") from None
    return dom


def remove_guest(name: str, *, testbed: Testbed | None = None) -> None:
    """Destroy and undefine ``name`` and delete its volume on every host."""
    libvirt = import_libvirt()
    tb = testbed or Testbed()
    for state in tb.iter_hosts():
        conn = tb.connect(state.name)
        try:
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                dom = None
            if dom is not None:
                persistent = dom.isPersistent()  # a transient domain vanishes on destroy
                if dom.isActive():
                    dom.destroy()
                if persistent:
                    dom.undefine()
            delete_volume(conn, name)
        finally:
            conn.close()


def read_guest_workload(dom: Any) -> dict[str, Any]:
    """The workload a simkvm guest was defined with, from its domain metadata.

    Keys: memory_bytes, disk_bytes, dirty_rate_Bps, wss_bytes, pattern,
    zero_fraction, disk_write_rate_Bps, disk_wss_bytes, io_size_bytes.
    Works on either host (the metadata migrates with the domain).
    """
    libvirt = import_libvirt()
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_URI, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            raise EnvironmentProblem(f"cannot read the metadata of domain {dom.name()!r}: {exc}") from None
        raise UserError(
            f"domain {dom.name()!r} has no simkvm workload metadata ({METADATA_URI}); "
            "only guests made by 'simkvm testbed guest' carry it"
        ) from None
    return dataclasses.asdict(GuestWorkload.from_metadata_xml(text))


def create_destination_disks(dom: Any, dconn: Any) -> list[str]:
    """Create, on the destination, an empty volume of the same size and format
    at the same path for each of ``dom``'s file disks (step 1 of a
    non-shared-storage migration). Returns the paths created."""
    libvirt = import_libvirt()
    root = ET.fromstring(dom.XMLDesc(0))
    created = []
    dpool = dconn.storagePoolLookupByName(POOL_NAME)
    dpool.refresh(0)
    pool_path = ET.fromstring(dpool.XMLDesc(0)).findtext("./target/path")
    for disk in root.findall("./devices/disk[@device='disk']"):
        source = disk.find("source")
        path = source.get("file") if source is not None else None
        if path is None:
            continue
        driver = disk.find("driver")
        fmt = (driver.get("type") if driver is not None else None) or "raw"
        svol = dom.connect().storageVolLookupByPath(path)
        _, capacity, _ = svol.info()
        if os.path.dirname(path) != pool_path:
            raise UserError(f"disk {path} is not in the destination pool directory {pool_path}; cannot pre-create it")
        vol_name = os.path.basename(path)
        try:
            dpool.storageVolLookupByName(vol_name).delete(0)  # a leftover from an earlier run
        except libvirt.libvirtError:
            pass
        xml = (
            f"<volume><name>{escape(vol_name)}</name><capacity unit='bytes'>{capacity}</capacity>"
            f"<allocation unit='bytes'>0</allocation><target><format type={quoteattr(fmt)}/></target></volume>"
        )
        try:
            created.append(str(dpool.createXML(xml, 0).path()))
        except libvirt.libvirtError as exc:
            raise EnvironmentProblem(f"cannot create {vol_name} on the destination {dconn.getURI()}: {exc}") from None
    return created


# ------------------------------------------------------------------ console
class GuestTimeout(EnvironmentProblem, TimeoutError):
    """The guest did not print what we waited for; the message holds the
    console's tail (kernel panic, module error, ...)."""


@dataclass(frozen=True)
class ConsoleLine:
    """One ``SIMKVM <KIND> key=value ...`` line from the guest's console.

    ``values`` holds numbers as floats and everything else as strings;
    ``line_no`` is the 1-based line in the log (order across a migration).
    """

    kind: str
    values: dict[str, Any]
    raw: str
    line_no: int


_LINE = re.compile(r"SIMKVM ([A-Z]+)(.*)$")


def parse_console(text: str) -> list[ConsoleLine]:
    """Every SIMKVM line in a console log (firmware and kernel noise skipped)."""
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        match = _LINE.search(line)
        if not match:
            continue
        kind, rest = match.group(1), match.group(2).strip()
        values: dict[str, Any] = {}
        if kind == "ERROR":
            values["message"] = rest
        else:
            for token in rest.split():
                key, sep, value = token.partition("=")
                if not sep:
                    continue
                try:
                    values[key] = float(value)
                except ValueError:
                    values[key] = value
        out.append(ConsoleLine(kind, values, line.strip(), no))
    return out


def console_lines(name: str, *, kind: str | None = None, testbed: Testbed | None = None) -> list[ConsoleLine]:
    """Parsed console lines of guest ``name`` (optionally only READY, RATE,
    CHECK or ERROR), in order, across migrations. Only whole lines: the serial
    port reaches the file a few bytes at a time, so a line without its newline
    yet is still being written (``mem=ok disk=`` was once read as a failed check)."""
    path = console_path(name, testbed)
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    lines = parse_console(text[: text.rfind("\n") + 1])
    return [ln for ln in lines if kind is None or ln.kind == kind]


def wait_for_console(
    name: str,
    predicate: Callable[[ConsoleLine], bool],
    timeout_s: float,
    *,
    after_line: int = 0,
    testbed: Testbed | None = None,
) -> ConsoleLine:
    """The first console line after ``after_line`` matching ``predicate``;
    GuestTimeout (with the log's tail) if none appears within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        for line in console_lines(name, testbed=testbed):
            if line.line_no > after_line and predicate(line):
                return line
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    path = console_path(name, testbed)
    try:
        tail = "\n".join(path.read_text(errors="replace").splitlines()[-10:])
    except OSError:
        tail = "(no console log)"
    raise GuestTimeout(f"guest {name}: nothing expected on its console within {timeout_s:.0f} s; log ends:\n{tail}")


def wait_ready(name: str, timeout_s: float = 60.0, *, testbed: Testbed | None = None) -> ConsoleLine:
    """Block until the guest prints ``SIMKVM READY``; return that line (its
    values: boot, mem_total, arena, filled, wss, disk_size, ...)."""
    return wait_for_console(name, lambda ln: ln.kind == "READY", timeout_s, testbed=testbed)
