"""`simkvm sweep`: how does the prediction change across many plans? One row per scenario."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..model.errors import UserError


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..sweep import rounds_path, run_sweep

    output = Path(args.output)
    if args.chunk is not None and args.chunk < 1:
        raise UserError(f"--chunk must be >= 1, got {args.chunk}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    csv = args.csv or output.suffix.lower() == ".csv"
    table = run_sweep(args.spec, output=output, workers=args.workers, scheduler=args.scheduler,
                      progress=not args.quiet, chunk=args.chunk, csv=csv, rounds=args.rounds,
                      keep_parts=args.keep_parts)
    converged = int(table["converged"].sum())
    invalid = int((table["outcome"] == "invalid").sum())
    extra = f"; per-iteration rows in {rounds_path(output)}" if args.rounds else ""
    print(f"{len(table):,} scenarios -> {output} ({converged:,} converged, {invalid:,} invalid){extra}",
          file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="predict a grid or sample of plans into one table (Parquet/CSV)")
    p.add_argument("spec", help="sweep spec (YAML): base plan, axes, samples")
    p.add_argument("-o", "--output", required=True, help="table to write (.parquet, or .csv)")
    p.add_argument("--csv", action="store_true", help="write CSV whatever the output's name")
    p.add_argument("--workers", type=int, help="local worker processes (default: all cores)")
    p.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 (instead of local workers)")
    p.add_argument("--chunk", type=int, help="scenarios per task (default 2000; fixed per output when resuming)")
    p.add_argument("--rounds", action="store_true", help="also write the per-iteration table (NAME.rounds.EXT)")
    p.add_argument("--keep-parts", action="store_true", help="keep OUTPUT.parts/ after the table is written")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)
