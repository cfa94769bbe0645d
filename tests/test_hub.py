"""Checkpoints by Hugging Face Hub repo id, offline from a pre-populated HF cache (no network in tests)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from huggingface_hub import constants

from mova import MOVAPipeline
from mova.hub import DEMO_DIR, checkpoint_patterns, resolve_checkpoint
from tests.hub_fixtures import make_hf_cache

SMALL = dict(num_inference_steps=2, seed=4, loudness_lufs=None)


@pytest.fixture()
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_repo_id_loads_from_the_cache_and_generates_the_same_clip(offline_cache):
    make_hf_cache(DEMO_DIR, offline_cache, "mova-test/demo")
    pipe = MOVAPipeline.from_pretrained("mova-test/demo", torch_dtype="fp32")
    assert pipe.model_info().name == "demo"  # the repo's name
    clip = pipe("A small red ball bounces on a wooden floor.", **SMALL)
    reference = MOVAPipeline.from_pretrained("demo", torch_dtype="fp32")("A small red ball bounces on a wooden floor.",
                                                                          **SMALL)
    assert np.array_equal(clip.video, reference.video) and np.array_equal(clip.audio, reference.audio)


def test_missing_repo_and_missing_files_are_named(offline_cache):
    with pytest.raises(ValueError, match=r"mova-test/absent is not in the Hugging Face cache .*hf download"):
        MOVAPipeline.from_pretrained("mova-test/absent")
    snapshot = make_hf_cache(DEMO_DIR, offline_cache, "mova-test/partial")
    shutil.rmtree(snapshot / "audio_dit")
    with pytest.raises(ValueError, match=r"audio_dit.* is missing"):
        MOVAPipeline.from_pretrained("mova-test/partial")
    with pytest.raises(ValueError, match=r"partial \(revision 'v2'\) is not in the Hugging Face cache"):
        resolve_checkpoint("mova-test/partial", revision="v2")


def test_patterns_fetch_only_what_the_pipeline_reads():
    both, low = checkpoint_patterns(), checkpoint_patterns(high_noise_expert=False)
    assert "video_dit/*.safetensors" in both and not any(p.startswith("video_dit/") for p in low)
    assert "video_dit_2/*.safetensors" in low and not any(p.endswith((".bin", ".pt", "*")) and "tokenizer" not in p
                                                          for p in both)


def test_low_noise_expert_alone(tiny_checkpoint, tmp_path):
    import json

    pipe = MOVAPipeline.from_pretrained(tiny_checkpoint, torch_dtype="fp32", high_noise_expert=False)
    assert pipe.denoiser.video_dit_2 is None and "video_dit_2" not in pipe.components
    result = pipe("a bell rings", height=64, width=64, num_frames=9, fps=12.0, **SMALL)
    assert result.video.shape == (9, 64, 64, 3)
    single = tmp_path / "single"
    shutil.copytree(tiny_checkpoint, single, ignore=shutil.ignore_patterns("video_dit_2"))
    index = json.loads((single / "model_index.json").read_text())
    del index["video_dit_2"]
    (single / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="needs a checkpoint with two experts"):
        MOVAPipeline.from_pretrained(single, high_noise_expert=False)
