"""Running a campaign: one run (scenario x repeat) at a time on the testbed.

1. define the guest on host a (replacing any leftover) and wait for READY;
2. build the plan: the campaign's knobs + the profile's host constants, with
   the VM and workload read back from the guest (:func:`plan_for_domain`);
3. predict it (``simulate``) and measure it (``execute`` a -> b);
4. read the guest's console: the dirty/disk rates it achieved during the
   migration and its canary checks afterwards;
5. write ``runs/<run>.predicted.json``, ``.measured.json`` and, last, the
   ``.row.json`` that marks the run finished (every file written atomically),
   then append the row to ``runs.csv`` and the per-iteration rows to
   ``rounds.csv``; remove the guest.

A re-run skips every finished run, so a crash or Ctrl-C loses no finished
run; ``runs.csv``/``rounds.csv`` are rebuilt from the run files if they ever
disagree with them.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .. import planner
from ..io import atomic_write
from ..libvirt_api import import_libvirt, version_text
from ..model.errors import UserError
from ..model.plan import Plan
from ..model.result import Result
from ..profile import apply_profile, load_profile
from ..sim import simulate
from .evaluate import CLAMP_RE
from .spec import Campaign, Scenario, run_id
from .store import HEAVY_LOAD_1M, RunStore, result_columns


# ------------------------------------------------------------------ the machine
def _guest_image() -> str | None:
    """The testbed guest image's id (see :func:`simkvm.testbed.guest.guest_image_id`), None if unknown."""
    from ..testbed.guest import guest_image_id

    try:
        return guest_image_id()
    except Exception:  # noqa: BLE001 - a record, never a reason to stop a campaign
        return None


def check_guest_unchanged(at_start: str | None, now: str | None) -> None:
    """Refuse to go on when the guest image changed since the campaign started (None: unknown, no check).

    Why: every run defines its guest from the working tree's simkvm/guest/ (built and cached by its
    hash), so an edit there while a campaign runs gives the rest of the round another guest, and a
    round's runs must share one (campaign q10r's set-aside runs, data/validation/campaign-q10r/set-aside/).
    """
    if at_start and now and now != at_start:
        raise UserError(f"the testbed guest changed while the campaign ran (image {at_start} at its start, {now} "
                        "now: simkvm/guest/workload.c, build.sh or the guest kernel was edited); a round runs one "
                        "guest: undo the change and run the campaign again (finished runs are kept), or start a "
                        "new campaign with it")


def machine_meta(stack: Any = None) -> dict[str, Any]:
    """What ran the campaign: kernel, CPU, cores, memory, QEMU/libvirt versions, date, simkvm commit.

    ``stack`` (a :class:`simkvm.testbed.stack.Stack`): the versions are that stack's binaries
    (the system's ``qemu-system-x86_64`` is not what a stack in its own root runs)."""
    meta: dict[str, Any] = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                            "uname": " ".join(platform.uname()), "python": platform.python_version(),
                            "cores": os.cpu_count()}
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        m = re.search(r"model name\s*:\s*(.+)", cpu)
        meta["cpu_model"] = m.group(1).strip() if m else None
        meta["cpu_flags_virt"] = bool(re.search(r"\b(vmx|svm)\b", cpu))
    except OSError:
        meta["cpu_model"] = None
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        meta["memory_bytes"] = int(m.group(1)) * 1024 if m else None
    except OSError:
        meta["memory_bytes"] = None
    if stack is not None:
        meta["stack"] = stack.name
        meta["host_qemu"] = stack.qemu  # the model's version the predictions follow
        versions = stack.versions()
        meta["qemu_version"], meta["libvirt_version"] = versions["qemu"], versions["libvirt"]
    else:
        meta["qemu_version"] = _first_line(["qemu-system-x86_64", "--version"])
        meta["libvirt_version"] = _first_line(["libvirtd", "--version"])
    try:
        meta["libvirt_python_version"] = version_text(import_libvirt().getVersion())
    except Exception:  # noqa: BLE001 - best effort
        pass
    root = Path(__file__).resolve().parents[2]
    meta["simkvm_commit"] = _first_line(["git", "-C", str(root), "rev-parse", "HEAD"])
    dirty = _first_line(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
    meta["simkvm_tree_dirty"] = bool(dirty)
    meta["accel"] = "tcg"
    meta["load_avg"] = list(os.getloadavg())
    return meta


def _first_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout or "").strip().splitlines()
    return text[0] if text else None


def other_qemus(own_pids: Iterable[int] = ()) -> int:
    """qemu-system processes on the machine (ours included unless their pids are given)."""
    own = set(own_pids)
    n = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in own:
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith("qemu-system"):
            n += 1
    return n


#: /proc/vmstat counters that say how the kernel found memory for the migration's first writes: the
#: destination's guest RAM is madvised MADV_HUGEPAGE (QEMU's ram_block_add()), so a first write faults
#: in a 2 MiB page, and with THP's defrag=madvise the fault may compact memory first (a stall); a write
#: where a read had mapped the huge zero page splits or replaces it (experiments/dest_first_touch.py)
VMSTAT_KEYS = ("thp_fault_alloc", "thp_fault_fallback", "thp_split_pmd", "thp_zero_page_alloc",
               "thp_deferred_split_page", "compact_stall", "compact_fail", "compact_success", "pgfault", "pgmajfault")


def host_memory(meminfo: str | Path = "/proc/meminfo", vmstat: str | Path = "/proc/vmstat",
                buddyinfo: str | Path = "/proc/buddyinfo") -> dict[str, Any]:
    """The host's memory as a run starts or ends: free and cached bytes, free blocks of 2 MiB or more
    (what a huge-page fault takes without compacting), and the :data:`VMSTAT_KEYS` counters.

    Why: the stop of a switchover during the first pass is mostly the destination's first writes
    (simkvm/sim/wire.py, first_touch_s), and the same scenario's stop has differed by 2.5x between
    rounds; a row's host state lets that be checked against the host instead of guessed. Missing
    files (not Linux) give an empty dict: the run does not depend on it."""
    out: dict[str, Any] = {}
    try:
        info = dict(line.split(":", 1) for line in Path(meminfo).read_text().splitlines() if ":" in line)
        for key, name in (("MemFree", "free_bytes"), ("Cached", "cached_bytes")):
            if key in info:
                out[name] = int(info[key].split()[0]) * 1024
        stat = dict(line.split() for line in Path(vmstat).read_text().splitlines() if len(line.split()) == 2)
        out.update({k: int(stat[k]) for k in VMSTAT_KEYS if k in stat})
        blocks = 0
        for line in Path(buddyinfo).read_text().splitlines():  # "Node 0, zone Normal c0 c1 ... c10"
            counts = [int(x) for x in line.split()[4:]]
            blocks += sum(c << max(0, order - 9) for order, c in enumerate(counts) if order >= 9)
        out["free_2mib_blocks"] = blocks
    except (OSError, ValueError):
        return {}
    return out


def memory_change(start: Mapping[str, Any], end: Mapping[str, Any]) -> dict[str, Any]:
    """The counters' increase over a run (:data:`VMSTAT_KEYS` present at both ends)."""
    return {k: end[k] - start[k] for k in VMSTAT_KEYS if k in start and k in end}


# ------------------------------------------------------------------ running it
def _console_rates(lines: list[Any], after: int, before: int | None) -> tuple[float | None, float | None]:
    sel = [ln.values for ln in lines if ln.kind == "RATE" and ln.line_no > after
           and (before is None or ln.line_no <= before)]
    if not sel:
        return None, None
    mem = [float(v["mem_Bps"]) for v in sel if "mem_Bps" in v]
    disk = [float(v["disk_Bps"]) for v in sel if "disk_Bps" in v]
    return (float(np.median(mem)) if mem else None, float(np.median(disk)) if disk else None)


def _console_tail(name: str, testbed: Any, lines: int = 40) -> str:
    from ..testbed import console_path

    try:
        text = console_path(name, testbed).read_text(errors="replace")
    except OSError as exc:
        return f"(no guest console: {exc})"
    tail = text.splitlines()[-lines:]
    return "guest console, last lines:\n" + "\n".join("  " + ln for ln in tail)


def run_one(scenario: Scenario, repeat: int, *, testbed: Any, profile: Mapping[str, Any] | None,
            profile_name: str | None, settle_s: float = 1.0, boot_timeout_s: float = 120.0,
            network: Any = None, stack: Any = None) -> tuple[dict[str, Any], Result, Result]:
    """Define, predict, migrate, check, remove: one run's row and its two Results.

    ``stack``: the testbed's QEMU/libvirt stack; the prediction follows its ``host.qemu`` and the
    row records it with the QEMU version libvirt reported for the migration."""
    from ..executor import execute
    from ..testbed import console_lines, define_guest, remove_guest, wait_for_console, wait_ready
    from ..testbed.guestplan import plan_for_domain

    rid = run_id(scenario.id, repeat)
    name = f"cmp-{scenario.id}"[:64]
    started = time.time()
    load_start = os.getloadavg()
    load = load_start[0]
    qemus_before = other_qemus()
    ip = network.guest_ip(0) if network is not None else None
    define_guest(name, host="a", replace=True, testbed=testbed, network=network, ip=ip, **scenario.guest_kwargs())
    try:
        ready = wait_ready(name, boot_timeout_s, testbed=testbed)
        time.sleep(settle_s)
        src, dst = testbed.uri("a"), testbed.uri("b")
        qemu = stack.qemu if stack is not None else None
        plan = plan_for_domain(Plan.from_dict(scenario.plan_dict(rid, qemu)), name, src)
        nominal = {"zero_fraction": plan.vm.zero_fraction}
        if profile:  # after the guest is mapped: the profile's guest section corrects it
            plan = apply_profile(plan, profile)
        predicted = simulate(plan)
        predicted.plan = plan.to_dict()
        predicted.meta["profile"] = profile_name
        predicted.meta["guest_nominal"] = nominal
        try:
            min_bw = planner.min_bandwidth_Bps(plan, lo=1e6, hi=1e10)
        except Exception:  # noqa: BLE001 - the boundary is informative only
            min_bw = None
        at_start = max((ln.line_no for ln in console_lines(name, testbed=testbed)), default=0)
        memory_start = host_memory()
        measured = execute(plan, name, src, dst, probe=network.probe(ip) if network is not None else None)
        memory_end = host_memory()
        at_end = max((ln.line_no for ln in console_lines(name, testbed=testbed)), default=0)
        if measured.outcome == "aborted" and "interrupted" in measured.reason:
            raise KeyboardInterrupt(measured.reason)
        # a fresh memory verdict needs two CHECK lines after the move (the dirtier's last one is stale)
        checks_wanted = 2
        try:
            line = at_end
            for _ in range(checks_wanted):
                line = wait_for_console(name, lambda ln: ln.kind == "CHECK", 15, after_line=line,
                                        testbed=testbed).line_no
        except Exception:  # noqa: BLE001 - a missing CHECK is recorded as not ok
            pass
        lines = console_lines(name, testbed=testbed)
        checks = [ln for ln in lines if ln.kind == "CHECK" and ln.line_no > ready.line_no]
        errors = [ln for ln in lines if ln.kind == "ERROR"]
        after_mig = [c for c in checks if c.line_no > at_end]
        # a guest that clamped its arena ran smaller than asked (its report says how big): not a failed canary
        check_ok = (bool(after_mig) and not [e for e in errors if not CLAMP_RE.search(e.raw)]
                    and all(c.values.get("mem") == "ok" and c.values.get("disk") in ("ok", "none") for c in checks))
        mem_during, disk_during = _console_rates(lines, at_start, at_end)
        mem_before, _ = _console_rates(lines, ready.line_no, at_start)
    except Exception as exc:  # the guest's own last words say what happened to it (a kernel panic, ...)
        exc.add_note(_console_tail(name, testbed))
        raise
    finally:
        try:
            remove_guest(name, testbed=testbed)
        except Exception:  # noqa: BLE001 - a leftover is replaced by the next define
            pass
    load_end = os.getloadavg()
    row: dict[str, Any] = {
        "run_id": rid, "scenario": scenario.id, "repeat": repeat, "role": scenario.role, **scenario.knobs(),
        **result_columns("measured", measured), **result_columns("predicted", predicted),
        "min_bandwidth_Bps": min_bw, "guest_mem_Bps": mem_during, "guest_disk_Bps": disk_during,
        "guest_mem_Bps_before": mem_before, "guest_checks": len(checks), "check_ok": bool(check_ok),
        "profile": profile_name or "", "load_1m": round(load, 2), "load_1m_end": round(load_end[0], 2),
        "other_qemus": qemus_before, "stack": stack.name if stack is not None else "",
        "qemu_version": measured_qemu_version(measured) or "",
        "started": _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.time() - started, 2),
    }
    failed_checks = [c.raw for c in checks
                     if c.values.get("mem") != "ok" or c.values.get("disk") not in ("ok", "none")]
    # other work on the machine shares the cores with the guest and both QEMUs: say how much
    measured.meta["load_avg"] = {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in load_end],
                                 "other_qemus_start": qemus_before, "heavy": max(load, load_end[0]) > HEAVY_LOAD_1M}
    # the host's memory around the migration (host_memory(): why the stop's first writes may differ)
    measured.meta["host_memory"] = {"start": memory_start, "end": memory_end,
                                    "change": memory_change(memory_start, memory_end)}
    measured.meta["guest_console"] = {"mem_Bps_during": mem_during, "disk_Bps_during": disk_during,
                                      "mem_Bps_before": mem_before, "checks": len(checks), "check_ok": check_ok,
                                      "failed_checks": failed_checks[:5],
                                      "errors": [e.raw for e in errors],
                                      # the guest's TLB-flush workaround (its always-dirty flush pages) ran
                                      # where the stack needs it (define_guest follows Stack.tlb_flush)
                                      "tlb_flush": stack.tlb_flush if stack is not None else None,
                                      # the READY report the plan's layouts and zero share were read from
                                      # (simkvm/testbed/guestplan.py), kept to re-derive them another way
                                      "ready": dict(ready.values)}
    return row, predicted, measured


def measured_qemu_version(measured: Result) -> str | None:
    """The QEMU version libvirt reported for the source of a measured migration ("10.0.2"), if any."""
    source = measured.meta.get("source") if isinstance(measured.meta, dict) else None
    version = source.get("hypervisor_version") if isinstance(source, dict) else None
    return str(version) if version else None


def run_campaign(campaign: Campaign, output: str | Path, *, profile_path: str | None = None,
                 only: Sequence[str] | None = None, progress: bool = True, keep_testbed: bool = False,
                 testbed: Any = None, log: Any = None, probe_network: bool = True) -> dict[str, Any]:
    """Run every unfinished scenario x repeat; return ``{"done", "skipped", "failed": [(run, error)]}``.

    ``probe_network``: every guest on the testbed's bridge, pinged through its migration
    (measured service interruption).
    """
    from ..testbed import Testbed
    from ..testbed.stack import get_stack

    stack = get_stack(campaign.stack)
    given = getattr(testbed, "stack", None) if testbed is not None else None
    if given is not None and given.name != stack.name:
        raise UserError(f"campaign {campaign.name} runs on stack {stack.name!r} (its file's stack:), but the "
                        f"testbed given runs {given.name!r}")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    store = RunStore(output)
    store.dir.mkdir(parents=True, exist_ok=True)
    profile = load_profile(profile_path) if profile_path else None
    todo = campaign.runs(only)
    finished = set(store.finished_ids())
    pending = [(s, k) for s, k in todo if run_id(s.id, k) not in finished]
    if store.finished_ids():
        store.reconcile_tables()
    meta_path = store.dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.setdefault("sessions", []).append({**machine_meta(stack), "guest_image": _guest_image(),
                                            "campaign": campaign.name,
                                            "campaign_file": campaign.source, "profile": profile_path,
                                            "probe_network": probe_network, "runs_pending": len(pending)})
    meta.update({k: v for k, v in meta["sessions"][-1].items() if k != "runs_pending"})
    atomic_write(meta_path, json.dumps(meta, indent=1))
    if campaign.source:
        atomic_write(store.dir / "campaign.yaml", Path(campaign.source).read_text())
    out: dict[str, Any] = {"done": [], "skipped": len(todo) - len(pending), "failed": []}
    if not pending:
        return out
    tb = testbed or Testbed(stack=stack.name)  # brought up with the campaign's stack (refused if another runs)
    from ..executor.signals import signals_as_interrupt

    lock = _campaign_lock(tb, store.dir)
    try:
        with signals_as_interrupt():  # SIGTERM: like Ctrl-C, the run's guest is cleaned up
            return _run_pending(pending, todo, out, store, tb, profile, profile_path, probe_network, progress,
                                keep_testbed, own_testbed=testbed is None, log=log, stack=stack,
                                guest_image=meta["sessions"][-1]["guest_image"])
    finally:
        lock.close()  # releases the flock


def _campaign_lock(tb: Any, output: Path) -> Any:
    """One campaign per testbed: two would define the same guest names and one would take the
    other's network down at its end. The lock is an flock, so a crashed campaign never holds it."""
    import fcntl

    tb.state_dir.mkdir(parents=True, exist_ok=True)
    path = tb.state_dir / "campaign.lock"
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise UserError(f"another campaign is running on the testbed in {tb.state_dir} ({holder}); wait for it "
                        f"to finish, or give this one its own testbed (SIMKVM_TESTBED_DIR and SIMKVM_TESTBED_PORT)")
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}, output {output}\n")
    fh.flush()
    return fh


def _keep_failed_attempt(runs_dir: Path, rid: str) -> None:
    """Move ``rid``'s last failure (``RUN.error.txt``) aside as ``RUN.failed-attempt-N.txt`` once a retry
    has an outcome: a run measured at its second try (its guest panicked on the destination the first
    time, say) keeps the console that showed why, instead of losing it to the success."""
    err = runs_dir / f"{rid}.error.txt"
    if not err.exists():
        return
    n = 1
    while (runs_dir / f"{rid}.failed-attempt-{n}.txt").exists():
        n += 1
    err.rename(runs_dir / f"{rid}.failed-attempt-{n}.txt")


def _run_pending(pending: list, todo: list, out: dict[str, Any], store: "RunStore", tb: Any,
                 profile: Mapping[str, Any] | None, profile_path: str | None, probe_network: bool,
                 progress: bool, keep_testbed: bool, *, own_testbed: bool, log: Any,
                 stack: Any = None, guest_image: str | None = None) -> dict[str, Any]:
    was_running = tb.status()["running"]
    tb.up()
    from ..testbed.network import GuestNetwork

    network = GuestNetwork(tb.base_port) if probe_network else None
    if network is not None:
        network.up()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), initial=len(todo) - len(pending), unit="run", file=sys.stderr)
    try:
        for s, k in pending:
            rid = run_id(s.id, k)
            if bar is not None:
                bar.set_description(rid)
            check_guest_unchanged(guest_image, _guest_image())
            try:
                row, predicted, measured = run_one(s, k, testbed=tb, profile=profile, profile_name=profile_path,
                                                   network=network, stack=stack)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad run must not stop the campaign
                text = f"{type(exc).__name__}: {exc}"
                out["failed"].append((rid, text))
                store.runs_dir.mkdir(parents=True, exist_ok=True)
                notes = "".join(f"\n{n}" for n in getattr(exc, "__notes__", ()))
                _keep_failed_attempt(store.runs_dir, rid)
                atomic_write(store.runs_dir / f"{rid}.error.txt", text + notes + "\n")
                log(f"run {rid} failed (will be retried on the next run): {text.splitlines()[0]}")
            else:
                store.save(rid, row, predicted, measured)
                _keep_failed_attempt(store.runs_dir, rid)
                out["done"].append(rid)
                if bar is not None:
                    bar.set_postfix_str(f"measured {measured.outcome} {measured.total_time_s:.1f}s, "
                                        f"predicted {predicted.outcome} {predicted.total_time_s:.1f}s")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if network is not None and not keep_testbed:
            network.down()
        if not was_running and not keep_testbed and own_testbed:
            tb.down()
    return out


