"""Numerical cost of the attention kernels and of fp8, against a float32 reference (one GPU).

A full-width denoiser (MOVA's widths and head counts, ``--layers`` blocks per tower, every bridge layer of those,
random weights) computes one text-CFG guided velocity at the official 360p shapes (43,120 video + 403 audio tokens)
in float32 (memory-efficient SDPA); the same weights in bf16 then compute it with cuDNN attention (today's default),
FlashAttention-3, and the fp8 path (``mova.acceleration.fp8``). Each is reported as the relative L2 of the video and
audio velocities against the float32 one.

    python benchmarks/accuracy.py --out benchmarks/results/accuracy_h200.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from step_time import RESOLUTIONS, build_denoiser, fp8_context  # noqa: E402

from mova.attention import _fa3_available, attention_backend  # noqa: E402
from mova.config import tiny_preset  # noqa: E402
from mova.guidance import Guidance, guided_velocity  # noqa: E402
from mova.loading import cast_  # noqa: E402


def full_width(layers: int):
    p = tiny_preset(video_dim=5120, video_heads=40, video_layers=layers, audio_dim=1536, audio_heads=12,
                    audio_layers=layers, text_dim=4096, head_dim=128, audio_latent_dim=128)
    p.video_dit.update(ffn_dim=13824, freq_dim=256)
    p.audio_dit.update(ffn_dim=8960, freq_dim=256)
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--resolution", default="360p", choices=["360p", "tiny"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    preset = full_width(args.layers) if args.resolution == "360p" else tiny_preset()
    den32 = build_denoiser(preset, device, torch.float32)
    h, w = RESOLUTIONS[args.resolution]
    g = torch.Generator(device).manual_seed(1)
    c_a, d_t = den32.audio_dit.config.in_dim, den32.audio_dit.config.text_dim
    x = dict(video=torch.randn(1, 36, 49, h // 8, w // 8, device=device, generator=g),
             audio=torch.randn(1, c_a, 403, device=device, generator=g),
             text=torch.randn(1, 512, d_t, device=device, generator=g),
             neg=torch.randn(1, 512, d_t, device=device, generator=g))
    guidance = Guidance("text", 5.0)

    def velocity(den, dtype):
        return guided_velocity(den, guidance, *(x[k].to(dtype) for k in ("video", "audio", "text", "neg")),
                               950.0, 950.0, 24.0, expert=0, sequential=True)

    with torch.no_grad():
        with attention_backend("efficient" if device.type == "cuda" else "auto"):
            ref = velocity(den32, torch.float32)
        den16 = copy.deepcopy(den32)
        del den32
        for m in [*den16.experts, den16.audio_dit, den16.bridge]:
            cast_(m, torch.bfloat16)
        runs = {}
        variants = [("bf16, cuDNN attention", "cudnn", "bf16")]
        if _fa3_available():
            variants += [("bf16, FlashAttention-3", "fa3", "bf16"),
                         ("fp8 (e4m3 GEMMs, FA3 e4m3 self-attention)", "fa3", "fp8"),
                         ("fp8 GEMMs only", "fa3", "fp8gemm"), ("fp8 self-attention only", "fa3", "fp8attn"),
                         ("fp8 in the video experts only", "fa3", "fp8video")]
        for name, backend, scope in variants:
            with attention_backend(backend), fp8_context(den16, None if scope == "bf16" else scope, device):
                out = velocity(den16, torch.bfloat16)
            runs[name] = {k: round(float((a.double() - b.double()).norm() / b.double().norm()), 5)
                          for k, a, b in (("rel_l2_video", out[0], ref[0]), ("rel_l2_audio", out[1], ref[1]))}
            print(name, runs[name], flush=True)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "model": f"full width, {args.layers} blocks per tower", "resolution": args.resolution,
              "reference": "float32, memory-efficient SDPA, no TF32", "vs_float32": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
