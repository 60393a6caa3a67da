"""Sweeps: the table is what individual `simulate` calls would give, whoever computes it.

Oracles: each row against its own `Plan.from_dict` + `simulate` (built the slow way, from human
units, so the fast SI path is checked too); LHS strata counted; a resumed run against an
uninterrupted one; the Dask backend against the local one, row for row.
"""
from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simkvm.load import load_plan
from simkvm import Plan, simulate
from simkvm.model.errors import UserError
from simkvm.io import set_path
from simkvm.sweep import DEFAULT_CHUNK, RESULT_COLUMNS, load_spec, run_sweep

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "experiments" / "sweep_example.yaml"
BASE = load_plan(ROOT / "plans" / "example.yaml").to_dict()
AXES = {
    "workload.memory.dirty_rate": ["10MiB/s", "400MiB/s", "1GiB/s"],
    "link.bandwidth": {"log": ["1Gbit/s", "10Gbit/s"], "num": 4},
    "migration.max_downtime": {"range": ["100ms", "300ms"], "step": "100ms"},
    "workload.memory.wss": ["1GiB", "20GiB"],  # 20 GiB > 16 GiB of RAM: invalid scenarios
}


#: axis key -> table column (the key with its field's unit suffix, like the result columns)
COLUMN = {"workload.memory.dirty_rate": "workload.memory.dirty_rate_Bps", "link.bandwidth": "link.bandwidth_Bps",
          "migration.max_downtime": "migration.max_downtime_s", "workload.memory.wss": "workload.memory.wss_bytes"}


def grid_spec(**extra) -> dict:
    return {"base": copy.deepcopy(BASE), "axes": copy.deepcopy(AXES), **extra}


def test_grid_has_every_combination_and_the_columns():
    df = run_sweep(grid_spec(), workers=1, progress=False)
    assert len(df) == 3 * 4 * 3 * 2
    assert list(df.columns) == ["scenario", *(COLUMN[k] for k in AXES), *RESULT_COLUMNS]
    for col in ("converged", "outcome", "total_time_s", "downtime_s", "ram_transferred_bytes",
                "disk_transferred_bytes", "iterations"):
        assert col in df.columns
    assert list(df["scenario"]) == list(range(len(df)))
    # SI values: 1 Gbit/s is 125e6 B/s; log spacing; range with step includes both ends.
    assert sorted(df["link.bandwidth_Bps"].unique()) == pytest.approx(np.geomspace(125e6, 1.25e9, 4))
    assert sorted(df["migration.max_downtime_s"].unique()) == pytest.approx([0.1, 0.2, 0.3])
    assert df["iterations"].dtype == np.int64 and df["converged"].dtype == bool


def test_rows_equal_individual_simulations():
    df = run_sweep(grid_spec(), workers=1, progress=False)
    assert [c for c in df.columns if "." in c] == [COLUMN[k] for k in AXES]
    human = {"workload.memory.dirty_rate": dict(zip([10 * 2**20, 400 * 2**20, 2**30], AXES["workload.memory.dirty_rate"])),
             "workload.memory.wss": dict(zip([2**30, 20 * 2**30], AXES["workload.memory.wss"]))}
    for i in (0, 7, 20, 33, 40, 71):
        row = df.iloc[i]
        data = copy.deepcopy(BASE)
        for key in AXES:
            value = row[COLUMN[key]]
            set_path(data, key, human[key][value] if key in human else float(value))
        try:
            expected = simulate(Plan.from_dict(data), timeline=False)
        except UserError as exc:  # the invalid corner: the same message, not a crash
            assert row["outcome"] == "invalid" and not row["converged"] and row["reason"] == str(exc)
            assert math.isnan(row["total_time_s"])
            continue
        for col in RESULT_COLUMNS:
            want = getattr(expected, col)
            if col.endswith("pages"):  # whole pages in the table
                want = round(want)
            assert row[col] == want, (i, col)
    assert (df["outcome"] == "invalid").sum() == len(df) // 2  # every 20 GiB wss row


def test_lhs_is_reproducible_and_stratified():
    spec = {"base": copy.deepcopy(BASE), "samples": {"method": "lhs", "n": 50, "seed": 7},
            "axes": {"link.bandwidth": {"log": ["100Mbit/s", "10Gbit/s"]},
                     "migration.max_downtime": {"range": ["10ms", "1s"]}}}
    a = run_sweep(spec, workers=1, progress=False, chunk=16)
    b = run_sweep(copy.deepcopy(spec), workers=1, progress=False, chunk=7)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 50
    bw = np.floor(np.log(a["link.bandwidth_Bps"] / 12.5e6) / np.log(100) * 50).astype(int)
    down = np.floor((a["migration.max_downtime_s"] - 0.01) / 0.99 * 50).astype(int)
    assert sorted(bw) == list(range(50)) and sorted(down) == list(range(50))
    other = run_sweep({**copy.deepcopy(spec), "samples": {"method": "lhs", "n": 50, "seed": 8}}, workers=1,
                      progress=False)
    assert not np.allclose(other["link.bandwidth_Bps"], a["link.bandwidth_Bps"])
    rnd = run_sweep({**copy.deepcopy(spec), "samples": {"method": "random", "n": 20, "seed": 1}}, workers=1,
                    progress=False)
    assert rnd["link.bandwidth_Bps"].between(12.5e6, 1.25e9).all()


def test_resume_recomputes_only_missing_chunks(tmp_path):
    out = tmp_path / "r.parquet"
    spec = grid_spec()
    reference = run_sweep(spec, workers=1, progress=False, chunk=10)  # 72 rows: 8 chunks

    class Stop(Exception):
        pass

    def interrupt_after_three(k: int) -> None:
        if k == 2:
            raise Stop

    with pytest.raises(Stop):
        run_sweep(spec, output=out, workers=1, progress=False, chunk=10, on_chunk=interrupt_after_three)
    parts = out.with_name(out.name + ".parts")
    assert sorted(p.name for p in parts.glob("chunk-*.parquet")) == [f"chunk-{k:06d}.parquet" for k in range(3)]
    (parts / "chunk-000001.parquet").unlink()  # a lost part is recomputed too
    computed: list[int] = []
    df = run_sweep(spec, output=out, workers=2, progress=False, chunk=10, on_chunk=computed.append)
    assert sorted(computed) == [1, 3, 4, 5, 6, 7]
    pd.testing.assert_frame_equal(df, reference)
    pd.testing.assert_frame_equal(pd.read_parquet(out), reference)
    assert not parts.exists()


def test_parts_of_another_sweep_are_refused(tmp_path):
    out = tmp_path / "r.parquet"
    with pytest.raises(RuntimeError):
        run_sweep(grid_spec(), output=out, workers=1, progress=False, chunk=10,
                  on_chunk=lambda k: (_ for _ in ()).throw(RuntimeError("stop")))
    other = grid_spec()
    other["axes"]["link.bandwidth"] = ["5Gbit/s"]
    with pytest.raises(UserError, match="different sweep"):
        run_sweep(other, output=out, workers=1, progress=False, chunk=10)


def test_local_pool_and_dask_give_the_same_table():
    distributed = pytest.importorskip("distributed")
    spec = grid_spec()
    one = run_sweep(spec, workers=1, progress=False, chunk=9)
    two = run_sweep(spec, workers=2, progress=False, chunk=9)
    pd.testing.assert_frame_equal(one, two)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        dask = run_sweep(spec, scheduler=cluster.scheduler_address, progress=False, chunk=9)
    pd.testing.assert_frame_equal(dask, one)


def test_rounds_table_matches_the_iterations():
    df = run_sweep(grid_spec(), workers=1, progress=False, rounds=True)
    rounds = df.attrs["rounds"]
    counts = rounds.groupby("scenario").size()
    expected = df.set_index("scenario")["iterations"]
    assert (counts == expected[counts.index]).all()
    assert rounds["memory_iteration"].dtype == np.int64


@pytest.mark.parametrize("change,needle", [
    ({"axes": {"link.bandwith": ["1Gbit/s"]}}, "unknown axis 'link.bandwith'"),
    ({"axes": {"link.bandwidth": ["1Gfoo/s"]}}, "unknown rate unit"),
    ({"samples": {"method": "sobol", "n": 10}}, "samples.method must be one of"),
    ({"samples": {"method": "lhs"}}, "samples.n"),
    ({"axes": {"link.bandwidth": {"log": ["1Gbit/s", "10Gbit/s"]}}}, "a grid needs 'num' or 'step'"),
    ({"axes": {"vm.disks.3.size": ["1GiB"]}}, "index '3'"),
    ({"base": "nowhere.yaml"}, "does not exist"),
    ({"axis": {}}, "unknown sweep spec key 'axis'"),
])
def test_bad_spec_is_one_user_error(change, needle):
    spec = {**grid_spec(), **change}
    with pytest.raises(UserError, match=needle):
        load_spec(spec)


def test_spec_file_base_is_relative_to_the_spec():
    spec = load_spec(EXAMPLE)
    assert spec.base.name == "example-db" and spec.size == 5 * 5 * 10 and spec.chunk == DEFAULT_CHUNK


def test_cli_writes_parquet_and_csv(tmp_path):
    out = tmp_path / "res.parquet"
    run = subprocess.run([sys.executable, "-m", "simkvm", "sweep", str(EXAMPLE), "-o", str(out), "--workers", "2"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(pd.read_parquet(out)) == 250 and "250 scenarios" in run.stderr
    csv = tmp_path / "res.txt"
    run = subprocess.run([sys.executable, "-m", "simkvm", "sweep", str(EXAMPLE), "-o", str(csv), "--csv", "-q"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(pd.read_csv(csv)) == 250


def test_cli_bad_spec_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {ROOT / 'plans' / 'example.yaml'}\naxes:\n  link.bandwidht: [1Gbit/s]\n")
    run = subprocess.run([sys.executable, "-m", "simkvm", "sweep", str(bad), "-o", str(tmp_path / "o.parquet")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown axis 'link.bandwidht'" in lines[0] and "Traceback" not in run.stderr


def test_parquet_metadata_holds_spec_seed_version_and_units(tmp_path):
    from simkvm import __version__
    from simkvm.sweep import read_metadata

    spec = {"base": copy.deepcopy(BASE), "samples": {"method": "lhs", "n": 12, "seed": 5},
            "axes": {"link.bandwidth": {"log": ["1Gbit/s", "10Gbit/s"]}, "vm.memory": ["4GiB", "8GiB"]}}
    out = tmp_path / "t.parquet"
    df = run_sweep(spec, output=out, workers=1, progress=False)
    meta = read_metadata(out)
    assert meta["seed"] == 5 and meta["simkvm_version"] == __version__
    assert meta["spec"]["samples"] == {"method": "lhs", "n": 12, "seed": 5}
    assert meta["spec"]["axes"]["link.bandwidth"]["interval"][:2] == pytest.approx([125e6, 1.25e9])
    assert meta["spec"]["axes"]["vm.memory"]["values"] == [4 * 2**30, 8 * 2**30]
    assert list(meta["columns"]) == list(df.columns)  # every column described, in order
    assert meta["columns"]["vm.memory_bytes"]["unit"] == "bytes"
    assert meta["columns"]["link.bandwidth_Bps"]["unit"] == "bytes/s"
    for col in ("normal_pages", "zero_pages", "iterations"):
        assert str(df[col].dtype) == "int64"


def test_interrupted_sweep_says_rerun_resumes_and_the_rerun_finishes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import yaml

    spec = tmp_path / "big.yaml"
    spec.write_text(yaml.safe_dump({"base": copy.deepcopy(BASE), "axes": {
        "workload.memory.dirty_rate": {"log": ["1MiB/s", "2GiB/s"], "num": 100},
        "link.bandwidth": {"log": ["100Mbit/s", "40Gbit/s"], "num": 100}}}))
    out = tmp_path / "big.parquet"
    cmd = [sys.executable, "-m", "simkvm", "sweep", str(spec), "-o", str(out), "--workers", "1", "--chunk", "100",
           "-q"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    parts = tmp_path / "big.parquet.parts"
    deadline = time.monotonic() + 240
    while not list(parts.glob("chunk-*[0-9].parquet")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the sweep finished before the interrupt reached it")
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err and str(parts) in err
    kept = len(list(parts.glob("chunk-*[0-9].parquet")))
    assert 1 <= kept < 100
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    import pandas as pd

    assert len(pd.read_parquet(out)) == 10000 and not parts.exists()
