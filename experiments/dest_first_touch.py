"""What the destination pays for RAM it never had: bare QEMU, fresh vs preallocated guest RAM.

Why: a stop that carries pages the first pass never sent costs about 13 us per normal page in
QEMU's polls (experiments/stop_cost.py), pages sent before about 2 us. The difference sits on the
destination: ram_load_precopy() copies each page into guest RAM (qemu_get_buffer()), and guest RAM
that was never written is not there yet; ram_block_add() madvises it MADV_HUGEPAGE, so the first
write into each 2 MiB region takes a transparent-huge-page fault that allocates and clears 2 MiB.
A zero page only reads the destination's page (ram_handle_compressed() in 7.2, ram_handle_zero()
in 10.0), which maps the shared zero page and allocates nothing.

This migrates a paused TCG guest between two bare QEMU processes on loopback, without a rate limit:
the source's RAM is a private copy of a file holding a non-zero page every ``--every`` pages (zero
elsewhere), the destination's fresh anonymous memory or the same preallocated (``prealloc=on``:
every region allocated before the migration starts). The difference of the two total times is the
destination's first touch; with ``--every 512`` (one normal page per 2 MiB) it is per region, with
``--every 1`` per region too but spread over 512 pages. The host's THP-fault and compaction counters
(/proc/vmstat) are printed beside each run.

    python experiments/dest_first_touch.py --memory-mib 256 --every 1,512 --repeats 3 \
        [--root /opt/simkvm/stacks/backports] [-o data/experiments/dest-first-touch/q10.json]

``--guest DIR`` boots the testbed's own guest instead (DIR holds its vmlinuz and initramfs.cpio.gz,
/var/lib/simkvm-testbed/cache/guest-*), idle with half its memory zero, and migrates it the way a
campaign's idle run does: ``--bandwidth-mib`` per second and a ``--downtime-ms`` generous enough that
the switchover comes during the first pass; QEMU's downtime and the normal pages its stop carried
(those sent after the last 10 ms poll before the stop began, less what the rate limit let through
since that poll) are printed, fresh and preallocated destination side by side:

    python experiments/dest_first_touch.py --guest /var/lib/simkvm-testbed/cache/guest-* \
        --memory-mib 512 --bandwidth-mib 64 --downtime-ms 1000 --repeats 3

``--stop`` migrates the synthetic image that way too (its source paused), so the stop carries the
top of an image whose non-zero pages sit ``--every`` pages apart: whether the first touch goes by the
page or by the 2 MiB region it lands in.

``--root`` runs the QEMU installed in that root (the QEMU 10 stack of scripts/setup-stack.sh) in a
private mount namespace with /proc, /dev and /tmp bound in. Run it on an idle host: a migration's
time is what is measured.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from simkvm.model.errors import UserError  # noqa: E402
from simkvm.testbed.guest import GuestWorkload, parse_console  # noqa: E402
from simkvm.validation.runner import host_memory, memory_change  # noqa: E402

MiB = 2**20
PAGE = 4096
REGION_PAGES = 512  # a 2 MiB transparent huge page of 4 KiB pages

def qmp(path: str) -> Callable[..., dict[str, Any]]:
    """A QMP client on a unix socket: ``cmd(name, **arguments)`` returns the reply."""
    sock = socket.socket(socket.AF_UNIX)
    for _ in range(400):
        try:
            sock.connect(path)
            break
        except OSError:
            time.sleep(0.05)
    else:
        raise SystemExit(f"dest_first_touch: QEMU's QMP socket {path} never came up")
    f = sock.makefile("rw")
    json.loads(f.readline())

    def cmd(name: str, **arguments: Any) -> dict[str, Any]:
        f.write(json.dumps({"execute": name, "arguments": arguments}) + "\n")
        f.flush()
        while True:
            reply: dict[str, Any] = json.loads(f.readline())
            if "return" in reply or "error" in reply:
                return reply

    cmd("qmp_capabilities")
    return cmd


def qemu_command(root: Path | None, also: Path | None = None) -> list[str]:
    """The QEMU to run: the system's, or the one in ``root`` (chroot in a private mount namespace with
    /proc, /dev, /tmp, /var/tmp and ``also`` bound in)."""
    if root is None:
        return ["qemu-system-x86_64"]
    dirs = ["/proc", "/dev", "/tmp", "/var/tmp"] + ([str(also.resolve())] if also is not None else [])
    binds = "; ".join(f"mkdir -p {shlex.quote(str(root) + d)}; mount --bind {shlex.quote(d)} {shlex.quote(str(root) + d)}"
                      for d in dirs)
    return ["unshare", "-m", "sh", "-c", f'{binds}; exec chroot {shlex.quote(str(root))} qemu-system-x86_64 "$@"', "qemu"]


def wait_ready(console: Path, timeout_s: float = 180.0) -> None:
    """Until the guest's workload says READY on its console (it has laid out its memory), and 2 s more."""
    deadline = time.monotonic() + timeout_s
    while not any(ln.kind == "READY" for ln in parse_console(console.read_text(errors="replace")
                                                              if console.exists() else "")):
        if time.monotonic() > deadline:
            raise SystemExit(f"dest_first_touch: the guest printed no READY within {timeout_s:.0f} s ({console})")
        time.sleep(0.2)
    time.sleep(2.0)


def fill_file(directory: Path, memory_mib: int, every: int) -> Path:
    """A RAM image in ``directory`` with a non-zero page every ``every`` pages, the first of them
    ``every // 2`` pages into RAM (so each 2 MiB region begins with a zero page when ``every`` > 1: the
    destination reads it before writing there); sparse, the zero pages are holes."""
    path = directory / f"fill-{memory_mib}-{every}.bin"
    page = b"\x5a" * PAGE
    with open(path, "wb") as f:
        f.truncate(memory_mib * MiB)
        for i in range(every // 2, memory_mib * MiB // PAGE, every):
            f.seek(i * PAGE)
            f.write(page)
    return path


def idle_guest(memory_mib: int) -> GuestWorkload:
    """The testbed guest idle, half its memory zero, an 8 MiB working set it wrote once, a 32 MiB disk
    (raises UserError where the guest cannot be that)."""
    return GuestWorkload(memory_bytes=memory_mib * MiB, disk_bytes=32 * MiB, wss_bytes=8 * MiB, zero_fraction=0.5)


def migrate_once(qemu: list[str], memory_mib: int, every: int, prealloc: bool, port: int,
                 bandwidth_Bps: float = 64 * 2**30, downtime_s: float = 100.0,
                 guest: Path | None = None) -> dict[str, Any]:
    """One migration, of a paused synthetic image or of the booted testbed guest; QEMU's own figures and
    the host counters' change."""
    d = tempfile.mkdtemp(prefix="simkvm-ft-")
    common = ["-nodefaults", "-display", "none", "-machine", "pc,accel=tcg,memory-backend=pc.ram",
              "-cpu", "qemu64", "-m", f"{memory_mib}M"]
    if guest is None:
        common.append("-S")
        fill = fill_file(Path(d), memory_mib, every)
        backend = f"memory-backend-file,id=pc.ram,size={memory_mib}M,mem-path={fill},share=off,prealloc=on"
    else:
        workload, disk = idle_guest(memory_mib), f"{d}/disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, str(workload.disk_bytes)], check=True)
        # without the TLB keeper (domain_xml's tlb_flush=False): the guest is idle, no dirty page to lose
        cmdline = workload.kernel_cmdline() + " simkvm.tlb_flush=0"
        common += ["-kernel", str(guest / "vmlinuz"), "-initrd", str(guest / "initramfs.cpio.gz"), "-append", cmdline,
                   "-drive", f"file={disk},if=virtio,format=qcow2", "-serial", f"file:{d}/console.log"]
        backend = f"memory-backend-ram,id=pc.ram,size={memory_mib}M"
    src = subprocess.Popen([*qemu, *common, "-object", backend, "-qmp", f"unix:{d}/src,server=on,wait=off"])
    dst = None
    try:
        source = qmp(f"{d}/src")
        if guest is not None:
            wait_ready(Path(d) / "console.log")
        dst = subprocess.Popen([*qemu, *common, "-object",
                                f"memory-backend-ram,id=pc.ram,size={memory_mib}M" + (",prealloc=on" if prealloc else ""),
                                "-qmp", f"unix:{d}/dst,server=on,wait=off", "-incoming", f"tcp:127.0.0.1:{port}"])
        qmp(f"{d}/dst")  # the destination is listening once its monitor answers
        source("migrate-set-parameters", **{"max-bandwidth": int(bandwidth_Bps), "downtime-limit": int(downtime_s * 1e3)})
        before = host_memory()
        source("migrate", uri=f"tcp:127.0.0.1:{port}")
        polls: list[tuple[float, int]] = []  # (time, normal pages sent) while active
        while True:
            info = source("query-migrate")["return"]
            now = time.monotonic()
            if info.get("status") in ("completed", "failed", "cancelled"):
                break
            if info.get("status") == "active":
                polls.append((now, info.get("ram", {}).get("normal", 0)))
            time.sleep(0.01)
        after = host_memory()
        # the stop began about downtime before the poll that saw the end; what the stop carried is what
        # was sent after the last poll before that, less the first pass's pace since then
        stop_at = now - info.get("downtime", 0) / 1e3
        before_stop = [p for p in polls if p[0] <= stop_at]
        t_last, n_last = before_stop[-1] if before_stop else (stop_at, 0)
        paced = bandwidth_Bps * (stop_at - t_last) / PAGE if bandwidth_Bps < 2**34 else 0.0
    finally:
        for p in (src, dst):
            if p is not None:
                p.kill()
                p.wait()
        shutil.rmtree(d, ignore_errors=True)
    if info.get("status") != "completed":
        raise SystemExit(f"dest_first_touch: the migration ended {info.get('status')}: {info.get('error-desc', '')}")
    ram = info.get("ram", {})
    return {"memory_mib": memory_mib, "every": every, "guest": guest is not None, "dest_prealloc": prealloc,
            "total_time_s": info["total-time"] / 1e3, "downtime_s": info.get("downtime", 0) / 1e3,
            "normal_pages": ram.get("normal", 0), "stop_normal_pages": max(0.0, ram.get("normal", 0) - n_last - paced),
            "zero_pages": ram.get("duplicate", 0),
            "vmstat_change": memory_change(before, after)}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per density: the fastest fresh and preallocated run, and the first touch they differ by."""
    out = []
    for every in sorted({r["every"] for r in rows}):
        fresh = min(r["total_time_s"] for r in rows if r["every"] == every and not r["dest_prealloc"])
        pre = min(r["total_time_s"] for r in rows if r["every"] == every and r["dest_prealloc"])
        one = next(r for r in rows if r["every"] == every)
        regions = one["memory_mib"] * MiB / PAGE / REGION_PAGES
        out.append({"every": every, "fresh_s": fresh, "prealloc_s": pre, "regions": regions,
                    "normal_pages": one["normal_pages"],
                    "per_region_s": (fresh - pre) / regions, "per_normal_page_s": (fresh - pre) / one["normal_pages"],
                    "prealloc_per_page_s": pre / (one["normal_pages"] + one["zero_pages"])})
    return out


def summarise_guest(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Guest mode: per destination kind, the medians of QEMU's downtime, the stop's normal pages and the
    cost per stop page; ``first_touch_s``: what a fresh destination adds per page the stop carried, the
    difference of the two median downtimes over the fresh runs' median stop pages (the model's
    ``host.first_touch_s``, simkvm/sim/wire.py)."""
    out: dict[str, Any] = {}
    for kind, pre in (("fresh", False), ("prealloc", True)):
        mine = [r for r in rows if r["dest_prealloc"] == pre and r["stop_normal_pages"] > 0]
        if mine:
            out[kind] = {"runs": len(mine), "downtime_s": statistics.median(r["downtime_s"] for r in mine),
                         "stop_normal_pages": statistics.median(r["stop_normal_pages"] for r in mine),
                         "per_stop_page_s": statistics.median(r["downtime_s"] / r["stop_normal_pages"] for r in mine)}
    if "fresh" in out and "prealloc" in out:
        out["first_touch_s"] = (out["fresh"]["downtime_s"] - out["prealloc"]["downtime_s"]) / out["fresh"]["stop_normal_pages"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--memory-mib", type=int, default=256, help="guest RAM, MiB (default 256)")
    ap.add_argument("--every", default="1,512", help="synthetic image: a non-zero page every N pages, comma-separated "
                    "(default 1,512)")
    ap.add_argument("--guest", type=Path, help="boot the testbed guest in this directory (vmlinuz, initramfs.cpio.gz)")
    ap.add_argument("--stop", action="store_true", help="synthetic image: migrate it as guest mode does (rate limit, "
                    "a stop during the first pass) instead of in one unlimited pass")
    ap.add_argument("--bandwidth-mib", type=float, default=64.0, help="guest and --stop mode: max-bandwidth, MiB/s "
                    "(default 64)")
    ap.add_argument("--downtime-ms", type=float, default=1000.0, help="guest and --stop mode: downtime-limit, ms "
                    "(default 1000)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each kind (default 3)")
    ap.add_argument("--root", type=Path, help="run the QEMU installed in this root (the QEMU 10 stack)")
    ap.add_argument("--port", type=int, default=47111, help="loopback port for the migration (default 47111)")
    ap.add_argument("-o", "--output", type=Path, help="write the runs and the summary here (JSON)")
    args = ap.parse_args(argv)
    try:
        densities = [int(x) for x in args.every.split(",")]
    except ValueError:
        print(f"dest_first_touch: --every must be integers separated by commas, not {args.every!r}", file=sys.stderr)
        return 2
    if args.memory_mib < 16 or args.repeats < 1 or any(e < 1 for e in densities) or args.bandwidth_mib <= 0:
        print("dest_first_touch: --memory-mib >= 16, --repeats >= 1, --every >= 1 and --bandwidth-mib > 0", file=sys.stderr)
        return 2
    if args.root is not None and not (args.root / "usr/bin/qemu-system-x86_64").exists():
        print(f"dest_first_touch: no QEMU in {args.root}; run scripts/setup-stack.sh", file=sys.stderr)
        return 2
    if args.guest is not None and not (args.guest / "vmlinuz").exists():
        print(f"dest_first_touch: no vmlinuz in {args.guest}; give a /var/lib/simkvm-testbed/cache/guest-* directory "
              "(simkvm testbed up builds it)", file=sys.stderr)
        return 2
    if args.guest is not None:
        try:
            idle_guest(args.memory_mib)
        except UserError as exc:
            print(f"dest_first_touch: {exc}", file=sys.stderr)
            return 2
    qemu = qemu_command(args.root, args.guest)
    version = subprocess.run([*qemu, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    rows = []
    kinds = [0] if args.guest is not None else densities
    for k in range(args.repeats):
        for every in kinds:
            for prealloc in (False, True):
                if args.guest is not None or args.stop:
                    row = migrate_once(qemu, args.memory_mib, every, prealloc, args.port, args.bandwidth_mib * MiB,
                                       args.downtime_ms / 1e3, guest=args.guest)
                else:
                    row = migrate_once(qemu, args.memory_mib, every, prealloc, args.port)
                rows.append(row)
                print(f"repeat {k} {'guest' if args.guest else f'every {every:4d}'} "
                      f"{'prealloc' if prealloc else 'fresh   '}: total {1e3 * row['total_time_s']:7.1f} ms, downtime "
                      f"{1e3 * row['downtime_s']:.0f} ms, {row['normal_pages']} normal pages, "
                      f"{row['stop_normal_pages']:.0f} in the stop, {row['vmstat_change']}", flush=True)
    print(version)
    summary: Any
    if args.guest is not None or args.stop:
        summary = {str(every): summarise_guest([r for r in rows if r["every"] == every]) for every in kinds}
        for every, by_kind in summary.items():
            for kind, v in by_kind.items():
                if kind == "first_touch_s":
                    print(f"{'guest' if args.guest else f'every {every}'}: a fresh destination adds {1e6 * v:.1f} us "
                          "per page the stop carried")
                    continue
                print(f"{kind:8s}: downtime {1e3 * v['downtime_s']:.0f} ms for {v['stop_normal_pages']:.0f} stop pages, "
                      f"{1e6 * v['per_stop_page_s']:.1f} us per stop page (median of {v['runs']})")
        if args.guest is not None:
            summary = summary["0"]
    else:
        summary = summarise(rows)
        for s in summary:
            print(f"every {s['every']:4d}: fresh {1e3 * s['fresh_s']:.1f} ms, preallocated {1e3 * s['prealloc_s']:.1f} ms "
                  f"-> {1e6 * s['per_region_s']:.0f} us per 2 MiB region, {1e6 * s['per_normal_page_s']:.2f} us per "
                  f"normal page")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"qemu": version, "memory_mib": args.memory_mib,
                                           "host_load_1m": os.getloadavg()[0], "runs": rows, "summary": summary},
                                          indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
