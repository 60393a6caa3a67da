"""The link between the testbed hosts: two network namespaces joined by a veth pair, shaped with tc.

Why: on loopback the migration link is as fast as QEMU can copy, it cannot be
slowed, delayed, made lossy or cut. With ``simkvm testbed up --link`` each
host's libvirtd (and so its QEMUs) runs in its own network namespace, and the
only way from a to b is a veth pair: ``a`` is 10.<x>.<y>.1, ``b`` .2. A
migration then crosses a real (virtual) NIC that ``tc`` can shape with netem
(rate, one-way delay, loss) on both ends, and that a fault test can cut
(both ends down) and restore mid-migration.

The hosts' libvirtd sockets stay in the filesystem, so clients connect as
before; only the migration stream and the NBD disk export go over the link.
Opt-in: the validation campaigns ran on loopback.
"""
from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from typing import Any, Sequence

from ..model.errors import EnvironmentProblem, UserError

#: netem queue length (packets): room for a 1 Gbit/s x 100 ms bandwidth-delay product of full-size
#: frames with some slack, so the queue itself does not drop (netem's default is 1000).
NETEM_LIMIT_PACKETS = 20000


@dataclass(frozen=True)
class Link:
    """Names and addresses of one testbed's link (derived from its base port, like its other ports)."""

    base_port: int

    def netns(self, host: str) -> str:
        return f"simkvm-{self.base_port}-{host}"

    def netns_path(self, host: str) -> str:
        return f"/run/netns/{self.netns(host)}"

    def device(self, host: str) -> str:
        return f"skl{self.base_port}{host}"

    @property
    def subnet(self) -> str:
        return f"10.{100 + self.base_port % 50}.{(self.base_port // 50) % 250}"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{1 if host == 'a' else 2}"

    # ------------------------------------------------------------ lifecycle
    def up(self) -> None:
        """Create both namespaces and the veth pair between them (idempotent)."""
        existing = _netns_list()
        for host in ("a", "b"):
            if self.netns(host) not in existing:
                _run(["ip", "netns", "add", self.netns(host)])
        if not _ok(["ip", "-n", self.netns("a"), "link", "show", self.device("a")]):
            _run(["ip", "link", "add", self.device("a"), "netns", self.netns("a"), "type", "veth",
                  "peer", "name", self.device("b"), "netns", self.netns("b")])
        for host in ("a", "b"):
            ns, dev = self.netns(host), self.device(host)
            addrs = _run(["ip", "-n", ns, "-o", "addr", "show", "dev", dev])
            if f"{self.address(host)}/24" not in addrs:
                _run(["ip", "-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", dev])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def down(self) -> None:
        """Remove both namespaces (the veth pair goes with them)."""
        existing = _netns_list()
        for host in ("a", "b"):
            if self.netns(host) in existing:
                _run(["ip", "netns", "del", self.netns(host)], check=False)

    def exists(self) -> bool:
        existing = _netns_list()
        return all(self.netns(h) in existing for h in ("a", "b"))

    # -------------------------------------------------------------- shaping
    def shape(self, rate_Bps: float | None = None, delay_s: float | None = None, loss: float | None = None) -> None:
        """Shape both ends: ``rate_Bps`` each way, ``delay_s`` one way (the round trip is twice that),
        ``loss`` a fraction of packets dropped each way. None leaves that property off.

        netem does all three where the kernel has it (CONFIG_NET_SCH_NETEM). Kernels without it
        (this project's CI machines) get the rate from tbf and the loss from an iptables
        ``statistic`` rule; a delay then cannot be made and is a clear error.
        """
        self._require()
        for name, value, ok in (("rate", rate_Bps, lambda v: v > 0), ("delay", delay_s, lambda v: 0 <= v <= 10),
                                ("loss", loss, lambda v: 0 <= v <= 1)):
            if value is not None and not (math.isfinite(value) and ok(value)):
                raise UserError(f"link {name} out of range: {value} (rate > 0 B/s, delay 0-10 s, loss 0-1)")
        netem = _has_netem(self.netns("a"), self.device("a"))
        if delay_s and not netem:
            raise EnvironmentProblem("this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM), so the link cannot be "
                                     "delayed; rate and loss still work")
        self.clear()
        if netem:
            args: list[str] = []
            if rate_Bps is not None:
                args += ["rate", f"{int(round(rate_Bps * 8))}bit"]
            if delay_s is not None:
                args += ["delay", f"{int(round(delay_s * 1e6))}us"]
            if loss is not None:
                args += ["loss", f"{loss * 100:.6f}%"]
            for host in ("a", "b"):
                _run(["tc", "-n", self.netns(host), "qdisc", "replace", "dev", self.device(host), "root", "netem",
                      "limit", str(NETEM_LIMIT_PACKETS), *args])
            return
        for host in ("a", "b"):
            ns, dev = self.netns(host), self.device(host)
            if rate_Bps is not None:
                # The bucket holds 5 ms of traffic, at least two 64 KiB GSO segments (the veth
                # pair hands the qdisc whole TCP segments); queue up to 50 ms before dropping.
                burst = max(int(rate_Bps * 0.005), 2 * 65536 + 1514)
                _run(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf",
                      "rate", f"{int(round(rate_Bps * 8))}bit", "burst", str(burst), "latency", "50ms"])
            if loss:
                _run(["ip", "netns", "exec", ns, "iptables", "-w", "-A", "OUTPUT", "-o", dev, "-m", "statistic",
                      "--mode", "random", "--probability", f"{loss:.6f}", "-j", "DROP"])

    def clear(self) -> None:
        """No shaping: the veth pair at its own speed."""
        self._require()
        for host in ("a", "b"):
            _run(["tc", "-n", self.netns(host), "qdisc", "del", "dev", self.device(host), "root"], check=False)
            # The namespace is the testbed's own: its OUTPUT chain holds only our loss rule.
            _run(["ip", "netns", "exec", self.netns(host), "iptables", "-w", "-F", "OUTPUT"], check=False)

    def cut(self) -> None:
        """Both ends down: packets in either direction are dropped until :meth:`restore`."""
        self._require()
        for host in ("a", "b"):
            _run(["ip", "-n", self.netns(host), "link", "set", self.device(host), "down"])

    def restore(self) -> None:
        """Both ends up again (addresses and shaping are kept)."""
        self._require()
        for host in ("a", "b"):
            _run(["ip", "-n", self.netns(host), "link", "set", self.device(host), "up"])

    def status(self) -> dict[str, Any]:
        """``{"up": bool, "addresses": {...}, "qdisc": "netem ... rate ...", "carrier": bool}``."""
        if not self.exists():
            return {"up": False}
        qdisc = _run(["tc", "-n", self.netns("a"), "qdisc", "show", "dev", self.device("a")], check=False)
        drops = _run(["ip", "netns", "exec", self.netns("a"), "iptables", "-w", "-S", "OUTPUT"], check=False)
        loss = [line.split("--probability ")[1].split()[0] for line in drops.splitlines() if "--probability" in line]
        state = _run(["ip", "-n", self.netns("a"), "-o", "link", "show", self.device("a")], check=False)
        return {"up": True, "addresses": {h: self.address(h) for h in ("a", "b")},
                "devices": {h: self.device(h) for h in ("a", "b")},
                "qdisc": (qdisc.strip().splitlines()[0] if qdisc.strip() else "")
                + (f", loss {float(loss[0]):.4%} (iptables)" if loss else ""),
                "carrier": "state UP" in state or "LOWER_UP" in state}

    def _require(self) -> None:
        if not self.exists():
            raise UserError(f"the testbed has no link (namespaces {self.netns('a')}, {self.netns('b')}); "
                            "start it with 'simkvm testbed up --link'")


_netem: dict[str, bool] = {}


def _has_netem(netns: str, device: str) -> bool:
    """Whether this kernel has the netem qdisc (tried once on the link, then remembered)."""
    if "ok" not in _netem:
        ok = _ok(["tc", "-n", netns, "qdisc", "replace", "dev", device, "root", "netem", "limit", "1000"])
        if ok:
            _ok(["tc", "-n", netns, "qdisc", "del", "dev", device, "root"])
        _netem["ok"] = ok
    return _netem["ok"]


def _run(argv: Sequence[str], *, check: bool = True) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise EnvironmentProblem(f"'{argv[0]}' (iproute2) is missing; run scripts/setup-system.sh") from None
    if check and done.returncode != 0:
        raise EnvironmentProblem(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def _ok(argv: Sequence[str]) -> bool:
    return subprocess.run(list(argv), capture_output=True).returncode == 0


def _netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]
