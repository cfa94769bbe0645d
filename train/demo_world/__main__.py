"""Command line: write a demo-world dataset (and optionally a held-out prompt set).

    python -m train.demo_world --out data/demo_world --n 1000 --seed 0
    python -m train.demo_world --out data/demo_world --n 1000 --seed 0 --npz --workers 8 --held-out 50
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .dataset import generate_dataset, held_out_prompts, write_prompt_set
from .scenes import SCENE_NAMES
from .world import WorldConfig


def build_parser() -> argparse.ArgumentParser:
    defaults = WorldConfig()
    p = argparse.ArgumentParser(prog="python -m train.demo_world", description="Generate demo-world clips.")
    p.add_argument("--out", required=True, type=Path, help="output folder (manifest.jsonl, clips/)")
    p.add_argument("--n", type=int, default=1000, help="number of clips (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    p.add_argument("--scenes", default=",".join(SCENE_NAMES), help=f"comma-separated names from {','.join(SCENE_NAMES)}, taking turns in this order; "
                   "repeat a name to weight it")
    p.add_argument("--width", type=int, default=defaults.width)
    p.add_argument("--height", type=int, default=defaults.height)
    p.add_argument("--fps", type=float, default=defaults.fps)
    p.add_argument("--num-frames", dest="num_frames", type=int, default=defaults.num_frames, help="4k + 1")
    p.add_argument("--sample-rate", dest="sample_rate", type=int, default=defaults.sample_rate)
    p.add_argument("--npz", action="store_true", help="also write lossless .npz arrays per clip")
    p.add_argument("--no-mp4", action="store_true", help="skip the mp4 files (needs --npz)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--held-out", dest="held_out", type=int, default=0,
                   help="also write this many held-out evaluation prompts to OUT/held_out/")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = WorldConfig(width=args.width, height=args.height, fps=args.fps, num_frames=args.num_frames,
                          sample_rate=args.sample_rate)
        start = time.perf_counter()

        def progress(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - start, 1e-9)
            end = "\n" if done == total else ""
            print(f"\r[{done:>{len(str(total))}}/{total}] {rate:5.1f} clips/s", end=end, file=sys.stderr, flush=True)

        manifest = generate_dataset(
            args.out, args.n, args.seed, cfg, scenes=[s for s in args.scenes.split(",") if s],
            save_mp4=not args.no_mp4, save_npz=args.npz, workers=args.workers, progress=progress,
        )
        print(manifest)
        if args.held_out:
            print(write_prompt_set(args.out / "held_out", held_out_prompts(args.held_out, args.seed, cfg)))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
