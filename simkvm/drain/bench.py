"""`simkvm bench --drain`: how fast a whole drain is predicted, and how fast --optimize searches.

Targets (issue 13): a 1,000-VM, 20-host drain in under 10 s; --optimize on
100 VMs in under a minute. Wall time on a shared machine depends on the
load, so CPU time (this process only) is printed next to it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from .engine import drain
from .optimize import optimize
from .synthetic import synthetic_fleet


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def bench_drain(args: argparse.Namespace) -> int:
    figures: dict = {"machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
                     "load_average_1min": os.getloadavg()[0]}
    for stack in ("nova", "kubevirt", "ovirt"):
        fleet, load_w, _ = _timed(lambda: synthetic_fleet(1000, 20, concurrency=stack))
        result, wall, cpu = _timed(lambda: drain(fleet))
        figures[f"drain_1000x20_{stack}"] = {
            "load_s": round(load_w, 3), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "target_s": 10.0, "converged": result.converged, "makespan_s": round(result.makespan_s, 1),
            "link_reallocations": result.meta["reallocations"]}
    fleet = synthetic_fleet(100, 4, concurrency="kubevirt")
    opt, wall, cpu = _timed(lambda: optimize(fleet, budget_s=55.0))
    figures["optimize_100"] = {
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "target_s": 60.0, "drains_simulated": opt.evaluations,
        "best": opt.best.label, "gains": {k: {"makespan_gain_pct": round(v["makespan_gain_pct"], 1),
                                             "converged_gain": v["converged_gain"]} for k, v in opt.gains().items()}}
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        print()
        return 0
    print(f"machine: {figures['machine']}, load average {figures['load_average_1min']:.1f}")
    for stack in ("nova", "kubevirt", "ovirt"):
        f = figures[f"drain_1000x20_{stack}"]
        print(f"1,000-VM, 20-host drain ({stack}): {f['wall_s']:.2f} s wall, {f['cpu_s']:.2f} s CPU "
              f"(target < 10 s; fleet loaded in {f['load_s']:.2f} s); {f['converged']} converge, "
              f"makespan {f['makespan_s'] / 3600:.1f} h")
    o = figures["optimize_100"]
    print(f"--optimize, 100 VMs on 2+2 hosts: {o['wall_s']:.1f} s wall, {o['cpu_s']:.1f} s CPU for "
          f"{o['drains_simulated']} drains (target < 60 s); best: {o['best']}")
    for stack, g in o["gains"].items():
        print(f"  vs {stack} default: makespan {g['makespan_gain_pct']:+.1f} % shorter, "
              f"{g['converged_gain']:+d} VMs converge")
    return 0
