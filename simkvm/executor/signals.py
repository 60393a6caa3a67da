"""Ctrl-C and SIGTERM while a migration runs: the first one aborts it, the rest never cut the abort short.

An interrupt must leave the VM whole on one host. So the first SIGINT or
SIGTERM raises :class:`KeyboardInterrupt` in the main thread (the executor
turns it into an abort), and from then on, or while the migration is past
the point of no return (migrate3 returned: the VM is on the destination and
only the bookkeeping remains), further signals are logged and otherwise
ignored until the VM is safe. The handlers only run in the main thread; the
libvirt calls that could block it for ever are bounded elsewhere (keepalive,
timeouts), so a signal is always honoured within those bounds.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Iterator

log = logging.getLogger("simkvm.executor")

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """The signal handlers of one run; ``first`` is the name of the first signal received."""

    def __init__(self) -> None:
        self.first: str | None = None
        self.raising = True  # the next signal raises KeyboardInterrupt
        self.busy_with = "aborting the migration"

    def handler(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.first is None:
            self.first = name
        if self.raising:
            self.raising = False
            raise KeyboardInterrupt(name)
        log.warning("%s: still %s; waiting until the VM is safe", name, self.busy_with)

    @contextlib.contextmanager
    def held(self, busy_with: str) -> Iterator[None]:
        """Signals during the block are recorded, not raised (``first`` says whether one came)."""
        raising, self.raising, self.busy_with = self.raising, False, busy_with
        try:
            yield
        finally:
            self.raising = raising and self.first is None

    @contextlib.contextmanager
    def installed(self) -> Iterator["Interrupts"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self.handler) for s in HANDLED}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[Interrupts]:
    """SIGTERM behaves like Ctrl-C; after the first, signals wait for the cleanup (see module doc)."""
    with Interrupts().installed() as interrupts:
        yield interrupts
