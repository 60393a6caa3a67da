"""Timeline of one predicted migration (README's example-timeline.png): remaining RAM/disk, downtime, actions."""
from __future__ import annotations

import common

import simkvm
from simkvm import plot


def main() -> None:
    p = common.parser(__doc__, "timeline_example.png")
    p.add_argument("--plan", default=str(common.PLANS / "example.yaml"), help="plan file (default: plans/example.yaml)")
    p.add_argument("--policy", default=None, help="run under this orchestration policy (e.g. ovirt-post-copy)")
    args = p.parse_args()
    plan = simkvm.load_plan(args.plan)
    if args.policy:
        plan = plan.with_(policy=args.policy)
    common.save(plot.timeline(simkvm.simulate(plan), label=plan.name), args.output)


if __name__ == "__main__":
    main()
