"""A fleet file: the hosts, the VMs on them, and how the drain may move them.

    name: rack-7
    link: {bandwidth: 10Gbit/s}           # every host's NIC (the source's is shared by its outbound migrations)
    hosts:                                # optional; without it: one source and one roomy destination
      a: {free_memory: 0, nic: 10Gbit/s, cores: 32}   # cores: its CPUs are modelled (simkvm.drain.cpu)
      b: {free_memory: 512GiB, free_disk: 8TiB, background: 1Gbit/s}
    drain: [a]                            # hosts to empty (default: the hosts the VMs are on)
    concurrency: {max_parallel: 2}        # or nova | kubevirt | ovirt, or {stack: kubevirt, <its knobs>}
    migration: {max_downtime: 300ms, max_time: 1h}
    policy: qemu                          # each VM's, unless its row names another
    destination: {rule: most-free-memory, when_full: wait}
    vms: fleet.csv                        # or a list of rows with the fleet CSV's columns (+ host, policy, aids,
                                          #   cpu_load: cores its vCPUs keep busy)

A CSV alone is a fleet too (one source, one destination, defaults from the
command line). Units are parsed here, once.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..fleet import OPTIONAL, REQUIRED, vm_plan
from ..fleet import rows as csv_rows
from ..io import read_yaml
from ..model.errors import PlanError
from ..model.plan import Plan
from ..model.units import parse_rate, parse_size
from .concurrency import Concurrency, parse_concurrency
from .placement import get_rule

SOURCE, DESTINATION = "source", "destination"
WHEN_FULL = ("wait", "refuse")
FLEET_KEYS = ("name", "link", "hosts", "drain", "concurrency", "migration", "policy", "profile", "host", "aids",
              "destination", "vms")


@dataclass(frozen=True)
class HostSpec:
    name: str
    nic_Bps: float
    free_memory_bytes: float = math.inf
    free_disk_bytes: float = math.inf
    background_Bps: float = 0.0  # other traffic on its NIC, each way
    cores: float | None = None  # its machine's CPUs (None: not modelled)
    machine: str = ""  # hosts on one machine share its cores (the testbed's a and b); default its name


@dataclass(frozen=True)
class VMSpec:
    """One VM to move: where it is, and its migration as a plan over its source's whole NIC."""

    name: str
    source: str
    plan: Plan
    cpu_load: float = 0.0  # cores its vCPUs keep busy (a drain's CPU model: simkvm.drain.cpu)

    @property
    def memory_bytes(self) -> float:
        return self.plan.vm.memory_bytes

    @property
    def disk_bytes(self) -> float:
        """What its disks take on the destination."""
        return sum(d.allocation_bytes for d in self.plan.migrated_disks)

    @property
    def dirty_rate_Bps(self) -> float:
        return sum(s.dirty_rate_Bps for s in self.plan.workload.memory.dirty_sets())


@dataclass(frozen=True)
class Fleet:
    name: str
    hosts: tuple[HostSpec, ...]
    vms: tuple[VMSpec, ...]
    drain: tuple[str, ...]
    concurrency: Concurrency
    destination_rule: str = "most-free-memory"
    when_full: str = "wait"
    profile: Any = None  # the host profile the plans load (a path or mapping): its guest section maps real guests

    @property
    def destinations(self) -> tuple[HostSpec, ...]:
        return tuple(h for h in self.hosts if h.name not in self.drain)

    def host(self, name: str) -> HostSpec:
        return next(h for h in self.hosts if h.name == name)

    def with_concurrency(self, concurrency: Concurrency) -> "Fleet":
        return dataclasses.replace(self, concurrency=concurrency)


def load_fleet(path: str | Path, **overrides: Any) -> Fleet:
    """A fleet file (YAML) or a fleet CSV; ``overrides`` are fleet keys given on the command line."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        data: dict[str, Any] = {"name": p.stem, "vms": str(p)}
    else:
        loaded = read_yaml(p, "fleet file")
        if not isinstance(loaded, Mapping):
            raise PlanError(f"{p}: a fleet file must be a mapping (link:, concurrency:, migration:, vms:, ...)")
        data = {"name": p.stem, **loaded}
        for key in ("vms", "profile"):  # files named relative to the fleet file
            if isinstance(data.get(key), str) and not Path(data[key]).is_absolute() and (p.parent / data[key]).exists():
                data[key] = str(p.parent / data[key])
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("bandwidth", "background"):
            data["link"] = {**dict(data.get("link") or {}), key: value}
        elif key in ("max_downtime", "max_time", "max_iterations"):
            data["migration"] = {**dict(data.get("migration") or {}), key: value}
        else:
            data[key] = value
    return fleet_from_dict(data)


def fleet_from_dict(data: Mapping[str, Any]) -> Fleet:
    unknown = [k for k in data if k not in FLEET_KEYS]
    if unknown:
        raise PlanError(f"unknown fleet key {unknown[0]!r}; known keys: {', '.join(FLEET_KEYS)}")
    link = _mapping(data.get("link"), "link")
    for key in link:
        if key not in ("bandwidth", "background"):
            raise PlanError(f"unknown key link.{key}; known keys here: background, bandwidth")
    if "bandwidth" not in link:
        raise PlanError("link.bandwidth is required: the NIC each host migrates over (e.g. link: {bandwidth: 10Gbit/s})")
    nic = parse_rate(link["bandwidth"], "link.bandwidth", allow_zero=False)
    background = parse_rate(link.get("background", 0), "link.background")
    vm_rows = _vm_rows(data.get("vms"))
    hosts = _hosts(data.get("hosts"), nic, background, vm_rows)
    drain = _drain(data.get("drain"), hosts, vm_rows)
    if not any(h.name not in drain for h in hosts):
        raise PlanError(f"every host is being drained ({', '.join(drain)}): list a destination under hosts:")
    migration = _mapping(data.get("migration"), "migration")
    max_downtime = migration.pop("max_downtime", "300ms")
    max_time = migration.pop("max_time", None)
    defaults = {k: data[k] for k in ("policy", "profile", "host", "aids") if data.get(k) is not None}
    by_name = {h.name: h for h in hosts}
    vms, seen = [], set()
    plans: dict[tuple, Plan] = {}  # VMs of one flavour (same row but the name) share a plan
    for i, row in enumerate(vm_rows):
        name = str(row["name"])
        if name in seen:
            raise PlanError(f"vms[{i}]: VM name {name!r} appears twice")
        seen.add(name)
        source = str(row.get("host", drain[0] if len(drain) == 1 else ""))
        if source not in by_name:
            raise PlanError(f"vms[{i}] ({name}): host {source!r} is not one of the hosts ({', '.join(by_name)})")
        if source not in drain:
            continue  # stays where it is
        nic_Bps = by_name[source].nic_Bps
        flavour = (nic_Bps, repr(sorted((k, v) for k, v in row.items() if k not in ("name", "host", "cpu_load"))))
        if flavour not in plans:
            plans[flavour] = vm_plan(row, bandwidth=nic_Bps, capacity=nic_Bps, max_downtime=max_downtime,
                                     max_time=max_time, migration=migration, defaults=defaults)
        cpu_load = _number(row.get("cpu_load", 0.0), f"vms[{i}] ({name}).cpu_load", 0.0, 4096.0)
        vms.append(VMSpec(name=name, source=source, plan=dataclasses.replace(plans[flavour], name=name),
                          cpu_load=cpu_load))
    dest = _mapping(data.get("destination"), "destination")
    rule = str(dest.pop("rule", "most-free-memory"))
    get_rule(rule)
    when_full = str(dest.pop("when_full", "wait"))
    if when_full not in WHEN_FULL:
        raise PlanError(f"destination.when_full must be wait or refuse; got {when_full!r}")
    if dest:
        raise PlanError(f"unknown key destination.{next(iter(dest))}; known keys here: rule, when_full")
    return Fleet(name=str(data.get("name", "fleet")), hosts=tuple(hosts), vms=tuple(vms), drain=tuple(drain),
                 concurrency=parse_concurrency(data.get("concurrency")), destination_rule=rule,
                 when_full=when_full, profile=data.get("profile"))


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PlanError(f"{where} must be a mapping, got {value!r}")
    return dict(value)


def _vm_rows(value: Any) -> list[dict[str, Any]]:
    if value is None:
        raise PlanError("vms is required: a list of rows (name, memory, dirty_rate, ...) or a CSV file name")
    if isinstance(value, (str, Path)):
        return csv_rows(value)
    if not isinstance(value, list) or not value:
        raise PlanError("vms must be a non-empty list of rows or a CSV file name")
    known = set(REQUIRED) | set(OPTIONAL)
    out = []
    for i, row in enumerate(value):
        if not isinstance(row, Mapping):
            raise PlanError(f"vms[{i}] must be a mapping with the fleet CSV's columns, got {row!r}")
        missing = [c for c in REQUIRED if c not in row]
        extra = [c for c in row if c not in known]
        if missing:
            raise PlanError(f"vms[{i}]: missing {', '.join(missing)}; each row needs {', '.join(REQUIRED)}")
        if extra:
            raise PlanError(f"vms[{i}]: unknown column {extra[0]!r}; known: {', '.join(REQUIRED + OPTIONAL)}")
        out.append(dict(row))
    return out


def _hosts(value: Any, nic: float, background: float, vm_rows: list[dict[str, Any]]) -> list[HostSpec]:
    if value is None:  # the VMs' hosts (default one source) and one destination with room for all
        names = list(dict.fromkeys(str(r.get("host", SOURCE)) for r in vm_rows))
        for r in vm_rows:
            r.setdefault("host", SOURCE)
        if DESTINATION in names:
            raise PlanError(f"a VM is on host {DESTINATION!r}: list the hosts under hosts: to drain onto others")
        return [HostSpec(n, nic, background_Bps=background) for n in names + [DESTINATION]]
    value = _mapping(value, "hosts")
    out = []
    for name, spec in value.items():
        spec = _mapping(spec, f"hosts.{name}")
        extra = [k for k in spec if k not in ("nic", "free_memory", "free_disk", "background", "cores", "machine")]
        if extra:
            raise PlanError(f"unknown key hosts.{name}.{extra[0]}; known keys here: background, cores, free_disk, "
                            f"free_memory, machine, nic")
        w = f"hosts.{name}"
        out.append(HostSpec(
            name=str(name),
            nic_Bps=parse_rate(spec["nic"], f"{w}.nic", allow_zero=False) if "nic" in spec else nic,
            free_memory_bytes=parse_size(spec["free_memory"], f"{w}.free_memory") if "free_memory" in spec
            else math.inf,
            free_disk_bytes=parse_size(spec["free_disk"], f"{w}.free_disk") if "free_disk" in spec else math.inf,
            background_Bps=parse_rate(spec["background"], f"{w}.background") if "background" in spec
            else background,
            cores=_number(spec["cores"], f"{w}.cores", 0.01, 65536.0) if "cores" in spec else None,
            machine=str(spec.get("machine", name)),
        ))
    if not out:
        raise PlanError("hosts must list at least a source and a destination")
    cores: dict[str, float] = {}
    for h in out:  # a machine's cores are given once (on any of its hosts) or the same on each
        if h.cores is not None and cores.setdefault(h.machine, h.cores) != h.cores:
            raise PlanError(f"hosts on machine {h.machine!r} give it {cores[h.machine]:g} and {h.cores:g} cores: "
                            f"give its cores once")
    return [dataclasses.replace(h, cores=cores.get(h.machine)) for h in out]


def _number(value: Any, where: str, low: float, high: float) -> float:
    """A plain number (cores) in [low, high]."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise PlanError(f"{where} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(x) or not low <= x <= high:
        raise PlanError(f"{where} must be a number from {low:g} to {high:g}, got {value!r}")
    return x


def _drain(value: Any, hosts: list[HostSpec], vm_rows: list[dict[str, Any]]) -> list[str]:
    names = [h.name for h in hosts]
    if value is None:
        drain = list(dict.fromkeys(str(r["host"]) for r in vm_rows if "host" in r))
        if not drain:
            raise PlanError("say which host(s) to empty: drain: [a] (or a host column in vms)")
        return drain
    drain = [value] if isinstance(value, str) else list(value)
    for h in drain:
        if h not in names:
            raise PlanError(f"drain: {h!r} is not one of the hosts ({', '.join(names)})")
    return [str(h) for h in drain]
