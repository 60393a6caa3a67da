"""Every hand-found hostile input: refused in one line with exit 2 (or answered), never a traceback or hang."""
from __future__ import annotations

from pathlib import Path

import pytest

import fuzzkit
from catalogue import CASES, Case


def run_case(case: Case, tmp_path: Path) -> fuzzkit.Outcome:
    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if case.setup:
        case.setup(str(tmp_path))
    return fuzzkit.run(case.argv, cwd=tmp_path)


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_hostile_input(case: Case, fuzzdir: Path) -> None:
    tmp_path = fuzzdir / f"hostile{CASES.index(case)}"
    tmp_path.mkdir()
    outcome = run_case(case, tmp_path)
    if outcome.hang:  # a hang is one twice (see fuzzkit.check)
        outcome = fuzzkit.run(case.argv, cwd=tmp_path)
    fuzzkit.judge(outcome, label=case.label)


def test_catalogue_is_complete() -> None:
    """The issue's hostile inputs are all in the catalogue (a rename must not drop one)."""
    labels = {c.label for c in CASES}
    for needed in ("non-UTF-8 plan", "directory as plan", "nesting 5000 deep", "5000-digit number",
                   "max_iterations .nan", "host.dirty_rate_factor .nan", "vm.page_size 0",
                   "host.mirror_granularity 0", "phase scale .nan", "nova steps abc", "profile a directory",
                   "profile a number", "--profile /dev/zero", "disks as a mapping", "--disk-allocated without --disk",
                   "--bandwidth 1e-300", "--plot /nonexistent/x.png", "--max-downtime 1e-20", "alias bomb",
                   "nova steps 1e9", "max_iterations 0, max_time 1e9 s, not converging", "100,000 layout shares",
                   "sweep 1 ns step over 1000 s", "sweep 1e10-point grid", "sweep log num 1e12"):
        assert needed in labels, needed
