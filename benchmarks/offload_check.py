"""GPU check of the pipeline's offload modes: same result as no offload, and the memory each one needs.

Builds two random checkpoints in the official layout on local disk — the tiny test model and a medium one
(~1.3 GB of DiT weights in bf16) — then for each offload mode (none, model, sequential) generates with a
fixed seed and records the peak GPU memory, the host RSS growth while loading and the time, and compares the
final latents with the ``none`` run.

    python benchmarks/offload_check.py --out benchmarks/results/offload_check.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mova import Guidance, MOVAPipeline  # noqa: E402
from mova.config import tiny_preset  # noqa: E402
from mova.tiny import make_tiny_checkpoint  # noqa: E402


def rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def medium_preset():
    return tiny_preset(video_dim=1024, video_heads=8, video_layers=10, audio_dim=512, audio_heads=4, audio_layers=8,
                       text_dim=64, head_dim=128, audio_latent_dim=32)


def run(folder: Path, offload: str, dtype: torch.dtype, size: dict) -> tuple[dict, tuple[torch.Tensor, torch.Tensor]]:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = rss_gb()
    t0 = time.perf_counter()
    pipe = MOVAPipeline.from_pretrained(folder, device="cuda", torch_dtype=dtype, offload=offload)
    load_s = time.perf_counter() - t0
    rss_growth = rss_gb() - before
    resident = torch.cuda.memory_allocated() / 1e9
    torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    latents = pipe("a ball bounces", seed=1, guidance=Guidance("text", 4.0), output_type="latent", **size)
    torch.cuda.synchronize()
    gen_s = time.perf_counter() - t1
    record = dict(offload=offload, load_s=round(load_s, 2), generate_s=round(gen_s, 2),
                  gpu_resident_after_load_gb=round(resident, 3),
                  gpu_peak_during_generation_gb=round(torch.cuda.max_memory_allocated() / 1e9, 3),
                  host_rss_growth_during_load_gb=round(rss_growth, 3))
    out = tuple(t.float().cpu() for t in latents)
    del pipe
    return record, out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "checks": []}
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("tiny", None, torch.float32, dict(height=64, width=64, num_frames=9, fps=12.0,
                                                    num_inference_steps=4)),
                 ("medium", medium_preset(), torch.bfloat16, dict(height=256, width=448, num_frames=33, fps=24.0,
                                                                 num_inference_steps=3))]
        for name, preset, dtype, size in cases:
            folder = make_tiny_checkpoint(Path(tmp) / name, preset=preset, seed=0)
            weights = sum(p.stat().st_size for p in folder.rglob("*.safetensors")) / 1e9
            ref = None
            for offload in ("none", "model", "sequential"):
                try:
                    record, out = run(folder, offload, dtype, size)
                except Exception as exc:  # record the failure and go on with the other modes
                    record = dict(offload=offload, status="error", error=f"{type(exc).__name__}: {exc}"[:500])
                    results["checks"].append({**record, "model": name})
                    print(json.dumps(record), flush=True)
                    continue
                if ref is None:
                    ref = out
                record["max_abs_diff_vs_none"] = max(float((a - b).abs().max()) for a, b in zip(out, ref))
                record.update(model=name, dtype=str(dtype).replace("torch.", ""), checkpoint_gb=round(weights, 3))
                results["checks"].append(record)
                print(json.dumps(record), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
