"""The CLI: JSON schema of `predict`, and bad input -> one line, exit 2, no traceback."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

REQUIRED = ("converged", "reason", "total_time_s", "downtime_s", "service_interruption_s",
            "ram_transferred_bytes", "disk_transferred_bytes", "iterations", "rounds")


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simkvm", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_predict_flags_json_has_the_schema():
    out = run("predict", "--memory", "4GiB", "--dirty-rate", "100MiB/s", "--wss", "1GiB", "--bandwidth",
              "1Gbit/s", "--max-downtime", "300ms", "--disk", "20GiB", "--disk-write-rate", "5MiB/s",
              "--zero-fraction", "0.3", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in REQUIRED:
        assert key in data
    assert isinstance(data["converged"], bool) and isinstance(data["iterations"], int)
    assert len(data["rounds"]) == data["iterations"]
    for key in ("memory_iteration", "time_elapsed_s", "memory_processed", "memory_remaining",
                "memory_dirty_rate", "memory_bps", "disk_processed", "disk_remaining"):
        assert key in data["rounds"][0]


def test_predict_plan_file_human_output():
    out = run("predict", "plans/example.yaml")
    assert out.returncode == 0, out.stderr
    assert "verdict (predicted)" in out.stdout and "iter" in out.stdout


def test_qemu_flag_picks_the_migration_loop_and_the_version_plan_flips():
    """plans/version-testbed.yaml: QEMU 7.2 gives up at 48 s, 10.0 (the 5 s sync timer) converges."""
    old, new = run("predict", "plans/version-testbed.yaml", "--json"), \
        run("predict", "plans/version-testbed.yaml", "--qemu", "10.0", "--json")
    a, b = json.loads(old.stdout), json.loads(new.stdout)
    assert (a["meta"]["qemu"], b["meta"]["qemu"]) == ("7.2", "10.0")
    assert not a["converged"] and b["converged"] and b["total_time_s"] < 48 and b["iterations"] > a["iterations"]
    assert "calibrated on QEMU 7.2" in new.stderr  # the profile's version, said once
    assert "QEMU 10.0 migration loop" in run("predict", "plans/version-testbed.yaml", "--qemu", "10").stdout
    bad = run("predict", "plans/version-testbed.yaml", "--qemu", "6.2")
    assert bad.returncode == 2 and "host.qemu must be one of" in bad.stderr


def test_flags_override_the_file_and_json_agrees_with_api():
    from simkvm import load_plan, simulate

    out = run("predict", "plans/example.yaml", "--bandwidth", "25Gbit/s", "--json")
    data = json.loads(out.stdout)
    expected = simulate(load_plan("plans/example.yaml").with_(**{"link.bandwidth": "25Gbit/s"}))
    assert data["total_time_s"] == pytest.approx(expected.total_time_s)
    assert data["iterations"] == expected.iterations


@pytest.mark.parametrize("args,needle", [
    (["--memory", "4GiBx"], "unknown size unit"),
    (["--memory=-4GiB"], "must not be negative"),
    (["--memory", "4GiB", "--bandwidth", "0Mbit/s"], "link.bandwidth must be > 0"),
    (["--memory", "4GiB", "--wss", "8GiB", "--dirty-rate", "1MiB/s"], "larger than vm.memory"),
    (["--memory", "4GiB", "--max-downtime", "fast"], "max_downtime"),
    (["--memory", "4GiB", "--bandwidth", "100MiB"], "rate"),
    (["no-such-plan.yaml"], "does not exist"),
    ([], "give a plan file"),
])
def test_bad_input_is_one_line_exit_2(args, needle):
    out = run("predict", *args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert needle in out.stderr


def test_unknown_key_in_plan_file(tmp_path):
    plan = tmp_path / "p.yaml"
    plan.write_text("vm:\n  memory: 4GiB\n  memroy_typo: 1\n")
    out = run("predict", str(plan))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "unknown key 'vm.memroy_typo'" in out.stderr


def test_invalid_yaml(tmp_path):
    plan = tmp_path / "p.yaml"
    plan.write_text("vm: [unclosed\n")
    out = run("predict", str(plan))
    assert out.returncode == 2 and "not valid YAML" in out.stderr
