"""A real drain on the testbed: three small guests from a to b, two at a time over one capped link."""
from __future__ import annotations

import datetime
import json
import os
import platform
import warnings
from pathlib import Path

import pytest

from simkvm.drain import load_fleet
from simkvm.drain.execute import format_comparison, makespan_error, predict_and_run
from simkvm.profile import GuestImageWarning
from simkvm.validation.store import HEAVY_LOAD_1M

ROOT = Path(__file__).resolve().parent.parent
MiB = 2**20
RECORD = os.environ.get("SIMKVM_DRAIN_RECORD")  # a JSON-lines file: each run's predicted and measured drain
#: when the executor did what (its own clock from the migration's start), and libvirt's completed job
EXECUTOR_TIMES = ("checked_destination_s", "migrate3_called_s", "migrate3_returned_s", "libvirt_time_offset_s",
                  "slowest_poll_s", "slowest_poll_at_s", "completed_stats", "bandwidth_MiBps")


def record(predicted, measured, load: tuple[float, float]) -> None:
    """One line per run (for the README's table), when asked: both drains, the load, the machine."""
    if RECORD:
        with open(RECORD, "a") as f:
            f.write(json.dumps({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                                "load_1m": load, "makespan_error": makespan_error(predicted, measured),
                                "predicted": predicted.to_dict(), "measured": measured.to_dict(),
                                "rounds": {d.source: {v.name: v.result.round_records for v in d.vms}
                                           for d in (predicted, measured)},
                                "executor": {v.name: {k: v.result.meta.get(k) for k in EXECUTOR_TIMES}
                                             for v in measured.vms}}, default=str) + "\n")


@pytest.mark.testbed
@pytest.mark.slow
def test_real_drain_matches_its_prediction(testbed, guest_factory):
    """plans/drain-testbed.yaml: 64 MiB/s shared the way oVirt shares it (each migration's max-bandwidth
    is 64 MiB/s / migrations in flight, re-set as they start and finish). Every guest must arrive, never
    more than two at once, and the makespan must be within 10 % of the prediction made from the guests."""
    fleet = load_fleet(ROOT / "plans" / "drain-testbed.yaml")
    for vm in fleet.vms:
        guest_factory(vm.name, 256 * MiB, 64 * MiB, dirty_rate_Bps=4 * MiB, wss_bytes=32 * MiB)
    load_before = os.getloadavg()[0]
    with warnings.catch_warnings(record=True) as seen:  # a profile from another guest image says so
        warnings.simplefilter("always", GuestImageWarning)
        predicted, measured = predict_and_run(fleet, testbed.uri("a"), testbed.uri("b"))
    stale = [str(w.message) for w in seen if issubclass(w.category, GuestImageWarning)]
    load_after = os.getloadavg()[0]
    print("\n" + format_comparison(predicted, measured) + f"\nload average {load_before:.2f} -> {load_after:.2f}")
    record(predicted, measured, (load_before, load_after))
    assert all(v.result.converged for v in measured.vms), [v.result.reason for v in measured.vms]
    assert sorted(v.name for v in measured.vms) == ["drain-1", "drain-2", "drain-3"]
    for v in measured.vms:  # at most two in flight at any start
        assert sum(w.start_s <= v.start_s < w.end_s for w in measured.vms) <= 2
    assert predicted.converged == 3
    error = makespan_error(predicted, measured)
    if max(load_before, load_after) > HEAVY_LOAD_1M:  # as the validation campaign flags such runs
        pytest.skip(f"timing not comparable: load average {load_before:.1f}/{load_after:.1f} > {HEAVY_LOAD_1M} "
                    f"(the guests and QEMUs share 2 cores with other work); makespan predicted "
                    f"{predicted.makespan_s:.1f} s, measured {measured.makespan_s:.1f} s ({error:+.0%})")
    # Issue 13's target. Measured 2026-12-01 at load average 0.9-2.7 (README "Draining a host"): -1.6, -9.6 and
    # -3.0 % while the drain's loop still asked the sources in libvirt's Confirm (the third VM started
    # when the second source was gone, not the first), then +0.4, -2.1 and -0.0 %. 2026-12-03: +10.3 % with the
    # plan's stale profile (v5-idle's guest-OS bytes, before the guest changed), +0.7 and +0.1 % with v15's, +4.2 % with v17's. Since
    # session 17 a profile records the guest image it was calibrated on, and a stale one is named here. 2026-12-04:
    # +10.0 % with v17's once the guest's image changed (a8ad536), +4.8 and +2.3 % with v26's.
    assert abs(error) <= 0.10, (f"makespan predicted {predicted.makespan_s:.1f} s, measured "
                                f"{measured.makespan_s:.1f} s ({error:+.1%}, limit 10 %)" + "".join(f"; {w}" for w in stale))
