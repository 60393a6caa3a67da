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


def _lowest_converging(make: Callable[[float], Plan], lo: float, hi: float, rel_tol: float = 0.005,
                       steps: int = 24) -> float | None:
    """Lowest x in [lo, hi] (log scale) from which on every coarse point converges, refined by bisection."""
    xs = np.geomspace(lo, hi, steps)
    ok = [simulate(make(x), timeline=False).converged for x in xs]
    if not ok[-1]:
        return None
    i = len(xs) - 1
    while i > 0 and ok[i - 1]:
        i -= 1
    if i == 0:
        return float(xs[0])
    bad, good = float(xs[i - 1]), float(xs[i])
    while good / bad - 1 > rel_tol:
        mid = math.sqrt(bad * good)
        if simulate(make(mid), timeline=False).converged:
            good = mid
        else:
            bad = mid
    return good


def min_bandwidth_Bps(plan: Plan, lo: float = 1e6, hi: float = 1e11) -> float | None:
    """Lowest migration bandwidth at which the plan converges with its own downtime limit."""
    cap = plan.link.capacity_Bps

    def make(bw: float) -> Plan:
        changes: dict[str, Any] = {"link.bandwidth": bw}
        if cap is not None and cap < bw:
            changes["link.capacity"] = bw
        return plan.with_(**changes)

    return _lowest_converging(make, lo, hi)


def min_downtime_s(plan: Plan, lo: float = 0.001, hi: float = 2000.0) -> float | None:
    """Smallest downtime limit at which the plan converges at its own bandwidth."""
    return _lowest_converging(lambda dt: plan.with_(**{"migration.max_downtime": dt}), lo, hi)


@dataclass
class MonteCarlo:
    samples: int
    converged_probability: float
    total_time_percentiles_s: dict[str, float | None]
    downtime_percentiles_s: dict[str, float | None]
    results: list[Result] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "converged_probability": self.converged_probability,
                "total_time_percentiles_s": self.total_time_percentiles_s,
                "downtime_percentiles_s": self.downtime_percentiles_s}


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
    )


def recommendations(plan: Plan, *, max_total_time_s: float | None = None, max_downtime_s: float | None = None,
                    max_bandwidth_Bps: float | None = None, allow_auto_converge: bool = True,
                    allow_postcopy: bool = True, allow_policies: bool = True) -> list[dict[str, Any]]:
    """Settings that meet the constraints, best first (lowest risk, then shortest total time).

    Candidates: the plan as it is; the smallest downtime limit that converges; the smallest
    bandwidth that converges (if the link allows it); auto-converge (risk: the guest's CPU
    is throttled); post-copy after two iterations (risk: a network failure during the
    post-copy window loses the VM); XBZRLE; and each orchestration policy.
    """
    from .policies import POLICIES
    from .model.units import fmt_duration

    limit_dt = max_downtime_s if max_downtime_s is not None else plan.migration.max_downtime_s
    limit_bw = max_bandwidth_Bps if max_bandwidth_Bps is not None else plan.link.bandwidth_Bps
    candidates: list[tuple[str, Plan]] = [("plain pre-copy as planned", plan)]
    dt = min_downtime_s(plan)
    if dt is not None and dt <= limit_dt and dt > plan.migration.max_downtime_s:
        candidates.append((f"raise max downtime to {dt * 1050:.0f} ms",
                           plan.with_(**{"migration.max_downtime": dt * 1.05})))
    bw = min_bandwidth_Bps(plan)
    if bw is not None and bw <= limit_bw and bw > plan.link.bandwidth_Bps:
        candidates.append((f"raise bandwidth to {bw * 1.05 * 8 / 1e9:.3g} Gbit/s",
                           plan.with_(**{"link.bandwidth": bw * 1.05})))
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
        r = simulate(candidate, timeline=False)
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
    return out
