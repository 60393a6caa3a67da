"""One self-contained HTML page per answer (``--html FILE``): something to attach to a change ticket.

The page carries everything inline: the verdict, the tables, and the figures as
base64 PNG, so it opens anywhere without Jupyter, simkvm or network access. Each
command builds its page from the same pieces (:func:`verdict`, :func:`table`,
:func:`figure`, :func:`text`) and the same numbers it prints; this module only
lays them out.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .model.errors import UserError

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
     padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:.9em}
.verdict{padding:.6em 1em;border-radius:6px;font-weight:600;margin:1em 0}
.good{background:#e3f4e1;border-left:6px solid #2e7d32} .bad{background:#fdecea;border-left:6px solid #c62828}
.warn{background:#fff4e0;border-left:6px solid #ef6c00}
.verdict .why{font-weight:400;display:block;margin-top:.3em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em} th,td{padding:.25em .7em;border-bottom:1px solid #eee}
th{text-align:left;background:#f6f6f6} td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.5em 0}
"""


def verdict(headline: str, reason: str = "", *, tone: str = "good") -> str:
    """The answer first: a coloured box (``good``, ``warn`` or ``bad``) with the reason under it."""
    why = f'<span class="why">{html.escape(reason)}</span>' if reason else ""
    return f'<div class="verdict {tone}">{html.escape(headline)}{why}</div>'


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[bool] | None = None) -> str:
    """A table of already formatted cells (strings); ``numeric`` right-aligns columns."""
    numeric = numeric or [False] * len(header)
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=n" if num else ""}>{html.escape(str(cell))}</td>'
                         for cell, num in zip(row, numeric)) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(fig, alt: str) -> str:
    """A matplotlib figure as an inline PNG (then closed)."""
    from . import plot

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plot.plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def text(body: str) -> str:
    """Preformatted text, e.g. what the command prints."""
    return f"<pre>{html.escape(body)}</pre>"


def paragraph(body: str) -> str:
    return f"<p>{html.escape(body)}</p>"


def section(heading: str, *parts: str) -> str:
    return f"<h2>{html.escape(heading)}</h2>" + "".join(parts)


def details(summary: str, body: str) -> str:
    """Folded away: the full plan, raw tables."""
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def page(title: str, *parts: str, command: str | None = None) -> str:
    from . import __version__

    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = f"simkvm {__version__}, {when}" + (f": <code>{html.escape(command)}</code>" if command else "")
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><div class=meta>{meta}</div>" + "".join(parts) + "</body></html>\n")


def check_target(path: str | Path | None) -> None:
    """Before any work: a directory that does not exist is the user's mistake, said in one line."""
    if path is not None and not Path(path).parent.is_dir():
        raise UserError(f"--html {path}: directory {str(Path(path).parent)!r} does not exist")


def write(path: str | Path, content: str) -> None:
    check_target(path)
    Path(path).write_text(content, encoding="utf-8")


# ------------------------------------------------------------------ pages of the commands
def result_parts(result, *, with_figures: bool = True) -> list[str]:
    """A Result (predicted or measured): verdict, summary, rounds, timeline and bytes per iteration."""
    from . import plot
    from .report import VERDICT, format_result, round_rows

    what = "predicted" if result.source == "simulated" else "measured"
    tone = "good" if result.converged else ("warn" if result.outcome in ("postcopy", "paused") else "bad")
    parts = [verdict(f"{what}: {VERDICT.get(result.outcome, result.outcome.upper())}", result.reason, tone=tone),
             section("Times and bytes", text(format_result(result, max_rows=0)))]
    if result.round_records:
        header, rows = round_rows(result)
        parts.append(section("Per iteration (libvirt job-stat names)",
                             table(header, rows, numeric=[True] * len(header))))
    if with_figures and len(result.timeline):
        parts.append(section("Timeline", figure(plot.timeline(result), "remaining RAM and disk over time")))
    if with_figures and result.round_records:
        parts.append(figure(plot.bytes_per_iteration(result), "bytes sent and dirtied per iteration"))
    return parts


def plan_parts(plan_dict: dict[str, Any]) -> str:
    import yaml

    return details("the plan (YAML, SI units)", text(yaml.safe_dump(plan_dict, sort_keys=False)))


def predict_page(result, *, command: str | None = None) -> str:
    name = (result.plan or {}).get("name") or "plan"
    return page(f"simkvm predict: {name}", *result_parts(result), plan_parts(result.plan or {}), command=command)


def plan_page(plan, out: dict[str, Any], *, grid_figure=None, command: str | None = None) -> str:
    """The planner's answer: does the plan work as it is, what it would take, the grid, the odds."""
    from .model.units import fmt_bits, fmt_bytes, fmt_duration

    recs = out["recommendations"]
    as_planned = next((r for r in recs if r["setting"] == "plain pre-copy as planned"), None)
    if as_planned:
        box = verdict("works as planned", f"plain pre-copy: total {fmt_duration(as_planned['total_time_s'])}, "
                      f"downtime {fmt_duration(as_planned['downtime_s'])}", tone="good")
    elif recs:
        box = verdict(f"needs a change: {recs[0]['setting']}", f"best of {len(recs)} settings that work; "
                      f"risk: {recs[0]['risk']}", tone="warn")
    else:
        box = verdict("no setting tried meets the constraints", "; ".join(out.get("notes", [])), tone="bad")
    mb, md = out["min_bandwidth_Bps"], out["min_downtime_s"]
    facts = table(("question", "answer"), [
        (f"minimum bandwidth for {fmt_duration(plan.migration.max_downtime_s)} downtime",
         fmt_bits(mb) if mb else "none up to 800 Gbit/s"),
        (f"minimum downtime at {fmt_bits(plan.link.bandwidth_Bps)}", fmt_duration(md) if md else "none up to 2000 s"),
    ])
    bws = sorted({c["bandwidth_Bps"] for c in out["grid"]})
    dts = sorted({c["max_downtime_s"] for c in out["grid"]})
    cell = {(c["bandwidth_Bps"], c["max_downtime_s"]): c for c in out["grid"]}
    grid = table(["bandwidth \\ max downtime"] + [fmt_duration(d) for d in dts],
                 [[fmt_bits(b)] + [fmt_duration(cell[b, d]["total_time_s"]) if cell[b, d]["converged"] else "no"
                                   for d in dts] for b in bws], numeric=[False] + [True] * len(dts))
    rec_table = table(("#", "setting", "total time", "downtime", "sent", "risk"),
                      [(i, r["setting"], fmt_duration(r["total_time_s"]), fmt_duration(r["downtime_s"]),
                        fmt_bytes(r["bytes"]), r["risk"]) for i, r in enumerate(recs, 1)],
                      numeric=[True, False, True, True, True, False])
    parts = [box, section("What it takes", facts),
             section("Recommended settings (best first)", rec_table if recs else paragraph("none"),
                     *[paragraph("note: " + n) for n in out.get("notes", [])]),
             section("Verdict grid (total time; no: does not converge)", grid,
                     figure(grid_figure, "verdict grid") if grid_figure is not None else "")]
    if "monte_carlo" in out:
        parts.append(section("Uncertainty", paragraph(out["monte_carlo_summary"])))
    parts.append(plan_parts(plan.to_dict()))
    return page(f"simkvm plan: {plan.name}", *parts, command=command)


def compare_page(first, second, comparison_text: str, *, command: str | None = None) -> str:
    """Prediction against measurement: both verdicts, the error table as the command prints it, one figure."""
    from . import plot

    kinds = ["predicted" if r.source == "simulated" else "measured" for r in (first, second)]
    agree = first.outcome == second.outcome
    name = (first.plan or {}).get("name") or (second.plan or {}).get("name") or "migration"
    box = verdict(f"{kinds[0]} {first.outcome}, {kinds[1]} {second.outcome}: "
                  + ("they agree" if agree else "they disagree"), tone="good" if agree else "bad")
    parts = [box, section("Errors (predicted - measured)", text(comparison_text)),
             section("Timeline", figure(plot.comparison(first, second), "both results over time")),
             section(f"{kinds[0].capitalize()} result", *result_parts(first, with_figures=False)),
             section(f"{kinds[1].capitalize()} result", *result_parts(second, with_figures=False))]
    return page(f"simkvm compare: {name}", *parts, command=command)
