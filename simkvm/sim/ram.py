"""RAM pre-copy, as QEMU's migration thread runs it (migration.c / ram.c).

Read it next to QEMU's migration_thread() and ram_find_and_save_block(). The fast
mode jumps straight to the next point where QEMU would look at its pending
estimate and find it below the threshold (pending only falls while pages are
sent, because pages dirtied since the last sync are not counted until the
next one); the reference mode walks the same loop check by check, as QEMU
does, and is kept to prove the jump exact. A controller (policy) can wake the
loop at any time: it then accounts what was sent so far and looks again.
"""
from __future__ import annotations

import math

from .controller import after_iterations_rules
from .state import WINDOW_S, Run


def precopy(run: Run):
    """migration_thread(): returns 'switchover', 'postcopy', 'aborted', 'max_iterations' or 'max_time'."""
    env, aids = run.env, run.aids
    run.phase = "precopy"
    run.ram_start_s = env.now
    run.init_bitmap()  # ram_init_bitmaps(): every page dirty ...
    run.guest.collect_memory()
    run.bitmap_sync()  # ... and the first sync: dirty-sync-count = 1 during the first pass
    _, bandwidth, _ = run.send_rate()
    run.meter()
    run.record_round(0.0, bandwidth)
    if run.periodic_sync_s:
        env.process(dirty_sync_timer(run))
    at_check = True  # False: the walk only crossed into a slice of RAM with another page mix
    while True:
        if run.abort_requested:
            return "aborted"  # migrate_cancel
        requested, run.sync_requested = run.sync_requested, None
        if requested == run.iteration:  # the auto-converge timer's sync (QEMU >= 9.2), unless one came
            run.record_round(run.bitmap_sync(), run.bandwidth_estimate_Bps(run.send_rate()[1]))
            if run.max_iterations and run.iteration > run.max_iterations:
                return "max_iterations"
            after_iterations_rules(run)
        if run.postcopy_requested:
            return "postcopy"  # must-precopy data (none for RAM) <= threshold: postcopy_start()
        pages_per_s, rate, check_every = run.send_rate()
        limited = check_every == WINDOW_S  # max-bandwidth: a byte budget per 100 ms window
        bandwidth = run.bandwidth_estimate_Bps(rate)  # what QEMU measured over the last window
        if limited:
            bandwidth = run.window_figure_Bps(bandwidth)
        threshold_pages = run.threshold_bytes(bandwidth) / run.page_bytes
        # Where the figure settles once a whole window is sent at this rate (the jump's target).
        settled_pages = run.threshold_bytes(rate) / run.page_bytes
        # migration_iteration_run(): estimate below threshold -> sync for the exact figure.
        if at_check and run.pending_pages < threshold_pages:
            cost = run.sync_cost_s()
            if cost:
                yield env.timeout(cost)
                if limited and run.window_burst:
                    run.burst_sent(0.0, cost, rate)  # the sync takes the window's time, not its budget
                elif limited:  # rate-limited: the window still carries its whole budget
                    run.meter_pause(cost)
            first_pass_done = run.iteration == 1
            dirtied = run.bitmap_sync()  # migration_bitmap_sync_precopy()
            run.record_round(dirtied, bandwidth)
            if first_pass_done and aids.xbzrle.enabled:
                run.wire.xbzrle_active = True  # XBZRLE starts once the first full pass is complete
            # migration_iteration_run(): completes when nothing is pending or the exact count is
            # strictly below threshold_size (7.2 to 10.0 alike; `<=` only from 10.1's rewrite)
            if run.pending_pages <= 0 or run.pending_bytes < run.threshold_bytes(bandwidth):
                return "switchover"  # migration_completion()
            if run.max_iterations and run.iteration > run.max_iterations:
                return "max_iterations"
            after_iterations_rules(run)
            continue
        # ram_save_iterate() until the next check that sees pending below the threshold; under
        # max-bandwidth, pending that fits in what is left of the window's budget goes at once.
        burst = limited and _fits_window(run, rate)
        if burst or (limited and run.window_burst):
            pages_per_s, wait, at_check = _window_send(run, rate, burst)
        else:
            figure = ("steady" if abs(bandwidth - rate) <= 1e-9 * rate
                      else "rising" if run.meter_peak_Bps() <= rate * (1 + 1e-9) else "moving")
            if limited:  # stop too at the first window whose budget covers all that is pending (a burst)
                settled_pages = max(settled_pages, rate * WINDOW_S / run.wire_bytes_all_pending())
            wait, at_check = _until_below_threshold(run, pages_per_s, settled_pages, check_every, figure)
        timed_out = env.now + wait > run.deadline_s
        if timed_out:
            wait = max(run.deadline_s - env.now, 0.0)
        start = env.now
        run.meter()  # nothing was sent since the last point (a sync, a pause): the figure sees the gap
        run.sending(pages_per_s)
        woken = None
        if run.wakeable:
            run.wakeup = woken = env.event()
            yield env.timeout(wait) | woken
        else:
            yield env.timeout(wait)
        elapsed = env.now - start
        if elapsed <= 0.0 < wait and not (woken is not None and woken.triggered):
            # A slice's last sliver can take less than the clock can resolve at this time
            # (wait < ulp(now)): the clock does not move, but the pages are sent all the same;
            # counting them from the clock would leave the sliver pending forever.
            elapsed = wait
        sent_before = run.ram_sent
        run.send_pages(pages_per_s * elapsed)
        if burst or (limited and run.window_burst):
            run.burst_sent(run.ram_sent - sent_before, elapsed, rate, bandwidth if burst else None)
        run.sending(0.0)
        run.meter()
        if env.now < start + wait - 1e-12:
            at_check = False  # woken early (a controller, the sync timer): QEMU checks at its own time
        if timed_out and env.now >= run.deadline_s:
            return "max_time"


def dirty_sync_timer(run: Run):
    """cpu_throttle_dirty_sync_timer_tick() (QEMU >= 9.2, auto-converge on): every 5 s, if no
    bitmap sync happened since the last tick and the first pass is over, sync now, so that
    auto-converge sees the dirty rate even while one iteration lasts long."""
    env, last = run.env, 0
    while True:
        yield env.timeout(run.periodic_sync_s)
        if run.phase != "precopy":
            return
        if run.iteration > 1 and run.iteration == last:
            run.sync_requested = run.iteration
            run.wake()
            last = run.iteration + 1
        else:
            last = run.iteration


def _fits_window(run: Run, rate_Bps: float) -> bool:
    """Everything pending fits in what the rate-limited window may still send: ram_save_iterate()
    sends it at full speed and, the bitmap empty (ram_find_and_save_block() finds no page),
    returns; migration_thread() runs migration_iteration_run() again at once, whose pending
    (now below the threshold) asks for a bitmap sync, without waiting for the window's end."""
    if run.pending_pages <= 0 or not run.dirty_bitmap.cells:
        return False
    budget, _ = run.window_budget(rate_Bps)
    return run.pending_pages * run.wire_bytes_all_pending() <= budget * (1 + 1e-9)


def _window_send(run: Run, rate_Bps: float, burst: bool) -> tuple[float, float, bool]:
    """(pages/s, seconds, ends at a check) for a send inside a window the sender burst in: the
    slice at full speed (``burst``), else what is left of the budget spread to the window's end,
    where migration_rate_limit() wakes the thread for the next window's check."""
    budget, left_s = run.window_budget(rate_Bps)
    segment = run.segment_pages()
    empties = segment >= run.pending_pages - 1e-9
    if burst:
        pages_per_s = run.burst_pages_per_s()
        return pages_per_s, segment / pages_per_s, empties
    pages_per_s = max(budget, 0.0) / left_s / run.wire_bytes_per_page()
    if pages_per_s > 0 and segment / pages_per_s < left_s:
        return pages_per_s, segment / pages_per_s, empties
    return pages_per_s, left_s, True


def _until_below_threshold(run: Run, pages_per_s: float, threshold_pages: float,
                           check_every: float, figure: str = "steady") -> tuple[float, bool]:
    """Seconds of sending until QEMU next checks and finds pending < threshold, or until the walk
    enters a slice of RAM with another page mix (the send rate changes; no check there).
    The flag says which: True for a check (or an empty bitmap, which QEMU checks at once).
    ``threshold_pages`` is the threshold once QEMU's bandwidth figure shows this rate (a window
    later). While the figure is still below it (``rising``) every check sees a lower threshold,
    so a crossing at least a window away is exact; else (``moving``) only the next check is."""
    pending = run.pending_pages
    segment = run.segment_pages()
    segment_s = segment / pages_per_s  # this slice (or, if it is the last one pending, the bitmap) is done
    # Checks fall on a fixed grid from the start of RAM migration (window boundaries).
    since = run.env.now - run.ram_start_s
    crossing = 0.0 if run.reference else max(pending - threshold_pages, 0.0) / pages_per_s
    if figure == "moving" or (figure == "rising" and crossing < WINDOW_S):
        crossing = 0.0
    check = math.floor((since + crossing) / check_every + 1.0 - 1e-9) * check_every - since
    if check <= 1e-12:
        check = check_every
    if segment_s < check:
        return segment_s, segment >= pending - 1e-9
    return check, True
