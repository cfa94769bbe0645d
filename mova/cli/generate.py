"""``mova generate`` (``python -m mova generate``): one clip from a prompt (and optionally a first frame) to an mp4."""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="generate a video with audio (IT2VA with --image, else T2VA)")
    p.add_argument("--model", default="demo", help="checkpoint folder (official layout) or 'demo' (default)")
    p.add_argument("--prompt", required=True, help="what is seen and heard")
    p.add_argument("--image", default=None, help="first frame (IT2VA); omit for T2VA (white first frame)")
    p.add_argument("--negative-prompt", dest="negative_prompt", default=None,
                   help="negative prompt (default: the Wan negative prompt)")
    p.add_argument("--out", required=True, help="output .mp4 path (H.264 + AAC)")
    p.add_argument("--wav", default=None, help="also write the audio to this .wav path")
    p.add_argument("--height", type=int, default=None, help="multiple of 16 (default: the model's trained size)")
    p.add_argument("--width", type=int, default=None, help="multiple of 16 (default: the model's trained size)")
    p.add_argument("--num-frames", "--num_frames", dest="num_frames", type=int, default=None, help="4k+1 frames")
    p.add_argument("--fps", type=float, default=None, help="frames per second")
    p.add_argument("--num-inference-steps", "--num_inference_steps", "--steps", dest="num_inference_steps", type=int,
                   default=None, help="denoising steps (default: the model's, 50 for MOVA)")
    p.add_argument("--guidance", default="text", choices=["none", "text", "text+bridge", "dual"],
                   help="CFG mode: none (NFE 1), text (2), text+bridge (2), dual (3)")
    p.add_argument("--text-scale", "--text_scale", dest="text_scale", type=float, default=None,
                   help="s_T (default: the model's; 5 for MOVA, 3 for the demo model)")
    p.add_argument("--bridge-scale", "--bridge_scale", dest="bridge_scale", type=float, default=1.0,
                   help="s_B of dual CFG (default 1)")
    p.add_argument("--video-shift", dest="video_shift", type=float, default=None, help="σ shift of the video grid")
    p.add_argument("--audio-shift", dest="audio_shift", type=float, default=None, help="σ shift of the audio grid")
    p.add_argument("--seed", type=int, default=None, help="random when omitted; the used seed is printed")
    p.add_argument("--loudness-lufs", dest="loudness_lufs", type=float, default=-16.0,
                   help="integrated loudness target (default -16 LUFS)")
    p.add_argument("--no-loudness", dest="no_loudness", action="store_true", help="leave the audio level as decoded")
    p.add_argument("--offload", default="none", choices=["none", "model", "sequential"], help="GPU memory mode")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"], help="default bf16 on GPU, fp32 on CPU")
    p.add_argument("--sequential-cfg", dest="sequential_cfg", action="store_true",
                   help="run guidance branches one by one instead of batched (less memory)")
    p.add_argument("--sp", type=int, default=1,
                   help="sequence-parallel degree (run under torchrun: --nproc-per-node = sp × cfg degree)")
    p.add_argument("--cfg-parallel", dest="cfg_parallel", action="store_true",
                   help="spread the guidance branches over WORLD_SIZE / sp ranks")
    p.set_defaults(func=main)


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
    wav = None if args.wav is None else check_output("--wav", args.wav)
    if wav is not None and wav.resolve() == out.resolve():
        raise ValueError(f"--wav {args.wav!r} is the --out path: give the audio its own file")
    if args.image is not None and not Path(args.image).expanduser().is_file():
        raise ValueError(f"--image {args.image!r} is not a file: expected a first-frame image (PNG, JPEG, ...)")
    if args.fps is not None:
        check.real("--fps", args.fps, check.MIN_FPS, check.MAX_FPS)
        if args.num_frames is not None:
            check.clip_duration(args.num_frames, args.fps)
    return out, wav


def check_demo(model: str) -> None:
    """``--model demo`` needs the demo checkpoint, which ships in a source checkout (``assets/demo``) and is not
    part of the installed package."""
    from mova.pipeline import DEMO_DIR

    if model == "demo" and not (DEMO_DIR / "model_index.json").is_file():
        raise ValueError(f"--model demo: the demo checkpoint is not at {DEMO_DIR} (it ships with a source checkout of "
                         "MOVA Studio, not with an installed mova; `pip install -e .` from a checkout uses it): "
                         "pass --model DIR, a MOVA checkpoint folder such as MOVA-360p")


def main(args: argparse.Namespace) -> int:
    out, wav = check_args(args)
    from tqdm import tqdm

    from mova import Guidance, MOVAPipeline

    check_demo(args.model)
    # validated before the (slow) load; the model's own default s_T is filled in once it is loaded
    guidance = Guidance(mode=args.guidance, text_scale=5.0 if args.text_scale is None else args.text_scale,
                        bridge_scale=args.bridge_scale)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    state = None
    if world > 1 or args.sp > 1 or args.cfg_parallel:
        from mova.parallel import init_parallel

        if args.seed is None:
            raise ValueError("--seed is required for parallel generation (every rank must draw the same noise)")
        cfg = world // args.sp if args.cfg_parallel else 1
        state = init_parallel(sp=args.sp, cfg=cfg)
    main_rank = state is None or state.is_main
    t0 = time.perf_counter()
    device = state.device if state is not None else args.device
    pipe = MOVAPipeline.from_pretrained(args.model, device=device, dtype=args.dtype, offload=args.offload)
    if state is not None:
        pipe.enable_parallel(state)
    load_s = time.perf_counter() - t0
    if args.text_scale is None:
        guidance = dataclasses.replace(guidance, text_scale=pipe.default_guidance().text_scale)
    bar = tqdm(desc="denoise", unit="step", disable=not main_rank)

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "denoise":
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        result = pipe(args.prompt, image=args.image, negative_prompt=args.negative_prompt, height=args.height,
                      width=args.width, num_frames=args.num_frames, fps=args.fps,
                      num_inference_steps=args.num_inference_steps, guidance=guidance, seed=args.seed,
                      video_shift=args.video_shift, audio_shift=args.audio_shift,
                      loudness_lufs=None if args.no_loudness else args.loudness_lufs, progress=progress,
                      sequential_cfg=args.sequential_cfg)
    finally:
        bar.close()
    if not main_rank:
        return 0
    path = result.save(out)
    if wav is not None:
        result.save_wav(wav)
    t = result.timings
    print(f"{path}: seed {result.seed}, {result.video.shape[0]} frames {result.video.shape[2]}x{result.video.shape[1]} "
          f"@ {result.fps:g} fps, {len(result.audio) / result.sample_rate:.2f} s audio, NFE {result.nfe}, "
          f"load {load_s:.1f} s, denoise {t['denoise']:.1f} s, total {t['total']:.1f} s")
    return 0
