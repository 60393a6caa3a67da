#!/usr/bin/env python3
"""The fault campaign: every fault of tests/faults run N times on a private testbed, then the table.

    python3 scripts/fault_campaign.py --runs 2            # runs the faults, prints the README's table
    python3 scripts/fault_campaign.py --runs 2 -k disk_full  # only some faults
    python3 scripts/fault_campaign.py --list              # the faults (one pytest id per run)
    python3 scripts/fault_campaign.py --table FILE.jsonl  # only the table, from an earlier campaign's records

The faults (tests/faults/test_faults.py): simkvm migrate SIGKILLed after creating the destination's
images, mid-mirror, mid-RAM copy, at the switchover and right after the resume, then `simkvm recover`;
the destination's libvirtd killed (mirror, RAM copy, at the resume) or frozen; the destination's QEMU
killed mid-copy and right after the resume; the source's QEMU killed; the source's libvirtd restarted;
two migrations of one VM at once; the destination's pool full mid-mirror; the link cut for 5 s and for
40 s, then restored, or until simkvm has ended (the testbed restarted with `up --link`; a run that outlives
simkvm's bound is recorded as a hang); Ctrl-C 0, 30 and 300 ms into the switchover.
One testbed at a time (SIMKVM_TESTBED_STACKS defaults to debian12 here).

Each run records one line (what simkvm said, where the guest's QEMU really ran, what `simkvm recover`
did, leftovers, canaries); the table counts them per fault. The pytest outcome is printed too: a
failed assertion is a fault the executor does not survive yet.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def table(records: list[dict]) -> str:
    rows: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        rows[r["fault"]].append(r)
    out = ["| fault | runs | VM location (after recover) | canaries ok | leftovers after recover | message true |",
           "|---|---|---|---|---|---|"]
    for fault, runs in rows.items():
        where = defaultdict(int)
        for r in runs:
            loc = {"a": "source", "b": "destination"}.get(r["location"], r["location"])
            crashed = r.get("guest_crash") or r.get("panic")
            where[f"{loc}, its guest crashed (QEMU 7.2 TCG)" if crashed else loc] += 1
        loc = ", ".join(f"{k} {v}" for k, v in sorted(where.items()))
        canaries = sum(1 for r in runs if r.get("canaries") == "ok")
        leftovers = sum(len(r.get("leftovers") or []) for r in runs)
        true = f"{sum(1 for r in runs if r.get('message_true'))}/{len(runs)}"
        out.append(f"| {fault} | {len(runs)} | {loc} | {canaries}/{len(runs)} | {leftovers} | {true} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2, help="runs of each fault (default 2)")
    ap.add_argument("--table", metavar="JSONL", help="print the table of an earlier campaign and exit")
    ap.add_argument("-k", default=None, help="only the faults matching this pytest -k expression")
    ap.add_argument("--list", action="store_true", help="list the faults' runs and exit")
    args = ap.parse_args()
    if args.table:
        records = [json.loads(x) for x in Path(args.table).read_text().splitlines() if x.strip()]
        print(table(records))
        return 0
    if not 1 <= args.runs <= 20:
        print("fault_campaign: --runs must be 1..20", file=sys.stderr)
        return 2
    out = ROOT / "data" / "faults" / time.strftime("faults-%Y%m%dT%H%M%S.jsonl", time.gmtime())
    env = {**os.environ, "SIMKVM_FAULT_RUNS": str(args.runs), "SIMKVM_FAULT_RECORD": str(out),
           "PYTHONPATH": str(ROOT)}
    env.setdefault("SIMKVM_TESTBED_STACKS", "debian12")
    cmd = [sys.executable, "-m", "pytest", "-q", "--reruns", "0", "--durations=0", "tests/faults"]
    if args.k:
        cmd += ["-k", args.k]
    if args.list:
        return subprocess.call([*cmd, "--collect-only"], cwd=ROOT, env=env)
    out.parent.mkdir(parents=True, exist_ok=True)
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    records = [json.loads(x) for x in out.read_text().splitlines() if x.strip()] if out.exists() else []
    print(f"\n{len(records)} runs recorded in {out.relative_to(ROOT)} (pytest exit {code})\n")
    print(table(records))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
