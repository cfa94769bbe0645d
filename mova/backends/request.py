"""GenerationRequest: one generation as the UI or an API client asks for it, validated on construction.

Field names are the contract words of ``shared/design.md``. Invalid values raise ``ValueError`` naming the field,
the value and what is allowed. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mova import validation as check
from mova.guidance import Guidance
from mova.validation import (  # noqa: F401 - re-exported: the UI and backends read the limits from here
    FRAME_MULTIPLE,
    MAX_DURATION_S,
    MAX_FPS,
    MAX_FRAMES,
    MAX_PIXELS_PER_FRAME,
    MAX_SEED,
    MAX_STEPS,
    MIN_FPS,
    SIZE_MULTIPLE,
)

MAX_IMAGE_PIXELS = 40_000_000  # first frames larger than this are refused before decoding
LORA_SCALE_RANGE = (0.0, 2.0)


# ----------------------------------------------------------------------------------------------------------------
# Request
# ----------------------------------------------------------------------------------------------------------------


def _optional_text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name}={value!r} is invalid: expected text or nothing")
    return value


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """One generation, as the UI or an API client asks for it.

    ``image`` is a first-frame file path (IT2VA) or ``None`` (T2VA). ``seed=None`` draws a random seed (the used
    one comes back in the response). ``negative_prompt=None`` uses the pipeline default; ``video_shift`` /
    ``audio_shift`` ``None`` use the scheduler config; ``loudness_lufs=None`` leaves the audio as decoded.

    Construction validates and normalises every field (integral floats → int, blank texts → None), so a
    request that exists is well formed; model-specific limits are checked by :meth:`Backend.check`.
    """

    prompt: str
    negative_prompt: str | None = None
    image: str | None = None
    height: int = 352
    width: int = 640
    num_frames: int = 97
    fps: float = 24.0
    num_inference_steps: int = 50
    guidance_mode: str = "text"
    text_scale: float = 5.0
    bridge_scale: float = 1.0
    video_shift: float | None = None
    audio_shift: float | None = None
    seed: int | None = None
    loudness_lufs: float | None = -16.0
    lora: str | None = None
    lora_scale: float = 1.0

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        # 1. Texts
        check.prompt("prompt", self.prompt)
        negative = _optional_text("negative_prompt", self.negative_prompt)
        put("negative_prompt", negative if negative and negative.strip() else None)
        # 2. First frame (existence and size here; decoding in check_image)
        image = self.image
        if isinstance(image, os.PathLike):
            image = os.fspath(image)
        if image is not None and not isinstance(image, str):
            raise ValueError(f"image={image!r} is invalid: expected a file path or nothing (text only)")
        if image is not None and not image.strip():
            image = None
        if image is not None and not Path(image).is_file():
            raise ValueError(f"image is invalid: no such file ({Path(image).name!r})")
        put("image", image)
        # 3. Sizes
        for name in ("height", "width"):
            value = check.integral(name, getattr(self, name), SIZE_MULTIPLE, 4096)
            if value % SIZE_MULTIPLE:
                raise ValueError(f"{name}={value} is invalid: expected a positive multiple of {SIZE_MULTIPLE}")
            put(name, value)
        if self.height * self.width > MAX_PIXELS_PER_FRAME:
            raise ValueError(f"height×width={self.height}×{self.width} is too large: at most {MAX_PIXELS_PER_FRAME} "
                             "pixels per frame (720×1280 is MOVA's largest trained size)")
        frames = check.integral("num_frames", self.num_frames, 1, MAX_FRAMES, f" of the form {FRAME_MULTIPLE}k+1")
        if (frames - 1) % FRAME_MULTIPLE:
            raise ValueError(f"num_frames={frames} is invalid: expected {FRAME_MULTIPLE}k+1 (e.g. 9, 97, 121, 193)")
        put("num_frames", frames)
        put("fps", check.real("fps", self.fps, MIN_FPS, MAX_FPS))
        check.clip_duration(self.num_frames, self.fps)
        put("num_inference_steps", check.integral("num_inference_steps", self.num_inference_steps, 1, MAX_STEPS))
        # 4. Guidance (Guidance validates mode and scales and names the field)
        guidance = Guidance(self.guidance_mode, self.text_scale, self.bridge_scale)
        put("text_scale", guidance.text_scale)
        put("bridge_scale", guidance.bridge_scale)
        for name in ("video_shift", "audio_shift"):
            value = getattr(self, name)
            put(name, None if value is None else check.real(name, value, 0.0, 100.0, low_open=True))
        # 5. Seed, loudness, LoRA
        if self.seed is not None:
            put("seed", check.integral("seed", self.seed, 0, MAX_SEED, " or nothing for a random seed"))
        if self.loudness_lufs is not None:
            put("loudness_lufs", check.real("loudness_lufs", self.loudness_lufs, *check.LOUDNESS_RANGE))
        lora = _optional_text("lora", self.lora)
        put("lora", lora if lora and lora.strip() else None)
        put("lora_scale", check.real("lora_scale", self.lora_scale, *LORA_SCALE_RANGE))

    @property
    def guidance(self) -> Guidance:
        return Guidance(self.guidance_mode, self.text_scale, self.bridge_scale)

    @property
    def kind(self) -> str:
        """``it2va`` with a first frame, ``t2va`` without."""
        return "it2va" if self.image else "t2va"

    @property
    def nfe(self) -> int:
        """Denoiser evaluations of the whole run: steps × the guidance mode's branches."""
        return self.num_inference_steps * self.guidance.nfe

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    def replace(self, **changes: Any) -> GenerationRequest:
        """A validated copy with some fields changed (e.g. another guidance setting, a drawn seed)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_image(self) -> None:
        """Decode the first frame once (ValueError naming ``image`` when it is not a readable image)."""
        if self.image is not None:
            from mova import media

            media.load_image(self.image, max_pixels=MAX_IMAGE_PIXELS)
