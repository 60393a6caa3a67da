"""What the figure scripts share: paths, the sweeps and the fleet plans the notebooks use.

The notebooks spell these out inline (a reader should see the spec); the scripts take them from
here so that every figure in the README and notebooks can be rebuilt from the command line with
the same inputs. Keep the two in step when changing one.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import simkvm
import simkvm.fleet

ROOT = Path(__file__).resolve().parents[1]
PLANS = ROOT / "plans"
FLEET_CSV = ROOT / "data" / "fleet.csv"

#: notebooks/parameter_sweeps.ipynb, section 1: 40 dirty rates x 25 bandwidths x 4 downtime limits.
CONVERGENCE_SPEC: dict[str, Any] = {
    "base": str(PLANS / "example.yaml"),
    "axes": {
        "workload.memory.dirty_rate": {"log": ["10MiB/s", "4GiB/s"], "num": 40},
        "link.bandwidth": {"log": ["1Gbit/s", "40Gbit/s"], "num": 25},
        "migration.max_downtime": ["30ms", "100ms", "300ms", "1s"],
        "migration.max_time": ["1h"],
    },
    "samples": {"method": "grid"},
}

#: Section 2: working set x downtime limit at two dirty rates, 10 Gbit/s.
WSS_SPEC: dict[str, Any] = {
    "base": str(PLANS / "example.yaml"),
    "axes": {
        "workload.memory.wss": {"log": ["256MiB", "16GiB"], "num": 16},
        "migration.max_downtime": {"log": ["30ms", "2s"], "num": 8},
        "workload.memory.dirty_rate": ["400MiB/s", "1GiB/s"],
        "migration.max_time": ["1h"],
    },
}

#: Section 3: a guest writing sequentially over all of its 8 GiB (no working-set saturation).
GEOMETRIC_BASE: dict[str, Any] = {
    "name": "geometric", "vm": {"memory": "8GiB"},
    "workload": {"memory": {"model": "sequential", "dirty_rate": "100MiB/s", "wss": "8GiB"}},
    "link": {"bandwidth": "10Gbit/s"}, "migration": {"max_downtime": "300ms", "max_time": "1h"},
}
RATIO_SPEC: dict[str, Any] = {
    "base": GEOMETRIC_BASE,
    "axes": {"workload.memory.dirty_rate": {"log": ["1MiB/s", "2GiB/s"], "num": 80},
             "link.bandwidth": ["1Gbit/s", "10Gbit/s"]},
}


def fleet_plans(bandwidth: str, max_downtime: str, window: str, csv: Path = FLEET_CSV) -> dict[str, simkvm.Plan]:
    """notebooks/capacity_planning.ipynb's plans: one per fleet row, allowed to run for the window."""
    return simkvm.fleet.fleet_plans(csv, bandwidth=bandwidth, max_downtime=max_downtime, max_time=window)


def parser(doc: str, default_output: str) -> argparse.ArgumentParser:
    """Every script: ``-o PATH`` (default under figures/), the directory is created."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("-o", "--output", default=str(ROOT / "figures" / default_output),
                   help=f"where to write the PNG (default: figures/{default_output})")
    return p


def save(fig, output: str) -> None:
    from simkvm import plot

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    plot.save(fig, output)
    print(output)
