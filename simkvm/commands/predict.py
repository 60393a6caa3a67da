"""`simkvm predict`: will this migration converge, and how long will it take?"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..io import read_yaml, set_path
from ..load import plan_from_dict
from ..model.errors import UserError
from ..model.plan import Plan
from ..report import format_result
from ..sim import simulate

# flag -> plan key; values are passed through the plan's own unit parsing.
PLAN_FLAGS: dict[str, str] = {
    "memory": "vm.memory",
    "zero_fraction": "vm.zero_fraction",
    "dirty_rate": "workload.memory.dirty_rate",
    "wss": "workload.memory.wss",
    "pattern": "workload.memory.model",
    "disk": "vm.disks.0.size",
    "disk_allocated": "vm.disks.0.allocated",
    "disk_write_rate": "workload.disk.write_rate",
    "disk_wss": "workload.disk.wss",
    "disk_io_size": "workload.disk.io_size",
    "bandwidth": "link.bandwidth",
    "capacity": "link.capacity",
    "max_downtime": "migration.max_downtime",
    "max_iterations": "migration.max_iterations",
    "max_time": "migration.max_time",
    "storage": "migration.storage",
    "mirror_mode": "migration.mirror_mode",
    "profile": "profile",
    "policy": "policy",
    "qemu": "host.qemu",
}


def add_plan_flags(parser: argparse.ArgumentParser) -> None:
    """The plan as flags (for one-off questions without a file); they override the file."""
    parser.add_argument("plan", nargs="?", help="plan file (YAML); flags below override its keys")
    g = parser.add_argument_group("plan as flags")
    g.add_argument("--memory", help="guest RAM, e.g. 4GiB")
    g.add_argument("--zero-fraction", help="share of RAM that is zero pages, e.g. 0.3, or auto: half of RAM, at most "
                                           "what the working set and the guest OS leave")
    g.add_argument("--dirty-rate", help="page writes per second in bytes, e.g. 100MiB/s")
    g.add_argument("--wss", help="writable working set, e.g. 1GiB")
    g.add_argument("--pattern", choices=["uniform", "sequential"], help="memory write pattern (default uniform)")
    g.add_argument("--disk", help="size of the (first) disk, e.g. 20GiB")
    g.add_argument("--disk-allocated", help="allocated part of that disk (default: all)")
    g.add_argument("--disk-write-rate", help="guest disk writes, e.g. 5MiB/s")
    g.add_argument("--disk-wss", help="disk area the guest writes to (default: 1GiB or the disk)")
    g.add_argument("--disk-io-size", help="size of one guest disk write (default 4KiB, the page and file system "
                                          "block size: the mirror copies a 64KiB granule per write)")
    g.add_argument("--bandwidth", help="migration bandwidth, e.g. 1Gbit/s or 125MiB/s")
    g.add_argument("--capacity", help="raw link speed for the final copy (default: = bandwidth)")
    g.add_argument("--max-downtime", help="downtime limit, e.g. 300ms")
    g.add_argument("--max-iterations", type=int, help="give up after this many iterations (default 30)")
    g.add_argument("--max-time", help="give up after this long (default 300s)")
    g.add_argument("--storage", choices=["non_shared_disk", "non_shared_inc", "shared"])
    g.add_argument("--mirror-mode", choices=["background", "write_blocking"])
    g.add_argument("--profile", help="host profile file from `simkvm calibrate`")
    g.add_argument("--qemu", help="the QEMU version whose migration loop to follow (host.qemu), e.g. 7.2 or 10.0")
    g.add_argument("--policy", help="orchestration policy: qemu, nova, ovirt-minimal-downtime, ovirt-post-copy, "
                                    "ovirt-suspend-workload, ovirt-very-large-vm, kubevirt, proxmox")


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The plan file (or the built-in defaults) with the flags applied on top."""
    return plan_from_dict(plan_data_from_args(args))


def plan_data_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The plan's YAML structure: the file's (or none) with the flags set on top, units not yet parsed."""
    data: dict[str, Any] = {}
    if args.plan:
        loaded = read_yaml(args.plan)
        if not isinstance(loaded, dict):
            raise UserError(f"{args.plan}: a plan file must be a mapping of sections (vm:, workload:, link:, ...)")
        data = loaded
        data.setdefault("name", args.plan.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    flags = {k: getattr(args, k, None) for k in PLAN_FLAGS}
    given = {k: v for k, v in flags.items() if v is not None}
    if not args.plan and "memory" not in given:
        raise UserError("give a plan file or at least --memory (e.g. simkvm predict --memory 4GiB "
                        "--dirty-rate 100MiB/s --wss 1GiB --bandwidth 1Gbit/s)")
    if given.get("pattern") is None and ("dirty_rate" in given or "wss" in given):
        mem = (data.get("workload") or {}).get("memory") or {}
        if mem.get("model") in (None, "idle"):
            given["pattern"] = "uniform"
    has_disks = bool((data.get("vm") or {}).get("disks")) if isinstance(data.get("vm"), dict) else False
    needs_disk = [k for k in ("disk_allocated", "disk_write_rate", "disk_wss") if k in given]
    if needs_disk and "disk" not in given and not has_disks:
        flag = "--" + needs_disk[0].replace("_", "-")
        raise UserError(f"{flag} needs a disk: add --disk SIZE (e.g. --disk 20GiB) or a plan file with vm.disks")
    if "disk" in given:
        disks = (data.get("vm") or {}).get("disks") or []
        if not disks:
            set_path(data, "vm.disks", [{"path": "/var/lib/libvirt/images/vm.qcow2", "size": given["disk"]}])
    if "disk_write_rate" in given and "disk_wss" not in given:
        if "wss" not in ((data.get("workload") or {}).get("disk") or {}):
            from ..model.units import parse_size

            disk_size = given.get("disk") or (((data.get("vm") or {}).get("disks") or [{}])[0].get("size"))
            size = parse_size(disk_size, "--disk") if disk_size is not None else 2**30
            given["disk_wss"] = min(size, 2**30)  # default: 1 GiB of the disk, or all of a smaller one
    if given.get("zero_fraction") is not None:
        try:
            given["zero_fraction"] = float(given["zero_fraction"])
        except ValueError:
            pass
    if "policy" in given and isinstance(data.get("policy"), dict):
        given["policy"] = {**data["policy"], "name": given["policy"]}
    for key, value in given.items():
        set_path(data, PLAN_FLAGS[key], value)
    return data


def auto_zero_line(plan: Plan, data: dict[str, Any]) -> tuple[str, dict[str, float]] | None:
    """What ``vm.zero_fraction: auto`` resolved to (None: the plan gave a number), as a line and a record."""
    from ..guestos import AUTO_ZERO_FRACTION_MAX, guest_os_nonzero_estimate
    from ..load import zero_fraction_is_auto
    from ..model.units import fmt_bytes
    from ..profile import load_profile

    if not zero_fraction_is_auto(data):
        return None
    guest = load_profile(data["profile"]).get("guest") if data.get("profile") is not None else None
    wss = plan.workload.memory.working_set_bytes()
    os_bytes = guest_os_nonzero_estimate(plan.vm.memory_bytes, guest)
    share = plan.vm.zero_fraction
    line = (f"zero pages (vm.zero_fraction: auto): {100 * share:.1f} % of RAM, "
            f"{fmt_bytes(share * plan.vm.memory_bytes)}  (half of RAM at most; the working set "
            f"{fmt_bytes(wss)} and the guest OS {fmt_bytes(max(os_bytes, 0.0))} are not zero)")
    return line, {"zero_fraction": share, "max": AUTO_ZERO_FRACTION_MAX, "working_set_bytes": wss,
                  "guest_os_nonzero_bytes": os_bytes}


#: --reference walks QEMU's loop one check at a time: its cost grows with the simulated time (~1 s per
#: simulated hour at 1 kbit/s), so it takes plans that give up within an hour.
REFERENCE_MAX_TIME_S = 3600.0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..htmlreport import check_target

    check_target(args.html)
    if args.plot:
        from ..io import FIGURE_SUFFIXES, check_output

        check_output(args.plot, "--plot", FIGURE_SUFFIXES)
    data = plan_data_from_args(args)
    plan = plan_from_dict(data)
    auto = auto_zero_line(plan, data)
    if args.reference and plan.max_time_s > REFERENCE_MAX_TIME_S:
        raise UserError(f"--reference walks QEMU's loop check by check; give migration.max_time <= 1h "
                        f"(--max-time 1h), got {plan.max_time_s:g} s")
    result = simulate(plan, reference=args.reference)
    result.plan = plan.to_dict()
    if args.json:
        out = result.to_dict()
        if auto:
            out["zero_fraction_auto"] = auto[1]
        json.dump(out, sys.stdout, indent=None if args.compact else 2)
        sys.stdout.write("\n")
    else:
        title = f"simkvm predict: {plan.name} (QEMU {plan.host.qemu} migration loop)"
        print(format_result(result, title=title + (f"\n{auto[0]}" if auto else "")))
    if args.plot:
        from .. import plot

        plot.save(plot.timeline(result), args.plot)
        print(f"timeline written to {args.plot}", file=sys.stderr)
    if args.html:
        from .. import htmlreport

        htmlreport.write(args.html, htmlreport.predict_page(result, command=command_line()))
        print(f"report written to {args.html}", file=sys.stderr)
    return 0


def command_line() -> str:
    """What the user typed, for the report's header."""
    import shlex

    return "simkvm " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="simulate one migration: verdict, times, bytes, iterations",
                       description="Simulate one live migration with non-shared storage and print the verdict, "
                                   "times, bytes and the per-iteration table.")
    add_plan_flags(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--compact", action="store_true", help="with --json: on one line")
    p.add_argument("--plot", metavar="PNG", help="also draw the timeline to this file")
    p.add_argument("--html", metavar="FILE", help="also write one self-contained HTML page (verdict, tables, figures)")
    p.add_argument("--reference", action="store_true",
                   help="walk QEMU's loop check by check instead of jumping between events (slow; for checks)")
    p.set_defaults(func=cmd_predict)
