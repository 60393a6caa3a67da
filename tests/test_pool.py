"""`simkvm campaign pool`: several campaigns' held-out figures, each with its own profile, and pooled.

Real data: a few held-out runs of two spent campaigns (v11 on QEMU 7.2, q10f on QEMU 10), copied into
small campaign directories so that each re-prediction stays short."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from simkvm.cli import main
from simkvm.validation.pool import campaign_name, pool
from simkvm.validation.report import report
from simkvm.validation.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "validation"
COUNTS = ("held_out_runs", "compared_runs", "verdict_runs", "near_boundary_runs", "service_interruption_runs")


def small_campaign(tmp: Path, source: str, n: int) -> Path:
    """The first ``n`` held-out runs of spent campaign ``source`` (and one calibration run) as campaign-<source>."""
    src = DATA / f"campaign-{source}"
    rows = RunStore(src).rows()
    pick = list(rows[rows["role"] == "validation"]["run_id"][:n]) + list(rows[rows["role"] == "calibration"]
                                                                         ["run_id"][:1])
    out = tmp / f"campaign-{source}"
    (out / "runs").mkdir(parents=True)
    for rid in pick:
        for f in (src / "runs").glob(f"{rid}.*"):
            shutil.copy(f, out / "runs" / f.name)
    return out


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pool")
    dirs = [small_campaign(tmp, "v11", 5), small_campaign(tmp, "q10f", 4)]
    return dirs, pool(dirs, profiles=str(ROOT / "profiles" / "testbed-{name}.yaml"), blind=True, jobs=2)


def _strip(m: dict, name: str) -> dict:
    return {k: ([x.removeprefix(f"{name}/") for x in v] if isinstance(v, list) else v) for k, v in m.items()}


def test_each_campaign_is_scored_as_its_report_scores_it(two):
    dirs, result = two
    for d in dirs:
        name = campaign_name(d)
        profile = str(ROOT / "profiles" / f"testbed-{name}.yaml")
        rep = report(d, profile, blind=True)
        got = result["campaigns"][name]
        assert got["profile"] == profile and got["metrics"] == rep["metrics"] and got["blind"] == rep["blind"]


def test_pooling_one_stack_gives_that_campaigns_figures(two):
    """v11 is the only QEMU 7.2 campaign, q10f the only QEMU 10 one: each stack's pool is that campaign."""
    _dirs, result = two
    assert set(result["pooled"]) == {"all", "qemu 7.2", "qemu 10.0"}
    for name, pool_name in (("v11", "qemu 7.2"), ("q10f", "qemu 10.0")):
        assert _strip(result["pooled"][pool_name], name) == result["campaigns"][name]["metrics"]
        blind = _strip(result["pooled_blind"][pool_name], name)
        assert {k: v for k, v in blind.items() if not k.startswith("checks_")} == {
            k: v for k, v in result["campaigns"][name]["blind"].items() if not k.startswith("checks_")}


def test_pooled_counts_are_the_sums(two):
    _dirs, result = two
    every = result["pooled"]["all"]
    for key in COUNTS:
        assert every[key] == sum(c["metrics"][key] for c in result["campaigns"].values())
        assert every[key] == result["pooled"]["qemu 7.2"][key] + result["pooled"]["qemu 10.0"][key]
    assert sorted(every["verdict_wrong"]) == sorted(f"{n}/{r}" for n, c in result["campaigns"].items()
                                                    for r in c["metrics"]["verdict_wrong"])
    shares = [(c["metrics"]["verdict_accuracy"], c["metrics"]["verdict_runs"]) for c in result["campaigns"].values()]
    assert every["verdict_accuracy"] == pytest.approx(sum(a * n for a, n in shares) / sum(n for _a, n in shares))


def test_pooling_a_single_campaign_through_the_cli_is_its_report(two, capsys):
    dirs, _ = two
    pattern = str(ROOT / "profiles" / "testbed-{name}.yaml")
    assert main(["campaign", "pool", str(dirs[1]), "--profiles", pattern, "--json", "-q"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert main(["campaign", "report", str(dirs[1]), "--profile", pattern.format(name="q10f"), "--json",
                 "--no-blind"]) == 0
    want = json.loads(capsys.readouterr().out)
    mine = _strip(got["pooled"]["all"], "q10f")
    assert {k: mine[k] for k in mine} == {k: want[k] for k in mine}
    assert got["campaigns"]["q10f"]["metrics"] == mine


def _lines(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_missing_profile_or_directory_is_one_line_and_exit_2(two, tmp_path, capsys):
    dirs, _ = two
    code, lines = _lines(["campaign", "pool", str(dirs[0]), "--profiles", str(tmp_path / "p-{name}.yaml")], capsys)
    assert code == 2 and len(lines) == 1 and "p-v11.yaml" in lines[0] and "--calibrate" in lines[0], lines
    code, lines = _lines(["campaign", "pool", str(dirs[0]), str(tmp_path / "campaign-none")], capsys)
    assert code == 2 and len(lines) == 1 and "campaign-none" in lines[0], lines
    code, lines = _lines(["campaign", "pool", str(dirs[0]), "--profiles", "profiles/{nme}.yaml"], capsys)
    assert code == 2 and len(lines) == 1 and "{name}" in lines[0], lines
    code, lines = _lines(["campaign", "pool", str(dirs[0]), str(dirs[0])], capsys)
    assert code == 2 and len(lines) == 1 and "once" in lines[0], lines


def test_calibrate_fits_each_campaign_into_outdir_and_scores_with_that(two, tmp_path, monkeypatch):
    """--calibrate: each campaign's profile is OUTDIR/NAME.profile.yaml, written by the calibration on that
    campaign (here a stand-in that writes the committed profile: the fit itself is test_campaign's)."""
    import simkvm.validation.calibrate as cal

    dirs, result = two
    fitted = []

    def fake(directory, output, **kw):
        name = campaign_name(directory)
        fitted.append((name, str(output)))
        shutil.copy(ROOT / "profiles" / f"testbed-{name}.yaml", output)

    monkeypatch.setattr(cal, "calibrate", fake)
    got = pool(dirs, calibrate_dir=tmp_path / "fits")
    assert fitted == [(n, str(tmp_path / "fits" / f"{n}.profile.yaml")) for n in ("v11", "q10f")]
    for name, c in got["campaigns"].items():
        assert c["profile"] == str(tmp_path / "fits" / f"{name}.profile.yaml")
        assert c["metrics"] == result["campaigns"][name]["metrics"]
