"""Shared fixtures. ``testbed``: the real two-host libvirt testbed.

It is brought up once per session (``Testbed().up()``, so its URIs are the
ones every other part of simkvm computes) and always taken down at the end.
Without the system packages the testbed tests are skipped on a developer's
machine, but fail in CI (``CI=true``): there a missing package is a broken
pipeline, not a reason to pass.
"""
from __future__ import annotations

import os
from typing import Iterator

import pytest

from simkvm.errors import EnvironmentProblem


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def _testbed_session() -> Iterator["object"]:
    from simkvm.testbed import Testbed, check_environment

    try:
        check_environment()
    except EnvironmentProblem as exc:
        if _in_ci():
            pytest.fail(f"CI=true and the testbed cannot run: {exc}", pytrace=False)
        pytest.skip(f"testbed prerequisites missing (not in CI, so skipping): {exc}")
    tb = Testbed()
    try:
        tb.up()
        yield tb
    finally:
        tb.down()


@pytest.fixture
def testbed(_testbed_session):
    """The running testbed (a ``simkvm.testbed.Testbed``).

    ``up()`` again before each test: it is idempotent (~30 ms when healthy)
    and brings the hosts back if an earlier test took them down.
    """
    _testbed_session.up()
    return _testbed_session
