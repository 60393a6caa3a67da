"""Validation campaigns: the YAML that lists the scenarios (what :mod:`.runner` runs).

A campaign (YAML) lists scenarios; each is a testbed guest (memory, disk, what it
dirties) plus the migration knobs (bandwidth, downtime limit, max time,
storage), a number of repeats and a role: ``calibration`` runs are what
``simkvm calibrate`` may fit host constants on, ``validation`` runs are held
out and are the only ones the report judges.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..io import read_yaml
from ..model.errors import UserError
from ..model.units import MiB, parse_duration, parse_fraction, parse_rate, parse_size

ROLES = ("calibration", "validation")
PATTERNS = ("random", "seq")
STORAGES = ("non_shared_disk", "non_shared_inc")
BANDWIDTH_RANGE_Bps = (16.0 * MiB, 256.0 * MiB)
DOWNTIME_RANGE_S = (0.020, 2.0)
MEMORY_MAX_BYTES = 2048 * MiB  # two guests of this size (source + destination) fit the 24 GiB machine
DEFAULT_CAMPAIGN_STACK = "debian12"
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

    def plan_dict(self, name: str, qemu: str | None = None) -> dict[str, Any]:
        """The plan sections the campaign decides (vm and workload come from the guest); ``qemu``:
        the ``host.qemu`` whose migration loop the prediction follows (the testbed stack's)."""
        plan: dict[str, Any] = {"name": name, "link": {"bandwidth": self.bandwidth_Bps},
                                "migration": {"max_downtime": self.max_downtime_s, "max_time": self.max_time_s,
                                              "max_iterations": self.max_iterations, "storage": self.storage}}
        if qemu is not None:
            plan["host"] = {"qemu": qemu}
        return plan

    def knobs(self) -> dict[str, Any]:
        """The scenario as one flat row (the knob columns of runs.csv)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("id", "role", "repeats", "note")}


@dataclass(frozen=True)
class Campaign:
    name: str
    scenarios: tuple[Scenario, ...]
    source: str = ""
    #: The testbed stack the campaign runs on (simkvm.testbed.stack.STACKS: debian12 = QEMU 7.2,
    #: backports = QEMU 10.0); a file without ``stack:`` ran on the system's, as every campaign
    #: before the QEMU 10 one did.
    stack: str = DEFAULT_CAMPAIGN_STACK

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


_KEY_PARSERS: dict[str, Callable[..., float]] = {
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
    from ..testbed.guest import GuestWorkload  # the guest's own checks: wss fits, disk wss fits, io size ...

    try:
        GuestWorkload(**s.guest_kwargs())
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def parse_campaign(data: Any, name: str = "campaign") -> Campaign:
    """``{name, defaults: {...}, scenarios: [{id, ...}, ...]}`` -> Campaign (UserError, one line, if wrong)."""
    if not isinstance(data, Mapping):
        raise UserError(f"campaign {name}: must be a mapping with 'scenarios' (a list), got {type(data).__name__}")
    unknown = [k for k in data if k not in ("name", "defaults", "scenarios", "description", "design", "stack")]
    if unknown:
        raise UserError(f"campaign {name}: unknown key {unknown[0]!r}; known: name, description, stack, defaults, "
                        f"scenarios, design")
    name = str(data.get("name") or name)
    stack = campaign_stack(data.get("stack"), name)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise UserError(f"campaign {name}: defaults must be a mapping")
    if "id" in defaults:
        raise UserError(f"campaign {name}: defaults cannot set id")
    items = data.get("scenarios") or []
    if not isinstance(items, list):
        raise UserError(f"campaign {name}: scenarios must be a list")
    if data.get("design") is not None:  # held-out scenarios drawn from declared ranges (.design)
        from .design import expand_design, with_drawn

        items = with_drawn(items, expand_design(data["design"], name, defaults))
    if not items:
        raise UserError(f"campaign {name}: scenarios must be a non-empty list (or a design: section)")
    scenarios = [parse_scenario(item, defaults, f"campaign {name}: scenarios[{i}]") for i, item in enumerate(items)]
    seen: set[str] = set()
    for s in scenarios:
        if s.id in seen:
            raise UserError(f"campaign {name}: scenario id {s.id!r} appears twice")
        seen.add(s.id)
    return Campaign(name=name, scenarios=tuple(scenarios), stack=stack)


def campaign_stack(value: Any, name: str = "campaign") -> str:
    """The ``stack:`` of a campaign file as a stack name (debian12, backports; "7.2"/"10.0" name them too)."""
    if value is None:
        return DEFAULT_CAMPAIGN_STACK
    from ..testbed.stack import STACKS, get_stack

    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UserError(f"campaign {name}: stack must be one of {', '.join(STACKS)}, got {value!r}")
    try:
        return get_stack(str(value)).name
    except UserError as exc:
        raise UserError(f"campaign {name}: {exc}") from None


def load_campaign(path: str | Path) -> Campaign:
    p = Path(path)
    c = parse_campaign(read_yaml(p, "campaign file"), p.stem)
    return dataclasses.replace(c, source=str(p))


