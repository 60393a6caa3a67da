"""experiments/kernel_layout.py's map of RAM from QEMU's first pass, on timelines written by hand."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from experiment_scripts import load

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


def _module():
    return load("kernel_layout")


def _poll(memory: float, passed: float, sent: float) -> dict:
    return {"phase": "precopy", "memory_iteration": 1, "memory_remaining": memory - passed, "memory_processed": sent}


def test_the_walk_reads_dense_and_zero_stretches_and_leaves_the_unseen_unknown():
    """Oracle: a RAM whose lower half is normal pages (a page on the wire per page passed) and whose
    upper half is zero pages (a 9-byte header each), walked to 3/4 with polls every 2 MiB in the dense
    half and one poll across 16 MiB of zeros: the lower half reads 1, the zero quarter 0, the
    unwalked quarter unknown; a poll in the previous iteration counts for nothing."""
    kl = _module()
    memory = 64 * MiB
    polls = [{"phase": "precopy", "memory_iteration": 0, "memory_remaining": None, "memory_processed": None}]
    polls += [_poll(memory, k * 2 * MiB, k * 2 * MiB * (1 + kl.ZERO_PAGE_WIRE)) for k in range(17)]
    zero_bytes = 16 * MiB * kl.ZERO_PAGE_WIRE
    polls.append(_poll(memory, 48 * MiB, 32 * MiB * (1 + kl.ZERO_PAGE_WIRE) + zero_bytes))
    share = kl.walk_share(polls, memory)
    assert share[:32] == pytest.approx([1.0] * 32, abs=1e-9)
    assert share[32:48] == pytest.approx([0.0] * 16, abs=1e-9)
    assert all(math.isnan(x) for x in share[48:])


def test_a_zero_layout_becomes_normal_shares_of_64_parts():
    """Oracle: 16 parts, the lower half all zero and the upper half none, are 32 parts of share 0 then
    32 of share 1; RAM is conserved whatever the part count."""
    kl = _module()
    memory = 256 * MiB
    zero = tuple([memory / 16] * 8 + [0.0] * 8)
    share = kl.normal_share(zero, memory)
    assert list(share) == pytest.approx([0.0] * 32 + [1.0] * 32)
    fine = kl.normal_share(tuple([memory / 64] * 16 + [0.0] * 48), memory)
    assert sum(1 - fine) * memory / 64 == pytest.approx(memory / 4)


def test_a_variant_directory_carries_the_layout_in_every_plan_and_nothing_else_changes(tmp_path):
    """On the committed development re-runs: each stored plan of the copy has the layout its own READY
    report gives (64 parts for K), the measured and row files are the same data, and the copy is then
    an ordinary campaign directory (its plans load and simulate); an existing directory is refused."""
    import json

    from simkvm.sim import simulate
    from simkvm.validation.store import RunStore, plan_of_run

    kl = _module()
    src, out = ROOT / "data" / "experiments" / "kernel-layout", tmp_path / "k"
    changed, same = kl.write_variant(src, out, "K")
    runs = sorted(p.name[: -len(".measured.json")] for p in (src / "runs").glob("*.measured.json"))
    assert (changed, same) == (len(runs), 0) and changed > 0
    for rid in runs:
        measured = json.loads((src / "runs" / f"{rid}.measured.json").read_text())
        report, memory = measured["meta"]["guest_console"]["ready"], float(measured["plan"]["vm"]["memory"])
        want = kl.layouts(report, memory)["K"]
        plan = json.loads((out / "runs" / f"{rid}.predicted.json").read_text())["plan"]["vm"]
        assert len(plan["zero_layout"]) == len(plan["wss_layout"]) == kl.PARTS
        assert plan["zero_layout"] == pytest.approx(list(want["vm.zero_layout"]))
        assert plan["wss_layout"] == pytest.approx(list(want["vm.wss_layout"]))
        for kind in ("measured", "row"):
            assert json.loads((out / "runs" / f"{rid}.{kind}.json").read_text()) == \
                json.loads((src / "runs" / f"{rid}.{kind}.json").read_text())
    store = RunStore(out)
    assert store.finished_ids() == runs
    assert simulate(plan_of_run(store, runs[0]), timeline=False).total_time_s > 0
    with pytest.raises(SystemExit, match="exists"):
        kl.write_variant(src, out, "S16")
