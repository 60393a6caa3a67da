"""Faults injected into real migrations on the testbed (issue 10): the VM ends on exactly one host
(or is lost only when the fault itself destroyed it), simkvm's message is true, the guest's canaries
pass where it runs, and ``simkvm recover`` leaves nothing behind.

Each test is one run; ``SIMKVM_FAULT_RUNS=N`` repeats each N times and ``scripts/fault_campaign.py``
prints the table of the README from the runs' records.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any, Callable

import pytest

from faultlib import (GUEST, MiB, PLAN, Migration, block_nodes, fail_if_guest_crashed, fill_pool, guest_health,
                      guest_qemu, kill_libvirtd, on_event, pool_free, record, restart_libvirtd, running_hosts,
                      settled, stop_libvirtd, truth, unfill_pool, volumes, wait_job)

pytestmark = [pytest.mark.testbed, pytest.mark.slow, pytest.mark.faults]
RUNS = range(int(os.environ.get("SIMKVM_FAULT_RUNS", "1")))
#: Only in the campaign (scripts/fault_campaign.py sets SIMKVM_FAULT_RUNS) or with SIMKVM_FAULTS=all: the
#: control, faults not yet seen to pass twice (two migrations at once, the link cut), and the Ctrl-C delays
#: beyond the first ms, so CI stays within its time budget (each run is ~30 s).
campaign_only = pytest.mark.skipif(
    "SIMKVM_FAULT_RUNS" not in os.environ and os.environ.get("SIMKVM_FAULTS") != "all",
    reason="fault campaign only (scripts/fault_campaign.py, or SIMKVM_FAULTS=all)")


def message_true(said: str, seen: dict[str, str]) -> bool:
    """Does simkvm's location sentence match where the guest's QEMU really runs?"""
    a, b = seen["a"], seen["b"]
    if said.startswith("running on the source"):
        return a == "running" and b != "running"
    if said.startswith("running on the destination"):
        return b == "running" and a != "running"
    if said.startswith("RUNNING ON BOTH"):
        return a == b == "running"
    if said.startswith(("paused on the source", "frozen on the source")):
        return a == "paused" and b != "running"
    if said.startswith("paused on the destination"):
        return b == "paused" and a != "running"
    if said.startswith(("unknown", "unclear")):
        return True  # honest: it says it does not know, and how to find out
    if said.startswith("not running"):
        return a != "running" and b != "running"
    return False


def check(testbed: Any, name: str, mig: Migration, fault: str, *, restart: tuple[str, ...] = (),
          lost_ok: bool = False, settle: Callable[[], dict[str, Any]] | None = None) -> None:
    """After the fault: simkvm ended with a true message and a JSON result; recover settles everything.
    ``settle``: what ends the fault once simkvm's message is judged (before recover runs); what it returns
    is recorded too."""
    from simkvm.executor.recover import recover

    code = mig.finish()
    elapsed = time.monotonic() - mig.started
    try:
        said, json_ok = mig.said, True
        mig.result  # noqa: B018 - parses
    except ValueError:
        said, json_ok = mig.err.strip().splitlines()[-1] if mig.err.strip() else "", False
    for host in restart:
        restart_libvirtd(testbed, host)
    seen = truth(testbed, name)
    true = message_true(said, seen) if json_ok else False
    settled_fields = settle() if settle is not None else {}
    rec = recover(name, testbed.uri("a"), testbed.uri("b"), journal_dir=mig.state_dir / "journal")
    place = settled(testbed, name)
    after, running, leftovers = place.after, place.running, place.leftovers
    health = guest_health(testbed, name, running, after)
    canary, crash = health["canaries"], health["guest_crash"]
    record(fault, code=code, elapsed_s=round(elapsed, 1), said=said[:160], truth=seen, after_recover=after,
           message_true=true, json=json_ok, recover_ok=rec.ok, recover=rec.lines(), leftovers=leftovers, **health,
           location=place.location, **settled_fields)
    detail = (f"simkvm said {said!r}; truth {seen}; after recover {after}; recover: {rec.lines()}; "
              f"stderr {mig.err[-800:]}")
    if not (lost_ok and not running):
        fail_if_guest_crashed(crash, detail)
    assert json_ok, detail
    assert true, detail
    if lost_ok and not running:
        return
    assert len(running) == 1, detail
    assert not leftovers, f"{leftovers}: {detail}"
    assert rec.ok, detail
    assert canary == "ok", f"canaries {canary}: {detail}"


def on_destination_resume(testbed: Any, name: str, action: Callable[[], None]) -> Callable[[], None]:
    """Run ``action`` (in libvirt's event thread) the moment host b resumes guest ``name``; returns a stopper."""
    import libvirt

    return on_event(testbed, "b", name, libvirt.VIR_DOMAIN_EVENT_RESUMED, action)


# ------------------------------------------------------------------ no fault: the control
@campaign_only
@pytest.mark.parametrize("run", RUNS)
def test_no_fault_control(testbed, fault_guest, tmp_path, run):
    """The same guest and plan migrated without a fault: how often the testbed alone loses a guest (QEMU
    7.2 TCG's lost dirty pages panic it on the destination now and then), to read the faults' rows against."""
    name = fault_guest("f-control")
    mig = Migration(testbed, name, tmp_path)
    mig.proc.wait(150)
    check(testbed, name, mig, "no fault (control)")


# ------------------------------------------------------------------ the executor killed (defect 4)
@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("phase", ["prepare", "copy", "ram", "switchover", "resumed"])
def test_executor_sigkill_then_recover(testbed, fault_guest, tmp_path, phase, run):
    """SIGKILL of simkvm migrate: after it created the destination's images (prepare), during the disk
    mirror (copy), the RAM copy, at the switchover, and right after the destination resumed the VM."""
    name = fault_guest(f"f-kill-{phase}")
    stopper = None
    mig = Migration(testbed, name, tmp_path)
    if phase == "resumed":
        stopper = on_destination_resume(testbed, name, lambda: mig.proc.send_signal(signal.SIGKILL))
    try:
        if phase == "prepare":
            mig.wait_step("created_disk")
        elif phase == "copy":
            mig.wait_step("migrate3")
            time.sleep(1.5)
        elif phase == "ram":
            _wait_ram_copy(testbed, name, mig)
        elif phase == "switchover":
            mig.wait_step("switchover")
        if phase != "resumed":
            mig.proc.send_signal(signal.SIGKILL)
        mig.proc.wait(120)
    finally:
        if stopper:
            stopper()
    check_killed(testbed, name, mig, f"executor SIGKILL ({phase})")


def check_killed(testbed: Any, name: str, mig: Migration, fault: str) -> None:
    """A SIGKILLed executor prints nothing: only recover's result is judged."""
    from simkvm.executor.recover import recover

    mig.finish()
    seen = truth(testbed, name)
    rec = recover(name, testbed.uri("a"), testbed.uri("b"), journal_dir=mig.state_dir / "journal")
    place = settled(testbed, name)
    after, running, leftovers = place.after, place.running, place.leftovers
    health = guest_health(testbed, name, running, after)
    canary, crash = health["canaries"], health["guest_crash"]
    record(fault, code=mig.proc.returncode, said="(killed: none)", truth=seen, after_recover=after,
           message_true=rec.location.startswith(f"running on the {'source' if running == ['a'] else 'destination'}"),
           json=None, recover_ok=rec.ok, recover=rec.lines(), leftovers=leftovers, **health,
           location=place.location)
    detail = f"before recover {seen}; after {after}; recover: {rec.lines()}"
    fail_if_guest_crashed(crash, detail)
    assert len(running) == 1, detail
    assert not leftovers, f"{leftovers}: {detail}"
    assert rec.ok, detail
    assert canary == "ok", f"canaries {canary}: {detail}"


# ------------------------------------------------------------------ the destination's libvirtd (defects 1, 2)
@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("moment", ["mirror", "ram", "resume"])
def test_destination_libvirtd_killed(testbed, fault_guest, tmp_path, moment, run):
    name = fault_guest(f"f-dkill-{moment}")
    stopper = None
    mig = Migration(testbed, name, tmp_path)
    if moment == "resume":
        stopper = on_destination_resume(testbed, name, lambda: kill_libvirtd(testbed, "b"))
    try:
        if moment == "mirror":
            mig.wait_step("migrate3")
            time.sleep(0.8)
            kill_libvirtd(testbed, "b")
        elif moment == "ram":
            _wait_ram_copy(testbed, name, mig)
            kill_libvirtd(testbed, "b")
        mig.proc.wait(150)
    finally:
        if stopper:
            stopper()
    check(testbed, name, mig, f"destination libvirtd killed ({moment})", restart=("b",))


def _wait_ram_copy(testbed: Any, name: str, mig: Migration, timeout_s: float = 60) -> None:
    """Until the source's job shows RAM being copied (memory_iteration >= 1), and 0.3 s more."""
    wait_job(testbed, name, mig, lambda st: st.get("memory_iteration", 0) >= 1, "the RAM copy", timeout_s)
    time.sleep(0.3)


@pytest.mark.parametrize("run", RUNS)
def test_destination_libvirtd_frozen(testbed, fault_guest, tmp_path, run):
    """SIGSTOP b's libvirtd during the RAM copy: simkvm ends on its own (keepalive, downtime bound), well
    before the freeze ends, with a true message; after SIGCONT recover settles it."""
    name = fault_guest("f-freeze")
    mig = Migration(testbed, name, tmp_path)
    _wait_ram_copy(testbed, name, mig)
    pid = testbed.host_state("b").libvirtd_pid
    os.kill(pid, signal.SIGSTOP)
    try:
        mig.proc.wait(120)  # the freeze lasts until simkvm has ended (or 120 s: a hang)
        ended = time.monotonic() - mig.started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert ended < 110
    check(testbed, name, mig, "destination libvirtd frozen (SIGSTOP)")


# ------------------------------------------------------------------ QEMU processes killed (defect 7)
@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("moment", ["copy", "resumed"])
def test_destination_qemu_killed(testbed, fault_guest, tmp_path, moment, run):
    name = fault_guest(f"f-dqemu-{moment}")
    mig = Migration(testbed, name, tmp_path)
    stopper = None
    killed_at: list[float] = []

    def kill_destination_qemu() -> None:
        pid = guest_qemu(testbed, "b", name)
        if pid:
            os.kill(pid, signal.SIGKILL)
            killed_at.append(time.time())

    if moment == "resumed":
        stopper = on_destination_resume(testbed, name, kill_destination_qemu)
    try:
        if moment == "copy":
            mig.wait_step("migrate3")
            time.sleep(1.5)
            pid = guest_qemu(testbed, "b", name)
            assert pid, "no incoming QEMU on b"
            os.kill(pid, signal.SIGKILL)
        mig.proc.wait(150)
    finally:
        if stopper:
            stopper()
    returned_at = mig.step_at("migrate3_returned")
    if moment == "resumed" and killed_at and returned_at is not None and killed_at[0] > returned_at:
        # libvirt's RESUMED event reached the test only after migrate3 had returned, i.e. while or after simkvm
        # checked the destination (7 ms later): the kill did not come at the resume, and whether simkvm's check
        # saw it cannot be told, so the run says nothing about simkvm (seen in CI, 2026-12-01)
        pytest.skip(f"fault missed its moment: the destination QEMU was killed "
                    f"{killed_at[0] - returned_at:.3f} s after migrate3 returned")
    check(testbed, name, mig, f"destination QEMU killed ({moment})", lost_ok=moment == "resumed")


@pytest.mark.parametrize("run", RUNS)
def test_source_qemu_killed(testbed, fault_guest, tmp_path, run):
    """The source QEMU dies mid-copy: the guest is gone (the fault destroyed it); simkvm says so, leaves
    no half-made copy on b."""
    name = fault_guest("f-sqemu")
    mig = Migration(testbed, name, tmp_path)
    mig.wait_step("migrate3")
    time.sleep(1.5)
    os.kill(guest_qemu(testbed, "a", name), signal.SIGKILL)
    mig.proc.wait(150)
    check(testbed, name, mig, "source QEMU killed (copy)", lost_ok=True)
    assert f"{name}.qcow2" not in volumes(testbed, "b")


# ------------------------------------------------------------------ the rest
@campaign_only
@pytest.mark.parametrize("run", RUNS)
def test_two_migrations_of_one_vm_at_once(testbed, fault_guest, tmp_path, run):
    name = fault_guest("f-twice")
    first = Migration(testbed, name, tmp_path / "1")
    first.wait_step("migrate3")
    second = Migration(testbed, name, tmp_path / "2")
    code2 = second.finish()
    assert code2 == 1, second.err
    # the second one must not have touched the first's images, and says the VM is where it is
    check(testbed, name, first, "two migrations at once")


@pytest.mark.parametrize("run", RUNS)
def test_destination_disk_full_mid_mirror(testbed, fault_guest, tmp_path, run):
    """Defect 5's fault: the destination pool fills while the mirror writes into it (here another
    volume takes all but 256 KiB of b's 48 MiB pool once the mirror has copied 1 MiB; the guest keeps
    writing its disk). The check before the copy passed (the 32 MiB disk fitted): the copy must fail
    cleanly, the VM stay on a, and our half-written image on b go."""
    testbed.up({"a": 4 * 2**30, "b": 48 * MiB})
    name = fault_guest("f-full")
    assert pool_free(testbed, "b") >= GUEST["disk_bytes"]
    mig = Migration(testbed, name, tmp_path, PLAN.replace("16MiB/s", "4MiB/s"))
    try:
        wait_job(testbed, name, mig, lambda st: st.get("disk_processed", 0) >= MiB, "the disk mirror")
        fill_pool(testbed, "b", leave_bytes=256 * 1024)
        mig.proc.wait(150)
    finally:
        unfill_pool(testbed, "b")
    check(testbed, name, mig, "destination disk full (mirror)")


@pytest.mark.parametrize("run", RUNS)
def test_source_libvirtd_restarted(testbed, fault_guest, tmp_path, run):
    """The source's libvirtd restarted (SIGTERM, then started again, as a service manager's restart) during
    the RAM copy: the job is lost with the connection; libvirt finds its QEMU again; the VM runs on a."""
    name = fault_guest("f-srestart")
    mig = Migration(testbed, name, tmp_path)
    _wait_ram_copy(testbed, name, mig)
    stop_libvirtd(testbed, "a")
    restart_libvirtd(testbed, "a")
    mig.proc.wait(150)
    check(testbed, name, mig, "source libvirtd restarted (RAM copy)")


@pytest.fixture
def linked(testbed):
    """The session testbed restarted with a link between the hosts (`up --link`), loopback again after."""
    testbed.down()
    testbed.up(link=True)
    yield testbed
    try:
        testbed.link().restore()
    finally:
        testbed.down()
        testbed.up()


def ending_bound_s(max_time_s: float) -> float:
    """When simkvm must have ended, whatever the network does (README "Faults"): the plan's max time, libvirt's
    cancel (CANCEL_WAIT_S), then asking both hosts and cleaning up (each question bounded; seconds here)."""
    from simkvm.executor.run import CANCEL_WAIT_S

    return max_time_s + CANCEL_WAIT_S + 30


def wait_bounded(mig: Migration, bound_s: float, fault: str) -> float:
    """Wait for simkvm until its bound (+10 s); a run that outlives it is recorded as a hang, killed, and fails."""
    try:
        mig.proc.wait(max(bound_s + 10 - (time.monotonic() - mig.started), 1))
    except subprocess.TimeoutExpired:
        mig.proc.kill()
        mig.finish(30)
        record(fault, code=None, elapsed_s=None, said="(still running: killed)", location="hang",
               message_true=False, json=False, leftovers=[], canaries="-", stderr=mig.err[-2000:])
        pytest.fail(f"simkvm still ran {bound_s + 10:.0f} s after it started (its bound {bound_s:.0f} s): "
                    f"{mig.err[-1500:]}")
    return time.monotonic() - mig.started


@campaign_only
@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("cut_s", [0, 5, 40])
def test_link_cut_and_restored(linked, fault_guest, tmp_path, cut_s, run):
    """The link between the hosts cut during the RAM copy and restored ``cut_s`` later: the migration
    either resumes and completes (VM on b) or is given up at the plan's max time (VM on a), and simkvm
    says which within its bound. 0: no cut, the control of migrating over the link."""
    fault = f"link cut for {cut_s} s (RAM copy), restored" if cut_s else "over the link, no cut (control)"
    name = fault_guest(f"f-cut{cut_s}")
    mig = Migration(linked, name, tmp_path, PLAN, "--migrate-uri", linked.migration_uri("b"))
    if cut_s:
        _wait_ram_copy(linked, name, mig)
        linked.link().cut()
        try:
            mig.proc.wait(cut_s)
        except subprocess.TimeoutExpired:
            pass
        finally:
            linked.link().restore()
    bound = ending_bound_s(90)
    ended = wait_bounded(mig, bound, fault)
    check(linked, name, mig, fault)
    assert ended <= bound, f"simkvm ended {ended:.0f} s after it started, beyond its bound {bound:.0f} s"


@campaign_only
@pytest.mark.parametrize("run", RUNS)
def test_link_cut_until_simkvm_ends(linked, fault_guest, tmp_path, run):
    """The link cut during the RAM copy, for good: the migration cannot finish, so simkvm gives up at the plan's
    max time (30 s here), cancels, and ends within its bound saying the VM is on the source: running, or frozen
    with the command that frees it (QEMU 7.2: libvirt's cancel leaves the source QEMU waiting for NBD replies
    that never come; simkvm/executor/unfreeze.py). Then, the link still cut, an operator's recover: plainly it
    must say frozen too (libvirt's "running" is not taken for it); with --reset-stuck-connections, run here (the
    source host's machine, as root), the same QEMU runs the guest again (no reboot), canaries ok, nothing left."""
    fault = "link cut until simkvm ended (RAM copy; max_time 30 s)"
    name = fault_guest("f-cutkept")
    qemu_a = guest_qemu(linked, "a", name)
    mig = Migration(linked, name, tmp_path, PLAN.replace("max_time: 90s", "max_time: 30s"),
                    "--migrate-uri", linked.migration_uri("b"))
    _wait_ram_copy(linked, name, mig)
    linked.link().cut()
    bound = ending_bound_s(30)
    seen: dict[str, Any] = {}

    def operator_recovers() -> dict[str, Any]:
        """recover as the message says, the link still cut: plainly first, then with the reset."""
        from simkvm.executor.recover import recover

        journal = mig.state_dir / "journal"
        seen["frozen"] = truth(linked, name)["a"] == "paused"
        plain = recover(name, linked.uri("a"), linked.uri("b"), journal_dir=journal)
        t = time.monotonic()
        reset = recover(name, linked.uri("a"), linked.uri("b"), journal_dir=journal, reset_stuck_connections=True)
        seen.update(plain=plain.location, reset_s=time.monotonic() - t)
        while running_hosts(linked, name) != ["a"] and time.monotonic() - t < 90:
            time.sleep(1)
        seen.update(ran_again_s=time.monotonic() - t, same_qemu=guest_qemu(linked, "a", name) == qemu_a)
        return {"source_frozen_before_recover": seen["frozen"], "plain_recover": plain.lines(),
                "reset_recover": reset.lines(), "reset_recover_s": round(seen["reset_s"], 1),
                "source_ran_again_s": round(seen["ran_again_s"], 1), "same_qemu": seen["same_qemu"]}

    try:
        ended = wait_bounded(mig, bound, fault)
        check(linked, name, mig, fault, settle=operator_recovers)
    finally:
        linked.link().restore()
    said = mig.result["measurement"]["vm_location"]
    assert said.startswith(("running on the source", "frozen on the source")), said
    assert ended <= bound, f"simkvm ended {ended:.0f} s after it started, beyond its bound {bound:.0f} s"
    if said.startswith("frozen"):
        assert "--reset-stuck-connections" in said, said
    if seen["frozen"]:
        assert seen["plain"].startswith("frozen on the source"), f"recover called a frozen source {seen['plain']!r}"
    assert seen["same_qemu"], "the source's QEMU is not the one that ran the guest before: it was restarted"
    # nothing of the cancelled migration is left in libvirt or in QEMU, so the VM can be migrated again
    assert _no_job(linked, name), "a migration job is left on a host"
    left = [n for n in block_nodes(linked, "a", name) if n.startswith("migration-")]
    assert not left, f"the cancelled mirror's block nodes are left in the source QEMU: {left}"


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("delay_ms", [0, pytest.param(30, marks=campaign_only), pytest.param(300, marks=campaign_only)])
def test_ctrl_c_at_the_switchover(testbed, fault_guest, tmp_path, delay_ms, run):
    """Defect 3: SIGINT ``delay_ms`` after the source paused the guest for the switchover (0: in libvirt's
    event thread, as the event arrives). simkvm lets the switchover end (at most the downtime bound), says
    where the VM is, exits without a traceback and leaves no job behind: a second migration works."""
    import libvirt

    name = fault_guest(f"f-intr{delay_ms}")
    mig = Migration(testbed, name, tmp_path)
    stopper = on_event(testbed, "a", name, libvirt.VIR_DOMAIN_EVENT_SUSPENDED,
                       lambda: mig.proc.send_signal(signal.SIGINT), delay_s=delay_ms / 1000)
    try:
        mig.proc.wait(150)
    finally:
        stopper()
    assert stopper.fired.is_set(), "the guest never paused for a switchover"  # type: ignore[attr-defined]
    check(testbed, name, mig, f"Ctrl-C {delay_ms} ms into the switchover")
    assert "Traceback" not in mig.err, mig.err[-1500:]
    assert _no_job(testbed, name), "a migration job is left on a host"


def _no_job(testbed: Any, name: str) -> bool:
    """No migration job on the host that runs the guest (a stuck one blocks every later migration)."""
    import libvirt

    for host in ("a", "b"):
        conn = testbed.connect(host)
        try:
            dom = conn.lookupByName(name)
            if dom.isActive() and dom.jobInfo()[0] not in (libvirt.VIR_DOMAIN_JOB_NONE,
                                                           libvirt.VIR_DOMAIN_JOB_COMPLETED):
                return False
        except libvirt.libvirtError:
            pass
        finally:
            conn.close()
    return True
