"""Wall time per stage and peak GPU memory of one whole clip through the real ``MOVAPipeline``, with random weights
built from the full-size configs directly on the device (nothing is downloaded): UMT5-XXL from
``mova.config.UMT5_XXL_CONFIG`` (transformers), the Wan 2.1 VAE (diffusers ``AutoencoderKLWan``), both video
experts, the audio DiT, the bridge and the DAC audio VAE (ours). The tokenizer is a small SentencePiece model
trained on the spot (prompts are padded to the model's 512 tokens, so the text encoder's cost does not depend on
it). The ZeroGPU duration model (``mova/backends/durations.py``) reads the JSON this writes.

    # one H200: a short untimed warm-up clip, then the timed clip; --append adds a run to the file
    python benchmarks/clip_time.py --preset mova-360p --steps 10 --out benchmarks/results/clip_time_h200.json
    python benchmarks/clip_time.py --preset mova-360p --num-frames 97 --steps 20 --out ... --append
    python benchmarks/clip_time.py --preset mova-360p --num-frames 97 --steps 4 --aot --out R.json   # the AoT path
    # the Space's default request on the AoT path, with the estimate the measured figures give it before the run
    python benchmarks/clip_time.py --aot --num-frames 117 --steps 20 --warmup-steps 1 \
        --figures benchmarks/results/clip_time_h200.json --out benchmarks/results/clip_time_aot_h200.json
    python benchmarks/clip_time.py --preset tiny --device cpu --steps 2 --out /tmp/clip_time_tiny.json
    # one process, one build: the exact clip (figures), the fastest combination into its own file (--fast-out), then
    # the Space's default request fitted to the figures and measured (--space-defaults)
    python benchmarks/clip_time.py --compile --steps 50 --warmup-steps 1 --space-defaults \
        --fast-out benchmarks/results/clip_time_fast_h200.json --out benchmarks/results/clip_time_h200.json

Stages (``stages_s``, each bracketed by a device synchronisation): ``text`` (the text encoder, prompt and negative
prompt), ``encode`` (the first-frame condition: the VAE encode of the num_frames-long conditioning clip),
``denoise`` (all steps; ``step_times_s`` per step, ``step_s`` their median), ``vae_decode``, ``dac_decode``,
``loudness`` (the loudness normalisation, on the CPU), ``total`` (the pipeline call) and ``wall`` (the same,
measured outside). Each run also records the duration model's estimate for its request before the run (from
the figures it had), so an estimate can be compared with a measured clip: ``estimate_before.h200_s`` is the
slice estimate without the margin divided by the slice factor.

``--fast-out`` then runs the first request again at ``--fast-precision`` / ``--fast-cache`` / ``--fast-steps`` into
a file of its own (the duration model's figures stay those of one configuration). Random weights never let the step
cache's drift test pass, so it reuses no step there; ``--replay-reuse demo_eval.json`` makes the cache reuse, at every
cached run, the steps the demo model's cache reused on the held-out clip that reused the fewest (``demo_eval.py
--cache C`` records them per clip): the time such a clip takes at full size, with the demo model's pattern, which a
trained full-size model need not share (the record names the file, the clip and the steps). ``--space-defaults``
finally runs the request a ZeroGPU Space defaults to (``durations.fit_defaults`` on the figures written so far: the
clip shortened and steps lowered to fit the Space's target), with its estimate recorded before the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mova.pipeline  # noqa: E402
from mova.backends.durations import DurationModel, fit_defaults  # noqa: E402 - torch-free
from mova.cache import StepCache  # noqa: E402
from mova.config import PRESET_NAMES, get_preset  # noqa: E402
from mova.models import AudioDiT, AudioVAE, DualTowerBridge, VideoDiT  # noqa: E402
from mova.pipeline import MOVAPipeline  # noqa: E402
from mova.scheduler import FlowMatchPairScheduler  # noqa: E402
from mova.settings import QUANTIZATIONS, GenerationSettings  # noqa: E402
from step_time import random_init_  # noqa: E402

PROMPT = ("A woman stands by a window in a quiet room and says \"It is raining again.\" Rain taps on the glass. "
          "The audio shows soft rain, a distant car and her calm voice.")
STAGE_METHODS = {"encode_prompt": "text", "prepare_condition": "encode", "denoise": "denoise",
                 "decode_video": "vae_decode", "decode_audio": "dac_decode"}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_module(build: Callable[[], torch.nn.Module], device: torch.device, dtype: torch.dtype,
                 seed: int) -> torch.nn.Module:
    """``build()`` with its parameters allocated on ``device`` in ``dtype`` (no host copy, no float32 copy), then
    random weights (``step_time.random_init_``); buffers such as RoPE tables keep the values their init computed."""
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            module = build()
    finally:
        torch.set_default_dtype(previous)
    random_init_(module)
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def component_builders(preset) -> dict[str, Callable[[], torch.nn.Module]]:
    """{component: a function building it from ``preset``'s full-size config} for every weighted component, in
    the order (and so with the seeds) the benchmarks build them."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    return {
        "video_dit": lambda: VideoDiT.from_config(preset.video_dit),
        "video_dit_2": lambda: VideoDiT.from_config(preset.video_dit),
        "audio_dit": lambda: AudioDiT.from_config(preset.audio_dit),
        "dual_tower_bridge": lambda: DualTowerBridge.from_config(preset.bridge),
        "audio_vae": lambda: AudioVAE.from_config(preset.audio_vae),
        "video_vae": lambda: AutoencoderKLWan(**preset.video_vae),
        "text_encoder": lambda: UMT5EncoderModel(UMT5Config(**preset.text_encoder)),
    }


def index_fields(preset, max_sequence_length: int) -> dict[str, Any]:
    """The pipeline settings of ``preset`` as ``model_index.json`` holds them."""
    h, w = preset.resolutions[0]
    return {"boundary_ratio": preset.boundary_ratio, "max_sequence_length": max_sequence_length, "default_height": h,
            "default_width": w, "default_num_frames": preset.default_num_frames, "default_fps": preset.default_fps,
            "resolutions": [list(r) for r in preset.resolutions]}


def build_pipeline(preset_name: str, device: torch.device, dtype: torch.dtype, offload: str, one_expert: bool,
                   max_sequence_length: int, tokenizer_dir: Path, quantization: str | None = None) -> MOVAPipeline:
    """The pipeline of ``preset_name`` with random weights on ``device``; ``quantization``: the block weights of
    the components the loader quantises stored in that format, each right after it is built (as ``from_pretrained(
    quantization=)`` stores them), so only one component is ever resident in bf16."""
    from mova.loading import quantize_component
    from mova.tiny import make_tokenizer

    preset = get_preset(preset_name)
    # offload modes move components themselves, so they start on the host; each is still built and randomised on
    # ``device`` (filling ~30 GB of bf16 weights on the host CPU takes far longer than the clip) and then moved there
    place = torch.device("cpu") if offload != "none" else device
    builders = component_builders(preset)
    if one_expert:
        del builders["video_dit_2"]
    components: dict[str, Any] = {name: quantize_component(name, build_module(build, device, dtype, seed),
                                                           quantization).to(place)
                                  for seed, (name, build) in enumerate(builders.items())}
    components["tokenizer"] = make_tokenizer(tokenizer_dir)
    components["scheduler"] = FlowMatchPairScheduler.from_config(preset.scheduler)
    components["model_index"] = index_fields(preset, max_sequence_length)
    return MOVAPipeline(components, device, dtype, offload, name=preset_name)


class StageTimer:
    """Wraps the pipeline's stage methods on the instance: each call is timed between device synchronisations,
    and the denoising progress callback stamps every step."""

    def __init__(self, pipe: MOVAPipeline, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.step_ends: list[float] = []
        self._denoise_start = 0.0
        for method, stage in STAGE_METHODS.items():
            setattr(pipe, method, self._timed(getattr(pipe, method), stage))

    def _timed(self, fn: Callable, stage: str) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            synchronize(self.device)
            start = time.perf_counter()
            if stage == "denoise":
                self._denoise_start = start
            out = fn(*args, **kwargs)
            synchronize(self.device)
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
            return out
        return timed

    def progress(self, stage: str, done: int, total: int) -> None:
        if stage == "denoise":
            synchronize(self.device)
            self.step_ends.append(time.perf_counter())

    def step_times(self) -> list[float]:
        starts = [self._denoise_start, *self.step_ends[:-1]]
        return [end - start for start, end in zip(starts, self.step_ends)]


def estimate_before(settings: GenerationSettings, figures: Path | None) -> dict[str, Any]:
    """What the ZeroGPU duration model said for this request before the run (figures: the results file)."""
    model = DurationModel.load(figures) if figures is not None and figures.exists() else DurationModel()
    stages = model.stages(settings.height, settings.width, settings.num_frames, settings.num_inference_steps,
                          settings.guidance_config.nfe, settings.fps)
    slice_s = sum(stages.values())
    return {"source": model.source, "slice_factor": model.slice_factor, "slice_s": round(slice_s, 2),
            "requested_s": model(settings), "h200_s": round(slice_s / model.slice_factor, 2),
            "stages_slice_s": {k: round(v, 3) for k, v in stages.items()}}


def attention_in_use() -> str:
    """The attention kernels the run used (as ``mova.attention`` logged them)."""
    import mova.attention as att

    return ", ".join(sorted(att._logged)) or "unknown"


def reuse_pattern(path: Path, steps: int) -> dict[str, Any]:
    """The reused steps of the clip in a ``demo_eval.py --cache C`` record that reused the fewest (its first such
    clip), as ``{"from", "cache", "seed", "reused_steps"}``; the record's step count must be ``steps``."""
    record = json.loads(path.read_text())
    if record["settings"]["num_inference_steps"] != steps or not record["settings"]["cache"]:
        raise SystemExit(f"--replay-reuse: {path} has no cached {steps}-step clips "
                         f"(steps {record['settings']['num_inference_steps']}, cache {record['settings']['cache']})")
    clip = min(record["per_clip"]["joint"], key=lambda c: len(c["reused_steps"]))
    return {"from": str(path), "cache": record["settings"]["cache"], "seed": clip["seed"],
            "reused_steps": clip["reused_steps"]}


@contextlib.contextmanager
def replayed_reuse(reused_steps: list[int]):
    """Within it every pipeline step cache reuses exactly ``reused_steps`` (once a velocity is stored), not the
    steps its drift test would pick."""
    chosen = set(reused_steps)

    class ReplayedCache(StepCache):
        def reuse(self, step, sigmas):
            if self.threshold > 0 and self._last is not None and step in chosen:
                self.reused.append(step)
                return True
            return False

    with mock.patch.object(mova.pipeline, "StepCache", ReplayedCache):
        yield


def run_clip(pipe: MOVAPipeline, settings: GenerationSettings, device: torch.device) -> dict[str, Any]:
    """One timed clip; the stage seconds, per-step times and peak memory."""
    timer = StageTimer(pipe, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    result = pipe(settings, progress=timer.progress)
    synchronize(device)
    wall = time.perf_counter() - start
    stages = dict(timer.seconds)
    stages["loudness"] = max(0.0, result.timings["decode"] - stages["vae_decode"] - stages["dac_decode"])
    stages["total"], stages["wall"] = result.timings["total"], wall
    steps = timer.step_times()
    return {"stages_s": {k: round(v, 4) for k, v in stages.items()},
            "step_times_s": [round(t, 4) for t in steps], "step_s": round(statistics.median(steps), 4),
            "peak_memory_gb": (round(torch.cuda.max_memory_allocated(device) / 1e9, 2) if device.type == "cuda"
                               else None),
            "evaluations": result.nfe, "cached_steps": result.cached_steps,
            "finite": bool(result.video.size and (result.audio == result.audio).all()),
            "video_shape": list(result.video.shape), "audio_samples": int(result.audio.shape[0])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESET_NAMES, default="mova-360p")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default=None, help="default bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--height", type=int, default=None, help="default: the preset's first resolution")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--num-frames", type=int, default=None, help="default: the preset's (193 at full size)")
    parser.add_argument("--fps", type=float, default=None)
    parser.add_argument("--steps", type=int, default=10, help="timed denoising steps")
    parser.add_argument("--guidance", default="text", choices=("none", "text", "text+bridge", "dual"))
    parser.add_argument("--warmup-steps", type=int, default=2, help="steps of an untimed clip first (0: none)")
    parser.add_argument("--offload", default="none", choices=("none", "model", "sequential"))
    parser.add_argument("--one-expert", action="store_true", help="leave out video_dit_2 (less memory)")
    parser.add_argument("--quantization", default=None, choices=QUANTIZATIONS,
                        help="block weights stored in this format (fp8: both experts fit an 80 GB GPU)")
    parser.add_argument("--compile", action="store_true", help="regional torch.compile of the repeated blocks")
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp8"))
    parser.add_argument("--cache", type=float, default=0.0, help="step cache threshold (0: every step evaluated)")
    parser.add_argument("--aot", action="store_true",
                        help="ahead-of-time compile the repeated blocks for this request (mova.backends.aot, the "
                             "spaces package's AoT helpers) before the clips")
    parser.add_argument("--max-sequence-length", type=int, default=None, help="text tokens (default 512; tiny 32)")
    parser.add_argument("--space-defaults", action="store_true",
                        help="then measure the Space's default request fitted to the figures in --out")
    parser.add_argument("--fast-out", type=Path, default=None, help="then the fastest combination, into this file")
    parser.add_argument("--fast-precision", default="fp8", choices=("bf16", "fp8"))
    parser.add_argument("--fast-cache", type=float, default=0.1)
    parser.add_argument("--fast-steps", type=int, default=50)
    parser.add_argument("--replay-reuse", type=Path, default=None,
                        help="a demo_eval.py --cache record: cached runs reuse its least-reusing clip's steps")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--append", action="store_true", help="add the run to an existing results file")
    parser.add_argument("--figures", type=Path, default=None,
                        help="the duration model's figures for each run's estimate_before (default: --out when "
                             "appending, else none)")
    args = parser.parse_args(argv)
    if args.replay_reuse is not None:  # before the build: each cached run's step count must be the record's
        for steps, cache in ((args.steps, args.cache), (args.fast_steps, args.fast_cache if args.fast_out else 0)):
            if cache > 0:
                reuse_pattern(args.replay_reuse, steps)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("clip_time.py: CUDA is not available; use --device cpu with --preset tiny", file=sys.stderr)
        return 2
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(args.dtype or "", None) or (
        torch.bfloat16 if device.type == "cuda" else torch.float32)
    preset = get_preset(args.preset)
    height, width = (args.height or preset.resolutions[0][0]), (args.width or preset.resolutions[0][1])
    num_frames, fps = args.num_frames or preset.default_num_frames, args.fps or preset.default_fps
    max_len = args.max_sequence_length or (32 if args.preset == "tiny" else 512)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pipe = build_pipeline(args.preset, device, dtype, args.offload, args.one_expert, max_len, Path(tmp) / "tok",
                              args.quantization)
    build_s = time.perf_counter() - t0
    weights_gb = torch.cuda.memory_allocated(device) / 1e9 if device.type == "cuda" else None
    print(f"built {args.preset} in {build_s:.1f} s" + (f", {weights_gb:.1f} GB on the GPU" if weights_gb else ""),
          flush=True)
    if args.compile:
        pipe.compile()

    settings = GenerationSettings(prompt=PROMPT, height=height, width=width, num_frames=num_frames, fps=fps,
                                  num_inference_steps=args.steps, guidance=args.guidance, seed=0,
                                  precision=args.precision, cache=args.cache)
    common = dict(preset=args.preset, max_sequence_length=max_len, dtype=str(dtype).replace("torch.", ""),
                  offload=args.offload, experts=1 if args.one_expert else 2, compiled=args.compile,
                  quantization=args.quantization,
                  build_s=round(build_s, 2), weights_gb=None if weights_gb is None else round(weights_gb, 2),
                  aot=None)
    if args.aot:
        import dataclasses

        from mova.backends import aot

        t1 = time.perf_counter()
        report = aot.prepare(pipe, settings)
        common["aot"] = {**dataclasses.asdict(report), "compile_s": round(time.perf_counter() - t1, 2)}
        print(f"AoT: {common['aot']}", flush=True)
    ok = record_run(pipe, settings, device, args.out, args.append, args.warmup_steps,
                    dict(common, request="as given"), figures=args.figures, replay_from=args.replay_reuse)
    if ok and args.fast_out is not None:
        fast = settings.replace(precision=args.fast_precision, cache=args.fast_cache,
                                num_inference_steps=args.fast_steps)
        ok = record_run(pipe, fast, device, args.fast_out, args.append, args.warmup_steps,
                        dict(common, request="fastest combination"), figures=args.figures or args.out,
                        replay_from=args.replay_reuse)
    if ok and args.space_defaults:
        info = fit_defaults(pipe.model_info(), DurationModel.load(args.out))
        space = settings.replace(num_frames=info.default_num_frames,
                                 num_inference_steps=info.default_num_inference_steps)
        ok = record_run(pipe, space, device, args.out, True, args.warmup_steps,
                        dict(common, request="space defaults"))
    return 0 if ok else 1


def record_run(pipe: MOVAPipeline, settings: GenerationSettings, device: torch.device, out: Path, append: bool,
               warmup_steps: int, common: dict[str, Any], figures: Path | None = None,
               replay_from: Path | None = None) -> bool:
    """Warm up, time one clip of ``settings`` (a cached one reusing ``replay_from``'s steps when given) and add its
    record to ``out``; True when it ran."""
    results: dict[str, Any] = {"benchmark": "clip_time", "runs": []}
    if append and out.exists():
        results = json.loads(out.read_text())
    results.update(device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                   or "cpu", torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version())
    s = settings
    record: dict[str, Any] = {
        **common, "height": s.height, "width": s.width, "num_frames": s.num_frames, "fps": s.fps,
        "steps": s.num_inference_steps, "guidance": s.guidance, "nfe": s.guidance_config.nfe,
        "video_tokens": DurationModel().tokens(s.height, s.width, s.num_frames),
        "precision": s.precision, "cache": s.cache, "warmup_steps": warmup_steps,
        "estimate_before": estimate_before(s, figures or (out if append else None)),
    }
    replay = contextlib.nullcontext()
    if replay_from is not None and s.cache > 0:
        record["replayed_reuse"] = reuse_pattern(replay_from, s.num_inference_steps)
        replay = replayed_reuse(record["replayed_reuse"]["reused_steps"])
    try:
        if warmup_steps > 0:
            pipe(s.replace(num_inference_steps=warmup_steps))
        with replay:
            record.update(run_clip(pipe, s, device), status="ok")
        record["attention"] = attention_in_use()
    except torch.OutOfMemoryError as exc:
        record.update(status="oom", error=str(exc).splitlines()[0])
        torch.cuda.empty_cache()
    results["runs"].append(record)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(record, indent=2), flush=True)
    return record["status"] == "ok"


if __name__ == "__main__":
    sys.exit(main())
