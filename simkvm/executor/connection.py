"""How the executor reaches a host: a libvirt connection opened within a time bound, with keepalive.

The lazy import, the event loop and the error messages are :mod:`simkvm.libvirt_api`'s;
what the executor adds is the bound on a daemon that never answers (see
:func:`open_connection`).
"""
from __future__ import annotations

import logging
from typing import Any

from ..libvirt_api import ensure_event_loop, import_libvirt
from ..model.errors import EnvironmentProblem
from .locate import Unanswered, call_with_timeout, redact_uri

log = logging.getLogger("simkvm.executor")

CONNECT_TIMEOUT_S = 30.0  # opening a connection (a listener that never answers)
# Keepalive: a frozen daemon's connection is closed after about interval * (count + 1) s. Measured on the
# testbed during migrations: job-stats latency is the same with and without it (median 3-7 ms, p95 25 ms).
KEEPALIVE_INTERVAL_S = 2
KEEPALIVE_COUNT = 3  # a job-stats call this slow delays the policy by more than a Nova poll


def open_connection(uri: str, role: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """A connection with libvirt keepalive, opened within ``timeout_s``.

    A daemon that accepts and never answers would hold virConnectOpen for
    ever (a frozen libvirtd, or any listener on that port): the open runs in
    a thread we stop waiting for. Keepalive (libvirt pings the daemon every
    KEEPALIVE_INTERVAL_S and closes the connection after KEEPALIVE_COUNT
    unanswered ones) then bounds every later call the same way, including
    migrate3's Finish on a destination that froze mid-migration.
    """
    libvirt = import_libvirt()
    ensure_event_loop()
    shown = redact_uri(uri)
    try:
        conn = call_with_timeout(lambda: libvirt.open(uri), timeout_s, f"connecting to the {role} host {shown}")
    except libvirt.libvirtError as exc:
        raise EnvironmentProblem(
            f"cannot connect to the {role} host {shown}: {redact_uri(exc.get_error_message() or '')}; is it "
            f"running? (for the testbed: simkvm testbed up)"
        ) from None
    except Unanswered:
        raise EnvironmentProblem(
            f"the {role} host {shown} accepted the connection but did not answer within {timeout_s:g} s; "
            f"is its libvirtd frozen or is something else listening there? (check with virsh -c {shown} version)"
        ) from None
    try:
        conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
    except libvirt.libvirtError as exc:  # a local driver (test:///, qemu:///) has no keepalive
        log.debug("no keepalive on %s: %s", shown, exc.get_error_message())
    return conn
