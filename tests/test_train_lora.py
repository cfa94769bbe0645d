"""LoRA: fresh adapters change nothing, trained ones change the outputs, merged == unmerged, the adapter files load
into MOVAPipeline through mova.lora (with a scale), and the low-memory recipe (FSDP2 CPU offload of the frozen
weights + 8-bit AdamW + activation checkpointing) trains and resumes exactly."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mova.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, load_lora, read_lora, save_lora
from train.trainer import run
from train_helpers import demo_cache, one_torch_thread, tiny_config  # noqa: F401 (autouse fixture)

LORA = ["lora.enabled=true", "model.reinit=[]", "optim.lr=1.0e-2", "lora.rank=4", "lora.alpha=8.0",
        "checkpoint.every=0", "log.batches=false"]
SMALL = dict(height=64, width=64, num_frames=9, fps=12.0, num_inference_steps=2, seed=5, output_type="latent")


def _denoiser_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 36, 3, 8, 8, generator=g), torch.randn(2, 8, 38, generator=g),
            torch.randn(2, 512, 32, generator=g), torch.tensor([950.0, 920.0]), torch.tensor([300.0, 700.0]), 12.0)


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_checkpoint):
    cache = demo_cache(str(tmp_path_factory.getbasetemp()), str(tiny_checkpoint))
    out = tmp_path_factory.mktemp("lora") / "run"
    run(tiny_config(tiny_checkpoint, *LORA, "steps=6", "lora.export_merged=true"), cache, out)
    return out / "final"


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    from mova import MOVAPipeline

    return MOVAPipeline.from_pretrained(tiny_checkpoint, device="cpu")


def test_fresh_adapters_leave_outputs_unchanged(tiny_checkpoint):
    from mova.loading import load_components
    from mova.models import DualTowerDenoiser
    from train.config import LoRAConfig
    from train.lora import apply_lora, lora_spec

    c = load_components(tiny_checkpoint, names=["video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"])
    parts = {k: c[k] for k in ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")}
    model = DualTowerDenoiser(parts["video_dit"], parts["audio_dit"], parts["dual_tower_bridge"], parts["video_dit_2"])
    inputs = _denoiser_inputs()
    with torch.no_grad():
        before = model(*inputs, expert=0)
    n = apply_lora(parts, lora_spec(LoRAConfig(rank=4, alpha=8.0), list(parts)))
    # q/k/v/o of self- and text attention in every DiT block, and of both bridge directions per layer
    assert n == 8 * (3 + 3 + 2) + 4 * 2 * 2
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in k for k in trainable)
    with torch.no_grad():
        after = model(*inputs, expert=0)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_adapter_files(adapter):
    assert (adapter / ADAPTER_WEIGHTS).is_file() and (adapter / ADAPTER_CONFIG).is_file()
    spec, state = read_lora(adapter)
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    assert (spec.rank, spec.alpha, config["format"]) == (4, 8.0, "mova-lora")
    assert set(spec.components) == {"video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"}
    assert "video_dit.blocks.0.self_attn.q.lora_A.weight" in state
    assert "dual_tower_bridge.audio_to_video_conditioners.0.inner.o.lora_B.weight" in state
    assert any(v.abs().max() > 0 for k, v in state.items() if "lora_B" in k)  # trained away from zero


def test_adapter_loads_into_the_pipeline(adapter, pipe):
    base = pipe("a red ball", **SMALL)
    lora = load_lora(pipe, adapter, scale=1.0)
    try:
        tuned = pipe("a red ball", **SMALL)
        assert _max_diff(base, tuned) > 1e-3  # the trained adapter changes the outputs
        lora.set_scale(0.0)
        assert _max_diff(base, pipe("a red ball", **SMALL)) == 0.0
        lora.set_scale(1.0)
        lora.merge()
        assert lora.merged
        merged = pipe("a red ball", **SMALL)
        assert _max_diff(tuned, merged) < 1e-5  # merged == unmerged
        lora.unmerge()
        assert _max_diff(tuned, pipe("a red ball", **SMALL)) < 1e-5
    finally:
        lora.unload()
    assert not any(".lora_" in k for k in pipe.components["video_dit"].state_dict())


def test_merged_export_equals_the_loaded_adapter(adapter, pipe):
    from mova import MOVAPipeline

    merged = MOVAPipeline.from_pretrained(adapter / "merged", device="cpu")("a red ball", **SMALL)
    lora = load_lora(pipe, adapter)
    try:
        assert _max_diff(merged, pipe("a red ball", **SMALL)) < 1e-5
    finally:
        lora.unload()


def test_load_lora_is_strict(adapter, pipe, tmp_path):
    spec, state = read_lora(adapter)
    bad = dict(state)
    key = next(k for k in bad if k.endswith("lora_A.weight"))
    bad[key] = torch.zeros(bad[key].shape[0] + 1, bad[key].shape[1])
    save_lora(tmp_path / "bad", bad, spec)
    with pytest.raises(ValueError, match="does not fit"):
        load_lora(pipe, tmp_path / "bad")
    assert not any(".lora_" in k for k in pipe.components["video_dit"].state_dict())  # rolled back
    with pytest.raises(ValueError, match="not found"):
        load_lora(pipe, tmp_path / "nothing")


def test_low_memory_recipe_trains_and_resumes(tmp_path, tmp_path_factory, tiny_checkpoint):
    cache = demo_cache(str(tmp_path_factory.getbasetemp()), str(tiny_checkpoint))
    low = [*LORA, "optim.optimizer=adamw8bit", "parallel.strategy=fsdp", "parallel.cpu_offload=true",
           "parallel.activation_checkpointing=true", "steps=4", "checkpoint.every=2", "checkpoint.export=never"]
    losses = run(tiny_config(tiny_checkpoint, *low), cache, tmp_path / "a")
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step-0000002", tmp_path / "b" / "checkpoints" / "step-0000002")
    shutil.copy(tmp_path / "a" / "config.yaml", tmp_path / "b" / "config.yaml")
    resumed = run(tiny_config(tiny_checkpoint, *low), cache, tmp_path / "b", resume=True)
    assert resumed == losses[2:]
    assert not torch.distributed.is_initialized()  # the trainer's one-process group is closed again
