"""Where the testbed guest's kernel turns transparent huge pages on, measured.

Why: the free-page reserve a Linux guest keeps (zero to QEMU, counted as used by
MemAvailable) is ten times larger with THP on, because khugepaged raises
min_free_kbytes (mm/khugepaged.c set_recommended_min_free_kbytes). hugepage_init()
(mm/huge_memory.c) leaves THP off when totalram_pages() is below 512 MiB, and it runs
as an initcall, before the kernel frees its init sections and the initramfs; so the
switch sits a few MiB of MemTotal above 512 MiB. The model's rule is
simkvm.guestos.thp_enabled(); this script boots guests around the switch on the
testbed and prints, per size, MemTotal, the THP mode and min_free_kbytes the guest
reports at READY next to the model's answer.

    simkvm testbed up
    python experiments/guest_thp.py -o data/experiments/guest-thp/ [--sizes 512,528,...]

Each boot takes 5-10 s (TCG). Output: ``thp.json`` (a row per size) in the directory.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

MiB = 2**20
DEFAULT_SIZES = "512,528,544,552,560,568,576,584,592,608,640"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", required=True, type=Path, help="output directory (created)")
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="guest RAM sizes in MiB, comma-separated")
    args = ap.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        print(f"guest_thp: --sizes must be MiB integers separated by commas, not {args.sizes!r}", file=sys.stderr)
        return 2

    from simkvm.guestos import thp_enabled
    from simkvm.testbed.guest import define_guest, remove_guest, wait_ready
    from simkvm.testbed.hosts import Testbed

    tb = Testbed()
    try:
        tb.host_state("a")
    except Exception as exc:  # noqa: BLE001 - one line for the user, whatever the testbed says
        print(f"guest_thp: testbed host a is not up ({exc}); run 'simkvm testbed up' first", file=sys.stderr)
        return 2
    rows = []
    print(f"{'RAM MiB':>8} {'MemTotal MiB':>13} {'THP':>7} {'min_free_kbytes':>16} {'sqrt rule':>10} {'model THP':>10}")
    for mib in sizes:
        name = f"thp-{mib}"
        try:
            define_guest(name, mib * MiB, 32 * MiB, dirty_rate_Bps=0, wss_bytes=8 * MiB, replace=True, testbed=tb)
            ready = wait_ready(name, 120, testbed=tb).values
        finally:
            remove_guest(name, testbed=tb)
        mem_total = float(ready["mem_total"])
        row = {"memory_MiB": mib, "mem_total_MiB": mem_total / MiB, "thp": ready.get("thp"),
               "min_free_kbytes": int(ready.get("min_free_kb", 0)),
               # init_per_zone_wmark_min(): what min_free_kbytes is without khugepaged's raise
               "sqrt_rule_kbytes": int(math.sqrt(16 * mem_total / 1024)),
               "model_thp": thp_enabled(mib * MiB)}
        rows.append(row)
        print(f"{mib:8d} {row['mem_total_MiB']:13.1f} {row['thp']!s:>7} {row['min_free_kbytes']:16d} "
              f"{row['sqrt_rule_kbytes']:10d} {'on' if row['model_thp'] else 'off':>10}")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "thp.json").write_text(json.dumps(rows, indent=2) + "\n")
    wrong = [r["memory_MiB"] for r in rows if (r["thp"] == "always") != r["model_thp"]]
    print(f"model right at {len(rows) - len(wrong)} of {len(rows)} sizes" + (f"; wrong at {wrong} MiB" if wrong else ""))
    return 0 if not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
