#!/usr/bin/env bash
# A longer fuzz campaign than CI's: SCALE times the CI example counts (default 10, ~20,000 inputs),
# nothing asserted, every failure written to a JSON-lines log, the figures printed at the end.
#   scripts/fuzz.sh [SCALE] [LOG]     e.g. scripts/fuzz.sh 50 /tmp/fuzz.jsonl
# CI runs the same suite at scale 1 and fails on the first traceback, hang or bad message.
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${1:-10}"
log="${2:-fuzz-failures.jsonl}"
: > "$log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SIMKVM_FUZZ_SURVEY=1 SIMKVM_FUZZ_KEEP=1 SIMKVM_FUZZ_SCALE="$scale" SIMKVM_FUZZ_LOG="$log" \
    python3 -m pytest -q -p no:cacheprovider -p no:randomly tests/fuzz "${@:3}"
echo "failures (if any) in $log: $(wc -l < "$log")"
