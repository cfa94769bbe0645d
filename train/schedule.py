"""The learning-rate schedule of every run in ``train/``: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math


def lr_factor(step: int, *, total: int, warmup: int, warmup_start: float, min_ratio: float,
              time_fraction: float = 0.0) -> float:
    """Multiplier of the peak lr before optimizer step ``step`` (0-based): linear warmup from ``warmup_start`` to 1
    over ``warmup`` steps, then cosine from 1 down to ``min_ratio`` at ``total`` — or earlier, when
    ``time_fraction`` (the spent part of a wall-clock budget) runs ahead of the step fraction."""
    if step < warmup:
        return warmup_start + (1.0 - warmup_start) * step / warmup
    progress = min(1.0, max(time_fraction, (step - warmup) / max(1, total - warmup)))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
