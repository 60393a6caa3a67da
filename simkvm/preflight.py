"""Preflight: should this running VM be migrated now, and with which settings?

``preflight()`` looks at the real guest through libvirt and never changes it
(no migration, no suspend):

1. **The VM**: its memory and the disks a non-shared migration copies, with
   their allocation (:func:`simkvm.executor.prepare.domain_disks`).
2. **Its dirtying**: libvirt's dirty-rate calculation (QEMU calc-dirty-rate,
   page-sampling mode) over several periods. ``rate x period`` is the unique
   memory dirtied in that long, so the periods give the curve of unique
   dirtied bytes against interval length that the plan's
   ``workload.memory: {model: curve}`` takes.
3. **The destination**: free memory and storage (the executor's own
   :func:`~simkvm.executor.prepare.check_destination`).
4. **The answer**: :func:`simkvm.simulate` of that plan at the given bandwidth
   and downtime limit, and :func:`simkvm.planner.recommendations` when plain
   pre-copy does not meet the constraints. :func:`verdict` (a pure function)
   turns them into GO / GO-WITH-SETTINGS / NO-GO with reasons.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .libvirt_api import connect, host_info, import_libvirt, lookup_domain
from .model.errors import EnvironmentProblem, UserError
from .model.plan import Plan
from .model.units import MiB, fmt_bytes, fmt_duration, fmt_rate

GO, GO_WITH_SETTINGS, NO_GO = "GO", "GO-WITH-SETTINGS", "NO-GO"
EXIT_CODES = {GO: 0, GO_WITH_SETTINGS: 1, NO_GO: 3}
DEFAULT_PERIODS_S = (1.0, 2.0, 4.0)
#: The prediction's figures in the report.
PREDICTION_FIELDS = ("converged", "outcome", "reason", "total_time_s", "downtime_s", "iterations",
                     "ram_transferred_bytes", "disk_transferred_bytes", "postcopy_time_s", "guest_cpu_lost_s")


@dataclass(frozen=True)
class Constraints:
    """What the migration must achieve (None: no constraint)."""

    max_downtime_s: float
    max_total_time_s: float | None = None


# ----------------------------------------------------------------- the verdict (pure)
def shortfalls(summary: dict[str, Any], c: Constraints, *, downtime_slack_s: float = 0.0) -> list[str]:
    """Why a predicted result misses the constraints (empty: it meets them)."""
    misses = []
    if not summary.get("converged"):
        misses.append(f"plain pre-copy does not converge: {summary.get('reason', 'no reason given')}")
        return misses
    if summary.get("outcome") not in (None, "converged"):
        misses.append(f"plain pre-copy only completes as {summary['outcome']}")
    downtime = float(summary.get("downtime_s") or 0.0)
    if downtime > c.max_downtime_s + downtime_slack_s:
        misses.append(f"predicted downtime {fmt_duration(downtime)} exceeds the limit {fmt_duration(c.max_downtime_s)}")
    total = float(summary.get("total_time_s") or 0.0)
    if c.max_total_time_s is not None and total > c.max_total_time_s:
        misses.append(f"predicted total time {fmt_duration(total)} exceeds {fmt_duration(c.max_total_time_s)}")
    return misses


def verdict(prediction: dict[str, Any], recommendations: Sequence[dict[str, Any]], constraints: Constraints, *,
            destination_problem: str | None = None, downtime_slack_s: float = 0.0,
            ) -> tuple[str, list[str], dict[str, Any] | None]:
    """(verdict, reasons, recommended setting or None) from a plain pre-copy prediction and the
    planner's recommendations (best first; "plain pre-copy as planned" is skipped here).

    GO: plain pre-copy converges within the constraints. GO-WITH-SETTINGS: only an aid, a
    policy or a higher downtime/bandwidth does. NO-GO: the destination cannot take the VM,
    or nothing does. The downtime check allows ``downtime_slack_s`` on top of the limit:
    QEMU's limit bounds the RAM left at the switch, not the fixed costs around it
    (:func:`simkvm.sim.switchover.fixed_downtime_s`).
    """
    if destination_problem:
        return NO_GO, [destination_problem], None
    misses = shortfalls(prediction, constraints, downtime_slack_s=downtime_slack_s)
    if not misses:
        return GO, [f"plain pre-copy converges: {prediction.get('reason', '')}".rstrip(": ")], None
    others = [r for r in recommendations if r.get("setting") != "plain pre-copy as planned"]
    if not others:
        return NO_GO, misses + ["no aid, policy, downtime or bandwidth within the constraints makes it converge"], None
    best = others[0]
    return GO_WITH_SETTINGS, misses + [
        f"with {best['setting']}: {best['outcome']} in {fmt_duration(best['total_time_s'])}, downtime "
        f"{fmt_duration(best['downtime_s'])} (risk: {best.get('risk', 'none')})"], best


def curve_points(measurements: Sequence[tuple[float, float]]) -> list[list[float]]:
    """[[period_s, unique bytes], ...] from (period_s, MiB/s) measurements, made a valid curve:
    increasing in period, never decreasing in bytes (a shorter period's count is a lower bound
    for a longer one's)."""
    out: list[list[float]] = []
    for period, mibps in sorted(measurements):
        b = max(float(mibps), 0.0) * MiB * period
        if out and b < out[-1][1]:
            b = out[-1][1]
        if out and period == out[-1][0]:
            out[-1][1] = max(out[-1][1], b)
            continue
        out.append([float(period), b])
    return out


# ----------------------------------------------------------------- measuring the guest
def measure_dirty_rate(conn: Any, dom: Any, periods_s: Sequence[float], *, progress: bool = True) -> list[
        dict[str, Any]]:
    """Run libvirt's dirty-rate calculation once per period (page-sampling mode: the
    dirty-bitmap mode crashed QEMU 7.2 under TCG on the testbed). Returns one record per
    period with QEMU's figure in MiB/s and the unique bytes it implies."""
    libvirt = import_libvirt()
    from tqdm import tqdm

    total = sum(periods_s)
    bar = tqdm(total=total, unit="s", desc="measuring dirty rate", disable=not progress, leave=False,
               bar_format="{desc}: {bar} {n:.0f}/{total:.0f} s")
    out = []
    try:
        for period in periods_s:
            started = time.monotonic()
            try:
                dom.startDirtyRateCalc(int(period), 0)
            except libvirt.libvirtError as exc:
                raise EnvironmentProblem(f"libvirt cannot measure the dirty rate of {dom.name()}: "
                                         f"{exc.get_error_message()} (needs libvirt >= 7.2 and QEMU >= 5.2)") from None
            done_before = bar.n
            while True:
                time.sleep(0.1)
                waited = time.monotonic() - started
                bar.update(min(waited, period) + done_before - bar.n)
                if waited < period:
                    continue
                stats = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE)[0][1]
                if stats.get("dirtyrate.calc_status") == libvirt.VIR_DOMAIN_DIRTYRATE_MEASURED:
                    break
                if waited > period + 30:
                    raise EnvironmentProblem(f"the dirty-rate calculation of {dom.name()} did not finish within "
                                             f"{period + 30:.0f} s (status {stats.get('dirtyrate.calc_status')})")
            mibps = float(stats.get("dirtyrate.megabytes_per_second", 0))
            out.append({"period_s": float(period), "megabytes_per_second": mibps,
                        "unique_bytes": mibps * MiB * period, "mode": stats.get("dirtyrate.calc_mode")})
    finally:
        bar.close()
    return out


def _destination_free(dconn: Any, disks: list[Any]) -> tuple[int, int | None]:
    """(memory available, free bytes in the pool holding the first disk's directory)."""
    import os
    import xml.etree.ElementTree as ET

    libvirt = import_libvirt()

    from .executor.prepare import destination_memory_available

    mem = destination_memory_available(dconn)
    if not disks:
        return mem, None
    directory = os.path.dirname(os.path.normpath(disks[0].path))
    for pool in dconn.listAllStoragePools(0):
        try:
            if os.path.normpath(ET.fromstring(pool.XMLDesc(0)).findtext("./target/path") or "") == directory \
                    and pool.isActive():
                pool.refresh(0)
                return mem, int(pool.info()[3])
        except libvirt.libvirtError:
            continue
    return mem, None


# ----------------------------------------------------------------- the whole check
def preflight(domain: str, src_uri: str, dst_uri: str, *, plan: Plan | None = None,
              max_downtime_s: float | None = None, bandwidth_Bps: float | None = None,
              max_total_time_s: float | None = None, periods_s: Sequence[float] = DEFAULT_PERIODS_S,
              progress: bool = True) -> dict[str, Any]:
    """Measure ``domain`` on ``src_uri``, check ``dst_uri``, predict and recommend.

    ``plan`` gives the link, migration knobs and host constants (its ``vm`` and
    ``workload.memory`` are replaced by what was measured); the keyword
    arguments override its bandwidth and downtime limit. Returns a dict with
    ``verdict`` (GO / GO-WITH-SETTINGS / NO-GO), ``exit_code`` (0/1/3),
    ``reasons``, ``recommended``, ``dirty_curve``, ``plan``, ``prediction``,
    ``recommendations``, ``destination`` and ``vm``.
    """
    from .planner import recommendations as recommend
    from .sim import simulate
    from .sim.switchover import fixed_downtime_s

    periods = _checked_periods(periods_s, max_downtime_s, max_total_time_s)
    base = _base_plan(plan, bandwidth_Bps, max_downtime_s)
    seen = _look(domain, src_uri, dst_uri, base, periods, progress)
    used = _measured_plan(base, domain, seen)

    constraints = Constraints(max_downtime_s=used.migration.max_downtime_s, max_total_time_s=max_total_time_s)
    predicted = simulate(used, timeline=False)
    prediction = {k: predicted.summary()[k] for k in PREDICTION_FIELDS}
    recs: list[dict[str, Any]] = []
    slack = fixed_downtime_s(used)
    problem = seen["destination_problem"]
    if problem is None and shortfalls(prediction, constraints, downtime_slack_s=slack):
        recs = recommend(used, max_total_time_s=max_total_time_s, max_downtime_s=constraints.max_downtime_s)
    answer, reasons, best = verdict(prediction, recs, constraints, destination_problem=problem,
                                    downtime_slack_s=slack)
    return {
        "verdict": answer,
        "exit_code": EXIT_CODES[answer],
        "reasons": reasons,
        "recommended": best,
        "domain": domain,
        "vm": {"memory_bytes": seen["memory"], "disks": _disk_sections(seen["disks"])},
        "dirty_curve": seen["measured"],
        "destination": {"host": seen["dst_name"], "free_memory_bytes": seen["free_mem"],
                        "free_disk_bytes": seen["free_disk"], "problem": problem},
        "constraints": {"max_downtime_s": constraints.max_downtime_s, "max_total_time_s": max_total_time_s,
                        "bandwidth_Bps": used.link.bandwidth_Bps},
        "prediction": prediction,
        "recommendations": recs,
        "plan": used.to_dict(),
    }


def _checked_periods(periods_s: Sequence[float], max_downtime_s: float | None,
                     max_total_time_s: float | None) -> list[float]:
    """The dirty-rate periods, sorted; one UserError line for any input libvirt or the verdict cannot take."""
    periods = sorted({float(p) for p in periods_s})
    if not periods or any(p < 1 or p > 60 or p != int(p) for p in periods):
        raise UserError(f"periods must be whole seconds from 1 s to 60 s (libvirt's dirty-rate calculation), "
                        f"got {', '.join(f'{p:g}s' for p in periods_s) or 'none'}")
    if max_downtime_s is not None and max_downtime_s <= 0:
        raise UserError("--max-downtime must be > 0, e.g. 300ms")
    if max_total_time_s is not None and max_total_time_s <= 0:
        raise UserError("--max-total-time must be > 0, e.g. 60s")
    return periods


def _base_plan(plan: Plan | None, bandwidth_Bps: float | None, max_downtime_s: float | None) -> Plan:
    """The plan's link and knobs with the command line's bandwidth and downtime limit over them."""
    base = plan or Plan()
    changes: dict[str, Any] = {}
    if bandwidth_Bps is not None:
        changes["link.bandwidth"] = bandwidth_Bps
        if base.link.capacity_Bps is not None and base.link.capacity_Bps < bandwidth_Bps:
            changes["link.capacity"] = bandwidth_Bps
    if max_downtime_s is not None:
        changes["migration.max_downtime"] = max_downtime_s
    return base.with_(**changes) if changes else base


def _look(domain: str, src_uri: str, dst_uri: str, base: Plan, periods: Sequence[float],
          progress: bool) -> dict[str, Any]:
    """What the two hosts say: the running VM (memory, disks, dirty rates) and what the destination has free."""
    from .executor.prepare import Refusal, check_destination, domain_disks

    libvirt = import_libvirt()
    conn = connect(src_uri, "source")
    try:
        dconn = connect(dst_uri, "destination")
        try:
            dom = lookup_domain(conn, domain, src_uri)
            if dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
                raise UserError(f"domain {domain!r} on {src_uri} is not running; preflight measures a running guest")
            seen: dict[str, Any] = {"memory": float(dom.maxMemory()) * 1024}
            seen["disks"] = disks = domain_disks(dom, conn) if base.migration.storage != "shared" else []
            seen["dst_name"] = host_info(dconn, dst_uri).get("hostname") or dst_uri
            seen["destination_problem"] = None
            try:
                check_destination(base, dom, dconn, disks, seen["dst_name"])
            except Refusal as refusal:
                seen["destination_problem"] = str(refusal)
            seen["free_mem"], seen["free_disk"] = _destination_free(dconn, disks)
            seen["measured"] = measure_dirty_rate(conn, dom, periods, progress=progress)
        finally:
            dconn.close()
    finally:
        conn.close()
    return seen


def _disk_sections(disks: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"path": d.path, "size": float(d.capacity_bytes),
             "allocated": float(min(d.allocation_bytes, d.capacity_bytes)), "format": d.format} for d in disks]


def _measured_plan(base: Plan, domain: str, seen: Mapping[str, Any]) -> Plan:
    """``base`` with the VM as measured: its memory, disks, dirty-rate curve and the destination's room."""
    memory = seen["memory"]
    points = curve_points([(m["period_s"], m["megabytes_per_second"]) for m in seen["measured"]])
    points = [[t, min(b, memory)] for t, b in points]
    workload: dict[str, Any] = {"model": "idle"}
    if points and points[-1][1] > 0:
        workload = {"model": "curve", "points": points}
    data = base.to_dict()
    data["vm"]["memory"] = memory
    data["vm"]["disks"] = _disk_sections(seen["disks"])
    data["workload"]["memory"] = workload
    if not data["vm"]["disks"]:
        data["workload"]["disk"] = {"write_rate": 0.0}
    free_disk = seen["free_disk"]
    data["destination"] = {"free_memory": float(seen["free_mem"]),
                           "free_disk": None if free_disk is None else float(free_disk)}
    data["name"] = f"preflight-{domain}"
    return Plan.from_dict(data)


# ----------------------------------------------------------------- the report
def format_report(report: dict[str, Any]) -> str:
    """The human report of ``simkvm preflight``."""
    vm, dst, c, p = report["vm"], report["destination"], report["constraints"], report["prediction"]
    disk_text = ", ".join(f"{d['path']} {fmt_bytes(d['size'])} ({fmt_bytes(d['allocated'])} allocated)"
                          for d in vm["disks"]) or "none migrated"
    lines = [
        f"preflight: {report['domain']} -> {dst['host']}",
        f"verdict: {report['verdict']}",
    ]
    lines += [f"  {r}" for r in report["reasons"]]
    lines += [
        "",
        f"VM                 {fmt_bytes(vm['memory_bytes'])} RAM; disks: {disk_text}",
        f"destination        {fmt_bytes(dst['free_memory_bytes'])} memory available"
        + (f", {fmt_bytes(dst['free_disk_bytes'])} free in the disks' pool" if dst["free_disk_bytes"] is not None
           else ""),
        f"constraints        bandwidth {fmt_rate(c['bandwidth_Bps'])}, max downtime {fmt_duration(c['max_downtime_s'])}"
        + (f", max total time {fmt_duration(c['max_total_time_s'])}" if c["max_total_time_s"] else ""),
        "",
        "dirty rate (libvirt calc-dirty-rate, page sampling):",
        f"  {'period':>7}  {'rate':>10}  {'unique dirtied':>14}",
    ]
    for m in report["dirty_curve"]:
        lines.append(f"  {fmt_duration(m['period_s']):>7}  {m['megabytes_per_second']:>6.0f} MiB/s  "
                     f"{fmt_bytes(m['unique_bytes']):>14}")
    lines += [
        "",
        f"prediction (plain pre-copy): {p['outcome']}, total {fmt_duration(p['total_time_s'])}, downtime "
        f"{fmt_duration(p['downtime_s'])}, {p['iterations']} iterations",
    ]
    if report["recommendations"]:
        lines += ["", "settings that meet the constraints (best first):"]
        for r in report["recommendations"][:8]:
            lines.append(f"  {r['setting']:<34} {r['outcome']:<10} total {fmt_duration(r['total_time_s']):>8}  "
                         f"downtime {fmt_duration(r['downtime_s']):>8}  risk: {r['risk']}")
    return "\n".join(lines)
