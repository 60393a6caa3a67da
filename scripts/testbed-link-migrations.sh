#!/usr/bin/env bash
# A few migrations over the testbed's shaped link, each predicted and measured (README "Testbed": link).
#
# Brings up its own testbed with --link (SIMKVM_TESTBED_DIR / SIMKVM_TESTBED_PORT, default
# /var/lib/simkvm-testbed-link and 51600), one 256 MiB guest dirtying 4 MiB/s over 32 MiB, and
# migrates it back and forth while `simkvm testbed link` shapes the veth pair; prints one line per
# run: the link, what the plan told QEMU and the model, predicted vs measured. Takes it down after.
# Usage: scripts/testbed-link-migrations.sh [--stack debian12|backports]
set -euo pipefail
cd "$(dirname "$0")/.."
export SIMKVM_TESTBED_DIR=${SIMKVM_TESTBED_DIR:-/var/lib/simkvm-testbed-link}
export SIMKVM_TESTBED_PORT=${SIMKVM_TESTBED_PORT:-51600}
export SIMKVM_TESTBED_CACHE=${SIMKVM_TESTBED_CACHE:-/var/cache/simkvm-testbed}
simkvm=(python3 -m simkvm)
trap '"${simkvm[@]}" testbed down >/dev/null' EXIT
"${simkvm[@]}" testbed up --link "$@" | tail -1
"${simkvm[@]}" testbed guest lk --memory 256MiB --disk 64MiB --dirty-rate 4MiB/s --wss 32MiB --replace --timeout 600 | head -1
plan=$(mktemp --suffix=.yaml)
src=a dst=b
run() {  # run LINK-ARGS... -- PLAN-BANDWIDTH
    local args=() bw
    while [[ $1 != -- ]]; do args+=("$1"); shift; done
    bw=$2
    if (( ${#args[@]} )); then "${simkvm[@]}" testbed link "${args[@]}" >/dev/null; else "${simkvm[@]}" testbed link --clear >/dev/null; fi
    # The image left on the old source by the previous run (simkvm never overwrites a disk).
    python3 -c 'import sys; from simkvm.testbed import Testbed, delete_volume; delete_volume(Testbed().connect(sys.argv[1]), "lk")' $dst
    printf 'name: link\nlink: {bandwidth: %s}\nmigration: {max_downtime: 300ms, max_iterations: 30, max_time: 600s}\n' "$bw" > "$plan"
    "${simkvm[@]}" migrate "$plan" --domain lk --src $src --dst $dst --predict --json --compact --quiet \
        | python3 scripts/pred-vs-meas.py "link [${args[*]:-unshaped}] plan $bw"
    local t=$src; src=$dst; dst=$t
}
run -- 32MiB/s
run --rate 32MiB/s -- 32MiB/s
run --rate 16MiB/s -- 16MiB/s
run --rate 16MiB/s -- 64MiB/s
run --rate 32MiB/s --loss 0.1% -- 32MiB/s
run --rate 32MiB/s --loss 1% -- 32MiB/s
rm -f "$plan"
