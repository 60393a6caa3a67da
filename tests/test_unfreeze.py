"""A frozen source QEMU (issue 10, the link cut for good): how simkvm tells it, frees it, and when it must not.

The kernel part runs on real sockets of this process (one waiting for replies that never come, as the source
QEMU's NBD client does with the link cut): found among others and destroyed with ``ss -K``. What needs a frozen
QEMU runs on the testbed (tests/faults/test_faults.py, the link cut until simkvm ended).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simkvm.executor import unfreeze
from simkvm.executor.locate import HostView, Location
from simkvm.libvirt_api import RUNNING_STATES, STATE_NAMES

STATES = [*STATE_NAMES.values(), "absent", "unknown"]


def _can_destroy_sockets() -> str | None:
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN for SOCK_DESTROY)"
    if not shutil.which("ss"):
        return "needs iproute2's ss"
    probe = subprocess.run(["ss", "-K", "-tnH", "dst", "127.0.0.9:1"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ss -K unsupported here: {probe.stderr.strip()}"
    return None


# ------------------------------------------------------------------ the kernel's side, on real sockets
class Pair:
    """A client connected from 127.0.0.1 to a server on ``server_ip`` (both ends in this process)."""

    def __init__(self, server_ip: str) -> None:
        listener = socket.socket()
        listener.bind((server_ip, 0))
        listener.listen(1)
        self.client = socket.create_connection(listener.getsockname(), source_address=("127.0.0.1", 0))
        self.server, _ = listener.accept()
        listener.close()

    def close(self) -> None:
        self.client.close()
        self.server.close()


@pytest.mark.skipif(_can_destroy_sockets() is not None, reason=str(_can_destroy_sockets()))
def test_only_the_idle_connection_to_the_destination_is_found_and_reset():
    """Three connections of one process: to the "destination" 127.0.0.2 one waits for a reply (the NBD client
    of a frozen QEMU) and one keeps talking; one to another host (127.0.0.3) is idle. Only the first is
    stuck; after the reset its owner's read fails at once and the talking one still works."""
    stuck, busy, other = Pair("127.0.0.2"), Pair("127.0.0.2"), Pair("127.0.0.3")
    stop = threading.Event()

    def chatter() -> None:
        while not stop.is_set():
            busy.client.sendall(b"p")
            busy.server.recv(1)
            busy.server.sendall(b"q")
            busy.client.recv(1)
            time.sleep(0.05)

    talker = threading.Thread(target=chatter, daemon=True)
    try:
        stuck.client.sendall(b"a write that will never be answered")
        stuck.server.recv(100)
        talker.start()
        time.sleep(1.3)
        found = unfreeze.stuck_connections([os.getpid()], {"127.0.0.2"}, idle_s=1.0)
        assert [(c.local, c.peer) for c in found] == [(stuck.client.getsockname(), stuck.client.getpeername())]
        assert found[0].state == "ESTAB" and found[0].idle_s >= 1.0 and os.getpid() in found[0].pids
        unfreeze.reset(os.getpid(), found[0])
        stuck.client.settimeout(2)
        with pytest.raises(ConnectionAbortedError):
            stuck.client.recv(1)
        assert unfreeze.stuck_connections([os.getpid()], {"127.0.0.2"}, idle_s=1.0) == []
        assert talker.is_alive()
    finally:
        stop.set()
        talker.join(2)
        for pair in (stuck, busy, other):
            pair.close()


def test_addresses_as_ss_prints_them():
    assert unfreeze._address("10.100.208.1:50644") == ("10.100.208.1", 50644)
    assert unfreeze._address("[::1]:5900") == ("::1", 5900)
    assert unfreeze._address("[::ffff:10.0.0.2]:49153") == ("10.0.0.2", 49153)  # IPv4-mapped: the same host
    assert unfreeze._address("[fe80::1%eth0]:22") == ("fe80::1", 22)
    assert unfreeze._address("*:*") is None


def test_migration_addresses_resolve_the_uri_host():
    assert unfreeze.migration_addresses("tcp://10.100.208.2:49152") == {"10.100.208.2"}
    assert unfreeze.migration_addresses("tcp://[::1]") == {"::1"}
    assert unfreeze.migration_addresses(None) == set()
    assert unfreeze.migration_addresses("tcp://") == set()


def test_the_guests_qemu_is_found_by_libvirts_name_and_uuid(tmp_path: Path):
    """libvirt starts QEMU with ``-name guest=<name>,debug-threads=on`` (commas doubled) and ``-uuid``; other
    guests, other programs and a same-named guest with another UUID are not it."""
    uuid = "6695eb01-f6a4-8304-79aa-97f2502e193f"

    def proc(pid: int, *argv: str) -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    proc(10, "/usr/bin/qemu-system-x86_64", "-name", "guest=web,,1,debug-threads=on", "-uuid", uuid)
    proc(11, "/usr/bin/qemu-system-x86_64", "-name", "guest=web,,10,debug-threads=on", "-uuid", uuid)
    proc(12, "/usr/bin/qemu-system-x86_64", "-name", "guest=web,,1,debug-threads=on", "-uuid", "0" * 32)
    proc(13, "/usr/bin/python3", "-c", "guest=web,,1,", uuid)
    (tmp_path / "self").mkdir()
    assert unfreeze.qemu_pids("web,1", uuid, proc=tmp_path) == [10]
    assert unfreeze.qemu_pids("web,1", proc=tmp_path) == [10, 12]


# ------------------------------------------------------------------ never while the destination may run it
def _view(role: str, name: str, state: str) -> HostView:
    return HostView(role, name, f"qemu+ssh://root:secret@{name}/system", state,
                    error="no answer" if state == "unknown" else None)


@settings(max_examples=300, deadline=None)
@given(src=st.sampled_from(STATES), dst=st.sampled_from(STATES), stopped=st.booleans())
def test_a_reset_is_never_allowed_while_the_destination_may_run_the_guest(src, dst, stopped):
    """Cutting the source's connections lets libvirt's cancel end, and a cancel resumes a source paused for
    the switchover: allowed only when the destination cannot run the guest. It may when it says so, or when
    the guest stopped on the source (the destination may then hold it whole) and the destination is not known
    to be without it (absent, shut off, crashed)."""
    loc = Location("vm", _view("source", "a", src), _view("destination", "b", dst), stopped_on_source=stopped,
                   source_frozen=True)
    may_run = dst in RUNNING_STATES or (stopped and dst not in ("absent", "shut off", "crashed"))
    why = unfreeze.refusal(loc)
    if why is None:
        assert not may_run and src in RUNNING_STATES
    else:
        assert "secret" not in why
    if src in RUNNING_STATES and not may_run and dst in ("absent", "shut off", "crashed", "unknown", "paused"):
        assert why is None  # e.g. the case measured: the destination gone or unreachable before any stop


def test_the_frozen_message_names_the_command_that_frees_it():
    """The link cut for good (measured): the source frozen, the destination's incoming copy destroyed, the
    guest never stopped on the source. The message says frozen, where, what frees it, without a password."""
    loc = Location("vm", _view("source", "a", "running"), _view("destination", "b", "absent"),
                   stopped_on_source=False, source_frozen=True)
    text = loc.text()
    assert text.startswith("frozen on the source (a), on no other host")
    assert ("run as root on a: simkvm recover --domain vm --src qemu+ssh://root:***@a/system "
            "--dst qemu+ssh://root:***@b/system --reset-stuck-connections") in text
    assert "secret" not in text and not loc.on_source
    # the same hosts, QEMU answering: running
    assert Location("vm", loc.source, loc.destination, stopped_on_source=False).text() == "running on the source (a)"


@pytest.mark.parametrize("dst,stopped,start", [
    ("running", True, "running on the destination (b); the source a holds a frozen copy"),
    ("unknown", True, "unknown: frozen on the source (a"),
    ("paused", True, "unknown: frozen on the source (a"),
    ("unknown", False, "frozen on the source (a), on no other host"),
])
def test_a_frozen_source_never_hides_what_the_destination_may_hold(dst, stopped, start):
    loc = Location("vm", _view("source", "a", "running"), _view("destination", "b", dst), stopped_on_source=stopped,
                   source_frozen=True)
    assert loc.text().startswith(start) and not loc.on_source
    assert ("--reset-stuck-connections" in loc.text()) == (unfreeze.refusal(loc) is None)


@pytest.mark.skipif(_can_destroy_sockets() is not None or not shutil.which("qemu-nbd") or not shutil.which("qemu-io"),
                    reason="needs root with ss -K, qemu-nbd and qemu-io")
def test_qemus_nbd_client_waiting_for_a_silent_server_fails_at_once_when_its_socket_is_destroyed(tmp_path: Path):
    """QEMU's own NBD client (block/nbd.c, as in a disk mirror's target), in qemu-io, writing to a qemu-nbd that
    stopped answering (SIGSTOP: its kernel still takes the data, the replies never come, as with the link cut).
    The write waits, with the main loop polling for it; once its connection is destroyed it fails (EIO) at once
    and the next request does too, instead of waiting for a reconnection: what lets a frozen mirror end."""
    import signal

    image = tmp_path / "disk.raw"
    image.write_bytes(b"\0" * (4 << 20))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    server = subprocess.Popen(["qemu-nbd", "-t", "-f", "raw", "-b", "127.0.0.1", "-p", str(port), str(image)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = None
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["ss", "-tlnH", "sport", "=", f":{port}"], capture_output=True, text=True).stdout == "":
            assert time.monotonic() < deadline, "qemu-nbd did not listen"
            time.sleep(0.05)
        client = subprocess.Popen(["qemu-io", "-f", "raw", f"nbd://127.0.0.1:{port}"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert client.stdin is not None and client.stdout is not None
        os.set_blocking(client.stdout.fileno(), False)

        def said() -> str:
            try:
                return os.read(client.stdout.fileno(), 65536).decode()  # type: ignore[union-attr]
            except BlockingIOError:
                return ""

        client.stdin.write(b"write -P 0x5a 0 64k\n")
        client.stdin.flush()
        time.sleep(1.0)
        out = said()
        assert "wrote 65536/65536" in out, out
        os.kill(server.pid, signal.SIGSTOP)
        client.stdin.write(b"write -P 0xa5 0 64k\n")
        client.stdin.flush()
        time.sleep(2.0)
        assert said() in ("", "qemu-io> "), "the write to a silent server did not wait"
        found = unfreeze.stuck_connections([client.pid], {"127.0.0.1"}, idle_s=1.0)
        assert len(found) == 1 and found[0].peer == ("127.0.0.1", port), found
        unfreeze.reset(client.pid, found[0])
        t = time.monotonic()
        os.set_blocking(client.stdout.fileno(), True)
        rest, _ = client.communicate(b"read 0 4k\nquit\n", timeout=20)
        assert time.monotonic() - t < 5, rest
        assert rest.decode().count("failed: Input/output error") == 2, rest  # the stuck write, then the read
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        os.kill(server.pid, signal.SIGCONT)
        server.kill()
        server.wait()
