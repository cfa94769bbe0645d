"""Black-bar detection and the frame transform of a clip: crop the bars, fit 16:9 or 9:16, resize.

Detection follows FFmpeg ``cropdetect``: a row (column) is a bar when its mean luma stays at or below
``threshold`` in every sampled frame, and only rows/columns touching the frame's edge count (a dark line
inside the picture is not a bar). Columns are measured over the content rows only, so the top and bottom
bars do not darken them. The luma here is full-range BT.601 (0..255) of the decoded RGB frame; FFmpeg's own
limit of 24 applies to the raw (usually limited-range, black = 16) Y plane, so the same number is a little
stricter here.

Then the content is fitted to the nearer of the two target aspects (``width:height`` and its transpose, nearer
in log ratio): centre-cropped when that removes at most ``max_crop_fraction`` of the area (``fit="auto"``),
otherwise padded with black; finally resized to the target size (INTER_AREA when shrinking).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from ..yaml_config import check_bool, check_choice, check_number

logger = logging.getLogger(__name__)

__all__ = ["LetterboxConfig", "CropBox", "FrameTransform", "detect_letterbox", "plan_transform", "luma"]

FITS = ("auto", "crop", "pad")


@dataclass(frozen=True, kw_only=True)
class LetterboxConfig:
    """Bar detection and aspect fitting.

    Args:
        enabled: detect and crop black bars (False keeps the full frame; the aspect fit still runs).
        threshold: a row/column is black when its mean luma (0..255) is <= this in every sampled frame
            (FFmpeg cropdetect's ``limit`` is 24).
        samples: frames sampled evenly over the whole video for detection.
        min_content_fraction: if the detected content is smaller than this fraction of the frame in either
            direction, the video is taken as dark rather than letterboxed and no bars are cropped.
        fit: ``"auto"`` crops when the crop removes at most ``max_crop_fraction`` of the content area, else
            pads; ``"crop"`` always crops; ``"pad"`` always pads with black.
        max_crop_fraction: see ``fit``; 0.25 lets 4:3 content be cropped to 16:9.
    """

    enabled: bool = True
    threshold: float = 24.0
    samples: int = 16
    min_content_fraction: float = 0.25
    fit: Literal["auto", "crop", "pad"] = "auto"
    max_crop_fraction: float = 0.25

    def __post_init__(self) -> None:
        check_bool("enabled", self.enabled)
        check_number("threshold", self.threshold, lo=0, hi=255)
        check_number("samples", self.samples, lo=1, integer=True)
        check_number("min_content_fraction", self.min_content_fraction, lo=0, hi=1)
        check_choice("fit", self.fit, FITS)
        check_number("max_crop_fraction", self.max_crop_fraction, lo=0, hi=1)


@dataclass(frozen=True)
class CropBox:
    """A rectangle in source pixels: left ``x``, top ``y``, width ``w``, height ``h``."""

    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


def luma(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[..., H, W, 3]`` -> uint8 luma ``[..., H, W]`` (BT.601, OpenCV's integer conversion)."""
    if frames.ndim == 3:
        return cv2.cvtColor(np.ascontiguousarray(frames), cv2.COLOR_RGB2GRAY)
    return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames])


def _edge_run(dark: np.ndarray) -> tuple[int, int]:
    """Lengths of the runs of True at the start and at the end of a 1-D bool array."""
    n = dark.shape[0]
    lead = int(np.argmin(dark)) if not dark.all() else n
    trail = int(np.argmin(dark[::-1])) if not dark.all() else n
    return lead, trail


def detect_letterbox(
    gray: np.ndarray, threshold: float = 24.0, min_content_fraction: float = 0.25
) -> CropBox:
    """The content box of frames with black bars.

    Args:
        gray: uint8 luma ``[n, H, W]`` (or one frame ``[H, W]``) sampled over the video.

    Returns:
        the box that keeps every row/column that is brighter than ``threshold`` in at least one frame; the full
        frame when nothing is dark or the content would be smaller than ``min_content_fraction``.
    """
    if gray.ndim == 2:
        gray = gray[None]
    if gray.ndim != 3 or gray.shape[0] == 0:
        raise ValueError(f"gray must be uint8 luma [n, H, W] with n >= 1, got shape {gray.shape}")
    n, H, W = gray.shape
    full = CropBox(0, 0, W, H)
    # 1. Rows: the brightest mean over the sampled frames.
    row_level = gray.mean(axis=2).max(axis=0)  # [H]
    top, bottom = _edge_run(row_level <= threshold)
    if top + bottom >= H:
        logger.info("letterbox: every sampled frame is dark; no bars cropped")
        return full
    # 2. Columns, over the content rows only.
    col_level = gray[:, top : H - bottom, :].mean(axis=1).max(axis=0)  # [W]
    left, right = _edge_run(col_level <= threshold)
    box = CropBox(left, top, W - left - right, H - top - bottom)
    if box.w < min_content_fraction * W or box.h < min_content_fraction * H:
        logger.info("letterbox: content %s is under %.0f%% of %dx%d; taken as a dark video, no bars cropped",
                    box, 100 * min_content_fraction, W, H)
        return full
    return box


@dataclass(frozen=True)
class FrameTransform:
    """Source frame -> clip frame: crop ``crop`` (source pixels), pad ``pad`` = (top, bottom, left, right) black
    pixels around the crop, resize to ``(width, height)``. ``aspect`` is ``"16:9"``-style for the chosen
    orientation; ``bars`` is the detected content box before the aspect fit."""

    bars: CropBox
    crop: CropBox
    pad: tuple[int, int, int, int]
    width: int
    height: int
    aspect: str

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """uint8 RGB ``[H_src, W_src, 3]`` -> uint8 RGB ``[height, width, 3]``."""
        c = self.crop
        out = frame[c.y : c.y + c.h, c.x : c.x + c.w]
        if any(self.pad):
            top, bottom, left, right = self.pad
            out = cv2.copyMakeBorder(out, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        if out.shape[1] != self.width or out.shape[0] != self.height:
            shrink = out.shape[1] > self.width or out.shape[0] > self.height
            interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            out = cv2.resize(out, (self.width, self.height), interpolation=interp)
        return np.ascontiguousarray(out)


def _aspect_name(w: int, h: int) -> str:
    g = math.gcd(w, h)
    return f"{w // g}:{h // g}"


def plan_transform(
    source_width: int, source_height: int, bars: CropBox, cfg: LetterboxConfig, width: int, height: int
) -> FrameTransform:
    """Choose the orientation nearer the content's aspect and crop or pad the content box to it.

    Args:
        bars: the content box (:func:`detect_letterbox`, or the full frame).
        width, height: the landscape target size; portrait content gets ``(height, width)``.
    """
    content = bars if cfg.enabled else CropBox(0, 0, source_width, source_height)
    ratio = content.w / content.h
    candidates = [(width, height), (height, width)]
    out_w, out_h = min(candidates, key=lambda wh: abs(math.log(ratio) - math.log(wh[0] / wh[1])))
    target = out_w / out_h
    crop, pad = content, (0, 0, 0, 0)
    if abs(ratio - target) > 1e-6:
        new_w, new_h = max(1, round(content.h * target)), max(1, round(content.w / target))
        # too wide: crop width or pad height; too tall: crop height or pad width
        removed = 1 - (new_w / content.w if ratio > target else new_h / content.h)
        do_crop = cfg.fit == "crop" or (cfg.fit == "auto" and removed <= cfg.max_crop_fraction)
        if do_crop and ratio > target:
            x = content.x + (content.w - new_w) // 2
            crop = CropBox(x, content.y, new_w, content.h)
        elif do_crop:
            y = content.y + (content.h - new_h) // 2
            crop = CropBox(content.x, y, content.w, new_h)
        elif ratio > target:
            extra = new_h - content.h
            pad = (extra // 2, extra - extra // 2, 0, 0)
        else:
            extra = new_w - content.w
            pad = (0, 0, extra // 2, extra - extra // 2)
    return FrameTransform(bars=content, crop=crop, pad=pad, width=out_w, height=out_h,
                          aspect=_aspect_name(out_w, out_h))
