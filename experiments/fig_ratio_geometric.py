"""Pre-copy time against dirty rate / bandwidth, simulated vs the textbook geometric series (8 GiB, sequential writes)."""
from __future__ import annotations

import common

import simkvm
from simkvm import plot


def main() -> None:
    args = common.parser(__doc__, "ratio_geometric.png").parse_args()
    df = simkvm.sweep(common.RATIO_SPEC)
    common.save(plot.ratio_curve(df, memory_bytes=8 * 2**30, max_downtime_s=0.3), args.output)


if __name__ == "__main__":
    main()
