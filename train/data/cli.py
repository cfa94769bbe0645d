"""Command line of the data pipeline.

    python -m train.data prepare --input DIR_OR_LIST --out DIR [--config data.yaml] [--workers N]
    python -m train.data filter MANIFEST --out M2 [--config data.yaml] [--rejected R]
    python -m train.data captions MANIFEST --out M2 [--config data.yaml] [--provider rules|openai|auto]
    python -m train.data defaults            # the default config as YAML

``filter`` and ``captions`` read only the manifest (no video is decoded); their outputs keep ``video`` paths
valid relative to the new file's folder. Each command ends with a JSON summary on stdout (counts by reason);
exit status 0 on success, 2 for a bad argument or config.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from .captions import CAPTION_INPUTS, CaptionConfig, make_provider, merge_row
from ..yaml_config import dump_config, load_config
from .filters import FilterConfig, filter_rows
from .manifest import read_manifest, rebase_rows, write_manifest
from .prepare import PrepareConfig, prepare

__all__ = ["main", "run_filter", "run_captions"]


def run_filter(
    manifest: str | Path, out: str | Path, cfg: FilterConfig, rejected: str | Path | None = None
) -> dict[str, Any]:
    """Re-apply the filters to a manifest's measured values; kept rows go to ``out`` (and rejected ones to
    ``rejected``). Returns the summary (counts per rejection reason and per skip reason)."""
    manifest, out = Path(manifest), Path(out)
    read = read_manifest(manifest)
    result = filter_rows(read.rows, cfg)
    for index, reason in result.skipped:
        row = read.rows[index]
        logging.getLogger(__name__).warning("%s: row %r skipped (%s)", manifest, row.get("id"), reason)
    write_manifest(out, rebase_rows(result.kept, manifest.parent, out.parent))
    if rejected is not None:
        rejected = Path(rejected)
        write_manifest(rejected, rebase_rows(result.rejected, manifest.parent, rejected.parent))
    summary = result.summary()
    skipped = Counter(read.skipped_by_reason()) + Counter(summary["skipped_by_reason"])  # both positive counts
    summary["rows"] += len(read.skipped)
    summary["skipped"] += len(read.skipped)
    summary["skipped_by_reason"] = dict(sorted(skipped.items()))
    return summary


def run_captions(manifest: str | Path, out: str | Path, cfg: CaptionConfig, provider: Any | None = None) -> dict:
    """Merge ``visual_caption`` / ``transcript`` / ``sound_caption`` into ``caption`` for every row."""
    manifest, out = Path(manifest), Path(out)
    read = read_manifest(manifest)
    provider = provider if provider is not None else make_provider(cfg)
    rows = [merge_row(row, cfg, provider) for row in read.rows]
    write_manifest(out, rebase_rows(rows, manifest.parent, out.parent))
    sources = Counter(
        row.get("caption_source", "unchanged") if any(row.get(k) for k in CAPTION_INPUTS) else "unchanged"
        for row in rows
    )
    return {
        "rows": len(rows) + len(read.skipped),
        "written": len(rows),
        "caption_source": dict(sorted(sources.items())),
        "skipped": len(read.skipped),
        "skipped_by_reason": read.skipped_by_reason(),
    }


def _progress_printer() -> Any:
    start = time.perf_counter()

    def progress(done: int, total: int, message: str) -> None:
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (total - done) if done else 0.0
        width = len(str(total))
        print(f"[{done:>{width}}/{total}] {elapsed:6.1f}s elapsed, ETA {eta:6.1f}s  {message}",
              file=sys.stderr, flush=True)

    return progress


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.data", description="MOVA training-data pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="cut, label, measure and filter source videos into a clip manifest")
    p.add_argument("--input", required=True, help="a folder of videos, a list file (.txt/.jsonl) or one video")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--config", type=Path, default=None, help="YAML config (see `defaults`)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes, one video each (default 1)")

    f = sub.add_parser("filter", help="re-apply the filters to a manifest's measured values (no decoding)")
    f.add_argument("manifest", type=Path)
    f.add_argument("--out", required=True, type=Path, help="kept rows (JSONL)")
    f.add_argument("--config", type=Path, default=None, help="YAML config; its `filters` section is used")
    f.add_argument("--rejected", type=Path, default=None, help="also write the rejected rows here")

    c = sub.add_parser("captions", help="merge visual caption + transcript + sound caption into `caption`")
    c.add_argument("manifest", type=Path)
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--config", type=Path, default=None, help="YAML config; its `captions` section is used")
    c.add_argument("--provider", choices=("auto", "rules", "openai"), default=None, help="overrides the config")

    sub.add_parser("defaults", help="print the default config as YAML")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "defaults":
            print(dump_config(PrepareConfig()), end="")
            return 0
        cfg = load_config(PrepareConfig, args.config) if args.config else PrepareConfig()
        if args.command == "prepare":
            summary = prepare(args.input, args.out, cfg, workers=args.workers, progress=_progress_printer())
        elif args.command == "filter":
            summary = run_filter(args.manifest, args.out, cfg.filters, args.rejected)
        else:
            captions = cfg.captions if args.provider is None else replace(cfg.captions, provider=args.provider)
            summary = run_captions(args.manifest, args.out, captions)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0
