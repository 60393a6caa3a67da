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
