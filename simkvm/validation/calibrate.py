"""Host profiles: the few host constants the simulator needs, fitted on real calibration runs.

The question this module answers is "which host constants make the model
describe this testbed?". ``simkvm calibrate DIR`` reads the runs of a
campaign directory whose role is ``calibration`` (and only those: the report
judges the model on the others) and fits:

* what can be read straight off the measurements:
  - fixed costs: ``start_destination_s`` from the measured preparation time
    (until the mirror starts), minus the other preparation constants;
    ``source_stop_s`` from the time migrate3 took to return after the guest
    resumed on the destination (libvirt's Confirm stopping the source QEMU);
  - bytes per page: ``page_header_bytes`` (and ``zero_page_bytes`` = header +
    1, as QEMU sends it) and ``device_state_bytes`` by least squares on
    ``RAM bytes - 4096 x normal pages = header x (normal + zero) + zero + device state``;
  - ``mirror_zero_accounted``: whichever value predicts the mirror time better;
  - ``dirty_rate_factor``: the rate the guest achieved during the migration
    over its nominal rate, when the guests report it (the testbed guest's
    console does); measured, it is not searched: the search's objective is
    nearly flat in it and is dominated by QEMU's dirty-rate figure of idle
    guests, which the factor cannot explain but would bend to (campaign v5:
    1.28 searched where the guests wrote at 1.00 of their nominal rate);
  - ``mirror_drain_s`` is not fitted (:data:`DRAIN_HOW`);
* the rest by re-simulating every calibration run (a coordinate search in
  log space over the relative errors of total time, downtime, iteration
  count and QEMU's reported dirty rate): ``dirty_rate_factor`` when no guest
  reported its rate, ``link.capacity`` (the wire when QEMU lifts the limit for stop-and-copy),
  ``resume_s`` (downtime floor), ``sync_s_per_GiB`` and ``page_cost_s``
  (per-iteration overheads), ``first_touch_s`` (the destination's first write to a page in the
  stop-and-copy: pinned by runs that switch over with much of RAM never sent, such as
  cal-512-rand32-128-dt2s and the idle runs whose first pass ends on the guest's memory map). The fixed costs stay as measured: letting the
  search move them would let them soak up errors of other parts of the model;
* with ``--pool PROFILE...`` (earlier calibrations of the same testbed and QEMU version), each
  searched constant then becomes its median over those fits and this one (:func:`pool_searched`):
  ten calibration runs pin the stop-and-copy constants loosely, repeated fits scatter widely
  (:data:`POOL_HOW`), and their median is the steadier estimate.

The profile is YAML: ``host:`` (what ``profile:`` in a plan loads), ``link:``
(``capacity``: not a host field in the plan schema, so only
:func:`apply_profile` applies it) and ``fit:`` (run ids used, residuals, how;
ignored by plans).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..guestos import kernel_free_reserve_bytes, os_nonzero_bytes
from ..io import atomic_write
from ..model import codec
from ..model.codec import key_of
from ..model.errors import UserError
from ..model.plan import Host, Plan
from ..model.result import Result
from ..model.units import PAGE_BYTES
from ..sim import simulate
from ..sim.mirror import stop_may_stall
from .search import coordinate_search, from_u, run_terms, to_u
from .store import RunStore, plan_of_run

PAGE = float(PAGE_BYTES)

#: Searched constants: (name, lower bound, upper bound, eps of the log(x + eps) transform).
SEARCHED: tuple[tuple[str, float, float, float], ...] = (
    ("dirty_rate_factor", 0.05, 3.0, 0.0),
    ("capacity_Bps", 32 * 2**20, 20 * 2**30, 0.0),
    ("resume_s", 0.0, 1.0, 0.005),
    ("sync_s_per_GiB", 0.0, 2.0, 0.002),
    ("page_cost_s", 0.0, 2e-5, 1e-8),
    ("first_touch_s", 0.0, 1e-4, 1e-7),
)
#: The host fields a calibration fits or carries: all but ``qemu``, which is not a constant (each run keeps
#: the version it was measured on; a QEMU 10 run fitted under 7.2's loop would bend the constants to 7.2's
#: behaviour: its reply stalls, its checks).
HOST_CONSTANTS = tuple(f.name for f in dataclasses.fields(Host) if f.name != "qemu")


def searched_space(how: Mapping[str, str]) -> tuple[tuple[str, float, float, float], ...]:
    """The constants the search moves: all of :data:`SEARCHED` but a dirty-rate factor the guests
    measured (their console reports the rate they achieved): a measured rate is not a free knob."""
    measured = how.get("dirty_rate_factor", "").startswith("guest's achieved")
    return tuple(s for s in SEARCHED if not (measured and s[0] == "dirty_rate_factor"))


def with_constants(plan: Plan, c: Mapping[str, float]) -> Plan:
    """``plan`` with the fitted constants ``c`` (SI, by field name): host fields, the wire's capacity
    (never below the bandwidth) and the guest image's own corrections."""
    changes: dict[str, Any] = {f"host.{key_of(k)}": v for k, v in c.items() if k in HOST_CONSTANTS}
    if "capacity_Bps" in c:
        changes["link.capacity"] = max(float(c["capacity_Bps"]), plan.link.bandwidth_Bps)
    vm = plan.vm
    if c.get("os_nonzero_bytes"):
        nonzero = os_nonzero_bytes(vm.memory_bytes, c["os_nonzero_bytes"], True)
        changes["vm.zero_fraction"] = min(1.0, max(0.0, vm.zero_fraction - nonzero / vm.memory_bytes))
    if c.get("background_dirty_rate_Bps"):
        changes["vm.background_dirty_rate"] = c["background_dirty_rate_Bps"]
        changes["vm.background_wss"] = min(c.get("background_wss_bytes", 16 * 2**20), vm.memory_bytes)
    if c.get("background_hot_bytes"):
        changes["vm.background_hot"] = min(c["background_hot_bytes"], vm.memory_bytes)
    return plan.with_(**changes)


# ------------------------------------------------------------------ the data
@dataclass
class CalibrationRun:
    run_id: str
    plan: Plan  # as predicted, host constants at their defaults
    measured: Result
    guest_mem_Bps: float | None = None  # what the guest achieved during the migration (console)


def calibration_runs(directory: str | Path, selector: str = "role=calibration") -> list[CalibrationRun]:
    key, sep, value = selector.partition("=")
    if not sep or key not in ("role", "scenario", "run_id"):
        raise UserError(f"--runs must be role=NAME, scenario=ID[,ID] or run_id=ID[,ID], got {selector!r}")
    store = RunStore(directory)
    rows = store.rows()
    wanted = set(value.split(","))
    sel = rows[rows[key].astype(str).isin(wanted)]
    if not len(sel):
        raise UserError(f"{directory}: no finished run with {selector}")
    runs = []
    for _, r in sel.iterrows():
        g = r.get("guest_mem_Bps")
        runs.append(CalibrationRun(str(r["run_id"]), plan_of_run(store, str(r["run_id"])),
                                   store.load_result(str(r["run_id"]), "measured"),
                                   float(g) if g is not None and np.isfinite(float(g)) else None))
    return runs


# ------------------------------------------------------------------ direct estimates
def fit_page_bytes(runs: Sequence[CalibrationRun]) -> tuple[float, float] | None:
    """(page header bytes, device state bytes) by least squares, from converged runs' page counts."""
    xs, ys = [], []
    for r in runs:
        m = r.measured
        if not m.converged or m.normal_pages <= 0:
            continue
        xs.append([m.normal_pages + m.zero_pages, 1.0])
        ys.append(m.ram_transferred_bytes - PAGE * m.normal_pages - m.zero_pages)
    if len(xs) < 2:
        return None
    (h, ds), *_ = np.linalg.lstsq(np.asarray(xs), np.asarray(ys), rcond=None)
    return float(np.clip(h, 0.0, 256.0)), float(np.clip(ds, 16 * 1024, 64 * 2**20))


def fit_fixed_costs(runs: Sequence[CalibrationRun], base: Host) -> dict[str, float]:
    """start_destination_s (and setup_s when libvirt reported QEMU's setup time) from the preparation time;
    source_stop_s from how long migrate3 took to return after the guest resumed on the destination."""
    out: dict[str, float] = {}
    setup_ms = [float(r.measured.meta.get("completed_stats", {}).get("setup_time"))
                for r in runs if r.measured.meta.get("completed_stats", {}).get("setup_time") is not None]
    setup_s = float(np.median(setup_ms)) / 1000.0 if setup_ms else base.setup_s
    if setup_ms:
        out["setup_s"] = setup_s
    prep = [r.measured.setup_time_s - base.check_destination_s - base.create_disk_s * len(r.plan.migrated_disks)
            - setup_s for r in runs if r.measured.setup_time_s > 0 and r.measured.outcome != "refused"]
    if prep:
        out["start_destination_s"] = float(max(0.0, np.median(prep)))
    tails = [r.measured.meta["migrate3_returned_s"] - r.measured.total_time_s for r in runs
             if r.measured.converged and isinstance(r.measured.meta.get("migrate3_returned_s"), (int, float))]
    if tails:
        out["source_stop_s"] = float(max(0.0, np.median(tails)))
    return out


#: How often, on average, the idle guest kernel rewrites each page of its own working set (per-CPU
#: counters, timer and RCU state, slab, page tables: Linux's once-a-second housekeeping, e.g.
#: vmstat_update every sysctl_stat_interval = HZ). The set itself is measured (kernel_set_bytes).
KERNEL_REWRITE_S = 1.0


def kernel_set_bytes(idle: Sequence[CalibrationRun], hot_bytes: float) -> float | None:
    """The idle guest kernel's own working set W, read off the first sync after the first pass.

    QEMU's sync at the end of the first pass adds every page written since the setup sync; in an
    idle testbed guest those are its hot pages (all dirty at any sync) and what the kernel wrote.
    Measured on campaign v6 (QEMU 7.2), that sync found 1.9-3.0 MB whether the pass lasted 4 s or
    53 s: a set, saturated, not a rate (as a rate over 16 MiB fitted on the normal pages it came out
    0: the kernel's pages were lost in the larger error of the first pass's non-zero count). Written
    uniformly at W/KERNEL_REWRITE_S, the set holds W (1 - exp(-T/KERNEL_REWRITE_S)) pages after a pass
    of T seconds: W is solved from each run's (T, found - hot), and the median taken (the
    executor's per-sync figure is an estimate from two polls). None without such a figure.
    """
    found = []
    for r in idle:
        rows = {int(x["memory_iteration"]): x for x in r.measured.round_records
                if x.get("memory_iteration") is not None}
        first, second = rows.get(1), rows.get(2)
        if not first or not second or second.get("dirtied_bytes") is None:
            continue
        pass_s = float(second["time_elapsed_s"]) - float(first["time_elapsed_s"])
        if pass_s <= 0:
            continue
        # Pages still pending at the sync (the pass's tail) are not counted as new again: the
        # sync found the set less their share of RAM (the sets are spread over it).
        new = float(second["dirtied_bytes"])
        left = max(float(second.get("memory_remaining") or 0.0) - new, 0.0)
        new /= max(1.0 - left / r.plan.vm.memory_bytes, 0.5)
        seen = max(new - hot_bytes, 0.0)
        found.append(seen / -math.expm1(-pass_s / KERNEL_REWRITE_S))
    return float(np.median(found)) if found else None


def fit_guest_os(runs: Sequence[CalibrationRun], c: Mapping[str, float] | None = None) -> dict[str, float]:
    """What the guest image does besides its workload, read off the measurements.

    ``os_nonzero_bytes``: RAM non-zero beyond what the plan's zero fraction says (negative when
    the guest's own report overstates it), beyond the kernel's free-page reserve (which its
    report counts as used and which grows with RAM: :mod:`simkvm.guestos`): zero pages expected minus the zero pages QEMU
    counted, in runs whose workload dirties nothing (no zero page became normal meanwhile).
    ``background_hot_bytes``: known, not fitted: the testbed guest's own always-dirty pages
    (its TLB-flush regions, :data:`simkvm.testbed.guest.GUEST_HOT_BYTES`), when the runs
    are the testbed guest's (their measured results carry its console) and it ran its TLB-flush
    workaround (the console's ``tlb_flush``; runs from before it was recorded ran it: QEMU 7.2
    only; a QEMU 10 guest has no flush pages, :attr:`simkvm.testbed.stack.Stack.tlb_flush`).
    ``background_dirty_rate_Bps``: the rate over ``background_wss_bytes`` that makes those
    idle guests, simulated with the hot pages, send as many normal pages as QEMU counted
    (bisection). Not QEMU's dirty-rate figure: it has one or two samples per run, some over
    periods so short that the hot pages dominate them (v4: 134 vs 509 pages/s in two idle
    runs), and taken as the rate it counts the hot pages twice.
    """
    out: dict[str, float] = {}
    idle = [r for r in runs if r.measured.converged and r.plan.workload.memory.dirty_rate_Bps == 0]
    # the residual after the kernel's free-page reserve, which grows with RAM (simkvm.guestos)
    nonzero = [(r.plan.vm.zero_fraction * r.plan.vm.memory_bytes / PAGE - r.measured.zero_pages) * PAGE
               + kernel_free_reserve_bytes(r.plan.vm.memory_bytes) for r in idle if r.measured.zero_pages > 0]
    if nonzero:  # may be negative: what the guest reports as non-zero may overstate it
        out["os_nonzero_bytes"] = float(np.median(nonzero))
    consoles = [r.measured.meta.get("guest_console") for r in runs]
    if runs and all(isinstance(c, dict) and c.get("tlb_flush") is not False for c in consoles):
        from ..testbed.guest import GUEST_HOT_BYTES

        out["background_hot_bytes"] = float(GUEST_HOT_BYTES)
    kernel = kernel_set_bytes(idle, out.get("background_hot_bytes", 0.0))
    if kernel is not None:
        out["background_wss_bytes"] = kernel
        out["background_dirty_rate_Bps"] = kernel / KERNEL_REWRITE_S
        return out
    # No sync after a first pass was seen: the pages an idle guest dirties are the normal pages
    # QEMU sent more than once: all of them count (QEMU's dirty-rate figure has one or two
    # samples per run, some over periods so short that the hot pages dominate them).
    measured = [r for r in idle if r.measured.normal_pages > 0]
    if not measured:
        return out
    out["background_wss_bytes"] = 16 * 2**20
    target = float(sum(r.measured.normal_pages for r in measured))

    def shown(rate_Bps: float) -> float:  # normal pages the simulated idle guests send, in all
        cc = {**(c or {}), **out, "background_dirty_rate_Bps": rate_Bps}
        return float(sum(simulate(with_constants(r.plan, cc), timeline=False).normal_pages for r in measured))

    lo, hi = 0.0, 16.0 * 2**20
    if shown(lo) >= target:  # the hot pages alone account for it
        out["background_dirty_rate_Bps"] = 0.0
        return out
    while shown(hi) < target and hi < 2**30:
        hi *= 4
    for _ in range(30):  # bisection: shown() rises with the rate
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if shown(mid) < target else (lo, mid)
    out["background_dirty_rate_Bps"] = (lo + hi) / 2
    return out


def fit_dirty_factor_from_guest(runs: Sequence[CalibrationRun]) -> float | None:
    ratios = [r.guest_mem_Bps / r.plan.workload.memory.dirty_rate_Bps for r in runs
              if r.guest_mem_Bps and r.plan.workload.memory.dirty_rate_Bps > 0]
    return float(np.median(ratios)) if ratios else None


# ------------------------------------------------------------------ re-simulation
def objective(runs: Sequence[CalibrationRun], c: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    """The search's objective. Before QEMU 8.0 a disk writer's downtime is left out: its stop waits on
    the drain's reply stalls (simkvm.sim.mirror.stop_reply_stalls_s), 40 ms a window, and whether a
    window stalls depends on timing, so it spreads as widely in repeats (cal-disk2-48: 166 and 81 ms);
    letting it pull the stop-and-copy constants (the link's capacity, resume_s, first_touch_s) bends
    every other run's downtime. From 8.0 the replies are pushed and a writer's stop pins them as
    well as any run (measured: leaving it out made q10h's downtime worse, 85.7 -> 82.1 %)."""
    totals: dict[str, float] = {}
    for r in runs:
        pred = simulate(with_constants(r.plan, c), timeline=False)
        for k, v in run_terms(pred, r.measured, downtime=not stop_may_stall(r.plan)).items():
            totals[k] = totals.get(k, 0.0) + v
    return sum(totals.values()) / max(len(runs), 1), {k: v / len(runs) for k, v in totals.items()}


def fit(runs: Sequence[CalibrationRun], *, search: bool = True, max_evals: int = 6000,
        pool: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Fit the host constants on ``runs``; returns ``{"constants": SI dict, "fit": info}``.

    First what can be read off the measurements (:func:`direct_estimates`), then the rest by
    re-simulating the runs (a coordinate search); with ``pool`` (earlier profiles of the same host
    and QEMU version), each searched constant then becomes its median over them and this fit
    (:func:`pool_searched`).
    """
    if not runs:
        raise UserError("no calibration runs to fit on")
    c, how = direct_estimates(runs)
    # mirror_drain_s is not fitted (stays Host's 0): see DRAIN_HOW.
    c["mirror_drain_s"] = 0.0
    how["mirror_drain_s"] = DRAIN_HOW
    # ---- by re-simulating the runs
    start_obj, _ = objective(runs, c)
    evals = 0
    space = searched_space(how)
    if search:
        def f(x: Mapping[str, float]) -> float:
            return objective(runs, x)[0]

        c, best, evals = coordinate_search(f, c, space, max_evals=max_evals // 2)
        # Restart from where the search stopped, with its full step, until a restart gains nothing: the
        # objective counts iterations, so a sweep at small steps stops on a ridge that a full-size step
        # crosses (on the known-constants test one restart cuts the objective 38x).
        while evals < max_evals:
            again, gained, more = coordinate_search(f, c, space, max_evals=max_evals - evals)
            evals += more
            if gained >= best - 1e-12:
                break
            c, best = again, gained
        for name, *_ in space:
            how.setdefault(name, "coordinate search re-simulating the runs")
    at_bound = [name for name, lo, hi, _ in space if search and (c[name] <= lo or c[name] >= hi)]
    qemu = calibrated_qemu(runs)
    pooled: dict[str, Any] = {}
    if pool:
        own = {name: c[name] for name, *_ in space}
        c = {**c, **pool_searched(own, space, pool, qemu)}
        pooled = {"pooled": {"profiles": [str(p) for p in pool], "own": {k: _round(v) for k, v in own.items()},
                             "how": POOL_HOW}}
    final, terms = objective(runs, c)
    return {"constants": c, "qemu": qemu, "fit": {
        "runs": [r.run_id for r in runs], "method": how, "objective_start": _round(start_obj),
        "objective": _round(final), "objective_terms": {k: _round(v) for k, v in terms.items()},
        "evaluations": evals, "at_bound": at_bound, **pooled, "residuals": residuals(runs, c)}}


#: Why a calibration pools its searched constants with earlier ones (``simkvm calibrate --pool``).
POOL_HOW = ("each searched constant is the median, in the search's log(x + eps) coordinates, of this fit and "
            "the pooled profiles' values: a campaign's ten calibration runs pin the stop-and-copy constants "
            "loosely (nine QEMU 10 rounds of one testbed fitted resume_s 0-16 ms, sync_s_per_GiB 0-27 ms, "
            "first_touch_s 3-14 us, link capacity 2.5-21 GB/s), and the median of repeated fits is the "
            "steadier estimate of one host's constants")


def pool_searched(own: Mapping[str, float], space: Sequence[tuple[str, float, float, float]],
                  profiles: Sequence[str | Path], qemu: str) -> dict[str, float]:
    """The searched constants ``own`` pooled with earlier profiles of the same host: each one's median
    over this fit and theirs, in the search's coordinates u = log(x + eps).

    Only what the search moves is pooled: the direct estimates (fixed costs, bytes per page) are read
    off this campaign's runs, and the guest section describes this campaign's guest image. A constant
    a profile does not record (an older calibration) is left out for it, not read as Host's default,
    which no fit found. A profile of another QEMU version is refused: its constants absorbed another
    loop's behaviour."""
    from ..model.qemu import normalise
    from ..model.units import parse_rate
    from ..profile import load_profile

    values: dict[str, list[float]] = {name: [float(v)] for name, v in own.items()}
    for path in profiles:
        prof = load_profile(path)
        theirs = normalise(str(prof["host"].get("qemu", "7.2")))
        if theirs != qemu:
            raise UserError(f"--pool {path}: calibrated on QEMU {theirs}, these runs on QEMU {qemu}; pool "
                            f"profiles of QEMU {qemu} only")
        host = codec.build(Host, prof["host"], "host")
        for name in values:
            if name == "capacity_Bps":
                cap = (prof.get("link") or {}).get("capacity")
                if cap is None:
                    raise UserError(f"--pool {path}: no link.capacity; pool profiles written by simkvm calibrate")
                values[name].append(parse_rate(cap, "profile link.capacity"))
            elif key_of(name) in prof["host"] or name in prof["host"]:
                values[name].append(float(getattr(host, name)))
    return {dim[0]: from_u(float(np.median([to_u(v, dim) for v in values[dim[0]]])), dim)
            for dim in space if dim[0] in values}


GUEST_HOW = {"os_nonzero_bytes": "idle calibration runs: zero pages QEMU counted, less the kernel's "
                                 "free-page reserve (simkvm.guestos)",
             "background_hot_bytes": "known: the testbed guest's TLB-flush regions (not fitted)",
             "background_dirty_rate_Bps": "the kernel's set rewritten once a second (KERNEL_REWRITE_S); "
                                          "without a sync figure: the rate whose simulation (hot pages "
                                          "included) sends the normal pages QEMU counted",
             "background_wss_bytes": "idle calibration runs: what the first sync after the first pass "
                                     "found beyond the hot pages (kernel_set_bytes); else fixed (16 MiB)"}


def direct_estimates(runs: Sequence[CalibrationRun]) -> tuple[dict[str, float], dict[str, str]]:
    """The constants read off the measurements (defaults for the rest), and how each was found."""
    base = Host()
    c: dict[str, float] = {name: getattr(base, name) for name in HOST_CONSTANTS}
    c["capacity_Bps"] = max(r.plan.link.bandwidth_Bps for r in runs) * 4
    how: dict[str, str] = {}
    pb = fit_page_bytes(runs)
    if pb is not None:
        c["page_header_bytes"], c["device_state_bytes"] = pb
        c["zero_page_bytes"] = pb[0] + 1.0
        how["page_header_bytes"] = how["device_state_bytes"] = "least squares on RAM bytes vs page counts"
    fixed = fit_fixed_costs(runs, base)
    c.update(fixed)
    for k in fixed:
        how[k] = ("median time migrate3 took to return after the resume" if k == "source_stop_s"
                  else "median preparation time of the runs")
    guest = fit_guest_os(runs, c)
    c.update(guest)
    for k in guest:
        how[k] = GUEST_HOW.get(k, "idle calibration runs")
    probed = [r.measured.service_interruption_s - r.measured.downtime_s for r in runs
              if r.measured.converged and r.measured.measurement.service_interruption_measured]
    if probed:  # what the network adds after the resume (the bridge learning the new port)
        c["network_reconvergence_s"] = max(0.0, float(np.median(probed)))
        how["network_reconvergence_s"] = "median measured service interruption minus downtime (network probe)"
    factor = fit_dirty_factor_from_guest(runs)
    if factor is not None:
        c["dirty_rate_factor"] = float(np.clip(factor, 0.05, 3.0))
        how["dirty_rate_factor"] = "guest's achieved / nominal rate (measured: not searched)"
    _fit_mirror(runs, c, how)
    return c, how


def _fit_mirror(runs: Sequence[CalibrationRun], c: dict[str, float], how: dict[str, str]) -> None:
    """Whether zero blocks count against the mirror's speed (the value that predicts the mirror time
    best), and its granularity (QEMU's, below)."""
    with_disk = [r for r in runs if r.plan.migrated_disks and r.measured.disk_mirror_time_s > 0]
    if with_disk:
        errs: dict[Any, float] = {}
        for flag in (True, False):
            cc = {**c, "mirror_zero_accounted": flag}
            errs[flag] = sum(((simulate(with_constants(r.plan, cc), timeline=False).disk_mirror_time_s
                               - r.measured.disk_mirror_time_s) / r.measured.disk_mirror_time_s) ** 2
                             for r in with_disk)
        c["mirror_zero_accounted"] = min(errs, key=errs.__getitem__)
        how["mirror_zero_accounted"] = "the value that predicts the mirror time better"
    # The granularity is QEMU's, not a fit: blockdev-mirror without one takes the target's
    # bdrv_get_default_bitmap_granularity() (block/dirty-bitmap.c): the cluster size clamped to
    # 4-64 KiB, 64 KiB when the target reports none (an NBD export); the testbed's traces show 64 KiB
    # ops on 7.2 and 10.0 alike
    # (data/experiments/mirror-trace/). Fitted on the disk bytes of a campaign's one or two writers,
    # it chose 1 MiB on q10b, q10d and q10h (bytes within 5 %), and a 4 KiB random writer then dirtied
    # 16 times the granules it does: three wrong "never ready" verdicts on q10h.
    c["mirror_granularity_bytes"] = float(Host.mirror_granularity_bytes)
    how["mirror_granularity_bytes"] = "QEMU's default bitmap granularity for an NBD target (not fitted)"


def residuals(runs: Sequence[CalibrationRun], c: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """Per run, what the fitted constants still miss (predicted - measured, where both converged)."""
    out = {}
    for r in runs:
        pred = simulate(with_constants(r.plan, c), timeline=False)
        both = r.measured.converged and pred.converged
        out[r.run_id] = {
            "total_time_rel": _round((pred.total_time_s - r.measured.total_time_s) / r.measured.total_time_s)
            if both else None,
            "downtime_s": _round(pred.downtime_s - r.measured.downtime_s) if both else None,
            "iterations": int(pred.iterations - r.measured.iterations) if both else None,
            "verdict_agrees": bool(pred.converged == r.measured.converged),
        }
    return out


def calibrated_qemu(runs: Sequence[CalibrationRun]) -> str:
    """The QEMU version the runs were measured on (libvirt's hypervisor version, e.g. 7.2.22 -> '7.2');
    the plans' own host.qemu when the runs do not say (simulated runs)."""
    from ..model.qemu import normalise

    seen = set()
    for r in runs:
        v = ((r.measured.meta.get("source") or {}) if isinstance(r.measured.meta, dict) else {}).get(
            "hypervisor_version")
        seen.add(normalise(".".join(str(v).split(".")[:2])) if v else r.plan.host.qemu)
    if len(seen) > 1:
        raise UserError(f"calibration runs were measured on several QEMU versions ({', '.join(sorted(seen))}): "
                        "calibrate each version's runs apart")
    return seen.pop() if seen else "7.2"


#: Why the writers' extra downtime is not fitted (README, "after v6": disk writers' downtime).
DRAIN_HOW = ("not fitted (0): what QEMU's mirror still copies once the guest stops is at most one "
             "BLOCK_JOB_SLICE_TIME (100 ms) of writes in mirror granules, which the model sends "
             "(simkvm.sim.mirror.mirror_backlog_bytes), with QEMU 7.2's reply stalls on it "
             "(simkvm.sim.mirror.stop_reply_stalls_s); the rest of the writers' downtime spread "
             "is as wide in repeats (cal-disk2-48: 166 and 81 ms) and in runs with no writer, so "
             "a median over the 2-3 calibration writers fitted noise (v6: 60 ms, v5-idle: 62 ms)")


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else float(f"{x:.{digits}g}")


# ------------------------------------------------------------------ the file
PROFILE_HOST_KEYS = ("start_destination_s", "setup_s", "page_header_bytes", "zero_page_bytes", "page_cost_s",
                     "first_touch_s", "sync_s_per_GiB", "device_state_bytes", "resume_s", "mirror_zero_accounted",
                     "dirty_rate_factor", "check_destination_s", "create_disk_s", "switchover_overhead_s",
                     "mirror_granularity_bytes", "mirror_complete_s", "mirror_drain_s", "source_stop_s")


def profile_dict(fitted: Mapping[str, Any], *, source: str = "") -> dict[str, Any]:
    c = fitted["constants"]
    host = {key_of(k): (bool(c[k]) if isinstance(c[k], bool) else _round(float(c[k]))) for k in PROFILE_HOST_KEYS
            if k in c}  # (a constant not fitted keeps the plan's default)
    if "mirror_granularity_bytes" in c:  # a power of two, written exactly: 6 digits of 1 MiB do not load back
        host[key_of("mirror_granularity_bytes")] = int(round(float(c["mirror_granularity_bytes"])))
    host["qemu"] = fitted.get("qemu", "7.2")  # the version calibrated on: plans predicting another get a warning
    guest = {}
    if c.get("os_nonzero_bytes") is not None:
        guest["os_nonzero"] = _round(float(c["os_nonzero_bytes"]))
        guest["kernel_reserve"] = True
    if c.get("background_dirty_rate_Bps"):
        guest["background_dirty_rate"] = _round(float(c["background_dirty_rate_Bps"]))
        guest["background_wss"] = _round(float(c.get("background_wss_bytes", 16 * 2**20)))
    if c.get("background_hot_bytes"):
        guest["background_hot"] = _round(float(c["background_hot_bytes"]))
    network = {}
    if c.get("network_reconvergence_s") is not None:
        network["reconvergence"] = _round(float(c["network_reconvergence_s"]))
    return {
        "host": host,
        "link": {"capacity": _round(float(c["capacity_Bps"]))},
        **({"guest": guest} if guest else {}),
        **({"network": network} if network else {}),
        "fit": {"source": source, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                **fitted["fit"]},
    }


def write_profile(path: str | Path, prof: Mapping[str, Any]) -> None:
    import yaml

    header = (
        "# simkvm host profile, written by `simkvm calibrate` (SI units: s, bytes, bytes/s).\n"
        "# host and link: what `profile: THIS_FILE` in a plan loads (the plan's own values win).\n"
        "# link.capacity: the wire when QEMU lifts the rate limit for stop-and-copy (never below the\n"
        "#   plan's bandwidth); apply_profile(plan, profile) forces every constant instead.\n"
        "# fit: the calibration runs used and their residuals (never reported as validation errors).\n")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(p, header + yaml.safe_dump(dict(prof), sort_keys=False, default_flow_style=False))


def calibrate(directory: str | Path, output: str | Path, *, selector: str = "role=calibration",
              search: bool = True, pool: Sequence[str | Path] = ()) -> dict[str, Any]:
    if pool and not search:
        raise UserError("--pool pools the searched constants: it needs the search (drop --no-search)")
    mine = [p for p in pool if Path(p).resolve() == Path(output).resolve()]
    if mine:
        raise UserError(f"--pool {mine[0]} is the profile this calibration writes (-o): pool earlier "
                        "calibrations only (e.g. profiles/pool/), not this campaign's previous output")
    runs = calibration_runs(directory, selector)
    fitted = fit(runs, search=search, pool=pool)
    prof = profile_dict(fitted, source=f"{directory} ({selector})")
    image = campaign_guest_image(directory)
    if image:
        prof["fit"]["guest_image"] = image
    write_profile(output, prof)
    return prof


def campaign_guest_image(directory: str | Path) -> str | None:
    """The testbed guest image a campaign directory measured (its sessions' ``guest_image``), if one.

    None when the campaign predates the record or its sessions booted different images (then no
    single guest is what the profile's guest constants describe)."""
    try:
        meta = json.loads((Path(directory) / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    images = {s.get("guest_image") for s in meta.get("sessions", []) if isinstance(s, dict)}
    return images.pop() if len(images) == 1 and None not in images else None
