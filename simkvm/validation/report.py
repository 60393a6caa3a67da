"""The report: error figures of the predictions over the held-out runs of a campaign directory.

The figures (:func:`.metrics.metrics`) are computed from ``runs.csv`` rows, over the
``validation`` runs only, minus any run the profile was fitted on; :mod:`.evaluate`
adds the figures per family, the blind predictions and the runs that need a word.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..model.errors import UserError
from ..model.units import MiB
from ..profile import apply_profile, load_profile
from ..sim import simulate
from .evaluate import extend, format_extras
from .metrics import as_bool, held_out, metrics, repeat_agreement, repredict
from .store import HEAVY_LOAD_1M, RunStore, plan_of_run


def report(directory: str | Path, profile_path: str | None = None, *, extras: bool = True,
           blind: bool = True, qemu: str | None = None) -> dict[str, Any]:
    """``{"metrics", "rows", "profile", "excluded"}`` for the held-out runs of a campaign directory.

    ``extras``: also the figures per family, blind (``blind``: predicted from the planner's plan)
    and the runs that need a word (:func:`.evaluate.extend`). ``qemu``: re-predict following that
    QEMU version's loop instead of the one each run was predicted with (needs a profile).
    """
    store = RunStore(directory)
    rows = all_rows = store.rows()
    excluded: list[str] = []
    if qemu is not None:
        qemu = _known_qemu(qemu)
        if not profile_path:
            raise UserError("--qemu re-predicts the runs: give the profile to predict with too (--profile P.yaml)")
    if profile_path:
        profile = load_profile(profile_path)
        excluded = list((profile.get("fit") or {}).get("runs") or [])
        rows = held_out(rows, excluded)
        if len(rows):
            rows = repredict(store, rows, profile, profile_path, qemu)
    else:
        rows = held_out(rows)
    if not len(rows):
        raise UserError(f"{directory}: no held-out (role: validation) runs to report on"
                        + (f" that {profile_path} was not fitted on" if excluded else ""))
    m = metrics(rows)
    rep = {"metrics": m, "rows": rows, "profile": profile_path, "excluded": excluded, "qemu": qemu,
           "warnings": version_warnings(store, rows["run_id"], profile if profile_path else None, profile_path,
                                        qemu)}
    if extras:
        extend(rep, store, metrics, HEAVY_LOAD_1M, blind=blind)
        rep["repeatability"] = repeat_agreement(all_rows)
    return rep


def repeatability(directories: "list[str | Path]") -> dict[str, Any]:
    """:func:`.metrics.repeat_agreement` pooled over campaign directories (a scenario id is one
    scenario within its own directory: each campaign's ``cal-idle-32`` ran on its own day)."""
    import pandas as pd

    frames = []
    for d in directories:
        rows = RunStore(d).rows().copy()
        rows["scenario"] = f"{d}::" + rows["scenario"].astype(str)
        frames.append(rows)
    return repeat_agreement(pd.concat(frames, ignore_index=True))


def format_repeatability(r: Mapping[str, Any], directories: Any = ()) -> str:
    where = f" in {', '.join(map(str, directories))}" if directories else ""
    if not r["ordered_pairs"]:
        return f"no scenario ran twice{where}: nothing to compare"
    return "\n".join([
        f"repeats: {r['scenarios']} scenarios run two or more times{where}; one run as the prediction of its repeat "
        f"({r['ordered_pairs']} ordered pairs, {r['compared_pairs']} converged on both sides):",
        f"{'verdict agrees':44s} {_pct(r['verdict_agree_share']):>10s}",
        f"{'total time: median / p90 relative difference':44s} {_pct(r['total_time_median_rel_diff']):>10s} / "
        f"{_pct(r['total_time_p90_rel_diff'])}",
        f"{'downtime within max(30 ms, 25 %)':44s} {_pct(r['downtime_within_tolerance_share']):>10s}   (the best "
        f"single downtime per scenario, chosen after the fact: {_pct(r['downtime_within_best_constant_share'])})",
        f"{'iteration count exact':44s} {_pct(r['iterations_exact_share']):>10s}   (so a model predicting one "
        f"count per plan is exact at most {_pct(r['iterations_exact_ceiling'])} of the time)",
        f"{'iteration count within one':44s} {_pct(r['iterations_within_one_share']):>10s}"])


def run_qemu(store: RunStore, rid: str) -> tuple[str | None, str]:
    """(the QEMU version a run was measured on, "10.0"; None if not recorded) and the ``host.qemu``
    its prediction followed (a plan without one: the model's default, 7.2)."""
    from ..model.qemu import normalise
    from .runner import measured_qemu_version

    try:
        measured = measured_qemu_version(store.load_result(rid, "measured"))
    except (OSError, ValueError, UserError):
        measured = None
    return (normalise(measured) if measured else None), plan_of_run(store, rid).host.qemu


def _known_qemu(version: str) -> str:
    from ..model.qemu import KNOWN, normalise

    if normalise(version) not in KNOWN:
        raise UserError(f"--qemu must be one of {', '.join(KNOWN)} (the QEMU versions the model follows), "
                        f"got {version!r}")
    return normalise(version)


def version_warnings(store: RunStore, run_ids: Any, profile: Mapping[str, Any] | None,
                     profile_path: str | None, qemu: str | None = None) -> list[str]:
    """What the report says when versions disagree: runs measured on another QEMU than their
    prediction followed (``qemu``: the version forced on every prediction), or than the profile
    was calibrated on."""
    from ..model.qemu import normalise

    measured: dict[str, list[str]] = {}
    crossed: dict[tuple[str, str], list[str]] = {}
    for rid in run_ids:
        m, predicted = run_qemu(store, str(rid))
        predicted = qemu or predicted
        if m is not None:
            measured.setdefault(m, []).append(str(rid))
            if m != predicted:
                crossed.setdefault((m, predicted), []).append(str(rid))
    out = [f"{len(r)} run(s) measured on QEMU {m} were predicted with QEMU {p}'s loop (their plans' host.qemu), "
           f"e.g. {r[0]}" for (m, p), r in sorted(crossed.items())]
    if len(measured) > 1:
        out.append("the held-out runs were measured on several QEMU versions ("
                   + ", ".join(f"{v}: {len(r)} runs" for v, r in sorted(measured.items())) + ")")
    calibrated = ((profile or {}).get("host") or {}).get("qemu")
    if calibrated is not None:
        calibrated = normalise(calibrated)
        other = sorted(v for v in measured if v != calibrated)
        if other:
            out.append(f"{profile_path} was calibrated on QEMU {calibrated}; the runs were measured on QEMU "
                       f"{', '.join(other)}: its constants may not carry over (calibrate on this campaign's runs)")
    return out


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{1000 * x:.0f} ms"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def format_report(rep: Mapping[str, Any]) -> str:
    m = rep["metrics"]
    rows = rep["rows"]
    src = f"re-predicted with {rep['profile']}" if rep["profile"] else "stored predictions"
    if rep.get("qemu"):
        src += f", following QEMU {rep['qemu']}'s loop"
    lines = [f"warning: {w}" for w in rep.get("warnings") or []]
    lines += [
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
        f"{'guest canaries ok after the migration':44s} {_pct(m['checks_ok_share']):>10s}"
        + (f"   (not counted, no CHECK line after the move: {', '.join(rep['checks_unconfirmed'])})"
           if rep.get("checks_unconfirmed") else ""),
    ]
    if m["verdict_wrong"]:
        lines.append(f"wrong verdicts: {', '.join(m['verdict_wrong'])}")
    if m.get("total_time_over_15pct"):
        lines.append(f"total time off by more than 15 %: {', '.join(m['total_time_over_15pct'])}")
    lines += format_extras(rep)
    if rep.get("repeatability"):
        lines += ["", format_repeatability(rep["repeatability"])]
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
