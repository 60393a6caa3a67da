"""Processes and namespaces of the testbed hosts: is it alive, whose namespace is it in, stop it for sure.

Why a module of its own: ``up``, ``down`` and the stale-host cleanup all ask
the same questions of ``/proc`` and must agree on the answers (a pid may be
reused, a zombie is not alive, a process in our own mount namespace is never
a host's).
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import Iterator, Sequence

from ..model.errors import EnvironmentProblem


def pid_alive(pid: int | None) -> bool:
    """True for a live, non-zombie process."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    """While a host is killed, orphans of our descendants (virtlogd, once libvirtd is gone)
    become our children, so :func:`reap` can collect them too. Only for that window: kept
    on, every QEMU libvirtd daemonizes would come to us."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        libc, ok = None, False
    try:
        yield
    finally:
        if ok and libc is not None:
            libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def reap(pids: Sequence[int]) -> None:
    """Collect the exit status of those of ``pids`` that are our children (libvirtd when this
    process ran ``up``), so no zombie is left; the others are their parents' business."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def mnt_ns(pid: int | str) -> str | None:
    """The mount namespace of ``pid`` ("self" for ours), e.g. ``mnt:[4026532201]``."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def comm(pid: int | str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def pids_in_ns(ns: str) -> list[int]:
    """Every live process whose mount namespace is ``ns``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and mnt_ns(entry) == ns and pid_alive(int(entry)):
            out.append(int(entry))
    return out


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def unix_socket_open(path: str) -> bool:
    """Something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        try:
            s.connect(path)
        except OSError:
            return False
        return True


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def signal_until_gone(pids: list[int]) -> None:
    """SIGTERM, wait up to 5 s, then SIGKILL and wait again; EnvironmentProblem if one survives."""
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.05)
        reap(pids)
        pids = [p for p in pids if pid_alive(p)]
        if not pids:
            return
    raise EnvironmentProblem(f"testbed processes {pids} survived SIGKILL; check 'ps -p {pids[0]}'")
