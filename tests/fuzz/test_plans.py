"""Generated plan files and flags through predict, plan and policies."""
from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fuzzkit
from catalogue import ALIAS_BOMB, BASE_PLAN as BASE_TEXT
import strategies as S

FUZZ = dict(derandomize=True, database=None, deadline=None, print_blob=True,
            suppress_health_check=list(HealthCheck))
_n = itertools.count()


def write(tmp: Path, content: str | bytes, suffix: str = ".yaml") -> str:
    path = tmp / f"in{next(_n)}{suffix}"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path.name


@settings(max_examples=fuzzkit.examples(600), **FUZZ)
@given(plan=S.plans(), flags=st.lists(st.sampled_from(["--json", "--compact", "--reference"]), unique=True,
                                      max_size=2))
@example(plan={**S.BASE_PLAN, "migration": {"max_iterations": float("nan")}}, flags=[])
@example(plan={**S.BASE_PLAN, "host": {"dirty_rate_factor": float("nan")}}, flags=[])
@example(plan={**S.BASE_PLAN, "vm": {"memory": "1GiB", "page_size": 0}}, flags=[])
@example(plan={**S.BASE_PLAN, "host": {"mirror_granularity": 0}}, flags=[])
@example(plan={**S.BASE_PLAN, "policy": {"name": "nova", "steps": "abc"}}, flags=[])
@example(plan={**S.BASE_PLAN, "policy": {"name": "nova", "steps": 10**9}}, flags=[])
@example(plan={**S.BASE_PLAN, "profile": "/etc"}, flags=[])
@example(plan={**S.BASE_PLAN, "profile": 5}, flags=[])
@example(plan={**S.BASE_PLAN, "vm": {"memory": "1GiB", "disks": {"size": "1GiB"}}}, flags=[])
@example(plan={**S.BASE_PLAN, "migration": {"max_downtime": 1e-20}}, flags=[])
@example(plan={"vm": {"memory": "1GiB"}, "workload": {"memory": {"model": "uniform", "dirty_rate": "1GiB/s",
                                                                 "wss": "512MiB"}},
               "link": {"bandwidth": "100Mbit/s"}, "migration": {"max_iterations": 0, "max_time": "1e9s"}}, flags=[])
@example(plan={**S.BASE_PLAN, "vm": {"memory": "1GiB", "wss_layout": [1] * 100_000}}, flags=[])
def test_plan_files(plan: dict, flags: list[str], fuzzdir: Path) -> None:
    tmp = fuzzdir
    fuzzkit.check(["predict", write(tmp, S.yaml_text(plan)), *flags], cwd=tmp, label="plan file")


@settings(max_examples=fuzzkit.examples(300), **FUZZ)
@given(raw=S.mangled_text())
@example(raw=b"vm:\n  memory: \xff\xfe4GiB\n")
@example(raw=("vm: " + "[" * 5000 + "]" * 5000).encode())
@example(raw=("vm: {memory: " + "9" * 5000 + "}").encode())
@example(raw=ALIAS_BOMB.encode())
def test_broken_plan_text(raw: bytes, fuzzdir: Path) -> None:
    tmp = fuzzdir
    fuzzkit.check(["predict", write(tmp, raw)], cwd=tmp, label="broken plan text")


@settings(max_examples=fuzzkit.examples(300), **FUZZ)
@given(flags=S.predict_flags(), with_file=st.booleans())
@example(flags=["--memory", "1GiB", "--disk-allocated", "1GiB"], with_file=False)
@example(flags=["--memory", "1GiB", "--bandwidth", "1e-300"], with_file=False)
@example(flags=["--memory", "1GiB", "--max-downtime", "1e-20"], with_file=False)
@example(flags=["--memory", "1GiB", "--profile", "/dev/zero"], with_file=False)
@example(flags=["--memory", "1GiB", "--plot", "/nonexistent/x.png"], with_file=False)
def test_predict_flags(flags: list[str], with_file: bool, fuzzdir: Path) -> None:
    tmp = fuzzdir
    argv = ["predict", *([write(tmp, BASE_TEXT)] if with_file else []), *flags]
    fuzzkit.check(argv, cwd=tmp, label="predict flags")


GRID_LIST = st.one_of(
    st.lists(S.flag_value("bandwidth"), min_size=1, max_size=3).map(",".join),
    st.sampled_from([",", "", "1Gbit/s,," , "nan", "1e-300B/s", ",".join(["1Gbit/s"] * 100_000)]))


@settings(max_examples=fuzzkit.examples(25), **FUZZ)
@given(flags=S.predict_flags(),
       extra=st.fixed_dictionaries({}, optional={
           "--bandwidths": GRID_LIST, "--downtimes": st.lists(S.flag_value("max_downtime"), min_size=1,
                                                              max_size=2).map(",".join),
           "--uncertainty": S.flag_value("zero_fraction"),
           "--samples": st.sampled_from(["0", "-1", "3", "1000000000", "x"]),
           "--seed": st.sampled_from(["-1", "0", str(2**70)]),
           "--max-total-time": S.flag_value("max_time"), "--max-bandwidth": S.flag_value("bandwidth"),
           "--max-allowed-downtime": S.flag_value("max_downtime")}))
@example(flags=["--memory", "1GiB"], extra={"--uncertainty": "20%", "--samples": "1000000000"})
@example(flags=["--memory", "1GiB"], extra={"--downtimes": "1e-20"})
def test_plan_command(flags: list[str], extra: dict[str, str], fuzzdir: Path) -> None:
    tmp = fuzzdir
    if "--uncertainty" in extra and "--samples" not in extra:
        extra["--samples"] = "5"
    argv = ["plan", *flags, *itertools.chain.from_iterable(extra.items()), "--json"]
    fuzzkit.check(argv, cwd=tmp, ok_cpu_s=30, label="plan flags")


@settings(max_examples=fuzzkit.examples(25), **FUZZ)
@given(plan=S.plans(), only=st.one_of(st.none(), st.lists(st.sampled_from(S.POLICY_NAMES + ["", " "]),
                                                            max_size=3).map(",".join)))
def test_policies_command(plan: dict, only: str | None, fuzzdir: Path) -> None:
    tmp = fuzzdir
    argv = ["policies", write(tmp, S.yaml_text(plan)), "--json", *(["--only", only] if only is not None else [])]
    fuzzkit.check(argv, cwd=tmp, ok_cpu_s=30, label="policies")
