"""How right is the model over several campaigns at once? Each campaign's figures, and the pooled ones.

One campaign's held-out runs are 40-75 migrations: a figure moves by several points between draws of
the same ranges. Pooling several campaigns' held-out rows gives the figures a model change is judged
on (README, "Validation"). Each campaign is scored as :func:`.report.report` scores it, with its own
profile: the committed one (``profiles/testbed-{name}.yaml``, ``name`` being the directory's name
without ``campaign-``) or one recalibrated on its own calibration runs with the checkout's model
(``calibrate_dir``). The pooled figures are :func:`.metrics.metrics` over all the campaigns' held-out
rows together (run and scenario ids prefixed ``name/``, so that two campaigns' ``cal-idle-32`` stay
two scenarios), and over the rows of each QEMU version the runs were measured on.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..model.errors import UserError

DEFAULT_PROFILES = "profiles/testbed-{name}.yaml"


def campaign_name(directory: str | Path) -> str:
    """``data/validation/campaign-v11/`` -> ``v11`` (``.`` is the directory's own name)."""
    name = Path(directory).resolve().name
    return name.removeprefix("campaign-") or name


def profile_for(pattern: str, name: str) -> str:
    """The pattern with ``{name}`` filled in (a pattern without it: one profile for every campaign)."""
    try:
        return pattern.format(name=name)
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(f"--profiles {pattern!r}: the only placeholder is {{name}} (e.g. {DEFAULT_PROFILES}); "
                        f"{type(exc).__name__}: {exc}") from None


def plan_pool(directories: Sequence[str | Path], profiles: str = DEFAULT_PROFILES,
              calibrate_dir: str | Path | None = None) -> list[dict[str, str]]:
    """``[{name, directory, profile}]``, every directory and profile checked before the long work starts."""
    if not directories:
        raise UserError("give at least one campaign directory (e.g. data/validation/campaign-v11)")
    out: list[dict[str, str]] = []
    seen: dict[str, str] = {}
    for d in directories:
        p = Path(d)
        if not p.is_dir():
            raise UserError(f"campaign directory {str(d)!r} does not exist (a campaign's output, e.g. "
                            f"data/validation/campaign-v11)")
        if not (p / "runs").is_dir():
            raise UserError(f"{d}: not a campaign directory (no runs/ in it); run simkvm campaign run first")
        name = campaign_name(p)
        if name in seen:
            raise UserError(f"{d} and {seen[name]} are both campaign {name!r}: pool each campaign once")
        seen[name] = str(d)
        if calibrate_dir is not None:
            profile = str(Path(calibrate_dir) / f"{name}.profile.yaml")
        else:
            profile = profile_for(profiles, name)
            if not Path(profile).is_file():
                raise UserError(f"campaign {name} ({d}): profile {profile!r} does not exist; give --profiles PATTERN "
                                f"(e.g. {DEFAULT_PROFILES}) or --calibrate OUTDIR to fit one on its calibration runs")
        out.append({"name": name, "directory": str(d), "profile": profile})
    return out


def score_campaign(item: Mapping[str, str], *, calibrate_it: bool = False, blind: bool = False) -> dict[str, Any]:
    """One campaign as its report scores it (recalibrated first when ``calibrate_it``):
    ``{name, directory, profile, metrics, rows, blind?, blind_rows?}``."""
    from .report import report

    if calibrate_it:
        from .calibrate import calibrate

        Path(item["profile"]).parent.mkdir(parents=True, exist_ok=True)
        calibrate(item["directory"], item["profile"])
    rep = report(item["directory"], item["profile"], blind=blind)
    out: dict[str, Any] = {**item, "metrics": rep["metrics"], "rows": rep["rows"]}
    if blind and "blind" in rep:
        out["blind"], out["blind_rows"] = rep["blind"], rep["blind_rows"]
    return out


def _score(args: tuple[dict[str, str], bool, bool]) -> dict[str, Any]:  # a worker process's entry
    item, calibrate_it, blind = args
    return score_campaign(item, calibrate_it=calibrate_it, blind=blind)


def pool(directories: Sequence[str | Path], *, profiles: str = DEFAULT_PROFILES,
         calibrate_dir: str | Path | None = None, blind: bool = False, jobs: int = 1,
         progress: bool = False) -> dict[str, Any]:
    """``{"campaigns": {name: {directory, profile, metrics, blind?}}, "pooled": {"all": figures,
    "qemu 7.2": ..., "qemu 10.0": ...}, "pooled_blind": {...}?}``, in the order given."""
    items = plan_pool(directories, profiles, calibrate_dir)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"--jobs must be a whole number >= 1, got {jobs!r}")
    from tqdm import tqdm

    tasks = [(item, calibrate_dir is not None, blind) for item in items]
    bar = tqdm(total=len(tasks), unit="campaign", desc="pool", disable=not progress, file=sys.stderr)
    try:
        if jobs == 1 or len(tasks) == 1:
            scored = []
            for task in tasks:
                bar.set_postfix_str(task[0]["name"] + (" (calibrating)" if task[1] else ""))
                scored.append(_score(task))
                bar.update()
        else:
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(min(jobs, len(tasks))) as ex:
                futures = {ex.submit(_score, task): i for i, task in enumerate(tasks)}
                done: dict[int, dict[str, Any]] = {}
                for fut in as_completed(futures):
                    done[futures[fut]] = fut.result()
                    bar.set_postfix_str(done[futures[fut]]["name"])
                    bar.update()
            scored = [done[i] for i in range(len(tasks))]
    finally:
        bar.close()
    return pooled(scored)


def pooled(scored: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The pooled figures of scored campaigns (:func:`score_campaign`): all rows, then per QEMU version."""
    from .evaluate import canary_ok
    from .store import RunStore

    out: dict[str, Any] = {"campaigns": {}, "pooled": {}}
    parts = []  # each campaign once: its measured versions and guest checks serve its rows and blind rows
    for s in scored:
        out["campaigns"][s["name"]] = {k: s[k] for k in ("directory", "profile", "metrics", "blind") if k in s}
        store = RunStore(s["directory"])
        versions = measured_versions(s["directory"], s["rows"])
        checks = [(f"{s['name']}/{rid}", canary_ok(store, str(rid))) for rid in s["rows"]["run_id"]]
        parts.append((s, versions, checks))
    out["pooled"] = _pools([(s, s["rows"], versions, checks) for s, versions, checks in parts])
    if all("blind_rows" in s for s in scored) and scored:
        out["pooled_blind"] = _pools([(s, s["blind_rows"], versions, checks) for s, versions, checks in parts])
    return out


def _pools(parts: Sequence[tuple[Mapping[str, Any], Any, list[str], list[tuple[str, bool | None]]]]) -> dict[str, Any]:
    """Figures over every part's rows (a campaign's rows, the QEMU version each run was measured on, its
    guest checks), then over each version's."""
    import pandas as pd

    from .evaluate import with_checks
    from .metrics import metrics

    frames = []
    for s, rows, versions, _checks in parts:
        rows = rows.copy()
        rows["qemu_measured"] = versions
        rows["run_id"] = f"{s['name']}/" + rows["run_id"].astype(str)
        rows["scenario"] = f"{s['name']}/" + rows["scenario"].astype(str)
        frames.append(rows)
    every = pd.concat(frames, ignore_index=True)
    checks = [c for *_rest, part_checks in parts for c in part_checks]
    versions = [v for _s, _rows, part_versions, _c in parts for v in part_versions]
    out = {"all": with_checks(metrics(every), checks)}
    for version in sorted(set(every["qemu_measured"]), key=_version_key):
        mask = (every["qemu_measured"] == version).to_numpy()
        out[f"qemu {version}"] = with_checks(metrics(every[mask].reset_index(drop=True)),
                                             [c for c, v in zip(checks, versions) if v == version])
    return out


def measured_versions(directory: str | Path, rows) -> list[str]:
    """The QEMU version each run was measured on (runs.csv's ``qemu_version``, else the measured result's
    hypervisor version; ``unknown`` when neither says), as the model names them (7.2, 10.0)."""
    from ..model.qemu import normalise
    from .report import run_qemu
    from .store import RunStore

    store = RunStore(directory)
    out = []
    for rec in rows.to_dict("records"):
        v = rec.get("qemu_version")
        if isinstance(v, str) and v.strip():
            out.append(normalise(v))
        else:
            measured, _ = run_qemu(store, str(rec["run_id"]))
            out.append(measured or "unknown")
    return out


def _version_key(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (10**6,)


# ------------------------------------------------------------------ text
KEYS = (("t med", "total_time_median_rel_err"), ("t p90", "total_time_p90_rel_err"),
        ("t max", "total_time_max_rel_err"), ("RAM", "ram_bytes_median_rel_err"),
        ("dt ok", "downtime_within_tolerance_share"), ("exact", "iterations_exact_share"),
        ("w/in 1", "iterations_within_one_share"), ("verdict", "verdict_accuracy"))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def format_pool(result: Mapping[str, Any]) -> str:
    """The per-campaign and pooled figures as a table (percent), then the runs to look at."""
    head = f"{'':18s} {'runs':>4s} " + " ".join(f"{k:>7s}" for k, _ in KEYS)

    def line(label: str, m: Mapping[str, Any], extra: str = "") -> str:
        return (f"{label:18s} {m['held_out_runs']:>4d} " + " ".join(f"{_pct(m.get(k)):>7s}" for _, k in KEYS)
                + extra)

    lines = ["held-out runs, each campaign with its own profile (percent; time/RAM: relative error, median/"
             "p90/max; dt ok: downtime within max(30 ms, 25 %))", head]
    for name, c in result["campaigns"].items():
        lines.append(line(name, c["metrics"], f"  {c['profile']}"))
    for name, m in result["pooled"].items():
        lines.append(line(f"pooled {name}", m))
    if result.get("pooled_blind"):
        lines += ["", "blind (the planner's plan: vm.zero_fraction auto, no guest report)", head]
        for name, c in result["campaigns"].items():
            if c.get("blind"):
                lines.append(line(name, c["blind"]))
        for name, m in result["pooled_blind"].items():
            lines.append(line(f"pooled {name}", m))
    lines.append("")
    for name, m in result["pooled"].items():
        bias = m.get("downtime_bias_s")
        lines.append(f"pooled {name}: time bias {_pct(m.get('total_time_bias'))} %, downtime bias "
                     f"{'n/a' if bias is None else format(1000 * bias, '.0f') + ' ms'}, iterations bias "
                     f"{m.get('iterations_bias')}")
    every = result["pooled"].get("all") or {}
    lines.append(f"wrong verdicts: {', '.join(every.get('verdict_wrong') or []) or 'none'}")
    lines.append(f"total time off by more than 15 %: {', '.join(every.get('total_time_over_15pct') or []) or 'none'}")
    return "\n".join(lines)
