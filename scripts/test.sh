#!/usr/bin/env bash
# One command: install what the tests need (system packages for the real testbed, Python extras,
# the QEMU 10 / libvirt 11 stack next to the system one), then lint and type-check simkvm/ and run
# every test, the real migrations on the two-host testbed included (on both stacks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-system.sh
bash scripts/setup-stack.sh
bash scripts/setup-python.sh
python3 -m ruff check simkvm   # lint and import order (pyproject.toml [tool.ruff])
python3 -m mypy                # types of simkvm/ (pyproject.toml [tool.mypy])
python3 -m pytest -q "$@"
