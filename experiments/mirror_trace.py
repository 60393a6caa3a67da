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

_LINE = re.compile(r"^\d+@(?P<t>[\d.]+):(?P<event>mirror_\w+) (?P<args>.*)$")
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
    out = []
    for line in lines:
        m = _LINE.match(line.strip())
        if m:
            out.append((float(m["t"]), m["event"], m["args"]))
    return out


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


def _trace_when_defined(uri: str, domain: str, stop: threading.Event, result: dict[str, float]) -> None:
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
                libvirt_qemu.qemuMonitorCommand(dom, "trace-event mirror_* on",
                                                libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
                result["traced_after_s"] = time.monotonic() - start
                return
            finally:
                conn.close()
        except libvirt.libvirtError:
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", required=True, type=Path, help="output directory (created)")
    ap.add_argument("--id", default="trace-rand4k", help="scenario id (the domain is cmp-ID)")
    ap.add_argument("--bandwidth", default="172MiB/s")
    ap.add_argument("--disk", default="64MiB")
    ap.add_argument("--disk-write-rate", default="4MiB/s")
    ap.add_argument("--io-size", default="4KiB")
    ap.add_argument("--pattern", default="random", choices=["random", "seq"])
    args = ap.parse_args(argv)

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
                f"pattern: {args.pattern}, bandwidth: {args.bandwidth}}}")
    _campaign(out / "campaign.yaml", scenario, state.stack)
    domain = f"cmp-{args.id}"
    stop, traced = threading.Event(), {}  # type: ignore[var-annotated]
    watcher = threading.Thread(target=_trace_when_defined, args=(state.uri, domain, stop, traced), daemon=True)
    watcher.start()
    rc = subprocess.run([sys.executable, "-m", "simkvm", "campaign", "run", str(out / "campaign.yaml"), "-o",
                         str(out / "run"), "--keep-testbed", "--no-probe", "-q"]).returncode
    stop.set()
    if rc != 0 or "traced_after_s" not in traced:
        print(f"mirror_trace: the run failed (exit {rc}) or the trace was not switched on", file=sys.stderr)
        return 1
    log = subprocess.run(["nsenter", "-t", str(state.libvirtd_pid), "-m", "cat",
                          f"/var/log/libvirt/qemu/{domain}.log"], capture_output=True, text=True, check=True).stdout
    lines = [line for line in log.splitlines() if ":mirror_" in line]
    (out / "mirror-trace.log").write_text("\n".join(lines) + "\n")
    try:
        summary = summarize(parse(lines))
    except ValueError as exc:
        print(f"mirror_trace: {exc}", file=sys.stderr)
        return 1
    measured = json.loads(next((out / "run" / "runs").glob("*.measured.json")).read_text())
    report = {"stack": state.stack, "scenario": scenario, **asdict(summary),
              "disk_mirror_time_s": measured["disk_mirror_time_s"],
              "disk_transferred_bytes": measured["disk_transferred_bytes"]}
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"stack {state.stack}: mirror {report['disk_mirror_time_s']:.2f} s, {summary.ops} ops "
          f"(sizes {summary.op_sizes}), op latency p50 {summary.latency_p50_s * 1e3:.1f} ms, "
          f"p90 {summary.latency_p90_s * 1e3:.1f} ms; {summary.stalls} stalls > {STALL_S * 1e3:.0f} ms "
          f"(median {summary.stall_median_s * 1e3:.1f} ms) = {summary.stall_total_s:.2f} s of the "
          f"{summary.ready_s or summary.span_s:.2f} s until ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
