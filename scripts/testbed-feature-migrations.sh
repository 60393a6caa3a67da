#!/usr/bin/env bash
# What libvirt 9.0 could not drive, for real on the QEMU 10.0 / libvirt 11.3 stack, predicted vs measured:
# multifd (zero-page detection in the channels: QEMU 10's default) with and without zstd, and
# avail-switchover-bandwidth. Also asks QEMU for dirty-limit (needs KVM's dirty ring: refused under TCG).
#
# Brings up its own testbed (SIMKVM_TESTBED_DIR / SIMKVM_TESTBED_PORT, default
# /var/lib/simkvm-testbed-features and 51700) on the backports stack, one 512 MiB guest dirtying
# 16 MiB/s at random over 64 MiB, a 32 MiB/s link; takes it down after.
set -euo pipefail
cd "$(dirname "$0")/.."
export SIMKVM_TESTBED_DIR=${SIMKVM_TESTBED_DIR:-/var/lib/simkvm-testbed-features}
export SIMKVM_TESTBED_PORT=${SIMKVM_TESTBED_PORT:-51700}
export SIMKVM_TESTBED_CACHE=${SIMKVM_TESTBED_CACHE:-/var/cache/simkvm-testbed}
simkvm=(python3 -m simkvm)
trap '"${simkvm[@]}" testbed down >/dev/null' EXIT
"${simkvm[@]}" testbed up --stack "${1:-backports}" | tail -1
"${simkvm[@]}" testbed guest ft --memory 512MiB --disk 64MiB --dirty-rate 16MiB/s --wss 64MiB --replace --timeout 600 | head -1
python3 - <<'PY'
import libvirt, libvirt_qemu
from simkvm.testbed import Testbed
dom = Testbed().connect("a").lookupByName("ft")
cmd = '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"dirty-limit","state":true}]}}'
try:
    print("dirty-limit: QEMU says", libvirt_qemu.qemuMonitorCommand(dom, cmd, 0))
except libvirt.libvirtError as exc:
    print("dirty-limit: QEMU refuses:", exc)
PY
plan=$(mktemp --suffix=.yaml)
src=a dst=b
run() {  # run LABEL YAML-LINES
    python3 -c 'import sys; from simkvm.testbed import Testbed, delete_volume; delete_volume(Testbed().connect(sys.argv[1]), "ft")' $dst
    printf 'name: feature\nlink: {bandwidth: 32MiB/s}\n%s\n' "$2" > "$plan"
    "${simkvm[@]}" migrate "$plan" --domain ft --src $src --dst $dst --predict --json --compact --quiet \
        | python3 scripts/pred-vs-meas.py "$1"
    local t=$src; src=$dst; dst=$t
}
run "plain                        " "migration: {max_downtime: 300ms, max_time: 300s}"
run "multifd x4 (zero pages in it)" $'migration: {max_downtime: 300ms, max_time: 300s}\naids: {multifd: {enabled: true, channels: 4}}'
run "multifd x4 + zstd            " $'migration: {max_downtime: 300ms, max_time: 300s}\naids: {multifd: {enabled: true, channels: 4}, compression: {method: zstd}}'
run "avail-switchover 64 MiB/s    " "migration: {max_downtime: 300ms, max_time: 300s, avail_switchover_bandwidth: 64MiB/s}"
run "avail-switchover 32 MiB/s    " "migration: {max_downtime: 300ms, max_time: 300s, avail_switchover_bandwidth: 32MiB/s}"
rm -f "$plan"
