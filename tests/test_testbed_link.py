"""The testbed's link (`simkvm testbed up --link`): hosts in their own network namespaces, a veth
pair between them that tc shapes and that can be cut and restored.

Oracles: the kernel's view (each libvirtd's network namespace, whether a TCP SYN from a's namespace
reaches b's address), and a real migration whose RAM goes at the shaped rate, not at the rate QEMU
was allowed. Runs on each stack of the session testbed, which it restarts with a link and leaves on
loopback again.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from testbed_limits import BOOT_TIMEOUT_S

pytestmark = pytest.mark.testbed

MiB = 2**20


@pytest.fixture(scope="module")
def linked(_testbed_session):
    tb = _testbed_session
    tb.down()
    tb.up(link=True)
    yield tb
    tb.down()
    tb.up()  # loopback again, as every other testbed test expects


def _reach(tb, port: int = 9, timeout_s: float = 2.0) -> str:
    """From host a's network namespace, connect to host b's address: "refused" (b's kernel answered:
    the link carries packets), "timeout" (nothing came back) or "connected"."""
    code = ("import socket, sys\n"
            "try:\n"
            "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))\n"
            "    print('connected')\n"
            "except ConnectionRefusedError:\n"
            "    print('refused')\n"
            "except OSError:\n"
            "    print('timeout')\n")
    out = subprocess.run(["ip", "netns", "exec", tb.link().netns("a"), sys.executable, "-c", code,
                          tb.link().address("b"), str(port), str(timeout_s)],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def test_hosts_have_their_own_network_namespaces(linked):
    hosts = list(linked.iter_hosts())
    namespaces = {os.readlink(f"/proc/{h.libvirtd_pid}/ns/net") for h in hosts}
    assert len(namespaces) == 2 and os.readlink("/proc/self/ns/net") not in namespaces
    status = linked.status()
    assert status["link"]["up"] and status["link"]["carrier"]
    assert linked.migration_uri("b") == f"tcp://{linked.link().address('b')}"
    assert linked.migration_uri("b") != "tcp://127.0.0.1"


def test_link_cut_and_restore(linked):
    assert _reach(linked) == "refused"
    linked.link().cut()
    try:
        assert linked.status()["link"]["carrier"] is False
        assert _reach(linked) == "timeout"
    finally:
        linked.link().restore()
    assert _reach(linked) == "refused"


def test_migration_over_a_shaped_link_goes_at_the_link_rate(linked):
    """QEMU may send 64 MiB/s, the link carries 8 MiB/s: the measured RAM rate is the link's."""
    from simkvm.executor import execute
    from simkvm.model.plan import Plan
    from simkvm.testbed import define_guest, remove_guest, wait_ready

    define_guest("tb-link", 256 * MiB, 64 * MiB, replace=True, testbed=linked)
    try:
        wait_ready("tb-link", BOOT_TIMEOUT_S, testbed=linked)
        linked.link().shape(rate_Bps=8 * MiB)
        plan = Plan.from_dict({"name": "link", "link": {"bandwidth": "64MiB/s"},
                               "migration": {"max_downtime": "2s", "max_time": "300s"}})
        result = execute(plan, "tb-link", linked.uri("a"), linked.uri("b"), migrate_uri=linked.migration_uri("b"))
        assert result.converged, result.reason
        rate = result.ram_transferred_bytes / result.precopy_time_s
        print(f"\nRAM over an 8 MiB/s link with QEMU allowed 64 MiB/s: {rate / MiB:.2f} MiB/s")
        assert 0.75 * 8 * MiB < rate < 1.1 * 8 * MiB
    finally:
        linked.link().clear()
        remove_guest("tb-link", testbed=linked)
