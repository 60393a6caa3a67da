"""Where pages sit in RAM and QEMU's address-order walk (simkvm.sim.layout).

Oracles: page conservation; the spread layout is the textbook union
R + D - R D / W (one slice); a measured but even layout predicts what spread
predicts; a working set at the top of RAM is still pending when the first pass
ends, so dirtying it again adds nothing at the next sync (closed form); the
guest's READY report turns into layouts that conserve RAM; a measured guest's top RAM/64 is its
kernel's memory map (non-zero, every component's count kept), so the first pass ends on it at the
sender's pace; float dust in a slice is sent with it.
"""
from __future__ import annotations

import pytest

from simkvm.testbed.guestplan import reported_layouts
from simkvm.model.plan import Plan
from simkvm.sim import simulate
from simkvm.sim.layout import slices

MiB = 2**20
PAGE = 4096


def _columns(rows):
    return [sum(col) for col in zip(*rows)]


@pytest.mark.parametrize("wss_layout,zero_layout", [
    ("spread", "spread"), ("end", "spread"), ("start", "end"), ("spread", "end"), ("end", "end"),
    ([0, 0, 1, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 1], "spread"),
    ([1, 2, 3, 4], [4, 3, 2, 1, 0, 0, 0, 0]),
])
def test_every_page_is_placed_once(wss_layout, zero_layout):
    total, sets, bg, zero = 65536.0, [2048.0, 512.0], 4096.0, 30000.0
    rows = slices(total, sets, [bg], zero, wss_layout, zero_layout)
    cols = _columns(rows)
    assert cols[0] == pytest.approx(2048) and cols[1] == pytest.approx(512)
    assert cols[2] == pytest.approx(bg) and cols[-1] == pytest.approx(zero)
    assert sum(cols) == pytest.approx(total)
    assert all(v >= -1e-9 for row in rows for v in row)
    # hot and cold sets keep their proportion in every slice (they share one placement)
    assert all(row[1] == pytest.approx(row[0] * 512 / 2048) for row in rows)


def test_spread_is_one_slice_and_end_puts_the_working_set_on_top():
    assert len(slices(65536, [2048], [], 30000)) == 1
    rows = slices(65536, [2048], [], 30000, "end")
    assert rows[-1][0] == pytest.approx(2048) and sum(rows[-1]) == pytest.approx(2048)


def test_measured_shares_are_kept():
    shares = [0, 0, 0, 0, 0, 0, 0, 0, 0, 377, 268, 175, 0, 0, 0, 180]
    rows = slices(65536, [2048], [], 0, shares)
    # the slices merge neighbours with the same mix, so compare by position in RAM
    placed, at = [0.0] * 16, 0.0
    for row in rows:
        size = sum(row)
        first = int(at // 4096)
        last = int((at + size - 1e-6) // 4096)
        for b in range(first, last + 1):
            lo, hi = max(at, b * 4096), min(at + size, (b + 1) * 4096)
            placed[b] += row[0] * (hi - lo) / size
        at += size
    assert [round(p) for p in placed] == [round(2048 * s / 1000) for s in shares]


def _plan(**vm):
    return Plan.from_dict({
        "vm": {"memory": "1GiB", "zero_fraction": 0.3, **vm},
        "workload": {"memory": {"model": "uniform", "dirty_rate": "40MiB/s", "wss": "96MiB"}},
        "link": {"bandwidth": "100MiB/s"}, "migration": {"max_downtime": "100ms"}})


def test_an_even_measured_layout_predicts_like_spread():
    spread = simulate(_plan())
    even = simulate(_plan(wss_layout=[1] * 16, zero_layout=[1] * 8))
    assert even.iterations == spread.iterations
    assert even.total_time_s == pytest.approx(spread.total_time_s, rel=0.02)
    assert even.ram_transferred_bytes == pytest.approx(spread.ram_transferred_bytes, rel=0.02)


def test_a_working_set_on_top_is_still_pending_when_the_first_pass_ends():
    """1 GiB, 64 MiB working set re-dirtied within a second, 100 MiB/s, 1 s limit: the first
    pass stops below the 100 MiB threshold with the top of RAM unsent. On top, that leftover
    holds the whole working set, so the next sync adds nothing and the migration switches
    over at once; spread, the sync adds ~60 MiB and it needs another round."""
    def plan(layout):
        return Plan.from_dict({
            "vm": {"memory": "1GiB", "wss_layout": layout},
            "workload": {"memory": {"model": "uniform", "dirty_rate": "1GiB/s", "wss": "64MiB"}},
            "link": {"bandwidth": "100MiB/s"}, "migration": {"max_downtime": "1s"}})

    top, spread = simulate(plan("end")), simulate(plan("spread"))
    threshold = 100 * MiB
    r_top = top.rounds.set_index("memory_iteration")
    r_spread = spread.rounds.set_index("memory_iteration")
    left = r_top.loc[2, "memory_remaining"]
    assert left <= threshold and r_top.loc[2, "dirtied_bytes"] == pytest.approx(0, abs=PAGE)
    assert top.iterations == 3  # it switches over after that sync (the completion's own sync is 3)
    # spread: the union R + D - R D / W with the same leftover R
    d = 64 * MiB  # the set is fully re-dirtied
    r = r_spread.loc[2, "memory_remaining"] - r_spread.loc[2, "dirtied_bytes"]
    assert r_spread.loc[2, "dirtied_bytes"] == pytest.approx(d - r * d / 2**30, rel=0.02)
    assert spread.iterations > top.iterations


def test_the_guest_report_becomes_layouts_that_conserve_ram():
    report = {"mem_total": 200 * MiB, "used": 24 * MiB, "arena": 32 * MiB,
              "wss_hist": "0,0,62,250,250,225,0,31,47,43,53,0,0,0,0,39",
              "arena_hist": "0,0,62,250,250,225,0,31,47,43,53,0,0,0,0,39"}
    out = reported_layouts(report, 256 * MiB)
    assert out["vm.wss_layout"][3] == 250 and len(out["vm.wss_layout"]) == 16
    zero = out["vm.zero_layout"]
    kernel = 24 * MiB + (256 - 200) * MiB
    # no slice over-full here, so the zero pages are RAM minus arena minus kernel, slice by slice
    assert sum(zero) == pytest.approx(256 * MiB - 32 * MiB - kernel)
    assert zero[3] == pytest.approx(16 * MiB - 32 * MiB * 0.25 - kernel / 16)
    Plan.from_dict({"vm": {"wss_layout": list(out["vm.wss_layout"]), "zero_layout": list(zero)}})
    assert reported_layouts({"wss_hist": "-", "arena_hist": "-", "used": 1, "arena": 1, "mem_total": 1}, 1) == {}
    assert reported_layouts(None, 1) == {}


@pytest.mark.parametrize("zero_layout", [
    [1] * 16,
    [0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2],  # a fresh guest: free memory in the upper half
    [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
])
def test_a_measured_guest_ends_ram_with_its_memory_map(zero_layout):
    """A measured layout is a booted Linux: its struct page array (64 B per 4 KiB frame, 1/64 of
    RAM, allocated top-down by memblock) is the top of RAM, non-zero. Oracles: the top RAM/64
    holds no zero page, every component keeps its count, nothing is negative."""
    total, sets, bg, zero = 65536.0, [2048.0], 4096.0, 30000.0
    before = _columns(slices(total, sets, [bg], zero, "spread", "spread"))
    rows = slices(total, sets, [bg], zero, "spread", zero_layout)
    assert _columns(rows) == pytest.approx(before)
    assert all(v >= 0 for row in rows for v in row)
    top, zero_on_top = total / 64, 0.0
    for row in reversed(rows):
        size = sum(row)
        covered = min(size, top)
        zero_on_top += row[-1] * covered / size
        top -= covered
        if top <= 0:
            break
    assert zero_on_top == pytest.approx(0, abs=1e-6)


def test_named_layouts_keep_their_top():
    """Only a measured layout says the guest is a booted Linux: ``end`` (a fresh guest's untouched
    top) and ``spread`` keep the zero pages where they were placed."""
    total, zero = 65536.0, 30000.0
    rows = slices(total, [2048.0], [], zero, "spread", "end")
    assert rows[-1][-1] == pytest.approx(sum(rows[-1]))  # the top slice is all zero pages


def test_the_first_pass_ends_on_the_memory_map_at_the_senders_pace():
    """1 GiB guest, idle, zero pages in its upper half, 32 MiB/s: the first pass walks the zero pages
    at the CPU's pace, then the memory map (16 MiB) at the rate limit's. QEMU checks the estimate
    every 100 ms window and syncs once it is below the threshold (32 MiB/s x 300 ms = 9.6 MiB): so
    the sync finds 9.6 MiB minus at most one window's budget (3.2 MiB) of the memory map still
    pending, not the empty bitmap a zero tail would leave."""
    bw = 32 * MiB
    plan = Plan.from_dict({
        "vm": {"memory": "1GiB", "zero_fraction": 0.45, "zero_layout": [0] * 8 + [1] * 8},
        "link": {"bandwidth": bw}, "migration": {"max_downtime": "300ms"}})
    rounds = simulate(plan).rounds.set_index("memory_iteration")
    left = rounds.loc[2, "memory_remaining"] - rounds.loc[2, "dirtied_bytes"]
    threshold = bw * 0.3
    assert threshold - bw * 0.1 * 1.01 <= left < threshold


def test_float_dust_is_sent_with_its_slice():
    """A slice left with a millionth of a page (float rounding of the shares sent) is sent whole: left
    pending, the walk would chase it in sends shorter than the clock resolves (seen as a hang on a
    2 GiB guest's measured layout). Oracle: sending all but 1e-7 pages of every slice empties the bitmap
    and counts every page once."""
    import simpy

    from simkvm.sim.state import Run

    run = Run(simpy.Environment(), _plan(wss_layout=[1] * 16, zero_layout=[3] + [1] * 15))
    run.init_bitmap()
    total = run.pending_pages
    for _ in range(len(run.dirty_bitmap.cells)):
        run.send_pages(sum(run.dirty_bitmap.row()) - 1e-7)
    assert run.pending_pages == 0
    assert run.zero_pages + run.normal_pages == pytest.approx(total)


def test_the_kernel_pages_go_where_the_guest_found_them():
    """``place_kernel`` (a variant: README, the v25 / q10r round): with ``kernel_hist`` (frames in use
    besides the arena, /proc/kpageflags) the kernel's pages leave zero pages where they are, not an
    even share of every part. Oracles: RAM is conserved (the same zero total as a spread kernel), the
    parts holding the kernel have that many fewer zero pages and the others only their arena's
    fewer; the default spreads them; a histogram of another part count keeps the even spread."""
    arena_hist = ",".join(["0"] * 8 + ["125"] * 8)
    base = {"mem_total": 248 * MiB, "used": 8 * MiB, "arena": 32 * MiB, "wss_hist": arena_hist,
            "arena_hist": arena_hist, "kernel_hist": ",".join(["0"] * 14 + ["500", "500"])}
    kernel = 8 * MiB + (256 - 248) * MiB
    spread = reported_layouts(base, 256 * MiB)["vm.zero_layout"]
    placed = reported_layouts(base, 256 * MiB, place_kernel=True)["vm.zero_layout"]
    assert sum(placed) == pytest.approx(sum(spread)) == pytest.approx(256 * MiB - 32 * MiB - kernel)
    assert placed[15] == pytest.approx(16 * MiB - 4 * MiB - kernel / 2) and placed[0] == pytest.approx(16 * MiB)
    assert placed[8] == pytest.approx(16 * MiB - 4 * MiB) and spread[0] == pytest.approx(16 * MiB - kernel / 16)
    odd = reported_layouts({**base, "kernel_hist": "1,1,1"}, 256 * MiB, place_kernel=True)["vm.zero_layout"]
    assert odd == pytest.approx(spread)


def test_a_guest_reporting_64ths_gives_the_layouts_of_its_16ths():
    """The guest reports 1/64ths; the plan's layouts sum them to 1/16ths (LAYOUT_PARTS), so a report of
    64 parts gives exactly what the same pages in 16 parts give; ``parts=64`` keeps them (a variant)."""
    fine = [0.0] * 64
    for i, v in enumerate([5, 0, 3, 9, 40, 12, 0, 0, 1, 1, 7, 30, 2, 0, 0, 90] * 4):
        fine[i] = float(v)
    coarse = [sum(fine[4 * i:4 * i + 4]) for i in range(16)]
    base = {"mem_total": 240 * MiB, "used": 20 * MiB, "arena": 96 * MiB}
    r64 = reported_layouts({**base, "wss_hist": ",".join(map(str, fine)), "arena_hist": ",".join(map(str, fine))},
                           256 * MiB)
    r16 = reported_layouts({**base, "wss_hist": ",".join(map(str, coarse)), "arena_hist": ",".join(map(str, coarse))},
                           256 * MiB)
    assert r64["vm.wss_layout"] == pytest.approx(r16["vm.wss_layout"]) and len(r64["vm.wss_layout"]) == 16
    assert r64["vm.zero_layout"] == pytest.approx(r16["vm.zero_layout"])
    assert len(reported_layouts({**base, "arena_hist": ",".join(map(str, fine))}, 256 * MiB,
                                parts=64)["vm.zero_layout"]) == 64
