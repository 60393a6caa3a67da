"""Where the guest's pages sit in RAM, as QEMU's bitmap walk meets them.

QEMU sends dirty pages in address order, and the walk does not restart at a
bitmap sync: it carries on from where it stopped and wraps at the top of RAM
(ram.c keeps ``last_seen_block``/``last_page`` across syncs). So the pages still
unsent when a sync comes are the ones just ahead of the walk, and whether the
working set is among them decides how many freshly dirtied pages were already
pending, which is what the next iteration has to send and so the iteration
count. A working set spread evenly over RAM gives the textbook
``R + D - R D / W``; one sitting at the top of RAM is all still pending at the
end of a pass, so re-dirtying it adds nothing.

A layout is a list of *slices* of RAM, bottom to top, each holding a number of
pages of every bitmap component (the workload's dirty sets, the OS's
background set, other non-zero pages, zero pages). Pages within a slice are
treated as mixed evenly. Neighbouring slices with the same mix are merged, so
an all-spread layout is one slice and costs nothing.

Layouts come from ``vm.wss_layout`` and ``vm.zero_layout``: ``spread``,
``start``/``end`` (contiguous at the bottom/top), or a list of shares per equal
part of RAM, bottom to top, as the testbed guest measures from its page-frame
numbers.

A measured zero layout also says the guest is a booted Linux, whose memory map
sits at the very top of RAM: the kernel allocates its ``struct page`` array
(64 bytes per 4 KiB page, 1/64 of RAM) from memblock, which hands out memory
top-down on x86 (mm/memblock.c, ``memblock_find_in_range_node``; bottom-up only
for movable_node). Those pages are non-zero, so QEMU's first pass ends on them at
the sender's pace, not on zero pages at the CPU's: measured on campaign v5's
runs, the last non-zero stretch of the first pass was 6-9 MB on 256-320 MiB
guests, 17-21 MB at 1 GiB, 30-31 MB at 1.5 GiB and 37-42 MB at 2 GiB (RAM/64
plus a few MB). The plan counts the kernel's pages as spread evenly (the guest's
kernel_hist, read from /proc/kpageflags, can place them: a variant not used yet,
simkvm/testbed/guestplan.py), so :func:`slices` puts the memory map on top.
"""
from __future__ import annotations

import math
from typing import Sequence

GRID = 64  # slices placement works on before merging (string layouts)
MEMMAP_SHARE = 64 / 4096  # sizeof(struct page) per 4 KiB page frame: the guest kernel's memory map


def _shares(layout: str | Sequence[float], grid: int) -> list[float] | None:
    """Per-slice shares on ``grid`` slices for a list layout (None for the named ones)."""
    if isinstance(layout, str):
        return None
    vals = [max(0.0, float(v)) for v in layout]
    total = sum(vals)
    if total <= 0:
        return None
    k = grid // len(vals)
    return [vals[i // k] / total / k for i in range(grid)]


def _grid(*layouts: str | Sequence[float]) -> int:
    """1 slice when everything is spread; else a grid fine enough for every layout given."""
    if all(isinstance(x, str) and x == "spread" for x in layouts):
        return 1
    return math.lcm(GRID, *(len(x) for x in layouts if not isinstance(x, str)))


def _place(free: list[float], pages: float, layout: str | Sequence[float], grid: int) -> list[float]:
    """Put ``pages`` into the free room of each slice as ``layout`` says; returns pages per slice."""
    out = [0.0] * len(free)
    if pages <= 0:
        return out
    shares = _shares(layout, grid)
    if shares is not None:
        want = [pages * s for s in shares]
    elif layout in ("start", "end"):
        order = range(len(free)) if layout == "start" else range(len(free) - 1, -1, -1)
        left = pages
        for i in order:
            take = min(free[i], left)
            out[i] = take
            left -= take
            if left <= 1e-9:
                break
        for i in range(len(free)):
            free[i] -= out[i]
        return out
    else:  # spread: in proportion to the room left
        room = sum(free)
        want = [pages * f / room if room > 0 else pages / len(free) for f in free]
    # A measured layout may ask a slice for more than it has left (rounding): spill it evenly.
    spill = 0.0
    for i, w in enumerate(want):
        take = min(w, free[i])
        out[i] = take
        spill += w - take
    if spill > 1e-9:
        room = sum(f - o for f, o in zip(free, out))
        for i in range(len(free)):
            if room > 0:
                out[i] += spill * (free[i] - out[i]) / room
    for i in range(len(free)):
        free[i] -= out[i]
    return out


def slices(total_pages: float, workload_sets: Sequence[float], os_sets: Sequence[float], zero_pages: float,
           wss_layout: str | Sequence[float] = "spread",
           zero_layout: str | Sequence[float] = "spread") -> list[list[float]]:
    """Pages per bitmap component in each slice of RAM, bottom to top.

    Components, in order: the workload's dirty sets, the OS's sets (background,
    hot), other non-zero pages, zero pages. The working set is placed first
    (at the very top for ``end``), then the zero pages, then the OS's sets
    spread over what is left; the rest is other non-zero data.
    """
    grid = _grid(wss_layout, zero_layout)
    free = [total_pages / grid] * grid
    wss_total = sum(workload_sets)
    if zero_layout != "spread" and wss_layout == "spread":  # a placed layout claims its room first
        zero = _place(free, zero_pages, zero_layout, grid)
        wss = _place(free, wss_total, wss_layout, grid)
    else:
        wss = _place(free, wss_total, wss_layout, grid)
        zero = _place(free, zero_pages, zero_layout, grid)
    bgs = [_place(free, pages, "spread", grid) for pages in os_sets]
    rows = []
    for i in range(grid):
        sets = [wss[i] * w / wss_total if wss_total > 0 else 0.0 for w in workload_sets]
        row = sets + [bg[i] for bg in bgs] + [max(free[i], 0.0), zero[i]]
        rows.append(row)
    if not isinstance(zero_layout, str):
        _memmap_on_top(rows, MEMMAP_SHARE * total_pages)
    return _merge(rows)


def _memmap_on_top(rows: list[list[float]], memmap_pages: float) -> None:
    """Make the top ``memmap_pages`` of RAM non-zero (the guest kernel's memory map, see the module
    docstring). The guest's report counted the kernel's pages as spread evenly, so the memory map's
    pages come out of every slice below it alike (the same share of each one's other non-zero
    pages: slices of one mix keep it), and that many zero pages trade places with them."""
    need, top, left = 0.0, len(rows), memmap_pages
    while top > 0 and left > 1e-9:  # the slices the memory map covers, and the zero pages in them
        top -= 1
        size = sum(rows[top])
        covered = min(size, left)
        need += rows[top][-1] * covered / size if size > 0 else 0.0
        left -= covered
    below = sum(row[-2] for row in rows[:top])
    if need <= 1e-9 or below <= 0:
        return
    share = min(need / below, 1.0)
    moved = sum(_move(row, -2, -1, row[-2] * share) for row in rows[:top])  # other non-zero pages go down ...
    for i in range(len(rows) - 1, top - 1, -1):  # ... and the zero pages on top come down
        moved -= _move(rows[i], -1, -2, moved)


def _move(row: list[float], src: int, dst: int, pages: float) -> float:
    """Move up to ``pages`` from component ``src`` to ``dst`` of a slice; returns how many moved.
    Whole slivers only: a millionth of a page left behind would have the walk chase it."""
    take = min(pages, row[src])
    if row[src] - take < 1e-6:
        take = row[src]
    row[src] -= take
    row[dst] += take
    return take


def _merge(rows: list[list[float]]) -> list[list[float]]:
    """Join neighbouring slices whose mix is the same (the walk cannot tell them apart)."""
    out: list[list[float]] = []
    for row in rows:
        if out and _same_mix(out[-1], row):
            out[-1] = [a + b for a, b in zip(out[-1], row)]
        else:
            out.append(list(row))
    return out


def _same_mix(a: list[float], b: list[float]) -> bool:
    sa, sb = sum(a), sum(b)
    if sa <= 0 or sb <= 0:
        return sa <= 0 and sb <= 0
    return all(abs(x / sa - y / sb) < 1e-9 for x, y in zip(a, b))
