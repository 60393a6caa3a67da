#!/usr/bin/env bash
# One command from a fresh machine: install everything, then predict the built-in example plan.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-system.sh
bash scripts/setup-python.sh
simkvm predict plans/example.yaml --plot example-timeline.png
