"""``simkvm bench --sweep``: the sweep's speed on this machine, local and on Dask."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .compute import run_sweep


def bench_spec(n_dirty: int = 25, n_bw: int = 20, n_down: int = 10, n_wss: int = 20) -> dict[str, Any]:
    """The benchmark grid (100,000 scenarios by default): dirty rate x bandwidth x downtime x wss
    on a 4 GiB..16 GiB plan, wide enough to include non-converging and invalid corners."""
    return {
        "base": {"name": "bench-sweep", "vm": {"memory": "16GiB", "zero_fraction": 0.2,
                                              "disks": [{"size": "20GiB", "allocated": "8GiB"}]},
                 "workload": {"memory": {"model": "uniform", "dirty_rate": "400MiB/s", "wss": "2GiB"},
                              "disk": {"write_rate": "2MiB/s", "wss": "1GiB"}},
                 "link": {"bandwidth": "10Gbit/s"},
                 "migration": {"max_downtime": "300ms", "max_time": "600s"}},
        "axes": {
            "workload.memory.dirty_rate": {"log": ["10MiB/s", "2GiB/s"], "num": n_dirty},
            "link.bandwidth": {"log": ["1Gbit/s", "40Gbit/s"], "num": n_bw},
            "migration.max_downtime": {"range": ["50ms", "500ms"], "num": n_down},
            "workload.memory.wss": {"log": ["256MiB", "12GiB"], "num": n_wss},
        },
        "samples": {"method": "grid"},
    }


def bench_sweep(args: argparse.Namespace) -> int:
    """``simkvm bench --sweep``: scenarios/s with 1 and 2 local workers and on a 2-worker Dask cluster.

    Every run is the same 100,000-scenario grid, so the efficiency compares identical work (a
    subset would have a different mix of plans, hence of iterations per scenario). The Dask
    cluster is started and warmed up (workers import simkvm) before the clock starts: the
    figure is for an existing cluster, as ``--scheduler`` uses one. The load average is printed
    because on a shared 2-core machine any other process shows up directly in the figures.
    """
    import platform

    spec = bench_spec()
    figures: dict[str, Any] = {"machine": f"{platform.machine()} {os.cpu_count()} cores, "
                                          f"Python {platform.python_version()}",
                               "load_average_before": round(os.getloadavg()[0], 2)}
    progress = not args.json

    def timed(**kw: Any) -> tuple[float, Any]:
        start = time.perf_counter()
        df = run_sweep(spec, progress=progress, **kw)
        return time.perf_counter() - start, df

    t1, one = timed(workers=1)
    t2, local = timed(workers=2)
    n = len(local)
    figures.update({"scenarios": n, "seconds_1_worker": round(t1, 2), "scenarios_per_s_1_worker": round(n / t1, 1),
                    "seconds_2_workers": round(t2, 2), "scenarios_per_s_2_workers": round(n / t2, 1),
                    "parallel_efficiency": round(t1 / (2 * t2), 3), "two_workers_equal_one": bool(one.equals(local))})
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        figures["dask"] = "not installed (pip install 'dask[distributed]')"
    else:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster) as client:
            run_sweep(bench_spec(2, 2, 2, 2), scheduler=client, progress=False, chunk=4)  # warm-up
            td, dask_df = timed(scheduler=client)
        figures.update({"seconds_dask": round(td, 2), "scenarios_per_s_dask": round(n / td, 1),
                        "dask_equals_local": bool(dask_df.equals(local))})
    figures["load_average_after"] = round(os.getloadavg()[0], 2)
    figures["converged_share"] = round(float(local["converged"].mean()), 3)
    figures["mean_iterations"] = round(float(local["iterations"].mean()), 2)
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        print()
        return 0
    print(f"machine: {figures['machine']}; load average {figures['load_average_before']} before, "
          f"{figures['load_average_after']} after")
    print(f"grid: {n:,} scenarios (dirty rate x bandwidth x downtime x wss on a 16 GiB VM), "
          f"{figures['converged_share']:.0%} converged, {figures['mean_iterations']} iterations on average")
    print(f"local, 1 worker : {n / t1:>9,.0f} scenarios/s ({t1:.1f} s)")
    print(f"local, 2 workers: {n / t2:>9,.0f} scenarios/s ({t2:.1f} s; target < 180 s)")
    print(f"parallel efficiency: {figures['parallel_efficiency']:.2f} (target >= 0.8)")
    if "seconds_dask" in figures:
        print(f"dask LocalCluster, 2 workers x 1 thread: {n / td:>9,.0f} scenarios/s ({td:.1f} s; "
              f"table equals local: {figures['dask_equals_local']})")
    return 0
