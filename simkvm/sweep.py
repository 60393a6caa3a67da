"""Sweeps: one base plan, some axes, one table row per scenario.

The question this module answers is "how does the prediction change across
many plans?". A sweep spec names a base plan and axes (dotted plan keys with
value lists, linear ranges or log ranges) and a sampling method (full grid,
Latin hypercube, or plain random). Axis values are parsed **once**, with the
unit of the plan field they set, into SI numbers; each scenario is then the
base :class:`~simkvm.model.plan.Plan` with those fields replaced and re-validated,
which costs microseconds instead of the ~0.5 ms of ``Plan.from_dict``. That
matters because a prediction itself costs only ~0.1 ms.

Scenarios are cut into fixed chunks (scenario ids ``[k*chunk, (k+1)*chunk)``)
which are the unit of work for both backends (a local process pool, or an
existing Dask cluster) and of resumption: every finished chunk is written to
``<output>.parts/chunk-NNNNNN.parquet`` and a re-run skips the chunks already
there. Chunks do not depend on the number of workers, so the table is the same
whoever computes it.

Python API: ``simkvm.sweep(spec)`` returns the table as a DataFrame;
:func:`run_sweep` adds the output file, workers, scheduler and progress bar.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .io import read_yaml
from .load import plan_from_dict, plan_from_file
from .model import codec
from .model.errors import PlanError, UserError
from .model.plan import Plan
from .model.result import ROUND_COLUMNS, Result
from .sim import simulate

#: Default scenarios per task: large enough that pickling and scheduling a task (~ms)
#: is < 1 % of its ~0.2 s of simulation, small enough that the last chunks balance.
DEFAULT_CHUNK = 2000

#: Result columns of the table, after ``scenario`` and the axis columns. ``source`` is
#: left out (always "simulated"); ``reason`` is kept: it says *why*, in one line.
RESULT_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Result)
    if f.name not in ("source", "round_records", "timeline_records", "actions", "plan", "meta")
)
# Page counts are whole pages (the model's closed forms give fractions; a table shows pages).
_INT_RESULTS = {"iterations", "memory_iteration", "zero_pages", "normal_pages", "postcopy_pages_on_demand"}
_BOOL_RESULTS = {"converged"}
_STR_RESULTS = {"reason", "outcome"}

SAMPLE_METHODS = ("grid", "lhs", "random")
#: A grid is walked chunk by chunk (nothing held per scenario), so its limit is time: 10 million scenarios
#: are about an hour on two cores. LHS and random samples hold every point in memory: a million.
MAX_GRID_SCENARIOS = 10_000_000
MAX_SAMPLES = 1_000_000
SPEC_KEYS = ("base", "axes", "samples", "chunk")


# ------------------------------------------------------------------ the compiled spec
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


# ------------------------------------------------------------------ computing a chunk
def scenario_plan(spec: SweepSpec, values: Sequence[Any]) -> Plan:
    """The plan of one scenario, validated (raises PlanError when the combination is impossible)."""
    plan = spec.base
    for axis, value in zip(spec.axes, values):
        plan = codec.set_in(plan, axis.path, value)
    plan.validate()
    return plan


def compute_chunk(spec: SweepSpec, ids: range, values: list[tuple[Any, ...]], rounds: bool = False
                  ) -> tuple[dict[str, list[Any]], dict[str, list[Any]] | None]:
    """Simulate a chunk; returns table columns (and per-round columns). Runs in a worker.

    Columns are plain lists, not DataFrames, so the worker does no pandas work per row and
    the reply pickles compactly.
    """
    cols: dict[str, list[Any]] = {"scenario": list(ids)}
    for j, axis in enumerate(spec.axes):
        cols[axis.column] = [v[j] for v in values]
    out: dict[str, list[Any]] = {c: [] for c in RESULT_COLUMNS}
    per_round: dict[str, list[Any]] | None = {"scenario": [], **{c: [] for c in ROUND_COLUMNS}} if rounds else None
    for sid, vals in zip(ids, values):
        try:
            result = simulate(scenario_plan(spec, vals), timeline=False)
        except PlanError as exc:
            for c in RESULT_COLUMNS:
                out[c].append(_invalid_value(c, str(exc)))
            continue
        for c in RESULT_COLUMNS:
            out[c].append(getattr(result, c))
        if per_round is not None:
            for row in result.round_records:
                per_round["scenario"].append(sid)
                for c in ROUND_COLUMNS:
                    per_round[c].append(row.get(c))
    cols.update(out)
    return cols, per_round


def _invalid_value(column: str, message: str) -> Any:
    if column == "outcome":
        return "invalid"
    if column == "reason":
        return message
    if column in _BOOL_RESULTS:
        return False
    if column in _INT_RESULTS:
        return 0
    return math.nan


# Worker-side state for the process pool: the spec is sent once per worker, not per task.
_WORKER_SPEC: SweepSpec | None = None


def _init_worker(spec: SweepSpec) -> None:
    global _WORKER_SPEC
    _WORKER_SPEC = spec


def _pool_task(k: int, ids: range, values: list[tuple[Any, ...]], rounds: bool) -> tuple[int, Any, Any]:
    assert _WORKER_SPEC is not None
    return (k, *compute_chunk(_WORKER_SPEC, ids, values, rounds))


def _dask_task(spec: SweepSpec, k: int, ids: range, values: list[tuple[Any, ...]], rounds: bool
               ) -> tuple[int, Any, Any]:
    return (k, *compute_chunk(spec, ids, values, rounds))


# ------------------------------------------------------------------ tables and parts
def _frame(cols: Mapping[str, list[Any]], spec: SweepSpec | None = None):
    """Columns -> DataFrame with stable dtypes (an all-invalid chunk must not change them)."""
    import pandas as pd

    df = pd.DataFrame(cols)
    df["scenario"] = df["scenario"].astype("int64")
    for c in df.columns:
        if c in _BOOL_RESULTS:
            df[c] = df[c].astype(bool)
        elif c in _INT_RESULTS:
            df[c] = np.round(df[c].astype("float64")).astype("int64")
        elif c in _STR_RESULTS or df[c].dtype == object:
            df[c] = df[c].astype(str)  # pandas' own string dtype, as Parquet reads it back
        elif c in RESULT_COLUMNS or c in ROUND_COLUMNS:
            df[c] = df[c].astype("float64")
    return df


class _Parts:
    """The part-directory next to the output: one parquet file per finished chunk."""

    def __init__(self, output: Path, spec: SweepSpec, rounds: bool) -> None:
        self.dir = output.with_name(output.name + ".parts")
        self.rounds = rounds
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = self.dir / "sweep.json"
        mine = {"fingerprint": spec.fingerprint(), "scenarios": spec.size, "chunk": spec.chunk}
        if stamp.exists():
            theirs = json.loads(stamp.read_text())
            if theirs.get("fingerprint") != mine["fingerprint"]:
                raise UserError(f"{self.dir} holds chunks of a different sweep (spec, seed or chunk changed); "
                                f"delete it or choose another output")
        else:
            stamp.write_text(json.dumps(mine))

    def path(self, k: int, kind: str = "table") -> Path:
        return self.dir / (f"chunk-{k:06d}.parquet" if kind == "table" else f"chunk-{k:06d}.rounds.parquet")

    def done(self, k: int) -> bool:
        return self.path(k).exists() and (not self.rounds or self.path(k, "rounds").exists())

    def write(self, k: int, table, per_round) -> None:
        # Rounds first, table last: the table file is what marks the chunk finished. Each file is
        # written under a temporary name and renamed, so an interrupted write leaves no half part.
        if per_round is not None:
            _atomic_parquet(per_round, self.path(k, "rounds"))
        _atomic_parquet(table, self.path(k))

    def read(self, k: int, kind: str = "table"):
        import pandas as pd

        return pd.read_parquet(self.path(k, kind))


def _atomic_parquet(df, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _write_table(df, path: Path, csv: bool, metadata: Mapping[str, Any] | None = None) -> None:
    """The table, atomically; a Parquet file also carries ``metadata`` (spec, seed, version, column units)
    under the key ``simkvm`` of its schema, where :func:`read_metadata` finds it."""
    tmp = path.with_name(path.name + ".tmp")
    if csv:
        df.to_csv(tmp, index=False)
    elif metadata is None:
        df.to_parquet(tmp, index=False)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        merged = {**(table.schema.metadata or {}), b"simkvm": json.dumps(metadata, default=repr).encode()}
        pq.write_table(table.replace_schema_metadata(merged), tmp)
    os.replace(tmp, path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """What a sweep wrote into its Parquet file: ``spec`` (base plan, axes, samples), ``seed``,
    ``simkvm_version``, ``fingerprint`` and ``columns`` (name -> unit and meaning)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    if b"simkvm" not in meta:
        raise UserError(f"{path}: no simkvm metadata (not written by simkvm sweep, or by a version before 0.1)")
    return json.loads(meta[b"simkvm"])


#: What each result column means; the unit comes from the name's suffix (see :func:`column_unit`).
RESULT_MEANINGS: dict[str, str] = {
    "converged": "the migration completed (pre-copy, post-copy or a forced pause)",
    "reason": "why, in one line", "outcome": "converged, postcopy, paused, aborted, not_converged, refused, or "
                                              "invalid (the scenario's plan is impossible; reason says why)",
    "total_time_s": "from the start of preparation to the end of the job",
    "downtime_s": "VM paused (QEMU's downtime)", "service_interruption_s": "downtime + network re-learning",
    "setup_time_s": "preparation: checks, disks, paused destination",
    "disk_mirror_time_s": "until every disk mirror is ready", "precopy_time_s": "RAM migration until the VM stops",
    "postcopy_time_s": "post-copy phase", "network_convergence_s": "network re-learning after the resume",
    "ram_transferred_bytes": "RAM bytes sent (libvirt memory_processed)",
    "disk_transferred_bytes": "mirror bytes until RAM migration starts (libvirt disk_processed)",
    "disk_background_bytes": "mirror copies of guest writes after that",
    "total_transferred_bytes": "RAM + disk (libvirt data_processed)",
    "zero_pages": "zero pages sent as headers", "normal_pages": "pages sent in full",
    "iterations": "QEMU's dirty-sync-count (libvirt memory_iteration)",
    "guest_cpu_lost_s": "guest CPU time lost to auto-converge throttling",
    "postcopy_pages_on_demand": "pages the destination faulted in over the network",
    "postcopy_degradation_s": "guest time spent waiting on those faults",
}


def column_unit(column: str) -> str:
    """The unit a column's name carries (``_s`` seconds, ``_bytes`` bytes, ``_Bps`` bytes/s, ``_frac`` share)."""
    for suffix, unit in (("_Bps", "bytes/s"), ("_bytes", "bytes"), ("_s", "seconds"), ("_frac", "fraction 0-1"),
                         ("pages", "pages")):
        if column.endswith(suffix):
            return unit
    if "_pages_" in column:
        return "pages"
    if column in ("iterations", "scenario") or column.endswith(("iterations", "channels")):
        return "count"
    if column in ("converged",):
        return "true/false"
    return "fraction 0-1" if "fraction" in column else "-"


def describe_columns(spec: SweepSpec | None = None) -> list[tuple[str, str, str]]:
    """(column, unit, meaning) of a sweep table, in order: scenario, the spec's axes, the results."""
    rows = [("scenario", "count", "scenario id (0..n-1), the table's order")]
    for a in (spec.axes if spec else ()):
        rows.append((a.column, column_unit(a.column), f"axis {a.key}"))
    return rows + [(c, column_unit(c), RESULT_MEANINGS.get(c, "")) for c in RESULT_COLUMNS]


def sweep_metadata(spec: SweepSpec) -> dict[str, Any]:
    from . import __version__

    return {
        "simkvm_version": __version__, "seed": spec.seed, "fingerprint": spec.fingerprint(),
        "spec": {"base": spec.base.to_dict(),
                 "axes": {a.key: ({"interval": list(a.interval)} if a.interval else {"values": list(a.values)})
                          for a in spec.axes},
                 "samples": {"method": spec.method, "n": spec.n, "seed": spec.seed}, "chunk": spec.chunk},
        "columns": {c: {"unit": u, "meaning": m} for c, u, m in describe_columns(spec)},
    }


def rounds_path(output: str | Path) -> Path:
    """Where ``--rounds`` puts the per-iteration table: ``results.parquet`` -> ``results.rounds.parquet``."""
    p = Path(output)
    return p.with_name(f"{p.stem}.rounds{p.suffix}")


# ------------------------------------------------------------------ running a sweep
def run_sweep(spec: Mapping[str, Any] | str | Path | SweepSpec, output: str | Path | None = None,
              workers: int | None = None, scheduler: Any = None, progress: bool = True, *,
              chunk: int | None = None, csv: bool | None = None, rounds: bool = False,
              keep_parts: bool = False, on_chunk: Callable[[int], None] | None = None):
    """Run a sweep and return its table (a DataFrame ordered by ``scenario``).

    ``output``: write the table there (Parquet, or CSV for ``csv=True`` / a ``.csv`` name); finished
    chunks go to ``<output>.parts/`` first, so an interrupted run resumes where it stopped, and the
    directory is removed once the table is written (``keep_parts`` keeps it). ``workers``: local
    processes (default: all cores; 1 runs in this process). ``scheduler``: a Dask scheduler address
    (``tcp://host:8786``) or a ``distributed.Client``: chunks go to that cluster instead.
    ``rounds``: also build the per-iteration table (returned in ``df.attrs["rounds"]``, written
    to :func:`rounds_path`). ``on_chunk(k)`` is called after each newly computed chunk is stored.
    """
    import pandas as pd

    compiled = spec if isinstance(spec, SweepSpec) else load_spec(spec, chunk)
    if chunk is not None and compiled.chunk != chunk:
        compiled = dataclasses.replace(compiled, chunk=chunk)
    out_path = Path(output) if output is not None else None
    if csv is None:
        csv = out_path is not None and out_path.suffix.lower() == ".csv"
    parts = _Parts(out_path, compiled, rounds) if out_path is not None else None
    todo = [k for k in range(compiled.n_chunks) if parts is None or not parts.done(k)]
    memory: dict[int, tuple[Any, Any]] = {}

    def store(k: int, cols: dict[str, list[Any]], per_round: dict[str, list[Any]] | None) -> None:
        table = _frame(cols)
        rtable = _frame(per_round) if per_round is not None else None
        if parts is not None:
            parts.write(k, table, rtable)
        else:
            memory[k] = (table, rtable)
        bar.update(len(table))
        if on_chunk is not None:
            on_chunk(k)

    from tqdm import tqdm

    done_before = compiled.size - sum(len(compiled.chunk_ids(k)) for k in todo)
    bar = tqdm(total=compiled.size, initial=done_before, unit="scen", unit_scale=True, file=sys.stderr,
               disable=not progress, desc="sweep", smoothing=0.1)
    try:
        if todo:
            points = compiled.points()
            tasks = ((k, *compiled.chunk_values(k, points)) for k in todo)
            if scheduler is not None:
                _run_dask(compiled, tasks, scheduler, rounds, store)
            else:
                _run_local(compiled, tasks, workers, rounds, store, len(todo))
    finally:
        bar.close()

    def gather(kind: str):
        frames = []
        for k in range(compiled.n_chunks):
            if parts is not None:
                frames.append(parts.read(k, kind))
            else:
                frames.append(memory[k][0 if kind == "table" else 1])
        return pd.concat(frames, ignore_index=True) if frames else _frame(
            {"scenario": [], **{a.column: [] for a in compiled.axes}, **{c: [] for c in RESULT_COLUMNS}})

    table = gather("table")
    if rounds:
        table.attrs["rounds"] = gather("rounds")
    if out_path is not None:
        _write_table(table, out_path, csv, sweep_metadata(compiled))
        if rounds:
            _write_table(table.attrs["rounds"], rounds_path(out_path), csv)
        if not keep_parts:
            shutil.rmtree(parts.dir, ignore_errors=True)  # type: ignore[union-attr]
    return table


def _run_local(spec: SweepSpec, tasks: Iterator[tuple[int, range, list]], workers: int | None, rounds: bool,
               store: Callable[..., None], n_tasks: int) -> None:
    """All cores by default; one worker runs in this process (no pickling, no fork)."""
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if workers == 1 or n_tasks == 1:
        for k, ids, values in tasks:
            store(k, *compute_chunk(spec, ids, values, rounds))
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # 'fork': workers inherit the imported simulator, so they start in milliseconds.
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(spec,)) as pool:
        pending = set()
        try:
            # Keep a few tasks per worker queued, not all: memory stays flat for huge sweeps.
            for task in tasks:
                pending.add(pool.submit(_pool_task, *task, rounds))
                if len(pending) >= 3 * workers:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        store(*fut.result())
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    store(*fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _run_dask(spec: SweepSpec, tasks: Iterator[tuple[int, range, list]], scheduler: Any, rounds: bool,
              store: Callable[..., None]) -> None:
    """The same chunks on an existing Dask cluster; the spec is scattered once to every worker."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise UserError("--scheduler needs Dask: pip install 'dask[distributed]'") from None
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler, timeout="10s") if own else scheduler
    except (OSError, TimeoutError) as exc:
        raise UserError(f"cannot reach the Dask scheduler {scheduler!r}: {exc}") from None
    try:
        spec_future = client.scatter(spec, broadcast=True)
        todo = list(tasks)
        futures = client.map(_dask_task, [spec_future] * len(todo), [t[0] for t in todo],
                             [t[1] for t in todo], [t[2] for t in todo], [rounds] * len(todo), pure=False)
        try:
            for fut in as_completed(futures):
                store(*fut.result())
                fut.release()
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        if own:
            client.close()


def sweep(spec: Mapping[str, Any] | str | Path, **kwargs: Any):
    """The sweep table as a DataFrame (no file, no progress bar unless asked); see :func:`run_sweep`."""
    kwargs.setdefault("progress", False)
    return run_sweep(spec, **kwargs)


# ------------------------------------------------------------------ benchmark
def bench_spec(n_dirty: int = 25, n_bw: int = 20, n_down: int = 10, n_wss: int = 20) -> dict[str, Any]:
    """The benchmark grid (100,000 scenarios by default): dirty rate x bandwidth x downtime x wss
    on a 4 GiB..16 GiB plan, wide enough to include non-converging and invalid corners."""
    return {
        "base": {"name": "bench-sweep", "vm": {"memory": "16GiB", "zero_fraction": 0.2,
                                              "disks": [{"size": "20GiB", "allocated": "8GiB"}]},
                 "workload": {"memory": {"model": "uniform", "dirty_rate": "400MiB/s", "wss": "2GiB"},
                              "disk": {"write_rate": "2MiB/s", "wss": "1GiB"}},
                 "link": {"bandwidth": "10Gbit/s"},
                 "migration": {"max_downtime": "300ms", "max_time": "600s"}},
        "axes": {
            "workload.memory.dirty_rate": {"log": ["10MiB/s", "2GiB/s"], "num": n_dirty},
            "link.bandwidth": {"log": ["1Gbit/s", "40Gbit/s"], "num": n_bw},
            "migration.max_downtime": {"range": ["50ms", "500ms"], "num": n_down},
            "workload.memory.wss": {"log": ["256MiB", "12GiB"], "num": n_wss},
        },
        "samples": {"method": "grid"},
    }


def bench_sweep(args: argparse.Namespace) -> int:
    """``simkvm bench --sweep``: scenarios/s with 1 and 2 local workers and on a 2-worker Dask cluster.

    Every run is the same 100,000-scenario grid, so the efficiency compares identical work (a
    subset would have a different mix of plans, hence of iterations per scenario). The Dask
    cluster is started and warmed up (workers import simkvm) before the clock starts: the
    figure is for an existing cluster, as ``--scheduler`` uses one. The load average is printed
    because on a shared 2-core machine any other process shows up directly in the figures.
    """
    import platform

    spec = bench_spec()
    figures: dict[str, Any] = {"machine": f"{platform.machine()} {os.cpu_count()} cores, "
                                          f"Python {platform.python_version()}",
                               "load_average_before": round(os.getloadavg()[0], 2)}
    progress = not args.json

    def timed(**kw: Any) -> tuple[float, Any]:
        start = time.perf_counter()
        df = run_sweep(spec, progress=progress, **kw)
        return time.perf_counter() - start, df

    t1, one = timed(workers=1)
    t2, local = timed(workers=2)
    n = len(local)
    figures.update({"scenarios": n, "seconds_1_worker": round(t1, 2), "scenarios_per_s_1_worker": round(n / t1, 1),
                    "seconds_2_workers": round(t2, 2), "scenarios_per_s_2_workers": round(n / t2, 1),
                    "parallel_efficiency": round(t1 / (2 * t2), 3), "two_workers_equal_one": bool(one.equals(local))})
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        figures["dask"] = "not installed (pip install 'dask[distributed]')"
    else:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster) as client:
            run_sweep(bench_spec(2, 2, 2, 2), scheduler=client, progress=False, chunk=4)  # warm-up
            td, dask_df = timed(scheduler=client)
        figures.update({"seconds_dask": round(td, 2), "scenarios_per_s_dask": round(n / td, 1),
                        "dask_equals_local": bool(dask_df.equals(local))})
    figures["load_average_after"] = round(os.getloadavg()[0], 2)
    figures["converged_share"] = round(float(local["converged"].mean()), 3)
    figures["mean_iterations"] = round(float(local["iterations"].mean()), 2)
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        print()
        return 0
    print(f"machine: {figures['machine']}; load average {figures['load_average_before']} before, "
          f"{figures['load_average_after']} after")
    print(f"grid: {n:,} scenarios (dirty rate x bandwidth x downtime x wss on a 16 GiB VM), "
          f"{figures['converged_share']:.0%} converged, {figures['mean_iterations']} iterations on average")
    print(f"local, 1 worker : {n / t1:>9,.0f} scenarios/s ({t1:.1f} s)")
    print(f"local, 2 workers: {n / t2:>9,.0f} scenarios/s ({t2:.1f} s; target < 180 s)")
    print(f"parallel efficiency: {figures['parallel_efficiency']:.2f} (target >= 0.8)")
    if "seconds_dask" in figures:
        print(f"dask LocalCluster, 2 workers x 1 thread: {n / td:>9,.0f} scenarios/s ({td:.1f} s; "
              f"table equals local: {figures['dask_equals_local']})")
    return 0


# ------------------------------------------------------------------ ``simkvm.sweep(spec)``
class _CallableModule(types.ModuleType):
    """Lets ``simkvm.sweep(spec)`` call :func:`sweep` while ``simkvm.sweep.run_sweep`` stays the module's."""

    def __call__(self, spec: Mapping[str, Any] | str | Path, **kwargs: Any):
        return sweep(spec, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
