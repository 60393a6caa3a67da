"""Convergence aids and orchestration policies against their formulas (QEMU, Nova, oVirt, KubeVirt, Proxmox)."""
from __future__ import annotations

import math

import pytest

from simkvm import Plan, simulate
from simkvm.policies import Snapshot, make_policy

GiB, MiB = 2**30, 2**20

BUSY = {
    "vm": {"memory": "4GiB", "zero_fraction": 0.3},
    "workload": {"memory": {"model": "uniform", "dirty_rate": "200MiB/s", "wss": "2GiB"}},
    "link": {"bandwidth": "1Gbit/s"},
    "migration": {"max_downtime": "300ms", "max_time": "600s"},
}


def busy(**changes) -> Plan:
    return Plan.from_dict(BUSY).with_(**changes)


def test_busy_plan_does_not_converge_plain():
    assert not simulate(busy()).converged


# ------------------------------------------------------------------ Nova
def test_nova_schedule_for_4gib_ram_and_20gib_disk():
    plan = Plan.from_dict({"vm": {"memory": "4GiB", "disks": [{"path": "/d", "size": "20GiB"}]}, "policy": "nova"})
    nova = make_policy(plan)
    data_gb = max(4, 2) + max(20, 2)
    delay = int(75 * data_gb)  # 1800 s
    assert nova.steps == [(delay * i, int(50 + 45 * i) / 1000) for i in range(11)]
    assert [round(v * 1000) for _, v in nova.steps] == [50, 95, 140, 185, 230, 275, 320, 365, 410, 455, 500]
    assert nova.completion_timeout_s == 800 * data_gb == 19200


def test_nova_steps_its_downtime_in_simulation():
    plan = Plan.from_dict({**BUSY, "migration": {"max_downtime": "300ms"},
                           "policy": {"name": "nova", "delay": 1, "completion_timeout": 10}})
    r = simulate(plan)
    data_gb = 4  # max(4, 2), no disks
    sets = [a for a in r.actions if a.action == "set_downtime"]
    assert sets[0].time_s == 0 and sets[0].value == pytest.approx(0.05)
    for k, a in enumerate(sets[1:], start=1):
        step_time = data_gb * 1 * k
        assert step_time < a.time_s <= step_time + 0.5 + 1e-9  # first 0.5 s poll after the step
        assert a.value == pytest.approx(int(50 + 45 * k) / 1000)
    # completion timeout 10 x 4 s, then abort (the default action)
    aborts = [a for a in r.actions if a.action == "abort"]
    if r.outcome == "aborted":
        assert 40 < aborts[0].time_s <= 40.5 + 1e-9


def test_nova_force_complete_pauses_without_post_copy():
    plan = Plan.from_dict({**BUSY, "policy": {"name": "nova", "completion_timeout": 10,
                                              "timeout_action": "force_complete"}})
    r = simulate(plan)
    assert r.outcome == "paused"
    assert any(a.action == "pause" for a in r.actions)


# ------------------------------------------------------------ auto-converge
def test_auto_converge_throttle_trajectory():
    plan = busy(**{"aids.auto_converge.enabled": True, "aids.auto_converge.max": "50%"})
    r = simulate(plan)
    throttles = [a for a in r.actions if a.action == "throttle"]
    assert [a.value for a in throttles] == pytest.approx([0.2, 0.3, 0.4, 0.5])  # initial, +increment, capped
    rows = r.rounds
    # every sync here ends a period >= 1 s whose dirtying exceeds 50 % of what was sent:
    # the counter reaches 2 at the 2nd of them (row 3 starts), and every 2nd one after that.
    assert (rows["duration_s"].iloc[:6] >= 1.0).all()
    assert throttles[0].time_s == pytest.approx(rows["time_elapsed_s"].iloc[2])
    assert throttles[1].time_s == pytest.approx(rows["time_elapsed_s"].iloc[4])
    # the guest dirties as if time ran (1 - throttle) as fast: check one throttled round
    i = 3
    d, theta = rows["duration_s"].iloc[i], rows["throttle"].iloc[i]
    W, w = 2 * GiB / 4096, 200 * MiB / 4096
    expected = W * (1 - math.exp(-w * (1 - theta) * d / W)) * 4096
    assert rows["dirtied_bytes"].iloc[i + 1] == pytest.approx(expected, rel=0.02)  # remaining overlap aside
    assert r.guest_cpu_lost_s > 0


def test_auto_converge_makes_the_busy_plan_converge():
    r = simulate(busy(**{"aids.auto_converge.enabled": True}))
    assert r.converged and r.outcome == "converged"
    assert r.downtime_s < 0.3 + 0.1


def test_dirty_limit_caps_the_dirty_rate():
    r = simulate(busy(**{"aids.dirty_limit.enabled": True, "aids.dirty_limit.vcpu_rate": "20MiB/s",
                         "host.qemu": "8.1"}))  # the dirty-limit capability came with QEMU 8.1
    throttles = [a.value for a in r.actions if a.action == "throttle"]
    assert throttles and throttles[0] == pytest.approx(1 - 20 / 200)
    assert r.converged


# ---------------------------------------------------------------- post-copy
def test_postcopy_downtime_is_device_state_only():
    plan = busy(**{"aids.postcopy.enabled": True, "aids.postcopy.after_iterations": 2})
    r = simulate(plan)
    assert r.outcome == "postcopy" and r.converged
    h = plan.host
    cap = plan.capacity_Bps
    switch_row = r.rounds.iloc[-1]
    pages = switch_row["memory_remaining"] / 4096
    expected = (h.switchover_overhead_s + h.sync_s_per_GiB * 4 + (h.device_state_bytes + 8 * pages) / cap
                + h.resume_s)
    assert r.downtime_s == pytest.approx(expected, rel=1e-6)
    assert r.downtime_s < 0.1
    # the rest of RAM follows at link capacity
    assert r.postcopy_time_s == pytest.approx(pages * (4096 + 8) / (1 / (1 / (cap / 4104) + h.page_cost_s)) / 4104,
                                              rel=0.02)
    assert 0 < r.postcopy_pages_on_demand <= pages
    # sync 3 ends the 2nd re-send pass (after_iterations=2) and requests post-copy; the switch syncs once more
    assert r.iterations == 4


# --------------------------------------------------------- xbzrle, multifd, compression, pause
def test_xbzrle_sends_deltas_for_a_cached_working_set():
    small_wss = busy(**{"workload.memory.wss": "256MiB", "workload.memory.dirty_rate": "400MiB/s",
                        "migration.max_iterations": 8})
    plain = simulate(small_wss)
    xb = simulate(small_wss.with_(**{"aids.xbzrle.enabled": True, "aids.xbzrle.cache_size": "512MiB"}))
    assert xb.rounds["xbzrle_pages"].sum() > 0
    assert xb.rounds["xbzrle_pages"].iloc[:2].sum() == 0  # not during the first pass
    assert xb.converged and not plain.converged
    tiny = simulate(small_wss.with_(**{"aids.xbzrle.enabled": True, "aids.xbzrle.cache_size": "1MiB"}))
    # a cache of 256 pages for a 65536-page working set hits ~0.4 % of the re-sent pages
    assert tiny.rounds["xbzrle_pages"].sum() < 0.05 * xb.rounds["xbzrle_pages"].sum()
    assert not tiny.converged


def test_multifd_spreads_page_cpu_over_channels():
    cpu_bound = Plan.from_dict({"vm": {"memory": "8GiB"}, "link": {"bandwidth": "100Gbit/s"},
                                "host": {"page_cost": "2us"}})
    one = simulate(cpu_bound)
    four = simulate(cpu_bound.with_(**{"aids.multifd.enabled": True, "aids.multifd.channels": 4}))
    wire_s = 4104 / 12.5e9  # per page on 100 Gbit/s
    ratio = four.rounds["memory_bps"].iloc[0] / one.rounds["memory_bps"].iloc[0]
    assert ratio == pytest.approx((wire_s + 2e-6) / (wire_s + 2e-6 / 4), rel=1e-6)


def test_compression_cuts_wire_bytes_and_is_cpu_bound():
    plan = Plan.from_dict({"vm": {"memory": "4GiB"}, "link": {"bandwidth": "1Gbit/s"}})
    plain = simulate(plan)
    comp = simulate(plan.with_(**{"aids.multifd.enabled": True, "aids.compression.method": "zstd",
                                    "aids.compression.ratio": 0.25}))
    assert comp.ram_transferred_bytes == pytest.approx(plain.ram_transferred_bytes * (0.25 * 4096 + 8) / 4104,
                                                       rel=0.01)
    slow_cpu = simulate(plan.with_(**{"aids.multifd.enabled": True, "aids.compression.method": "zlib",
                                        "aids.compression.throughput": "10MiB/s"}))
    assert slow_cpu.precopy_time_s > plain.precopy_time_s * 3


def test_pause_after_iterations_forces_completion():
    r = simulate(busy(**{"aids.pause.after_iterations": 3}))
    assert r.outcome == "paused" and r.converged
    pause = next(a for a in r.actions if a.action == "pause")
    assert r.downtime_s == pytest.approx(r.total_time_s - pause.time_s, rel=1e-6)
    assert r.downtime_s > 1.0  # the guest waited for the rest of its memory


# ------------------------------------------------------------------- oVirt / KubeVirt / Proxmox
def test_ovirt_minimal_downtime_one_step_per_poll_after_iterations_grow():
    pol = make_policy(Plan.from_dict({"policy": "ovirt-minimal-downtime"}))
    assert pol.start(0)[0].value == pytest.approx(0.1)
    seen = []
    for k, it in enumerate([3, 4, 5, 5, 6, 7, 8, 9, 10, 11, 12]):
        snap = Snapshot(elapsed_s=10.0 * (k + 1), iteration=it, memory_remaining=1, data_remaining=1,
                        memory_total=1)
        seen += [(a.action, a.value) for a in pol.observe(snap)]
    # relative iterations 1, 2, 2(no growth), 3, 4, 5, 6, 7, 8, 9 -> limits 1, 2, 3, 4, 6 then abort
    assert seen == [("set_downtime", 0.15), ("set_downtime", 0.2), ("set_downtime", 0.3), ("set_downtime", 0.4),
                    ("set_downtime", 0.5), ("abort", None)]


def test_kubevirt_post_copy_after_completion_timeout():
    plan = Plan.from_dict({**BUSY, "policy": {"name": "kubevirt", "allow_post_copy": True,
                                              "completion_timeout_per_gib": 10}})
    r = simulate(plan)
    assert r.outcome == "postcopy"
    start = next(a for a in r.actions if a.action == "start_postcopy")
    acceptable = 10 * math.ceil(4)
    assert acceptable < start.time_s <= acceptable + 0.4 + 1e-9


def test_kubevirt_progress_timeout_aborts():
    pol = make_policy(Plan.from_dict({"vm": {"memory": "4GiB"}, "policy": {"name": "kubevirt",
                                                                           "progress_timeout": 10}}))
    actions = []
    for k in range(60):
        t = 0.4 * k
        actions += pol.observe(Snapshot(elapsed_s=t, iteration=2, memory_remaining=5e8, data_remaining=5e8,
                                        memory_total=4 * GiB))
    assert [a.action for a in actions] and actions[0].action == "abort"
    assert 10 < actions[0].time_s <= 10.4 + 1e-9


def test_proxmox_doubles_downtime_after_five_rises():
    pol = make_policy(Plan.from_dict({"policy": "proxmox"}))
    assert pol.configure(Plan.from_dict({"vm": {"memory": "10GiB"}})).aids.xbzrle.cache_size_bytes == 2**30
    remaining = [100, 120, 130, 140, 150, 160, 170]  # six rises -> counter 6 > 5
    actions = []
    for k, rem in enumerate(remaining):
        actions += pol.observe(Snapshot(elapsed_s=k, iteration=2, memory_remaining=rem, data_remaining=rem,
                                        memory_total=1000))
    assert [(a.action, a.value) for a in actions] == [("set_downtime", 0.2)]


def test_every_policy_on_the_busy_plan_ends_with_a_known_outcome():
    for name in ("qemu", "nova", "ovirt-minimal-downtime", "ovirt-suspend-workload", "ovirt-post-copy",
                 "ovirt-very-large-vm", "kubevirt", "proxmox"):
        r = simulate(Plan.from_dict({**BUSY, "migration": {"max_downtime": "300ms"}, "policy": name}))
        assert r.outcome in ("converged", "postcopy", "paused", "aborted", "not_converged")
        assert all(a.action in ("set_downtime", "start_postcopy", "pause", "abort", "throttle") for a in r.actions)


def test_a_rate_paced_guest_keeps_its_rate_until_the_throttle_eats_its_idle_time():
    import simpy

    from simkvm.sim.guest import Guest

    def dirtied(demand: float, throttle: float) -> float:
        plan = busy(**{"workload.memory.cpu_demand": demand, "workload.memory.wss": "4GiB",
                       "workload.memory.model": "sequential"})
        env = simpy.Environment()
        g = Guest(env, plan)
        g.set_throttle(throttle)
        env.run(until=1.0)
        return sum(g.collect_memory()) * 4096

    nominal = 200 * MiB
    assert dirtied(1.0, 0.5) == pytest.approx(0.5 * nominal)  # CPU-bound: (1 - throttle)
    assert dirtied(0.1, 0.5) == pytest.approx(nominal)  # needs 10 % of a vCPU, 50 % left
    assert dirtied(0.1, 0.95) == pytest.approx(0.5 * nominal)  # 5 % left of the 10 % it needs
