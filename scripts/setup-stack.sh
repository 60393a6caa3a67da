#!/usr/bin/env bash
# Install a second QEMU/libvirt stack next to the system one, without touching it.
#
# Usage: scripts/setup-stack.sh [STACK...]     (default: every stack below)
#
# Stacks:
#   debian12   QEMU 7.2 / libvirt 9.0 from the system (scripts/setup-system.sh); nothing to do here
#   backports  QEMU 10.0 / libvirt 11.3 from Debian bookworm-backports, in a root
#              built by mmdebstrap under /opt/simkvm/stacks/backports
#
# Why a separate root: installing the backports packages on the system would
# replace QEMU 7.2 / libvirt 9.0, and the testbed must run both (validation
# campaigns compare them). The testbed runs the root's libvirtd chrooted inside
# each host's namespace (simkvm/testbed/stack.py), with /dev, /proc, /sys and
# the testbed's own directories bind-mounted in.
#
# Idempotent: a finished root carries a stamp naming the packages it was built
# with; a second run only checks the stamp (well under a second). The mirror is
# the one this machine's apt sources already use (never hard-coded here).
set -euo pipefail

STACKS_DIR=${SIMKVM_STACKS_DIR:-/opt/simkvm/stacks}
BACKPORTS_PACKAGES=(
    qemu-system-x86 qemu-utils
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-driver-storage
    libvirt-daemon-log libvirt-daemon-lock
    libvirt-clients
)

if [[ $(id -u) -ne 0 ]]; then
    echo "setup-stack.sh: run as root (it builds a Debian root with mmdebstrap)" >&2
    exit 2
fi

# The Debian mirror this machine already uses: first deb.* URI of a "main"
# bookworm source (deb822 .sources or one-line .list format).
debian_mirror() {
    local uri
    uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ && u {print u; exit}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [[ -z "$uri" ]]; then
        uri=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    fi
    if [[ -z "$uri" ]]; then
        echo "setup-stack.sh: no Debian bookworm source in /etc/apt/sources.list*; add one and retry" >&2
        exit 1
    fi
    echo "${uri%/}"
}

build_backports() {
    local root="$STACKS_DIR/backports" stamp want
    stamp="$root/.simkvm-stack"
    want="backports ${BACKPORTS_PACKAGES[*]}"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        echo "setup-stack.sh: backports stack ready in $root ($(chroot "$root" qemu-system-x86_64 --version | head -1))"
        return
    fi
    if [[ -f "$stamp" ]]; then
        # Built before with another package list: add what is missing in place.
        local start=$(date +%s)
        echo "setup-stack.sh: updating the backports stack in $root (${BACKPORTS_PACKAGES[*]})"
        chroot "$root" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
            "${BACKPORTS_PACKAGES[@]}"
        chroot "$root" apt-get clean
        echo "$want" > "$stamp"
        echo "setup-stack.sh: backports stack updated in $(( $(date +%s) - start )) s"
        return
    fi
    if ! command -v mmdebstrap >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap
    fi
    local mirror start tmp
    mirror=$(debian_mirror)
    start=$(date +%s)
    tmp="$root.tmp"
    rm -rf "$tmp"
    mkdir -p "$STACKS_DIR"
    echo "setup-stack.sh: building the backports stack in $root from $mirror (a few minutes)"
    # Backports are pinned at 500 like bookworm, so the newest version wins
    # (by default apt pins backports at 100 and would pick QEMU 7.2).
    mmdebstrap --variant=apt --mode=root \
        --setup-hook='mkdir -p "$1/etc/apt/preferences.d" && printf "Package: *\nPin: release n=bookworm-backports\nPin-Priority: 500\n" > "$1/etc/apt/preferences.d/backports"' \
        --include="$(IFS=,; echo "${BACKPORTS_PACKAGES[*]}")" \
        --aptopt='APT::Install-Recommends "false"' \
        bookworm "$tmp" \
        "deb $mirror bookworm main" "deb $mirror bookworm-backports main"
    rm -rf "$root"
    mv "$tmp" "$root"
    echo "$want" > "$stamp"
    echo "setup-stack.sh: backports stack built in $(( $(date +%s) - start )) s:" \
        "$(chroot "$root" qemu-system-x86_64 --version | head -1);" \
        "$(chroot "$root" libvirtd --version)"
}

stacks=("$@")
(( ${#stacks[@]} )) || stacks=(backports)
for stack in "${stacks[@]}"; do
    case "$stack" in
        debian12) echo "setup-stack.sh: debian12 is the system stack (scripts/setup-system.sh)";;
        backports) build_backports;;
        *) echo "setup-stack.sh: unknown stack '$stack' (known: debian12, backports)" >&2; exit 2;;
    esac
done
