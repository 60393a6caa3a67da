"""experiments/dest_first_touch.py: its summaries on hand-written runs, its errors, one real bare-QEMU migration."""
from __future__ import annotations

import shutil

import pytest
from experiment_scripts import load


def _module():
    return load("dest_first_touch")


def _row(every: int, prealloc: bool, total_s: float, normal: int = 65536, downtime_s: float = 0.0,
         stop: float = 0.0) -> dict:
    return {"memory_mib": 256, "every": every, "guest": False, "dest_prealloc": prealloc, "total_time_s": total_s,
            "downtime_s": downtime_s, "normal_pages": normal, "stop_normal_pages": stop, "zero_pages": 65536 - normal}


def test_the_synthetic_summary_takes_each_kinds_fastest_run_and_charges_the_difference_per_region():
    """Oracle: 128 regions of 256 MiB; fresh runs of 0.30 / 0.25 s against preallocated 0.20 / 0.22 s give
    (0.25 - 0.20) / 128 per region and that over the normal pages per page."""
    ft = _module()
    rows = [_row(1, False, 0.30), _row(1, False, 0.25), _row(1, True, 0.20), _row(1, True, 0.22)]
    (s,) = ft.summarise(rows)
    assert s["regions"] == 128
    assert s["per_region_s"] == pytest.approx(0.05 / 128)
    assert s["per_normal_page_s"] == pytest.approx(0.05 / 65536)


def test_the_guest_summary_charges_the_median_downtime_difference_per_stop_page():
    """Oracle: fresh stops of 40 / 50 / 60 ms over 2,000 pages, preallocated 10 / 12 / 14 ms: 38 ms over
    2,000 pages is 19 us a page; a run whose stop carried nothing does not count."""
    ft = _module()
    rows = [_row(0, False, 4, downtime_s=d, stop=2000) for d in (0.040, 0.050, 0.060)]
    rows += [_row(0, True, 4, downtime_s=d, stop=2000) for d in (0.010, 0.012, 0.014)]
    rows.append(_row(0, True, 4, downtime_s=0.5, stop=0))
    s = ft.summarise_guest(rows)
    assert s["fresh"]["runs"] == 3 and s["prealloc"]["runs"] == 3
    assert s["first_touch_s"] == pytest.approx(0.038 / 2000)


@pytest.mark.parametrize("args", [["--every", "1,x"], ["--every", "0"], ["--repeats", "0"],
                                  ["--root", "/nonexistent"], ["--guest", "/nonexistent"]])
def test_bad_input_is_one_line_and_exit_2(args, capsys):
    ft = _module()
    assert ft.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dest_first_touch:") and "\n" not in err


def test_a_guest_too_small_for_the_testbed_workload_is_one_line_and_exit_2(tmp_path, capsys):
    """The guest mode boots simkvm's workload, which needs 128 MiB: 64 is refused before any QEMU starts."""
    ft = _module()
    (tmp_path / "vmlinuz").write_bytes(b"")
    assert ft.main(["--guest", str(tmp_path), "--memory-mib", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dest_first_touch:") and "128MiB" in err and "\n" not in err


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU (scripts/setup-system.sh)")
def test_a_real_bare_migration_sends_every_non_zero_page_of_the_image_as_a_normal_page():
    """Oracle: the image holds one non-zero page in 64 (16 MiB: 64 pages); QEMU sends each as a normal page,
    plus the few the machine's own ROMs and tables hold (under 100), into fresh and preallocated memory."""
    ft = _module()
    qemu = ft.qemu_command(None)
    for prealloc in (False, True):
        row = ft.migrate_once(qemu, 16, 64, prealloc, 47199)
        assert 64 <= row["normal_pages"] < 64 + 100
        assert row["normal_pages"] + row["zero_pages"] >= 16 * 256
        assert row["total_time_s"] > 0
