"""Bytes sent and newly dirtied per pre-copy iteration of one predicted migration."""
from __future__ import annotations

import common

import simkvm
from simkvm import plot


def main() -> None:
    p = common.parser(__doc__, "bytes_per_iteration.png")
    p.add_argument("--plan", default=str(common.PLANS / "example.yaml"), help="plan file (default: plans/example.yaml)")
    args = p.parse_args()
    common.save(plot.bytes_per_iteration(simkvm.simulate(simkvm.load_plan(args.plan))), args.output)


if __name__ == "__main__":
    main()
