"""Preflight: the verdict logic as pure functions, and the real check on the testbed."""
from __future__ import annotations

import json
import math

import pytest

from simkvm.preflight import GO, GO_WITH_SETTINGS, NO_GO, Constraints, curve_points, shortfalls, verdict

MiB = 2**20
C = Constraints(max_downtime_s=0.3)
CONVERGES = {"converged": True, "outcome": "converged", "reason": "converged after 4 iterations",
             "downtime_s": 0.25, "total_time_s": 20.0}
STUCK = {"converged": False, "outcome": "not_converged", "reason": "dirty rate above bandwidth"}
AC = {"setting": "auto-converge", "outcome": "converged", "total_time_s": 40.0, "downtime_s": 0.28,
      "risk": "guest throttled"}


# ------------------------------------------------------------------ verdict (pure)
def test_go_when_plain_precopy_meets_the_constraints():
    v, reasons, best = verdict(CONVERGES, [], C)
    assert v == GO and best is None and "converges" in reasons[0]


def test_go_with_settings_names_the_best_recommendation():
    v, reasons, best = verdict(STUCK, [{"setting": "plain pre-copy as planned"}, AC], C)
    assert v == GO_WITH_SETTINGS and best is AC
    assert "does not converge" in reasons[0] and "auto-converge" in reasons[-1]


def test_no_go_when_nothing_works_or_the_destination_is_too_small():
    assert verdict(STUCK, [], C)[0] == NO_GO
    v, reasons, _ = verdict(CONVERGES, [AC], C, destination_problem="refused: destination has 100 MiB")
    assert v == NO_GO and reasons == ["refused: destination has 100 MiB"]


def test_downtime_and_total_time_limits():
    slow = {**CONVERGES, "total_time_s": 90.0}
    assert shortfalls(slow, Constraints(0.3, max_total_time_s=60)) and not shortfalls(slow, C)
    long_pause = {**CONVERGES, "downtime_s": 0.5}
    assert verdict(long_pause, [], C)[0] == NO_GO
    assert verdict(long_pause, [AC], C)[0] == GO_WITH_SETTINGS
    # the fixed costs around the switch on top of the limit are QEMU's normal behaviour, not a miss
    from simkvm import Plan
    from simkvm.sim.switchover import fixed_downtime_s

    slack = fixed_downtime_s(Plan.from_dict({"vm": {"memory": "256MiB"}, "link": {"bandwidth": "32MiB/s"}}))
    assert slack > 0.02  # device state, pause round trip, resume
    just_over = {**CONVERGES, "downtime_s": 0.3 + slack * 0.9}
    assert verdict(just_over, [], C, downtime_slack_s=slack)[0] == GO
    assert verdict({**CONVERGES, "downtime_s": 0.3 + slack * 1.1}, [], C, downtime_slack_s=slack)[0] == NO_GO
    assert verdict({**CONVERGES, "outcome": "postcopy"}, [], C)[0] == NO_GO


def test_curve_points_are_bytes_and_never_decrease():
    pts = curve_points([(2.0, 6.0), (1.0, 8.0), (4.0, 4.0)])
    assert [p[0] for p in pts] == [1.0, 2.0, 4.0]
    assert pts[0][1] == 8 * MiB and pts[1][1] == 12 * MiB and pts[2][1] == 16 * MiB


# ------------------------------------------------------------------ the command, bad input
def test_bad_periods_and_unreachable_hosts_exit_2_with_one_line(capsys):
    from simkvm.cli import main

    assert main(["preflight", "--domain", "x", "--src", "qemu+tcp://127.0.0.1:1/system",
                 "--dst", "qemu+tcp://127.0.0.1:2/system", "--periods", "0.5s"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "whole seconds" in err[0]


# ------------------------------------------------------------------ on the testbed
@pytest.fixture
def guest(guest_factory):
    """A READY guest on host a (256 MiB, 32 MiB disk unless given); removed afterwards."""
    def make(name: str, **kw):
        return guest_factory(name, kw.pop("memory_bytes", 256 * MiB), kw.pop("disk_bytes", 32 * MiB), **kw)

    return make


def _preflight(testbed, name, *extra):
    from simkvm.cli import main

    return main(["preflight", "--domain", name, "--src", testbed.uri("a"), "--dst", testbed.uri("b"),
                 "--periods", "1s,2s", "--json", *extra])


@pytest.mark.testbed
def test_preflight_go_and_no_go_on_the_testbed(testbed, guest, capsys):
    """8 MiB/s over 64 MiB at 64 MiB/s and a 5 s limit: GO, with a measured curve near the unique-page
    formula. The same guest at 4 MiB/s and 10 ms cannot converge: not GO. Nothing is migrated.

    The GO case is one whose verdict no accepted curve changes: its threshold (64 MiB/s x 5 s) holds
    the whole 256 MiB guest, so QEMU switches over at its first pending check and the downtime is the
    RAM at the link's speed plus the stop's costs (4.68 s predicted, 320 ms under the limit, for every
    curve from 0.25x to 3x the formula on both QEMU versions). Any case that iterates first ends with
    up to a threshold's worth left, so its predicted downtime sits at the limit plus the stop's costs:
    at 32 MiB/s and 300 ms the margin was -6 to +39 ms over the accepted curves (NO GO at 0.25x and at
    3x over both periods), and CI once saw that case come out GO-WITH-SETTINGS on QEMU 10."""
    name = guest("pf-go", dirty_rate_Bps=8 * MiB, wss_bytes=64 * MiB)
    code = _preflight(testbed, name, "--bandwidth", "64MiB/s", "--max-downtime", "5s")
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["verdict"] == GO, report["reasons"]
    curve = report["dirty_curve"]
    assert [m["period_s"] for m in curve] == [1.0, 2.0]
    # page sampling (512 pages per GiB) is coarse: a raw 2 s count can come out below the 1 s one;
    # the curve the plan predicts with never decreases and never drops a measurement
    points = report["plan"]["workload"]["memory"]["points"]
    assert [p[0] for p in points] == [1.0, 2.0] and points[0][1] <= points[1][1]
    assert all(p[1] >= m["unique_bytes"] * (1 - 1e-9) for p, m in zip(points, curve))
    formula = 64 * MiB * (1 - math.exp(-8 / 64))  # unique pages of uniform writes in 1 s
    formula_2s = 64 * MiB * (1 - math.exp(-16 / 64))
    # page sampling hashes 512 pages per GiB: 128 pages for this 256 MiB guest, so each sampled page
    # stands for 2 MiB and libvirt reports whole MiB/s; only a sane factor can be asked for. About 32 of
    # the sampled pages fall in the 64 MiB working set and ~12 % of those are dirtied in 1 s: ~4 expected
    # hits, so a 1 s count of 0 happens (Poisson, ~2 %; seen in CI on QEMU 10); over 2 s ~7 (0.1 %).
    # The curve's largest point is held to the formula's range over the two periods.
    assert 0.25 * formula <= max(m["unique_bytes"] for m in curve) <= 3.0 * formula_2s
    assert report["plan"]["workload"]["memory"]["model"] == "curve"
    assert report["plan"]["vm"]["memory"] == 256 * MiB

    code = _preflight(testbed, name, "--bandwidth", "4MiB/s", "--max-downtime", "10ms", "--max-total-time", "60s")
    report = json.loads(capsys.readouterr().out)
    assert (code, report["verdict"]) in ((1, GO_WITH_SETTINGS), (3, NO_GO)), report["reasons"]
    assert not report["prediction"]["converged"] or report["prediction"]["downtime_s"] > 0.01

    import libvirt

    conn = testbed.connect("a")
    try:
        assert conn.lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING  # untouched
    finally:
        conn.close()


@pytest.mark.testbed
def test_preflight_missing_domain_and_unreachable_destination_exit_2(testbed, capsys):
    from simkvm.cli import main

    assert main(["preflight", "--domain", "no-such-vm", "--src", testbed.uri("a"), "--dst", testbed.uri("b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-vm" in err[0] and "not defined" in err[0]
    assert main(["preflight", "--domain", "x", "--src", testbed.uri("a"),
                 "--dst", "qemu+tcp://127.0.0.1:1/system"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot connect to the destination" in err[0]
