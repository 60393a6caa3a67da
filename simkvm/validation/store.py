"""A campaign's output directory: one file set per run, the tables rebuilt from them.

``DIR/runs/<run>.predicted.json``, ``.measured.json`` and, last, ``.row.json`` (which
marks the run finished; every file written atomically); ``runs.csv`` and ``rounds.csv``
hold exactly the finished runs and are rebuilt from the run files when they disagree.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..io import atomic_write
from ..model.errors import UserError
from ..model.plan import Plan
from ..model.result import ROUND_COLUMNS, Result
from .spec import Scenario

# ------------------------------------------------------------------ the output directory
RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "scenario", "repeat", "role",
    *(f.name for f in dataclasses.fields(Scenario) if f.name not in ("id", "role", "repeats", "note")),
    *(f"{side}_{m}" for side in ("measured", "predicted") for m in (
        "converged", "outcome", "total_time_s", "setup_time_s", "disk_mirror_time_s", "precopy_time_s",
        "downtime_s", "ram_bytes", "disk_bytes", "total_bytes", "iterations", "zero_pages", "normal_pages",
        "service_interruption_s")),
    "min_bandwidth_Bps", "guest_mem_Bps", "guest_disk_Bps", "guest_mem_Bps_before", "guest_checks", "check_ok",
    "profile", "load_1m", "load_1m_end", "other_qemus", "started", "wall_s",
    # the testbed stack the run was measured on and the QEMU version libvirt reported (empty: an older run)
    "stack", "qemu_version",
)
#: A run whose 1-minute load average at its start or end was above this (twice the machine's 2 cores)
#: ran under heavy load from other work: the report flags it (the guest, both QEMUs and the
#: migration threads then share the cores with it).
HEAVY_LOAD_1M = 4.0
ROUNDS_CSV_COLUMNS: tuple[str, ...] = ("run_id", "source", *ROUND_COLUMNS)


class RunStore:
    """``DIR/runs/<run>.{predicted,measured,row}.json``, ``runs.csv``, ``rounds.csv``, ``meta.json``."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.runs_dir = self.dir / "runs"

    def path(self, rid: str, kind: str) -> Path:
        return self.runs_dir / f"{rid}.{kind}.json"

    def finished(self, rid: str) -> bool:
        """A run is finished when its three files exist (the row is written last)."""
        return all(self.path(rid, k).is_file() for k in ("predicted", "measured", "row"))

    def finished_ids(self) -> list[str]:
        if not self.runs_dir.is_dir():
            return []
        ids = sorted(p.name[: -len(".row.json")] for p in self.runs_dir.glob("*.row.json"))
        return [r for r in ids if self.finished(r)]

    def save(self, rid: str, row: Mapping[str, Any], predicted: Result, measured: Result) -> None:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path(rid, "predicted"), predicted.to_json(indent=1))
        atomic_write(self.path(rid, "measured"), measured.to_json(indent=1))
        self.reconcile_tables(columns=True)  # the tables hold exactly the finished runs before this one is added
        atomic_write(self.path(rid, "row"), json.dumps(_json_row(row), indent=1))
        _append_csv(self.dir / "runs.csv", RUN_COLUMNS, [row])
        _append_csv(self.dir / "rounds.csv", ROUNDS_CSV_COLUMNS, rounds_rows(rid, predicted, measured))

    def load_row(self, rid: str) -> dict[str, Any]:
        return json.loads(self.path(rid, "row").read_text())

    def load_result(self, rid: str, kind: str) -> Result:
        return Result.from_json_file(str(self.path(rid, kind)))

    def reconcile_tables(self, *, columns: bool = False) -> None:
        """Rebuild runs.csv and rounds.csv from the run files when they list other runs (after a crash);
        ``columns``: also when runs.csv has other columns (an older simkvm's, before a run is appended)."""
        ids = self.finished_ids()
        if (_csv_ids(self.dir / "runs.csv") == ids and _csv_ids(self.dir / "rounds.csv", unique=True) <= set(ids)
                and not (columns and _csv_header(self.dir / "runs.csv") not in (None, list(RUN_COLUMNS)))):
            return
        rows = [self.load_row(r) for r in ids]
        _write_csv(self.dir / "runs.csv", RUN_COLUMNS, rows)
        rounds: list[dict[str, Any]] = []
        for r in ids:
            rounds += rounds_rows(r, self.load_result(r, "predicted"), self.load_result(r, "measured"))
        _write_csv(self.dir / "rounds.csv", ROUNDS_CSV_COLUMNS, rounds)

    def rows(self):
        """runs.csv as a DataFrame (rebuilt from the run files first if needed)."""
        import pandas as pd

        if not self.finished_ids():
            raise UserError(f"{self.dir}: no finished runs (runs/*.row.json); run simkvm campaign run first")
        self.reconcile_tables()
        return pd.read_csv(self.dir / "runs.csv")


def _json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k in RUN_COLUMNS:
        v = row.get(k)
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def _csv_ids(path: Path, unique: bool = False) -> Any:
    if not path.exists():
        return set() if unique else []
    with open(path, newline="") as fh:
        ids = [r["run_id"] for r in csv.DictReader(fh)]
    return set(ids) if unique else sorted(ids)


def _csv_header(path: Path) -> list[str] | None:
    """The columns of a CSV file (None: no file); an older simkvm's runs.csv has fewer."""
    if not path.exists():
        return None
    with open(path, newline="") as fh:
        return next(csv.reader(fh), None)


def _append_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k)) for k in columns})
        fh.flush()
        os.fsync(fh.fileno())


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k)) for k in columns})
    os.replace(tmp, path)


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return v


def rounds_rows(rid: str, predicted: Result, measured: Result) -> list[dict[str, Any]]:
    return [{"run_id": rid, "source": res.source, **r} for res in (predicted, measured) for r in res.round_records]


def result_columns(side: str, r: Result) -> dict[str, Any]:
    return {
        f"{side}_converged": bool(r.converged), f"{side}_outcome": r.outcome,
        f"{side}_total_time_s": r.total_time_s, f"{side}_setup_time_s": r.setup_time_s,
        f"{side}_disk_mirror_time_s": r.disk_mirror_time_s, f"{side}_precopy_time_s": r.precopy_time_s,
        f"{side}_downtime_s": r.downtime_s, f"{side}_ram_bytes": r.ram_transferred_bytes,
        f"{side}_disk_bytes": r.disk_transferred_bytes,
        f"{side}_total_bytes": r.ram_transferred_bytes + r.disk_transferred_bytes,
        f"{side}_iterations": int(r.iterations), f"{side}_zero_pages": r.zero_pages,
        f"{side}_normal_pages": r.normal_pages,
        # measured: from the network probe when there was one (else it equals the downtime)
        f"{side}_service_interruption_s": (r.service_interruption_s if side == "predicted"
                                           or r.measurement.service_interruption_measured else None),
    }



def plan_of_run(store: Any, rid: str) -> Plan:
    """The plan a run was predicted with, with the host constants back at their defaults and no capacity."""
    data = json.loads(store.path(rid, "predicted").read_text())
    plan_dict = data.get("plan")
    if not plan_dict:
        raise UserError(f"{store.path(rid, 'predicted')}: no plan stored with the prediction")
    plan_dict = dict(plan_dict)
    plan_dict["host"] = {k: v for k, v in (plan_dict.get("host") or {}).items() if k == "qemu"}  # the version stays
    plan_dict["link"] = {**plan_dict.get("link", {}), "capacity": None}
    nominal = (data.get("meta") or {}).get("guest_nominal") or {}
    plan_dict["vm"] = {**plan_dict.get("vm", {}), "background_dirty_rate": 0.0}
    workload = dict(plan_dict.get("workload") or {})
    disk = dict(workload.get("disk") or {})
    if disk.get("write_rate") and "pattern" not in disk:
        # Stored before plans had workload.disk.pattern: the testbed guest's disk writer follows the
        # run's pattern (guestplan.disk_pattern), which an idle-RAM plan does not keep: the row has it.
        from ..testbed.guestplan import disk_pattern

        pattern = store.load_row(rid).get("pattern") if store.path(rid, "row").exists() else None
        if pattern is None:
            pattern = "seq" if (workload.get("memory") or {}).get("model") == "sequential" else "random"
        disk["pattern"] = disk_pattern(pattern)
        plan_dict["workload"] = {**workload, "disk": disk}
    if "zero_fraction" in nominal:  # predicted with a guest profile: back to what the guest was asked
        plan_dict["vm"]["zero_fraction"] = nominal["zero_fraction"]
    return Plan.from_dict(plan_dict)
