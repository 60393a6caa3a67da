"""experiments/mirror_trace.py's reading of QEMU's mirror_* trace lines, on a trace written by hand."""
from __future__ import annotations

from pathlib import Path

import pytest
from experiment_scripts import load

ROOT = Path(__file__).resolve().parents[1]


def _module():
    return load("mirror_trace")


def _line(t: float, event: str, args: str) -> str:
    return f"4242@{t:.6f}:{event} s 0x55 {args}"


def test_sizes_latencies_stalls_and_ready_from_a_hand_written_trace():
    mt = _module()
    t0 = 1000.0
    lines = [
        "2026-12-02 15:00:36.150+0000: starting up libvirt",  # not a trace line: skipped
        _line(t0, "mirror_start", "opaque (nil)").replace("s 0x55 ", "bs 0x1 s 0x55 "),
        _line(t0 + 0.001, "mirror_one_iteration", "offset 0 bytes 1048576"),
        _line(t0 + 0.002, "mirror_one_iteration", "offset 1048576 bytes 65536"),
        _line(t0 + 0.003, "mirror_one_iteration", "offset 1114112 bytes 65536"),
        _line(t0 + 0.004, "mirror_iteration_done", "offset 1048576 bytes 65536 ret 0"),  # 2 ms
        _line(t0 + 0.044, "mirror_iteration_done", "offset 0 bytes 1048576 ret 0"),  # 43 ms, after a 40 ms gap
        _line(t0 + 0.045, "mirror_iteration_done", "offset 1114112 bytes 65536 ret 0"),  # 42 ms
        _line(t0 + 0.046, "mirror_before_flush", ""),
        _line(t0 + 0.050, "mirror_one_iteration", "offset 0 bytes 65536"),  # the same offset again
        _line(t0 + 0.051, "mirror_iteration_done", "offset 0 bytes 65536 ret 0"),  # 1 ms
    ]
    s = mt.summarize(mt.parse(lines))
    assert s.ops == 4 and s.op_sizes == {65536: 3, 1048576: 1}
    lat_ms = sorted([2, 43, 42, 1])
    assert s.latency_max_s == pytest.approx(0.043)
    assert s.latency_p50_s == pytest.approx((lat_ms[1] + lat_ms[2]) / 2 / 1e3)
    assert s.stalls == 1 and s.stall_total_s == pytest.approx(0.040) and s.stall_median_s == pytest.approx(0.040)
    assert s.ready_s == pytest.approx(0.046) and s.span_s == pytest.approx(0.051)


def test_no_trace_lines_is_a_clear_error():
    mt = _module()
    with pytest.raises(ValueError, match="switched on"):
        mt.summarize(mt.parse(["no trace here"]))


def test_switchover_spans_from_the_stop_on_a_hand_written_trace():
    """--switchover: times from the VM's stop to the last mirror copy, the job's end and the
    migration's; the stalls between completions after the stop; no stop line is a clear error."""
    mt = _module()
    t0 = 2000.0
    lines = [
        _line(t0, "mirror_one_iteration", "offset 0 bytes 65536"),  # before the stop: not counted
        f"4242@{t0 + 0.010:.6f}:vm_state_notify running 0 reason 7 (finish-migrate)",
        _line(t0 + 0.012, "mirror_one_iteration", "offset 65536 bytes 65536"),
        _line(t0 + 0.013, "mirror_iteration_done", "offset 0 bytes 65536 ret 0"),
        _line(t0 + 0.055, "mirror_iteration_done", "offset 65536 bytes 65536 ret 0"),  # a 42 ms stall
        f"4242@{t0 + 0.060:.6f}:job_state_transition job 0x1 (ret: 0) attempting allowed transition "
        "(pending-->concluded)",
        f"4242@{t0 + 0.061:.6f}:migrate_set_state new state device",
        f"4242@{t0 + 0.062:.6f}:savevm_state_complete_precopy ",
        f"4242@{t0 + 0.100:.6f}:migrate_set_state new state completed",
    ]
    s = mt.summarize_switchover(mt.parse_any(lines))
    assert s.ops_after_stop == 1 and s.stalls_after_stop == 1
    assert s.stop_to_last_copy_s == pytest.approx(0.045)
    assert s.stop_to_job_done_s == pytest.approx(0.050)
    assert s.stop_to_ram_complete_s == pytest.approx(0.052)
    assert s.stop_to_completed_s == pytest.approx(0.090)
    with pytest.raises(ValueError, match="stop"):
        mt.summarize_switchover(mt.parse_any(lines[:1]))


def _paced_trace(t0: float, per_window: list[int], dirty_bytes: int) -> list[str]:
    """A READY job, then per_window completions in each 100 ms bin, a dirty count, the VM's stop."""
    lines = [f"4242@{t0:.6f}:job_state_transition job 0x55 (ret: 0) attempting allowed transition (running-->ready)"]
    for k, n in enumerate(per_window):
        lines += [_line(t0 + 0.1 * k + 0.001 + 0.09 * i / n, "mirror_iteration_done", f"offset {i * 65536} ret 0")
                  for i in range(n)]
    lines.append(_line(t0 + 0.1 * len(per_window) - 0.002, "mirror_before_sleep",
                       f"dirty count {dirty_bytes} synced 0 delay 0ns"))
    lines.append(f"4242@{t0 + 0.1 * len(per_window):.6f}:vm_state_notify running 0 reason 7 (finish-migrate)")
    return lines


def test_pace_counts_the_jobs_completions_per_100_ms_from_ready_to_the_stop():
    mt = _module()
    p = mt.summarize_pace(mt.parse_any(_paced_trace(3000.0, [16, 16, 40, 16, 3], 200 * 65536)))
    assert p.windows == 5 and p.ram_phase_s == pytest.approx(0.5)
    assert p.ops_per_window_median == 16 and p.paced_share == pytest.approx(4 / 5)
    assert p.granules_at_stop == 200
    with pytest.raises(ValueError, match="--switchover"):
        mt.summarize_pace(mt.parse_any(_paced_trace(3000.0, [16], 0)[:-1]))  # no stop line


def test_pace_reads_trace_directories_and_a_bad_one_is_exit_2(tmp_path, capsys):
    mt = _module()
    d = tmp_path / "sw-a"
    d.mkdir()
    (d / "mirror-trace.log").write_text("\n".join(_paced_trace(10.0, [16, 16, 16], 150 * 65536)) + "\n")
    (d / "summary.json").write_text('{"scenario": "{id: t, disk_write_rate: 4MiB/s, io_size: 4KiB, '
                                    'bandwidth: 160MiB/s}", "downtime_s": 0.446}')
    assert mt.main(["--pace", str(d)]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[0] == "sw-a" and row[1] == "160MiB/s" and row[-2:] == ["446", "ms"] and row[-3] == "150"
    assert mt.main(["--pace", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
