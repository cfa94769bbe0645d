"""The Space's ahead-of-time compile (``mova.backends.aot``) on a CUDA GPU with the ``spaces`` package, outside
Hugging Face, on the demo model:

    python benchmarks/aot_check.py --out benchmarks/results/aot_check_h200.json

1. ``ZeroGPUBackend(model="demo", aot=True)`` on CUDA. Off a Space ``spaces``' ``Config.zero_gpu`` is False, so
   ``spaces.GPU`` is inert and the recording and compiling run in this process (on a Space: one GPU task at
   start-up); each package is checked in a fresh process (``aot.verify_archives``). Records the ``AotReport``
   (with any package that failed its check) and the compile time.
2. The Space's default request (the backend's resolved defaults) through the backend's GPU call: how many block
   calls ran the compiled graphs and how many ran eager, and the clip against the same request with every block's
   eager forward (same seed): largest pixel difference and relative L2 of video and audio.
3. A shorter clip: every block runs its eager forward (the graphs are specialised to the default's shapes).

What this cannot exercise off Hugging Face: ZeroGPU's forked GPU worker and its device attach, the start-up GPU
task's grant (``COMPILE_TASK_S``) and a MIG slice. The attention backend is the Space's (cuDNN SDPA; FA3 is not in
requirements.txt) unless ``--attention`` says otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rel_l2(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--attention", default="cudnn", help="MOVA_ATTENTION for the run (the Space's: cudnn)")
    parser.add_argument("--packagings", nargs="+", choices=("spaces", "inductor"), default=None,
                        help="the AoT packagings to try, in turn (default: aot.PACKAGINGS, spaces' first)")
    args = parser.parse_args(argv)
    os.environ["MOVA_ATTENTION"] = args.attention
    import spaces  # noqa: F401 - before torch touches CUDA, as on a Space
    import torch
    from spaces.config import Config

    from mova import GenerationSettings
    from mova.backends import aot
    from mova.backends.zerogpu import ZeroGPUBackend

    if args.packagings:
        aot.PACKAGINGS = tuple(args.packagings)
    if not torch.cuda.is_available():
        print("aot_check.py needs a CUDA GPU (on the CPU the backend stays eager: tests/test_aot.py)", file=sys.stderr)
        return 2
    record: dict = {"benchmark": "aot_check", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "spaces": version("spaces"),
                    "zero_gpu": bool(Config.zero_gpu), "model": args.model, "attention": args.attention,
                    "packagings": list(aot.PACKAGINGS)}
    t0 = time.perf_counter()
    backend = ZeroGPUBackend(args.model, device="cuda", data_dir=Path("/tmp/aot_check_data"), aot=True)
    record["backend_build_s"] = round(time.perf_counter() - t0, 2)
    record["aot"] = dataclasses.asdict(backend.aot)
    print("AoT:", record["aot"], flush=True)
    pipe = backend.pipeline
    blocks = aot.repeated_blocks(pipe)
    forwards = {path: b.forward for path, b in blocks.items() if isinstance(b.forward, aot.AotBlockForward)}
    settings = backend.model_info().resolve(GenerationSettings(prompt="a red ball bounces twice on a wooden floor",
                                                               seed=3))
    record["request"] = dict(height=settings.height, width=settings.width, num_frames=settings.num_frames,
                             steps=settings.num_inference_steps)

    def counts() -> tuple[int, int]:
        return sum(f.compiled_calls for f in forwards.values()), sum(f.eager_calls for f in forwards.values())

    def clip(s: GenerationSettings):
        torch.cuda.synchronize()
        t = time.perf_counter()
        result = backend._run(s, None)  # the backend's GPU call (spaces.GPU-wrapped), before the mp4 is written
        torch.cuda.synchronize()
        return result, time.perf_counter() - t

    clip(settings)  # first call: packages loaded
    before = counts()
    compiled, compiled_s = clip(settings)
    after = counts()
    for path, f in forwards.items():  # the same request with every block's eager forward
        blocks[path].forward = f.eager
    eager, eager_s = clip(settings)
    for path, f in forwards.items():
        blocks[path].forward = f
    record["default_request"] = {
        "compiled_block_calls": after[0] - before[0], "eager_block_calls": after[1] - before[1],
        "clip_s_compiled": round(compiled_s, 3), "clip_s_eager": round(eager_s, 3),
        "video_max_abs_diff": int(abs(compiled.video.astype(int) - eager.video.astype(int)).max()),
        "video_rel_l2": rel_l2(compiled.video, eager.video), "audio_rel_l2": rel_l2(compiled.audio, eager.audio),
        "video_shape": list(compiled.video.shape)}
    other = settings.replace(num_frames=settings.num_frames - 8)  # the default is the longest clip a Space makes
    before = counts()
    result, _ = clip(other)
    after = counts()
    record["other_length"] = {"num_frames": result.video.shape[0], "compiled_block_calls": after[0] - before[0],
                              "eager_block_calls": after[1] - before[1]}

    d = record["default_request"]
    record["passed"] = bool(record["aot"]["compiled"] and d["eager_block_calls"] == 0 and d["compiled_block_calls"] > 0
                            and record["other_length"]["compiled_block_calls"] == 0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
