"""QEMU's dirty bitmap as the simulator keeps it: pending pages per slice of RAM and component.

ram_list_init_bitmaps() sets every page dirty; ram_find_and_save_block()
walks it in address order from where it last stopped, wrapping at the top;
migration_bitmap_sync() adds what the guest dirtied since. Here RAM is a few
slices, bottom to top (:mod:`.layout`), each holding a number of pending
pages of every component: the dirty sets, then other normal pages, then zero
pages (the last component). Within a slice pages are mixed evenly, so a sync
merges the remaining and the new dirt assuming independence (``r + d - r d / c``).
"""
from __future__ import annotations

from typing import Sequence

from ..model.plan import VM
from . import layout


class DirtyBitmap:
    """Pending pages per slice and component (``cells``), what each slice holds (``capacity``), and the
    slice the walk is in (``cursor``)."""

    def __init__(self) -> None:
        self.cells: list[list[float]] = []
        self.capacity: list[list[float]] = []
        # Pending pages never sent yet, per slice and component (a part of ``cells``): the
        # destination has not written them, so its RAM behind them is not allocated yet.
        self.fresh: list[list[float]] = []
        self.cursor = 0

    def init(self, vm: VM, page_bytes: float, set_pages: Sequence[float], os_sets: int) -> None:
        """ram_list_init_bitmaps(): every page starts dirty; the walk starts at the bottom of RAM."""
        total = vm.memory_bytes / page_bytes
        sets = list(set_pages)
        workload, os_part = sets[:len(sets) - os_sets], sets[len(sets) - os_sets:]
        in_sets = min(sum(sets), total)
        zero = min(vm.zero_fraction * total, total - in_sets)
        self.capacity = layout.slices(total, workload, os_part, zero, vm.wss_layout, vm.zero_layout)
        self.cells = [list(row) for row in self.capacity]
        self.fresh = [list(row) for row in self.capacity]
        self.cursor = 0

    @property
    def totals(self) -> list[float]:
        """Pending pages per component, over all of RAM."""
        return [sum(col) for col in zip(*self.cells)] if self.cells else []

    @property
    def fresh_totals(self) -> list[float]:
        """Pending pages never sent, per component, over all of RAM."""
        return [sum(col) for col in zip(*self.fresh)] if self.fresh else []

    @property
    def pending_pages(self) -> float:
        return sum(sum(row) for row in self.cells)

    def row(self) -> list[float]:
        """The slice the walk is in, moving on (and wrapping at the top) past clean ones."""
        n = len(self.cells)
        for _ in range(n):
            row = self.cells[self.cursor]
            if sum(row) > 1e-9:
                return row
            self.cursor = (self.cursor + 1) % n
        return self.cells[self.cursor]

    def zero_share(self, row: list[float] | None = None) -> float:
        """Share of zero pages among the pending pages of ``row`` (default: the walk's slice)."""
        if not self.cells:
            return 0.0
        row = self.row() if row is None else row
        pending = sum(row)
        return row[-1] / pending if pending > 0 else 0.0

    def fresh_normal_share(self, whole: bool = False) -> float:
        """Share of normal pages never sent among the pending pages of the walk's slice (``whole``:
        of all RAM): the ones the destination writes for the first time."""
        if not self.cells:
            return 0.0
        if whole:
            pending, fresh = self.pending_pages, self.fresh_totals
        else:
            row = self.row()
            pending, fresh = sum(row), next((f for r, f in zip(self.cells, self.fresh) if r is row), [])
        return sum(fresh[:-1]) / pending if pending > 0 and fresh else 0.0

    def clear(self, row: list[float], share: float) -> float:
        """Send ``share`` of a slice's pending pages (the walk's, :meth:`row`), evenly over its
        components; returns the zero pages sent. The never-sent pages go first: until the walk
        wraps, every pending page ahead of it is one, and every page it sent is behind it."""
        zero_sent = row[-1] * share
        sent = sum(row) * share
        for i in range(len(row)):
            row[i] *= 1 - share
        fresh = next((f for r, f in zip(self.cells, self.fresh) if r is row), [])
        total = sum(fresh)
        keep = 1.0 - min(sent, total) / total if total > 0 else 0.0
        for i in range(len(fresh)):
            fresh[i] = min(fresh[i] * keep, row[i])
        return zero_sent

    def merge(self, dirtied: Sequence[float], set_pages: Sequence[float]) -> float:
        """Add what each dirty set dirtied (spread over its pages evenly) to what is still pending;
        returns the pages newly set (a page still pending counts once)."""
        new_total = 0.0
        for i, d in enumerate(dirtied):
            w = set_pages[i]
            if d <= 0 or w <= 0:
                continue
            for row, cap in zip(self.cells, self.capacity):
                c = cap[i]
                if c <= 0:
                    continue
                r, dd = row[i], d * c / w  # the set's dirtying falls on its pages evenly
                union = min(r + dd - r * dd / c, c)
                new_total += union - r
                row[i] = union
        return new_total
