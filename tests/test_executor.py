"""The executor: measured rows from made-up libvirt samples, and real migrations on the testbed.

The unit tests feed :mod:`simkvm.executor.monitor` job stats as libvirt
would report them, with numbers chosen so the expected rows are known in
advance. The ``testbed`` tests run real migrations between hosts a and b.
"""
from __future__ import annotations

import json
import time

import pytest

from simkvm.executor.guestplan import plan_for_guest, workload_sections
from simkvm.executor.monitor import JobMonitor, Sample, build_rounds, build_timeline, phase_of
from simkvm.executor.prepare import DomainDisk, volume_xml
from simkvm.plan import Plan
from simkvm.result import ROUND_COLUMNS, Result

MiB = 2**20
OFFSET = 0.5  # our clock = libvirt's job time + 0.5 s (the preparation before migrate3)


def stats(elapsed_ms: int, iteration: int = 0, *, processed: float = 0, remaining: float = 0,
          disk_processed: float = 0, disk_remaining: float = 0, bps: float = 32 * MiB, rate: float = 0) -> dict:
    st = {"type": 2, "time_elapsed": elapsed_ms, "disk_total": disk_processed + disk_remaining,
          "disk_processed": disk_processed, "disk_remaining": disk_remaining}
    if iteration:
        st.update(memory_iteration=iteration, memory_processed=processed, memory_remaining=remaining,
                  memory_bps=bps, memory_dirty_rate=rate, downtime=int(remaining / bps * 1000))
    return st


def sample(elapsed_ms: int, *args, paused: bool = False, **kw) -> Sample:
    return Sample(t_s=OFFSET + elapsed_ms / 1000 + 0.001, stats=stats(elapsed_ms, *args, **kw), paused=paused)


@pytest.fixture
def monitor() -> JobMonitor:
    """Mirror for 2 s, then iterations 1 (2.0-6.0 s), 2 (6.0-7.0), 3 (7.0-7.2, seen only by its event),
    4 (7.2-7.5), then the switchover (5) which no sample saw."""
    m = JobMonitor(max_downtime_s=0.1)
    m.add_sample(Sample(t_s=0.45, stats={"type": 0}))  # no job yet
    m.add_sample(sample(100, disk_remaining=64 * MiB))
    m.add_sample(sample(1000, disk_processed=32 * MiB, disk_remaining=32 * MiB))
    m.add_event(OFFSET + 1.98, 1)
    m.add_sample(sample(2000, 1, processed=0, remaining=256 * MiB, disk_processed=64 * MiB))
    m.add_sample(sample(4000, 1, processed=128 * MiB, remaining=128 * MiB, disk_processed=64 * MiB))
    m.add_sample(sample(5950, 1, processed=250 * MiB, remaining=6 * MiB, disk_processed=64 * MiB))
    m.add_event(OFFSET + 6.0, 2)
    m.add_sample(sample(6050, 2, processed=258 * MiB, remaining=40 * MiB, disk_processed=64 * MiB, rate=2000))
    m.add_sample(sample(6950, 2, processed=286 * MiB, remaining=10 * MiB, disk_processed=64 * MiB, rate=2000))
    m.add_event(OFFSET + 7.0, 3)
    m.add_event(OFFSET + 7.2, 4)
    m.add_sample(sample(7250, 4, processed=300 * MiB, remaining=4 * MiB, disk_processed=65 * MiB, rate=2100))
    m.add_sample(sample(7450, 4, processed=306 * MiB, remaining=3 * MiB, disk_processed=65 * MiB, rate=2100,
                        paused=True))
    return m


COMPLETED = {"type": 3, "time_elapsed": 7600, "downtime": 60, "memory_iteration": 5,
             "memory_processed": 310 * MiB, "disk_processed": 66 * MiB, "memory_bps": 40 * MiB,
             "memory_dirty_rate": 2100, "memory_constant": 1000, "memory_normal": 70000}


def test_offset_is_our_clock_minus_libvirts(monitor):
    assert monitor.libvirt_offset_s(fallback=0) == pytest.approx(OFFSET + 0.001)


def test_rows_one_per_iteration_with_start_values(monitor):
    offset = monitor.libvirt_offset_s(0)
    total = offset + COMPLETED["time_elapsed"] / 1000
    stop = total - COMPLETED["downtime"] / 1000
    rows = build_rounds(monitor, offset, end_s=total, completed=COMPLETED, stop_s=stop)
    assert [r["memory_iteration"] for r in rows] == [1, 2, 3, 4, 5]
    # row 1 starts at the iteration event (earlier than its first sample), values from that sample
    assert rows[0]["time_elapsed_s"] == pytest.approx(OFFSET + 1.98)
    assert rows[0]["memory_remaining"] == 256 * MiB and rows[0]["memory_processed"] == 0
    assert rows[0]["threshold_bytes"] == pytest.approx(32 * MiB * 0.1)
    # row 2: event at 6.0 s; sent = processed at the start of 3 (interpolated) - 258 MiB
    assert rows[1]["time_elapsed_s"] == pytest.approx(OFFSET + 6.0)
    assert rows[1]["duration_s"] == pytest.approx(1.0)
    assert rows[1]["memory_dirty_rate"] == 2000
    # row 3 was never sampled: event time, remaining unknown, processed interpolated between rows 2 and 4
    r3 = rows[2]
    assert r3["time_elapsed_s"] == pytest.approx(OFFSET + 7.0) and r3["memory_remaining"] is None
    # row 2 sampled at 6.051, row 4 sampled at 7.251 but starts at its event (7.2)
    frac = (7.0 - 6.0) / (7.2 - 6.0)
    assert r3["memory_processed"] == pytest.approx(258 * MiB + frac * (300 - 258) * MiB)
    # the final row is the stop-and-copy from the completed stats, starting when the VM stopped
    last = rows[-1]
    assert last["time_elapsed_s"] == pytest.approx(stop)
    assert last["duration_s"] == pytest.approx(COMPLETED["downtime"] / 1000)
    assert last["memory_processed"] == 306 * MiB  # the last sample before the stop
    assert last["sent_bytes"] == 4 * MiB
    # periods tile the time from the first sync to the end, and sent bytes add up
    assert sum(r["duration_s"] for r in rows) == pytest.approx(total - rows[0]["time_elapsed_s"])
    assert sum(r["sent_bytes"] for r in rows) == pytest.approx(COMPLETED["memory_processed"])
    assert set(ROUND_COLUMNS) <= set(rows[0])


def test_rows_of_an_aborted_job_end_at_the_abort(monitor):
    offset = monitor.libvirt_offset_s(0)
    rows = build_rounds(monitor, offset, end_s=9.0)
    assert [r["memory_iteration"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["duration_s"] == pytest.approx(9.0 - (OFFSET + 7.2))
    assert rows[-1]["sent_bytes"] == pytest.approx(6 * MiB)  # last sample 306 MiB - 300 MiB at its start


def test_timeline_phases(monitor):
    offset = monitor.libvirt_offset_s(0)
    tl = build_timeline(monitor, offset, has_disks=True, end_s=8.1, end_phase="done", completed=COMPLETED)
    phases = [row[1] for row in tl]
    assert phases[0] == "prepare" and phases[-1] == "done"
    assert phases[1:4] == ["mirror", "mirror", "precopy"]
    assert "switchover" in phases
    times = [row[0] for row in tl]
    assert times == sorted(times)
    # RAM columns stay empty until RAM migration starts
    assert tl[1][3] is None and tl[3][3] == 256 * MiB


def test_phase_without_disks_is_prepare_until_ram():
    s = Sample(t_s=1, stats=stats(100))
    assert phase_of(s, has_disks=False) == "prepare"


def test_guest_workload_maps_onto_the_plan():
    workload = {"memory_bytes": 384 * MiB, "disk_bytes": 128 * MiB, "dirty_rate_Bps": 8 * MiB, "wss_bytes": 64 * MiB,
                "pattern": "random", "zero_fraction": 0.5, "disk_write_rate_Bps": 256 * 1024,
                "disk_wss_bytes": 16 * MiB, "io_size_bytes": 4096}
    base = Plan.from_dict({"link": {"bandwidth": "48MiB/s"}, "migration": {"max_downtime": "50ms"}})
    plan = plan_for_guest(base, workload, 384 * MiB,
                          [{"path": "/var/lib/libvirt/images/g.qcow2", "size": 128 * MiB, "allocated": 20 * MiB}])
    assert plan.vm.memory_bytes == 384 * MiB and plan.vm.zero_fraction == 0.5
    assert plan.vm.disks[0].allocation_bytes == 20 * MiB
    assert plan.workload.memory.model == "uniform" and plan.workload.memory.dirty_rate_Bps == 8 * MiB
    assert plan.workload.disk.write_rate_Bps == 256 * 1024 and plan.workload.disk.wss_bytes == 16 * MiB
    assert plan.link.bandwidth_Bps == 48 * MiB and plan.migration.max_downtime_s == 0.05
    assert workload_sections({**workload, "dirty_rate_Bps": 0, "pattern": "seq"})["memory"] == {"model": "idle"}
    assert workload_sections({**workload, "pattern": "seq"})["memory"]["model"] == "sequential"


def test_volume_xml_same_size_and_format():
    xml = volume_xml(DomainDisk("vda", "/var/lib/libvirt/images/g&1.qcow2", "qcow2", 123 * MiB, 5 * MiB))
    assert "<name>g&amp;1.qcow2</name>" in xml
    assert f"<capacity unit='bytes'>{123 * MiB}</capacity>" in xml and "<format type='qcow2'/>" in xml
    assert "backingStore" not in xml


def test_migrate_cli_rejects_bad_input_with_exit_2(tmp_path, capsys):
    from simkvm.cli import main

    plan = tmp_path / "p.yaml"
    plan.write_text("link: {bandwidth: 0}\n")
    assert main(["migrate", str(plan), "--domain", "x", "--src", "a", "--dst", "b"]) == 2
    assert "bandwidth must be > 0" in capsys.readouterr().err
    plan.write_text("link: {bandwidth: 32MiB/s}\n")
    assert main(["migrate", str(plan), "--domain", "x", "--src", "nowhere", "--dst", "b"]) == 2
    assert "libvirt URI" in capsys.readouterr().err
