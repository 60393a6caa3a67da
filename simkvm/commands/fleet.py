"""`simkvm fleet CSV`: which VMs of an inventory fit the maintenance window over one link, and what to change.

The capacity-planning notebook's answer without Jupyter: each row of the CSV
(``simkvm.fleet``'s columns) becomes a plan over the given link; the VMs are
migrated one after another in file order; a VM fits when it converges and the
running total is still inside the window. For each VM that does not, the
planner says what would make it work (``--html`` writes it all as one page).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import planner
from ..model.units import fmt_bits, fmt_duration, parse_duration, parse_rate
from ..sim import simulate


def assess(csv: str, *, bandwidth: str, max_downtime: str, window: str,
           max_bandwidth: str | None = None) -> dict[str, Any]:
    """One row per VM: outcome, times, the running total, whether it fits, and what to change."""
    from ..fleet import fleet_plans

    window_s = parse_duration(window, "--window", allow_zero=False)
    max_bw = parse_rate(max_bandwidth, "--max-bandwidth", allow_zero=False) if max_bandwidth else None
    plans = fleet_plans(csv, bandwidth=bandwidth, max_downtime=max_downtime, max_time=window_s)
    rows, clock = [], 0.0
    results = {}
    for name, plan in plans.items():
        r = results[name] = simulate(plan)
        if r.converged:
            clock += r.total_time_s
        fits = bool(r.converged and clock <= window_s)
        row: dict[str, Any] = {
            "vm": name, "outcome": r.outcome, "total_time_s": r.total_time_s if r.converged else None,
            "downtime_s": r.downtime_s if r.converged else None, "iterations": r.iterations,
            "cumulative_s": clock if r.converged else None, "fits_window": fits, "reason": r.reason,
            "min_bandwidth_Bps": None, "change": None}
        if not r.converged:
            row["min_bandwidth_Bps"] = planner.min_bandwidth_Bps(plan)
            advice = planner.advise(plan, max_bandwidth_Bps=max_bw, allow_policies=False)
            best = advice.settings[0] if advice.settings else None
            row["change"] = (f"{best['setting']} (total {fmt_duration(best['total_time_s'])}, risk: {best['risk']})"
                             if best else "; ".join(advice.notes) or "nothing tried converges")
        elif not fits:
            row["change"] = "converges, but the window is used up before it: a longer window or a faster link"
        rows.append(row)
    return {"bandwidth_Bps": parse_rate(bandwidth, "--bandwidth"), "window_s": window_s,
            "max_downtime_s": parse_duration(max_downtime, "--max-downtime"), "vms": rows,
            "fit": sum(r["fits_window"] for r in rows), "results": results}


def format_fleet(out: dict[str, Any]) -> str:
    rows = out["vms"]
    lines = [f"{out['fit']} of {len(rows)} VMs fit the {fmt_duration(out['window_s'])} window at "
             f"{fmt_bits(out['bandwidth_Bps'])}, max downtime {fmt_duration(out['max_downtime_s'])} "
             "(one after another, in file order)", ""]
    width = max(len(r["vm"]) for r in rows) if rows else 2
    lines.append(f"{'vm':<{width}}  {'outcome':<14} {'total':>9} {'downtime':>9} {'cumulative':>11}  fits")
    for r in rows:
        lines.append(f"{r['vm']:<{width}}  {r['outcome']:<14} {fmt_duration(r['total_time_s']):>9} "
                     f"{fmt_duration(r['downtime_s']):>9} {fmt_duration(r['cumulative_s']):>11}  "
                     f"{'yes' if r['fits_window'] else 'no'}")
    changes = [r for r in rows if r["change"]]
    if changes:
        lines += ["", "what to change:"]
        for r in changes:
            need = f" (converges from {fmt_bits(r['min_bandwidth_Bps'])})" if r["min_bandwidth_Bps"] else ""
            lines.append(f"  {r['vm']}{need}: {r['change']}")
    return "\n".join(lines)


def fleet_page(out: dict[str, Any], *, command: str | None = None) -> str:
    from .. import htmlreport as h
    from .. import plot

    rows, results = out["vms"], out["results"]
    n = len(rows)
    tone = "good" if out["fit"] == n else ("warn" if out["fit"] else "bad")
    box = h.verdict(f"{out['fit']} of {n} VMs fit the {fmt_duration(out['window_s'])} window",
                    f"over {fmt_bits(out['bandwidth_Bps'])}, max downtime {fmt_duration(out['max_downtime_s'])}, "
                    "one after another in file order", tone=tone)
    vm_table = h.table(("vm", "outcome", "total time", "downtime", "iterations", "cumulative", "fits", "why"),
                       [(r["vm"], r["outcome"], fmt_duration(r["total_time_s"]), fmt_duration(r["downtime_s"]),
                         r["iterations"], fmt_duration(r["cumulative_s"]), "yes" if r["fits_window"] else "no",
                         r["reason"]) for r in rows],
                       numeric=[False, False, True, True, True, True, False, False])
    change_rows = [(r["vm"], fmt_bits(r["min_bandwidth_Bps"]) if r["min_bandwidth_Bps"] else "-", r["change"])
                   for r in rows if r["change"]]
    changes = (h.table(("vm", "converges from", "what to change"), change_rows) if change_rows
               else h.paragraph("nothing: every VM fits"))
    fig = plot.fleet_times([r["vm"] for r in rows], [r["total_time_s"] for r in rows],
                           [r["total_time_s"] is not None for r in rows],
                           window_s=out["window_s"])
    failing = [r["vm"] for r in rows if not r["fits_window"]]
    worst = failing[0] if failing else max(results, key=lambda k: results[k].total_time_s)
    parts = [box, h.section("VMs", vm_table), h.section("What to change", changes),
             h.section("The window", h.figure(fig, "fleet migration times against the window")),
             h.section(f"Timeline of {worst}", h.figure(plot.timeline(results[worst], label=worst),
                                                          f"timeline of {worst}"))]
    return h.page("simkvm fleet: maintenance window", *parts, command=command)


def cmd_fleet(args: argparse.Namespace) -> int:
    from ..htmlreport import check_target

    check_target(args.html)
    from .predict import command_line

    out = assess(args.csv, bandwidth=args.bandwidth, max_downtime=args.max_downtime, window=args.window,
                 max_bandwidth=args.max_bandwidth)
    if args.json:
        json.dump({k: v for k, v in out.items() if k != "results"}, sys.stdout, indent=2)
        print()
    else:
        print(format_fleet(out))
    if args.html:
        from .. import htmlreport

        htmlreport.write(args.html, fleet_page(out, command=command_line()))
        print(f"report written to {args.html}", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="which VMs of an inventory CSV fit a maintenance window, what to change",
                       description="Each row of the CSV (name, memory, zero_fraction, disk, disk_allocated, "
                                   "dirty_rate, wss, disk_write_rate; optional disk_wss, io_size) as a plan over "
                                   "one link, migrated one after another.")
    p.add_argument("csv", help="fleet inventory, e.g. data/fleet.csv")
    p.add_argument("--bandwidth", default="10Gbit/s", help="migration bandwidth (default 10Gbit/s)")
    p.add_argument("--max-downtime", default="300ms", help="downtime limit (default 300ms)")
    p.add_argument("--window", default="2h", help="maintenance window (default 2h)")
    p.add_argument("--max-bandwidth", help="the most the link can give: recommendations may raise to it")
    p.add_argument("--json", action="store_true")
    p.add_argument("--html", metavar="FILE", help="also write one self-contained HTML page")
    p.set_defaults(func=cmd_fleet)
