"""Computing a sweep: one chunk of scenarios in a worker, all chunks on local processes or Dask.

A scenario's plan is the base plan with the axes' fields set (:func:`scenario_plan`:
microseconds, against ~0.5 ms for ``Plan.from_dict``); an impossible combination
is a row with outcome ``invalid`` and the reason. Chunks do not depend on the
number of workers, so the table is the same whoever computes it.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..model import codec
from ..model.errors import PlanError, UserError
from ..model.plan import Plan
from ..model.result import ROUND_COLUMNS
from ..sim import simulate
from .spec import SweepSpec, load_spec
from .table import BOOL_RESULTS, INT_RESULTS, RESULT_COLUMNS, Parts, frame, rounds_path, sweep_metadata, write_table


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
    if column in BOOL_RESULTS:
        return False
    if column in INT_RESULTS:
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
    parts = Parts(out_path, compiled, rounds) if out_path is not None else None
    todo = [k for k in range(compiled.n_chunks) if parts is None or not parts.done(k)]
    memory: dict[int, tuple[Any, Any]] = {}

    def store(k: int, cols: dict[str, list[Any]], per_round: dict[str, list[Any]] | None) -> None:
        table = frame(cols)
        rtable = frame(per_round) if per_round is not None else None
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
        return pd.concat(frames, ignore_index=True) if frames else frame(
            {"scenario": [], **{a.column: [] for a in compiled.axes}, **{c: [] for c in RESULT_COLUMNS}})

    table = gather("table")
    if rounds:
        table.attrs["rounds"] = gather("rounds")
    if out_path is not None:
        write_table(table, out_path, csv, sweep_metadata(compiled))
        if rounds:
            write_table(table.attrs["rounds"], rounds_path(out_path), csv)
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
