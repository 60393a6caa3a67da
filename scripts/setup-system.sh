#!/usr/bin/env bash
# Install the system packages the real two-host libvirt testbed needs.
#
# Why a script: `simkvm testbed up` must not install anything itself (it would
# need root, the network and minutes). This script is idempotent: it asks dpkg
# what is missing first, so a second run takes well under a second, and it
# runs `apt-get update` at most once per invocation.
#
# Package postinst scripts may start libvirtd/virtlogd in the root namespace
# (there is no systemd here to own them). The testbed runs its own daemons in
# private namespaces, so any daemon the install started is stopped again.
set -euo pipefail

PACKAGES=(
    qemu-system-x86 qemu-utils
    libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
    linux-image-amd64 busybox-static
    gcc libc6-dev
    iproute2 kmod cpio
    mmdebstrap  # scripts/setup-stack.sh builds the QEMU 10 / libvirt 11 root with it
)

if [[ $(id -u) -ne 0 ]]; then
    echo "setup-system.sh: run as root (it installs Debian packages with apt-get)" >&2
    exit 2
fi

# Another apt/dpkg may be running (e.g. a provisioning step): wait for it
# rather than failing on the dpkg lock.
wait_for_dpkg() {
    local waited=0
    while pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null || pgrep -x apt >/dev/null; do
        if (( waited == 0 )); then
            echo "setup-system.sh: waiting for another apt/dpkg to finish..." >&2
        fi
        sleep 2
        waited=$((waited + 2))
        if (( waited > 1800 )); then
            echo "setup-system.sh: another apt/dpkg has been running for 30 min; stop it and retry" >&2
            exit 1
        fi
    done
}

missing_packages() {
    local pkg status
    for pkg in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
        if [[ "$status" != "installed" ]]; then
            echo "$pkg"
        fi
    done
}

# Pids of daemons running in the root mount namespace (ours run in private
# namespaces and must be left alone).
root_ns_daemons() {
    local root_ns pid
    root_ns=$(readlink /proc/self/ns/mnt)
    for pid in $(pgrep -x libvirtd; pgrep -x virtlogd; pgrep -x virtlockd); do
        if [[ $(readlink "/proc/$pid/ns/mnt" 2>/dev/null) == "$root_ns" ]]; then
            echo "$pid"
        fi
    done
}

wait_for_dpkg
mapfile -t missing < <(missing_packages)
if (( ${#missing[@]} == 0 )); then
    echo "setup-system.sh: all ${#PACKAGES[@]} packages already installed"
else
    echo "setup-system.sh: installing ${missing[*]}"
    before=$(root_ns_daemons | sort | tr '\n' ' ')
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${PACKAGES[@]}"
    # Stop daemons the postinst scripts started (only ones that were not
    # running before we began).
    for pid in $(root_ns_daemons); do
        if [[ " $before " != *" $pid "* ]]; then
            echo "setup-system.sh: stopping $(cat /proc/$pid/comm 2>/dev/null) (pid $pid) started by the install"
            kill "$pid" 2>/dev/null || true
        fi
    done
fi

# libvirt-python builds against libvirt-dev; tell the user if it is missing.
if ! python3 -c 'import libvirt' 2>/dev/null; then
    echo "setup-system.sh: python module 'libvirt' missing: run 'pip install -e .[all]' (or 'pip install libvirt-python')" >&2
fi
echo "setup-system.sh: done"
