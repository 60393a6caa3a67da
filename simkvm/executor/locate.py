"""Where is the VM? Ask both hosts, and never take "could not ask" for "not there".

After a failed or interrupted migration the executor must say where the VM
runs, and may resume a source VM that libvirt left paused. Both depend on
what the destination says, and a destination can fail to answer (its
libvirtd killed, frozen, the link cut). An unanswered question is
``unknown``, never ``absent``: resuming the source while the destination
might already run the guest makes two running copies of one VM (libvirt's
Finish phase resumes the destination; the source's Confirm phase resumes the
source when it hears no answer: libvirt's qemuMigrationSrcConfirmPhase ->
qemuMigrationSrcRestoreDomainState).

So: :func:`look` asks one host with a time bound and tells ``absent``
(libvirt's VIR_ERR_NO_DOMAIN) from ``unknown`` (anything else);
:class:`Location` holds both answers and says, truthfully, where the VM is
and which ``virsh`` commands find out the rest; :func:`settle` resumes the
source only when the destination is known not to run the guest.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Generic, TypeVar
from xml.etree import ElementTree

from ..libvirt_api import RUNNING_STATES, STATE_NAMES, import_libvirt

T = TypeVar("T")

#: How long one question to a host may take before its answer counts as unknown.
ASK_TIMEOUT_S = 10.0
#: After a handover the destination did not confirm: how long to keep asking it (every RECONNECT_EVERY_S).
RECONNECT_WINDOW_S = 20.0
RECONNECT_EVERY_S = 2.0
#: How long a QEMU gets to answer one monitor command (through libvirt) before it is said frozen.
QEMU_ANSWER_WAIT_S = 5.0


class Unanswered(Exception):
    """A host did not answer within the time bound."""


class Pending(Generic[T]):
    """``fn()`` running in a daemon thread, waited for in pieces.

    A libvirt call can wait for ever on a daemon or a QEMU monitor that no
    longer answers; the caller keeps its own deadlines meanwhile (the
    executor's polling loop checks the plan's limits between pieces) and
    leaves a stuck call behind when it gives up.
    """

    def __init__(self, fn: Callable[[], T], what: str) -> None:
        self.what = what
        self.started = time.monotonic()
        self.took_s: float | None = None  # set when the call returned
        self._box: dict[str, Any] = {}
        self._done = threading.Event()
        threading.Thread(target=self._run, args=(fn,), name=f"ask: {what}", daemon=True).start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            self._box["error"] = exc
        finally:
            self.took_s = time.monotonic() - self.started
            self._done.set()

    def wait(self, timeout_s: float) -> bool:
        """True once the call returned (or raised)."""
        return self._done.wait(timeout_s)

    @property
    def waiting_s(self) -> float:
        return time.monotonic() - self.started

    def result(self) -> T:
        if "error" in self._box:
            raise self._box["error"]
        return self._box["value"]  # type: ignore[no-any-return]


def call_with_timeout(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """``fn()`` in a daemon thread; :class:`Unanswered` if it takes longer than ``timeout_s``.

    A frozen libvirtd (SIGSTOP, a hung QEMU monitor) keeps a libvirt call
    waiting forever; the thread is left behind, the caller goes on.
    """
    call = Pending(fn, what)
    if not call.wait(timeout_s):
        raise Unanswered(f"{what}: no answer within {timeout_s:g} s")
    return call.result()


def disk_target(dom: Any) -> str | None:
    """The domain's first disk's target (vda): what ``blockStats`` asks QEMU about (query-blockstats)."""
    target = ElementTree.fromstring(dom.XMLDesc(0)).find("devices/disk[@device='disk']/target")
    return target.get("dev") if target is not None and target.get("dev") else None


def qemu_answers(dom: Any, wait_s: float = QEMU_ANSWER_WAIT_S) -> bool:
    """Whether the domain's QEMU answers a monitor command within ``wait_s``; False means frozen.

    libvirt's state is libvirt's word ("running" while QEMU's main loop is
    held and its vCPUs stand still: a TCG vCPU needs the main loop's lock for
    every device access). Job stats go to QEMU while a job is active
    (``query-migrate``: libvirt's qemuDomainGetJobStatsInternal); with no job
    libvirt answers them alone, so the disk's block stats are asked then
    (``query-blockstats``: qemuDomainBlockStats). A libvirt error is an
    answer (the domain went, a disk without stats): only silence is frozen.
    """
    libvirt = import_libvirt()

    def ask() -> None:
        stats = dom.jobStats(0)
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            dev = disk_target(dom)
            if dev:
                dom.blockStats(dev)

    try:
        call_with_timeout(ask, wait_s, "a monitor command (job or block stats)")
    except Unanswered:
        return False
    except libvirt.libvirtError as exc:
        # libvirt gives up waiting for the domain's job lock (held by an earlier question stuck in QEMU's
        # monitor) after 30 s with a time-out: that is silence too
        return bool(exc.get_error_code() != libvirt.VIR_ERR_OPERATION_TIMEOUT)
    return True


def redact_uri(uri: str) -> str:
    """A URI fit to print: a password in ``user:password@`` is replaced by ``***``."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", uri)


@dataclass(frozen=True)
class HostView:
    """What one host says about the domain."""

    role: str  # source | destination
    name: str  # the host's name, for messages
    uri: str
    state: str  # running | paused | shut off | ... | absent (not defined there) | unknown (no answer)
    reason: int | None = None  # libvirt's state reason
    error: str | None = None  # why it is unknown

    @property
    def known(self) -> bool:
        return self.state != "unknown"

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def not_running_for_sure(self) -> bool:
        """Known to hold no running or resumable guest: absent, or defined but shut off."""
        return self.state in ("absent", "shut off", "crashed")

    def virsh(self, command: str, domain: str) -> str:
        return f"virsh -c {redact_uri(self.uri)} {command} {domain}"


def look(conn: Any, uri: str, domain: str, role: str, name: str, *, timeout_s: float = ASK_TIMEOUT_S) -> HostView:
    """Ask one host for the domain's state, within ``timeout_s``.

    A connection that died (its daemon killed, keepalive gave up) is opened
    again once; "no such domain" is ``absent``; everything else ``unknown``.
    """
    libvirt = import_libvirt()

    def ask(c: Any) -> tuple[int, int]:
        return tuple(c.lookupByName(domain).state())  # type: ignore[return-value]

    try:
        if conn is None or not call_with_timeout(conn.isAlive, timeout_s, "isAlive"):
            conn = call_with_timeout(lambda: libvirt.open(uri), timeout_s, f"connecting to {redact_uri(uri)}")
            try:
                state, reason = call_with_timeout(lambda: ask(conn), timeout_s, f"domstate on {name}")
            finally:
                threading.Thread(target=conn.close, daemon=True).start()
        else:
            state, reason = call_with_timeout(lambda: ask(conn), timeout_s, f"domstate on {name}")
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return HostView(role, name, uri, "absent")
        return HostView(role, name, uri, "unknown", error=exc.get_error_message() or str(exc))
    except Unanswered as exc:
        return HostView(role, name, uri, "unknown", error=str(exc))
    return HostView(role, name, uri, STATE_NAMES.get(state, f"state {state}"), reason)


@dataclass(frozen=True)
class Location:
    """Both hosts' answers, and whether the guest ever stopped on the source for a switchover.

    ``stopped_on_source``: libvirt paused the source to hand the guest over
    (or we did), so the destination may have received it whole and run it.
    Before that moment the destination's QEMU waits for incoming state and
    cannot run the guest, whatever happened to its libvirtd.
    """

    domain: str
    source: HostView
    destination: HostView
    stopped_on_source: bool = True
    resumed_source: bool = False  # settle() resumed a paused source
    fenced_source: bool = False  # settle() paused the source libvirt had resumed (the destination may run it)
    #: libvirt says the source runs the guest, but its QEMU answers no monitor command (:func:`qemu_answers`)
    source_frozen: bool = False

    @property
    def destination_cannot_run(self) -> bool:
        """Known not to run there; or, while the guest never stopped on the source, not asked or paused there:
        an incoming QEMU cannot run a guest whose device state it never got (QEMU sends it after the stop)."""
        return self.destination.not_running_for_sure or (
            not self.stopped_on_source and self.destination.state in ("unknown", "paused"))

    @property
    def on_source(self) -> bool:
        """The VM runs on the source and nowhere else (for sure)."""
        return self.source.running and not self.source_frozen and self.destination_cannot_run

    @property
    def lost_before_handover(self) -> bool:
        """No host runs the guest and it never stopped on the source for a switchover: its QEMU on the source
        ended during the copy (the fault destroyed it); the destination's copy is partial, the source's disks
        are the current ones."""
        return (not self.stopped_on_source and self.source.not_running_for_sure
                and self.destination.not_running_for_sure)

    @property
    def on_destination(self) -> bool:
        return self.destination.running and self.source.known and not self.source.running

    def __str__(self) -> str:
        return self.text()

    def _frozen_text(self) -> str:
        """Where the VM is when the source's QEMU is frozen (libvirt says running), and what frees it."""
        src, dst, d = self.source, self.destination, self.domain
        frozen = ("libvirt says running, but its QEMU answers no monitor command and its vCPUs wait with it, as "
                  "when the link to the destination dies under a migration with disks: a disk mirror's writes wait "
                  "for replies that will never come, and TCP, with nothing to retransmit, never gives up")
        if dst.running:
            return (f"running on the destination ({dst.name}); the source {src.name} holds a frozen copy ({frozen}): "
                    f"never resume it or reset its connections, remove it with {src.virsh('destroy', d)}")
        if not self.destination_cannot_run:
            seen = dst.state if dst.known else f"unknown ({dst.error})"
            return (f"unknown: frozen on the source ({src.name}; {frozen}), and the destination {dst.name} says "
                    f"{seen} after the guest stopped on the source for a switchover, so it may hold the guest: find "
                    f"out with {dst.virsh('domstate', d)} --reason before touching either copy")
        recover = (f"simkvm recover --domain {d} --src {redact_uri(src.uri)} --dst {redact_uri(dst.uri)} "
                   f"--reset-stuck-connections")
        return (f"frozen on the source ({src.name}), on no other host: {frozen}. Never start it elsewhere. To "
                f"unfreeze it without a reboot, run as root on {src.name}: {recover} (it destroys the source QEMU's "
                f"idle connections to the destination: the mirror's writes fail, libvirt's cancel ends and the "
                f"guest runs on); failing that, {src.virsh('destroy', d)} then {src.virsh('start', d)} (the guest "
                f"reboots; the source's disks are the current ones)")

    def text(self) -> str:
        """The ``vm_location`` sentence: true in every case, with how to find out what is unknown."""
        src, dst, d = self.source, self.destination, self.domain
        unreachable = f"the destination {dst.name} could not be asked ({dst.error})"
        if self.source_frozen and src.running:
            return self._frozen_text()
        if self.on_source:
            if dst.state == "paused":
                return (f"running on the source ({src.name}); the destination {dst.name} holds a paused incoming "
                        f"copy that never ran (the guest never stopped on the source): remove it with "
                        f"{dst.virsh('destroy', d)}")
            if dst.known:
                return f"running on the source ({src.name})"
            return (f"running on the source ({src.name}); {unreachable}, but the guest never stopped on the "
                    f"source for a switchover, so it cannot run there")
        if src.running and dst.running:
            return (f"RUNNING ON BOTH HOSTS: the source {src.name} and the destination {dst.name} each run a copy "
                    f"of {d}; the copies have diverged: keep one and destroy the other "
                    f"({src.virsh('destroy', d)} or {dst.virsh('destroy', d)})")
        if self.on_destination:
            text = f"running on the destination ({dst.name})"
            if src.state not in ("absent", "shut off"):
                text += (f"; the source {src.name} still has a {src.state} copy: never resume it, remove it with "
                         f"{src.virsh('destroy', d)}")
            return text
        if dst.running and not src.known:
            return (f"running on the destination ({dst.name}); the source {src.name} could not be asked "
                    f"({src.error}): if it still holds a paused copy, never resume it, remove it with "
                    f"{src.virsh('destroy', d)}")
        if src.running and not dst.known:
            return (f"unknown: running on the source ({src.name}), but {unreachable} after the guest stopped "
                    f"on the source for the switchover, so it may run there too; find out with "
                    f"{dst.virsh('domstate', d)} --reason, and if it runs there, one copy must go "
                    f"({dst.virsh('destroy', d)} keeps the source's)")
        if src.state == "paused" and not dst.known:
            did = ("simkvm paused the source again (libvirt had resumed it after a handover the destination "
                   "never confirmed)" if self.fenced_source else "simkvm did not resume the source")
            return (f"unknown: paused on the source ({src.name}) and {unreachable}; {did}, as the guest may run "
                    f"on the destination. Find out with "
                    f"{dst.virsh('domstate', d)} --reason: if it runs there, remove the source's copy "
                    f"({src.virsh('destroy', d)}); if it does not, resume the source ({src.virsh('resume', d)})")
        if src.state == "paused" and dst.state == "paused":
            return (f"paused on both hosts ({src.name} and {dst.name}): resume exactly one; the source is safe if "
                    f"the migration did not complete: {dst.virsh('destroy', d)} then {src.virsh('resume', d)}")
        if dst.state == "paused" and src.not_running_for_sure:
            return (f"paused on the destination ({dst.name}), gone from the source: resume it with "
                    f"{dst.virsh('resume', d)}")
        if src.state == "paused" and dst.not_running_for_sure:
            return (f"paused on the source ({src.name}) and not on the destination: resume it with "
                    f"{src.virsh('resume', d)}")
        if src.not_running_for_sure and dst.not_running_for_sure:
            seen = f"the source {src.name} says {src.state}, the destination {dst.name} says {dst.state}"
            if self.lost_before_handover:
                again = (src.virsh("start", d) if src.state != "absent" else
                         f"virsh -c {redact_uri(src.uri)} define <its XML> then start {d}")
                return (f"not running on either host: {seen}; its QEMU ended during the copy, before any "
                        f"handover, so the source's disks are the current ones: start it there ({again})")
            return (f"not running on either host: {seen}; the guest had stopped on the source for the "
                    f"handover, so the destination's disks may be the newer ones: check before starting one "
                    f"({dst.virsh('start', d)} if it is defined there)")
        src_text = src.state if src.known else f"unknown ({src.error})"
        dst_text = dst.state if dst.known else f"unknown ({dst.error})"
        return (f"unclear: source {src.name} says {src_text}, destination {dst.name} says {dst_text}; check both "
                f"with {src.virsh('domstate', d)} --reason and {dst.virsh('domstate', d)} --reason")


def locate(conn: Any, dconn: Any, domain: str, *, src: tuple[str, str], dst: tuple[str, str],
           stopped_on_source: bool, timeout_s: float = ASK_TIMEOUT_S) -> Location:
    """Ask both hosts (``src``/``dst``: (uri, name)) where ``domain`` is.

    The source's state reason can also tell that it stopped for a switchover
    (paused by migration, or resumed by libvirt after a cancelled one).
    """
    source = look(conn, src[0], domain, "source", src[1], timeout_s=timeout_s)
    destination = look(dconn, dst[0], domain, "destination", dst[1], timeout_s=timeout_s)
    return Location(domain, source, destination, stopped_for_switchover(stopped_on_source, source))


def stopped_for_switchover(stopped_on_source: bool, source: HostView) -> bool:
    """Whether the guest stopped on the source for a switchover, from what we saw or the source's state."""
    libvirt = import_libvirt()
    stopped_reasons = {("paused", libvirt.VIR_DOMAIN_PAUSED_MIGRATION), ("paused", libvirt.VIR_DOMAIN_PAUSED_POSTCOPY),
                       ("running", libvirt.VIR_DOMAIN_RUNNING_MIGRATION_CANCELED)}
    return stopped_on_source or source.state == "paused" or (source.state, source.reason) in stopped_reasons


def _ask_until_known(view: HostView, domain: str, timeout_s: float, window_s: float) -> HostView:
    """Ask a host that did not answer again, every RECONNECT_EVERY_S for up to ``window_s`` (a restarted
    libvirtd finds its QEMUs again within seconds), on fresh connections."""
    deadline = time.monotonic() + window_s
    while not view.known and time.monotonic() < deadline:
        time.sleep(min(RECONNECT_EVERY_S, max(deadline - time.monotonic(), 0.0)))
        view = look(None, view.uri, domain, view.role, view.name, timeout_s=timeout_s)
    return view


def _on_domain(conn: Any, uri: str, domain: str, method: str, timeout_s: float) -> None:
    """``domain.<method>()`` on the host, over ``conn`` or, if that died with its daemon, a fresh connection."""
    libvirt = import_libvirt()
    fresh = None
    if conn is None or not call_with_timeout(conn.isAlive, timeout_s, "isAlive"):
        conn = fresh = call_with_timeout(lambda: libvirt.open(uri), timeout_s, f"connecting to {redact_uri(uri)}")
    try:
        call_with_timeout(lambda: getattr(conn.lookupByName(domain), method)(), timeout_s, method)
    finally:
        if fresh is not None:
            threading.Thread(target=fresh.close, daemon=True).start()


def settle(location: Location, conn: Any, *, timeout_s: float = ASK_TIMEOUT_S,
           window_s: float = RECONNECT_WINDOW_S) -> Location:
    """Leave at most one running copy, and resume the source only when the destination surely has none.

    After a switchover the destination did not confirm, libvirt resumes the
    source (qemuMigrationSrcConfirmPhase, cancelled) although the destination
    may already run the guest (its Finish phase resumed it, then its libvirtd
    died before answering): measured on the testbed, both hosts then run it.
    So when the destination cannot be asked after the guest stopped on the
    source, the source is paused ("fenced") and the destination asked again
    for up to ``window_s`` (a restarted libvirtd reconnects to its QEMUs): if
    it then says it does not run the guest, the source is resumed. A source
    that cannot be asked is asked again the same way first (its libvirtd
    restarted mid-migration), over a fresh connection.
    """
    libvirt = import_libvirt()

    domain = location.domain
    src, dst = location.source, location.destination
    fenced = False
    if not src.known:  # the source's libvirtd restarting (a service restart, an upgrade): ask it again
        src = _ask_until_known(src, domain, timeout_s, window_s)
        location = replace(location, source=src, stopped_on_source=stopped_for_switchover(location.stopped_on_source, src))
    if location.stopped_on_source and not dst.known and src.state in ("running", "blocked", "paused"):
        if src.running:
            try:
                _on_domain(conn, src.uri, domain, "suspend", timeout_s)
                fenced = True
            except (libvirt.libvirtError, Unanswered):
                pass
        dst = _ask_until_known(dst, domain, timeout_s, window_s)
        location = replace(location, source=look(conn, src.uri, domain, "source", src.name, timeout_s=timeout_s),
                           destination=dst, fenced_source=fenced)
        src = location.source
    if src.state != "paused" or not location.destination_cannot_run or dst.state == "paused":
        return location
    try:
        _on_domain(conn, src.uri, domain, "resume", timeout_s)
    except (libvirt.libvirtError, Unanswered):
        return location
    again = look(conn, src.uri, domain, "source", src.name, timeout_s=timeout_s)
    return replace(location, source=again, resumed_source=again.running, fenced_source=False)
