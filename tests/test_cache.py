"""Step caching (settings.cache): which steps reuse the last velocity, and what a generation reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mova.cache import StepCache

SMALL = dict(height=64, width=64, num_frames=9, fps=12.0, num_inference_steps=12, seed=7, loudness_lufs=None)


def sigmas(n):
    return torch.stack([torch.linspace(1.0, 0.0, n + 1), torch.linspace(1.0, 0.0, n + 1) ** 2], dim=1)


def test_policy_reuses_only_while_the_predicted_drift_is_small():
    grid = sigmas(10)
    cache = StepCache(0.25, 10, warmup=2)
    v = torch.ones(8)
    decisions = []
    for i in range(10):
        reuse = cache.reuse(i, grid[i])
        decisions.append(reuse)
        if not reuse:
            # a velocity drifting 1 % per step in video, 20 % per step in audio at first, then calm
            cache.store(grid[i], v * (1 + 0.01 * i), v * (1 + (0.2 if i < 2 else 0.001) * i))
    assert decisions[:2] == [False, False] and decisions[-1] is False  # warm-up and last step always evaluated
    assert 0 < cache.skipped == sum(decisions) < 8
    assert StepCache(0.0, 10).reuse(5, grid[5]) is False  # off


def test_generation_reports_fewer_evaluations_and_stays_close(tiny_checkpoint):
    from mova import MOVAPipeline

    pipe = MOVAPipeline.from_pretrained(tiny_checkpoint, torch_dtype="fp32")
    base = pipe("a bell rings twice", **SMALL)
    off = pipe("a bell rings twice", cache=0.0, **SMALL)
    assert np.array_equal(base.video, off.video) and base.nfe == 12 * 2 and base.cached_steps == 0
    fast = pipe("a bell rings twice", cache=0.3, **SMALL)
    assert fast.cached_steps > 0 and fast.nfe == (12 - fast.cached_steps) * 2
    assert np.abs(fast.video.astype(float) - base.video).mean() < 10.0  # of 255


def test_cache_threshold_is_checked():
    from mova.settings import GenerationSettings

    with pytest.raises(ValueError, match=r"cache=2 is invalid: expected a number in \[0, 1\]"):
        GenerationSettings(prompt="x", cache=2)
