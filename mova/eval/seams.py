"""Seams where clips are joined (chained windows, a retake's span): is the join's change bigger than the clip's own?

The picture's change is :func:`mova.eval.sync.motion_energy` (mean absolute luma difference of consecutive frames),
the sound's is the sample-level jump ``|x[n] − x[n − 1]|``. A join is compared with the clip's own 95th percentile
of each, measured outside every join.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mova.eval.sync import motion_energy

__all__ = ["Join", "seam_figures"]


@dataclass(frozen=True)
class Join:
    """Where a join lies: frames ``first_frame … last_frame`` (the changes into them belong to it) and the samples
    ``samples`` at which its sound switches source (a cut, or where a cross-fade starts and ends)."""

    first_frame: int
    last_frame: int
    samples: tuple[int, ...]


def seam_figures(video: np.ndarray, audio: np.ndarray, joins: list[Join], percentile: float = 95.0
                 ) -> dict[str, Any]:
    """Per join: the largest frame change within it and the largest sample jump at its switch points, each beside
    the clip's own ``percentile`` outside the joins (``within``: both at most that). As a control, the shares of
    stretches of the same shape away from every join that are within it (a seamless stretch of several frames
    exceeds the 95th percentile somewhere more often than 5 % of the time).

    Args:
        video: uint8 [T, H, W, 3]; audio: float [N] mono; joins: :class:`Join` each.
    """
    change = motion_energy(video).astype(np.float64)  # change[k]: frame k − 1 → k
    x = np.asarray(audio, np.float64).ravel()
    jump = np.zeros_like(x)
    jump[1:] = np.abs(np.diff(x))
    frame_out = np.ones(change.shape[0], bool)
    frame_out[0] = False
    sample_out = np.ones(x.shape[0], bool)
    sample_out[0] = False
    for j in joins:
        frame_out[j.first_frame:j.last_frame + 1] = False
        lo, hi = min(j.samples), max(j.samples)
        sample_out[max(lo - 1, 0):hi + 2] = False
    video_p = float(np.percentile(change[frame_out], percentile))
    audio_p = float(np.percentile(jump[sample_out], percentile))
    rows = []
    frame_control, sample_control = [], []  # the same statistics at every stretch away from the joins
    for j in joins:
        span = j.last_frame - j.first_frame + 1
        for k in range(1, change.shape[0] - span + 1):
            if frame_out[k:k + span].all():
                frame_control.append(change[k:k + span].max() <= video_p)
        gaps = [n - min(j.samples) for n in j.samples]
        for n in range(1, x.shape[0] - max(gaps), 97):  # every 97th sample: plenty, and fast
            if sample_out[n:n + max(gaps) + 1].all():
                sample_control.append(max(jump[n + g] for g in gaps) <= audio_p)
        frame_change = float(change[j.first_frame:j.last_frame + 1].max())
        sample_jump = float(max(jump[n] for n in j.samples if 0 < n < x.shape[0]))
        rows.append({"frames": [j.first_frame, j.last_frame], "samples": list(j.samples),
                     "frame_change": frame_change, "frame_change_vs_p95": frame_change / max(video_p, 1e-12),
                     "sample_jump": sample_jump, "sample_jump_vs_p95": sample_jump / max(audio_p, 1e-12),
                     "within": frame_change <= video_p and sample_jump <= audio_p})
    return {"frame_change_p95": video_p, "sample_jump_p95": audio_p, "joins": rows,
            # what "within" means where nothing is joined: the share of same-shaped stretches within it
            "seamless_frame_share_within": float(np.mean(frame_control)) if frame_control else float("nan"),
            "seamless_sample_share_within": float(np.mean(sample_control)) if sample_control else float("nan")}
