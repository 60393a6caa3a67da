#!/usr/bin/env bash
# The plan whose verdict depends on the QEMU version (plans/version-testbed.yaml), measured on one
# stack: predicted with that stack's host.qemu and measured, RUNS times (a -> b, then back if it moved, ...).
#   bash scripts/testbed-version-migrations.sh debian12|backports [RUNS]
# Brings up its own testbed (SIMKVM_TESTBED_DIR / SIMKVM_TESTBED_PORT, default
# /var/lib/simkvm-testbed-version and 51800) on that stack and takes it down after; one 384 MiB
# guest writing 20 MiB/s sequentially over 240 MiB, 64 MiB disk. Each run's JSON (predicted and
# measured) goes to data/validation/version-testbed/STACK-rN.json.
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${1:?usage: $0 debian12|backports [RUNS]}
runs=${2:-2}
export SIMKVM_TESTBED_DIR=${SIMKVM_TESTBED_DIR:-/var/lib/simkvm-testbed-version}
export SIMKVM_TESTBED_PORT=${SIMKVM_TESTBED_PORT:-51800}
export SIMKVM_TESTBED_CACHE=${SIMKVM_TESTBED_CACHE:-/var/cache/simkvm-testbed}
simkvm=(python3 -m simkvm)
out=data/validation/version-testbed
mkdir -p "$out"
trap '"${simkvm[@]}" testbed down >/dev/null' EXIT
"${simkvm[@]}" testbed up --stack "$stack" | tail -1
qemu=$(python3 -c 'import sys; from simkvm.testbed.stack import get_stack; print(get_stack(sys.argv[1]).qemu)' "$stack")
"${simkvm[@]}" testbed guest vt --memory 384MiB --disk 64MiB --dirty-rate 20MiB/s --wss 240MiB --pattern seq \
    --replace --timeout 600 | head -1
plan=$(mktemp --suffix=.yaml)
sed "s/^host: {qemu: \"7.2\"}/host: {qemu: \"$qemu\"}/" plans/version-testbed.yaml > "$plan"
src=a dst=b
for n in $(seq 1 "$runs"); do
    python3 -c 'import sys; from simkvm.testbed import Testbed, delete_volume; delete_volume(Testbed().connect(sys.argv[1]), "vt")' $dst
    "${simkvm[@]}" migrate "$plan" --domain vt --src $src --dst $dst --predict --json --compact --quiet \
        > "$out/$stack-r$n.json" || true
    python3 - "$out/$stack-r$n.json" "$stack r$n ($src -> $dst)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
def line(x):
    throttle = max((a["value"] for a in x.get("actions") or [] if a.get("action") == "throttle"), default=0)
    return (f"{x['outcome']:13s} {x['total_time_s']:5.1f} s, {x['iterations']:2d} iterations, downtime "
            f"{x['downtime_s'] * 1e3:4.0f} ms, throttle up to {100 * throttle:.0f} %")
print(f"{sys.argv[2]}: predicted (QEMU {r['predicted'].get('meta', {}).get('qemu')}) {line(r['predicted'])}")
print(f"{' ' * len(sys.argv[2])}  measured  (QEMU {(r['measured'].get('meta', {}).get('source') or {}).get('hypervisor_version')}) {line(r['measured'])}")
PY
    # the guest moved only if the migration completed (an aborted one leaves it on the source)
    if python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["measured"]["converged"] else 1)' \
        "$out/$stack-r$n.json"; then
        t=$src; src=$dst; dst=$t
    fi
done
rm -f "$plan"
