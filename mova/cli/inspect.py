"""``python -m mova inspect DIR_OR_PRESET``: components, classes, parameters, dtypes, bytes, validation."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("inspect", help="describe and validate a checkpoint folder or preset (no weights loaded)")
    p.add_argument("target", help="checkpoint folder (with model_index.json) or a preset: mova-360p, mova-720p, tiny")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from mova.checkpoint_report import run

    text, ok = run(args.target, as_json=args.json)
    print(text)
    return 0 if ok else 1
