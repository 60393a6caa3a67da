"""Repeatability of the testbed: one real run scored as the prediction of its repeat (issue 11).

Oracles: hand-counted pairs, and the bound itself checked against the best constant predictor of
counts drawn from known distributions.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simkvm.validation.metrics import repeat_agreement

ROOT = Path(__file__).resolve().parents[1]


def _rows(runs):
    """runs: (scenario, converged, iterations, downtime_s, total_time_s)"""
    return pd.DataFrame([{"scenario": s, "measured_converged": c, "measured_iterations": i,
                          "measured_downtime_s": d, "measured_total_time_s": t} for s, c, i, d, t in runs])


def test_pairs_are_scored_with_the_reports_rules():
    r = repeat_agreement(_rows([
        ("a", True, 4, 0.040, 10.0), ("a", True, 4, 0.065, 11.0),   # same count; 25 ms apart: within 30 ms
        ("b", True, 6, 0.100, 20.0), ("b", True, 7, 0.140, 20.0),   # one apart; 40 ms > max(30 ms, 25 ms|35 ms)
        ("c", True, 3, 0.030, 5.0), ("c", False, 31, 0.0, 60.0),    # verdicts disagree: only the verdict scored
        ("d", True, 9, 0.050, 8.0),                                  # ran once: no pair
    ]))
    assert r["scenarios"] == 3 and r["ordered_pairs"] == 6 and r["compared_pairs"] == 4
    assert r["verdict_agree_share"] == pytest.approx(4 / 6)
    assert r["iterations_exact_share"] == pytest.approx(2 / 4)
    assert r["iterations_within_one_share"] == 1.0
    assert r["iterations_exact_ceiling"] == pytest.approx(math.sqrt(0.5))
    # a: |25| <= 30 both ways; b: |40| > max(30, 0.25 * 140 = 35) and > max(30, 25)
    assert r["downtime_within_tolerance_share"] == pytest.approx(2 / 4)
    rel = sorted([1 / 11, 1 / 10, 0.0, 0.0])
    assert r["total_time_median_rel_diff"] == pytest.approx((rel[1] + rel[2]) / 2)


def test_best_constant_downtime_is_the_largest_overlap_of_the_runs_tolerance_intervals():
    """Hand-worked: runs at 100, 110 and 200 ms accept [70, 130], [80, 140] and [150, 250] ms; no single
    value lies in all three, 100 lies in two: 2 of 3. A pair scores 2 of 6 (only 100 <-> 110 agree), so
    the pairs understate what a centred prediction reaches."""
    r = repeat_agreement(_rows([("a", True, 4, 0.100, 10.0), ("a", True, 4, 0.110, 10.0),
                                ("a", True, 4, 0.200, 10.0), ("b", True, 4, 0.050, 10.0),
                                ("b", False, 31, 0.0, 60.0)]))  # b: one converged run, no constant scored
    assert r["downtime_within_best_constant_share"] == pytest.approx(2 / 3)
    assert r["downtime_within_tolerance_share"] == pytest.approx(2 / 6)
    # brute force over a fine grid agrees on the same runs
    ms = [0.100, 0.110, 0.200]
    grid = np.arange(0.0, 0.3, 0.0005)
    brute = max(sum(abs(x - m) <= max(0.030, 0.25 * m) for m in ms) for x in grid)
    assert brute == 2


def test_no_repeats_gives_no_shares():
    r = repeat_agreement(_rows([("a", True, 4, 0.04, 10.0), ("b", True, 5, 0.05, 12.0)]))
    assert r["ordered_pairs"] == 0 and r["iterations_exact_share"] is None and r["iterations_exact_ceiling"] is None
    assert r["downtime_within_best_constant_share"] is None


@pytest.mark.parametrize("seed", range(5))
def test_ceiling_bounds_the_best_constant_prediction(seed):
    """Counts drawn from known per-scenario distributions: the best one-number-per-scenario predictor
    (each distribution's mode) is exact with probability E[max p]; the ceiling from repeat pairs must
    not fall below it (up to the sampling error of the pairs)."""
    rng = np.random.default_rng(seed)
    runs, best = [], []
    for k in range(300):
        p = rng.dirichlet(np.full(rng.integers(1, 5), rng.uniform(0.3, 3.0)))
        best.append(p.max())
        for _ in range(6):
            runs.append((f"s{k}", True, int(rng.choice(len(p), p=p)), 0.05, 10.0))
    r = repeat_agreement(_rows(runs))
    assert r["iterations_exact_ceiling"] >= np.mean(best) - 0.03
    assert r["iterations_exact_share"] <= np.mean(best) + 0.03  # and the pairs' own share is no bound from above


def test_cli_pools_directories_and_rejects_a_non_campaign(tmp_path):
    dirs = [str(ROOT / "data" / "validation" / c) for c in ("campaign-v6", "campaign-v7")]
    out = subprocess.run([sys.executable, "-m", "simkvm", "campaign", "repeats", "--json", *dirs],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    import json

    pooled = json.loads(out.stdout)
    each = [repeat_agreement(pd.read_csv(Path(d) / "runs.csv")) for d in dirs]
    assert pooled["ordered_pairs"] == sum(e["ordered_pairs"] for e in each) > 0  # cal-idle-32 of v6 and v7 not mixed
    bad = subprocess.run([sys.executable, "-m", "simkvm", "campaign", "repeats", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_repeat_campaign_draws_from_the_validation_space_and_repeats_each_scenario():
    """campaign-r1 is v8's declared design with its own seed, each drawn scenario three times, and its
    committed expansion is what the seed gives."""
    import yaml

    from simkvm.validation.design import expanded_text
    from simkvm.validation.spec import load_campaign

    r1, v8 = (ROOT / "experiments" / "validation" / f"campaign-{n}.yaml" for n in ("r1", "v8"))
    a, b = (yaml.safe_load(p.read_text()) for p in (r1, v8))
    assert a["design"]["dimensions"] == b["design"]["dimensions"] and a["defaults"] == b["defaults"]
    assert a["design"]["seed"] != b["design"]["seed"]
    assert yaml.safe_load(expanded_text(str(r1.relative_to(ROOT)))) == \
        yaml.safe_load(r1.with_name("campaign-r1.expanded.yaml").read_text())
    c = load_campaign(r1)
    assert len(c.scenarios) == 12 and all(s.repeats == 3 for s in c.scenarios) and len(c.runs()) == 36
