"""The SimPy model of a KVM/QEMU live migration (see engine.migration for the outline)."""
from .engine import simulate, start_migration

__all__ = ["simulate", "start_migration"]
