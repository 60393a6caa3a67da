"""RAM pre-copy, as QEMU's migration thread runs it (migration.c / ram.c).

Read it next to shared/reference/qemu-precopy.md, "The main loop". The fast
mode jumps straight to the next point where QEMU would look at its pending
estimate and find it below the threshold (pending only falls while pages are
sent, because pages dirtied since the last sync are not counted until the
next one); the reference mode walks the same loop check by check, as QEMU
does, and is kept to prove the jump exact.
"""
from __future__ import annotations

import math

from .state import Run


def precopy(run: Run):
    """migration_thread(): returns 'switchover', 'max_iterations' or 'max_time'."""
    env, plan = run.env, run.plan
    run.phase = "precopy"
    run.ram_start_s = env.now
    run.init_bitmap()  # ram_init_bitmaps(): every page dirty ...
    run.guest.collect_memory()
    run.bitmap_sync()  # ... and the first sync: dirty-sync-count = 1 during the first pass
    _, bandwidth, _ = run.send_rate()
    run.record_round(0.0, bandwidth)
    max_iterations = plan.migration.max_iterations
    while True:
        pages_per_s, bandwidth, check_every = run.send_rate()
        threshold_pages = run.threshold_bytes(bandwidth) / run.page_bytes
        # migration_iteration_run(): estimate below threshold -> sync for the exact figure.
        if run.pending_pages < threshold_pages:
            cost = run.sync_cost_s()
            if cost:
                yield env.timeout(cost)
            dirtied = run.bitmap_sync()  # migration_bitmap_sync_precopy()
            run.record_round(dirtied, bandwidth)
            if run.pending_bytes <= run.threshold_bytes(bandwidth):
                return "switchover"  # migration_completion()
            if max_iterations and run.iteration > max_iterations:
                return "max_iterations"
            continue
        # ram_save_iterate() until the next check that sees pending below the threshold.
        wait = _until_below_threshold(run, pages_per_s, threshold_pages, check_every)
        if env.now + wait > run.deadline_s:
            wait = max(run.deadline_s - env.now, 0.0)
            yield env.timeout(wait)
            run.send_pages(pages_per_s * wait)
            return "max_time"
        yield env.timeout(wait)
        run.send_pages(pages_per_s * wait)


def _until_below_threshold(run: Run, pages_per_s: float, threshold_pages: float, check_every: float) -> float:
    """Seconds of sending until QEMU next checks and finds pending < threshold (or the bitmap empty)."""
    pending = run.pending_pages
    empty_after = pending / pages_per_s
    # Checks fall on a fixed grid from the start of RAM migration (window boundaries).
    since = run.env.now - run.ram_start_s
    crossing = 0.0 if run.reference else (pending - threshold_pages) / pages_per_s  # reference: every check
    check = math.floor((since + crossing) / check_every + 1.0 - 1e-9) * check_every - since
    if check <= 1e-12:
        check = check_every
    return min(check, empty_after)
