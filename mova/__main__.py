"""Command line: ``mova <command> ...`` (the console command of an installed mova) or ``python -m mova <command>``.

Each command lives in its own module exposing ``register(subparsers)``, which adds a parser and sets
``func`` (called with the parsed namespace, returns an exit code). Modules are imported only when
their command is listed here, and heavy imports (torch) happen inside ``func``.

Errors are one line on stderr, never a traceback: ``ValueError`` (what the user asked for is invalid) exits 2,
any other exception exits 1; ``--debug`` (or ``MOVA_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from pathlib import Path

from mova import configure_logging

# command name -> module providing register(subparsers)
COMMANDS = {
    "inspect": "mova.cli.inspect",
    "generate": "mova.cli.generate",
    "arena": "mova.cli.arena",
    "quantize": "mova.cli.quantize",
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the flag (the usage of ``generate`` alone is a screen)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _prog() -> str:
    return "mova" if Path(sys.argv[0]).name == "mova" else "python -m mova"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=_prog(), description="MOVA Studio command line")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS, help="logging level")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also MOVA_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).register(sub)
    for command in sub.choices.values():  # `mova generate ... --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type's name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("MOVA_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:  # user errors: one clear line, no traceback
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else: still one line; the traceback on request
        if debug:
            traceback.print_exc()
            return 1
        print(f"error: {type(exc).__name__}: {one_line(exc)} (run with --debug or MOVA_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
