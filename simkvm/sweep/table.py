"""The sweep's table: its columns (names, units, meanings), dtypes, and the files it is kept in.

Finished chunks are Parquet files in ``<output>.parts/`` (:class:`Parts`), each
written under a temporary name and renamed, so an interrupted run leaves no
half part; the final table carries the spec, seed and column units in its
Parquet metadata (:func:`read_metadata`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..model.errors import UserError
from ..model.result import NOT_SCALAR, ROUND_COLUMNS, Result
from .spec import SweepSpec

#: Result columns of the table, after ``scenario`` and the axis columns. ``source`` is
#: left out (always "simulated"); ``reason`` is kept: it says *why*, in one line.
RESULT_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Result)
    if f.name != "source" and f.name not in NOT_SCALAR
)
# Page counts are whole pages (the model's closed forms give fractions; a table shows pages).
INT_RESULTS = {"iterations", "memory_iteration", "zero_pages", "normal_pages", "postcopy_pages_on_demand"}
BOOL_RESULTS = {"converged"}
STR_RESULTS = {"reason", "outcome"}


def frame(cols: Mapping[str, list[Any]], spec: SweepSpec | None = None):
    """Columns -> DataFrame with stable dtypes (an all-invalid chunk must not change them)."""
    import pandas as pd

    df = pd.DataFrame(cols)
    df["scenario"] = df["scenario"].astype("int64")
    for c in df.columns:
        if c in BOOL_RESULTS:
            df[c] = df[c].astype(bool)
        elif c in INT_RESULTS:
            df[c] = np.round(df[c].astype("float64")).astype("int64")
        elif c in STR_RESULTS or df[c].dtype == object:
            df[c] = df[c].astype(str)  # pandas' own string dtype, as Parquet reads it back
        elif c in RESULT_COLUMNS or c in ROUND_COLUMNS:
            df[c] = df[c].astype("float64")
    return df


class Parts:
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


def write_table(df, path: Path, csv: bool, metadata: Mapping[str, Any] | None = None) -> None:
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
    from .. import __version__

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
