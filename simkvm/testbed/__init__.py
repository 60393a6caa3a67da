"""The real two-host libvirt testbed on one machine, and its workload guest.

Hosts "a" and "b" are two libvirtd daemons in private mount+UTS namespaces
(see :mod:`simkvm.testbed.hosts`); the guest is a distro kernel plus a static
workload program that dirties memory and disk at set rates and checks
canaries (see :mod:`simkvm.testbed.guest`). The executor uses this to run
real migrations whose outcome can be compared with the simulator's.
"""
from .guest import (
    METADATA_URI,
    ConsoleLine,
    GuestImage,
    GuestTimeout,
    GuestWorkload,
    build_initramfs,
    console_lines,
    console_path,
    create_destination_disks,
    create_volume,
    define_guest,
    delete_volume,
    parse_console,
    read_guest_workload,
    remove_guest,
    volume_path,
    wait_for_console,
    wait_ready,
)
from .hosts import HOST_NAMES, POOL_NAME, POOL_PATH, HostState, Testbed, check_environment

__all__ = [
    "HOST_NAMES", "METADATA_URI", "POOL_NAME", "POOL_PATH", "ConsoleLine", "GuestImage", "GuestTimeout",
    "GuestWorkload", "HostState", "Testbed", "build_initramfs", "check_environment", "console_lines",
    "console_path", "create_destination_disks", "create_volume", "define_guest", "delete_volume", "parse_console",
    "read_guest_workload", "remove_guest", "volume_path", "wait_for_console", "wait_ready",
]
