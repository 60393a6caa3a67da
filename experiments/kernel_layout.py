"""Where the guest kernel's pages are, and what placing them does to the predictions.

Why: QEMU's first pass walks RAM in address order, and how fast it crosses each part (a zero page
costs the rate limit a few bytes, a normal page a page) decides where it stands when pending first
falls below the threshold, and so what the stop sends. The plan's layouts come from the testbed
guest's report (simkvm/testbed/guestplan.py): its arena per 1/16 of RAM, the kernel's pages
counted as spread evenly. The guest also reports, per 1/64, the frames in use besides its arena
(``kernel_hist``, from /proc/kpageflags). This script compares, on a campaign directory whose runs
kept the guest's READY report (``meta.guest_console.ready``):

* three layouts of each run against QEMU's own walk of its first pass (the executor's polls of
  remaining and transferred bytes: transferred bytes per byte of RAM passed is the normal share
  there): **S16** the plan's (1/16, kernel spread), **S64** 1/64 parts with the kernel spread, **K**
  1/64 with the kernel placed where kernel_hist says;
* the predictions each layout gives (downtime within max(30 ms, 25 %), time, iteration count).

    python experiments/kernel_layout.py data/experiments/kernel-layout --profile profiles/testbed-v24.yaml
    python experiments/kernel_layout.py data/validation/campaign-v26 --profile profiles/testbed-v26.yaml --held-out

``--held-out``: only the runs ``simkvm campaign report`` scores (role validation, none the profile was
fitted on), the held-out A/B of a pre-registered round whose guests reported kernel_hist (q10s, v26 on).

A layout changes where the first pass stands at the stop, and so how many never-sent normal pages the
stop carries: the destination's first writes (``host.first_touch_s``), which calibration fits. A profile
fitted with one layout has absorbed that layout's error in its constants, so a layout is only judged
with a profile calibrated under it. ``--variant-dir OUT --layout K`` writes a copy of the campaign
directory whose stored plans carry that layout (runs without kernel_hist unchanged), on which the
ordinary commands calibrate and score it:

    python experiments/kernel_layout.py data/validation/campaign-q10s --variant-dir /tmp/q10s-K --layout K
    simkvm calibrate /tmp/q10s-K -o /tmp/q10s-K/own.yaml
    simkvm campaign report /tmp/q10s-K --profile /tmp/q10s-K/own.yaml --json

On the ten development re-runs in data/experiments/kernel-layout (QEMU 7.2, shapes of spent runs
with big stops; run alongside other work, load 0.7-4.8) K follows the walk about twice as closely as
S16 yet scores the stops worse: README, the v25 / q10r round's model work.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simkvm.profile import apply_profile, load_profile  # noqa: E402
from simkvm.sim import simulate  # noqa: E402
from simkvm.testbed.guestplan import reported_layouts  # noqa: E402
from simkvm.validation.metrics import held_out as held_out_rows  # noqa: E402
from simkvm.validation.metrics import plan_of_run  # noqa: E402
from simkvm.validation.store import RunStore  # noqa: E402

PARTS = 64
ZERO_PAGE_WIRE = 0.0022  # transferred bytes per byte of a zero page passed (a header of ~9 bytes per 4 KiB)


def walk_share(timeline: list[dict[str, Any]], memory_bytes: float, parts: int = PARTS) -> np.ndarray:
    """Normal-page share per part of RAM as QEMU's first pass met it (NaN where the polls do not
    resolve a part: a poll interval covering less than 90 % of it, or the walk never got there)."""
    size = memory_bytes / parts
    polls = [t for t in timeline if t.get("phase") == "precopy" and t.get("memory_iteration") == 1
             and t.get("memory_remaining") is not None and t.get("memory_processed") is not None]
    num, den = np.zeros(parts), np.zeros(parts)
    for a, b in zip(polls, polls[1:]):
        pa, pb = memory_bytes - a["memory_remaining"], memory_bytes - b["memory_remaining"]
        if pb - pa <= 4096:
            continue
        density = (b["memory_processed"] - a["memory_processed"]) / (pb - pa)
        for j in range(int(pa // size), min(int(np.ceil(pb / size)), parts)):
            overlap = max(0.0, min(pb, (j + 1) * size) - max(pa, j * size))
            num[j] += density * overlap
            den[j] += overlap
    seen = den > 0.9 * size
    return np.where(seen, np.clip(num / np.maximum(den, 1.0) - ZERO_PAGE_WIRE, 0.0, 1.0), np.nan)


def layouts(report: dict[str, Any], memory_bytes: float) -> dict[str, dict[str, tuple[float, ...]]]:
    """The three variants' ``vm.*_layout`` changes from one READY report."""
    return {"S16": reported_layouts(report, memory_bytes),
            "S64": reported_layouts(report, memory_bytes, parts=PARTS),
            "K": reported_layouts(report, memory_bytes, parts=PARTS, place_kernel=True)}


def normal_share(zero_layout: tuple[float, ...], memory_bytes: float, parts: int = PARTS) -> np.ndarray:
    """A zero layout (zero bytes per part) as the normal share of ``parts`` equal parts."""
    zero = np.repeat(np.asarray(zero_layout, dtype=float), parts // len(zero_layout)) / (parts // len(zero_layout))
    return 1.0 - zero / (memory_bytes / parts)


def compare(directory: Path, profile_path: str, held_out: bool = False) -> list[dict[str, Any]]:
    store, profile = RunStore(directory), load_profile(profile_path)
    scored = None
    if held_out:  # what `simkvm campaign report --profile` scores
        scored = set(held_out_rows(store.rows(), (profile.get("fit") or {}).get("runs") or [])["run_id"])
    rows = []
    for path in sorted((directory / "runs").glob("*.measured.json")):
        run_id = path.name[: -len(".measured.json")]
        if scored is not None and run_id not in scored:
            continue
        measured = json.loads(path.read_text())
        report = (measured.get("meta", {}).get("guest_console") or {}).get("ready")
        if not report or "kernel_hist" not in report:
            continue
        memory = float(measured["plan"]["vm"]["memory"])
        walk = walk_share(measured["timeline"], memory)
        base = plan_of_run(store, run_id)
        row: dict[str, Any] = {"run": run_id, "downtime_s": measured["downtime_s"], "time_s": measured["total_time_s"],
                               "iterations": measured["iterations"], "converged": bool(measured["converged"])}
        for name, change in layouts(report, memory).items():
            share = normal_share(change["vm.zero_layout"], memory)
            row[f"{name}_walk_diff"] = float(np.nanmean(np.abs(share - walk))) if np.isfinite(walk).any() else np.nan
            res = simulate(apply_profile(base.with_(**change), profile), timeline=False)
            row[f"{name}_downtime_s"], row[f"{name}_time_s"], row[f"{name}_iterations"] = (
                res.downtime_s, res.total_time_s, res.iterations)
            row[f"{name}_converged"] = bool(res.converged)
        rows.append(row)
    return rows


def write_variant(directory: Path, out: Path, layout: str) -> tuple[int, int]:
    """A copy of a campaign directory whose stored plans use ``layout`` (S16, S64 or K) where the run
    kept a READY report with kernel_hist; returns (runs changed, runs copied unchanged)."""
    if out.exists():
        sys.exit(f"{out} exists: give a new directory for the variant")
    (out / "runs").mkdir(parents=True)
    for name in ("campaign.yaml", "meta.json", "runs.csv", "rounds.csv"):
        if (directory / name).exists():
            shutil.copy2(directory / name, out / name)
    changed = same = 0
    for path in sorted((directory / "runs").glob("*.json")):
        if not path.name.endswith(".predicted.json"):  # measured and row files: as they are
            shutil.copy2(path, out / "runs" / path.name)
            continue
        data = json.loads(path.read_text())
        measured = json.loads(path.with_name(path.name.replace(".predicted.", ".measured.")).read_text())
        report = (measured.get("meta", {}).get("guest_console") or {}).get("ready")
        if report and "kernel_hist" in report:
            memory = float(measured["plan"]["vm"]["memory"])
            for key, value in layouts(report, memory)[layout].items():
                data["plan"]["vm"][key.removeprefix("vm.")] = list(value)
            changed += 1
        else:
            same += 1
        (out / "runs" / path.name).write_text(json.dumps(data, indent=1))
    return changed, same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("directory", type=Path, help="a campaign directory whose runs kept the guest's READY report")
    ap.add_argument("--profile", help="the profile to predict with (the comparison)")
    ap.add_argument("--variant-dir", type=Path, help="write a copy of the campaign with --layout in its plans here")
    ap.add_argument("--layout", choices=("S16", "S64", "K"), default="K", help="the layout of --variant-dir")
    ap.add_argument("--held-out", action="store_true",
                    help="only the held-out runs the campaign report scores (role validation, not fitted on)")
    args = ap.parse_args()
    if args.variant_dir:
        changed, same = write_variant(args.directory, args.variant_dir, args.layout)
        print(f"{args.variant_dir}: {changed} runs with layout {args.layout}, {same} unchanged (no kernel_hist)")
        return
    if not args.profile:
        sys.exit("--profile is needed for the comparison")
    rows = compare(args.directory, args.profile, args.held_out)
    if not rows:
        sys.exit(f"{args.directory}: no run with the guest's kernel_hist (a campaign from before a8ad536)")
    print(f"{'run':24s} {'measured dt':>11s}  " + "  ".join(f"{n + ' dt':>8s} {n + ' walk':>8s}" for n in ("S16", "S64", "K")))
    for r in rows:
        print(f"{r['run']:24s} {1e3 * r['downtime_s']:9.0f}ms  " + "  ".join(
            f"{1e3 * r[n + '_downtime_s']:6.0f}ms {r[n + '_walk_diff']:8.3f}" for n in ("S16", "S64", "K")))
    for n in ("S16", "S64", "K"):
        both = [r for r in rows if r["converged"] and r[f"{n}_converged"]]  # the report's compared runs
        dt = np.array([r["downtime_s"] for r in both])
        pred = np.array([r[f"{n}_downtime_s"] for r in both])
        ok = np.abs(pred - dt) <= np.maximum(0.030, 0.25 * dt)
        time = np.median([abs(r[f"{n}_time_s"] / r["time_s"] - 1) for r in both])
        exact = np.mean([r[f"{n}_iterations"] == r["iterations"] for r in both])
        verdict = np.mean([r["converged"] == r[f"{n}_converged"] for r in rows])
        walk = np.nanmedian([r[f"{n}_walk_diff"] for r in rows])
        print(f"{n:4s} layout vs walk (median |normal share| difference) {walk:.3f}; downtime ok {ok.sum()} of "
              f"{len(both)} (median error {1e3 * np.median(np.abs(pred - dt)):.0f} ms); time median "
              f"{100 * time:.1f} %; exact {100 * exact:.0f} %; verdict {100 * verdict:.0f} % of {len(rows)}")


if __name__ == "__main__":
    main()
