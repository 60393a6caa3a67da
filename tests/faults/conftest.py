"""Fixtures of the fault tests (the tools are in faultlib.py)."""
from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from faultlib import GUEST


@pytest.fixture
def fault_guest(testbed, guest_factory):
    """make(name): a READY guest on a (128 MiB, writing its 32 MiB disk). Afterwards both hosts' libvirtd
    run again (a frozen one continued, a dead one restarted by up()) before the guest is removed."""
    def make(name: str, **kw: Any) -> str:
        return guest_factory(name, **{**GUEST, **kw})
    yield make
    for host in ("a", "b"):
        try:
            os.kill(testbed.host_state(host).libvirtd_pid, signal.SIGCONT)
        except Exception:  # noqa: BLE001
            pass
    testbed.up()
