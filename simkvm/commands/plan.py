"""`simkvm plan`: which bandwidth and downtime make this migration work, and how sure are we?"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import planner
from ..model.errors import UserError
from ..model.units import fmt_bits, fmt_bytes, fmt_duration, fmt_rate, parse_duration, parse_fraction, parse_rate
from .predict import add_plan_flags, command_line, plan_from_args

DEFAULT_BANDWIDTHS = "100Mbit/s,1Gbit/s,2.5Gbit/s,10Gbit/s,25Gbit/s,40Gbit/s,100Gbit/s"
DEFAULT_DOWNTIMES = "30ms,100ms,300ms,1s,2s"


#: Each grid cell is a simulation, each Monte Carlo sample too: bounded so the command answers in minutes.
MAX_GRID_VALUES, MAX_SAMPLES = 100, 100_000


def _list(text: str, parse, what: str) -> list[float]:
    values = [parse(x.strip(), what, allow_zero=False) for x in text.split(",") if x.strip()]
    if not values:
        raise UserError(f"{what} must list at least one value, comma-separated, got {text!r}")
    if len(values) > MAX_GRID_VALUES:
        raise UserError(f"{what} lists {len(values):,} values; at most {MAX_GRID_VALUES} (each is a column of "
                        f"simulations)")
    return values


def cmd_plan(args: argparse.Namespace) -> int:
    from ..htmlreport import check_target

    check_target(args.html)
    if not 1 <= args.samples <= MAX_SAMPLES:
        raise UserError(f"--samples must be 1 to {MAX_SAMPLES:,}, got {args.samples}")
    if not 0 <= args.seed < 2**64:
        raise UserError(f"--seed must be a whole number from 0 to 2^64-1, got {args.seed}")
    if args.plot:
        from ..io import FIGURE_SUFFIXES, check_output

        check_output(args.plot, "--plot", FIGURE_SUFFIXES)
    plan = plan_from_args(args)
    bws = _list(args.bandwidths, parse_rate, "--bandwidths")
    dts = _list(args.downtimes, parse_duration, "--downtimes")
    cells = planner.grid(plan, bws, dts)
    out: dict[str, Any] = {
        "min_bandwidth_Bps": planner.min_bandwidth_Bps(plan),
        "min_downtime_s": planner.min_downtime_s(plan),
        "grid": cells,
    }
    advice = planner.advise(
        plan,
        max_total_time_s=parse_duration(args.max_total_time, "--max-total-time") if args.max_total_time else None,
        max_bandwidth_Bps=parse_rate(args.max_bandwidth, "--max-bandwidth") if args.max_bandwidth else None,
        max_downtime_s=parse_duration(args.max_allowed_downtime, "--max-allowed-downtime")
        if args.max_allowed_downtime else None,
        allow_auto_converge=not args.no_auto_converge, allow_postcopy=not args.no_postcopy)
    out["recommendations"], out["notes"] = advice.settings, advice.notes
    if args.uncertainty:
        spread = parse_fraction(args.uncertainty, "--uncertainty")
        mc = planner.monte_carlo(plan, spread, samples=args.samples, seed=args.seed)
        out["monte_carlo"] = mc.to_dict()
    if args.plot or args.html:
        from .. import plot

        fig = plot.verdict_grid(cells, title=f"{plan.name}: predicted total time",
                                min_bandwidth_Bps=out["min_bandwidth_Bps"], max_downtime_s=plan.migration.max_downtime_s)
        if args.plot:
            fig.savefig(args.plot, dpi=110, bbox_inches="tight")
            print(f"grid written to {args.plot}", file=sys.stderr)
        if args.html:
            from .. import htmlreport

            if "monte_carlo" in out:
                out["monte_carlo_summary"] = f"uncertainty {args.uncertainty}, {mc.summary()}"
            htmlreport.write(args.html, htmlreport.plan_page(plan, out, grid_figure=fig, command=command_line()))
            out.pop("monte_carlo_summary", None)
            print(f"report written to {args.html}", file=sys.stderr)
        plot.plt.close(fig)
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    print(f"simkvm plan: {plan.name}")
    print()
    header = "bandwidth \\ max downtime" + "".join(f"{fmt_duration(d):>12}" for d in dts)
    print(header)
    for bw in bws:
        row = [c for c in cells if c["bandwidth_Bps"] == bw]
        print(f"{fmt_bits(bw):>24}" + "".join(
            f"{fmt_duration(c['total_time_s']) if c['converged'] else 'no':>12}" for c in row))
    print()
    mb, md = out["min_bandwidth_Bps"], out["min_downtime_s"]
    print(f"minimum bandwidth for {fmt_duration(plan.migration.max_downtime_s)} downtime: "
          + (f"{fmt_bits(mb)} ({fmt_rate(mb)})" if mb else "none up to 800 Gbit/s"))
    print(f"minimum downtime at {fmt_bits(plan.link.bandwidth_Bps)}: "
          + ("none up to 2000 s" if not md else "1 ms or less" if md <= 0.001 else fmt_duration(md)))
    print()
    print("recommended settings (best first):")
    if not out["recommendations"]:
        print("  none meets the constraints")
    for i, rec in enumerate(out["recommendations"], 1):
        print(f"  {i}. {rec['setting']}: total {fmt_duration(rec['total_time_s'])}, downtime "
              f"{fmt_duration(rec['downtime_s'])}, {fmt_bytes(rec['bytes'])} sent, risk: {rec['risk']}")
    for note in out["notes"]:
        print(f"  note: {note}")
    if "monte_carlo" in out:
        print()
        print(f"uncertainty {args.uncertainty}, {mc.summary()}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="verdict grid, minimum bandwidth/downtime, recommended settings",
                       description="Search the simulator for the settings that make a migration work.")
    add_plan_flags(p)
    p.add_argument("--bandwidths", default=DEFAULT_BANDWIDTHS, help="grid rows, comma-separated")
    p.add_argument("--downtimes", default=DEFAULT_DOWNTIMES, help="grid columns, comma-separated")
    p.add_argument("--max-total-time", help="constraint for recommendations, e.g. 10min")
    p.add_argument("--max-bandwidth", help="the most bandwidth the link can give (recommendations may raise to it)")
    p.add_argument("--max-allowed-downtime", help="the longest pause the service tolerates (default: the plan's)")
    p.add_argument("--no-auto-converge", action="store_true", help="do not recommend throttling the guest")
    p.add_argument("--no-postcopy", action="store_true", help="do not recommend post-copy")
    p.add_argument("--uncertainty", help="relative spread of dirty rate and working set, e.g. 20%%")
    p.add_argument("--samples", type=int, default=300, help="Monte Carlo samples (default 300)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--plot", metavar="PNG", help="draw the grid as a heatmap with the convergence boundary")
    p.add_argument("--html", metavar="FILE", help="also write one self-contained HTML page (verdict, tables, figures)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)
