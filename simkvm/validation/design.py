"""Held-out scenarios drawn from declared ranges: a Latin hypercube expanded from a seed.

The question this module answers is "which migrations does the campaign judge the
model on, and could anyone have picked them to flatter it?". A campaign file may
carry a ``design:`` section: a seed, a number of runs and one declared range per
knob. :func:`expand_design` turns it into scenario mappings (human units, the same
keys as a hand-written scenario), deterministically: every uniform draw is a
SHA-256 of (seed, dimension, index), so the design is the same on every machine and
numpy version. Each dimension is stratified on its own (a Latin hypercube: exactly
one draw in each of ``runs`` equal slices of [0, 1), the slices shuffled by the same
hash), then mapped onto its range.

A dimension is one of

* ``{min, max, scale: linear|log, round}``: a number in [min, max] (human units);
* ``{..., of: OTHER}``: the number times another dimension's value (the dirty rate
  as a share of the link's bandwidth), ``clip`` caps the product;
* ``{..., zero_share: F}``: the lowest share F of the slices is exactly 0 (idle
  guests), the rest spans [min, max];
* ``{..., upper: arena_room}``: the range's top is at most what the guest can
  allocate for its arena (the working set never makes the guest clamp);
* ``{choices: [a, b, ...]}``: equal shares of the slices (repeat a value to weight it).

``max_time`` is derived, not drawn: ``factor`` x (the non-zero RAM + disk) /
bandwidth + ``extra``, within [min, max] -- long enough for any migration that
converges in a few rounds, short enough that one that does not converge costs little.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping

from ..guestos import guest_kernel_estimate
from ..model.errors import UserError
from ..model.units import MiB, parse_duration, parse_rate, parse_size

#: The guest reserves 24 MiB of headroom below MemAvailable (workload.c, setup_memory()) and
#: its kernel holds the rest: measured at READY on the testbed, 256 MiB -> MemTotal 206 MiB,
#: used 25 MiB (157 MiB allocatable); 2 GiB -> MemTotal 1967 MiB, used 106 MiB (1837 MiB).
#: 0.9 x memory - 90 MiB stays below both (141 MiB, 1753 MiB) with room to spare.
ARENA_ROOM_SHARE = 0.9
ARENA_ROOM_RESERVE_BYTES = 90 * MiB

#: How each scenario key is parsed and written back (human units in the expanded file).
_SIZE_KEYS = ("memory", "wss", "disk", "disk_wss", "io_size")
_RATE_KEYS = ("bandwidth", "dirty_rate", "disk_write_rate")
_TIME_KEYS = ("max_downtime", "max_time")
_DESIGN_KEYS = ("seed", "runs", "id", "role", "dimensions", "max_time", "fixed")
_DIM_KEYS = ("min", "max", "scale", "round", "of", "clip", "zero_share", "upper", "choices")


def arena_room_bytes(memory_bytes: float) -> float:
    """What the testbed guest can allocate for its arena (a conservative bound, see ARENA_ROOM_*)."""
    return ARENA_ROOM_SHARE * memory_bytes - ARENA_ROOM_RESERVE_BYTES


def nonzero_bytes(memory_bytes: float, wss_bytes: float, zero_fraction: float) -> float:
    """RAM the guest makes non-zero: its fill, or its working set when larger (every WSS page is marked)."""
    return max((1.0 - zero_fraction) * memory_bytes, wss_bytes)


def _parse(key: str, value: Any, where: str) -> float:
    if key in _SIZE_KEYS:
        return parse_size(value, where)
    if key in _RATE_KEYS:
        return parse_rate(value, where)
    if key in _TIME_KEYS:
        return parse_duration(value, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where} must be a number, got {value!r}")
    return float(value)


def _fmt(key: str, value: float) -> Any:
    """A value in the unit a person would write it in (exact enough to parse back to the same run)."""
    if key in _SIZE_KEYS:
        return f"{value / MiB:g}MiB" if value >= MiB else f"{value / 1024:g}KiB"
    if key in _RATE_KEYS:
        return f"{value / MiB:g}MiB/s"
    if key in _TIME_KEYS:
        return f"{value:g}s" if value >= 10 else f"{value * 1000:g}ms"
    return value


def uniform(seed: Any, dim: str, index: int, salt: str = "u") -> float:
    """A uniform number in [0, 1) from (seed, dimension, index): the same everywhere, forever."""
    digest = hashlib.sha256(f"{seed}/{dim}/{index}/{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def lhs_column(seed: Any, dim: str, n: int) -> list[float]:
    """One Latin-hypercube column: ``n`` numbers in [0, 1), exactly one in each slice [k/n, (k+1)/n)."""
    order = sorted(range(n), key=lambda i: uniform(seed, dim, i, "perm"))
    return [(order[i] + uniform(seed, dim, i)) / n for i in range(n)]


def _round(x: float, step: float | None) -> float:
    return x if not step else round(x / step) * step


def _map_number(u: float, spec: Mapping[str, Any], key: str, where: str, upper: float | None) -> float:
    lo = _parse(key if "of" not in spec else "", spec["min"], f"{where}: min")
    hi = _parse(key if "of" not in spec else "", spec["max"], f"{where}: max")
    if upper is not None:
        hi = min(hi, upper)
    if not lo <= hi:
        raise UserError(f"{where}: min must not exceed max (after the guest's arena room), got {lo:g} > {hi:g}")
    zero = float(spec.get("zero_share", 0.0))
    if zero:
        if u < zero:
            return 0.0
        u = (u - zero) / (1.0 - zero)
    scale = spec.get("scale", "linear")
    if scale == "log":
        if lo <= 0:
            raise UserError(f"{where}: a log scale needs min > 0")
        return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    if scale != "linear":
        raise UserError(f"{where}: scale must be linear or log, got {scale!r}")
    return lo + u * (hi - lo)


def _check_keys(data: Any, known: tuple[str, ...], where: str, what: str) -> None:
    if not isinstance(data, Mapping):
        raise UserError(f"{where} must be a mapping ({what}), got {data!r}")
    unknown = [k for k in data if k not in known]
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(known)}")


def _order(dims: Mapping[str, Any]) -> list[str]:
    """Dimensions with ``of``/``upper`` after the ones they depend on."""
    plain = [k for k, s in dims.items() if not (isinstance(s, Mapping) and ("of" in s or "upper" in s))]
    return plain + [k for k in dims if k not in plain]


def expand_design(design: Any, name: str = "campaign",
                  defaults: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The ``design:`` section -> scenario mappings (human units), the same for the same seed.

    ``defaults`` (the campaign's) are what the derived values (arena room, max time) assume
    for knobs the design does not draw; only drawn, ``fixed`` and derived keys are written.
    """
    where = f"campaign {name}: design"
    _check_keys(design, _DESIGN_KEYS, where, "seed, runs, id, dimensions")
    seed, n = design.get("seed"), design.get("runs")
    if seed is None or isinstance(seed, bool) or not isinstance(seed, (int, str)):
        raise UserError(f"{where}: seed must be a whole number or a string, got {seed!r}")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1000:
        raise UserError(f"{where}: runs must be a whole number from 1 to 1000, got {n!r}")
    prefix = str(design.get("id", "lhs"))
    dims = design.get("dimensions")
    if not isinstance(dims, Mapping) or not dims:
        raise UserError(f"{where}: dimensions must be a mapping of knob -> range")
    fixed = dict(design.get("fixed") or {})
    base = {k: _parse(k, v, where) if k in _SIZE_KEYS + _RATE_KEYS + _TIME_KEYS else v
            for k, v in {**(defaults or {}), **fixed}.items() if k != "id"}
    width = len(str(n))
    rows: list[dict[str, Any]] = [{"id": f"{prefix}-{i + 1:0{width}d}", "role": design.get("role", "validation")}
                                  for i in range(n)]
    values: list[dict[str, float | str]] = [{} for _ in range(n)]
    for key in _order(dims):
        spec = dims[key]
        w = f"{where}: dimensions.{key}"
        _check_keys(spec, _DIM_KEYS, w, "min/max or choices")
        column = lhs_column(seed, key, n)
        for i, u in enumerate(column):
            if "choices" in spec:
                choices = spec["choices"]
                if not isinstance(choices, list) or not choices:
                    raise UserError(f"{w}: choices must be a non-empty list")
                c = choices[min(int(u * len(choices)), len(choices) - 1)]
                values[i][key] = c if isinstance(c, str) and key not in _SIZE_KEYS + _RATE_KEYS + _TIME_KEYS \
                    else _parse(key, c, w)
                continue
            if "min" not in spec or "max" not in spec:
                raise UserError(f"{w}: needs min and max (or choices)")
            upper = None
            if "upper" in spec:
                if spec["upper"] != "arena_room":
                    raise UserError(f"{w}: upper must be arena_room, got {spec['upper']!r}")
                memory = values[i].get("memory", base.get("memory", 256 * MiB))
                upper = arena_room_bytes(float(memory))
            x = _map_number(u, spec, key, w, upper)
            if "of" in spec:
                of_value = values[i].get(spec["of"])
                if not isinstance(of_value, float):
                    raise UserError(f"{w}: of must name a numeric dimension drawn before it, got {spec['of']!r}")
                x *= of_value
            if "clip" in spec:
                x = min(x, _parse(key, spec["clip"], f"{w}: clip"))
            step = _parse(key, spec["round"], f"{w}: round") if "round" in spec else None
            y = _round(x, step)
            if upper is not None and step and y > upper:
                y -= step
            values[i][key] = y
    mt = design.get("max_time")
    for row, vals in zip(rows, values):
        out: dict[str, Any] = {**{k: vals[k] for k in dims}, **{k: base[k] for k in fixed}}
        if mt is not None:
            out["max_time"] = derived_max_time({**base, **out}, mt, where)
        row.update({k: _fmt(k, v) if isinstance(v, float) else v for k, v in out.items()})
    return rows


def derived_max_time(knobs: Mapping[str, Any], spec: Any, where: str) -> float:
    """factor x (non-zero RAM + disk) / bandwidth + extra, within [min, max]."""
    if not isinstance(spec, Mapping):
        raise UserError(f"{where}: max_time must be a mapping (factor, extra, min, max)")
    memory = float(knobs.get("memory", 256 * MiB))
    wss = float(knobs.get("wss", 0.0))
    zero = float(knobs.get("zero_fraction", 0.5))
    bulk = (nonzero_bytes(memory, wss, zero) + float(knobs.get("disk", 0.0))) / float(knobs["bandwidth"])
    t = float(spec.get("factor", 3.0)) * bulk + parse_duration(spec.get("extra", 0), f"{where}: max_time.extra")
    lo = parse_duration(spec.get("min", "20s"), f"{where}: max_time.min")
    hi = parse_duration(spec.get("max", "600s"), f"{where}: max_time.max")
    return float(round(min(max(t, lo), hi)))


def with_drawn(written: list[Any], drawn: list[dict[str, Any]]) -> list[Any]:
    """The run order: written calibration scenarios, the drawn ones, then the other written ones.

    A campaign cut short (by a deadline, a crash) then still holds its calibration runs and a
    prefix of the draw, which is itself a random sample of the declared ranges.
    """
    cal = [x for x in written if isinstance(x, Mapping) and x.get("role") == "calibration"]
    return [*cal, *drawn, *[x for x in written if not any(x is c for c in cal)]]


def expanded_text(path: str) -> str:
    """The campaign file's scenarios, hand-written and drawn, as one YAML list (the pre-registration)."""
    import yaml

    from ..io import read_yaml

    data = read_yaml(path, "campaign file")
    if not isinstance(data, Mapping):
        raise UserError(f"{path}: a campaign file is a mapping with scenarios and/or design")
    name = str(data.get("name") or path)
    drawn = expand_design(data["design"], name, data.get("defaults") or {}) if data.get("design") else []
    seed = (data.get("design") or {}).get("seed")
    header = (f"# Generated by `simkvm campaign expand {path}`: every scenario of campaign {name!r}\n"
              f"# in run order (the written calibration ones, the {len(drawn)} drawn by its design from\n"
              f"# seed {seed}, then the other written ones), over its defaults. Do not edit: the test\n"
              f"# tests/test_campaign.py checks this file is what the seed expands to.\n")
    body = {"name": name, **({"stack": data["stack"]} if data.get("stack") is not None else {}),
            "defaults": data.get("defaults") or {},
            "scenarios": with_drawn(list(data.get("scenarios") or []), drawn)}
    return header + yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=120)


def clamps(memory_bytes: float, wss_bytes: float, zero_fraction: float, margin_bytes: float = 8 * MiB) -> bool:
    """Whether the guest would clamp its arena (workload.c, setup_memory()): arena = max(fill, WSS)
    above MemAvailable - 24 MiB (``margin_bytes`` of slack for the estimate)."""
    mem_total, used = guest_kernel_estimate(memory_bytes)
    fill = max(0.0, (1.0 - zero_fraction) * mem_total - used)
    allocatable = mem_total - used - 24 * MiB
    return max(fill, wss_bytes) > allocatable - margin_bytes
