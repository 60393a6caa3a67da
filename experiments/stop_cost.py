"""What a stop carrying never-sent pages costs, read off QEMU's own polls.

Why: with a generous limit the switchover comes during the first pass, and the stop sends the part
of RAM the walk has not reached; the model charges each such normal page the wire plus the
destination's first write (``host.first_touch_s``, simkvm/sim/wire.py). The executor polls the
job's transferred bytes every 50 ms, so the normal pages a stop carried are the transferred bytes
from the last pre-copy poll to the job's end, per 4 KiB (zero pages add a few bytes each). This
fits downtime = fixed + cost x pages over the idle runs (no RAM or disk writer, disk <= 64 MiB) of
campaign directories, at a 1-minute load below ``--max-load`` and with more than ``--min-pages``
such pages (README, the v26 / q10s round's model work):

    python experiments/stop_cost.py data/validation/campaign-q10{,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r}

``--writers --min-pages 1000`` fits the RAM writers' stops after the first pass instead, which re-send
pages the destination already has (README, the v27 / q10t round's model work).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

PAGE = 4096


def stop_normal_pages(measured: dict[str, Any]) -> float | None:
    """Normal pages the stop sent: transferred bytes after the last pre-copy poll, per page (None:
    no poll or no completed stats)."""
    stats = (measured.get("meta") or {}).get("completed_stats") or {}
    polls = [t for t in measured.get("timeline") or []
             if t.get("phase") == "precopy" and t.get("memory_processed") is not None]
    if not polls or stats.get("memory_processed") is None:
        return None
    return (float(stats["memory_processed"]) - float(polls[-1]["memory_processed"])) / PAGE


def stops(directory: Path, max_load: float, min_pages: float,
          writers: bool = False) -> list[tuple[str, float, float]]:
    """(run, stop's normal pages, downtime in s) of a campaign directory's converged idle runs; with
    ``writers``, of its RAM writers' runs that synced three times or more instead (no disk writer),
    whose stops re-send pages the destination already holds."""
    import pandas as pd

    rows = pd.read_csv(directory / "runs.csv")
    kind = ((rows["dirty_rate_Bps"] > 0) & (rows["measured_iterations"] >= 3) if writers
            else rows["dirty_rate_Bps"] == 0)
    chosen = rows[kind & (rows["disk_write_rate_Bps"].fillna(0) == 0)
                & (rows["disk_bytes"] <= 64 * 2**20) & (rows["measured_converged"] == True)  # noqa: E712
                & (rows["load_1m"] < max_load)]
    out = []
    for rid, downtime in zip(chosen["run_id"], chosen["measured_downtime_s"]):
        pages = stop_normal_pages(json.loads((directory / "runs" / f"{rid}.measured.json").read_text()))
        if pages is not None and pages > min_pages:
            out.append((f"{directory.name}/{rid}", pages, float(downtime)))
    return out


def fit(points: list[tuple[str, float, float]]) -> tuple[float, float]:
    """Least squares downtime = fixed + cost x pages: (fixed s, cost s per page)."""
    pages = np.array([p for _r, p, _d in points])
    downtime = np.array([d for _r, _p, d in points])
    cost, fixed = np.polyfit(pages, downtime, 1)
    return float(fixed), float(cost)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("directories", nargs="+", type=Path, help="campaign directories")
    ap.add_argument("--max-load", type=float, default=1.5, help="1-minute load at the run's start below this")
    ap.add_argument("--min-pages", type=float, default=2000, help="stops carrying more normal pages than this")
    ap.add_argument("--writers", action="store_true", help="the RAM writers' stops after three or more syncs "
                    "(pages re-sent) instead of the idle runs'")
    args = ap.parse_args()
    kind = "writer" if args.writers else "idle"
    points = [p for d in args.directories for p in stops(d, args.max_load, args.min_pages, args.writers)]
    if len(points) < 3:
        sys.exit(f"fewer than 3 {kind} stops to fit: give more campaign directories")
    fixed, cost = fit(points)
    print(f"{len(points)} {kind} stops, {min(p for _r, p, _d in points):,.0f}-{max(p for _r, p, _d in points):,.0f} "
          f"normal pages: downtime = {1e3 * fixed:.1f} ms + {1e6 * cost:.1f} us per page")


if __name__ == "__main__":
    main()
