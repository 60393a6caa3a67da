#!/usr/bin/env python3
"""The fault campaign: every fault of tests/faults run N times on a private testbed, then the table.

    python3 scripts/fault_campaign.py --runs 2            # runs the faults, prints the README's table
    python3 scripts/fault_campaign.py --table FILE.jsonl  # only the table, from an earlier campaign's records

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
            where[{"a": "source", "b": "destination"}.get(r["location"], r["location"])] += 1
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
    args = ap.parse_args()
    if args.table:
        records = [json.loads(x) for x in Path(args.table).read_text().splitlines() if x.strip()]
        print(table(records))
        return 0
    if not 1 <= args.runs <= 20:
        print("fault_campaign: --runs must be 1..20", file=sys.stderr)
        return 2
    out = ROOT / "data" / "faults" / time.strftime("faults-%Y%m%dT%H%M%S.jsonl", time.gmtime())
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SIMKVM_FAULT_RUNS": str(args.runs), "SIMKVM_FAULT_RECORD": str(out),
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pytest", "-q", "--reruns", "0", "tests/faults"]
    if args.k:
        cmd += ["-k", args.k]
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    records = [json.loads(x) for x in out.read_text().splitlines() if x.strip()] if out.exists() else []
    print(f"\n{len(records)} runs recorded in {out.relative_to(ROOT)} (pytest exit {code})\n")
    print(table(records))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
