"""`simkvm` command line: one sub-command per question a user asks.

Each command lives in the module that answers its question and contributes
an ``add_commands(subparsers)`` function; this file only wires them and turns
simkvm's own errors into one line and an exit code:

* 0 success, 1 a real migration failed (the message says where the VM is),
* 2 the input or the machine is wrong (the message says what to do),
* 3 reserved for ``preflight`` NO-GO.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from typing import Sequence

from . import __version__
from .model.errors import EnvironmentProblem, MigrationFailed, UserError

# Modules that contribute sub-commands, in the order of `simkvm --help`.
COMMAND_MODULES = [
    "simkvm.commands.predict",
    "simkvm.commands.plan",
    "simkvm.commands.policies",
    "simkvm.commands.fleet",
    "simkvm.commands.bench",
    "simkvm.commands.sweep",
    "simkvm.commands.testbed",
    "simkvm.commands.migrate",
    "simkvm.commands.drain",
    "simkvm.commands.campaign",
    "simkvm.commands.preflight",
    "simkvm.commands.tools",
]


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad flags already; keep its message to one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")  # an invalid choice quotes the value whole


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="simkvm", description="Predict and check KVM/QEMU live migrations.")
    parser.add_argument("--version", action="version", version=f"simkvm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("simkvm"):
                continue  # a command family not built yet
            raise
        module.add_commands(sub)
    return parser


#: The longest error line printed; past it the message is cut (a value quoted in full can be megabytes).
MESSAGE_CHARS = 600


def one_line(message: str) -> str:
    """Errors are one line on stderr: newlines folded, a runaway message cut with its length said."""
    text = " ".join(message.split())
    if len(text) > MESSAGE_CHARS:
        text = f"{text[:MESSAGE_CHARS - 40]}... ({len(text):,} characters in all)"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # Warnings (a profile calibrated on another QEMU, a library's RuntimeWarning) are held until the command
    # ends: printed after a result, dropped when the input is refused, whose rule is one line and exit 2.
    held: list[str] = []

    def warning_line(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' hook
        text = f"simkvm {args.command}: warning: {one_line(str(message))}"
        if text not in held:
            held.append(text)

    shown, warnings.showwarning = warnings.showwarning, warning_line
    code = 2
    try:
        code = int(args.func(args) or 0)
    except (UserError, EnvironmentProblem) as exc:
        print(f"simkvm {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
    except MigrationFailed as exc:
        print(f"simkvm {args.command}: migration failed: {one_line(str(exc))} [VM is {exc.vm_location}]",
              file=sys.stderr)
        code = 1
    except BrokenPipeError:  # `simkvm ... | head`: the reader left; nothing more to say
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except OSError as exc:  # a path the user gave: a missing directory, a full disk, no permission
        if exc.filename is None:
            code = -1
            raise
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        print(f"simkvm {args.command}: error: {where}: {exc.strerror or exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"simkvm {args.command}: interrupted", file=sys.stderr)
        code = 130
    except SystemExit as exc:  # a command's own argparse-style exit
        code = exc.code if isinstance(exc.code, int) else 1
        raise
    except BaseException:
        code = -1
        raise
    finally:
        warnings.showwarning = shown
        if code != 2:
            for text in held:
                print(text, file=sys.stderr)
    return code

if __name__ == "__main__":
    sys.exit(main())
