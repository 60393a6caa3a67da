"""`simkvm policies`: the same plan under every orchestration policy, side by side."""
from __future__ import annotations

import argparse
import json
import sys

from ..model.errors import UserError
from ..model.plan import Plan
from ..model.units import fmt_bytes, fmt_duration
from ..policies import POLICIES
from ..sim import simulate
from .predict import add_plan_flags, plan_from_args


def compare_policies(plan: Plan, names: list[str] | None = None) -> list[dict]:
    rows = []
    for name in names or sorted(POLICIES, key=lambda n: (n != "qemu", n)):
        r = simulate(plan.with_(policy=name), timeline=False)
        rows.append({"policy": name, "outcome": r.outcome, "total_time_s": r.total_time_s,
                     "downtime_s": r.downtime_s, "iterations": r.iterations,
                     "bytes": r.ram_transferred_bytes + r.disk_transferred_bytes,
                     "guest_cpu_lost_s": r.guest_cpu_lost_s,
                     "actions": [a.to_dict() for a in r.actions]})
    return rows


def _actions_text(actions: list[dict], limit: int = 4) -> str:
    parts = []
    for a in actions:
        v = a["value"]
        if a["action"] == "set_downtime":
            parts.append(f"{a['time_s']:.0f}s downtime {v * 1000:.0f}ms")
        elif a["action"] == "throttle":
            parts.append(f"{a['time_s']:.0f}s throttle {v:.0%}")
        else:
            parts.append(f"{a['time_s']:.0f}s {a['action']}")
    if len(parts) > limit:
        parts = parts[: limit - 1] + [f"... ({len(parts) - limit + 1} more)", parts[-1]]
    return "; ".join(parts) or "-"


def cmd_policies(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    names = None
    if args.only is not None:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in POLICIES] or ([] if names else [args.only])
        if unknown:
            raise UserError(f"--only: no policy {unknown[0]!r}; policies: {', '.join(sorted(POLICIES))}")
    rows = compare_policies(plan, names)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    if args.markdown:
        print("| policy | outcome | total time | downtime | iterations | guest CPU lost | actions |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['policy']} | {r['outcome']} | {fmt_duration(r['total_time_s'])} | "
                  f"{fmt_duration(r['downtime_s'])} | {r['iterations']} | {fmt_duration(r['guest_cpu_lost_s'])} | "
                  f"{_actions_text(r['actions'])} |")
        return 0
    print(f"{'policy':<24} {'outcome':<14} {'total':>9} {'downtime':>9} {'iter':>5} {'sent':>10}  actions")
    for r in rows:
        print(f"{r['policy']:<24} {r['outcome']:<14} {fmt_duration(r['total_time_s']):>9} "
              f"{fmt_duration(r['downtime_s']):>9} {r['iterations']:>5} {fmt_bytes(r['bytes']):>10}  "
              f"{_actions_text(r['actions'])}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policies", help="the same plan under every orchestration policy, side by side")
    add_plan_flags(p)
    p.add_argument("--only", help="comma-separated policy names (default: all)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--markdown", action="store_true", help="a Markdown table (for reports)")
    p.set_defaults(func=cmd_policies)
