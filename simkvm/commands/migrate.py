"""`simkvm migrate` (run a plan for real, optionally next to its prediction) and `simkvm compare`."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from ..load import plan_from_file
from ..model.errors import EnvironmentProblem, MigrationFailed, UserError
from ..model.limits import MAX_TIME_S
from ..model.plan import Plan
from ..model.result import Measurement, Result
from ..model.units import parse_duration
from .hosts import add_domain_and_hosts, host_uri


def _migrate_uri(args: argparse.Namespace) -> str | None:
    """--migrate-uri, else a testbed destination's address (loopback, or its end of `testbed up --link`),
    else None: the executor's default (the host of --dst)."""
    from ..testbed.hosts import HOST_NAMES, Testbed

    if args.migrate_uri:
        return str(args.migrate_uri)
    return Testbed().migration_uri(args.dst) if args.dst in HOST_NAMES else None


def _format(result: Result, title: str) -> str:
    from ..report import format_result

    return format_result(result, title=title)


def _dump(obj: Any, compact: bool) -> None:
    json.dump(obj, sys.stdout, indent=None if compact else 2)
    sys.stdout.write("\n")


def _setup_logging(quiet: bool) -> None:
    """Progress lines on stderr, prefixed like every simkvm message; --quiet keeps only errors."""
    logger = logging.getLogger("simkvm.executor")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("simkvm migrate: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.ERROR if quiet else logging.INFO)


def cmd_migrate(args: argparse.Namespace) -> int:
    from ..executor.run import execute
    from ..sim import simulate
    from ..testbed.guestplan import plan_for_domain

    plan = plan_from_file(args.plan)
    src, dst = host_uri(args.src), host_uri(args.dst)
    timeout_s = parse_duration(args.timeout, "--timeout", allow_zero=False) if args.timeout else None
    connect_timeout_s = parse_duration(args.connect_timeout, "--connect-timeout", allow_zero=False)
    if timeout_s is not None and not 1.0 <= timeout_s <= MAX_TIME_S:
        raise UserError(f"--timeout must be from 1s to 7 days, got {args.timeout!r}")
    _setup_logging(args.quiet)
    predicted = None
    if args.predict:
        plan = plan_for_domain(plan, args.domain, src)
        predicted = simulate(plan)
        predicted.plan = plan.to_dict()
        if not args.json:
            print(_format(predicted, f"simkvm predict: {plan.name} (guest {args.domain})"))
            print()
    probe = _testbed_probe(args.domain) if args.probe else None
    options = dict(migrate_uri=_migrate_uri(args), connect_timeout_s=connect_timeout_s, tls=args.tls,
                   peer_to_peer=args.p2p, tunnelled=args.tunnelled, persist=not args.no_persist_destination,
                   undefine_source=not args.keep_source_definition)
    if args.dry_run:
        from ..executor.run import Execution

        would = Execution(plan=plan, domain=args.domain, src_uri=src, dst_uri=dst, **options).dry_run()
        if args.json:
            _dump(would, args.compact)
        else:
            for key, value in would.items():
                print(f"{key}: {value}")
        return 0 if would["would_migrate"] else 1
    try:
        measured = execute(plan, args.domain, src, dst, timeout_s=timeout_s, probe=probe,
                           remove_source_images=args.remove_source_image, **options)
    except (MigrationFailed, UserError, EnvironmentProblem) as exc:
        if args.json:  # a result on every failure path, so a script never parses nothing
            partial = getattr(exc, "result", None) or _failure_result(plan, exc)
            _dump(partial.to_dict() if predicted is None else
                  {"predicted": predicted.to_dict(), "measured": partial.to_dict()}, args.compact)
        raise
    if args.json:
        _dump(measured.to_dict() if predicted is None else
              {"predicted": predicted.to_dict(), "measured": measured.to_dict()}, args.compact)
    else:
        print(_format(measured, f"simkvm migrate: {plan.name} (guest {args.domain}, {src} -> {dst})"))
        if predicted is not None:
            from ..compare import compare, format_comparison

            print()
            print(format_comparison(compare(predicted, measured)))
    if not measured.converged or measured.measurement.downtime_bound_exceeded:
        raise MigrationFailed(measured.reason, measured.measurement.vm_location or "unknown")
    return 0


def _failure_result(plan: Plan, exc: Exception) -> Result:
    """The result of a migration that failed before measuring anything (cannot connect, not running, ...)."""
    where = exc.vm_location if isinstance(exc, MigrationFailed) else "where it was: simkvm changed nothing"
    return Result(converged=False, outcome="refused" if not isinstance(exc, MigrationFailed) else "aborted",
                  reason=str(exc), source="measured", plan=plan.to_dict(), measurement=Measurement(where))


def _testbed_probe(domain: str) -> Any:
    """A prober for a testbed guest started with --network (its READY line says its address)."""
    from ..testbed.guestplan import guest_report
    from ..testbed.hosts import Testbed
    from ..testbed.network import GuestNetwork

    report = guest_report(domain) or {}
    ip = str(report.get("ip", "none")).split("/")[0]
    if ip in ("none", ""):
        raise UserError(f"--probe needs a testbed guest with a network: start it with "
                        f"`simkvm testbed guest {domain} --network ...` (its console shows no address)")
    net = GuestNetwork(Testbed().base_port)
    if not net.is_up():
        raise UserError(f"--probe: the testbed network ({net.bridge}) is not up; `simkvm testbed guest --network` "
                        f"creates it")
    return net.probe(ip)


def cmd_recover(args: argparse.Namespace) -> int:
    from ..executor.recover import recover

    src, dst = host_uri(args.src), host_uri(args.dst)
    rec = recover(args.domain, src, dst, reset_stuck_connections=args.reset_stuck_connections)
    if args.json:
        _dump({"ok": rec.ok, "vm_location": rec.location, "found": rec.found, "done": rec.done, "left": rec.left,
               "journal": rec.journal}, False)
    else:
        for line in rec.lines():
            print(f"simkvm recover: {line}")
    return 0 if rec.ok else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from ..compare import compare, format_comparison, load_pair, plot, to_jsonable
    from ..htmlreport import check_target

    check_target(args.html)
    if args.plot:
        from ..io import FIGURE_SUFFIXES, check_output

        check_output(args.plot, "--plot", FIGURE_SUFFIXES)
    predicted, measured = load_pair(args.predicted, args.measured)
    if predicted.source == "measured" and measured.source == "simulated":
        raise UserError("the first file is a measurement and the second a prediction; "
                        "give PREDICTED.json first, then MEASURED.json")
    comparison = compare(predicted, measured)
    if args.json:
        _dump(to_jsonable(comparison), False)
    else:
        print(format_comparison(comparison))
    if args.plot:
        plot(predicted, measured, args.plot)
        print(f"figure written to {args.plot}", file=sys.stderr)
    if args.html:
        from .. import htmlreport
        from .predict import command_line

        htmlreport.write(args.html, htmlreport.compare_page(predicted, measured, format_comparison(comparison),
                                                            command=command_line()))
        print(f"report written to {args.html}", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "migrate", help="run a plan's migration for real through libvirt and measure it",
        description="Live-migrate a running domain as the plan says (bandwidth, max downtime, storage, limits), "
                    "creating its empty disks on the destination first, and measure it in the same schema as "
                    "simkvm predict. Exit 0 when it converged, 1 when it did not or was refused/aborted (the "
                    "message says where the VM is), 2 on bad input or an unready machine. Before each step it "
                    "writes a journal ($SIMKVM_STATE_DIR/journal) that simkvm recover reads if it is cut short.",
        epilog="real hosts, over ssh: simkvm migrate plan.yaml --domain web1 "
               "--src qemu+ssh://root@hostA.example/system --dst qemu+ssh://root@hostB.example/system "
               "--dry-run (then without --dry-run); the data goes to tcp://hostB.example unless --migrate-uri "
               "says otherwise. Passwords in URIs are never printed.")
    p.add_argument("plan", help="plan file (YAML): link, migration and limits are used")
    add_domain_and_hosts(p)
    p.add_argument("--json", action="store_true", help="print the measured result as JSON (simkvm predict --json "
                                                         "format); with --predict {\"predicted\", \"measured\"}")
    p.add_argument("--compact", action="store_true", help="with --json: on one line")
    p.add_argument("--predict", action="store_true",
                   help="first simulate the same plan with the VM and workload read from the guest's definition")
    p.add_argument("--timeout", help="abort after this long (overrides migration.max_time), e.g. 60s")
    p.add_argument("--remove-source-image", action="store_true",
                   help="after a successful migration, delete the source's copies of the migrated disk images "
                        "(kept by default; the message names them and the command that deletes them)")
    p.add_argument("--connect-timeout", default="30s",
                   help="give up on a host that accepts the connection but does not answer within this long "
                        "(default 30s); once connected, libvirt keepalive closes a connection to a host that stops "
                        "answering for about 8 s")
    p.add_argument("--migrate-uri", default=None,
                   help="address the migration data goes to (VIR_MIGRATE_PARAM_URI); default: the host of --dst "
                        "(qemu+ssh://root@b.example/system -> tcp://b.example)")
    p.add_argument("--tls", action="store_true", help="encrypt the migration stream (VIR_MIGRATE_TLS; needs "
                                                        "libvirt's migrate_tls certificates on both hosts)")
    p.add_argument("--p2p", action="store_true",
                   help="peer-to-peer: the source's libvirtd connects to --dst itself (VIR_MIGRATE_PEER2PEER)")
    p.add_argument("--tunnelled", action="store_true",
                   help="send the migration data through the libvirtd connection (VIR_MIGRATE_TUNNELLED, "
                        "implies --p2p)")
    p.add_argument("--no-persist-destination", action="store_true",
                   help="leave the domain transient on the destination (default: a persistent domain is "
                        "defined there too, VIR_MIGRATE_PERSIST_DEST)")
    p.add_argument("--keep-source-definition", action="store_true",
                   help="keep the (inactive) definition on the source (default: removed, "
                        "VIR_MIGRATE_UNDEFINE_SOURCE)")
    p.add_argument("--dry-run", action="store_true",
                   help="connect and check everything, print the images, flags and parameters it would use, "
                        "change nothing (exit 0 if it would migrate, 1 if refused)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--probe", action="store_true",
                   help="testbed guests started with --network: ping the guest every 5 ms through the "
                        "migration and measure the service interruption")
    p.set_defaults(func=cmd_migrate)

    r = sub.add_parser(
        "recover", help="after a migration was cut short: find the job or its leftovers on both hosts and settle them",
        description="Reads the migration's journal (written by simkvm migrate before each step, in "
                    "$SIMKVM_STATE_DIR/journal, default /var/lib/simkvm/journal for root) and asks both hosts where "
                    "the domain is; cancels a job left running, resumes a source only when the destination surely "
                    "does not run the VM, removes a stale paused copy or an unfinished incoming one, and deletes the "
                    "images the journal says simkvm created. A source QEMU that answers no monitor command is said "
                    "frozen, not running (see --reset-stuck-connections). Exit 0 when the VM runs on exactly one "
                    "host and nothing is left over, 1 otherwise (the output says what is left and the command for "
                    "it).")
    add_domain_and_hosts(r)
    r.add_argument("--json", action="store_true", help="print what was found and done as JSON")
    r.add_argument("--reset-stuck-connections", action="store_true",
                   help="run as root on the source host: when the source's QEMU is frozen (libvirt says running, "
                        "its monitor answers nothing: a disk mirror waiting on a dead link to the destination), "
                        "destroy its connections to the destination that carried nothing for 10 s (ss -K), so "
                        "the mirror fails, libvirt's cancel ends and the guest runs on without a reboot; never "
                        "done while the destination may run the guest")
    r.set_defaults(func=cmd_recover)

    c = sub.add_parser(
        "compare", help="predicted vs measured: totals and per-iteration errors, optionally a plot",
        description="Compare two results (simkvm predict --json and simkvm migrate --json), or the single file of "
                    "simkvm migrate --predict --json. Errors are predicted - measured; relative ones divide by "
                    "the measured value.")
    c.add_argument("predicted", help="predicted result JSON, or a combined {predicted, measured} file")
    c.add_argument("measured", nargs="?", help="measured result JSON")
    c.add_argument("--plot", metavar="PNG", help="draw remaining RAM and disk over time for both")
    c.add_argument("--json", action="store_true", help="print the comparison as JSON")
    c.add_argument("--html", metavar="FILE", help="also write one self-contained HTML page (verdicts, table, figure)")
    c.set_defaults(func=cmd_compare)
