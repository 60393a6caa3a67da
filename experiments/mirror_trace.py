"""Trace QEMU's disk mirror on the testbed: op sizes, op latencies and the stalls between completions.

Why: on QEMU 7.2 the mirrors of guests that write their disk at random run at 0.3-0.8 of the link
(campaigns v6-v12; on QEMU 10 at 1.0). The trace shows where the time goes. This script runs one
real migration through ``simkvm campaign run`` on the testbed's current stack, switches QEMU's
``mirror_*`` trace events on in the source QEMU as soon as the domain exists (HMP ``trace-event``;
Debian builds QEMU with the ``log`` backend, so the lines land in the domain's log), reads the log
from host a's mount namespace and prints what the ops did:

* op sizes (``mirror_one_iteration``): a guest's scattered 4 KiB writes leave the disk's data in
  fragments, so ``bdrv_co_block_status_above`` answers short extents and ``mirror_iteration()``
  (block/mirror.c) copies one granule (64 KiB) per op instead of up to 1 MiB;
* op latency (issue to ``mirror_iteration_done``) and the gaps of more than 15 ms between
  completions: with 16 ops in flight (MAX_IN_FLIGHT) the job waits for the *oldest* op
  (``mirror_wait_for_any_operation``), and QEMU 7.2's NBD server sends its small replies without
  uncorking the socket (the fix is QEMU commit bd2cd4a441, "nbd/server: push pending frames after
  sending reply", in 8.0), so a reply can wait for the client's delayed ACK (40 ms on Linux).

    simkvm testbed up --stack debian12
    python experiments/mirror_trace.py -o data/experiments/mirror-trace/debian12/
    simkvm testbed down && simkvm testbed up --stack backports
    python experiments/mirror_trace.py -o data/experiments/mirror-trace/backports/
    python experiments/mirror_trace.py -o /tmp/sw --bandwidth 160MiB/s --disk 96MiB --memory 640MiB --switchover

With ``--switchover`` it also traces the VM's stop, the migration's states and the block job's
transitions, and says where the downtime goes on the source (traces in
data/experiments/mirror-trace/debian12-switchover-*, QEMU 7.2, random 4 KiB writes over 16 MiB):

* a job that is READY keeps copying while RAM migrates, but at what pace depends on the
  destination: its QEMU loads the RAM stream in a coroutine of the main loop, the same loop that
  serves the NBD export, so a fast RAM stream delays the NBD replies (sw2, 251 MiB/s: ops took
  150-250 ms; the job's dirty set grew from 2 to 13 MiB, all a 1 MiB/s writer touched in 1.9 s);
  at 56-61 MiB/s (sw3, sw4) the job kept up (19 and 5 granules left at the stop);
* at the stop, vm_stop() drains the job: it finishes the mirror_iteration() it is in, window after
  window of 16 ops, each waiting 40 ms on 7.2 (sw1, 160 MiB/s, 4 MiB/s of writes: 219 granules
  dirty, 5 windows in the drain, 373 ms from the stop to the job's end, downtime 446 ms); after
  libvirt's block-job-cancel the rest flows without such waits (sw1's last 120 granules in 13 ms,
  sw2's 190 in 34 ms) until the last op's reply.

A sweep over link speeds and writer shapes (sw5-sw12, 640 MiB guest, no memory dirtying) puts the
backlog at the stop on the link's speed and the writes' size: 4 KiB writes at 4 MiB/s left nothing
to copy at 96 MiB/s (downtime 41 ms) and 186 granules with 6 reply stalls at 250 MiB/s (349 ms);
at 1 MiB/s, 42 granules and 2 stalls at 160 MiB/s (125 ms); 64 KiB writes at 1 MiB/s left one op
at 32-250 MiB/s (30-57 ms), at 4 MiB/s over 200 MiB/s four ops and a stall (96 ms).

The model charges the stop's windows on QEMU < 8.0 (simkvm.sim.mirror.stop_reply_stalls_s: 40 ms
per window of 16 ops of the backlog, at most six), on the backlog of the job's last 100 ms of writes;
the backlog's growth with the link's speed is not modelled yet. ``--pace DIR...`` reads the traces
again and shows the growth's form: with 4 KiB writes the READY job completes a median 25-85 ops per 100
ms while RAM migrates at 56-96 MiB/s (0-1 granule left at the stop), exactly one window of 16 per 100 ms
(BUFFER_DELAY, the RAM stream's burst period) at 160 MiB/s (sw1, sw12: 209 and 26 granules at the stop,
4 and 1 MiB/s of writes), and 2-22 at 250 MiB/s (sw2, sw6: 207 and 188). On the campaigns' QEMU 7.2
runs this is the largest downtime miss left: the fast-link 4 KiB writer corners (c13-c27, 160-244
MiB/s, 4 MiB/s of writes) measured 366-919 ms against 163-196 predicted (profiles/testbed-v27.yaml);
on QEMU 10, whose NBD server uncorks its replies, 3 of the 4 held-out runs with such a writer on a link
over 200 MiB/s (q10h-q10t) were within the downtime tolerance.

    python experiments/mirror_trace.py --pace data/experiments/mirror-trace/debian12-switchover-sw*

Each run takes about 20 s. The output directory gets the campaign's run files, ``mirror-trace.log``
(the trace lines) and ``summary.json`` (the figures printed).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

_ANY = re.compile(r"^\d+@(?P<t>[\d.]+):(?P<event>\w+) ?(?P<args>.*)$")
#: trace events around the switchover (--switchover): the VM's stop, the migration's states, the block
#: jobs' transitions (READY -> the cancel's final copy -> concluded), the final RAM pass
SWITCHOVER_EVENTS = ("vm_state_notify", "migrate_set_state", "migration_completion_vm_stop",
                     "savevm_state_complete_precopy", "job_state_transition", "job_apply_verb", "job_completed")
STALL_S = 0.015  # a gap between completions longer than this is a stall (ops take 1-3 ms when flowing)


@dataclass
class TraceSummary:
    """What one mirror's trace says (times in seconds from ``mirror_start``)."""

    ops: int
    op_sizes: dict[int, int]  # bytes -> count
    latency_p50_s: float
    latency_p90_s: float
    latency_max_s: float
    span_s: float  # mirror_start to the last completion
    # gaps between completions until the job is ready (after it, the job sleeps 100 ms slices between
    # copies of new writes: not stalls)
    stalls: int
    stall_median_s: float
    stall_total_s: float
    ready_s: float | None  # the first mirror_before_flush: the job turns READY after it


def parse(lines: list[str]) -> list[tuple[float, str, str]]:
    """(time, event, arguments) of every mirror_* trace line, in order."""
    return [e for e in parse_any(lines) if e[1].startswith("mirror_")]


def parse_any(lines: list[str]) -> list[tuple[float, str, str]]:
    """(time, event, arguments) of every trace line of any event, in order."""
    out = []
    for line in lines:
        m = _ANY.match(line.strip())
        if m:
            out.append((float(m["t"]), m["event"], m["args"]))
    return out


@dataclass
class SwitchoverSummary:
    """Where the downtime goes on the source (seconds from the VM's stop)."""

    stop_to_last_copy_s: float  # the last mirror op done after the stop: the cancel's final copies
    ops_after_stop: int  # mirror ops issued after the stop
    stalls_after_stop: int  # gaps between their completions longer than STALL_S
    stop_to_job_done_s: float | None  # the job's last transition (concluded)
    stop_to_ram_complete_s: float | None  # savevm_state_complete_precopy: the final RAM pass starts
    stop_to_completed_s: float | None  # migrate_set_state ... completed


def vm_stop(events: list[tuple[float, str, str]]) -> float | None:
    """When the source VM stopped (vm_state_notify running 0), if the trace saw it."""
    return next((t for t, e, a in events if e == "vm_state_notify" and a.startswith("running 0")), None)


def summarize_switchover(events: list[tuple[float, str, str]]) -> SwitchoverSummary:
    """The span from the source VM's stop (vm_state_notify running 0) to the job's end and the migration's."""
    stop = vm_stop(events)
    if stop is None:
        raise ValueError("no vm_state_notify 'running 0' line: the VM's stop was not traced")
    after = [(t - stop, e, a) for t, e, a in events if t >= stop]
    issued = [t for t, e, _ in after if e == "mirror_one_iteration"]
    done = [t for t, e, _ in after if e == "mirror_iteration_done"]
    gaps = [b - a for a, b in zip([0.0, *done], done) if b - a > STALL_S]

    def first(event: str, contains: str = "") -> float | None:
        return next((t for t, e, a in after if e == event and contains in a), None)

    concluded = [t for t, e, a in after if e == "job_state_transition" and "concluded" in a]
    return SwitchoverSummary(stop_to_last_copy_s=done[-1] if done else 0.0, ops_after_stop=len(issued),
                             stalls_after_stop=len(gaps), stop_to_job_done_s=concluded[-1] if concluded else None,
                             stop_to_ram_complete_s=first("savevm_state_complete_precopy"),
                             stop_to_completed_s=first("migrate_set_state", "completed"))


BUFFER_DELAY_S = 0.100  # migration/migration.c: the rate limit's window, the RAM stream's burst period
MAX_IN_FLIGHT = 16  # block/mirror.c: ops a mirror job keeps in flight
GRANULE_BYTES = 65536  # the job's dirty-bitmap granularity on the testbed's NBD targets


@dataclass
class PaceSummary:
    """How fast a READY job copied while RAM migrated (--switchover traces): on QEMU 7.2 a fast RAM
    stream paces it to one window of MAX_IN_FLIGHT ops per BUFFER_DELAY, and the writes it cannot
    keep up with are the stop's backlog."""

    ram_phase_s: float  # the job's READY to the VM's stop
    windows: int  # BUFFER_DELAY bins in that span
    ops_per_window_median: float  # mirror ops completed per bin
    paced_share: float  # share of bins with 1-MAX_IN_FLIGHT completions (one window of ops, or part of one)
    granules_at_stop: float  # the job's dirty count before the stop, in granules


def summarize_pace(events: list[tuple[float, str, str]]) -> PaceSummary:
    """The job's completions per BUFFER_DELAY from READY to the VM's stop, and its dirty count then."""
    ready = next((t for t, e, a in events if e == "job_state_transition" and "-->ready" in a), None)
    stop = vm_stop(events)
    if ready is None or stop is None or stop <= ready:
        raise ValueError("the trace lacks the job's READY transition or the VM's stop: trace with --switchover")
    n = max(1, int((stop - ready) / BUFFER_DELAY_S))
    done = [0] * n
    for t, e, _ in events:
        k = int((t - ready) / BUFFER_DELAY_S)
        if e == "mirror_iteration_done" and 0 <= k < n:
            done[k] += 1
    dirty = [a for t, e, a in events if e == "mirror_before_sleep" and t <= stop]
    count = re.search(r"dirty count (\d+)", dirty[-1]) if dirty else None
    return PaceSummary(ram_phase_s=stop - ready, windows=n, ops_per_window_median=float(np.median(done)),
                       paced_share=sum(1 for d in done if 0 < d <= MAX_IN_FLIGHT) / n,
                       granules_at_stop=int(count[1]) / GRANULE_BYTES if count else 0.0)


def summarize(events: list[tuple[float, str, str]]) -> TraceSummary:
    """Op sizes, latencies (an op is keyed by its offset: one op per offset is in flight at a time)
    and the completion gaps longer than STALL_S."""
    if not events:
        raise ValueError("no mirror_* trace lines: was the trace switched on before the mirror started?")
    t0 = next((t for t, e, _ in events if e == "mirror_start"), events[0][0])
    sizes: dict[int, int] = {}
    issued: dict[str, float] = {}
    latencies: list[float] = []
    done: list[float] = []
    ready = None
    for t, event, args in events:
        if event == "mirror_one_iteration":
            offset = re.search(r"offset (\d+)", args)
            size = re.search(r"bytes (\d+)", args)
            if offset and size:
                sizes[int(size[1])] = sizes.get(int(size[1]), 0) + 1
                issued[offset[1]] = t
        elif event == "mirror_iteration_done":
            offset = re.search(r"offset (\d+)", args)
            if offset and offset[1] in issued:
                latencies.append(t - issued.pop(offset[1]))
            done.append(t)
        elif event == "mirror_before_flush" and ready is None:
            ready = t - t0
    until_ready = [t for t in done if ready is None or t - t0 <= ready]
    gaps = [b - a for a, b in zip(until_ready, until_ready[1:]) if b - a > STALL_S]
    lat = np.array(latencies) if latencies else np.zeros(1)
    return TraceSummary(
        ops=sum(sizes.values()), op_sizes=dict(sorted(sizes.items())),
        latency_p50_s=float(np.percentile(lat, 50)), latency_p90_s=float(np.percentile(lat, 90)),
        latency_max_s=float(lat.max()), span_s=(done[-1] - t0) if done else 0.0,
        stalls=len(gaps), stall_median_s=float(np.median(gaps)) if gaps else 0.0,
        stall_total_s=float(sum(gaps)), ready_s=ready)


def _campaign(path: Path, scenario: str, stack: str) -> None:
    path.write_text(
        "name: mirror-trace\n"
        f"stack: {stack}\n"
        "defaults: {memory: 256MiB, zero_fraction: 0.5, wss: 32MiB, max_downtime: 300ms, max_time: 60s,\n"
        "  max_iterations: 30, storage: non_shared_disk}\n"
        f"scenarios:\n- {scenario}\n")


def _trace_when_defined(uri: str, domain: str, stop: threading.Event, result: dict[str, float],
                        patterns: tuple[str, ...] = ("mirror_*",)) -> None:
    """Switch the mirror's trace events on in the source QEMU as soon as the domain runs."""
    import libvirt
    import libvirt_qemu

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # "domain not found" until it exists
    start = time.monotonic()
    while not stop.is_set() and time.monotonic() - start < 300:
        try:
            conn = libvirt.open(uri)
            try:
                dom = conn.lookupByName(domain)
                for pattern in patterns:
                    libvirt_qemu.qemuMonitorCommand(dom, f"trace-event {pattern} on",
                                                    libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
                result["traced_after_s"] = time.monotonic() - start
                return
            finally:
                conn.close()
        except libvirt.libvirtError:
            time.sleep(0.1)


def print_pace(dirs: list[Path]) -> int:
    """One line per trace directory: its scenario's link and writer, the job's pace, the stop's backlog."""
    print(f"{'trace':<34} {'link':>9} {'writer':>12} {'RAM s':>6} {'ops/100ms':>9} {'<=16':>5} "
          f"{'granules at stop':>16} {'downtime':>9}")
    for d in dirs:
        try:
            summary = json.loads((d / "summary.json").read_text())
            pace = summarize_pace(parse_any((d / "mirror-trace.log").read_text().splitlines()))
        except (OSError, ValueError) as exc:
            print(f"mirror_trace: {d}: {exc}", file=sys.stderr)
            return 2
        scen = summary["scenario"]

        def knob(name: str) -> str:
            m = re.search(rf"{name}: ([^,}}]+)", scen)
            return m[1] if m else "-"

        writer = f"{knob('disk_write_rate')} {knob('io_size')}"
        dt = summary.get("downtime_s")
        print(f"{d.name:<34} {knob('bandwidth'):>9} {writer:>12} {pace.ram_phase_s:>6.2f} "
              f"{pace.ops_per_window_median:>9.0f} {pace.paced_share:>5.2f} {pace.granules_at_stop:>16.0f} "
              f"{'-' if dt is None else f'{dt * 1e3:.0f} ms':>9}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", type=Path, help="output directory (created)")
    ap.add_argument("--pace", nargs="+", type=Path, metavar="DIR",
                    help="run nothing: read earlier --switchover trace directories and print how fast each "
                         "READY job copied while RAM migrated (ops per 100 ms window, the backlog at the stop)")
    ap.add_argument("--id", default="trace-rand4k", help="scenario id (the domain is cmp-ID)")
    ap.add_argument("--bandwidth", default="172MiB/s")
    ap.add_argument("--disk", default="64MiB")
    ap.add_argument("--disk-write-rate", default="4MiB/s")
    ap.add_argument("--io-size", default="4KiB")
    ap.add_argument("--pattern", default="random", choices=["random", "seq"])
    ap.add_argument("--memory", default="256MiB")
    ap.add_argument("--max-downtime", default="300ms")
    ap.add_argument("--switchover", action="store_true",
                    help="also trace the VM's stop, the migration's states and the block job's transitions, "
                         "and say where the downtime goes on the source")
    args = ap.parse_args(argv)
    if args.pace:
        return print_pace(args.pace)
    if args.output is None:
        ap.error("-o/--output is required unless --pace is given")

    from simkvm.testbed.hosts import Testbed

    tb = Testbed()
    try:
        state = tb.host_state("a")
    except Exception as exc:  # noqa: BLE001 - one line for the user, whatever the testbed says
        print(f"mirror_trace: testbed host a is not up ({exc}); run 'simkvm testbed up --stack ...' first",
              file=sys.stderr)
        return 2
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    scenario = (f"{{id: {args.id}, role: validation, dirty_rate: 0, disk: {args.disk}, "
                f"disk_write_rate: {args.disk_write_rate}, disk_wss: 16MiB, io_size: {args.io_size}, "
                f"pattern: {args.pattern}, bandwidth: {args.bandwidth}, memory: {args.memory}, "
                f"max_downtime: {args.max_downtime}}}")
    patterns = ("mirror_*", *SWITCHOVER_EVENTS) if args.switchover else ("mirror_*",)
    _campaign(out / "campaign.yaml", scenario, state.stack)
    domain = f"cmp-{args.id}"
    stop, traced = threading.Event(), {}  # type: ignore[var-annotated]
    watcher = threading.Thread(target=_trace_when_defined, args=(state.uri, domain, stop, traced, patterns),
                               daemon=True)
    watcher.start()
    rc = subprocess.run([sys.executable, "-m", "simkvm", "campaign", "run", str(out / "campaign.yaml"), "-o",
                         str(out / "run"), "--keep-testbed", "--no-probe", "-q"]).returncode
    stop.set()
    if rc != 0 or "traced_after_s" not in traced:
        print(f"mirror_trace: the run failed (exit {rc}) or the trace was not switched on", file=sys.stderr)
        return 1
    log = subprocess.run(["nsenter", "-t", str(state.libvirtd_pid), "-m", "cat",
                          f"/var/log/libvirt/qemu/{domain}.log"], capture_output=True, text=True, check=True).stdout
    names = tuple(f":{p.rstrip('*')}" for p in patterns)
    traced_lines = [line for line in log.splitlines() if any(n in line for n in names)]
    (out / "mirror-trace.log").write_text("\n".join(traced_lines) + "\n")
    try:
        summary = summarize(parse(traced_lines))
    except ValueError as exc:
        print(f"mirror_trace: {exc}", file=sys.stderr)
        return 1
    measured = json.loads(next((out / "run" / "runs").glob("*.measured.json")).read_text())
    report = {"stack": state.stack, "scenario": scenario, **asdict(summary),
              "disk_mirror_time_s": measured["disk_mirror_time_s"],
              "disk_transferred_bytes": measured["disk_transferred_bytes"]}
    switch = None
    if args.switchover:
        try:
            switch = summarize_switchover(parse_any(traced_lines))
        except ValueError as exc:
            print(f"mirror_trace: {exc}", file=sys.stderr)
            return 1
        report.update(switchover=asdict(switch), downtime_s=measured["downtime_s"])
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"stack {state.stack}: mirror {report['disk_mirror_time_s']:.2f} s, {summary.ops} ops "
          f"(sizes {summary.op_sizes}), op latency p50 {summary.latency_p50_s * 1e3:.1f} ms, "
          f"p90 {summary.latency_p90_s * 1e3:.1f} ms; {summary.stalls} stalls > {STALL_S * 1e3:.0f} ms "
          f"(median {summary.stall_median_s * 1e3:.1f} ms) = {summary.stall_total_s:.2f} s of the "
          f"{summary.ready_s or summary.span_s:.2f} s until ready")
    if switch is not None:
        ms = {k: None if v is None else round(v * 1e3, 1) for k, v in asdict(switch).items() if k.endswith("_s")}
        print(f"switchover: downtime {measured['downtime_s'] * 1e3:.0f} ms (libvirt); from the stop (ms): {ms}; "
              f"{switch.ops_after_stop} mirror ops after it, {switch.stalls_after_stop} stalls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
