"""Shared fixtures. ``testbed``: the real two-host libvirt testbed.

One testbed per pytest session, brought up once and always taken down at the
end. It is private to the session: unless SIMKVM_TESTBED_DIR is set, the
session gets its own state dir and ports (exported through the environment,
so ``Testbed()`` anywhere in the session, and any ``simkvm`` subprocess,
finds it) and never touches a developer's ``simkvm testbed up`` or another
session running at the same time. The guest build and libvirt's QEMU probe
are cached in a shared directory so a fresh testbed still starts in < 1 s.

The session testbed is parametrised by QEMU/libvirt stack (simkvm.testbed.stack):
the testbed's and the executor's tests run once on Debian 12's QEMU 7.2 /
libvirt 9.0 and once on bookworm-backports' QEMU 10.0 / libvirt 11.3 (pytest
groups the tests by stack, so each stack's testbed comes up once). The campaign
and notebook tests check predictions against the profile calibrated on QEMU 7.2,
so they run on debian12 only (QEMU 10 has its own campaign). SIMKVM_TESTBED_STACKS=debian12 (a
comma-separated list) narrows that; a testbed chosen with SIMKVM_TESTBED_DIR
runs on its own stack only (SIMKVM_TESTBED_STACK, else the default).

Without the system packages (or a stack's root) the testbed tests are skipped on
a developer's machine, but fail in CI (``CI=true``): there a missing package is a
broken pipeline, not a reason to pass.
"""
from __future__ import annotations

import os
import shutil
import socket
from typing import Any, Iterator

import pytest

from simkvm.model.errors import EnvironmentProblem

SHARED_CACHE = "/var/cache/simkvm-testbed"
#: How long a test guest may take to print READY. ~5 s on an idle machine (QEMU 7.2 TCG), but the
#: 2 cores are shared: with other sessions' guests running, 60-100 s was measured (load ~20).
from testbed_limits import BOOT_TIMEOUT_S  # noqa: E402,F401


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _ports_free(base: int) -> bool:
    """Both hosts' libvirtd ports free (migration ranges follow the base)."""
    for port in (base, base + 1):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


#: Test modules that run on every stack; the others' tests run on the first stack only.
EVERY_STACK_MODULES = frozenset({
    "test_testbed", "test_testbed_link", "test_executor", "test_executor_policies", "test_preflight",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    first = _session_stacks()[0]
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        stack = callspec.params.get("_testbed_session") if callspec else None
        module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
        (drop if stack not in (None, first) and module not in EVERY_STACK_MODULES else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


#: Seconds spent per testbed stack (setup + call + teardown of every test that used the testbed), for the
#: summary CI prints: the README's "how long the real migrations take per stack" is read from it.
_STACK_SECONDS: dict[str, list[float]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    stack = _STACK_OF_NODE.get(report.nodeid)
    if stack is not None:
        entry = _STACK_SECONDS.setdefault(stack, [0.0, 0])
        entry[0] += report.duration
        if report.when == "call":
            entry[1] += 1


_STACK_OF_NODE: dict[str, str] = {}


def pytest_itemcollected(item: pytest.Item) -> None:
    if "_testbed_session" in getattr(item, "fixturenames", ()):
        callspec = getattr(item, "callspec", None)
        stack = callspec.params.get("_testbed_session") if callspec else None
        _STACK_OF_NODE[item.nodeid] = str(stack or "default")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _STACK_SECONDS:
        return
    terminalreporter.section("simkvm testbed time per stack")
    for stack, (seconds, count) in _STACK_SECONDS.items():
        terminalreporter.write_line(f"{stack}: {int(count)} tests on the real testbed, {seconds:.0f} s ({seconds / 60:.1f} min; "
                                    "setup, call and teardown, the stack's testbed bring-up included)")


def _session_stacks() -> list[str]:
    if os.environ.get("SIMKVM_TESTBED_DIR"):
        return [os.environ.get("SIMKVM_TESTBED_STACK") or "default"]
    return [s.strip() for s in os.environ.get("SIMKVM_TESTBED_STACKS", "debian12,backports").split(",") if s.strip()]


def _private_testbed_env(stack: str) -> dict[str, str]:
    if os.environ.get("SIMKVM_TESTBED_DIR"):
        return {}  # the user chose a testbed: use it as is
    env = {"SIMKVM_TESTBED_DIR": f"/var/lib/simkvm-testbed-pytest-{os.getpid()}", "SIMKVM_TESTBED_STACK": stack,
           "SIMKVM_TESTBED_CACHE": os.environ.get("SIMKVM_TESTBED_CACHE", SHARED_CACHE)}
    start = os.getpid() % 150
    for k in range(150):
        base = 30000 + 100 * ((start + k) % 150)
        if _ports_free(base):
            env["SIMKVM_TESTBED_PORT"] = str(base)
            return env
    pytest.fail("no free port pair for a private testbed between 30000 and 45000")


@pytest.fixture(scope="session", params=_session_stacks())
def _testbed_session(request: pytest.FixtureRequest) -> Iterator[Any]:
    from simkvm.testbed import Testbed, check_environment
    from simkvm.testbed.stack import get_stack

    stack = request.param
    try:
        check_environment(get_stack(None if stack == "default" else stack))
    except EnvironmentProblem as exc:
        if _in_ci():
            pytest.fail(f"CI=true and the testbed cannot run: {exc}", pytrace=False)
        pytest.skip(f"testbed prerequisites missing (not in CI, so skipping): {exc}")
    env = _private_testbed_env(stack)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    tb = Testbed()
    try:
        tb.up()
        yield tb
    finally:
        try:
            tb.down()
        finally:
            if env:
                shutil.rmtree(tb.state_dir, ignore_errors=True)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture
def testbed(_testbed_session):
    """The running testbed (a ``simkvm.testbed.Testbed``).

    ``up()`` again before each test: it is idempotent (~30 ms when healthy)
    and brings the hosts back if an earlier test took them down.
    """
    _testbed_session.up()
    return _testbed_session


@pytest.fixture
def guest_factory(testbed):
    """make(name, memory_bytes, disk_bytes, **workload): a READY testbed guest on host a,
    removed from every host after the test. Modules wrap it with their own defaults."""
    from simkvm.testbed.guest import define_guest, remove_guest, wait_ready

    names = []

    def make(name: str, memory_bytes: int, disk_bytes: int, **kw):
        names.append(name)
        define_guest(name, memory_bytes, disk_bytes, host="a", replace=True, testbed=testbed, **kw)
        wait_ready(name, BOOT_TIMEOUT_S, testbed=testbed)
        return name

    yield make
    for name in names:
        remove_guest(name, testbed=testbed)
