"""The host kernel's share of the destination's first writes: fresh anonymous memory, as QEMU's guest
RAM is (madvised MADV_HUGEPAGE by ram_block_add()), written one page per 2 MiB (sparse) and every
4 KiB page (dense), in rounds that each free their memory before the next (a later round may get
memory the host handed out before; the first may not, on a nested VM a dearer first use). --no-thp
madvises MADV_NOHUGEPAGE instead. README, the v26 / q10s round's model work:

    python experiments/first_write.py 0.25 3 [--no-thp]
"""
from __future__ import annotations

import argparse
import mmap
import time

import numpy as np

GiB = 2**30


def first_write_s(size_bytes: int, stride: int, huge: bool = True) -> float:
    """Seconds to write one byte every ``stride`` bytes of fresh anonymous memory."""
    m = mmap.mmap(-1, size_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_HUGEPAGE if huge else mmap.MADV_NOHUGEPAGE)
    a = np.frombuffer(m, dtype=np.uint8)
    start = time.perf_counter()
    a[::stride] = 1
    elapsed = time.perf_counter() - start
    del a
    m.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gib", type=float, help="memory per measurement, GiB")
    ap.add_argument("rounds", type=int)
    ap.add_argument("--no-thp", action="store_true", help="MADV_NOHUGEPAGE instead of MADV_HUGEPAGE")
    args = ap.parse_args()
    size = int(args.gib * GiB)
    for k in range(args.rounds):
        for name, stride in (("sparse", 2 * 2**20), ("dense", 4096)):
            s = first_write_s(size, stride, huge=not args.no_thp)
            print(f"round {k} {name:6s}: {1e6 * s / (size / 2**21):7.1f} us per 2 MiB, "
                  f"{1e6 * s / (size / 4096):5.2f} us per 4 KiB page", flush=True)


if __name__ == "__main__":
    main()
