"""Scene-cut (hard cut) detection from frame differences in HSV with an adaptive threshold.

Per frame ``k`` two scores against frame ``k - 1`` (on a copy shrunk to ``analysis_width``):

- content: the mean absolute difference of the H, S and V channels, averaged over the three (0..255 scale;
  hue on OpenCV's 0..179 circle, the shorter way round) — PySceneDetect's ``ContentDetector`` score;
- histogram distance: Bhattacharyya distance (0..1) of the normalised joint HSV histograms.

Frame ``k`` starts a new scene when its content score is at least ``min_content``, its histogram distance at
least ``min_hist_distance`` (a camera pan changes pixels but not the colour distribution), and either score is
at least ``adaptive_ratio`` times its mean over the ``window_frames`` frames on each side (PySceneDetect's
``AdaptiveDetector``: a cut stands out from its neighbourhood; fast motion raises the content score of every
frame, so there the histogram's jump decides), and the colours ``flash_frames`` after it still differ from
those ``flash_frames`` before it (a flash or a one-frame glitch returns to the same picture: no cut). Cuts
closer than ``min_scene_s`` keep the stronger one. Fades and dissolves are not cuts.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..yaml_config import check_number

__all__ = ["SceneConfig", "frame_scores", "detect_scene_cuts"]

HIST_BINS = (16, 8, 8)  # H, S, V
HUE_PERIOD = 180  # OpenCV 8-bit hue range


@dataclass(frozen=True, kw_only=True)
class SceneConfig:
    """Hard-cut detection thresholds (see the module docstring).

    Args:
        min_content: minimum content score of a cut (PySceneDetect's ``min_content_val``, 15).
        adaptive_ratio: a cut's score over the mean of its neighbours' (PySceneDetect's 3.0).
        window_frames: neighbours on each side for that mean.
        min_hist_distance: minimum Bhattacharyya distance of the HSV histograms across a cut.
        min_scene_s: cuts closer than this keep only the stronger one.
        flash_frames: a change that reverts within this many frames is a flash, not a cut.
        analysis_width: frames are shrunk to this width (aspect kept) before scoring.
    """

    min_content: float = 15.0
    adaptive_ratio: float = 3.0
    window_frames: int = 4
    min_hist_distance: float = 0.2
    min_scene_s: float = 0.5
    flash_frames: int = 2
    analysis_width: int = 160

    def __post_init__(self) -> None:
        check_number("min_content", self.min_content, lo=0, hi=255)
        check_number("adaptive_ratio", self.adaptive_ratio, lo=1)
        check_number("window_frames", self.window_frames, lo=1, integer=True)
        check_number("min_hist_distance", self.min_hist_distance, lo=0, hi=1)
        check_number("min_scene_s", self.min_scene_s, lo=0)
        check_number("flash_frames", self.flash_frames, lo=0, integer=True)
        check_number("analysis_width", self.analysis_width, lo=8, integer=True)


def _hsv(frame: np.ndarray, width: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if w > width:
        frame = cv2.resize(frame, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2HSV)


def _histogram(hsv: np.ndarray) -> np.ndarray:
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(HIST_BINS), [0, HUE_PERIOD, 0, 256, 0, 256])
    return cv2.normalize(hist, hist, alpha=1.0, norm_type=cv2.NORM_L1)


def frame_scores(video: np.ndarray, analysis_width: int = 160) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Per-frame change scores.

    Args:
        video: uint8 RGB ``[T, H, W, 3]``.

    Returns:
        ``(content [T], hist_distance [T], histograms)`` float64 scores (index 0 is 0: no previous frame) and
        the T normalised HSV histograms.
    """
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"video must be uint8 RGB [T, H, W, 3], got {video.dtype} {video.shape}")
    T = video.shape[0]
    content = np.zeros(T)
    hist_d = np.zeros(T)
    hists = []
    prev_hsv = prev_hist = None
    for k in range(T):
        hsv = _hsv(video[k], analysis_width)
        hist = _histogram(hsv)
        if prev_hsv is not None:
            diff = cv2.absdiff(hsv, prev_hsv).astype(np.int16)
            hue = diff[..., 0]
            hue = np.minimum(hue, HUE_PERIOD - hue)  # circular hue distance
            content[k] = (hue.mean() + diff[..., 1].mean() + diff[..., 2].mean()) / 3.0
            hist_d[k] = cv2.compareHist(prev_hist, hist, cv2.HISTCMP_BHATTACHARYYA)
        prev_hsv, prev_hist = hsv, hist
        hists.append(hist)
    return content, hist_d, hists


def detect_scene_cuts(video: np.ndarray, fps: float, cfg: SceneConfig | None = None) -> np.ndarray:
    """Indices of the frames that start a new scene (never 0).

    Args:
        video: uint8 RGB ``[T, H, W, 3]``; fps: its frame rate (for ``min_scene_s``).

    Returns:
        int64 ``[K]`` sorted frame indices; ``K + 1`` scenes. Cut time in seconds = index / fps.
    """
    cfg = cfg or SceneConfig()
    content, hist_d, hists = frame_scores(video, cfg.analysis_width)
    T = content.shape[0]
    w = cfg.window_frames
    candidates = []
    for k in range(1, T):
        if content[k] < cfg.min_content or hist_d[k] < cfg.min_hist_distance:
            continue
        for score in (content, hist_d):
            neighbours = np.concatenate([score[max(1, k - w) : k], score[k + 1 : k + 1 + w]])
            level = float(neighbours.mean()) if neighbours.size else 0.0
            if score[k] >= cfg.adaptive_ratio * level:
                before = hists[max(0, k - 1 - cfg.flash_frames)]
                after = hists[min(T - 1, k + cfg.flash_frames)]
                if cv2.compareHist(before, after, cv2.HISTCMP_BHATTACHARYYA) >= cfg.min_hist_distance:
                    candidates.append(k)
                break
    # Strongest first; drop cuts within min_scene_s of a stronger one.
    gap = cfg.min_scene_s * fps
    kept: list[int] = []
    for k in sorted(candidates, key=lambda i: -content[i]):
        if all(abs(k - other) >= gap for other in kept):
            kept.append(k)
    return np.array(sorted(kept), dtype=np.int64)
