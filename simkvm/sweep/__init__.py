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

Modules by question: "what does a spec say?" -> :mod:`.spec`; "how is a chunk
computed, and where?" -> :mod:`.compute`; "which columns, in which files?" ->
:mod:`.table`; "how fast is it here?" -> :mod:`.bench`.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, Mapping

from .compute import compute_chunk, run_sweep, scenario_plan, sweep
from .spec import DEFAULT_CHUNK, MAX_GRID_SCENARIOS, MAX_SAMPLES, SAMPLE_METHODS, Axis, SweepSpec, load_spec
from .table import (
    RESULT_COLUMNS,
    RESULT_MEANINGS,
    column_unit,
    describe_columns,
    read_metadata,
    rounds_path,
    sweep_metadata,
)

__all__ = ["sweep", "run_sweep", "load_spec", "compute_chunk", "scenario_plan", "SweepSpec", "Axis",
           "DEFAULT_CHUNK", "MAX_GRID_SCENARIOS", "MAX_SAMPLES", "SAMPLE_METHODS", "RESULT_COLUMNS",
           "RESULT_MEANINGS", "column_unit", "describe_columns", "read_metadata", "rounds_path", "sweep_metadata"]


# ------------------------------------------------------------------ ``simkvm.sweep(spec)``
class _CallableModule(types.ModuleType):
    """Lets ``simkvm.sweep(spec)`` call :func:`sweep` while ``simkvm.sweep.run_sweep`` stays the module's."""

    def __call__(self, spec: Mapping[str, Any] | str | Path, **kwargs: Any):
        return sweep(spec, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
