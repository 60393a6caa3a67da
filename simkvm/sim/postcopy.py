"""Post-copy: the VM moves first, its memory follows (postcopy_start() and the destination's faults).

After migrate-start-postcopy QEMU stops the VM, completes the mirrors, does a
last sync, sends the device state and the list of still-dirty pages
("discard" ranges), and the destination resumes at once: the downtime is
short. The source then pushes the remaining pages in the background (no rate
limit: max-postcopy-bandwidth is 0 by default) while the guest faults in any
page it touches before its turn. A network failure in this window loses the
VM, which is why the planner reports the window as a risk.
"""
from __future__ import annotations

import math

from .state import Run
from .switchover import stop_and_complete_mirrors

DISCARD_BYTES_PER_PAGE = 8  # a dirty page costs about one range entry in the discard list


def postcopy(run: Run):
    env, host = run.env, run.plan.host
    run.phase = "switchover"
    yield from stop_and_complete_mirrors(run)
    capacity = run.capacity_Bps()  # the rate limit is lifted: all the link (or share) gives
    dirtied = run.bitmap_sync()  # the last sync before the switch
    run.record_round(dirtied, capacity)
    pages = run.pending_pages
    discard = pages * DISCARD_BYTES_PER_PAGE
    yield env.timeout(run.sync_cost_s() + (host.device_state_bytes + discard) / capacity + host.resume_s)
    run.ram_sent += host.device_state_bytes + discard
    run.resume_s = env.now
    run.in_postcopy = True
    run.phase = "postcopy"
    run.point()
    # The guest runs on the destination; the rest of RAM arrives in the background.
    push_s = pages / run.wire.unlimited_pages_per_s(run.wire_bytes_all_pending(), capacity,
                                              run.dirty_bitmap.zero_share(run.dirty_bitmap.totals))
    on_demand = _faulted_pages(run, push_s)
    yield env.timeout(push_s)
    run.send_pages(pages)
    run.postcopy_pages = on_demand
    run.postcopy_degradation_s = on_demand * run.aids.postcopy.fault_latency_s
    run.rec.close_last_round(env.now, run.ram_sent)
    run.phase = "done"
    run.point()


def _faulted_pages(run: Run, push_s: float) -> float:
    """Pages the guest touches before the background push delivers them.

    A page still dirty arrives at a uniform time in [0, push_s]; the guest touches a page
    of a set with W pages at w writes/s with probability 1 - exp(-w t / W) by time t.
    Averaged: W_left * (1 - (1 - e^-a) / a), a = w push_s / W.
    """
    guest = run.guest
    total = 0.0
    for i, left in enumerate(run.dirty_bitmap.totals[:-2]):
        w_pages, rate = guest.set_pages[i], guest.set_rate[i] * guest.scale
        if left <= 0 or w_pages <= 0 or rate <= 0:
            continue
        a = rate * push_s / w_pages
        total += left * (1.0 - (-math.expm1(-a)) / a if a > 1e-12 else 0.0)
    return total
