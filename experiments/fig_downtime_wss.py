"""Effect of working set size and downtime limit (1 GiB/s of page writes, 10 Gbit/s): lines or a convergence map."""
from __future__ import annotations

import common

import simkvm
from simkvm import plot


def main() -> None:
    p = common.parser(__doc__, "downtime_wss.png")
    p.add_argument("--map", action="store_true", help="working set x downtime convergence map instead of lines")
    args = p.parse_args()
    df = simkvm.sweep(common.WSS_SPEC)
    fast = df[df["workload.memory.dirty_rate_Bps"] == df["workload.memory.dirty_rate_Bps"].max()]
    if args.map:
        fig = plot.convergence_map(fast, x="workload.memory.wss_bytes", y="migration.max_downtime_s",
                                   title="1 GiB/s of page writes over 10 Gbit/s: working set x downtime limit")
    else:
        fig = plot.effect_lines(fast, "workload.memory.wss_bytes", series="migration.max_downtime_s",
                                title="1 GiB/s of page writes, 10 Gbit/s: total time vs working set, by downtime limit")
    common.save(fig, args.output)


if __name__ == "__main__":
    main()
