"""What the executor measured, besides libvirt's job statistics: the network probe's outage.

A probe (on the testbed, :class:`simkvm.testbed.network.Probe`) sends an ICMP
echo to the guest every few milliseconds through the migration and reports,
for each, when it was sent and when (if ever) the reply came. The longest
time no reply arrived around the switchover is the service interruption the
users of the VM saw.
"""
from __future__ import annotations

import math
from typing import Any, Protocol, Sequence

#: (sent, replied or None) per echo, in time.monotonic() seconds.
Echoes = Sequence[tuple[float, float | None]]


class EchoProbe(Protocol):
    """Something that pings the guest through the migration."""

    def start(self) -> Any: ...

    def stop(self) -> list[tuple[float, float | None]]: ...


def longest_outage(echoes: Echoes, *, after_s: float | None = None,
                   before_s: float | None = None) -> tuple[float, float, float] | None:
    """(start, end, seconds) of the longest time no reply arrived, as a client sees it.

    Measured on reply arrival times: an echo queued in the guest's NIC when it
    paused is answered only after the resume, so send times would hide part of
    the gap. One probe interval is taken off (the probe cannot see gaps finer
    than its own rhythm). ``after_s``: only gaps still open at or after that
    time count (the switchover, not the boot); ``before_s``: only gaps that had
    begun by then.
    """
    replies = sorted(r for _, r in echoes if r is not None)
    if len(replies) < 2:
        return None
    sends = [s for s, _ in echoes]
    interval = (sends[-1] - sends[0]) / max(len(sends) - 1, 1)
    best: tuple[float, float, float] | None = None
    for a, b in zip(replies, replies[1:]):
        if (after_s is not None and b < after_s) or (before_s is not None and a > before_s):
            continue
        gap = max(b - a - interval, 0.0)
        if best is None or gap > best[2]:
            best = (a, b, gap)
    return best


def probe_summary(echoes: Echoes, *, stop_s: float, downtime_s: float
                  ) -> tuple[tuple[float, float, float] | None, dict[str, Any]]:
    """The outage around a switchover at ``stop_s`` and what the probe saw, for a result's meta.

    The meta keeps the reply gaps and the stretches of unanswered echoes over
    20 ms, so a strange figure can be explained afterwards (a guest that went
    quiet, a neighbour entry gone stale).
    """
    outage = longest_outage(echoes, after_s=stop_s - 0.25, before_s=stop_s + downtime_s + 0.25)
    replies = sorted(r for _, r in echoes if r is not None)
    gaps = [[round(a, 4), round(b, 4)] for a, b in zip(replies, replies[1:]) if b - a > 0.02]
    silent: list[list[float]] = []  # stretches of echoes sent that got no reply
    run_start: float | None = None  # the first unanswered echo of the stretch
    last = 0.0  # its last one so far
    for sent, replied in [*echoes, (math.inf, 0.0)]:  # a sentinel reply closes the last stretch
        if replied is None:
            run_start = sent if run_start is None else run_start
            last = sent
            continue
        if run_start is not None and last - run_start > 0.02:
            silent.append([round(run_start, 4), round(last, 4)])
        run_start = None
    meta = {"echoes": len(echoes), "answered": len(replies), "reply_gaps_over_20ms": gaps,
            "unanswered_over_20ms": silent, "first_reply_s": replies[0] if replies else None,
            "outage": None if outage is None else {"from_s": outage[0], "to_s": outage[1], "seconds": outage[2]}}
    return outage, meta
