"""Policies and aids, executed: the simulator's policy objects driving real libvirt jobs.

Unit tests: the Snapshot a policy sees, built from hand-made job stats, and
the libvirt flags/params the aids turn into. Testbed tests: a guest that plain
pre-copy cannot move converges with auto-converge and with post-copy, and a
Nova policy on a shrunk time scale steps its downtime as the simulator says.
"""
from __future__ import annotations

import numpy as np
import pytest

from simkvm.executor.control import snapshot_from_stats
from simkvm.executor.flags import aid_flags_and_params, aid_support_problem
from simkvm.model.plan import Plan
from simkvm.model.result import Result

MiB = 2**20


# ------------------------------------------------------------------ Snapshot from job stats
def test_snapshot_during_ram_migration_uses_libvirts_counters():
    stats = {"type": 2, "time_elapsed": 9000, "memory_iteration": 3, "memory_total": 256 * MiB,
             "memory_remaining": 40 * MiB, "data_remaining": 41 * MiB, "disk_remaining": 1 * MiB}
    s = snapshot_from_stats(stats, 9.4, memory_total_bytes=512 * MiB, max_downtime_s=0.05)
    assert (s.elapsed_s, s.iteration) == (9.4, 3)
    assert s.memory_remaining == 40 * MiB and s.data_remaining == 41 * MiB
    assert s.memory_total == 256 * MiB  # libvirt's figure wins over the plan's
    assert s.max_downtime_s == 0.05 and not s.in_postcopy and not s.paused


def test_snapshot_before_ram_migration_counts_all_of_ram_as_remaining():
    """During the disk mirror libvirt has no RAM figures yet: like the simulator, all of RAM remains."""
    stats = {"type": 2, "time_elapsed": 800, "disk_total": 64 * MiB, "disk_remaining": 48 * MiB,
             "data_remaining": 48 * MiB}
    s = snapshot_from_stats(stats, 1.2, memory_total_bytes=256 * MiB, paused=False)
    assert s.iteration == 0
    assert s.memory_remaining == 256 * MiB and s.memory_total == 256 * MiB
    assert s.data_remaining == 256 * MiB + 48 * MiB


def test_snapshot_without_data_remaining_adds_ram_and_disk_and_carries_flags():
    stats = {"type": 2, "memory_iteration": 1, "memory_remaining": 10 * MiB, "disk_remaining": 2 * MiB}
    s = snapshot_from_stats(stats, 3.0, memory_total_bytes=128 * MiB, in_postcopy=True, paused=True,
                            max_downtime_s=0.3)
    assert s.data_remaining == 12 * MiB and s.memory_total == 128 * MiB
    assert s.in_postcopy and s.paused and s.max_downtime_s == 0.3


# ------------------------------------------------------------------ aids -> libvirt
def test_aids_become_flags_and_params():
    libvirt = pytest.importorskip("libvirt")
    plan = Plan.from_dict({"aids": {"auto_converge": {"enabled": True, "initial": "30%", "increment": "15%"},
                                    "postcopy": {"enabled": True, "after_iterations": 2},
                                    "xbzrle": {"enabled": True, "cache_size": "48MiB"},
                                    "multifd": {"enabled": True, "channels": 3}}})
    flags, params, notes = aid_flags_and_params(plan)
    for flag in ("VIR_MIGRATE_AUTO_CONVERGE", "VIR_MIGRATE_POSTCOPY", "VIR_MIGRATE_PARALLEL",
                 "VIR_MIGRATE_COMPRESSED"):
        assert flags & getattr(libvirt, flag)
    assert params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] == 30
    assert params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] == 15
    assert params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] == 3
    assert params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] == "xbzrle"
    assert params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION_XBZRLE_CACHE] == 32 * MiB  # a power of two
    assert any("rounded down" in n for n in notes)


def test_multifd_compression_needs_libvirt_9_4():
    plan = Plan.from_dict({"aids": {"multifd": {"enabled": True}, "compression": {"method": "zstd"}}})
    problem = aid_support_problem(plan, "9.0.0", "7.2.0")
    assert problem and "libvirt >= 9.4.0" in problem and "9.0.0" in problem
    assert aid_support_problem(plan, "10.0.0", "8.2.0") is None
    assert aid_support_problem(Plan(), "9.0.0", "7.2.0") is None


def test_executor_accepts_policies_but_refuses_dirty_limit():
    from simkvm.model.errors import UserError
    from simkvm.executor.flags import check_plan

    check_plan(Plan.from_dict({"policy": "nova", "aids": {"pause": {"after_iterations": 3}}}))
    with pytest.raises(UserError, match="dirty_limit"):
        check_plan(Plan.from_dict({"aids": {"dirty_limit": {"enabled": True}}}))


# ------------------------------------------------------------------ real migrations
# A guest plain pre-copy cannot move: 32 MiB/s of page writes over 96 MiB, 24 MiB/s, 30 ms.
BUSY = {"memory_bytes": 256 * MiB, "disk_bytes": 32 * MiB, "dirty_rate_Bps": 32 * MiB, "wss_bytes": 96 * MiB}
BASE = {"link": {"bandwidth": "24MiB/s"}, "migration": {"max_downtime": "30ms", "max_time": "60s"}}


@pytest.fixture
def guest(guest_factory):
    """A READY guest on host a doing the BUSY workload unless told otherwise; removed afterwards."""
    def make(name: str, **kw):
        kw = {**BUSY, **kw}
        return guest_factory(name, kw.pop("memory_bytes"), kw.pop("disk_bytes"), **kw)

    return make


def _run(testbed, name: str, plan: dict) -> tuple[Result, Result]:
    """Predict (guest read from libvirt) and migrate a -> b; both results."""
    from simkvm.executor import execute
    from simkvm.testbed.guestplan import plan_for_domain
    from simkvm.sim import simulate

    p = plan_for_domain(Plan.from_dict({"name": name, **plan}), name, testbed.uri("a"))
    predicted = simulate(p)
    measured = execute(p, name, testbed.uri("a"), testbed.uri("b"))
    return predicted, measured


def _guest_ok_after(testbed, name: str) -> list:
    from simkvm.testbed.guest import console_lines, wait_for_console

    last = max(ln.line_no for ln in console_lines(name, testbed=testbed))
    wait_for_console(name, lambda ln: ln.kind == "CHECK", 20, after_line=last, testbed=testbed)
    return [c.values.get("mem") for c in console_lines(name, kind="CHECK", testbed=testbed) if c.line_no > last]


@pytest.mark.testbed
@pytest.mark.slow
def test_plain_precopy_does_not_converge_but_auto_converge_does(testbed, guest):
    """The guest paces its writes per second, so a light throttle only eats its idle time: under TCG
    it reaches 3 MiB/s at 99 %. With a 300 ms limit the throttle ramp (60, 80, 99 %) lets it converge.
    Seen once on the testbed: the guest kernel crashed right after resuming on b (QEMU 7.2 TCG
    dirty-tracking bug hitting kernel memory); then the executor says so and this test xfails."""
    from simkvm.model.errors import MigrationFailed
    from simkvm.sim import simulate
    from simkvm.testbed.guest import console_path

    name = guest("pol-ac")
    base = {**BASE, "migration": {"max_downtime": "300ms", "max_time": "90s", "max_iterations": 300}}
    plain = Plan.from_dict({"name": name, "vm": {"memory": BUSY["memory_bytes"]},
                            "workload": {"memory": {"model": "uniform", "dirty_rate": BUSY["dirty_rate_Bps"],
                                                    "wss": BUSY["wss_bytes"]}}, **base})
    assert not simulate(plain).converged  # the premise, predicted (not run: it would take the whole max time)
    plan = {**base, "aids": {"auto_converge": {"enabled": True, "initial": "60%", "increment": "20%"}}}
    try:
        predicted, measured = _run(testbed, name, plan)
    except MigrationFailed as exc:
        if "Kernel panic" in console_path(name, testbed).read_text(errors="replace"):
            pytest.xfail(f"TCG: the guest kernel crashed after the auto-converge migration: {exc}")
        raise
    assert (predicted.outcome, measured.outcome) == ("converged", "converged"), measured.reason
    throttles = [a.value for a in measured.actions if a.action == "throttle"]
    assert throttles and throttles[0] == pytest.approx(0.6) and throttles == sorted(throttles)
    assert [a.value for a in predicted.actions if a.action == "throttle"][0] == pytest.approx(0.6)
    assert measured.rounds["throttle"].max() >= 0.6
    assert measured.downtime_s < 1.0
    from simkvm.testbed.guest import GuestTimeout

    try:
        checks = _guest_ok_after(testbed, name)
    except GuestTimeout as exc:  # the migration itself was right; the guest died after it
        pytest.xfail(f"TCG: the guest went silent on the destination after the auto-converge migration: {exc}")
    assert "FAIL" not in checks


@pytest.mark.testbed
@pytest.mark.slow
def test_postcopy_after_two_iterations_moves_the_busy_guest(testbed, guest):
    name = guest("pol-pc")
    plan = {**BASE, "aids": {"postcopy": {"enabled": True, "after_iterations": 2}}}
    predicted, measured = _run(testbed, name, plan)
    assert (predicted.outcome, measured.outcome) == ("postcopy", "postcopy"), measured.reason
    starts = [a for a in measured.actions if a.action == "start_postcopy"]
    assert len(starts) == 1 and [a.action for a in predicted.actions].count("start_postcopy") == 1
    # requested once iteration 3 began (memory_iteration > 2), as the simulator does, at the first
    # poll that saw it (late only by as much as libvirt kept a job-stats call waiting)
    row3 = measured.rounds.set_index("memory_iteration").loc[3, "time_elapsed_s"]
    assert row3 - 0.2 <= starts[0].time_s <= row3 + 1.0 + measured.meta["slowest_poll_s"]
    assert 0 < measured.downtime_s < 1.0 and measured.postcopy_time_s > 0
    assert measured.total_time_s < 60
    assert measured.measurement.vm_location.startswith("running on the destination")
    assert "FAIL" not in _guest_ok_after(testbed, name)


@pytest.mark.testbed
@pytest.mark.slow
def test_nova_steps_its_downtime_as_predicted(testbed, guest):
    """Nova on a shrunk clock (delay 0.5 s/GiB x 4 GiB = 2 s per step): 100, 166, 233, 300 ms."""
    name = guest("pol-nova", dirty_rate_Bps=8 * MiB, wss_bytes=32 * MiB)
    plan = {"link": {"bandwidth": "32MiB/s"}, "migration": {"max_downtime": "30ms", "max_time": "60s"},
            "policy": {"name": "nova", "delay": 0.5, "steps": 3, "downtime": "300ms"}}
    predicted, measured = _run(testbed, name, plan)
    assert predicted.outcome == measured.outcome == "converged", measured.reason
    want = [(a.time_s, a.value) for a in predicted.actions if a.action == "set_downtime"]
    got = [(a.time_s, a.value) for a in measured.actions if a.action == "set_downtime"]
    steps = [0.1, 0.166, 0.233, 0.3]
    assert len(want) >= 2 and [v for _, v in want] == steps[:len(want)]  # until it converged
    # Nova's rule: step i once elapsed > i x 2 s, seen at the first poll after that;
    # the simulator polls just after each tick of its 0.5 s grid (one job-stats round trip)
    assert all(2.0 * i < tp <= 2.0 * i + 0.01 for i, (tp, _) in enumerate(want) if i)
    # the real run: the same values in the same order; it may end one step earlier or later than
    # predicted, and (Nova's update_downtime takes the last step due) it skips a step when no poll
    # happened while that step was the current one
    samples = measured.timeline["time_s"].to_numpy()
    values = [v for _, v in got]
    assert values[0] == steps[0] and values == sorted(values) and set(values) <= set(steps), (want, got)
    last_due = 2.0 * steps.index(values[-1])
    for j, step in enumerate(steps):
        if step in values or 2.0 * j > last_due:
            continue
        inside = samples[(samples > 2.0 * j + 0.05) & (samples < 2.0 * j + 1.45)]
        assert inside.size == 0, f"step {step} skipped though the executor polled at {inside[:3]}: {got}"
    assert abs(len(got) - len(want)) <= 1 or len(got) < len(want), (want, got)
    # each real step at the executor's first poll after it was due: late only by as much as
    # libvirt kept a job-stats call waiting around then (a busy QEMU monitor under TCG)
    for tm, value in got[1:]:
        i = steps.index(value)
        due = 2.0 * i
        before = samples[samples < due - 0.5]
        near = samples[(samples >= (before[-1] if before.size else 0.0)) & (samples <= tm + 0.1)]
        stall = float(max(np.diff(near), default=0.0))
        assert due - 0.05 <= tm <= due + stall + 0.15, (i, due, tm, stall, got)
        if i < len(want):  # and so within that much of the prediction
            assert abs(tm - want[i][0]) <= stall + 0.15, (want, got)
    assert measured.meta["slowest_poll_s"] >= 0
    assert "FAIL" not in _guest_ok_after(testbed, name)
