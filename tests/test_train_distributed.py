"""Multi-process training on CPU (gloo, 2 processes started like ``torchrun``): FSDP2 — every DiT block
and bridge conditioner sharded, then the root — and DDP give the single-process losses, because every rank draws
the global batch's noise/timesteps from the shared generator and takes its slice. The exports (FSDP2: full state
dict gathered on rank 0) load strictly and equal the single-process export."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from train.trainer import run
from train_helpers import demo_cache, one_torch_thread, run_distributed, tiny_config  # noqa: F401 (autouse fixture)

STEPS = ["steps=5", "checkpoint.every=0", "log.batches=false", "parallel.activation_checkpointing=true"]
STRATEGIES = ("fsdp", "ddp")


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, tmp_path_factory, tiny_checkpoint):
    cache = demo_cache(str(tmp_path_factory.getbasetemp()), str(tiny_checkpoint))
    single = run(tiny_config(tiny_checkpoint, *STEPS, "data.batch_size=2"), cache, tmp_path / "single")
    runs = [(tmp_path / s, [*STEPS, "data.batch_size=1", f"parallel.strategy={s}"]) for s in STRATEGIES]
    results = run_distributed(2, tiny_checkpoint, cache, runs)
    for strategy, losses in zip(STRATEGIES, results):
        assert losses == pytest.approx(single, abs=1e-5, rel=1e-5), strategy
        for component in ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"):
            a = load_file(tmp_path / "single" / "final" / component / "diffusion_pytorch_model.safetensors")
            b = load_file(tmp_path / strategy / "final" / component / "diffusion_pytorch_model.safetensors")
            assert a.keys() == b.keys()
            for k in a:
                torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{strategy} {component}.{k}")
