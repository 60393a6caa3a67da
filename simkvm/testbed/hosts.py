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
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..libvirt_api import import_libvirt, state_name, version_text
from ..model.errors import EnvironmentProblem, UserError
from .libvirtd import HIDDEN_PREFIXES, SETUP_HINT, HostSpec, start_script, which, write_configs
from .link import Link
from .proc import (
    comm,
    mnt_ns,
    pid_alive,
    pids_in_ns,
    port_open,
    read_pid,
    signal_until_gone,
    subreaper,
    tail,
    unix_socket_open,
)
from .stack import DEFAULT_STACK, Stack, get_stack

DEFAULT_STATE_DIR = "/var/lib/simkvm-testbed"
DEFAULT_BASE_PORT = 16591
DEFAULT_DISK_CAPACITY_BYTES = 4 * 2**30
HOST_NAMES: tuple[str, ...] = ("a", "b")
POOL_NAME = "default"
POOL_PATH = "/var/lib/libvirt/images"

# Process names that may live in a host's namespace (used when the recorded
# libvirtd is gone and we clean up what it left behind).
_OWN_COMMS = frozenset({
    "libvirtd", "virtlogd", "qemu-system-x86", "qemu-system-x86_64", "sh", "nsenter", "sleep", "chroot",
})

_REQUIRED_BINARIES: tuple[str, ...] = (
    "qemu-system-x86_64", "qemu-img", "libvirtd", "virtlogd", "unshare", "nsenter", "setsid",
    "mount", "gcc", "cpio", "gzip",
)
_STATIC_LIBC_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libc.a", "/usr/lib/libc.a", "/usr/lib64/libc.a")


# ----------------------------------------------------------------- the model
@dataclass(frozen=True)
class HostState:
    """What ``up`` recorded about a running host (``testbed.json``)."""

    name: str
    uri: str
    tcp_port: int  # 0: libvirtd listens on its unix socket only (a TCP port in older state files)
    libvirtd_pid: int
    virtlogd_pid: int | None
    mnt_ns: str
    host_uuid: str
    disk_capacity_bytes: int
    stack: str = DEFAULT_STACK
    #: With a link (``up(link=True)``): the host's network namespace and its address on the link.
    netns: str | None = None
    address: str = "127.0.0.1"


def host_specs(base_port: int, state_dir: Path) -> dict[str, HostSpec]:
    """Each host's libvirtd socket is in its directory under ``state_dir``; migration ports
    (also used for the NBD disk export) are 50-port ranges above base_port + 2000, so
    testbeds with base ports 100 apart never overlap."""
    specs = {}
    for i, name in enumerate(HOST_NAMES):
        lo = base_port + 2000 + 50 * i
        specs[name] = HostSpec(name, str(state_dir / "hosts" / name), lo, lo + 49)
    return specs


def check_environment(stack: Stack | None = None) -> None:
    """Raise EnvironmentProblem naming everything missing, with the command
    that fixes it, before ``up`` starts anything half-way (``stack``: also
    check that this QEMU/libvirt stack is installed)."""
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
    if stack is not None:
        stack.check_installed()


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
        stack: str | None = None,
    ) -> None:
        self._stack_name = stack
        self.state_dir = Path(state_dir or os.environ.get("SIMKVM_TESTBED_DIR") or DEFAULT_STATE_DIR).absolute()
        cache = cache_dir or os.environ.get("SIMKVM_TESTBED_CACHE")
        self._cache_dir = Path(cache).absolute() if cache else self.state_dir / "cache"
        for path in (self.state_dir, self._cache_dir):
            resolved = str(path.resolve())
            for prefix in HIDDEN_PREFIXES:
                if resolved == prefix or resolved.startswith(prefix + "/"):
                    raise UserError(
                        f"testbed directory {resolved} is under {prefix}, which each host hides behind its own "
                        "mount; choose a directory elsewhere (e.g. /var/lib/simkvm-testbed)"
                    )
        port = base_port if base_port is not None else int(os.environ.get("SIMKVM_TESTBED_PORT", DEFAULT_BASE_PORT))
        if not 1024 <= port <= 65000 - 2200:
            raise UserError(f"testbed base port must be between 1024 and 62800, got {port}")
        self.base_port = port
        self.specs = host_specs(port, self.state_dir)
        if stack is not None:
            get_stack(stack)  # an unknown name is the caller's mistake: say so now

    @property
    def stack(self) -> Stack:
        """The QEMU/libvirt stack: the one asked for (argument, else env SIMKVM_TESTBED_STACK), else the
        one the running hosts were started with, else the system's."""
        if self._stack_name or os.environ.get("SIMKVM_TESTBED_STACK"):
            return get_stack(self._stack_name)
        recorded = {h.stack for h in self._read_state().values()}
        return get_stack(recorded.pop() if len(recorded) == 1 else None)

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
            pid_alive(state.libvirtd_pid)
            and comm(state.libvirtd_pid) == "libvirtd"
            and mnt_ns(state.libvirtd_pid) == state.mnt_ns
            and (port_open(state.tcp_port) if state.tcp_port else unix_socket_open(self._spec(state.name).socket))
        )

    # -- lifecycle
    def up(self, disk_capacity_bytes: int | Mapping[str, int] = DEFAULT_DISK_CAPACITY_BYTES, *,
           link: bool | None = None) -> dict[str, Any]:
        """Start both hosts (or keep them, if already healthy) and return status().

        ``disk_capacity_bytes`` sizes each host's /var/lib/libvirt tmpfs, where
        its disk images live; a mapping sets hosts separately (e.g.
        ``{"a": 4 << 30, "b": 64 << 20}`` for a destination too small for a
        disk). A running host whose capacity differs is resized in place.

        ``link=True`` puts the hosts in their own network namespaces joined by
        a veth pair (:mod:`simkvm.testbed.link`) that ``link()`` can shape and
        cut; False: both on this machine's loopback; None: as they run now
        (loopback for a fresh start).
        """
        stack = self.stack
        check_environment(stack)
        capacities = self._capacities(disk_capacity_bytes)
        with self._locked():
            self._up_locked(capacities, stack, link)
        return self.status()

    def link(self) -> Link:
        """The link between the hosts (exists only after ``up(link=True)``)."""
        return Link(self.base_port)

    def migration_uri(self, name: str) -> str:
        """Where a migration to host ``name`` sends its data (VIR_MIGRATE_PARAM_URI): its address on the
        link, or loopback."""
        state = self._read_state().get(name)
        return f"tcp://{state.address if state is not None else '127.0.0.1'}"

    def _up_locked(self, capacities: Mapping[str, int], stack: Stack, link: bool | None) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.console_dir.mkdir(parents=True, exist_ok=True)
        recorded = self._read_state()
        running = {n: s for n, s in recorded.items() if self._healthy(s)}
        if link is None:
            link = any(s.netns for s in running.values())
        if link:
            self.link().up()
        new_state: dict[str, HostState] = {}
        for name in HOST_NAMES:
            state = running.get(name)
            if state is not None and bool(state.netns) != link:
                raise UserError(
                    f"testbed host {name} in {self.state_dir} runs {'with' if state.netns else 'without'} a link: "
                    f"'simkvm testbed down' first (its guests go), then 'simkvm testbed up"
                    f"{' --link' if link else ''}'"
                )
            if state is not None:
                if state.stack != stack.name:
                    raise UserError(
                        f"testbed host {name} in {self.state_dir} runs stack {state.stack!r}, not {stack.name!r}: "
                        f"'simkvm testbed down' first (its guests go), then 'simkvm testbed up --stack {stack.name}'"
                    )
                if state.disk_capacity_bytes != capacities[name]:
                    self._resize(state, capacities[name])
                    state = dataclasses.replace(state, disk_capacity_bytes=capacities[name])
                new_state[name] = state
                continue
            stale = recorded.get(name)
            if stale is not None:
                self._stop_host(stale)  # stale: clean before restarting
            new_state[name] = self._start_host(name, capacities[name], stack, link)
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

    def _start_host(self, name: str, capacity_bytes: int, stack: Stack, link: bool) -> HostState:
        spec = self._spec(name)
        host_dir = self.host_dir(name)
        if host_dir.exists():
            shutil.rmtree(host_dir)
        host_dir.mkdir(parents=True, mode=0o700)  # libvirtd's sockets live here
        host_uuid = str(uuid.uuid4())
        netns, address = None, "127.0.0.1"
        if link:
            netns, address = self.link().netns(name), self.link().address(name)
            spec = dataclasses.replace(spec, migration_address=address)
        etc = write_configs(spec, host_dir, host_uuid, stack)
        # libvirt's QEMU probe cache, per stack: each stack's libvirt probes its own QEMU.
        cache_name = f"libvirt-cache-{spec.name}" if stack.root is None else f"libvirt-cache-{stack.name}-{spec.name}"
        script = start_script(spec, host_dir, etc, capacity_bytes, stack, self.cache_dir / cache_name,
                              (self.state_dir, self.cache_dir))
        # A new session, so the daemons outlive this process, as a CLI `up` requires; but
        # our own child (not `setsid -f`'s orphan), so that a `down` in the same process
        # (a pytest session) reaps libvirtd instead of leaving a `[libvirtd] <defunct>`
        # behind wherever PID 1 does not reap orphans (containers, sandboxes).
        with open(host_dir / "start.log", "wb") as log:
            enter_net = [which("nsenter"), f"--net={self.link().netns_path(name)}", "--"] if netns else []
            subprocess.Popen(
                [*enter_net, which("unshare"), "--mount", "--uts", "--propagation", "private", "--",
                 "/bin/sh", str(script)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 30
        pid = None
        while time.monotonic() < deadline:
            pid = read_pid(host_dir / "libvirtd.pid")
            if pid and comm(pid) == "libvirtd" and unix_socket_open(spec.socket):
                break
            if pid and not pid_alive(pid):
                break
            time.sleep(0.1)
        if not pid or not pid_alive(pid) or not unix_socket_open(spec.socket):
            log_tail = tail(host_dir / "libvirtd.log") + "\n" + tail(host_dir / "start.log")
            if pid:
                self._kill_namespace(mnt_ns(pid), pid)
            raise EnvironmentProblem(f"libvirtd for testbed host {name} did not come up; its log ends:\n{log_tail}")
        return HostState(
            name=name, uri=spec.uri, tcp_port=0, libvirtd_pid=pid,
            virtlogd_pid=read_pid(host_dir / "virtlogd.pid"), mnt_ns=mnt_ns(pid) or "",
            host_uuid=host_uuid, disk_capacity_bytes=capacity_bytes, stack=stack.name,
            netns=netns, address=address,
        )

    def _ensure_pool(self, name: str) -> None:
        """The "default" dir pool at /var/lib/libvirt/images, defined and active."""
        libvirt = import_libvirt()
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
        recorded = self._read_state()
        for state in recorded.values():
            self._stop_host(state)
        # Also catch a host whose start was interrupted before it was recorded.
        for name in HOST_NAMES:
            pid = read_pid(self.host_dir(name) / "libvirtd.pid")
            if pid and comm(pid) == "libvirtd":
                ns = mnt_ns(pid)
                if ns and ns != mnt_ns("self"):
                    self._kill_namespace(ns, pid)
        self.link().down()  # after the hosts: nothing uses the namespaces any more
        for path in (self.state_dir / "hosts", self.console_dir):
            shutil.rmtree(path, ignore_errors=True)
        for path in (self.state_file, self.state_file.with_suffix(".tmp")):
            path.unlink(missing_ok=True)
        # The mount point the hosts made for this state dir inside a stack's root (this
        # testbed's own; the shared guest cache's stays: other testbeds may have it mounted).
        for stack_name in {h.stack for h in recorded.values()}:
            root = get_stack(stack_name).root
            if root is not None:
                with contextlib.suppress(OSError):
                    (root / str(self.state_dir).lstrip("/")).rmdir()

    def _stop_host(self, state: HostState) -> None:
        # Destroy domains through libvirt first: QEMU then exits cleanly.
        if self._healthy(state):
            try:
                libvirt = import_libvirt()
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
        if not ns or ns == mnt_ns("self"):
            pids = [p for p in (libvirtd_pid, *extra) if p and pid_alive(p) and comm(p) in _OWN_COMMS]
        else:
            ours = bool(libvirtd_pid and mnt_ns(libvirtd_pid) == ns and comm(libvirtd_pid) == "libvirtd")
            pids = [p for p in pids_in_ns(ns) if ours or comm(p) in _OWN_COMMS]
            pids += [p for p in extra if p and p not in pids and pid_alive(p) and comm(p) == "virtlogd"]
        with subreaper():
            signal_until_gone(pids)

    # -- using a host
    def connect(self, name: str) -> Any:
        """An open ``libvirt.virConnect`` to host ``name``; the caller closes it."""
        libvirt = import_libvirt()
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
        cmd = [which("nsenter"), "-t", str(state.libvirtd_pid), "-m", "-u", "--", *argv]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise EnvironmentProblem(
                f"command {' '.join(argv)!r} on testbed host {name} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def status(self) -> dict[str, Any]:
        """``{"running": bool, "stack": {"name", "qemu", ...}, "hosts": [{"name", "uri", "running", "host_uuid",
        "libvirtd_pid", "disk_capacity_bytes", "stack", "qemu_version", "libvirt_version", "pool": {...},
        "domains": [...]}]}``; versions as the running daemons report them."""
        libvirt = None
        recorded = self._read_state()
        hosts = []
        for name in HOST_NAMES:
            state = recorded.get(name)
            entry: dict[str, Any] = {"name": name, "uri": self.uri(name), "running": False, "domains": []}
            if state is not None and self._healthy(state):
                entry.update(
                    running=True, host_uuid=state.host_uuid, libvirtd_pid=state.libvirtd_pid,
                    migration_uri=f"tcp://{state.address}",
                    disk_capacity_bytes=state.disk_capacity_bytes, stack=state.stack,
                )
                libvirt = libvirt or import_libvirt()
                try:
                    conn = libvirt.open(state.uri)
                except libvirt.libvirtError as exc:
                    entry.update(running=False, error=str(exc))
                else:
                    try:
                        entry["host_uuid"] = _capabilities_uuid(conn) or state.host_uuid
                        entry["hostname"] = conn.getHostname()
                        entry["qemu_version"] = version_text(conn.getVersion())
                        entry["libvirt_version"] = version_text(conn.getLibVersion())
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
        stack = self.stack
        return {"running": all(h["running"] for h in hosts), "state_dir": str(self.state_dir),
                "stack": {"name": stack.name, "qemu": stack.qemu, "description": stack.description,
                          "root": str(stack.root) if stack.root else None},
                "link": self.link().status() if any(s.netns for s in recorded.values()) else {"up": False},
                "hosts": hosts}

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


def _domain_summary(libvirt: Any, dom: Any) -> dict[str, Any]:
    state, _ = dom.state()
    return {"name": dom.name(), "state": state_name(state), "persistent": bool(dom.isPersistent()),
            "id": dom.ID() if dom.isActive() else None}
