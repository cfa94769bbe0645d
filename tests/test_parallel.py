"""Multi-process inference on CPU (gloo): sequence and CFG parallelism give the single-process velocities."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.test_app_support import free_port


def build(video_heads: int):
    from mova.config import tiny_preset
    from mova.models import AudioDiT, DualTowerBridge, DualTowerDenoiser, VideoDiT

    torch.manual_seed(0)
    p = tiny_preset(video_dim=16 * video_heads, video_heads=video_heads)
    den = DualTowerDenoiser(VideoDiT(**p.video_dit), AudioDiT(**p.audio_dit), DualTowerBridge(**p.bridge)).eval()
    for q in den.parameters():
        torch.nn.init.normal_(q, std=0.2)
    return den


def worker(rank: int, world: int, port: int, sp: int, cfg: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from mova.guidance import Guidance, guided_velocity
    from mova.parallel import init_parallel, parallelize

    state = init_parallel(sp=sp, cfg=cfg, device=torch.device("cpu"))
    errors = {}
    for video_heads in (3, 4):  # 3 heads: keys/values gathered; 4 heads: Ulysses all-to-all
        den = build(video_heads)
        g = torch.Generator().manual_seed(1)
        # 3×3×5 = 45 video tokens and 21 audio tokens: neither divides by 2
        video = torch.randn(1, 36, 3, 6, 10, generator=g)
        audio = torch.randn(1, 8, 21, generator=g)
        text, neg = torch.randn(1, 12, 32, generator=g), torch.randn(1, 12, 32, generator=g)
        guidance = Guidance("dual", text_scale=3.0, bridge_scale=2.0)
        with torch.no_grad():
            ref = guided_velocity(den, guidance, video, audio, text, neg, 500.0, 300.0, 24.0)
            model, runner = parallelize(den, state)
            out = guided_velocity(model, guidance, video, audio, text, neg, 500.0, 300.0, 24.0, runner=runner)
        errors[video_heads] = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(out, ref))
    queue.put((rank, errors))
    dist.destroy_process_group()


@pytest.mark.parametrize("sp, cfg", [(2, 1), (1, 2), (2, 2)])
def test_parallel_matches_single_process(sp, cfg):
    world = sp * cfg
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(worker, args=(world, free_port(), sp, cfg, queue), nprocs=world, join=True,
                       start_method="spawn")
    results = dict(queue.get() for _ in range(world))
    assert sorted(results) == list(range(world))
    for rank, errors in results.items():
        for heads, err in errors.items():
            assert err < 1e-5, (rank, heads, err)


def test_torchrun_generate_matches_single_process(tiny_checkpoint, tmp_path):
    """`torchrun --nproc-per-node 2 -m mova generate --sp 2` writes the clip one process writes."""
    import subprocess
    import sys

    from mova.media import read_mp4

    common = ["--model", str(tiny_checkpoint), "--prompt", "a bell rings twice", "--height", "64", "--width", "64",
              "--num-frames", "9", "--fps", "12", "--steps", "2", "--seed", "5", "--no-loudness", "--wav"]
    single = [sys.executable, "-m", "mova", "generate", *common, str(tmp_path / "one.wav"), "--out",
              str(tmp_path / "one.mp4")]
    multi = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
             str(free_port()), "-m", "mova", "generate", *common, str(tmp_path / "two.wav"), "--out",
             str(tmp_path / "two.mp4"), "--sp", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(single, check=True, capture_output=True, env=env)
    run = subprocess.run(multi, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    import soundfile as sf

    a, _ = sf.read(tmp_path / "one.wav")
    b, _ = sf.read(tmp_path / "two.wav")
    assert abs(a - b).max() < 2e-3  # 16-bit PCM of the same float audio, up to float reduction order
    va, vb = read_mp4(tmp_path / "one.mp4").video, read_mp4(tmp_path / "two.mp4").video
    assert va.shape == vb.shape and abs(va.astype(int) - vb.astype(int)).mean() < 1.0


def test_the_denoiser_is_unchanged_by_parallelism():
    """Parallel code stays out of the model: no import of mova.parallel in mova/models, none of mova.models in
    mova/parallel or mova/guidance, and the denoiser's forward is its three stages."""
    import inspect
    import re
    from pathlib import Path

    from mova.models import DualTowerDenoiser

    root = Path(__file__).resolve().parent.parent / "mova"
    for path in (root / "models").glob("*.py"):
        assert "parallel" not in path.read_text(), path
    for name in ("parallel.py", "guidance.py"):
        assert not re.search(r"^\s*(from|import) mova\.models", (root / name).read_text(), re.M), name
    body = inspect.getsource(DualTowerDenoiser.forward)
    assert "shard" not in body and "gather" not in body and "run_layers" in body
