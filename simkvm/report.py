"""Human-readable text for a Result: verdict, times, bytes, and the per-iteration table.

Used for predictions and measurements alike (the schema is the same).
"""
from __future__ import annotations

from .model.result import Result
from .model.units import fmt_bytes, fmt_duration, fmt_rate

_VERDICT = {
    "converged": "CONVERGES",
    "postcopy": "CONVERGES via post-copy",
    "paused": "FORCED by pausing the guest",
    "aborted": "ABORTED",
    "not_converged": "DOES NOT CONVERGE",
    "refused": "REFUSED",
}


def format_result(result: Result, *, title: str | None = None, max_rows: int = 40) -> str:
    what = "predicted" if result.source == "simulated" else "measured"
    lines = []
    if title:
        lines.append(title)
    lines.append(f"verdict ({what}): {_VERDICT.get(result.outcome, result.outcome.upper())}")
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
    if result.round_records:
        lines.append("")
        lines.append(format_rounds(result, max_rows=max_rows))
    return "\n".join(lines)


def format_rounds(result: Result, *, max_rows: int = 40) -> str:
    header = f"{'iter':>4} {'start':>9} {'duration':>9} {'remaining':>11} {'sent':>11} {'dirtied':>11} " \
             f"{'dirty rate':>12} {'bandwidth':>12} {'threshold':>11}"
    out = [header]
    records = result.round_records
    shown = records if len(records) <= max_rows else records[: max_rows // 2] + [None] + records[-max_rows // 2:]
    for r in shown:
        if r is None:
            out.append(f"{'...':>4}")
            continue
        rate = r.get("memory_dirty_rate") or 0.0
        out.append(
            f"{r['memory_iteration']:>4} {fmt_duration(r['time_elapsed_s']):>9} {fmt_duration(r.get('duration_s') or 0):>9} "
            f"{fmt_bytes(r['memory_remaining']):>11} {fmt_bytes(r.get('sent_bytes') or 0):>11} "
            f"{fmt_bytes(r.get('dirtied_bytes') or 0):>11} {rate:>8,.0f} p/s {fmt_rate(r.get('memory_bps') or 0):>12} "
            f"{fmt_bytes(r.get('threshold_bytes') or 0):>11}"
        )
    return "\n".join(out)
