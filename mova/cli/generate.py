"""``mova generate`` (``python -m mova generate``): one clip from a prompt (and optionally a first frame) to an mp4."""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path


CLI_ONLY = ("image", "lora")  # settings whose flag takes a path here (a first-frame file; an adapter [NAME=]DIR)
MODES_HELP = ("modes: --last-image F (first-last frame), --audio F (audio → video), --video F (video → audio), "
              "--extend CLIP [--num-windows N] (continue a clip), --retake CLIP --retake-start S --retake-end S "
              "[--retake-modality both|video|audio] [--strength X] (generate a span again), --num-windows N (a long "
              "clip)")


def register(subparsers: argparse._SubParsersAction) -> None:
    from mova.settings import (COMPILE_MODES, LOAD_FLAG_HELP, MEMORY_PROFILES, OFFLOAD_MODES, QUANTIZATIONS,
                               setting_fields)

    p = subparsers.add_parser("generate", help="generate a video with audio (IT2VA with --image, else T2VA)",
                              description="Generate a clip (IT2VA with --image, else T2VA). " + MODES_HELP)
    p.add_argument("--model", default="demo", help="checkpoint folder (official layout) or 'demo' (default)")
    p.add_argument("--out", required=True, help="output .mp4 path (H.264 + AAC); its sidecar JSON (and first "
                   "frame PNG) are written beside it")
    p.add_argument("--wav", default=None, help="also write the audio to this .wav path")
    # 1. The generation settings, one flag each, from their declarations (mova.settings)
    for name, default, spec in setting_fields():
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else []) + list(spec.flags)
        help_text = spec.help + (" (default: the model's)" if spec.model_default
                                 else "" if default in (None, "") else f" (default {default})")
        if name == "image":
            help_text = "first frame image file (IT2VA); omit for text only (MOVA's white first frame)"
        elif spec.media is not None:
            help_text = re.sub(r" \(a file; in Python[^)]*\)", "", spec.help) + " (a file)"
        elif name == "lora":
            help_text = "a LoRA adapter to run with, [NAME=]DIR (mova.lora format)"
        kwargs = dict(dest=name, default=None, help=help_text, required=name == "prompt")
        if spec.choices:
            kwargs["choices"] = list(spec.choices)
        elif spec.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif spec.kind in (int, float):
            kwargs["type"] = spec.kind
        p.add_argument(*flags, **kwargs)
    p.add_argument("--no-loudness", dest="no_loudness", action="store_true", help="leave the audio level as decoded")
    # 2. Where and how it runs
    p.add_argument("--offload", default=None, choices=OFFLOAD_MODES, help=LOAD_FLAG_HELP["offload"])
    p.add_argument("--quantization", default=None, choices=QUANTIZATIONS, help=LOAD_FLAG_HELP["quantization"])
    p.add_argument("--memory", default=None, choices=list(MEMORY_PROFILES), help=LOAD_FLAG_HELP["memory"])
    p.add_argument("--compile", default="auto", choices=COMPILE_MODES,
                   help="regional torch.compile of the denoiser blocks: auto (on for a full-size model on "
                        "one CUDA GPU without offload or parallel inference), on, off")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"], help="default bf16 on GPU, fp32 on CPU")
    p.add_argument("--sequential-cfg", dest="sequential_cfg", action="store_true",
                   help="run guidance branches one by one instead of batched (less memory)")
    p.add_argument("--sp", type=int, default=1,
                   help="sequence-parallel degree (run under torchrun: --nproc-per-node = sp × cfg degree)")
    p.add_argument("--cfg-parallel", dest="cfg_parallel", action="store_true",
                   help="spread the guidance branches over WORLD_SIZE / sp ranks")
    p.set_defaults(func=main)


def cli_settings(args: argparse.Namespace):
    """The GenerationSettings the flags ask for (flags left out keep the settings' defaults, model defaults for
    ``None``); ``--lora [NAME=]DIR`` becomes the adapter name, to be registered with the pipeline."""
    from mova.settings import GenerationSettings, setting_fields

    values = {name: getattr(args, name) for name, _, _ in setting_fields() if getattr(args, name) is not None}
    if args.no_loudness:
        values["loudness_lufs"] = None
    if args.lora is not None:
        values["lora"] = lora_entry(args.lora)[0]
    return GenerationSettings.from_values(values)


def lora_entry(entry: str) -> tuple[str, str]:
    """``NAME=DIR`` or ``DIR`` (named after its folder) → (name, dir)."""
    name, sep, path = entry.partition("=")
    if not sep:
        path, name = entry, Path(entry).name
    return name, path


def check_output(flag: str, value: str) -> Path:
    """``value`` as a path the clip can be written to, else ``ValueError`` naming ``flag``; checked before the model
    loads. ``media.write_mp4`` / ``write_wav`` create missing folders, write a temporary file beside the target and
    rename it over the target, so the target must not be a folder or a special file (``/dev/null``) and its nearest
    existing folder must let us create a file (probed with a temporary file, which works for root too)."""
    path = Path(value).expanduser()
    folder = path.parent
    try:
        if path.exists() and not path.is_file():
            what = "a folder" if path.is_dir() else "not a regular file"
            raise ValueError(f"{flag} {value!r} is {what}: expected the path of a file to write")
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            raise ValueError(f"{flag} {value!r} cannot be written: {str(folder)!r} is a file, not a folder")
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".mova-write-check-"):
            pass
    except OSError as exc:
        raise ValueError(f"{flag} {value!r} cannot be written in {str(folder)!r}: {exc.strerror or exc}") from None
    return path


def check_args(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """What can be refused before the slow model load: output paths, the first frame, fps and the clip's length
    (the pipeline checks everything again, with the model's defaults, once it is loaded). Returns the mp4 and wav
    paths to write."""
    from mova import validation as check

    out = check_output("--out", args.out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out {args.out!r} is invalid: expected a path ending in .mp4")
    wav = None if args.wav is None else check_output("--wav", args.wav)
    if wav is not None and wav.resolve() == out.resolve():
        raise ValueError(f"--wav {args.wav!r} is the --out path: give the audio its own file")
    for name, what in (("image", "a first-frame image (PNG, JPEG, ...)"), ("last_image", "a last-frame image (PNG, "
                       "JPEG, ...)"), ("audio", "a sound file (WAV, MP3, FLAC, MP4)"), ("video", "a video file (MP4, "
                       "...)"), ("extend", "a clip with sound (MP4)"), ("retake", "a clip with sound (MP4)")):
        value = getattr(args, name)
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"--{name.replace('_', '-')} {value!r} is not a file: expected {what}")
    if args.fps is not None:
        check.real("--fps", args.fps, check.MIN_FPS, check.MAX_FPS)
        if args.num_frames is not None:
            check.clip_duration(args.num_frames, args.fps)
    return out, wav


def check_demo(model: str) -> None:
    """``--model demo`` needs the demo checkpoint, which ships in a source checkout (``assets/demo``) and is not
    part of the installed package."""
    from mova.hub import DEMO_DIR

    if model == "demo" and not (DEMO_DIR / "model_index.json").is_file():
        raise ValueError(f"--model demo: the demo checkpoint is not at {DEMO_DIR} (it ships with a source checkout of "
                         "MOVA Studio, not with an installed mova; `pip install -e .` from a checkout uses it): "
                         "pass --model DIR, a MOVA checkpoint folder such as MOVA-360p")


def main(args: argparse.Namespace) -> int:
    out, wav = check_args(args)
    settings = cli_settings(args)  # validated before the (slow) load
    from tqdm import tqdm

    from mova import MOVAPipeline
    from mova.outputs import save_clip

    check_demo(args.model)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    state = None
    if world > 1 or args.sp > 1 or args.cfg_parallel:
        from mova.parallel import init_parallel

        if settings.seed is None:
            raise ValueError("--seed is required for parallel generation (every rank must draw the same noise)")
        cfg = world // args.sp if args.cfg_parallel else 1
        state = init_parallel(sp=args.sp, cfg=cfg)
    main_rank = state is None or state.is_main
    t0 = time.perf_counter()
    device = state.device if state is not None else args.device
    pipe = MOVAPipeline.from_pretrained(args.model, device=device, torch_dtype=args.dtype, offload=args.offload,
                                        quantization=args.quantization, memory=args.memory)
    if state is not None:
        pipe.enable_parallel(state)
    pipe.apply_compile(args.compile)
    if args.lora is not None:
        pipe.register_lora(*lora_entry(args.lora))
    load_s = time.perf_counter() - t0
    bar = tqdm(desc="denoise", unit="step", disable=not main_rank)

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "denoise":
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        result = pipe(settings, progress=progress, sequential_cfg=args.sequential_cfg)
    finally:
        bar.close()
    if not main_rank:
        return 0
    clip = save_clip(result, out.parent, out.stem)
    if wav is not None:
        result.save_wav(wav)
    t = clip.timings
    print(f"{clip.video_path}: seed {clip.seed}, {clip.num_frames} frames {clip.width}x{clip.height} "
          f"@ {clip.fps:g} fps, {len(result.audio) / result.sample_rate:.2f} s audio, NFE {clip.nfe}, "
          f"load {load_s:.1f} s, denoise {t['denoise']:.1f} s, total {t['total']:.1f} s")
    return 0
