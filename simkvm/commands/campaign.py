"""`simkvm campaign run|report` and `simkvm calibrate`: how right are the predictions on real migrations?"""
from __future__ import annotations

import argparse
import json
import sys

from ..model.errors import UserError


def cmd_run(args: argparse.Namespace) -> int:
    from ..validation.runner import run_campaign
    from ..validation.spec import load_campaign

    campaign = load_campaign(args.campaign)
    only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    out = run_campaign(campaign, args.output, profile_path=args.profile, only=only, progress=not args.quiet,
                       keep_testbed=args.keep_testbed, probe_network=not args.no_probe)
    print(f"campaign {campaign.name}: {len(out['done'])} run(s) done, {out['skipped']} already finished, "
          f"{len(out['failed'])} failed -> {args.output}", file=sys.stderr)
    for rid, text in out["failed"]:
        print(f"  failed: {rid}: {text.splitlines()[0]}", file=sys.stderr)
    return 1 if out["failed"] else 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..profile import load_profile
    from ..validation.report import format_report, report, report_plots
    from ..validation.store import RunStore

    rep = report(args.directory, args.profile, blind=not args.no_blind, qemu=args.qemu)
    if args.lofo:
        from ..validation.evaluate import leave_one_family_out

        rep["leave_one_family_out"] = leave_one_family_out(args.directory, args.lofo, full_profile=args.profile)
    if args.json:
        extra = {k: rep[k] for k in ("families", "blind", "blind_families", "clamped", "heavy_load", "rate_shortfall",
                                     "repeatability", "leave_one_family_out", "warnings", "checks_unconfirmed") if k in rep}
        print(json.dumps({**rep["metrics"], "profile": rep["profile"], "qemu": rep["qemu"],
                          "excluded_fit_runs": rep["excluded"], **extra},
                         indent=1))
        for w in rep.get("warnings") or []:
            print(f"warning: {w}", file=sys.stderr)
    else:
        print(format_report(rep))
    if args.plots:
        profile = load_profile(args.profile) if args.profile else None
        written = report_plots(RunStore(args.directory), rep, args.plots, profile=profile)
        print(f"{len(written)} plot(s) -> {args.plots}", file=sys.stderr)
    return 0


def cmd_repeats(args: argparse.Namespace) -> int:
    from ..validation.report import format_repeatability, repeatability

    rep = repeatability(args.directories)
    print(json.dumps(rep, indent=1) if args.json else format_repeatability(rep, args.directories))
    return 0


def cmd_pool(args: argparse.Namespace) -> int:
    from ..validation.pool import format_pool, pool

    result = pool(args.directories, profiles=args.profiles, calibrate_dir=args.calibrate, blind=args.blind,
                  jobs=args.jobs, progress=not args.quiet)
    print(json.dumps(result, indent=1) if args.json else format_pool(result))
    return 0


def cmd_expand(args: argparse.Namespace) -> int:
    from ..validation.design import expanded_text
    from ..validation.spec import load_campaign

    text = expanded_text(args.campaign)
    campaign = load_campaign(args.campaign)  # every drawn scenario passes the same checks as a written one
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
        print(f"{len(campaign.scenarios)} scenario(s), {len(campaign.runs())} run(s) -> {args.output}",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..validation.calibrate import calibrate

    prof = calibrate(args.directory, args.output, selector=args.runs, search=not args.no_search,
                     pool=args.pool or ())
    fit = prof["fit"]
    print(f"fitted on {len(fit['runs'])} run(s) ({args.runs}); profile -> {args.output}", file=sys.stderr)
    for k, v in {**prof["host"], "link.capacity": prof["link"]["capacity"]}.items():
        print(f"  {k:24s} {v}", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("campaign", help="real migrations on the testbed next to their predictions; the error report")
    csub = p.add_subparsers(dest="campaign_command", metavar="ACTION")
    r = csub.add_parser("run", help="run (or resume) a campaign: one guest, prediction and real migration per run")
    r.add_argument("campaign", help="campaign YAML (experiments/validation/*.yaml)")
    r.add_argument("-o", "--output", required=True, help="output directory, e.g. data/validation/NAME/")
    r.add_argument("--profile", help="host profile (simkvm calibrate) to predict with")
    r.add_argument("--only", help="comma-separated scenario ids to run")
    r.add_argument("--keep-testbed", action="store_true", help="leave a testbed this command started running")
    r.add_argument("--no-probe", action="store_true",
                   help="no guest network and no ping through the migrations (the probe's traffic makes the "
                        "guest kernel write memory too; the service interruption is then not measured)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)
    e = csub.add_parser("expand", help="print every scenario of a campaign, the design's drawn ones included")
    e.add_argument("campaign", help="campaign YAML with a design: section")
    e.add_argument("-o", "--output", help="write the list here (e.g. experiments/validation/NAME.expanded.yaml)")
    e.set_defaults(func=cmd_expand)
    rep = csub.add_parser("report", help="errors of the predictions on the held-out (validation) runs")
    rep.add_argument("directory", help="campaign output directory")
    rep.add_argument("--profile", help="re-predict every held-out run with this profile (default: stored predictions)")
    rep.add_argument("--json", action="store_true", help="print the figures as one JSON object (fractions)")
    rep.add_argument("--no-blind", action="store_true",
                     help="skip the blind figures (predictions from the planner's plan, no guest report)")
    rep.add_argument("--lofo", metavar="PROFILE_OUT",
                     help="leave one family out: calibrate without the calibration guests above 1 GiB (profile "
                          "written here), score the held-out guests above 1.5 GiB")
    rep.add_argument("--plots", help="write scatter plots and per-scenario timelines (PNG) into this directory")
    rep.add_argument("--qemu", help="with --profile: re-predict following this QEMU version's loop (host.qemu) "
                                    "instead of the one each run was predicted with, e.g. 7.2 on a QEMU 10 campaign")
    rep.set_defaults(func=cmd_report)
    rp = csub.add_parser("repeats", help="how well a real run predicts its own repeat: the ceiling of any model "
                                         "on this testbed, pooled over campaign directories")
    rp.add_argument("directories", nargs="+", metavar="DIRECTORY", help="campaign output directories")
    rp.add_argument("--json", action="store_true", help="print the figures as one JSON object (fractions)")
    rp.set_defaults(func=cmd_repeats)

    po = csub.add_parser("pool", help="held-out figures over several campaigns: each with its own profile, and "
                                      "pooled over all their runs and per QEMU version",
                         description="Score each campaign directory's held-out runs as `campaign report --profile` "
                                     "does, with its own profile (committed, or recalibrated on its own calibration "
                                     "runs with --calibrate), and the pooled figures over all their held-out runs "
                                     "and over the runs of each QEMU version.")
    po.add_argument("directories", nargs="+", metavar="DIRECTORY", help="campaign output directories")
    from ..validation.pool import DEFAULT_PROFILES

    po.add_argument("--profiles", default=DEFAULT_PROFILES, metavar="PATTERN",
                    help="each campaign's profile; {name} is the directory's name without 'campaign-' "
                         f"(default: {DEFAULT_PROFILES})")
    po.add_argument("--calibrate", metavar="OUTDIR",
                    help="recalibrate each campaign on its own calibration runs with this checkout's model first "
                         "(profiles written to OUTDIR/NAME.profile.yaml) instead of --profiles")
    po.add_argument("--blind", action="store_true",
                    help="also the blind figures (the planner's plan: vm.zero_fraction auto, no guest report)")
    po.add_argument("--jobs", type=int, default=1, help="campaigns scored in parallel processes (default 1)")
    po.add_argument("--json", action="store_true", help="print the figures as one JSON object (fractions)")
    po.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    po.set_defaults(func=cmd_pool)

    def no_action(args: argparse.Namespace) -> int:
        raise UserError("say what to do: simkvm campaign run CAMPAIGN.yaml -o DIR, or simkvm campaign report DIR")

    p.set_defaults(func=no_action)
    c = sub.add_parser("calibrate", help="fit host constants on a campaign's calibration runs -> a host profile")
    c.add_argument("directory", help="campaign output directory")
    c.add_argument("--runs", default="role=calibration",
                   help="which runs to fit on: role=calibration (default), scenario=ID[,ID] or run_id=ID[,ID]")
    c.add_argument("-o", "--output", required=True, help="profile YAML to write, e.g. profiles/testbed.yaml")
    c.add_argument("--no-search", action="store_true", help="only the direct estimates, no re-simulation search")
    c.add_argument("--pool", nargs="+", metavar="PROFILE",
                   help="earlier profiles of the same host and QEMU version (each calibrated on its own campaign): "
                        "every searched constant becomes its median over them and this fit, a steadier estimate "
                        "than one campaign's ten calibration runs give")
    c.set_defaults(func=cmd_calibrate)
