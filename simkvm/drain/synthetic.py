"""Synthetic fleets for benchmarks: the example fleet's VM kinds, spread over many hosts."""
from __future__ import annotations

import random
from pathlib import Path

from .spec import Fleet, fleet_from_dict

EXAMPLE_CSV = Path(__file__).resolve().parents[2] / "data" / "fleet.csv"


def synthetic_fleet(vms: int, hosts: int, *, concurrency: object = "ovirt", bandwidth: str = "10Gbit/s",
                    seed: int = 1, csv: Path = EXAMPLE_CSV) -> Fleet:
    """``vms`` VMs on the first half of ``hosts`` hosts, drained onto the other half; each VM is a
    row of the example fleet (cycled, seeded), so the mix of easy and hard VMs is the notebook's."""
    from ..fleet import rows

    kinds = rows(csv)
    rng = random.Random(seed)
    sources = [f"h{i:02d}" for i in range(max(hosts // 2, 1))]
    targets = [f"h{i:02d}" for i in range(len(sources), max(hosts, 2))]
    out = []
    for i in range(vms):
        kind = dict(rng.choice(kinds))
        kind.pop("role", None)
        out.append({**kind, "name": f"{kind['name']}-{i:04d}", "host": sources[i % len(sources)]})
    return fleet_from_dict({
        "name": f"synthetic-{vms}x{hosts}", "link": {"bandwidth": bandwidth}, "vms": out,
        "hosts": {h: {} for h in sources + targets}, "drain": sources, "concurrency": concurrency,
        "migration": {"max_downtime": "300ms", "max_time": "1h"},
    })
