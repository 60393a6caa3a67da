"""The report: error figures of the predictions over the held-out runs of a campaign directory.

The figures (:func:`metrics`) are computed from ``runs.csv`` rows, over the
``validation`` runs only, minus any run the profile was fitted on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .. import planner
from ..model.errors import UserError
from ..profile import apply_profile, load_profile
from ..sim import simulate
from .spec import DOWNTIME_TOL_ABS_S, DOWNTIME_TOL_REL, NEAR_BOUNDARY_FRAC, MiB
from .store import RunStore, plan_of_run, result_columns


# ------------------------------------------------------------------ the report
def pd_numeric(col: Any) -> Any:
    """A column as floats, empty cells (runs without a measurement) as NaN."""
    import pandas as pd

    return pd.to_numeric(col, errors="coerce")


def _rel(p: Any, m: Any) -> np.ndarray:
    p, m = np.asarray(p, float), np.asarray(m, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(p - m) / m


def _signed_rel(p: Any, m: Any) -> np.ndarray:
    p, m = np.asarray(p, float), np.asarray(m, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (p - m) / m


def _stat(values: np.ndarray, q: float) -> float | None:
    v = values[np.isfinite(values)]
    return float(np.percentile(v, q)) if len(v) else None


def as_bool(col: Any) -> np.ndarray:
    return np.asarray([str(x).strip().lower() in ("true", "1", "1.0") for x in col], bool)


def near_boundary(bandwidth_Bps: Any, min_bandwidth_Bps: Any, frac: float = NEAR_BOUNDARY_FRAC) -> np.ndarray:
    """The plan's bandwidth within ``frac`` of the lowest bandwidth the simulator sees converge."""
    bw, mb = np.asarray(bandwidth_Bps, float), np.asarray(min_bandwidth_Bps, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        near = np.abs(bw / mb - 1.0) <= frac
    return np.where(np.isfinite(mb), near, False)


def metrics(rows) -> dict[str, Any]:
    """Error figures over ``rows`` (a runs.csv DataFrame, already restricted to held-out runs).

    Time, downtime, bytes and iterations are compared where both sides converged
    (a run stopped at max time has no completion to compare); the verdict on
    every run that is not near the convergence boundary. Relative errors are
    ``|predicted - measured| / measured``; ``*_bias`` are medians of the signed
    ones (positive: the model over-estimates).
    """
    n = len(rows)
    mc, pc = as_bool(rows["measured_converged"]), as_bool(rows["predicted_converged"])
    both = rows[mc & pc]
    t_rel = _rel(both["predicted_total_time_s"], both["measured_total_time_s"])
    dp, dm = np.asarray(both["predicted_downtime_s"], float), np.asarray(both["measured_downtime_s"], float)
    d_ok = np.abs(dp - dm) <= np.maximum(DOWNTIME_TOL_ABS_S, DOWNTIME_TOL_REL * dm)
    pb = np.asarray(both["predicted_ram_bytes"], float) + np.asarray(both["predicted_disk_bytes"], float)
    mb = np.asarray(both["measured_ram_bytes"], float) + np.asarray(both["measured_disk_bytes"], float)
    b_rel = _rel(pb, mb)
    ram_p, ram_m = np.asarray(both["predicted_ram_bytes"], float), np.asarray(both["measured_ram_bytes"], float)
    it_diff = np.asarray(both["predicted_iterations"], float) - np.asarray(both["measured_iterations"], float)
    it_ok = it_diff == 0
    # one sync more or less is a near tie: the pending pages at a check a few % either side of the
    # threshold; within one says whether the model's rounds are right apart from such ties
    it_near = np.abs(it_diff) <= 1
    # service interruption: only runs whose interruption was measured (network probe)
    if "measured_service_interruption_s" in both:
        sm = np.asarray(pd_numeric(both["measured_service_interruption_s"]), float)
        sp = np.asarray(pd_numeric(both["predicted_service_interruption_s"]), float)
        has = np.isfinite(sm) & np.isfinite(sp)
        si_ok = np.abs(sp[has] - sm[has]) <= np.maximum(DOWNTIME_TOL_ABS_S, DOWNTIME_TOL_REL * sm[has])
        si_net = sm[has] - dm[has]
    else:
        si_ok = si_net = np.zeros(0)
    near = near_boundary(rows["bandwidth_Bps"], rows["min_bandwidth_Bps"])
    judged = ~near
    verdict_ok = (mc == pc)[judged]
    spread = repeat_spread(rows)
    out = {
        "held_out_runs": int(n),
        "compared_runs": int(len(both)),
        "total_time_median_rel_err": _stat(t_rel, 50),
        "total_time_p90_rel_err": _stat(t_rel, 90),
        "total_time_max_rel_err": float(np.max(t_rel)) if len(t_rel) else None,
        "total_time_over_15pct": [str(x) for x in both["run_id"][t_rel > 0.15]],
        "total_time_bias": _stat(_signed_rel(both["predicted_total_time_s"], both["measured_total_time_s"]), 50),
        "downtime_within_tolerance_share": float(d_ok.mean()) if len(both) else None,
        "downtime_median_abs_err_s": _stat(np.abs(dp - dm), 50),
        "downtime_bias_s": _stat(dp - dm, 50),
        "bytes_median_rel_err": _stat(b_rel, 50),
        "bytes_bias": _stat(_signed_rel(pb, mb), 50),
        "ram_bytes_median_rel_err": _stat(_rel(ram_p, ram_m), 50),
        "ram_bytes_bias": _stat(_signed_rel(ram_p, ram_m), 50),
        "iterations_exact_share": float(it_ok.mean()) if len(both) else None,
        "iterations_within_one_share": float(it_near.mean()) if len(both) else None,
        "service_interruption_runs": int(len(si_ok)),
        "service_interruption_within_tolerance_share": float(si_ok.mean()) if len(si_ok) else None,
        "service_interruption_network_median_s": _stat(si_net, 50),
        "iterations_bias": _stat(np.asarray(both["predicted_iterations"], float)
                                 - np.asarray(both["measured_iterations"], float), 50),
        "verdict_runs": int(judged.sum()),
        "near_boundary_runs": int(near.sum()),
        "verdict_accuracy": float(verdict_ok.mean()) if judged.sum() else None,
        "verdict_wrong": [str(x) for x in rows["run_id"][judged & (mc != pc)]],
        "repeat_total_time_cv_median": spread["total_time_cv_median"],
        "repeat_total_time_cv_max": spread["total_time_cv_max"],
        "repeat_downtime_cv_median": spread["downtime_cv_median"],
        "repeat_scenarios": spread["scenarios"],
        "checks_ok_share": float(as_bool(rows["check_ok"]).mean()) if n and "check_ok" in rows else None,
    }
    return out


def repeat_spread(rows) -> dict[str, Any]:
    """Run-to-run spread: coefficient of variation (std/mean, ddof=1) of measured converged runs per scenario."""
    cvs_t, cvs_d = [], []
    mc = as_bool(rows["measured_converged"])
    for _sid, g in rows[mc].groupby("scenario"):
        if len(g) < 2:
            continue
        t = np.asarray(g["measured_total_time_s"], float)
        d = np.asarray(g["measured_downtime_s"], float)
        cvs_t.append(float(np.std(t, ddof=1) / np.mean(t)))
        if np.mean(d) > 0:
            cvs_d.append(float(np.std(d, ddof=1) / np.mean(d)))
    return {"scenarios": len(cvs_t),
            "total_time_cv_median": float(np.median(cvs_t)) if cvs_t else None,
            "total_time_cv_max": float(np.max(cvs_t)) if cvs_t else None,
            "downtime_cv_median": float(np.median(cvs_d)) if cvs_d else None}


def held_out(rows, excluded_ids: Iterable[str] = ()):
    """Validation-role runs, minus any run a profile was fitted on."""
    excluded = set(excluded_ids)
    keep = (rows["role"] == "validation") & ~rows["run_id"].isin(excluded)
    return rows[keep].reset_index(drop=True)


def repredict(store: RunStore, rows, profile: Mapping[str, Any], profile_name: str):
    """Rows with the predicted_* columns (and min bandwidth) recomputed under ``profile``."""
    plans = [apply_profile(plan_of_run(store, rid), profile) for rid in rows["run_id"]]
    rows = with_predictions(rows, plans)
    rows["profile"] = profile_name
    return rows


def with_predictions(rows, plans: Sequence[Any]):
    """Rows with the predicted_* columns from simulating ``plans`` (one per row) and the lowest
    converging bandwidth (once per scenario: its repeats share their knobs)."""
    rows = rows.copy().reset_index(drop=True)
    boundary_cache: dict[str, float | None] = {}
    for i, plan in enumerate(plans):
        res = simulate(plan, timeline=False)
        for k, v in result_columns("predicted", res).items():
            if k not in rows:
                rows[k] = None
            rows[k] = rows[k].astype(object)
            rows.at[i, k] = v
        key = str(rows.at[i, "scenario"])
        if key not in boundary_cache:
            boundary_cache[key] = planner.min_bandwidth_Bps(plan, lo=1e6, hi=1e10)
        rows.at[i, "min_bandwidth_Bps"] = boundary_cache[key]
    return rows


def report(directory: str | Path, profile_path: str | None = None, *, extras: bool = True,
           blind: bool = True) -> dict[str, Any]:
    """``{"metrics", "rows", "profile", "excluded"}`` for the held-out runs of a campaign directory.

    ``extras``: also the figures per family, blind (``blind``: predicted from the planner's plan)
    and the runs that need a word (:func:`.evaluate.extend`).
    """
    store = RunStore(directory)
    rows = store.rows()
    excluded: list[str] = []
    if profile_path:
        profile = load_profile(profile_path)
        excluded = list((profile.get("fit") or {}).get("runs") or [])
        rows = held_out(rows, excluded)
        if len(rows):
            rows = repredict(store, rows, profile, profile_path)
    else:
        rows = held_out(rows)
    if not len(rows):
        raise UserError(f"{directory}: no held-out (role: validation) runs to report on"
                        + (f" that {profile_path} was not fitted on" if excluded else ""))
    m = metrics(rows)
    rep = {"metrics": m, "rows": rows, "profile": profile_path, "excluded": excluded}
    if extras:
        from .evaluate import extend
        from .store import HEAVY_LOAD_1M

        extend(rep, store, metrics, HEAVY_LOAD_1M, blind=blind)
    return rep


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{1000 * x:.0f} ms"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def format_report(rep: Mapping[str, Any]) -> str:
    m = rep["metrics"]
    rows = rep["rows"]
    src = f"re-predicted with {rep['profile']}" if rep["profile"] else "stored predictions"
    lines = [
        f"held-out runs: {m['held_out_runs']} ({m['compared_runs']} converged on both sides; {src})",
        "",
        f"{'figure':44s} {'value':>10s}   target",
        f"{'total time: median relative error':44s} {_pct(m['total_time_median_rel_err']):>10s}   <= 3 %",
        f"{'total time: 90th percentile relative error':44s} {_pct(m['total_time_p90_rel_err']):>10s}   <= 6 %",
        f"{'total time: largest relative error':44s} {_pct(m['total_time_max_rel_err']):>10s}   <= 15 %",
        f"{'total time: median signed error (bias)':44s} {_pct(m['total_time_bias']):>10s}",
        f"{'downtime within max(30 ms, 25 %)':44s} {_pct(m['downtime_within_tolerance_share']):>10s}   >= 95 %",
        f"{'downtime: median signed error (bias)':44s} "
        f"{'n/a' if m['downtime_bias_s'] is None else format(m['downtime_bias_s'] * 1000, '.0f') + ' ms':>10s}",
        f"{'RAM bytes: median relative error':44s} {_pct(m['ram_bytes_median_rel_err']):>10s}   <= 3 %",
        f"{'bytes (RAM + disk): median relative error':44s} {_pct(m['bytes_median_rel_err']):>10s}",
        f"{'bytes: median signed error (bias)':44s} {_pct(m['bytes_bias']):>10s}",
        f"{'iteration count exact':44s} {_pct(m['iterations_exact_share']):>10s}   >= 80 %",
        f"{'iteration count within one':44s} {_pct(m['iterations_within_one_share']):>10s}",
        f"{'service interruption within max(30 ms, 25 %)':44s} "
        f"{_pct(m['service_interruption_within_tolerance_share']):>10s}   ({m['service_interruption_runs']} runs "
        f"probed; the network added {_ms(m['service_interruption_network_median_s'])} median)",
        f"{'verdict accuracy (' + str(m['verdict_runs']) + ' runs; ' + str(m['near_boundary_runs']) + ' near the boundary skipped)':44s}"
        f" {_pct(m['verdict_accuracy']):>10s}   100 %",
        f"{'repeats: median CV of total time':44s} {_pct(m['repeat_total_time_cv_median']):>10s}"
        f"   ({m['repeat_scenarios']} scenarios with >= 2 converged runs; max {_pct(m['repeat_total_time_cv_max'])})",
        f"{'guest canaries ok after the migration':44s} {_pct(m['checks_ok_share']):>10s}",
    ]
    if m["verdict_wrong"]:
        lines.append(f"wrong verdicts: {', '.join(m['verdict_wrong'])}")
    if m.get("total_time_over_15pct"):
        lines.append(f"total time off by more than 15 %: {', '.join(m['total_time_over_15pct'])}")
    from .evaluate import format_extras

    lines += format_extras(rep)
    lines += ["", f"{'run':24s} {'verdict m/p':>21s} {'time m/p [s]':>13s} {'downtime m/p [ms]':>17s} "
                  f"{'MiB m/p':>11s} {'iter m/p':>8s}"]
    for _, r in rows.iterrows():
        lines.append(
            f"{r['run_id']:24s} {str(r['measured_outcome'])[:10]:>10s}/{str(r['predicted_outcome'])[:10]:<10s} "
            f"{float(r['measured_total_time_s']):6.1f}/{float(r['predicted_total_time_s']):<6.1f} "
            f"{1000 * float(r['measured_downtime_s']):8.0f}/{1000 * float(r['predicted_downtime_s']):<8.0f} "
            f"{float(r['measured_total_bytes']) / MiB:5.0f}/{float(r['predicted_total_bytes']) / MiB:<5.0f} "
            f"{int(r['measured_iterations']):3d}/{int(r['predicted_iterations']):<3d}")
    return "\n".join(lines)


def report_plots(store: RunStore, rep: Mapping[str, Any], out_dir: str | Path, *, profile: Mapping[str, Any] | None = None,
                 timelines: int | None = None) -> list[Path]:
    """Scatter plots (total time, downtime, bytes) and one predicted-vs-measured timeline per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import plot

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = rep["rows"]
    both = rows[as_bool(rows["measured_converged"]) & as_bool(rows["predicted_converged"])]
    written = []
    for col, what, unit, scale in (("total_time_s", "total time", "s", 1.0), ("downtime_s", "downtime", "ms", 1000.0),
                                   ("total_bytes", "bytes sent", "MiB", 1 / MiB)):
        fig = plot.predicted_vs_measured((np.asarray(both[f"predicted_{col}"], float) * scale).tolist(),
                                         (np.asarray(both[f"measured_{col}"], float) * scale).tolist(),
                                         what=what, unit=unit)
        path = out / f"scatter_{col}.png"
        plot.save(fig, str(path))
        plt.close(fig)
        written.append(path)
    seen = []
    for rid, sid in zip(rows["run_id"], rows["scenario"]):
        if sid in seen:
            continue
        seen.append(sid)
        if timelines is not None and len(seen) > timelines:
            break
        fig = timeline_figure(store, rid, profile=profile)
        path = out / f"timeline_{sid}.png"
        plot.save(fig, str(path))
        plt.close(fig)
        written.append(path)
    return written


def timeline_figure(store: RunStore, rid: str, *, profile: Mapping[str, Any] | None = None):
    """Remaining RAM/disk over time: the measured run and its prediction on one axis."""
    import matplotlib.pyplot as plt

    from .. import plot

    measured = store.load_result(rid, "measured")
    if profile:
        predicted = simulate(apply_profile(plan_of_run(store, rid), profile))
    else:
        predicted = store.load_result(rid, "predicted")
    fig, ax = plt.subplots(figsize=(9, 4.2))
    plot.timeline(measured, ax=ax, label="measured", color="tab:blue")
    plot.timeline(predicted, ax=ax, label="predicted", color="tab:orange")
    ax.set_title(f"{rid}: measured {measured.outcome} {measured.total_time_s:.1f} s / "
                 f"{measured.downtime_s * 1000:.0f} ms, predicted {predicted.outcome} {predicted.total_time_s:.1f} s / "
                 f"{predicted.downtime_s * 1000:.0f} ms", fontsize=9)
    return fig
