"""Ground-truth detectors: measure a demo-world clip from its pixels alone.

They score generated clips, so they never read a generator's parameters: every function takes a video
(uint8 [T, H, W, 3] RGB, or float in [0, 1]) and looks at pixels. They rely only on what the demo world
promises visually:

- balls are saturated palette colours or white, on dark/desaturated walls and floors; they touch the floor
  at the lowest point they ever reach (the floor is estimated per track, never given);
- the talking face is the largest uniform skin-coloured region near the frame centre, and its open mouth is
  the dark area in the lower half of that region;
- the pendulum is what moves against a static background, and a tick is a turning point of its motion.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from .world import COLOUR_NAMES, PALETTE

# Pixel classes. A "saturated" pixel has S >= 0.5 and V >= 0.35 (HSV, 0..1) and takes the palette colour with
# the nearest hue; a "white" pixel has S <= 0.18 and V >= 0.78. Scene walls and floors stay outside both.
SATURATION_MIN = 0.5
VALUE_MIN = 0.35
WHITE_SATURATION_MAX = 0.18
WHITE_VALUE_MIN = 0.78
MIN_BLOB_PIXELS = 3
MIN_DROP_PX = 2.0  # a contact frame's blob bottom is this much lower than two frames before (not jitter)

_HUES = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for name, rgb in PALETTE.items() if name != "white"}
_CHROMATIC = tuple(_HUES)


def _as_uint8(video: np.ndarray) -> np.ndarray:
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video.shape={video.shape} is invalid: expected [T, H, W, 3]")
    if video.dtype == np.uint8:
        return video
    return np.clip(np.round(video.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def _hue_table() -> np.ndarray:
    """int8 [256]: palette index of the chromatic colour nearest to each OpenCV full-range hue (0..255)."""
    hues = (np.arange(256) + 0.5) / 256.0
    dist = np.stack([np.abs(((hues - h) + 0.5) % 1.0 - 0.5) for h in _HUES.values()])  # circular distance
    names = np.array([COLOUR_NAMES.index(n) for n in _CHROMATIC], np.int8)
    return names[np.argmin(dist, axis=0)]


def classify_pixels(video: np.ndarray) -> np.ndarray:
    """int8 [T, H, W]: index into ``COLOUR_NAMES`` of each pixel's palette colour, -1 for "not a ball colour"."""
    video = _as_uint8(video)
    T, H, W, _ = video.shape
    hsv = cv2.cvtColor(video.reshape(T * H, W, 3), cv2.COLOR_RGB2HSV_FULL).reshape(T, H, W, 3)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    labels = _hue_table()[hue]
    saturated = (sat >= round(SATURATION_MIN * 255)) & (val >= round(VALUE_MIN * 255))
    white = (sat <= round(WHITE_SATURATION_MAX * 255)) & (val >= round(WHITE_VALUE_MIN * 255))
    labels[~saturated] = -1
    labels[white] = COLOUR_NAMES.index("white")
    return labels


def _counts(labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(labels.ravel().astype(np.int64) + 1, minlength=len(COLOUR_NAMES) + 1)
    return {name: int(counts[i + 1]) for i, name in enumerate(COLOUR_NAMES)}


def _present(counts: dict[str, int], num_frames: int, min_fraction: float) -> list[str]:
    top = max(counts.values())
    floor = max(min_fraction * top, MIN_BLOB_PIXELS * num_frames)
    return [c for c, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n >= floor and n > 0]


def colour_counts(video: np.ndarray) -> dict[str, int]:
    """Pixels of each palette colour over the whole clip."""
    return _counts(classify_pixels(video))


def ball_colours(video: np.ndarray, min_fraction: float = 0.25) -> list[str]:
    """Palette colours present, most pixels first; a colour counts if it has at least ``min_fraction`` of the
    top colour's pixels (and at least ``MIN_BLOB_PIXELS`` per frame on average)."""
    return _present(colour_counts(video), len(video), min_fraction)


def dominant_ball_colour(video: np.ndarray) -> str | None:
    """The palette colour (``"red"``, ``"green"`` ...) with the most pixels, or None if no ball colour is seen."""
    found = ball_colours(video, min_fraction=1.0)
    return found[0] if found else None


def track_balls(video: np.ndarray, colours: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per colour, the largest blob per frame: ``{"bottom": [T], "x": [T], "area": [T]}`` (NaN where absent).

    ``bottom`` is the lowest pixel row of the blob (image rows grow downwards).
    """
    labels = classify_pixels(video)
    colours = _present(_counts(labels), len(labels), 0.25) if colours is None else colours
    tracks = {}
    for name in colours:
        idx = COLOUR_NAMES.index(name)
        bottom, x, area = (np.full(len(labels), np.nan) for _ in range(3))
        for f, frame in enumerate(labels):
            mask = (frame == idx).astype(np.uint8)
            n, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
            if n <= 1:
                continue
            best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            if stats[best, cv2.CC_STAT_AREA] < MIN_BLOB_PIXELS:
                continue
            bottom[f] = stats[best, cv2.CC_STAT_TOP] + stats[best, cv2.CC_STAT_HEIGHT] - 1
            x[f] = centroids[best, 0]
            area[f] = stats[best, cv2.CC_STAT_AREA]
        tracks[name] = {"bottom": bottom, "x": x, "area": area}
    return tracks


def _impact_frames(bottom: np.ndarray, radius: float) -> list[int]:
    """Frames where the blob arrives at its lowest level (the floor): it was higher on the previous frame (and
    by ``MIN_DROP_PX`` two frames before, so that a resting blob's one-pixel jitter is no contact) and is not
    lower on the next one."""
    if np.all(np.isnan(bottom)):
        return []
    floor = np.nanmax(bottom)
    tol = max(1.5, 0.3 * radius)
    frames = []
    for f in range(1, len(bottom)):
        b, prev = bottom[f], bottom[f - 1]
        nxt = bottom[f + 1] if f + 1 < len(bottom) else b
        if np.isnan(b) or np.isnan(prev) or b < floor - tol:
            continue
        prev2 = bottom[f - 2] if f >= 2 and not np.isnan(bottom[f - 2]) else prev
        if b - prev >= 1.0 and b - min(prev, prev2) >= MIN_DROP_PX and not (nxt > b + 0.5):
            frames.append(f)
    return frames


def ball_impacts_by_colour(video: np.ndarray, fps: float) -> dict[str, list[float]]:
    """Floor contacts per ball colour, in seconds (the frame time of each contact frame)."""
    out = {}
    for name, tr in track_balls(video).items():
        radius = float(np.sqrt(np.nanmedian(tr["area"]) / np.pi)) if np.any(~np.isnan(tr["area"])) else 0.0
        out[name] = [f / fps for f in _impact_frames(tr["bottom"], radius)]
    return out


def detect_ball_impacts(video: np.ndarray, fps: float) -> list[float]:
    """Times (s) at which a ball hits the floor, from pixels: each coloured blob is tracked, the floor is its
    lowest reach, and a contact is a frame where the blob's lowest point arrives there moving down."""
    return sorted(t for times in ball_impacts_by_colour(video, fps).values() for t in times)


def mouth_opening(video: np.ndarray) -> np.ndarray:
    """float [T]: how open the mouth is on each frame, as dark area in the lower face / face width / face height.

    The face is the largest connected region of the dominant colour in the central box of the clip's median
    frame (the skin); the mouth region is the middle 60 % of its width in its lower half, and "dark" is
    luminance below the skin's (fully dark at half the skin luminance).
    """
    video = _as_uint8(video)
    T, H, W, _ = video.shape
    median = np.median(video, axis=0).astype(np.float32)
    # 1. Skin colour: the most common quantised colour in the central box.
    box = median[H // 3 : 2 * H // 3, W // 3 : 2 * W // 3].reshape(-1, 3)
    keys = (box // 16).astype(np.int32) @ np.array([256, 16, 1])
    values, counts = np.unique(keys, return_counts=True)
    skin = box[keys == values[np.argmax(counts)]].mean(axis=0)
    # 2. Face region: pixels within 10 % of the skin colour, largest component, its bounding box.
    close = np.linalg.norm(median - skin, axis=-1) <= 0.1 * np.linalg.norm(skin) + 4.0
    n, _, stats, _ = cv2.connectedComponentsWithStats(close.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(T)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x0, y0 = stats[best, cv2.CC_STAT_LEFT], stats[best, cv2.CC_STAT_TOP]
    w, h = stats[best, cv2.CC_STAT_WIDTH], stats[best, cv2.CC_STAT_HEIGHT]
    # 3. Darkness in the mouth region per frame.
    ys, xs = slice(y0 + h // 2, y0 + h), slice(x0 + int(0.2 * w), x0 + w - int(0.2 * w))
    luma_weights = np.array([0.299, 0.587, 0.114], np.float32)
    skin_luma = float(skin @ luma_weights)
    luma = video[:, ys, xs].astype(np.float32) @ luma_weights
    dark = np.clip((skin_luma - luma) / (0.5 * skin_luma), 0.0, 1.0)
    return dark.sum(axis=(1, 2)) / float(max(1, w) * max(1, h)) * 4.0


def motion_centroid_x(video: np.ndarray, threshold: float = 24.0) -> np.ndarray:
    """float [T]: x of the centroid of what differs from the clip's median frame (NaN when nothing moves)."""
    video = _as_uint8(video)
    median = np.median(video, axis=0)
    diff = np.abs(video.astype(np.int16) - median.astype(np.int16)).sum(axis=-1).astype(np.float32)
    weight = np.maximum(diff - threshold, 0.0)
    total = weight.sum(axis=(1, 2))
    xs = np.arange(video.shape[2], dtype=np.float32)
    cx = (weight.sum(axis=1) * xs).sum(axis=1) / np.maximum(total, 1e-6)
    return np.where(total > 0, cx, np.nan)


def detect_ticks_visual(video: np.ndarray, fps: float, min_swing: float = 0.3) -> list[float]:
    """Times (s) of the pendulum's turning points (extremes of its horizontal motion), sub-frame refined by a
    parabola through the turning frame and its neighbours. A turning point counts if it lies at least
    ``min_swing`` of the half-range away from the mean position."""
    x = motion_centroid_x(video)
    valid = ~np.isnan(x)
    if valid.sum() < 3:
        return []
    x = np.interp(np.arange(len(x)), np.flatnonzero(valid), x[valid])
    centre, half_range = 0.5 * (x.max() + x.min()), 0.5 * (x.max() - x.min())
    if half_range < 1.0:
        return []
    times = []
    for f in range(1, len(x) - 1):
        a, b, c = x[f - 1], x[f], x[f + 1]
        is_max = b >= a and b > c
        is_min = b <= a and b < c
        if not (is_max or is_min) or abs(b - centre) < min_swing * half_range:
            continue
        curvature = a - 2 * b + c
        delta = 0.5 * (a - c) / curvature if curvature != 0 else 0.0
        times.append((f + float(np.clip(delta, -0.5, 0.5))) / fps)
    return times
