"""A fleet of VMs in a CSV (one row per VM, human units in the cells) as plans over one link.

Capacity planners keep their inventory in spreadsheets; this is the one
place that turns such a row into a :class:`~simkvm.model.plan.Plan`, for the
capacity-planning notebook and the figure scripts alike.

Columns: name, memory, zero_fraction, disk, disk_allocated, dirty_rate, wss,
disk_write_rate (optional: disk_wss, default 1 GiB; io_size, default the plan's: 4 KiB).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .model.errors import UserError
from .model.plan import Plan

REQUIRED = ("name", "memory", "zero_fraction", "disk", "disk_allocated", "dirty_rate", "wss", "disk_write_rate")


def read_fleet(csv: str | Path):
    import pandas as pd

    try:
        fleet = pd.read_csv(csv)
    except FileNotFoundError:
        raise UserError(f"fleet file {str(csv)!r} does not exist") from None
    missing = [c for c in REQUIRED if c not in fleet.columns]
    if missing:
        raise UserError(f"{csv}: missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED)}")
    return fleet


def vm_plan(row: Any, *, bandwidth: Any, max_downtime: Any, max_time: Any) -> Plan:
    """One fleet row as a plan over the given link, allowed to run for ``max_time``."""
    get = row.get if hasattr(row, "get") else row.__getitem__
    return Plan.from_dict({
        "name": get("name"),
        "vm": {"memory": get("memory"), "zero_fraction": float(get("zero_fraction")),
               "disks": [{"size": get("disk"), "allocated": get("disk_allocated")}]},
        "workload": {"memory": {"model": "uniform", "dirty_rate": get("dirty_rate"), "wss": get("wss")},
                     "disk": {"write_rate": get("disk_write_rate"), "wss": get("disk_wss") or "1GiB",
                              # the plan's own default write size (4 KiB) unless the CSV gives one
                              **({"io_size": get("io_size")} if _given(get, "io_size") else {})}},
        "link": {"bandwidth": bandwidth},
        "migration": {"max_downtime": max_downtime, "max_time": max_time},
    })


def fleet_plans(csv: str | Path, *, bandwidth: Any, max_downtime: Any, max_time: Any) -> dict[str, Plan]:
    """Every VM of the fleet as a plan, keyed by name, in file order."""
    fleet = read_fleet(csv)
    return {row["name"]: vm_plan(row, bandwidth=bandwidth, max_downtime=max_downtime, max_time=max_time)
            for _, row in fleet.iterrows()}


def _given(get: Any, column: str) -> bool:
    """A cell that is there and not empty (pandas reads an empty cell as NaN)."""
    try:
        value = get(column)
    except (KeyError, IndexError):
        return False
    return value is not None and value == value and value != ""
