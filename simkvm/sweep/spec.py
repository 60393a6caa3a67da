"""A sweep spec, compiled: the base plan, the axes with their values in SI units, the sampling.

``load_spec`` reads the YAML (or a dict) once: every axis value goes through
the unit rule of the plan field it sets (:mod:`simkvm.model.codec`), every
mistake is one :class:`~simkvm.model.errors.UserError`. The result,
:class:`SweepSpec`, is small and frozen: it is what a worker receives, and
it cuts the scenarios into chunks (the unit of work and of resumption).
"""
from __future__ import annotations

import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..io import read_yaml
from ..load import plan_from_dict, plan_from_file
from ..model import codec
from ..model.errors import PlanError, UserError
from ..model.plan import Plan

#: Default scenarios per task: large enough that pickling and scheduling a task (~ms)
#: is < 1 % of its ~0.2 s of simulation, small enough that the last chunks balance.
DEFAULT_CHUNK = 2000

SAMPLE_METHODS = ("grid", "lhs", "random")
#: A grid is walked chunk by chunk (nothing held per scenario), so its limit is time: 10 million scenarios
#: are about an hour on two cores. LHS and random samples hold every point in memory: a million.
MAX_GRID_SCENARIOS = 10_000_000
MAX_SAMPLES = 1_000_000
SPEC_KEYS = ("base", "axes", "samples", "chunk")



@dataclass(frozen=True)
class Axis:
    """One swept plan field, its values already in SI units.

    ``path`` is the dotted key resolved into steps through the plan's dataclasses
    (field names, or tuple indexes for ``vm.disks.0.size``). ``values`` is what a grid
    walks; ``interval`` (low, high, log) is what LHS/random sample continuously when
    the axis was given as a range rather than a list.
    """

    key: str
    path: tuple[str | int, ...]
    values: tuple[Any, ...]
    interval: tuple[float, float, bool] | None = None
    integer: bool = False

    @property
    def column(self) -> str:
        """The table column: the plan key with its field's unit suffix (``link.bandwidth_Bps``), like the
        result columns (``total_time_s``)."""
        last = self.path[-1]
        return self.key.rsplit(".", 1)[0] + "." + last if isinstance(last, str) and "." in self.key else (
            last if isinstance(last, str) else self.key)

    def at(self, u: np.ndarray) -> list[Any]:
        """Values for points ``u`` in [0, 1): continuous over the interval, else by list index."""
        if self.interval is not None:
            low, high, log = self.interval
            x = np.exp(np.log(low) + u * (np.log(high) - np.log(low))) if log else low + u * (high - low)
            return [int(round(v)) for v in x] if self.integer else [float(v) for v in x]
        idx = np.minimum((u * len(self.values)).astype(np.int64), len(self.values) - 1)
        return [self.values[i] for i in idx]


@dataclass(frozen=True)
class SweepSpec:
    """Everything a worker needs, small enough to send once per worker."""

    base: Plan
    axes: tuple[Axis, ...]
    method: str = "grid"
    n: int = 0
    seed: int = 0
    chunk: int = DEFAULT_CHUNK

    @property
    def size(self) -> int:
        if self.method == "grid":
            return math.prod(len(a.values) for a in self.axes)
        return self.n

    @property
    def n_chunks(self) -> int:
        return -(-self.size // self.chunk)

    def fingerprint(self) -> str:
        """Identifies the sweep's scenarios, so a parts directory is never reused for another sweep."""
        blob = json.dumps({
            "base": self.base.to_dict(), "method": self.method, "n": self.n, "seed": self.seed,
            "chunk": self.chunk, "axes": [[a.key, list(a.values), a.interval, a.integer] for a in self.axes],
        }, sort_keys=True, default=repr)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def points(self) -> list[tuple[Any, ...]] | None:
        """Every scenario's axis values for LHS/random (they need all n points at once); None for grid."""
        if self.method == "grid":
            return None
        rng = np.random.default_rng(self.seed)
        columns = []
        for axis in self.axes:
            if self.method == "lhs":  # one point per stratum [i/n, (i+1)/n), strata shuffled per axis
                u = (rng.permutation(self.n) + rng.random(self.n)) / self.n
            else:
                u = rng.random(self.n)
            columns.append(axis.at(u))
        return list(zip(*columns))

    def chunk_ids(self, k: int) -> range:
        return range(k * self.chunk, min((k + 1) * self.chunk, self.size))

    def chunk_values(self, k: int, points: list[tuple[Any, ...]] | None) -> tuple[range, list[tuple[Any, ...]]]:
        """Scenario ids and axis values of chunk ``k``; grid order is the first axis slowest."""
        ids = self.chunk_ids(k)
        if points is not None:
            return ids, points[ids.start:ids.stop]
        shape = [len(a.values) for a in self.axes]
        index = np.unravel_index(np.arange(ids.start, ids.stop), shape) if shape else ()
        cols = [[a.values[i] for i in idx] for a, idx in zip(self.axes, index)]
        return ids, list(zip(*cols)) if cols else [()] * len(ids)


# ----------------------------------------------------------------- reading a spec
def load_spec(spec: Mapping[str, Any] | str | Path, chunk: int | None = None) -> SweepSpec:
    """Compile a spec (dict or YAML path) into a :class:`SweepSpec`; every mistake is one UserError."""
    where = Path.cwd()
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        spec = read_yaml(path, "sweep spec")
        where = path.resolve().parent
    if not isinstance(spec, Mapping):
        raise UserError(f"a sweep spec must be a mapping with 'base' and 'axes', got {type(spec).__name__}")
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise UserError(f"unknown sweep spec key {unknown[0]!r}; known keys: {', '.join(SPEC_KEYS)}")
    base = _load_base(spec.get("base"), where)
    axes_in = spec.get("axes")
    if not isinstance(axes_in, Mapping) or not axes_in:
        raise UserError("sweep spec 'axes' must map plan keys to values, e.g. {link.bandwidth: [1Gbit/s, 10Gbit/s]}")
    axes: tuple[Axis, ...] = ()
    for key, value in axes_in.items():  # each axis may only have as many values as the grid has room for
        room = MAX_GRID_SCENARIOS // max(1, math.prod(len(a.values) for a in axes if a.values))
        axes += (_axis(str(key), value, base, room),)
    method, n, seed = _samples(spec.get("samples"))
    if method == "grid":
        missing = [a.key for a in axes if not a.values]
        if missing:
            raise UserError(f"axis {missing[0]}: a grid needs 'num' or 'step' with 'range'/'log' (or a list)")
        size = math.prod(len(a.values) for a in axes)
        if size > MAX_GRID_SCENARIOS:
            raise UserError(f"the grid has {size:,} scenarios; the limit is {MAX_GRID_SCENARIOS:,}: split the "
                            f"sweep, or sample it (samples: {{method: lhs, n: ...}})")
    size = chunk if chunk is not None else spec.get("chunk", DEFAULT_CHUNK)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"chunk must be a whole number >= 1, got {size!r}")
    return SweepSpec(base=base, axes=axes, method=method, n=n, seed=seed, chunk=size)


def _load_base(base: Any, where: Path) -> Plan:
    if base is None:
        raise UserError("sweep spec needs 'base': a plan file (relative to the spec) or an inline plan")
    if isinstance(base, (str, Path)):
        path = Path(base) if Path(base).is_absolute() else where / base
        if not path.exists():
            raise UserError(f"base plan {str(path)!r} does not exist (paths are relative to the spec file)")
        try:
            return plan_from_file(path)
        except UserError as exc:
            raise UserError(f"base plan {path}: {exc}") from None
    if isinstance(base, Mapping):
        try:
            return plan_from_dict(base)
        except UserError as exc:
            raise UserError(f"base plan: {exc}") from None
    raise UserError(f"sweep spec 'base' must be a plan file path or a plan mapping, got {base!r}")


def _resolve(key: str, base: Plan) -> tuple[tuple[str | int, ...], str, Any]:
    """Walk a dotted YAML key through the plan's dataclasses: (steps, leaf field name, leaf type)."""
    try:
        return codec.resolve(base, key)
    except PlanError as exc:
        raise UserError(str(exc).replace("unknown key", "unknown axis", 1)) from None


def _parse_value(name: str, hint: Any, value: Any, where: str) -> Any:
    """A value with the unit rules of the field it sets (the plan's own converter)."""
    return codec.convert(name, hint, value, where)


def _axis(key: str, raw: Any, base: Plan, room: int = MAX_GRID_SCENARIOS) -> Axis:
    path, name, hint = _resolve(key, base)
    where = f"axis {key}"
    numeric_hint = hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        numeric_hint = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    integer = numeric_hint is int
    if isinstance(raw, Mapping):
        kinds = [k for k in ("range", "log") if k in raw]
        extra = [k for k in raw if k not in ("range", "log", "num", "step")]
        if len(kinds) != 1 or extra:
            raise UserError(f"{where}: give a list, {{range: [low, high], step|num}} or {{log: [low, high], num}}; "
                            f"got {dict(raw)!r}")
        kind = kinds[0]
        ends = raw[kind]
        if not isinstance(ends, (list, tuple)) or len(ends) != 2:
            raise UserError(f"{where}: {kind} must be [low, high], got {ends!r}")
        low, high = (_number(_parse_value(name, hint, v, where), where) for v in ends)
        if high < low:
            raise UserError(f"{where}: {kind} must be [low, high] with low <= high, got {list(ends)!r}")
        if kind == "log" and low <= 0:
            raise UserError(f"{where}: a log range needs low > 0, got {ends[0]!r}")
        if kind == "log" and "step" in raw:
            raise UserError(f"{where}: a log range takes 'num', not 'step'")
        values: list[float] = []
        if "num" in raw:
            num = raw["num"]
            if isinstance(num, bool) or not isinstance(num, int) or num < 1:
                raise UserError(f"{where}: num must be a whole number >= 1, got {num!r}")
            if num > room:
                raise UserError(f"{where}: num {num:,} makes the grid larger than {MAX_GRID_SCENARIOS:,} scenarios; "
                                f"split the sweep, or sample it (samples: {{method: lhs, n: ...}})")
            values = list((np.geomspace if kind == "log" else np.linspace)(low, high, num))
        elif "step" in raw:
            step = _number(_parse_value(name, hint, raw["step"], where), where)
            if step <= 0:
                raise UserError(f"{where}: step must be > 0, got {raw['step']!r}")
            steps = (high - low) / step * (1 + 1e-12) + 1e-9
            if not steps < room:
                raise UserError(f"{where}: step {raw['step']!r} makes {steps:,.0f} values, a grid larger than "
                                f"{MAX_GRID_SCENARIOS:,} scenarios (a larger step, or num)")
            count = int(math.floor(steps)) + 1
            values = [low + i * step for i in range(count)]
        if integer:
            values = [int(round(v)) for v in values]
        parsed = tuple(_parse_value(name, hint, int(v) if integer else float(v), where) for v in values)
        return Axis(key, path, parsed, (low, high, kind == "log"), integer)
    items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    if not items:
        raise UserError(f"{where}: the value list is empty")
    if len(items) > room:
        raise UserError(f"{where}: {len(items):,} values make the grid larger than {MAX_GRID_SCENARIOS:,} scenarios")
    return Axis(key, path, tuple(_parse_value(name, hint, v, where) for v in items), None, integer)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where}: range/log need a numeric field, got {value!r}")
    return float(value)


def _samples(samples: Any) -> tuple[str, int, int]:
    if samples is None:
        return "grid", 0, 0
    if not isinstance(samples, Mapping):
        raise UserError(f"samples must be a mapping like {{method: lhs, n: 1000, seed: 1}}, got {samples!r}")
    method = samples.get("method", "grid")
    if method not in SAMPLE_METHODS:
        raise UserError(f"samples.method must be one of {', '.join(SAMPLE_METHODS)}; got {method!r}")
    extra = [k for k in samples if k not in ("method", "n", "seed")]
    if extra:
        raise UserError(f"unknown samples key {extra[0]!r}; known keys: method, n, seed")
    if method == "grid":
        if "n" in samples:
            raise UserError("samples: a grid's size is the product of the axis lengths; 'n' is for lhs/random")
        return "grid", 0, 0
    n, seed = samples.get("n"), samples.get("seed", 0)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
        raise UserError(f"samples.n must be a whole number from 1 to {MAX_SAMPLES:,} for method {method!r} (every "
                        f"point is held in memory; run several sweeps with other seeds for more), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**128:
        raise UserError(f"samples.seed must be a whole number from 0 to 2^128-1, got {seed!r}")
    return method, n, seed
