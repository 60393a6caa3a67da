"""The real two-host libvirt testbed (hosts "a" and "b" on this machine) and its guest."""
