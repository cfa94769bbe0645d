"""Limits every generation obeys and the checks that enforce them, declared once: the settings' fields
(``mova.settings``), the model's ceilings and the CLI use them.

Nothing here imports torch. Every check raises ``ValueError`` naming the field, the value and what is allowed.
The per-model limits (trained sizes, longest clip, work budget) sit on top of these in ``Backend.check``.
"""

from __future__ import annotations

import html
import math
import numbers
import re
import unicodedata
from typing import Any

SIZE_MULTIPLE = 16  # VAE ×8 and DiT patch ×2: every MOVA checkpoint needs multiples of 16
MAX_PIXELS_PER_FRAME = 1280 * 1280  # absolute ceiling; 720×1280 is MOVA's largest trained size
FRAME_MULTIPLE = 4  # num_frames = 4k + 1 (Wan VAE temporal ×4)
MAX_FRAMES = 1025
MIN_FPS = 1.0  # the audio length is num_frames / fps: a tiny fps asks for hours of audio
MAX_FPS = 240.0
MAX_DURATION_S = 60.0  # absolute ceiling on num_frames / fps (MOVA trains 8 s clips)
MAX_STEPS = 1000
MAX_SEED = 2**63 - 1
MAX_GUIDANCE_SCALE = 100.0  # s_T and s_B; far beyond anything useful (MOVA uses 5 and 3.5), still finite in fp32
LOUDNESS_RANGE = (-70.0, 0.0)
MAX_IMAGE_PIXELS = 40_000_000  # first frames larger than this are refused before decoding
MAX_WINDOWS = 8  # a long clip chains at most this many windows (8 × MOVA's 8 s clip ≈ 64 s)
RETAKE_MODALITIES = ("both", "video", "audio")  # what a retake generates again
CROSSFADES = ("pixel", "latent")  # how chained windows are joined over their overlap


def integral(name: str, value: Any, low: int, high: int, hint: str = "") -> int:
    """Accept ints and integral floats (UI sliders send 9.0); refuse bools, NaN and fractions."""
    ok = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value) == int(value))
    ok = ok and not isinstance(value, bool)
    if not ok or not low <= int(value) <= high:
        raise ValueError(f"{name}={value!r} is invalid: expected an integer from {low} to {high}{hint}")
    return int(value)


def real(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    """A finite real number in [low, high] (``(low, high]`` with ``low_open``); refuses bools and NaN."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and v <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name}={value!r} is invalid: expected a number in {bracket}{low:g}, {high:g}]")
    return float(value)


def boolean(name: str, value: Any) -> bool:
    """``True`` or ``False`` only: ``"false"`` or ``0`` from an API client is refused, not read as truthy."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is invalid: expected true or false")
    return value


def clean_prompt(text: str) -> str:
    """ftfy fix, HTML-unescape twice, collapse whitespace (the official text preprocessing, docs: text encoding)."""
    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def visible_text(text: str) -> str:
    """``text`` without control, format (zero-width, bidi) and separator characters: what a reader would see."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "CZ")


def prompt(name: str, value: Any) -> str:
    """A prompt with something visible left after cleaning (NUL or zero-width characters alone are refused)."""
    if not isinstance(value, str) or not visible_text(clean_prompt(value)):
        raise ValueError(f"{name} is empty: describe what should be seen and heard in the clip (text with visible "
                         "characters)")
    return value


def clip_duration(num_frames: int, fps: float, max_duration_s: float = MAX_DURATION_S) -> float:
    """``num_frames / fps`` in seconds, refused above ``max_duration_s`` (the audio is generated for that long)."""
    seconds = num_frames / fps
    if seconds > max_duration_s:
        raise ValueError(f"num_frames / fps = {num_frames} / {fps:g} = {seconds:.1f} s is too long: at most "
                         f"{max_duration_s:.3g} s of video and audio (raise fps or lower num_frames)")
    return seconds
