"""Verdict grid of a plan (bandwidth x max downtime -> total time), as `simkvm plan --plot` draws it."""
from __future__ import annotations

import common

import simkvm
from simkvm import planner, plot
from simkvm.model.units import parse_duration, parse_rate


def main() -> None:
    p = common.parser(__doc__, "verdict_grid.png")
    p.add_argument("--plan", default=str(common.PLANS / "example.yaml"))
    p.add_argument("--bandwidths", default="1Gbit/s,2.5Gbit/s,10Gbit/s,25Gbit/s,40Gbit/s")
    p.add_argument("--downtimes", default="30ms,100ms,300ms,1s,2s")
    args = p.parse_args()
    plan = simkvm.load_plan(args.plan)
    cells = planner.grid(plan, [parse_rate(x) for x in args.bandwidths.split(",")],
                         [parse_duration(x) for x in args.downtimes.split(",")])
    common.save(plot.verdict_grid(cells, title=f"{plan.name}: predicted total time",
                                  min_bandwidth_Bps=planner.min_bandwidth_Bps(plan),
                                  max_downtime_s=plan.migration.max_downtime_s), args.output)


if __name__ == "__main__":
    main()
