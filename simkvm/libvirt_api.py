"""libvirt, once: the lazy import, connections, host facts, domain state names and lookups.

The executor, the pre-flight check and the testbed all talk to libvirtd; what
they share lives here so each error says the same thing everywhere:
libvirt-python missing is one :class:`EnvironmentProblem` naming the setup
script, a host that does not answer names its URI, a domain that is not there
lists the ones that are.
"""
from __future__ import annotations

import threading
from typing import Any

from .model.errors import EnvironmentProblem, UserError

SETUP_HINT = ("install it with pip install 'simkvm[libvirt]' (needs libvirt-dev and pkg-config: "
              "scripts/setup-system.sh installs them)")

#: virDomainState -> what the messages call it.
STATE_NAMES = {0: "no state", 1: "running", 2: "blocked", 3: "paused", 4: "shutting down", 5: "shut off",
               6: "crashed", 7: "suspended (PM)"}
#: States in which a guest's CPUs run (libvirt reports a busy vCPU as blocked at times).
RUNNING_STATES = ("running", "blocked")

_quiet = False
_loop_lock = threading.Lock()
_loop_started = False


def import_libvirt() -> Any:
    """The libvirt module, its default error handler (which prints every error to stderr, even
    ones that are caught) silenced: errors still arrive as exceptions."""
    global _quiet
    try:
        import libvirt
    except ImportError:
        raise EnvironmentProblem(f"libvirt-python is not installed; {SETUP_HINT}") from None
    if not _quiet:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _quiet = True
    return libvirt


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once per process).

    Iteration events and connection keepalives only work on connections opened
    after this, so the executor calls it before opening its own.
    """
    global _loop_started
    libvirt = import_libvirt()
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def loop() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=loop, name="libvirt-event-loop", daemon=True).start()
        _loop_started = True


def connect(uri: str, role: str) -> Any:
    """A connection to the ``role`` host (source, destination) at ``uri``, with events."""
    libvirt = import_libvirt()
    ensure_event_loop()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise EnvironmentProblem(
            f"cannot connect to the {role} host {uri}: {exc.get_error_message()}; is it running? "
            f"(for the testbed: simkvm testbed up)"
        ) from None
    # No setKeepAlive: with the default event loop, its pings made every jobStats call
    # around them wait 2-5 s on the testbed (measured), which blinds the monitor.
    return conn


def version_text(n: int) -> str:
    """libvirt's packed version number (1_002_003) as "1.2.3"."""
    return f"{n // 1_000_000}.{n // 1000 % 1000}.{n % 1000}"


def host_info(conn: Any, uri: str) -> dict[str, Any]:
    """Hostname, libvirt and hypervisor versions of a connected host (None where it does not say)."""
    info: dict[str, Any] = {"uri": uri}
    for key, call in (("hostname", conn.getHostname),
                      ("libvirt_version", lambda: version_text(conn.getLibVersion())),
                      ("hypervisor_version", lambda: version_text(conn.getVersion()))):
        try:
            info[key] = call()
        except Exception:  # noqa: BLE001 - best effort for the report
            info[key] = None
    return info


def state_name(state: int | None) -> str:
    """A virDomainState in words; None (no such domain) is "absent"."""
    return STATE_NAMES.get(state, f"state {state}") if state is not None else "absent"


def lookup_domain(conn: Any, name: str, uri: str) -> Any:
    """The domain ``name`` on ``conn``, or a UserError listing the domains that are there."""
    libvirt = import_libvirt()
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        names = ", ".join(d.name() for d in conn.listAllDomains(0)) or "none"
        raise UserError(f"domain {name!r} is not defined on {uri} (domains there: {names})") from None
