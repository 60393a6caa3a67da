"""simkvm: predict and check KVM/QEMU live migrations.

One plan (:class:`Plan`), two halves: :func:`simulate` predicts with a SimPy
model of QEMU's pre-copy and libvirt's disk mirror; the executor
(``simkvm migrate``) runs the same plan on real libvirt. Both return a
:class:`Result` with the same fields and per-iteration ``rounds`` table.
"""
from .errors import EnvironmentProblem, MigrationFailed, PlanError, SimkvmError, UserError
from .plan import Plan
from .result import Result
from .sim import simulate
from . import planner
from . import policies
from . import sweep  # noqa: F401  simkvm.sweep(spec) -> DataFrame; simkvm.sweep.run_sweep(...)

__version__ = "0.1.0"
__all__ = ["Plan", "Result", "simulate", "sweep", "planner", "policies", "SimkvmError", "UserError", "PlanError", "EnvironmentProblem",
           "MigrationFailed", "__version__"]
