"""Command line: ``python -m mova <command> ...``.

Each command lives in its own module exposing ``register(subparsers)``, which adds a parser and sets
``func`` (called with the parsed namespace, returns an exit code). Modules are imported only when
their command is listed here, and heavy imports (torch) happen inside ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command name -> module providing register(subparsers)
COMMANDS = {
    "inspect": "mova.cli.inspect",
    "generate": "mova.cli.generate",
    "arena": "mova.arena.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mova", description="MOVA Studio command line")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:  # user errors: one clear line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
