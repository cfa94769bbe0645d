"""Drawing helpers: anti-aliased, sub-pixel OpenCV primitives on small RGB frames, and floor/wall textures.

OpenCV takes integer coordinates; with ``shift=SHIFT`` they are fixed-point with 4 fractional bits, so a
ball moving 0.3 px per frame moves on screen instead of jumping a whole pixel every third frame.
"""

from __future__ import annotations

import cv2
import numpy as np

SHIFT = 4
_SCALE = 1 << SHIFT
AA = cv2.LINE_AA

Colour = tuple[int, int, int]


def _fx(v: float) -> int:
    return int(round(v * _SCALE))


def _pt(x: float, y: float) -> tuple[int, int]:
    return (_fx(x), _fx(y))


def circle(img: np.ndarray, x: float, y: float, r: float, colour: Colour, thickness: int = -1) -> None:
    cv2.circle(img, _pt(x, y), max(1, _fx(r)), colour, thickness, AA, SHIFT)


def ellipse(
    img: np.ndarray, x: float, y: float, ax: float, ay: float, colour: Colour,
    angle: float = 0.0, start: float = 0.0, end: float = 360.0, thickness: int = -1,
) -> None:
    """Ellipse centred at (x, y) with half-axes (ax, ay) in pixels."""
    axes = (max(1, _fx(ax)), max(1, _fx(ay)))
    cv2.ellipse(img, _pt(x, y), axes, angle, start, end, colour, thickness, AA, SHIFT)


def line(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour: Colour, thickness: int = 1) -> None:
    cv2.line(img, _pt(x0, y0), _pt(x1, y1), colour, thickness, AA, SHIFT)


def polygon(img: np.ndarray, points: list[tuple[float, float]], colour: Colour) -> None:
    pts = np.array([_pt(x, y) for x, y in points], dtype=np.int32)
    cv2.fillPoly(img, [pts], colour, AA, SHIFT)


def rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour: Colour) -> None:
    polygon(img, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour)


def shade(colour: Colour, factor: float) -> Colour:
    """Darker (factor < 1) or towards white (factor > 1: blend with white by factor - 1)."""
    c = np.asarray(colour, dtype=np.float64)
    c = c * factor if factor <= 1 else c + (255 - c) * (factor - 1)
    return tuple(int(v) for v in np.clip(np.round(c), 0, 255))


def vertical_gradient(height: int, width: int, top: Colour, bottom: Colour) -> np.ndarray:
    """uint8 [height, width, 3] blending ``top`` into ``bottom``."""
    a = np.linspace(0.0, 1.0, height)[:, None, None]
    img = (1 - a) * np.asarray(top, dtype=np.float64) + a * np.asarray(bottom, dtype=np.float64)
    return np.broadcast_to(np.round(img), (height, width, 3)).astype(np.uint8).copy()


def wood_texture(height: int, width: int, base: Colour, rng: np.random.Generator) -> np.ndarray:
    """Planks seen from the side: horizontal grain streaks and darker plank seams."""
    y = np.arange(height)[:, None]
    x = np.arange(width)[None, :]
    grain = 0.06 * np.sin(2 * np.pi * (y / max(2.0, height / 3.0) + 0.15 * np.sin(x / 7.0 + rng.uniform(0, 6))))
    grain += 0.04 * rng.standard_normal((height, 1))
    plank = max(8, width // 4)
    offset = int(rng.integers(plank))
    seams = ((x + offset) % plank == 0) & (y > 0)
    value = 1.0 + grain - 0.25 * seams
    return _tint(base, value)


def metal_texture(height: int, width: int, base: Colour, rng: np.random.Generator) -> np.ndarray:
    """Brushed metal plate: fine horizontal streaks, a soft sheen and a row of rivets."""
    x = np.arange(width)[None, :]
    streaks = 0.05 * rng.standard_normal((height, 1)) + 0.02 * rng.standard_normal((height, width))
    sheen = 0.12 * np.exp(-(((x - rng.uniform(0.3, 0.7) * width) / (0.3 * width)) ** 2))
    img = _tint(base, 1.0 + streaks + sheen)
    spacing = max(8, width // 5)
    for cx in range(spacing // 2, width, spacing):
        circle(img, cx, height * 0.55, max(0.8, height / 14), shade(base, 0.7))
    return img


def rubber_texture(height: int, width: int, base: Colour, rng: np.random.Generator) -> np.ndarray:
    """Dark rubber mat: speckles and shallow ribs."""
    x = np.arange(width)[None, :]
    ribs = 0.08 * (np.sin(2 * np.pi * x / max(3.0, width / 12.0)) > 0.6)
    speckle = 0.06 * rng.standard_normal((height, width))
    return _tint(base, 1.0 + speckle - ribs)


def _tint(base: Colour, value: np.ndarray) -> np.ndarray:
    img = np.asarray(base, dtype=np.float64)[None, None, :] * value[..., None]
    return np.clip(np.round(img), 0, 255).astype(np.uint8)
