"""A source QEMU frozen on a migration connection that will carry nothing more: find that connection, and cut it.

How a source freezes (measured on the testbed, ``tests/faults``, QEMU 7.2 /
libvirt 9.0: the link between the hosts cut for good during the RAM copy of
a migration with non-shared storage):

1. libvirt cancels the migration: ``migrate_cancel``, then it force-cancels
   each disk mirror and waits until QEMU reports it gone (libvirt's
   ``src/qemu/qemu_migration.c``: ``qemuMigrationSrcCancel``,
   ``qemuMigrationSrcNBDCopyCancel``);
2. the mirror, ending, drains its target with the main loop's lock held
   (QEMU's ``block/mirror.c``); its target is the destination's NBD export,
   and the writes in flight wait for replies the destination cannot send;
3. the source's NBD socket has nothing unacknowledged (``ss``: Send-Q 0, no
   timer, no keepalive), so TCP never gives up on it: ``tcp_retries2``
   counts retransmissions and there are none. The replies sit on the
   destination's side, and once the destination's incoming QEMU is destroyed
   (simkvm does, it can never run) nothing will arrive. The source QEMU's
   main loop, its monitor and its TCG vCPUs (which need that lock) then wait
   without end: still frozen 181 s after the link came back, in the campaign.

QMP's ``yank`` (QEMU's ``qapi/yank.json``: it shuts an NBD node's connection
down) would free it, but only out-of-band can it run while the main loop is
held: in-band commands wait for the main loop's dispatcher (QEMU's
``monitor/qmp.c``, ``handle_qmp_command``), and libvirt's monitor never
enables the OOB capability (``qmp_capabilities`` without arguments: libvirt's
``qemuMonitorJSONSetCapabilities``).

What frees it: destroying those sockets in the kernel (``SOCK_DESTROY``,
``ss -K``; Linux ``CONFIG_INET_DIAG_DESTROY``). The NBD client's reads fail,
its requests in flight end with an error, the drain ends, libvirt's cancel
completes and the guest runs on, on the source, without a reboot. This must
run on the source host, as root, inside the QEMU's network namespace
(``nsenter -n``: the testbed's hosts are namespaces, ``simkvm/testbed/link.py``).
Only connections of the guest's own QEMU to the destination's migration
addresses that carried nothing for :data:`IDLE_S` are touched: a frozen
QEMU sends and receives nothing, while anything of its own threads that
still talks (a storage client's heartbeats) is left alone. Whether it is
safe at all (never while the destination might run the guest) is
:func:`refusal`'s question.
"""
from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..model.errors import EnvironmentProblem
from .locate import Location, call_with_timeout

#: A connection that sent and received nothing for this long belongs to a frozen QEMU (or to nobody).
IDLE_S = 10.0
SS_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Connection:
    """One TCP connection as ``ss -tnpi`` shows it."""

    state: str
    local: tuple[str, int]
    peer: tuple[str, int]
    pids: tuple[int, ...]  # the processes holding it
    idle_s: float  # since it last sent or received data, whichever is later

    def text(self) -> str:
        return f"{_endpoint(self.local)} -> {_endpoint(self.peer)} ({self.state}, idle {self.idle_s:.0f} s)"


def _endpoint(addr: tuple[str, int]) -> str:
    ip, port = addr
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _address(text: str) -> tuple[str, int] | None:
    """``10.0.0.1:5900``, ``[::1]:5900``, ``[::ffff:10.0.0.1]:5900`` (an IPv4-mapped address is IPv4)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]").split("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(port)


def parse_ss(text: str) -> list[Connection]:
    """``ss -tnpiH`` output (a socket's line, then its tab-indented details) as connections."""
    records: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0].isspace() and records:
            records[-1].append(line)
        else:
            records.append([line])
    out = []
    for lines in records:
        fields = lines[0].split()
        if len(fields) < 5:
            continue
        local, peer = _address(fields[3]), _address(fields[4])
        if local is None or peer is None:
            continue
        whole = " ".join(lines)
        pids = tuple(int(p) for p in re.findall(r"pid=(\d+)", whole))
        # ss prints lastsnd/lastrcv (ms) only when non-zero: a missing one means "just now"
        last = [int(m.group(1)) if m else 0 for m in (re.search(rf"\b{k}:(\d+)", whole) for k in ("lastsnd", "lastrcv"))]
        out.append(Connection(fields[0], local, peer, pids, min(last) / 1000.0))
    return out


def _in_netns_of(pid: int, argv: list[str]) -> list[str]:
    """``argv`` run inside ``pid``'s network namespace (as is, when that is ours)."""
    try:
        same = os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    except OSError as exc:
        raise EnvironmentProblem(f"cannot see process {pid}'s network namespace ({exc.strerror}): run this as root "
                                 f"on the host that runs it") from None
    return argv if same else ["nsenter", "-t", str(pid), "-n", "--", *argv]


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SS_TIMEOUT_S)
    except FileNotFoundError:
        raise EnvironmentProblem(f"'{argv[0]}' is missing (iproute2's ss, util-linux's nsenter)") from None
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"{' '.join(argv)}: no answer within {SS_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        raise EnvironmentProblem(f"{' '.join(argv)} failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def connections_of(pid: int) -> list[Connection]:
    """The TCP connections (not listeners) process ``pid`` holds, seen from its network namespace."""
    return [c for c in parse_ss(_run(_in_netns_of(pid, ["ss", "-tnpiH"]))) if pid in c.pids]


def qemu_pids(domain: str, uuid: str | None = None, proc: Path = Path("/proc")) -> list[int]:
    """The QEMU processes on this machine that run guest ``domain``: libvirt names it on QEMU's command line
    as ``-name guest=<name>,...`` with commas doubled (libvirt's ``qemuBuildNameCommandLine``), and gives it
    ``-uuid <uuid>`` (checked when ``uuid`` is given)."""
    name = f"guest={domain.replace(',', ',,')}"
    out = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not argv or "qemu" not in Path(argv[0]).name:
            continue
        if not any(a == name or a.startswith(name + ",") for a in argv):
            continue
        if uuid and not any(a.lower() == uuid.lower() for a in argv):
            continue
        out.append(int(entry.name))
    return sorted(out)


def migration_addresses(migrate_uri: str | None, timeout_s: float = 10.0) -> set[str]:
    """The destination's addresses the migration stream and the disks' NBD export went to: the migrate URI's
    host (``tcp://b.example:49152``), resolved."""
    if not migrate_uri:
        return set()
    try:
        host = urllib.parse.urlsplit(migrate_uri).hostname
    except ValueError:
        return set()
    if not host:
        return set()
    try:
        infos = call_with_timeout(lambda: socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP), timeout_s,
                                  f"resolving {host}")
    except (OSError, Exception):  # noqa: BLE001 - an address we cannot resolve is one we cannot match
        return set()
    out = set()
    for info in infos:
        addr = _address(f"[{info[4][0]}]:0")
        if addr is not None:
            out.add(addr[0])
    return out


def stuck_connections(pids: Iterable[int], peers: set[str], idle_s: float = IDLE_S) -> list[Connection]:
    """The connections of processes ``pids`` to any of ``peers`` that carried nothing for ``idle_s``."""
    out: list[Connection] = []
    for pid in pids:
        out += [c for c in connections_of(pid) if c.peer[0] in peers and c.idle_s >= idle_s]
    return out


def reset(pid: int, conn: Connection) -> None:
    """Destroy ``conn`` (held by ``pid``) in the kernel: its owner's next read or write fails (ECONNABORTED)
    and the peer gets a reset if it can still be reached. An EnvironmentProblem when the kernel did not."""
    argv = ["ss", "-K", "-tnH", "src", _endpoint(conn.local), "dst", _endpoint(conn.peer)]
    _run(_in_netns_of(pid, argv))
    left = [c for c in connections_of(pid) if c.local == conn.local and c.peer == conn.peer]
    if left:
        raise EnvironmentProblem(f"the kernel kept {conn.text()} after ss -K: it needs CONFIG_INET_DIAG_DESTROY "
                                 f"and root (CAP_NET_ADMIN)")


def refusal(location: Location) -> str | None:
    """Why the source's connections must not be cut now, or None when it is safe.

    Cutting them lets libvirt's cancel finish, and a cancel resumes a source
    that libvirt paused for the switchover: only safe while the destination
    cannot run the guest (known not to, or the guest never stopped on the
    source so the destination never got its device state; :class:`Location`).
    """
    src, dst = location.source, location.destination
    if not src.running:
        return f"the source {src.name} says {src.state}, not running: there is no frozen source to free"
    if dst.running:
        return f"the destination {dst.name} runs the guest"
    if not location.destination_cannot_run:
        seen = dst.state if dst.known else f"unknown ({dst.error})"
        return (f"the guest stopped on the source for a switchover and the destination {dst.name} says {seen}: "
                f"it may hold the guest; find out with {dst.virsh('domstate', location.domain)} --reason")
    return None
