"""Will this migration work, and with which settings? Answers built from many simulations.

Everything here is a search or a sample over :func:`simkvm.simulate`, never a
formula that ignores rounds: the minimum bandwidth is the lowest bandwidth the
simulator sees converge, with QEMU's switchover rule and all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .model.errors import UserError
from .model.plan import Plan
from .model.result import Result
from .sim import simulate


def grid(plan: Plan, bandwidths_Bps: Sequence[float], downtimes_s: Sequence[float]) -> list[dict[str, Any]]:
    """The verdict grid of QEMU's predict_migration.py: bandwidth x max downtime -> time or no."""
    cells = []
    for bw in bandwidths_Bps:
        for dt in downtimes_s:
            r = simulate(plan.with_(**{"link.bandwidth": bw, "migration.max_downtime": dt}), timeline=False)
            cells.append({
                "bandwidth_Bps": float(bw), "max_downtime_s": float(dt), "converged": r.converged,
                "total_time_s": r.total_time_s if r.converged else None,
                "downtime_s": r.downtime_s if r.converged else None,
                "iterations": r.iterations,
            })
    return cells


def _converges(result: Result) -> bool:
    return result.converged


def _lowest_converging(make: Callable[[float], Plan], lo: float, hi: float, rel_tol: float = 0.005,
                       steps: int = 24, ok: Callable[[Result], bool] = _converges) -> float | None:
    """Lowest x in [lo, hi] (log scale) from which on every coarse point is ``ok`` (by default: converges),
    refined by bisection."""
    xs = np.geomspace(lo, hi, steps)
    good_at = [ok(simulate(make(x), timeline=False)) for x in xs]
    if not good_at[-1]:
        return None
    i = len(xs) - 1
    while i > 0 and good_at[i - 1]:
        i -= 1
    if i == 0:
        return float(xs[0])
    bad, good = float(xs[i - 1]), float(xs[i])
    while good / bad - 1 > rel_tol:
        mid = math.sqrt(bad * good)
        if ok(simulate(make(mid), timeline=False)):
            good = mid
        else:
            bad = mid
    return good


def _within(max_total_time_s: float | None) -> Callable[[Result], bool]:
    """Converges, and (when a limit is given) within ``max_total_time_s``."""
    if max_total_time_s is None:
        return _converges
    return lambda r: r.converged and r.total_time_s <= max_total_time_s


def min_bandwidth_Bps(plan: Plan, lo: float = 1e6, hi: float = 1e11, *,
                      max_total_time_s: float | None = None) -> float | None:
    """Lowest migration bandwidth at which the plan converges with its own downtime limit (and, given
    ``max_total_time_s``, finishes within it)."""
    return _lowest_converging(lambda bw: _at_bandwidth(plan, bw), lo, hi, ok=_within(max_total_time_s))


def _at_bandwidth(plan: Plan, bandwidth_Bps: float) -> Plan:
    """The plan at another bandwidth; a raw link speed below it rises with it."""
    changes: dict[str, Any] = {"link.bandwidth": bandwidth_Bps}
    cap = plan.link.capacity_Bps
    if cap is not None and cap < bandwidth_Bps:
        changes["link.capacity"] = bandwidth_Bps
    return plan.with_(**changes)


def min_downtime_s(plan: Plan, lo: float = 0.001, hi: float = 2000.0, *,
                   max_total_time_s: float | None = None) -> float | None:
    """Smallest downtime limit at which the plan converges at its own bandwidth (and, given
    ``max_total_time_s``, finishes within it)."""
    return _lowest_converging(lambda dt: plan.with_(**{"migration.max_downtime": dt}), lo, hi,
                              ok=_within(max_total_time_s))


@dataclass
class MonteCarlo:
    """The odds, and percentiles of time and downtime over the ``converged_samples`` that converged
    (a run that gives up has no migration time to speak of)."""

    samples: int
    converged_probability: float
    total_time_percentiles_s: dict[str, float | None]
    downtime_percentiles_s: dict[str, float | None]
    results: list[Result] = field(default_factory=list, repr=False)
    converged_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "converged_samples": self.converged_samples,
                "converged_probability": self.converged_probability,
                "percentiles_over": "converged samples",
                "total_time_percentiles_s": self.total_time_percentiles_s,
                "downtime_percentiles_s": self.downtime_percentiles_s}

    def summary(self) -> str:
        """One line for a report: the odds, then the percentiles and what they are taken over."""
        from .model.units import fmt_duration

        head = (f"{self.samples} samples: P(converge) = {self.converged_probability:.0%} "
                f"({self.converged_samples} of {self.samples})")
        if not self.converged_samples:
            return head + "; no sample converged, so no time percentiles"
        pct = "/".join(fmt_duration(v) if v is not None else "-" for v in self.total_time_percentiles_s.values())
        dpct = "/".join(fmt_duration(v) if v is not None else "-" for v in self.downtime_percentiles_s.values())
        return (head + f"; over the {self.converged_samples} converged: total time p50/p90/p99 = {pct}, "
                f"downtime p50/p90/p99 = {dpct}")


def monte_carlo(plan: Plan, spread: float, samples: int = 300, seed: int = 1) -> MonteCarlo:
    """Dirty rate and working set are never known exactly: sample them (normal, relative sd
    ``spread``, truncated at 0 and at the VM's memory) and report the odds and percentiles."""
    if spread < 0:
        raise UserError(f"uncertainty must be >= 0, got {spread}")
    rng = np.random.default_rng(seed)
    mem = plan.workload.memory
    results = []
    for _ in range(samples):
        changes: dict[str, Any] = {}
        if mem.model in ("uniform", "sequential"):
            changes["workload.memory.dirty_rate"] = max(0.0, mem.dirty_rate_Bps * (1 + spread * rng.standard_normal()))
            wss = (mem.wss_bytes or 0.0) * (1 + spread * rng.standard_normal())
            changes["workload.memory.wss"] = min(max(wss, 4096.0), plan.vm.memory_bytes)
        elif mem.model == "hotcold":
            sets = [{"wss": min(max(s.wss_bytes * (1 + spread * rng.standard_normal()), 4096.0),
                                plan.vm.memory_bytes / len(mem.sets)),
                     "dirty_rate": max(0.0, s.dirty_rate_Bps * (1 + spread * rng.standard_normal())),
                     "pattern": s.pattern} for s in mem.sets]
            changes["workload.memory.sets"] = sets
        if plan.workload.disk.write_rate_Bps > 0:
            changes["workload.disk.write_rate"] = max(
                0.0, plan.workload.disk.write_rate_Bps * (1 + spread * rng.standard_normal()))
        sample = plan.with_(**changes) if spread > 0 and changes else plan
        results.append(simulate(sample, timeline=False))
    conv = [r for r in results if r.converged]

    def pct(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"p50": None, "p90": None, "p99": None}
        return {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99)}

    return MonteCarlo(
        samples=samples,
        converged_probability=len(conv) / samples,
        total_time_percentiles_s=pct([r.total_time_s for r in conv]),
        downtime_percentiles_s=pct([r.downtime_s for r in conv]),
        results=results,
        converged_samples=len(conv),
    )


@dataclass
class Advice:
    """Settings that meet the constraints (best first), and notes on what was not offered and why."""

    settings: list[dict[str, Any]]
    notes: list[str]


def recommendations(plan: Plan, **constraints: Any) -> list[dict[str, Any]]:
    """The settings of :func:`advise` (best first)."""
    return advise(plan, **constraints).settings


def advise(plan: Plan, *, max_total_time_s: float | None = None, max_downtime_s: float | None = None,
           max_bandwidth_Bps: float | None = None, allow_auto_converge: bool = True,
           allow_postcopy: bool = True, allow_policies: bool = True) -> Advice:
    """Settings that meet the constraints, best first (lowest risk, then shortest total time).

    Candidates: the plan as it is; the smallest downtime limit (up to ``max_downtime_s``) and the
    smallest bandwidth (up to ``max_bandwidth_Bps``, the most the link can give) at which the plan
    converges and, given ``max_total_time_s``, finishes in time; auto-converge (risk: the guest's CPU
    is throttled); post-copy after two iterations (risk: a network failure during the post-copy
    window loses the VM); XBZRLE; and each orchestration policy. A bandwidth raise is only offered
    when the caller says how much the link can give: the notes say so, and what it would take.
    """
    from .model.units import fmt_bits, fmt_duration
    from .policies import POLICIES

    limit_dt = max_downtime_s if max_downtime_s is not None else plan.migration.max_downtime_s
    notes: list[str] = []
    candidates: list[tuple[str, Plan]] = [("plain pre-copy as planned", plan)]
    as_planned = simulate(plan, timeline=False)
    if _within(max_total_time_s)(as_planned):
        needs = None  # the plan already works: no raise needed
    else:
        dt = min_downtime_s(plan, max_total_time_s=max_total_time_s)
        if dt is not None and plan.migration.max_downtime_s < dt <= limit_dt:
            candidates.append((f"raise max downtime to {fmt_duration(min(dt * 1.05, limit_dt))}",
                               plan.with_(**{"migration.max_downtime": min(dt * 1.05, limit_dt)})))
        needs = min_bandwidth_Bps(plan, max_total_time_s=max_total_time_s)
        goal = "converge" + (f" within {fmt_duration(max_total_time_s)}" if max_total_time_s is not None else "")
        if needs is None:
            notes.append(f"no bandwidth up to 800 Gbit/s makes it {goal} with {fmt_duration(limit_dt)} downtime")
        elif needs <= plan.link.bandwidth_Bps:
            pass
        elif max_bandwidth_Bps is None:
            notes.append(f"no bandwidth raise offered: it needs {fmt_bits(needs)} to {goal}; give --max-bandwidth "
                         f"(the most the link can give) to allow raising it")
        elif needs > max_bandwidth_Bps:
            notes.append(f"no bandwidth raise offered: it needs {fmt_bits(needs)} to {goal}, more than the "
                         f"{fmt_bits(max_bandwidth_Bps)} the link can give")
        else:
            raised = min(needs * 1.05, max_bandwidth_Bps)
            candidates.append((f"raise bandwidth to {fmt_bits(raised)}", _at_bandwidth(plan, raised)))
    if allow_auto_converge:
        candidates.append(("auto-converge", plan.with_(**{"aids.auto_converge.enabled": True})))
    if allow_postcopy:
        candidates.append(("post-copy after 2 iterations", plan.with_(**{
            "aids.postcopy.enabled": True, "aids.postcopy.after_iterations": 2})))
    candidates.append(("XBZRLE (cache 10 % of RAM)", plan.with_(**{
        "aids.xbzrle.enabled": True, "aids.xbzrle.cache_size": plan.vm.memory_bytes / 10})))
    if allow_policies:
        for name in sorted(POLICIES):
            if name != "qemu" and (allow_postcopy or "post-copy" not in name):
                candidates.append((f"policy {name}", plan.with_(policy=name)))
    out = []
    for name, candidate in candidates:
        r = as_planned if candidate is plan else simulate(candidate, timeline=False)
        if not r.converged or r.downtime_s > limit_dt * 1.5 + 0.1:
            continue
        if max_total_time_s is not None and r.total_time_s > max_total_time_s:
            continue
        risks, score = [], 0.0
        if r.outcome == "postcopy":
            risks.append(f"post-copy window {fmt_duration(r.postcopy_time_s)}: a network failure loses the VM; "
                         f"{r.postcopy_pages_on_demand:,.0f} pages faulted on demand")
            score += 2 + r.postcopy_time_s / max(r.total_time_s, 1e-9)
        if r.guest_cpu_lost_s > 0:
            risks.append(f"guest throttled: {fmt_duration(r.guest_cpu_lost_s)} of CPU lost")
            score += 1 + r.guest_cpu_lost_s / max(r.total_time_s, 1e-9)
        if r.outcome == "paused":
            risks.append(f"guest paused for {fmt_duration(r.downtime_s)}")
            score += 3
        out.append({"setting": name, "outcome": r.outcome, "total_time_s": r.total_time_s,
                    "downtime_s": r.downtime_s, "bytes": r.ram_transferred_bytes + r.disk_transferred_bytes,
                    "risk": "; ".join(risks) or "none", "risk_score": score,
                    "max_downtime_s": candidate.migration.max_downtime_s,
                    "bandwidth_Bps": candidate.link.bandwidth_Bps})
    out.sort(key=lambda rec: (rec["risk_score"], rec["total_time_s"]))
    return Advice(out, notes)
