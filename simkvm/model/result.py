"""What happened (or will happen) in one migration: the schema shared by prediction and measurement.

The simulator fills a :class:`Result` from its model; the executor fills the
same class from libvirt's job statistics. Per-iteration rows use libvirt's
job-stat names wherever one exists, so comparing prediction and reality is a
join on ``memory_iteration``, not a translation.

Row semantics (both sources): row *i* describes the period during which
QEMU's ``dirty-sync-count`` (libvirt ``memory_iteration``) equals *i*. Its
``time_elapsed_s``, ``memory_remaining``, ``memory_processed``, ``disk_*``
are the values at the start of that period, i.e. right after the bitmap sync
that began it; ``duration_s`` and ``sent_bytes`` cover the whole period.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

import numpy as np

from .errors import UserError
from .text import MAX_JSON_BYTES, read_text

#: Columns of ``Result.rounds``, in order. The first ones are libvirt job-stat names.
ROUND_COLUMNS: tuple[str, ...] = (
    "memory_iteration",  # QEMU dirty-sync-count during this period
    "time_elapsed_s",  # since the migration job started
    "memory_processed",  # RAM bytes sent so far (wire bytes, with headers)
    "memory_remaining",  # bytes set in the dirty bitmap at the start of the period
    "memory_dirty_rate",  # pages/s, as QEMU reports it (recomputed at syncs >= 1 s apart)
    "memory_bps",  # bytes/s, RAM throughput of the last 100 ms window
    "disk_processed",  # disk mirror progress bytes so far
    "disk_remaining",  # disk mirror bytes still to copy
    "downtime_expected_s",  # libvirt 'downtime' while running: remaining / bandwidth
    "threshold_bytes",  # bandwidth x max downtime (switchover threshold)
    "duration_s",  # length of this period
    "sent_bytes",  # RAM wire bytes sent during this period
    "dirtied_bytes",  # bytes the sync that started this period found newly dirtied
    "throttle",  # auto-converge CPU throttle in force (fraction)
    "max_downtime_s",  # downtime limit in force
    "xbzrle_pages",  # pages sent as XBZRLE deltas during this period
)

class TimelinePoint(NamedTuple):
    """One point of the progress timeline (both sources): where the migration stood at ``time_s``."""

    time_s: float
    phase: str  # prepare | mirror | precopy | switchover | postcopy | network | done | aborted
    memory_iteration: int
    memory_remaining: float | None
    memory_processed: float | None
    disk_remaining: float | None
    disk_processed: float | None


TIMELINE_COLUMNS: tuple[str, ...] = TimelinePoint._fields

#: Result fields that are not one scalar (left out of summary() and of a sweep's table).
NOT_SCALAR = ("round_records", "timeline_records", "actions", "measurement", "plan", "meta")

OUTCOMES = ("converged", "postcopy", "paused", "aborted", "not_converged", "refused")


@dataclass
class Action:
    """One decision of a controller (policy or the user)."""

    time_s: float
    action: str  # set_downtime | start_postcopy | pause | abort | throttle | set_bandwidth
    value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"time_s": self.time_s, "action": self.action, "value": self.value}


@dataclass
class Measurement:
    """What only a real migration knows and code acts on (``Result.meta`` keeps the rest, for people)."""

    vm_location: str | None = None  # where the VM runs now, in words (None: not said)
    service_interruption_measured: bool = False  # a network probe measured service_interruption_s
    downtime_bound_exceeded: bool = False  # completed, but the guest stayed paused beyond the downtime bound

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "Measurement":
        """The fields of a result written before they were fields (they were keys of ``meta`` then)."""
        location = meta.get("vm_location")
        return cls(vm_location=location if isinstance(location, str) else None,
                   service_interruption_measured=str(meta.get("service_interruption", "")).startswith("measured"),
                   downtime_bound_exceeded=meta.get("downtime_bound_exceeded") is True)


@dataclass
class Result:
    """A migration's outcome; ``source`` is ``simulated`` or ``measured``."""

    converged: bool
    reason: str
    outcome: str = "converged"
    source: str = "simulated"
    total_time_s: float = 0.0
    downtime_s: float = 0.0
    service_interruption_s: float = 0.0
    setup_time_s: float = 0.0  # preparation: checks, disks, paused destination
    disk_mirror_time_s: float = 0.0  # until every mirror is ready
    precopy_time_s: float = 0.0  # RAM migration until the VM stops
    postcopy_time_s: float = 0.0
    network_convergence_s: float = 0.0
    ram_transferred_bytes: float = 0.0
    disk_transferred_bytes: float = 0.0  # mirror progress until RAM migration starts (libvirt disk_processed)
    disk_background_bytes: float = 0.0  # mirror copies of guest writes after that (not in libvirt's figure)
    total_transferred_bytes: float = 0.0  # RAM + disk_transferred (libvirt data_processed); wire bytes: meta
    zero_pages: float = 0.0
    normal_pages: float = 0.0
    iterations: int = 0
    guest_cpu_lost_s: float = 0.0  # CPU time the guest lost to throttling
    postcopy_pages_on_demand: float = 0.0  # pages the destination faulted in over the network
    postcopy_degradation_s: float = 0.0  # guest time spent waiting on those faults
    round_records: list[dict[str, Any]] = field(default_factory=list, repr=False)
    timeline_records: list[TimelinePoint] = field(default_factory=list, repr=False)
    actions: list[Action] = field(default_factory=list)
    measurement: Measurement = field(default_factory=Measurement)  # written for measured results only
    plan: dict[str, Any] | None = field(default=None, repr=False)
    meta: dict[str, Any] = field(default_factory=dict)

    # DataFrames are built on demand: a sweep of a million simulations never pays for them.
    @property
    def rounds(self):
        import pandas as pd

        return pd.DataFrame(self.round_records, columns=list(ROUND_COLUMNS))

    @property
    def timeline(self):
        import pandas as pd

        return pd.DataFrame(self.timeline_records, columns=list(TIMELINE_COLUMNS))

    # ------------------------------------------------------------ summary
    SUMMARY_FIELDS = (
        "converged", "outcome", "reason", "total_time_s", "downtime_s", "service_interruption_s",
        "ram_transferred_bytes", "disk_transferred_bytes", "iterations",
    )

    def summary(self) -> dict[str, Any]:
        """The scalar outputs, as a flat dict (one row of a sweep table)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in NOT_SCALAR
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``simkvm predict --json`` and ``simkvm migrate --json``."""
        out = self.summary()
        out["rounds"] = [{k: _clean(r.get(k)) for k in ROUND_COLUMNS} for r in self.round_records]
        out["timeline"] = [{k: _clean(v) for k, v in t._asdict().items()} for t in self.timeline_records]
        out["actions"] = [a.to_dict() for a in self.actions]
        # One schema for both: a prediction carries the key too, null (nothing was measured).
        out["measurement"] = dataclasses.asdict(self.measurement) if self.source == "measured" else None
        out["meta"] = self.meta
        if self.plan is not None:
            out["plan"] = self.plan
        return {k: _clean(v) for k, v in out.items()}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Result":
        """A result from its JSON form, every field's type checked (a result file is user input)."""
        _check_result(data)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names and k not in ("actions", "measurement")}
        kwargs.setdefault("reason", "")
        res = cls(**kwargs)
        res.round_records = [dict(r) for r in data.get("rounds", [])]
        res.timeline_records = [TimelinePoint(*(t.get(c) for c in TIMELINE_COLUMNS)) for t in data.get("timeline", [])]
        res.actions = [Action(**a) for a in data.get("actions", [])]
        if data.get("measurement") is not None:
            res.measurement = Measurement(**data["measurement"])
        elif res.source == "measured":
            res.measurement = Measurement.from_meta(res.meta)
        return res

    @classmethod
    def from_json_file(cls, path: str) -> "Result":
        data = read_json(path)
        if not isinstance(data, dict) or "converged" not in data:
            raise UserError(f"{path}: not a simkvm result (no 'converged' key); make it with --json")
        return cls.from_dict(data)


def _check_result(data: Any) -> None:
    """UserError, one line, unless ``data`` has the types of Result.to_dict's output (None for NaN)."""
    def bad(key: str, want: str, value: Any) -> UserError:
        return UserError(f"not a simkvm result: {key} must be {want}, got {repr(value)[:60]}")

    def number(value: Any) -> bool:
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))

    if not isinstance(data, dict):
        raise bad("the result", "a JSON object", data)
    for f in dataclasses.fields(Result):
        if f.name not in data:
            continue
        value, kind = data[f.name], str(f.type)
        if kind == "bool" and not isinstance(value, bool):
            raise bad(f.name, "true or false", value)
        if kind in ("float", "int") and not number(value):
            raise bad(f.name, "a number", value)
        if kind == "str" and not isinstance(value, str):
            raise bad(f.name, "a string", value)
        if f.name in ("plan", "meta") and value is not None and not isinstance(value, dict):
            raise bad(f.name, "an object", value)
    if data.get("measurement") is not None:
        m = data["measurement"]
        if not isinstance(m, dict) or set(m) - {f.name for f in dataclasses.fields(Measurement)}:
            raise bad("measurement", "{vm_location, service_interruption_measured, downtime_bound_exceeded}", m)
        if not isinstance(m.get("vm_location"), (str, type(None))):
            raise bad("measurement.vm_location", "a string", m["vm_location"])
        for key in ("service_interruption_measured", "downtime_bound_exceeded"):
            if not isinstance(m.get(key, False), bool):
                raise bad(f"measurement.{key}", "true or false", m[key])
    for key in ("rounds", "timeline", "actions"):
        rows = data.get(key, [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise bad(key, "a list of objects", rows)
        for i, row in enumerate(rows):
            for k, v in row.items():
                if k not in ("action", "phase") and not number(v):
                    raise bad(f"{key}[{i}].{k}", "a number", v)
    for i, a in enumerate(data.get("actions", [])):
        if set(a) - {"time_s", "action", "value"} or not isinstance(a.get("action"), str) or "time_s" not in a:
            raise bad(f"actions[{i}]", "{time_s, action, value}", a)


def read_json(path: str) -> Any:
    """A result file's JSON, or one line saying why it cannot be read."""
    text = read_text(path, "result file", MAX_JSON_BYTES)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply to be a simkvm result") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise UserError(f"{path}: not a simkvm result ({str(exc).split(';')[0]})") from None


def _clean(v: Any) -> Any:
    """JSON has no inf/nan and no numpy scalars."""
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def records(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: r.get(k) for k in ROUND_COLUMNS} for r in rows]
