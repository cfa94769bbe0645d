"""Ahead-of-time compilation of the repeated blocks (mova/backends/aot.py) on the CPU: the ZeroGPU backend falls back
to eager with the reason logged, the block calls of one step are recorded and grouped, and a compiled block runs its
graph only for the signature it was compiled for (a stand-in graph here: inductor's AoT needs the GPU run)."""

from __future__ import annotations

import logging

import pytest
import torch

from mova import GenerationSettings
from mova.backends import aot
from tests.test_app_support import FAST, app_checkpoint


@pytest.fixture(scope="module")
def pipeline(tiny_checkpoint, tmp_path_factory):
    from mova import MOVAPipeline

    return MOVAPipeline.from_pretrained(app_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("aot")), device="cpu")


def test_zerogpu_backend_falls_back_to_eager_on_the_cpu_and_says_why(pipeline, tmp_path, caplog):
    from mova.backends.zerogpu import ZeroGPUBackend

    with caplog.at_level(logging.INFO, logger="mova.backends.aot"):
        backend = ZeroGPUBackend(pipeline=pipeline, data_dir=tmp_path / "data", aot=True)
    assert backend.aot is not None and not backend.aot.compiled and "no CUDA device" in backend.aot.reason
    assert "AoT compile skipped, the denoiser runs eager: no CUDA device" in caplog.text
    assert not any(isinstance(b.forward, aot.AotBlockForward) for b in aot.repeated_blocks(pipeline).values())
    clip = backend.generate(GenerationSettings(prompt="rain", seed=1, **FAST))
    assert clip.num_frames == 9
    assert ZeroGPUBackend(pipeline=pipeline, data_dir=tmp_path / "data").aot is None  # off unless on ZeroGPU


def test_aot_can_be_turned_off_and_other_reasons_are_named(pipeline, monkeypatch):
    assert "MOVA_AOT=0 turns it off" in aot.why_not(pipeline, env={"MOVA_AOT": "0"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(pipeline, "device", torch.device("cuda"))
    monkeypatch.setattr(pipeline, "offload", "model")
    assert "offload='model'" in aot.why_not(pipeline, env={})


def test_one_step_records_every_block_call_and_groups_them_by_class_and_shape(pipeline):
    blocks = aot.repeated_blocks(pipeline)
    kinds = {type(b).__name__ for b in blocks.values()}
    assert kinds == {"DiTBlock", "ConditionerBlock"}
    settings = pipeline.model_info().resolve(GenerationSettings(prompt="rain", seed=1, **FAST))
    calls, examples = aot.record_block_calls(pipeline, settings, blocks)
    assert not any(isinstance(b.forward, type(aot.record_block_calls)) for b in blocks.values())  # restored
    reached = {path for path, signatures in calls.items() if signatures}
    assert {p for p in blocks if p.startswith(("video_dit.", "audio_dit."))} <= reached
    assert not {p for p in reached if p.startswith("video_dit_2.")}  # the low-noise expert is not in step 1
    groups, eager = aot.plan_groups(blocks, calls)
    grouped = [p for paths in groups.values() for p in paths]
    assert sorted(grouped + eager) == sorted(blocks) and len(set(grouped)) == len(grouped)
    (video_key,) = [key for key, paths in groups.items() if paths[0].startswith("video_dit.")]
    assert {p for p in groups[video_key] if p.startswith("video_dit_2.")} == \
        {p for p in blocks if p.startswith("video_dit_2.")}  # the second expert shares the first's graph
    assert set(groups) <= set(examples)  # every group has an example call to export
    for (kind, signature), (args, kwargs) in examples.items():
        assert aot.call_signature(args, kwargs) == signature


def test_a_compiled_block_runs_its_graph_only_for_its_signature():
    block = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    loads = []

    def loader(archive: bytes, module: torch.nn.Module):
        loads.append(archive)
        return lambda inp: torch.full((inp.shape[0], 3), 7.0)  # a stand-in for the compiled package

    forward = aot.AotBlockForward(block, block.forward, b"package", aot.call_signature((x,), {}), loader=loader)
    block.forward = forward
    assert torch.equal(block(x), torch.full((2, 3), 7.0)) and torch.equal(block(x + 1), torch.full((2, 3), 7.0))
    assert loads == [b"package"]  # loaded once per process
    other = torch.randn(5, 4)
    assert torch.allclose(block(other), torch.nn.functional.linear(other, block.weight, block.bias))  # eager
    assert (forward.compiled_calls, forward.eager_calls) == (2, 1)
    assert aot.call_signature((x.double(),), {}) != forward.signature  # another dtype goes eager too
    assert aot.call_signature((x, (1, 2)), {}) != aot.call_signature((x, (1, 3)), {})  # and other constants
