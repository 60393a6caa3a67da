"""The SimPy model of a KVM/QEMU live migration (see engine.migration for the outline)."""
from .engine import simulate

__all__ = ["simulate"]
