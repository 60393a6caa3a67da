"""experiments/stop_cost.py: a stop's normal pages from QEMU's polls, and the line through the stops."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from experiment_scripts import load

ROOT = Path(__file__).resolve().parents[1]


def _module():
    return load("stop_cost")


def _measured(last_poll: float, end: float) -> dict:
    return {"meta": {"completed_stats": {"memory_processed": end}},
            "timeline": [{"phase": "precopy", "memory_processed": 1.0},
                         {"phase": "precopy", "memory_processed": last_poll},
                         {"phase": "switchover", "memory_processed": end}]}


def test_the_stops_pages_are_what_went_out_after_the_last_precopy_poll():
    sc = _module()
    assert sc.stop_normal_pages(_measured(4096 * 10, 4096 * 510)) == 500
    assert sc.stop_normal_pages({"meta": {}, "timeline": []}) is None


def test_idle_stops_are_fitted_by_their_line_and_busy_or_loaded_runs_are_left_out(tmp_path):
    """Oracle: stops whose downtime is 12 ms + 13 us per page exactly give back 12 ms and 13 us; a
    RAM writer, a loaded run and a small stop on the same directory do not enter the fit."""
    import pandas as pd

    sc = _module()
    (tmp_path / "runs").mkdir()
    rows = []
    for i, (pages, rate, load_1m) in enumerate([(3000, 0, 0.5), (9000, 0, 0.7), (40000, 0, 1.0), (20000, 8e6, 0.5),
                                             (20000, 0, 3.0), (500, 0, 0.5)]):
        rid = f"r{i}"
        rows.append({"run_id": rid, "dirty_rate_Bps": rate, "disk_write_rate_Bps": 0.0, "disk_bytes": 32 * 2**20,
                     "measured_converged": True, "load_1m": load_1m, "measured_downtime_s": 0.012 + 13e-6 * pages,
                     "measured_iterations": 5 if rate else 3})
        (tmp_path / "runs" / f"{rid}.measured.json").write_text(json.dumps(_measured(4096.0, 4096.0 * (1 + pages))))
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    points = sc.stops(tmp_path, max_load=1.5, min_pages=2000)
    assert sorted(p for _r, p, _d in points) == [3000, 9000, 40000]
    fixed, cost = sc.fit(points)
    assert fixed == pytest.approx(0.012) and cost == pytest.approx(13e-6)
    # --writers: the one RAM writer that synced three times or more, and nothing idle
    assert [p for _r, p, _d in sc.stops(tmp_path, max_load=1.5, min_pages=2000, writers=True)] == [20000]
