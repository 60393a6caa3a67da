"""Does this stack's QEMU lose dirty pages under TCG? Migrate a guest back and forth and read its canaries.

Why: QEMU 7.2's TCG does not re-arm its per-vCPU "notdirty" TLB flags when
migration syncs the dirty bitmap, so a write through an old TLB entry is not
logged and its page reaches the destination stale (see flush_tlb() in
simkvm/guest/workload.c). The guest works around it by flushing its TLB
(which costs the model a few hot pages: vm.background_hot). Whether a stack
still needs that is a measurement, not a belief: this runs migrations with
the workaround off (or on) and counts what the guest itself saw: stale pages
(``CHECK mem=FAIL``), a dead guest (kernel panic: the kernel's own pages
arrived stale), or intact canaries.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..libvirt_api import import_libvirt
from .guest import (
    GuestTimeout,
    console_lines,
    create_destination_disks,
    define_guest,
    remove_guest,
    wait_for_console,
    wait_ready,
)
from .hosts import Testbed

MiB = 2**20


@dataclass
class CanaryCounts:
    """What the guest reported after each migration."""

    stack: str
    tlb_flush: bool
    migrations: int = 0
    intact: int = 0
    stale: int = 0
    crashed: int = 0
    details: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"stack {self.stack}, TLB workaround {'on' if self.tlb_flush else 'off'}: {self.migrations} "
                f"migrations, {self.intact} intact, {self.stale} with stale pages, {self.crashed} guest crashed")


def run_canaries(
    testbed: Testbed, migrations: int, *, tlb_flush: bool, name: str = "canary",
    bandwidth_MiBps: int = 48, progress: Callable[[str], None] | None = None,
) -> CanaryCounts:
    """``migrations`` live migrations a -> b -> a ... of one guest (256 MiB, 16 MiB/s random writes over
    48 MiB, 1 MiB/s sequential disk writes), each followed by two canary checks; a guest that dies is
    counted and replaced by a fresh one."""
    libvirt = import_libvirt()  # present: the testbed is up

    counts = CanaryCounts(testbed.stack.name, tlb_flush)
    say = progress or (lambda _msg: None)

    def start() -> None:
        define_guest(name, 256 * MiB, 64 * MiB, dirty_rate_Bps=16 * MiB, wss_bytes=48 * MiB, pattern="random",
                     disk_write_rate_Bps=1 * MiB, disk_wss_bytes=16 * MiB, replace=True, tlb_flush=tlb_flush,
                     testbed=testbed)
        wait_ready(name, 180, testbed=testbed)

    start()
    where = "a"
    try:
        for i in range(migrations):
            other = "b" if where == "a" else "a"
            src, dst = testbed.connect(where), testbed.connect(other)
            try:
                dom = src.lookupByName(name)
                if not dom.isActive():
                    # It died after its checks (a stale kernel page used later): that
                    # migration lost pages too.
                    counts.intact -= 1
                    counts.crashed += 1
                    counts.details.append(f"migration {i}: guest died after its checks ({_panic(name, testbed)})")
                    say(f"migration {i}: guest died after its checks")
                    src.close()
                    dst.close()
                    remove_guest(name, testbed=testbed)
                    start()
                    where = "a"
                    src, dst = testbed.connect(where), testbed.connect("b")
                    other = "b"
                    dom = src.lookupByName(name)
                create_destination_disks(dom, dst)
                last = console_lines(name, testbed=testbed)[-1].line_no
                dom.migrate3(dst, {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1",
                                   libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: bandwidth_MiBps},
                             libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_NON_SHARED_DISK
                             | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
            finally:
                src.close()
                dst.close()
            counts.migrations += 1
            where = other
            verdict = _after_migration(name, testbed, last)
            setattr(counts, verdict[0], getattr(counts, verdict[0]) + 1)
            if verdict[1]:
                counts.details.append(f"migration {i + 1} ({'b' if where == 'b' else 'a'}): {verdict[1]}")
            say(f"migration {i + 1}/{migrations} to {where}: {verdict[0]}{' (' + verdict[1] + ')' if verdict[1] else ''}")
            if verdict[0] == "crashed":
                remove_guest(name, testbed=testbed)
                start()
                where = "a"
    finally:
        remove_guest(name, testbed=testbed)
    return counts


def _panic(name: str, testbed: Testbed) -> str:
    """The kernel's first oops/panic line on the guest's console, if any."""
    from .guest import console_path

    try:
        text = console_path(name, testbed).read_text(errors="replace")
    except OSError:
        return "no console"
    for line in text.splitlines():
        if any(word in line for word in ("general protection", "BUG:", "Oops", "Kernel panic")):
            return line.strip()[:120]
    return "no panic message"


def _after_migration(name: str, testbed: Testbed, after_line: int) -> tuple[str, str]:
    """("intact" | "stale" | "crashed", detail) from the three CHECK lines the guest prints next."""
    for _ in range(3):
        try:
            line = wait_for_console(name, lambda ln: ln.kind == "CHECK", 30, after_line=after_line,
                                    testbed=testbed)
        except GuestTimeout:
            return "crashed", _panic(name, testbed)
        if line.values.get("mem") != "ok":
            return "stale", line.raw[:160]
        after_line = line.line_no
    return "intact", ""


def main_counts(args: Any) -> int:
    """`simkvm testbed canaries`: print the counts for the running testbed's stack."""
    tb = Testbed()
    started = time.monotonic()
    counts = run_canaries(tb, args.migrations, tlb_flush=not args.no_tlb_flush, progress=print)
    print(counts.summary() + f" ({time.monotonic() - started:.0f} s)")
    for detail in counts.details:
        print("  " + detail)
    return 0 if counts.intact == counts.migrations else 1
