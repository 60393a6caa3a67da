"""How far was the prediction from reality? A join of two Results, not a translation.

The simulator and the executor fill the same :class:`~simkvm.model.result.Result`
schema, so comparing them is: the same scalar next to each other with its
error, and the per-iteration rows joined on ``memory_iteration``.

Errors are signed ``predicted - measured``; relative errors divide by the
measured value (None when it is 0): a positive relative error means the
simulator over-estimated.
"""
from __future__ import annotations

import math
from typing import Any

from .model.errors import UserError
from .model.result import Result, read_json
from .model.units import fmt_bytes, fmt_duration

#: The totals compared, in print order: (Result field, label, kind).
TOTALS: tuple[tuple[str, str, str], ...] = (
    ("total_time_s", "total time", "s"),
    ("setup_time_s", "setup time", "s"),
    ("disk_mirror_time_s", "disk mirror time", "s"),
    ("precopy_time_s", "pre-copy time", "s"),
    ("downtime_s", "downtime", "s"),
    ("service_interruption_s", "service interruption", "s"),
    ("ram_transferred_bytes", "RAM transferred", "B"),
    ("disk_transferred_bytes", "disk transferred", "B"),
    ("total_transferred_bytes", "total transferred", "B"),
    ("iterations", "iterations", "n"),
)

#: Per-iteration columns compared (ROUND_COLUMNS names).
ROUND_FIELDS: tuple[str, ...] = ("time_elapsed_s", "memory_remaining", "memory_processed", "memory_dirty_rate",
                                 "duration_s", "sent_bytes")


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def error_of(predicted: Any, measured: Any) -> tuple[float | None, float | None]:
    """(predicted - measured, (predicted - measured) / measured); None where undefined."""
    p, m = _num(predicted), _num(measured)
    if p is None or m is None:
        return None, None
    err = p - m
    return err, (err / m if m != 0 else None)


def compare(predicted: Result, measured: Result) -> dict[str, Any]:
    """Totals with their errors, the verdicts, and a per-iteration DataFrame.

    Returns ``{"totals": {field: {"label", "predicted", "measured", "error",
    "relative_error"}}, "verdict": {"predicted", "measured", "agree"},
    "iterations": DataFrame}``; the DataFrame has ``memory_iteration`` and,
    for each of :data:`ROUND_FIELDS`, ``<field>_predicted``,
    ``<field>_measured`` and ``<field>_error`` (an outer join: an iteration
    only one side has keeps NaN on the other).
    """
    import pandas as pd

    totals: dict[str, dict[str, Any]] = {}
    for name, label, _kind in TOTALS:
        p, m = getattr(predicted, name), getattr(measured, name)
        err, rel = error_of(p, m)
        totals[name] = {"label": label, "predicted": _num(p), "measured": _num(m), "error": err,
                        "relative_error": rel}
    verdict = {"predicted": predicted.outcome, "measured": measured.outcome,
               "agree": predicted.outcome == measured.outcome and predicted.converged == measured.converged}
    pr = predicted.rounds[["memory_iteration", *ROUND_FIELDS]]
    mr = measured.rounds[["memory_iteration", *ROUND_FIELDS]]
    joined = pr.merge(mr, on="memory_iteration", how="outer", suffixes=("_predicted", "_measured"))
    joined = joined.sort_values("memory_iteration").reset_index(drop=True)
    columns = ["memory_iteration"]
    for f in ROUND_FIELDS:
        a = pd.to_numeric(joined[f"{f}_predicted"], errors="coerce")
        b = pd.to_numeric(joined[f"{f}_measured"], errors="coerce")
        joined[f"{f}_predicted"], joined[f"{f}_measured"] = a, b
        joined[f"{f}_error"] = a - b
        columns += [f"{f}_predicted", f"{f}_measured", f"{f}_error"]
    joined["memory_iteration"] = joined["memory_iteration"].astype(int)
    return {"totals": totals, "verdict": verdict, "iterations": joined[columns],
            "actions": compare_actions(predicted.actions, measured.actions)}


def compare_actions(predicted: list, measured: list) -> list[dict[str, Any]]:
    """Predicted and measured actions side by side: the k-th action of each kind on one row
    (time and value of each, None where one side has fewer), in time order."""
    kinds: list[str] = []
    for a in [*predicted, *measured]:
        if a.action not in kinds:
            kinds.append(a.action)
    rows = []
    for kind in kinds:
        p = [a for a in predicted if a.action == kind]
        m = [a for a in measured if a.action == kind]
        for k in range(max(len(p), len(m))):
            pa, ma = (p[k] if k < len(p) else None), (m[k] if k < len(m) else None)
            rows.append({"action": kind,
                         "predicted_time_s": pa.time_s if pa else None, "predicted_value": pa.value if pa else None,
                         "measured_time_s": ma.time_s if ma else None, "measured_value": ma.value if ma else None})
    rows.sort(key=lambda r: min(t for t in (r["predicted_time_s"], r["measured_time_s"]) if t is not None))
    return rows


def to_jsonable(comparison: dict[str, Any]) -> dict[str, Any]:
    """``compare()``'s dict with the DataFrame as a list of rows (NaN -> null)."""
    df = comparison["iterations"]
    rows = []
    for rec in df.to_dict(orient="records"):
        rows.append({k: (None if isinstance(v, float) and not math.isfinite(v) else
                         (int(v) if k == "memory_iteration" else float(v) if v is not None else None))
                     for k, v in rec.items()})
    return {"totals": comparison["totals"], "verdict": comparison["verdict"], "iterations": rows,
            "actions": comparison.get("actions", [])}


# ----------------------------------------------------------------- reading
def load_pair(first: str, second: str | None = None) -> tuple[Result, Result]:
    """(predicted, measured) from two result files, or from one ``{"predicted", "measured"}`` file."""
    if second is not None:
        return Result.from_json_file(first), Result.from_json_file(second)
    data = read_json(first)
    if not (isinstance(data, dict) and isinstance(data.get("predicted"), dict)
            and isinstance(data.get("measured"), dict)):
        raise UserError(f"{first}: with one file, it must be the output of 'simkvm migrate --predict --json' "
                        f"({{\"predicted\": ..., \"measured\": ...}}); otherwise give PREDICTED.json MEASURED.json")
    return Result.from_dict(data["predicted"]), Result.from_dict(data["measured"])


# ----------------------------------------------------------------- printing
def _fmt(kind: str, v: float | None) -> str:
    if v is None:
        return "-"
    if kind == "s":
        return fmt_duration(v)
    if kind == "B":
        return fmt_bytes(v)
    if kind == "r":
        return f"{v:.0f}"
    return f"{v:g}"


def _fmt_signed(kind: str, v: float | None) -> str:
    if v is None:
        return "-"
    return ("+" if v >= 0 else "-") + _fmt(kind, abs(v))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.0%}"


def format_comparison(comparison: dict[str, Any]) -> str:
    """The side-by-side tables ``simkvm compare`` prints."""
    v = comparison["verdict"]
    lines = [f"verdict: predicted {v['predicted']}, measured {v['measured']} "
             f"({'agree' if v['agree'] else 'DISAGREE'})", ""]
    header = f"{'':22} {'predicted':>12} {'measured':>12} {'error':>12} {'rel.':>7}"
    lines += [header, "-" * len(header)]
    kinds = {name: kind for name, _, kind in TOTALS}
    for name, row in comparison["totals"].items():
        k = kinds[name]
        lines.append(f"{row['label']:22} {_fmt(k, row['predicted']):>12} {_fmt(k, row['measured']):>12} "
                     f"{_fmt_signed(k, row['error']):>12} {_pct(row['relative_error']):>7}")
    df = comparison["iterations"]
    if len(df):
        lines += ["", "per iteration (predicted / measured):"]
        head = (f"{'iter':>4}  {'start':>17}  {'remaining':>21}  {'processed':>21}  {'dirty rate pages/s':>19}")
        lines += [head, "-" * len(head)]
        for rec in df.to_dict(orient="records"):
            def pair(field: str, kind: str, width: int) -> str:
                a, b = _num(rec[f"{field}_predicted"]), _num(rec[f"{field}_measured"])
                return f"{_fmt(kind, a) + ' / ' + _fmt(kind, b):>{width}}"

            lines.append(f"{int(rec['memory_iteration']):>4}  {pair('time_elapsed_s', 's', 17)}  "
                         f"{pair('memory_remaining', 'B', 21)}  {pair('memory_processed', 'B', 21)}  "
                         f"{pair('memory_dirty_rate', 'r', 19)}")
    actions = comparison.get("actions") or []
    if actions:
        lines += ["", "actions (predicted / measured):"]
        head = f"{'action':<15} {'time':>19}  {'value':>21}"
        lines += [head, "-" * len(head)]
        for r in actions:
            def value(v: Any, kind: str = r["action"]) -> str:
                if v is None:
                    return "-"
                return fmt_duration(v) if kind == "set_downtime" else (
                    fmt_bytes(v) + "/s" if kind == "set_bandwidth" else f"{v:g}")
            times = f"{_fmt('s', r['predicted_time_s'])} / {_fmt('s', r['measured_time_s'])}"
            values = f"{value(r['predicted_value'])} / {value(r['measured_value'])}"
            lines.append(f"{r['action']:<15} {times:>19}  {values:>21}")
    return "\n".join(lines)


# ----------------------------------------------------------------- plotting
def plot(predicted: Result, measured: Result, path: str) -> None:
    """Remaining RAM (solid) and disk (dashed) over time, both results on one figure in one unit."""
    from . import plot as plots

    plots.save(plots.comparison(predicted, measured), path)
