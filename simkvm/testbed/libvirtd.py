"""How one testbed host's daemons are configured and started (libvirtd + virtlogd in a private namespace).

Why this is its own concern: the configuration is what makes two daemons on
one machine two *hosts* to libvirt (distinct ``host_uuid``, own ports, own
migration port range) and what keeps them private (who may connect, which
addresses QEMU listens on). The start script is the namespace's first
process: it mounts the host's private directories, then runs the daemons of
the chosen :class:`~simkvm.testbed.stack.Stack`, chrooted into the stack's
root when it has one.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..model.errors import EnvironmentProblem
from .stack import Stack

SETUP_HINT = "run 'bash scripts/setup-system.sh' as root (and 'pip install -e .[all]' for libvirt-python)"

# Directories each host gets a private tmpfs over, with the sub-directories
# libvirt expects to find (the tmpfs hides the packaged ones).
TMPFS_LAYOUT: dict[str, tuple[str, ...]] = {
    "/run": ("libvirt", "libvirt/qemu", "lock"),
    "/var/lib/libvirt": (
        "images", "boot", "dnsmasq", "qemu", "qemu/channel", "qemu/channel/target",
        "qemu/nvram", "qemu/save", "qemu/snapshot", "qemu/dump", "qemu/ram",
    ),
    "/var/log/libvirt": ("qemu",),
}
# /var/cache/libvirt is bound to a per-host directory in the build cache rather
# than a tmpfs: libvirt keeps its QEMU capability probe there, and re-probing
# QEMU costs ~8 s per host on every `up` (libvirt re-validates the cache
# against the QEMU binary itself).
CACHE_MOUNT = "/var/cache/libvirt"
# Directories that must never hold the state dir: the hosts hide them.
HIDDEN_PREFIXES = tuple(TMPFS_LAYOUT) + (CACHE_MOUNT, "/etc/libvirt")


@dataclass(frozen=True)
class HostSpec:
    """Where one host listens: its libvirtd socket in the testbed's state dir, and a migration port
    range fixed by the testbed's base port so two testbeds never clash."""

    name: str
    sock_dir: str
    migration_port_min: int
    migration_port_max: int
    #: With a link, the host's address on it: where its QEMU listens for an incoming migration
    #: stream and serves the NBD disk export (qemu.conf migration_address). None on loopback:
    #: libvirt refuses 127.0.0.1 there ("must not be the address of the local machine"), so
    #: the executor binds each migration with VIR_MIGRATE_PARAM_LISTEN_ADDRESS instead.
    migration_address: str | None = None

    @property
    def socket(self) -> str:
        """libvirtd's read-write socket: root only (mode 0700), the testbed's access control."""
        return f"{self.sock_dir}/libvirt-sock"

    @property
    def uri(self) -> str:
        """The libvirt URI a client (or the executor) opens for this host."""
        return f"qemu+unix:///system?socket={self.socket}"


def which(name: str) -> str:
    """Absolute path of a system binary (sbin included), or EnvironmentProblem with the setup hint."""
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        raise EnvironmentProblem(f"{name} not found; {SETUP_HINT}")
    return path


def write_configs(spec: HostSpec, host_dir: Path, host_uuid: str, stack: Stack) -> Path:
    """A private copy of the stack's /etc/libvirt with this host's identity and ports."""
    etc = host_dir / "etc-libvirt"
    if etc.exists():
        shutil.rmtree(etc)
    shutil.copytree(stack.path("/etc/libvirt"), etc, symlinks=True)
    # Nothing from the real machine should autostart in a testbed host.
    for sub in ("qemu/networks/autostart", "storage/autostart", "qemu/autostart"):
        shutil.rmtree(etc / sub, ignore_errors=True)
    for stale in (etc / "qemu").glob("*.xml"):
        stale.unlink()
    with open(etc / "libvirtd.conf", "a") as f:
        f.write(
            f"\n# --- simkvm testbed host {spec.name} ---\n"
            f'host_uuid = "{host_uuid}"\n'
            # No TCP listener: anyone on the machine could connect, and libvirtd is
            # root-equivalent. Unix sockets only, in the host's directory, root only: the
            # file mode is the authentication (libvirt's "auth_unix_rw", polkit being
            # absent here). `libvirtd --listen` is not used.
            "listen_tcp = 0\n"
            "listen_tls = 0\n"
            f'unix_sock_dir = "{spec.sock_dir}"\n'
            'unix_sock_group = "root"\n'
            'unix_sock_rw_perms = "0700"\n'
            'unix_sock_ro_perms = "0700"\n'
            'unix_sock_admin_perms = "0700"\n'
            'auth_unix_rw = "none"\n'
            'auth_unix_ro = "none"\n'
            "log_level = 3\n"
        )
    with open(etc / "qemu.conf", "a") as f:
        f.write(
            f"\n# --- simkvm testbed host {spec.name} ---\n"
            f"migration_port_min = {spec.migration_port_min}\n"
            f"migration_port_max = {spec.migration_port_max}\n"
            # QEMU as root without relabelling: both hosts open the same
            # kernel, initramfs and console files; relabelling by one host
            # (and restoring after a migration) would break the other.
            'user = "root"\n'
            'group = "root"\n'
            "dynamic_ownership = 0\n"
            "remember_owner = 0\n"
            'security_driver = "none"\n'
            # No systemd, maybe no writable cgroup tree: do not depend on it.
            "cgroup_controllers = [ ]\n"
            "namespaces = [ ]\n"
        )
        if spec.migration_address:
            # The incoming migration stream and the NBD server the destination exports
            # its disks on listen here, not on 0.0.0.0 (libvirt's default): the NBD
            # export is writable and unauthenticated.
            f.write(f'migration_address = "{spec.migration_address}"\n')
    return etc


def start_script(spec: HostSpec, host_dir: Path, etc: Path, capacity_bytes: int, stack: Stack,
                 libvirt_cache: Path, shared_dirs: tuple[Path, ...]) -> Path:
    """Shell run as the namespace's first process: mounts, virtlogd, then
    exec libvirtd (so the recorded pid is libvirtd's).

    ``shared_dirs`` (the testbed's state and guest-image cache) must be seen
    at the same paths by QEMU: the domain XML names the kernel, initramfs and
    console files there. With a stack root they are bound into it, as are
    /dev, /proc, /sys and the host's private directories.
    """
    lines = [
        "#!/bin/sh",
        "# Generated by simkvm.testbed.libvirtd: runs inside a private mount+UTS namespace.",
        "set -e",
        f"hostname simkvm-{spec.name}",
    ]
    for mountpoint, subdirs in TMPFS_LAYOUT.items():
        size = capacity_bytes if mountpoint == "/var/lib/libvirt" else 256 * 2**20
        lines.append(f"mkdir -p {mountpoint}")
        lines.append(f"mount -t tmpfs -o size={size},mode=0755 simkvm-{spec.name} {mountpoint}")
        for sub in subdirs:
            lines.append(f"mkdir -p {mountpoint}/{sub}")
    # libvirt resolves its own hostname (getaddrinfo); without an entry
    # that is a DNS timeout of several seconds on an offline machine.
    hosts_file = host_dir / "hosts"
    try:
        base = Path("/etc/hosts").read_text()
    except OSError:
        base = "127.0.0.1 localhost\n"
    hosts_file.write_text(base.rstrip("\n") + f"\n127.0.1.1 simkvm-{spec.name}\n")
    (libvirt_cache / "qemu").mkdir(parents=True, exist_ok=True)
    lines += [
        f"mount --bind {libvirt_cache} {CACHE_MOUNT}",
        f"mount --bind {etc} /etc/libvirt",
        f"mount --bind {hosts_file} /etc/hosts",
        f"echo $$ > {host_dir}/libvirtd.pid",
    ]
    root = stack.root
    if root is None:
        virtlogd, libvirtd = which("virtlogd"), which("libvirtd")
    else:
        # The same view inside the root: every path a daemon or QEMU opens
        # (sockets in /run, images, logs, the probe cache, configs, kernel,
        # console) is where it is outside, so `nsenter` tools and the domain
        # XML need no translation. The mounts live in this namespace only.
        for path in ("/dev", "/proc", "/sys", *TMPFS_LAYOUT, CACHE_MOUNT, "/etc/libvirt",
                     *sorted({str(p) for p in shared_dirs})):
            lines.append(f"mkdir -p {root}{path} && mount --rbind {path} {root}{path}")
        lines.append(f"touch {root}/etc/hosts && mount --bind {hosts_file} {root}/etc/hosts")
        chroot = f"{which('chroot')} {root}"
        virtlogd, libvirtd = f"{chroot} /usr/sbin/virtlogd", f"{chroot} /usr/sbin/libvirtd"
    lines += [
        f"{virtlogd} >>{host_dir}/virtlogd.log 2>&1 &",
        f"echo $! > {host_dir}/virtlogd.pid",
        f"exec {libvirtd} >>{host_dir}/libvirtd.log 2>&1",
    ]
    script = host_dir / "start.sh"
    script.write_text("\n".join(lines) + "\n")
    return script
