"""data/fleet.csv migrated one VM after another vs the maintenance window (or, --worst, the worst VM's timeline)."""
from __future__ import annotations

import common

import simkvm
from simkvm import plot
from simkvm.model.units import parse_duration


def main() -> None:
    p = common.parser(__doc__, "fleet.png")
    p.add_argument("--bandwidth", default="10Gbit/s")
    p.add_argument("--max-downtime", default="300ms")
    p.add_argument("--window", default="2h", help="maintenance window")
    p.add_argument("--worst", action="store_true", help="timeline of the worst VM instead of the fleet chart")
    args = p.parse_args()
    plans = common.fleet_plans(args.bandwidth, args.max_downtime, args.window)
    results = {name: simkvm.simulate(pl) for name, pl in plans.items()}
    if args.worst:
        failing = [n for n, r in results.items() if not r.converged]
        worst = failing[0] if failing else max(results, key=lambda n: results[n].total_time_s)
        fig = plot.timeline(results[worst], label=worst)
    else:
        fig = plot.fleet_times(list(results), [r.total_time_s for r in results.values()],
                               [r.converged for r in results.values()], window_s=parse_duration(args.window),
                               title=None)
    common.save(fig, args.output)


if __name__ == "__main__":
    main()
