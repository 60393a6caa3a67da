"""`simkvm drain FLEET`: how long does emptying these hosts take, and which VMs make it?"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..model.errors import UserError
from ..model.units import fmt_duration, fmt_rate, parse_duration

ORDERS = ("file", "largest", "smallest", "dirty", "longest")


def _fleet(args: argparse.Namespace):
    from ..drain import load_fleet

    concurrency: Any = args.concurrency
    if concurrency is not None and concurrency.isdigit():
        concurrency = int(concurrency)
    return load_fleet(args.fleet, bandwidth=args.bandwidth, max_downtime=args.max_downtime, max_time=args.max_time,
                      concurrency=concurrency, policy=args.policy)


def _order(fleet, name: str) -> list[str]:
    from ..drain.optimize import heuristic_orders

    key = {"file": "file order", "largest": "largest first", "smallest": "smallest first",
           "dirty": "most dirty first", "longest": "longest alone first"}[name]
    return heuristic_orders(fleet)[key] if name != "file" else [vm.name for vm in fleet.vms]


def format_drain(result, window_s: float | None = None) -> str:
    lines = [f"simkvm drain: {result.name} ({result.source}, {result.concurrency})", ""]
    lines.append(f"{'VM':<16} {'from -> to':<24} {'start':>9} {'end':>9} {'time':>9} {'downtime':>9}  outcome")
    for v in sorted(result.vms, key=lambda v: (v.start_s, v.name)):
        r = v.result
        route = f"{v.source} -> {v.destination or '-'}"
        down = f"{r.downtime_s * 1000:.0f} ms" if r.converged else "-"
        lines.append(f"{v.name:<16} {route:<24} {v.start_s:>8.1f}s {v.end_s:>8.1f}s {r.total_time_s:>8.1f}s "
                     f"{down:>9}  {r.outcome}")
    lines.append("")
    lines.append(f"makespan {fmt_duration(result.makespan_s)}; {result.converged} of {len(result.vms)} VMs converged")
    if window_s:
        ok = result.makespan_s <= window_s and result.converged == len(result.vms)
        lines.append(f"window {fmt_duration(window_s)}: " + ("fits" if ok else (
            "does not fit: " + ("ends " + fmt_duration(result.makespan_s - window_s) + " late"
                                if result.makespan_s > window_s else "")
            + ("; " if result.makespan_s > window_s and result.converged < len(result.vms) else "")
            + (f"{len(result.vms) - result.converged} VM(s) do not move"
               if result.converged < len(result.vms) else ""))))
    for link in result.link_usage:
        lines.append(f"link {link}: {fmt_rate(result.link_capacity_Bps[link])}, "
                     f"{result.mean_utilisation(link):.0%} used by migrations over the makespan")
    for v in sorted(result.vms, key=lambda v: v.start_s):
        if not v.result.converged:
            lines.append(f"  {v.name}: {v.result.reason}")
    return "\n".join(lines)


def format_optimization(opt) -> str:
    best = opt.best
    lines = [f"searched {opt.evaluations} drains in {opt.seconds:.1f} s; best: {best.label}",
             f"  {best.result.summary_line()}", "",
             f"{'stack default':<14} {'makespan':>10} {'converged':>10} {'best saves':>18} {'more converge':>14}"]
    for stack, g in opt.gains().items():
        saves = f"{fmt_duration(g['makespan_gain_s'])} ({g['makespan_gain_pct']:.0f} %)"
        lines.append(f"{stack:<14} {fmt_duration(g['makespan_s']):>10} {g['converged']:>10} {saves:>18} "
                     f"{g['converged_gain']:>+14d}")
    lines.append(f"{'best':<14} {fmt_duration(best.result.makespan_s):>10} {best.result.converged:>10}")
    lines.append("order: " + ", ".join(best.order))
    return "\n".join(lines)


def cmd_drain(args: argparse.Namespace) -> int:
    window_s = parse_duration(args.window, "--window", allow_zero=False) if args.window else None
    fleet = _fleet(args)
    if not fleet.vms:
        raise UserError(f"{args.fleet}: no VM is on a host being drained ({', '.join(fleet.drain)})")
    if args.execute:
        from ..drain.execute import execute_drain

        return execute_drain(fleet, args)
    out: dict[str, Any] = {}
    if args.optimize:
        from ..drain.optimize import optimize

        opt = optimize(fleet, budget_s=args.budget, progress=_progress(args))
        result = opt.best.result
        out = {**result.to_dict(), "optimize": opt.to_dict()}
        text = format_drain(result, window_s) + "\n\n" + format_optimization(opt)
    else:
        from ..drain import drain

        result = drain(fleet, _order(fleet, args.order))
        out = result.to_dict()
        text = format_drain(result, window_s)
    if args.json:
        json.dump(out, sys.stdout, indent=None if args.compact else 2)
        sys.stdout.write("\n")
    else:
        print(text)
    if args.plot:
        from ..drain.plot import gantt
        from ..plot import save

        save(gantt(result, window_s=window_s), args.plot)
        print(f"Gantt chart written to {args.plot}", file=sys.stderr)
    return 0


def _progress(args: argparse.Namespace):
    if args.json or not sys.stderr.isatty():
        return None

    def show(n: int, cand) -> None:
        print(f"\rsimkvm drain: {n} drains tried", end="", file=sys.stderr, flush=True)
    return show


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "drain", help="empty host(s): many migrations over shared links, within a stack's limits",
        description="Predict a whole drain: every VM of the fleet file (YAML, or a fleet CSV) migrated over its "
                    "source's NIC, shared max-min fairly with the other migrations in flight, within a "
                    "concurrency model (nova, kubevirt, ovirt or explicit limits); prints each VM's start, end, "
                    "downtime and outcome, the makespan and the links' use.")
    p.add_argument("fleet", help="fleet file (YAML, see README 'Draining a host') or a fleet CSV")
    p.add_argument("--bandwidth", help="each host's NIC, e.g. 10Gbit/s (overrides link.bandwidth)")
    p.add_argument("--concurrency", help="nova, kubevirt, ovirt, or a number of migrations at once")
    p.add_argument("--max-downtime", help="downtime limit for every VM, e.g. 300ms")
    p.add_argument("--max-time", help="give each migration up after this long, e.g. 1h")
    p.add_argument("--policy", help="every VM's orchestration policy (a VM row's own policy wins)")
    p.add_argument("--order", choices=ORDERS, default="file",
                   help="queue order: file, largest (RAM+disk) first, smallest first, most dirty first, "
                        "longest (alone) first")
    p.add_argument("--window", help="maintenance window, e.g. 2h: say whether the drain fits")
    p.add_argument("--optimize", action="store_true",
                   help="search orders, migrations per source and per-migration bandwidth; compare the best "
                        "with Nova's, KubeVirt's and oVirt's defaults")
    p.add_argument("--budget", type=float, default=45.0, help="--optimize: seconds to search (default 45)")
    p.add_argument("--execute", action="store_true",
                   help="run the drain for real on the testbed (guests from host a to b) and compare with "
                        "the prediction")
    p.add_argument("--json", action="store_true", help="print the drain as one JSON object")
    p.add_argument("--compact", action="store_true", help="with --json: on one line")
    p.add_argument("--plot", metavar="PNG", help="draw the Gantt chart and the links' use to this file")
    p.set_defaults(func=cmd_drain)
