"""Per-clip measurements and the quality filters that decide from them.

Measuring decodes nothing itself: :func:`measure_clip` takes the clip's arrays (done once, in ``prepare``) and
returns plain numbers that go into the manifest row. Filtering reads only those numbers
(:func:`apply_filters`), so new thresholds can be tried on a manifest without touching a video file
(``python -m train.data filter MANIFEST --config X --out M2``).

The signal measures are :mod:`mova.eval`'s (shared with generated-clip evaluation): silence ratio, bandwidth,
BS.1770 loudness, clipping, motion energy, and the audio-visual sync score — the peak of the onset/motion
cross-correlation (:func:`mova.eval.av_correlation`) and its lag (:func:`mova.eval.av_offset`). Video sharpness is
the variance of the Laplacian of the luma, brightness the mean luma (0..255), both over frames sampled evenly.

The paper's thresholds are unknown (docs/model.md#data-pipeline); the defaults below are documented choices, and every filter can
be turned off with ``null``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from mova.eval import (av_correlation, av_offset, bandwidth_hz, clipping_ratio, integrated_loudness, motion_energy,
                       silence_ratio)

from .labels import CLIP_TYPES
from ..yaml_config import check_bool, check_number, check_order, fail

__all__ = [
    "MeasureConfig", "FilterConfig", "REJECT_REASONS", "measure_clip", "video_sharpness", "video_brightness",
    "required_fields", "apply_filters", "FilterResult", "filter_rows",
]

# Rejection reasons (also the keys of the summary counts).
REJECT_REASONS = ("silence", "bandwidth", "loudness_low", "loudness_high", "clipping", "sharpness", "brightness_low",
                  "brightness_high", "motion_low", "motion_high", "av_sync", "clip_type", "low_resolution",
                  "missing_caption")


@dataclass(frozen=True, kw_only=True)
class MeasureConfig:
    """How the measured values are computed (changing these needs a new ``prepare``).

    Args:
        silence_threshold_db: frames (``silence_frame_ms`` long) quieter than this (dBFS RMS) are silent.
        silence_frame_ms: frame length for the silence ratio.
        bandwidth_rolloff: bandwidth = frequency below which this fraction of the spectral energy lies.
        clipping_threshold: samples with ``|x| >=`` this count as clipped.
        av_max_offset_frames: largest lag searched by the sync score (frames).
        video_samples: frames sampled evenly for sharpness and brightness.
    """

    silence_threshold_db: float = -50.0
    silence_frame_ms: float = 20.0
    bandwidth_rolloff: float = 0.99
    clipping_threshold: float = 0.999
    av_max_offset_frames: int = 12
    video_samples: int = 16

    def __post_init__(self) -> None:
        check_number("silence_threshold_db", self.silence_threshold_db, lo=-120, hi=0)
        check_number("silence_frame_ms", self.silence_frame_ms, lo=1, hi=1000)
        check_number("bandwidth_rolloff", self.bandwidth_rolloff, lo=0, hi=1, lo_open=True)
        check_number("clipping_threshold", self.clipping_threshold, lo=0, hi=1, lo_open=True)
        check_number("av_max_offset_frames", self.av_max_offset_frames, lo=0, integer=True)
        check_number("video_samples", self.video_samples, lo=1, integer=True)


@dataclass(frozen=True, kw_only=True)
class FilterConfig:
    """Thresholds applied to the measured values; ``None`` turns a filter off.

    Args:
        max_silence_ratio: reject clips with a larger fraction of silent frames.
        min_bandwidth_hz: reject narrower audio (4 kHz rejects telephone-band and 8 kHz-sampled sources).
        min_loudness_lufs / max_loudness_lufs: integrated loudness bounds (silence reads as too quiet).
        max_clipping_ratio: reject clips with a larger fraction of clipped samples.
        min_sharpness: reject blurrier clips (variance of the Laplacian of the luma, at the clip resolution).
        min_brightness / max_brightness: mean luma bounds (0..255).
        min_motion / max_motion: mean absolute luma difference of consecutive frames (0..255); the minimum
            rejects still images, the maximum strobing.
        min_av_sync_score / max_av_offset_frames: the sync rule, in the paper's "keep if IB >= 0.2 OR DeSync
            <= 0.5" shape: with both set a clip passes when either holds; with one set, that one decides. Off by
            default: onset/motion correlation is weak evidence for talking heads.
        allowed_clip_types: keep only these clip types (e.g. the speech types for the paper's stage 2).
        min_content_short_side: reject clips whose cropped source content is smaller (pixels, short side).
        require_caption: reject clips with an empty ``caption``.
    """

    max_silence_ratio: float | None = 0.5
    min_bandwidth_hz: float | None = 4000.0
    min_loudness_lufs: float | None = -40.0
    max_loudness_lufs: float | None = -5.0
    max_clipping_ratio: float | None = 0.001
    min_sharpness: float | None = 20.0
    min_brightness: float | None = 16.0
    max_brightness: float | None = 240.0
    min_motion: float | None = 0.25
    max_motion: float | None = None
    min_av_sync_score: float | None = None
    max_av_offset_frames: float | None = None
    allowed_clip_types: tuple[str, ...] | None = None
    min_content_short_side: int | None = None
    require_caption: bool = True

    def __post_init__(self) -> None:
        check_number("max_silence_ratio", self.max_silence_ratio, lo=0, hi=1, optional=True)
        check_number("min_bandwidth_hz", self.min_bandwidth_hz, lo=0, optional=True)
        check_number("min_loudness_lufs", self.min_loudness_lufs, hi=0, optional=True)
        check_number("max_loudness_lufs", self.max_loudness_lufs, hi=0, optional=True)
        check_order("min_loudness_lufs", self.min_loudness_lufs, "max_loudness_lufs", self.max_loudness_lufs)
        check_number("max_clipping_ratio", self.max_clipping_ratio, lo=0, hi=1, optional=True)
        check_number("min_sharpness", self.min_sharpness, lo=0, optional=True)
        check_number("min_brightness", self.min_brightness, lo=0, hi=255, optional=True)
        check_number("max_brightness", self.max_brightness, lo=0, hi=255, optional=True)
        check_order("min_brightness", self.min_brightness, "max_brightness", self.max_brightness)
        check_number("min_motion", self.min_motion, lo=0, hi=255, optional=True)
        check_number("max_motion", self.max_motion, lo=0, hi=255, optional=True)
        check_order("min_motion", self.min_motion, "max_motion", self.max_motion)
        check_number("min_av_sync_score", self.min_av_sync_score, lo=-1, hi=1, optional=True)
        check_number("max_av_offset_frames", self.max_av_offset_frames, lo=0, optional=True)
        if self.allowed_clip_types is not None and (not isinstance(self.allowed_clip_types, tuple) or not all(
                t in CLIP_TYPES for t in self.allowed_clip_types)):
            fail("allowed_clip_types", self.allowed_clip_types, f"null or a list from {list(CLIP_TYPES)}")
        check_number("min_content_short_side", self.min_content_short_side, lo=1, integer=True, optional=True)
        check_bool("require_caption", self.require_caption)


# --------------------------------------------------------------------------------------------------------------
# Measuring (arrays in, numbers out)
# --------------------------------------------------------------------------------------------------------------


def _sample_indices(T: int, n: int) -> np.ndarray:
    return np.unique(np.linspace(0, T - 1, min(n, T)).round().astype(np.int64))


def video_sharpness(video: np.ndarray, samples: int = 16) -> float:
    """Mean over ``samples`` evenly spaced frames of the variance of the Laplacian of the luma (uint8 RGB
    ``[T, H, W, 3]``); higher is sharper."""
    values = []
    for k in _sample_indices(video.shape[0], samples):
        grey = cv2.cvtColor(np.ascontiguousarray(video[k]), cv2.COLOR_RGB2GRAY)
        values.append(float(cv2.Laplacian(grey, cv2.CV_64F).var()))
    return float(np.mean(values))


def video_brightness(video: np.ndarray, samples: int = 16) -> float:
    """Mean luma (BT.601, 0..255) over ``samples`` evenly spaced frames of uint8 RGB ``[T, H, W, 3]``."""
    values = [
        float(cv2.cvtColor(np.ascontiguousarray(video[k]), cv2.COLOR_RGB2GRAY).mean())
        for k in _sample_indices(video.shape[0], samples)
    ]
    return float(np.mean(values))


def _finite_or_none(value: float, digits: int = 4) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None


def measure_clip(
    video: np.ndarray,
    fps: float,
    audio: np.ndarray | None,
    sample_rate: int,
    cfg: MeasureConfig | None = None,
) -> dict[str, Any]:
    """The measured values of one clip, as manifest fields.

    Args:
        video: uint8 RGB ``[T, H, W, 3]`` at the clip resolution; fps: its frame rate.
        audio: float32 mono ``[N]`` at ``sample_rate`` covering the same span, or None (no audio stream).

    Returns:
        ``silence_ratio``, ``bandwidth_hz``, ``loudness_lufs`` (None for silence: -inf), ``clipping_ratio``,
        ``av_sync_score`` (correlation peak, -1..1), ``av_offset_frames`` (None when undefined) — all None
        without audio — and ``sharpness``, ``brightness``, ``motion``.
    """
    cfg = cfg or MeasureConfig()
    row: dict[str, Any] = {
        "sharpness": round(video_sharpness(video, cfg.video_samples), 3),
        "brightness": round(video_brightness(video, cfg.video_samples), 3),
        "motion": round(float(np.mean(motion_energy(video)[1:])) if video.shape[0] > 1 else 0.0, 4),
    }
    if audio is None:
        row.update(silence_ratio=None, bandwidth_hz=None, loudness_lufs=None, clipping_ratio=None,
                   av_sync_score=None, av_offset_frames=None)
        return row
    row["silence_ratio"] = round(
        silence_ratio(audio, sample_rate, threshold_db=cfg.silence_threshold_db, frame_ms=cfg.silence_frame_ms), 4
    )
    row["bandwidth_hz"] = round(bandwidth_hz(audio, sample_rate, rolloff=cfg.bandwidth_rolloff), 1)
    row["loudness_lufs"] = _finite_or_none(integrated_loudness(audio, sample_rate), 2)
    row["clipping_ratio"] = round(clipping_ratio(audio, threshold=cfg.clipping_threshold), 6)
    _, corr = av_correlation(video, fps, audio, sample_rate, cfg.av_max_offset_frames)
    row["av_sync_score"] = round(float(corr.max()), 4) if corr.size else 0.0
    row["av_offset_frames"] = _finite_or_none(av_offset(video, fps, audio, sample_rate, cfg.av_max_offset_frames), 3)
    return row


# --------------------------------------------------------------------------------------------------------------
# Filtering (manifest rows in, decisions out)
# --------------------------------------------------------------------------------------------------------------

_AUDIO_FIELDS = ("silence_ratio", "bandwidth_hz", "loudness_lufs", "clipping_ratio", "av_sync_score",
                 "av_offset_frames")


def required_fields(cfg: FilterConfig) -> tuple[str, ...]:
    """Row fields the active filters read (a row without one of them cannot be judged)."""
    need = ["has_audio"]
    pairs = [
        ("silence_ratio", cfg.max_silence_ratio),
        ("bandwidth_hz", cfg.min_bandwidth_hz),
        ("loudness_lufs", cfg.min_loudness_lufs if cfg.min_loudness_lufs is not None else cfg.max_loudness_lufs),
        ("clipping_ratio", cfg.max_clipping_ratio),
        ("sharpness", cfg.min_sharpness),
        ("brightness", cfg.min_brightness if cfg.min_brightness is not None else cfg.max_brightness),
        ("motion", cfg.min_motion if cfg.min_motion is not None else cfg.max_motion),
        ("av_sync_score", cfg.min_av_sync_score),
        ("av_offset_frames", cfg.max_av_offset_frames),
        ("clip_type", cfg.allowed_clip_types),
        ("crop_box", cfg.min_content_short_side),
    ]
    need += [name for name, active in pairs if active is not None]
    if cfg.require_caption:
        need.append("caption")
    return tuple(need)


def _low(value: float | None, bound: float | None) -> bool:
    """``value < bound`` with None (unmeasurable: silence's loudness) counting as below."""
    return bound is not None and (value is None or value < bound)


def _high(value: float | None, bound: float | None) -> bool:
    return bound is not None and value is not None and value > bound


def _over(value: float | None, bound: float | None) -> bool:
    """``value > bound`` with None (not measured) counting as above."""
    return bound is not None and (value is None or value > bound)


def apply_filters(row: Mapping[str, Any], cfg: FilterConfig) -> list[str]:
    """Rejection reasons (from :data:`REJECT_REASONS`, in that order) for one row; empty = keep.

    Audio filters are skipped for rows with ``has_audio`` false (kept-without-audio clips). The row must hold
    :func:`required_fields`; :func:`filter_rows` checks that first.
    """
    audio = row["has_audio"]
    thresholds = {  # reason: failed, in REJECT_REASONS order
        "silence": audio and _over(row.get("silence_ratio"), cfg.max_silence_ratio),
        "bandwidth": audio and _low(row.get("bandwidth_hz"), cfg.min_bandwidth_hz),
        "loudness_low": audio and _low(row.get("loudness_lufs"), cfg.min_loudness_lufs),
        "loudness_high": audio and _high(row.get("loudness_lufs"), cfg.max_loudness_lufs),
        "clipping": audio and _over(row.get("clipping_ratio"), cfg.max_clipping_ratio),
        "sharpness": _low(row.get("sharpness"), cfg.min_sharpness),
        "brightness_low": _low(row.get("brightness"), cfg.min_brightness),
        "brightness_high": _high(row.get("brightness"), cfg.max_brightness),
        "motion_low": _low(row.get("motion"), cfg.min_motion),
        "motion_high": _high(row.get("motion"), cfg.max_motion),
    }
    reasons = [reason for reason, failed in thresholds.items() if failed]
    if audio and (cfg.min_av_sync_score is not None or cfg.max_av_offset_frames is not None):
        score, offset = row.get("av_sync_score"), row.get("av_offset_frames")
        tests = []
        if cfg.min_av_sync_score is not None:
            tests.append(score is not None and score >= cfg.min_av_sync_score)
        if cfg.max_av_offset_frames is not None:
            tests.append(offset is not None and abs(offset) <= cfg.max_av_offset_frames)
        if not any(tests):
            reasons.append("av_sync")
    if cfg.allowed_clip_types is not None and row.get("clip_type") not in cfg.allowed_clip_types:
        reasons.append("clip_type")
    if cfg.min_content_short_side is not None:
        box = row.get("crop_box") or [0, 0, 0, 0]
        if min(box[2], box[3]) < cfg.min_content_short_side:
            reasons.append("low_resolution")
    if cfg.require_caption and not str(row.get("caption") or "").strip():
        reasons.append("missing_caption")
    return reasons


@dataclass
class FilterResult:
    """Outcome of :func:`filter_rows`: rows kept and rejected (each with ``keep`` and ``reject_reasons`` set),
    rows skipped because they could not be judged (``(row index, reason)``), and counts per rejection reason
    (a row with two reasons counts under both)."""

    kept: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {
            "rows": len(self.kept) + len(self.rejected) + len(self.skipped),
            "kept": len(self.kept),
            "rejected": len(self.rejected),
            "rejected_by_reason": dict(sorted(self.reasons.items())),
            "skipped": len(self.skipped),
            "skipped_by_reason": dict(sorted(Counter(reason for _, reason in self.skipped).items())),
        }


def filter_rows(rows: Iterable[Mapping[str, Any]], cfg: FilterConfig) -> FilterResult:
    """Apply :func:`apply_filters` to every row; rows missing a field the active filters need are skipped with
    reason ``missing_field:<name>``. Input rows are not modified (copies are returned)."""
    need = required_fields(cfg)
    result = FilterResult()
    for i, row in enumerate(rows):
        missing = [
            name for name in need
            if name not in row or (row[name] is None and name not in _AUDIO_FIELDS and name != "caption")
        ]
        if missing:
            result.skipped.append((i, f"missing_field:{missing[0]}"))
            continue
        out = dict(row)
        reasons = apply_filters(out, cfg)
        out["keep"] = not reasons
        out["reject_reasons"] = reasons
        (result.rejected if reasons else result.kept).append(out)
        result.reasons.update(reasons)
    return result
