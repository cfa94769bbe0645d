"""Command line of the training subtree.

    python -m train run train/configs/phase1.yaml --data MANIFEST_OR_CACHE --out runs/phase1 [--resume] [--set k=v ...]
    python -m train cache --manifest data/manifest.jsonl --model checkpoints/MOVA-360p --out data/cache_360p
    python -m train config train/configs/phase2.yaml [--set k=v ...]      # print the resolved config
    python -m train vae video|audio --out DIR [--device cuda] [--max-minutes M]   # the demo autoencoders
    python -m train demo-base --video-vae DIR --audio-vae DIR --out DIR   # the demo checkpoint's starting folder

Several GPUs (one process per GPU; FSDP2 by default with more than one process; ``accelerate launch`` works too):

    torchrun --nproc_per_node 8 -m train run train/configs/phase1.yaml --data ... --out ...
    torchrun --nproc_per_node 8 -m train cache --manifest ... --model ... --out ...   # rows split over GPUs
"""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description="MOVA training: latent cache, stages, LoRA")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train with a stage config")
    run.add_argument("config", help="stage config YAML (train/configs/*.yaml)")
    run.add_argument("--data", required=True, help="latent cache folder, or a JSONL manifest (cached into OUT/cache)")
    run.add_argument("--out", required=True, help="run folder: checkpoints, metrics, exports")
    run.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, e.g. --set steps=100 --set model.base=ckpt (repeatable)")

    cache = sub.add_parser("cache", help="encode a manifest into a latent cache")
    cache.add_argument("--manifest", required=True,
                       help="JSONL manifest (id, caption, video_path | npz_path | audio_path)")
    cache.add_argument("--model", required=True, help="checkpoint folder whose VAEs and text encoder encode the clips")
    cache.add_argument("--out", required=True, help="cache folder")
    cache.add_argument("--config",
                       help="take num_frames/fps/height/width/text_len from this stage config's data section")
    cache.add_argument("--num-frames", type=int, default=None, help="frames per clip, 4k+1 (default 193)")
    cache.add_argument("--fps", type=float, default=None, help="clip frame rate (default 24)")
    cache.add_argument("--height", type=int, default=None, help="pixels, multiple of 16 (default 352)")
    cache.add_argument("--width", type=int, default=None, help="pixels, multiple of 16 (default 640)")
    cache.add_argument("--text-len", type=int, default=None, help="T5 tokens (default 512)")
    cache.add_argument("--shard-size", type=int, default=64, help="samples per shard file")
    cache.add_argument("--batch-size", type=int, default=1,
                       help="clips encoded together (small clips on a GPU: 16-64; default 1)")
    cache.add_argument("--text-dtype", choices=("float32", "bfloat16"), default="float32")
    cache.add_argument("--audio-only", action="store_true", help="audio + text only (audio pretraining data)")
    cache.add_argument("--device", default=None, help="default: this process's GPU, else CPU")
    cache.add_argument("--part", default=None, metavar="I/N",
                       help="encode only rows I::N, as independent process I of N (several per GPU when encoding "
                            "is launch-bound, e.g. small clips); start part 0 first or alongside: it writes meta.json")

    show = sub.add_parser("config", help="print a resolved stage config")
    show.add_argument("config")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["vae"]:  # the demo autoencoders have their own command line (train/vae/)
        from train.vae.loop import main as vae_main

        return vae_main(argv[1:])
    if argv[:1] == ["demo-base"]:
        from train.demo import main as demo_main

        return demo_main(argv[1:])
    from train.config import TrainConfig
    from train.yaml_config import dump_config, load_config

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            from train.trainer import run

            cfg = load_config(TrainConfig, args.config, args.overrides)
            losses = run(cfg, args.data, args.out, resume=args.resume)
            if losses:
                logger.info("done: %d steps this run, last loss %.4f", len(losses), losses[-1])
        elif args.command == "cache":
            _cache(args)
        else:
            sys.stdout.write(dump_config(load_config(TrainConfig, args.config, args.overrides)))
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    return 0


def _cache(args: argparse.Namespace) -> None:
    from train.cache import build_cache
    from train.config import ClipConfig, TrainConfig
    from train.yaml_config import load_config

    data = load_config(TrainConfig, args.config).data if args.config else ClipConfig()
    if args.part is not None:
        try:
            rank, world = (int(x) for x in args.part.split("/"))
            if not 0 <= rank < world:
                raise ValueError
        except ValueError:
            raise ValueError(f"--part {args.part!r} is invalid: expected I/N with 0 <= I < N, e.g. 0/4") from None
        summary = build_cache(args.manifest, args.model, args.out, _spec(args, data), device=args.device, rank=rank,
                              world=world, progress=rank == 0, allow_empty=True)
        print(summary.describe())
        return
    from train.parallel import barrier, init_processes

    device, rank, world = init_processes(cpu=args.device == "cpu")
    summary = build_cache(args.manifest, args.model, args.out, _spec(args, data), device=args.device or device,
                          rank=rank, world=world, progress=rank == 0, barrier=barrier, allow_empty=world > 1)
    print(summary.describe())


def _spec(args: argparse.Namespace, data):
    from train.cache import CacheSpec

    return CacheSpec(
        num_frames=args.num_frames or data.num_frames, fps=args.fps or data.fps, height=args.height or data.height,
        width=args.width or data.width, max_sequence_length=args.text_len or data.text_len,
        shard_size=args.shard_size, batch_size=args.batch_size, text_dtype=args.text_dtype,
        audio_only=args.audio_only)


if __name__ == "__main__":
    sys.exit(main())
