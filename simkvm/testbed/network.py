"""The testbed's guest network: a private L2 segment and a prober that measures the service interruption.

Why: a migration is not over for the VM's users when the destination resumes
it, but when packets reach it again: the switch (here a Linux bridge) must
learn the VM's MAC on its new port, from QEMU's self-announce (RARP) after
the resume or from the old port vanishing. The simulator models that as the
service interruption; this measures it.

Layout, all created by :meth:`GuestNetwork.up` and removed by ``down``:

* a bridge ``skbr<port>`` with no uplink and no address (both testbed
  libvirtds share the machine's network namespace, so a guest's tap on
  either host joins it, and the migrated domain XML names the same bridge);
* a network namespace ``simkvm-probe-<port>`` joined to the bridge by a veth
  pair; the prober lives there with ``10.<a>.<b>.1/24``, guests get ``.2`` on.

The prober (``python -m simkvm.testbed.network probe``, run inside the
namespace) sends an ICMP echo every few milliseconds and reports, for each,
when it was sent and when (if ever) the reply came; the longest stretch of
unanswered requests around the switchover is the measured interruption.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..model.errors import EnvironmentProblem

PROBE_INTERVAL_S = 0.005


@dataclass(frozen=True)
class GuestNetwork:
    """Names and addresses of one testbed's guest network (derived from its base port)."""

    base_port: int

    @property
    def bridge(self) -> str:
        return f"skbr{self.base_port}"

    @property
    def netns(self) -> str:
        return f"simkvm-probe-{self.base_port}"

    @property
    def _veth_host(self) -> str:
        return f"skvh{self.base_port}"

    @property
    def _veth_probe(self) -> str:
        return f"skvp{self.base_port}"

    @property
    def subnet(self) -> str:
        a, b = 200 + self.base_port % 50, (self.base_port // 50) % 250
        return f"10.{a}.{b}"

    @property
    def probe_ip(self) -> str:
        return f"{self.subnet}.1"

    def guest_ip(self, index: int = 0) -> str:
        """``index`` 0 -> .2, 1 -> .3, ..."""
        return f"{self.subnet}.{2 + index}"

    def ip_for(self, name: str) -> str:
        """A stable address for a guest name (.2-.241), for guests started from the CLI."""
        import hashlib

        return self.guest_ip(hashlib.sha256(name.encode()).digest()[0] % 240)

    # ------------------------------------------------------------ lifecycle
    def up(self) -> None:
        """Create the bridge, the namespace and the veth pair (idempotent)."""
        if not self._exists("link", self.bridge):
            _ip("link", "add", "name", self.bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0")
        _ip("link", "set", self.bridge, "up")
        if self.netns not in _netns_list():
            _ip("netns", "add", self.netns)
        if not self._exists("link", self._veth_host):
            _ip("link", "add", self._veth_host, "type", "veth", "peer", "name", self._veth_probe,
                "netns", self.netns)
            _ip("link", "set", self._veth_host, "master", self.bridge)
        _ip("link", "set", self._veth_host, "up")
        addrs = _ip("-n", self.netns, "-o", "addr", "show", "dev", self._veth_probe, capture=True)
        if f"{self.probe_ip}/24" not in addrs:
            _ip("-n", self.netns, "addr", "add", f"{self.probe_ip}/24", "dev", self._veth_probe)
        _ip("-n", self.netns, "link", "set", self._veth_probe, "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")

    def down(self) -> None:
        """Remove what :meth:`up` made (missing pieces are fine)."""
        if self._exists("link", self._veth_host):
            _ip("link", "del", self._veth_host, check=False)
        if self.netns in _netns_list():
            _ip("netns", "del", self.netns, check=False)
        if self._exists("link", self.bridge):
            _ip("link", "del", self.bridge, check=False)

    def is_up(self) -> bool:
        return self._exists("link", self.bridge) and self.netns in _netns_list()

    @staticmethod
    def _exists(kind: str, name: str) -> bool:
        return subprocess.run(["ip", kind, "show", name], capture_output=True).returncode == 0

    def interface_xml(self, mac: str) -> str:
        return (f"<interface type='bridge'><mac address='{mac}'/><source bridge='{self.bridge}'/>"
                "<model type='virtio'/></interface>")

    def probe(self, target_ip: str, interval_s: float = PROBE_INTERVAL_S) -> "Probe":
        return Probe(self, target_ip, interval_s)


def _ip(*args: str, capture: bool = False, check: bool = True) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise EnvironmentProblem("the 'ip' command (iproute2) is missing; run scripts/setup-system.sh") from None
    if check and done.returncode != 0:
        raise EnvironmentProblem(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout if capture else ""


def _netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def guest_mac(name: str) -> str:
    """A stable locally administered MAC for a guest name (QEMU's 52:54:00 prefix)."""
    import hashlib

    h = hashlib.sha256(name.encode()).digest()
    return "52:54:00:%02x:%02x:%02x" % (h[0], h[1], h[2])


# ------------------------------------------------------------------ the prober
class Probe:
    """ICMP echoes from the probe namespace, in a child process; ``stop()`` returns what happened.

    Times are ``time.monotonic()`` seconds (one clock for the whole machine),
    so the caller can place them on its own timeline.
    """

    def __init__(self, net: GuestNetwork, target_ip: str, interval_s: float) -> None:
        self.net, self.target_ip, self.interval_s = net, target_ip, interval_s
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> "Probe":
        # Guests come and go on the same address with their own MACs: a stale neighbour entry
        # would send the first seconds of echoes to a guest that no longer exists.
        _ip("-n", self.net.netns, "neigh", "flush", "all", check=False)
        cmd = ["ip", "netns", "exec", self.net.netns, sys.executable, "-m", "simkvm.testbed.network", "probe",
               self.target_ip, str(self.interval_s)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
        return self

    def stop(self) -> list[tuple[float, float | None]]:
        """[(sent, replied or None), ...] for every echo sent."""
        if self._proc is None:
            return []
        try:
            out, err = self._proc.communicate(input="stop\n", timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, err = self._proc.communicate()
        self._proc = None
        try:
            data = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise EnvironmentProblem(f"the network probe printed no result: {err.strip()[-300:]}") from None
        return [(float(s), None if r is None else float(r)) for s, r in data["echoes"]]

    def __enter__(self) -> "Probe":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _probe_main(target: str, interval_s: float) -> None:
    """Inside the namespace: echo until stdin says stop; print one JSON line."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.settimeout(0.2)
    ident = os.getpid() & 0xFFFF
    sent: dict[int, float] = {}
    replied: dict[int, float] = {}
    stop = threading.Event()

    def receiver() -> None:
        while not stop.is_set():
            try:
                pkt = sock.recv(2048)
            except OSError:
                continue
            now = time.monotonic()
            ihl = (pkt[0] & 0x0F) * 4
            kind, _code, _ck, pid, seq = struct.unpack("!BBHHH", pkt[ihl:ihl + 8])
            if kind == 0 and pid == ident and seq in sent and seq not in replied:
                replied[seq] = now

    def stopper() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=receiver, daemon=True).start()
    threading.Thread(target=stopper, daemon=True).start()
    seq = 0
    next_t = time.monotonic()
    while not stop.is_set():
        seq = (seq + 1) & 0xFFFF
        header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        payload = struct.pack("!d", time.monotonic())
        packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
        sent[seq] = time.monotonic()
        try:
            sock.sendto(packet, (target, 0))
        except OSError:
            pass  # no route / neighbour yet: counts as unanswered
        next_t += interval_s
        time.sleep(max(0.0, next_t - time.monotonic()))
    time.sleep(0.2)  # late replies
    echoes = [(sent[s], replied.get(s)) for s in sorted(sent, key=sent.__getitem__)]
    print(json.dumps({"echoes": echoes}))


if __name__ == "__main__":  # pragma: no cover - runs inside the probe namespace
    if len(sys.argv) == 4 and sys.argv[1] == "probe":
        _probe_main(sys.argv[2], float(sys.argv[3]))
    else:
        sys.exit("usage: python -m simkvm.testbed.network probe TARGET_IP INTERVAL_S")
