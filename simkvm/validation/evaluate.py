"""Where is the model right, and where not? The held-out figures split by family, blind, and left out.

The pooled figures (:func:`.metrics.metrics`) say how right the model is on
average over a campaign's held-out runs. This module answers the questions a planner
asks next, over the same runs and with the same keys:

* per family (:data:`FAMILIES`): guest size, link speed, dirty rate / bandwidth, disk
  writers -- the groups declared in the campaign file before the runs;
* blind (:func:`blind_plan_dict`): predicted from the plan a planner can write (memory, zero
  share ``auto``: 0.5 or what the working set and the guest OS leave, :func:`..guestos.auto_zero_fraction`;
  dirty rate, WSS, pattern, disk, link, limit, the profile: ``simkvm predict``), without the
  guest's own report of its non-zero memory and page layout;
* leave one family out (:func:`leave_one_family_out`): calibrated without the largest
  calibration guests, scored on the largest held-out ones;
* which runs need a word of explanation: guests that clamped their arena (they ran with
  less memory than specified: the guest says so on its console, which is not a failed
  canary) and runs under heavy load from other work on the machine.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..model.units import MiB

CLAMP_RE = re.compile(r"wanted (\d+) bytes of arena, only (\d+) allocatable; clamping")

#: Family -> [(group, predicate on a runs.csv row)]; the groups of campaign-v5.yaml's header.
FAMILIES: dict[str, list[tuple[str, Callable[[Mapping[str, Any]], bool]]]] = {
    "guest_size": [
        ("< 768 MiB", lambda r: r["memory_bytes"] < 768 * MiB),
        ("768 MiB - 1.5 GiB", lambda r: 768 * MiB <= r["memory_bytes"] <= 1536 * MiB),
        ("> 1.5 GiB", lambda r: r["memory_bytes"] > 1536 * MiB),
    ],
    "link": [
        ("16-48 MiB/s", lambda r: r["bandwidth_Bps"] < 48 * MiB),
        ("48-128 MiB/s", lambda r: 48 * MiB <= r["bandwidth_Bps"] < 128 * MiB),
        ("128-256 MiB/s", lambda r: r["bandwidth_Bps"] >= 128 * MiB),
    ],
    "dirty_ratio": [
        ("idle", lambda r: r["dirty_rate_Bps"] == 0),
        ("< 0.5", lambda r: 0 < r["dirty_rate_Bps"] < 0.5 * r["bandwidth_Bps"]),
        ("0.5 - 1", lambda r: 0.5 * r["bandwidth_Bps"] <= r["dirty_rate_Bps"] < r["bandwidth_Bps"]),
        (">= 1", lambda r: r["dirty_rate_Bps"] >= r["bandwidth_Bps"]),
    ],
    "disk_writer": [
        ("none", lambda r: r["disk_write_rate_Bps"] == 0),
        ("writer", lambda r: r["disk_write_rate_Bps"] > 0),
    ],
}


def family_masks(rows) -> dict[str, dict[str, np.ndarray]]:
    recs = rows.to_dict("records")
    return {fam: {name: np.asarray([bool(pred(r)) for r in recs], bool) for name, pred in groups}
            for fam, groups in FAMILIES.items()}


def by_family(rows, metrics: Callable[[Any], dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{family: {group: figures}}`` with the pooled figures' keys (groups without runs left out)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for fam, groups in family_masks(rows).items():
        out[fam] = {name: metrics(rows[mask].reset_index(drop=True)) for name, mask in groups.items() if mask.any()}
    return out


# ------------------------------------------------------------------ blind
def blind_plan_dict(row: Mapping[str, Any], profile_path: str | None, qemu: str | None = None) -> dict[str, Any]:
    """The plan a planner writes for this run: its knobs, ``vm.zero_fraction: auto`` (half of RAM or
    what the working set and the guest OS leave: :func:`..guestos.auto_zero_fraction`, with the
    profile's guest section when the plan is loaded), no guest report; the QEMU version the run was
    measured on (``qemu``: this one instead)."""
    from ..testbed.guestplan import workload_sections

    workload = {"dirty_rate_Bps": float(row["dirty_rate_Bps"]), "wss_bytes": float(row["wss_bytes"]),
                "pattern": row["pattern"], "disk_write_rate_Bps": float(row["disk_write_rate_Bps"]),
                "disk_wss_bytes": float(row["disk_wss_bytes"]), "io_size_bytes": float(row["io_size_bytes"])}
    sections = workload_sections(workload)
    if sections["memory"]["model"] == "idle":  # the row's working set even when idle: the guest wrote it once
        sections["memory"]["wss"] = float(row["wss_bytes"])
    plan: dict[str, Any] = {
        "name": str(row["run_id"]),
        "vm": {"memory": float(row["memory_bytes"]), "zero_fraction": "auto",
               "disks": [{"path": "/var/lib/libvirt/images/vm.qcow2", "size": float(row["disk_bytes"])}]},
        "workload": sections,
        "link": {"bandwidth": float(row["bandwidth_Bps"])},
        "migration": {"max_downtime": float(row["max_downtime_s"]), "max_time": float(row["max_time_s"]),
                      "max_iterations": int(row["max_iterations"]), "storage": str(row["storage"])},
    }
    measured_on = row.get("qemu_version")
    if qemu is None and isinstance(measured_on, str) and measured_on:  # a planner knows its hosts' version
        from ..model.qemu import KNOWN, normalise

        qemu = normalise(measured_on) if normalise(measured_on) in KNOWN else None
    if qemu is not None:
        plan["host"] = {"qemu": qemu}
    if profile_path:
        plan["profile"] = profile_path
    return plan


def blind_rows(rows, profile_path: str | None, qemu: str | None = None):
    """Rows with the predicted_* columns (and the boundary) from the blind plan, as ``simkvm predict`` gives."""
    from ..load import load_plan
    from .metrics import with_predictions

    # load_plan: as simkvm predict reads a plan file (the profile's host and link sections; its guest
    # section for the zero share's auto)
    return with_predictions(rows, [load_plan(blind_plan_dict(r, profile_path, qemu))
                                   for r in rows.to_dict("records")])


# ------------------------------------------------------------------ runs that need a word
def clamped(store: Any, run_ids: Any) -> dict[str, dict[str, float]]:
    """Runs whose guest clamped its arena (workload.c, setup_memory()): ``{run: {wanted, allocatable}}``.

    Such a guest ran with a smaller working set / non-zero share than its scenario says; its
    prediction used what the guest reported, so it is still a fair comparison, but the run is
    not the scenario it is named after.
    """
    return _clamped({str(rid): _console(store, rid) for rid in run_ids})


def _clamped(consoles: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for rid, con in consoles.items():
        for err in con.get("errors") or []:
            m = CLAMP_RE.search(str(err))
            if m:
                out[rid] = {"wanted_bytes": float(m.group(1)), "allocatable_bytes": float(m.group(2))}
    return out


def canary_ok(store: Any, rid: str) -> bool | None:
    """The guest's memory and disk checks after the move, an arena clamp not counted as a failure; None
    when unknown: no console kept, or :func:`canary_unconfirmed`."""
    return _canary(_console(store, rid))


def _canary(con: dict[str, Any]) -> bool | None:
    if not con or canary_unconfirmed(con):
        return None
    return bool(con.get("checks")) and not con.get("failed_checks") and not _other_errors(con)


def canary_unconfirmed(con: dict[str, Any]) -> bool:
    """No check failed and the guest reported no error, but no CHECK line came within the runner's wait
    after the move (runs from the runner that records its own verdict, ``check_ok``): nothing vouches
    for the memory the guest arrived with, so the run counts neither as ok nor as failed. Takes the
    run's console (as kept in its measured file), which the campaign report has already read."""
    return con.get("check_ok") is False and not con.get("failed_checks") and not _other_errors(con)


def _other_errors(con: dict[str, Any]) -> list[Any]:
    return [e for e in con.get("errors") or [] if not CLAMP_RE.search(str(e))]


def _console(store: Any, rid: str) -> dict[str, Any]:
    import json

    try:
        data = json.loads(store.path(str(rid), "measured").read_text())
    except (OSError, ValueError):
        return {}
    return (data.get("meta") or {}).get("guest_console") or {}


def heavy_load(rows, threshold: float) -> np.ndarray:
    """Runs whose 1-minute load at their start or end was above ``threshold``."""
    import pandas as pd

    start = pd.to_numeric(rows["load_1m"], errors="coerce").to_numpy(float)
    end = (pd.to_numeric(rows["load_1m_end"], errors="coerce").to_numpy(float) if "load_1m_end" in rows
           else np.full(len(rows), np.nan))
    return np.fmax(start, end) > threshold


def rate_shortfall(rows, share: float = 0.9) -> list[str]:
    """Dirtying runs whose guest achieved less than ``share`` of its nominal rate during the migration
    (a guest starved of CPU: the model was told the nominal rate)."""
    import pandas as pd

    got = pd.to_numeric(rows["guest_mem_Bps"], errors="coerce").to_numpy(float)
    want = rows["dirty_rate_Bps"].to_numpy(float)
    short = (want > 0) & np.isfinite(got) & (got < share * want)
    return [str(x) for x in rows["run_id"][short]]


# ------------------------------------------------------------------ leave one family out
def leave_one_family_out(directory: str | Path, profile_out: str | Path, *, fit_max_memory: float = 1024 * MiB,
                         test_min_memory: float = 1536 * MiB, full_profile: str | None = None) -> dict[str, Any]:
    """Calibrate without the calibration guests above ``fit_max_memory``, score the held-out guests
    above ``test_min_memory`` (and, for comparison, the same runs under ``full_profile``)."""
    from ..model.errors import UserError
    from ..profile import load_profile
    from .calibrate import calibrate
    from .metrics import held_out, metrics, repredict
    from .store import RunStore

    store = RunStore(directory)
    rows = store.rows()
    cal = rows[(rows["role"] == "calibration") & (rows["memory_bytes"] <= fit_max_memory)]
    if not len(cal):
        raise UserError(f"{directory}: no calibration run of at most {fit_max_memory / MiB:g} MiB to fit on")
    prof = calibrate(directory, profile_out, selector="run_id=" + ",".join(map(str, cal["run_id"])))
    test = held_out(rows)
    test = test[test["memory_bytes"] > test_min_memory].reset_index(drop=True)
    if not len(test):
        raise UserError(f"{directory}: no held-out run above {test_min_memory / MiB:g} MiB to test on")
    out: dict[str, Any] = {"fit_runs": list(prof["fit"]["runs"]), "profile": str(profile_out),
                           "test_runs": [str(x) for x in test["run_id"]],
                           "metrics": metrics(repredict(store, test, load_profile(profile_out), str(profile_out)))}
    if full_profile:
        out["full_profile"] = full_profile
        out["full_profile_metrics"] = metrics(repredict(store, test, load_profile(full_profile), full_profile))
    return out


# ------------------------------------------------------------------ the report's extra sections
def extend(rep: dict[str, Any], store: Any, metrics: Callable[[Any], dict[str, Any]], heavy_threshold: float,
           *, blind: bool = True) -> dict[str, Any]:
    """Add ``families``, ``blind`` (and its rows, ``blind_rows``), ``blind_families``, ``clamped``, ``heavy_load``
    and ``rate_shortfall`` to a report (``{"metrics", "rows", "profile", ...}``), in place."""
    rows = rep["rows"]
    rep["families"] = by_family(rows, metrics)
    if blind:
        brows = blind_rows(rows, rep.get("profile"), rep.get("qemu"))
        rep["blind"] = metrics(brows)
        rep["blind_rows"] = brows
        rep["blind_families"] = by_family(brows, metrics)
    consoles = {str(r): _console(store, str(r)) for r in rows["run_id"]}  # each run's measured file read once
    rep["clamped"] = _clamped(consoles)
    with_checks(rep["metrics"], [(rid, _canary(con)) for rid, con in consoles.items()])
    rep["checks_unconfirmed"] = [rid for rid, con in consoles.items() if canary_unconfirmed(con)]
    heavy = heavy_load(rows, heavy_threshold)
    rep["heavy_load"] = {"threshold_load_1m": heavy_threshold, "runs": [str(x) for x in rows["run_id"][heavy]],
                         "load_1m_median": _median(rows, "load_1m"),
                         "unflagged": metrics(rows[~heavy].reset_index(drop=True)) if (~heavy).any() else None}
    rep["rate_shortfall"] = rate_shortfall(rows)
    return rep


def with_checks(m: dict[str, Any], oks: list[tuple[str, bool | None]]) -> dict[str, Any]:
    """Figures ``m`` with the guest canaries counted (``oks``: run id and :func:`canary_ok`): the share
    of runs whose checks passed, where the console says, and the runs whose checks failed."""
    known = [ok for _rid, ok in oks if ok is not None]
    if known:
        m["checks_ok_share"] = sum(known) / len(known)
    m["checks_failed"] = [rid for rid, ok in oks if ok is False]
    return m


def _median(rows, col: str) -> float | None:
    import pandas as pd

    v = pd.to_numeric(rows[col], errors="coerce").dropna() if col in rows else []
    return float(np.median(v)) if len(v) else None


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def format_extras(rep: Mapping[str, Any]) -> list[str]:
    """Text lines for the families, blind and flagged runs (the pooled table comes first)."""
    lines: list[str] = []
    head = (f"{'family':12s} {'group':18s} {'runs':>4s} {'time med':>8s} {'p90':>7s} {'max':>7s} {'downtime':>8s} "
            f"{'RAM':>6s} {'iter ex':>7s} {'verdict':>7s}")

    def line(fam: str, group: str, m: Mapping[str, Any]) -> str:
        return (f"{fam:12s} {group:18s} {m['held_out_runs']:>4d} {_p(m['total_time_median_rel_err']):>8s} "
                f"{_p(m['total_time_p90_rel_err']):>7s} {_p(m.get('total_time_max_rel_err')):>7s} "
                f"{_p(m['downtime_within_tolerance_share']):>8s} {_p(m.get('ram_bytes_median_rel_err')):>6s} "
                f"{_p(m['iterations_exact_share']):>7s} {_p(m['verdict_accuracy']):>7s}")

    if rep.get("families"):
        lines += ["", "per family (held-out runs; time/RAM: median relative error; downtime: share within "
                      "max(30 ms, 25 %))", head]
        for fam, groups in rep["families"].items():
            for group, m in groups.items():
                lines.append(line(fam, group, m))
    if rep.get("blind"):
        lines += ["", "blind (simkvm predict from the planner's plan: zero share 0.5 or what the working set and "
                      "the guest OS leave, no guest report)", head,
                  line("pooled", "", rep["blind"])]
        for fam, groups in (rep.get("blind_families") or {}).items():
            for group, m in groups.items():
                lines.append(line(fam, group, m))
    if rep.get("clamped"):
        lines += ["", "guests that clamped their arena (ran smaller than specified; not a failed canary):"]
        lines += [f"  {rid}: wanted {v['wanted_bytes'] / MiB:.0f} MiB, allocatable {v['allocatable_bytes'] / MiB:.0f} MiB"
                  for rid, v in rep["clamped"].items()]
    hl = rep.get("heavy_load")
    if hl:
        lines += ["", f"runs under heavy load (1-min load > {hl['threshold_load_1m']:g} at start or end): "
                      f"{len(hl['runs'])} of {len(rep['rows'])}; median load {hl['load_1m_median']}"]
        if hl.get("unflagged"):
            lines.append(line("unflagged", "", hl["unflagged"]))
    lofo = rep.get("leave_one_family_out")
    if lofo:
        lines += ["", f"leave one family out: calibrated on {len(lofo['fit_runs'])} calibration runs of at most 1 GiB "
                      f"({lofo['profile']}), scored on the {len(lofo['test_runs'])} held-out runs above 1.5 GiB", head,
                  line("left out", "fit <= 1 GiB", lofo["metrics"])]
        if lofo.get("full_profile_metrics"):
            lines.append(line("left out", "full profile", lofo["full_profile_metrics"]))
    if rep.get("rate_shortfall"):
        lines.append(f"guests below 90 % of their nominal dirty rate during the migration: "
                     f"{', '.join(rep['rate_shortfall'])}")
    return lines
