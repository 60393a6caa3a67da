"""The README cannot drift: its shown outputs are regenerated and compared, its Python examples run.

``scripts/readme.py`` runs every command marked ``<!-- output: ... -->`` and
compares what it prints with the block in the README; outputs that need a live
testbed are marked ``<!-- recorded: DATE, MACHINE: ... -->`` and excluded by
name, never silently.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import readme  # noqa: E402

README = (ROOT / "README.md").read_text()


def test_every_text_block_is_generated_recorded_or_usage():
    blocks, unmarked = readme.parse(README.split("\n"))
    assert not unmarked, f"README text blocks without a marker at lines {[i + 1 for i in unmarked]}"
    assert sum(b.kind == "output" for b in blocks) >= 3
    for block in blocks:
        if block.kind == "recorded":  # a recorded example says when and where
            assert re.match(r"\d{4}-\d{2}-\d{2}, \S", block.argument), block.argument


def test_shown_outputs_are_what_the_commands_print_today():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme.py"), "--check"], capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr


def test_the_checker_sees_a_changed_number(tmp_path):
    """The check can fail: one digit changed in a generated block is reported."""
    block = next(b for b in readme.parse(README.split("\n"))[0] if b.kind == "output" and "predict" in b.argument)
    lines = README.split("\n")
    lines[block.start + 2] = lines[block.start + 2] + " (edited by hand)"
    stale = tmp_path / "README.md"
    stale.write_text("\n".join(lines))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme.py"), "--check", "--readme", str(stale)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1 and "edited by hand" in proc.stdout


PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)


@pytest.mark.parametrize("code", PYTHON_BLOCKS, ids=[f"python-block-{i}" for i in range(len(PYTHON_BLOCKS))])
def test_python_examples_run(code):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
