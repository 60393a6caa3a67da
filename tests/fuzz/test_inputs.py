"""Generated sweep specs, campaign files, profiles, result files and the real-world commands' arguments."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

import fuzzkit
import strategies as S
from test_plans import FUZZ, write

import simkvm

ROOT = Path(__file__).resolve().parents[2]
_dir = itertools.count()


def fresh(fuzzdir: Path) -> Path:
    d = fuzzdir / f"case{next(_dir)}"
    d.mkdir()
    return d


# ------------------------------------------------------------------ sweep specs
AXIS_KEYS = ["link.bandwidth", "vm.memory", "migration.max_downtime", "migration.max_iterations",
             "workload.memory.dirty_rate", "vm.zero_fraction", "vm.disks.0.size", "vm.disks.5.size", "policy.name",
             "aids.multifd.channels", "host.page_cost", "nope", "vm", "vm.disks", "link.bandwidth.x", "vm.zero_layout"]


def axis_value(key: str) -> st.SearchStrategy[Any]:
    leaf = key.rsplit(".", 1)[-1]
    small = st.lists(S.value_for(leaf), min_size=1, max_size=3)
    ends = st.lists(S.value_for(leaf), min_size=2, max_size=2)
    # Valid grids stay tiny (a few scenarios): a large valid sweep is long work, not a hang to find.
    count = st.one_of(st.integers(min_value=1, max_value=4), st.sampled_from(
        [0, -1, 1.5, 10**12, 10**30, float("nan"), "abc", True]))
    step = st.sampled_from([0, -1, 1e300, 5e-324, float("nan"), float("inf"), "abc", "", None, [1], True, "1e300",
                            "0s", "1e-300B/s", "1e300GiB", S.BIGINT])
    ranged = st.one_of(
        st.builds(lambda kind, e, c: {kind: e, "num": c}, st.sampled_from(["range", "log"]), ends, count),
        st.builds(lambda kind, e, c: {kind: e, "step": c}, st.sampled_from(["range", "log"]), ends, step))
    return st.one_of(small, ranged, S.hostile())


@st.composite
def sweep_specs(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(AXIS_KEYS), min_size=0, max_size=3, unique=True))
    spec: dict[str, Any] = {"base": draw(st.one_of(st.just("base.yaml"), st.just(S.BASE_PLAN), S.plans(),
                                                   st.sampled_from(["/etc", "/dev/zero", "nope.yaml", 5]))),
                            "axes": {k: draw(axis_value(k)) for k in keys}}
    if draw(st.booleans()):
        spec["samples"] = draw(st.fixed_dictionaries({}, optional={
            "method": st.sampled_from(["grid", "lhs", "random", "sobol"]),
            "n": st.one_of(st.integers(min_value=1, max_value=20), st.sampled_from([0, -1, 10**12, 2.5, "x"])),
            "seed": st.one_of(st.integers(min_value=-1, max_value=2**70), S.hostile())}))
    if draw(st.integers(0, 5)) == 0:
        spec["chunk"] = draw(st.one_of(st.integers(min_value=-1, max_value=10**12), S.hostile()))
    return spec


@settings(max_examples=fuzzkit.examples(150), **FUZZ)
@given(spec=sweep_specs(), csv=st.booleans())
@example(spec={"base": "base.yaml", "axes": {"migration.max_time": {"range": ["1ns", "1000s"], "step": "1ns"}}},
         csv=True)
@example(spec={"base": "base.yaml", "axes": {"link.bandwidth": {"range": ["1Mbit/s", "10Gbit/s"], "num": 100_000},
                                             "vm.memory": {"range": ["1GiB", "2GiB"], "num": 100_000}}}, csv=True)
@example(spec={"base": "base.yaml", "axes": {"link.bandwidth": {"log": ["1Mbit/s", "10Gbit/s"], "num": 10**12}}},
         csv=True)
def test_sweep_specs(spec: dict, csv: bool, fuzzdir: Path) -> None:
    d = fresh(fuzzdir)
    (d / "base.yaml").write_text(S.yaml_text(S.BASE_PLAN))
    argv = ["sweep", write(d, S.yaml_text(spec)), "-o", "out.csv" if csv else "out.parquet", "-q", "--workers", "1"]
    fuzzkit.check(argv, cwd=d, label="sweep spec")


# ------------------------------------------------------------------ campaigns
CAMPAIGN_KEYS = ["id", "role", "repeats", "memory", "disk", "dirty_rate", "wss", "pattern", "zero_fraction",
                 "disk_write_rate", "disk_wss", "io_size", "bandwidth", "max_downtime", "max_time", "max_iterations",
                 "storage", "note", "bogus"]
GOOD_SCENARIO = {"id": "s1", "memory": "256MiB", "dirty_rate": "4MiB/s", "wss": "32MiB", "bandwidth": "32MiB/s"}


@st.composite
def campaigns(draw: st.DrawFn) -> Any:
    scenarios = []
    for i in range(draw(st.integers(min_value=1, max_value=3))):
        s = dict(GOOD_SCENARIO, id=f"s{i}")
        for key in draw(st.lists(st.sampled_from(CAMPAIGN_KEYS), max_size=3)):
            s[key] = draw(S.value_for(key))
        scenarios.append(s)
    data: dict[str, Any] = {"name": "fuzz", "scenarios": scenarios}
    if draw(st.booleans()):
        data["defaults"] = {k: draw(S.value_for(k)) for k in draw(st.lists(st.sampled_from(CAMPAIGN_KEYS[1:]),
                                                                         max_size=2))}
    if draw(st.integers(0, 6)) == 0:
        return draw(S.hostile())
    if draw(st.integers(0, 6)) == 0:
        data[draw(st.sampled_from(["scenarios", "defaults", "name", "other"]))] = draw(S.hostile())
    return data


@settings(max_examples=fuzzkit.examples(200), **FUZZ)
@given(campaign=campaigns(), only=st.one_of(st.none(), st.sampled_from(["s0", ",", "s0,zz", "x" * 1000])))
@example(campaign={"scenarios": [{"id": "a", "repeats": 10**9}]}, only=None)
@example(campaign={"scenarios": [{"id": "a", "memory": float("nan")}]}, only=None)
def test_campaign_files(campaign: Any, only: str | None, fuzzdir: Path) -> None:
    d = fresh(fuzzdir)
    argv = ["campaign", "run", write(d, S.yaml_text(campaign)), "-o", "out", "-q",
            *(["--only", only] if only is not None else [])]
    fuzzkit.check(argv, cwd=d, label="campaign file")


# ------------------------------------------------------------------ profiles
@st.composite
def profiles(draw: st.DrawFn) -> Any:
    host_keys = list(simkvm.Plan().to_dict()["host"]) + ["bogus"]
    prof: dict[str, Any] = {}
    if draw(st.booleans()):
        prof["host"] = {k: draw(S.value_for(k)) for k in draw(st.lists(st.sampled_from(host_keys), max_size=3))}
    if draw(st.booleans()):
        prof["link"] = {k: draw(S.value_for(k)) for k in draw(st.lists(st.sampled_from(
            ["capacity", "efficiency", "bogus"]), max_size=2))}
    if draw(st.booleans()):
        prof["guest"] = {k: draw(S.value_for(k)) for k in draw(st.lists(st.sampled_from(
            ["os_nonzero", "background_dirty_rate", "background_wss", "background_hot"]), max_size=3))}
    if draw(st.booleans()):
        prof["network"] = {"reconvergence": draw(S.value_for("reconvergence"))}
    if draw(st.integers(0, 5)) == 0:
        prof[draw(st.sampled_from(["host", "link", "guest", "network", "fit", "bogus"]))] = draw(S.hostile())
    if draw(st.integers(0, 8)) == 0:
        return draw(S.hostile())
    return prof


@settings(max_examples=fuzzkit.examples(150), **FUZZ)
@given(profile=profiles(), inline=st.booleans())
@example(profile={"host": {"dirty_rate_factor": float("nan")}}, inline=False)
def test_profiles(profile: Any, inline: bool, fuzzdir: Path) -> None:
    d = fresh(fuzzdir)
    if inline:
        plan = {**S.BASE_PLAN, "profile": profile}
        argv = ["predict", write(d, S.yaml_text(plan))]
    else:
        argv = ["predict", "--memory", "1GiB", "--dirty-rate", "10MiB/s", "--wss", "100MiB",
                "--profile", write(d, S.yaml_text(profile))]
    fuzzkit.check(argv, cwd=d, label="profile")


# ------------------------------------------------------------------ result files for compare
def _result_json() -> dict[str, Any]:
    plan = simkvm.Plan.from_dict({**S.BASE_PLAN, "name": "r"})
    return json.loads(json.dumps(simkvm.simulate(plan).to_dict()))


RESULT = _result_json()
RESULT_KEYS = sorted(RESULT) + ["rounds.0", "timeline.0", "actions.0", "rounds.0.memory_remaining", "bogus"]


@st.composite
def results(draw: st.DrawFn) -> Any:
    data = json.loads(json.dumps(RESULT))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        path = draw(st.sampled_from(RESULT_KEYS))
        S._set(data, path, draw(S.hostile()))
    if draw(st.integers(0, 6)) == 0:
        data["actions"] = [{"time_s": draw(S.hostile()), "action": draw(st.sampled_from(
            ["set_downtime", "throttle", "x"])), "value": draw(S.hostile())}]
    if draw(st.integers(0, 8)) == 0:
        return draw(S.hostile())
    return data


def _json(x: Any) -> str:
    return json.dumps(x, allow_nan=True, default=str).replace(f'"{S.BIGINT}"', S.BIG_DIGITS)


@settings(max_examples=fuzzkit.examples(200), **FUZZ)
@given(pred=results(), meas=results(), combined=st.booleans(), plot=st.integers(0, 9))
def test_compare_inputs(pred: Any, meas: Any, combined: bool, plot: int, fuzzdir: Path) -> None:
    d = fresh(fuzzdir)
    if isinstance(meas, dict):
        meas = {**meas, "source": "measured"}
    if combined:
        argv = ["compare", write(d, _json({"predicted": pred, "measured": meas}), ".json")]
    else:
        argv = ["compare", write(d, _json(pred), ".json"), write(d, _json(meas), ".json")]
    if plot == 0:
        argv += ["--plot", "x.png"]  # a figure costs ~0.5 s: one input in ten
    fuzzkit.check(argv + ["--json"], cwd=d, label="compare")


# ------------------------------------------------------------------ migrate, preflight, testbed guest arguments
HOSTS = st.sampled_from(["a", "b", "c", "", "qemu+tcp://127.0.0.1:1/system", "test:///default", "x" * 300])


def text_arg(key: str) -> st.SearchStrategy[str]:
    return S.flag_value(key).map(lambda s: s.replace("\x00", "") or " ")


@settings(max_examples=fuzzkit.examples(120), **FUZZ)
@given(plan=S.plans(), src=HOSTS, dst=HOSTS, domain=st.sampled_from(["d", "", "a/b", "x" * 500]),
       timeout=st.one_of(st.none(), text_arg("max_time")), predict=st.booleans())
def test_migrate_arguments(plan: dict, src: str, dst: str, domain: str, timeout: str | None, predict: bool,
                           fuzzdir: Path) -> None:
    tmp = fuzzdir
    argv = ["migrate", write(tmp, S.yaml_text(plan)), "--domain", domain, "--src", src, "--dst", dst,
            *(["--timeout", timeout] if timeout is not None else []), *(["--predict"] if predict else [])]
    fuzzkit.check(argv, cwd=tmp, label="migrate arguments")


@settings(max_examples=fuzzkit.examples(80), **FUZZ)
@given(src=HOSTS, dst=HOSTS, opts=st.fixed_dictionaries({}, optional={
    "--max-downtime": text_arg("max_downtime"), "--bandwidth": text_arg("bandwidth"),
    "--max-total-time": text_arg("max_time"),
    "--periods": st.one_of(st.lists(text_arg("duration"), min_size=1, max_size=3).map(",".join),
                           st.sampled_from([",", "1e-9", "1e9", "0"])),
    "--plan": st.sampled_from(["p.yaml", "/dev/zero", "/", "nope.yaml"])}))
def test_preflight_arguments(src: str, dst: str, opts: dict[str, str], fuzzdir: Path) -> None:
    tmp = fuzzdir
    (tmp / "p.yaml").write_text(S.yaml_text(S.BASE_PLAN))
    argv = ["preflight", "--domain", "d", "--src", src, "--dst", dst, *itertools.chain.from_iterable(opts.items())]
    fuzzkit.check(argv, cwd=tmp, label="preflight arguments")


GUEST_FLAGS = {"--memory": "memory", "--disk": "size", "--dirty-rate": "dirty_rate", "--wss": "wss",
               "--zero-fraction": "zero_fraction", "--disk-write-rate": "disk_write_rate", "--disk-wss": "disk_wss",
               "--io-size": "io_size", "--timeout": "timeout"}


@settings(max_examples=fuzzkit.examples(100), **FUZZ)
@given(name=st.sampled_from(["g", "", "../x", "a b", "x" * 300, "-"]),
       opts=st.dictionaries(st.sampled_from(sorted(GUEST_FLAGS)), st.just(None), max_size=4), data=st.data())
def test_testbed_guest_arguments(name: str, opts: dict, data: st.DataObject, fuzzdir: Path) -> None:
    argv = ["testbed", "guest", name, "--no-wait"]
    for flag in opts:
        argv += [flag, data.draw(text_arg(GUEST_FLAGS[flag]), label=flag)]
    fuzzkit.check(argv, cwd=fuzzdir, label="testbed guest arguments")


# ------------------------------------------------------------------ campaign report / calibrate directories
@settings(max_examples=fuzzkit.examples(40), **FUZZ)
@given(csv=st.one_of(st.just("run_id,role,scenario\ns1-r1,calibration,s1\n"), st.text(max_size=200),
                     st.binary(max_size=100)),
       row=st.one_of(st.just(None), st.text(max_size=100), st.just(json.dumps({"run_id": "s1-r1"}))),
       command=st.sampled_from(["calibrate", "report", "pool"]))
def test_campaign_directories(csv: str | bytes, row: str | None, command: str, fuzzdir: Path) -> None:
    d = fresh(fuzzdir)
    (d / "runs.csv").write_bytes(csv if isinstance(csv, bytes) else csv.encode())
    if row is not None:
        (d / "runs").mkdir()
        (d / "runs" / "s1-r1.row.json").write_text(row)
    argv = {"calibrate": ["calibrate", ".", "-o", "prof.yaml", "--no-search"], "report": ["campaign", "report", "."],
            "pool": ["campaign", "pool", ".", "-q", "--profiles", str(ROOT / "profiles" / "testbed-v11.yaml")]}[command]
    fuzzkit.check(argv, cwd=d, label="campaign directory")

