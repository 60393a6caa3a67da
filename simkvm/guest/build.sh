#!/usr/bin/env bash
# Build the testbed guest's initramfs: usage build.sh OUT_DIR KERNEL_VERSION
#
# Produces OUT_DIR/initramfs.cpio.gz holding
#   /init            the static workload (workload.c), PID 1
#   /modules/*.ko    virtio modules (Debian builds virtio_blk as a module)
#   /modules.order   their load order, read by /init
# Why a script: the same steps run from Python (simkvm.testbed.guest, which
# caches the result by content hash) and by hand when debugging the guest.
set -euo pipefail

out=${1:?usage: build.sh OUT_DIR KERNEL_VERSION}
kver=${2:?usage: build.sh OUT_DIR KERNEL_VERSION}
here=$(cd "$(dirname "$0")" && pwd)
moddir=/lib/modules/$kver
# Load order checked on Debian 12's 6.1 kernel: dependencies first.
modules=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover virtio_net)

stage=$(mktemp -d "${out%/}/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/modules" "$stage/dev" "$stage/proc" "$stage/sys"

gcc -static -O2 -Wall -Wextra -pthread -o "$stage/init" "$here/workload.c"
strip "$stage/init" 2>/dev/null || true

: >"$stage/modules.order"
for m in "${modules[@]}"; do
    src=$(find "$moddir/kernel" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" \) -print -quit)
    if [[ -z "$src" ]]; then
        # Built into this kernel: nothing to load.
        if grep -q "/$m.ko" "$moddir/modules.builtin" 2>/dev/null; then continue; fi
        echo "build.sh: module $m not found under $moddir (install linux-image-amd64)" >&2
        exit 1
    fi
    case "$src" in
        *.xz)  xz -dc "$src" >"$stage/modules/$m.ko" ;;
        *.zst) zstd -dc "$src" >"$stage/modules/$m.ko" ;;
        *.gz)  gzip -dc "$src" >"$stage/modules/$m.ko" ;;
        *)     cp "$src" "$stage/modules/$m.ko" ;;
    esac
    echo "$m.ko" >>"$stage/modules.order"
done

# A console node in case the kernel wants one before devtmpfs is mounted.
mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || true

(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -9n >"$out/initramfs.cpio.gz.tmp"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
echo "$out/initramfs.cpio.gz"
