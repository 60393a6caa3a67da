"""Fault injection on the real testbed: the tools the fault tests share (fixtures in conftest.py).

A fault test starts ``simkvm migrate`` as a subprocess (so it can be killed
like an operator's), injects one fault at a moment read from the
migration's journal or from libvirt's events, then checks the truth against
what simkvm said:

* :func:`truth`: where the guest really runs, asked of each host's libvirtd
  and, where a libvirtd is dead or frozen, of the kernel (a QEMU process
  for the guest in that host's namespace, and whether its vCPUs use CPU);
* canaries: the guest's own memory and disk checks (``SIMKVM CHECK`` lines)
  resume after the fault on the host that runs it;
* leftovers: images and definitions on either host that should not be there.

Daemons are signalled by the pids the testbed recorded; a killed libvirtd
is restarted *inside the same namespace* (:func:`restart_libvirtd`), as a
service manager would, so it finds its QEMUs again.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

MiB = 2**20
#: 128 MiB guest, 32 MiB disk it writes, dirtying 1 MiB/s: a migration of ~8 s at 16 MiB/s under TCG.
GUEST = dict(memory_bytes=128 * MiB, disk_bytes=32 * MiB, dirty_rate_Bps=1 * MiB, wss_bytes=16 * MiB,
             disk_write_rate_Bps=256 * 1024, disk_wss_bytes=8 * MiB)
PLAN = "name: fault\nlink: {bandwidth: 16MiB/s}\nmigration: {max_downtime: 50ms, max_time: 90s}\n"


# ------------------------------------------------------------------ processes of a host
def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid: int | None) -> bool:
    st = _stat(pid) if pid else None
    return st is not None and st[0] != "Z"


def namespace_pids(ns: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") == ns:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def guest_qemu(testbed: Any, host: str, name: str) -> int | None:
    """The QEMU process running guest ``name`` in host's namespace (libvirt names it guest=<name>)."""
    ns = testbed._read_state()[host].mnt_ns
    for pid in namespace_pids(ns):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and b"qemu-system" in cmd[0] and any(a.startswith(f"guest={name},".encode()) for a in cmd):
            if alive(pid):
                return pid
    return None


def cpu_busy(pid: int, over_s: float = 1.0) -> bool:
    """The process used CPU over ``over_s`` (a running TCG guest that dirties memory does; a paused one not)."""
    def ticks() -> int:
        st = _stat(pid)
        return int(st[11]) + int(st[12]) if st else 0
    before = ticks()
    time.sleep(over_s)
    return ticks() - before >= 5  # >= 5 % of a core at 100 Hz


def kill_libvirtd(testbed: Any, host: str, sig: int = signal.SIGKILL) -> int:
    pid = testbed.host_state(host).libvirtd_pid
    os.kill(pid, sig)
    if sig == signal.SIGKILL:
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            os.waitpid(pid, os.WNOHANG)  # our child when the session's testbed started it
        except ChildProcessError:
            pass
    return pid


def stop_libvirtd(testbed: Any, host: str, timeout_s: float = 30) -> int:
    """SIGTERM, as a service manager's restart sends: libvirtd shuts down and leaves its QEMUs running
    (SIGKILL after ``timeout_s``)."""
    pid = kill_libvirtd(testbed, host, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        kill_libvirtd(testbed, host)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return pid


def restart_libvirtd(testbed: Any, host: str) -> None:
    """Start libvirtd again inside host's namespace (its QEMUs, /run and images are still there)."""
    from simkvm.testbed.libvirtd import which as _which
    from simkvm.testbed.proc import read_pid

    state = testbed._read_state()[host]  # host_state() refuses an unhealthy host
    anchor = next((p for p in namespace_pids(state.mnt_ns) if alive(p)), None)
    assert anchor is not None, f"host {host}'s namespace is gone"
    host_dir = testbed.host_dir(host)
    nsargs = ["-m", "-u"]
    if os.readlink(f"/proc/{anchor}/ns/net") != os.readlink("/proc/self/ns/net"):
        nsargs.append("-n")
    script = (f"echo $$ > {host_dir}/libvirtd.pid; "
              f"exec {_which('libvirtd')} >>{host_dir}/libvirtd.log 2>&1")
    subprocess.Popen([_which("nsenter"), "-t", str(anchor), *nsargs, "--", "/bin/sh", "-c", script],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pid = read_pid(host_dir / "libvirtd.pid")
        if pid and pid != state.libvirtd_pid and alive(pid):
            states = testbed._read_state()
            states[host] = dataclasses.replace(state, libvirtd_pid=pid)
            testbed._write_state(states)
            if testbed._healthy(states[host]):
                try:
                    conn = testbed.connect(host)
                    conn.close()
                    return
                except Exception:  # noqa: BLE001 - still starting
                    pass
        time.sleep(0.2)
    raise AssertionError(f"libvirtd of host {host} did not come back")


# ------------------------------------------------------------------ the truth
def libvirt_state(testbed: Any, host: str, name: str) -> str:
    """running | paused | shut off | absent (libvirt's word), or unknown when its libvirtd does not answer."""
    import libvirt

    from simkvm.executor.locate import STATE_NAMES, call_with_timeout

    try:
        conn = call_with_timeout(lambda: testbed.connect(host), 5, "connect")
    except Exception:  # noqa: BLE001
        return "unknown"
    try:
        return STATE_NAMES.get(call_with_timeout(lambda: conn.lookupByName(name).state()[0], 5, "state"), "?")
    except libvirt.libvirtError:
        return "absent"
    except Exception:  # noqa: BLE001
        return "unknown"
    finally:
        conn.close()


def truth(testbed: Any, name: str) -> dict[str, str]:
    """Per host: 'running' (vCPUs busy) / 'paused' (QEMU idle) / 'none' (no QEMU for the guest), from the kernel."""
    out = {}
    for host in ("a", "b"):
        pid = guest_qemu(testbed, host, name)
        out[host] = "none" if pid is None else ("running" if cpu_busy(pid) else "paused")
    return out


def running_hosts(testbed: Any, name: str) -> list[str]:
    return [h for h, s in truth(testbed, name).items() if s == "running"]


@dataclasses.dataclass
class Settled:
    """Where a fault run's guest is once ``simkvm recover`` has run: what the kernel shows per host, the
    hosts that run it, and what the host it left still holds (its definition, a QEMU, on b its image)."""

    after: dict[str, str]
    running: list[str]
    leftovers: list[str]

    @property
    def location(self) -> str:
        """The record's one word: the host that runs the guest, else "lost" (none) or "both"."""
        return self.running[0] if len(self.running) == 1 else ("lost" if not self.running else "both")


def settled(testbed: Any, name: str) -> Settled:
    """The guest's place after recover (see :class:`Settled`); leftovers only when exactly one host runs it."""
    after = truth(testbed, name)
    running = [h for h, s in after.items() if s == "running"]
    leftovers = []
    if len(running) == 1:
        gone = {"a": "b", "b": "a"}[running[0]]
        if gone == "b" and f"{name}.qcow2" in volumes(testbed, "b"):
            leftovers.append("image on b")
        if defined(testbed, gone, name):
            leftovers.append(f"definition on {gone}")
        if after[gone] != "none":
            leftovers.append(f"QEMU on {gone}")
    return Settled(after, running, leftovers)


def canaries(testbed: Any, name: str, timeout_s: float = 40) -> str:
    """'ok' when two fresh memory+disk checks by the guest both pass (it runs, its data survived),
    else what went wrong."""
    from simkvm.testbed.guest import console_lines, wait_for_console

    last = max((ln.line_no for ln in console_lines(name, testbed=testbed)), default=0)
    try:
        first = wait_for_console(name, lambda ln: ln.kind == "CHECK", timeout_s, after_line=last, testbed=testbed)
        second = wait_for_console(name, lambda ln: ln.kind == "CHECK", timeout_s, after_line=first.line_no,
                                  testbed=testbed)
    except Exception as exc:  # noqa: BLE001 - silent guest: not ok
        return f"silent: {str(exc)[-600:]}"
    bad = [c.raw for c in (first, second) if c.values.get("mem") != "ok" or c.values.get("disk") not in ("ok", "none")]
    return "ok" if not bad else f"failed: {bad}"


#: What the guest kernel prints when the memory it arrived with is wrong (README "The testbed": a panic,
#: a general protection fault, a NULL dereference, init killed).
CRASH_MARKS = ("Kernel panic", "general protection fault", "BUG: ", "Oops", "exited with irqs disabled")


def guest_crashed(testbed: Any, name: str) -> str:
    """The first crash line on the guest's console (its log is new with each guest), or "". After a
    handover it means QEMU 7.2's TCG lost dirty pages (README, "The testbed"): a testbed artefact the
    guest's TLB keeper makes rare, not something simkvm did; the control row measures its rate."""
    from simkvm.testbed.guest import console_path

    try:
        text = console_path(name, testbed).read_text(errors="replace")
    except OSError:
        return ""
    return next((line.strip()[:200] for line in text.splitlines() if any(m in line for m in CRASH_MARKS)), "")


def guest_hung(testbed: Any, name: str, after: dict[str, str]) -> str:
    """A guest that stopped working inside, or "": libvirt runs it on exactly one host, no QEMU of it
    exists on the other (``after``, the kernel's view), and its console has printed no check for 20 s
    while its vCPUs sit idle or spin. A working guest's canary workload prints a check every second, so
    this is a guest deadlocked or looping on wrong memory (README, "The testbed": QEMU 7.2 TCG loses
    dirty pages; then it may hang rather than panic; a CI run on 2026-12-04 met one spinning), not a VM
    simkvm left paused (libvirt would say paused) or running on two hosts (the other host's QEMU)."""
    runs = [h for h in ("a", "b") if libvirt_state(testbed, h, name) == "running"]
    if len(runs) != 1 or any(after[h] != "none" for h in ("a", "b") if h != runs[0]):
        return ""
    silent = canaries(testbed, name, timeout_s=20)
    if not silent.startswith("silent"):
        return ""
    vcpus = "spin" if after[runs[0]] == "running" else "are idle"
    return f"hung: libvirt runs it on {runs[0]}, its QEMU's vCPUs {vcpus} and its console printed no check in 20 s"


def guest_health(testbed: Any, name: str, running: list[str], after: dict[str, str] | None = None) -> dict[str, Any]:
    """What a fault run records of the guest where it ended: its canaries (when it runs on exactly one
    host), and if they did not pass, the first crash line of its console (or that it hung inside, see
    :func:`guest_hung`, when ``after``, the kernel's view per host, is given) and the console's tail."""
    canary = canaries(testbed, name) if len(running) == 1 else "no single host"
    crash = ""
    if canary != "ok":
        crash = guest_crashed(testbed, name) or (guest_hung(testbed, name, after) if after is not None else "")
    return {"canaries": canary, "guest_crash": crash,
            "console": console_tail(testbed, name) if canary != "ok" else None}


def fail_if_guest_crashed(crash: str, detail: str) -> None:
    """A guest that crashed or hung inside after a handover is QEMU 7.2 TCG's lost dirty pages (README, "The
    testbed"), not simkvm's doing: fail with the message pytest's ``--only-rerun 'destination VM is shut'``
    reruns (pyproject.toml), so the run is repeated and a second crash still fails."""
    if crash:
        pytest.fail(f"destination VM is shut off or crashed inside: {crash!r} (QEMU 7.2 TCG loses dirty pages, "
                    f"README 'The testbed'), not a simkvm fault: {detail}")


def console_tail(testbed: Any, name: str, lines: int = 60) -> list[str]:
    from simkvm.testbed.guest import console_path

    try:
        return console_path(name, testbed).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def volumes(testbed: Any, host: str) -> list[str]:
    conn = testbed.connect(host)
    try:
        pool = conn.storagePoolLookupByName("default")
        pool.refresh(0)
        return sorted(pool.listVolumes())
    finally:
        conn.close()


def defined(testbed: Any, host: str, name: str) -> bool:
    import libvirt

    conn = testbed.connect(host)
    try:
        conn.lookupByName(name)
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def block_nodes(testbed: Any, host: str, name: str) -> list[str]:
    """The block node names the guest's QEMU on ``host`` holds (QMP query-named-block-nodes, through libvirt,
    within 10 s). A migration's disk mirror target is ``migration-<disk>-storage`` / ``-format`` (libvirt's
    qemu_migration.c); one left after a cancel would make the next migration's blockdev-add fail."""
    import json as _json

    import libvirt_qemu  # type: ignore[import-not-found]

    from simkvm.executor.locate import call_with_timeout

    conn = testbed.connect(host)
    try:
        dom = conn.lookupByName(name)
        out = call_with_timeout(lambda: libvirt_qemu.qemuMonitorCommand(
            dom, '{"execute": "query-named-block-nodes"}', 0), 10, "query-named-block-nodes")
        return sorted(n.get("node-name", "") for n in _json.loads(out)["return"])
    finally:
        conn.close()


def fill_pool(testbed: Any, host: str, leave_bytes: int, name: str = "fault-filler.img") -> str:
    """A fully allocated raw volume that leaves ``leave_bytes`` free in host's pool (its tmpfs): the
    pool is then all but full for whatever writes next. Returns the volume's name (remove it with
    :func:`unfill_pool`)."""
    import libvirt

    conn = testbed.connect(host)
    try:
        pool = conn.storagePoolLookupByName("default")
        for attempt in range(8):  # the mirror writes meanwhile: a size that no longer fits is tried smaller
            pool.refresh(0)
            size = max(pool.info()[3] - leave_bytes - attempt * 256 * 1024, 256 * 1024) // 4096 * 4096
            try:
                pool.createXML(f"<volume><name>{name}</name><capacity>{size}</capacity><allocation>{size}"
                               f"</allocation><target><format type='raw'/></target></volume>", 0)
                return name
            except libvirt.libvirtError:
                continue
        raise AssertionError(f"could not fill host {host}'s pool")
    finally:
        conn.close()


def unfill_pool(testbed: Any, host: str, name: str = "fault-filler.img") -> None:
    import libvirt

    conn = testbed.connect(host)
    try:
        pool = conn.storagePoolLookupByName("default")
        pool.refresh(0)
        try:
            pool.storageVolLookupByName(name).delete(0)
        except libvirt.libvirtError:
            pass
    finally:
        conn.close()


def pool_free(testbed: Any, host: str) -> int:
    conn = testbed.connect(host)
    try:
        pool = conn.storagePoolLookupByName("default")
        pool.refresh(0)
        return int(pool.info()[3])
    finally:
        conn.close()


def on_event(testbed: Any, host: str, name: str, event: int, action: Callable[[], None],
             delay_s: float = 0.0) -> Callable[[], None]:
    """Run ``action`` ``delay_s`` after host's libvirt reports lifecycle ``event`` for guest ``name``
    (the first time only; at once in libvirt's event thread when ``delay_s`` is 0); returns a stopper."""
    import libvirt

    from simkvm.libvirt_api import ensure_event_loop

    ensure_event_loop()
    conn = testbed.connect(host)
    fired = threading.Event()

    def cb(_c: Any, dom: Any, ev: int, _detail: int, _o: Any) -> None:
        if ev == event and dom.name() == name and not fired.is_set():
            fired.set()
            if delay_s <= 0:
                action()
            else:
                threading.Timer(delay_s, action).start()

    cid = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, cb, None)

    def stop() -> None:
        try:
            conn.domainEventDeregisterAny(cid)
            conn.close()
        except libvirt.libvirtError:
            pass
    stop.fired = fired  # type: ignore[attr-defined]
    return stop


def wait_job(testbed: Any, name: str, mig: "Migration", ready: Callable[[dict[str, Any]], bool],
             what: str, timeout_s: float = 60) -> dict[str, Any]:
    """Until the source's job stats satisfy ``ready`` (e.g. the RAM copy started); returns them."""
    conn = testbed.connect("a")
    try:
        dom = conn.lookupByName(name)
        mig.wait_step("migrate3")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                stats = dom.jobStats(0)
                if ready(stats):
                    return stats
            except Exception:  # noqa: BLE001 - the job may be starting
                pass
            if mig.proc.poll() is not None:
                pytest.fail(f"simkvm migrate ended before {what}")
            time.sleep(0.05)
        pytest.fail(f"{what}: not within {timeout_s} s")
    finally:
        conn.close()


# ------------------------------------------------------------------ a migration to hurt
#: SIMKVM_FAULT_VERBOSE=1: simkvm migrate's progress lines on its stderr (kept in the records' failures).
QUIET = [] if os.environ.get("SIMKVM_FAULT_VERBOSE") else ["--quiet"]
class Migration:
    """``simkvm migrate --json`` of guest ``name`` a -> b in a subprocess, with its own journal dir."""

    def __init__(self, testbed: Any, name: str, tmp: Path, plan: str = PLAN, *extra: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.state_dir = tmp / "state"
        plan_file = tmp / "plan.yaml"
        plan_file.write_text(plan)
        env = {**os.environ, "SIMKVM_STATE_DIR": str(self.state_dir)}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simkvm", "migrate", str(plan_file), "--domain", name, "--src", testbed.uri("a"),
             "--dst", testbed.uri("b"), "--json", *QUIET, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.out = self.err = ""
        # Read both pipes as simkvm writes them: a result's JSON outgrows the pipe's 64 KiB after a minute of
        # samples, and an unread pipe then holds simkvm in its final write (measured: the link cut's runs that
        # "outlived the test's wait" were simkvm blocked printing its result, its job long done).
        self._chunks: dict[str, list[str]] = {"out": [], "err": []}
        self._readers = [threading.Thread(target=self._drain, args=(stream, key), daemon=True)
                         for stream, key in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))]
        for reader in self._readers:
            reader.start()

    def _drain(self, stream: Any, key: str) -> None:
        for chunk in iter(lambda: stream.read(65536), ""):
            self._chunks[key].append(chunk)

    def journal(self) -> list[dict[str, Any]]:
        """The executor's journal entries so far (a line still being written is skipped)."""
        entries: list[dict[str, Any]] = []
        for path in (self.state_dir / "journal").glob("*.jsonl"):
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if "step" in entry:
                    entries.append(entry)
        return entries

    def journal_steps(self) -> list[str]:
        return [entry["step"] for entry in self.journal()]

    def step_at(self, step: str) -> float | None:
        """When the journal first shows ``step`` (the executor's wall clock), or None."""
        return min((entry["t"] for entry in self.journal() if entry["step"] == step), default=None)

    def wait_step(self, step: str, timeout_s: float = 90) -> float:
        """Wait until the journal shows ``step``; returns when (monotonic)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if step in self.journal_steps():
                return time.monotonic()
            if self.proc.poll() is not None:
                self.finish(0)
                pytest.fail(f"simkvm migrate ended before {step!r}: {self.err[-1500:]}")
            time.sleep(0.01)
        pytest.fail(f"no {step!r} in the journal within {timeout_s} s")

    def finish(self, timeout_s: float = 150) -> int:
        """Wait for simkvm to end (``subprocess.TimeoutExpired`` after ``timeout_s``); its output is then in
        ``out`` and ``err``."""
        self.proc.wait(timeout_s)
        for reader in self._readers:
            reader.join(10)
        self.out, self.err = "".join(self._chunks["out"]), "".join(self._chunks["err"])
        return self.proc.returncode

    @property
    def result(self) -> dict[str, Any]:
        data = json.loads(self.out)
        return data.get("measured", data)

    @property
    def said(self) -> str:
        """The VM location simkvm reported (one line on stderr, or the JSON's measurement)."""
        try:
            return str(self.result["measurement"].get("vm_location") or "")
        except (ValueError, KeyError):
            return self.err




RECORD = os.environ.get("SIMKVM_FAULT_RECORD")


def record(fault: str, **fields: Any) -> None:
    """One line per run for the fault campaign's table (scripts/fault_campaign.py), when it asks for them."""
    if RECORD:
        with open(RECORD, "a") as f:
            f.write(json.dumps({"fault": fault, **fields}) + "\n")
