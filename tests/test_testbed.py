"""The real two-host testbed: hosts, guest workload, a live migration, teardown.

Each test checks a claim the executor relies on, against the real thing:
up is idempotent, the hosts are distinct to libvirt, the guest dirties memory
and disk at the rates it was asked for (measured from inside the guest), a
non-shared-storage live migration a -> b completes and the guest's canaries
stay intact on the destination, and down leaves nothing behind.
"""
from __future__ import annotations

import os
import socket
import statistics
import time

import pytest

from simkvm.model.errors import UserError

pytestmark = pytest.mark.testbed

MiB = 2**20
GUEST = "tb-test"
DIRTY_RATE_BPS = 20 * MiB
DISK_RATE_BPS = 1 * MiB


def _rates_after(name: str, testbed, after_line: int, count: int, timeout_s: float) -> list[dict]:
    """``count`` RATE lines printed after ``after_line`` (waits for them)."""
    from simkvm.testbed import console_lines

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rates = [ln.values for ln in console_lines(name, kind="RATE", testbed=testbed) if ln.line_no > after_line]
        if len(rates) >= count:
            return rates[:count]
        time.sleep(0.5)
    pytest.fail(f"guest {name} printed fewer than {count} RATE lines in {timeout_s} s")


def test_console_reader_skips_a_line_still_being_written(tmp_path):
    """The serial console reaches the file a few bytes at a time; a half-written CHECK must not
    be read as a failed one (it was: `mem=ok disk=` with the disk verdict still on its way)."""
    from simkvm.testbed.guest import console_lines, console_path
    from simkvm.testbed.hosts import Testbed

    tb = Testbed(tmp_path / "tb")
    path = console_path("g", tb)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("SIMKVM CHECK t=1.000 mem=ok disk=ok\nSIMKVM CHECK t=2.000 mem=ok disk=")
    checks = console_lines("g", kind="CHECK", testbed=tb)
    assert [c.values.get("disk") for c in checks] == ["ok"]
    with open(path, "a") as fh:
        fh.write("ok\n")
    assert [c.values.get("disk") for c in console_lines("g", kind="CHECK", testbed=tb)] == ["ok", "ok"]


def test_up_is_idempotent_and_resizes_disk_space(testbed):
    before = {h.name: h.libvirtd_pid for h in testbed.iter_hosts()}
    started = time.monotonic()
    status = testbed.up()
    assert time.monotonic() - started < 5
    assert {h.name: h.libvirtd_pid for h in testbed.iter_hosts()} == before
    assert status["running"]
    # A destination too small for a disk: shrink b's image space in place.
    status = testbed.up({"a": 4 * 2**30, "b": 64 * MiB})
    pools = {h["name"]: h["pool"]["capacity_bytes"] for h in status["hosts"]}
    assert pools["b"] == 64 * MiB and pools["a"] == 4 * 2**30
    status = testbed.up()
    assert {h["name"]: h["pool"]["capacity_bytes"] for h in status["hosts"]}["b"] == 4 * 2**30
    assert {h.name: h.libvirtd_pid for h in testbed.iter_hosts()} == before


def test_status_shows_two_distinct_hosts(testbed):
    status = testbed.status()
    hosts = status["hosts"]
    assert [h["name"] for h in hosts] == ["a", "b"]
    assert all(h["running"] for h in hosts)
    assert hosts[0]["host_uuid"] != hosts[1]["host_uuid"]
    assert hosts[0]["uri"] != hosts[1]["uri"]
    assert all(h["pool"]["active"] and h["pool"]["path"] == "/var/lib/libvirt/images" for h in hosts)
    # Storage is really not shared: a file made on a is absent on b.
    testbed.run("a", ["touch", "/var/lib/libvirt/images/only-on-a"])
    assert testbed.run("b", ["test", "-e", "/var/lib/libvirt/images/only-on-a"], check=False).returncode != 0
    testbed.run("a", ["rm", "/var/lib/libvirt/images/only-on-a"])


@pytest.fixture(scope="module")
def guest(_testbed_session):
    """A guest on host a dirtying 20 MiB/s over 64 MiB and writing its disk at 1 MiB/s."""
    from simkvm.testbed import define_guest, remove_guest, wait_ready

    tb = _testbed_session
    tb.up()
    started = time.monotonic()
    dom = define_guest(GUEST, 512 * MiB, 256 * MiB, dirty_rate_Bps=DIRTY_RATE_BPS, wss_bytes=64 * MiB,
                       pattern="random", zero_fraction=0.5, disk_write_rate_Bps=DISK_RATE_BPS,
                       disk_wss_bytes=16 * MiB, io_size_bytes=4096, replace=True, testbed=tb)
    ready = wait_ready(GUEST, 90, testbed=tb)
    boot_s = time.monotonic() - started
    print(f"\nguest READY {boot_s:.1f} s after define (kernel uptime {ready.values['kernel_uptime_s']} s)")
    yield {"dom": dom, "ready": ready, "boot_s": boot_s}
    try:
        remove_guest(GUEST, testbed=tb)
    except Exception:  # noqa: BLE001 - the testbed may already be down
        pass


def test_guest_reports_ready_and_its_workload(guest, testbed):
    from simkvm.testbed import read_guest_workload

    ready = guest["ready"].values
    assert guest["boot_s"] < 60
    assert ready["wss"] == 64 * MiB and ready["pattern"] == "random" and ready["disk"] == "/dev/vda"
    # ~half of RAM non-zero: the fill is (1 - zero_fraction) of RAM minus what the kernel holds.
    assert 0.3 * ready["mem_total"] < ready["filled"] < 0.55 * ready["mem_total"]
    workload = read_guest_workload(guest["dom"])
    assert workload == {
        "memory_bytes": 512 * MiB, "disk_bytes": 256 * MiB, "dirty_rate_Bps": float(DIRTY_RATE_BPS),
        "wss_bytes": 64 * MiB, "pattern": "random", "zero_fraction": 0.5,
        "disk_write_rate_Bps": float(DISK_RATE_BPS), "disk_wss_bytes": 16 * MiB, "io_size_bytes": 4096,
    }


def test_guest_achieves_requested_rates(guest, testbed):
    """Measured inside the guest: the median of 5 one-second windows is within 15 %."""
    rates = _rates_after(GUEST, testbed, guest["ready"].line_no, 6, 30)[1:]
    mem = statistics.median(r["mem_Bps"] for r in rates)
    disk = statistics.median(r["disk_Bps"] for r in rates)
    print(f"\nachieved: memory {mem / MiB:.2f} MiB/s (asked {DIRTY_RATE_BPS / MiB}), "
          f"disk {disk / MiB:.3f} MiB/s (asked {DISK_RATE_BPS / MiB})")
    assert mem == pytest.approx(DIRTY_RATE_BPS, rel=0.15)
    assert disk == pytest.approx(DISK_RATE_BPS, rel=0.15)


def test_live_migration_non_shared_disk_keeps_guest_intact(guest, testbed):
    import libvirt

    from simkvm.testbed import console_lines, create_destination_disks, read_guest_workload, wait_for_console

    src = testbed.connect("a")
    dst = testbed.connect("b")
    try:
        dom = src.lookupByName(GUEST)
        assert create_destination_disks(dom, dst) == ["/var/lib/libvirt/images/tb-test.qcow2"]
        before = console_lines(GUEST, testbed=testbed)[-1].line_no
        started = time.monotonic()
        ddom = dom.migrate3(
            dst,
            {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1", libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 64},
            libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_NON_SHARED_DISK,
        )
        took_s = time.monotonic() - started
        stats = ddom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        print(f"\nmigrate3 {took_s:.1f} s, libvirt: elapsed {stats.get('time_elapsed')} ms, "
              f"downtime {stats.get('downtime')} ms, iterations {stats.get('memory_iteration')}")
        assert ddom.isActive() and ddom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert not dom.isActive()
        assert read_guest_workload(ddom)["dirty_rate_Bps"] == DIRTY_RATE_BPS
        # The guest lives on: 3 more CHECK lines, all ok, from the destination.
        for _ in range(3):
            line = wait_for_console(GUEST, lambda ln: ln.kind == "CHECK" and ln.line_no > before, 30,
                                    testbed=testbed)
            assert line.values["mem"] == "ok" and line.values["disk"] == "ok", line.raw
            before = line.line_no
        errors = [ln.raw for ln in console_lines(GUEST, testbed=testbed) if ln.kind == "ERROR"]
        assert not errors
        rates = _rates_after(GUEST, testbed, before, 2, 15)
        assert rates[-1]["mem_Bps"] == pytest.approx(DIRTY_RATE_BPS, rel=0.15)
    finally:
        src.close()
        dst.close()


def test_bad_guest_input_is_a_user_error(testbed):
    from simkvm.testbed import define_guest

    with pytest.raises(UserError, match="working set"):
        define_guest("too-big", 256 * MiB, 64 * MiB, wss_bytes=512 * MiB, testbed=testbed)
    with pytest.raises(UserError, match="pattern"):
        define_guest("bad-pattern", 256 * MiB, 64 * MiB, pattern="zigzag", testbed=testbed)


def test_down_leaves_no_process_mount_or_file(testbed, guest):
    """Last in the file: down with a guest still running (the fixture's final
    down is then a no-op; a later test would get a fresh up)."""
    hosts = list(testbed.iter_hosts())
    namespaces = {h.mnt_ns for h in hosts}
    pids = {h.libvirtd_pid for h in hosts} | {h.virtlogd_pid for h in hosts if h.virtlogd_pid}
    root_mounts_before = open("/proc/self/mounts").read()
    testbed.down()
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.readlink(f"/proc/{entry}/ns/mnt")
            comm = open(f"/proc/{entry}/comm").read().strip()
        except OSError:
            continue
        # Only ours: other testbeds (another session, a developer's) may run.
        if ns in namespaces or int(entry) in pids:
            alive.append((entry, comm))
    assert alive == []
    assert open("/proc/self/mounts").read() == root_mounts_before
    assert "/var/lib/libvirt" not in {line.split()[1] for line in root_mounts_before.splitlines()}
    for port in (testbed.specs["a"].tcp_port, testbed.specs["b"].tcp_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
    assert not testbed.state_file.exists()
    assert not (testbed.state_dir / "hosts").exists()
    assert not testbed.console_dir.exists()
