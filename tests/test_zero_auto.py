"""``vm.zero_fraction: auto``: the planner's zero share (half of RAM, never more than the working set and
the guest OS leave), resolved when a plan is loaded, the same in ``simkvm predict`` and the campaign
report's blind plans."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simkvm.cli import main
from simkvm.guestos import kernel_free_reserve_bytes
from simkvm.load import load_plan
from simkvm.model.errors import PlanError
from simkvm.model.plan import Plan
from simkvm.sim import simulate
from simkvm.validation.calibrate import write_profile

MiB = 2**20
PAGE = 4096


def rule(memory_bytes: float, written_bytes: float, os_nonzero: float | None, kernel_reserve: bool) -> float:
    """The rule from its definition (README, "Plan file"), written out here: the testbed guest's kernel
    at its measured size (used 13.4 MiB + 4.52 % of RAM; MemTotal = RAM - 45.6 MiB - 1.73 %), the
    working set in whole pages, the profile's residual (less the kernel's free-page reserve when the
    profile says so, or when there is no residual), and at most half of RAM."""
    m = memory_bytes / MiB
    used = (13.4 + 0.0452 * m) * MiB
    hidden = (45.6 + 0.0173 * m) * MiB
    reserve = kernel_reserve if os_nonzero is not None else True
    residual = (os_nonzero or 0.0) - (kernel_free_reserve_bytes(memory_bytes) if reserve else 0.0)
    nonzero = math.ceil(written_bytes / PAGE) * PAGE + used + hidden + residual
    return min(0.5, max(0.0, 1.0 - nonzero / memory_bytes))


@st.composite
def plan_dicts(draw) -> tuple[dict, float]:
    """A plan with ``auto`` and the bytes its workload wrote."""
    memory = draw(st.integers(min_value=256, max_value=4096)) * MiB
    model = draw(st.sampled_from(["idle", "uniform", "sequential", "hotcold"]))
    share = draw(st.floats(0.001, 0.95))
    if model == "hotcold":
        hot, cold = share * memory * 0.2, share * memory * 0.8
        mem = {"model": "hotcold", "sets": [{"wss": hot, "dirty_rate": 20 * MiB}, {"wss": cold, "dirty_rate": MiB}]}
        written = hot + cold
    else:
        written = share * memory
        mem = {"model": model, "wss": written}
        if model != "idle":
            mem["dirty_rate"] = draw(st.floats(0.0, 64.0)) * MiB
    plan = {"name": "auto", "vm": {"memory": memory, "zero_fraction": "auto"}, "workload": {"memory": mem},
            "link": {"bandwidth": draw(st.floats(32.0, 256.0)) * MiB},
            "migration": {"max_downtime": "300ms", "max_time": "60s"}}
    return plan, written


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(plan_dicts(), st.one_of(st.none(), st.floats(-32.0, 64.0)), st.booleans())
def test_auto_predicts_what_the_rules_number_predicts(tmp_path, drawn, os_nonzero_mib, kernel_reserve):
    """The property: a plan with ``auto`` predicts exactly what the same plan with the rule's number does,
    the number computed here from the rule's definition (with and without a profile's guest section)."""
    data, written = drawn
    if os_nonzero_mib is not None:
        profile = tmp_path / f"p{os_nonzero_mib!r}{kernel_reserve}.yaml"
        write_profile(profile, {"host": {}, "guest": {"os_nonzero": os_nonzero_mib * MiB,
                                                      "kernel_reserve": kernel_reserve}})
        data = {**data, "profile": str(profile)}
    share = rule(data["vm"]["memory"], written, None if os_nonzero_mib is None else os_nonzero_mib * MiB,
                 kernel_reserve)
    auto = load_plan(data)
    number = load_plan({**data, "vm": {**data["vm"], "zero_fraction": share}})
    assert auto.vm.zero_fraction == pytest.approx(share, rel=1e-12, abs=1e-12)
    assert auto == number.with_(**{"vm.zero_fraction": auto.vm.zero_fraction})
    a = json.dumps(simulate(auto).to_dict(), sort_keys=True, default=str)
    b = json.dumps(simulate(number).to_dict(), sort_keys=True, default=str)
    if auto.vm.zero_fraction == number.vm.zero_fraction:
        assert a == b
    else:  # the rule's number and the loader's may differ in the last bit of a float; the predictions not
        ra, rb = simulate(auto), simulate(number)
        assert ra.iterations == rb.iterations and ra.converged == rb.converged
        assert ra.total_time_s == pytest.approx(rb.total_time_s, rel=1e-9)


def test_the_share_is_half_until_the_working_set_and_the_os_fill_the_other_half():
    mem = 2048 * MiB
    shares = [load_plan({"vm": {"memory": mem, "zero_fraction": "auto"},
                         "workload": {"memory": {"model": "idle", "wss": k * mem / 32}}}).vm.zero_fraction
              for k in range(33)]
    assert shares[0] == 0.5 and shares[-1] == 0.0
    assert all(a >= b for a, b in zip(shares, shares[1:]))
    assert shares[15] < 0.5  # 15/32 of RAM written plus the guest OS: more than half is not zero


def test_what_a_workload_wrote():
    def written(mem: dict) -> float:
        return Plan.from_dict({"vm": {"memory": "4GiB"}, "workload": {"memory": mem}}).workload.memory.working_set_bytes()

    assert written({"model": "idle"}) == 0.0
    assert written({"model": "idle", "wss": "1GiB"}) == 2**30
    assert written({"model": "sequential", "wss": "1GiB", "dirty_rate": "10MiB/s"}) == 2**30
    assert written({"model": "hotcold", "sets": [{"wss": "256MiB", "dirty_rate": "1MiB/s"},
                                                 {"wss": "1GiB", "dirty_rate": "1MiB/s"}]}) == 1280 * MiB
    assert written({"model": "curve", "points": [[1, "8MiB"], [4, "120MiB"]]}) == 120 * MiB
    assert written({"model": "curve", "wss": "2GiB", "points": [[1, "8MiB"], [4, "120MiB"]]}) == 2**31


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err.strip().splitlines()


def test_predict_shows_what_auto_resolved_to(tmp_path, capsys):
    args = ["predict", "--memory", "1GiB", "--wss", "768MiB", "--dirty-rate", "8MiB/s", "--bandwidth", "64MiB/s",
            "--zero-fraction", "auto"]
    code, out, _ = _run([*args, "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    share = rule(2**30, 768 * MiB, None, False)
    assert res["zero_fraction_auto"]["zero_fraction"] == pytest.approx(share)
    assert res["plan"]["vm"]["zero_fraction"] == pytest.approx(share)
    assert res["zero_fraction_auto"]["working_set_bytes"] == 768 * MiB
    code, out, _ = _run(args, capsys)
    assert code == 0 and f"zero pages (vm.zero_fraction: auto): {100 * share:.1f} % of RAM" in out
    code, out, _ = _run([*args[:-2], "--zero-fraction", "0.3"], capsys)
    assert code == 0 and "auto" not in out
    code, out, _ = _run([*args[:-2], "--zero-fraction", "0.3", "--json"], capsys)
    assert "zero_fraction_auto" not in json.loads(out)


@pytest.mark.parametrize("bad", ["autp", "Auto", "auto%", "", "1.5", "-0.1"])
def test_a_bad_zero_share_is_one_line_and_exit_2(capsys, bad):
    code, _, lines = _run(["predict", "--memory", "1GiB", "--zero-fraction", bad], capsys)
    assert code == 2 and len(lines) == 1 and "vm.zero_fraction" in lines[0], lines
    if bad in ("autp", "Auto", "auto%", ""):
        assert "or auto" in lines[0]


def test_an_idle_working_set_larger_than_ram_is_refused(capsys):
    code, _, lines = _run(["predict", "--memory", "1GiB", "--wss", "2GiB", "--pattern", "uniform",
                           "--zero-fraction", "auto"], capsys)
    assert code == 2 and len(lines) == 1
    with pytest.raises(PlanError, match="idle workload"):
        load_plan({"vm": {"memory": "1GiB", "zero_fraction": "auto"}, "workload": {"memory": {"wss": "2GiB"}}})


def test_auto_is_the_loaders_word_not_the_models():
    """Plan.from_dict and Plan.with_ have no profile to read: they say where auto is understood."""
    with pytest.raises(PlanError, match="resolved where a plan is loaded"):
        Plan.from_dict({"vm": {"zero_fraction": "auto"}})
    with pytest.raises(PlanError, match="resolved where a plan is loaded"):
        Plan().with_(**{"vm.zero_fraction": "auto"})


def test_the_schema_takes_auto_and_no_other_word():
    import jsonschema

    from simkvm.schema import plan_schema

    schema = plan_schema()
    jsonschema.validate({"vm": {"zero_fraction": "auto"}}, schema)
    jsonschema.validate({"vm": {"zero_fraction": "30%"}}, schema)
    for bad in ("Auto", "half", 1.5):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"vm": {"zero_fraction": bad}}, schema)
