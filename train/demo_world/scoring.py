"""Scoring a generated clip against what its demo-world prompt asked for, with the pixel detectors.

The picture side is always measured by :mod:`train.demo_world.detectors` (floor contacts of coloured blobs, the
mouth's dark area); the sound side by signal analysis from :mod:`mova.eval` (spectral-flux onsets, loudness
envelope). Nothing reads the model's intent or the reference clip's timeline, so a clip only scores well when what
is seen and what is heard agree.

Per clip (``score_clip``):

- bouncing balls — ``impacts``: visual contact frames; ``aligned``: contacts with an audio onset within
  ``tolerance_frames`` (one-to-one matching, :func:`mova.eval.onsets.onset_alignment`); ``offset_frames``: the lag
  maximising the correlation of the contact train (1 on each contact frame) with the onset train (1 on the frame of
  each audio onset), within ``search_frames`` — one lag for the whole clip, since bounces come every few frames and
  matching each contact to its nearest onset would confuse a delay with the neighbouring bounce; equally good lags
  (a single contact) resolve to the smallest; colour checks against the prompt's ball colours. Per impact as well:
  ``contact_offsets_frames``, for each visual contact the signed offset to the nearest audio onset, and
  ``onset_offsets_frames``, for each onset the offset from the nearest contact (a clip's one lag flatters a sparse
  contact train: these do not); ``prompted_contacts`` (the bounces the prompt asked for) beside ``impacts``.
- talking face — ``offset_frames``: the lag maximising the correlation of the mouth opening with the audio's RMS
  envelope (both at the frame rate), within ``search_frames``; ``correlation`` at that lag.

Positive offsets mean the sound comes after the picture.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mova.eval import detect_onsets, lagged_correlation, onset_alignment, peak_lag
from mova.eval import nearest_offsets as eval_nearest_offsets

from .detectors import ball_colours, detect_ball_impacts, dominant_ball_colour, mouth_opening

TOLERANCE_FRAMES = 2  # an impact counts as aligned with an audio onset within ±2 frames
SEARCH_FRAMES = 6  # offsets are looked for within ±6 frames (half a second at 12 fps)


def rms_envelope(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """float64 [T]: RMS of the audio in a one-frame window centred on each frame's instant ``f / fps``."""
    audio = np.asarray(audio, np.float64).ravel()
    half = 0.5 * sample_rate / fps
    out = np.zeros(num_frames)
    for f in range(num_frames):
        centre = f * sample_rate / fps
        lo, hi = max(0, int(round(centre - half))), min(audio.size, int(round(centre + half)))
        if hi > lo:
            out[f] = float(np.sqrt(np.mean(audio[lo:hi] ** 2)))
    return out


def nearest_offsets(events: np.ndarray, others: np.ndarray) -> list[float]:
    """For each event, ``other − event`` to the nearest of ``others`` (same units; empty without others):
    :func:`mova.eval.nearest_offsets` with ``others`` as its events."""
    return eval_nearest_offsets(others, events).tolist() if np.size(others) else []


def score_balls(video: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int,
                prompt_colours: list[str] | None = None, *, prompted_contacts: int | None = None,
                tolerance_frames: int = TOLERANCE_FRAMES, search_frames: int = SEARCH_FRAMES) -> dict[str, Any]:
    impacts = np.asarray(detect_ball_impacts(video, fps))
    onsets = detect_onsets(audio, sample_rate)
    tight = onset_alignment(onsets, impacts, tolerance_frames / fps)
    T = len(video)
    seen, heard = np.zeros(T), np.zeros(T)
    seen[np.clip(np.round(impacts * fps).astype(int), 0, T - 1)] = 1.0
    heard[np.clip(np.round(onsets * fps).astype(int), 0, T - 1)] = 1.0
    offset = peak_lag(*lagged_correlation(seen, heard, search_frames)) if impacts.size and onsets.size \
        else float("nan")
    out: dict[str, Any] = {
        "impacts": int(impacts.size), "audio_onsets": int(onsets.size), "aligned": int(tight["num_matched"]),
        "offset_frames": offset,
        "impact_frames": [round(float(t) * fps, 3) for t in impacts],
        "onset_frames": [round(float(t) * fps, 3) for t in onsets],
        # positive: the sound after the picture (onset − contact), in frames
        "contact_offsets_frames": [round(d * fps, 3) for d in nearest_offsets(impacts, onsets)],
        "onset_offsets_frames": [round(-d * fps, 3) for d in nearest_offsets(onsets, impacts)],
    }
    if prompted_contacts is not None:
        out["prompted_contacts"] = int(prompted_contacts)
    if prompt_colours is not None:
        dominant = dominant_ball_colour(video)
        seen = ball_colours(video)
        out.update(dominant_colour=dominant, colours_seen=seen, prompt_colours=list(prompt_colours),
                   colour_match=dominant in prompt_colours and all(c in seen for c in prompt_colours))
    return out


def score_face(video: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int, *,
               search_frames: int = SEARCH_FRAMES) -> dict[str, Any]:
    mouth = mouth_opening(video)
    envelope = rms_envelope(audio, sample_rate, fps, len(mouth))
    lags, corr = lagged_correlation(mouth, envelope, search_frames)
    offset = peak_lag(lags, corr)
    return {"offset_frames": offset, "correlation": float(corr.max()) if np.any(corr) else 0.0,
            "correlation_at_0": float(corr[lags == 0][0]) if np.any(lags == 0) else 0.0}


def score_clip(scene: str, video: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int,
               params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scores of one clip of ``scene`` (``bouncing_balls`` or ``talking_face``); ``params`` are the prompt's scene
    parameters (ball colours for the colour check)."""
    if scene == "bouncing_balls":
        balls = params["balls"] if params else None
        out = score_balls(video, audio, fps, sample_rate, [b["colour"] for b in balls] if balls else None,
                          prompted_contacts=sum(b["num_bounces"] for b in balls) if balls else None)
        return {**out, "num_balls": len(balls)} if balls else out
    if scene == "talking_face":
        return score_face(video, audio, fps, sample_rate)
    raise ValueError(f"scene={scene!r} is invalid: expected 'bouncing_balls' or 'talking_face'")


def summarise(scores: list[dict[str, Any]], fps: float) -> dict[str, Any]:
    """Aggregate per-clip scores (each with a ``scene`` key) into the figures of ``demo_eval.json``."""
    offsets = [abs(s["offset_frames"]) for s in scores if np.isfinite(s.get("offset_frames", np.nan))]
    balls = [s for s in scores if s["scene"] == "bouncing_balls"]
    faces = [s for s in scores if s["scene"] == "talking_face"]
    impacts = sum(s["impacts"] for s in balls)
    colour = [s["colour_match"] for s in balls if "colour_match" in s]
    ball_offsets = [abs(s["offset_frames"]) for s in balls if np.isfinite(s["offset_frames"])]
    face_offsets = [abs(s["offset_frames"]) for s in faces if np.isfinite(s["offset_frames"])]
    return {
        "clips": len(scores),
        "clips_with_offset": len(offsets),
        "median_abs_offset_frames": float(np.median(offsets)) if offsets else float("nan"),
        "median_abs_offset_ms": float(np.median(offsets)) / fps * 1000 if offsets else float("nan"),
        "ball_median_abs_offset_frames": float(np.median(ball_offsets)) if ball_offsets else float("nan"),
        "face_median_abs_offset_frames": float(np.median(face_offsets)) if face_offsets else float("nan"),
        "face_median_correlation": float(np.median([s["correlation"] for s in faces])) if faces else float("nan"),
        "visual_impacts": impacts,
        "impacts_aligned_within_2_frames": sum(s["aligned"] for s in balls),
        "impact_alignment": sum(s["aligned"] for s in balls) / impacts if impacts else float("nan"),
        "ball_clips_without_impacts": sum(1 for s in balls if s["impacts"] == 0),
        "colour_match_rate": float(np.mean(colour)) if colour else float("nan"),
        "per_impact": per_impact(balls),
    }


def per_impact(balls: list[dict[str, Any]]) -> dict[str, Any]:
    """The ball clips' figures per contact and per onset (not one lag per clip), and the contact counts of the
    one-ball prompts against the bounces they asked for."""
    contacts = [abs(d) for s in balls for d in s.get("contact_offsets_frames", [])]
    onsets = [abs(d) for s in balls for d in s.get("onset_offsets_frames", [])]
    one_ball = [s for s in balls if s.get("num_balls") == 1 and "prompted_contacts" in s]

    def median(values: list[float]) -> float:
        return float(np.median(values)) if values else float("nan")

    return {
        "contacts_with_an_onset": len(contacts),
        "median_abs_offset_frames": median(contacts),
        "within_1_frame": float(np.mean([d <= 1.0 for d in contacts])) if contacts else float("nan"),
        "onsets_with_a_contact": len(onsets),
        "onset_median_abs_offset_frames": median(onsets),
        "one_ball_clips": len(one_ball),
        "one_ball_contacts_within_1_of_prompted": float(np.mean(
            [abs(s["impacts"] - s["prompted_contacts"]) <= 1 for s in one_ball])) if one_ball else float("nan"),
        "one_ball_mean_contacts": float(np.mean([s["impacts"] for s in one_ball])) if one_ball else float("nan"),
        "one_ball_mean_prompted": float(np.mean([s["prompted_contacts"] for s in one_ball])) if one_ball
        else float("nan"),
    }
