"""Fuzz suite plumbing: modules imported once before the forks, the figures in the terminal summary."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import fuzzkit  # noqa: E402

# Imported here, once, so every forked child starts with them loaded (a fork costs ~6 ms, an import ~0.5 s).
import simkvm.cli  # noqa: E402,F401

simkvm.cli.build_parser()
import simkvm.validation.runner  # noqa: E402,F401
import simkvm.commands.migrate  # noqa: E402,F401
import simkvm.executor.run  # noqa: E402,F401
import simkvm.preflight  # noqa: E402,F401
import simkvm.sim  # noqa: E402,F401
import simkvm.sweep  # noqa: E402,F401
import simkvm.plot  # noqa: E402,F401  (matplotlib: ~1 s to import)
import pandas  # noqa: E402,F401  (sweeps and campaign reports: ~0.5 s)
import pyarrow.parquet  # noqa: E402,F401
import simkvm.compare  # noqa: E402,F401


@pytest.fixture(scope="session")
def fuzzdir():
    """The inputs' files, in a directory of this session's own (pytest's shared base directory is pruned
    by other sessions running at the same time)."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="simkvm-fuzz-inputs-"))
    yield path
    if os.environ.get("SIMKVM_FUZZ_KEEP"):  # scripts/fuzz.sh: the failures' files, to look at
        print(f"\nsimkvm fuzz: the inputs' files are kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    t = fuzzkit.TALLY
    if not t.inputs:
        return
    tr = terminalreporter
    tr.section("simkvm fuzz")
    tr.write_line(f"{t.inputs:,} inputs run through simkvm.cli.main: {t.tracebacks} traceback(s), "
                  f"{t.hangs} hang(s), {t.other} other failure(s) (wrong exit code, message, or too slow); "
                  f"{t.cpu_s:.0f} s of CPU in the commands, slowest refusal {t.slowest_refusal_s:.2f} s")
    tr.write_line("by command: " + ", ".join(f"{k} {v}" for k, v in t.by_command.most_common()))
    tr.write_line("outcomes: " + ", ".join(f"{k}: {v}" for k, v in sorted(t.codes.items(), key=str)))
    for line in t.failures[:40]:
        tr.write_line("  " + line[:400])
    if len(t.failures) > 40:
        tr.write_line(f"  ... and {len(t.failures) - 40} more")
