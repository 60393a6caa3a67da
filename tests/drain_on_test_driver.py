"""simkvm drain --execute's oVirt-style bandwidth split, run on libvirt's own test driver.

Not collected by a plain ``pytest`` run (the name does not start with ``test_``): tests/test_drain.py runs
each test here in a fresh Python process. libvirt's test driver (test:///default) keeps one state per
process, and the event loop that delivers its lifecycle events is one thread per process
(simkvm.libvirt_api.ensure_event_loop), shared with every real connection earlier tests opened. In two CI
runs of the whole suite (2026-12-03, after the real-testbed tests) no lifecycle event of the test driver
reached this module's drain; never here in 400 runs of this module in one process, nor after the other
tests that precede it in CI. A fresh process gives each test the driver and the event loop a drain
starts with; :func:`_assert_events_flow` still fails (with the loop thread's native stack) if even a
fresh loop delivers nothing.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from test_drain import fleet, row

# ------------------------------------------------------------------ --execute's oVirt-style split, on libvirt's test driver
TEST_URI = "test:///default"  # libvirt's own test driver: one state shared by every connection of a process


class _Jobs:
    """The migration jobs libvirt's test driver does not have.

    run_drain runs on real libvirt here: its connection, lookups and each domain's isActive are the test
    driver's (test:///default), and a source stopping is a real virDomainDestroy there. The test driver has
    no migration: virDomainMigrate3, virDomainGetJobStats and virDomainMigrateSetMaxSpeed answer
    VIR_ERR_NO_SUPPORT (libvirt 9.0, and 11.3: `virsh -c test:///default domjobinfo test` and
    `migrate-setspeed test 32`). So the executor's migration is a stand-in that only does what libvirt
    does to the job (its Perform phase applies migrate3's bandwidth over any earlier max speed,
    qemuMigrationSrcRun), and the binding's jobStats and migrateSetMaxSpeed read and set that job;
    everything else is libvirt's. A drain over real migrations is tests/test_drain_testbed.py."""

    def __init__(self, libvirt) -> None:
        self.lock = threading.Lock()
        self.moving: set[str] = set()
        self.speed: dict[str, int] = {}
        self.libvirt = libvirt
        self.confirming: set[str] = set()  # switched over, libvirt's Confirm stopping the source QEMU
        self.asked: list[str] = []  # calls made on a domain in Confirm (on libvirt they wait until it ends)

    def perform(self, name: str, mibps: int) -> None:
        """libvirt's Perform: migrate3's bandwidth in force, over whatever was set before; data moves."""
        with self.lock:
            self.speed[name] = mibps
            self.moving.add(name)

    def note_call(self, what: str, dom) -> None:
        if dom.name() in self.confirming:
            self.asked.append(f"{what}({dom.name()})")

    def stats(self, dom, _flags: int = 0) -> dict:
        self.note_call("jobStats", dom)
        if not dom.isActive():
            raise self.libvirt.libvirtError("Requested operation is not valid: domain is not running")
        return {"type": 2, "disk_total": 1} if dom.name() in self.moving else {"type": 0}

    def set_speed(self, dom, mibps: int, _flags: int = 0) -> None:
        self.note_call("migrateSetMaxSpeed", dom)
        if not dom.isActive():
            raise self.libvirt.libvirtError("Requested operation is not valid: domain is not running")
        with self.lock:
            self.speed[dom.name()] = mibps


def _native_stacks() -> str:
    """Every thread's C stack (gdb attached to this process), to say what libvirt's loop thread is doing
    when it delivers nothing; "" where gdb is missing or cannot attach."""
    try:
        out = subprocess.run(["gdb", "-p", str(os.getpid()), "-batch", "-ex", "thread apply all bt 20"],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return "\n".join(line for line in out.splitlines() if line.startswith(("Thread ", "#")))


def _assert_events_flow(libvirt, conn, timeout_s: float = 2.0) -> None:
    """libvirt's event loop (one thread per process, simkvm.libvirt_api.ensure_event_loop) delivers a
    lifecycle event within ``timeout_s``: the drain learns switchovers and departures from it. If not,
    fail with whether the event came late (within 30 s) and the loop thread's Python and C stacks."""
    import traceback

    from simkvm.libvirt_api import ensure_event_loop

    ensure_event_loop()
    seen = threading.Event()
    cid = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                      lambda _c, dom, *_: dom.name() == "probe" and seen.set(), None)
    try:
        dom = conn.createXML("<domain type='test'><name>probe</name><memory>65536</memory>"
                             "<os><type>hvm</type></os></domain>", 0)
        dom.destroy()
        if not seen.wait(timeout_s):
            frames = sys._current_frames()
            stuck = [f"{t.name}:\n" + "".join(traceback.format_stack(frames[t.ident]))
                     for t in threading.enumerate() if t.name == "libvirt-event-loop" and t.ident in frames]
            native = _native_stacks()
            late = "arrived late, within 30 s" if seen.wait(30) else "did not arrive in 30 s more"
            pytest.fail(f"libvirt's event loop delivered no event in {timeout_s} s (the event {late}); its thread:\n"
                        + ("\n".join(stuck) or "(none running)") + "\nC stacks:\n" + (native or "(no gdb)"))
    finally:
        conn.domainEventDeregisterAny(cid)


@pytest.fixture
def test_driver(monkeypatch):
    """d1 and d2 defined and running on libvirt's test driver (a stopped source keeps an inactive
    definition), d3 transient (a stopped source is gone: lookups fail); a connection for the stand-in
    migrations, and the jobs. Removed afterwards (the driver's state lives as long as the process)."""
    libvirt = pytest.importorskip("libvirt")
    from simkvm.libvirt_api import import_libvirt

    import_libvirt()  # (silences libvirt's default error handler)
    conn = libvirt.open(TEST_URI)
    xml = "<domain type='test'><name>{}</name><memory>65536</memory><os><type>hvm</type></os></domain>"
    for n in ("d1", "d2"):
        conn.defineXML(xml.format(n)).create()
    conn.createXML(xml.format("d3"), 0)
    _assert_events_flow(libvirt, conn)
    jobs = _Jobs(libvirt)
    monkeypatch.setattr(libvirt.virDomain, "jobStats", lambda dom, flags=0: jobs.stats(dom, flags))
    monkeypatch.setattr(libvirt.virDomain, "migrateSetMaxSpeed", lambda dom, mibps, flags=0: jobs.set_speed(dom, mibps))
    yield conn, jobs
    for n in ("d1", "d2", "d3"):
        try:
            dom = conn.lookupByName(n)
        except libvirt.libvirtError:
            continue
        persistent = dom.isPersistent()
        if dom.isActive():
            dom.destroy()
        if persistent:
            dom.undefine()
    conn.close()


def _run_drain(monkeypatch, migrate):
    """d1, d2, d3 drained two at a time, 64 MiB/s split oVirt's way; ``migrate(plan, name)`` stands in for
    the executor's migration (the test driver cannot migrate)."""
    from simkvm.drain import execute as ex
    from simkvm.model.result import Result

    def execute(plan, name, src, _dst):
        assert src == TEST_URI
        migrate(plan, name)
        return Result(converged=True, outcome="converged", reason="", source="measured", total_time_s=0.1)

    monkeypatch.setattr("simkvm.executor.execute", execute)
    f = fleet([row(n) for n in ("d1", "d2", "d3")], link={"bandwidth": "20GB/s"},
              concurrency={"stack": "ovirt", "max_migrations": 2, "bandwidth": "64MiB/s"})
    d = ex.run_drain(f, TEST_URI, TEST_URI, poll_s=0.005)
    assert sorted(v.name for v in d.vms) == ["d1", "d2", "d3"]
    return d


def test_execute_resplit_reaches_a_migration_whose_job_has_not_started(monkeypatch, test_driver):
    """The third VM starts while the second is still in flight (32 MiB/s each); the second leaves while
    the third is still preparing, so the third's share becomes 64 MiB/s before libvirt applies its
    migrate3 bandwidth (32). The new share must be in force once its job moves data, not overwritten."""
    conn, jobs = test_driver
    started = {n: threading.Event() for n in ("d1", "d2", "d3")}
    speed_in_ram: dict[str, int] = {}

    def migrate(plan, name):
        started[name].set()
        if name == "d3":
            while conn.lookupByName("d2").isActive():  # prepares until d2 has left the source...
                time.sleep(0.002)
            time.sleep(0.05)  # ...and the drain has re-split
        else:
            time.sleep(0.01)
        jobs.perform(name, int(plan.link.bandwidth_Bps / 2**20))
        if name == "d2":
            started["d3"].wait(5)
        deadline = time.monotonic() + (1.0 if name == "d3" else 0.05)
        while time.monotonic() < deadline and not (name == "d3" and jobs.speed[name] == 64):
            time.sleep(0.002)  # (d3: as long as a late poll may take to re-split; lost, it stays 32)
        speed_in_ram[name] = jobs.speed[name]
        conn.lookupByName(name).destroy()  # libvirt's Confirm: the source QEMU stops

    _run_drain(monkeypatch, migrate)
    assert speed_in_ram["d1"] == 32 and speed_in_ram["d2"] in (32, 64)
    assert speed_in_ram["d3"] == 64  # alone once d2 left: the whole 64 MiB/s



def test_execute_frees_one_slot_at_a_time(monkeypatch, test_driver):
    """Two guests leave the source in the same poll: the executor handles one departure, starts the next
    VM (its share counts the other still in flight: 32 MiB/s), then the other departure, as the
    simulator does."""
    conn, jobs = test_driver
    both_moving = threading.Barrier(2)
    start_bw: dict[str, float] = {}

    def migrate(plan, name):
        start_bw[name] = plan.link.bandwidth_Bps / 2**20
        jobs.perform(name, int(start_bw[name]))
        if name == "d1":
            both_moving.wait(5)
            time.sleep(0.05)
            for n in ("d1", "d2"):  # both sources stop at once (two destroys, microseconds apart)
                conn.lookupByName(n).destroy()
        elif name == "d2":
            both_moving.wait(5)
            while conn.lookupByName(name).isActive():
                time.sleep(0.002)
        else:
            time.sleep(0.05)
            conn.lookupByName(name).destroy()

    _run_drain(monkeypatch, migrate)
    assert start_bw == {"d1": 32, "d2": 32, "d3": 32}


def test_execute_never_asks_a_migration_that_has_switched_over(monkeypatch, test_driver):
    """Once a migration has switched over (its source paused: libvirt's SUSPENDED event), libvirt's Confirm
    holds its domain until the source QEMU is gone, and a call on it waits that long (the drain's
    _SourceEvents says why). The drain must ask it nothing (whether it runs, a new max speed) and free
    its slot from the source's STOPPED event. d1 and d2 switch over together; d1's source stops 50 ms
    later, d2's 400 ms later: d3 starts at d1's stop, with 32 MiB/s (d2 still counts), not at d2's."""
    conn, jobs = test_driver
    libvirt = jobs.libvirt
    drain_thread = threading.current_thread()
    both_moving = threading.Barrier(2)
    stopped_at: dict[str, float] = {}
    start_bw: dict[str, float] = {}
    d3_started_at = []
    is_active = libvirt.virDomain.isActive

    def watched_is_active(dom):
        if threading.current_thread() is drain_thread:
            jobs.note_call("isActive", dom)
        return is_active(dom)

    monkeypatch.setattr(libvirt.virDomain, "isActive", watched_is_active)
    from simkvm.drain.execute import _SourceEvents

    on_lifecycle = _SourceEvents._on_lifecycle
    switch_heard = {n: threading.Event() for n in ("d1", "d2")}
    unheard: list[str] = []

    def heard_lifecycle(self, conn_, dom, event, detail, opaque):
        on_lifecycle(self, conn_, dom, event, detail, opaque)
        if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED and dom.name() in switch_heard:
            switch_heard[dom.name()].set()

    monkeypatch.setattr(_SourceEvents, "_on_lifecycle", heard_lifecycle)

    def migrate(plan, name):
        start_bw[name] = plan.link.bandwidth_Bps / 2**20
        dom = conn.lookupByName(name)
        jobs.perform(name, int(start_bw[name]))
        if name == "d3":
            d3_started_at.append(time.monotonic())
            time.sleep(0.05)
            dom.destroy()
            return
        both_moving.wait(5)
        time.sleep(0.05)
        dom.suspend()  # the switchover: the source pauses (SUSPENDED event)
        # The stop-and-copy and libvirt's Finish on the destination: on libvirt the SUSPENDED event is on
        # its way to the client before Confirm starts. Here the event loop thread may be late (one CI run,
        # 2026-12-03, asked d2 eight times: no event in 400 ms), so Confirm waits until the drain has it.
        if not switch_heard[name].wait(5):
            unheard.append(name)
        time.sleep(0.02)
        with jobs.lock:
            jobs.confirming.add(name)  # Confirm: the domain is libvirt's until its QEMU is gone
        time.sleep(0.05 if name == "d1" else 0.4)
        with jobs.lock:
            jobs.confirming.discard(name)
        stopped_at[name] = time.monotonic()  # (before the call: the drain may react before it returns)
        dom.destroy()  # the source QEMU is gone (STOPPED event)

    _run_drain(monkeypatch, migrate)
    assert not unheard, f"the drain never heard {unheard}'s SUSPENDED event (libvirt's event loop)"
    assert jobs.asked == []
    assert stopped_at["d1"] < d3_started_at[0] < stopped_at["d2"]
    assert start_bw == {"d1": 32, "d2": 32, "d3": 32}
