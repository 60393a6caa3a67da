"""Regenerate every figure into one directory (default figures/), one script run per figure."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: (script, extra arguments, file name)
FIGURES: list[tuple[str, list[str], str]] = [
    ("fig_timeline_example.py", [], "timeline_example.png"),
    ("fig_timeline_example.py", ["--plan", str(HERE.parent / "plans" / "nonconverging.yaml"),
                                 "--policy", "ovirt-post-copy"], "timeline_postcopy_policy.png"),
    ("fig_bytes_per_iteration.py", [], "bytes_per_iteration.png"),
    ("fig_convergence_map.py", [], "convergence_map.png"),
    ("fig_convergence_map.py", ["--ratio"], "convergence_map_ratio.png"),
    ("fig_downtime_wss.py", [], "downtime_wss.png"),
    ("fig_downtime_wss.py", ["--map"], "downtime_wss_map.png"),
    ("fig_ratio_geometric.py", [], "ratio_geometric.png"),
    ("fig_policies.py", [], "policies.png"),
    ("fig_fleet.py", [], "fleet_10gbit.png"),
    ("fig_fleet.py", ["--bandwidth", "1Gbit/s"], "fleet_1gbit.png"),
    ("fig_fleet.py", ["--worst"], "fleet_worst_timeline.png"),
    ("fig_verdict_grid.py", [], "verdict_grid.png"),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-o", "--output", default=str(HERE.parent / "figures"), help="directory for the PNGs")
    out = Path(p.parse_args().output)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for script, extra, name in FIGURES:
        rc = subprocess.run([sys.executable, str(HERE / script), "-o", str(out / name), *extra]).returncode
        failed += rc != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
