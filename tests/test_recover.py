"""`simkvm recover`'s decisions that need no testbed: which leftovers on the destination are ours to remove."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from simkvm.executor.journal import read  # noqa: E402
from simkvm.executor.locate import HostView  # noqa: E402
from simkvm.executor.recover import Recovery, _remove_definition  # noqa: E402


class FakeDomain:
    def __init__(self, active: bool = False) -> None:
        self.active = active
        self.undefined = False

    def isActive(self) -> bool:  # noqa: N802 - libvirt's name
        return self.active

    def undefine(self) -> int:
        self.undefined = True
        return 0


class FakeConn:
    def __init__(self, dom: FakeDomain | None) -> None:
        self.dom = dom

    def lookupByName(self, name: str) -> FakeDomain:  # noqa: N802 - libvirt's name
        if self.dom is None or self.dom.undefined:
            raise libvirt.libvirtError(f"no domain {name}")
        return self.dom


def journal(tmp_path: Path, *records: dict) -> object:
    path = tmp_path / "vm1-20261201T000000-1.jsonl"
    path.write_text("".join(json.dumps({"t": 0, **r}) + "\n" for r in records))
    return read(path)


DST_OFF = HostView("destination", "b", "qemu:///b", "shut off")


def test_an_inactive_definition_the_migration_left_is_removed(tmp_path):
    """Destination libvirtd killed as it resumed the VM: libvirt's Finish phase had persisted the domain
    on b, the VM went back to a; the journal says b had no definition before, so recover removes it."""
    dom = FakeDomain()
    rec = Recovery("vm1")
    job = journal(tmp_path, {"step": "start", "pid": 1}, {"step": "destination_checked", "defined": False},
                  {"step": "migrate3", "persist": True})
    _remove_definition(FakeConn(dom), job, "vm1", DST_OFF, rec)
    assert dom.undefined and not rec.left
    assert rec.done == ["removed the inactive definition of vm1 the failed handover left on b"]


@pytest.mark.parametrize("records,why", [
    ([{"step": "destination_checked", "defined": True}], "it was there before the migration"),
    ([{"step": "migrate3"}], "the journal does not say"),
    (None, "no journal"),
])
def test_a_definition_not_known_to_be_ours_is_kept_and_said(tmp_path, records, why):
    dom = FakeDomain()
    rec = Recovery("vm1")
    job = None if records is None else journal(tmp_path, {"step": "start", "pid": 1}, *records)
    _remove_definition(FakeConn(dom), job, "vm1", DST_OFF, rec)
    assert not dom.undefined and not rec.left and not rec.done
    assert len(rec.found) == 1 and why in rec.found[0] and "virsh -c qemu:///b undefine vm1" in rec.found[0]


@pytest.mark.parametrize("state", ["absent", "running", "paused", "unknown"])
def test_only_a_shut_off_destination_is_touched(tmp_path, state):
    dom = FakeDomain(active=state in ("running", "paused"))
    rec = Recovery("vm1")
    job = journal(tmp_path, {"step": "destination_checked", "defined": False})
    _remove_definition(FakeConn(dom), job, "vm1", HostView("destination", "b", "qemu:///b", state), rec)
    assert not dom.undefined and not rec.found and not rec.done and not rec.left


class RestartingHost:
    """A host whose libvirtd is down for the first ``down`` connection attempts, then knows a paused VM."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.state = (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION)
        self.resumed_over: list[str] = []

    def open(self, uri: str) -> "RestartingHost.Conn":
        if self.down > 0:
            self.down -= 1
            raise libvirt.libvirtError("Failed to connect socket: Connection refused")
        return RestartingHost.Conn(self, alive=True)

    class Conn:
        def __init__(self, host: "RestartingHost", alive: bool) -> None:
            self.host, self.alive = host, alive

        def isAlive(self) -> bool:  # noqa: N802 - libvirt's name
            return self.alive

        def close(self) -> int:
            return 0

        def lookupByName(self, name: str) -> "RestartingHost.Conn":  # noqa: N802 - libvirt's name
            if not self.alive:
                raise libvirt.libvirtError("connection closed")
            return self

        def state(self) -> list[int]:
            return list(self.host.state)

        def resume(self) -> int:
            self.host.state = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_MIGRATION_CANCELED)
            self.host.resumed_over.append("fresh" if self.alive else "dead")
            return 0


def test_a_source_whose_libvirtd_restarts_is_asked_again_and_resumed_over_a_fresh_connection(monkeypatch):
    """The source's libvirtd restarted mid-migration: the executor's connection died with it and the first
    question finds no daemon. settle() asks again until it answers (paused, the migration cancelled), sees
    the destination surely has no copy, and resumes the source over a new connection."""
    from simkvm.executor import locate as loc

    host = RestartingHost(down=2)
    monkeypatch.setattr(libvirt, "open", host.open)
    monkeypatch.setattr(loc, "RECONNECT_EVERY_S", 0.05)
    dead = RestartingHost.Conn(host, alive=False)
    where = loc.Location("vm1", loc.look(dead, "qemu:///a", "vm1", "source", "a"),
                         HostView("destination", "b", "qemu:///b", "absent"), stopped_on_source=False)
    assert where.source.state == "unknown"
    settled = loc.settle(where, dead, window_s=2.0)
    assert settled.source.state == "running" and settled.resumed_source
    assert host.resumed_over == ["fresh"]
    assert settled.text() == "running on the source (a)"


@pytest.mark.parametrize("src_state", ["shut off", "absent"])
def test_a_guest_that_died_on_the_source_during_the_copy_is_said_lost_there(src_state):
    """Source QEMU killed mid-copy: nothing runs anywhere, the guest never stopped for a handover, so the
    source's disks are the current ones (the destination's partial copy goes) and the message says so."""
    from simkvm.executor.locate import Location

    where = Location("vm1", HostView("source", "a", "qemu:///a", src_state),
                     HostView("destination", "b", "qemu:///b", "absent"), stopped_on_source=False)
    assert where.lost_before_handover and not where.on_source
    text = where.text()
    assert text.startswith("not running on either host") and "the source's disks are the current ones" in text
    assert ("virsh -c qemu:///a start vm1" in text) == (src_state == "shut off")


def test_a_guest_lost_after_the_handover_points_at_the_destination():
    """Destination QEMU killed right after the resume: nothing runs, the handover happened: the
    destination's disks may be newer, and nothing is said to be safe to start blindly."""
    from simkvm.executor.locate import Location

    where = Location("vm1", HostView("source", "a", "qemu:///a", "absent"),
                     HostView("destination", "b", "qemu:///b", "shut off"), stopped_on_source=True)
    assert not where.lost_before_handover
    text = where.text()
    assert text.startswith("not running on either host") and "virsh -c qemu:///b start vm1" in text
    assert "qemu:///a start" not in text


def test_a_completed_migration_leaves_recover_nothing_to_move():
    """libvirt undefined the source's definition (VIR_MIGRATE_UNDEFINE_SOURCE): recover used to report the
    failed lookup as an inactive definition left on the source (a leftover that was not there)."""
    from simkvm.executor.recover import _move_definition

    rec = Recovery("vm1")
    _move_definition(FakeConn(None), FakeConn(FakeDomain(active=True)), "vm1",
                     HostView("source", "a", "qemu:///a", "absent"), HostView("destination", "b", "qemu:///b",
                                                                             "running"), rec)
    assert not rec.left and not rec.done


@pytest.mark.parametrize("stopped", [False, True])
def test_a_paused_incoming_copy_cannot_run_until_the_guest_stopped_on_the_source(stopped):
    """The link cut mid-copy: the source runs, the destination holds its paused incoming QEMU. Before the guest
    stopped on the source that copy has no device state (QEMU sends it after the stop) and cannot run: the VM is
    on the source, and the message names the copy to remove. After a stop it may hold the whole guest: never
    called safe."""
    from simkvm.executor.locate import Location

    where = Location("vm1", HostView("source", "a", "qemu:///a", "running"),
                     HostView("destination", "b", "qemu:///b", "paused"), stopped_on_source=stopped)
    assert where.on_source is not stopped
    text = where.text()
    if stopped:
        assert not text.startswith("running on the source")
    else:
        assert text.startswith("running on the source (a)") and "virsh -c qemu:///b destroy vm1" in text


@pytest.mark.parametrize("qemu_answers", [True, False])
def test_recover_takes_a_silent_qemu_for_frozen_not_running(tmp_path, monkeypatch, qemu_answers):
    """The link cut for good (issue 10): libvirt says the source runs the guest, but its QEMU answers no monitor
    command. recover said "running on the source" and ok (libvirt's word); it must say frozen, with the command
    that frees it, and not ok. Both hosts are libvirt's test driver (the source runs "test", the destination is
    empty); only QEMU's silence is a stand-in, as the test driver has no QEMU monitor to freeze."""
    import simkvm.executor.recover as r

    empty = tmp_path / "empty-host.xml"
    empty.write_text("<node/>")
    monkeypatch.setattr(r, "qemu_answers", lambda dom, wait_s=5.0: qemu_answers)
    rec = r.recover("test", "test:///default", f"test://{empty}", journal_dir=tmp_path / "journal")
    if qemu_answers:
        assert rec.ok and rec.location.startswith("running on the source")
        return
    assert not rec.ok, rec.lines()
    assert rec.location.startswith("frozen on the source"), rec.location
    assert any("answers no monitor command" in x for x in rec.found)
    assert any(x.endswith(f"--src test:///default --dst test://{empty} --reset-stuck-connections") for x in rec.left)
    # asked to reset, here where no QEMU of "test" runs: nothing is reset and it says why
    again = r.recover("test", "test:///default", f"test://{empty}", journal_dir=tmp_path / "journal",
                      reset_stuck_connections=True)
    assert not again.ok and again.location.startswith("frozen on the source") and not again.done
    assert any("connections were not reset" in x for x in again.left), again.lines()
