"""Memory profiles measured: a whole clip through ``MOVAPipeline.from_pretrained(folder, memory=...)`` with the GPU
capped (``torch.cuda.set_per_process_memory_fraction``) and the process's host memory sampled every 100 ms, from a
full-size checkpoint folder with random weights written to disk first (the loading path is the real one: headers
checked, tensors read one by one, experts and text encoder read lazily). Nothing is downloaded.

    # 1. a full-size folder with fp8 block weights (what `mova quantize` writes), built on the GPU
    python benchmarks/memory_profile.py write --preset mova-360p --format fp8 --folder /tmp/mova-fp8
    # 2. in a fresh process: one clip under a 24 GB cap (360p, 193 frames, 50 steps)
    python benchmarks/memory_profile.py run --folder /tmp/mova-fp8 --memory 24gb --cap-gb 24 --steps 50 \
        --out benchmarks/results/memory_24gb_360p_h200.json
    # numerical cost of each weight format: one full-size guided velocity against bf16 (random weights)
    python benchmarks/memory_profile.py numerics --out benchmarks/results/quantization_numerics_h200.json
    # the code path on a CPU: a tiny folder, a tiny clip
    python benchmarks/memory_profile.py write --preset tiny --format fp8 --folder /tmp/t --device cpu
    python benchmarks/memory_profile.py run --folder /tmp/t --memory 24gb --steps 2 --device cpu --out /tmp/t.json

Host memory is the resident set of this process (``VmRSS`` of ``/proc/self/status``: anonymous memory, the pinned
staging buffers of the block streamer and the pages of memory-mapped safetensors while they are mapped), its peak
over the samples and the kernel's own high-water mark (``VmHWM``). The GPU figure is the caching allocator's peak
(``max_memory_reserved``: what the cap limits); the CUDA context (~0.5 GB) is outside it, as it is outside the
cap. Pages of the checkpoint in the OS page cache are not this process's memory; on the benchmark machine (far more
RAM than the folder) a second read of an expert comes from there, so load times here are the fast case.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clip_time import PROMPT, build_module, component_builders, index_fields, run_clip  # noqa: E402

from mova.config import PRESET_NAMES, get_preset  # noqa: E402
from mova.loading import QUANTIZED_SHARD_BYTES, save_pretrained  # noqa: E402
from mova.quantization import TEXT_ENCODER_KEEP, quantize_  # noqa: E402
from mova.settings import MEMORY_PROFILES, QUANTIZATIONS  # noqa: E402

DENOISER_PARTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")


class RssSampler:
    """Samples this process's ``VmRSS`` every ``period`` seconds on a thread; ``peak_gb`` the largest sample."""

    def __init__(self, period: float = 0.1) -> None:
        self.period, self.samples, self._stop = period, 0, threading.Event()
        self.peak_kb = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self.status("VmRSS"))
            self.samples += 1
            self._stop.wait(self.period)

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        return {"peak_rss_gb": round(self.peak_kb * 1024 / 1e9, 2),
                "vm_hwm_gb": round(self.status("VmHWM") * 1024 / 1e9, 2), "samples": self.samples,
                "period_s": self.period}


def write_folder(preset_name: str, fmt: str | None, folder: Path, device: torch.device) -> dict[str, Any]:
    """A full checkpoint folder of ``preset_name`` with random weights, one component at a time (each built on
    ``device``, its block weights quantised there to ``fmt``, saved, freed)."""
    from mova.scheduler import FlowMatchPairScheduler
    from mova.tiny import make_tokenizer

    preset = get_preset(preset_name)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    index = index_fields(preset, 512)
    seconds: dict[str, float] = {}
    for seed, (name, build) in enumerate(component_builders(preset).items()):
        t0 = time.perf_counter()
        module = build_module(build, device, dtype, seed)
        if fmt and name in DENOISER_PARTS:
            quantize_(module, fmt)
        # the denoiser parts as `mova quantize` writes them; the text encoder in the official three ~4 GB shards
        shard = 4 * 10**9 if name == "text_encoder" else QUANTIZED_SHARD_BYTES
        save_pretrained(folder, {name: module}, boundary_ratio=preset.boundary_ratio, extra_index=index,
                        max_shard_bytes=shard)
        index = json.loads((folder / "model_index.json").read_text())
        del module
        if device.type == "cuda":
            torch.cuda.empty_cache()
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"wrote {name} in {seconds[name]} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        extra = {"tokenizer": make_tokenizer(Path(tmp) / "tok"),
                 "scheduler": FlowMatchPairScheduler.from_config(preset.scheduler)}
        save_pretrained(folder, extra, boundary_ratio=preset.boundary_ratio, extra_index=index)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {"preset": preset_name, "format": fmt, "folder_gb": round(size / 1e9, 2), "write_s": seconds}


def run_profile(args: argparse.Namespace) -> dict[str, Any]:
    from mova.pipeline import MOVAPipeline

    device = torch.device(args.device)
    sampler = RssSampler(0.1).start()
    record: dict[str, Any] = {"memory": args.memory, "cap_gb": args.cap_gb, "folder": str(args.folder)}
    if device.type == "cuda":  # the allocator setting in effect: the user's, else the one the profile applies
        record["alloc_conf"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF") or MEMORY_PROFILES[args.memory]["cuda_alloc"]
    if device.type == "cuda" and args.cap_gb:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(args.cap_gb * 1e9 / total, device.index or 0)
        record["cap_fraction"] = round(args.cap_gb * 1e9 / total, 4)
    t0 = time.perf_counter()
    pipe = MOVAPipeline.from_pretrained(args.folder, device=device, memory=args.memory)
    record["load_s"] = round(time.perf_counter() - t0, 2)
    record["rss_after_load_gb"] = round(RssSampler.status("VmRSS") * 1024 / 1e9, 2)
    settings = pipe.model_info().resolve(pipe.settings(PROMPT, height=args.height or None, width=args.width or None,
                                                        num_frames=args.num_frames or None,
                                                        num_inference_steps=args.steps, seed=0))
    record.update(height=settings.height, width=settings.width, num_frames=settings.num_frames,
                  steps=settings.num_inference_steps, profile=MEMORY_PROFILES[args.memory])
    try:
        record.update(run_clip(pipe, settings, device), status="ok")
    except torch.OutOfMemoryError as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/mova/" in f.filename]
        record.update(status="oom", error=str(exc).splitlines()[0],
                      where=[f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames[-4:]])
    if pipe.lazy is not None:
        record["lazy_loads_s"] = pipe.lazy.loads
    if device.type == "cuda":
        record["peak_gpu_reserved_gb"] = round(torch.cuda.max_memory_reserved(device) / 1e9, 2)
        record["peak_gpu_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    record["host"] = sampler.stop()
    return record


@torch.no_grad()
def numerics(args: argparse.Namespace) -> dict[str, Any]:
    """One full-size text-CFG guided velocity (360p shapes, random weights) with each weight format against bf16."""
    from step_time import RESOLUTIONS, TEXT_LEN, build_denoiser

    from mova.guidance import Guidance, guided_velocity

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    preset = get_preset("mova-360p" if device.type == "cuda" else "tiny")
    den = build_denoiser(preset, device, dtype)
    h, w = RESOLUTIONS["360p" if device.type == "cuda" else "tiny"]
    t_lat = 49 if device.type == "cuda" else 3
    g = torch.Generator(device).manual_seed(0)
    c_a, d_t = den.audio_dit.config.in_dim, den.audio_dit.config.text_dim
    model_in = torch.randn(1, 36, t_lat, h // 8, w // 8, device=device, generator=g).to(dtype)
    z_a = torch.randn(1, c_a, 403 if device.type == "cuda" else 20, device=device, generator=g).to(dtype)
    text = torch.randn(1, TEXT_LEN, d_t, device=device, generator=g).to(dtype)
    neg = torch.randn(1, TEXT_LEN, d_t, device=device, generator=g).to(dtype)
    guidance = Guidance("text", 5.0)

    def velocity(model):
        return guided_velocity(model, guidance, model_in, z_a, text, neg, 950.0, 950.0, 24.0, expert=0,
                               sequential=True)

    ref = velocity(den)
    runs = {}
    for fmt in QUANTIZATIONS:
        q = copy.deepcopy(den)
        n = sum(quantize_(m, fmt) for m in [*q.experts, q.audio_dit, q.bridge])
        if device.type == "cuda":
            torch.cuda.synchronize()
        out = velocity(q)
        runs[fmt] = {"linears": n, **{f"rel_l2_vs_bf16_{k}": round(float((a.float() - b.float()).norm()
                                                                         / b.float().norm()), 5)
                                      for k, a, b in (("video", out[0], ref[0]), ("audio", out[1], ref[1]))}}
        if device.type == "cuda":
            runs[fmt]["weights_gb"] = round(sum(p.numel() * p.element_size() for m in [*q.experts, q.audio_dit,
                                                q.bridge] for p in m.parameters()) / 1e9, 2)
        print(fmt, runs[fmt], flush=True)
        del q, out
    return {"model": "one video expert + audio DiT + bridge, full size, random weights", "resolution": "360p",
            "reference": "bf16 weights, same inputs", "formats": runs, "text_encoder": "quantised linears except "
            + ", ".join(TEXT_ENCODER_KEEP) + " (not measured here)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write a full-size random checkpoint folder")
    w.add_argument("--preset", choices=PRESET_NAMES, default="mova-360p")
    w.add_argument("--format", choices=QUANTIZATIONS, default=None, help="block weight format (default bf16)")
    w.add_argument("--folder", type=Path, required=True)
    w.add_argument("--device", default="cuda")
    r = sub.add_parser("run", help="one clip under a GPU cap with host memory sampled")
    r.add_argument("--folder", type=Path, required=True)
    r.add_argument("--memory", choices=list(MEMORY_PROFILES), default="24gb")
    r.add_argument("--cap-gb", type=float, default=24.0, help="GPU memory cap in GB (0: none)")
    r.add_argument("--height", type=int, default=0)
    r.add_argument("--width", type=int, default=0)
    r.add_argument("--num-frames", type=int, default=0)
    r.add_argument("--steps", type=int, default=50)
    r.add_argument("--device", default="cuda")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--append", action="store_true")
    n = sub.add_parser("numerics", help="relative L2 of each weight format against bf16, one full-size forward")
    n.add_argument("--device", default="cuda")
    n.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    env = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() and args.device == "cuda" else
           platform.processor() or "cpu", "torch": torch.__version__, "cuda": torch.version.cuda,
           "command": "python benchmarks/memory_profile.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.command == "write":
        args.folder.mkdir(parents=True, exist_ok=True)
        print(json.dumps({**env, **write_folder(args.preset, args.format, args.folder, torch.device(args.device))}))
        return 0
    if args.command == "numerics":
        result = {"benchmark": "quantization_numerics", **env, **numerics(args)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    results: dict[str, Any] = {"benchmark": "memory_profile", **env, "runs": []}
    if args.append and args.out.exists():
        results = json.loads(args.out.read_text())
    record = run_profile(args)
    results["runs"].append({"command": env["command"], **record})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(record, indent=2), flush=True)
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
