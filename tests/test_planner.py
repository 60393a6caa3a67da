"""`simkvm plan`: the grid, the searches and Monte Carlo against direct simulations."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from simkvm import Plan, planner, simulate

PLAN = {
    "vm": {"memory": "4GiB", "zero_fraction": 0.1},
    "workload": {"memory": {"model": "uniform", "dirty_rate": "150MiB/s", "wss": "1GiB"}},
    "link": {"bandwidth": "1Gbit/s"},
    "migration": {"max_downtime": "300ms"},
}


def test_grid_cells_agree_with_individual_simulations():
    plan = Plan.from_dict(PLAN)
    bws, dts = [62.5e6, 125e6, 1.25e9], [0.05, 0.3, 1.0]
    cells = planner.grid(plan, bws, dts)
    assert len(cells) == 9
    for cell in cells:
        r = simulate(plan.with_(**{"link.bandwidth": cell["bandwidth_Bps"],
                                     "migration.max_downtime": cell["max_downtime_s"]}))
        assert cell["converged"] == r.converged
        if r.converged:
            assert cell["total_time_s"] == pytest.approx(r.total_time_s)


def test_min_bandwidth_converges_and_5_percent_less_does_not():
    plan = Plan.from_dict(PLAN)
    bw = planner.min_bandwidth_Bps(plan)
    assert bw is not None
    assert simulate(plan.with_(**{"link.bandwidth": bw})).converged
    assert not simulate(plan.with_(**{"link.bandwidth": bw * 0.95})).converged


def test_min_downtime_converges_and_5_percent_less_does_not():
    plan = Plan.from_dict(PLAN).with_(**{"workload.memory.wss": "4GiB", "workload.memory.dirty_rate": "400MiB/s"})
    dt = planner.min_downtime_s(plan)
    assert dt is not None
    assert simulate(plan.with_(**{"migration.max_downtime": dt})).converged
    assert not simulate(plan.with_(**{"migration.max_downtime": dt * 0.95})).converged


def test_monte_carlo_with_zero_spread_is_the_point_prediction():
    plan = Plan.from_dict(PLAN)
    mc = planner.monte_carlo(plan, 0.0, samples=20)
    point = simulate(plan)
    assert mc.converged_probability == (1.0 if point.converged else 0.0)
    if point.converged:
        for v in mc.total_time_percentiles_s.values():
            assert v == pytest.approx(point.total_time_s)


def test_monte_carlo_spread_near_the_boundary_is_uncertain():
    plan = Plan.from_dict(PLAN)
    bw = planner.min_bandwidth_Bps(plan)
    mc = planner.monte_carlo(plan.with_(**{"link.bandwidth": bw * 1.02}), 0.2, samples=60)
    assert 0.0 < mc.converged_probability < 1.0


def test_plan_cli_json(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(PLAN))
    out = subprocess.run([sys.executable, "-m", "simkvm", "plan", str(path), "--json", "--bandwidths",
                          "500Mbit/s,1Gbit/s,10Gbit/s", "--downtimes", "100ms,300ms"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in ("min_bandwidth_Bps", "min_downtime_s", "grid", "recommendations"):
        assert key in data
    assert len(data["grid"]) == 6
