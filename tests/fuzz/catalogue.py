"""Hostile inputs found by hand (issue 10's "Hostile input" section and more), one per case.

Each case is a command line and the files it needs; the files are written into
a fresh directory which is the command's working directory. The fuzz tests run
every case through the harness (exit 2 and one line within a second, or a
normal answer; never a traceback, a hang or a huge allocation) and the
generated tests start from these as explicit examples.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

BASE_PLAN = """\
name: base
vm: {memory: 1GiB, disks: [{size: 1GiB}]}
workload: {memory: {model: uniform, dirty_rate: 20MiB/s, wss: 256MiB}}
link: {bandwidth: 1Gbit/s}
migration: {max_downtime: 300ms}
"""
NONCONVERGING = """\
vm: {memory: 1GiB}
workload: {memory: {model: uniform, dirty_rate: 1GiB/s, wss: 512MiB}}
link: {bandwidth: 100Mbit/s}
"""


@dataclass
class Case:
    label: str
    argv: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    setup: Callable[[str], None] | None = None  # called with the directory (FIFOs, sparse files, ...)


def plan(text: str, label: str, *flags: str, command: str = "predict") -> Case:
    return Case(label, [command, "p.yaml", *flags], {"p.yaml": text})


def _fifo(d: str) -> None:
    import os

    os.mkfifo(os.path.join(d, "fifo.yaml"))


def _sparse(d: str) -> None:
    with open(f"{d}/big.yaml", "wb") as fh:
        fh.truncate(200 * 2**20)


def _nested(depth: int) -> str:
    return "vm: " + "[" * depth + "]" * depth + "\n"


def _nested_map(depth: int) -> str:
    return "vm: " + "{a: " * depth + "1" + "}" * depth + "\n"


ALIAS_BOMB = "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    + ["vm: *a8"]) + "\n"


def _spec(text: str, label: str, *flags: str) -> Case:
    return Case(label, ["sweep", "s.yaml", "-o", "out.parquet", "-q", "--workers", "1", *flags],
                {"s.yaml": text, "base.yaml": BASE_PLAN})


def _campaign(text: str, label: str) -> Case:
    return Case(label, ["campaign", "run", "c.yaml", "-o", "out", "-q"], {"c.yaml": text})


def _result(**over: object) -> dict:
    base = {"source": "simulated", "converged": True, "outcome": "converged", "reason": "", "total_time_s": 10.0,
            "downtime_s": 0.1, "iterations": 3, "rounds": [], "timeline": [], "actions": []}
    base.update(over)
    return base


def _compare(pred: object, meas: object, label: str) -> Case:
    enc = [x if isinstance(x, (str, bytes)) else json.dumps(x) for x in (pred, meas)]
    return Case(label, ["compare", "p.json", "m.json"], {"p.json": enc[0], "m.json": enc[1]})


CASES: list[Case] = [
    # ---- files that are not plans
    Case("non-UTF-8 plan", ["predict", "p.yaml"], {"p.yaml": b"vm:\n  memory: \xff\xfe4GiB\n"}),
    Case("binary plan", ["predict", "p.yaml"], {"p.yaml": bytes(range(256)) * 4}),
    Case("directory as plan", ["predict", "."]),
    Case("empty plan file", ["predict", "p.yaml"], {"p.yaml": ""}),
    Case("plan is a list", ["predict", "p.yaml"], {"p.yaml": "- 1\n- 2\n"}),
    Case("FIFO as plan", ["predict", "fifo.yaml"], setup=_fifo),
    Case("200 MB plan file", ["predict", "big.yaml"], setup=_sparse),
    Case("/dev/zero as plan", ["predict", "/dev/zero"]),
    Case("missing plan", ["predict", "nope.yaml"]),
    plan(_nested(5000), "nesting 5000 deep"),
    plan(_nested_map(2000), "mapping nesting 2000 deep"),
    plan("vm: {memory: " + "9" * 5000 + "}\n", "5000-digit number"),
    plan("vm: {memory: " + "9" * 400 + ".0}\n", "400-digit float (inf)"),
    plan(ALIAS_BOMB, "alias bomb"),
    plan("vm: !!python/object:os.system {}\n", "python tag"),
    plan("vm: {memory: !!binary aGVsbG8=}\n", "binary tag"),
    plan("vm: {memory: 2001-12-14}\n", "date as a size"),
    plan("? [a, b]\n: 1\n", "list as a key"),
    plan("vm: {memory: 1GiB}\n1: 2\n", "integer key"),
    plan("vm: {memory: 1GiB, memory: 2GiB}\n", "duplicate key"),
    plan("name: " + "x" * 3_000_000 + "\n", "3 MB name"),
    # ---- values the plan does not check
    plan(BASE_PLAN + "  max_iterations: .nan\n", "max_iterations .nan"),
    plan(BASE_PLAN.replace("max_downtime: 300ms}", "max_downtime: 300ms, max_iterations: .inf}"),
         "max_iterations .inf"),
    plan(BASE_PLAN.replace("max_downtime: 300ms}", "max_downtime: 300ms, max_iterations: 1e300}"),
         "max_iterations 1e300"),
    plan(BASE_PLAN + "host: {dirty_rate_factor: .nan}\n", "host.dirty_rate_factor .nan"),
    plan(BASE_PLAN + "host: {dirty_rate_factor: 1e300}\n", "host.dirty_rate_factor 1e300"),
    plan(BASE_PLAN.replace("memory: 1GiB,", "memory: 1GiB, page_size: 0,"), "vm.page_size 0"),
    plan(BASE_PLAN.replace("memory: 1GiB,", "memory: 1GiB, page_size: 3,"), "vm.page_size 3"),
    plan(BASE_PLAN.replace("memory: 1GiB,", "memory: 1GiB, vcpus: 0,"), "vm.vcpus 0"),
    plan(BASE_PLAN.replace("memory: 1GiB,", "memory: 1GiB, vcpus: 1e12,"), "vm.vcpus 1e12"),
    plan(BASE_PLAN + "host: {mirror_granularity: 0}\n", "host.mirror_granularity 0"),
    # found by the generated plans: a week of setup polled by KubeVirt every 0.4 s (30 s of CPU, 50,000 aborts)
    plan(BASE_PLAN + "policy: {name: kubevirt}\nhost: {create_disk: '562670'}\n", "host.create_disk a week, kubevirt"),
    plan(BASE_PLAN + "host: {create_disk: 3000s, setup: 3000s}\n", "host preparation over an hour"),
    plan(BASE_PLAN.replace("memory: 1GiB,", "memory: 1GiB, vcpus: -4,"), "vm.vcpus -4"),
    # found by scripts/fuzz.sh 3: the clock could not move by a sliver's send time (fixed on main by 08854bf)
    plan("vm: {memory: 1GiB, zero_fraction: 0.2, zero_layout: end}\nworkload: {memory: {model: uniform, "
         "dirty_rate: 20MiB/s, wss: 256MiB}}\nlink: {bandwidth: 1Gbit/s}\nmigration: {max_downtime: 300ms, "
         "max_time: 120s}\n", "zero_layout end, a sliver the clock cannot resolve"),
    plan(BASE_PLAN + "host: {page_cost: -1s}\n", "host.page_cost negative"),
    plan(BASE_PLAN + "host: {page_header: .nan}\n", "host.page_header .nan"),
    plan(BASE_PLAN + "network: {announce_rounds: 1e9}\n", "network.announce_rounds 1e9"),
    plan(BASE_PLAN + "network: {announce_step: 0s, announce_rounds: 100000000}\n", "1e8 announce rounds"),
    plan(BASE_PLAN.replace("dirty_rate: 20MiB/s, wss: 256MiB}",
                           "dirty_rate: 20MiB/s, wss: 256MiB, phases: [{duration: 1s, scale: .nan}]}"),
         "phase scale .nan"),
    plan(BASE_PLAN.replace("dirty_rate: 20MiB/s, wss: 256MiB}",
                           "dirty_rate: 20MiB/s, wss: 256MiB, phases: [{duration: 1ns, scale: 2}, "
                           "{duration: 1ns, scale: 0}]}"), "two 1 ns phases"),
    plan(BASE_PLAN.replace("dirty_rate: 20MiB/s, wss: 256MiB}",
                           "dirty_rate: 20MiB/s, wss: 256MiB, phases: 5}"), "phases a number"),
    plan(BASE_PLAN.replace("dirty_rate: 20MiB/s, wss: 256MiB}",
                           "dirty_rate: 20MiB/s, wss: 256MiB, phases: [" + "{duration: 1ms}, " * 100000 + "]}"),
         "100,000 phases"),
    plan(BASE_PLAN.replace("memory: 1GiB,", "memory: 1GiB, wss_layout: [" + "1, " * 100000 + "1],"),
         "100,000 layout shares"),
    plan(BASE_PLAN.replace("memory: 1GiB,", "memory: 1GiB, zero_layout: [.nan, 1],"), "layout share .nan"),
    plan(BASE_PLAN.replace("memory: 1GiB,", "memory: 1GiB, zero_layout: [.inf, 1],"), "layout share .inf"),
    plan(BASE_PLAN.replace("memory: 1GiB,", "memory: 1GiB, zero_layout: [a, 1],"), "layout share a string"),
    plan(BASE_PLAN.replace("memory: 1GiB,", "memory: 1e30GiB,"), "memory 1e30 GiB"),
    plan(BASE_PLAN.replace("memory: 1GiB,", "memory: 1PiB,"), "memory 1 PiB"),
    plan(BASE_PLAN.replace("memory: 1GiB,", "memory: 4096,").replace("disks: [{size: 1GiB}]",
                                                                       "disks: [{size: 1GiB}]"),
         "memory of one page"),
    plan(BASE_PLAN.replace("disks: [{size: 1GiB}]", "disks: {size: 1GiB}"), "disks as a mapping"),
    plan(BASE_PLAN.replace("disks: [{size: 1GiB}]", "disks: [1GiB]"), "a disk as a number"),
    plan(BASE_PLAN.replace("disks: [{size: 1GiB}]", "disks: [" + "{size: 1MiB}, " * 20000 + "]"),
         "20,000 disks"),
    plan(BASE_PLAN.replace("disks: [{size: 1GiB}]", "disks: [{size: 1e30GiB}]"), "a 1e30 GiB disk"),
    plan(BASE_PLAN.replace("disks: [{size: 1GiB}]", "disks: [{size: 1GiB, path: 5}]"), "disk path a number"),
    plan(BASE_PLAN.replace("workload: {memory: {model: uniform, dirty_rate: 20MiB/s, wss: 256MiB}}",
                           "workload: {memory: {model: hotcold, sets: [" + "{wss: 4KiB, dirty_rate: 1MiB/s}, " * 20000
                           + "]}}"), "20,000 dirty sets"),
    plan(BASE_PLAN.replace("workload: {memory: {model: uniform, dirty_rate: 20MiB/s, wss: 256MiB}}",
                           "workload: {memory: {model: curve, points: [" + ", ".join(
                               f"[{i}ms, {i}KiB]" for i in range(1, 50001)) + "]}}"), "50,000 curve points"),
    plan(BASE_PLAN.replace("workload: {memory: {model: uniform, dirty_rate: 20MiB/s, wss: 256MiB}}",
                           "workload: {memory: {model: curve, points: [[.nan, 1]]}}"), "curve point .nan"),
    plan(BASE_PLAN.replace("dirty_rate: 20MiB/s", "dirty_rate: 1e300B/s"), "dirty rate 1e300"),
    plan(BASE_PLAN.replace("dirty_rate: 20MiB/s", "dirty_rate: 1e-300B/s"), "dirty rate 1e-300"),
    plan(BASE_PLAN.replace("bandwidth: 1Gbit/s", "bandwidth: 1e-300B/s"), "bandwidth 1e-300 in file"),
    plan(BASE_PLAN.replace("bandwidth: 1Gbit/s", "bandwidth: 1e300B/s"), "bandwidth 1e300"),
    plan(BASE_PLAN.replace("bandwidth: 1Gbit/s", "bandwidth: 1Gbit/s, efficiency: .nan"), "efficiency .nan"),
    plan(BASE_PLAN.replace("max_downtime: 300ms", "max_downtime: 1e-20s"), "max_downtime 1e-20 s in file"),
    plan(BASE_PLAN.replace("max_downtime: 300ms", "max_downtime: 300ms, max_time: 1e-300s"), "max_time 1e-300"),
    plan(NONCONVERGING + "migration: {max_iterations: 0, max_time: 1e9s}\n",
         "max_iterations 0, max_time 1e9 s, not converging"),
    plan(NONCONVERGING + "migration: {max_iterations: 0, max_time: 1e9s}\npolicy: nova\n",
         "nova with max_time 1e9 s"),
    plan(NONCONVERGING + "migration: {max_iterations: 100000000}\n", "max_iterations 1e8"),
    plan(NONCONVERGING + "aids: {auto_converge: {enabled: true, increment: 1e-9}}\n"
         "migration: {max_iterations: 0, max_time: 1e6s}\n", "auto-converge 1e-9 steps"),
    plan(BASE_PLAN + "aids: {multifd: {enabled: true, channels: 1e12}}\n", "1e12 multifd channels"),
    plan(BASE_PLAN + "aids: {xbzrle: {enabled: true, cache_size: .nan}}\n", "xbzrle cache .nan"),
    plan(BASE_PLAN + "aids: {postcopy: {enabled: true, after_iterations: 1, fault_latency: 1e9s}}\n",
         "postcopy fault latency 1e9 s"),
    plan(BASE_PLAN + "aids: {postcopy: {enabled: true, after_iterations: 1, fault_latency: 0s}}\n",
         "postcopy fault latency 0"),
    plan(BASE_PLAN + "aids: {compression: {method: zstd, throughput: 1e-300B/s}, multifd: {enabled: true}}\n",
         "compression throughput 1e-300"),
    # ---- policies
    plan(BASE_PLAN + "policy: {name: nova, steps: abc}\n", "nova steps abc"),
    plan(BASE_PLAN + "policy: {name: nova, steps: 1e9}\n", "nova steps 1e9"),
    plan(BASE_PLAN + "policy: {name: nova, steps: .nan}\n", "nova steps .nan"),
    plan(BASE_PLAN + "policy: {name: nova, delay: .nan}\n", "nova delay .nan"),
    plan(BASE_PLAN + "policy: {name: nova, delay: -5}\n", "nova delay negative"),
    plan(BASE_PLAN + "policy: {name: nova, downtime: abc}\n", "nova downtime abc"),
    plan(BASE_PLAN + "policy: {name: nova, completion_timeout: [1]}\n", "nova timeout a list"),
    plan(BASE_PLAN + "policy: {name: nova, permit_post_copy: maybe}\n", "nova permit_post_copy a string"),
    plan(BASE_PLAN + "policy: {name: nova, params: 5}\n", "policy params a number"),
    plan(BASE_PLAN + "policy: {name: [nova]}\n", "policy name a list"),
    plan(BASE_PLAN + "policy: 5\n", "policy a number"),
    plan(BASE_PLAN + "policy: {name: ovirt-minimal-downtime, foo: 1}\n", "unknown policy option"),
    plan(BASE_PLAN + "policy: {name: kubevirt, completion_timeout_per_gib: 1e-300}\n", "kubevirt timeout 1e-300"),
    # ---- profiles
    plan(BASE_PLAN + "profile: /etc\n", "profile a directory"),
    plan(BASE_PLAN + "profile: 5\n", "profile a number"),
    plan(BASE_PLAN + "profile: [a]\n", "profile a list"),
    plan(BASE_PLAN + "profile: /dev/zero\n", "profile /dev/zero in file"),
    plan(BASE_PLAN + "profile: {host: {dirty_rate_factor: .nan}}\n", "profile factor .nan"),
    plan(BASE_PLAN + "profile: {link: {capacity: .nan}}\n", "profile capacity .nan"),
    plan(BASE_PLAN + "profile: {link: 5}\n", "profile link a number"),
    plan(BASE_PLAN + "profile: {host: 5}\n", "profile host a number"),
    Case("--profile /dev/zero", ["predict", "--memory", "1GiB", "--profile", "/dev/zero"]),
    Case("--profile a directory", ["predict", "--memory", "1GiB", "--profile", "/"]),
    Case("--profile non-UTF-8", ["predict", "--memory", "1GiB", "--profile", "pr.yaml"],
         {"pr.yaml": b"host: {resume: \xff}\n"}),
    Case("--profile with guest section .nan", ["predict", "--memory", "1GiB", "--profile", "pr.yaml"],
         {"pr.yaml": "guest: {os_nonzero: .nan}\n"}),
    # ---- flags
    Case("--disk-allocated without --disk", ["predict", "--memory", "1GiB", "--disk-allocated", "1GiB"]),
    Case("--disk-write-rate without --disk", ["predict", "--memory", "1GiB", "--disk-write-rate", "1MiB/s"]),
    Case("--bandwidth 1e-300", ["predict", "--memory", "1GiB", "--bandwidth", "1e-300"]),
    Case("--bandwidth 1e300", ["predict", "--memory", "1GiB", "--bandwidth", "1e300"]),
    Case("--memory 1e-300", ["predict", "--memory", "1e-300"]),
    Case("--memory nan", ["predict", "--memory", "nan"]),
    Case("--max-downtime 1e-20", ["predict", "--memory", "1GiB", "--dirty-rate", "10MiB/s", "--wss", "100MiB",
                                  "--max-downtime", "1e-20"]),
    Case("--max-downtime 1ns", ["predict", "--memory", "1GiB", "--dirty-rate", "10MiB/s", "--wss", "100MiB",
                                "--max-downtime", "1ns"]),
    Case("--max-iterations -3", ["predict", "--memory", "1GiB", "--max-iterations", "-3"]),
    Case("--max-time 1e300", ["predict", "--memory", "1GiB", "--dirty-rate", "1GiB/s", "--wss", "512MiB",
                              "--bandwidth", "100Mbit/s", "--max-iterations", "0", "--max-time", "1e300"]),
    Case("--zero-fraction nan", ["predict", "--memory", "1GiB", "--zero-fraction", "nan"]),
    Case("--zero-fraction inf", ["predict", "--memory", "1GiB", "--zero-fraction", "inf"]),
    Case("--policy nova with file steps", ["predict", "p.yaml", "--policy", "nova"],
         {"p.yaml": BASE_PLAN + "policy: {name: kubevirt, steps: 3}\n"}),
    Case("--policy unknown", ["predict", "--memory", "1GiB", "--policy", "nope"]),
    Case("--plot /nonexistent/x.png", ["predict", "--memory", "1GiB", "--plot", "/nonexistent/x.png"]),
    Case("--plot a directory", ["predict", "--memory", "1GiB", "--plot", "/tmp"]),
    Case("--html /nonexistent/x.html", ["predict", "--memory", "1GiB", "--html", "/nonexistent/x.html"]),
    Case("--html a directory", ["predict", "--memory", "1GiB", "--html", "/tmp"]),
    Case("--reference with max_time 1e6 s", ["predict", "--memory", "1GiB", "--reference", "--max-time", "1e6"]),
    Case("--plot no extension", ["predict", "--memory", "1GiB", "--plot", "x.nope"]),
    Case("--pattern with a file model", ["predict", "p.yaml", "--pattern", "sequential"], {"p.yaml": BASE_PLAN}),
    Case("plan --samples 1e9", ["plan", "--memory", "1GiB", "--uncertainty", "20%", "--samples", "1000000000"]),
    Case("plan --samples 0", ["plan", "--memory", "1GiB", "--uncertainty", "20%", "--samples", "0"]),
    Case("plan --samples -5", ["plan", "--memory", "1GiB", "--uncertainty", "20%", "--samples", "-5"]),
    Case("plan --seed -1", ["plan", "--memory", "1GiB", "--uncertainty", "20%", "--seed", "-1", "--samples", "5"]),
    Case("plan --uncertainty 300%", ["plan", "--memory", "1GiB", "--uncertainty", "300%"]),
    Case("plan 10,000 bandwidths", ["plan", "--memory", "1GiB", "--bandwidths",
                                    ",".join(f"{i}Mbit/s" for i in range(1, 10001))]),
    Case("plan --bandwidths empty", ["plan", "--memory", "1GiB", "--bandwidths", ","]),
    Case("plan --downtimes 1e-20", ["plan", "--memory", "1GiB", "--downtimes", "1e-20"]),
    Case("plan --downtimes nan", ["plan", "--memory", "1GiB", "--downtimes", "nan"]),
    Case("plan --max-total-time 0", ["plan", "--memory", "1GiB", "--max-total-time", "0"]),
    Case("plan --plot /nonexistent", ["plan", "--memory", "1GiB", "--plot", "/nonexistent/x.png"]),
    Case("policies --only nope", ["policies", "--memory", "1GiB", "--only", "nope"]),
    Case("policies --only empty", ["policies", "--memory", "1GiB", "--only", ","]),
    Case("policies with max_time 1e9", ["policies", "p.yaml"],
         {"p.yaml": NONCONVERGING + "migration: {max_iterations: 0, max_time: 1e9s}\n"}),
    # ---- sweeps
    _spec("base: base.yaml\naxes: {migration.max_time: {range: [1ns, 1000s], step: 1ns}}\n",
          "sweep 1 ns step over 1000 s"),
    _spec("base: base.yaml\naxes: {link.bandwidth: {range: [1Mbit/s, 10Gbit/s], num: 100000}, "
          "vm.memory: {range: [1GiB, 2GiB], num: 100000}}\n", "sweep 1e10-point grid"),
    _spec("base: base.yaml\naxes: {link.bandwidth: {log: [1Mbit/s, 10Gbit/s], num: 1000000000000}}\n",
          "sweep log num 1e12"),
    _spec("base: base.yaml\naxes: {link.bandwidth: {range: [1Mbit/s, 10Gbit/s], num: 2}}\n"
          "samples: {method: lhs, n: 1000000000000}\n", "sweep lhs n 1e12"),
    _spec("base: base.yaml\naxes: {link.bandwidth: [1Gbit/s]}\nsamples: {method: random, n: 5, seed: 1e30}\n",
          "sweep seed 1e30"),
    _spec("base: base.yaml\naxes: {link.bandwidth: [1Gbit/s]}\nchunk: 1e30\n", "sweep chunk 1e30"),
    _spec("base: base.yaml\naxes: {link.bandwidth: {range: [.nan, 1Gbit/s], num: 3}}\n", "sweep range .nan"),
    _spec("base: base.yaml\naxes: {link.bandwidth: {range: [1Mbit/s, .inf], num: 3}}\n", "sweep range .inf"),
    _spec("base: base.yaml\naxes: {link.bandwidth: {range: [1Mbit/s, 1Gbit/s], step: .nan}}\n",
          "sweep step .nan"),
    _spec("base: base.yaml\naxes: {migration.max_iterations: {range: [0, 1e300], num: 3}}\n",
          "sweep integer range 1e300"),
    _spec("base: base.yaml\naxes: {vm.disks.99999999999999999999.size: [1GiB]}\n", "sweep huge index"),
    _spec("base: base.yaml\naxes: {vm.disks.0: [1GiB]}\n", "sweep axis a list item"),
    _spec("base: base.yaml\naxes: {policy.name: [nova]}\n", "sweep axis policy.name"),
    _spec("base: base.yaml\naxes: {policy.params: [1]}\n", "sweep axis policy.params"),
    _spec("base: base.yaml\naxes: {vm.zero_layout: [[.nan, 1]]}\n", "sweep layout .nan"),
    _spec("base: base.yaml\naxes: {'': [1]}\n", "sweep empty axis"),
    _spec("base: /etc\naxes: {link.bandwidth: [1Gbit/s]}\n", "sweep base a directory"),
    _spec("base: /dev/zero\naxes: {link.bandwidth: [1Gbit/s]}\n", "sweep base /dev/zero"),
    _spec("base: base.yaml\naxes: {link.bandwidth: [1Gbit/s]}\n", "sweep --chunk 0", "--chunk", "0"),
    _spec("base: base.yaml\naxes: {link.bandwidth: [1Gbit/s]}\n", "sweep --workers 100000", "--workers", "100000"),
    Case("sweep output in a missing directory", ["sweep", "s.yaml", "-o", "/nonexistent/dir/out.parquet", "-q"],
         {"s.yaml": "base: base.yaml\naxes: {link.bandwidth: [1Gbit/s]}\n", "base.yaml": BASE_PLAN}),
    Case("sweep output a directory", ["sweep", "s.yaml", "-o", "/tmp", "-q", "--workers", "1"],
         {"s.yaml": "base: base.yaml\naxes: {link.bandwidth: [1Gbit/s]}\n", "base.yaml": BASE_PLAN}),
    # ---- campaigns
    _campaign("scenarios: [{id: a, repeats: 1e9}]\n", "campaign repeats 1e9"),
    _campaign("scenarios: [{id: a, memory: .nan}]\n", "campaign memory .nan"),
    _campaign("scenarios: [{id: a, max_iterations: 1e300}]\n", "campaign max_iterations 1e300"),
    _campaign("scenarios: [{id: a, max_iterations: .nan}]\n", "campaign max_iterations .nan"),
    _campaign("scenarios: [{id: a, note: [1]}]\n", "campaign note a list"),
    _campaign("scenarios: [{id: a, zero_fraction: .nan}]\n", "campaign zero fraction .nan"),
    _campaign("scenarios: {id: a}\n", "campaign scenarios a mapping"),
    _campaign("name: [x]\nscenarios: [{id: a}]\n", "campaign name a list"),
    _campaign("scenarios: [" + "{id: a}, " * 1 + "{id: a}]\n", "campaign duplicate ids"),
    _campaign(ALIAS_BOMB.replace("vm: *a8", "scenarios: *a8"), "campaign alias bomb"),
    Case("campaign run --only empty", ["campaign", "run", "c.yaml", "-o", "out", "--only", ",", "-q"],
         {"c.yaml": "scenarios: [{id: a}]\n"}),
    Case("campaign run --profile /dev/zero", ["campaign", "run", "c.yaml", "-o", "out", "--profile", "/dev/zero"],
         {"c.yaml": "scenarios: [{id: a}]\n"}),
    Case("campaign run -o a file", ["campaign", "run", "c.yaml", "-o", "c.yaml", "-q"],
         {"c.yaml": "scenarios: [{id: a}]\n"}),
    Case("campaign report of nothing", ["campaign", "report", "."]),
    Case("campaign report missing", ["campaign", "report", "nope"]),
    Case("campaign report broken runs.csv", ["campaign", "report", "."], {"runs.csv": b"\xff\xfe,,\n1,2\n"}),
    Case("campaign report broken row", ["campaign", "report", "."],
         {"runs.csv": "run_id,role\nx-r1,validation\n", "runs/x-r1.row.json": "{"}),
    Case("calibrate an empty dir", ["calibrate", ".", "-o", "prof.yaml"]),
    Case("calibrate --runs garbage", ["calibrate", ".", "-o", "prof.yaml", "--runs", "x"]),
    Case("calibrate a file", ["calibrate", "f", "-o", "prof.yaml"], {"f": "x"}),
    # ---- compare inputs
    _compare({"converged": True}, {"converged": True, "total_time_s": "abc"}, "compare a string time"),
    _compare(_result(), _result(rounds=5), "compare rounds a number"),
    _compare(_result(), _result(rounds=[5]), "compare a round a number"),
    _compare(_result(), _result(actions=[{"x": 1}]), "compare a bad action"),
    _compare(_result(), _result(timeline=[1]), "compare a timeline point a number"),
    _compare(_result(), _result(total_time_s=float("nan")), "compare NaN"),
    _compare(_result(), _result(iterations="x"), "compare iterations a string"),
    _compare(_result(), _result(converged="yes"), "compare converged a string"),
    _compare(_result(), "[" * 100000 + "]" * 100000, "compare JSON nested 100,000 deep"),
    _compare(_result(), '{"converged": ' + "9" * 5000 + "}", "compare 5000-digit number"),
    _compare(_result(), b"\xff\xfe{}", "compare non-UTF-8"),
    _compare(_result(), "[]", "compare a list"),
    Case("compare a directory", ["compare", ".", "."]),
    Case("compare /dev/zero", ["compare", "/dev/zero", "/dev/zero"]),
    Case("compare one file, not a pair", ["compare", "p.json"], {"p.json": json.dumps(_result())}),
    Case("compare --plot /nonexistent", ["compare", "p.json", "p.json", "--plot", "/nonexistent/x.png"],
         {"p.json": json.dumps(_result(source="simulated"))}),
    # ---- real-world commands: validation before libvirt
    Case("migrate plan a directory", ["migrate", ".", "--domain", "d", "--src", "a", "--dst", "b"]),
    Case("migrate --src garbage", ["migrate", "p.yaml", "--domain", "d", "--src", "x", "--dst", "b"],
         {"p.yaml": BASE_PLAN}),
    Case("migrate --timeout nan", ["migrate", "p.yaml", "--domain", "d", "--src", "a", "--dst", "b",
                                   "--timeout", "nan"], {"p.yaml": BASE_PLAN}),
    Case("migrate --timeout 1e300", ["migrate", "p.yaml", "--domain", "d", "--src", "a", "--dst", "b",
                                     "--timeout", "1e300"], {"p.yaml": BASE_PLAN}),
    Case("migrate --timeout 1ns", ["migrate", "p.yaml", "--domain", "d", "--src", "a", "--dst", "b",
                                   "--timeout", "1ns"], {"p.yaml": BASE_PLAN}),
    Case("migrate empty domain", ["migrate", "p.yaml", "--domain", "", "--src", "a", "--dst", "b"],
         {"p.yaml": BASE_PLAN}),
    Case("migrate same host", ["migrate", "p.yaml", "--domain", "d", "--src", "a", "--dst", "a"],
         {"p.yaml": BASE_PLAN}),
    Case("migrate --migrate-uri garbage", ["migrate", "p.yaml", "--domain", "d", "--src", "a", "--dst", "b",
                                           "--migrate-uri", "\x00"], {"p.yaml": BASE_PLAN}),
    Case("migrate plan max_downtime 1e-20", ["migrate", "p.yaml", "--domain", "d", "--src", "a", "--dst", "b"],
         {"p.yaml": BASE_PLAN.replace("max_downtime: 300ms", "max_downtime: 1e-20s")}),
    Case("preflight --periods 1e-9", ["preflight", "--domain", "d", "--src", "a", "--dst", "b",
                                      "--periods", "1e-9"]),
    Case("preflight --periods 1e9", ["preflight", "--domain", "d", "--src", "a", "--dst", "b",
                                     "--periods", "1e9"]),
    Case("preflight --periods empty", ["preflight", "--domain", "d", "--src", "a", "--dst", "b", "--periods", ","]),
    Case("preflight --max-downtime 1e-20", ["preflight", "--domain", "d", "--src", "a", "--dst", "b",
                                            "--max-downtime", "1e-20"]),
    Case("preflight --bandwidth 1e-300", ["preflight", "--domain", "d", "--src", "a", "--dst", "b",
                                          "--bandwidth", "1e-300"]),
    Case("preflight --plan /dev/zero", ["preflight", "--domain", "d", "--src", "a", "--dst", "b",
                                        "--plan", "/dev/zero"]),
    Case("testbed guest --memory 1e30GiB", ["testbed", "guest", "g", "--memory", "1e30GiB", "--no-wait"]),
    Case("testbed guest --memory 1", ["testbed", "guest", "g", "--memory", "1", "--no-wait"]),
    Case("testbed guest --zero-fraction nan", ["testbed", "guest", "g", "--zero-fraction", "nan", "--no-wait"]),
    Case("testbed guest --timeout 1e999", ["testbed", "guest", "g", "--timeout", "1e999"]),
    Case("testbed guest --timeout 99999999999999999999", ["testbed", "guest", "g", "--timeout",
                                                          "99999999999999999999"]),
    Case("testbed guest --dirty-rate 1e300", ["testbed", "guest", "g", "--dirty-rate", "1e300B/s", "--no-wait"]),
    Case("testbed guest --io-size 1", ["testbed", "guest", "g", "--io-size", "1", "--no-wait"]),
    Case("testbed guest name ../x", ["testbed", "guest", "../../x", "--no-wait"]),
    Case("testbed guest name empty", ["testbed", "guest", "", "--no-wait"]),
    Case("testbed up --disk-capacity 1e30GiB", ["testbed", "up", "--disk-capacity", "1e30GiB"]),
    Case("testbed up --disk-capacity 0", ["testbed", "up", "--disk-capacity", "0"]),
    Case("bench --seconds 1e9", ["bench", "--seconds", "1e9"]),
    Case("bench --seconds nan", ["bench", "--seconds", "nan"]),
]
