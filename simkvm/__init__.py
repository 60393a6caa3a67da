"""simkvm: predict and check KVM/QEMU live migrations.

One plan (:class:`Plan`), two halves: :func:`simulate` predicts with a SimPy
model of QEMU's pre-copy and libvirt's disk mirror; the executor
(``simkvm migrate``) runs the same plan on real libvirt. Both return a
:class:`Result` with the same fields and per-iteration ``rounds`` table.
"""
from . import (
    planner,
    policies,
    sweep,  # noqa: F401  simkvm.sweep(spec) -> DataFrame; simkvm.sweep.run_sweep(...)
)
from .load import load_plan
from .model.errors import EnvironmentProblem, MigrationFailed, PlanError, SimkvmError, UserError
from .model.plan import Plan
from .model.result import Result
from .sim import simulate

__version__ = "0.1.0"


def __getattr__(name: str):
    """``simkvm.plot`` on first use: matplotlib loads only for those who draw (the CLI starts faster)."""
    if name == "plot":
        import importlib

        return importlib.import_module(".plot", __name__)
    raise AttributeError(f"module 'simkvm' has no attribute {name!r}")

__all__ = ["Plan", "load_plan", "Result", "simulate", "sweep", "planner", "plot", "policies", "SimkvmError", "UserError", "PlanError", "EnvironmentProblem",
           "MigrationFailed", "__version__"]
