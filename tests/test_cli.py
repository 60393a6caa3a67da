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
    """plans/version-testbed.yaml: QEMU 7.2 gives up at 52 s, 10.0 (the 5 s sync timer) converges."""
    old, new = run("predict", "plans/version-testbed.yaml", "--json"), \
        run("predict", "plans/version-testbed.yaml", "--qemu", "10.0", "--json")
    a, b = json.loads(old.stdout), json.loads(new.stdout)
    assert (a["meta"]["qemu"], b["meta"]["qemu"]) == ("7.2", "10.0")
    assert not a["converged"] and b["converged"] and b["total_time_s"] < 52 and b["iterations"] > a["iterations"]
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


def main_lines(argv: list[str], capsys) -> tuple[int, list[str]]:
    """simkvm ARGV in this process: exit code and stderr's lines."""
    from simkvm.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    return code, capsys.readouterr().err.strip().splitlines()


PLAN_WITH_VCPUS = "name: v\nvm: {{memory: 1GiB, vcpus: {}}}\nlink: {{bandwidth: 1Gbit/s}}\n"


@pytest.mark.parametrize("vcpus", ["0", "-4", "'-4'", "-4.0", "0.5"])
@pytest.mark.parametrize("command", [
    ["predict", "{plan}"], ["plan", "{plan}", "--json"], ["policies", "{plan}"],
    ["migrate", "{plan}", "--domain", "vm", "--src", "qemu:///nowhere-a", "--dst", "qemu:///nowhere-b"],
    ["sweep", "{sweep}", "-o", "{tmp}/out.csv", "-q"],
])
def test_vcpu_counts_below_one_are_refused(tmp_path, capsys, command, vcpus):
    """A vCPU count of 0 or -4 is refused in one line with exit 2 wherever a plan enters (issue 10,
    defect 8); no command takes vCPUs as a flag. A migration never connects to either host."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN_WITH_VCPUS.format(vcpus))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: plan.yaml\naxes:\n  link.bandwidth: [1Gbit/s, 2Gbit/s]\n")
    argv = [a.format(plan=plan, sweep=sweep, tmp=tmp_path) for a in command]
    code, lines = main_lines(argv, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert "vm.vcpus" in lines[0] and "Traceback" not in lines[0]


def test_a_vcpu_axis_below_one_marks_its_scenarios_invalid(tmp_path, capsys):
    """In a sweep each grid point is a plan: vcpus 0 and -4 are invalid rows (with the reason), 2 is run."""
    import pandas as pd

    spec = tmp_path / "sweep.yaml"
    spec.write_text("base: {vm: {memory: 1GiB}, link: {bandwidth: 1Gbit/s}}\naxes:\n  vm.vcpus: [0, -4, 2]\n")
    code, _ = main_lines(["sweep", str(spec), "-o", str(tmp_path / "out.csv"), "-q", "--workers", "1"], capsys)
    assert code == 0
    table = pd.read_csv(tmp_path / "out.csv").set_index("vm.vcpus")
    assert list(table.loc[[0, -4], "outcome"]) == ["invalid", "invalid"]
    assert "vm.vcpus must be >= 1" in table.loc[0, "reason"]
    assert table.loc[2, "outcome"] != "invalid"


def test_a_warning_never_adds_a_line_to_a_refusal(tmp_path, capsys):
    """Warnings are held until the command ends: printed after a result, dropped with a refusal (exit 2 is
    one line). The profile below was calibrated on QEMU 7.2, the plan asks for 9.0: a warning."""
    from pathlib import Path

    profile = Path(__file__).resolve().parents[1] / "profiles" / "testbed-v5.yaml"
    plan = tmp_path / "plan.yaml"
    base = f"vm: {{memory: 1GiB}}\nhost: {{qemu: '9.0'}}\nprofile: {profile}\nlink: {{bandwidth: 1Gbit/s}}\n"
    plan.write_text(base)
    code, lines = main_lines(["predict", str(plan), "--json"], capsys)
    assert code == 0 and len(lines) == 1 and "warning: the profile was calibrated on QEMU 7.2" in lines[0], lines
    for bad in (["--memory", "0"], ["--max-downtime", "0s"]):
        code, lines = main_lines(["predict", str(plan), *bad], capsys)
        assert code == 2 and len(lines) == 1 and "error:" in lines[0], lines
    plan.write_text(base.replace("memory: 1GiB", "memory: 1GiB, vcpus: 0"))
    code, lines = main_lines(["predict", str(plan)], capsys)
    assert code == 2 and len(lines) == 1 and "vm.vcpus" in lines[0], lines


def test_an_invalid_choice_quoting_a_huge_value_is_cut(capsys):
    """argparse quotes an invalid choice whole: a 10,000-character value is cut like simkvm's own messages."""
    code, lines = main_lines(["predict", "--storage", "x" * 10_000], capsys)
    assert code == 2 and len(lines) == 1 and len(lines[0]) < 700 and "characters in all" in lines[0], lines


def test_a_reader_that_leaves_early_is_not_a_traceback(tmp_path):
    """`simkvm predict ... | head -1`: the closed pipe ends the command quietly (1.1 MB of JSON, more than
    a pipe holds)."""
    proc = subprocess.run(f"{sys.executable} -m simkvm predict plans/nonconverging.yaml --json --max-iterations 1000 "
                          "--max-time 100h | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
