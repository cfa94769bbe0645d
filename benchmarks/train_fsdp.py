"""FSDP2 on several GPUs vs one GPU: the same small MOVA-architecture model trained for a few steps, losses compared
within bf16 tolerance, step time and memory recorded (issue 4, "must be true" 5).

    python benchmarks/train_fsdp.py --gpus 2 --steps 20            # on a machine with ≥ 2 GPUs
    → benchmarks/results/train_fsdp_<gpu>x<n>.json

What runs (each a ``python -m train run`` / ``accelerate launch -m train run`` subprocess, bf16):

1. a random "small" checkpoint in the official layout (video DiT 768-d × 8 layers per expert, audio DiT 256-d × 6,
   full bridge; tiny VAEs and text encoder) and 16 demo-world clips at 128×128, 25 frames, cached on GPU 0;
2. ``single``: one GPU, global batch 2, autocast bf16 (fp32 master weights);
3. ``fsdp1``: one GPU under FSDP2 (bf16 parameters, fp32 reduction) — the same numerics as the sharded run;
4. ``fsdp<n>``: n GPUs, FSDP2, batch 1 per GPU (global batch n; the noise/timestep draws are those of the single
   runs when n = 2, since every rank draws the global batch from the shared generator).

The n-GPU losses are compared with ``fsdp1`` (same mixed-precision scheme: differences come from reduction order
only) and with ``single`` (different bf16 scheme); tolerances are written next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "train" / "configs" / "demo_tiny.yaml"
GEOMETRY = dict(num_frames=25, fps=12.0, height=128, width=128)
CPU_GEOMETRY = dict(num_frames=9, fps=12.0, height=64, width=64)  # --cpu smoke test
TOL_SAME_SCHEME = 1e-2  # |Δloss| / loss, FSDP n GPUs vs FSDP 1 GPU
TOL_OTHER_SCHEME = 5e-2  # vs autocast single GPU


def make_assets(work: Path, cpu: bool) -> tuple[Path, Path]:
    from mova.config import tiny_preset
    from mova.tiny import make_tiny_checkpoint
    from train.cache import CacheSpec, build_cache
    from train.demo_world import WorldConfig, generate_dataset

    ckpt, cache = work / "ckpt", work / "cache"
    if not (ckpt / "model_index.json").is_file():
        preset = tiny_preset() if cpu else tiny_preset(video_dim=768, video_heads=6, video_layers=8, audio_dim=256,
                                                       audio_heads=2, audio_layers=6, text_dim=256, head_dim=128)
        make_tiny_checkpoint(ckpt, preset=preset, seed=0)
    if not (cache / "meta.json").is_file():
        g = CPU_GEOMETRY if cpu else GEOMETRY
        manifest = generate_dataset(work / "clips", n=16, seed=0, config=WorldConfig(
            width=g["width"], height=g["height"], num_frames=max(g["num_frames"], 25), fps=g["fps"]))
        build_cache(manifest, ckpt, cache, CacheSpec(**g, max_sequence_length=512), device="cpu" if cpu else "cuda:0",
                    progress=False)
    return ckpt, cache


def overrides(ckpt: Path, steps: int, batch: int, strategy: str, cpu: bool) -> list[str]:
    sets = [f"model.base={ckpt}", f"steps={steps}", f"data.batch_size={batch}", f"parallel.strategy={strategy}",
            f"parallel.mixed_precision={'fp32' if cpu else 'bf16'}", "parallel.activation_checkpointing=true",
            "checkpoint.every=0",
            "checkpoint.export=final", "log.every=1", "log.batches=false", "log.progress=false",
            "optim.lr={video_dit: 1.0e-4, video_dit_2: 1.0e-4, audio_dit: 1.0e-4, dual_tower_bridge: 2.0e-4}",
            *(f"data.{k}={v}" for k, v in (CPU_GEOMETRY if cpu else GEOMETRY).items())]
    return [x for s in sets for x in ("--set", s)]


def train(name: str, cmd: list[str], out: Path, env: dict[str, str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{name} failed (exit {proc.returncode}): {' '.join(cmd)}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    times = [r["step_time_s"] for r in rows[2:]] or [r["step_time_s"] for r in rows]
    return {"command": " ".join(cmd), "wall_s": round(wall, 1), "losses": [r["loss"] for r in rows],
            "grad_norms": [r.get("grad_norm") for r in rows], "median_step_s": statistics.median(times),
            "samples_per_s": statistics.median(r["samples_per_s"] for r in rows[2:] or rows),
            "max_memory_gb": max(r.get("max_memory_gb", 0.0) for r in rows)}


def compare(a: list[float], b: list[float]) -> dict:
    diffs = [abs(x - y) for x, y in zip(a, b)]
    rel = [d / max(abs(y), 1e-12) for d, y in zip(diffs, b)]
    return {"max_abs": max(diffs), "max_rel": max(rel), "mean_rel": sum(rel) / len(rel)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--work", default="/tmp/mova_train_fsdp")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/train_fsdp_<gpu>x<n>.json)")
    parser.add_argument("--cpu", action="store_true",
                        help="smoke test of this script without GPUs: tiny model, fp32, gloo processes (no JSON kept "
                             "unless --out is given)")
    args = parser.parse_args()

    import torch

    if not args.cpu and torch.cuda.device_count() < args.gpus:
        raise SystemExit(f"needs {args.gpus} GPUs, found {torch.cuda.device_count()} (--cpu for a smoke test)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt, cache = make_assets(work, args.cpu)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    one_gpu = dict(env, CUDA_VISIBLE_DEVICES="0") if not args.cpu else env
    run = [sys.executable, "-m", "train", "run", str(CONFIG), "--data", str(cache)]
    if args.cpu:  # accelerate launch --cpu starts one process; torchrun starts gloo ranks the trainer picks up
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.gpus)]
    else:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(args.gpus), "--multi_gpu",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["-m", "train", "run", str(CONFIG), "--data", str(cache)]
    global_batch = args.gpus
    results = {}
    for name, cmd, batch, strategy, e in (
        ("single", run, global_batch, "single", one_gpu),
        ("fsdp1", run, global_batch, "fsdp", one_gpu),
        (f"fsdp{args.gpus}", launch, 1, "fsdp", env),
    ):
        out = work / "runs" / name
        if out.exists():
            import shutil

            shutil.rmtree(out)
        cmd = [*cmd, "--out", str(out), *overrides(ckpt, args.steps, batch, strategy, args.cpu)]
        results[name] = train(name, cmd, out, e)
        print(f"{name}: median step {results[name]['median_step_s']:.3f} s, "
              f"max memory {results[name]['max_memory_gb']:.2f} GB, last loss {results[name]['losses'][-1]:.4f}")

    sharded = results[f"fsdp{args.gpus}"]["losses"]
    same = compare(sharded, results["fsdp1"]["losses"])
    other = compare(sharded, results["single"]["losses"])
    gpu = "cpu" if args.cpu else torch.cuda.get_device_name(0)
    report = {
        "benchmark": "train_fsdp", "device": gpu, "gpus": args.gpus, "torch": torch.__version__,
        "steps": args.steps, "geometry": CPU_GEOMETRY if args.cpu else GEOMETRY,
        "model": "small (video 768-d × 8 layers × 2 experts, audio 256-d × 6)",
        "runs": results,
        f"fsdp{args.gpus}_vs_fsdp1": {**same, "tolerance_rel": TOL_SAME_SCHEME,
                                      "ok": same["max_rel"] <= TOL_SAME_SCHEME},
        f"fsdp{args.gpus}_vs_single": {**other, "tolerance_rel": TOL_OTHER_SCHEME,
                                       "ok": other["max_rel"] <= TOL_OTHER_SCHEME},
    }
    slug = gpu.split()[-1].lower() if gpu else "gpu"
    path = Path(args.out) if args.out else (work / "train_fsdp_cpu.json" if args.cpu else
                                            ROOT / "benchmarks" / "results" / f"train_fsdp_{slug}x{args.gpus}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    print(f"wrote {path}")
    return 0 if report[f"fsdp{args.gpus}_vs_fsdp1"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
