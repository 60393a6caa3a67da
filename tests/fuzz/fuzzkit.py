"""The fuzz harness: run one CLI input the way a user would, and judge what came back.

Every input is run by :func:`run` through ``simkvm.cli.main(argv)`` in a forked
copy of the test process (the import cost is paid once; a fork costs ~6 ms).
The fork is what makes a hostile input safe to try: the child has an address
space limit (a huge allocation is a ``MemoryError`` we see, not a machine that
swaps) and a wall-clock deadline after which it is killed (a hang is a result,
not a stuck suite). The child fences off the outside world: the first call that
would touch libvirt, the testbed or a real migration raises :class:`Fence`,
which means "the input was accepted" (argument validation is what is tested).

:func:`judge` applies the project's rule for bad input: exit code 2 with one
line on stderr, in under a second of CPU; never a traceback, never a hang.
Outcomes are counted per command (the terminal summary prints the figures);
with ``SIMKVM_FUZZ_SURVEY=1`` nothing is asserted and every failure is written
to ``SIMKVM_FUZZ_LOG`` instead, which is how the before/after figures in the
README were taken (scripts/fuzz.sh).
"""
from __future__ import annotations

import collections
import json
import os
import resource
import select
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

#: Bad input must be refused within this much CPU time (the issue's "within a second").
REFUSE_CPU_S = 1.0
#: Any input, good or bad, must finish within this wall time; past it the child is killed (a hang).
HANG_WALL_S = float(os.environ.get("SIMKVM_FUZZ_HANG_S", "20"))
#: Address space the child may add to what the test process already maps.
EXTRA_AS_BYTES = 3 * 2**30
#: Exit codes each command documents (cli.py; preflight's 3 is NO-GO, migrate's 1 a failed migration).
ALLOWED_CODES: dict[str, set[int]] = {"migrate": {0, 1, 2}, "preflight": {0, 1, 2, 3}, "campaign": {0, 1, 2}}
DEFAULT_CODES = {0, 2}

SURVEY = os.environ.get("SIMKVM_FUZZ_SURVEY", "") not in ("", "0")
SCALE = float(os.environ.get("SIMKVM_FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    """A test's example count, times SIMKVM_FUZZ_SCALE (scripts/fuzz.sh runs longer campaigns)."""
    return max(1, int(n * SCALE))


class Fence(BaseException):
    """The input got past validation to the point where simkvm would touch libvirt or the testbed."""


@dataclass
class Outcome:
    argv: list[str]
    code: int | None  # None: killed (hang) or crashed
    stdout: str = ""
    stderr: str = ""
    cpu_s: float = 0.0
    wall_s: float = 0.0
    traceback: str | None = None  # an exception that escaped main()
    fenced: str | None = None  # which outside-world call the input reached
    hang: bool = False
    note: str = ""

    @property
    def command(self) -> str:
        return next((a for a in self.argv if not a.startswith("-")), "?")


@dataclass
class Tally:
    inputs: int = 0
    by_command: collections.Counter = field(default_factory=collections.Counter)
    codes: collections.Counter = field(default_factory=collections.Counter)
    tracebacks: int = 0
    hangs: int = 0
    other: int = 0  # a wrong exit code, a message of several lines, too slow
    cpu_s: float = 0.0
    slowest_refusal_s: float = 0.0
    failures: list[str] = field(default_factory=list)


TALLY = Tally()


def _fences() -> None:
    """Replace the calls that leave the process (libvirt, programs, the testbed, a real migration) with a
    Fence: what runs before them is the argument checking, which is what is tested."""
    def fence(name: str):
        def f(*args: Any, **kwargs: Any) -> Any:
            raise Fence(name)
        return f

    import subprocess

    import libvirt

    import simkvm.commands.migrate as migrate
    import simkvm.testbed.guestplan as guestplan
    import simkvm.executor.run as run
    import simkvm.preflight as preflight
    import simkvm.testbed as testbed
    import simkvm.testbed.network as tnet
    import simkvm.validation.runner as campaign

    for name in ("open", "openAuth", "openReadOnly"):
        setattr(libvirt, name, fence(f"libvirt.{name}"))
    subprocess.Popen = fence("subprocess")  # type: ignore[misc,assignment]
    run.execute = fence("execute")
    guestplan.plan_for_domain = fence("plan_for_domain")
    migrate._testbed_probe = fence("probe")
    preflight.preflight = fence("preflight")
    campaign._run_pending = fence("campaign runs")
    campaign._campaign_lock = fence("campaign lock")
    testbed.Testbed.up = fence("testbed up")  # type: ignore[method-assign]
    testbed.Testbed.down = fence("testbed down")  # type: ignore[method-assign]
    tnet.GuestNetwork.up = fence("network up")  # type: ignore[method-assign]


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _child(argv: Sequence[str], out: str, err: str, report_fd: int, cwd: str) -> None:
    """In the forked child: limits, fences, main(argv), one JSON line to the parent, _exit."""
    report: dict[str, Any] = {}
    try:
        os.chdir(cwd)
        limit = _vm_size() + EXTRA_AS_BYTES
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        out_f, err_f = open(out, "w"), open(err, "w")
        os.dup2(out_f.fileno(), 1)
        os.dup2(err_f.fileno(), 2)
        sys.stdout, sys.stderr = out_f, err_f
        sys.stdin = open(os.devnull)
        # Anything that would write testbed state writes it here, never into a real testbed's directory.
        os.environ["SIMKVM_TESTBED_DIR"] = os.path.join(os.path.dirname(out), "testbed")
        os.environ["SIMKVM_TESTBED_PORT"] = "50400"
        _fences()
        from simkvm.cli import main

        start = time.process_time()
        try:
            report["code"] = int(main(list(argv)) or 0)
        except SystemExit as exc:  # argparse
            report["code"] = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Fence as exc:
            report["code"], report["fenced"] = 0, str(exc)
        except BaseException:  # noqa: BLE001 - what a user would see as a traceback
            report["traceback"] = traceback.format_exc(limit=-6)[-4000:]
        report["cpu_s"] = time.process_time() - start
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - the harness itself failed
        report["traceback"] = "harness: " + traceback.format_exc()[-2000:]
    finally:
        try:
            os.write(report_fd, (json.dumps(report) + "\n").encode())
        finally:
            os._exit(0)


def run(argv: Sequence[str], cwd: str | Path | None = None, hang_s: float = HANG_WALL_S) -> Outcome:
    """``simkvm ARGV`` in a forked child with limits; never raises, never waits past ``hang_s``."""
    argv = [str(a) for a in argv]
    with tempfile.TemporaryDirectory(prefix="simkvm-fuzz-") as tmp:
        out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        r, w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(r)
            _child(argv, out, err, w, str(cwd or tmp))
        os.close(w)
        data = b""
        hang = False
        deadline = started + hang_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                hang = True
                break
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        wall = time.monotonic() - started
        if hang:
            os.kill(pid, signal.SIGKILL)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        outcome = Outcome(argv, None, _read(out), _read(err), wall_s=wall, hang=hang)
        if hang:
            outcome.note = f"killed after {hang_s:g} s"
            return outcome
        try:
            rep = json.loads(data.decode() or "{}")
        except ValueError:
            rep = {}
        if not rep:
            outcome.note = f"child died ({_status(status)})"
            outcome.traceback = outcome.note
            return outcome
        outcome.code = rep.get("code")
        outcome.cpu_s = rep.get("cpu_s", 0.0)
        outcome.traceback = rep.get("traceback")
        outcome.fenced = rep.get("fenced")
        return outcome


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


def _read(path: str, limit: int = 1 << 20) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode(errors="replace")
    except OSError:
        return ""


def problems(o: Outcome, *, ok_cpu_s: float = 10.0) -> list[str]:
    """Everything wrong with an outcome under the bad-input rule (empty: fine)."""
    found = []
    if o.hang:
        found.append(f"hang: {o.note}")
        return found
    if o.traceback:
        found.append("traceback: " + o.traceback.strip().splitlines()[-1][:300])
        return found
    if "Traceback (most recent call last)" in o.stderr:
        found.append("traceback text on stderr")
    allowed = ALLOWED_CODES.get(o.command, DEFAULT_CODES)
    if o.code not in allowed:
        found.append(f"exit code {o.code} (allowed {sorted(allowed)}): {o.stderr.strip()[:200]!r}")
    if o.code == 2:
        lines = o.stderr.rstrip("\n").split("\n")
        if len(lines) != 1 or not lines[0].strip():
            found.append(f"exit 2 with {len(lines)} line(s) on stderr: {o.stderr[:300]!r}")
        elif len(lines[0]) > 2000:
            found.append(f"exit 2 with a {len(lines[0])}-character line")
        if o.cpu_s > REFUSE_CPU_S:
            found.append(f"refused after {o.cpu_s:.2f} s of CPU (limit {REFUSE_CPU_S} s)")
    elif o.cpu_s > ok_cpu_s:
        found.append(f"took {o.cpu_s:.2f} s of CPU (limit {ok_cpu_s} s)")
    return found


def judge(o: Outcome, *, ok_cpu_s: float = 10.0, label: str = "") -> list[str]:
    """Count the outcome; in CI, fail the test on any problem (survey mode logs it instead)."""
    found = problems(o, ok_cpu_s=ok_cpu_s)
    every = os.environ.get("SIMKVM_FUZZ_ALL")
    if every:  # every outcome, one JSON line each (scripts/fuzz.sh --all)
        with open(every, "a") as fh:
            fh.write(json.dumps({"label": label, "argv": [_short(a) for a in o.argv], "code": o.code,
                                 "cpu_s": round(o.cpu_s, 3), "fenced": o.fenced, "problems": found,
                                 "stderr": o.stderr[-300:]}) + "\n")
    TALLY.inputs += 1
    TALLY.cpu_s += o.cpu_s
    if o.code == 2:
        TALLY.slowest_refusal_s = max(TALLY.slowest_refusal_s, o.cpu_s)
    TALLY.by_command[o.command] += 1
    TALLY.codes["hang" if o.hang else "traceback" if o.traceback else o.code] += 1
    if found:
        if o.hang:
            TALLY.hangs += 1
        elif o.traceback or "traceback" in found[0]:
            TALLY.tracebacks += 1
        else:
            TALLY.other += 1
        line = f"{label or 'input'}: simkvm {' '.join(_short(a) for a in o.argv)} -> {'; '.join(found)}"
        TALLY.failures.append(line)
        log = os.environ.get("SIMKVM_FUZZ_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write(json.dumps({"label": label, "argv": o.argv, "problems": found,
                                     "stderr": o.stderr[-500:], "traceback": o.traceback}) + "\n")
        if not SURVEY:
            raise AssertionError(line)
    return found


def _short(a: str) -> str:
    return a if len(a) <= 80 else a[:60] + f"...({len(a)} chars)"


def check(argv: Sequence[str], cwd: str | Path | None = None, *, ok_cpu_s: float = 10.0,
          label: str = "") -> Outcome:
    o = run(argv, cwd)
    if o.hang:  # a hang is one twice: a machine busy with other work can stall a child once
        o = run(argv, cwd)
    judge(o, ok_cpu_s=ok_cpu_s, label=label)
    return o
