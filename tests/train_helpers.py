"""Shared, built-once data for the ``tests/test_train_*.py`` files: a demo-world dataset (12 clips, 64×64, H.264 +
AAC at 16 kHz) and its latent cache at the tiny checkpoint's geometry (9 frames at 12 fps; audio resampled to the
tiny DAC's 48 kHz). Built under pytest's session temp folder the first time a test module asks for it. Test modules
import ``one_torch_thread`` (an autouse fixture) from here."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The train tests run with one intra-op thread: their ops are tiny, and on a 2-core machine shared with other
    work two spinning OpenMP threads stall whenever a core is taken (a 256×256 matmul measured 50× slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


DEMO_OVERRIDES = ["steps=30", "checkpoint.every=10", "checkpoint.keep_latest=2", "data.batch_size=4"]
GEOMETRY = dict(num_frames=9, fps=12.0, height=64, width=64)


@functools.cache
def demo_dataset(root: str) -> Path:
    from train.demo_world import generate_dataset

    return generate_dataset(Path(root) / "demo_world", n=12, seed=0)


@functools.cache
def demo_cache(root: str, checkpoint: str) -> Path:
    from train.cache import CacheSpec, build_cache

    out = Path(root) / "demo_cache"
    build_cache(demo_dataset(root), checkpoint, out, CacheSpec(**GEOMETRY, shard_size=5), progress=False)
    return out


def tiny_config(checkpoint: str | Path, *overrides: str):
    """demo_tiny.yaml on the tiny checkpoint, with overrides."""
    from train.config import TrainConfig
    from train.yaml_config import load_config

    root = Path(__file__).resolve().parent.parent
    return load_config(TrainConfig, root / "train" / "configs" / "demo_tiny.yaml",
                       [f"model.base={checkpoint}", *overrides])


def distributed_worker(rank: int, world: int, port: int, checkpoint: str, cache: str,
                       runs: list[tuple[str, list[str]]], queue) -> None:
    """One rank of CPU (gloo) multi-process runs, started with torch.multiprocessing (spawn): the environment
    ``torchrun`` would set, then the ordinary trainer, once per (out, overrides) in ``runs`` (one process
    group for all). Rank 0 puts the list of each run's losses on ``queue``."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)  # one core per rank (torch was imported before OMP_NUM_THREADS was set)
    from train.trainer import run

    results = [run(tiny_config(checkpoint, *overrides), cache, out) for out, overrides in runs]
    if rank == 0:
        queue.put(results)


def run_distributed(world: int, checkpoint, cache, runs: list[tuple[str, list[str]]],
                    timeout_s: float = 300.0) -> list[list[float]]:
    """Trainer runs on ``world`` CPU processes; rank 0's losses per run. Fails (killing the ranks) after
    ``timeout_s``."""
    import socket
    import time

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = mp.start_processes(distributed_worker, nprocs=world, join=False, start_method="spawn",
                               args=(world, port, str(checkpoint), str(cache), [(str(o), list(v)) for o, v in runs],
                                     queue))
    deadline = time.monotonic() + timeout_s
    try:
        while not procs.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{world}-process runs did not finish in {timeout_s} s")
    finally:
        for p in procs.processes:
            if p.is_alive():
                p.kill()
    return queue.get()
