"""`simkvm testbed ...`: bring the two-host libvirt testbed up and down, and
start a guest with a chosen workload on it.

Sizes and rates are parsed here, once, with simkvm.model.units; everything below
works in bytes and bytes per second.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..model.errors import UserError
from ..model.units import fmt_bytes, fmt_duration, fmt_rate, parse_duration, parse_fraction, parse_rate, parse_size
from ..testbed.hosts import DEFAULT_DISK_CAPACITY_BYTES, HOST_NAMES, Testbed
from ..testbed.stack import DEFAULT_STACK, STACKS


def add_commands(subparsers: Any) -> None:
    """Register `testbed up|status|down|guest` on the top-level sub-parsers."""
    tb = subparsers.add_parser(
        "testbed", help="the real two-host libvirt testbed on this machine",
        description="Two libvirt hosts (a, b) in private namespaces on this machine, for real migrations.",
    )
    tb_sub = tb.add_subparsers(dest="testbed_command", metavar="ACTION", parser_class=type(tb))
    tb.set_defaults(func=lambda args: (tb.print_help(), 2)[1])

    up = tb_sub.add_parser("up", help="start hosts a and b (idempotent)")
    up.add_argument("--disk-capacity", default=f"{DEFAULT_DISK_CAPACITY_BYTES // 2**30}GiB",
                    help="space for disk images on each host (default 4GiB)")
    up.add_argument("--disk-capacity-b", default=None,
                    help="space on host b only, e.g. to make it too small for a guest's disk")
    up.add_argument("--stack", default=None,
                    help="QEMU/libvirt the hosts run: " + "; ".join(
                        f"{name} or {s.qemu} = {s.description}" for name, s in STACKS.items())
                    + f" (default {DEFAULT_STACK}, or env SIMKVM_TESTBED_STACK; install with scripts/setup-stack.sh)")
    up.add_argument("--link", action="store_true",
                    help="put the hosts in network namespaces joined by a veth pair ('simkvm testbed link' shapes "
                         "and cuts it); default: both on loopback")
    up.set_defaults(func=_up)

    link = tb_sub.add_parser(
        "link", help="shape, cut or restore the link between the hosts (after 'up --link')",
        description="netem on both ends of the hosts' veth pair. With no option: show the link.")
    link.add_argument("--rate", default=None, help="bandwidth each way, e.g. 100Mbit/s or 12MiB/s")
    link.add_argument("--delay", default=None, help="one-way delay, e.g. 5ms (the round trip is twice that)")
    link.add_argument("--loss", default=None, help="share of packets dropped each way, e.g. 0.1%%")
    link.add_argument("--clear", action="store_true", help="remove all shaping")
    link.add_argument("--cut", action="store_true", help="take both ends down: no packet passes")
    link.add_argument("--restore", action="store_true", help="bring both ends up again after --cut")
    link.set_defaults(func=_link)

    status = tb_sub.add_parser("status", help="show the hosts, their URIs and domains")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)

    down = tb_sub.add_parser("down", help="stop both hosts and their guests, remove their state")
    down.set_defaults(func=_down)

    canaries = tb_sub.add_parser(
        "canaries", help="migrate a guest back and forth and count lost dirty pages (QEMU TCG's TLB bug)")
    canaries.add_argument("--migrations", type=int, default=10, help="how many migrations (default 10)")
    canaries.add_argument("--no-tlb-flush", action="store_true",
                          help="switch the guest's TLB-flush workaround off (to see whether this stack needs it)")
    canaries.set_defaults(func=_canaries)

    guest = tb_sub.add_parser("guest", help="define and start a workload guest on a host")
    guest.add_argument("name")
    guest.add_argument("--memory", default="512MiB", help="guest RAM (default 512MiB)")
    guest.add_argument("--disk", default="256MiB", help="qcow2 disk size (default 256MiB)")
    guest.add_argument("--dirty-rate", default="0B/s", help="page writes per second x 4KiB, e.g. 20MiB/s")
    guest.add_argument("--wss", default="64MiB", help="memory working set the dirty rate is spread over")
    guest.add_argument("--pattern", default="random", choices=("random", "seq"), help="page order (default random)")
    guest.add_argument("--zero-fraction", default="0.5", help="share of RAM left as zero pages (default 0.5)")
    guest.add_argument("--disk-write-rate", default="0B/s", help="O_DIRECT writes to the disk, e.g. 1MiB/s")
    guest.add_argument("--disk-wss", default="16MiB", help="disk working set (default 16MiB)")
    guest.add_argument("--io-size", default="4KiB", help="size of each disk write (default 4KiB)")
    guest.add_argument("--accel", default="qemu", choices=("qemu", "kvm"),
                       help="qemu = TCG (testbed default), kvm on real hosts")
    guest.add_argument("--host", default="a", choices=HOST_NAMES)
    guest.add_argument("--replace", action="store_true", help="remove an existing guest of that name first")
    guest.add_argument("--no-wait", action="store_true", help="return once started, without waiting for READY")
    guest.add_argument("--timeout", default="120", help="seconds to wait for READY (default 120)")
    guest.add_argument("--network", action="store_true",
                       help="a NIC on the testbed's private bridge, so `simkvm migrate --probe` can measure "
                            "the service interruption")
    guest.set_defaults(func=_guest)


def _up(args: argparse.Namespace) -> int:
    capacity = int(parse_size(args.disk_capacity, "--disk-capacity", allow_zero=False))
    capacities: int | dict[str, int] = capacity
    if args.disk_capacity_b is not None:
        capacities = {"a": capacity, "b": int(parse_size(args.disk_capacity_b, "--disk-capacity-b", allow_zero=False))}
    started = time.monotonic()
    status = Testbed(stack=args.stack).up(capacities, link=True if args.link else None)
    for host in status["hosts"]:
        print(f"host {host['name']}: {host['uri']}  uuid {host.get('host_uuid', '-')}  "
              f"disk space {fmt_bytes(host.get('disk_capacity_bytes', 0))}  {_versions(host)}")
    print(f"testbed up in {fmt_duration(time.monotonic() - started)} (state in {status['state_dir']})")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = Testbed().status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0 if status["running"] else 1
    for host in status["hosts"]:
        if not host["running"]:
            print(f"host {host['name']}: down ({host['uri']})")
            continue
        pool = host.get("pool") or {}
        print(f"host {host['name']}: up  {host['uri']}  uuid {host['host_uuid']}  {_versions(host)}  "
              f"images {fmt_bytes(pool.get('allocation_bytes', 0))} used of {fmt_bytes(pool.get('capacity_bytes', 0))}")
        for dom in host["domains"]:
            print(f"  {dom['name']}: {dom['state']}")
    link = status.get("link") or {}
    if link.get("up"):
        print(f"link: a {link['addresses']['a']} <-> b {link['addresses']['b']} "
              f"({'carrier' if link['carrier'] else 'CUT'}; {link['qdisc'] or 'no shaping'})")
    if any(h["running"] for h in status["hosts"]):
        stack = status["stack"]
        print(f"stack {stack['name']}: {stack['description']} (simulate with host.qemu: \"{stack['qemu']}\")")
    if not status["running"]:
        print("testbed is not (fully) running: 'simkvm testbed up' starts it")
    return 0 if status["running"] else 1


def _link(args: argparse.Namespace) -> int:
    actions = [args.clear, args.cut, args.restore, any(v is not None for v in (args.rate, args.delay, args.loss))]
    if sum(actions) > 1:
        raise UserError("give one of --rate/--delay/--loss, --clear, --cut, --restore")
    link = Testbed().link()
    if args.clear:
        link.clear()
    elif args.cut:
        link.cut()
    elif args.restore:
        link.restore()
    elif actions[3]:
        link.shape(
            rate_Bps=None if args.rate is None else parse_rate(args.rate, "--rate"),
            delay_s=None if args.delay is None else parse_duration(args.delay, "--delay"),
            loss=None if args.loss is None else parse_fraction(args.loss, "--loss"),
        )
    state = link.status()
    if not state["up"]:
        raise UserError("the testbed has no link; start it with 'simkvm testbed up --link'")
    print(f"link: a {state['addresses']['a']} ({state['devices']['a']}) <-> b {state['addresses']['b']} "
          f"({state['devices']['b']}), {'carrier' if state['carrier'] else 'CUT'}; {state['qdisc'] or 'no shaping'}")
    return 0


def _versions(host: dict[str, Any]) -> str:
    return f"stack {host.get('stack', '-')} (QEMU {host.get('qemu_version', '?')}, libvirt {host.get('libvirt_version', '?')})"


def _down(args: argparse.Namespace) -> int:
    from ..testbed.network import GuestNetwork

    tb = Testbed()
    tb.down()
    GuestNetwork(tb.base_port).down()
    print("testbed down")
    return 0


def _canaries(args: argparse.Namespace) -> int:
    from ..testbed.canary import main_counts

    if not 1 <= args.migrations <= 1000:
        raise UserError(f"--migrations must be between 1 and 1000, got {args.migrations}")
    return main_counts(args)


def _guest(args: argparse.Namespace) -> int:
    from ..testbed.guest import define_guest, wait_ready

    timeout_s = float(args.timeout) if args.timeout.replace(".", "", 1).isdigit() else None
    if timeout_s is None or not 0 < timeout_s <= 3600:
        raise UserError(f"--timeout must be a number of seconds from 0 to 3600, got {args.timeout!r}")
    tb = Testbed()
    started = time.monotonic()
    net, ip = None, None
    if args.network:
        from ..testbed.network import GuestNetwork

        net = GuestNetwork(tb.base_port)
        net.up()
        ip = net.ip_for(args.name)
    define_guest(
        args.name,
        int(parse_size(args.memory, "--memory", allow_zero=False)),
        int(parse_size(args.disk, "--disk", allow_zero=False)),
        dirty_rate_Bps=parse_rate(args.dirty_rate, "--dirty-rate"),
        wss_bytes=int(parse_size(args.wss, "--wss", allow_zero=False)),
        pattern=args.pattern,
        zero_fraction=parse_fraction(args.zero_fraction, "--zero-fraction"),
        disk_write_rate_Bps=parse_rate(args.disk_write_rate, "--disk-write-rate"),
        disk_wss_bytes=int(parse_size(args.disk_wss, "--disk-wss", allow_zero=False)),
        io_size_bytes=int(parse_size(args.io_size, "--io-size", allow_zero=False)),
        accel=args.accel, host=args.host, replace=args.replace, testbed=tb, network=net, ip=ip,
    )
    print(f"guest {args.name} started on host {args.host} ({tb.uri(args.host)})"
          + (f", address {ip} on bridge {net.bridge}" if net else ""))
    if args.no_wait:
        return 0
    ready = wait_ready(args.name, timeout_s, testbed=tb)
    v = ready.values
    print(f"guest {args.name} READY after {fmt_duration(time.monotonic() - started)}: "
          f"dirty {fmt_rate(v.get('dirty_rate', 0))} over {fmt_bytes(v.get('wss', 0))} ({v.get('pattern')}), "
          f"{fmt_bytes(v.get('filled', 0))} non-zero of {fmt_bytes(v.get('mem_total', 0))}, "
          f"disk {v.get('disk')} {fmt_rate(v.get('disk_rate', 0))}")
    print(f"console: {tb.console_dir / (args.name + '.log')}")
    return 0
