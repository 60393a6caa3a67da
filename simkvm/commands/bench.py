"""`simkvm bench`: how fast the simulator predicts (figures, not pass/fail)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable

from .. import planner
from ..model.errors import UserError
from ..model.plan import Plan
from ..sim import simulate


def bench_plan(memory: str) -> Plan:
    """Realistic plans with about 10 iterations each: a dirtying guest with a disk; the
    16 GiB VM on 10 Gbit/s, the 1 TiB VM (larger working set) on 40 Gbit/s."""
    big = memory.lower().endswith("tib")
    return Plan.from_dict({
        "name": f"bench-{memory}",
        "vm": {"memory": memory, "zero_fraction": 0.2,
               "disks": [{"path": "/var/lib/libvirt/images/bench.qcow2", "size": "20GiB", "allocated": "8GiB"}]},
        "workload": {"memory": {"model": "uniform", "dirty_rate": "1GiB/s" if big else "600MiB/s",
                                "wss": "8GiB" if big else "2GiB"},
                     "disk": {"write_rate": "2MiB/s", "wss": "1GiB"}},
        "link": {"bandwidth": "40Gbit/s" if big else "10Gbit/s"},
        "migration": {"max_downtime": "300ms", "max_time": "3600s"},
    })


def measure(plan: Plan, seconds: float) -> tuple[float, int]:
    """Predictions per second (timeline off, as in sweeps) and the iteration count."""
    result = simulate(plan, timeline=False)
    n, start = 0, time.perf_counter()
    while True:
        simulate(plan, timeline=False)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed, result.iterations


def timed(f: Callable[[], Any], n: int = 1) -> float:
    """Seconds per call of ``f``."""
    start = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - start) / n


def plan_change_figures(plan: Plan) -> dict[str, float]:
    """The paths that change a plan many times: one ``with_``, the planner's bisection, Monte Carlo."""
    return {
        "plan_change_us": round(1e6 * timed(lambda: plan.with_(**{"link.bandwidth": 2e9,
                                                                   "migration.max_downtime": 0.2}), 300), 1),
        "min_bandwidth_search_s": round(timed(lambda: planner.min_bandwidth_Bps(plan)), 3),
        "monte_carlo_200_s": round(timed(lambda: planner.monte_carlo(plan, 0.2, samples=200)), 3),
    }


def cmd_bench(args: argparse.Namespace) -> int:
    if not 0.01 <= args.seconds <= 600:  # also refuses nan: the measuring loop would never end
        raise UserError(f"--seconds must be from 0.01 to 600, got {args.seconds}")
    if args.sweep:
        from ..sweep.bench import bench_sweep  # the sweep issue's benchmark

        return bench_sweep(args)
    if args.drain:
        from ..drain.bench import bench_drain  # the drain issue's benchmark

        return bench_drain(args)
    small, small_iter = measure(bench_plan("16GiB"), args.seconds)
    big, big_iter = measure(bench_plan("1TiB"), args.seconds)
    fine_plan = bench_plan("16GiB")
    fast = simulate(fine_plan, timeline=False)
    ref = simulate(fine_plan, reference=True, timeline=False)
    agree = abs(fast.total_time_s - ref.total_time_s) / ref.total_time_s
    changes = plan_change_figures(fine_plan)
    figures = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "predictions_per_s_16GiB": round(small, 1),
        "iterations_16GiB": small_iter,
        "predictions_per_s_1TiB": round(big, 1),
        "iterations_1TiB": big_iter,
        "slowdown_1TiB_vs_16GiB": round(small / big, 3),
        "fast_vs_reference_total_time_rel_diff": agree,
        **changes,
    }
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        print()
    else:
        print(f"machine: {figures['machine']} (one core)")
        print(f"16 GiB plan ({small_iter} iterations): {small:,.0f} predictions/s")
        print(f"1 TiB plan  ({big_iter} iterations): {big:,.0f} predictions/s")
        print(f"1 TiB / 16 GiB cost ratio: {small / big:.2f}x (target <= 2); per iteration: "
              f"{1e6 / small / small_iter:.0f} us vs {1e6 / big / big_iter:.0f} us")
        print(f"fast vs reference mode, total time: {agree:.2e} relative difference (target < 1e-2)")
        print(f"plan changes (16 GiB plan): {changes['plan_change_us']:.0f} us per with_; planner min-bandwidth "
              f"search {changes['min_bandwidth_search_s']:.2f} s; Monte Carlo, 200 samples "
              f"{changes['monte_carlo_200_s']:.2f} s")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the simulator (predictions per second)")
    p.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default 3)")
    p.add_argument("--sweep", action="store_true", help="benchmark a 100,000-scenario sweep instead")
    p.add_argument("--drain", action="store_true",
                   help="benchmark a 1,000-VM, 20-host drain and --optimize on 100 VMs instead")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)
