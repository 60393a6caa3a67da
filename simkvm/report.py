"""Human-readable text for a Result: verdict, times, bytes, and the per-iteration table.

Used for predictions and measurements alike (the schema is the same).
"""
from __future__ import annotations

from .model.result import Result
from .model.units import fmt_bytes, fmt_duration, fmt_rate

VERDICT = {
    "converged": "CONVERGES",
    "postcopy": "CONVERGES via post-copy",
    "paused": "FORCED by pausing the guest",
    "aborted": "ABORTED",
    "not_converged": "DOES NOT CONVERGE",
    "refused": "REFUSED",
}


def format_result(result: Result, *, title: str | None = None, max_rows: int = 40, rounds: bool = True) -> str:
    what = "predicted" if result.source == "simulated" else "measured"
    lines = []
    if title:
        lines.append(title)
    lines.append(f"verdict ({what}): {VERDICT.get(result.outcome, result.outcome.upper())}")
    lines.append(f"  {result.reason}")
    lines.append("")
    rows = [
        ("total time", fmt_duration(result.total_time_s)),
        ("  preparation + setup", fmt_duration(result.setup_time_s)),
        ("  disk mirror until ready", fmt_duration(result.disk_mirror_time_s)),
        ("  RAM pre-copy", fmt_duration(result.precopy_time_s)),
        ("downtime", fmt_duration(result.downtime_s)),
        ("service interruption", fmt_duration(result.service_interruption_s)
         + (f" (network {fmt_duration(result.network_convergence_s)})" if result.converged else "")),
        ("RAM sent", fmt_bytes(result.ram_transferred_bytes)
         + f"  ({result.normal_pages:,.0f} normal + {result.zero_pages:,.0f} zero pages)"),
        ("disk copied", fmt_bytes(result.disk_transferred_bytes)),
        ("iterations", f"{result.iterations}  (QEMU dirty-sync-count)"),
    ]
    if result.postcopy_time_s:
        rows.append(("post-copy phase", fmt_duration(result.postcopy_time_s)))
    if result.guest_cpu_lost_s:
        rows.append(("guest CPU lost to throttling", fmt_duration(result.guest_cpu_lost_s)))
    width = max(len(k) for k, _ in rows)
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    if result.actions:
        lines.append("")
        lines.append("actions:")
        for a in result.actions:
            value = "" if a.value is None else (
                fmt_duration(a.value) if a.action == "set_downtime" else f"{a.value:g}")
            lines.append(f"  {fmt_duration(a.time_s):>9}  {a.action} {value}")
    if rounds and result.round_records:
        lines.append("")
        lines.append(format_rounds(result, max_rows=max_rows))
    return "\n".join(lines)


ROUND_HEADER = ("iter", "start", "duration", "remaining", "sent", "dirtied", "dirty rate", "bandwidth", "threshold")


def round_rows(result: Result) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The per-iteration table as formatted cells (the text table and the HTML page share them)."""
    rows: list[tuple[str, ...]] = []
    for r in result.round_records:
        rate = r.get("memory_dirty_rate") or 0.0
        rows.append((
            str(r["memory_iteration"]), fmt_duration(r["time_elapsed_s"]), fmt_duration(r.get("duration_s") or 0),
            fmt_bytes(r["memory_remaining"]), fmt_bytes(r.get("sent_bytes") or 0),
            fmt_bytes(r.get("dirtied_bytes") or 0), f"{rate:,.0f} p/s", fmt_rate(r.get("memory_bps") or 0),
            fmt_bytes(r.get("threshold_bytes") or 0)))
    return ROUND_HEADER, rows


def format_rounds(result: Result, *, max_rows: int = 40) -> str:
    widths = (4, 9, 9, 11, 11, 11, 12, 12, 11)
    header, rows = round_rows(result)
    out = [" ".join(f"{h:>{w}}" for h, w in zip(header, widths))]
    shown: list[tuple[str, ...] | None] = list(rows)
    if len(rows) > max_rows:
        shown = shown[: max_rows // 2] + [None] + shown[-max_rows // 2:]
    for row in shown:
        out.append(f"{'...':>4}" if row is None else " ".join(f"{c:>{w}}" for c, w in zip(row, widths)))
    return "\n".join(out)
