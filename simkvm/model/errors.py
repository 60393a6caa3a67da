"""One family of exceptions for everything a user can get wrong.

The CLI turns :class:`UserError` into one line on stderr and exit code 2;
anything else is a bug in simkvm and keeps its traceback.
"""
from __future__ import annotations


class SimkvmError(Exception):
    """Base of every error simkvm raises on purpose."""


class UserError(SimkvmError, ValueError):
    """The input is wrong: the message says what was given and what would be right."""


class PlanError(UserError):
    """A plan file or dict is invalid (unknown key, bad unit, impossible value)."""


class EnvironmentProblem(SimkvmError):
    """The machine is not ready (a package, a daemon, a host is missing).

    Exit code 2 as well: the message names the command that fixes it.
    """


class MigrationFailed(SimkvmError):
    """A real migration did not complete; ``vm_location`` says where the VM is now."""

    def __init__(self, message: str, vm_location: str = "unknown") -> None:
        super().__init__(message)
        self.vm_location = vm_location
