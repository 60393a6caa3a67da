"""`simkvm recover`: after a migration was cut short, find what it left and put things right.

The executor may have been killed at any instant (SIGKILL, a crash) or have
left a state it could not settle (a destination that stopped answering).
``recover(domain, src_uri, dst_uri)`` reads the migration's journal
(:mod:`.journal`: the images it created, whether libvirt's job started) and
asks both hosts (:mod:`.locate`), then acts, only where the answer is sure:

1. a migration job still running on the source whose executor is gone is
   cancelled (``virDomainAbortJob``), and we wait for libvirt to end it;
2. where the VM is decides the rest, with "unknown" never taken for "not there":

   ===========================  ==============================================
   source / destination         action
   ===========================  ==============================================
   running / none               nothing (the VM is on the source)
   paused / none                resume the source
   running or paused / paused   destination paused by an unfinished incoming
   (incoming)                   migration: destroy it there; resume the source
   none or paused / running     the VM is on the destination: destroy the
                                source's paused copy, move a persistent
                                definition left on the source to the destination
   running / running            nothing: two copies; say so (a person decides)
   anything / unknown           nothing on the source; say how to find out
   frozen / none, or unknown    with ``reset_stuck_connections`` (run on the
   and the guest never          source host, as root): destroy the source
   stopped on the source        QEMU's idle connections to the destination
                                (:mod:`.unfreeze`), wait until it answers;
                                without: say "frozen" and that command
   ===========================  ==============================================

   "frozen": libvirt says running, but the QEMU answers no monitor command
   within 5 s (:func:`.locate.qemu_answers`, the executor's own check):
   libvirt's word alone is not taken for a running guest.
3. the journal's images on the destination are deleted once the VM runs on
   the source only (never an image the journal does not name; others are
   listed with the command that deletes them), and so is an inactive
   definition a failed handover left there, when the journal says the
   destination had none before the migration.

Returns a :class:`Recovery`: what was found, what was done, where the VM is,
and ``ok`` (the VM runs on exactly one host and nothing is left over).
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from ..libvirt_api import import_libvirt
from ..model.errors import EnvironmentProblem
from . import unfreeze
from .connection import open_connection
from .flags import default_migrate_uri
from .journal import JobRecord, jobs_for
from .locate import (
    ASK_TIMEOUT_S,
    QEMU_ANSWER_WAIT_S,
    HostView,
    Location,
    Unanswered,
    call_with_timeout,
    look,
    qemu_answers,
    redact_uri,
    stopped_for_switchover,
)

JOB_END_WAIT_S = 60.0
#: After the reset: how long the source QEMU gets to answer again before it is said still frozen.
UNFREEZE_WAIT_S = 60.0


@dataclass
class Recovery:
    domain: str
    found: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # what still needs a person, with the command
    location: str = "unknown"
    ok: bool = False
    journal: str | None = None

    def lines(self) -> list[str]:
        out = [f"journal: {self.journal or 'none found'}"]
        out += [f"found: {x}" for x in self.found]
        out += [f"done: {x}" for x in self.done] or ["done: nothing needed doing"]
        out += [f"left: {x}" for x in self.left]
        out.append(f"VM is {self.location}")
        return out


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"simkvm" in f.read()
    except OSError:
        return True


def _connect(uri: str, role: str) -> Any:
    try:
        return open_connection(uri, role, ASK_TIMEOUT_S)
    except EnvironmentProblem:
        return None


def _ask(fn: Any, what: str) -> Any:
    return call_with_timeout(fn, ASK_TIMEOUT_S, what)


def _hostname(conn: Any, uri: str) -> str:
    if conn is None:
        return redact_uri(uri)
    try:
        return str(_ask(conn.getHostname, "hostname"))
    except Exception:  # noqa: BLE001 - a name for messages only
        return redact_uri(uri)


def recover(domain: str, src_uri: str, dst_uri: str, *, journal_dir: Any = None,
            reset_stuck_connections: bool = False) -> Recovery:
    """Find the migration of ``domain`` from ``src_uri`` to ``dst_uri`` (or its leftovers) and settle it.

    ``reset_stuck_connections``: a source QEMU found frozen is freed by destroying its idle connections to
    the destination (:mod:`.unfreeze`); this process must then run on the source host, as root."""
    libvirt = import_libvirt()

    rec = Recovery(domain)
    jobs = jobs_for(domain, journal_dir)
    job: JobRecord | None = next((j for j in jobs if not j.recovered), jobs[0] if jobs else None)
    if job is not None:
        rec.journal = str(job.path)
        running = _pid_alive(job.pid) and job.pid != os.getpid() and not job.finished
        if running:
            rec.left.append(f"the migration's executor (pid {job.pid}) is still running: let it finish or stop it "
                            f"(kill {job.pid}), then run simkvm recover again")
            rec.location = "being migrated by a running simkvm"
            return rec
        rec.found.append(f"a migration journal with steps {', '.join(dict.fromkeys(job.steps()))}"
                         + ("" if job.finished else " (cut short)"))
    conn, dconn = _connect(src_uri, "source"), _connect(dst_uri, "destination")
    src_name, dst_name = _hostname(conn, src_uri), _hostname(dconn, dst_uri)
    try:
        _end_stale_job(conn, domain, rec)
        src = look(conn, src_uri, domain, "source", src_name)
        dst = look(dconn, dst_uri, domain, "destination", dst_name)
        rec.found.append(f"source {src_name}: {_describe(src)}; destination {dst_name}: {_describe(dst)}")
        frozen = _frozen(conn, domain, src, rec)
        if frozen:
            at = Location(domain, src, dst, stopped_on_source=_stopped(job, src), source_frozen=True)
            if reset_stuck_connections:
                frozen = not _unfreeze(conn, domain, at, job, dst_uri, rec)
                src = look(conn, src_uri, domain, "source", src_name)
            else:
                rec.left.append(f"the source's QEMU is frozen: run as root on {src_name} simkvm recover --domain "
                                f"{domain} --src {redact_uri(src_uri)} --dst {redact_uri(dst_uri)} "
                                f"--reset-stuck-connections")
        elif reset_stuck_connections:
            rec.found.append("the source's QEMU answers: no connection needed resetting")
        src, dst = _settle(conn, dconn, domain, src, dst, rec)
        on_source = src.running and dst.not_running_for_sure and not frozen
        on_dest = dst.running and src.state == "absent"
        # the guest died on the source during the copy (no switchover in the journal, migrate3 never returned
        # a destination domain): b holds a partial copy, the source's disks are the current ones
        returned = job.last("migrate3_returned") if job is not None else None
        lost_in_copy = (job is not None and "switchover" not in job.steps() and not (returned or {}).get("ok")
                        and src.not_running_for_sure and dst.not_running_for_sure)
        location = Location(domain, src, dst, stopped_on_source=not lost_in_copy)
        if frozen:
            location = Location(domain, src, dst, stopped_on_source=_stopped(job, src), source_frozen=True)
        rec.location = location.text()
        if on_source or lost_in_copy:
            _remove_definition(dconn, job, domain, dst, rec)
            _remove_images(dconn, job, domain, dst_uri, rec)
        elif job is not None and job.created_disks and not on_dest:
            rec.left.append("the destination images " + ", ".join(job.created_disks) + " are kept until the VM is "
                            "known to run on the source only; run simkvm recover again then")
        rec.ok = (on_source or on_dest) and not rec.left
    finally:
        for c in (conn, dconn):
            if c is not None:
                try:
                    c.close()
                except libvirt.libvirtError:
                    pass
    if job is not None and rec.ok:
        from .journal import Journal

        Journal.append(job.path, "recovered", vm_location=rec.location)
    return rec


def _stopped(job: JobRecord | None, src: HostView) -> bool:
    """Whether the guest stopped on the source for a switchover: the journal says so (no journal: assume it
    did), or the source's state reason does."""
    return stopped_for_switchover(job is None or "switchover" in job.steps(), src)


def _frozen(conn: Any, domain: str, src: HostView, rec: Recovery) -> bool:
    """libvirt says the source runs the guest, but its QEMU answers no monitor command (the executor's check)."""
    libvirt = import_libvirt()

    if conn is None or not src.running:
        return False
    try:
        dom = _ask(lambda: conn.lookupByName(domain), "lookup")
    except (libvirt.libvirtError, Unanswered):
        return False
    if qemu_answers(dom):
        return False
    rec.found.append(f"the source {src.name}'s QEMU answers no monitor command within {QEMU_ANSWER_WAIT_S:g} s, "
                     f"although libvirt says {src.state}: frozen")
    return True


def _unfreeze(conn: Any, domain: str, at: Location, job: JobRecord | None, dst_uri: str, rec: Recovery) -> bool:
    """Destroy the frozen source QEMU's idle connections to the destination (on this machine, which must be the
    source host) and wait until it answers again; True when it does. Never while the destination may run the
    guest (:func:`.unfreeze.refusal`)."""
    libvirt = import_libvirt()

    src = at.source
    kept = "its connections were not reset"
    why = unfreeze.refusal(at)
    if why:
        rec.left.append(f"{kept}: {why}")
        return False
    started = (job.last("migrate3") if job is not None else None) or {}
    if started.get("tunnelled"):
        rec.left.append(f"{kept}: the migration was tunnelled through libvirtd, so the stuck connection is "
                        f"libvirtd's, not QEMU's; {src.virsh('destroy', domain)} then start it (the guest reboots)")
        return False
    migrate_uri = started.get("migrate_uri") or default_migrate_uri(dst_uri) or f"tcp://{at.destination.name}"
    peers = unfreeze.migration_addresses(migrate_uri)
    here = socket.gethostname()
    if not peers:
        rec.left.append(f"{kept}: the destination's address in {migrate_uri} could not be resolved here ({here})")
        return False
    if os.geteuid() != 0:
        rec.left.append(f"{kept}: resetting another process's connections needs root (run it as root on {src.name})")
        return False
    try:
        dom = _ask(lambda: conn.lookupByName(domain), "lookup")
        uuid = str(_ask(dom.UUIDString, "UUID"))
        pids = unfreeze.qemu_pids(domain, uuid)
        stuck = [(pid, c) for pid in pids for c in unfreeze.stuck_connections([pid], peers)]
    except (libvirt.libvirtError, Unanswered, EnvironmentProblem) as exc:
        rec.left.append(f"{kept}: {_error_text(exc)}")
        return False
    if not pids:
        rec.left.append(f"{kept}: no QEMU of {domain} runs on this machine ({here}): run it on the source host "
                        f"{src.name}")
        return False
    if not stuck:
        rec.left.append(f"{kept}: its QEMU (pid {', '.join(map(str, pids))}) has no connection to "
                        f"{', '.join(sorted(peers))} idle for {unfreeze.IDLE_S:g} s; if it stays frozen, "
                        f"{src.virsh('destroy', domain)} then start it (the guest reboots)")
        return False
    for pid, c in stuck:
        try:
            unfreeze.reset(pid, c)
        except EnvironmentProblem as exc:
            rec.left.append(f"could not reset {c.text()}: {exc}")
            return False
        rec.done.append(f"reset the frozen source QEMU's (pid {pid}) connection {c.text()}")
    t0 = time.monotonic()
    while time.monotonic() - t0 < UNFREEZE_WAIT_S:
        if qemu_answers(dom):
            rec.done.append(f"the source QEMU answers again, {time.monotonic() - t0:.1f} s after the reset")
            _wait_job_end(dom, src, domain, rec)
            return True
        time.sleep(0.5)
    rec.left.append(f"the source QEMU still answers nothing {UNFREEZE_WAIT_S:.0f} s after the reset: "
                    f"{src.virsh('destroy', domain)} then start it (the guest reboots; its disks are current)")
    return False


def _wait_job_end(dom: Any, src: HostView, domain: str, rec: Recovery) -> None:
    """libvirt's cancel ends once QEMU reports the mirrors gone: wait for it (bounded), say if it did not."""
    ended = _job_ended(dom)
    if ended:
        rec.done.append("libvirt's cancelled migration job ended")
        return
    what = (f"has not ended {JOB_END_WAIT_S:.0f} s after the source QEMU answered again" if ended is False
            else "could not be asked about once the source QEMU answered again")
    rec.left.append(f"libvirt's migration job {what}: watch it with {src.virsh('domjobinfo', domain)}")


def _job_ended(dom: Any, within_s: float = JOB_END_WAIT_S) -> bool | None:
    """Wait until libvirt says the domain has no job: True; False if it still has one after ``within_s``;
    None if it could not be asked."""
    libvirt = import_libvirt()

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if _ask(lambda: dom.jobInfo(), "jobInfo")[0] == libvirt.VIR_DOMAIN_JOB_NONE:
                return True
        except (libvirt.libvirtError, Unanswered):
            return None
        time.sleep(0.5)
    return False


def _describe(view: HostView) -> str:
    if view.known:
        return view.state if view.reason is None else f"{view.state} (reason {view.reason})"
    return f"unknown ({view.error})"


def _persistent(conn: Any, domain: str) -> bool:
    try:
        return bool(_ask(lambda: conn.lookupByName(domain).isPersistent(), "isPersistent"))
    except Exception:  # noqa: BLE001 - absent or unknown: nothing persistent we can see
        return False


def _end_stale_job(conn: Any, domain: str, rec: Recovery) -> None:
    """A migration job whose executor is gone holds the domain (and blocks every later migration)."""
    libvirt = import_libvirt()

    if conn is None:
        return
    try:
        dom = _ask(lambda: conn.lookupByName(domain), "lookup")
        info = _ask(lambda: dom.jobInfo(), "jobInfo")
    except libvirt.libvirtError:
        return
    except Unanswered:
        rec.found.append(f"the source's job could not be asked (no answer within {ASK_TIMEOUT_S:g} s)")
        return
    if not info or info[0] in (libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED,
                               libvirt.VIR_DOMAIN_JOB_FAILED, libvirt.VIR_DOMAIN_JOB_CANCELLED):
        return
    rec.found.append("a migration job still active on the source")
    try:
        _ask(dom.abortJob, "abortJob")
    except (libvirt.libvirtError, Unanswered) as exc:
        rec.found.append(f"abortJob refused: {_error_text(exc)}")
    ended = _job_ended(dom)
    if ended:
        rec.done.append("cancelled the source's migration job")
    elif ended is False:
        rec.left.append(f"the source's migration job did not end within {JOB_END_WAIT_S:.0f} s: "
                        f"virsh -c {redact_uri(conn.getURI())} domjobabort {domain}")


def _settle(conn: Any, dconn: Any, domain: str, src: HostView, dst: HostView, rec: Recovery
            ) -> tuple[HostView, HostView]:
    """Do the table's action; returns both views as they are afterwards."""
    libvirt = import_libvirt()

    def act(c: Any, what: str, fn_name: str, uri: str) -> bool:
        try:
            _ask(lambda: getattr(c.lookupByName(domain), fn_name)(), what)
            rec.done.append(what)
            return True
        except (libvirt.libvirtError, Unanswered) as exc:
            rec.left.append(f"{what} failed ({_error_text(exc)}): "
                            f"virsh -c {redact_uri(uri)} {fn_name} {domain}")
            return False

    if not src.known or not dst.known:
        return src, dst
    if src.running and dst.running:
        return src, dst
    incoming = dst.state == "paused" and dst.reason in (libvirt.VIR_DOMAIN_PAUSED_MIGRATION,
                                                        libvirt.VIR_DOMAIN_PAUSED_STARTING_UP)
    if incoming and src.state in ("running", "blocked", "paused"):
        act(dconn, f"destroyed the unfinished incoming copy on {dst.name}", "destroy", dst.uri)
    elif dst.running and src.state == "paused":
        act(conn, f"destroyed the stale paused copy on {src.name} (the VM runs on {dst.name})", "destroy", src.uri)
    if dst.running:
        _move_definition(conn, dconn, domain, src, dst, rec)
    src = look(conn, src.uri, domain, "source", src.name)
    dst = look(dconn, dst.uri, domain, "destination", dst.name)
    if src.state == "paused" and dst.not_running_for_sure:
        act(conn, f"resumed the paused VM on {src.name} (the destination {dst.name} does not run it)",
            "resume", src.uri)
        src = look(conn, src.uri, domain, "source", src.name)
    return src, dst


def _move_definition(conn: Any, dconn: Any, domain: str, src: HostView, dst: HostView, rec: Recovery) -> None:
    """The VM runs on the destination and a persistent definition stayed on the source: move it over
    (what VIR_MIGRATE_PERSIST_DEST | VIR_MIGRATE_UNDEFINE_SOURCE would have done)."""
    libvirt = import_libvirt()

    if src.state == "absent":  # libvirt undefined it (VIR_MIGRATE_UNDEFINE_SOURCE): nothing to move
        return
    try:
        sdom = _ask(lambda: conn.lookupByName(domain), "lookup")
        if _ask(sdom.isActive, "isActive") or not _ask(sdom.isPersistent, "isPersistent"):
            return
        ddom = _ask(lambda: dconn.lookupByName(domain), "lookup")
        if not _ask(ddom.isPersistent, "isPersistent"):
            xml = _ask(lambda: sdom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE),
                       "XMLDesc")
            _ask(lambda: dconn.defineXML(xml), "defineXML")
            rec.done.append(f"defined {domain} persistently on {dst.name} (from the source's definition)")
        _ask(sdom.undefine, "undefine")
        rec.done.append(f"removed the source's stale definition of {domain} from {src.name}")
    except (libvirt.libvirtError, Unanswered) as exc:
        rec.left.append(f"the source {src.name} keeps an inactive definition of {domain} "
                        f"({_error_text(exc)}): once sure the VM runs on "
                        f"{dst.name}, virsh -c {redact_uri(src.uri)} undefine {domain}")


def _remove_definition(dconn: Any, job: JobRecord | None, domain: str, dst: HostView, rec: Recovery) -> None:
    """The VM runs on the source only and the destination keeps an inactive definition of it: libvirt's
    Finish phase had made it persistent there (VIR_MIGRATE_PERSIST_DEST) when the handover failed. Removed
    when the journal says the destination had none before; else kept and said."""
    import libvirt

    if dst.state != "shut off" or dconn is None:
        return
    how = f"virsh -c {redact_uri(dst.uri)} undefine {domain}"
    if job is None or job.destination_defined_before is not False:
        why = "no journal" if job is None else (
            "it was there before the migration" if job.destination_defined_before else "the journal does not say "
            "whether it was there before the migration")
        rec.found.append(f"an inactive definition of {domain} on the destination {dst.name}, kept ({why}); "
                         f"if it is not wanted: {how}")
        return
    try:
        ddom = _ask(lambda: dconn.lookupByName(domain), "lookup")
        if _ask(ddom.isActive, "isActive"):
            return
        _ask(ddom.undefine, "undefine")
        rec.done.append(f"removed the inactive definition of {domain} the failed handover left on {dst.name}")
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            rec.left.append(f"could not remove the inactive definition of {domain} on {dst.name} "
                            f"({_error_text(exc)}): {how}")
    except Unanswered as exc:
        rec.left.append(f"could not remove the inactive definition of {domain} on {dst.name} ({exc}): {how}")


def _remove_images(dconn: Any, job: JobRecord | None, domain: str, dst_uri: str, rec: Recovery) -> None:
    """Delete the images the journal says the executor created on the destination (only those)."""
    libvirt = import_libvirt()

    if job is None or dconn is None:
        return
    try:
        for pool in _ask(lambda: dconn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE), "pools"):
            _ask(lambda p=pool: p.refresh(0), "pool-refresh")
    except (libvirt.libvirtError, Unanswered):
        pass
    for path in job.created_disks:
        try:
            vol = _ask(lambda p=path: dconn.storageVolLookupByPath(p), "vol lookup")
        except libvirt.libvirtError:
            continue  # already gone
        except Unanswered:
            rec.left.append(f"image {path} on the destination: virsh -c {redact_uri(dst_uri)} vol-delete {path}")
            continue
        try:
            _ask(lambda v=vol: v.delete(0), "vol-delete")
            rec.done.append(f"deleted the image {path} the migration had created on the destination")
        except (libvirt.libvirtError, Unanswered) as exc:
            rec.left.append(f"could not delete {path} on the destination "
                            f"({_error_text(exc)}): "
                            f"virsh -c {redact_uri(dst_uri)} vol-delete {path}")


def _error_text(exc: BaseException) -> str:
    """libvirt's own message for a libvirtError, else the exception's text."""
    msg = getattr(exc, "get_error_message", None)
    return msg() if callable(msg) else str(exc)
