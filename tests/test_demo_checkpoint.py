"""The shipped demo checkpoint (assets/demo): official layout loaded strictly by the same loader as the released
checkpoints, within its size budget, and a 2-second clip from text alone and from a first frame on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mova.hub import DEMO_DIR

COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "audio_vae", "video_vae",
              "text_encoder", "tokenizer", "scheduler")


@pytest.fixture(scope="module")
def pipe():
    from mova import MOVAPipeline

    return MOVAPipeline.from_pretrained("demo", device="cpu", torch_dtype="fp32")


def test_layout_size_and_strict_keys():
    from mova.loading import checkpoint_tensors, compare_keys, load_components

    index = json.loads((DEMO_DIR / "model_index.json").read_text())
    assert all(name in index for name in COMPONENTS)
    assert (index["default_height"], index["default_width"], index["default_num_frames"], index["default_fps"]) == \
        (64, 64, 25, 12.0)
    size = sum(f.stat().st_size for f in DEMO_DIR.rglob("*") if f.is_file())
    assert size <= 50 * 2**20, f"assets/demo is {size / 2**20:.1f} MiB"
    assert not any(f.is_symlink() for f in DEMO_DIR.rglob("*"))
    comps = load_components(DEMO_DIR, device="cpu", dtype=torch.float32)
    for name in ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "audio_vae"):
        report = compare_keys(comps[name], checkpoint_tensors(DEMO_DIR / name))
        assert report.ok, (name, report)
    assert comps["audio_vae"].sample_rate == 16000 and comps["audio_vae"].hop == 320  # MOVA's 50 Hz latent clock
    assert comps["video_vae"].config.z_dim == 16


def test_text_only_clip(pipe):
    result = pipe("A small red ball bounces twice on a wooden floor, each bounce a sharp knock.", seed=0)
    assert result.video.shape == (25, 64, 64, 3) and result.video.dtype == np.uint8
    assert result.sample_rate == 16000 and result.audio.shape == (33333,) and np.isfinite(result.audio).all()
    assert result.settings.num_inference_steps == 25 and result.nfe == 50
    assert result.video.std() > 5 and np.abs(result.audio).max() > 0.01  # a picture and a sound, not flat


def test_prompts_are_padded_to_the_checkpoints_length(pipe):
    """The demo declares max_sequence_length 64 (what it was trained with): prompts become [B, 64, 64] embeddings,
    zero past each prompt's tokens, the same rows as the 512-token encoding MOVA uses (the encoder is masked)."""
    prompts = ["A small red ball bounces twice on a wooden floor, each bounce a sharp knock.", ""]
    short = pipe.encode_prompt(prompts)
    assert pipe.max_sequence_length == 64 and short.shape == (2, 64, 64)
    torch.testing.assert_close(short, pipe.encode_prompt(prompts, 512)[:, :64], atol=1e-6, rtol=0)
    n = len(pipe.tokenizer(prompts[0]).input_ids)
    assert short[0, :n].abs().sum(-1).min() > 0 and short[0, n:].abs().max() == 0 and short[1, 1:].abs().max() == 0


def test_first_frame_clip_starts_from_the_image(pipe):
    from train.demo_world import held_out_prompts

    prompt = held_out_prompts(1, seed=7)[0]
    result = pipe(prompt.caption, image=prompt.first_frame, seed=0)
    err = np.abs(result.video[0].astype(np.float32) - prompt.first_frame.astype(np.float32)).mean()
    other = np.abs(result.video[0].astype(np.float32) - 255.0).mean()  # vs the white T2VA frame
    assert err < 20.0 and err < 0.3 * other, (err, other)
