"""Why a migration did or did not converge, in the words an operator needs.

Pre-copy rounds settle where the pages dirtied during one round (its sending
plus its bitmap sync) equal the pages that round sends: the fixed point
``r = u(r / rate + sync)`` of the guest's unique-pages curve ``u``. If the
fixed point is above the switchover threshold (bandwidth x max downtime) no
number of rounds helps; if it is below, the rounds shrink but may do so too
slowly for the iteration or time limit.
"""
from __future__ import annotations

import math

from ..model.units import fmt_bytes, fmt_duration, fmt_rate
from .state import Run


def settled_remaining_pages(run: Run, pages_per_s: float) -> float:
    """The fixed point of r -> u(r / rate + sync time), from the whole working set downwards."""
    guest = run.guest
    r = sum(guest.set_pages)
    sync_s = run.sync_cost_s()
    for _ in range(200):
        nxt = guest.memory_unique_pages(r / pages_per_s + sync_s)
        if abs(nxt - r) <= 1e-9 * max(r, 1.0):
            return nxt
        r = nxt
    return r


def mirror_share_clause(run: Run) -> str:
    """When the ready disk mirror's copies of new guest writes take a real share of the link, that is
    the cause to name first: the RAM rounds only see what the mirror leaves them."""
    share = run.mirror_bg_Bps / max(run.capacity_Bps(), 1e-9)
    if share < 0.1:
        return ""
    dsk = run.plan.workload.disk
    how = ("sequential writes, filling one" if run.guest.disk_sequential else "writes, each dirtying a")
    return (f"disk mirror takes {fmt_rate(run.mirror_bg_Bps)} ({share:.0%}) of the link for the guest's disk "
            f"writes ({fmt_rate(dsk.write_rate_Bps)} in {fmt_bytes(dsk.io_size_bytes)} {how} "
            f"{fmt_bytes(run.guest.granule_bytes)} mirror granule), leaving RAM {fmt_rate(run.link_capacity_Bps())}: "
            "lower the disk write rate, raise the bandwidth, or give the real write size and order "
            "(workload.disk.io_size, --disk-io-size; workload.disk.pattern). RAM: ")


def memory_reason(run: Run, why: str) -> str:
    """Explain an abort during RAM pre-copy (``why``: max_iterations or max_time)."""
    mirror = mirror_share_clause(run)
    return mirror + _memory_reason(run, why) if mirror else _memory_reason(run, why)


def _memory_reason(run: Run, why: str) -> str:
    plan, guest = run.plan, run.guest
    page = run.page_bytes
    c = run.wire.normal_page_wire
    pages_per_s = min(run.bandwidth_Bps / c, 1.0 / (c / run.link_capacity_Bps() + plan.host.page_cost_s))
    bandwidth = pages_per_s * c
    threshold = run.threshold_bytes(bandwidth)
    writes_Bps = guest.nominal_page_writes_per_s * page * guest.memory_speed
    wss = sum(guest.set_pages) * page
    settled = settled_remaining_pages(run, pages_per_s) * page
    limit = (f"{run.max_iterations} iterations" if why == "max_iterations"
             else f"{fmt_duration(run.deadline_s)} (max time)")
    sync_s = run.sync_cost_s()
    if settled > threshold and writes_Bps < pages_per_s * page:
        during_sync = guest.memory_unique_pages(sync_s) * page
        return (
            f"bitmap syncs too slow for the threshold: each sync of {fmt_bytes(plan.vm.memory_bytes)} of RAM "
            f"takes {fmt_duration(sync_s)}, during which the guest dirties ~{fmt_bytes(during_sync)}; rounds "
            f"settle at ~{fmt_bytes(settled)}, above the switchover threshold {fmt_bytes(threshold)}; "
            f"stopped at {limit}; raise the max downtime or the bandwidth"
        )
    if settled > threshold:
        text = (
            f"dirty rate of working set exceeds bandwidth: the guest writes {fmt_rate(writes_Bps)} of pages over "
            f"{fmt_bytes(wss)}, the migration sends {fmt_rate(pages_per_s * page)} of pages, so each round leaves "
            f"~{fmt_bytes(settled)} dirty, above the switchover threshold {fmt_bytes(threshold)} "
            f"(bandwidth x max downtime {fmt_duration(run.max_downtime_s)})"
        )
        if wss > threshold:
            text += f"; working set larger than threshold ({fmt_bytes(wss)} > {fmt_bytes(threshold)})"
        return text + f"; stopped at {limit}"
    ratio = writes_Bps / (pages_per_s * page) if pages_per_s > 0 else math.inf
    return (
        f"not converged within {limit}: dirty rate is {ratio:.0%} of bandwidth, so rounds shrink slowly "
        f"(remaining {fmt_bytes(run.pending_bytes)} vs threshold {fmt_bytes(threshold)}); "
        f"raise max_iterations/max_time, the bandwidth or the max downtime"
    )


def converged_reason(run: Run) -> str:
    rounds = run.rec.rounds
    last_loop = rounds[-2] if len(rounds) >= 2 else rounds[-1]
    return (
        f"converged: {fmt_bytes(last_loop['memory_remaining'])} left at the last sync "
        f"< threshold {fmt_bytes(last_loop['threshold_bytes'])} after {len(rounds) - 1} pre-copy iteration(s)"
    )
