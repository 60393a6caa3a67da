"""simkvm drain: shared links, limits, destinations, and a lone migration being exactly `simulate`."""
from __future__ import annotations

import ast
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simkvm.cli import main
from simkvm.drain import drain, fleet_from_dict
from simkvm.drain.links import max_min_fair
from simkvm.sim import simulate

GBIT = 1e9 / 8


def row(name: str, memory: str = "1GiB", dirty: str = "0B/s", wss: str = "0B", disk: str = "2GiB",
        allocated: str = "1GiB", disk_write: str = "0B/s", zero: float = 0.0, **more) -> dict:
    return {"name": name, "memory": memory, "zero_fraction": zero, "disk": disk, "disk_allocated": allocated,
            "dirty_rate": dirty, "wss": wss, "disk_write_rate": disk_write, **more}


def fleet(vms: list[dict], **keys):
    return fleet_from_dict({"name": "t", "link": {"bandwidth": "10Gbit/s"}, "vms": vms, **keys})


# ------------------------------------------------------------------ a lone migration is simulate()
LONE = [
    row("busy", "4GiB", "80MiB/s", "1GiB", "20GiB", "6GiB", "2MiB/s", 0.3),
    row("hot", "4GiB", "1.2GiB/s", "2GiB", "20GiB", "6GiB", "2MiB/s", 0.3),
    row("ac", "4GiB", "1.2GiB/s", "2GiB", aids="auto_converge"),
    row("pc", "4GiB", "1.2GiB/s", "2GiB", aids="postcopy"),
    row("xb", "4GiB", "900MiB/s", "256MiB", aids={"xbzrle": {"enabled": True}}),
    row("nova", "8GiB", "1.1GiB/s", "3GiB", policy={"name": "nova", "delay": 1}),  # steps every 13 s
    row("ovirt", "8GiB", "1.1GiB/s", "3GiB", policy="ovirt-minimal-downtime"),
    row("kubevirt", "8GiB", "1.1GiB/s", "3GiB", policy="kubevirt"),
    row("proxmox", "8GiB", "1.1GiB/s", "3GiB", "40GiB", "20GiB", "30MiB/s", policy="proxmox"),
]


@pytest.mark.parametrize("vm", LONE, ids=[r["name"] for r in LONE])
def test_a_lone_migration_is_exactly_simulate(vm):
    f = fleet([vm], migration={"max_downtime": "300ms", "max_time": "1h"})
    d = drain(f)
    alone = simulate(f.vms[0].plan, timeline=False)
    got = d.vms[0].result
    assert d.vms[0].start_s == 0.0
    assert got.summary() == alone.summary()  # every figure, to the last bit
    assert got.round_records == alone.round_records
    assert d.makespan_s == alone.total_time_s


def test_lone_migrations_one_after_another_each_run_as_alone():
    """nova (1 per source): each migration has the NIC to itself, so each is `simulate`, shifted; the
    next starts when libvirt's Confirm has stopped the previous one's source QEMU (host.source_stop)."""
    vms = [LONE[0], LONE[2], LONE[5]]
    d = drain(fleet(vms, concurrency="nova", host={"source_stop": "1.5s"}))
    clock = 0.0
    for vm in d.vms:  # records come in the order they end: the file's
        alone = simulate(next(v.plan for v in d_fleet_vms(vms) if v.name == vm.name), timeline=False)
        assert vm.start_s == pytest.approx(clock, abs=1e-9)
        assert vm.result.total_time_s == pytest.approx(alone.total_time_s, rel=1e-12)
        assert vm.result.iterations == alone.iterations
        assert vm.result.converged
        clock = vm.end_s + 1.5
    assert d.makespan_s == pytest.approx(clock - 1.5)  # the last VM runs on its destination then


def test_a_share_is_held_until_the_source_qemu_is_gone():
    """oVirt's split counts a migration until its call returns: for host.source_stop after the small VM
    resumed on the destination the large one still runs at C/2, so it ends source_stop / 2 later than
    if the slot were free at the resume (idle guests, shared storage, no CPU cost: pure bytes / rate)."""
    vms = [row("small", "1GiB"), row("large", "4GiB")]
    keys = {"concurrency": "ovirt", "migration": {"max_downtime": "300ms", "storage": "shared"}}
    at_resume = drain(fleet(vms, host={"page_cost": 0, "source_stop": 0}, **keys))
    held = drain(fleet(vms, host={"page_cost": 0, "source_stop": "1s"}, **keys))
    assert held.record("small").end_s == at_resume.record("small").end_s
    assert held.record("large").end_s - at_resume.record("large").end_s == pytest.approx(0.5, abs=1e-3)


def d_fleet_vms(vms):
    return fleet(vms).vms


# ------------------------------------------------------------------ fair sharing
def test_max_min_fair_closed_forms():
    one = {("l", "out"): 10.0}
    assert max_min_fair(one, {"a": (2.0, (("l", "out"),)), "b": (math.inf, (("l", "out"),)),
                              "c": (math.inf, (("l", "out"),))}) == {"a": 2.0, "b": 4.0, "c": 4.0}
    two = {("x", "out"): 10.0, ("y", "in"): 4.0}
    got = max_min_fair(two, {"a": (math.inf, (("x", "out"),)), "b": (math.inf, (("x", "out"), ("y", "in"))),
                             "c": (math.inf, (("y", "in"),))})
    assert got == pytest.approx({"a": 8.0, "b": 2.0, "c": 2.0})  # y is the bottleneck of b and c


def test_two_identical_migrations_share_the_link_half_and_half():
    """Idle guests, no migration CPU cost (nor the destination's first writes), shared storage: RAM, the
    final copy and the device state all cross at C/2 each, so each takes exactly preparation + syncs +
    switchover + bytes / (C / 2)."""
    vms = [row(f"vm{i}", "1GiB") for i in (1, 2)]
    f = fleet(vms, concurrency={"max_parallel": 2}, migration={"max_downtime": "300ms", "storage": "shared"},
              host={"page_cost": 0, "first_touch": 0})
    d = drain(f)
    c = 10 * GBIT
    host = f.vms[0].plan.host
    for v in d.vms:
        r = v.result
        assert v.start_s == 0.0 and r.converged
        for rnd in r.round_records[1:]:  # (the first row is written as RAM starts, before the other joins)
            assert rnd["memory_bps"] == pytest.approx(c / 2, rel=1e-12)  # each gets half
        pages = 2**30 / 4096
        assert r.ram_transferred_bytes == pytest.approx(pages * (4096 + host.page_header_bytes)
                                                        + host.device_state_bytes)
        fixed = (host.check_destination_s + host.start_destination_s + host.setup_s + 2 * host.sync_s_per_GiB
                 + host.switchover_overhead_s + host.resume_s)
        assert r.total_time_s == pytest.approx(fixed + r.ram_transferred_bytes / (c / 2), rel=1e-9)
    # and the same as one migration over a link of half the capacity
    half = dataclasses.replace(f.vms[0].plan, link=dataclasses.replace(f.vms[0].plan.link, bandwidth_Bps=c / 2,
                                                                      capacity_Bps=c / 2))
    assert d.vms[0].result.total_time_s == pytest.approx(simulate(half).total_time_s, rel=1e-9)
    assert [m for _, m, _ in d.link_usage["source/out"]] == [0.0, pytest.approx(c), 0.0]  # full, then free


def test_splitting_a_link_stops_dirty_vms_converging():
    """KubeVirt operators' lesson: two dirty VMs converge one at a time, not at half the link each."""
    vms = [row(f"db{i}", "8GiB", "500MiB/s", "2GiB", "8GiB", "1GiB") for i in (1, 2)]
    serial = drain(fleet(vms, concurrency="nova", migration={"max_downtime": "300ms", "max_time": "1h"}))
    both = drain(fleet(vms, concurrency={"max_parallel": 2}, migration={"max_downtime": "300ms",
                                                                        "max_time": "1h"},
                       link={"bandwidth": "5Gbit/s"}))
    serial5 = drain(fleet(vms, concurrency="nova", migration={"max_downtime": "300ms", "max_time": "1h"},
                          link={"bandwidth": "5Gbit/s"}))
    assert serial.converged == 2 and serial5.converged == 2
    assert both.converged == 0


def test_ovirt_splits_the_bandwidth_among_migrations_in_flight():
    """Two at once from one host: each is set to half the NIC; when one ends the other gets it all back
    (virDomainMigrateSetMaxSpeed), and QEMU's bandwidth figure follows one window later."""
    vms = [row("small", "1GiB"), row("large", "4GiB")]
    d = drain(fleet(vms, concurrency="ovirt", migration={"max_downtime": "300ms", "storage": "shared"},
                    host={"page_cost": 0}))
    small, large = d.record("small"), d.record("large")
    assert small.end_s < large.end_s
    bps = [r["memory_bps"] for r in large.result.round_records]
    assert min(bps) == pytest.approx(10 * GBIT / 2, rel=1e-9)
    usage = d.link_usage["source/out"]
    assert all(m <= 10 * GBIT * (1 + 1e-9) for _, m, _ in usage)


# ------------------------------------------------------------------ destinations
def test_destination_memory_wait_or_refuse():
    vms = [row("a1", "8GiB"), row("a2", "8GiB"), row("a3", "32GiB")]
    hosts = {"a": {}, "b": {"free_memory": "12GiB"}, "c": {"free_memory": "10GiB"}}
    d = drain(fleet([{**v, "host": "a"} for v in vms], hosts=hosts, concurrency={"max_parallel": 3}))
    assert {v.name: v.destination for v in d.vms if v.result.converged} == {"a1": "b", "a2": "c"}
    refused = d.record("a3")
    assert refused.result.outcome == "refused" and "needs 32 GiB" in refused.result.reason


def test_best_fit_packs_and_most_free_spreads():
    vms = [{**row(f"v{i}", "2GiB"), "host": "a"} for i in range(3)]
    hosts = {"a": {}, "b": {"free_memory": "5GiB"}, "c": {"free_memory": "16GiB"}}
    spread = drain(fleet(vms, hosts=hosts, concurrency="nova"))
    pack = drain(fleet(vms, hosts=hosts, concurrency="nova", destination={"rule": "best-fit"}))
    assert {v.destination for v in spread.vms} == {"c"}
    assert sorted(v.destination for v in pack.vms) == ["b", "b", "c"]


# ------------------------------------------------------------------ limits are never exceeded
@st.composite
def fleets(draw):
    n = draw(st.integers(2, 6))
    sources = draw(st.integers(1, 2))
    vms = []
    for i in range(n):
        vms.append({**row(f"vm{i}", f"{draw(st.sampled_from([256, 512, 1024]))}MiB",
                          f"{draw(st.sampled_from([0, 20, 200]))}MiB/s", "128MiB", "1GiB", "256MiB"),
                    "host": f"s{i % sources}"})
    hosts = {f"s{j}": {} for j in range(sources)}
    hosts.update({f"d{j}": {"free_memory": f"{draw(st.sampled_from([1, 2, 4]))}GiB",
                            "nic": draw(st.sampled_from(["1Gbit/s", "10Gbit/s"]))} for j in range(2)})
    conc = draw(st.sampled_from([{"max_parallel": 2}, {"per_source": 1}, {"per_destination": 1, "max_parallel": 3},
                                 "kubevirt", "ovirt", "nova"]))
    return fleet(vms, hosts=hosts, concurrency=conc, link={"bandwidth": "2Gbit/s", "background": "200Mbit/s"},
                 destination={"when_full": draw(st.sampled_from(["wait", "refuse"]))},
                 migration={"max_downtime": "300ms", "max_time": "120s"})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_limits_are_never_exceeded(f):
    d = drain(f)
    assert sorted(v.name for v in d.vms) == sorted(vm.name for vm in f.vms)  # each VM once
    c = f.concurrency
    moved = [v for v in d.vms if v.result.outcome != "refused"]
    for t in sorted({v.start_s for v in moved}):
        running = [v for v in moved if v.start_s <= t < v.end_s]  # (one ending at t has left)
        assert not c.max_parallel or len(running) <= c.max_parallel
        for h in f.hosts:
            assert not c.per_source or sum(v.source == h.name for v in running) <= c.per_source
            assert not c.per_destination or sum(v.destination == h.name for v in running) <= c.per_destination
            # memory taken on a destination: VMs in flight to it and those that arrived
            taken = sum(vm.memory_bytes for vm in f.vms for v in moved if v.name == vm.name and
                        v.destination == h.name and (v.start_s <= t < v.end_s or (v.result.converged
                                                                                 and v.end_s <= t)))
            assert taken <= h.free_memory_bytes
    for link, series in d.link_usage.items():
        cap = d.link_capacity_Bps[link]
        assert all(m + b <= cap * (1 + 1e-9) for _, m, b in series)


# ------------------------------------------------------------------ the command
def test_drain_json_interface(tmp_path, capsys):
    path = tmp_path / "fleet.yaml"
    path.write_text(json.dumps({"link": {"bandwidth": "10Gbit/s"}, "concurrency": {"max_parallel": 2},
                                "migration": {"max_downtime": "300ms"},
                                "vms": [row("a", "2GiB", "10MiB/s", "256MiB"), row("b", "1GiB")]}))
    assert main(["drain", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["makespan_s"] == max(v["end_s"] for v in out["vms"])
    for v in out["vms"]:
        assert {"name", "converged", "start_s", "end_s", "total_time_s", "downtime_s"} <= set(v)
        assert v["end_s"] == pytest.approx(v["start_s"] + v["total_time_s"])


VALID_ROW = json.dumps(row("a"))


@pytest.mark.parametrize("text, msg", [
    ("link: {bandwidth: 1Gbit/s}\nvms: []", "vms must be"),
    (f"link: {{bandwidth: 0}}\nvms: [{VALID_ROW}]", "link.bandwidth"),
    (f"link: {{bandwidth: 1Gbit/s}}\nconcurrency: swarm\nvms: [{VALID_ROW}]", "concurrency.stack"),
    (f"link: {{bandwidth: 1Gbit/s}}\nconcurrency: {{stack: nova, parallelMigrationsPerCluster: 2}}\n"
     f"vms: [{VALID_ROW}]", "unknown key concurrency.parallelMigrationsPerCluster"),
    ("link: {bandwidth: 1Gbit/s}\nvms: [{name: a}]", "missing"),
    ("link: [1]", "link must be a mapping"),
    (f"link: {{bandwidth: 1Gbit/s}}\nhosts: {{a: {{}}}}\nvms: [{VALID_ROW}]", "say which host(s) to empty"),
    (f"link: {{bandwidth: 1Gbit/s}}\nhosts: {{a: {{cores: 2, machine: m}}, b: {{cores: 4, machine: m}}}}\n"
     f"drain: [a]\nvms: [{VALID_ROW}]", "give its cores once"),
    (f"link: {{bandwidth: 1Gbit/s}}\nhosts: {{a: {{cores: -1}}, b: {{}}}}\ndrain: [a]\nvms: [{VALID_ROW}]",
     "hosts.a.cores must be a number from"),
    (f"link: {{bandwidth: 1Gbit/s}}\nvms: [{json.dumps(row('a', cpu_load='lots'))}]", "cpu_load must be a number"),
])
def test_bad_fleet_files_are_one_line_and_exit_2(tmp_path, capsys, text, msg):
    path = tmp_path / "f.yaml"
    path.write_text(text)
    assert main(["drain", str(path)]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_optimize_finds_the_serial_schedule_where_sharing_fails():
    """Two dirty VMs on one 5 Gbit/s NIC: KubeVirt's default (2 per node) converges neither,
    one at a time converges both; the search must find that and report the gain."""
    from simkvm.drain.optimize import optimize

    vms = [row(f"db{i}", "8GiB", "500MiB/s", "2GiB", "8GiB", "1GiB") for i in (1, 2)] + [row("web", "2GiB")]
    f = fleet(vms, link={"bandwidth": "5Gbit/s"}, migration={"max_downtime": "300ms", "max_time": "1h"})
    opt = optimize(f, budget_s=20)
    gains = opt.gains()
    assert opt.baselines["kubevirt"].converged < 3
    assert opt.best.result.converged == 3
    assert gains["kubevirt"]["converged_gain"] == 3 - opt.baselines["kubevirt"].converged


# ------------------------------------------------------------------ hosts' CPUs
def test_cpu_processor_sharing_closed_form():
    """Two QEMU starts of 1 s of CPU on one core, the second 0.5 s later: the first runs alone for 0.5 s,
    then both at half a core, so the first ends at 1.5 s and the second at 2.0 s (processor sharing)."""
    import simpy

    from simkvm.drain.cpu import Cpus
    from simkvm.model.plan import Host

    env = simpy.Environment()
    cpus = Cpus({"m": 1.0}, {"a": "m", "b": "m"})
    ends = {}

    class FakeRun:
        def __init__(self) -> None:
            self.env = env
            self.plan = dataclasses.replace(fleet([row("x")]).vms[0].plan, host=Host(start_destination_s=1.0))

    def starter(name, delay):
        yield env.timeout(delay)
        run = FakeRun()
        cpus.route(run, "b")
        yield from cpus.start_destination(run)
        ends[name] = env.now

    env.process(starter("first", 0.0))
    env.process(starter("second", 0.5))
    env.run()
    assert ends == {"first": pytest.approx(1.5, abs=1e-12), "second": pytest.approx(2.0, abs=1e-12)}


def test_busy_guests_slow_concurrent_qemu_starts():
    """The testbed drain's shape: hosts a and b on one 2-core machine, three guests keeping 0.4 core busy
    each, two migrations at once. Max-min fair: the guests get their 0.4, the two starts share the 0.8 left
    (0.4 core each), so each start takes start_destination / 0.4; the third, alone, gets 0.8 core."""
    vms = [row(f"g{i}", "256MiB", "4MiB/s", "32MiB", "64MiB", "64MiB", cpu_load=0.4) for i in (1, 2, 3)]
    keys = {"hosts": {"a": {"cores": 2, "machine": "box"}, "b": {"machine": "box"}}, "drain": ["a"],
            "concurrency": {"max_parallel": 2}, "host": {"source_stop": 0}}
    d = drain(fleet([{**v, "host": "a"} for v in vms], **keys))
    h = fleet(vms, host={"source_stop": 0}).vms[0].plan.host
    base = h.check_destination_s + h.create_disk_s + h.setup_s
    setups = {v.name: v.result.setup_time_s for v in d.vms}
    assert setups["g1"] == pytest.approx(base + h.start_destination_s / 0.4, rel=1e-12)
    assert setups["g2"] == pytest.approx(base + h.start_destination_s / 0.4, rel=1e-12)
    assert setups["g3"] == pytest.approx(base + h.start_destination_s / 0.8, rel=1e-12)
    # enough cores for everyone: the starts take start_destination, as without a CPU model
    roomy = drain(fleet([{**v, "host": "a"} for v in vms], **{**keys, "hosts": {"a": {"cores": 8, "machine": "box"},
                                                                                 "b": {"machine": "box"}}}))
    plain = drain(fleet([{**v, "host": "a"} for v in vms], **{**keys, "hosts": {"a": {}, "b": {}}}))
    for v in roomy.vms:
        assert v.result.total_time_s == pytest.approx(plain.record(v.name).result.total_time_s, rel=1e-12)


def test_completions_at_the_same_instant_free_their_slots_one_at_a_time():
    """Two identical migrations end together: the third VM starts in the first slot freed, while the
    second still counts, so an oVirt split gives it half the bandwidth, and its disk mirror (whose
    speed libvirt fixes when the migration starts) runs at that half throughout."""
    vms = [row(f"g{i}", "256MiB", "4MiB/s", "32MiB", "64MiB", "64MiB") for i in (1, 2, 3)]
    keys = {"link": {"bandwidth": "20GB/s"}, "concurrency": {"stack": "ovirt", "max_migrations": 2,
                                                              "bandwidth": "64MiB/s"}}
    d = drain(fleet(vms, **keys))
    g1, g2, g3 = (d.record(n) for n in ("g1", "g2", "g3"))
    assert g1.end_s == g2.end_s and g3.start_s > g1.end_s
    half = dataclasses.replace(fleet(vms, **keys).vms[2].plan, link=dataclasses.replace(
        fleet(vms, **keys).vms[2].plan.link, bandwidth_Bps=32 * 2**20))
    assert g3.result.disk_mirror_time_s == pytest.approx(simulate(half).disk_mirror_time_s, rel=1e-12)


# ------------------------------------------------------------------ --execute on libvirt's test driver, each in a fresh process
ON_TEST_DRIVER_FILE = Path(__file__).parent / "drain_on_test_driver.py"
#: its tests, read from the file (not imported: the parent process must not touch libvirt's test driver)
ON_TEST_DRIVER = [f.name for f in ast.parse(ON_TEST_DRIVER_FILE.read_text()).body
                  if isinstance(f, ast.FunctionDef) and f.name.startswith("test_")
                  and not any(ast.unparse(d).startswith("pytest.fixture") for d in f.decorator_list)]


@pytest.mark.parametrize("name", ON_TEST_DRIVER)
def test_execute_on_libvirt_test_driver(name):
    """run_drain against real libvirt (its test driver), in a fresh Python process each: why, in
    tests/drain_on_test_driver.py's docstring."""
    pytest.importorskip("libvirt")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--reruns", "0",
                           f"{ON_TEST_DRIVER_FILE}::{name}"], cwd=ON_TEST_DRIVER_FILE.parent.parent,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout, proc.stdout[-2000:]
