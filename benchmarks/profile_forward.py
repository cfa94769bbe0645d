"""Kernel-time breakdown of one full-size denoiser forward (random weights) with the PyTorch profiler.

    python benchmarks/profile_forward.py --resolution 360p --out benchmarks/results/profile_360p.json
    python benchmarks/profile_forward.py --compile --precision fp8 --out benchmarks/results/profile_360p_fp8.json

``--precision fp8`` profiles the forward inside ``mova.acceleration.fp8`` (e4m3 GEMMs, FlashAttention-3 e4m3
self-attention); ``--attention`` picks the bf16 attention backend (``auto``: FA3 when installed, else cuDNN).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import RESOLUTIONS, build_denoiser  # noqa: E402

from mova.acceleration import compile_repeated_blocks, precision_context  # noqa: E402
from mova.attention import AttentionBackend, attention_backend  # noqa: E402
from mova.config import get_preset  # noqa: E402

CATEGORIES = (("attention", ("fmha", "flash", "cudnn", "attention", "sdpa")),
              ("gemm", ("gemm", "sm90_xmma", "cutlass", "nvjet")), ("conv", ("conv",)), ("norm", ("norm",)),
              ("fused", ("triton_",)),  # inductor's kernels other than norms (compiled runs)
              ("elementwise", ("elementwise", "vectorized", "unrolled", "reduce", "cat")))


def category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--resolution", default="360p", choices=list(RESOLUTIONS))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--compile", action="store_true", help="regional torch.compile of the blocks")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp8"))
    p.add_argument("--attention", default="auto", choices=[b.value for b in AttentionBackend])
    args = p.parse_args()
    device, dtype = torch.device("cuda"), torch.bfloat16
    den = build_denoiser(get_preset("mova-360p"), device, dtype)
    models = [*den.experts, den.audio_dit, den.bridge]
    if args.compile:
        compile_repeated_blocks(models)
    h, w = RESOLUTIONS[args.resolution]
    B = args.batch
    x = torch.randn(B, 36, 49, h // 8, w // 8, device=device, dtype=dtype)
    a = torch.randn(B, 128, 403, device=device, dtype=dtype)
    t = torch.randn(B, 512, 4096, device=device, dtype=dtype)
    with torch.no_grad(), attention_backend(args.attention), precision_context(args.precision, models, device):
        den(x, a, t, 950.0, 950.0, 24.0, expert=0)  # warm-up
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            den(x, a, t, 950.0, 950.0, 24.0, expert=0)
            torch.cuda.synchronize()
    kernels: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            kernels[evt.key] += evt.self_device_time_total / 1e6
    total = sum(kernels.values())
    by_cat: dict[str, float] = defaultdict(float)
    for k, v in kernels.items():
        by_cat[category(k)] += v
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:30]
    result = {"resolution": args.resolution, "batch": B, "compiled": args.compile,
              "precision": args.precision, "attention": args.attention, "device": torch.cuda.get_device_name(),
              "torch": torch.__version__, "forward_kernel_s": round(total, 4),
              "by_category_s": {k: round(v, 4) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
              "top_kernels_s": [[k[:120], round(v, 4)] for k, v in top]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("forward_kernel_s", "by_category_s")}, indent=1))
    for k, v in top:
        print(f"{v:8.4f}  {k[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
