"""Validation campaigns: real migrations on the testbed next to their predictions.

The question this module answers is "how right are the predictions?". A
campaign (YAML) lists scenarios; each is a testbed guest (memory, disk, what it
dirties) plus the migration knobs (bandwidth, downtime limit, max time,
storage), a number of repeats and a role: ``calibration`` runs are what
``simkvm calibrate`` may fit host constants on, ``validation`` runs are held
out and are the only ones the report judges.

One run (scenario x repeat) reads like what the runner does:

1. define the guest on host a (replacing any leftover) and wait for READY;
2. build the plan: the campaign's knobs + the profile's host constants, with
   the VM and workload read back from the guest (:func:`plan_for_domain`);
3. predict it (``simulate``) and measure it (``execute`` a -> b);
4. read the guest's console: the dirty/disk rates it achieved during the
   migration and its canary checks afterwards;
5. write ``runs/<run>.predicted.json``, ``.measured.json`` and, last, the
   ``.row.json`` that marks the run finished (every file written atomically),
   then append the row to ``runs.csv`` and the per-iteration rows to
   ``rounds.csv``; remove the guest.

A re-run skips every finished run, so a crash or Ctrl-C loses no finished
run; ``runs.csv``/``rounds.csv`` are rebuilt from the run files if they ever
disagree with them.

The report (:func:`report`) computes, over the held-out runs only, the error
figures of shared/reference/anchors.md from the rows (:func:`metrics`).
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import UserError
from .result import ROUND_COLUMNS, Result
from .units import parse_duration, parse_fraction, parse_rate, parse_size

MiB = 2**20
ROLES = ("calibration", "validation")
PATTERNS = ("random", "seq")
STORAGES = ("non_shared_disk", "non_shared_inc")
BANDWIDTH_RANGE_Bps = (16 * MiB, 256 * MiB)
DOWNTIME_RANGE_S = (0.020, 2.0)
MEMORY_MAX_BYTES = 2048 * MiB  # two guests of this size (source + destination) fit the 24 GiB machine
NEAR_BOUNDARY_FRAC = 0.10  # verdicts within 10 % of the minimum bandwidth are not judged
DOWNTIME_TOL_ABS_S = 0.030
DOWNTIME_TOL_REL = 0.25


# ------------------------------------------------------------------ the campaign
@dataclass(frozen=True)
class Scenario:
    """One testbed guest and the migration knobs; SI units, keys as in the YAML without suffix."""

    id: str
    role: str = "validation"
    repeats: int = 1
    # the guest (simkvm.testbed.define_guest)
    memory_bytes: float = 256 * MiB
    disk_bytes: float = 64 * MiB
    dirty_rate_Bps: float = 0.0
    wss_bytes: float = 64 * MiB
    pattern: str = "random"
    zero_fraction: float = 0.5
    disk_write_rate_Bps: float = 0.0
    disk_wss_bytes: float = 16 * MiB
    io_size_bytes: float = 4096
    # the migration
    bandwidth_Bps: float = 32 * MiB
    max_downtime_s: float = 0.3
    max_time_s: float = 120.0
    max_iterations: int = 30
    storage: str = "non_shared_disk"
    note: str = ""

    def run_ids(self) -> list[str]:
        return [run_id(self.id, k) for k in range(1, self.repeats + 1)]

    def guest_kwargs(self) -> dict[str, Any]:
        return dict(memory_bytes=int(self.memory_bytes), disk_bytes=int(self.disk_bytes),
                    dirty_rate_Bps=float(self.dirty_rate_Bps), wss_bytes=int(self.wss_bytes), pattern=self.pattern,
                    zero_fraction=float(self.zero_fraction), disk_write_rate_Bps=float(self.disk_write_rate_Bps),
                    disk_wss_bytes=int(self.disk_wss_bytes), io_size_bytes=int(self.io_size_bytes))

    def plan_dict(self, name: str) -> dict[str, Any]:
        """The plan sections the campaign decides (vm and workload come from the guest)."""
        return {"name": name, "link": {"bandwidth": self.bandwidth_Bps},
                "migration": {"max_downtime": self.max_downtime_s, "max_time": self.max_time_s,
                              "max_iterations": self.max_iterations, "storage": self.storage}}

    def knobs(self) -> dict[str, Any]:
        """The scenario as one flat row (the knob columns of runs.csv)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("id", "role", "repeats", "note")}


@dataclass(frozen=True)
class Campaign:
    name: str
    scenarios: tuple[Scenario, ...]
    source: str = ""

    def select(self, only: Sequence[str] | None) -> tuple[Scenario, ...]:
        if not only:
            return self.scenarios
        known = {s.id for s in self.scenarios}
        missing = [x for x in only if x not in known]
        if missing:
            raise UserError(f"--only: no scenario {missing[0]!r} in campaign {self.name!r} "
                            f"(scenarios: {', '.join(sorted(known))})")
        return tuple(s for s in self.scenarios if s.id in set(only))

    def runs(self, only: Sequence[str] | None = None) -> list[tuple[Scenario, int]]:
        return [(s, k) for s in self.select(only) for k in range(1, s.repeats + 1)]


_KEY_PARSERS = {
    "memory": parse_size, "disk": parse_size, "wss": parse_size, "disk_wss": parse_size, "io_size": parse_size,
    "dirty_rate": parse_rate, "disk_write_rate": parse_rate, "bandwidth": parse_rate,
    "max_downtime": parse_duration, "max_time": parse_duration, "zero_fraction": parse_fraction,
}
_FIELD_OF = {"memory": "memory_bytes", "disk": "disk_bytes", "wss": "wss_bytes", "disk_wss": "disk_wss_bytes",
             "io_size": "io_size_bytes", "dirty_rate": "dirty_rate_Bps", "disk_write_rate": "disk_write_rate_Bps",
             "bandwidth": "bandwidth_Bps", "max_downtime": "max_downtime_s", "max_time": "max_time_s",
             "zero_fraction": "zero_fraction", "id": "id", "role": "role", "repeats": "repeats",
             "pattern": "pattern", "max_iterations": "max_iterations", "storage": "storage", "note": "note"}


def run_id(scenario_id: str, repeat: int) -> str:
    return f"{scenario_id}-r{repeat}"


def parse_scenario(data: Any, defaults: Mapping[str, Any], where: str) -> Scenario:
    """One scenario mapping (human units) over the campaign's defaults; UserError on anything wrong."""
    if not isinstance(data, Mapping):
        raise UserError(f"{where} must be a mapping of keys (id, memory, dirty_rate, bandwidth, ...), got {data!r}")
    merged = {**defaults, **data}
    unknown = [k for k in merged if k not in _FIELD_OF]
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(_FIELD_OF))}")
    sid = merged.get("id")
    if not isinstance(sid, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,39}", sid):
        raise UserError(f"{where}: id must be 1-40 lower-case letters, digits, '_', '.', '-' (it names files and "
                        f"the guest), got {sid!r}")
    where = f"scenario {sid!r}"
    kwargs: dict[str, Any] = {}
    for key, value in merged.items():
        parser = _KEY_PARSERS.get(key)
        try:
            kwargs[_FIELD_OF[key]] = parser(value, f"{where}: {key}") if parser else value
        except UserError:
            raise
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}: {key}: {exc}") from None
    s = Scenario(**kwargs)
    _check_scenario(s, where)
    return s


def _check_scenario(s: Scenario, where: str) -> None:
    if s.role not in ROLES:
        raise UserError(f"{where}: role must be calibration or validation, got {s.role!r}")
    if isinstance(s.repeats, bool) or not isinstance(s.repeats, int) or not 1 <= s.repeats <= 20:
        raise UserError(f"{where}: repeats must be a whole number from 1 to 20, got {s.repeats!r}")
    if isinstance(s.max_iterations, bool) or not isinstance(s.max_iterations, int) or s.max_iterations < 0:
        raise UserError(f"{where}: max_iterations must be a whole number >= 0, got {s.max_iterations!r}")
    if s.pattern not in PATTERNS:
        raise UserError(f"{where}: pattern must be random or seq, got {s.pattern!r}")
    if s.storage not in STORAGES:
        raise UserError(f"{where}: storage must be one of {', '.join(STORAGES)}, got {s.storage!r}")
    lo, hi = BANDWIDTH_RANGE_Bps
    if not lo <= s.bandwidth_Bps <= hi:
        raise UserError(f"{where}: bandwidth must be 16MiB/s to 256MiB/s on the testbed, "
                        f"got {s.bandwidth_Bps / MiB:g}MiB/s")
    lo, hi = DOWNTIME_RANGE_S
    if not lo <= s.max_downtime_s <= hi:
        raise UserError(f"{where}: max_downtime must be 20ms to 2s, got {s.max_downtime_s * 1000:g}ms")
    if not 1.0 <= s.max_time_s <= 600.0:
        raise UserError(f"{where}: max_time must be 1s to 600s, got {s.max_time_s:g}s")
    if s.memory_bytes > MEMORY_MAX_BYTES:
        raise UserError(f"{where}: memory must be <= 2GiB (a TCG guest on the 2-core testbed), "
                        f"got {s.memory_bytes / MiB:g}MiB")
    from .testbed.guest import GuestWorkload  # the guest's own checks: wss fits, disk wss fits, io size ...

    try:
        GuestWorkload(**s.guest_kwargs())
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def parse_campaign(data: Any, name: str = "campaign") -> Campaign:
    """``{name, defaults: {...}, scenarios: [{id, ...}, ...]}`` -> Campaign (UserError, one line, if wrong)."""
    if not isinstance(data, Mapping):
        raise UserError(f"campaign {name}: must be a mapping with 'scenarios' (a list), got {type(data).__name__}")
    unknown = [k for k in data if k not in ("name", "defaults", "scenarios", "description", "design")]
    if unknown:
        raise UserError(f"campaign {name}: unknown key {unknown[0]!r}; known: name, description, defaults, "
                        f"scenarios, design")
    name = str(data.get("name") or name)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise UserError(f"campaign {name}: defaults must be a mapping")
    if "id" in defaults:
        raise UserError(f"campaign {name}: defaults cannot set id")
    items = data.get("scenarios") or []
    if not isinstance(items, list):
        raise UserError(f"campaign {name}: scenarios must be a list")
    if data.get("design") is not None:  # held-out scenarios drawn from declared ranges (campaign_design)
        from .campaign_design import expand_design, with_drawn

        items = with_drawn(items, expand_design(data["design"], name, defaults))
    if not items:
        raise UserError(f"campaign {name}: scenarios must be a non-empty list (or a design: section)")
    scenarios = [parse_scenario(item, defaults, f"campaign {name}: scenarios[{i}]") for i, item in enumerate(items)]
    seen: set[str] = set()
    for s in scenarios:
        if s.id in seen:
            raise UserError(f"campaign {name}: scenario id {s.id!r} appears twice")
        seen.add(s.id)
    return Campaign(name=name, scenarios=tuple(scenarios))


def load_campaign(path: str | Path) -> Campaign:
    from .plan import read_yaml

    p = Path(path)
    c = parse_campaign(read_yaml(p, "campaign file"), p.stem)
    return dataclasses.replace(c, source=str(p))


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
        self.reconcile_tables()  # the tables hold exactly the finished runs before this one is added
        atomic_write(self.path(rid, "row"), json.dumps(_json_row(row), indent=1))
        _append_csv(self.dir / "runs.csv", RUN_COLUMNS, [row])
        _append_csv(self.dir / "rounds.csv", ROUNDS_CSV_COLUMNS, rounds_rows(rid, predicted, measured))

    def load_row(self, rid: str) -> dict[str, Any]:
        return json.loads(self.path(rid, "row").read_text())

    def load_result(self, rid: str, kind: str) -> Result:
        return Result.from_json_file(str(self.path(rid, kind)))

    def reconcile_tables(self) -> None:
        """Rebuild runs.csv and rounds.csv from the run files when they list other runs (after a crash)."""
        ids = self.finished_ids()
        if _csv_ids(self.dir / "runs.csv") == ids and _csv_ids(self.dir / "rounds.csv", unique=True) <= set(ids):
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


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
                                           or r.service_interruption_measured else None),
    }


# ------------------------------------------------------------------ the machine
def machine_meta() -> dict[str, Any]:
    """What ran the campaign: kernel, CPU, cores, memory, QEMU/libvirt versions, date, simkvm commit."""
    meta: dict[str, Any] = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                            "uname": " ".join(platform.uname()), "python": platform.python_version(),
                            "cores": os.cpu_count()}
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        m = re.search(r"model name\s*:\s*(.+)", cpu)
        meta["cpu_model"] = m.group(1).strip() if m else None
        meta["cpu_flags_virt"] = bool(re.search(r"\b(vmx|svm)\b", cpu))
    except OSError:
        meta["cpu_model"] = None
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        meta["memory_bytes"] = int(m.group(1)) * 1024 if m else None
    except OSError:
        meta["memory_bytes"] = None
    meta["qemu_version"] = _first_line(["qemu-system-x86_64", "--version"])
    meta["libvirt_version"] = _first_line(["libvirtd", "--version"])
    try:
        import libvirt

        v = libvirt.getVersion()
        meta["libvirt_python_version"] = f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"
    except Exception:  # noqa: BLE001 - best effort
        pass
    root = Path(__file__).resolve().parents[1]
    meta["simkvm_commit"] = _first_line(["git", "-C", str(root), "rev-parse", "HEAD"])
    dirty = _first_line(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
    meta["simkvm_tree_dirty"] = bool(dirty)
    meta["accel"] = "tcg"
    meta["load_avg"] = list(os.getloadavg())
    return meta


def _first_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout or "").strip().splitlines()
    return text[0] if text else None


def other_qemus(own_pids: Iterable[int] = ()) -> int:
    """qemu-system processes on the machine (ours included unless their pids are given)."""
    own = set(own_pids)
    n = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in own:
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith("qemu-system"):
            n += 1
    return n


# ------------------------------------------------------------------ running it
def _console_rates(lines: list[Any], after: int, before: int | None) -> tuple[float | None, float | None]:
    sel = [ln.values for ln in lines if ln.kind == "RATE" and ln.line_no > after
           and (before is None or ln.line_no <= before)]
    if not sel:
        return None, None
    mem = [float(v["mem_Bps"]) for v in sel if "mem_Bps" in v]
    disk = [float(v["disk_Bps"]) for v in sel if "disk_Bps" in v]
    return (float(np.median(mem)) if mem else None, float(np.median(disk)) if disk else None)


def _console_tail(name: str, testbed: Any, lines: int = 40) -> str:
    from .testbed import console_path

    try:
        text = console_path(name, testbed).read_text(errors="replace")
    except OSError as exc:
        return f"(no guest console: {exc})"
    tail = text.splitlines()[-lines:]
    return "guest console, last lines:\n" + "\n".join("  " + ln for ln in tail)


def run_one(scenario: Scenario, repeat: int, *, testbed: Any, profile: Mapping[str, Any] | None,
            profile_name: str | None, settle_s: float = 1.0, boot_timeout_s: float = 120.0,
            network: Any = None) -> tuple[dict[str, Any], Result, Result]:
    """Define, predict, migrate, check, remove: one run's row and its two Results."""
    from . import planner
    from .calibrate import apply_profile
    from .executor import execute, plan_for_domain
    from .plan import Plan
    from .sim import simulate
    from .testbed import console_lines, define_guest, remove_guest, wait_for_console, wait_ready

    rid = run_id(scenario.id, repeat)
    name = f"cmp-{scenario.id}"[:64]
    started = time.time()
    load_start = os.getloadavg()
    load = load_start[0]
    qemus_before = other_qemus()
    ip = network.guest_ip(0) if network is not None else None
    define_guest(name, host="a", replace=True, testbed=testbed, network=network, ip=ip, **scenario.guest_kwargs())
    try:
        ready = wait_ready(name, boot_timeout_s, testbed=testbed)
        time.sleep(settle_s)
        src, dst = testbed.uri("a"), testbed.uri("b")
        plan = plan_for_domain(Plan.from_dict(scenario.plan_dict(rid)), name, src)
        nominal = {"zero_fraction": plan.vm.zero_fraction}
        if profile:  # after the guest is mapped: the profile's guest section corrects it
            plan = apply_profile(plan, profile)
        predicted = simulate(plan)
        predicted.plan = plan.to_dict()
        predicted.meta["profile"] = profile_name
        predicted.meta["guest_nominal"] = nominal
        try:
            min_bw = planner.min_bandwidth_Bps(plan, lo=1e6, hi=1e10)
        except Exception:  # noqa: BLE001 - the boundary is informative only
            min_bw = None
        at_start = max((ln.line_no for ln in console_lines(name, testbed=testbed)), default=0)
        measured = execute(plan, name, src, dst, probe=network.probe(ip) if network is not None else None)
        at_end = max((ln.line_no for ln in console_lines(name, testbed=testbed)), default=0)
        if measured.outcome == "aborted" and "interrupted" in measured.reason:
            raise KeyboardInterrupt(measured.reason)
        # a fresh memory verdict needs two CHECK lines after the move (the dirtier's last one is stale)
        checks_wanted = 2
        try:
            line = at_end
            for _ in range(checks_wanted):
                line = wait_for_console(name, lambda ln: ln.kind == "CHECK", 15, after_line=line,
                                        testbed=testbed).line_no
        except Exception:  # noqa: BLE001 - a missing CHECK is recorded as not ok
            pass
        lines = console_lines(name, testbed=testbed)
        checks = [ln for ln in lines if ln.kind == "CHECK" and ln.line_no > ready.line_no]
        errors = [ln for ln in lines if ln.kind == "ERROR"]
        after_mig = [c for c in checks if c.line_no > at_end]
        check_ok = (bool(after_mig) and not errors
                    and all(c.values.get("mem") == "ok" and c.values.get("disk") in ("ok", "none") for c in checks))
        mem_during, disk_during = _console_rates(lines, at_start, at_end)
        mem_before, _ = _console_rates(lines, ready.line_no, at_start)
    except Exception as exc:  # the guest's own last words say what happened to it (a kernel panic, ...)
        exc.add_note(_console_tail(name, testbed))
        raise
    finally:
        try:
            remove_guest(name, testbed=testbed)
        except Exception:  # noqa: BLE001 - a leftover is replaced by the next define
            pass
    load_end = os.getloadavg()
    row: dict[str, Any] = {
        "run_id": rid, "scenario": scenario.id, "repeat": repeat, "role": scenario.role, **scenario.knobs(),
        **result_columns("measured", measured), **result_columns("predicted", predicted),
        "min_bandwidth_Bps": min_bw, "guest_mem_Bps": mem_during, "guest_disk_Bps": disk_during,
        "guest_mem_Bps_before": mem_before, "guest_checks": len(checks), "check_ok": bool(check_ok),
        "profile": profile_name or "", "load_1m": round(load, 2), "load_1m_end": round(load_end[0], 2),
        "other_qemus": qemus_before,
        "started": _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.time() - started, 2),
    }
    failed_checks = [c.raw for c in checks
                     if c.values.get("mem") != "ok" or c.values.get("disk") not in ("ok", "none")]
    # other work on the machine shares the cores with the guest and both QEMUs: say how much
    measured.meta["load_avg"] = {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in load_end],
                                 "other_qemus_start": qemus_before, "heavy": max(load, load_end[0]) > HEAVY_LOAD_1M}
    measured.meta["guest_console"] = {"mem_Bps_during": mem_during, "disk_Bps_during": disk_during,
                                      "mem_Bps_before": mem_before, "checks": len(checks), "check_ok": check_ok,
                                      "failed_checks": failed_checks[:5],
                                      "errors": [e.raw for e in errors]}
    return row, predicted, measured


def run_campaign(campaign: Campaign, output: str | Path, *, profile_path: str | None = None,
                 only: Sequence[str] | None = None, progress: bool = True, keep_testbed: bool = False,
                 testbed: Any = None, log: Any = None, probe_network: bool = True) -> dict[str, Any]:
    """Run every unfinished scenario x repeat; return ``{"done", "skipped", "failed": [(run, error)]}``.

    ``probe_network``: every guest on the testbed's bridge, pinged through its migration
    (measured service interruption).
    """
    from .calibrate import load_profile
    from .testbed import Testbed

    log = log or (lambda msg: print(msg, file=sys.stderr))
    store = RunStore(output)
    store.dir.mkdir(parents=True, exist_ok=True)
    profile = load_profile(profile_path) if profile_path else None
    todo = campaign.runs(only)
    finished = set(store.finished_ids())
    pending = [(s, k) for s, k in todo if run_id(s.id, k) not in finished]
    if store.finished_ids():
        store.reconcile_tables()
    meta_path = store.dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.setdefault("sessions", []).append({**machine_meta(), "campaign": campaign.name,
                                            "campaign_file": campaign.source, "profile": profile_path,
                                            "probe_network": probe_network, "runs_pending": len(pending)})
    meta.update({k: v for k, v in meta["sessions"][-1].items() if k != "runs_pending"})
    atomic_write(meta_path, json.dumps(meta, indent=1))
    if campaign.source:
        atomic_write(store.dir / "campaign.yaml", Path(campaign.source).read_text())
    out: dict[str, Any] = {"done": [], "skipped": len(todo) - len(pending), "failed": []}
    if not pending:
        return out
    tb = testbed or Testbed()
    from .executor.run import _signals_as_interrupt

    lock = _campaign_lock(tb, store.dir)
    try:
        with _signals_as_interrupt():  # SIGTERM: like Ctrl-C, the run's guest is cleaned up
            return _run_pending(pending, todo, out, store, tb, profile, profile_path, probe_network, progress,
                                keep_testbed, own_testbed=testbed is None, log=log)
    finally:
        lock.close()  # releases the flock


def _campaign_lock(tb: Any, output: Path) -> Any:
    """One campaign per testbed: two would define the same guest names and one would take the
    other's network down at its end. The lock is an flock, so a crashed campaign never holds it."""
    import fcntl

    tb.state_dir.mkdir(parents=True, exist_ok=True)
    path = tb.state_dir / "campaign.lock"
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise UserError(f"another campaign is running on the testbed in {tb.state_dir} ({holder}); wait for it "
                        f"to finish, or give this one its own testbed (SIMKVM_TESTBED_DIR and SIMKVM_TESTBED_PORT)")
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}, output {output}\n")
    fh.flush()
    return fh


def _run_pending(pending: list, todo: list, out: dict[str, Any], store: "RunStore", tb: Any,
                 profile: Mapping[str, Any] | None, profile_path: str | None, probe_network: bool,
                 progress: bool, keep_testbed: bool, *, own_testbed: bool, log: Any) -> dict[str, Any]:
    was_running = tb.status()["running"]
    tb.up()
    from .testbed.network import GuestNetwork

    network = GuestNetwork(tb.base_port) if probe_network else None
    if network is not None:
        network.up()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), initial=len(todo) - len(pending), unit="run", file=sys.stderr)
    try:
        for s, k in pending:
            rid = run_id(s.id, k)
            if bar is not None:
                bar.set_description(rid)
            try:
                row, predicted, measured = run_one(s, k, testbed=tb, profile=profile, profile_name=profile_path,
                                                   network=network)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad run must not stop the campaign
                text = f"{type(exc).__name__}: {exc}"
                out["failed"].append((rid, text))
                store.runs_dir.mkdir(parents=True, exist_ok=True)
                notes = "".join(f"\n{n}" for n in getattr(exc, "__notes__", ()))
                atomic_write(store.runs_dir / f"{rid}.error.txt", text + notes + "\n")
                log(f"run {rid} failed (will be retried on the next run): {text.splitlines()[0]}")
            else:
                store.save(rid, row, predicted, measured)
                (store.runs_dir / f"{rid}.error.txt").unlink(missing_ok=True)
                out["done"].append(rid)
                if bar is not None:
                    bar.set_postfix_str(f"measured {measured.outcome} {measured.total_time_s:.1f}s, "
                                        f"predicted {predicted.outcome} {predicted.total_time_s:.1f}s")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if network is not None and not keep_testbed:
            network.down()
        if not was_running and not keep_testbed and own_testbed:
            tb.down()
    return out


# ------------------------------------------------------------------ the report
def pd_numeric(col: Any) -> Any:
    """A column as floats, empty cells (runs without a measurement) as NaN."""
    import pandas as pd

    return pd.to_numeric(col, errors="coerce")


def _rel(p: Any, m: Any) -> np.ndarray:
    p, m = np.asarray(p, float), np.asarray(m, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(p - m) / m


def _signed_rel(p: Any, m: Any) -> np.ndarray:
    p, m = np.asarray(p, float), np.asarray(m, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (p - m) / m


def _stat(values: np.ndarray, q: float) -> float | None:
    v = values[np.isfinite(values)]
    return float(np.percentile(v, q)) if len(v) else None


def _bool(col: Any) -> np.ndarray:
    return np.asarray([str(x).strip().lower() in ("true", "1", "1.0") for x in col], bool)


def near_boundary(bandwidth_Bps: Any, min_bandwidth_Bps: Any, frac: float = NEAR_BOUNDARY_FRAC) -> np.ndarray:
    """The plan's bandwidth within ``frac`` of the lowest bandwidth the simulator sees converge."""
    bw, mb = np.asarray(bandwidth_Bps, float), np.asarray(min_bandwidth_Bps, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        near = np.abs(bw / mb - 1.0) <= frac
    return np.where(np.isfinite(mb), near, False)


def metrics(rows) -> dict[str, Any]:
    """Error figures over ``rows`` (a runs.csv DataFrame, already restricted to held-out runs).

    Time, downtime, bytes and iterations are compared where both sides converged
    (a run stopped at max time has no completion to compare); the verdict on
    every run that is not near the convergence boundary. Relative errors are
    ``|predicted - measured| / measured``; ``*_bias`` are medians of the signed
    ones (positive: the model over-estimates).
    """
    n = len(rows)
    mc, pc = _bool(rows["measured_converged"]), _bool(rows["predicted_converged"])
    both = rows[mc & pc]
    t_rel = _rel(both["predicted_total_time_s"], both["measured_total_time_s"])
    dp, dm = np.asarray(both["predicted_downtime_s"], float), np.asarray(both["measured_downtime_s"], float)
    d_ok = np.abs(dp - dm) <= np.maximum(DOWNTIME_TOL_ABS_S, DOWNTIME_TOL_REL * dm)
    pb = np.asarray(both["predicted_ram_bytes"], float) + np.asarray(both["predicted_disk_bytes"], float)
    mb = np.asarray(both["measured_ram_bytes"], float) + np.asarray(both["measured_disk_bytes"], float)
    b_rel = _rel(pb, mb)
    it_diff = np.asarray(both["predicted_iterations"], float) - np.asarray(both["measured_iterations"], float)
    it_ok = it_diff == 0
    # one sync more or less is a near tie: the pending pages at a check a few % either side of the
    # threshold; within one says whether the model's rounds are right apart from such ties
    it_near = np.abs(it_diff) <= 1
    # service interruption: only runs whose interruption was measured (network probe)
    if "measured_service_interruption_s" in both:
        sm = np.asarray(pd_numeric(both["measured_service_interruption_s"]), float)
        sp = np.asarray(pd_numeric(both["predicted_service_interruption_s"]), float)
        has = np.isfinite(sm) & np.isfinite(sp)
        si_ok = np.abs(sp[has] - sm[has]) <= np.maximum(DOWNTIME_TOL_ABS_S, DOWNTIME_TOL_REL * sm[has])
        si_net = sm[has] - dm[has]
    else:
        si_ok = si_net = np.zeros(0)
    near = near_boundary(rows["bandwidth_Bps"], rows["min_bandwidth_Bps"])
    judged = ~near
    verdict_ok = (mc == pc)[judged]
    spread = repeat_spread(rows)
    out = {
        "held_out_runs": int(n),
        "compared_runs": int(len(both)),
        "total_time_median_rel_err": _stat(t_rel, 50),
        "total_time_p90_rel_err": _stat(t_rel, 90),
        "total_time_bias": _stat(_signed_rel(both["predicted_total_time_s"], both["measured_total_time_s"]), 50),
        "downtime_within_tolerance_share": float(d_ok.mean()) if len(both) else None,
        "downtime_median_abs_err_s": _stat(np.abs(dp - dm), 50),
        "downtime_bias_s": _stat(dp - dm, 50),
        "bytes_median_rel_err": _stat(b_rel, 50),
        "bytes_bias": _stat(_signed_rel(pb, mb), 50),
        "iterations_exact_share": float(it_ok.mean()) if len(both) else None,
        "iterations_within_one_share": float(it_near.mean()) if len(both) else None,
        "service_interruption_runs": int(len(si_ok)),
        "service_interruption_within_tolerance_share": float(si_ok.mean()) if len(si_ok) else None,
        "service_interruption_network_median_s": _stat(si_net, 50),
        "iterations_bias": _stat(np.asarray(both["predicted_iterations"], float)
                                 - np.asarray(both["measured_iterations"], float), 50),
        "verdict_runs": int(judged.sum()),
        "near_boundary_runs": int(near.sum()),
        "verdict_accuracy": float(verdict_ok.mean()) if judged.sum() else None,
        "verdict_wrong": [str(x) for x in rows["run_id"][judged & (mc != pc)]],
        "repeat_total_time_cv_median": spread["total_time_cv_median"],
        "repeat_total_time_cv_max": spread["total_time_cv_max"],
        "repeat_downtime_cv_median": spread["downtime_cv_median"],
        "repeat_scenarios": spread["scenarios"],
        "checks_ok_share": float(_bool(rows["check_ok"]).mean()) if n and "check_ok" in rows else None,
    }
    return out


def repeat_spread(rows) -> dict[str, Any]:
    """Run-to-run spread: coefficient of variation (std/mean, ddof=1) of measured converged runs per scenario."""
    cvs_t, cvs_d = [], []
    mc = _bool(rows["measured_converged"])
    for _sid, g in rows[mc].groupby("scenario"):
        if len(g) < 2:
            continue
        t = np.asarray(g["measured_total_time_s"], float)
        d = np.asarray(g["measured_downtime_s"], float)
        cvs_t.append(float(np.std(t, ddof=1) / np.mean(t)))
        if np.mean(d) > 0:
            cvs_d.append(float(np.std(d, ddof=1) / np.mean(d)))
    return {"scenarios": len(cvs_t),
            "total_time_cv_median": float(np.median(cvs_t)) if cvs_t else None,
            "total_time_cv_max": float(np.max(cvs_t)) if cvs_t else None,
            "downtime_cv_median": float(np.median(cvs_d)) if cvs_d else None}


def held_out(rows, excluded_ids: Iterable[str] = ()):
    """Validation-role runs, minus any run a profile was fitted on."""
    excluded = set(excluded_ids)
    keep = (rows["role"] == "validation") & ~rows["run_id"].isin(excluded)
    return rows[keep].reset_index(drop=True)


def repredict(store: RunStore, rows, profile: Mapping[str, Any], profile_name: str):
    """Rows with the predicted_* columns (and min bandwidth) recomputed under ``profile``."""
    from . import planner
    from .calibrate import apply_profile, plan_of_run
    from .sim import simulate

    rows = rows.copy()
    rows["profile"] = rows["profile"].astype(object)
    boundary_cache: dict[tuple, float | None] = {}
    for i, rid in enumerate(rows["run_id"]):
        plan = apply_profile(plan_of_run(store, rid), profile)
        res = simulate(plan, timeline=False)
        for k, v in result_columns("predicted", res).items():
            if k not in rows:
                rows[k] = None
            rows[k] = rows[k].astype(object)
            rows.at[i, k] = v
        key = (rows.at[i, "scenario"],)
        if key not in boundary_cache:
            boundary_cache[key] = planner.min_bandwidth_Bps(plan, lo=1e6, hi=1e10)
        rows.at[i, "min_bandwidth_Bps"] = boundary_cache[key]
        rows.at[i, "profile"] = profile_name
    return rows


def report(directory: str | Path, profile_path: str | None = None) -> dict[str, Any]:
    """``{"metrics", "rows", "profile", "excluded"}`` for the held-out runs of a campaign directory."""
    from .calibrate import load_profile

    store = RunStore(directory)
    rows = store.rows()
    excluded: list[str] = []
    if profile_path:
        profile = load_profile(profile_path)
        excluded = list((profile.get("fit") or {}).get("runs") or [])
        rows = held_out(rows, excluded)
        if len(rows):
            rows = repredict(store, rows, profile, profile_path)
    else:
        rows = held_out(rows)
    if not len(rows):
        raise UserError(f"{directory}: no held-out (role: validation) runs to report on"
                        + (f" that {profile_path} was not fitted on" if excluded else ""))
    m = metrics(rows)
    return {"metrics": m, "rows": rows, "profile": profile_path, "excluded": excluded}


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{1000 * x:.0f} ms"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def format_report(rep: Mapping[str, Any]) -> str:
    m = rep["metrics"]
    rows = rep["rows"]
    src = f"re-predicted with {rep['profile']}" if rep["profile"] else "stored predictions"
    lines = [
        f"held-out runs: {m['held_out_runs']} ({m['compared_runs']} converged on both sides; {src})",
        "",
        f"{'figure':44s} {'value':>10s}   target",
        f"{'total time: median relative error':44s} {_pct(m['total_time_median_rel_err']):>10s}   <= 5 %",
        f"{'total time: 90th percentile relative error':44s} {_pct(m['total_time_p90_rel_err']):>10s}   <= 10 %",
        f"{'total time: median signed error (bias)':44s} {_pct(m['total_time_bias']):>10s}",
        f"{'downtime within max(30 ms, 25 %)':44s} {_pct(m['downtime_within_tolerance_share']):>10s}   >= 90 %",
        f"{'downtime: median signed error (bias)':44s} "
        f"{'n/a' if m['downtime_bias_s'] is None else format(m['downtime_bias_s'] * 1000, '.0f') + ' ms':>10s}",
        f"{'bytes (RAM + disk): median relative error':44s} {_pct(m['bytes_median_rel_err']):>10s}   <= 5 %",
        f"{'bytes: median signed error (bias)':44s} {_pct(m['bytes_bias']):>10s}",
        f"{'iteration count exact':44s} {_pct(m['iterations_exact_share']):>10s}   >= 80 %",
        f"{'iteration count within one':44s} {_pct(m['iterations_within_one_share']):>10s}",
        f"{'service interruption within max(30 ms, 25 %)':44s} "
        f"{_pct(m['service_interruption_within_tolerance_share']):>10s}   ({m['service_interruption_runs']} runs "
        f"probed; the network added {_ms(m['service_interruption_network_median_s'])} median)",
        f"{'verdict accuracy (' + str(m['verdict_runs']) + ' runs; ' + str(m['near_boundary_runs']) + ' near the boundary skipped)':44s}"
        f" {_pct(m['verdict_accuracy']):>10s}   100 %",
        f"{'repeats: median CV of total time':44s} {_pct(m['repeat_total_time_cv_median']):>10s}"
        f"   ({m['repeat_scenarios']} scenarios with >= 2 converged runs; max {_pct(m['repeat_total_time_cv_max'])})",
        f"{'guest canaries ok after the migration':44s} {_pct(m['checks_ok_share']):>10s}",
    ]
    if m["verdict_wrong"]:
        lines.append(f"wrong verdicts: {', '.join(m['verdict_wrong'])}")
    lines += ["", f"{'run':24s} {'verdict m/p':>21s} {'time m/p [s]':>13s} {'downtime m/p [ms]':>17s} "
                  f"{'MiB m/p':>11s} {'iter m/p':>8s}"]
    for _, r in rows.iterrows():
        lines.append(
            f"{r['run_id']:24s} {str(r['measured_outcome'])[:10]:>10s}/{str(r['predicted_outcome'])[:10]:<10s} "
            f"{float(r['measured_total_time_s']):6.1f}/{float(r['predicted_total_time_s']):<6.1f} "
            f"{1000 * float(r['measured_downtime_s']):8.0f}/{1000 * float(r['predicted_downtime_s']):<8.0f} "
            f"{float(r['measured_total_bytes']) / MiB:5.0f}/{float(r['predicted_total_bytes']) / MiB:<5.0f} "
            f"{int(r['measured_iterations']):3d}/{int(r['predicted_iterations']):<3d}")
    return "\n".join(lines)


def report_plots(store: RunStore, rep: Mapping[str, Any], out_dir: str | Path, *, profile: Mapping[str, Any] | None = None,
                 timelines: int | None = None) -> list[Path]:
    """Scatter plots (total time, downtime, bytes) and one predicted-vs-measured timeline per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plot

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = rep["rows"]
    both = rows[_bool(rows["measured_converged"]) & _bool(rows["predicted_converged"])]
    written = []
    for col, what, unit, scale in (("total_time_s", "total time", "s", 1.0), ("downtime_s", "downtime", "ms", 1000.0),
                                   ("total_bytes", "bytes sent", "MiB", 1 / MiB)):
        fig = plot.predicted_vs_measured(np.asarray(both[f"predicted_{col}"], float) * scale,
                                         np.asarray(both[f"measured_{col}"], float) * scale, what=what, unit=unit)
        path = out / f"scatter_{col}.png"
        plot.save(fig, str(path))
        plt.close(fig)
        written.append(path)
    seen = []
    for rid, sid in zip(rows["run_id"], rows["scenario"]):
        if sid in seen:
            continue
        seen.append(sid)
        if timelines is not None and len(seen) > timelines:
            break
        fig = timeline_figure(store, rid, profile=profile)
        path = out / f"timeline_{sid}.png"
        plot.save(fig, str(path))
        plt.close(fig)
        written.append(path)
    return written


def timeline_figure(store: RunStore, rid: str, *, profile: Mapping[str, Any] | None = None):
    """Remaining RAM/disk over time: the measured run and its prediction on one axis."""
    import matplotlib.pyplot as plt

    from . import plot

    measured = store.load_result(rid, "measured")
    if profile:
        from .calibrate import apply_profile, plan_of_run
        from .sim import simulate

        predicted = simulate(apply_profile(plan_of_run(store, rid), profile))
    else:
        predicted = store.load_result(rid, "predicted")
    fig, ax = plt.subplots(figsize=(9, 4.2))
    plot.timeline(measured, ax=ax, label="measured", color="tab:blue")
    plot.timeline(predicted, ax=ax, label="predicted", color="tab:orange")
    ax.set_title(f"{rid}: measured {measured.outcome} {measured.total_time_s:.1f} s / "
                 f"{measured.downtime_s * 1000:.0f} ms, predicted {predicted.outcome} {predicted.total_time_s:.1f} s / "
                 f"{predicted.downtime_s * 1000:.0f} ms", fontsize=9)
    return fig
