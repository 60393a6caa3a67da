"""Two libvirt "hosts" on one machine: what they are, how they start and stop.

Why namespaces: libvirt refuses to migrate a domain to the host it runs on,
and it decides that by comparing ``host_uuid``. Two ``libvirtd`` daemons, each
in its own mount + UTS namespace with its own ``/run``, ``/var/lib/libvirt``,
``/var/log/libvirt``, ``/var/cache/libvirt`` (tmpfs) and a private copy of
``/etc/libvirt`` (distinct ``host_uuid``, own TCP port, own migration port
range), are two hosts as far as libvirt and QEMU are concerned. Their
``/var/lib/libvirt/images`` are different directories, so storage really is
not shared: a non-shared-storage migration has to copy the disk.

Everything runs on loopback with ``auth_tcp = "none"``: this is a testbed on a
single machine, never expose it.

State (pids, namespaces, config copies, consoles, the guest build cache) lives
in ``/var/lib/simkvm-testbed`` (env ``SIMKVM_TESTBED_DIR``), outside every
tmpfs the hosts mount, so both hosts' QEMUs can read the guest's kernel and
write its serial console to the same file before and after a migration.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..model.errors import EnvironmentProblem, UserError

DEFAULT_STATE_DIR = "/var/lib/simkvm-testbed"
DEFAULT_BASE_PORT = 16591
DEFAULT_DISK_CAPACITY_BYTES = 4 * 2**30
HOST_NAMES: tuple[str, ...] = ("a", "b")
POOL_NAME = "default"
POOL_PATH = "/var/lib/libvirt/images"

SETUP_HINT = "run 'bash scripts/setup-system.sh' as root (and 'pip install -e .[all]' for libvirt-python)"

# Directories each host gets a private tmpfs over, with the sub-directories
# libvirt expects to find (the tmpfs hides the packaged ones).
_TMPFS_LAYOUT: dict[str, tuple[str, ...]] = {
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
_CACHE_MOUNT = "/var/cache/libvirt"
# Directories that must never hold the state dir: the hosts hide them.
_HIDDEN_PREFIXES = tuple(_TMPFS_LAYOUT) + (_CACHE_MOUNT, "/etc/libvirt")

# Process names that may live in a host's namespace (used when the recorded
# libvirtd is gone and we clean up what it left behind).
_OWN_COMMS = frozenset({
    "libvirtd", "virtlogd", "qemu-system-x86", "qemu-system-x86_64", "sh", "nsenter", "sleep",
})

_REQUIRED_BINARIES: tuple[str, ...] = (
    "qemu-system-x86_64", "qemu-img", "libvirtd", "virtlogd", "unshare", "nsenter", "setsid",
    "mount", "gcc", "cpio", "gzip",
)
_STATIC_LIBC_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libc.a", "/usr/lib/libc.a", "/usr/lib64/libc.a")


# ----------------------------------------------------------------- the model
@dataclass(frozen=True)
class HostSpec:
    """Where one host listens: fixed by its index so two testbeds never clash."""

    name: str
    tcp_port: int
    migration_port_min: int
    migration_port_max: int

    @property
    def uri(self) -> str:
        """The libvirt URI a client (or the executor) opens for this host."""
        return f"qemu+tcp://127.0.0.1:{self.tcp_port}/system"


@dataclass(frozen=True)
class HostState:
    """What ``up`` recorded about a running host (``testbed.json``)."""

    name: str
    uri: str
    tcp_port: int
    libvirtd_pid: int
    virtlogd_pid: int | None
    mnt_ns: str
    host_uuid: str
    disk_capacity_bytes: int


def host_specs(base_port: int) -> dict[str, HostSpec]:
    """Host a listens on base_port, b on base_port + 1; migration ports (also
    used for the NBD disk export) are 50-port ranges above base_port + 2000,
    so testbeds with base ports 100 apart never overlap."""
    specs = {}
    for i, name in enumerate(HOST_NAMES):
        lo = base_port + 2000 + 50 * i
        specs[name] = HostSpec(name, base_port + i, lo, lo + 49)
    return specs


# ---------------------------------------------------------------- utilities
def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@contextlib.contextmanager
def _subreaper() -> Iterator[None]:
    """While a host is killed, orphans of our descendants (virtlogd, once libvirtd is gone)
    become our children, so :func:`_reap` can collect them too. Only for that window: kept
    on, every QEMU libvirtd daemonizes would come to us."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        libc, ok = None, False
    try:
        yield
    finally:
        if ok and libc is not None:
            libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _reap(pids: Sequence[int]) -> None:
    """Collect the exit status of those of ``pids`` that are our children (libvirtd when this
    process ran ``up``), so no zombie is left; the others are their parents' business."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _mnt_ns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _comm(pid: int | str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _pids_in_ns(ns: str) -> list[int]:
    """Every live process whose mount namespace is ``ns``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and _mnt_ns(entry) == ns and _pid_alive(int(entry)):
            out.append(int(entry))
    return out


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


_libvirt_quiet = False


def _import_libvirt() -> Any:
    """The libvirt module, with its default handler (which prints every error
    to stderr, even ones we catch, e.g. a pool lookup that may fail) silenced:
    errors still arrive as exceptions."""
    global _libvirt_quiet
    try:
        import libvirt  # type: ignore[import-not-found]
    except ImportError:
        raise EnvironmentProblem(f"python module 'libvirt' is missing: {SETUP_HINT}") from None
    if not _libvirt_quiet:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _libvirt_quiet = True
    return libvirt


def check_environment() -> None:
    """Raise EnvironmentProblem naming everything missing, with the command
    that fixes it, before ``up`` starts anything half-way."""
    missing = [b for b in _REQUIRED_BINARIES if shutil.which(b, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]
    if not any(Path(p).exists() for p in _STATIC_LIBC_CANDIDATES):
        missing.append("static libc (libc6-dev)")
    try:
        import libvirt  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        missing.append("python module 'libvirt'")
    if missing:
        raise EnvironmentProblem(f"testbed prerequisites missing: {', '.join(missing)}; {SETUP_HINT}")
    if os.geteuid() != 0:
        raise EnvironmentProblem("the testbed needs root (it mounts tmpfs in namespaces and runs libvirtd); rerun as root")


def _which(name: str) -> str:
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        raise EnvironmentProblem(f"{name} not found; {SETUP_HINT}")
    return path


# ------------------------------------------------------------------ testbed
class Testbed:
    """Two libvirt hosts, "a" and "b", in private namespaces on this machine.

    ``up()`` is idempotent, ``down()`` removes every process and file it
    created (the guest build cache excepted: rebuilding it is pure waste).
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        base_port: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir or os.environ.get("SIMKVM_TESTBED_DIR") or DEFAULT_STATE_DIR).absolute()
        cache = cache_dir or os.environ.get("SIMKVM_TESTBED_CACHE")
        self._cache_dir = Path(cache).absolute() if cache else self.state_dir / "cache"
        for path in (self.state_dir, self._cache_dir):
            resolved = str(path.resolve())
            for prefix in _HIDDEN_PREFIXES:
                if resolved == prefix or resolved.startswith(prefix + "/"):
                    raise UserError(
                        f"testbed directory {resolved} is under {prefix}, which each host hides behind its own "
                        "mount; choose a directory elsewhere (e.g. /var/lib/simkvm-testbed)"
                    )
        port = base_port if base_port is not None else int(os.environ.get("SIMKVM_TESTBED_PORT", DEFAULT_BASE_PORT))
        if not 1024 <= port <= 65000 - 2200:
            raise UserError(f"testbed base port must be between 1024 and 62800, got {port}")
        self.base_port = port
        self.specs = host_specs(port)

    # -- paths
    @property
    def state_file(self) -> Path:
        return self.state_dir / "testbed.json"

    @property
    def console_dir(self) -> Path:
        """Serial consoles of guests: outside the hosts' tmpfs, so the
        destination QEMU appends to the same file after a migration."""
        return self.state_dir / "consoles"

    @property
    def cache_dir(self) -> Path:
        """Guest kernel + initramfs builds (keyed by content hash) and libvirt's
        QEMU probe; kept by down(). Env SIMKVM_TESTBED_CACHE shares it
        between testbeds."""
        return self._cache_dir

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise up/down of this state dir between processes: two
        concurrent `up`s would otherwise start four daemons on two ports."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def host_dir(self, name: str) -> Path:
        return self.state_dir / "hosts" / name

    def uri(self, name: str) -> str:
        """libvirt URI of host ``name`` ("a" or "b")."""
        return self._spec(name).uri

    def _spec(self, name: str) -> HostSpec:
        if name not in self.specs:
            raise UserError(f"unknown testbed host {name!r}; the hosts are {', '.join(HOST_NAMES)}")
        return self.specs[name]

    # -- recorded state
    def _read_state(self) -> dict[str, HostState]:
        try:
            raw = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        hosts = {}
        for name, h in raw.get("hosts", {}).items():
            try:
                hosts[name] = HostState(**h)
            except TypeError:
                continue
        return hosts

    def _write_state(self, hosts: Mapping[str, HostState]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"hosts": {n: dataclasses.asdict(h) for n, h in hosts.items()}}, indent=2))
        tmp.replace(self.state_file)

    def host_state(self, name: str) -> HostState:
        """The recorded state of a running host, or EnvironmentProblem if it is not up."""
        self._spec(name)
        state = self._read_state().get(name)
        if state is None or not self._healthy(state):
            raise EnvironmentProblem(f"testbed host {name!r} is not running; run 'simkvm testbed up'")
        return state

    # -- health
    def _healthy(self, state: HostState) -> bool:
        return (
            _pid_alive(state.libvirtd_pid)
            and _comm(state.libvirtd_pid) == "libvirtd"
            and _mnt_ns(state.libvirtd_pid) == state.mnt_ns
            and _port_open(state.tcp_port)
        )

    # -- lifecycle
    def up(self, disk_capacity_bytes: int | Mapping[str, int] = DEFAULT_DISK_CAPACITY_BYTES) -> dict[str, Any]:
        """Start both hosts (or keep them, if already healthy) and return status().

        ``disk_capacity_bytes`` sizes each host's /var/lib/libvirt tmpfs, where
        its disk images live; a mapping sets hosts separately (e.g.
        ``{"a": 4 << 30, "b": 64 << 20}`` for a destination too small for a
        disk). A running host whose capacity differs is resized in place.
        """
        check_environment()
        capacities = self._capacities(disk_capacity_bytes)
        with self._locked():
            self._up_locked(capacities)
        return self.status()

    def _up_locked(self, capacities: Mapping[str, int]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.console_dir.mkdir(parents=True, exist_ok=True)
        recorded = self._read_state()
        new_state: dict[str, HostState] = {}
        for name in HOST_NAMES:
            state = recorded.get(name)
            if state is not None and self._healthy(state):
                if state.disk_capacity_bytes != capacities[name]:
                    self._resize(state, capacities[name])
                    state = dataclasses.replace(state, disk_capacity_bytes=capacities[name])
                new_state[name] = state
                continue
            if state is not None:
                self._stop_host(state)  # stale: clean before restarting
            new_state[name] = self._start_host(name, capacities[name])
            self._write_state({**recorded, **new_state})
        self._write_state(new_state)
        # The first connection makes libvirtd probe QEMU (seconds when not
        # cached): do both hosts at once.
        with ThreadPoolExecutor(len(HOST_NAMES)) as pool:
            list(pool.map(self._ensure_pool, HOST_NAMES))

    def _capacities(self, disk_capacity_bytes: int | Mapping[str, int]) -> dict[str, int]:
        if isinstance(disk_capacity_bytes, Mapping):
            unknown = set(disk_capacity_bytes) - set(HOST_NAMES)
            if unknown:
                raise UserError(f"disk capacity given for unknown host(s) {sorted(unknown)}; hosts are {HOST_NAMES}")
            caps = {n: int(disk_capacity_bytes.get(n, DEFAULT_DISK_CAPACITY_BYTES)) for n in HOST_NAMES}
        else:
            caps = {n: int(disk_capacity_bytes) for n in HOST_NAMES}
        for n, c in caps.items():
            if c < 16 * 2**20:
                raise UserError(f"disk capacity of host {n} must be at least 16MiB, got {c} bytes")
        return caps

    def _resize(self, state: HostState, capacity_bytes: int) -> None:
        result = self.run(state.name, ["mount", "-o", f"remount,size={capacity_bytes}", "/var/lib/libvirt"], check=False)
        if result.returncode != 0:
            raise UserError(
                f"cannot resize host {state.name}'s disk space to {capacity_bytes} bytes "
                f"({result.stderr.strip()}); delete volumes first or run 'simkvm testbed down' and up again"
            )

    def _write_configs(self, spec: HostSpec, host_dir: Path, host_uuid: str) -> Path:
        """A private copy of /etc/libvirt with this host's identity and ports."""
        etc = host_dir / "etc-libvirt"
        if etc.exists():
            shutil.rmtree(etc)
        shutil.copytree("/etc/libvirt", etc, symlinks=True)
        # Nothing from the real machine should autostart in a testbed host.
        for sub in ("qemu/networks/autostart", "storage/autostart", "qemu/autostart"):
            shutil.rmtree(etc / sub, ignore_errors=True)
        for stale in (etc / "qemu").glob("*.xml"):
            stale.unlink()
        with open(etc / "libvirtd.conf", "a") as f:
            f.write(
                "\n# --- simkvm testbed host {name} ---\n"
                f'host_uuid = "{host_uuid}"\n'
                "listen_tcp = 1\n"
                "listen_tls = 0\n"  # without it libvirtd exits: no TLS certificates here
                'listen_addr = "127.0.0.1"\n'
                f'tcp_port = "{spec.tcp_port}"\n'
                'auth_tcp = "none"\n'  # loopback-only testbed
                "log_level = 3\n".format(name=spec.name)
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
        return etc

    def _start_script(self, spec: HostSpec, host_dir: Path, etc: Path, capacity_bytes: int) -> Path:
        """Shell run as the namespace's first process: mounts, virtlogd, then
        exec libvirtd (so the recorded pid is libvirtd's)."""
        lines = [
            "#!/bin/sh",
            "# Generated by simkvm.testbed.hosts: runs inside a private mount+UTS namespace.",
            "set -e",
            f"hostname simkvm-{spec.name}",
        ]
        for mountpoint, subdirs in _TMPFS_LAYOUT.items():
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
        libvirt_cache = self.cache_dir / f"libvirt-cache-{spec.name}"
        (libvirt_cache / "qemu").mkdir(parents=True, exist_ok=True)
        lines += [
            f"mount --bind {libvirt_cache} {_CACHE_MOUNT}",
            f"mount --bind {etc} /etc/libvirt",
            f"mount --bind {hosts_file} /etc/hosts",
            f"echo $$ > {host_dir}/libvirtd.pid",
            f"{_which('virtlogd')} >>{host_dir}/virtlogd.log 2>&1 &",
            f"echo $! > {host_dir}/virtlogd.pid",
            f"exec {_which('libvirtd')} --listen >>{host_dir}/libvirtd.log 2>&1",
        ]
        script = host_dir / "start.sh"
        script.write_text("\n".join(lines) + "\n")
        return script

    def _start_host(self, name: str, capacity_bytes: int) -> HostState:
        spec = self._spec(name)
        host_dir = self.host_dir(name)
        if host_dir.exists():
            shutil.rmtree(host_dir)
        host_dir.mkdir(parents=True)
        if _port_open(spec.tcp_port):
            raise EnvironmentProblem(
                f"port {spec.tcp_port} for testbed host {name} is already in use by another program; "
                "stop it, or pick other ports with SIMKVM_TESTBED_PORT"
            )
        host_uuid = str(uuid.uuid4())
        etc = self._write_configs(spec, host_dir, host_uuid)
        script = self._start_script(spec, host_dir, etc, capacity_bytes)
        # A new session, so the daemons outlive this process, as a CLI `up` requires; but
        # our own child (not `setsid -f`'s orphan), so that a `down` in the same process
        # (a pytest session) reaps libvirtd instead of leaving a `[libvirtd] <defunct>`
        # behind wherever PID 1 does not reap orphans (containers, sandboxes).
        with open(host_dir / "start.log", "wb") as log:
            subprocess.Popen(
                [_which("unshare"), "--mount", "--uts", "--propagation", "private", "--", "/bin/sh", str(script)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 30
        pid = None
        while time.monotonic() < deadline:
            pid = self._read_pid(host_dir / "libvirtd.pid")
            if pid and _comm(pid) == "libvirtd" and _port_open(spec.tcp_port):
                break
            if pid and not _pid_alive(pid):
                break
            time.sleep(0.1)
        if not pid or not _pid_alive(pid) or not _port_open(spec.tcp_port):
            log = _tail(host_dir / "libvirtd.log") + "\n" + _tail(host_dir / "start.log")
            if pid:
                self._kill_namespace(_mnt_ns(pid), pid)
            raise EnvironmentProblem(f"libvirtd for testbed host {name} did not come up; its log ends:\n{log}")
        return HostState(
            name=name, uri=spec.uri, tcp_port=spec.tcp_port, libvirtd_pid=pid,
            virtlogd_pid=self._read_pid(host_dir / "virtlogd.pid"), mnt_ns=_mnt_ns(pid) or "",
            host_uuid=host_uuid, disk_capacity_bytes=capacity_bytes,
        )

    @staticmethod
    def _read_pid(path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _ensure_pool(self, name: str) -> None:
        """The "default" dir pool at /var/lib/libvirt/images, defined and active."""
        libvirt = _import_libvirt()
        conn = self.connect(name)
        try:
            try:
                pool = conn.storagePoolLookupByName(POOL_NAME)
            except libvirt.libvirtError:
                pool = conn.storagePoolDefineXML(
                    f"<pool type='dir'><name>{POOL_NAME}</name><target><path>{POOL_PATH}</path></target></pool>", 0
                )
            if not pool.isActive():
                pool.create(0)
            pool.refresh(0)
            conn.getCapabilities()  # triggers (and caches) the QEMU probe
        finally:
            conn.close()

    def down(self) -> None:
        """Stop both hosts and every QEMU they started; remove state files.

        Only processes recorded by ``up`` (and the ones living in their
        namespaces) are touched. The tmpfs mounts live only in those
        namespaces, so they disappear with the last process.
        """
        if not self.state_dir.exists():
            return
        with self._locked():
            self._down_locked()
        (self.state_dir / ".lock").unlink(missing_ok=True)

    def _down_locked(self) -> None:
        for state in self._read_state().values():
            self._stop_host(state)
        # Also catch a host whose start was interrupted before it was recorded.
        for name in HOST_NAMES:
            pid = self._read_pid(self.host_dir(name) / "libvirtd.pid")
            if pid and _comm(pid) == "libvirtd":
                ns = _mnt_ns(pid)
                if ns and ns != _mnt_ns("self"):
                    self._kill_namespace(ns, pid)
        for path in (self.state_dir / "hosts", self.console_dir):
            shutil.rmtree(path, ignore_errors=True)
        for path in (self.state_file, self.state_file.with_suffix(".tmp")):
            path.unlink(missing_ok=True)

    def _stop_host(self, state: HostState) -> None:
        # Destroy domains through libvirt first: QEMU then exits cleanly.
        if self._healthy(state):
            try:
                libvirt = _import_libvirt()
                conn = libvirt.open(state.uri)
                try:
                    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                        try:
                            dom.destroy()
                        except libvirt.libvirtError:
                            pass
                finally:
                    conn.close()
            except Exception:  # noqa: BLE001 - best effort, the kill below is the guarantee
                pass
        self._kill_namespace(state.mnt_ns, state.libvirtd_pid, state.virtlogd_pid)

    def _kill_namespace(self, ns: str | None, libvirtd_pid: int | None, *extra: int | None) -> None:
        """SIGTERM, then SIGKILL, every process of a host's namespace.

        If the recorded libvirtd is still there, the namespace is certainly
        ours and everything in it goes; otherwise (pid reuse is possible) only
        processes with names a host runs are killed.
        """
        if not ns or ns == _mnt_ns("self"):
            pids = [p for p in (libvirtd_pid, *extra) if p and _pid_alive(p) and _comm(p) in _OWN_COMMS]
        else:
            ours = bool(libvirtd_pid) and _mnt_ns(libvirtd_pid) == ns and _comm(libvirtd_pid) == "libvirtd"
            pids = [p for p in _pids_in_ns(ns) if ours or _comm(p) in _OWN_COMMS]
            pids += [p for p in extra if p and p not in pids and _pid_alive(p) and _comm(p) == "virtlogd"]
        with _subreaper():
            self._signal_until_gone(pids)

    @staticmethod
    def _signal_until_gone(pids: list[int]) -> None:
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
                time.sleep(0.05)
            _reap(pids)
            pids = [p for p in pids if _pid_alive(p)]
            if not pids:
                return
        raise EnvironmentProblem(f"testbed processes {pids} survived SIGKILL; check 'ps -p {pids[0]}'")

    # -- using a host
    def connect(self, name: str) -> Any:
        """An open ``libvirt.virConnect`` to host ``name``; the caller closes it."""
        libvirt = _import_libvirt()
        state = self.host_state(name)
        try:
            return libvirt.open(state.uri)
        except libvirt.libvirtError as exc:
            raise EnvironmentProblem(
                f"cannot connect to testbed host {name} at {state.uri}: {exc}; try 'simkvm testbed down' then 'up'"
            ) from None

    def run(self, name: str, argv: Sequence[str], *, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside host ``name``'s mount+UTS namespace (so
        /var/lib/libvirt/images is that host's), e.g. ``["ls", "-l", POOL_PATH]``."""
        state = self.host_state(name)
        cmd = [_which("nsenter"), "-t", str(state.libvirtd_pid), "-m", "-u", "--", *argv]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise EnvironmentProblem(
                f"command {' '.join(argv)!r} on testbed host {name} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def status(self) -> dict[str, Any]:
        """``{"running": bool, "hosts": [{"name", "uri", "running", "host_uuid",
        "libvirtd_pid", "disk_capacity_bytes", "pool": {...}, "domains": [...]}]}``."""
        libvirt = None
        recorded = self._read_state()
        hosts = []
        for name in HOST_NAMES:
            state = recorded.get(name)
            entry: dict[str, Any] = {"name": name, "uri": self.uri(name), "running": False, "domains": []}
            if state is not None and self._healthy(state):
                entry.update(
                    running=True, host_uuid=state.host_uuid, libvirtd_pid=state.libvirtd_pid,
                    disk_capacity_bytes=state.disk_capacity_bytes,
                )
                libvirt = libvirt or _import_libvirt()
                try:
                    conn = libvirt.open(state.uri)
                except libvirt.libvirtError as exc:
                    entry.update(running=False, error=str(exc))
                else:
                    try:
                        entry["host_uuid"] = _capabilities_uuid(conn) or state.host_uuid
                        entry["hostname"] = conn.getHostname()
                        entry["domains"] = [_domain_summary(libvirt, d) for d in conn.listAllDomains(0)]
                        try:
                            pool = conn.storagePoolLookupByName(POOL_NAME)
                            _, cap, alloc, avail = pool.info()
                            entry["pool"] = {"name": POOL_NAME, "path": POOL_PATH, "active": bool(pool.isActive()),
                                             "capacity_bytes": cap, "allocation_bytes": alloc,
                                             "available_bytes": avail}
                        except libvirt.libvirtError:
                            entry["pool"] = None
                    finally:
                        conn.close()
            hosts.append(entry)
        return {"running": all(h["running"] for h in hosts), "state_dir": str(self.state_dir), "hosts": hosts}

    def iter_hosts(self) -> Iterator[HostState]:
        """Recorded states of the running hosts."""
        for name in HOST_NAMES:
            state = self._read_state().get(name)
            if state is not None and self._healthy(state):
                yield state


def _capabilities_uuid(conn: Any) -> str | None:
    import xml.etree.ElementTree as ET

    node = ET.fromstring(conn.getCapabilities()).find("./host/uuid")
    return node.text if node is not None else None


_STATE_NAMES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff", 6: "crashed",
                7: "pmsuspended"}


def _domain_summary(libvirt: Any, dom: Any) -> dict[str, Any]:
    state, _ = dom.state()
    return {"name": dom.name(), "state": _STATE_NAMES.get(state, str(state)), "persistent": bool(dom.isPersistent()),
            "id": dom.ID() if dom.isActive() else None}
