#!/usr/bin/env python3
"""Regenerate (``--write``) or check (``--check``) every command output shown in README.md.

The README marks each block that shows what a command prints with an HTML
comment on the line before it, so a shown output can never drift from the code:

``<!-- output: simkvm predict plans/example.yaml -->``
    followed by a fenced block: the script runs the command (``simkvm`` is this
    checkout's ``python -m simkvm``, from the repository root) and writes
    ``$ COMMAND`` and its stdout into the block. Followed by a table instead of
    a fence (``--markdown`` output), it replaces the lines up to the next blank
    line.
``<!-- recorded: DATE, MACHINE: WHY -->``
    an output from a live testbed or a real host (preflight, a real migration),
    kept as recorded on that date and machine; not regenerated, on purpose.
``<!-- usage -->``
    a synopsis that shows no output.

Every ``text`` block must carry one of them (``tests/test_readme.py`` fails
otherwise, and when ``--check`` finds a difference). After a change that moves
a number, run ``python scripts/readme.py --write`` and commit the README.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"^<!--\s*(output|recorded|usage)\s*(?::\s*(.*?))?\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    kind: str  # output | recorded | usage
    argument: str  # the command, or the recording's date/machine/why
    marker_line: int  # 0-based index of the marker
    start: int  # first line of the content (after an opening fence)
    end: int  # one past the last line of the content
    fenced: bool


def parse(lines: list[str]) -> tuple[list[Block], list[int]]:
    """The marked blocks, and the (0-based) opening lines of ``text`` fences that carry no marker."""
    blocks: list[Block] = []
    unmarked: list[int] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence:
            close = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            marker = MARKER.match(lines[i - 1]) if i else None
            if marker:
                blocks.append(Block(marker.group(1), marker.group(2) or "", i - 1, i + 1, close, True))
            elif fence.group(1) == "text":
                unmarked.append(i)
            i = close + 1
            continue
        marker = MARKER.match(lines[i])
        if marker and i + 1 < len(lines) and not FENCE.match(lines[i + 1]):
            end = i + 1
            while end < len(lines) and lines[end].strip():
                end += 1
            blocks.append(Block(marker.group(1), marker.group(2) or "", i, i + 1, end, False))
            i = end
            continue
        i += 1
    return blocks, unmarked


def run(command: str) -> list[str]:
    """What the command prints on stdout, from this checkout, in the repository root."""
    argv = shlex.split(command)
    if argv[0] != "simkvm":
        raise SystemExit(f"README output marker must run simkvm, got {command!r}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", "COLUMNS": "100"}
    proc = subprocess.run([sys.executable, "-m", "simkvm", *argv[1:]], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    if proc.returncode not in (0, 1, 3):  # 1/3: a verdict (failed migration, NO-GO) is still an output
        raise SystemExit(f"{command!r} exited {proc.returncode}: {proc.stderr.strip()}")
    return [line.rstrip() for line in proc.stdout.rstrip("\n").split("\n")]


def regenerate(text: str) -> str:
    lines = text.split("\n")
    blocks, _ = parse(lines)
    for block in reversed(blocks):  # from the bottom: earlier indices stay valid
        if block.kind != "output":
            continue
        new = run(block.argument)
        if block.fenced:
            new = [f"$ {block.argument}"] + new
        lines[block.start:block.end] = new
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite README.md's output blocks in place")
    mode.add_argument("--check", action="store_true", help="exit 1 and show the diff when README.md is stale")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    current = args.readme.read_text()
    _, unmarked = parse(current.split("\n"))
    if unmarked:
        print(f"{args.readme}: text blocks without an output/recorded/usage marker at lines "
              + ", ".join(str(i + 1) for i in unmarked), file=sys.stderr)
        return 1
    fresh = regenerate(current)
    if args.write:
        if fresh != current:
            args.readme.write_text(fresh)
            print(f"{args.readme}: output blocks regenerated")
        return 0
    if fresh != current:
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), fresh.splitlines(True),
                                                   "README.md", "regenerated"))
        print("README.md is stale: run `python scripts/readme.py --write` and commit it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
