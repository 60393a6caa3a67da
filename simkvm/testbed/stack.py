"""Which QEMU/libvirt the testbed hosts run: the system's (Debian 12) or a newer one in its own root.

Why two: the model follows a QEMU version (plan key ``host.qemu``), and a
prediction for QEMU 10 must be checked against QEMU 10. Debian 12 ships QEMU
7.2 / libvirt 9.0; bookworm-backports carries QEMU 10.0 / libvirt 11.3, which
would replace them if installed on the system. So the newer stack lives in a
root of its own built from Debian's packages by ``scripts/setup-stack.sh``
(mmdebstrap), and each testbed host runs that root's libvirtd and virtlogd
chrooted inside its private namespace (:mod:`simkvm.testbed.libvirtd` binds
/dev, /proc, /sys, the host's private directories and the testbed's state
into it). Both stacks stay installed; ``simkvm testbed up --stack`` picks one.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..model.errors import EnvironmentProblem, UserError

DEFAULT_STACKS_DIR = "/opt/simkvm/stacks"


@dataclass(frozen=True)
class Stack:
    """One QEMU/libvirt installation the testbed hosts can run."""

    name: str
    #: The ``host.qemu`` version the simulator should follow for this stack.
    qemu: str
    #: Root holding the stack's binaries; None for the system's own.
    root_name: str | None
    #: Whether the guest needs its TLB-flush workaround for QEMU TCG losing dirty
    #: pages during migration (simkvm/guest/workload.c, flush_tlb()); measured per
    #: stack with the guest's canaries, see README "Testbed".
    tlb_flush: bool
    description: str

    @property
    def root(self) -> Path | None:
        """Where the root lives (env SIMKVM_STACKS_DIR moves every root)."""
        if self.root_name is None:
            return None
        return Path(os.environ.get("SIMKVM_STACKS_DIR") or DEFAULT_STACKS_DIR) / self.root_name

    @property
    def setup_hint(self) -> str:
        if self.root_name is None:
            return "run 'bash scripts/setup-system.sh' as root"
        return f"run 'bash scripts/setup-stack.sh {self.name}' as root (builds it in a few minutes)"

    def path(self, path: str) -> Path:
        """``path`` (absolute, e.g. /usr/sbin/libvirtd) as seen from outside the stack's root."""
        return Path(path) if self.root is None else self.root / path.lstrip("/")

    def check_installed(self) -> None:
        """EnvironmentProblem naming the command that installs this stack, if it is missing."""
        if self.root is None:
            return
        missing = [p for p in ("/usr/sbin/libvirtd", "/usr/sbin/virtlogd", "/usr/bin/qemu-system-x86_64",
                               "/etc/libvirt/libvirtd.conf") if not self.path(p).exists()]
        if missing or not (self.root / ".simkvm-stack").exists():
            raise EnvironmentProblem(
                f"testbed stack {self.name!r} ({self.description}) is not installed in {self.root}: {self.setup_hint}"
            )

    def versions(self) -> dict[str, str]:
        """``{"qemu": "10.0.2", "libvirt": "11.3.0"}`` from the installed binaries (no daemon needed)."""
        prefix: list[str] = [] if self.root is None else ["chroot", str(self.root)]
        out = {}
        for key, argv, pattern in (
            ("qemu", ["qemu-system-x86_64", "--version"], r"version (\d+\.\d+\.\d+)"),
            ("libvirt", ["libvirtd", "--version"], r"(\d+\.\d+\.\d+)"),
        ):
            try:
                text = subprocess.run(prefix + argv, capture_output=True, text=True, timeout=10,
                                      env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}).stdout
            except (OSError, subprocess.TimeoutExpired):
                text = ""
            match = re.search(pattern, text)
            out[key] = match.group(1) if match else "unknown"
        return out


STACKS: dict[str, Stack] = {
    # Canaries with the workaround off (`simkvm testbed canaries --no-tlb-flush`, 12 migrations each,
    # 256 MiB guest, 16 MiB/s random writes, 1 MiB/s disk writes, 48 MiB/s): QEMU 7.2 10 guests
    # crashed (kernel pages stale), 2 intact; with it on, 12 intact. QEMU 10.0: 12 intact without it.
    "debian12": Stack("debian12", "7.2", None, tlb_flush=True,
                      description="QEMU 7.2 / libvirt 9.0, Debian 12's own packages"),
    "backports": Stack("backports", "10.0", "backports", tlb_flush=False,
                       description="QEMU 10.0 / libvirt 11.3, Debian bookworm-backports in their own root"),
}
DEFAULT_STACK = "debian12"
#: Other names a user may give --stack: the QEMU version each stack runs.
_ALIASES = {stack.qemu: name for name, stack in STACKS.items()}


def get_stack(name: str | None = None) -> Stack:
    """The stack called ``name`` (or its QEMU version, "7.2" / "10.0"); None: env SIMKVM_TESTBED_STACK,
    else the default (the system's)."""
    key = name or os.environ.get("SIMKVM_TESTBED_STACK") or DEFAULT_STACK
    key = _ALIASES.get(key, key)
    if key not in STACKS:
        known = ", ".join(f"{n} (QEMU {s.qemu})" for n, s in STACKS.items())
        raise UserError(f"unknown testbed stack {key!r}; the stacks are {known}")
    return STACKS[key]
