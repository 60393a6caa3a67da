"""The real two-host testbed: hosts, guest workload, a live migration, teardown.

Each test checks a claim the executor relies on, against the real thing:
up is idempotent, the hosts are distinct to libvirt, the guest dirties memory
and disk at the rates it was asked for (measured from inside the guest), a
non-shared-storage live migration a -> b completes and the guest's canaries
stay intact on the destination, and down leaves nothing behind.
"""
from __future__ import annotations

import math
import os
import socket
import statistics
import time

import pytest
from testbed_limits import BOOT_TIMEOUT_S

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


def test_unknown_stack_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    from simkvm.testbed.hosts import Testbed

    with pytest.raises(UserError, match="unknown testbed stack '9.9'; the stacks are debian12"):
        Testbed(tmp_path / "tb", stack="9.9")
    env = {**os.environ, "SIMKVM_TESTBED_DIR": str(tmp_path / "tb")}
    proc = subprocess.run([sys.executable, "-m", "simkvm", "testbed", "up", "--stack", "9.9"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "unknown testbed stack" in proc.stderr


def test_status_shows_two_distinct_hosts(testbed):
    status = testbed.status()
    hosts = status["hosts"]
    # The daemons answering are the stack's: QEMU 7.2 / libvirt 9.0 or QEMU 10.0 / libvirt 11.3.
    expected = {"7.2": ("7.2.", "9.0."), "10.0": ("10.0.", "11.3.")}[testbed.stack.qemu]
    assert status["stack"]["name"] == testbed.stack.name
    assert all(h["stack"] == testbed.stack.name for h in hosts)
    assert all(h["qemu_version"].startswith(expected[0]) and h["libvirt_version"].startswith(expected[1])
               for h in hosts), [(h["qemu_version"], h["libvirt_version"]) for h in hosts]
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
    ready = wait_ready(GUEST, BOOT_TIMEOUT_S, testbed=tb)
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
    # It boots (READY) well within the fixture's timeout; the seconds it takes depend on the machine's load.
    assert guest["boot_s"] < BOOT_TIMEOUT_S
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


def _listeners(pids: set[int]) -> list[str]:
    """Local addresses ("127.0.0.1:52650") of the TCP sockets ``pids`` listen on (ss)."""
    import re
    import subprocess

    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.append(line.split()[3])
    return found


def test_libvirtd_refuses_unprivileged_users(testbed):
    """libvirtd is root-equivalent: only root may connect (issue 10: with auth_tcp = "none" on a TCP port,
    `nobody` could define pools over /root). Its socket is mode 0700 and it has no TCP listener."""
    import subprocess

    sock = testbed.specs["a"].socket
    probe = ["/usr/bin/python3", "-c",
             "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1]); print('connected')", sock]
    assert subprocess.run(probe, capture_output=True, text=True, timeout=30).stdout.strip() == "connected"
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    refused = subprocess.run(nobody + probe, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "PermissionError" in refused.stderr, refused.stderr
    virsh = subprocess.run(nobody + ["virsh", "-c", testbed.uri("a"), "list", "--all"],
                           capture_output=True, text=True, timeout=30)
    assert virsh.returncode != 0 and "Permission denied" in virsh.stderr, virsh.stderr
    libvirtds = {h.libvirtd_pid for h in testbed.iter_hosts()}
    assert len(libvirtds) == 2 and _listeners(libvirtds) == []


def test_destination_listens_on_the_testbed_address_only(testbed, guest_factory):
    """During a migration by simkvm's executor the destination QEMU listens for the migration stream and
    serves the disk over NBD (writable, no auth): both on the address migrated to, never on every
    interface (libvirt's default is 0.0.0.0)."""
    import threading

    from simkvm.executor import execute
    from simkvm.model.plan import Plan
    from simkvm.testbed.proc import comm, pids_in_ns

    # The listeners live from the destination's prepare until the source connects (migration stream)
    # or the disk mirror ends (NBD). (2 MiB/s of 4 KiB writes over 32 MiB at 8 MiB/s never let QEMU
    # 10's mirror get ready in 300 s: each write dirties a whole mirror chunk.)
    name = guest_factory("tb-listen", 256 * MiB, 64 * MiB, disk_write_rate_Bps=1 * MiB)
    b_ns = next(h.mnt_ns for h in testbed.iter_hosts() if h.name == "b")
    plan = Plan.from_dict({"name": "listen", "link": {"bandwidth": "16MiB/s"},
                           "migration": {"max_downtime": "300ms", "max_time": "300s"}})
    def qemus_on_b() -> set[int]:
        return {p for p in pids_in_ns(b_ns) if comm(p).startswith("qemu-system")}

    before = qemus_on_b()  # guests an earlier test migrated to b
    results: list = []
    thread = threading.Thread(target=lambda: results.append(
        execute(plan, name, testbed.uri("a"), testbed.uri("b"), migrate_uri=testbed.migration_uri("b"))))
    thread.start()
    seen: set[str] = set()
    incoming: set[int] = set()
    while thread.is_alive():
        if not incoming:  # scanning /proc is slow on a loaded machine: find the incoming QEMU once
            incoming = qemus_on_b() - before
        seen.update(_listeners(incoming))
        time.sleep(0.05)
    thread.join()
    assert results and results[0].converged
    ports = testbed.specs["b"]
    address = testbed.migration_uri("b").removeprefix("tcp://")
    # The migration stream and the NBD export: two listeners, in b's port range, on b's address.
    assert len(seen) >= 2, seen
    assert all(addr.rsplit(":", 1)[0] == address for addr in seen), seen
    assert all(ports.migration_port_min <= int(addr.rsplit(":", 1)[1]) <= ports.migration_port_max
               for addr in seen), seen


def test_guest_kernel_turns_huge_pages_on_where_the_model_says(testbed, guest_factory):
    """The guest kernel is the oracle for simkvm.guestos.thp_enabled(): at the largest RAM the model
    says THP is off (hugepage_init(): under 512 MiB managed when the initcalls run) the guest reports
    THP "never" and min_free_kbytes = sqrt(16 x lowmem KiB) (init_per_zone_wmark_min()); at the
    smallest it says on, "always" and khugepaged's raise (several times that)."""
    from simkvm.guestos import thp_enabled
    from simkvm.testbed.guest import console_lines

    sizes = [m * MiB for m in range(480, 705, 8)]
    first_on = next(m for m in sizes if thp_enabled(m))
    for memory, on in ((first_on - 8 * MiB, False), (first_on, True)):
        name = guest_factory(f"tb-thp-{memory // MiB}", memory, 32 * MiB, wss_bytes=8 * MiB)
        ready = console_lines(name, kind="READY", testbed=testbed)[-1].values
        sqrt_rule_kb = math.sqrt(16 * ready["mem_total"] / 1024)
        print(f"\n{memory // MiB} MiB: MemTotal {ready['mem_total'] / MiB:.1f} MiB, THP {ready['thp']}, "
              f"min_free_kbytes {ready['min_free_kb']:.0f} (sqrt rule {sqrt_rule_kb:.0f}), model {'on' if on else 'off'}")
        if on:
            assert ready["thp"] == "always" and ready["min_free_kb"] > 4 * sqrt_rule_kb
        else:
            assert ready["thp"] == "never"
            assert ready["min_free_kb"] == pytest.approx(sqrt_rule_kb, rel=0.05)


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
    for spec in testbed.specs.values():
        with socket.socket(socket.AF_UNIX) as s:
            assert s.connect_ex(spec.socket) != 0
    assert not testbed.state_file.exists()
    assert not (testbed.state_dir / "hosts").exists()
    assert not testbed.console_dir.exists()
