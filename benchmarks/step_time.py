"""Per-step time and peak GPU memory of the full-size MOVA denoiser with random weights (no download).

One denoising step = the guidance branches of one step (text CFG: 2 forwards) + the Euler update, with
one video expert, the audio DiT and the bridge resident in bf16 (the active 18.4B parameters). Shapes are
the official ones: 360p = 352×640, 720p = 720×1280, 193 frames at 24 fps (video tokens 43,120 / 176,400,
audio tokens 403), 512 text tokens.

    python benchmarks/step_time.py --resolution 360p --out benchmarks/results/step_time_h100.json
    python benchmarks/step_time.py --resolution 720p --configs text:sequential:auto --steps 1 --append ...

Configs are ``mode:branching:attention[:compile][:fp8][:stream|:groupoffload]`` — mode in none/text/text+bridge/dual,
branching ``batched`` (all branches in one forward) or ``sequential`` (one forward per branch, like the official
pipeline), attention an ``AttentionBackend`` value (auto = FA3 if installed, else cuDNN-first SDPA); ``compile`` runs
with regional torch.compile of the blocks (``mova.acceleration.compile_repeated_blocks``; its time is reported as
``warmup_s``, the warm-up steps); ``fp8`` runs the blocks in fp8 (``mova.acceleration.fp8``: e4m3 GEMMs and
FlashAttention-3 e4m3 self-attention) and reports the relative L2 of one guided velocity against the bf16 path
(``fp8gemm``: the GEMMs alone, ``fp8attn``: the attention alone, ``fp8video``: the video experts alone,
``fp8promoted``: the GEMMs without fast accumulation);
``stream`` runs with the pipeline's ``offload="sequential"`` mode (blocks streamed from pinned host memory,
``mova.offload.BlockStreamer``), ``groupoffload`` with diffusers' leaf-level group offloading on a CUDA stream (the
block-level kind needs each model's own forward, which the dual-tower denoiser does not call) — list either last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mova.acceleration import compile_repeated_blocks, fp8  # noqa: E402
from mova.config import get_preset  # noqa: E402
from mova.guidance import Guidance, guided_velocity  # noqa: E402
from mova.loading import build_on_meta, cast_  # noqa: E402
from mova.models import AudioDiT, DualTowerBridge, DualTowerDenoiser, VideoDiT  # noqa: E402
from mova.attention import attention_backend  # noqa: E402

RESOLUTIONS = {"360p": (352, 640), "720p": (720, 1280), "tiny": (64, 64)}
TEXT_LEN = 512


def forward_flops(den: DualTowerDenoiser, tokens_v: int, tokens_a: int, text_len: int = TEXT_LEN) -> float:
    """Matmul FLOPs (2·M·N·K, attention core 4·Lq·Lk·d) of one denoiser forward for batch 1."""
    v, a, b = den.video_dit.config, den.audio_dit.config, den.bridge.config

    def tower(c, L):
        per_layer = (8 * L * c.dim**2 + 4 * L * L * c.dim + 4 * L * c.dim * c.ffn_dim  # self-attn + FFN
                     + 4 * L * c.dim**2 + 4 * text_len * c.dim**2 + 4 * L * text_len * c.dim)  # text cross-attn
        return c.num_layers * per_layer

    dv, da = b.visual_hidden_dim, b.audio_hidden_dim
    per_bridge = (4 * tokens_v * dv**2 + 4 * tokens_a * da * dv + 4 * tokens_v * tokens_a * dv  # a2v
                  + 4 * tokens_a * da**2 + 4 * tokens_v * dv * da + 4 * tokens_a * tokens_v * da)  # v2a
    return tower(v, tokens_v) + tower(a, tokens_a) + len(den.bridge.layers) * per_bridge


@torch.no_grad()
def random_init_(module: torch.nn.Module) -> None:
    """Random weights directly on the GPU: N(0, 0.02) matrices, unit norm weights, small modulation."""
    for name, p in module.named_parameters():
        if name.endswith("modulation"):
            p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]))
        elif p.ndim == 1 and ("norm" in name):
            p.fill_(1.0)
        elif p.ndim == 1:
            p.zero_()
        else:
            p.normal_(0.0, 0.02)


def build_denoiser(preset, device: torch.device, dtype: torch.dtype, seed: int = 0) -> DualTowerDenoiser:
    """One video expert, the audio DiT and the bridge with random weights, built directly on ``device``
    (identical on every rank for the same seed)."""
    torch.manual_seed(seed)
    parts = []
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # meta parameters in bf16, so to_empty never materialises an fp32 copy
    try:
        for cls, cfg in ((VideoDiT, preset.video_dit), (AudioDiT, preset.audio_dit), (DualTowerBridge, preset.bridge)):
            m = build_on_meta(cls, cfg).to_empty(device=device)
            random_init_(m)
            cast_(m, dtype)  # the _keep_in_fp32_modules in float32, as the loader keeps them
            parts.append(m.eval().requires_grad_(False))
    finally:
        torch.set_default_dtype(previous)
    return DualTowerDenoiser(parts[0], parts[1], parts[2], None)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# fp8 flags: ``fp8`` is ``precision="fp8"`` as the pipeline runs it; the others measure one part of it alone
FP8_SCOPES = {"fp8": dict(), "fp8gemm": dict(attention=False), "fp8attn": dict(linears=False),
              "fp8video": dict(video_only=True), "fp8promoted": dict(fast_accum=False),
              "fp8videoattn": dict(audio_attention=False)}


def fp8_context(den, scope: str | None, device):
    """The fp8 context of a flag (``contextlib.nullcontext`` for bf16)."""
    if scope is None:
        return contextlib.nullcontext()
    opts = dict(FP8_SCOPES[scope])
    models = den.experts if opts.pop("video_only", False) else [*den.experts, den.audio_dit, den.bridge]
    return fp8(models, device, **opts)


def run_config(den, preset, resolution: str, config: str, steps: int, warmup: int, device, dtype) -> dict:
    mode, branching, backend, *flags = config.split(":")
    guidance = Guidance(mode=mode, text_scale=5.0, bridge_scale=2.0 if mode == "dual" else 1.0)
    h, w = RESOLUTIONS[resolution]
    t_lat = (193 - 1) // 4 + 1
    tokens_v, tokens_a = t_lat * (h // 16) * (w // 16), (int(48000 * 193 / 24) - 1) // 960 + 1
    g = torch.Generator(device).manual_seed(0)
    z_v = torch.randn(1, 16, t_lat, h // 8, w // 8, device=device, generator=g)
    cond = torch.randn(1, 20, t_lat, h // 8, w // 8, device=device, generator=g)
    c_a, d_t = den.audio_dit.config.in_dim, den.audio_dit.config.text_dim
    z_a = torch.randn(1, c_a, tokens_a, device=device, generator=g)
    text = torch.randn(1, TEXT_LEN, d_t, device=device, dtype=dtype, generator=g)
    neg = torch.randn(1, TEXT_LEN, d_t, device=device, dtype=dtype, generator=g)
    sigmas = torch.linspace(1.0, 0.0, warmup + steps + 1)

    @torch.no_grad()
    def one_step(i: int):
        nonlocal z_v, z_a
        model_in = torch.cat([z_v, cond], 1).to(dtype)
        vv, va = guided_velocity(den, guidance, model_in, z_a.to(dtype), text, neg, 950.0, 950.0, 24.0, expert=0,
                                 sequential=(branching == "sequential"))
        dt = float(sigmas[i + 1] - sigmas[i])
        z_v = z_v + vv.float() * dt
        z_a = z_a + va.float() * dt

    offload = "sequential" if "stream" in flags else "diffusers-leaf" if "groupoffload" in flags else "none"
    scope = next((f for f in flags if f in FP8_SCOPES), None)
    precision = "fp8" if scope else "bf16"
    record = dict(resolution=resolution, height=h, width=w, num_frames=193, fps=24, video_tokens=tokens_v,
                  audio_tokens=tokens_a, mode=mode, nfe=guidance.nfe, branching=branching, attention=backend,
                  compiled="compile" in flags, offload=offload, precision=precision,
                  dtype=str(dtype).replace("torch.", ""))
    if scope:
        record["fp8_scope"] = scope
    context = fp8_context(den, scope, device)
    try:
        if precision == "fp8":  # the numerical cost: one guided velocity against the bf16 path, same inputs
            def velocity():
                return guided_velocity(den, guidance, torch.cat([z_v, cond], 1).to(dtype), z_a.to(dtype), text, neg,
                                       950.0, 950.0, 24.0, expert=0, sequential=(branching == "sequential"))
            with torch.no_grad():
                ref = velocity()
                with fp8_context(den, scope, device):
                    fast = velocity()
            record.update({f"rel_l2_vs_bf16_{k}": round(float((a - b).norm() / b.norm()), 5)
                           for k, a, b in (("video", fast[0], ref[0]), ("audio", fast[1], ref[1]))})
            del ref, fast
        with attention_backend(backend), context:
            t0 = time.perf_counter()
            for i in range(warmup):
                one_step(i)
            sync()
            record["warmup_s"] = round(time.perf_counter() - t0, 1)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times = []
            for i in range(warmup, warmup + steps):
                sync()
                t1 = time.perf_counter()
                one_step(i)
                sync()
                times.append(time.perf_counter() - t1)
    except torch.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        return {**record, "status": "oom", "error": str(exc).splitlines()[0]}
    step_s = sorted(times)[len(times) // 2]
    flops = forward_flops(den, tokens_v, tokens_a) * guidance.nfe
    record.update(status="ok", step_times_s=[round(t, 4) for t in times], step_s=round(step_s, 4),
                  peak_memory_gb=round(torch.cuda.max_memory_allocated() / 1e9, 2) if device.type == "cuda" else None,
                  pflop_per_step=round(flops / 1e15, 3), tflops_per_s=round(flops / step_s / 1e12, 1),
                  finite=bool(torch.isfinite(z_v).all() and torch.isfinite(z_a).all()))
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", choices=list(RESOLUTIONS), default="360p")
    parser.add_argument("--configs", nargs="+",
                        default=["text:batched:auto", "text:sequential:auto", "dual:batched:auto", "text:batched:flash"])
    parser.add_argument("--steps", type=int, default=2, help="timed steps per config (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per config")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--append", action="store_true", help="add to an existing results file")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only for a smoke run with --resolution tiny")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("step_time.py needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = True
    preset = get_preset({"720p": "mova-720p", "360p": "mova-360p", "tiny": "tiny"}[args.resolution])
    t0 = time.perf_counter()
    den = build_denoiser(preset, device, dtype)
    build_s = time.perf_counter() - t0
    weights_gb = torch.cuda.memory_allocated() / 1e9 if device.type == "cuda" else 0.0
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
               "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(), "runs": []}
    if args.append and args.out.exists():
        results = json.loads(args.out.read_text())
    print(f"built denoiser in {build_s:.1f} s, weights {weights_gb:.1f} GB on {results['device']}", flush=True)
    compiled = streaming = False
    for config in args.configs:
        offloaded = config.endswith((":stream", ":groupoffload"))
        if offloaded and not streaming:
            t1 = time.perf_counter()
            if config.endswith(":stream"):
                from mova.offload import BlockStreamer

                BlockStreamer([*den.experts, den.audio_dit, den.bridge], device)
            else:
                from diffusers.hooks import apply_group_offloading

                for m in [*den.experts, den.audio_dit, den.bridge]:
                    apply_group_offloading(m, onload_device=device, offload_type="leaf_level", use_stream=True,
                                           record_stream=True)
            torch.cuda.empty_cache()
            print(f"offloaded ({config.rsplit(':', 1)[1]}) in {time.perf_counter() - t1:.1f} s; "
                  f"{torch.cuda.memory_allocated() / 1e9:.2f} GB stay on the GPU", flush=True)
            streaming = True
            weights_gb = torch.cuda.memory_allocated() / 1e9
        elif streaming and not offloaded:
            raise SystemExit("list offloaded configs last")
        if ":compile" in config and not compiled:
            compile_repeated_blocks([*den.experts, den.audio_dit, den.bridge])
            compiled = True
        elif compiled and ":compile" not in config:
            raise SystemExit("list eager configs before compiled ones")
        rec = run_config(den, preset, args.resolution, config, args.steps, args.warmup, device, dtype)
        rec["weights_gb"] = round(weights_gb, 2)
        results["runs"].append(rec)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(json.dumps(rec), flush=True)
    print(f"{'res':<5} {'config':<34} {'s/step':>8} {'peak GB':>8} {'TF/s':>7}")
    for r in results["runs"]:
        cfg = f"{r['mode']}:{r['branching']}:{r['attention']}" + (":compile" if r.get("compiled") else "") + \
            (":" + r.get("fp8_scope", "fp8") if r.get("precision") == "fp8" else "") + \
            {"sequential": ":stream", "diffusers-leaf": ":groupoffload"}.get(r.get("offload"), "")
        print(f"{r['resolution']:<5} {cfg:<34} {r.get('step_s', r['status']):>8} {r.get('peak_memory_gb') or '-':>8} "
              f"{r.get('tflops_per_s', '-'):>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
