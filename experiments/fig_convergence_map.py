"""Convergence map of the example VM: dirty rate x bandwidth (or the dirty rate / bandwidth ratio), boundaries per downtime limit."""
from __future__ import annotations

import common

import simkvm
from simkvm import plot


def main() -> None:
    p = common.parser(__doc__, "convergence_map.png")
    p.add_argument("--ratio", action="store_true", help="x axis: dirty rate / bandwidth instead of dirty rate")
    args = p.parse_args()
    df = simkvm.sweep(common.CONVERGENCE_SPEC)
    fig = plot.convergence_map(df, x=plot.RATIO) if args.ratio else plot.convergence_map(df)
    common.save(fig, args.output)


if __name__ == "__main__":
    main()
