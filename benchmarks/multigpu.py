"""Multi-GPU inference: equivalence with one GPU, and full-size step time with sequence parallelism.

Run under torchrun, one process per GPU:

    torchrun --nproc-per-node 4 benchmarks/multigpu.py --resolutions 360p 720p --out benchmarks/results/multigpu_4.json
    torchrun --nproc-per-node 4 benchmarks/multigpu.py --cfg 2 ...      # 2 CFG × 2 sequence

1. Equivalence: a tiny model and a full-width model (MOVA's widths and head counts, 2 layers per tower) give
   the same guided velocities with the parallel layout as on one GPU (bf16; 403 audio tokens, which no degree
   above 1 divides).
2. Timing: the full-size denoiser (one video expert + audio DiT + bridge, random weights, bf16, identical on
   every rank) runs text-CFG steps at the official shapes; eager, like the single-GPU eager baseline of
   ``step_time.py``, so that efficiency = t(1 GPU) / (N · t(N GPUs)) compares like with like.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from step_time import RESOLUTIONS, build_denoiser, forward_flops  # noqa: E402

from mova.config import get_preset, tiny_preset  # noqa: E402
from mova.guidance import Guidance, guided_velocity  # noqa: E402
from mova.parallel import init_parallel, parallelize  # noqa: E402


def inputs(preset, h, w, frames, device, dtype, seed=1):
    g = torch.Generator(device).manual_seed(seed)
    t_lat = (frames - 1) // 4 + 1
    n_a = (int(48000 * frames / 24) - 1) // 960 + 1
    c_a, d_t = preset.audio_dit.get("in_dim", 128), preset.video_dit.get("text_dim", 4096)
    return dict(
        video=torch.randn(1, 36, t_lat, h // 8, w // 8, device=device, generator=g).to(dtype),
        audio=torch.randn(1, c_a, n_a, device=device, generator=g).to(dtype),
        text=torch.randn(1, 512, d_t, device=device, generator=g).to(dtype),
        neg=torch.randn(1, 512, d_t, device=device, generator=g).to(dtype),
    )


def equivalence(state, device, dtype) -> list[dict]:
    full_width = tiny_preset(video_dim=5120, video_heads=40, video_layers=2, audio_dim=1536, audio_heads=12,
                             audio_layers=2, text_dim=4096, head_dim=128, audio_latent_dim=128)
    full_width.video_dit.update(ffn_dim=13824, freq_dim=256)  # MOVA's (the full preset's class defaults)
    full_width.audio_dit.update(ffn_dim=8960, freq_dim=256)
    out = []
    for name, preset, (h, w, frames) in (("tiny", tiny_preset(), (64, 96, 193)),
                                         ("full-width-2-layers", full_width, (352, 640, 193))):
        den = build_denoiser(preset, device, dtype)
        x = inputs(preset, h, w, frames, device, dtype)
        guidance = Guidance("text", 5.0)
        with torch.no_grad():
            ref = guided_velocity(den, guidance, x["video"], x["audio"], x["text"], x["neg"], 700.0, 700.0, 24.0)
            # the bf16 noise floor: the same single-GPU computation in fp32 vs bf16
            den32 = copy.deepcopy(den).float()
            ref32 = guided_velocity(den32, guidance, *(x[k].float() for k in ("video", "audio", "text", "neg")),
                                    700.0, 700.0, 24.0)
            floor = [float((a - b).float().norm() / b.float().norm()) for a, b in zip(ref, ref32)]
            del den32
            model, runner = parallelize(den, state)
            par = guided_velocity(model, guidance, x["video"], x["audio"], x["text"], x["neg"], 700.0, 700.0, 24.0,
                                  runner=runner)
        errs = [float((a - b).float().norm() / b.float().norm()) for a, b in zip(par, ref)]
        out.append(dict(model=name, audio_tokens=x["audio"].shape[-1], rel_l2_video=errs[0], rel_l2_audio=errs[1],
                        bf16_vs_fp32_rel_l2_video=floor[0], bf16_vs_fp32_rel_l2_audio=floor[1]))
        del den
        torch.cuda.empty_cache()
    return out


def timing(state, device, dtype, resolution: str, steps: int, warmup: int) -> dict:
    preset = get_preset("mova-360p")
    model, runner = parallelize(build_denoiser(preset, device, dtype), state, sequential=True)
    h, w = RESOLUTIONS[resolution]
    x = inputs(preset, h, w, 193, device, dtype)
    guidance = Guidance("text", 5.0)
    times = []
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for i in range(warmup + steps):
            dist.barrier()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            vv, va = guided_velocity(model, guidance, x["video"], x["audio"], x["text"], x["neg"], 950.0, 950.0, 24.0,
                                     expert=0, sequential=True, runner=runner)
            torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    tokens_v = 49 * (h // 16) * (w // 16)
    flops = 2 * forward_flops(model.denoiser if hasattr(model, "denoiser") else model, tokens_v, 403)
    step_s = sorted(times)[len(times) // 2]
    del model
    torch.cuda.empty_cache()
    return dict(resolution=resolution, gpus=state.world_size, sp=state.sp_size, cfg=state.cfg_size,
                step_times_s=[round(t, 3) for t in times], step_s=round(step_s, 3),
                tflops_per_s_per_gpu=round(flops / step_s / state.world_size / 1e12, 1),
                peak_memory_gb=round(torch.cuda.max_memory_allocated() / 1e9, 2))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", type=int, default=1, help="CFG-parallel degree (the rest is sequence parallel)")
    p.add_argument("--resolutions", nargs="*", default=["360p"])
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--skip-equivalence", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    import os

    world = int(os.environ["WORLD_SIZE"])
    state = init_parallel(sp=world // args.cfg, cfg=args.cfg)
    device, dtype = state.device, torch.bfloat16
    result = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "world_size": world,
              "sp": state.sp_size, "cfg": state.cfg_size, "equivalence": [], "timing": []}
    if not args.skip_equivalence:
        result["equivalence"] = equivalence(state, device, dtype)
        if state.is_main:
            print(json.dumps(result["equivalence"]), flush=True)
    for res in args.resolutions:
        steps = args.steps if res == "360p" else 1
        rec = timing(state, device, dtype, res, steps, args.warmup)
        result["timing"].append(rec)
        if state.is_main:
            print(json.dumps(rec), flush=True)
    if state.is_main:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
