"""``python -m mova quantize --model DIR --format fp8 --out DIR``: a checkpoint folder with its DiT and bridge block
weights stored in fp8 or int8 (``mova.quantization``), which loads without quantising again and reads half the bytes
(``mova generate --model OUT --memory 24gb``)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from mova.settings import QUANTIZATIONS

    p = subparsers.add_parser("quantize", help="write a checkpoint folder with fp8 or int8 block weights")
    p.add_argument("--model", required=True, help="checkpoint folder (official layout) or Hub repo id org/name")
    p.add_argument("--format", required=True, choices=QUANTIZATIONS, help="weight format")
    p.add_argument("--out", required=True, help="the new folder (must not exist or be empty)")
    p.add_argument("--revision", default=None, help="Hub commit, branch or tag of a repo id")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from mova.hub import resolve_checkpoint
    from mova.loading import quantize_folder

    folder = resolve_checkpoint(args.model, revision=args.revision)
    print(quantize_folder(folder, args.out, args.format))
    return 0
