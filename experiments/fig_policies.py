"""plans/nonconverging.yaml under every orchestration policy: total time, outcome, downtime, actions."""
from __future__ import annotations

import common

import simkvm
from simkvm import plot
from simkvm.policies import POLICIES


def main() -> None:
    p = common.parser(__doc__, "policies.png")
    p.add_argument("--plan", default=str(common.PLANS / "nonconverging.yaml"))
    args = p.parse_args()
    plan = simkvm.load_plan(args.plan)
    results = {name: simkvm.simulate(plan.with_(policy=name), timeline=False) for name in POLICIES}
    common.save(plot.policy_comparison(results), args.output)


if __name__ == "__main__":
    main()
