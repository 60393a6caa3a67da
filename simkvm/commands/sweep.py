"""`simkvm sweep`: how does the prediction change across many plans? One row per scenario."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..model.errors import UserError


def cmd_describe(args: argparse.Namespace) -> int:
    """The table's columns (with the spec's axes when one is given), as a Markdown table."""
    from ..sweep import describe_columns, load_spec

    print("| column | unit | meaning |\n|---|---|---|")
    for column, unit, meaning in describe_columns(load_spec(args.spec) if args.spec else None):
        print(f"| `{column}` | {unit} | {meaning} |")
    return 0


#: Local worker processes: each is a forked simulator; more than this is a fork bomb, not a speed-up.
MAX_WORKERS = 256


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..sweep import rounds_path, run_sweep

    if args.describe:
        return cmd_describe(args)
    if args.spec is None or args.output is None:
        raise UserError("give a sweep spec and -o OUTPUT (or --describe to list the table's columns)")
    output = Path(args.output)
    if args.chunk is not None and args.chunk < 1:
        raise UserError(f"--chunk must be >= 1, got {args.chunk}")
    if args.workers is not None and not 1 <= args.workers <= MAX_WORKERS:
        raise UserError(f"--workers must be 1 to {MAX_WORKERS} (processes on this machine), got {args.workers}")
    from ..io import check_output

    check_output(output, "--output", parent_exists=False)  # a missing directory is created
    csv = args.csv or output.suffix.lower() == ".csv"
    try:
        table = run_sweep(args.spec, output=output, workers=args.workers, scheduler=args.scheduler,
                          progress=not args.quiet, chunk=args.chunk, csv=csv, rounds=args.rounds,
                          keep_parts=args.keep_parts)
    except KeyboardInterrupt:
        parts = output.with_name(output.name + ".parts")
        kept = len(list(parts.glob("chunk-*[0-9].parquet"))) if parts.is_dir() else 0
        print(f"simkvm sweep: interrupted; {kept} finished chunk(s) kept in {parts}/: rerun the same command "
              "to resume where it stopped", file=sys.stderr)
        return 130
    converged = int(table["converged"].sum())
    invalid = int((table["outcome"] == "invalid").sum())
    extra = f"; per-iteration rows in {rounds_path(output)}" if args.rounds else ""
    print(f"{len(table):,} scenarios -> {output} ({converged:,} converged, {invalid:,} invalid){extra}",
          file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="predict a grid or sample of plans into one table (Parquet/CSV)")
    p.add_argument("spec", nargs="?", help="sweep spec (YAML): base plan, axes, samples")
    p.add_argument("-o", "--output", help="table to write (.parquet, or .csv); the Parquet file's metadata "
                                          "holds the spec, seed, simkvm version and column units")
    p.add_argument("--describe", action="store_true",
                   help="list the table's columns (unit, meaning) instead of running; with SPEC, its axes too")
    p.add_argument("--csv", action="store_true", help="write CSV whatever the output's name")
    p.add_argument("--workers", type=int, help="local worker processes (default: all cores)")
    p.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 (instead of local workers)")
    p.add_argument("--chunk", type=int, help="scenarios per task (default 2000; fixed per output when resuming)")
    p.add_argument("--rounds", action="store_true", help="also write the per-iteration table (NAME.rounds.EXT)")
    p.add_argument("--keep-parts", action="store_true", help="keep OUTPUT.parts/ after the table is written")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)
