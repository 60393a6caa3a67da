"""`simkvm preflight`: measure a running VM, check the destination, and say GO / GO-WITH-SETTINGS / NO-GO."""
from __future__ import annotations

import argparse
import json
import sys

from ..model.errors import UserError
from ..model.units import parse_duration, parse_rate
from .hosts import add_domain_and_hosts, host_uri

EPILOG = """exit codes:
  0  GO                plain pre-copy meets the constraints
  1  GO-WITH-SETTINGS  only an aid, a policy or a higher downtime/bandwidth does (see 'recommended')
  3  NO-GO             nothing does, or the destination cannot take the VM
  2  bad input, a missing domain or an unreachable host (one line saying what is wrong)
"""


def _periods(text: str) -> list[float]:
    """Whole seconds from 1 to 60: QEMU's calc-dirty-rate calc-time range (MIN/MAX_FETCH_DIRTYRATE_TIME_SEC in
    migration/dirtyrate.h), and libvirt's virDomainStartDirtyRateCalc takes whole seconds."""
    periods = [parse_duration(p.strip(), "--periods") for p in text.split(",") if p.strip()]
    if not periods or len(periods) > 10:
        raise UserError(f"--periods must list 1 to 10 durations like 1s,2s,4s, got {text!r}")
    for p in periods:
        if p != int(p) or not 1 <= p <= 60:
            raise UserError(f"--periods: each period must be whole seconds from 1s to 60s (QEMU's calc-dirty-rate), "
                            f"got {p:g} s")
    return periods


def cmd_preflight(args: argparse.Namespace) -> int:
    from ..load import plan_from_file
    from ..preflight import format_report, preflight

    plan = plan_from_file(args.plan) if args.plan else None
    report = preflight(
        args.domain, host_uri(args.src), host_uri(args.dst), plan=plan,
        max_downtime_s=parse_duration(args.max_downtime, "--max-downtime") if args.max_downtime else None,
        bandwidth_Bps=parse_rate(args.bandwidth, "--bandwidth") if args.bandwidth else None,
        max_total_time_s=parse_duration(args.max_total_time, "--max-total-time") if args.max_total_time else None,
        periods_s=_periods(args.periods), progress=not args.json and sys.stderr.isatty(),
    )
    if args.json:
        json.dump(report, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(format_report(report))
    return int(report["exit_code"])


def add_commands(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser(
        "preflight", help="measure a running VM's dirty rate, check the destination: GO / GO-WITH-SETTINGS / NO-GO",
        description="Against real libvirt, without touching the VM (no migration, no suspend): read the domain's "
                    "memory and disks, measure its dirty rate with libvirt's calc-dirty-rate over several periods "
                    "(the unique-dirtied-bytes curve), check the destination's free memory and storage, then "
                    "predict plain pre-copy at the given bandwidth and downtime limit and recommend settings.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_domain_and_hosts(p)
    p.add_argument("--plan", help="plan file for the link, migration knobs and host constants "
                                  "(its vm and workload.memory are replaced by what is measured)")
    p.add_argument("--max-downtime", help="downtime limit to meet, e.g. 300ms (default: the plan's)")
    p.add_argument("--bandwidth", help="migration bandwidth, e.g. 1Gbit/s or 32MiB/s (default: the plan's)")
    p.add_argument("--max-total-time", help="the migration must also finish within this, e.g. 60s")
    p.add_argument("--periods", default="1s,2s,4s",
                   help="dirty-rate measurement periods, whole seconds (default 1s,2s,4s)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_preflight)
