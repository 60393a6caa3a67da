"""simkvm.compare: totals and per-iteration errors of hand-made results with known numbers.

Oracle: the errors are computed here independently (predicted - measured,
relative to measured), not read back from compare().
"""
from __future__ import annotations

import json
import math

import pytest

from simkvm.cli import main
from simkvm.compare import compare, format_comparison, load_pair, to_jsonable
from simkvm.model.errors import UserError
from simkvm.model.result import ROUND_COLUMNS, Measurement, Result, TimelinePoint

MiB = 2**20


def _row(i: int, t: float, remaining: float, processed: float, rate: float) -> dict:
    row = {c: None for c in ROUND_COLUMNS}
    row.update(memory_iteration=i, time_elapsed_s=t, memory_remaining=remaining, memory_processed=processed,
               memory_dirty_rate=rate, duration_s=1.0, sent_bytes=0.0)
    return row


@pytest.fixture
def pair() -> tuple[Result, Result]:
    predicted = Result(
        converged=True, reason="p", outcome="converged", source="simulated", total_time_s=10.0, downtime_s=0.2,
        service_interruption_s=0.25, ram_transferred_bytes=600 * MiB, disk_transferred_bytes=256 * MiB,
        total_transferred_bytes=856 * MiB, iterations=3,
        round_records=[_row(1, 5.0, 512 * MiB, 0, 0), _row(2, 8.0, 60 * MiB, 520 * MiB, 5000),
                       _row(3, 9.6, 10 * MiB, 590 * MiB, 5200)],
        timeline_records=[TimelinePoint(0.0, "prepare", 0, None, None, None, None),
                          TimelinePoint(5.0, "precopy", 1, 512 * MiB, 0, 0, 256 * MiB),
                          TimelinePoint(10.0, "done", 3, 0, 600 * MiB, 0, 256 * MiB)],
        plan={"name": "hand-made"},
    )
    measured = Result(
        converged=True, reason="m", outcome="converged", source="measured", total_time_s=12.5, downtime_s=0.05,
        service_interruption_s=0.05, ram_transferred_bytes=500 * MiB, disk_transferred_bytes=256 * MiB,
        total_transferred_bytes=756 * MiB, iterations=4,
        round_records=[_row(1, 6.0, 500 * MiB, 1 * MiB, 0), _row(2, 10.0, 80 * MiB, 400 * MiB, 4000),
                       _row(3, 11.0, 20 * MiB, 470 * MiB, 4100), _row(4, 12.4, 5 * MiB, 490 * MiB, 4100)],
        timeline_records=[TimelinePoint(0.0, "prepare", 0, None, None, None, None),
                          TimelinePoint(6.0, "precopy", 1, 500 * MiB, 1, 0, 256 * MiB),
                          TimelinePoint(12.5, "done", 4, 0, 500 * MiB, 0, 256 * MiB)],
    )
    return predicted, measured


def test_totals_have_independent_errors(pair):
    predicted, measured = pair
    c = compare(predicted, measured)
    tot = c["totals"]
    assert tot["total_time_s"]["error"] == pytest.approx(10.0 - 12.5)
    assert tot["total_time_s"]["relative_error"] == pytest.approx(-2.5 / 12.5)
    assert tot["downtime_s"]["error"] == pytest.approx(0.15)
    assert tot["downtime_s"]["relative_error"] == pytest.approx(3.0)
    assert tot["ram_transferred_bytes"]["relative_error"] == pytest.approx(0.2)
    assert tot["disk_transferred_bytes"]["error"] == 0
    assert tot["iterations"]["error"] == -1
    assert tot["iterations"]["relative_error"] == pytest.approx(-0.25)
    # a measured zero has no relative error
    assert tot["disk_mirror_time_s"]["measured"] == 0 and tot["disk_mirror_time_s"]["relative_error"] is None
    assert c["verdict"] == {"predicted": "converged", "measured": "converged", "agree": True}


def test_iterations_join_on_memory_iteration(pair):
    predicted, measured = pair
    df = compare(predicted, measured)["iterations"]
    assert list(df["memory_iteration"]) == [1, 2, 3, 4]  # outer join: 4 only measured
    row2 = df[df.memory_iteration == 2].iloc[0]
    assert row2["time_elapsed_s_error"] == pytest.approx(-2.0)
    assert row2["memory_remaining_error"] == pytest.approx(-20 * MiB)
    assert row2["memory_dirty_rate_error"] == pytest.approx(1000)
    row4 = df[df.memory_iteration == 4].iloc[0]
    assert math.isnan(row4["memory_remaining_predicted"]) and row4["memory_remaining_measured"] == 5 * MiB


def test_disagreeing_verdicts_are_flagged(pair):
    predicted, measured = pair
    measured.converged, measured.outcome = False, "not_converged"
    c = compare(predicted, measured)
    assert c["verdict"]["agree"] is False
    assert "DISAGREE" in format_comparison(c)


def test_human_table_and_json(pair, tmp_path, capsys):
    predicted, measured = pair
    text = format_comparison(compare(predicted, measured))
    assert "total time" in text and "-2.5 s" in text and "-20%" in text
    data = to_jsonable(compare(predicted, measured))
    json.dumps(data)  # serialisable: NaN became null
    assert data["iterations"][3]["memory_remaining_predicted"] is None


def test_cli_reads_two_files_or_one_combined_and_plots(pair, tmp_path, capsys):
    predicted, measured = pair
    p, m, both = tmp_path / "p.json", tmp_path / "m.json", tmp_path / "both.json"
    p.write_text(predicted.to_json())
    m.write_text(measured.to_json())
    both.write_text(json.dumps({"predicted": predicted.to_dict(), "measured": measured.to_dict()}))
    png = tmp_path / "cmp.png"
    assert main(["compare", str(p), str(m), "--plot", str(png)]) == 0
    assert png.stat().st_size > 10_000
    out_two = capsys.readouterr().out
    assert main(["compare", str(both)]) == 0
    assert capsys.readouterr().out == out_two
    assert main(["compare", str(both), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["iterations"]["measured"] == 4


def test_cli_errors_are_one_line(tmp_path, capsys, pair):
    assert main(["compare", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    single = tmp_path / "single.json"
    single.write_text(pair[0].to_json())
    assert main(["compare", str(single)]) == 2
    assert "PREDICTED.json MEASURED.json" in capsys.readouterr().err
    with pytest.raises(UserError):
        load_pair(str(single))


def test_what_code_acts_on_is_a_named_field_and_old_result_files_still_read():
    """vm_location, the probe flag and the downtime bound are Measurement fields (read by the CLI, the
    drain, calibration), written for measured results only; a file written when they were meta keys
    (campaigns v1-v5) is read into the same fields."""
    measured = Result(converged=True, reason="m", source="measured",
                      measurement=Measurement("running on the destination (b)", True, False),
                      meta={"service_interruption": "measured: ICMP echoes"})
    back = Result.from_dict(json.loads(measured.to_json()))
    assert back.measurement == measured.measurement
    old = measured.to_dict()
    del old["measurement"]
    old["meta"] = {"vm_location": "running on the source", "service_interruption": "measured: ICMP echoes",
                   "downtime_bound_exceeded": True}
    assert Result.from_dict(old).measurement == Measurement("running on the source", True, True)
    old["meta"]["service_interruption"] = "equals the measured downtime: no network measurement yet"
    assert not Result.from_dict(old).measurement.service_interruption_measured
    assert Result(converged=True, reason="p").to_dict()["measurement"] is None  # one schema: a prediction carries the key, null
    with pytest.raises(UserError, match="measurement.service_interruption_measured must be true or false"):
        Result.from_dict({**measured.to_dict(), "measurement": {"service_interruption_measured": "yes"}})
