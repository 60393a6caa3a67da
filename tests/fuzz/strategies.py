"""Hypothesis strategies for everything a user can hand simkvm: plan files, flags, specs, campaigns, results.

Each generator mixes plausible values (a number with the unit the key takes, so
many inputs get past validation and reach the simulator) with hostile ones
(NaN, infinities, 1e-300, 5000-digit numbers, wrong types, huge lists), and
mutates a valid document rather than building one from nothing, so that most
inputs are wrong in one or two places, as a user's are.
"""
from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

import simkvm

BASE_PLAN: dict[str, Any] = {
    "name": "fuzz",
    "vm": {"memory": "1GiB", "zero_fraction": 0.2, "disks": [{"size": "1GiB", "allocated": "512MiB"}]},
    "workload": {"memory": {"model": "uniform", "dirty_rate": "20MiB/s", "wss": "256MiB"},
                 "disk": {"write_rate": "1MiB/s", "wss": "64MiB"}},
    "link": {"bandwidth": "1Gbit/s"},
    "migration": {"max_downtime": "300ms", "max_time": "120s"},
}

SIZE_KEYS = {"memory", "wss", "size", "allocated", "page_size", "io_size", "cache_size", "device_state", "page_header",
             "zero_page", "mirror_granularity", "free_memory", "free_disk", "background_wss", "background_hot",
             "os_nonzero", "disk", "disk_wss"}
RATE_KEYS = {"bandwidth", "capacity", "dirty_rate", "write_rate", "throughput", "vcpu_rate", "disk_bandwidth",
             "avail_switchover_bandwidth", "channel_throughput", "background_dirty_rate", "disk_write_rate"}
FRACTION_KEYS = {"zero_fraction", "initial", "increment", "max", "trigger_threshold", "delta", "efficiency", "ratio",
                 "cpu_demand", "scale", "dirty_rate_factor"}
INT_KEYS = {"vcpus", "max_iterations", "channels", "after_iterations", "announce_rounds", "learn_after_announces",
            "repeats", "steps"}
CHOICES = {
    "model": ["idle", "uniform", "sequential", "hotcold", "curve", "zipf"],
    "storage": ["non_shared_disk", "non_shared_inc", "shared", "nfs"],
    "mirror_mode": ["background", "write_blocking", "sync"],
    "method": ["none", "zlib", "zstd", "lz4", "grid", "lhs", "random"],
    "pattern": ["uniform", "sequential", "random", "seq"],
    "zero_layout": ["spread", "start", "end", "middle"],
    "wss_layout": ["spread", "start", "end"],
    "timeout_action": ["abort", "force_complete", "explode"],
    "role": ["calibration", "validation", "training"],
}

SIZE_UNITS = ["", "B", "KiB", "MiB", "GiB", "TiB", "PiB", "kB", "MB", "GB", "TB", "k", "Gi", "EiB", "bit"]
RATE_UNITS = ["B/s", "KiB/s", "MiB/s", "GiB/s", "bit/s", "Mbit/s", "Gbit/s", "Tbit/s", "Gbps", "Mb/s", "MiB", "/s"]
TIME_UNITS = ["", "ns", "us", "µs", "ms", "s", "min", "h", "d", "sec"]

#: Stands for a 5000-digit number (Python will not even str() one): yaml_text writes it unquoted.
BIGINT = "__BIGINT__"
BIG_DIGITS = "9" * 5000

#: Values that have broken simkvm before, or break programs like it.
HOSTILE: list[Any] = [
    math.nan, math.inf, -math.inf, -0.0, 0, -1, 1e-300, 5e-324, 1e300, 1e308, 2**63, -(2**63), 10**30,
    BIGINT, True, False, None, "", " ", "abc", "nan", "inf", "-inf", "NaN GiB", "1e999GiB", "1e-300s",
    "1e-20", "0x10", "1_000", "--1", "1e", "½GiB", "１GiB", "\x00", "\u202e4GiB", "4GiB/s/s", "4 GiB", "-4GiB",
    "%", "30%", "300%", "-5%", "nan%", "2001-12-14", "x" * 10_000, [], [1], [[[]]], {}, {"a": 1}, ["1GiB"] * 3,
    list(range(100_000)), {"range": [1, 2]},
]


def hostile() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(HOSTILE),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.text(max_size=30),
        st.lists(st.floats(allow_nan=True), max_size=5),
    )


def _magnitude() -> st.SearchStrategy[str]:
    return st.one_of(st.integers(min_value=0, max_value=100_000).map(str),
                     st.floats(min_value=0, max_value=1e6, allow_nan=False).map(lambda x: f"{x:.6g}"),
                     st.sampled_from(["0", "1", "0.5", "1e-9", "1e9", "1e20", "1e-300", "-1"]))


def quantity(units: list[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda n, u: f"{n}{u}", _magnitude(), st.sampled_from(units))


def plausible(key: str) -> st.SearchStrategy[Any]:
    """A value of the kind ``key`` takes (right type, any magnitude, sometimes the wrong unit)."""
    if key in CHOICES:
        return st.sampled_from(CHOICES[key])
    if key in ("enabled", "mirror_zero_accounted", "permit_post_copy", "permit_auto_converge"):
        return st.one_of(st.booleans(), st.sampled_from(["yes", "on", 1]))
    if key in INT_KEYS:
        return st.one_of(st.integers(min_value=-3, max_value=60), st.sampled_from([0, 1, 10**6, 10**9, 1.0, 2.5]))
    if key in FRACTION_KEYS:
        return st.one_of(st.floats(min_value=-0.5, max_value=1.5), st.sampled_from(["30%", "100%", "0%", 1, 0]))
    if key in RATE_KEYS:
        return quantity(RATE_UNITS)
    if key in SIZE_KEYS:
        return quantity(SIZE_UNITS)
    return quantity(TIME_UNITS)


def value_for(key: str) -> st.SearchStrategy[Any]:
    return st.one_of(plausible(key), plausible(key), hostile())


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict) and v:
                out += _leaf_paths(v, path)
            else:
                out.append(path)
    return out


#: Every key a plan has (from the plan's own defaults), plus list items and policy options.
PLAN_PATHS: list[str] = _leaf_paths(simkvm.Plan().to_dict()) + [
    "vm.disks.0.size", "vm.disks.0.allocated", "vm.disks.0.path", "vm.disks.0.format",
    "policy.steps", "policy.delay", "policy.downtime", "policy.completion_timeout", "policy.timeout_action",
    "policy.permit_post_copy", "policy.progress_timeout", "policy.completion_timeout_per_gib", "policy.params",
    "profile", "profile.host.resume", "profile.link.capacity", "vm.unknown", "unknown",
]
POLICY_NAMES = sorted(simkvm.policies.POLICIES) + ["nope"]


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        if isinstance(node, list):
            if not part.isdigit():
                return  # an earlier mutation made this section a list: leave it
            idx = int(part)
            while len(node) <= idx:
                node.append({})
            node = node[idx]
            continue
        if not isinstance(node, dict):
            return  # an earlier mutation made this a scalar: leave it
        nxt = node.get(part)
        if not isinstance(nxt, (dict, list)):
            nxt = {}
            node[part] = nxt
        node = nxt
    if isinstance(node, dict):
        node[parts[-1]] = value
    elif isinstance(node, list) and parts[-1].isdigit():
        idx = int(parts[-1])
        while len(node) <= idx:
            node.append({})
        node[idx] = value


def _copy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) for v in x]
    return x


@st.composite
def list_sections(draw: st.DrawFn) -> tuple[str, Any]:
    """A list-valued key with generated items: disks, dirty sets, phases, curve points, layouts."""
    which = draw(st.sampled_from(["disks", "sets", "phases", "points", "zero_layout", "wss_layout"]))
    n = draw(st.integers(min_value=0, max_value=6))
    if which == "disks":
        item = st.fixed_dictionaries({"size": value_for("size")}, optional={"allocated": value_for("allocated")})
        return "vm.disks", draw(st.lists(item, min_size=n, max_size=n))
    if which == "sets":
        item = st.fixed_dictionaries({"wss": value_for("wss"), "dirty_rate": value_for("dirty_rate")},
                                     optional={"pattern": value_for("pattern")})
        return "workload.memory.sets", draw(st.lists(item, min_size=n, max_size=n))
    if which == "phases":
        item = st.fixed_dictionaries({}, optional={"duration": value_for("duration"), "scale": value_for("scale")})
        return "workload.memory.phases", draw(st.lists(item, min_size=n, max_size=n))
    if which == "points":
        item = st.tuples(value_for("duration"), value_for("size")).map(list)
        return "workload.memory.points", draw(st.lists(item, min_size=n, max_size=n))
    share = st.one_of(st.floats(min_value=0, max_value=10), hostile())
    return f"vm.{which}", draw(st.one_of(st.lists(share, min_size=n, max_size=n), value_for(which)))


@st.composite
def plans(draw: st.DrawFn) -> dict[str, Any]:
    """The base plan with one to four keys changed, a list section generated, or a section broken."""
    data = _copy(BASE_PLAN)
    if draw(st.booleans()):
        data["policy"] = {"name": draw(st.sampled_from(POLICY_NAMES))}
    if draw(st.integers(0, 3)) == 0:
        model = draw(st.sampled_from(["idle", "hotcold", "curve", "sequential"]))
        data["workload"]["memory"] = {"model": model}
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.integers(0, 9))
        if kind <= 5:
            path = draw(st.sampled_from(PLAN_PATHS))
            _set(data, path, draw(value_for(path.rsplit(".", 1)[-1])))
        elif kind <= 7:
            path, value = draw(list_sections())
            _set(data, path, value)
        elif kind == 8:  # a whole section replaced
            section = draw(st.sampled_from(["vm", "workload", "link", "migration", "host", "aids", "policy",
                                            "network", "destination", "workload.memory", "aids.multifd"]))
            _set(data, section, draw(hostile()))
        else:  # the migration knobs that decide how long the simulated loop may run
            _set(data, "migration.max_iterations", draw(st.sampled_from([0, 1, 30, 1000, 10**7])))
            _set(data, "migration.max_time", draw(st.sampled_from(["1s", "1h", "1e9s", "1e300s", "1e-9s"])))
            _set(data, "workload.memory.dirty_rate", draw(st.sampled_from(["1GiB/s", "100MiB/s", "10GiB/s"])))
            _set(data, "link.bandwidth", draw(st.sampled_from(["100Mbit/s", "1Gbit/s", "1e-3B/s", "1kbit/s"])))
    return data


def yaml_text(data: Any) -> str:
    import yaml

    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10**9)
    return text.replace(f"'{BIGINT}'", BIG_DIGITS).replace(BIGINT, BIG_DIGITS)


YAML_NOISE = ["{", "}", "[", "]", ":", "- ", "&a ", "*a", "!!", "? ", "|", ">", "'", '"', "#", "\t", "\n", "  ",
              "%YAML 1.1\n", "---\n", "...\n", "!!python/name:os.system", "<<: *a", ",", "\\", "\x00", "\ufeff"]


@st.composite
def mangled_text(draw: st.DrawFn) -> bytes:
    """A valid plan's YAML with bytes cut, inserted or replaced: what a half-edited file looks like."""
    text = yaml_text(BASE_PLAN)
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        pos = draw(st.integers(min_value=0, max_value=len(text)))
        op = draw(st.integers(0, 2))
        if op == 0:
            text = text[:pos] + text[pos + draw(st.integers(1, 20)):]
        else:
            piece = draw(st.one_of(st.sampled_from(YAML_NOISE), st.text(max_size=8)))
            text = text[:pos] + piece + text[pos + (1 if op == 2 else 0):]
    raw = text.encode("utf-8", errors="surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        raw = draw(st.binary(max_size=200)) + raw
    return raw


# ------------------------------------------------------------------ CLI flags
PREDICT_FLAGS = {
    "--memory": "memory", "--zero-fraction": "zero_fraction", "--dirty-rate": "dirty_rate", "--wss": "wss",
    "--pattern": "pattern", "--disk": "disk", "--disk-allocated": "allocated", "--disk-write-rate": "write_rate",
    "--disk-wss": "disk_wss", "--bandwidth": "bandwidth", "--capacity": "capacity", "--max-downtime": "max_downtime",
    "--max-iterations": "max_iterations", "--max-time": "max_time", "--storage": "storage",
    "--mirror-mode": "mirror_mode", "--policy": "policy",
}


def flag_value(key: str) -> st.SearchStrategy[str]:
    if key == "policy":
        return st.sampled_from(POLICY_NAMES)
    return st.one_of(plausible(key), plausible(key), hostile()).map(_flag_text)


def _flag_text(v: Any) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    text = str(v).replace(BIGINT, BIG_DIGITS)
    return text if len(text) < 5000 else text[:5000]


@st.composite
def predict_flags(draw: st.DrawFn) -> list[str]:
    argv = ["--memory", draw(flag_value("memory"))] if draw(st.integers(0, 4)) else []
    for flag in draw(st.lists(st.sampled_from(sorted(PREDICT_FLAGS)), max_size=6, unique=True)):
        argv += [flag, draw(flag_value(PREDICT_FLAGS[flag]))]
    return [a.replace("\x00", "") for a in argv]  # argv cannot carry NUL
