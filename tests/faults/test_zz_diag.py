"""Temporary diagnosis of the 40 s link cut (not committed)."""
import os, signal, subprocess, sys, time, json
import pytest
from faultlib import PLAN, Migration
from test_faults import _wait_ram_copy, linked  # noqa: F401

pytestmark = [pytest.mark.testbed, pytest.mark.faults]


def test_diag_cut40(linked, fault_guest, tmp_path):
    name = fault_guest("f-diag40")
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    os.environ["PYTHONFAULTHANDLER"] = "1"
    mig = Migration(linked, name, tmp_path, PLAN, "--migrate-uri", linked.migration_uri("b"))
    _wait_ram_copy(linked, name, mig)
    t0 = time.monotonic()
    linked.link().cut()
    log = []
    def virsh(host, *args):
        return subprocess.run(["virsh", "-c", linked.uri(host), *args], capture_output=True, text=True, timeout=20).stdout
    try:
        for _ in range(8):
            time.sleep(5)
            log.append((round(time.monotonic() - t0, 1), "cut", virsh("a", "domjobinfo", name)[:400]))
    finally:
        linked.link().restore()
    for _ in range(30):
        if mig.proc.poll() is not None:
            break
        time.sleep(5)
        try:
            log.append((round(time.monotonic() - t0, 1), "restored", virsh("a", "domjobinfo", name)[:600]))
        except subprocess.TimeoutExpired:
            log.append((round(time.monotonic() - t0, 1), "restored", "virsh domjobinfo timed out"))
    if mig.proc.poll() is None:
        mig.proc.send_signal(signal.SIGABRT)
        time.sleep(2)
    out, err = mig.proc.communicate(timeout=60)
    with open("/tmp/faults-work/diag40.txt", "w") as f:
        for row in log:
            f.write(f"{row}\n")
        f.write("STDERR\n" + err[-20000:] + "\nSTDOUT\n" + out[-3000:])
    ss = subprocess.run(["ip", "netns", "exec", linked.link().netns("a"), "ss", "-tni"], capture_output=True, text=True).stdout
    with open("/tmp/faults-work/diag40.txt", "a") as f:
        f.write("\nSS a\n" + ss)
