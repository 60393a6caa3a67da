"""A fleet of VMs as rows (a CSV, or the ``vms:`` list of a fleet file), each row a plan.

Capacity planners keep their inventory in spreadsheets; this is the one
place that turns such a row into a :class:`~simkvm.plan.Plan`, for the
capacity-planning notebook, the figure scripts and ``simkvm drain`` alike.

Columns: name, memory, zero_fraction, disk, disk_allocated, dirty_rate, wss,
disk_write_rate. Optional: disk_wss (default 1 GiB), io_size (default the plan's: 4 KiB),
host (where the VM runs, for a drain), cpu_load (cores its vCPUs keep busy, for a drain's CPU
model), policy (its orchestration policy),
aids (a mapping in YAML; in a CSV cell names separated by spaces or commas:
auto_converge, postcopy (after 5 iterations), xbzrle, multifd).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from .load import plan_from_dict
from .model.errors import PlanError, UserError
from .model.plan import Plan

REQUIRED = ("name", "memory", "zero_fraction", "disk", "disk_allocated", "dirty_rate", "wss", "disk_write_rate")
OPTIONAL = ("disk_wss", "io_size", "host", "policy", "aids", "role", "cpu_load")

#: an aid named in a CSV cell -> its plan section
AID_NAMES: dict[str, dict[str, Any]] = {
    "auto_converge": {"auto_converge": {"enabled": True}},
    "postcopy": {"postcopy": {"enabled": True, "after_iterations": 5}},
    "xbzrle": {"xbzrle": {"enabled": True}},
    "multifd": {"multifd": {"enabled": True}},
}


def read_fleet(csv: str | Path):
    import pandas as pd

    try:
        fleet = pd.read_csv(csv)
    except FileNotFoundError:
        raise UserError(f"fleet file {str(csv)!r} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{csv}: not a readable CSV file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in REQUIRED if c not in fleet.columns]
    if missing:
        raise UserError(f"{csv}: missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED)}")
    return fleet


def rows(csv: str | Path) -> list[dict[str, Any]]:
    """The CSV's rows as dicts of strings, empty cells left out (no pandas: a drain reads thousands)."""
    import csv as csvlib

    try:
        with open(csv, newline="") as f:
            reader = csvlib.DictReader(f)
            out = [{k: v.strip() for k, v in row.items() if k and v is not None and v.strip()} for row in reader]
            columns = reader.fieldnames or []
    except FileNotFoundError:
        raise UserError(f"fleet file {str(csv)!r} does not exist") from None
    except (UnicodeDecodeError, csvlib.Error) as exc:
        raise UserError(f"{csv}: not a readable CSV file ({exc})") from None
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise UserError(f"{csv}: missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED)}")
    return out


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def aids_section(value: Any, where: str) -> dict[str, Any]:
    """A row's aids: a plan ``aids`` mapping, or aid names (``"auto_converge postcopy"``)."""
    if _empty(value):
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    names = [n for n in str(value).replace(",", " ").split() if n and n != "none"]
    unknown = [n for n in names if n not in AID_NAMES]
    if unknown:
        raise PlanError(f"{where}: unknown aid {unknown[0]!r}; name some of {', '.join(AID_NAMES)}")
    out: dict[str, Any] = {}
    for n in names:
        out.update(AID_NAMES[n])
    return out


def vm_plan(row: Any, *, bandwidth: Any, max_downtime: Any, max_time: Any, capacity: Any = None,
            migration: Mapping[str, Any] | None = None, defaults: Mapping[str, Any] | None = None) -> Plan:
    """One fleet row as a plan over the given link, allowed to run for ``max_time``.

    ``migration``: more keys of the plan's migration section; ``defaults``: plan sections
    (policy, profile, host, aids) the row's own ``policy``/``aids`` override."""
    get = row.get if hasattr(row, "get") else row.__getitem__

    def cell(key: str, default: Any = None) -> Any:
        value = get(key) if key in row else default
        return default if _empty(value) else value

    name = cell("name")
    data: dict[str, Any] = {k: v for k, v in dict(defaults or {}).items() if not _empty(v)}
    data.update({
        "name": str(name),
        "vm": {"memory": cell("memory"), "zero_fraction": float(cell("zero_fraction")),
               "disks": [{"size": cell("disk"), "allocated": cell("disk_allocated")}]},
        "workload": {"memory": {"model": "uniform", "dirty_rate": cell("dirty_rate"), "wss": cell("wss")},
                     "disk": {"write_rate": cell("disk_write_rate"), "wss": cell("disk_wss", "1GiB"),
                              # the plan's own default write size (4 KiB) unless the row gives one
                              **({"io_size": cell("io_size")} if cell("io_size") is not None else {})}},
        "link": {"bandwidth": bandwidth, **({"capacity": capacity} if capacity is not None else {})},
        "migration": {**dict(migration or {}), "max_downtime": max_downtime, "max_time": max_time},
    })
    if cell("policy") is not None:
        data["policy"] = cell("policy")
    aids = {**aids_section(data.get("aids"), f"{name}: aids"), **aids_section(cell("aids"), f"{name}: aids")}
    if aids:
        data["aids"] = aids
    try:
        return plan_from_dict(data)
    except PlanError as exc:
        raise PlanError(f"VM {name!r}: {exc}") from None


def fleet_plans(csv: str | Path, *, bandwidth: Any, max_downtime: Any, max_time: Any) -> dict[str, Plan]:
    """Every VM of the fleet as a plan, keyed by name, in file order."""
    return {row["name"]: vm_plan(row, bandwidth=bandwidth, max_downtime=max_downtime, max_time=max_time)
            for row in rows(csv)}
